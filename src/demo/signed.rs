//! The demo's signed repository: a trust anchor, two CAs below it and their ROAs, every
//! object really signed (RSA-2048 with ring) and re-signed as it changes, so that the shipped
//! `proxy.toml` validates the demo with `validate = "refuse"` and `demo.tal`, as it would a
//! real Publication Server.
//!
//! The keys are fixed and public (`src/demo/keys/`, made once with openssl): the TAL can then
//! be a file beside `proxy.toml`. They sign nothing but this demo, and nothing trusts them
//! unless given `demo.tal`. The TA certificate is published in the repository itself, at
//! the TAL's rsync URI (as ARIN's and APNIC's are), so validation needs no TA fetch.
//!
//! [`KeySigner`] and [`sign_point`] are also what `examples/signed_repo.rs` builds its large
//! benchmark repository with.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use base64::Engine as _;
use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::RsaKeyPair;
use rpki::crypto::signer::{KeyError, Signer, SigningError};
use rpki::crypto::{DigestAlgorithm, PublicKey, PublicKeyFormat, Signature, SignatureAlgorithm};
use rpki::repository::cert::{KeyUsage, Overclaim, TbsCert};
use rpki::repository::crl::TbsCertList;
use rpki::repository::manifest::{FileAndHash, ManifestContent};
use rpki::repository::resources::{Asn, Prefix};
use rpki::repository::roa::RoaBuilder;
use rpki::repository::sigobj::SignedObjectBuilder;
use rpki::repository::x509::{Serial, Time, Validity};
use rpki::uri;
use sha2::{Digest, Sha256};

//------------ Signing with fixed keys ---------------------------------------------------------

/// RSA keys given as DER, signing with ring. The last key signs every EE certificate (one-off
/// keys would need RSA key generation, which ring does not do; RPs do not look at key reuse).
pub struct KeySigner {
    keys: Vec<(RsaKeyPair, PublicKey)>,
    rng: SystemRandom,
}

