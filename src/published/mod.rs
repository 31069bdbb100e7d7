//! A repository's published state: the generation clients see, and how it is persisted.
//!
//! A [`Generation`] is everything needed to answer clients for one repository: the rendered
//! notification with its validators, and every file a client may fetch (those the notification
//! references, and those of superseded generations still within `cache.retain`). It is
//! replaced as a whole through an `ArcSwap`, so a request sees one generation from start to
//! end, and a notification is never visible before every file it names is in the store.
//!
//! This module is the seam between the write side (`sync`) and the read side (`serve`), and
//! the only way to publish. The type system holds the invariant: a [`Generation`] cannot be
//! built outside this module (a private field), [`Repo::publish`] builds one only from a
//! [`Round`], whose files are [`Stored`] proofs that only the store makes (after verifying the
//! bytes), and the published generation is reachable only through [`Repo::current`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::clock::Clock;
use crate::config::RepositoryConfig;
use crate::rrdp::content::Expected;
use crate::rrdp::uri::BaseUri;
use crate::rrdp::Hash;
use crate::rrdp::{render_notification, DeltaRef, FileRef};
use crate::store::{Store, Stored};

/// What a file is, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Snapshot,
    Delta,
    #[default]
    Other,
}

/// A file clients may fetch under the repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    #[serde(with = "hash_hex")]
    pub hash: Hash,
    pub size: u64,
    #[serde(default)]
    pub kind: FileKind,
    /// `None` while the published notification references it; else when it stops being
    /// servable (seconds since the epoch).
    pub expires: Option<u64>,
    /// A snapshot's or delta's serial (how far behind the RPs asking for it are; what a peer
    /// filling it checks it against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// The session of a snapshot or delta (kept when it is retained past a session reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Its validators as ready header values, made when the generation is prepared.
    #[serde(skip)]
    pub head: FileHead,
}

/// A stored file's ETags (identity and gzip) as header values: made once per file and
/// generation, so serving a hit formats nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHead {
    pub etag: HeaderValue,
    pub etag_gzip: HeaderValue,
}

impl FileHead {
    pub fn of(hash: &Hash) -> FileHead {
        let etag = format!("\"{}\"", hash.to_hex());
        FileHead {
            etag_gzip: header_value(&gzip_etag(&etag)),
            etag: header_value(&etag),
        }
    }

    /// The identity ETag as text (always ASCII: quoted hex).
    pub fn etag_text(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }
}

impl Default for FileHead {
    fn default() -> FileHead {
        let empty = HeaderValue::from_static("");
        FileHead {
            etag: empty.clone(),
            etag_gzip: empty,
        }
    }
}

/// The ETag of a gzip variant: the identity ETag with `-gzip` (a representation's ETag must
/// differ per encoding).
pub fn gzip_etag(etag: &str) -> String {
    format!("{}-gzip\"", etag.trim_end_matches('"'))
}

impl FileEntry {
    pub fn is_live(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// One published state of a repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Generation {
    pub session_id: String,
    pub serial: u64,
    /// The notification as served (URIs under the public base).
    #[serde(with = "bytes_text")]
    pub notification: Bytes,
    /// The notification gzip-compressed (made once, when the generation is built or loaded).
    #[serde(skip)]
    pub notification_gz: Option<Bytes>,
    /// Strong ETag of `notification`, quoted.
    pub etag: String,
    /// ETag of the gzip variant, and Last-Modified as an HTTP date: made once, not per
    /// request.
    #[serde(skip)]
    pub etag_gzip: String,
    #[serde(skip)]
    pub last_modified_text: String,
    /// The same validators as ready header values: a notification request copies no string.
    #[serde(skip)]
    pub header_values: NotificationHeaders,
    /// Last-Modified, seconds since the epoch: when this proxy published it. Strictly
    /// increasing across generations, because Fort sends its own clock as If-Modified-Since.
    pub last_modified: u64,
    /// Relative path → file.
    pub files: HashMap<String, FileEntry>,
    /// How many deltas the served notification lists.
    pub delta_count: usize,
    /// Sessions this repository left, with when (seconds since the epoch), newest last: a
    /// return to one of them soon after is a stale replica answering, not a reset.
    #[serde(default)]
    pub left_sessions: Vec<(String, u64)>,
    /// How many objects the snapshot publishes, when it was counted (content guards, rsync
    /// export).
    #[serde(default)]
    pub snapshot_objects: Option<u64>,
    /// The deltas the served notification lists, newest first: the session's contiguous
    /// history, each byte-identical to what the upstream published for its serial.
    #[serde(default)]
    pub history: Vec<HistoryDelta>,
    /// Private: nothing outside this module can build a generation.
    #[serde(skip)]
    _sealed: Sealed,
}

/// One delta of a generation's history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryDelta {
    pub serial: u64,
    /// Path relative to the repository's base.
    pub rel: String,
    #[serde(with = "hash_hex")]
    pub hash: Hash,
    pub size: u64,
    /// When this node first published it (seconds since the epoch).
    pub since: u64,
}

