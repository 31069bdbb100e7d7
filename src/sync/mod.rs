//! The poller: one task per repository that keeps the published generation in step with the
//! upstream, and never publishes what it could not verify.
//!
//! Each round: conditional GET of the upstream notification; parse and validate it; fetch
//! the snapshot and every listed delta that is not in the store yet (bounded concurrency,
//! SHA-256 checked while streaming); persist the new generation's index; publish it in one
//! atomic switch. Any failure leaves the published generation as it was — that is
//! serve-stale-on-error, with no special case.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use rand::Rng;
use tokio::sync::Semaphore;

use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::origin::client::{FetchError, Upstream};
use crate::origin::fetch::{ensure_object, Sources};
use crate::origin::peers::Peers;
use crate::published::{FileEntry, FileKind, Generation, Repo};
use crate::rrdp::content::{self, Expected};
use crate::rrdp::uri::BaseUri;
use crate::rrdp::{render_notification, DeltaRef, FileRef, Hash, Notification};
use crate::store::Store;

/// The longest wait between polls while the upstream is failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one poll round achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream has nothing newer than what is published.
    Unchanged,
    /// A new generation was published.
    Published { session_id: String, serial: u64 },
}

/// Why a round failed. The published generation stays as it was.
#[derive(Debug)]
pub enum PollError {
    /// The notification could not be fetched.
    Notification(FetchError),
    /// The notification was fetched but refused.
    Invalid(String),
    /// The serial went backwards within the session.
    Regression { published: u64, upstream: u64 },
    /// The upstream went back to a session this repository left less than `cache.retain` ago.
    SessionReturn { session_id: String },
    /// A content guard (`min_objects`, `max_shrink`) refused the new snapshot.
    Guard(String),
    /// The upstream failed when asked again at the end of `publish_delay`.
    Barrier(String),
    /// A snapshot or delta could not be fetched or verified.
    File { uri: String, error: FetchError },
    /// Our own disk failed.
    Store(String),
}

impl PollError {
    /// A short, stable label for metrics and for "did the state change" in logs.
    pub fn reason(&self) -> &'static str {
        match self {
            PollError::Notification(e) => e.reason(),
            PollError::Invalid(_) => "invalid_notification",
            PollError::Regression { .. } => "serial_regression",
            PollError::SessionReturn { .. } => "session_return",
            PollError::Guard(_) => "content_guard",
            PollError::Barrier(_) => "publish_barrier",
            PollError::File { error, .. } => error.reason(),
            PollError::Store(_) => "store",
        }
    }
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollError::Notification(e) => write!(f, "notification: {e}"),
            PollError::Invalid(e) => write!(f, "notification refused: {e}"),
            PollError::Regression {
                published,
                upstream,
            } => write!(
                f,
                "serial went back from {published} to {upstream} within the session: not published"
            ),
            PollError::SessionReturn { session_id } => write!(
                f,
                "went back to session {session_id}, which it left earlier (a stale replica?): not published"
            ),
            PollError::Guard(e) => write!(f, "content guard: {e}; not published"),
            PollError::Barrier(e) => write!(f, "publish barrier: {e}"),
            PollError::File { uri, error } => write!(f, "{uri}: {error}"),
            PollError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

/// Keeps one repository in step with its upstream.
pub struct Poller {
    repo: Arc<Repo>,
    store: Arc<Store>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    /// `cache.retain`.
    retain: Duration,
    /// Per upstream: its notification's validators, once a round with it completed.
    validators: Vec<Option<Validators>>,
    /// Per upstream: not tried first again before this instant (it failed), and the backoff.
    down_until: Vec<Option<(Instant, Duration)>>,
    /// Where this round fetches files: the upstream that answered first, then the others.
    /// Empty while catching up from peers (the upstreams are down).
    bases: Vec<BaseUri>,
    /// The upstream whose notification this round applies.
    current: usize,
    peers: Option<Arc<Peers>>,
    /// Applying a notification taken from a peer (no publish barrier: it is published).
    from_peers: bool,
    /// Rounds stored and waiting out publish_delay, with when they may be published.
    held: std::collections::VecDeque<(Instant, Stored)>,
    /// Set while a background compression runs.
    compressing: Arc<AtomicBool>,
}

