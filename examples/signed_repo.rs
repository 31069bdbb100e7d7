//! Builds a large, validly signed RPKI repository as RRDP files, for the validation
//! benchmark (bench/validation.sh): a trust anchor and CAS CAs below it, each publishing
//! ROAs, every object really signed (RSA-2048 with keys made by openssl), so that
//! rrdp-proxy's validation does the work it does on a real repository of that size.
//!
//!   cargo run --release --example signed_repo -- OUT KEYS SNAPSHOT_MIB CAS SERIALS
//!
//! KEYS holds ta.p8/ta.spki, ca-0.p8/ca-0.spki … and ee.p8/ee.spki (PKCS#8 private key and
//! SubjectPublicKeyInfo, DER). Writes OUT/rrdp/<session>/<serial>/{snapshot,delta}.xml and
//! OUT/rrdp/notification-<serial>.xml (copy one to notification.xml to publish it), and
//! OUT/ta/ta.cer and OUT/ta.tal. Serial 1 holds about SNAPSHOT_MIB MiB of snapshot; each
//! later serial is a Krill-like change: one CA replaces 10 ROAs and re-signs its CRL and
//! manifest. All EE certificates share the `ee` key (one-off keys would need RSA key
//! generation, which ring does not do); RPs and rrdp-proxy do not look at key reuse.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use bytes::Bytes;
use rpki::repository::cert::{KeyUsage, Overclaim, TbsCert};
use rpki::repository::resources::{Asn, Prefix};
use rpki::repository::roa::RoaBuilder;
use rpki::repository::sigobj::SignedObjectBuilder;
use rpki::repository::x509::{Serial, Time, Validity};
use rpki::uri;
use rrdp_proxy::demo::signed::{rsync, sign_point, KeySigner, Point};
use sha2::{Digest, Sha256};

const RSYNC: &str = "rsync://bench.test/repo/";
const NOTIFY: &str = "https://bench.test/rrdp/notification.xml";
const PUBLIC: &str = "https://bench.test/rrdp/";
const TA_URI: &str = "https://bench.test/ta/ta.cer";
const RRDP_NS: &str = "http://www.ripe.net/rpki/rrdp";
/// IPv6 /64 prefixes per ROA: about 2.5 KiB of DER each.
const PREFIXES: u16 = 150;
/// ROAs a later serial replaces.
const CHANGED: u32 = 10;

/// The keys from files: `<name>.p8` and `<name>.spki` in `dir`, for each name.
fn load_keys(dir: &Path, names: &[String]) -> KeySigner {
    let files: Vec<(Vec<u8>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let read = |ext: &str| std::fs::read(dir.join(format!("{n}.{ext}"))).expect("key file");
            (read("p8"), read("spki"))
        })
        .collect();
    let keys: Vec<(&[u8], &[u8])> = files
        .iter()
        .map(|(a, b)| (a.as_slice(), b.as_slice()))
        .collect();
    KeySigner::new(&keys).expect("the keys")
}

/// The repository being built: objects by URI, and what the next serial needs.
struct Repo {
    signer: KeySigner,
    cas: usize,
    roas_per_ca: u32,
    objects: BTreeMap<String, Bytes>,
    next_serial_number: std::sync::atomic::AtomicU64,
    manifest_number: u64,
    now: Time,
}

impl Repo {
    fn serial(&self) -> Serial {
        let n = self
            .next_serial_number
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Serial::from(n)
    }

    fn point(ca: usize) -> String {
        format!("{RSYNC}ca{ca}/")
    }

    /// What a CA certificate of key `key`, issued by key `issuer` for `years`, publishing at
    /// `dir` with the manifest `mft`, has in common with any other.
    fn ca_tbs(&self, key: usize, issuer: usize, years: i32, dir: &str, mft: &str) -> TbsCert {
        let mut cert = TbsCert::new(
            self.serial(),
            self.signer.public(issuer).to_subject_name(),
            Validity::new(
                self.now - chrono::Duration::days(1),
                Time::years_from_now(years),
            ),
            None,
            self.signer.public(key).clone(),
            KeyUsage::Ca,
            Overclaim::Refuse,
        );
        cert.set_basic_ca(Some(true));
        cert.set_ca_repository(Some(rsync(dir)));
        cert.set_rpki_manifest(Some(rsync(mft)));
        cert.set_rpki_notify(Some(uri::Https::from_str(NOTIFY).unwrap()));
        cert
    }

    /// The TA certificate (not published in the repository: the TAL names it).
    fn ta_cert(&self) -> Bytes {
        let mut cert = self.ca_tbs(
            0,
            0,
            10,
            &format!("{RSYNC}ta/"),
            &format!("{RSYNC}ta/ta.mft"),
        );
        cert.build_v4_resource_blocks(|b| b.push(Prefix::new(0u128, 0)));
        cert.build_v6_resource_blocks(|b| b.push(Prefix::new(0u128, 0)));
        cert.build_as_resource_blocks(|b| b.push((Asn::MIN, Asn::MAX)));
        let cert = cert.into_cert(&self.signer, &0).expect("signed");
        cert.to_captured().into_bytes()
    }

