//! The poller: one task per repository that keeps the published generation in step with the
//! upstream, and never publishes what it could not verify.
//!
//! Each round: conditional GET of the upstream notification; parse and validate it; fetch
//! the snapshot and every listed delta that is not in the store yet (bounded concurrency,
//! SHA-256 checked while streaming); persist the new generation's index; publish it in one
//! atomic switch. Any failure leaves the published generation as it was — that is
//! serve-stale-on-error, with no special case.
//!
//! The write side, split by job: [`upstreams`] (failover, conditional GET), [`plan`] (pure:
//! URI rebasing, session policy, delta hashes), [`files`] (the round's files into the store),
//! [`guards`] (content guards), [`barrier`] (`publish_delay`), [`compress`] (background gzip),
//! [`error`]. It uses `origin` (verified fetches), `published` (the only way to publish),
//! `store`, `rrdp`, `config`, `metrics`, `clock` and `heap`; never the read side.

pub(crate) mod barrier;
pub(crate) mod compress;
pub(crate) mod erik;
pub(crate) mod error;
pub(crate) mod files;
pub(crate) mod guards;
pub(crate) mod plan;
pub(crate) mod upstreams;
pub(crate) mod validation;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use rand::Rng;

use crate::clock::Clock;
use crate::config::Validate;
use crate::metrics::Metrics;
use crate::origin::client::within;
use crate::origin::peers::Peers;
use crate::published::{ErikRelay, Generation, Part, Repo, Round, RoundTimings};
use crate::rrdp::content::{self, Expected};
use crate::rrdp::Notification;
use crate::store::Store;

pub(crate) use error::PollError;

use barrier::Barrier;
use files::Fetcher;
use plan::{Plan, Step};
use upstreams::Upstreams;

/// The longest wait between polls while the upstream is failing.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one poll round achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoundOutcome {
    /// The upstream has nothing newer than what is published.
    Unchanged,
    /// A new generation was published.
    Published { session_id: String, serial: u64 },
}

/// Where the notification a round applies came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Upstream `i` answered: files from it first, then the other upstreams, then peers; the
    /// publish barrier applies.
    Upstream(usize),
    /// The upstreams are down and a peer publishes something newer: files from the peers
    /// only, published at once (the peers published it already).
    Peers,
}

/// Keeps one repository in step with its upstream.
pub(crate) struct Poller {
    repo: Arc<Repo>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// `cache.retain`.
    retain: Duration,
    upstreams: Upstreams,
    peers: Option<Arc<Peers>>,
    /// Rounds stored and waiting out publish_delay.
    barrier: Barrier,
    /// Set while a background compression runs.
    compressing: Arc<AtomicBool>,
    /// The clock `publish_delay` runs on, and the time RPKI objects are validated at.
    clock: Clock,
    /// RPKI validation's state between rounds.
    validator: validation::Validator,
    /// Where the current round's time went.
    timings: RoundTimings,
    /// This repository's side of the node's Erik relay (`server.erik`).
    erik: Option<ErikHook>,
}

/// How long after a failed Erik catch-up the same generation is tried again.
const ERIK_RETRY: Duration = Duration::from_secs(600);

/// A poller's link to the node's Erik relay.
struct ErikHook {
    sink: Arc<erik::Sink>,
    source: erik::ErikSource,
    /// The published generation a catch-up last failed for, and when: tried again only
    /// after [`ERIK_RETRY`] (each try is a whole snapshot walk), or for a newer one.
    failed_for: Option<((String, u64), Instant)>,
}

impl Poller {
    pub(crate) fn new(
        repo: Arc<Repo>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        retain: Duration,
    ) -> Poller {
        Poller {
            upstreams: Upstreams::new(&repo.config),
            validator: validation::Validator::new(&repo.config, &store),
            repo,
            store,
            metrics,
            retain,
            peers: None,
            barrier: Barrier::default(),
            compressing: Arc::new(AtomicBool::new(false)),
            clock: Clock::System,
            timings: RoundTimings::default(),
            erik: None,
        }
    }

