//! Time as this crate reads it: wall-clock seconds since the epoch, and the monotonic clock
//! that the waits operators configure (`publish_delay`, `notify_delay`) run on.
//!
//! Those waits take a [`Clock`]: the system's in production, a [`ManualClock`] in tests,
//! which moves only when a test advances it, so a test of a two-second delay waits for an
//! event instead of two seconds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The monotonic clock of configured delays.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system's monotonic clock.
    #[default]
    System,
    /// A clock that moves only when told to (tests).
    Manual(Arc<ManualClock>),
}

impl Clock {
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(m) => m.start + *m.elapsed.borrow(),
        }
    }

    /// Wall-clock seconds since the epoch on this clock: the time RPKI objects are validated
    /// at. A manual clock reads the moment it was set to, plus what it was advanced by (tests
    /// validate recorded repositories at the time they were recorded).
    pub fn unix_now(&self) -> u64 {
        match self {
            Clock::System => unix_now(),
            Clock::Manual(m) => {
                let wall = m.wall_start.unwrap_or_else(unix_now);
                wall + m.elapsed.borrow().as_secs()
            }
        }
    }

    /// The wall clock on this clock, to the nanosecond on the system's: what `/status`,
    /// `/healthz`, the history samples and the published generations' times read, so that a
    /// test that fixes the clock gets the same answers on any date.
    pub fn system_now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Manual(m) => {
                let wall = m.wall_start.unwrap_or_else(unix_now);
                UNIX_EPOCH + Duration::from_secs(wall) + *m.elapsed.borrow()
            }
        }
    }

    /// Returns once this clock reads `deadline` or later.
    pub async fn sleep_until(&self, deadline: Instant) {
        match self {
            Clock::System => tokio::time::sleep_until(deadline.into()).await,
            Clock::Manual(m) => {
                let mut elapsed = m.elapsed.subscribe();
                m.sleepers.send_modify(|n| *n += 1);
                // The sender lives in `m`, which outlives this wait: it cannot fail.
                let _ = elapsed.wait_for(|e| m.start + *e >= deadline).await;
                m.sleepers.send_modify(|n| *n -= 1);
            }
        }
    }

    /// Returns once `d` has passed on this clock.
    pub async fn sleep(&self, d: Duration) {
        self.sleep_until(self.now() + d).await
    }
}

/// A clock for tests: starts at the moment it is made and moves only by [`ManualClock::advance`].
/// Made with [`ManualClock::new`] its wall clock reads the system's (plus what it was
/// advanced by); with [`ManualClock::at_unix`] it reads a fixed moment, so nothing it answers
/// depends on the date the test runs.
pub struct ManualClock {
    start: Instant,
    /// The wall-clock second it was set to (`None`: the system's).
    wall_start: Option<u64>,
    elapsed: watch::Sender<Duration>,
    /// How many waits are parked on this clock: the event a test awaits before it moves it.
    sleepers: watch::Sender<usize>,
}

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: Instant::now(),
            wall_start: None,
            elapsed: watch::Sender::new(Duration::ZERO),
            sleepers: watch::Sender::new(0),
        })
    }

    /// A manual clock whose wall clock reads `unix` seconds since the epoch.
    pub fn at_unix(unix: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: Instant::now(),
            wall_start: Some(unix),
            elapsed: watch::Sender::new(Duration::ZERO),
            sleepers: watch::Sender::new(0),
        })
    }

    /// Returns once something waits on this clock (e.g. the exporter in `notify_delay`).
    pub async fn until_waited_on(&self) {
        let mut sleepers = self.sleepers.subscribe();
        let _ = sleepers.wait_for(|n| *n > 0).await;
    }

    /// Moves the clock forward by `d`, waking whatever waits for a moment now passed.
    pub fn advance(&self, d: Duration) {
        self.elapsed.send_modify(|e| *e += d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_advanced() {
        let manual = ManualClock::new();
        let clock = Clock::Manual(manual.clone());
        let t0 = clock.now();
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(2)).await }
        });
        manual.until_waited_on().await;
        manual.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        manual.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now() - t0, Duration::from_secs(2));
    }
}
