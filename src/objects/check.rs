//! The checks, as a Relying Party makes them, over one repository state.
//!
//! From each trust anchor, top-down: the TA certificate against its TAL; for each CA, its
//! manifest (signature, EE certificate, currency), every file the manifest lists (published,
//! with the listed SHA-256), the publication point's CRL (on the manifest, current, signed by
//! the CA), and each listed object: CA certificates (then their own publication points),
//! router certificates, ROAs, ASPAs and other signed objects (signature, EE certificate
//! chain and resources, not revoked, a ROA's prefixes and an ASPA's customer covered).
//!
//! Publication points no trust anchor reaches — there is no TAL, or the CA's certificate sits
//! in another repository (a delegated CA under an RIR) — get the checks that need no anchor:
//! manifest currency and hashes, the CRL, revocation, certificate validity, and signatures
//! of certificates and CRLs where the issuing CA certificate is in this repository. (A signed
//! object's CMS signature is verified by the `rpki` crate only on a validated chain.)
//!
//! Objects outside this repository are out of scope: a CA whose publication point has
//! nothing here is not followed, and fails nothing. Files no manifest lists are ignored, as
//! RPs ignore them. Everything is bounded: each manifest is visited once, chains are at most
//! [`MAX_DEPTH`] deep, and the work is linear in the objects.

use std::collections::{HashMap, HashSet};

use rpki::crypto::KeyIdentifier;
use rpki::repository::crl::Crl;
use rpki::repository::sigobj::SignedObject;
use rpki::repository::x509::{Time, Validity};
use rpki::repository::{Aspa, Cert, Manifest, ResourceCert, Roa};
use sha2::{Digest, Sha256};

use super::{Anchor, Check, Finding, Health, Kind, Objects, Report};

/// RPs validate leniently by default (Routinator's `strict = false`): so do we, so that what
/// is refused here is what they reject.
const STRICT: bool = false;

/// The longest CA chain followed below a trust anchor.
pub const MAX_DEPTH: usize = 32;

/// Validates `objects` at `now` (seconds since the epoch); certificates expiring within
/// `expiry_window` seconds are counted in the health.
pub fn validate(objects: &Objects, anchors: &[Anchor], now: i64, expiry_window: i64) -> Report {
    let mut v = Validator {
        objects,
        now,
        time: time_at(now),
        report: Report {
            health: Health::new(expiry_window),
            ..Report::default()
        },
        done: HashSet::new(),
    };
    for uri in objects.keys() {
        v.report.health.count(Kind::of(uri));
    }
    for a in anchors {
        v.anchor(a);
    }
    v.report.points_from_anchor = v.done.len() as u64;
    v.unanchored();
    let mut report = v.report;
    report.points = v.done.len() as u64;
    report
        .findings
        .sort_by(|a, b| (&a.uri, a.check).cmp(&(&b.uri, b.check)));
    report.findings.dedup();
    report
}

fn time_at(secs: i64) -> Time {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    Time::from(t)
}

/// Who issued the objects of a publication point.
#[derive(Clone, Copy)]
enum Issuer<'c> {
    /// A CA certificate validated from a trust anchor: everything can be checked.
    Anchored(&'c ResourceCert),
    /// No anchor reaches this point: the CA certificate, if it is in this repository.
    Local(Option<&'c Cert>),
}

impl Issuer<'_> {
    fn cert(&self) -> Option<&Cert> {
        match self {
            Issuer::Anchored(ca) => Some(ca.as_cert()),
            Issuer::Local(c) => *c,
        }
    }
}

/// A publication point that passed far enough to check its objects.
struct Point {
    /// The listed files that are published (not the CRL).
    listed: Vec<String>,
    crl: Option<Crl>,
}

struct Validator<'a> {
    objects: &'a Objects,
    now: i64,
    time: Time,
    report: Report,
    /// The manifests visited, by URI.
    done: HashSet<String>,
}

