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

use crate::published::Repo;

/// The most often an unknown name makes the poller run a round.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// The longest a request waits for that round.
pub const REFRESH_WAIT: Duration = Duration::from_secs(5);
/// Forwards of names no notification gives: at once, and per second after.
pub const BUDGET_BURST: f64 = 20.0;
pub const BUDGET_PER_SECOND: f64 = 1.0;

/// One repository's state for unknown names.
pub struct MissGate {
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
    pub fn take(&self) -> bool {
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
/// [`MissGate::claim_refresh`]).
pub async fn refresh(repo: &Arc<Repo>, gate: &MissGate) {
    let mut status = repo.status.subscribe();
    // A round under way now (begun, not ended) is not enough: the one after it.
    let started = status.borrow().rounds_started;
    if let Some(at) = gate.claim_refresh() {
        // Its own task: the names sharing this moment wait for it even if this request goes.
        let repo = repo.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            repo.refresh.notify_one();
        });
    }
    let _ = tokio::time::timeout(REFRESH_WAIT, async {
        let _ = status
            .wait_for(|s| s.polls_ok + s.polls_failed > started)
            .await;
    })
    .await;
}
