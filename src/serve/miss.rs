//! Requests for files no notification this node holds names: what they may cost the origin.
//!
//! A node serves what a notification names. A name it has never seen is either a file of a
//! serial the upstream published since the last poll (an RP got that notification from
//! another node, or from a replica that polled first), or made up. Forwarding every such name
//! let a client make the origin answer one request per made-up name (300 random names cost
//! it 600 requests), and with `[cluster]` every peer a notification download too. Now:
//!
//! 1. **The notification first.** An unknown name waits (at most [`REFRESH_WAIT`]) for a
//!    poll round that began after it arrived; it asks the poller for one, at most one a
//!    [`REFRESH_EVERY`] per repository however many names arrive (the names that come within
//!    that second share the next one). A newer serial's file is then named by the upstream's
//!    newest notification and fetched by its hash, verified, like any file of a round: a
//!    client of a real, newer notification gets its file, even in a flood.
//! 2. **Then a budget.** A name still unknown after that (a superseded file of a serial this
//!    node never had, something else under the prefix) is forwarded only within a budget per
//!    repository ([`BUDGET_BURST`] at once, [`BUDGET_PER_SECOND`] after); past it, 404. The
//!    rest of a flood of made-up names costs the origin nothing.
//!
//! `rrdp_proxy_unknown_names_total{result}` counts them: `named` (a refresh named it),
//! `forwarded`, `refused`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use log::info;
use pingora::http::RequestHeader;

use super::answer::Answer;
use super::files::Known;
use super::RrdpProxy;
use crate::metrics::{RequestKind, RequestResult};
use crate::origin::client::{within, Client, FetchError};
use crate::origin::fetch::{ensure_object, fetch_object, Sources};
use crate::published::{FileHead, Repo};
use crate::rrdp::content::Expected;
use crate::rrdp::Hash;
use crate::store::Stored;

/// The most often an unknown name makes the poller run a round.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The longest a request waits for that round.
pub(crate) const REFRESH_WAIT: Duration = Duration::from_secs(5);
/// Forwards of names no notification gives: at once, and per second after.
pub(crate) const BUDGET_BURST: f64 = 20.0;
pub(crate) const BUDGET_PER_SECOND: f64 = 1.0;

/// One repository's state for unknown names.
pub(crate) struct MissGate {
    inner: Mutex<State>,
}

struct State {
    /// When the last round asked for was (or will be) asked for.
    last_refresh: Option<Instant>,
    tokens: f64,
    filled: Instant,
}

impl Default for MissGate {
    fn default() -> MissGate {
        MissGate {
            inner: Mutex::new(State {
                last_refresh: None,
                tokens: BUDGET_BURST,
                filled: Instant::now(),
            }),
        }
    }
}

impl MissGate {
    /// When this name is to ask for a round: `None` if one is asked for at this moment or
    /// later already (its round begins after this name arrived); else the earliest moment
    /// [`REFRESH_EVERY`] allows, which is now claimed.
    fn claim_refresh(&self) -> Option<Instant> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let at = match s.last_refresh {
            Some(t) if t >= now => return None,
            Some(t) => (t + REFRESH_EVERY).max(now),
            None => now,
        };
        s.last_refresh = Some(at);
        Some(at)
    }

    /// Takes one forward from the budget, if there is one.
    pub(crate) fn take(&self) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(s.filled).as_secs_f64() * BUDGET_PER_SECOND;
        s.tokens = (s.tokens + earned).min(BUDGET_BURST);
        s.filled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Waits, at most [`REFRESH_WAIT`], for a poll round of the repository that began after this
/// call to end, asking the poller for one unless another name already has (see
/// `MissGate::claim_refresh`).
pub(crate) async fn refresh(repo: &Arc<Repo>, gate: &MissGate) {
    let mut status = repo.watch_status();
    // A round under way now (begun, not ended) is not enough: the one after it.
    let started = status.borrow().rounds_started;
    if let Some(at) = gate.claim_refresh() {
        // Its own task: the names sharing this moment wait for it even if this request goes.
        let repo = repo.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            repo.poll_now();
        });
    }
    let _ = tokio::time::timeout(REFRESH_WAIT, async {
        let _ = status
            .wait_for(|s| s.polls_ok + s.polls_failed > started)
            .await;
    })
    .await;
}

//------------ Forwarding a miss ------------------------------------------------------------------

/// What forwarding a file no notification names gave.
pub(super) enum Forwarded {
    /// A download of the same path, queued ahead of this client, stored this object.
    Queued(Hash),
    /// This client's download (from the upstream, or from a peer), and whether the bytes
    /// were checked against a hash a notification gave.
    Fetched(Result<Stored, FetchError>, bool),
}

