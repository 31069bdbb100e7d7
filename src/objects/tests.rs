//! The checks on real Krill output (tests/data/krill-testbed, see its capture.sh), each bad
//! input made by changing one thing in it. Validation runs at a fixed time just after the
//! capture, so the fixture's manifests stay current whatever today's date.

use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::rrdp::content::{self, Document, Expected};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/krill-testbed");
const TESTBED: &str = "rsync://rrdp.test/repo/testbed/0/";
const R1: &str = "31302e302e302e302f32342d3234203d3e203634343936.roa";
const R2: &str = "31302e302e312e302f32342d3234203d3e203634343937.roa";
const CHILD_ROA: &str =
    "rsync://rrdp.test/repo/child/0/31302e312e302e302f32342d3234203d3e203634353030.roa";

/// The objects of the fixture's snapshot `which` ("a" or "b").
pub(super) fn fixture(which: &str) -> Objects {
    let dir = Path::new(DIR).join(which);
    let n = crate::rrdp::Notification::parse(&std::fs::read(dir.join("notification.xml")).unwrap())
        .unwrap();
    let expected = Expected {
        kind: Document::Snapshot,
        session_id: n.session_id,
        serial: n.serial,
        max_object_size: crate::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
    };
    let text = std::fs::read(dir.join("snapshot.xml")).unwrap();
    content::read_objects(text.as_slice(), &expected).unwrap()
}

/// The fixture's trust anchor.
pub(super) fn anchor() -> Anchor {
    Anchor {
        tal: TalFile::read(&Path::new(DIR).join("ta.tal")).unwrap(),
        cert: Some(Bytes::from(
            std::fs::read(Path::new(DIR).join("ta.cer")).unwrap(),
        )),
    }
}

/// A minute after the newest manifest of `objects` was made.
fn capture_time(objects: &Objects) -> i64 {
    objects
        .iter()
        .filter(|(u, _)| ObjectKind::of(u) == ObjectKind::Manifest)
        .filter_map(|(u, d)| made_at(u, d))
        .max()
        .unwrap()
        + 60
}

fn run(objects: &Objects, anchors: &[Anchor]) -> Report {
    validate(objects, anchors, capture_time(objects), 7 * 86400)
}

fn checks(report: &Report) -> Vec<(String, Check)> {
    report
        .findings
        .iter()
        .map(|f| (f.uri.clone(), f.check))
        .collect()
}

#[test]
fn krill_repository_passes_with_and_without_its_tal() {
    for which in ["a", "b"] {
        let objects = fixture(which);
        let report = run(&objects, &[anchor()]);
        assert!(report.findings.is_empty(), "{which}: {:?}", report.findings);
        // The TA's, the testbed CA's and the child CA's publication points, all from the TA.
        assert_eq!(report.points_from_anchor, 3, "{which}");
        assert_eq!(report.points, 3);
        let report = run(&objects, &[]);
        assert!(report.findings.is_empty(), "{which}: {:?}", report.findings);
        assert_eq!((report.points_from_anchor, report.points), (0, 3));
    }
}

#[test]
fn health_counts_kinds_and_names_what_runs_out_first() {
    let objects = fixture("a");
    let report = run(&objects, &[anchor()]);
    let h = &report.health;
    assert_eq!(h.objects.get("roa"), Some(&3));
    assert_eq!(h.objects.get("manifest"), Some(&3));
    assert_eq!(h.objects.get("crl"), Some(&3));
    assert_eq!(h.objects.get("certificate"), Some(&2));
    let now = capture_time(&objects);
    let m = h.manifest_next_update.as_ref().unwrap();
    assert!(m.at > now && m.uri.ends_with(".mft"), "{m:?}");
    assert!(h.crl_next_update.as_ref().unwrap().uri.ends_with(".crl"));
    assert_eq!(h.stale_manifests, 0);
    // Nothing expires within a week of the capture; everything within ten years of it.
    assert_eq!(h.expiring, 0);
    let later = validate(&objects, &[anchor()], now, 10 * 365 * 86400);
    assert!(later.health.expiring >= 5, "{:?}", later.health);
}