impl Validator<'_> {
    fn finding(&mut self, uri: &str, check: Check, detail: impl Into<String>) {
        self.report.add(Finding {
            uri: uri.to_string(),
            check,
            detail: detail.into(),
        });
    }

    /// A trust anchor: its certificate against the TAL, then everything below it.
    fn anchor(&mut self, a: &Anchor) {
        let tal = a.tal.path.display().to_string();
        let uri = a.tal.uris().into_iter().next().unwrap_or_default();
        let Some(der) = a.cert.clone() else {
            self.finding(
                &tal,
                Check::TrustAnchor,
                format!("no trust anchor certificate could be fetched from {uri}"),
            );
            return;
        };
        let cert = match Cert::decode(der) {
            Ok(c) => c,
            Err(e) => {
                self.finding(&uri, Check::TrustAnchor, format!("not a certificate: {e}"));
                return;
            }
        };
        if cert.subject_public_key_info() != a.tal.tal.key_info() {
            self.finding(
                &uri,
                Check::TrustAnchor,
                format!("its public key is not the one in {tal}"),
            );
            return;
        }
        if !self.current(&uri, &cert) {
            return;
        }
        match cert.validate_ta_at(a.tal.tal.info().clone(), STRICT, self.time) {
            Ok(ta) => self.walk(&ta, &uri, 0),
            Err(e) => self.finding(&uri, Check::TrustAnchor, e.to_string()),
        }
    }

    /// A validated CA: its publication point, then the CAs below it.
    fn walk(&mut self, ca: &ResourceCert, ca_uri: &str, depth: usize) {
        let Some(mft_uri) = ca.rpki_manifest().map(|u| u.to_string()) else {
            self.finding(
                ca_uri,
                Check::Manifest,
                "the CA certificate names no manifest",
            );
            return;
        };
        if depth > MAX_DEPTH || !self.done.insert(mft_uri.clone()) {
            return;
        }
        if !self.objects.contains_key(&mft_uri) {
            // In scope only if the CA publishes anything here.
            let dir = ca.ca_repository().map(|u| u.to_string());
            if dir.is_some_and(|d| self.has_under(&d)) {
                self.report.health.missing_manifests += 1;
                self.finding(
                    &mft_uri,
                    Check::ManifestMissing,
                    format!("the manifest that {ca_uri} names is not published"),
                );
            }
            return;
        }
        let Some(point) = self.point(&mft_uri, Issuer::Anchored(ca)) else {
            return;
        };
        for uri in &point.listed {
            let der = &self.objects[uri];
            match Kind::of(uri) {
                Kind::Certificate => {
                    if let Some(child) =
                        self.certificate(uri, der, Issuer::Anchored(ca), point.crl.as_ref())
                    {
                        self.walk(&child, uri, depth + 1);
                    }
                }
                Kind::Roa | Kind::Aspa | Kind::Signed => {
                    self.signed(uri, der, Issuer::Anchored(ca), point.crl.as_ref())
                }
                Kind::Crl | Kind::Manifest | Kind::Other => {}
            }
        }
    }

    /// Whether any object lies under the directory URI `dir`.
    fn has_under(&self, dir: &str) -> bool {
        self.objects
            .range(dir.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(dir))
    }

    /// The manifests no anchor reached, each with the issuing CA certificate if it is here.
    fn unanchored(&mut self) {
        let mut cas: HashMap<KeyIdentifier, Cert> = HashMap::new();
        for (uri, der) in self.objects {
            if Kind::of(uri) == Kind::Certificate {
                if let Ok(c) = Cert::decode(der.clone()) {
                    if c.is_ca() {
                        cas.insert(c.subject_key_identifier(), c);
                    }
                }
            }
        }
        let manifests: Vec<String> = self
            .objects
            .keys()
            .filter(|u| Kind::of(u) == Kind::Manifest && !self.done.contains(*u))
            .cloned()
            .collect();
        for mft_uri in manifests {
            self.done.insert(mft_uri.clone());
            let aki = Manifest::decode(self.objects[&mft_uri].clone(), STRICT)
                .ok()
                .and_then(|m| m.cert().authority_key_identifier());
            let issuer = Issuer::Local(aki.and_then(|k| cas.get(&k)));
            let Some(point) = self.point(&mft_uri, issuer) else {
                continue;
            };
            for uri in &point.listed {
                let der = &self.objects[uri];
                match Kind::of(uri) {
                    Kind::Certificate => {
                        self.certificate(uri, der, issuer, point.crl.as_ref());
                    }
                    Kind::Roa | Kind::Aspa | Kind::Signed => {
                        self.signed(uri, der, issuer, point.crl.as_ref())
                    }
                    Kind::Crl | Kind::Manifest | Kind::Other => {}
                }
            }
        }
    }

    /// A publication point's manifest, the files it lists, and its CRL.
    fn point(&mut self, mft_uri: &str, issuer: Issuer<'_>) -> Option<Point> {
        let mft = match Manifest::decode(self.objects[mft_uri].clone(), STRICT) {
            Ok(m) => m,
            Err(e) => {
                self.finding(mft_uri, Check::Parse, format!("not a manifest: {e}"));
                return None;
            }
        };
        let ee = mft.cert().clone();
        let content = mft.content().clone();
        let (this_update, next_update) = (
            content.this_update().timestamp(),
            content.next_update().timestamp(),
        );
        self.report.health.manifest(mft_uri, next_update);
        if this_update > self.now || next_update <= self.now {
            self.report.health.stale_manifests += 1;
            self.finding(
                mft_uri,
                Check::Manifest,
                format!(
                    "not current: thisUpdate {}, nextUpdate {}",
                    content.this_update().to_rfc3339(),
                    content.next_update().to_rfc3339()
                ),
            );
        }
        if self.current(mft_uri, &ee) {
            let verified = match issuer {
                Issuer::Anchored(ca) => mft
                    .validate_at(ca, STRICT, self.time)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Issuer::Local(Some(ca)) => {
                    ee.verify_signature(ca, STRICT).map_err(|e| e.to_string())
                }
                Issuer::Local(None) => Ok(()),
            };
            if let Err(e) = verified {
                self.finding(mft_uri, Check::Signature, e);
            }
        }
        let dir = &mft_uri[..mft_uri.rfind('/').map_or(0, |i| i + 1)];
        let mut listed = Vec::new();
        let mut crls = Vec::new();
        for entry in content.iter() {
            let uri = format!("{dir}{}", String::from_utf8_lossy(entry.file()));
            let Some(der) = self.objects.get(&uri) else {
                self.finding(
                    &uri,
                    Check::ManifestMissing,
                    format!("listed on {mft_uri}, not published"),
                );
                continue;
            };
            let hash = Sha256::digest(der);
            if hash.as_slice() != entry.hash().as_ref() {
                self.finding(
                    &uri,
                    Check::ManifestHash,
                    format!(
                        "SHA-256 {} is not {} that {mft_uri} lists",
                        hex::encode(hash),
                        hex::encode(entry.hash())
                    ),
                );
                // Checked on all the same: what else is wrong with it helps the operator.
            }
            if Kind::of(&uri) == Kind::Crl {
                crls.push(uri);
            } else {
                listed.push(uri);
            }
        }
        let crl = self.crl(mft_uri, &ee, &crls, issuer);
        if crl.as_ref().is_some_and(|c| c.contains(ee.serial_number())) {
            self.finding(mft_uri, Check::Revoked, "its EE certificate is on the CRL");
        }
        Some(Point { listed, crl })
    }

    /// The publication point's CRL: the one the manifest's EE certificate names, listed on
    /// the manifest (as RFC 9286 asks), current, signed by the CA.
    fn crl(&mut self, mft_uri: &str, ee: &Cert, crls: &[String], issuer: Issuer) -> Option<Crl> {
        let named = ee.crl_uri().map(|u| u.to_string());
        let Some(uri) = named.filter(|n| crls.contains(n)).or(crls.first().cloned()) else {
            self.finding(mft_uri, Check::Crl, "the manifest lists no usable CRL");
            return None;
        };
        if crls.len() > 1 {
            self.finding(
                mft_uri,
                Check::Crl,
                format!("the manifest lists {} CRLs, not one", crls.len()),
            );
        }
        let mut crl = match Crl::decode(self.objects[&uri].clone()) {
            Ok(c) => c,
            Err(e) => {
                self.finding(&uri, Check::Parse, format!("not a CRL: {e}"));
                return None;
            }
        };
        if let Some(ca) = issuer.cert() {
            if let Err(e) = crl.verify_signature(ca.subject_public_key_info()) {
                self.finding(&uri, Check::Crl, format!("not signed by its CA: {e}"));
            }
        }
        let next_update = crl.next_update().timestamp();
        self.report.health.crl(&uri, next_update);
        if next_update <= self.now {
            self.finding(&uri, Check::Crl, "not current: its nextUpdate has passed");
        }
        crl.cache_serials();
        Some(crl)
    }

    /// Whether a certificate is valid now (and its expiry noted in the health, unless it is
    /// a manifest's, which lives as long as its manifest by design).
    fn current(&mut self, uri: &str, cert: &Cert) -> bool {
        let v: Validity = cert.validity();
        if Kind::of(uri) != Kind::Manifest {
            self.report
                .health
                .certificate(uri, v.not_after().timestamp(), self.now);
        }
        if v.verify_at(self.time).is_ok() {
            return true;
        }
        self.finding(
            uri,
            Check::Expired,
            format!(
                "certificate valid from {} to {}",
                v.not_before().to_rfc3339(),
                v.not_after().to_rfc3339()
            ),
        );
        false
    }

    fn revoked(&mut self, uri: &str, cert: &Cert, crl: Option<&Crl>) -> bool {
        let revoked = crl.is_some_and(|c| c.contains(cert.serial_number()));
        if revoked {
            self.finding(
                uri,
                Check::Revoked,
                format!("serial {} is on its issuer's CRL", cert.serial_number()),
            );
        }
        revoked
    }

    /// A listed certificate: a CA certificate (returned validated, to be walked, when the
    /// issuer is anchored) or a router certificate.
    fn certificate(
        &mut self,
        uri: &str,
        der: &bytes::Bytes,
        issuer: Issuer<'_>,
        crl: Option<&Crl>,
    ) -> Option<ResourceCert> {
        let cert = match Cert::decode(der.clone()) {
            Ok(c) => c,
            Err(e) => {
                self.finding(uri, Check::Parse, format!("not a certificate: {e}"));
                return None;
            }
        };
        let current = self.current(uri, &cert);
        if self.revoked(uri, &cert, crl) || !current {
            return None;
        }
        let result = match issuer {
            Issuer::Anchored(ca) if cert.is_ca() => {
                return match cert.validate_ca_at(ca, STRICT, self.time) {
                    Ok(child) => Some(child),
                    Err(e) => {
                        self.finding(uri, Check::Signature, e.to_string());
                        None
                    }
                };
            }
            Issuer::Anchored(ca) => cert
                .validate_router_at(ca, STRICT, self.time)
                .map_err(|e| e.to_string()),
            Issuer::Local(Some(ca)) => cert.verify_signature(ca, STRICT).map_err(|e| e.to_string()),
            Issuer::Local(None) => Ok(()),
        };
        if let Err(e) = result {
            self.finding(uri, Check::Signature, e);
        }
        None
    }

    /// A ROA, ASPA or other signed object.
    fn signed(&mut self, uri: &str, der: &bytes::Bytes, issuer: Issuer<'_>, crl: Option<&Crl>) {
        let object = match SignedObject::decode(der.clone(), STRICT) {
            Ok(o) => o,
            Err(e) => {
                self.finding(uri, Check::Parse, format!("not a signed object: {e}"));
                return;
            }
        };
        // The content, parsed as its kind (this also checks the content type).
        let content = match Kind::of(uri) {
            Kind::Roa => Roa::decode(der.clone(), STRICT).map(|r| Content::Roa(Box::new(r))),
            Kind::Aspa => Aspa::decode(der.clone(), STRICT).map(|a| Content::Aspa(Box::new(a))),
            _ => Ok(Content::Other),
        };
        let content = match content {
            Ok(c) => c,
            Err(e) => {
                self.finding(uri, Check::Parse, e.to_string());
                return;
            }
        };
        let ee = object.cert().clone();
        let current = self.current(uri, &ee);
        if self.revoked(uri, &ee, crl) || !current {
            return;
        }
        let result = match issuer {
            Issuer::Anchored(ca) => object
                .validate_at(ca, STRICT, self.time)
                .map_err(|e| e.to_string())
                .and_then(|ee| content.covered_by(&ee)),
            Issuer::Local(Some(ca)) => ee.verify_signature(ca, STRICT).map_err(|e| e.to_string()),
            Issuer::Local(None) => Ok(()),
        };
        if let Err(e) = result {
            self.finding(uri, Check::Signature, e);
        }
    }
}

/// A signed object's content, where its resources must be covered by its EE certificate.
enum Content {
    Roa(Box<Roa>),
    Aspa(Box<Aspa>),
    Other,
}

impl Content {
    /// A ROA's prefixes and an ASPA's customer AS must be the EE certificate's resources
    /// (RFC 9582, the ASPA profile), as RPs check after the signature.
    fn covered_by(&self, ee: &ResourceCert) -> Result<(), String> {
        match self {
            Content::Roa(roa) => {
                let c = roa.content();
                let v4 = c
                    .v4_addrs()
                    .iter()
                    .all(|a| ee.v4_resources().contains_roa(&a));
                let v6 = c
                    .v6_addrs()
                    .iter()
                    .all(|a| ee.v6_resources().contains_roa(&a));
                if v4 && v6 {
                    Ok(())
                } else {
                    Err("a ROA prefix is not covered by its EE certificate".to_string())
                }
            }
            Content::Aspa(aspa) => {
                let customer = aspa.content().customer_as();
                if ee.as_resources().contains_asn(customer) {
                    Ok(())
                } else {
                    Err(format!(
                        "customer {customer} is not covered by its EE certificate"
                    ))
                }
            }
            Content::Other => Ok(()),
        }
    }
}