impl KeySigner {
    /// Keys as (PKCS#8 private key, SubjectPublicKeyInfo), both DER.
    pub fn new(keys: &[(&[u8], &[u8])]) -> Result<KeySigner, String> {
        if keys.is_empty() {
            return Err("no keys".into());
        }
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, (p8, spki))| {
                let pair = RsaKeyPair::from_pkcs8(p8)
                    .map_err(|e| format!("key {i}: not an RSA PKCS#8 key: {e}"))?;
                let public = PublicKey::decode(*spki)
                    .map_err(|e| format!("key {i}: not a SubjectPublicKeyInfo: {e}"))?;
                Ok((pair, public))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(KeySigner {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Key `key`'s public half.
    pub fn public(&self, key: usize) -> &PublicKey {
        &self.keys[key].1
    }

    fn ee(&self) -> usize {
        self.keys.len() - 1
    }

    fn raw_sign(&self, key: usize, data: &[u8]) -> Result<Bytes, String> {
        let pair = &self.keys.get(key).ok_or("no such key")?.0;
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &self.rng,
            data,
            &mut sig,
        )
        .map_err(|e| e.to_string())?;
        Ok(Bytes::from(sig))
    }
}

impl Signer for KeySigner {
    type KeyId = usize;
    type Error = String;

    fn create_key(&self, _: PublicKeyFormat) -> Result<usize, String> {
        Err("the keys are fixed".into())
    }

    fn get_key_info(&self, key: &usize) -> Result<PublicKey, KeyError<String>> {
        self.keys
            .get(*key)
            .map(|k| k.1.clone())
            .ok_or(KeyError::KeyNotFound)
    }

    fn destroy_key(&self, _: &usize) -> Result<(), KeyError<String>> {
        Ok(())
    }

    fn sign<Alg: SignatureAlgorithm, D: AsRef<[u8]> + ?Sized>(
        &self,
        key: &usize,
        algorithm: Alg,
        data: &D,
    ) -> Result<Signature<Alg>, SigningError<String>> {
        let sig = self.raw_sign(*key, data.as_ref())?;
        Ok(Signature::new(algorithm, sig))
    }

    fn sign_one_off<Alg: SignatureAlgorithm, D: AsRef<[u8]> + ?Sized>(
        &self,
        algorithm: Alg,
        data: &D,
    ) -> Result<(Signature<Alg>, PublicKey), String> {
        let sig = self.raw_sign(self.ee(), data.as_ref())?;
        Ok((
            Signature::new(algorithm, sig),
            self.public(self.ee()).clone(),
        ))
    }

    fn rand(&self, target: &mut [u8]) -> Result<(), String> {
        self.rng.fill(target).map_err(|e| e.to_string())
    }
}

/// An rsync URI this module writes itself.
pub fn rsync(s: &str) -> uri::Rsync {
    uri::Rsync::from_str(s).expect("an rsync URI")
}

/// A publication point, as [`sign_point`] signs it: the directory URI (ending in `/`), the
/// name of its CRL and manifest (`<name>.crl`, `<name>.mft`), the CA's key, and the URI of
/// the CA's certificate.
pub struct Point<'a> {
    pub dir: &'a str,
    pub name: &'a str,
    pub key: usize,
    pub ca_cert: &'a str,
}

/// Signs a publication point anew: its CRL (empty) and its manifest over every other file
/// directly under `point.dir` in `objects`, both numbered `number` and current from `now`
/// for `valid_for`; `ee_serial` is the manifest EE certificate's serial number.
pub fn sign_point(
    signer: &KeySigner,
    objects: &mut BTreeMap<String, Bytes>,
    point: &Point,
    number: u64,
    ee_serial: Serial,
    (now, valid_for): (Time, chrono::Duration),
) {
    let public = signer.public(point.key).clone();
    let (this, next) = (now - chrono::Duration::hours(1), now + valid_for);
    let crl = TbsCertList::new(
        Default::default(),
        public.to_subject_name(),
        this,
        next,
        Vec::new(),
        public.key_identifier(),
        Serial::from(number),
    );
    let crl = crl.into_crl(signer, &point.key).expect("signed");
    let crl_uri = format!("{}{}.crl", point.dir, point.name);
    objects.insert(crl_uri.clone(), crl.to_captured().into_bytes());
    let mft_uri = format!("{}{}.mft", point.dir, point.name);
    let listed: Vec<FileAndHash<Bytes, Bytes>> = objects
        .range(point.dir.to_string()..)
        .take_while(|(u, _)| u.starts_with(point.dir))
        .filter(|(u, _)| **u != mft_uri && !u[point.dir.len()..].contains('/'))
        .map(|(u, d)| {
            FileAndHash::new(
                Bytes::from(u[point.dir.len()..].to_string()),
                Bytes::copy_from_slice(&Sha256::digest(d)),
            )
        })
        .collect();
    let content = ManifestContent::new(
        Serial::from(number),
        this,
        next,
        DigestAlgorithm::default(),
        listed.iter(),
    );
    let sigobj = SignedObjectBuilder::new(
        ee_serial,
        Validity::new(this, next),
        rsync(&crl_uri),
        rsync(point.ca_cert),
        rsync(&mft_uri),
    );
    let mft = content
        .into_manifest(sigobj, signer, &point.key)
        .expect("signed");
    objects.insert(mft_uri, mft.to_captured().into_bytes());
}

//------------ The demo's repository -----------------------------------------------------------

/// Where the demo's objects live.
const BASE: &str = "rsync://demo.test/repo/";
/// The TA certificate, in the repository (the URI `demo.tal` names).
pub const TA_CERT_URI: &str = "rsync://demo.test/repo/ta.cer";
/// The demo's CAs below the TA.
const CAS: usize = 2;
/// A CA withdraws its oldest ROA once it has this many.
const ROAS_KEPT: usize = 5;

/// The fixed keys: the TA, the CAs, the EE key (last).
const KEYS: [(&[u8], &[u8]); 2 + CAS] = [
    (include_bytes!("keys/ta.p8"), include_bytes!("keys/ta.spki")),
    (
        include_bytes!("keys/ca-0.p8"),
        include_bytes!("keys/ca-0.spki"),
    ),
    (
        include_bytes!("keys/ca-1.p8"),
        include_bytes!("keys/ca-1.spki"),
    ),
    (include_bytes!("keys/ee.p8"), include_bytes!("keys/ee.spki")),
];

/// The demo's RPKI objects and what their next change needs.
pub struct SignedDemo {
    signer: KeySigner,
    objects: BTreeMap<String, Bytes>,
    /// Per CA, its ROAs' numbers, oldest first.
    roas: Vec<VecDeque<u32>>,
    next_roa: u32,
    next_serial: u64,
    /// CRL and manifest number, one more each serial.
    number: u64,
    /// Which CA changes next.
    turn: usize,
    /// When the TA's CRL and manifest were last signed.
    ta_signed: Time,
    /// How long a manifest and CRL stay current: two days, or longer for a demo that
    /// publishes more rarely (each CA signs anew only every other serial).
    valid_for: chrono::Duration,
}

impl SignedDemo {
    /// The TA, its CAs and their first ROAs, signed now, for a demo that publishes a serial
    /// every `interval`.
    pub fn new(interval: std::time::Duration) -> SignedDemo {
        let rounds = chrono::Duration::from_std(interval * (2 * CAS as u32 + 2))
            .unwrap_or(chrono::Duration::MAX);
        let mut d = SignedDemo {
            signer: KeySigner::new(&KEYS).expect("the demo's keys"),
            objects: BTreeMap::new(),
            roas: vec![VecDeque::new(); CAS],
            next_roa: 0,
            next_serial: 1,
            number: 1,
            turn: 0,
            ta_signed: Time::now(),
            valid_for: rounds.max(chrono::Duration::days(2)),
        };
        let now = d.ta_signed;
        let ta = d.ta_cert(now);
        d.objects.insert(TA_CERT_URI.to_string(), ta);
        for ca in 0..CAS {
            let cert = d.ca_cert(ca, now);
            d.objects.insert(ca_cert_uri(ca), cert);
            for _ in 0..3 {
                d.add_roa(ca, now);
            }
            d.sign_ca(ca, now);
        }
        d.sign_ta(now);
        d
    }