impl RrdpProxy {
    /// A file the published generation does not list (yet, or any more): from the upstream,
    /// or a peer.
    pub(super) async fn unpublished_file(
        &self,
        repo: &Arc<Repo>,
        upstream: &Arc<Client>,
        gate: &MissGate,
        rel: &str,
        req: &RequestHeader,
    ) -> Answer {
        if repo.is_withheld(rel) {
            return Answer::text(404, RequestKind::File, "not found\n");
        }
        // Not published (yet, or any more). If an upstream notification names this file, the
        // bytes must have its hash, and are kept.
        let named = || repo.pending().get(rel).map(|(h, e, _)| (*h, e.clone()));
        let mut pending = named();
        let metrics = &self.shared.metrics;
        // Fetched for a client already (and still stored): served as before, at no cost.
        if let (None, Some(hash)) = (&pending, self.forwarded(repo, rel)) {
            let head = FileHead::of(&hash);
            return self
                .object(repo, hash, &head, false, RequestResult::Hit, req)
                .await;
        }
        if pending.is_none() {
            // A name no notification gives: perhaps one the upstream published since the
            // last poll (see `miss`). Then within the budget, or not at all.
            refresh(repo, gate).await;
            pending = named();
            match (&pending, Known::of(repo, rel)) {
                (_, Some(known)) => {
                    metrics.count_unknown_name("named");
                    return self.published_file(repo, known, req, None).await;
                }
                (Some(_), None) => metrics.count_unknown_name("named"),
                (None, None) if gate.take() => metrics.count_unknown_name("forwarded"),
                (None, None) => {
                    metrics.count_unknown_name("refused");
                    return Answer::text(404, RequestKind::File, "not found\n");
                }
            }
        }
        let (fetched, verified) = match pending {
            // Named by the newest upstream notification: one download, shared with every
            // other client asking now and with the poller, hash-checked.
            Some((hash, content)) => {
                let sources = Sources {
                    upstream,
                    bases: &repo.config.upstreams,
                    peers: self.shared.peers.as_deref(),
                };
                (self.ensure(repo, &sources, rel, hash, &content).await, true)
            }
            None => match self.forward(repo, upstream, rel).await {
                Forwarded::Queued(hash) => {
                    let head = FileHead::of(&hash);
                    return self
                        .object(repo, hash, &head, false, RequestResult::Hit, req)
                        .await;
                }
                Forwarded::Fetched(fetched, verified) => (fetched, verified),
            },
        };
        self.answer_fetched(repo, rel, fetched, verified, req).await
    }

    /// The answer for a file fetched for a client: served from the store (immutable if its
    /// hash came from a notification), or the upstream's 404, or 502.
    async fn answer_fetched(
        &self,
        repo: &Repo,
        rel: &str,
        fetched: Result<Stored, FetchError>,
        verified: bool,
        req: &RequestHeader,
    ) -> Answer {
        match fetched {
            Ok(stored) => {
                let (hash, head) = (stored.hash(), FileHead::of(&stored.hash()));
                self.object(repo, hash, &head, verified, RequestResult::Miss, req)
                    .await
            }
            Err(FetchError::Status(404 | 410)) => {
                Answer::text(404, RequestKind::File, "not found\n")
            }
            Err(e) => {
                // (A hash mismatch was counted where it was found.)
                info!("{}{rel}: forwarding failed: {e}", repo.config.public);
                Answer::text(502, RequestKind::File, "upstream failed\n")
            }
        }
    }

    /// One verified download of an object whose hash and content are known.
    pub(super) async fn ensure(
        &self,
        repo: &Repo,
        sources: &Sources<'_>,
        rel: &str,
        hash: Hash,
        content: &Expected,
    ) -> Result<Stored, FetchError> {
        let limits = (
            repo.config.fetch.max_file_size,
            repo.config.fetch.fetch_timeout,
        );
        let (store, metrics) = (&self.shared.store, &self.shared.metrics);
        ensure_object(sources, store, rel, hash, Some(content), limits, metrics).await
    }

    /// The object a file no notification names was fetched into for a client, if it is
    /// still stored.
    pub(super) fn forwarded(&self, repo: &Repo, rel: &str) -> Option<Hash> {
        repo.forwarded(rel)
            .filter(|h| self.shared.store.contains(h, None))
    }

    /// A file no upstream notification names: fetched from the upstream once per path (later
    /// clients queued behind the download are served what it stored), else from a peer that
    /// publishes it, by the hash its notification gives.
    pub(super) async fn forward(
        &self,
        repo: &Repo,
        upstream: &Arc<Client>,
        rel: &str,
    ) -> Forwarded {
        let store = &self.shared.store;
        let flight = store
            .flights
            .enter(crate::store::flight::path_key(rel))
            .await;
        if let Some(hash) = self.forwarded(repo, rel) {
            return Forwarded::Queued(hash);
        }
        self.shared.metrics.count_upstream_fetch();
        let cfg = &repo.config;
        let fetched = within(
            cfg.fetch.fetch_timeout,
            fetch_object(
                upstream,
                store,
                &cfg.upstream,
                rel,
                None,
                None,
                cfg.fetch.max_file_size,
            ),
        )
        .await;
        if let Ok(stored) = &fetched {
            repo.remember_forwarded(rel, stored.hash());
        }
        // Released before asking peers: that takes the object key, and the lock order is
        // object, then path (see origin::fetch::ensure_object).
        drop(flight);
        let error = match fetched {
            Ok(stored) => return Forwarded::Fetched(Ok(stored), false),
            Err(e) => e,
        };
        // The origin failed (down, or the file is gone there): a peer that published it
        // names its hash, and serves the bytes by that hash.
        let Some(peers) = self.shared.peers.as_deref() else {
            return Forwarded::Fetched(Err(error), false);
        };
        let Some((hash, content)) = peers.lookup(&repo.config, rel).await else {
            return Forwarded::Fetched(Err(error), false);
        };
        let sources = Sources {
            upstream,
            bases: &[],
            peers: Some(peers),
        };
        let got = self.ensure(repo, &sources, rel, hash, &content).await;
        let verified = got.is_ok();
        Forwarded::Fetched(got, verified)
    }
}
