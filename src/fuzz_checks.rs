//! What the fuzz targets (fuzz/) assert for one input, here so that `cargo test` replays the
//! seeds and every input the fuzzer ever found a crash with (fuzz/regressions/) through the
//! very same checks. Each function panics when a property does not hold.

use crate::config::Config;
use crate::rrdp::content::{check, Expected, Kind};
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
    for kind in [Kind::Snapshot, Kind::Delta] {
        let expected = Expected {
            kind,
            session_id: session_id.to_string(),
            serial,
        };
        if let Ok(summary) = check(data, &expected) {
            assert!(kind == Kind::Delta || summary.withdraws == 0);
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
                assert!(r.fetch_concurrency >= 1);
            }
        }
        Err(e) => assert!(!e.reason.is_empty()),
    }
}