    /// Every object, by rsync URI.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects
            .iter()
            .map(|(u, d)| (u.clone(), d.to_vec()))
            .collect()
    }

    /// The TA certificate (also served at `/ta/ta.cer`, as Krill serves its own).
    pub fn ta_cert_der(&self) -> Bytes {
        self.objects[TA_CERT_URI].clone()
    }

    /// The next serial's changes, as Krill makes one: a CA (each in turn) issues a ROA,
    /// withdraws its oldest beyond `ROAS_KEPT`, and signs its CRL and manifest anew. Each
    /// change is a URI and its new content (`None`: withdrawn).
    pub fn advance(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let now = Time::now();
        let ca = self.turn;
        self.turn = (self.turn + 1) % CAS;
        self.number += 1;
        let mut changed = vec![self.add_roa(ca, now)];
        let mut withdrawn = Vec::new();
        while self.roas[ca].len() > ROAS_KEPT {
            let old = self.roas[ca].pop_front().expect("not empty");
            let uri = roa_uri(ca, old);
            self.objects.remove(&uri);
            withdrawn.push(uri);
        }
        self.sign_ca(ca, now);
        let point = point_dir(ca);
        changed.push(format!("{point}ca{ca}.crl"));
        changed.push(format!("{point}ca{ca}.mft"));
        if now.timestamp() - self.ta_signed.timestamp() > self.valid_for.num_seconds() / 4 {
            // A demo left running: the TA signs its point again well before it goes stale.
            self.sign_ta(now);
            changed.push(format!("{BASE}ta/ta.crl"));
            changed.push(format!("{BASE}ta/ta.mft"));
        }
        let mut changes: Vec<_> = changed
            .into_iter()
            .map(|u| {
                let der = self.objects[&u].to_vec();
                (u, Some(der))
            })
            .collect();
        changes.extend(withdrawn.into_iter().map(|u| (u, None)));
        changes
    }

    fn serial(&mut self) -> Serial {
        self.next_serial += 1;
        Serial::from(self.next_serial)
    }