    /// Feeds the node's Erik relay as repository `index` (`server.erik`).
    pub(crate) fn with_erik(mut self, relay: Option<Arc<ErikRelay>>, index: usize) -> Poller {
        let store = self.store.clone();
        self.erik = relay.map(|relay| ErikHook {
            sink: Arc::new(erik::Sink {
                store,
                relay,
                repo: index,
            }),
            source: erik::ErikSource::default(),
            failed_for: None,
        });
        self
    }

    /// Runs `publish_delay` on `clock` (tests move a manual one).
    pub(crate) fn with_clock(mut self, clock: Clock) -> Poller {
        self.clock = clock;
        self
    }

    /// Whether a stored round waits out publish_delay.
    pub(crate) fn holding(&self) -> bool {
        self.barrier.is_holding()
    }

    /// Adds the cluster's peers as a source of last resort.
    pub(crate) fn with_peers(mut self, peers: Option<Arc<Peers>>) -> Poller {
        self.peers = peers;
        self
    }

    /// Polls until `shutdown` turns true.
    pub(crate) async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.repo.report(|s| s.rounds_started += 1);
            let round_started = self.clock.now();
            // A round in progress at shutdown is dropped: nothing of it is published, its
            // downloads end, and the cache's lock can be let go of at once.
            let result = tokio::select! {
                r = self.poll_with_barrier() => r,
                _ = shutdown.changed() => return,
            };
            self.record(&result, &mut failures);
            // Erik behind what is published (a restart, a part that failed): caught up from
            // the published generation, after the round so that it never delays one.
            tokio::select! {
                _ = self.erik_catch_up() => {}
                _ = shutdown.changed() => return,
            }
            if result.is_ok() {
                // Ends with handing back what this round and the compression freed.
                compress::spawn(
                    self.repo.clone(),
                    self.store.clone(),
                    self.compressing.clone(),
                );
            }
            let delay = next_delay(self.repo.config.poll_interval, failures);
            // A held round becomes due on the delay's clock (the system's, or a test's): wake
            // then, unless the round that just ended already found it due; after that it
            // waits for a round in which the upstream answers, at the pace of the backoff
            // (waking again at a moment already past polled a dead upstream in a tight loop).
            let held = self
                .barrier
                .next_ready()
                .filter(|ready| *ready > round_started);
            let clock = self.clock.clone();
            let barrier_due = async move {
                match held {
                    Some(ready) => clock.sleep_until(ready).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = barrier_due => {}
                _ = self.repo.poll_asked() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One round, then the held rounds that are due, if the upstream answered in this round.
    pub(crate) async fn poll_with_barrier(&mut self) -> Result<RoundOutcome, PollError> {
        let result = self.poll_once().await;
        match (result, self.barrier.due(self.clock.now())) {
            (Ok(outcome), Some(_)) => Ok(self.publish_held().await?.unwrap_or(outcome)),
            (Err(cause), Some(serial)) => Err(PollError::Barrier {
                serial,
                cause: Box::new(cause),
            }),
            (result, None) => result,
        }
    }

    /// Logs state changes (not every retry), counts, and updates the status.
    fn record(&self, result: &Result<RoundOutcome, PollError>, failures: &mut u32) {
        let name = self.repo.name();
        // The sample first: whoever sees the round counted in the status finds it.
        let now = self.clock.system_now();
        let last_success = match result {
            Ok(_) => Some(now),
            Err(_) => self.repo.status().last_success,
        };
        self.repo.sample(now, last_success);
        let previous_error = self.repo.status().last_error.clone();
        match result {
            Ok(outcome) => {
                *failures = 0;
                if let Some(prev) = previous_error {
                    info!("{name}: upstream usable again (was: {prev})");
                }
                if let RoundOutcome::Published { session_id, serial } = outcome {
                    self.metrics.count_publish();
                    info!("{name}: published session {session_id} serial {serial}");
                }
                self.repo.report(|s| {
                    s.polls_ok += 1;
                    s.last_success = Some(now);
                    s.last_error = None;
                    s.last_error_since = None;
                    s.last_error_reason = None;
                });
            }
            Err(e) => {
                *failures = failures.saturating_add(1);
                self.metrics.count_poll_error(e.reason());
                let msg = e.to_string();
                let changed = previous_error.as_deref() != Some(msg.as_str());
                if changed {
                    let serving = match self.repo.peek().as_ref() {
                        Some(g) => format!("still serving serial {}", g.serial),
                        None => "nothing to serve yet".to_string(),
                    };
                    if matches!(e, PollError::Guard(_) | PollError::Refused { .. }) {
                        // The upstream published something that looks broken: loud.
                        log::error!("{name}: {msg}; {serving}");
                    } else {
                        warn!("{name}: {msg}; {serving}");
                    }
                }
                let reason = e.reason();
                self.repo.report(|s| {
                    s.polls_failed += 1;
                    s.last_error = Some(msg);
                    if changed {
                        s.last_error_since = Some(now);
                    }
                    s.last_error_reason = Some(reason);
                });
            }
        }
    }

    /// One round: fetch, verify, store, publish.
    pub(crate) async fn poll_once(&mut self) -> Result<RoundOutcome, PollError> {
        let started = Instant::now();
        self.timings = RoundTimings::default();
        let (i, (validators, body)) = self.poll_upstreams().await?;
        let Some(body) = body else {
            if let Some(p) = self.repo.current() {
                self.repair(&p, Source::Upstream(i)).await?;
            }
            return Ok(RoundOutcome::Unchanged);
        };
        let notification = Notification::parse(&body).map_err(PollError::Invalid)?;
        self.timings.notification = started.elapsed().as_secs_f64();
        let outcome = self.apply(notification, Source::Upstream(i)).await?;
        if matches!(outcome, RoundOutcome::Published { .. }) {
            let secs = started.elapsed().as_secs_f64();
            let timings = self.timings.clone();
            info!(
                "{}: round published in {secs:.3} s: notification {:.3} s, snapshot {:.3} s, \
                 object count {:.3} s, deltas {:.3} s, validation before publishing {:.3} s, \
                 publishing {:.3} s (Erik {:.3} s)",
                self.repo.name(),
                timings.notification,
                timings.snapshot,
                timings.count_objects,
                timings.deltas,
                timings.validate_before,
                timings.publish,
                timings.erik
            );
            self.repo.report(|s| {
                s.last_publish_seconds = Some(secs);
                s.last_round = Some(timings);
            });
        }
        self.upstreams.applied(i, validators);
        Ok(outcome)
    }

    /// Asks each upstream in turn for its notification (failover), each download under
    /// `fetch_timeout` (a notification trickled a byte at a time must not hold the poller).
    /// When every upstream fails, catches up from the peers and returns the first error.
    async fn poll_upstreams(&mut self) -> Result<(usize, upstreams::Answer), PollError> {
        let cfg = self.repo.config.clone();
        let mut first_error = None;
        for i in self.upstreams.order() {
            let fetched = within(
                cfg.fetch.fetch_timeout,
                self.upstreams.fetch_notification(&cfg, i),
            )
            .await;
            self.upstreams.mark(i, fetched.is_ok());
            match fetched {
                Ok(answer) => {
                    if i != self.upstreams.current {
                        info!(
                            "{}: polling {} (upstream {} of {})",
                            self.repo.name(),
                            cfg.upstreams[i],
                            i + 1,
                            cfg.upstreams.len()
                        );
                    }
                    self.upstreams.current = i;
                    return Ok((i, answer));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Every upstream failed: catch up to what the peers publish, if anything.
        self.catch_up_from_peers().await;
        Err(first_error.expect("at least one upstream"))
    }

    /// Publishes the held rounds whose publish_delay has passed (the caller polled the
    /// upstream successfully just before), oldest first; a round no newer than what is
    /// published by then is dropped.
    async fn publish_held(&mut self) -> Result<Option<RoundOutcome>, PollError> {
        let mut last = None;
        for round in self.barrier.take_due(self.clock.now()) {
            let stale = self
                .repo
                .peek()
                .as_ref()
                .is_some_and(|p| p.session_id == round.session_id && p.serial >= round.serial);
            if !stale {
                last = Some(self.publish(round).await?);
            }
        }
        Ok(last)
    }

    /// Applies the newest notification the peers publish, if it continues ours (see
    /// [`continues`]; none while nothing is published), fetching its files from the peers. It
    /// goes through the same checks as the origin's: URIs under the repository, hashes,
    /// content, `max_object_size`, validation. Off with `cluster.publish_from_peers = false`.
    async fn catch_up_from_peers(&mut self) {
        let Some(peers) = self.peers.clone().filter(|p| p.publish) else {
            return;
        };
        let published = self.repo.current();
        let best = peers
            .notifications(&self.repo.config)
            .await
            .into_iter()
            .filter(|n| published.as_deref().is_some_and(|p| continues(p, n)))
            .max_by_key(|n| n.serial);
        let Some(n) = best else {
            return;
        };
        match self.apply(n, Source::Peers).await {
            Ok(RoundOutcome::Published { serial, .. }) => info!(
                "{}: the upstream is down; caught up to serial {serial} from peers",
                self.repo.name()
            ),
            Ok(RoundOutcome::Unchanged) => {}
            Err(e) => warn!("{}: catching up from peers: {e}", self.repo.name()),
        }
    }

    /// Where a round from `source` fetches its files.
    fn fetcher(&self, source: Source) -> Fetcher {
        let bases = match source {
            Source::Upstream(i) => self.upstreams.bases_from(i),
            Source::Peers => Vec::new(),
        };
        Fetcher::new(
            &self.repo.config,
            self.upstreams.client.clone(),
            bases,
            self.peers.clone(),
            self.store.clone(),
            self.metrics.clone(),
        )
    }

    /// Brings a validated notification into the store and publishes it (or, from an
    /// upstream with `publish_delay`, holds it at the barrier).
    pub(crate) async fn apply(
        &mut self,
        n: Notification,
        source: Source,
    ) -> Result<RoundOutcome, PollError> {
        let plan = plan::plan(&self.repo.config, &n, self.upstreams.current)?;
        let published = self.repo.current();
        let step = plan::step(
            published.as_deref(),
            &n,
            self.retain.as_secs(),
            self.clock.unix_now(),
        )?;
        plan::check_history(published.as_deref(), &n)?;
        if let (Step::Same, Some(p)) = (step, &published) {
            self.repair(p, source).await?;
            return Ok(RoundOutcome::Unchanged);
        }
        self.remember_pending(&n, &plan);
        let (round, (snapshot, count_objects, deltas)) = self
            .store_round(&n, plan, source, published.as_deref())
            .await?;
        if let (Source::Peers, Some(p)) = (source, &published) {
            // A peer's serial continues ours by the deltas it actually served, each checked:
            // a list of made-up deltas it then answers 404 for proves nothing.
            if !round
                .deltas
                .iter()
                .any(|(serial, _, _)| *serial == p.serial + 1)
            {
                return Err(PollError::invalid(format!(
                    "a peer's serial {} does not continue serial {}: its delta for serial {} was not served",
                    n.serial,
                    p.serial,
                    p.serial + 1
                )));
            }
        }
        self.timings.snapshot = snapshot;
        self.timings.count_objects = count_objects;
        self.timings.deltas = deltas;
        // What may refuse the round runs before it is published; `warn` alone reports after
        // (it changes nothing, so it delays nothing: a first validation of a large
        // repository takes many times the round).
        let v = &self.repo.config.validation;
        let files = v
            .enabled()
            .then(|| validation::RoundFiles::of(&round, &self.store));
        let gates = v.validate == Validate::Refuse || v.pre_validate.is_some();
        if let (Some(files), true) = (&files, gates) {
            let started = Instant::now();
            self.validate(files, published.as_deref()).await?;
            self.timings.validate_before = started.elapsed().as_secs_f64();
        }
        let delay = self.repo.config.publish_delay;
        let outcome = if source == Source::Peers || delay.is_zero() {
            let started = Instant::now();
            let outcome = self.publish(round).await?;
            self.timings.publish = started.elapsed().as_secs_f64();
            outcome
        } else {
            let serial = round.serial;
            if self.barrier.hold(self.clock.now() + delay, round) {
                info!(
                    "{}: serial {serial} stored; published after publish_delay",
                    self.repo.name()
                );
            }
            RoundOutcome::Unchanged
        };
        if let (Some(files), false) = (&files, gates) {
            // Reports only: `warn` never refuses.
            let _ = self.validate(files, published.as_deref()).await;
        }
        Ok(outcome)
    }

    /// Validates a stored round; refuses it (and forgets its new files, so that no client
    /// is served them on request) when validation says so. Reports either way.
    async fn validate(
        &mut self,
        round: &validation::RoundFiles,
        published: Option<&Generation>,
    ) -> Result<(), PollError> {
        let repo = self.repo.clone();
        let now = self.clock.unix_now() as i64;
        let result = self
            .validator
            .check(&repo.config, &self.store, round, now)
            .await;
        let refused = result.is_err();
        let status = result.unwrap_or_else(|s| s);
        let name = repo.name();
        let serial = round.serial;
        let summary = validation_summary(&status);
        if let Some(summary) = &summary {
            if !refused {
                warn!("{name}: serial {serial}: {summary}; published all the same (validate = \"warn\")");
            }
        }
        let status = Arc::new(status);
        repo.report(|s| s.validation = Some(status.clone()));
        if !refused {
            return Ok(());
        }
        let mut reasons: Vec<&'static str> = Vec::new();
        if let Some(r) = &status.report {
            reasons.extend(r.counts.keys().map(|c| c.label()));
        }
        if status.pre_validate.as_ref().is_some_and(|p| !p.ok) {
            reasons.push("pre_validate");
        }
        if status.error.is_some() {
            reasons.push("unreadable");
        }
        for r in &reasons {
            self.metrics.count_validation_refusal(r);
        }
        self.forget_refused(round, published);
        let pre_only = reasons == ["pre_validate"];
        Err(PollError::Refused {
            serial,
            reason: if pre_only {
                "pre_validate"
            } else {
                "rpki_validation"
            },
            detail: summary.unwrap_or_else(|| "validation failed".to_string()),
        })
    }

    /// A refused round's new files (its snapshot, its deltas newer than what is published)
    /// are withheld: not served on request, not forwarded to the upstream either.
    fn forget_refused(&self, round: &validation::RoundFiles, published: Option<&Generation>) {
        let newer_than = published
            .filter(|p| p.session_id == round.session_id)
            .map_or(0, |p| p.serial);
        let mut withheld = vec![round.snapshot.0.clone()];
        withheld.extend(
            round
                .deltas
                .iter()
                .filter(|(serial, _, _)| *serial > newer_than)
                .map(|(_, rel, _)| rel.clone()),
        );
        let mut pending = (**self.repo.pending()).clone();
        for rel in &withheld {
            pending.remove(rel);
        }
        self.repo.set_pending(pending);
        self.repo.withhold(withheld);
    }

    /// Files named by upstream notifications stay named for `cache.retain`: a node that
    /// published an older serial (it polled later, or waited out publish_delay) sends RPs
    /// here for them after this node has moved on. Adds this notification's files.
    fn remember_pending(&self, n: &Notification, plan: &Plan) {
        let cfg = &self.repo.config;
        let snapshot = snapshot_content(cfg, n);
        let named = std::iter::once((plan.snapshot_rel.clone(), n.snapshot.hash, snapshot)).chain(
            plan.deltas.iter().map(|(d, rel)| {
                let content = cfg.expected(content::Document::Delta, &n.session_id, d.serial);
                (rel.clone(), d.file.hash, content)
            }),
        );
        let pending = plan::remembered(
            &self.repo.pending(),
            named,
            self.clock.unix_now(),
            self.retain.as_secs(),
            plan::PENDING_KEPT,
        );
        self.repo.set_pending(pending);
    }

    /// Fetches and verifies the round's files: the snapshot (or nothing is published), the
    /// content guards, then the deltas.
    async fn store_round(
        &self,
        n: &Notification,
        plan: Plan,
        source: Source,
        published: Option<&Generation>,
    ) -> Result<(Round, (f64, f64, f64)), PollError> {
        let cfg = &self.repo.config;
        let fetcher = self.fetcher(source);
        let expected = snapshot_content(cfg, n);
        let started = Instant::now();
        let snapshot = fetcher
            .ensure(
                &plan.snapshot_rel,
                n.snapshot.hash,
                Some(&expected),
                &n.snapshot.uri,
            )
            .await?;
        let snapshot_done = Instant::now();
        let snapshot_objects = if cfg.counts_objects() {
            let count =
                guards::count_objects(&self.store, n.snapshot.hash, &expected, published).await?;
            guards::check(cfg, &self.store, n, count, published).await?;
            Some(count)
        } else {
            None
        };
        let count_done = Instant::now();
        let deltas = fetcher
            .deltas(
                &self.repo.name(),
                &n.session_id,
                &plan.deltas,
                cfg.fetch.fetch_concurrency,
            )
            .await?;
        let timings = (
            snapshot_done.duration_since(started).as_secs_f64(),
            count_done.duration_since(snapshot_done).as_secs_f64(),
            count_done.elapsed().as_secs_f64(),
        );
        let round = Round {
            session_id: n.session_id.clone(),
            serial: n.serial,
            snapshot: (plan.snapshot_rel, snapshot),
            deltas,
            snapshot_objects,
        };
        Ok((round, timings))
    }

    /// Publishes a stored round: its generation is built now, against what is published now,
    /// so it retains the files of every generation published before it.
    async fn publish(&mut self, round: Round) -> Result<RoundOutcome, PollError> {
        let previous = self.repo.current();
        let files = validation::RoundFiles::of(&round, &self.store);
        let started = Instant::now();
        // Within the round only when its deltas continue the Erik state (a small walk); a
        // whole snapshot walk runs after the round (`erik_catch_up`), never delaying RRDP.
        let erik = match &self.erik {
            Some(hook) if hook.source.connects(&files) => self.erik_part(&files).await,
            Some(_) => {
                self.erik_give_up();
                None
            }
            None => None,
        };
        let mut erik_seconds = started.elapsed().as_secs_f64();
        let generation = self.repo.publish(&self.store, round, self.retain).await;
        let generation = match generation {
            Ok(g) => g,
            Err(e) => {
                // Its objects were stored for a state that is not published: Erik starts
                // from the published one again.
                self.erik_give_up();
                return Err(PollError::Store(e));
            }
        };
        if let Some(part) = erik {
            let switching = Instant::now();
            self.erik_switch(part, started).await;
            erik_seconds += switching.elapsed().as_secs_f64();
        }
        self.timings.erik = erik_seconds;
        let (session_id, serial) = (generation.session_id.clone(), generation.serial);
        if let Some(p) = previous.as_ref().filter(|p| p.session_id != session_id) {
            warn!(
                "{}: session reset upstream: {} serial {} replaced by {session_id} serial {serial}",
                self.repo.name(),
                p.session_id,
                p.serial
            );
        }
        Ok(RoundOutcome::Published { session_id, serial })
    }

    /// The Erik part of the state `files` is about to publish; `None` (and a warning) when it
    /// cannot be made: the relay then keeps serving the last part, still consistent.
    async fn erik_part(&mut self, files: &validation::RoundFiles) -> Option<Part> {
        let hook = self.erik.as_mut()?;
        match hook.source.advance(files, &hook.sink).await {
            Ok(part) => Some(part),
            Err(e) => {
                warn!(
                    "{}: serial {}: Erik objects not updated: {e}",
                    self.repo.name(),
                    files.serial
                );
                self.erik_give_up();
                None
            }
        }
    }

    /// Switches the relay to this repository's new part (after the generation is published:
    /// the objects are in the store either way).
    async fn erik_switch(&mut self, part: Part, started: Instant) {
        let Some(hook) = &self.erik else { return };
        let sink = &hook.sink;
        match sink
            .relay
            .update(sink.repo, part, &sink.store, &self.clock)
            .await
        {
            Ok(()) => {
                sink.relay.release(sink.repo);
                let serial = hook.source.serial();
                let seconds = started.elapsed().as_secs_f64();
                self.repo.report(|s| {
                    s.erik_serial = serial;
                    s.erik_seconds = Some(seconds);
                });
            }
            Err(e) => {
                warn!("{}: Erik index not updated: {e}", self.repo.name());
                self.erik_give_up();
            }
        }
    }

    /// The state the Erik source reached is not the relay's: it starts over from a
    /// snapshot, and what it stored for it is no longer held live.
    fn erik_give_up(&mut self) {
        if let Some(hook) = &mut self.erik {
            hook.source = erik::ErikSource::default();
            hook.sink.relay.release(hook.sink.repo);
        }
    }

    /// When the Erik source is not at the published generation (after a start, or a part
    /// that failed): its part made from that generation's snapshot, and switched in.
    pub(crate) async fn erik_catch_up(&mut self) {
        let Some(hook) = &self.erik else { return };
        let Some(g) = self.repo.current() else { return };
        let at = (g.session_id.clone(), g.serial);
        let failed_lately = hook
            .failed_for
            .as_ref()
            .is_some_and(|(f, when)| *f == at && when.elapsed() < ERIK_RETRY);
        if hook.source.is_at(&at.0, at.1) || failed_lately {
            return;
        }
        let Ok(n) = Notification::parse(&g.notification) else {
            return;
        };
        let files = validation::RoundFiles {
            session_id: n.session_id.clone(),
            serial: n.serial,
            snapshot: (
                n.snapshot.uri.clone(),
                self.store.object_path(&n.snapshot.hash),
            ),
            deltas: Vec::new(),
        };
        let started = Instant::now();
        if let Some(part) = self.erik_part(&files).await {
            self.erik_switch(part, started).await;
        }
        if let Some(hook) = &mut self.erik {
            let caught_up = hook.source.is_at(&at.0, at.1);
            hook.failed_for = (!caught_up).then(|| (at, Instant::now()));
        }
    }

    /// Fetches again any file the published generation references that is no longer in the
    /// store (found damaged and removed), so the node keeps its promise.
    async fn repair(&self, published: &Generation, source: Source) -> Result<(), PollError> {
        let fetcher = self.fetcher(source);
        for (rel, f) in &published.files {
            if f.expires.is_none() && !self.store.contains(&f.hash, Some(f.size)) {
                warn!(
                    "{}: {rel} is missing from the store; fetching it again",
                    self.repo.name()
                );
                // Content-addressed: these bytes passed the content check when first stored.
                let uri = self.repo.config.upstream.join(rel);
                fetcher.ensure(rel, f.hash, None, &uri).await?;
            }
        }
        Ok(())
    }
}

/// One line of what validation found (`None`: nothing).
fn validation_summary(s: &crate::published::ValidationStatus) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(e) = &s.error {
        parts.push(format!("RPKI validation could not run: {e}"));
    }
    if let Some(r) = s.report.as_ref().filter(|r| r.failed() > 0) {
        parts.push(format!("RPKI validation: {}", r.summary(3)));
    }
    if let Some(p) = s.pre_validate.as_ref().filter(|p| !p.ok) {
        parts.push(format!("pre_validate: {}", p.detail));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Whether a peer's notification may follow the published generation: the same session, a
/// higher serial, and a delta list that reaches back to the serial after ours (and the round
/// must then have stored every delta down to it: see `apply`). A peer cannot jump ahead
/// without serving every delta in between, each checked, so a peer that announces serial
/// 2^63 is not believed, and cannot leave the origin's real serials looking like
/// regressions. A node that has published nothing has no serial to continue: it takes nothing
/// from peers and waits for an upstream.
fn continues(published: &Generation, n: &Notification) -> bool {
    n.session_id == published.session_id
        && n.serial > published.serial
        && n.deltas.iter().any(|d| d.serial == published.serial + 1)
}

/// What the snapshot a notification names must be.
fn snapshot_content(cfg: &crate::config::RepositoryConfig, n: &Notification) -> Expected {
    cfg.expected(content::Document::Snapshot, &n.session_id, n.serial)
}

/// Time to the next poll: the interval with ±10 % jitter, doubled per consecutive failure up
/// to eight times the interval, and never longer than [`MAX_BACKOFF`] (or the interval, if
/// that is longer).
pub(crate) fn next_delay(interval: Duration, failures: u32) -> Duration {
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