/// How far back the served notification lists deltas (`delta_history`, `delta_history_max`,
/// `max_deltas`).
#[derive(Clone, Copy, Debug)]
pub struct HistoryPolicy {
    /// Deltas the upstream no longer lists stay listed this long after they were first
    /// published; zero lists exactly the upstream's deltas.
    pub age: Duration,
    /// At most this many entries.
    pub max: usize,
}

impl HistoryPolicy {
    pub fn of(cfg: &RepositoryConfig) -> HistoryPolicy {
        HistoryPolicy {
            age: cfg.delta_history,
            max: cfg
                .max_deltas
                .map_or(cfg.delta_history_max, |m| m.min(cfg.delta_history_max)),
        }
    }
}

/// The private field that keeps [`Generation`] from being built elsewhere.
#[derive(Clone, Debug, Default)]
struct Sealed;

/// A round whose files are all in the store, verified: what the next generation is built
/// from. Its files are [`Stored`] proofs, which only the store makes.
#[derive(Debug)]
pub struct Round {
    pub session_id: String,
    pub serial: u64,
    /// The snapshot: its path relative to the repository's base, and the stored object.
    pub snapshot: (String, Stored),
    /// The deltas the notification lists, in its order: serial, relative path, object.
    pub deltas: Vec<(u64, String, Stored)>,
    /// How many objects the snapshot publishes, if they were counted.
    pub snapshot_objects: Option<u64>,
}

/// How many sessions a generation remembers having left.
const LEFT_SESSIONS_KEPT: usize = 8;

impl Generation {
    /// The generation to publish after `previous`: the round's notification and files, the
    /// delta history (see `history`), plus the files of older generations that are still within
    /// `retain` of `now` (RPs that read an older notification, here or at a node that
    /// published later, still ask for them). Pure: the clock comes in as `now`.
    pub fn next(
        round: Round,
        previous: Option<&Generation>,
        public: &BaseUri,
        now: SystemTime,
        retain: Duration,
        policy: HistoryPolicy,
    ) -> Generation {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let now_secs = secs.as_secs();
        let history = history(&round, previous, now_secs, policy);
        let mut files = HashMap::new();
        let (snapshot_rel, snapshot) = &round.snapshot;
        let snapshot_entry = FileEntry {
            hash: snapshot.hash(),
            size: snapshot.size(),
            kind: FileKind::Snapshot,
            expires: None,
            serial: Some(round.serial),
            session: Some(round.session_id.clone()),
            head: FileHead::default(),
        };
        files.insert(snapshot_rel.clone(), snapshot_entry);
        for h in &history {
            let entry = FileEntry {
                hash: h.hash,
                size: h.size,
                kind: FileKind::Delta,
                expires: None,
                serial: Some(h.serial),
                session: Some(round.session_id.clone()),
                head: FileHead::default(),
            };
            files.insert(h.rel.clone(), entry);
        }
        let expires = now_secs + retain.as_secs();
        for (rel, f) in previous.iter().flat_map(|p| &p.files) {
            if files.contains_key(rel) || !f.is_live(now_secs) {
                continue;
            }
            let expires = Some(f.expires.unwrap_or(expires));
            files.insert(
                rel.clone(),
                FileEntry {
                    expires,
                    ..f.clone()
                },
            );
        }
        let (body, etag) = render(
            &round.session_id,
            round.serial,
            public,
            (snapshot_rel, snapshot.hash()),
            &history,
        );
        // Round up to the next second (HTTP dates have no fractions) and keep it strictly
        // increasing, so an If-Modified-Since taken from any earlier moment sees it as newer.
        let now_ceil = now_secs + u64::from(secs.subsec_nanos() > 0);
        let last_modified = now_ceil.max(previous.map_or(0, |p| p.last_modified + 1));
        Generation {
            left_sessions: left_sessions(previous, &round.session_id, now_secs),
            session_id: round.session_id,
            serial: round.serial,
            notification: body.into(),
            etag,
            last_modified,
            files,
            delta_count: history.len(),
            history,
            snapshot_objects: round.snapshot_objects,
            notification_gz: None,
            etag_gzip: String::new(),
            last_modified_text: String::new(),
            header_values: Default::default(),
            _sealed: Sealed,
        }
        .prepared()
    }

