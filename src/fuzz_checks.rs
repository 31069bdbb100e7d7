//! What the fuzz targets (fuzz/) assert for one input, here so that `cargo test` replays the
//! seeds and every input the fuzzer ever found a crash with (fuzz/regressions/) through the
//! very same checks. Each function panics when a property does not hold.

use crate::config::Config;
use crate::rrdp::content::{check, Document, Expected};
use crate::rrdp::{render_notification, Notification};

/// The notification parser never panics, and what it accepts renders to a notification that
/// parses back to the same thing (the proxy serves what it renders).
pub fn notification(data: &[u8]) {
    if let Ok(n) = Notification::parse(data) {
        assert!(n.serial > 0);
        if let Some(first) = n.deltas.first() {
            assert_eq!(first.serial, n.serial);
        }
        let again = render_notification(&n.session_id, n.serial, &n.snapshot, &n.deltas);
        let back = Notification::parse(again.as_bytes()).expect("a rendered notification parses");
        assert_eq!(back, n);
    }
}

/// The Erik index and partition decoders never panic, and what they accept encodes to DER
/// that decodes back to the same thing (the relay serves what it encodes).
pub fn erik(data: &[u8]) {
    use crate::erik::wire::{Index, Partition};
    if let Ok(index) = Index::from_der(data) {
        assert_eq!(Index::from_der(&index.to_der()).as_ref(), Ok(&index));
    }
    if let Ok(partition) = Partition::from_der(data) {
        assert_eq!(
            Partition::from_der(&partition.to_der()).as_ref(),
            Ok(&partition)
        );
    }
}

/// The snapshot/delta check never panics, for either kind of file; the serial expected is the
/// one the input declares (so valid files pass and mutations reach past the root element).
pub fn content(data: &[u8], session_id: &str) {
    let head = String::from_utf8_lossy(&data[..data.len().min(512)]);
    let serial = head
        .split("serial=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for kind in [Document::Snapshot, Document::Delta] {
        // A small object limit, so that the fuzzer reaches the refusal of large elements.
        let expected = Expected::new(kind, session_id, serial).with_max_object_size(4096);
        if let Ok(summary) = check(data, &expected) {
            assert!(kind == Document::Delta || summary.withdraws == 0);
        }
    }
}

/// The config parser never panics; a config it accepts is internally consistent, and one it
/// refuses names a key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, std::path::Path::new("/etc/rrdp-proxy")) {
        Ok(config) => {
            assert!(config.server.threads >= 1);
            assert!(!config.server.request_timeout.is_zero());
            for r in &config.repositories {
                assert!(r.fetch.fetch_concurrency >= 1);
            }
        }
        Err(e) => assert!(!e.reason.is_empty()),
    }
}

/// A real repository to put a fuzzed object into: its objects, trust anchors, and a time at
/// which it is valid.
pub struct Testbed {
    pub objects: crate::objects::Objects,
    pub anchors: Vec<crate::objects::Anchor>,
    pub now: i64,
}

impl Testbed {
    /// The recorded Krill testbed repository in `dir` (tests/data/krill-testbed): serial a,
    /// its TAL and TA certificate, and a minute after its newest manifest was made.
    pub fn krill_testbed(dir: &std::path::Path) -> std::io::Result<Testbed> {
        use crate::objects::{Anchor, TalFile};
        use crate::rrdp::content::read_objects;
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let n = Notification::parse(&std::fs::read(dir.join("a/notification.xml"))?)
            .map_err(|e| bad(e.to_string()))?;
        let expected = Expected::new(Document::Snapshot, n.session_id, n.serial);
        let snapshot = std::fs::read(dir.join("a/snapshot.xml"))?;
        let objects = read_objects(snapshot.as_slice(), &expected).map_err(|e| bad(e.0))?;
        let now = objects
            .iter()
            .filter(|(u, _)| {
                crate::objects::ObjectKind::of(u) == crate::objects::ObjectKind::Manifest
            })
            .filter_map(|(u, d)| crate::objects::made_at(u, d))
            .max()
            .ok_or_else(|| bad("no manifest".into()))?
            + 60;
        let anchor = Anchor {
            tal: TalFile::read(&dir.join("ta.tal")).map_err(bad)?,
            cert: Some(std::fs::read(dir.join("ta.cer"))?.into()),
        };
        Ok(Testbed {
            objects,
            anchors: vec![anchor],
            now,
        })
    }
}

