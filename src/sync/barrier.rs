//! The publish barrier (`publish_delay`): a round whose files are stored waits the delay
//! while the poller keeps polling, and is published after a later round in which the
//! upstream still answered. Every node polling within the delay has stored these files
//! before any of them announces them.

use std::collections::VecDeque;
use std::time::Instant;

use crate::published::Round;

/// Stored rounds waiting out `publish_delay`, oldest first, with when they may be published.
#[derive(Default)]
pub(crate) struct Barrier {
    held: VecDeque<(Instant, Round)>,
}

impl Barrier {
    /// Holds `round` until `ready`, unless the same serial of the session is held already.
    /// Returns whether it was newly held.
    pub(crate) fn hold(&mut self, ready: Instant, round: Round) -> bool {
        let already = self
            .held
            .iter()
            .any(|(_, h)| h.session_id == round.session_id && h.serial == round.serial);
        if !already {
            self.held.push_back((ready, round));
        }
        !already
    }

    /// Whether a round is held.
    pub(crate) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// When the oldest held round may be published.
    pub(crate) fn next_ready(&self) -> Option<Instant> {
        self.held.front().map(|(t, _)| *t)
    }

    /// The serial of the oldest round that is due at `now`.
    pub(crate) fn due(&self, now: Instant) -> Option<u64> {
        self.held
            .front()
            .filter(|(t, _)| *t <= now)
            .map(|(_, r)| r.serial)
    }

    /// Takes the rounds that are due at `now`, oldest first.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Round> {
        let mut due = Vec::new();
        while self.held.front().is_some_and(|(t, _)| *t <= now) {
            due.extend(self.held.pop_front().map(|(_, r)| r));
        }
        due
    }
}