    /// This generation with its delta list cut above `serial` (that delta and every older one
    /// are no longer listed: the list stays contiguous), and the notification rendered anew.
    /// The files stay servable; the next generation gives them their expiry.
    fn cut_history(mut self, serial: u64, public: &BaseUri, now: SystemTime) -> Generation {
        self.history.retain(|h| h.serial > serial);
        let Some((rel, snapshot)) = self.snapshot().map(|(r, f)| (r.clone(), f.hash)) else {
            return self;
        };
        let (body, etag) = render(
            &self.session_id,
            self.serial,
            public,
            (&rel, snapshot),
            &self.history,
        );
        self.etag = etag;
        self.notification = body.into();
        self.delta_count = self.history.len();
        // A changed body is a newer document for every client's If-Modified-Since.
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let now_ceil = secs.as_secs() + u64::from(secs.subsec_nanos() > 0);
        self.last_modified = now_ceil.max(self.last_modified + 1);
        self
    }

    /// The listed serial with a different hash than `hash`, if this generation's history
    /// lists `serial` (RFC 9697: RPs distrust a serial whose delta hash changes).
    pub fn listed_with_other_hash(&self, serial: u64, hash: &Hash) -> Option<&HistoryDelta> {
        self.history
            .iter()
            .find(|h| h.serial == serial && h.hash != *hash)
    }
}

/// The served notification listing `history`, and its strong ETag.
fn render(
    session_id: &str,
    serial: u64,
    public: &BaseUri,
    (snapshot_rel, snapshot): (&str, Hash),
    history: &[HistoryDelta],
) -> (String, String) {
    let snapshot = FileRef {
        uri: public.join(snapshot_rel),
        hash: snapshot,
    };
    let deltas: Vec<DeltaRef> = history
        .iter()
        .map(|h| DeltaRef {
            serial: h.serial,
            file: FileRef {
                uri: public.join(&h.rel),
                hash: h.hash,
            },
        })
        .collect();
    let body = render_notification(session_id, serial, &snapshot, &deltas);
    let etag = format!("\"{}\"", &Hash::of(body.as_bytes()).to_hex()[..32]);
    (body, etag)
}

/// The deltas to list, newest first: the contiguous chain down from the round's serial
/// through the upstream's deltas (always listed) and, within the session, the previous
/// history, which reaches further while the policy allows: entry count, age, and a total
/// size of the listed deltas below the snapshot's (RFC 8182 §3.3.2). A delta keeps its first
/// publication time. With a zero age the list is the upstream's, as it listed it.
fn history(
    round: &Round,
    previous: Option<&Generation>,
    now: u64,
    policy: HistoryPolicy,
) -> Vec<HistoryDelta> {
    let earlier: HashMap<u64, &HistoryDelta> = previous
        .filter(|p| p.session_id == round.session_id)
        .map(|p| p.history.iter().map(|h| (h.serial, h)).collect())
        .unwrap_or_default();
    let from_round = |serial: u64, rel: &String, stored: &Stored| HistoryDelta {
        serial,
        rel: rel.clone(),
        hash: stored.hash(),
        size: stored.size(),
        since: earlier
            .get(&serial)
            .filter(|h| h.hash == stored.hash())
            .map_or(now, |h| h.since),
    };
    if policy.age.is_zero() {
        return round
            .deltas
            .iter()
            .map(|(serial, rel, stored)| from_round(*serial, rel, stored))
            .collect();
    }
    let listed: HashMap<u64, HistoryDelta> = round
        .deltas
        .iter()
        .map(|(serial, rel, stored)| (*serial, from_round(*serial, rel, stored)))
        .collect();
    let snapshot_size = round.snapshot.1.size();
    let (mut out, mut total) = (Vec::new(), 0u64);
    let mut serial = round.serial;
    loop {
        // What the upstream lists is always listed (`max_deltas` already cut it); the
        // history reaches further while the count, the age and the size allow.
        let h = match listed.get(&serial) {
            Some(h) => h.clone(),
            None => match earlier.get(&serial) {
                Some(h)
                    if out.len() < policy.max
                        && h.since + policy.age.as_secs() > now
                        && total + h.size < snapshot_size =>
                {
                    (*h).clone()
                }
                _ => break,
            },
        };
        total += h.size;
        out.push(h);
        match serial.checked_sub(1) {
            Some(s) => serial = s,
            None => break,
        }
    }
    out
}

