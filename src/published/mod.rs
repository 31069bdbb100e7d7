//! A repository's published state: the generation clients see, and how it is persisted.
//!
//! A [`Generation`] is everything needed to answer clients for one repository: the rendered
//! notification with its validators, and every file a client may fetch (those the notification
//! references, and those of superseded generations still within `cache.retain`). It is
//! replaced as a whole through an `ArcSwap`, so a request sees one generation from start to
//! end, and a notification is never visible before every file it names is in the store.
//!
//! This module is the seam between the write side (`sync`) and the read side (`serve`), and
//! the only way to publish. The types hold the invariant: a [`Generation`] cannot be built
//! outside `generation` (a private field; it is not `Deserialize`), [`Repo::publish`] builds
//! one only from a [`Round`], whose files are [`crate::store::Stored`] proofs, and `persist`
//! restores one at start only after finding every file it names in the store, whole. The
//! published generation is reachable only through [`Repo::current`].
//!
//! The parts: `generation` (pure: the next generation from a round, the delta history),
//! `persist` (the index file, and the private type it is read into), `head` (response
//! headers made once per generation), `status` (what the poller last did, for `/status`).

mod erik;
mod generation;
mod head;
mod persist;
mod status;

pub(crate) use erik::{ErikRelay, Part};
pub(crate) use generation::FileKind;
pub(crate) use generation::Generation;
pub(crate) use generation::HistoryPolicy;
pub(crate) use generation::Round;
pub(crate) use head::gzip_etag;
pub(crate) use head::header_value;
pub(crate) use head::FileHead;
pub(crate) use status::PreValidated;
pub use status::RepoStatus;
pub(crate) use status::RoundTimings;
pub(crate) use status::Sample;
pub(crate) use status::ValidationStatus;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use tokio::sync::{watch, Notify};

use crate::clock::Clock;
use crate::config::RepositoryConfig;
use crate::rrdp::content::Expected;
use crate::rrdp::Hash;
use crate::store::Store;

/// A sample is taken at most this often (at the end of a poll round)...
const SAMPLE_EVERY: u64 = 60;
/// ... and this many are kept: six hours.
const SAMPLES_KEPT: usize = 360;

/// Files upstream notifications named: relative path → (hash, what the file must be, when
/// first named, seconds since the epoch).
pub(crate) type Pending = HashMap<String, (Hash, Expected, u64)>;

/// How many forwarded paths a repository remembers (then it starts over).
const FORWARDED_KEPT: usize = 10_000;
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
    pending: ArcSwap<Pending>,
    /// Files fetched for a client that no notification named yet: relative path → hash, so
    /// that clients queued behind that download are served the stored copy. Bounded.
    forwarded: std::sync::Mutex<HashMap<String, Hash>>,
    /// Files of rounds that validation refused (relative paths): never served, not even
    /// forwarded to the upstream on request, unless a published generation names them.
    /// Bounded: starts over past [`REFUSED_KEPT`].
    refused: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Poll now (admin `POST /refresh`, a miss on a newer file): [`Repo::poll_now`].
    refresh: Notify,
    /// How far behind the RPs asking for deltas are.
    pub rp_lag: crate::metrics::RpLag,
    /// Serial and staleness over the last hours, for the operator's page. Bounded.
    samples: std::sync::Mutex<std::collections::VecDeque<Sample>>,
    /// Private: the published session and serial in it are set only by publishing
    /// ([`Repo::report`] keeps them).
    status: watch::Sender<RepoStatus>,
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
                config.headers.notification_max_age.as_secs()
            )),
            file_cache_control: header_value(&format!(
                "public, max-age={}, immutable",
                config.headers.file_max_age.as_secs()
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

    /// Updates what the poller reports; the published session and serial stay what
    /// publishing set (they are not the reporter's to change).
    pub fn report(&self, f: impl FnOnce(&mut RepoStatus)) {
        self.status.send_modify(|s| {
            let published = (s.session_id.clone(), s.serial);
            f(s);
            (s.session_id, s.serial) = published;
        });
    }

    /// Asks the poller to poll now rather than at its next interval.
    pub fn poll_now(&self) {
        self.refresh.notify_one();
    }

    /// Resolves when [`Repo::poll_now`] is asked (the poller waits on it between polls).
    pub(crate) async fn poll_asked(&self) {
        self.refresh.notified().await
    }

    /// What the poller last reported.
    pub fn status(&self) -> RepoStatus {
        self.status.borrow().clone()
    }

    /// Every change of the status, from now on.
    pub fn watch_status(&self) -> watch::Receiver<RepoStatus> {
        self.status.subscribe()
    }

    /// The files the upstream notifications of the last `cache.retain` named: relative path
    /// → (hash, what the file must be, when first named).
    pub fn pending(&self) -> arc_swap::Guard<Arc<Pending>> {
        self.pending.load()
    }

    /// Replaces the named files (the poller, after each notification).
    pub fn set_pending(&self, pending: Pending) {
        self.pending.store(Arc::new(pending));
    }

    /// The object a file no notification names was fetched into for a client, if any.
    pub fn forwarded(&self, rel: &str) -> Option<Hash> {
        let map = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        map.get(rel).copied()
    }

    /// Remembers what a file no notification names was fetched into; bounded (starts over
    /// past `FORWARDED_KEPT`).
    pub fn remember_forwarded(&self, rel: &str, hash: Hash) {
        let mut map = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= FORWARDED_KEPT {
            map.clear();
        }
        map.insert(rel.to_string(), hash);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rrdp::uri::BaseUri;
    use crate::store::Stored;

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

#[cfg(test)]
mod seam_tests {
    use super::*;
    use crate::config::Config;

    /// Only publishing sets the published session and serial in the status: a reporter that
    /// writes them changes nothing there.
    #[tokio::test]
    async fn a_report_cannot_change_the_published_serial() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[cache]\ndir = \"{}\"\n[[repository]]\npublic = \"http://a.test/rrdp/\"\nupstream = \"http://b.test/rrdp/\"\n",
            dir.path().display()
        );
        let config = Config::parse(&text, dir.path()).unwrap();
        let repo = Repo::new(config.repositories[0].clone(), Clock::System);
        let store = Store::open(&dir.path().join("cache"), 1 << 20, 1 << 16, None).unwrap();
        let hash = store.put(b"snapshot").await.unwrap();
        let round = Round {
            session_id: "s".into(),
            serial: 7,
            snapshot: ("7/snapshot.xml".into(), store.stored(&hash).unwrap()),
            deltas: Vec::new(),
            snapshot_objects: None,
        };
        repo.publish(&store, round, Duration::from_secs(60))
            .await
            .unwrap();
        repo.report(|s| {
            s.serial = Some(999);
            s.session_id = Some("forged".into());
            s.rounds_started += 1;
        });
        let s = repo.status();
        assert_eq!((s.session_id.as_deref(), s.serial), (Some("s"), Some(7)));
        assert_eq!(s.rounds_started, 1, "the rest of the report is taken");
    }
}
