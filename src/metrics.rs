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
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Pass => "pass",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Kind, Outcome, u16), u64>>,
    bytes_served: AtomicU64,
    upstream_fetches: AtomicU64,
    poll_errors: Mutex<BTreeMap<&'static str, u64>>,
    hash_mismatches: AtomicU64,
    publishes: AtomicU64,
    gzip_responses: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, kind: Kind, outcome: Outcome, status: u16, bytes: u64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind, outcome, status))
            .or_default() += 1;
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

    pub fn count_publish(&self) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests of these kinds were answered with this status (tests, status).
    pub fn requests_with_status(&self, kinds: &[Kind], status: u16) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((k, _, s), _)| kinds.contains(k) && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Prometheus text format of the counters.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP rrdp_proxy_requests_total Requests answered, by kind, result and status.\n",
        );
        out.push_str("# TYPE rrdp_proxy_requests_total counter\n");
        for ((k, o, s), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "rrdp_proxy_requests_total{{kind=\"{}\",result=\"{}\",status=\"{s}\"}} {n}",
                k.as_str(),
                o.as_str()
            );
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