/// The sessions left so far, plus the previous generation's if `session_id` replaces it; the
/// newest few are kept.
fn left_sessions(previous: Option<&Generation>, session_id: &str, now: u64) -> Vec<(String, u64)> {
    let Some(prev) = previous else {
        return Vec::new();
    };
    let mut left: Vec<(String, u64)> = prev
        .left_sessions
        .iter()
        .filter(|(s, _)| s != session_id)
        .cloned()
        .collect();
    if prev.session_id != session_id {
        left.push((prev.session_id.clone(), now));
    }
    let excess = left.len().saturating_sub(LEFT_SESSIONS_KEPT);
    left.drain(..excess);
    left
}

impl Generation {
    /// The relative path and entry of the snapshot the notification references.
    pub fn snapshot(&self) -> Option<(&String, &FileEntry)> {
        self.files
            .iter()
            .find(|(_, f)| f.kind == FileKind::Snapshot && f.expires.is_none())
    }
}

/// Header values of a generation's notification, made when it is prepared.
#[derive(Debug, Clone)]
pub struct NotificationHeaders {
    pub etag: HeaderValue,
    pub etag_gzip: HeaderValue,
    pub last_modified: HeaderValue,
}

impl Default for NotificationHeaders {
    fn default() -> NotificationHeaders {
        let empty = HeaderValue::from_static("");
        NotificationHeaders {
            etag: empty.clone(),
            etag_gzip: empty.clone(),
            last_modified: empty,
        }
    }
}

/// A header value of text this program made (digits, dates, quoted hex): never invalid.
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Generation {
    /// The file at `rel`, if clients may still fetch it.
    pub fn file(&self, rel: &str, now: u64) -> Option<&FileEntry> {
        self.files.get(rel).filter(|f| f.is_live(now))
    }

    pub fn last_modified_http(&self) -> &str {
        &self.last_modified_text
    }

    /// Fills what is derived from the persisted fields: the gzip notification and the
    /// response header values.
    fn prepared(mut self) -> Generation {
        self.last_modified_text =
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(self.last_modified));
        self.etag_gzip = gzip_etag(&self.etag);
        for f in self.files.values_mut() {
            if f.head.etag.is_empty() {
                f.head = FileHead::of(&f.hash);
            }
        }
        self.header_values = NotificationHeaders {
            etag: header_value(&self.etag),
            etag_gzip: header_value(&self.etag_gzip),
            last_modified: header_value(&self.last_modified_text),
        };
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let gz = enc
            .write_all(&self.notification)
            .and_then(|_| enc.finish())
            .ok();
        self.notification_gz = gz
            .filter(|g| g.len() < self.notification.len())
            .map(Bytes::from);
        self
    }
}

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
    /// Building, persisting and switching to the new generation.
    pub publish: f64,
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

/// A sample is taken at most this often (at the end of a poll round)...
const SAMPLE_EVERY: u64 = 60;
/// ... and this many are kept: six hours.
const SAMPLES_KEPT: usize = 360;

/// How many refused file paths a repository remembers.
const REFUSED_KEPT: usize = 4096;