#[test]
fn a_manifest_hash_that_does_not_match() {
    let mut objects = fixture("a");
    // R1 replaced by R2's bytes: a valid ROA, but not the one the manifest lists.
    let r2 = objects[&format!("{TESTBED}{R2}")].clone();
    objects.insert(format!("{TESTBED}{R1}"), r2);
    for anchors in [vec![anchor()], vec![]] {
        let report = run(&objects, &anchors);
        assert_eq!(
            checks(&report),
            vec![(format!("{TESTBED}{R1}"), Check::ManifestHash)]
        );
        assert!(report.findings[0]
            .detail
            .contains("2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.mft"));
    }
}

#[test]
fn a_file_the_manifest_lists_is_withdrawn() {
    let mut objects = fixture("a");
    objects.remove(&format!("{TESTBED}{R2}"));
    let report = run(&objects, &[anchor()]);
    assert_eq!(
        checks(&report),
        vec![(format!("{TESTBED}{R2}"), Check::ManifestMissing)]
    );
}

#[test]
fn an_expired_manifest() {
    // Krill's manifests are valid for a day: the same repository, two days later.
    let objects = fixture("a");
    let later = capture_time(&objects) + 2 * 86400;
    let report = validate(&objects, &[anchor()], later, 0);
    let stale: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.check == Check::Manifest)
        .collect();
    // The two CAs' manifests (Krill's TA signs for longer).
    let uris: Vec<&str> = stale.iter().map(|f| f.uri.as_str()).collect();
    assert_eq!(
        uris,
        vec![
            "rsync://rrdp.test/repo/child/0/B9A7EAF6DA3047FEF6370F8F39631EBBC5F47241.mft",
            "rsync://rrdp.test/repo/testbed/0/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.mft",
        ]
    );
    assert!(
        stale[0].detail.contains("not current"),
        "{}",
        stale[0].detail
    );
    assert_eq!(report.health.stale_manifests, 2);
}

#[test]
fn a_crl_that_revokes_a_roa() {
    // Serial b's CRL (Krill revoked R2's EE certificate when R2 was removed) in serial a,
    // which still publishes and lists R2.
    let mut objects = fixture("a");
    let crl = format!("{TESTBED}2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.crl");
    objects.insert(crl.clone(), fixture("b")[&crl].clone());
    let report = run(&objects, &[anchor()]);
    let found = checks(&report);
    assert!(
        found.contains(&(format!("{TESTBED}{R2}"), Check::Revoked)),
        "{found:?}"
    );
    // The CRL itself is not the one the manifest lists either.
    assert!(found.contains(&(crl, Check::ManifestHash)), "{found:?}");
}

#[test]
fn a_broken_signature() {
    // One flipped byte at the end of the ROA: the last field of its CMS is the signature.
    let mut objects = fixture("a");
    let uri = format!("{TESTBED}{R1}");
    let mut der = objects[&uri].to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    objects.insert(uri.clone(), Bytes::from(der));
    let report = run(&objects, &[anchor()]);
    let found = checks(&report);
    assert!(
        found.contains(&(uri.clone(), Check::Signature)),
        "{found:?}"
    );
    assert!(found.contains(&(uri, Check::ManifestHash)), "{found:?}");
}

#[test]
fn a_truncated_certificate_and_an_object_that_is_not_der() {
    let mut objects = fixture("a");
    let cer = format!("{TESTBED}B9A7EAF6DA3047FEF6370F8F39631EBBC5F47241.cer");
    let half = objects[&cer].slice(..objects[&cer].len() / 2);
    objects.insert(cer.clone(), half);
    objects.insert(
        CHILD_ROA.to_string(),
        Bytes::from_static(b"<html>not found</html>"),
    );
    for anchors in [vec![anchor()], vec![]] {
        let found = checks(&run(&objects, &anchors));
        // Each is first of all not what the manifest lists.
        for uri in [&cer, &CHILD_ROA.to_string()] {
            assert!(
                found.contains(&(uri.clone(), Check::ManifestHash)),
                "{found:?}"
            );
        }
    }
    for anchors in [vec![anchor()], vec![]] {
        let found = checks(&run(&objects, &anchors));
        assert!(found.contains(&(cer.clone(), Check::Parse)), "{found:?}");
        assert!(
            found.contains(&(CHILD_ROA.to_string(), Check::Parse)),
            "{found:?}"
        );
    }
}

