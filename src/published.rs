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

use crate::clock::unix_now;
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
    /// Private: nothing outside this module can build a generation.
    #[serde(skip)]
    _sealed: Sealed,
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
    /// The generation to publish after `previous`: the round's notification and files, plus
    /// the files of older generations that are still within `retain` of `now` (RPs that read
    /// an older notification, here or at a node that published later, still ask for them).
    /// Pure: the clock comes in as `now`.
    pub fn next(
        round: Round,
        previous: Option<&Generation>,
        public: &BaseUri,
        now: SystemTime,
        retain: Duration,
    ) -> Generation {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let now_secs = secs.as_secs();
        let file = |stored: &Stored, kind| FileEntry {
            hash: stored.hash(),
            size: stored.size(),
            kind,
            expires: None,
        };
        let mut files = HashMap::new();
        let (snapshot_rel, snapshot) = &round.snapshot;
        files.insert(snapshot_rel.clone(), file(snapshot, FileKind::Snapshot));
        let mut deltas = Vec::with_capacity(round.deltas.len());
        for (serial, rel, stored) in &round.deltas {
            files.insert(rel.clone(), file(stored, FileKind::Delta));
            deltas.push(DeltaRef {
                serial: *serial,
                file: FileRef {
                    uri: public.join(rel),
                    hash: stored.hash(),
                },
            });
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
        let snapshot_ref = FileRef {
            uri: public.join(snapshot_rel),
            hash: snapshot.hash(),
        };
        let body = render_notification(&round.session_id, round.serial, &snapshot_ref, &deltas);
        let etag = format!("\"{}\"", &Hash::of(body.as_bytes()).to_hex()[..32]);
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
            delta_count: deltas.len(),
            snapshot_objects: round.snapshot_objects,
            notification_gz: None,
            etag_gzip: String::new(),
            last_modified_text: String::new(),
            header_values: Default::default(),
            _sealed: Sealed,
        }
        .prepared()
    }
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
        self.etag_gzip = format!("{}-gzip\"", self.etag.trim_end_matches('"'));
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
    /// How long the last round that published took: notification, files, store, switch.
    pub last_publish_seconds: Option<f64>,
    /// The serial whose files have their gzip variants made (in the background).
    pub compressed_serial: Option<u64>,
    /// Poll rounds begun; a round has ended when `polls_ok + polls_failed` reaches it.
    pub rounds_started: u64,
    /// The serial last written to the exports (export_rrdp, export_rsync).
    pub exported_serial: Option<u64>,
}

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
    /// Poll now (admin `POST /refresh`).
    pub refresh: Notify,
    pub status: watch::Sender<RepoStatus>,
    /// Cache-Control values of the notification and of files, made once.
    pub notification_cache_control: HeaderValue,
    pub file_cache_control: HeaderValue,
    /// File name of this repository's index in the store directory.
    index_name: String,
}

impl Repo {
    pub fn new(config: RepositoryConfig) -> Arc<Repo> {
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
            refresh: Notify::new(),
            status: watch::Sender::new(RepoStatus::default()),
        })
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
            SystemTime::now(),
            retain,
        );
        let data = serde_json::to_vec(&generation).map_err(std::io::Error::other)?;
        store.write_index(&self.index_name, &data).await?;
        Ok(self.install(generation))
    }

    /// Loads the persisted generation at start (see [`Repo::load`]) and serves it.
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
        let now = unix_now();
        let mut missing = Vec::new();
        generation.files.retain(|rel, f| {
            let present = f.is_live(now) && store.contains(&f.hash, Some(f.size));
            let ok =
                present && (f.expires.is_some() || store.verify_blocking(&f.hash).unwrap_or(false));
            if !ok && f.expires.is_none() {
                missing.push(rel.clone());
            }
            ok
        });
        if !missing.is_empty() {
            return Err(LoadError::Missing {
                index: index(),
                files: missing,
            });
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