/// A configured repository and its live state.
pub struct Repo {
    pub config: RepositoryConfig,
    /// What clients see; `None` until the first generation is published. Private: read it
    /// with [`Repo::current`] or [`Repo::peek`], replace it with [`Repo::publish`].
    published: ArcSwapOption<Generation>,
    /// Relative path → (hash, what the file must be, when first named) of the files the
    /// upstream notifications of the last `cache.retain` referenced, published or not: a
    /// client's request for one of those is served from the store, or fetched, verified and
    /// kept.
    pub pending: ArcSwap<HashMap<String, (Hash, Expected, u64)>>,
    /// Files fetched for a client that no notification named yet: relative path → hash, so
    /// that clients queued behind that download are served the stored copy. Bounded.
    pub forwarded: std::sync::Mutex<HashMap<String, Hash>>,
    /// Files of rounds that validation refused (relative paths): never served, not even
    /// forwarded to the upstream on request, unless a published generation names them.
    /// Bounded: starts over past [`REFUSED_KEPT`].
    refused: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Poll now (admin `POST /refresh`).
    pub refresh: Notify,
    /// How far behind the RPs asking for deltas are.
    pub rp_lag: crate::metrics::RpLag,
    /// Serial and staleness over the last hours, for the operator's page. Bounded.
    samples: std::sync::Mutex<std::collections::VecDeque<Sample>>,
    pub status: watch::Sender<RepoStatus>,
    /// Cache-Control values of the notification and of files, made once.
    pub notification_cache_control: HeaderValue,
    pub file_cache_control: HeaderValue,
    /// File name of this repository's index in the store directory.
    index_name: String,
    /// The node's clock: when files were first named and when they expire, read at publishing
    /// and at loading.
    clock: Clock,
}

impl Repo {
    pub fn new(config: RepositoryConfig, clock: Clock) -> Arc<Repo> {
        let id = Hash::of(config.public.to_string().as_bytes()).to_hex();
        Arc::new(Repo {
            index_name: format!("repository-{}.json", &id[..16]),
            notification_cache_control: header_value(&format!(
                "max-age={}",
                config.notification_max_age.as_secs()
            )),
            file_cache_control: header_value(&format!(
                "public, max-age={}, immutable",
                config.file_max_age.as_secs()
            )),
            config,
            published: ArcSwapOption::empty(),
            pending: ArcSwap::from_pointee(HashMap::new()),
            forwarded: std::sync::Mutex::new(HashMap::new()),
            refused: std::sync::Mutex::new(std::collections::HashSet::new()),
            refresh: Notify::new(),
            rp_lag: Default::default(),
            samples: Default::default(),
            status: watch::Sender::new(RepoStatus::default()),
            clock,
        })
    }

