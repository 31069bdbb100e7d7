//! Replays the fuzz seeds and every input a fuzzer crashed on (fuzz/regressions/<target>/)
//! through the fuzz targets' checks, so a fixed crash stays fixed.

use std::path::Path;

use rrdp_proxy::fuzz_checks;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(top.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.file_name().is_some_and(|n| n != ".gitkeep") {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn fuzz_seeds_and_regressions_pass_the_fuzz_checks() {
    let session =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/session.txt"))
            .unwrap();
    let notifications = inputs("notification");
    assert!(!notifications.is_empty(), "the seed corpus is there");
    for data in &notifications {
        fuzz_checks::notification(data);
    }
    for data in inputs("content") {
        fuzz_checks::content(&data, &session);
    }
    let erik = inputs("erik");
    assert!(erik.len() >= 2, "the draft's index and partition are seeds");
    for data in erik {
        fuzz_checks::erik(&data);
    }
    for data in inputs("config") {
        fuzz_checks::config(&data);
    }
    let objects = inputs("objects");
    assert!(objects.len() >= 10, "the RPKI seeds are there");
    let repo = krill_testbed();
    for data in objects {
        fuzz_checks::object(&data, &repo);
    }
}

/// The repository the objects target puts its input into.
fn krill_testbed() -> fuzz_checks::Testbed {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/krill-testbed");
    fuzz_checks::Testbed::krill_testbed(&dir).unwrap()
}

#[test]
fn the_krill_seeds_are_valid_files() {
    // The seeds are real Krill output: the parsers must accept them, or the fuzzer would
    // spend its time on the first error.
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let n = std::fs::read(top.join("notification/krill-notification.xml")).unwrap();
    let n = rrdp_proxy::rrdp::Notification::parse(&n).unwrap();
    let snapshot = std::fs::read(top.join("content/krill-snapshot.xml")).unwrap();
    let expected = rrdp_proxy::rrdp::content::Expected {
        kind: rrdp_proxy::rrdp::content::Document::Snapshot,
        session_id: n.session_id.clone(),
        serial: n.serial,
        max_object_size: rrdp_proxy::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
    };
    let summary = rrdp_proxy::rrdp::content::check(&snapshot[..], &expected).unwrap();
    assert!(summary.publishes > 0);
    let delta = std::fs::read(top.join(format!("content/krill-delta-{}.xml", n.serial))).unwrap();
    let expected = rrdp_proxy::rrdp::content::Expected {
        kind: rrdp_proxy::rrdp::content::Document::Delta,
        ..expected
    };
    rrdp_proxy::rrdp::content::check(&delta[..], &expected).unwrap();
}
