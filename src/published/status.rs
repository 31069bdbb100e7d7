//! What a repository's poller last did, for `/status`, `/healthz`, the page, logs and tests;
//! and the samples the page plots.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// What the poller last did, for /status, /healthz, logs and tests.
#[derive(Clone, Debug, Default)]
pub struct RepoStatus {
    /// Published session and serial.
    pub session_id: Option<String>,
    pub serial: Option<u64>,
    /// How many generations this process published (including the one loaded at start).
    pub publishes: u64,
    /// Completed polls that succeeded / failed.
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// When a poll last succeeded (the upstream answered usably).
    pub last_success: Option<SystemTime>,
    /// The current error, while the upstream is failing.
    pub last_error: Option<String>,
    /// Since when that error has been the error, and its short reason (as in the metrics).
    pub last_error_since: Option<SystemTime>,
    pub last_error_reason: Option<&'static str>,
    /// How long the last round that published took: notification, files, store, switch.
    pub last_publish_seconds: Option<f64>,
    /// Where that round's time went, phase by phase.
    pub last_round: Option<RoundTimings>,
    /// How long making the gzip variants of `compressed_serial`'s new files took.
    pub compress_seconds: Option<f64>,
    /// The serial whose files have their gzip variants made (in the background).
    pub compressed_serial: Option<u64>,
    /// Poll rounds begun; a round has ended when `polls_ok + polls_failed` reaches it.
    pub rounds_started: u64,
    /// The serial last written to the exports (export_rrdp, export_rsync).
    pub exported_serial: Option<u64>,
    /// The serial whose objects the Erik relay serves for this repository (`server.erik`).
    pub erik_serial: Option<u64>,
    /// How long the last Erik part took: the walk, the objects stored, the switch.
    pub erik_seconds: Option<f64>,
    /// What validating the last round that was validated found.
    pub validation: Option<Arc<ValidationStatus>>,
}

/// Where a published round's time went (seconds), for `/status` and the growth benchmarks.
/// A file's download, SHA-256, content check and write to the store are one streamed pass,
/// so they are one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoundTimings {
    /// Fetching and parsing the upstream notification.
    pub notification: f64,
    /// The snapshot: download, hash, content check, write and fsync (0 when already stored).
    pub snapshot: f64,
    /// Counting the snapshot's objects for the content guards (a second read), if enabled.
    pub count_objects: f64,
    /// The deltas, fetched `fetch_concurrency` at a time.
    pub deltas: f64,
    /// Validation and `pre_validate` before publishing (`refuse`, `pre_validate`).
    pub validate_before: f64,
    /// Building, persisting and switching to the new generation (Erik's part included).
    pub publish: f64,
    /// Of `publish`: bringing the Erik state to the round and storing its objects, the
    /// partitions and the switch of the relay's view (`server.erik`).
    pub erik: f64,
}

/// What RPKI validation (`validate`) and the operator's `pre_validate` found in a round.
#[derive(Clone, Debug, Default)]
pub struct ValidationStatus {
    pub session_id: String,
    pub serial: u64,
    /// When it ran, in seconds since the epoch.
    pub at: u64,
    pub seconds: f64,
    /// Whether the round was refused for it.
    pub refused: bool,
    /// `None` under `validate = "off"` (only `pre_validate` ran) or when it could not run.
    pub report: Option<crate::objects::Report>,
    /// Whether the state was brought up to the serial from its deltas (else the snapshot).
    pub from_deltas: bool,
    /// Signed objects read and verified (the rest had cached results).
    pub verified: u64,
    pub pre_validate: Option<PreValidated>,
    /// Why validation could not run (the store could not be read).
    pub error: Option<String>,
}

/// How the operator's `pre_validate` command ended.
#[derive(Clone, Debug, Default)]
pub struct PreValidated {
    pub ok: bool,
    pub exit: Option<i32>,
    pub detail: String,
    /// Its stdout and stderr, the last 8 KiB.
    pub output: String,
}

impl PreValidated {
    pub fn failed(detail: String) -> PreValidated {
        PreValidated {
            ok: false,
            exit: None,
            detail,
            output: String::new(),
        }
    }
}

/// One point of a repository's recent past: at `at` (seconds since the epoch), the serial
/// served and how many seconds the upstream had not answered usably (`None`: never yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub at: u64,
    pub serial: Option<u64>,
    pub stale: Option<u64>,
}
