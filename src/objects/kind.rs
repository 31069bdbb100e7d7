//! What an object is, by its file name, and when it was made, read with the `rpki` crate.

use rpki::repository::crl::Crl;
use rpki::repository::sigobj::SignedObject;
use rpki::repository::Cert;

/// The kinds of object an RPKI repository publishes, by file name extension (the IANA "RPKI
/// Repository Name Schemes" registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `.cer`: a CA certificate, or a BGPsec router certificate.
    Certificate,
    Crl,
    Manifest,
    Roa,
    Aspa,
    /// Any other signed object: `.gbr`, `.sig`, `.tak`, `.spl`.
    Signed,
    /// A name RPs do not know; they ignore such files, and so does validation.
    Other,
}

impl ObjectKind {
    /// The kind of the object at `uri` (a path or URI), by its extension.
    pub fn of(uri: &str) -> ObjectKind {
        // Called several times per object and round: no allocation.
        let ext = uri.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        let is = |e: &str| ext.eq_ignore_ascii_case(e);
        if is("cer") {
            ObjectKind::Certificate
        } else if is("crl") {
            ObjectKind::Crl
        } else if is("mft") {
            ObjectKind::Manifest
        } else if is("roa") {
            ObjectKind::Roa
        } else if is("asa") {
            ObjectKind::Aspa
        } else if ["gbr", "sig", "tak", "spl"].iter().any(|e| is(e)) {
            ObjectKind::Signed
        } else {
            ObjectKind::Other
        }
    }

    /// The label in `/status` and `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Certificate => "certificate",
            ObjectKind::Crl => "crl",
            ObjectKind::Manifest => "manifest",
            ObjectKind::Roa => "roa",
            ObjectKind::Aspa => "aspa",
            ObjectKind::Signed => "other_signed",
            ObjectKind::Other => "unknown",
        }
    }

    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Certificate,
        ObjectKind::Crl,
        ObjectKind::Manifest,
        ObjectKind::Roa,
        ObjectKind::Aspa,
        ObjectKind::Signed,
        ObjectKind::Other,
    ];
}

/// Seconds since the epoch at which the object at `name` was made: a certificate's
/// notBefore, a CRL's thisUpdate, a signed object's CMS signing time (or, without one, its
/// EE certificate's notBefore). `None` when the object does not parse.
///
/// The rsync export gives each file this modification time (as krill-sync does), so an rsync
/// client comparing size and time does not fetch an unchanged object again just because the
/// tree was written anew.
pub fn made_at(name: &str, der: &[u8]) -> Option<i64> {
    let der = bytes::Bytes::copy_from_slice(der);
    match ObjectKind::of(name) {
        ObjectKind::Certificate => Cert::decode(der)
            .ok()
            .map(|c| c.validity().not_before().timestamp()),
        ObjectKind::Crl => Crl::decode(der).ok().map(|c| c.this_update().timestamp()),
        ObjectKind::Manifest | ObjectKind::Roa | ObjectKind::Aspa | ObjectKind::Signed => {
            let signed = SignedObject::decode(der, false).ok()?;
            // An absent signing time decodes as the epoch; the EE certificate says better.
            let t = signed.signing_time().timestamp();
            Some(if t > 0 {
                t
            } else {
                signed.cert().validity().not_before().timestamp()
            })
        }
        ObjectKind::Other => None,
    }
}