/// The objects the fuzzed input stands in for: the testbed CA's manifest, CRL, a ROA, the
/// child CA's certificate. An input that parses as one of these kinds takes its place (so
/// mutations of a seed go deep into the checks of its kind); anything else any of them.
const REPLACED: [&str; 4] = [
    "rsync://rrdp.test/repo/testbed/0/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.mft",
    "rsync://rrdp.test/repo/testbed/0/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.crl",
    "rsync://rrdp.test/repo/testbed/0/31302e302e302e302f32342d3234203d3e203634343936.roa",
    "rsync://rrdp.test/repo/testbed/0/B9A7EAF6DA3047FEF6370F8F39631EBBC5F47241.cer",
];

/// An RPKI object in place of one of a real repository's (tests/data/krill-testbed): reading
/// its time and validating the repository never panic, and unless the bytes are the
/// original's, a finding names the object.
pub fn object(data: &[u8], repo: &Testbed) {
    for name in ["x.cer", "x.crl", "x.mft", "x.roa", "x.asa", "x.gbr"] {
        let _ = crate::objects::made_at(name, data);
    }
    let der = bytes::Bytes::copy_from_slice(data);
    use rpki::repository::{Cert, Crl, Manifest};
    let slot = if Manifest::decode(der.clone(), false).is_ok() {
        0
    } else if Crl::decode(der.clone()).is_ok() {
        1
    } else if Cert::decode(der.clone()).is_ok() {
        3
    } else if data.first() == Some(&0x30) {
        2
    } else {
        data.len() % REPLACED.len()
    };
    let target = REPLACED[slot];
    let mut objects = repo.objects.clone();
    let changed = objects.get(target).is_none_or(|o| o.as_ref() != data);
    objects.insert(target.to_string(), der);
    let report = crate::objects::validate(&objects, &repo.anchors, repo.now, 0);
    if changed {
        assert!(
            report.findings.iter().any(|f| f.uri == target),
            "a changed {target} passed: {:?}",
            report.findings
        );
    }
}

/// A real manifest (`der`) with its content replaced by one listing `entries` files that
/// exist nowhere (`f<i>.roa`, zero hashes), keeping its original signature: a huge manifest
/// for tests of bounded work, which must fail as "not signed" and "files missing".
pub fn manifest_with_entries(der: &[u8], entries: usize) -> Vec<u8> {
    use bcder::encode::Values;
    use rpki::repository::manifest::{FileAndHash, ManifestContent};
    let real = rpki::repository::Manifest::decode(bytes::Bytes::copy_from_slice(der), false)
        .expect("a manifest");
    let old = real.content().encode_ref().to_captured(bcder::Mode::Der);
    let list: Vec<FileAndHash<bytes::Bytes, bytes::Bytes>> = (0..entries)
        .map(|i| {
            FileAndHash::new(
                bytes::Bytes::from(format!("f{i}.roa")),
                bytes::Bytes::from(vec![0u8; 32]),
            )
        })
        .collect();
    let c = real.content();
    let big = ManifestContent::new(
        c.manifest_number(),
        c.this_update(),
        c.next_update(),
        c.file_hash_alg(),
        list.iter(),
    );
    let new = big.encode_ref().to_captured(bcder::Mode::Der);
    splice(der, old.as_slice(), new.as_slice())
}

/// `der` with the element content `old` (found once inside it) replaced by `new`, and the
/// length of every element around it rewritten.
fn splice(der: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let at = der
        .windows(old.len())
        .position(|w| w == old)
        .expect("old inside der");
    rebuild(der, at, old.len(), new)
}

/// One DER header: (header length, content length).
fn header(der: &[u8]) -> (usize, usize) {
    let first = der[1] as usize;
    if first < 0x80 {
        return (2, first);
    }
    let n = first & 0x7f;
    let len = der[2..2 + n]
        .iter()
        .fold(0usize, |a, b| (a << 8) | *b as usize);
    (2 + n, len)
}

fn encode_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out
}

/// The elements of `der`, the one whose content holds `at..at + len` rebuilt around `new`.
fn rebuild(der: &[u8], at: usize, len: usize, new: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < der.len() {
        let (h, l) = header(&der[pos..]);
        let (start, end) = (pos + h, pos + h + l);
        if start <= at && at + len <= end {
            let content = if start == at && l == len {
                new.to_vec()
            } else {
                rebuild(&der[start..end], at - start, len, new)
            };
            out.extend(encode_header(der[pos], content.len()));
            out.extend(content);
        } else {
            out.extend(&der[pos..end]);
        }
        pos = end;
    }
    out
}
