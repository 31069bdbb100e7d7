//! Counters for the admin listener's Prometheus `/metrics`.
//!
//! Plain atomics and one small map, so counting takes no lock on the request path; the text
//! format is the `prometheus` crate's encoder's, fed from them at scrape time. Per-repository
//! gauges (serial, staleness) are read from the repositories' status then (`ops::admin`).

use std::collections::BTreeMap;
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

    /// Adds the counters to a scrape's [`Exposition`], one family each.
    ///
    /// Long on purpose (about 85 lines): mostly the table of counters with their help texts.
    pub fn collect_into(&self, ex: &mut Exposition) -> prometheus::Result<()> {
        let mut requests = Vec::new();
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
                    requests.push((
                        vec![k.as_str().to_string(), o.as_str().to_string(), status],
                        n,
                    ));
                }
            }
        }
        ex.counters(
            "rrdp_proxy_requests_total",
            "Requests answered, by kind, result and status.",
            &["kind", "result", "status"],
            requests,
        )?;
        for (name, help, v) in [
            (
                "rrdp_proxy_bytes_served_total",
                "Body bytes sent to clients.",
                &self.bytes_served,
            ),
            (
                "rrdp_proxy_upstream_fetches_total",
                "Snapshot/delta downloads started.",
                &self.upstream_fetches,
            ),
            (
                "rrdp_proxy_hash_mismatches_total",
                "Upstream files refused for a wrong SHA-256.",
                &self.hash_mismatches,
            ),
            (
                "rrdp_proxy_invalid_content_total",
                "Upstream snapshots/deltas refused: right hash, but not the file the notification describes.",
                &self.invalid_contents,
            ),
            (
                "rrdp_proxy_peer_fetches_total",
                "Objects asked of peers (peer fill).",
                &self.peer_fetches,
            ),
            (
                "rrdp_proxy_peer_requests_total",
                "Objects served to peers.",
                &self.peer_requests,
            ),
            (
                "rrdp_proxy_publishes_total",
                "Generations published.",
                &self.publishes,
            ),
            (
                "rrdp_proxy_gzip_responses_total",
                "Responses sent with Content-Encoding: gzip.",
                &self.gzip_responses,
            ),
        ] {
            let value = v.load(Ordering::Relaxed);
            ex.counters(name, help, &[], [(Vec::new(), value)])?;
        }
        let errors: Vec<_> = self
            .poll_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, n)| (vec![r.to_string()], *n))
            .collect();
        ex.counters(
            "rrdp_proxy_poll_errors_total",
            "Failed poll rounds, by reason.",
            &["reason"],
            errors,
        )
    }
}

/// One scrape of `/metrics`: families built from values read now, encoded in the Prometheus
/// text format by the `prometheus` crate (each family one group, labels escaped). The
/// counters themselves stay plain atomics, so the request path takes no lock.
pub struct Exposition {
    registry: prometheus::Registry,
}

impl Default for Exposition {
    fn default() -> Exposition {
        Exposition {
            registry: prometheus::Registry::new(),
        }
    }
}

impl Exposition {
    /// A counter family with one sample per label-value list (none for a plain counter).
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: impl IntoIterator<Item = (Vec<String>, u64)>,
    ) -> prometheus::Result<()> {
        let family = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)?;
        for (values, v) in samples {
            family.with_label_values(&values).inc_by(v);
        }
        self.registry.register(Box::new(family))
    }

    /// A gauge family with one sample per label-value list (none for a plain gauge).
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: impl IntoIterator<Item = (Vec<String>, f64)>,
    ) -> prometheus::Result<()> {
        let family = prometheus::GaugeVec::new(prometheus::Opts::new(name, help), labels)?;
        for (values, v) in samples {
            family.with_label_values(&values).set(v);
        }
        self.registry.register(Box::new(family))
    }

    /// The text format of every family added.
    pub fn encode(&self) -> prometheus::Result<String> {
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}
