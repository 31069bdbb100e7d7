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
pub enum RequestKind {
    Notification,
    Snapshot,
    Delta,
    /// Any other file under a repository prefix (forwarded to the upstream).
    File,
    Passthrough,
    /// Outside every configured prefix.
    Other,
    /// `/.well-known/erik/index/{fqdn}` (`server.erik`).
    ErikIndex,
    /// `/.well-known/ni/sha-256/{hash}` (`server.erik`).
    ErikObject,
}

impl RequestKind {
    const ALL: [RequestKind; 8] = [
        RequestKind::Notification,
        RequestKind::Snapshot,
        RequestKind::Delta,
        RequestKind::File,
        RequestKind::Passthrough,
        RequestKind::Other,
        RequestKind::ErikIndex,
        RequestKind::ErikObject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Notification => "notification",
            RequestKind::Snapshot => "snapshot",
            RequestKind::Delta => "delta",
            RequestKind::File => "file",
            RequestKind::Passthrough => "passthrough",
            RequestKind::Other => "other",
            RequestKind::ErikIndex => "erik_index",
            RequestKind::ErikObject => "erik_object",
        }
    }
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestResult {
    /// From the store or the published generation.
    Hit,
    /// From a passthrough cache entry past its freshness, because the upstream failed.
    Stale,
    /// Fetched from the upstream for this request.
    Miss,
    /// Not served from the cache (errors, 404 outside prefixes, 405).
    Pass,
}