    /// A CA certificate's common part: key `key` issued by `issuer`, valid a year from an
    /// hour ago, publishing under `dir`.
    fn ca_tbs(&mut self, key: usize, issuer: usize, dir: &str, name: &str, now: Time) -> TbsCert {
        let mut cert = TbsCert::new(
            self.serial(),
            self.signer.public(issuer).to_subject_name(),
            Validity::new(
                now - chrono::Duration::hours(1),
                now + chrono::Duration::days(365),
            ),
            None,
            self.signer.public(key).clone(),
            KeyUsage::Ca,
            Overclaim::Refuse,
        );
        cert.set_basic_ca(Some(true));
        cert.set_ca_repository(Some(rsync(dir)));
        cert.set_rpki_manifest(Some(rsync(&format!("{dir}{name}.mft"))));
        cert
    }

    /// The self-signed TA certificate: all resources.
    fn ta_cert(&mut self, now: Time) -> Bytes {
        let mut cert = self.ca_tbs(0, 0, &format!("{BASE}ta/"), "ta", now);
        cert.build_v4_resource_blocks(|b| b.push(Prefix::new(Ipv4Addr::UNSPECIFIED, 0)));
        cert.build_v6_resource_blocks(|b| b.push(Prefix::new(0u128, 0)));
        cert.build_as_resource_blocks(|b| b.push((Asn::MIN, Asn::MAX)));
        let cert = cert.into_cert(&self.signer, &0).expect("signed");
        cert.to_captured().into_bytes()
    }

    /// CA `ca`'s certificate from the TA: 10.<ca>.0.0/16, 2001:db8:<ca>00::/40 and
    /// AS64496–AS65535.
    fn ca_cert(&mut self, ca: usize, now: Time) -> Bytes {
        let ta_key = self.signer.public(0).key_identifier();
        let mut cert = self.ca_tbs(1 + ca, 0, &point_dir(ca), &format!("ca{ca}"), now);
        cert.set_authority_key_identifier(Some(ta_key));
        cert.set_crl_uri(Some(rsync(&format!("{BASE}ta/ta.crl"))));
        cert.set_ca_issuer(Some(rsync(TA_CERT_URI)));
        cert.build_v4_resource_blocks(|b| {
            b.push(Prefix::new(Ipv4Addr::new(10, ca as u8, 0, 0), 16))
        });
        cert.build_v6_resource_blocks(|b| {
            b.push(Prefix::new(
                Ipv6Addr::new(0x2001, 0xdb8, (ca as u16) << 8, 0, 0, 0, 0, 0),
                40,
            ))
        });
        cert.build_as_resource_blocks(|b| b.push((Asn::from(64496), Asn::from(65535))));
        cert.into_cert(&self.signer, &0)
            .expect("signed")
            .to_captured()
            .into_bytes()
    }

    /// Issues CA `ca`'s next ROA: 10.<ca>.<n>.0/24 and 2001:db8:<ca><n>::/48 for AS64496+n.
    /// Returns its URI.
    fn add_roa(&mut self, ca: usize, now: Time) -> String {
        let n = self.next_roa;
        self.next_roa += 1;
        let mut b = RoaBuilder::new(Asn::from(64496 + n % 1000));
        b.push_v4_addr(Ipv4Addr::new(10, ca as u8, (n % 256) as u8, 0), 24, None);
        let v6 = Ipv6Addr::new(
            0x2001,
            0xdb8,
            ((ca as u16) << 8) | (n % 256) as u16,
            0,
            0,
            0,
            0,
            0,
        );
        b.push_v6_addr(v6, 48, None);
        let uri = roa_uri(ca, n);
        let sigobj = SignedObjectBuilder::new(
            self.serial(),
            Validity::new(
                now - chrono::Duration::hours(1),
                now + chrono::Duration::days(365),
            ),
            rsync(&format!("{}ca{ca}.crl", point_dir(ca))),
            rsync(&ca_cert_uri(ca)),
            rsync(&uri),
        );
        let roa = b.finalize(sigobj, &self.signer, &(1 + ca)).expect("signed");
        self.objects
            .insert(uri.clone(), roa.to_captured().into_bytes());
        self.roas[ca].push_back(n);
        uri
    }