    /// CA `ca`'s certificate, issued by the TA: the IPv6 block 2001:<ca>::/32.
    fn ca_cert(&self, ca: usize) -> Bytes {
        let ta_key = self.signer.public(0).clone();
        let dir = Repo::point(ca);
        let mut cert = self.ca_tbs(1 + ca, 0, 1, &dir, &format!("{dir}ca{ca}.mft"));
        cert.set_authority_key_identifier(Some(ta_key.key_identifier()));
        cert.set_crl_uri(Some(rsync(&format!("{RSYNC}ta/ta.crl"))));
        cert.set_ca_issuer(Some(rsync("rsync://bench.test/ta/ta.cer")));
        cert.build_v6_resource_blocks(|b| {
            b.push(Prefix::new(
                Ipv6Addr::new(0x2001, ca as u16, 0, 0, 0, 0, 0, 0),
                32,
            ))
        });
        cert.build_as_resource_blocks(|b| b.push((Asn::from(64496), Asn::from(65535))));
        cert.into_cert(&self.signer, &0)
            .expect("signed")
            .to_captured()
            .into_bytes()
    }

    /// ROA `roa` of CA `ca`: its own /48 of the CA's block in /64s, a new EE certificate
    /// (and serial number) each time it is made.
    fn roa(&self, ca: usize, roa: u32) -> Bytes {
        let point = Repo::point(ca);
        let mut b = RoaBuilder::new(Asn::from(64496 + roa % 1000));
        for p in 0..PREFIXES {
            let addr = Ipv6Addr::new(0x2001, ca as u16, roa as u16, p, 0, 0, 0, 0);
            b.push_v6_addr(addr, 64, None);
        }
        let name = format!("roa-{roa}.roa");
        let sigobj = SignedObjectBuilder::new(
            self.serial(),
            Validity::new(
                self.now - chrono::Duration::hours(1),
                Time::years_from_now(1),
            ),
            rsync(&format!("{point}ca{ca}.crl")),
            rsync(&format!("{RSYNC}ta/ca{ca}.cer")),
            rsync(&format!("{point}{name}")),
        );
        let roa = b.finalize(sigobj, &self.signer, &(1 + ca)).expect("signed");
        roa.to_captured().into_bytes()
    }

    /// A publication point's CRL and manifest (over what is in `self.objects` under `dir`),
    /// signed by `key`.
    fn sign_point(&mut self, dir: &str, name: &str, key: usize, crl_issuer: &str) {
        let point = Point {
            dir,
            name,
            key,
            ca_cert: crl_issuer,
        };
        let serial = self.serial();
        sign_point(
            &self.signer,
            &mut self.objects,
            &point,
            self.manifest_number,
            serial,
            (self.now, chrono::Duration::days(2)),
        );
    }