#[test]
fn a_trust_anchor_that_is_not_the_tals() {
    let objects = fixture("a");
    let mut a = anchor();
    let testbed_ca =
        objects["rsync://rrdp.test/repo/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.cer"].clone();
    a.cert = Some(testbed_ca);
    let report = run(&objects, &[a]);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].check, Check::TrustAnchor);
    assert!(report.findings[0].detail.contains("public key"));
    // The points were still checked, without the anchor.
    assert_eq!((report.points_from_anchor, report.points), (0, 3));
    let mut none = anchor();
    none.cert = None;
    let report = run(&objects, &[none]);
    assert_eq!(checks(&report)[0].1, Check::TrustAnchor);
}

#[test]
fn made_at_reads_the_objects_own_times() {
    let objects = fixture("a");
    for (uri, der) in &objects {
        let t = made_at(uri, der).unwrap();
        assert!(t > 1_700_000_000, "{uri}: {t}");
    }
    assert_eq!(made_at("x.roa", b"not der"), None);
    assert_eq!(made_at("x.txt", b""), None);
}

#[test]
fn a_new_serial_checks_only_what_changed() {
    let a = fixture("a");
    let now = capture_time(&a);
    let mut cache = Cache::default();
    let asked = std::cell::RefCell::new(Vec::<String>::new());
    let run_with = |objects: &Objects, cache: &mut Cache| {
        asked.borrow_mut().clear();
        let mut fetch = |wanted: &crate::objects::check::Wanted<'_>,
                         give: &mut dyn FnMut(&str, Bytes) -> bool| {
            asked
                .borrow_mut()
                .extend(wanted.keys().map(|u| u.to_string()));
            for &u in wanted.keys() {
                give(u, objects[u].clone());
            }
        };
        validate_with(
            &ObjectIndex::from_objects(objects),
            cache,
            &mut fetch,
            &[anchor()],
            now,
            0,
        )
    };
    let first = run_with(&a, &mut cache);
    assert!(first.findings.is_empty(), "{:?}", first.findings);
    assert_eq!(asked.borrow().len(), 3, "every ROA, the first time");
    let again = run_with(&a, &mut cache);
    assert!(again.findings.is_empty());
    assert!(asked.borrow().is_empty(), "nothing, when nothing changed");

    // One ROA's bytes changed: only that one is read and verified again, and a cached
    // result does not hide a revocation that comes with a new CRL.
    let mut changed = a.clone();
    let uri = format!("{TESTBED}{R1}");
    let mut der = changed[&uri].to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    changed.insert(uri.clone(), Bytes::from(der));
    let crl = format!("{TESTBED}2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.crl");
    changed.insert(crl.clone(), fixture("b")[&crl].clone());
    let report = run_with(&changed, &mut cache);
    assert_eq!(*asked.borrow(), vec![uri.clone()]);
    let found = checks(&report);
    assert!(found.contains(&(uri, Check::Signature)), "{found:?}");
    assert!(
        found.contains(&(format!("{TESTBED}{R2}"), Check::Revoked)),
        "{found:?}"
    );
    // The cache holds one state: the old R1 result is gone.
    assert_eq!(cache.len(), 3);
}