    /// Signs the TA's CRL and manifest anew.
    fn sign_ta(&mut self, now: Time) {
        self.sign(&format!("{BASE}ta/"), "ta", 0, TA_CERT_URI, now);
        self.ta_signed = now;
    }

    /// Signs CA `ca`'s CRL and manifest anew.
    fn sign_ca(&mut self, ca: usize, now: Time) {
        self.sign(
            &point_dir(ca),
            &format!("ca{ca}"),
            1 + ca,
            &ca_cert_uri(ca),
            now,
        );
    }

    /// Signs a point's CRL and manifest anew (see [`Point`]), current for `valid_for`.
    fn sign(&mut self, dir: &str, name: &str, key: usize, ca_cert: &str, now: Time) {
        let serial = self.serial();
        let point = Point {
            dir,
            name,
            key,
            ca_cert,
        };
        let when = (now, self.valid_for);
        sign_point(
            &self.signer,
            &mut self.objects,
            &point,
            self.number,
            serial,
            when,
        );
    }
}

fn point_dir(ca: usize) -> String {
    format!("{BASE}ca{ca}/")
}

fn ca_cert_uri(ca: usize) -> String {
    format!("{BASE}ta/ca{ca}.cer")
}

fn roa_uri(ca: usize, n: u32) -> String {
    format!("{}roa-{n}.roa", point_dir(ca))
}

/// The demo's TAL (RFC 8630): the TA certificate's rsync URI in the repository, and the TA's
/// key. `demo.tal` beside `proxy.toml` is this text (a test keeps them the same).
pub fn demo_tal() -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(KEYS[0].1);
    let mut tal = String::from(
        "# The built-in demo Publication Server's trust anchor (rrdp-proxy's [demo]).\n\
         # Its key is public: trust it for the demo, never for anything else.\n",
    );
    tal.push_str(TA_CERT_URI);
    tal.push_str("\n\n");
    for line in key.as_bytes().chunks(64) {
        tal.push_str(std::str::from_utf8(line).expect("base64"));
        tal.push('\n');
    }
    tal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{self, Anchor, TalFile};

    fn anchor() -> Anchor {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.tal");
        Anchor {
            tal: TalFile::read(&path).unwrap(),
            cert: None,
        }
    }

    #[test]
    fn demo_tal_is_the_demos_tal() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.tal");
        assert_eq!(std::fs::read_to_string(path).unwrap(), demo_tal());
    }

    /// A demo that publishes once a day signs for six days, not two: its manifests are
    /// still current five days on.
    #[test]
    fn a_rarely_publishing_demo_signs_for_long_enough() {
        let demo = SignedDemo::new(std::time::Duration::from_secs(86400));
        let objects = demo
            .objects()
            .into_iter()
            .map(|(u, d)| (u, Bytes::from(d)))
            .collect();
        let later = Time::now().timestamp() + 5 * 86400;
        let report = objects::validate(&objects, &[anchor()], later, 86400);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }

    #[test]
    fn the_demo_validates_from_its_tal_serial_after_serial() {
        let mut demo = SignedDemo::new(std::time::Duration::from_secs(5));
        let now = Time::now().timestamp();
        for serial in 0..12 {
            if serial > 0 {
                let changes = demo.advance();
                assert!(changes.len() >= 3, "a ROA, a CRL, a manifest: {changes:?}");
            }
            let objects = demo
                .objects()
                .into_iter()
                .map(|(u, d)| (u, Bytes::from(d)))
                .collect();
            let report = objects::validate(&objects, &[anchor()], now, 86400);
            assert!(
                report.findings.is_empty(),
                "serial {serial}: {:?}",
                report.findings
            );
            // The TA's point and both CAs', reached from the TAL.
            assert_eq!(report.points_from_anchor, 3, "serial {serial}");
        }
        // Old ROAs were withdrawn: each CA keeps ROAS_KEPT.
        let roas = demo
            .objects()
            .keys()
            .filter(|u| u.ends_with(".roa"))
            .count();
        assert_eq!(roas, CAS * ROAS_KEPT);
    }
}