    /// Records a sample at `now`, unless one was taken within the last minute and the serial
    /// is the same; `last_success` is when the upstream last answered usably.
    pub fn sample(&self, now: SystemTime, last_success: Option<SystemTime>) {
        let at = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let stale = last_success.map(|t| now.duration_since(t).map_or(0, |d| d.as_secs()));
        let serial = self.peek().as_ref().map(|g| g.serial);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let recent = samples
            .back()
            .is_some_and(|s| s.at + SAMPLE_EVERY > at && s.serial == serial);
        if recent {
            return;
        }
        if samples.len() >= SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample { at, serial, stale });
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().copied().collect()
    }

    /// The node's clock, which this repository's file lifetimes are counted on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Withholds a refused round's files from clients.
    pub fn withhold(&self, rels: impl IntoIterator<Item = String>) {
        let mut set = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        for rel in rels {
            if set.len() >= REFUSED_KEPT {
                set.clear();
            }
            set.insert(rel);
        }
    }

    /// Whether a file belongs to a refused round (and no published generation).
    pub fn is_withheld(&self, rel: &str) -> bool {
        let set = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        !set.is_empty() && set.contains(rel)
    }

    /// A short name for logs.
    pub fn name(&self) -> String {
        self.config.public.to_string()
    }

    /// The generation clients see now, if any.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.published.load_full()
    }

    /// The same without taking a reference count: for the request path, where the guard
    /// lives no longer than one answer.
    pub fn peek(&self) -> arc_swap::Guard<Option<Arc<Generation>>> {
        self.published.load()
    }

    /// Builds the next generation from a stored round against what is published now,
    /// persists it as this repository's index, then makes it what clients see. The only way
    /// to publish.
    pub async fn publish(
        &self,
        store: &Store,
        round: Round,
        retain: Duration,
    ) -> std::io::Result<Arc<Generation>> {
        let previous = self.current();
        let generation = Generation::next(
            round,
            previous.as_deref(),
            &self.config.public,
            self.clock.system_now(),
            retain,
            HistoryPolicy::of(&self.config),
        );
        let data = serde_json::to_vec(&generation).map_err(std::io::Error::other)?;
        store.write_index(&self.index_name, &data).await?;
        Ok(self.install(generation))
    }

    /// Loads the persisted generation at start (see `Repo::load`) and serves it.
    pub fn restore(&self, store: &Store) -> Result<Option<Arc<Generation>>, LoadError> {
        Ok(self.load(store)?.map(|g| self.install(g)))
    }

    /// Loads the persisted generation at start, if every file it references is in the store
    /// whole: the right size, and the right hash (checked here, before anything is served;
    /// a damaged object is removed so the poller fetches it again). Files of superseded
    /// generations only have their size checked here; they are hashed before their first
    /// byte is served, and dropped from the generation if gone.
    fn load(&self, store: &Store) -> Result<Option<Generation>, LoadError> {
        let index = || self.index_name.clone();
        let Some(data) = store
            .read_index(&self.index_name)
            .map_err(|source| LoadError::Read {
                index: index(),
                source,
            })?
        else {
            return Ok(None);
        };
        let mut generation: Generation =
            serde_json::from_slice(&data).map_err(|source| LoadError::Corrupt {
                index: index(),
                source,
            })?;
        let now = self.clock.unix_now();
        let mut missing = Vec::new();
        let mut damaged_delta = None;
        generation.files.retain(|rel, f| {
            let present = f.is_live(now) && store.contains(&f.hash, Some(f.size));
            let ok =
                present && (f.expires.is_some() || store.verify_blocking(&f.hash).unwrap_or(false));
            if !ok && f.expires.is_none() {
                match (f.kind, f.serial) {
                    // A listed delta: the history is cut there (below).
                    (FileKind::Delta, Some(serial)) => {
                        damaged_delta = damaged_delta.max(Some(serial));
                    }
                    _ => missing.push(rel.clone()),
                }
            }
            ok
        });
        if !missing.is_empty() {
            return Err(LoadError::Missing {
                index: index(),
                files: missing,
            });
        }
        if let Some(serial) = damaged_delta {
            log::warn!(
                "{}: the delta of serial {serial} is missing or damaged in the store; the delta list is cut above it",
                self.name()
            );
            generation =
                generation.cut_history(serial, &self.config.public, self.clock.system_now());
        }
        Ok(Some(generation.prepared()))
    }

    /// Makes a generation what clients see (persisted already, or loaded at start), then
    /// tells watchers: whoever sees the new serial in the status can fetch it.
    fn install(&self, generation: Generation) -> Arc<Generation> {
        let (session_id, serial) = (generation.session_id.clone(), generation.serial);
        let generation = Arc::new(generation);
        self.published.store(Some(generation.clone()));
        self.status.send_modify(|s| {
            s.session_id = Some(session_id);
            s.serial = Some(serial);
            s.publishes += 1;
        });
        generation
    }
}

/// Why a stored generation was not served at start (the poller then starts afresh).
#[derive(Debug)]
pub enum LoadError {
    Read {
        index: String,
        source: std::io::Error,
    },
    Corrupt {
        index: String,
        source: serde_json::Error,
    },
    /// Files the generation references are missing or damaged in the store.
    Missing { index: String, files: Vec<String> },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read { index, source } => write!(f, "cannot read index {index}: {source}"),
            LoadError::Corrupt { index, source } => write!(f, "index {index} is corrupt: {source}"),
            LoadError::Missing { index, files } => write!(
                f,
                "index {index}: referenced files missing or damaged in the store: {}",
                files.join(", ")
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            LoadError::Corrupt { source, .. } => Some(source),
            LoadError::Missing { .. } => None,
        }
    }
}

mod hash_hex {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad hash"))
    }
}

