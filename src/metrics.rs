//! Counters for the admin listener's Prometheus `/metrics`.
//!
//! Plain atomics and one small map; per-repository gauges (serial, staleness) are read from
//! the repositories' status when `/metrics` is rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Notification,
    Snapshot,
    Delta,
    /// Any other file under a repository prefix (forwarded to the upstream).
    File,
    Passthrough,
    /// Outside every configured prefix.
    Other,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Notification,
        Kind::Snapshot,
        Kind::Delta,
        Kind::File,
        Kind::Passthrough,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Notification => "notification",
            Kind::Snapshot => "snapshot",
            Kind::Delta => "delta",
            Kind::File => "file",
            Kind::Passthrough => "passthrough",
            Kind::Other => "other",
        }
    }
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// From the store or the published generation.
    Hit,
    /// From a passthrough cache entry past its freshness, because the upstream failed.
    Stale,
    /// Fetched from the upstream for this request.
    Miss,
    /// Not served from the cache (errors, 404 outside prefixes, 405).
    Pass,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Hit, Outcome::Stale, Outcome::Miss, Outcome::Pass];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Pass => "pass",
        }
    }
}

/// The statuses counted one by one; any other lands in the last slot, reported as "other".
const STATUSES: [u16; 12] = [200, 206, 304, 400, 404, 405, 416, 500, 502, 503, 504, 0];

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// Request counters: one atomic per kind × result × status, so counting a request takes no
/// lock on the hot path.
struct RequestCounters([AtomicU64; Kind::ALL.len() * Outcome::ALL.len() * STATUSES.len()]);

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl RequestCounters {
    fn slot(kind: Kind, outcome: Outcome, status_slot: usize) -> usize {
        ((kind as usize) * Outcome::ALL.len() + outcome as usize) * STATUSES.len() + status_slot
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: RequestCounters,
    bytes_served: AtomicU64,
    upstream_fetches: AtomicU64,
    poll_errors: Mutex<BTreeMap<&'static str, u64>>,
    hash_mismatches: AtomicU64,
    invalid_contents: AtomicU64,
    peer_fetches: AtomicU64,
    peer_requests: AtomicU64,
    publishes: AtomicU64,
    gzip_responses: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, kind: Kind, outcome: Outcome, status: u16, bytes: u64) {
        self.requests.0[RequestCounters::slot(kind, outcome, status_slot(status))]
            .fetch_add(1, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count_gzip_response(&self) {
        self.gzip_responses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_upstream_fetch(&self) {
        self.upstream_fetches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_poll_error(&self, reason: &'static str) {
        *self
            .poll_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn count_hash_mismatch(&self) {
        self.hash_mismatches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_peer_fetch(&self) {
        self.peer_fetches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_peer_request(&self) {
        self.peer_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Objects asked of peers so far.
    pub fn peer_fetches(&self) -> u64 {
        self.peer_fetches.load(Ordering::Relaxed)
    }

    pub fn count_invalid_content(&self) {
        self.invalid_contents.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed poll rounds for one reason so far.
    pub fn poll_errors(&self, reason: &str) -> u64 {
        let errors = self.poll_errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.get(reason).copied().unwrap_or(0)
    }

    pub fn count_publish(&self) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests of these kinds were answered with this status (tests, status).
    pub fn requests_with_status(&self, kinds: &[Kind], status: u16) -> u64 {
        let slot = status_slot(status);
        kinds
            .iter()
            .flat_map(|k| Outcome::ALL.map(|o| RequestCounters::slot(*k, o, slot)))
            .map(|i| self.requests.0[i].load(Ordering::Relaxed))
            .sum()
    }

    /// Prometheus text format of the counters.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP rrdp_proxy_requests_total Requests answered, by kind, result and status.\n",
        );
        out.push_str("# TYPE rrdp_proxy_requests_total counter\n");
        for k in Kind::ALL {
            for o in Outcome::ALL {
                for (slot, status) in STATUSES.iter().enumerate() {
                    let n =
                        self.requests.0[RequestCounters::slot(k, o, slot)].load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let status = match status {
                        0 => "other".to_string(),
                        s => s.to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "rrdp_proxy_requests_total{{kind=\"{}\",result=\"{}\",status=\"{status}\"}} {n}",
                        k.as_str(),
                        o.as_str()
                    );
                }
            }
        }
        counter(
            out,
            "rrdp_proxy_bytes_served_total",
            "Body bytes sent to clients.",
            &self.bytes_served,
        );
        counter(
            out,
            "rrdp_proxy_upstream_fetches_total",
            "Snapshot/delta downloads started.",
            &self.upstream_fetches,
        );
        counter(
            out,
            "rrdp_proxy_hash_mismatches_total",
            "Upstream files refused for a wrong SHA-256.",
            &self.hash_mismatches,
        );
        counter(
            out,
            "rrdp_proxy_invalid_content_total",
            "Upstream snapshots/deltas refused: right hash, but not the file the notification describes.",
            &self.invalid_contents,
        );
        counter(
            out,
            "rrdp_proxy_peer_fetches_total",
            "Objects asked of peers (peer fill).",
            &self.peer_fetches,
        );
        counter(
            out,
            "rrdp_proxy_peer_requests_total",
            "Objects served to peers.",
            &self.peer_requests,
        );
        counter(
            out,
            "rrdp_proxy_publishes_total",
            "Generations published.",
            &self.publishes,
        );
        counter(
            out,
            "rrdp_proxy_gzip_responses_total",
            "Responses sent with Content-Encoding: gzip.",
            &self.gzip_responses,
        );
        out.push_str("# HELP rrdp_proxy_poll_errors_total Failed poll rounds, by reason.\n");
        out.push_str("# TYPE rrdp_proxy_poll_errors_total counter\n");
        for (r, n) in self
            .poll_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "rrdp_proxy_poll_errors_total{{reason=\"{r}\"}} {n}");
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
}