impl RequestResult {
    const ALL: [RequestResult; 4] = [
        RequestResult::Hit,
        RequestResult::Stale,
        RequestResult::Miss,
        RequestResult::Pass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Hit => "hit",
            RequestResult::Stale => "stale",
            RequestResult::Miss => "miss",
            RequestResult::Pass => "pass",
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
struct RequestCounters(
    [AtomicU64; RequestKind::ALL.len() * RequestResult::ALL.len() * STATUSES.len()],
);

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl RequestCounters {
    fn slot(kind: RequestKind, outcome: RequestResult, status_slot: usize) -> usize {
        ((kind as usize) * RequestResult::ALL.len() + outcome as usize) * STATUSES.len()
            + status_slot
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: RequestCounters,
    bytes_served: AtomicU64,
    upstream_fetches: AtomicU64,
    poll_errors: Mutex<BTreeMap<&'static str, u64>>,
    unknown_names: Mutex<BTreeMap<&'static str, u64>>,
    validation_refusals: Mutex<BTreeMap<&'static str, u64>>,
    hash_mismatches: AtomicU64,
    invalid_contents: AtomicU64,
    peer_fetches: AtomicU64,
    peer_requests: AtomicU64,
    publishes: AtomicU64,
    gzip_responses: AtomicU64,
    lean_responses: AtomicU64,
    access_log_dropped: AtomicU64,
}

impl Metrics {
    pub fn count_request(
        &self,
        kind: RequestKind,
        outcome: RequestResult,
        status: u16,
        bytes: u64,
    ) {
        self.requests.0[RequestCounters::slot(kind, outcome, status_slot(status))]
            .fetch_add(1, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count_gzip_response(&self) {
        self.gzip_responses.fetch_add(1, Ordering::Relaxed);
    }

    /// A response written by the lean path (`serve::lean`), without a pingora session.
    pub fn count_lean_response(&self) {
        self.lean_responses.fetch_add(1, Ordering::Relaxed);
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

    /// A round refused by validation, once per check that failed in it (`pre_validate`
    /// for the operator's command).
    pub fn count_validation_refusal(&self, reason: &'static str) {
        *self
            .validation_refusals
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
    pub fn validation_refusals(&self, reason: &str) -> u64 {
        let r = self
            .validation_refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.get(reason).copied().unwrap_or(0)
    }

    /// A request for a name no notification gave: `named` (a refresh named it), `forwarded`
    /// (within the budget), `refused`.
    pub fn count_unknown_name(&self, result: &'static str) {
        let mut m = self.unknown_names.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(result).or_insert(0) += 1;
    }

    pub fn unknown_names(&self, result: &str) -> u64 {
        let m = self.unknown_names.lock().unwrap_or_else(|e| e.into_inner());
        m.get(result).copied().unwrap_or(0)
    }

    pub fn poll_errors(&self, reason: &str) -> u64 {
        let errors = self.poll_errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.get(reason).copied().unwrap_or(0)
    }

    /// Access-log lines not written (the queue was full, or the file could not be written).
    pub fn count_access_log_dropped(&self, lines: u64) {
        self.access_log_dropped.fetch_add(lines, Ordering::Relaxed);
    }

    pub fn access_log_dropped(&self) -> u64 {
        self.access_log_dropped.load(Ordering::Relaxed)
    }

    pub fn count_publish(&self) {
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests of these kinds were answered with this status (tests, status).
    pub fn requests_with_status(&self, kinds: &[RequestKind], status: u16) -> u64 {
        let slot = status_slot(status);
        kinds
            .iter()
            .flat_map(|k| RequestResult::ALL.map(|o| RequestCounters::slot(*k, o, slot)))
            .map(|i| self.requests.0[i].load(Ordering::Relaxed))
            .sum()
    }

    /// Adds the counters to a scrape's [`Exposition`], one family each.
    ///
    /// Long on purpose (about 85 lines): mostly the table of counters with their help texts.
    pub fn collect_into(&self, ex: &mut Exposition) -> prometheus::Result<()> {
        ex.counters(
            "rrdp_proxy_requests_total",
            "Requests answered, by kind, result and status.",
            &["kind", "result", "status"],
            self.request_rows(),
        )?;
        for (name, help, v) in self.plain_counters() {
            let value = v.load(Ordering::Relaxed);
            ex.counters(name, help, &[], [(Vec::new(), value)])?;
        }
        ex.counters(
            "rrdp_proxy_poll_errors_total",
            "Failed poll rounds, by reason.",
            &["reason"],
            by_reason(&self.poll_errors),
        )?;
        ex.counters(
            "rrdp_proxy_unknown_names_total",
            "Requests for names no notification gave: named by the round they asked for, forwarded within the budget, or refused.",
            &["result"],
            by_reason(&self.unknown_names),
        )?;
        ex.counters(
            "rrdp_proxy_validation_refusals_total",
            "Rounds refused by RPKI validation, once per check that failed in them (pre_validate: the operator's command).",
            &["reason"],
            by_reason(&self.validation_refusals),
        )
    }

    /// `rrdp_proxy_requests_total`'s samples: every kind, result and status seen.
    fn request_rows(&self) -> Vec<(Vec<String>, u64)> {
        let mut requests = Vec::new();
        for k in RequestKind::ALL {
            for o in RequestResult::ALL {
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
        requests
    }

    /// The counters without labels: name, help, value.
    fn plain_counters(&self) -> [(&'static str, &'static str, &AtomicU64); 10] {
        [
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
            (
                "rrdp_proxy_lean_responses_total",
                "Responses to plain HTTP/1.1 GETs and HEADs of published files written without a pingora session.",
                &self.lean_responses,
            ),
            (
                "rrdp_proxy_access_log_dropped_total",
                "Access-log lines dropped because the file could not keep up or be written.",
                &self.access_log_dropped,
            ),
        ]
    }
}

/// A counter family's samples from counts kept by reason.
fn by_reason(counts: &Mutex<BTreeMap<&'static str, u64>>) -> Vec<(Vec<String>, u64)> {
    counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(r, n)| (vec![r.to_string()], *n))
        .collect()
}

/// One scrape of `/metrics`: families built from values read now, encoded in the Prometheus
/// text format by the `prometheus` crate (each family one group, labels escaped). The
/// counters themselves stay plain atomics, so the request path takes no lock.
pub struct Exposition {
    registry: prometheus::Registry,
    /// Families built by hand (histograms from our own buckets), encoded after the others.
    built: Vec<prometheus::proto::MetricFamily>,
}

impl Default for Exposition {
    fn default() -> Exposition {
        Exposition {
            registry: prometheus::Registry::new(),
            built: Vec::new(),
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

    /// A histogram family from counts kept elsewhere: per label-value list, the cumulative
    /// count per upper bound, the count and the sum.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        samples: impl IntoIterator<Item = (Vec<String>, LagCounts)>,
    ) {
        use prometheus::proto;
        let metrics: Vec<proto::Metric> = samples
            .into_iter()
            .map(|(values, c)| {
                let mut h = proto::Histogram::default();
                h.set_sample_count(c.count);
                h.set_sample_sum(c.sum as f64);
                h.set_bucket(
                    c.cumulative
                        .iter()
                        .map(|(bound, n)| {
                            let mut b = proto::Bucket::default();
                            b.set_upper_bound(*bound as f64);
                            b.set_cumulative_count(*n);
                            b
                        })
                        .collect(),
                );
                let mut m = proto::Metric::default();
                m.set_label(
                    labels
                        .iter()
                        .zip(values)
                        .map(|(k, v)| {
                            let mut l = proto::LabelPair::default();
                            l.set_name(k.to_string());
                            l.set_value(v);
                            l
                        })
                        .collect(),
                );
                m.set_histogram(h);
                m
            })
            .collect();
        if metrics.is_empty() {
            return;
        }
        let mut family = proto::MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.set_metric(metrics);
        self.built.push(family);
    }

    /// The text format of every family added.
    pub fn encode(&self) -> prometheus::Result<String> {
        let mut families = self.registry.gather();
        families.extend(self.built.iter().cloned());
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&families, &mut out)?;
        Ok(out)
    }
}

//------------ What RPs lag ----------------------------------------------------------------------

/// Upper bounds of the RP-lag histogram, in serials (a delta for serial N asked for while S is
/// current lags S − N + 1). 100 is where Routinator takes the snapshot instead, 300 what
/// rpki-client reads, 500 what Routinator accepts in a notification at all.
pub(crate) const LAG_BUCKETS: [u64; 11] = [1, 2, 3, 5, 10, 20, 50, 100, 200, 300, 500];

/// Clients are remembered in this many slots, by a hash of their address: lossy (two clients
/// in one slot overwrite each other; a snapshot download then counts as `unknown` or, rarely,
/// under the other client's state) but lock-free and without allocation on the request path.
const CLIENT_SLOTS: usize = 1 << 14;

/// Whether a client downloading a snapshot could have used deltas instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaPath {
    /// It fetched the delta of a serial still within the listed history before: the deltas
    /// from there to the current serial were listed.
    Available,
    /// It fetched deltas before, but of a serial older than the history (or another session).
    None,
    /// Nothing is known of it (first contact, or it never fetched a delta).
    Unknown,
}

impl DeltaPath {
    pub const ALL: [DeltaPath; 3] = [DeltaPath::Available, DeltaPath::None, DeltaPath::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            DeltaPath::Available => "available",
            DeltaPath::None => "none",
            DeltaPath::Unknown => "unknown",
        }
    }
}

/// How far behind the current serial the RPs of one repository are, from the deltas they
/// ask for; and how many snapshot downloads came from clients that had a delta path. Operators
/// choose `delta_history` by it (draft-liu-sidrops-rrdp-delta-retention-policy). Clients are
/// told apart by address: RPs behind one NAT count as one.
pub struct RpLag {
    /// Per bucket of [`LAG_BUCKETS`], then one past the last: delta requests by lag.
    buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    lag_sum: AtomicU64,
    snapshots: [AtomicU64; 3],
    /// Per slot (a hash of the client's address): 16 bits more of that hash, 16 bits of the
    /// session's hash, and the low 32 bits of the highest serial whose delta it fetched.
    /// Made on the first delta request: 128 KiB that a node fronting a thousand repositories,
    /// most of them rarely fetched, should not hold for each.
    clients: std::sync::OnceLock<Box<[AtomicU64]>>,
}

impl Default for RpLag {
    fn default() -> RpLag {
        RpLag {
            buckets: Default::default(),
            lag_sum: AtomicU64::new(0),
            snapshots: Default::default(),
            clients: std::sync::OnceLock::new(),
        }
    }
}

/// FNV-1a over some bytes: a cheap, stable hash for slot and tag choice (not for security:
/// a client can only disturb its own statistics).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The slot of a client and the tag that tells it from others in that slot.
fn client_slot(ip: std::net::IpAddr) -> (usize, u64) {
    let h = match ip {
        std::net::IpAddr::V4(a) => fnv(&a.octets()),
        std::net::IpAddr::V6(a) => fnv(&a.octets()),
    };
    ((h as usize) % CLIENT_SLOTS, (h >> 48) & 0xffff)
}

/// Packs a client tag, a session tag and a serial into one slot value; zero is "empty".
fn pack(client_tag: u64, session: &str, serial: u64) -> u64 {
    let session_tag = fnv(session.as_bytes()) & 0xffff;
    (client_tag << 48) | (session_tag << 32) | (serial & 0xffff_ffff)
}

/// A snapshot of [`RpLag`] for `/metrics` and `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagCounts {
    /// Cumulative count per bucket upper bound, as Prometheus wants it.
    pub cumulative: Vec<(u64, u64)>,
    pub count: u64,
    pub sum: u64,
    pub snapshots: Vec<(DeltaPath, u64)>,
}

impl RpLag {
    /// A client fetched the delta of `serial` while `current` is published.
    pub fn delta(
        &self,
        client: Option<std::net::IpAddr>,
        session: &str,
        current: u64,
        serial: u64,
    ) {
        let lag = current.saturating_sub(serial) + 1;
        let slot = LAG_BUCKETS
            .iter()
            .position(|b| lag <= *b)
            .unwrap_or(LAG_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.lag_sum.fetch_add(lag, Ordering::Relaxed);
        let Some(ip) = client else { return };
        let (slot, tag) = client_slot(ip);
        let new = pack(tag, session, serial);
        // Keep the highest serial of the same client and session; anything else is replaced.
        let clients = self
            .clients
            .get_or_init(|| (0..CLIENT_SLOTS).map(|_| AtomicU64::new(0)).collect());
        let _ = clients[slot].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            let same = old >> 32 == new >> 32;
            (!same || (old & 0xffff_ffff) < (new & 0xffff_ffff)).then_some(new)
        });
    }

    /// A client downloads the snapshot of `session`, whose notification lists deltas back to
    /// serial `oldest_listed` (none listed: `None`).
    pub fn snapshot(
        &self,
        client: Option<std::net::IpAddr>,
        session: &str,
        oldest_listed: Option<u64>,
    ) -> DeltaPath {
        // What the client's slot holds, if it is this client's: (same session, serial).
        let known = client.and_then(|ip| {
            let (slot, tag) = client_slot(ip);
            let v = self.clients.get()?[slot].load(Ordering::Relaxed);
            (v != 0 && v >> 48 == tag)
                .then(|| (v >> 32 == pack(tag, session, 0) >> 32, v & 0xffff_ffff))
        });
        let path = match (known, oldest_listed) {
            (None, _) => DeltaPath::Unknown,
            // It had serial `had`: deltas from had + 1 on were needed, all listed.
            (Some((true, had)), Some(oldest)) if had + 1 >= oldest & 0xffff_ffff => {
                DeltaPath::Available
            }
            (Some(_), _) => DeltaPath::None,
        };
        let slot = DeltaPath::ALL.iter().position(|p| *p == path).unwrap_or(2);
        self.snapshots[slot].fetch_add(1, Ordering::Relaxed);
        path
    }

    pub fn counts(&self) -> LagCounts {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(LAG_BUCKETS.len());
        for (i, bound) in LAG_BUCKETS.iter().enumerate() {
            running += self.buckets[i].load(Ordering::Relaxed);
            cumulative.push((*bound, running));
        }
        let count = running + self.buckets[LAG_BUCKETS.len()].load(Ordering::Relaxed);
        LagCounts {
            cumulative,
            count,
            sum: self.lag_sum.load(Ordering::Relaxed),
            snapshots: DeltaPath::ALL
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, self.snapshots[i].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_counted_per_bucket_and_a_delta_path_is_told_from_its_absence() {
        let lag = RpLag::default();
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        lag.delta(Some(ip), "s", 10, 10); // lag 1
        lag.delta(Some(ip), "s", 10, 8); // lag 3
        lag.delta(None, "s", 1000, 1); // lag 1000: past the last bucket
        let c = lag.counts();
        assert_eq!(c.count, 3);
        assert_eq!(c.sum, 1 + 3 + 1000);
        assert_eq!(c.cumulative[0], (1, 1));
        assert_eq!(c.cumulative[2], (3, 2));
        assert_eq!(c.cumulative.last(), Some(&(500, 2)));

        // `ip` had serial 10: with deltas listed back to 11 it could have used them.
        assert_eq!(lag.snapshot(Some(ip), "s", Some(11)), DeltaPath::Available);
        assert_eq!(lag.snapshot(Some(ip), "s", Some(12)), DeltaPath::None);
        assert_eq!(lag.snapshot(Some(ip), "other", Some(1)), DeltaPath::None);
        assert_eq!(lag.snapshot(Some(other), "s", Some(1)), DeltaPath::Unknown);
        let snapshots = lag.counts().snapshots;
        assert_eq!(
            snapshots,
            [
                (DeltaPath::Available, 1),
                (DeltaPath::None, 2),
                (DeltaPath::Unknown, 1)
            ]
        );
    }
}