mod bytes_text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(b).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "9df4b597-af9e-4dca-bdda-719cce2c4e28";

    /// A store holding one object per size asked for.
    async fn stored(store: &Arc<Store>, tag: &str, size: usize) -> Stored {
        let mut body = tag.as_bytes().to_vec();
        body.resize(size, b' ');
        let hash = store.put(&body).await.unwrap();
        store.stored(&hash).unwrap()
    }

    async fn round(store: &Arc<Store>, serial: u64, deltas: &[u64]) -> Round {
        let snapshot = stored(store, &format!("snapshot {serial}"), 10_000).await;
        let mut listed = Vec::new();
        for d in deltas {
            let s = stored(store, &format!("delta {d}"), 100).await;
            listed.push((*d, format!("{d}/delta.xml"), s));
        }
        Round {
            session_id: S.into(),
            serial,
            snapshot: (format!("{serial}/snapshot.xml"), snapshot),
            deltas: listed,
            snapshot_objects: None,
        }
    }

    fn serials(g: &Generation) -> Vec<u64> {
        g.history.iter().map(|h| h.serial).collect()
    }

    #[tokio::test]
    async fn the_history_grows_past_the_upstream_list_within_age_count_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, 1 << 16, None).unwrap();
        let public = BaseUri::parse("https://rrdp.example/rrdp/").unwrap();
        let policy = HistoryPolicy {
            age: Duration::from_secs(3600),
            max: 4,
        };
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let retain = Duration::from_secs(7200);
        let next = |r, p: Option<&Generation>, at: u64, policy| {
            Generation::next(r, p, &public, t0 + Duration::from_secs(at), retain, policy)
        };

        // The upstream lists one delta at a time, like Krill with few deltas.
        let g2 = next(round(&store, 2, &[2]).await, None, 0, policy);
        let g3 = next(round(&store, 3, &[3]).await, Some(&g2), 60, policy);
        let g4 = next(round(&store, 4, &[4]).await, Some(&g3), 120, policy);
        assert_eq!(serials(&g4), [4, 3, 2]);
        assert_eq!(
            g4.history[2].since, 1_000_000,
            "a delta keeps its first publication"
        );
        assert!(g4
            .files
            .values()
            .filter(|f| f.kind == FileKind::Delta)
            .all(|f| f.expires.is_none()));

        // The count cap: four entries.
        let g6 = next(round(&store, 5, &[5]).await, Some(&g4), 180, policy);
        let g6 = next(round(&store, 6, &[6]).await, Some(&g6), 240, policy);
        assert_eq!(serials(&g6), [6, 5, 4, 3]);
        // The delta that left the list stays servable for `retain`.
        let gone = g6.files["2/delta.xml"].expires;
        assert_eq!(gone, Some(1_000_240 + 7200));

        // Age: an hour after they were first published, deltas the upstream no longer lists
        // leave; the ones it lists stay.
        let g7 = next(round(&store, 7, &[7]).await, Some(&g6), 3600 + 120, policy);
        assert_eq!(serials(&g7), [7, 6, 5], "3 and 4 are over an hour old");

        // A gap ends the chain: the upstream jumped from 7 to 9 listing only 9.
        let g9 = next(round(&store, 9, &[9]).await, Some(&g7), 3700, policy);
        assert_eq!(serials(&g9), [9]);

        // Size: the deltas listed stay below the snapshot's size (10,000 bytes here).
        let big = HistoryPolicy {
            age: Duration::from_secs(3600),
            max: 500,
        };
        let mut g = next(round(&store, 10, &[10]).await, None, 3800, big);
        for serial in 11..=150 {
            g = next(round(&store, serial, &[serial]).await, Some(&g), 3800, big);
        }
        let total: u64 = g.history.iter().map(|h| h.size).sum();
        assert!(
            total < 10_000 && g.history.len() == 99,
            "{} deltas, {total} B",
            g.history.len()
        );

        // A zero age lists exactly the upstream's deltas.
        let exact = HistoryPolicy {
            age: Duration::ZERO,
            max: 500,
        };
        let g = next(round(&store, 151, &[151, 150]).await, Some(&g), 3900, exact);
        assert_eq!(serials(&g), [151, 150]);

        // Another session starts a new history.
        let mut other = round(&store, 152, &[152]).await;
        other.session_id = "4e1e2f5a-4c5f-4a3b-9a4e-3f2b1c0d9e8f".into();
        let g = next(other, Some(&g), 3900, big);
        assert_eq!(serials(&g), [152]);
    }
}