/// A round whose files are all stored: what its generation is built from.
struct Stored {
    n: Notification,
    snapshot_rel: String,
    deltas: Vec<DeltaRef>,
    files: HashMap<String, FileEntry>,
    snapshot_objects: Option<u64>,
}

/// An upstream notification's ETag and Last-Modified.
type Validators = (Option<String>, Option<String>);

/// A failed upstream is tried first again after this long, doubling up to [`MAX_BACKOFF`].
const UPSTREAM_BACKOFF: Duration = Duration::from_secs(30);

impl Poller {
    pub fn new(
        repo: Arc<Repo>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        retain: Duration,
    ) -> Poller {
        let upstream = Upstream::for_repository(&repo.config);
        let n = repo.config.upstreams.len();
        let bases = repo.config.upstreams.clone();
        Poller {
            repo,
            store,
            upstream,
            metrics,
            retain,
            validators: vec![None; n],
            down_until: vec![None; n],
            bases,
            current: 0,
            peers: None,
            from_peers: false,
            held: std::collections::VecDeque::new(),
            compressing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a stored round waits out publish_delay.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Adds the cluster's peers as a source of last resort.
    pub fn with_peers(mut self, peers: Option<Arc<Peers>>) -> Poller {
        self.peers = peers;
        self
    }

    /// The upstreams in the order to try them: those not backing off in configured order,
    /// then the others, soonest retry first.
    fn upstream_order(&self) -> Vec<usize> {
        let now = Instant::now();
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..self.down_until.len())
            .partition(|i| self.down_until[*i].is_none_or(|(t, _)| t <= now));
        down.sort_by_key(|i| self.down_until[*i].map(|(t, _)| t));
        up.append(&mut down);
        up
    }

    fn mark(&mut self, i: usize, ok: bool) {
        self.down_until[i] = if ok {
            None
        } else {
            let backoff =
                self.down_until[i].map_or(UPSTREAM_BACKOFF, |(_, b)| (b * 2).min(MAX_BACKOFF));
            Some((Instant::now() + backoff, backoff))
        };
    }

    /// Polls until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.repo.status.send_modify(|s| s.rounds_started += 1);
            let result = self.poll_with_barrier().await;
            self.record(&result, &mut failures);
            if result.is_ok() {
                // Ends with handing back what this round and the compression freed.
                self.spawn_compression();
            }
            let mut delay = next_delay(self.repo.config.poll_interval, failures);
            if let Some((ready, _)) = self.held.front() {
                delay = delay.min(ready.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.repo.refresh.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One round, then the held rounds that are due, if the upstream answered in this round.
    pub async fn poll_with_barrier(&mut self) -> Result<Outcome, PollError> {
        let result = self.poll_once().await;
        let due = self
            .held
            .front()
            .filter(|(t, _)| *t <= Instant::now())
            .map(|(_, h)| h.n.serial);
        match (result, due) {
            (Ok(outcome), Some(_)) => Ok(self.publish_held().await?.unwrap_or(outcome)),
            (Err(e), Some(serial)) => Err(PollError::Barrier(format!(
                "serial {serial} waits until the upstream answers again after publish_delay ({e})"
            ))),
            (result, None) => result,
        }
    }

    /// Logs state changes (not every retry), counts, and updates the status.
    fn record(&self, result: &Result<Outcome, PollError>, failures: &mut u32) {
        let name = self.repo.name();
        let previous_error = self.repo.status.borrow().last_error.clone();
        match result {
            Ok(outcome) => {
                *failures = 0;
                if let Some(prev) = previous_error {
                    info!("{name}: upstream usable again (was: {prev})");
                }
                if let Outcome::Published { session_id, serial } = outcome {
                    self.metrics.count_publish();
                    info!("{name}: published session {session_id} serial {serial}");
                }
                self.repo.status.send_modify(|s| {
                    s.polls_ok += 1;
                    s.last_success = Some(SystemTime::now());
                    s.last_error = None;
                });
            }
            Err(e) => {
                *failures = failures.saturating_add(1);
                self.metrics.count_poll_error(e.reason());
                let msg = e.to_string();
                let changed = previous_error.as_deref() != Some(msg.as_str());
                if changed {
                    let serving = match self.repo.published.load().as_ref() {
                        Some(g) => format!("still serving serial {}", g.serial),
                        None => "nothing to serve yet".to_string(),
                    };
                    if matches!(e, PollError::Guard(_)) {
                        // The upstream published something that looks broken: loud.
                        log::error!("{name}: {msg}; {serving}");
                    } else {
                        warn!("{name}: {msg}; {serving}");
                    }
                }
                self.repo.status.send_modify(|s| {
                    s.polls_failed += 1;
                    s.last_error = Some(msg);
                });
            }
        }
    }

    /// One round: fetch, verify, store, publish.
    pub async fn poll_once(&mut self) -> Result<Outcome, PollError> {
        let started = std::time::Instant::now();
        let cfg = self.repo.config.clone();
        // Each upstream in turn (failover); a notification trickled a byte at a time must
        // not hold the poller: the whole download has the same deadline as any file's.
        let mut answer = None;
        let mut first_error = None;
        for i in self.upstream_order() {
            let fetched = tokio::time::timeout(cfg.fetch_timeout, self.fetch_notification(i))
                .await
                .unwrap_or(Err(PollError::Notification(FetchError::Timeout)));
            self.mark(i, fetched.is_ok());
            match fetched {
                Ok(a) => {
                    if i != self.current {
                        info!(
                            "{}: polling {} (upstream {} of {})",
                            self.repo.name(),
                            cfg.upstreams[i],
                            i + 1,
                            cfg.upstreams.len()
                        );
                    }
                    answer = Some((i, a));
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some((i, (validators, body))) = answer else {
            // Every upstream failed: catch up to what the peers publish, if anything.
            self.catch_up_from_peers().await;
            return Err(first_error.expect("at least one upstream"));
        };
        self.current = i;
        self.bases = std::iter::once(cfg.upstreams[i].clone())
            .chain(
                cfg.upstreams
                    .iter()
                    .filter(|b| **b != cfg.upstreams[i])
                    .cloned(),
            )
            .collect();
        let Some(body) = body else {
            if let Some(p) = self.repo.published.load_full() {
                self.repair(&p).await?;
            }
            return Ok(Outcome::Unchanged);
        };
        let notification =
            Notification::parse(&body).map_err(|e| PollError::Invalid(e.to_string()))?;
        let outcome = self.apply(notification).await?;
        if matches!(outcome, Outcome::Published { .. }) {
            let secs = started.elapsed().as_secs_f64();
            self.repo
                .status
                .send_modify(|s| s.last_publish_seconds = Some(secs));
        }
        self.validators[i] = Some(validators);
        Ok(outcome)
    }

    /// Publishes the held rounds whose publish_delay has passed (the caller polled the
    /// upstream successfully just before), oldest first; a round no newer than what is
    /// published by then is dropped.
    async fn publish_held(&mut self) -> Result<Option<Outcome>, PollError> {
        let mut last = None;
        while self.held.front().is_some_and(|(t, _)| *t <= Instant::now()) {
            let (_, round) = self.held.pop_front().expect("checked");
            let stale =
                self.repo.published.load().as_ref().is_some_and(|p| {
                    p.session_id == round.n.session_id && p.serial >= round.n.serial
                });
            if stale {
                continue;
            }
            last = Some(self.install_round(round).await?);
        }
        Ok(last)
    }

    /// Applies the newest notification the peers publish, if it is ahead of ours (within our
    /// session, or any if nothing is published), fetching its files from the peers.
    async fn catch_up_from_peers(&mut self) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let published = self.repo.published.load_full();
        let best = peers
            .notifications(&self.repo.config)
            .await
            .into_iter()
            .filter(|n| match &published {
                Some(p) => n.session_id == p.session_id && n.serial > p.serial,
                None => true,
            })
            .max_by_key(|n| n.serial);
        let Some(n) = best else {
            return;
        };
        let saved = std::mem::take(&mut self.bases);
        self.from_peers = true;
        match self.apply(n).await {
            Ok(Outcome::Published { serial, .. }) => info!(
                "{}: the upstream is down; caught up to serial {serial} from peers",
                self.repo.name()
            ),
            Ok(Outcome::Unchanged) => {}
            Err(e) => warn!("{}: catching up from peers: {e}", self.repo.name()),
        }
        self.from_peers = false;
        self.bases = saved;
    }

    /// Upstream `i`'s notification validators and body; no body if it answered 304.
    async fn fetch_notification(
        &self,
        i: usize,
    ) -> Result<(Validators, Option<bytes::Bytes>), PollError> {
        let cfg = &self.repo.config;
        let mut headers = Vec::new();
        if let Some((etag, lm)) = &self.validators[i] {
            if let Some(e) = etag {
                headers.push(("If-None-Match", e.clone()));
            }
            if let Some(l) = lm {
                headers.push(("If-Modified-Since", l.clone()));
            }
        }
        let resp = self
            .upstream
            .get(&cfg.upstreams[i], &cfg.notification, &headers)
            .await
            .map_err(PollError::Notification)?;
        match resp.status() {
            304 if self.validators[i].is_some() => {
                return Ok((self.validators[i].clone().unwrap_or_default(), None));
            }
            200 => {}
            s => return Err(PollError::Notification(FetchError::Status(s))),
        }
        resp.check_identity_encoding()
            .map_err(PollError::Notification)?;
        if resp.is_html() {
            return Err(PollError::Invalid(
                "an HTML page, not a notification".into(),
            ));
        }
        let validators = (
            resp.header("ETag").map(str::to_string),
            resp.header("Last-Modified").map(str::to_string),
        );
        let body = resp
            .body(cfg.max_notification_size)
            .await
            .map_err(PollError::Notification)?;
        Ok((validators, Some(body)))
    }

    /// Brings a validated upstream notification into the store and publishes it.
    pub async fn apply(&mut self, n: Notification) -> Result<Outcome, PollError> {
        let cfg = &self.repo.config;
        // Every URI must lie under one of the repository's bases (RFC 9674): nothing is ever
        // fetched from another host, scheme or port.
        let rel_of = |uri: &str| -> Result<String, PollError> {
            cfg.public
                .relative(uri)
                .or_else(|| cfg.upstreams.iter().find_map(|b| b.relative(uri)))
                .map(str::to_string)
                .ok_or_else(|| {
                    PollError::Invalid(format!(
                        "URI {uri} is not under {} or {}",
                        cfg.public, cfg.upstreams[self.current]
                    ))
                })
        };
        let snapshot_rel = rel_of(&n.snapshot.uri)?;
        let mut delta_rels = n
            .deltas
            .iter()
            .map(|d| rel_of(&d.file.uri))
            .collect::<Result<Vec<_>, _>>()?;
        let mut deltas = n.deltas.clone();
        if let Some(max) = cfg.max_deltas {
            deltas.truncate(max);
            delta_rels.truncate(max);
        }

        let published = self.repo.published.load_full();
        if let Some(p) = &published {
            if p.session_id == n.session_id {
                if n.serial < p.serial {
                    return Err(PollError::Regression {
                        published: p.serial,
                        upstream: n.serial,
                    });
                }
                if n.serial == p.serial {
                    self.repair(p).await?;
                    return Ok(Outcome::Unchanged);
                }
            } else if p
                .left_sessions
                .iter()
                .any(|(s, when)| *s == n.session_id && when + self.retain.as_secs() > unix_now())
            {
                // Two replicas out of step behind one name make the session flip back and
                // forth; every flip would cost each RP a full snapshot. A session left within
                // `cache.retain` stays left; after that a return is taken as a reset.
                return Err(PollError::SessionReturn {
                    session_id: n.session_id.clone(),
                });
            }
        }

        let snapshot_content = Expected {
            kind: content::Kind::Snapshot,
            session_id: n.session_id.clone(),
            serial: n.serial,
        };
        // Files named by earlier upstream notifications stay named for `cache.retain`: a node
        // that published an older serial (it polled later, or waited out publish_delay) sends
        // RPs here for them after this node has moved on.
        let now = unix_now();
        let keep_since = now.saturating_sub(self.retain.as_secs());
        let mut pending: HashMap<String, (Hash, Expected, u64)> = self
            .repo
            .pending
            .load()
            .iter()
            .filter(|(_, (_, _, since))| *since >= keep_since)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pending.insert(
            snapshot_rel.clone(),
            (n.snapshot.hash, snapshot_content.clone(), now),
        );
        for (d, rel) in deltas.iter().zip(&delta_rels) {
            let content = Expected {
                kind: content::Kind::Delta,
                session_id: n.session_id.clone(),
                serial: d.serial,
            };
            pending.insert(rel.clone(), (d.file.hash, content, now));
        }
        self.repo.pending.store(Arc::new(pending));

        // The snapshot must be there, or nothing is published.
        let snapshot_size = self
            .ensure(
                &snapshot_rel,
                n.snapshot.hash,
                Some(&snapshot_content),
                &n.snapshot.uri,
            )
            .await?;

        let snapshot_objects = if cfg.counts_objects() {
            let count = self
                .count_objects(n.snapshot.hash, &snapshot_content, published.as_deref())
                .await?;
            self.check_guards(&n, count, published.as_deref()).await?;
            Some(count)
        } else {
            None
        };

        // Deltas, concurrently; a delta gone upstream (404/410) cuts the list there, keeping
        // the contiguous newest part that is stored.
        let results = self.fetch_deltas(&n.session_id, &deltas, &delta_rels).await;
        let mut files = HashMap::new();
        files.insert(
            snapshot_rel.clone(),
            FileEntry {
                hash: n.snapshot.hash,
                size: snapshot_size,
                kind: FileKind::Snapshot,
                expires: None,
            },
        );
        let mut served_deltas: Vec<DeltaRef> = Vec::new();
        for ((d, rel), result) in deltas.iter().zip(&delta_rels).zip(results) {
            match result {
                Ok(size) => {
                    files.insert(
                        rel.clone(),
                        FileEntry {
                            hash: d.file.hash,
                            size,
                            kind: FileKind::Delta,
                            expires: None,
                        },
                    );
                    served_deltas.push(DeltaRef {
                        serial: d.serial,
                        file: FileRef {
                            uri: cfg.public.join(rel),
                            hash: d.file.hash,
                        },
                    });
                }
                Err(PollError::File {
                    error: FetchError::Status(404 | 410),
                    uri,
                }) => {
                    info!(
                        "{}: delta {} is gone upstream ({uri}); serving the {} newer deltas",
                        self.repo.name(),
                        d.serial,
                        served_deltas.len()
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }

        let round = Stored {
            n,
            snapshot_rel,
            deltas: served_deltas,
            files,
            snapshot_objects,
        };
        if !self.from_peers && !cfg.publish_delay.is_zero() {
            // The publish barrier: the files are stored now, the notification waits
            // publish_delay (while this node keeps polling), and is published after a round
            // in which the upstream still answered. Every node polling within the delay has
            // stored these files before any announces them.
            let already = self
                .held
                .iter()
                .any(|(_, h)| h.n.session_id == round.n.session_id && h.n.serial == round.n.serial);
            if !already {
                info!(
                    "{}: serial {} stored; published after publish_delay",
                    self.repo.name(),
                    round.n.serial
                );
                self.held
                    .push_back((Instant::now() + cfg.publish_delay, round));
            }
            return Ok(Outcome::Unchanged);
        }
        self.install_round(round).await
    }

    /// Publishes a stored round: its generation is built now, against what is published now,
    /// so it retains the files of every generation published before it.
    async fn install_round(&mut self, round: Stored) -> Result<Outcome, PollError> {
        let published = self.repo.published.load_full();
        let mut generation = self.next_generation(
            &round.n,
            &round.snapshot_rel,
            round.deltas,
            round.files,
            published.as_deref(),
        );
        generation.snapshot_objects = round.snapshot_objects;
        let (session_id, serial) = (generation.session_id.clone(), generation.serial);
        self.repo
            .publish(&self.store, generation)
            .await
            .map_err(|e| PollError::Store(e.to_string()))?;
        if let Some(p) = published.as_ref().filter(|p| p.session_id != session_id) {
            warn!(
                "{}: session reset upstream: {} serial {} replaced by {session_id} serial {serial}",
                self.repo.name(),
                p.session_id,
                p.serial
            );
        }
        Ok(Outcome::Published { session_id, serial })
    }

    /// How many objects a stored snapshot publishes: known if it is the published one, else
    /// read from the store.
    async fn count_objects(
        &self,
        hash: Hash,
        expected: &Expected,
        published: Option<&Generation>,
    ) -> Result<u64, PollError> {
        if let Some(p) = published {
            if p.snapshot().is_some_and(|(_, f)| f.hash == hash) {
                if let Some(n) = p.snapshot_objects {
                    return Ok(n);
                }
            }
        }
        let (path, expected) = (self.store.object_path(&hash), expected.clone());
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)
                .map_err(|e| PollError::Store(format!("{}: {e}", path.display())))?;
            content::check(
                std::io::BufReader::with_capacity(256 << 10, file),
                &expected,
            )
            .map(|s| s.publishes)
            .map_err(|e| PollError::Store(format!("stored snapshot {hash}: {e}")))
        })
        .await
        .map_err(|e| PollError::Store(e.to_string()))?
    }

    /// Refuses a snapshot with fewer than `min_objects` objects, or one that shrank by more
    /// than `max_shrink` percent against the published snapshot of the same session (a
    /// declared session reset may shrink).
    async fn check_guards(
        &self,
        n: &Notification,
        count: u64,
        published: Option<&Generation>,
    ) -> Result<(), PollError> {
        let cfg = &self.repo.config;
        if let Some(min) = cfg.min_objects {
            if count < min {
                return Err(PollError::Guard(format!(
                    "the snapshot of serial {} has {count} objects, fewer than min_objects = {min}",
                    n.serial
                )));
            }
        }
        let (Some(max), Some(p)) = (cfg.max_shrink, published) else {
            return Ok(());
        };
        if p.session_id != n.session_id {
            return Ok(());
        }
        let Some((_, entry)) = p.snapshot() else {
            return Ok(());
        };
        let before = Expected {
            kind: content::Kind::Snapshot,
            session_id: p.session_id.clone(),
            serial: p.serial,
        };
        let prev = self.count_objects(entry.hash, &before, Some(p)).await?;
        if count < prev && (prev - count) * 100 > prev * u64::from(max) {
            return Err(PollError::Guard(format!(
                "the snapshot shrank from {prev} objects (serial {}) to {count} (serial {}), more than max_shrink = {max}%",
                p.serial, n.serial
            )));
        }
        Ok(())
    }

    /// Fetches again any file the published generation references that is no longer in the
    /// store (found damaged and removed), so the node keeps its promise.
    async fn repair(&self, published: &Generation) -> Result<(), PollError> {
        for (rel, f) in &published.files {
            if f.expires.is_none() && !self.store.contains(&f.hash, Some(f.size)) {
                warn!(
                    "{}: {rel} is missing from the store; fetching it again",
                    self.repo.name()
                );
                // Content-addressed: these bytes passed the content check when first stored.
                self.ensure(rel, f.hash, None, &self.repo.config.upstream.join(rel))
                    .await?;
            }
        }
        Ok(())
    }

    /// Makes sure the object is in the store, fetching it if needed; returns its size.
    async fn ensure(
        &self,
        rel: &str,
        hash: Hash,
        content: Option<&Expected>,
        uri: &str,
    ) -> Result<u64, PollError> {
        let src = Sources {
            upstream: &self.upstream,
            bases: &self.bases,
            peers: self.peers.as_deref(),
        };
        let limits = (
            self.repo.config.max_file_size,
            self.repo.config.fetch_timeout,
        );
        ensure_object(&src, &self.store, rel, hash, content, limits, &self.metrics)
            .await
            .map_err(|error| PollError::File {
                uri: uri.to_string(),
                error,
            })
    }

    async fn fetch_deltas(
        &self,
        session_id: &str,
        deltas: &[DeltaRef],
        rels: &[String],
    ) -> Vec<Result<u64, PollError>> {
        let sem = Arc::new(Semaphore::new(self.repo.config.fetch_concurrency));
        let mut tasks = Vec::new();
        for (d, rel) in deltas.iter().zip(rels) {
            let (upstream, store, metrics) = (
                self.upstream.clone(),
                self.store.clone(),
                self.metrics.clone(),
            );
            let (bases, peers) = (self.bases.clone(), self.peers.clone());
            let limits = (
                self.repo.config.max_file_size,
                self.repo.config.fetch_timeout,
            );
            let (rel, hash, uri) = (rel.clone(), d.file.hash, d.file.uri.clone());
            let content = Expected {
                kind: content::Kind::Delta,
                session_id: session_id.to_string(),
                serial: d.serial,
            };
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let src = Sources {
                    upstream: &upstream,
                    bases: &bases,
                    peers: peers.as_deref(),
                };
                ensure_object(&src, &store, &rel, hash, Some(&content), limits, &metrics)
                    .await
                    .map_err(|error| PollError::File { uri, error })
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(
                t.await
                    .unwrap_or_else(|e| Err(PollError::Store(format!("fetch task failed: {e}")))),
            );
        }
        out
    }

    /// Builds the generation to publish: the new notification's files, plus files of older
    /// generations that are still within `cache.retain`.
    fn next_generation(
        &self,
        n: &Notification,
        snapshot_rel: &str,
        deltas: Vec<DeltaRef>,
        mut files: HashMap<String, FileEntry>,
        previous: Option<&Generation>,
    ) -> Generation {
        let cfg = &self.repo.config;
        let now = unix_now();
        let expires = now + self.retain.as_secs();
        if let Some(prev) = previous {
            for (rel, f) in &prev.files {
                if files.contains_key(rel) || !f.is_live(now) {
                    continue;
                }
                files.insert(
                    rel.clone(),
                    FileEntry {
                        expires: Some(f.expires.unwrap_or(expires)),
                        ..f.clone()
                    },
                );
            }
        }
        let snapshot = FileRef {
            uri: cfg.public.join(snapshot_rel),
            hash: n.snapshot.hash,
        };
        let body = render_notification(&n.session_id, n.serial, &snapshot, &deltas);
        let etag = format!("\"{}\"", &Hash::of(body.as_bytes()).to_hex()[..32]);
        // Round up to the next second (HTTP dates have no fractions) and keep it strictly
        // increasing, so an If-Modified-Since taken from any earlier moment sees it as newer.
        let now_ceil = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let last_modified = now_ceil.max(previous.map_or(0, |p| p.last_modified + 1));
        Generation {
            session_id: n.session_id.clone(),
            serial: n.serial,
            notification: body.into(),
            etag,
            last_modified,
            files,
            delta_count: deltas.len(),
            left_sessions: left_sessions(previous, &n.session_id, now),
            snapshot_objects: None,
            notification_gz: None,
            etag_gzip: String::new(),
            last_modified_text: String::new(),
            header_values: Default::default(),
        }
        .prepared()
    }

    /// Makes the gzip variants of the files the published notification references, in the
    /// background: compressing a 500 MB snapshot takes seconds, and neither a new serial nor
    /// the next poll may wait for it. One compression at a time; a generation published
    /// meanwhile is compressed right after, by the same task.
    fn spawn_compression(&self) {
        if self.compressing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (repo, store, flag) = (
            self.repo.clone(),
            self.store.clone(),
            self.compressing.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Some(g) = repo.published.load_full() else {
                    flag.store(false, Ordering::Release);
                    return;
                };
                for f in g.files.values().filter(|f| f.expires.is_none()) {
                    if let Err(e) = store.make_gzip(f.hash).await {
                        warn!(
                            "{}: cannot make gzip variant of {}: {e}",
                            repo.name(),
                            f.hash
                        );
                    }
                }
                repo.status
                    .send_modify(|s| s.compressed_serial = Some(g.serial));
                flag.store(false, Ordering::Release);
                // A generation published while this ran found the flag set and left its
                // files to this task; take them on unless another task already has.
                let moved_on = repo
                    .published
                    .load()
                    .as_ref()
                    .is_some_and(|now| !Arc::ptr_eq(now, &g));
                if !moved_on || flag.swap(true, Ordering::AcqRel) {
                    // The round's download and hashing buffers and the compressors' are
                    // free now.
                    crate::heap::release_free();
                    return;
                }
            }
        });
    }
}

/// The sessions left so far, plus the previous generation's if `session_id` replaces it; the
/// newest few are kept.
fn left_sessions(previous: Option<&Generation>, session_id: &str, now: u64) -> Vec<(String, u64)> {
    const KEEP: usize = 8;
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
    let excess = left.len().saturating_sub(KEEP);
    left.drain(..excess);
    left
}

/// Time to the next poll: the interval with ±10 % jitter, doubled per consecutive failure up
/// to eight times the interval, and never longer than [`MAX_BACKOFF`] (or the interval, if
/// that is longer).
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(3);
    let base = (interval * factor).min(MAX_BACKOFF.max(interval));
    let jitter = rand::thread_rng().gen_range(0.9..1.1);
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(10);
        let d0 = next_delay(i, 0);
        assert!(d0 >= Duration::from_secs(9) && d0 <= Duration::from_secs(11));
        let d3 = next_delay(i, 3);
        assert!(d3 >= Duration::from_secs(72) && d3 <= Duration::from_secs(88));
        assert!(next_delay(i, 30) <= Duration::from_secs(88));
        assert!(next_delay(Duration::from_secs(120), 5) <= MAX_BACKOFF.mul_f64(1.1));
    }
}