#[test]
fn unchanged_points_are_replayed_until_something_they_depend_on_changes() {
    let mut objects = fixture("a");
    // A finding to carry: R1's signature broken.
    let uri = format!("{TESTBED}{R1}");
    let mut der = objects[&uri].to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    objects.insert(uri.clone(), Bytes::from(der));
    let now = capture_time(&objects);
    let mut index = ObjectIndex::from_objects(&objects);
    let mut cache = Cache::default();
    let asked = std::cell::RefCell::new(0usize);
    let run_at = |index: &ObjectIndex, cache: &mut Cache, at: i64| {
        let mut fetch = |wanted: &crate::objects::check::Wanted<'_>,
                         give: &mut dyn FnMut(&str, Bytes) -> bool| {
            *asked.borrow_mut() += wanted.len();
            for &u in wanted.keys() {
                give(u, objects[u].clone());
            }
        };
        validate_with(index, cache, &mut fetch, &[anchor()], at, 7 * 86400)
    };
    let first = run_at(&index, &mut cache, now);
    assert_eq!(first.points_replayed, 0);
    index.clean();
    // The signed objects are cached now; the points are remembered the round after.
    let second = run_at(&index, &mut cache, now);
    index.clean();
    let third = run_at(&index, &mut cache, now + 1);
    assert_eq!(third.points_replayed, 3, "nothing changed");
    for r in [&second, &third] {
        assert_eq!(checks(r), checks(&first), "a replay reports the same");
        assert_eq!(
            r.health.manifest_next_update,
            first.health.manifest_next_update
        );
    }
    // An object published in the testbed CA's directory: that point is checked again.
    let r2 = format!("{TESTBED}{R2}");
    let same = objects[&r2].clone();
    index.publish(&r2, same);
    *asked.borrow_mut() = 0;
    let fourth = run_at(&index, &mut cache, now + 2);
    assert_eq!(fourth.points_replayed, 2);
    // Its ROAs kept their results through the rounds it was replayed in.
    assert_eq!(*asked.borrow(), 0);
    index.clean();
    // Past the CAs' manifests' nextUpdate: their points are checked again and found stale.
    let later = first.health.manifest_next_update.as_ref().unwrap().at + 1;
    let fifth = run_at(&index, &mut cache, later);
    assert!(fifth.points_replayed < 3, "{}", fifth.points_replayed);
    assert!(
        fifth.counts.get(&Check::Manifest).is_some_and(|n| *n >= 1),
        "{:?}",
        fifth.counts
    );
}

#[test]
fn a_trust_anchor_the_repository_publishes_at_the_tals_rsync_uri() {
    // A TAL naming only an rsync URI, where the repository itself carries the certificate
    // (as ARIN's and APNIC's do): validation needs no fetch.
    let ta = std::fs::read(Path::new(DIR).join("ta.cer")).unwrap();
    let tal = std::fs::read_to_string(Path::new(DIR).join("ta.tal")).unwrap();
    let key = tal.split("\n\n").nth(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("published.tal");
    std::fs::write(&path, format!("rsync://rrdp.test/repo/ta.cer\n\n{key}")).unwrap();
    let a = Anchor {
        tal: TalFile::read(&path).unwrap(),
        cert: None,
    };
    let mut objects = fixture("a");
    let report = run(&objects, std::slice::from_ref(&a));
    assert_eq!(
        checks(&report)[0].1,
        Check::TrustAnchor,
        "nothing published yet"
    );
    assert!(report.findings[0]
        .detail
        .contains("rsync://rrdp.test/repo/ta.cer"));
    objects.insert("rsync://rrdp.test/repo/ta.cer".into(), Bytes::from(ta));
    let report = run(&objects, std::slice::from_ref(&a));
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!((report.points_from_anchor, report.points), (3, 3));
    // A certificate kept from an earlier fetch that is not the TAL's does not hide a good
    // copy in the repository.
    let mut held = a.clone();
    held.cert = Some(
        objects["rsync://rrdp.test/repo/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.cer"].clone(),
    );
    let report = run(&objects, &[held]);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.points_from_anchor, 3);
    // A copy with another key is no anchor.
    let other =
        objects["rsync://rrdp.test/repo/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.cer"].clone();
    objects.insert("rsync://rrdp.test/repo/ta.cer".into(), other);
    let report = run(&objects, &[a]);
    assert!(report
        .findings
        .iter()
        .any(|f| f.check == Check::TrustAnchor && f.detail.contains("public key")));
    assert_eq!(report.points_from_anchor, 0);
}