    /// ROAs `range` of CA `ca`, made on both cores.
    fn make_roas(&self, ca: usize, range: std::ops::Range<u32>) -> Vec<(String, Bytes)> {
        let ids: Vec<u32> = range.collect();
        let half = ids.len().div_ceil(2);
        std::thread::scope(|s| {
            let parts: Vec<_> = ids
                .chunks(half.max(1))
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|r| (format!("{}roa-{r}.roa", Repo::point(ca)), self.roa(ca, *r)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
        })
    }
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn sha_hex(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// Writes serial `serial`: its snapshot, its delta (`changes`: URI → previous object, if any),
/// and its notification listing `deltas` (newest first).
fn write_serial(
    out: &Path,
    session: &str,
    serial: u64,
    objects: &BTreeMap<String, Bytes>,
    changes: &[(String, Option<Bytes>)],
    deltas: &mut Vec<(u64, String, String)>,
) {
    let dir = format!("{session}/{serial}");
    std::fs::create_dir_all(out.join("rrdp").join(&dir)).unwrap();
    let mut snap = String::with_capacity(objects.values().map(|o| o.len() * 4 / 3 + 80).sum());
    let _ = writeln!(
        snap,
        "<snapshot xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{session}\" serial=\"{serial}\">"
    );
    for (uri, der) in objects {
        let _ = writeln!(snap, "  <publish uri=\"{uri}\">{}</publish>", b64(der));
    }
    snap.push_str("</snapshot>\n");
    std::fs::write(out.join("rrdp").join(&dir).join("snapshot.xml"), &snap).unwrap();
    if serial > 1 {
        let mut delta = format!(
            "<delta xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{session}\" serial=\"{serial}\">\n"
        );
        for (uri, old) in changes {
            let hash = old
                .as_ref()
                .map(|o| format!(" hash=\"{}\"", sha_hex(o)))
                .unwrap_or_default();
            let _ = writeln!(
                delta,
                "  <publish uri=\"{uri}\"{hash}>{}</publish>",
                b64(&objects[uri])
            );
        }
        delta.push_str("</delta>\n");
        std::fs::write(out.join("rrdp").join(&dir).join("delta.xml"), &delta).unwrap();
        deltas.insert(
            0,
            (
                serial,
                format!("{PUBLIC}{dir}/delta.xml"),
                sha_hex(delta.as_bytes()),
            ),
        );
    }
    let mut n = format!(
        "<notification xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{session}\" serial=\"{serial}\">\n  <snapshot uri=\"{PUBLIC}{dir}/snapshot.xml\" hash=\"{}\"/>\n",
        sha_hex(snap.as_bytes())
    );
    for (s, uri, hash) in deltas.iter() {
        let _ = writeln!(n, "  <delta serial=\"{s}\" uri=\"{uri}\" hash=\"{hash}\"/>");
    }
    n.push_str("</notification>\n");
    std::fs::write(
        out.join("rrdp").join(format!("notification-{serial}.xml")),
        n,
    )
    .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: signed_repo OUT KEYS SNAPSHOT_MIB CAS SERIALS");
        std::process::exit(2);
    }
    let out = Path::new(&args[1]);
    let keys = Path::new(&args[2]);
    let mib: u64 = args[3].parse().expect("SNAPSHOT_MIB");
    let cas: usize = args[4].parse().expect("CAS");
    let serials: u64 = args[5].parse().expect("SERIALS");
    let mut names = vec!["ta".to_string()];
    names.extend((0..cas).map(|i| format!("ca-{i}")));
    names.push("ee".to_string());
    let mut repo = Repo {
        signer: load_keys(keys, &names),
        cas,
        roas_per_ca: 0,
        objects: BTreeMap::new(),
        next_serial_number: 1.into(),
        manifest_number: 1,
        now: Time::now(),
    };
    // One ROA's size in the snapshot decides how many make the size asked for.
    let per_roa = (repo.roa(0, 0).len() * 4 / 3 + 80) as u64;
    repo.roas_per_ca = ((mib << 20) / per_roa / cas as u64).max(1) as u32;
    let started = std::time::Instant::now();
    for ca in 0..repo.cas {
        let roas = repo.make_roas(ca, 0..repo.roas_per_ca);
        repo.objects.extend(roas);
        let cer = repo.ca_cert(ca);
        repo.objects.insert(format!("{RSYNC}ta/ca{ca}.cer"), cer);
        let point = Repo::point(ca);
        repo.sign_point(
            &point,
            &format!("ca{ca}"),
            1 + ca,
            &format!("{RSYNC}ta/ca{ca}.cer"),
        );
        eprintln!(
            "CA {ca}: {} ROAs ({:.0?})",
            repo.roas_per_ca,
            started.elapsed()
        );
    }
    repo.sign_point(
        &format!("{RSYNC}ta/"),
        "ta",
        0,
        "rsync://bench.test/ta/ta.cer",
    );
    std::fs::create_dir_all(out.join("ta")).unwrap();
    let ta = repo.ta_cert();
    std::fs::write(out.join("ta/ta.cer"), &ta).unwrap();
    let spki = repo.signer.public(0).to_info_bytes();
    let mut tal = format!("{TA_URI}\n\n");
    for line in b64(&spki).as_bytes().chunks(64) {
        tal.push_str(std::str::from_utf8(line).unwrap());
        tal.push('\n');
    }
    std::fs::write(out.join("ta.tal"), tal).unwrap();

    let session = uuid::Uuid::new_v4().to_string();
    let mut deltas = Vec::new();
    write_serial(out, &session, 1, &repo.objects, &[], &mut deltas);
    for serial in 2..=serials {
        // One CA replaces some ROAs and re-signs its CRL and manifest, as Krill does.
        let ca = (serial as usize - 2) % repo.cas;
        repo.manifest_number += 1;
        repo.now = Time::now();
        let first = (serial as u32 * CHANGED) % repo.roas_per_ca.max(1);
        let range = first..(first + CHANGED).min(repo.roas_per_ca);
        let mut changes = Vec::new();
        for (uri, der) in repo.make_roas(ca, range) {
            let old = repo.objects.insert(uri.clone(), der);
            changes.push((uri, old));
        }
        let point = Repo::point(ca);
        for name in [format!("{point}ca{ca}.crl"), format!("{point}ca{ca}.mft")] {
            changes.push((name.clone(), repo.objects.get(&name).cloned()));
        }
        repo.sign_point(
            &point,
            &format!("ca{ca}"),
            1 + ca,
            &format!("{RSYNC}ta/ca{ca}.cer"),
        );
        write_serial(out, &session, serial, &repo.objects, &changes, &mut deltas);
    }
    let bytes: usize = repo.objects.values().map(|o| o.len()).sum();
    eprintln!(
        "{} objects, {} MiB of DER, {serials} serials, in {:.0?}",
        repo.objects.len(),
        bytes >> 20,
        started.elapsed()
    );
}
