//! A generation: one published state of a repository, built from a stored [`Round`] and the
//! generation before it (the delta history, retained files, left sessions), or restored from
//! the store's index by `persist`. Pure: no I/O, no clock of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::head::{gzip_etag, header_value, FileHead, NotificationHeaders};
use super::persist::Persisted;
use crate::config::RepositoryConfig;
use crate::rrdp::uri::BaseUri;
use crate::rrdp::Hash;
use crate::rrdp::{render_notification, DeltaRef, FileRef};
use crate::store::Stored;

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

impl FileEntry {
    pub fn is_live(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// One published state of a repository.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub session_id: String,
    pub serial: u64,
    /// The notification as served (URIs under the public base).
    #[serde(with = "bytes_text")]
    pub notification: Bytes,
    /// The notification gzip-compressed (made once, when the generation is built or loaded).
    #[serde(skip)]
    pub notification_gz: Option<Bytes>,
    /// The same two bodies in memory-backed files, for `sendfile` (made with them).
    #[serde(skip)]
    pub notification_files: NotificationFiles,
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
    /// Private: nothing outside this module can build a generation (`persist` restores one
    /// only through [`Generation::restored`]).
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
            age: cfg.history.delta_history,
            max: cfg
                .history
                .max_deltas
                .map_or(cfg.history.delta_history_max, |m| {
                    m.min(cfg.history.delta_history_max)
                }),
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
            notification_files: Default::default(),
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
    pub(super) fn cut_history(
        mut self,
        serial: u64,
        public: &BaseUri,
        now: SystemTime,
    ) -> Generation {
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

impl Generation {
    /// The relative path and entry of the snapshot the notification references.
    pub fn snapshot(&self) -> Option<(&String, &FileEntry)> {
        self.files
            .iter()
            .find(|(_, f)| f.kind == FileKind::Snapshot && f.expires.is_none())
    }
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
    pub(super) fn prepared(mut self) -> Generation {
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
        self.notification_files = NotificationFiles {
            plain: resident_file(&self.notification),
            gzip: self.notification_gz.as_deref().and_then(resident_file),
        };
        self
    }
}

/// A generation's notification bodies as files in memory (`memfd`): plain-HTTP/1 clients get
/// them with `sendfile`, with no copy into the socket (serve/sendfile.rs). `None` where one
/// could not be made: that body is then written from memory.
#[derive(Clone, Debug, Default)]
pub struct NotificationFiles {
    pub plain: Option<Arc<std::fs::File>>,
    pub gzip: Option<Arc<std::fs::File>>,
}

/// `body` in an anonymous file in memory, sealed against any change.
fn resident_file(body: &[u8]) -> Option<Arc<std::fs::File>> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let create = |flags| {
        // SAFETY: the name is a NUL-terminated string; the descriptor returned is new and ours.
        unsafe { libc::memfd_create(c"notification".as_ptr(), flags) }
    };
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // Not executable, sealed so (kernels since 6.3 warn without it, and may refuse with
    // `vm.memfd_noexec = 2`); older kernels do not know the flag.
    let mut fd = create(flags | libc::MFD_NOEXEC_SEAL);
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        fd = create(flags);
    }
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(body).ok()?;
    // Sealed: what `sendfile` sends is what the ETag was made of, whatever happens.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
        return None;
    }
    Some(Arc::new(file))
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
    /// A generation restored from the store's index: `persist` calls this only after it found
    /// every file the generation names in the store, whole.
    pub(super) fn restored(p: Persisted) -> Generation {
        Generation {
            session_id: p.session_id,
            serial: p.serial,
            notification: p.notification,
            notification_gz: None,
            notification_files: Default::default(),
            etag: p.etag,
            etag_gzip: String::new(),
            last_modified_text: String::new(),
            header_values: NotificationHeaders::default(),
            last_modified: p.last_modified,
            files: p.files,
            delta_count: p.delta_count,
            left_sessions: p.left_sessions,
            snapshot_objects: p.snapshot_objects,
            history: p.history,
            _sealed: Sealed,
        }
    }
}

pub(super) mod hash_hex {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad hash"))
    }
}

pub(super) mod bytes_text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(b).map_err(serde::ser::Error::custom)?)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}
