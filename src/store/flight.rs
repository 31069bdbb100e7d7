//! Single flight: concurrent work on the same key waits for the first one instead of doing it
//! again. Used so that 200 clients asking at once for a file not yet stored make one upstream
//! request, shared with the poller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Per-key async locks, created on demand and dropped when nobody holds or waits for them.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while doing the work for a key; others entering the same key wait for its drop.
pub struct FlightGuard<'a> {
    flights: &'a Flights,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

/// The key of a download by path (a forwarded miss: the hash is not known yet). Relative
/// paths of RRDP files carry the session and serial, so one key per file in practice; two
/// repositories sharing a relative path would only wait for each other.
pub(crate) fn path_key(rel: &str) -> String {
    format!("path {rel}")
}

/// The key of a download of an object whose hash is known.
pub fn object_key(hash: &impl std::fmt::Display) -> String {
    format!("object {hash}")
}

impl Flights {
    /// Waits until no one else is in flight for `key`, then enters. Whoever enters second
    /// should check whether the first already did the work.
    pub async fn enter(&self, key: String) -> FlightGuard<'_> {
        let lock = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let held = lock.clone().lock_owned().await;
        FlightGuard {
            flights: self,
            key,
            lock,
            _held: held,
        }
    }

    /// How many wait behind the one in flight for `key` (for tests).
    pub fn waiting(&self, key: &str) -> usize {
        match self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            // The map holds one reference; the one in flight and each waiter hold two (its
            // own, and the one in the lock future or guard).
            Some(lock) => (Arc::strong_count(lock) - 1).saturating_sub(2) / 2,
            None => 0,
        }
    }

    /// Keys with someone in flight or waiting (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        // The map, this guard and its held lock: nobody else is waiting.
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_entries_run_one_at_a_time_and_clean_up() {
        let flights = Arc::new(Flights::default());
        let done = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (f, done, inside) = (flights.clone(), done.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = f.enter("k".into()).await;
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert!(flights.is_empty(), "no key left behind");
    }
}
