//! The public listener: a pingora `HttpServerApp` that answers every request itself.
//!
//! It sits directly on pingora's HTTP server sessions (HTTP/1.1 and HTTP/2, plain and TLS)
//! rather than on pingora's proxy framework: nothing here is ever proxied blindly, and the
//! framework's per-request machinery (cache, module and retry state, its phases) cost about
//! 7 % of the CPU of a notification request (docs/benchmarks.md).
//!
//! Routing is by path prefix. Under a repository prefix the notification comes from the
//! published generation and snapshots/deltas from the store; a file the store does not have
//! is fetched from the upstream for the request (and kept if it matches a known hash). Under
//! a passthrough prefix the passthrough cache answers. Everything else is 404: this is never
//! an open proxy, and never reaches a Publication Server's API or UI.
//!
//! The read side: it uses `shared` (the node's state), `published` (what to answer),
//! `store` (the bytes), `origin` (a forwarded miss, peer fill) and `metrics`; never `sync`.
//! Besides this app: [`guard`] (the whole-request deadline), [`coalesce`] (header and body in
//! one write), [`access_log`] (the access log to a file).

pub mod access_log;
pub mod coalesce;
pub mod guard;
pub mod miss;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use log::{error, info};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::config::AccessLog;
use crate::metrics::{Kind, Outcome};
use crate::origin::client::{within, FetchError, Upstream};
use crate::origin::fetch::{ensure_object, fetch_object, Sources};
use crate::published::{gzip_etag, header_value, FileHead, FileKind, Generation, Repo};
use crate::rrdp::content::Expected;
use crate::rrdp::Hash;
use crate::shared::Shared;
use crate::store::{Object, Stored};

/// Size of the pieces a file is sent in from disk.
const CHUNK: usize = 256 << 10;
/// How many forwarded paths a repository remembers (then it starts over).
const MAX_FORWARDED: usize = 10_000;
/// Idle time after which an HTTP/1.1 keep-alive connection is closed.
const KEEPALIVE_IDLE_SECS: u64 = 60;
/// When the server starts stopping, how long a connection still waits for its request: one
/// accepted just before (or at an upgrade, by the old process) has it on the way, and closing
/// it at once failed that client's request. Within pingora's 1 s grace period.
const STOPPING_REQUEST_GRACE: Duration = Duration::from_millis(500);
/// Content type of RRDP files (what Krill and RIPE NCC send).
const RRDP_CONTENT_TYPE: &str = "application/xml";

/// A response body.
enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of a file from `start`.
    File {
        file: std::fs::File,
        start: u64,
        len: u64,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    fn from_object(o: Object) -> Body {
        match o {
            Object::Memory(b) => Body::Bytes(b),
            Object::File { file, len } => Body::File {
                file,
                start: 0,
                len,
            },
        }
    }

    /// The part `start..start+len` of a body of an object.
    fn slice(o: Object, start: u64, len: u64) -> Body {
        match o {
            Object::Memory(b) => Body::Bytes(b.slice(start as usize..(start + len) as usize)),
            Object::File { file, .. } => Body::File { file, start, len },
        }
    }
}

/// What to send back.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Body,
    kind: Kind,
    outcome: Outcome,
}

impl Answer {
    fn text(status: u16, kind: Kind, text: &str) -> Answer {
        Answer {
            status,
            headers: vec![
                (
                    "Content-Type",
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                // An error for an RRDP path must never be cached by a CDN in front of us.
                ("Cache-Control", HeaderValue::from_static("no-store")),
            ],
            body: Body::Bytes(Bytes::copy_from_slice(text.as_bytes())),
            kind,
            outcome: Outcome::Pass,
        }
    }
}

/// A file the published generation lists, as a request found it.
struct Known {
    hash: Hash,
    kind: FileKind,
    serial: Option<u64>,
    head: FileHead,
    generation: Arc<Generation>,
}

impl Known {
    fn of(repo: &Repo, rel: &str) -> Option<Known> {
        let g = repo.peek();
        let g = g.as_ref()?;
        let f = g.file(rel, repo.clock().unix_now())?;
        Some(Known {
            hash: f.hash,
            kind: f.kind,
            serial: f.serial,
            head: f.head.clone(),
            generation: g.clone(),
        })
    }
}

/// Per-request state for logging.
pub struct Ctx {
    kind: Kind,
    outcome: Outcome,
    status: u16,
    bytes: u64,
    /// Sent with Content-Encoding: gzip.
    gzip: bool,
}

impl Default for Ctx {
    fn default() -> Ctx {
        Ctx {
            kind: Kind::Other,
            outcome: Outcome::Pass,
            status: 0,
            bytes: 0,
            gzip: false,
        }
    }
}

/// The public service.
/// Counts what an RP's request for a published snapshot or delta says of how far behind it is.
fn note_rp(
    repo: &Repo,
    g: &Generation,
    kind: FileKind,
    serial: Option<u64>,
    client: Option<std::net::IpAddr>,
) {
    match (kind, serial) {
        (FileKind::Delta, Some(n)) => repo.rp_lag.delta(client, &g.session_id, g.serial, n),
        (FileKind::Snapshot, _) => {
            let oldest = g.history.last().map(|h| h.serial);
            repo.rp_lag.snapshot(client, &g.session_id, oldest);
        }
        _ => {}
    }
}

/// What forwarding a file no notification names gave.
enum Forwarded {
    /// A download of the same path, queued ahead of this client, stored this object.
    Queued(Hash),
    /// This client's download (from the upstream, or from a peer), and whether the bytes
    /// were checked against a hash a notification gave.
    Fetched(Result<Stored, FetchError>, bool),
}

pub struct RrdpProxy {
    shared: Arc<Shared>,
    /// One client per repository for requests forwarded on a miss (this service's runtime
    /// owns its pooled connections).
    forward: Vec<Arc<Upstream>>,
    /// The access log's file (`log.access_file`); without it, lines go to the `access` log
    /// target (standard error).
    access_file: Option<access_log::AccessFile>,
    /// pingora's HTTP server options: the HTTP/2 idle deadline.
    server_options: pingora::apps::HttpServerOptions,
    /// Per repository: what requests for names no notification gives may cost the origin.
    misses: Vec<miss::MissGate>,
}

impl RrdpProxy {
    /// The public service; opens the access-log file if one is configured.
    pub fn new(shared: Arc<Shared>) -> std::io::Result<RrdpProxy> {
        let forward = shared
            .repos
            .iter()
            .map(|r| Upstream::for_repository(&r.config))
            .collect();
        let access_file = match &shared.config.log.access_file {
            Some(path) => Some(access_log::AccessFile::open(path, shared.metrics.clone())?),
            None => None,
        };
        // An HTTP/2 connection with no stream open is closed after `request_timeout`, as an
        // HTTP/1 one that sends no request is: it also bounds a stream whose header block
        // never completes (it never opens). The preface's deadline is the guard's.
        let mut server_options = pingora::apps::HttpServerOptions::default();
        server_options.h2_idle_timeout = Some(shared.config.server.request_timeout);
        Ok(RrdpProxy {
            misses: shared.repos.iter().map(|_| Default::default()).collect(),
            shared,
            forward,
            access_file,
            server_options,
        })
    }

    async fn route(&self, session: &ServerSession) -> Answer {
        let req = session.req_header();
        if let Some(refused) = refuse(req) {
            return refused;
        }
        let path = req.uri.path();
        let method = &req.method;
        let is_get_or_head = method == http::Method::GET || method == http::Method::HEAD;
        if let Some(hex) = path.strip_prefix(crate::config::PEER_OBJECT_PATH) {
            if is_get_or_head {
                return Box::pin(self.peer_object(req, hex)).await;
            }
        }
        if let Some(public) = path.strip_prefix(crate::config::PEER_LOOKUP_PATH) {
            if is_get_or_head {
                return self.peer_lookup(req, public);
            }
        }

        for (i, repo) in self.shared.repos.iter().enumerate() {
            let Some(rest) = path.strip_prefix(repo.config.public.path()) else {
                continue;
            };
            let kind = if rest == repo.config.notification {
                Kind::Notification
            } else {
                Kind::File
            };
            if !is_get_or_head {
                return method_not_allowed(kind);
            }
            let Some(rel) = repo.config.public.relative_path(path) else {
                return Answer::text(404, kind, "not found\n");
            };
            if kind == Kind::Notification {
                return self.notification(repo, req);
            }
            let client = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Some(known) = Known::of(repo, rel) {
                return self.published_file(repo, known, req, client).await;
            }
            // Boxed, as every path that may wait on a download: the future of a request is
            // moved to the heap whole, and a hit, which waits on nothing when its file is in
            // memory, should not pay for copying the largest of them (docs/benchmarks.md).
            let (upstream, gate) = (&self.forward[i], &self.misses[i]);
            return Box::pin(self.unpublished_file(repo, upstream, gate, rel, req)).await;
        }
        for pass in &self.shared.passthroughs {
            if !path.starts_with(pass.config.public.path()) {
                continue;
            }
            if !is_get_or_head {
                return method_not_allowed(Kind::Passthrough);
            }
            let Some(rel) = pass.config.public.relative_path(path) else {
                return Answer::text(404, Kind::Passthrough, "not found\n");
            };
            let r = Box::pin(pass.serve(rel)).await;
            let mut a = Answer {
                status: r.status,
                headers: r
                    .headers
                    .into_iter()
                    .filter_map(|(k, v)| HeaderValue::try_from(v).ok().map(|v| (k, v)))
                    .collect(),
                body: Body::Bytes(r.body),
                kind: Kind::Passthrough,
                outcome: r.outcome,
            };
            if a.status == 200 && not_modified(req, header(&a, "ETag"), header(&a, "Last-Modified"))
            {
                a = not_modified_answer(a);
            }
            return a;
        }
        Answer::text(404, Kind::Other, "not found\n")
    }

    /// The published notification, with validators.
    fn notification(&self, repo: &Repo, req: &RequestHeader) -> Answer {
        let Some(generation) = repo.current() else {
            let mut a = Answer::text(
                503,
                Kind::Notification,
                "no repository state fetched from the upstream yet\n",
            );
            let retry = repo.config.poll_interval.as_secs().max(1);
            a.headers.push(("Retry-After", HeaderValue::from(retry)));
            return a;
        };
        let lm = generation.last_modified_http();
        let gzip = generation
            .notification_gz
            .as_ref()
            .filter(|_| accepts_gzip(req));
        let values = &generation.header_values;
        let etag = match gzip {
            Some(_) => values.etag_gzip.clone(),
            None => values.etag.clone(),
        };
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static(RRDP_CONTENT_TYPE)),
                ("Cache-Control", repo.notification_cache_control.clone()),
                ("ETag", etag),
                ("Last-Modified", values.last_modified.clone()),
                ("Vary", HeaderValue::from_static("Accept-Encoding")),
            ],
            body: Body::Bytes(generation.notification.clone()),
            kind: Kind::Notification,
            outcome: Outcome::Hit,
        };
        if let Some(gz) = gzip {
            a.body = Body::Bytes(gz.clone());
            a.headers
                .push(("Content-Encoding", HeaderValue::from_static("gzip")));
        }
        if not_modified(req, Some(&generation.etag), Some(lm)) {
            return not_modified_answer(a);
        }
        a
    }

    /// A snapshot or delta the published generation lists: from the store.
    async fn published_file(
        &self,
        repo: &Repo,
        known: Known,
        req: &RequestHeader,
        client: Option<std::net::IpAddr>,
    ) -> Answer {
        let mut a = self
            .object(repo, known.hash, &known.head, true, Outcome::Hit, req)
            .await;
        if a.status < 500 {
            a.kind = match known.kind {
                FileKind::Snapshot => Kind::Snapshot,
                FileKind::Delta => Kind::Delta,
                FileKind::Other => Kind::File,
            };
        }
        // Whole downloads only: a client fetching ranges would count once per range.
        if a.status == 200 && req.method == http::Method::GET {
            note_rp(repo, &known.generation, known.kind, known.serial, client);
        }
        a
    }

    /// A file the published generation does not list (yet, or any more): from the upstream,
    /// or a peer.
    async fn unpublished_file(
        &self,
        repo: &Arc<Repo>,
        upstream: &Arc<Upstream>,
        gate: &miss::MissGate,
        rel: &str,
        req: &RequestHeader,
    ) -> Answer {
        if repo.is_withheld(rel) {
            return Answer::text(404, Kind::File, "not found\n");
        }
        // Not published (yet, or any more). If an upstream notification names this file, the
        // bytes must have its hash, and are kept.
        let named = || {
            repo.pending
                .load()
                .get(rel)
                .map(|(h, e, _)| (*h, e.clone()))
        };
        let mut pending = named();
        let metrics = &self.shared.metrics;
        // Fetched for a client already (and still stored): served as before, at no cost.
        if let (None, Some(hash)) = (&pending, self.forwarded(repo, rel)) {
            let head = FileHead::of(&hash);
            return self
                .object(repo, hash, &head, false, Outcome::Hit, req)
                .await;
        }
        if pending.is_none() {
            // A name no notification gives: perhaps one the upstream published since the
            // last poll (see `miss`). Then within the budget, or not at all.
            miss::refresh(repo, gate).await;
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
                    return Answer::text(404, Kind::File, "not found\n");
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
                        .object(repo, hash, &head, false, Outcome::Hit, req)
                        .await;
                }
                Forwarded::Fetched(fetched, verified) => (fetched, verified),
            },
        };
        match fetched {
            Ok(stored) => {
                let (hash, head) = (stored.hash(), FileHead::of(&stored.hash()));
                self.object(repo, hash, &head, verified, Outcome::Miss, req)
                    .await
            }
            Err(FetchError::Status(404 | 410)) => Answer::text(404, Kind::File, "not found\n"),
            Err(e) => {
                // (A hash mismatch was counted where it was found.)
                info!("{}{rel}: forwarding failed: {e}", repo.config.public);
                Answer::text(502, Kind::File, "upstream failed\n")
            }
        }
    }

    /// One verified download of an object whose hash and content are known.
    async fn ensure(
        &self,
        repo: &Repo,
        sources: &Sources<'_>,
        rel: &str,
        hash: Hash,
        content: &Expected,
    ) -> Result<Stored, FetchError> {
        let limits = (repo.config.max_file_size, repo.config.fetch_timeout);
        let (store, metrics) = (&self.shared.store, &self.shared.metrics);
        ensure_object(sources, store, rel, hash, Some(content), limits, metrics).await
    }

    /// The object a file no notification names was fetched into for a client, if it is
    /// still stored.
    fn forwarded(&self, repo: &Repo, rel: &str) -> Option<Hash> {
        repo.forwarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
            .copied()
            .filter(|h| self.shared.store.contains(h, None))
    }

    /// A file no upstream notification names: fetched from the upstream once per path (later
    /// clients queued behind the download are served what it stored), else from a peer that
    /// publishes it, by the hash its notification gives.
    async fn forward(&self, repo: &Repo, upstream: &Arc<Upstream>, rel: &str) -> Forwarded {
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
            cfg.fetch_timeout,
            fetch_object(
                upstream,
                store,
                &cfg.upstream,
                rel,
                None,
                None,
                cfg.max_file_size,
            ),
        )
        .await;
        if let Ok(stored) = &fetched {
            let mut map = repo.forwarded.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_FORWARDED {
                map.clear();
            }
            map.insert(rel.to_string(), stored.hash());
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

    /// A stored object by its SHA-256, for a peer that presents the cluster token. Anyone else
    /// gets the same 404 as for a path that does not exist.
    async fn peer_object(&self, req: &RequestHeader, hex: &str) -> Answer {
        let not_found = || Answer::text(404, Kind::Other, "not found\n");
        if !self.is_peer(req) {
            return not_found();
        }
        let Some(hash) = Hash::from_hex(hex).filter(|_| hex.len() == 64) else {
            return not_found();
        };
        if !self.shared.store.contains(&hash, None) {
            return not_found();
        }
        match self.shared.store.get(&hash).await {
            Ok(object) => {
                self.shared.metrics.count_peer_request();
                Answer {
                    status: 200,
                    headers: vec![
                        (
                            "Content-Type",
                            HeaderValue::from_static("application/octet-stream"),
                        ),
                        ("Cache-Control", HeaderValue::from_static("no-store")),
                    ],
                    body: Body::from_object(object),
                    kind: Kind::Other,
                    outcome: Outcome::Hit,
                }
            }
            Err(_) => not_found(),
        }
    }

    /// Whether the request carries the cluster token (constant-time compare).
    fn is_peer(&self, req: &RequestHeader) -> bool {
        let Some(cluster) = &self.shared.config.cluster else {
            return false;
        };
        let presented = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), cluster.token.as_bytes())
    }

    /// For a peer (cluster token): what the file at a public path is, if this node still
    /// serves it, current or retained: its SHA-256 and, for a snapshot or delta, its kind,
    /// session and serial. The peer then fetches the bytes by hash and checks them against
    /// both. Anyone else gets the same 404 as for a path that does not exist.
    fn peer_lookup(&self, req: &RequestHeader, public: &str) -> Answer {
        let not_found = || Answer::text(404, Kind::Other, "not found\n");
        if !self.is_peer(req) {
            return not_found();
        }
        let path = format!("/{public}");
        let found = self.shared.repos.iter().find_map(|repo| {
            let rel = repo.config.public.relative_path(&path)?;
            let g = repo.current()?;
            g.file(rel, repo.clock().unix_now()).cloned()
        });
        let Some(f) = found else {
            return not_found();
        };
        let body = serde_json::json!({
            "sha256": f.hash.to_hex(),
            "kind": f.kind,
            "session": f.session,
            "serial": f.serial,
        })
        .to_string();
        self.shared.metrics.count_peer_request();
        Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static("application/json")),
                ("Cache-Control", HeaderValue::from_static("no-store")),
            ],
            body: Body::Bytes(body.into()),
            kind: Kind::Other,
            outcome: Outcome::Hit,
        }
    }

    /// Serves a stored object, with `head` its validators. `verified`: its hash came from a
    /// notification, so it is immutable under its URI. Clients that accept gzip get the gzip
    /// variant if there is one; a Range request gets part of the identity body.
    async fn object(
        &self,
        repo: &Repo,
        hash: Hash,
        head: &FileHead,
        verified: bool,
        outcome: Outcome,
        req: &RequestHeader,
    ) -> Answer {
        let etag = head.etag_text();
        let cache_control = if verified {
            repo.file_cache_control.clone()
        } else {
            // Forwarded, but named by no notification we know: do not let caches pin it.
            HeaderValue::from_static("max-age=60")
        };
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static(RRDP_CONTENT_TYPE)),
                ("Cache-Control", cache_control),
                ("Accept-Ranges", HeaderValue::from_static("bytes")),
                ("Vary", HeaderValue::from_static("Accept-Encoding")),
            ],
            body: Body::Empty,
            kind: Kind::File,
            outcome,
        };
        if not_modified(req, Some(etag), None) {
            a.headers.push(("ETag", head.etag.clone()));
            return not_modified_answer(a);
        }
        let range = requested_range(req, etag);
        if range.is_none() && accepts_gzip(req) {
            let store = &self.shared.store;
            let gz = match store.get_in_memory(&hash, true) {
                Some(gz) => Some(gz),
                None => Box::pin(store.get_gzip(&hash)).await,
            };
            if let Some(gz) = gz {
                a.headers.push(("ETag", head.etag_gzip.clone()));
                a.headers
                    .push(("Content-Encoding", HeaderValue::from_static("gzip")));
                a.body = Body::from_object(gz);
                return a;
            }
        }
        a.headers.push(("ETag", head.etag.clone()));
        // From memory without waiting; the disk path (which may verify the file or read it
        // into memory) is boxed, so a memory hit does not carry its future.
        let in_memory = self.shared.store.get_in_memory(&hash, false).map(Ok);
        let object = match in_memory {
            Some(o) => o,
            None => Box::pin(self.shared.store.get(&hash)).await,
        };
        let object = match object {
            Ok(o) => o,
            Err(e) => {
                // Damaged on disk (now removed) or unreadable: say so loudly, let no cache
                // keep the error, and have the poller fetch it again if still referenced.
                error!("{}: object {hash} not servable: {e}", repo.config.public);
                repo.refresh.notify_one();
                let mut a =
                    Answer::text(503, Kind::File, "stored file damaged; fetching it again\n");
                a.headers.push(("Retry-After", HeaderValue::from(5u32)));
                return a;
            }
        };
        let total = object.len();
        match range.map(|r| r.resolve(total)) {
            None => a.body = Body::from_object(object),
            Some(Some((start, len))) => {
                a.status = 206;
                a.headers.push((
                    "Content-Range",
                    header_value(&format!("bytes {start}-{}/{total}", start + len - 1)),
                ));
                a.body = Body::slice(object, start, len);
            }
            Some(None) => {
                let mut e = Answer::text(416, Kind::File, "range not satisfiable\n");
                e.headers
                    .push(("Content-Range", header_value(&format!("bytes */{total}"))));
                return e;
            }
        }
        a
    }
}

/// A single byte range from a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `bytes=start-` or `bytes=start-end` (inclusive).
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses one range; multiple ranges or bad syntax give `None` (the Range header is then
    /// ignored and the whole body served, as RFC 9110 allows).
    fn parse(v: &str) -> Option<ByteRange> {
        let spec = v.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(ByteRange::Suffix(b.parse().ok()?));
        }
        let start = a.parse().ok()?;
        let end = if b.is_empty() {
            None
        } else {
            Some(b.parse().ok()?)
        };
        if end.is_some_and(|e| e < start) {
            return None;
        }
        Some(ByteRange::From(start, end))
    }

    /// (start, length) within a body of `total` bytes, or `None` if unsatisfiable.
    fn resolve(self, total: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(start, _) if start >= total => None,
            ByteRange::From(start, end) => {
                let end = end.map_or(total - 1, |e| e.min(total - 1));
                Some((start, end - start + 1))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => {
                let n = n.min(total);
                Some((total - n, n))
            }
        }
    }
}

/// The range a GET asks for, honouring If-Range (only our strong ETag matches; files have no
/// Last-Modified, so a date never does).
fn requested_range(req: &RequestHeader, etag: &str) -> Option<ByteRange> {
    if req.method != http::Method::GET {
        return None;
    }
    let range = ByteRange::parse(req.headers.get("Range")?.to_str().ok()?)?;
    match req.headers.get("If-Range").and_then(|v| v.to_str().ok()) {
        Some(tag) if tag.trim() != etag => None,
        _ => Some(range),
    }
}

/// Whether the client accepts a gzip body (`Accept-Encoding: gzip` or `*` with q > 0).
fn accepts_gzip(req: &RequestHeader) -> bool {
    let Some(v) = req
        .headers
        .get("Accept-Encoding")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut gzip = None;
    let mut star = None;
    for item in v.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q > 0.0),
            "*" => star = Some(q > 0.0),
            _ => {}
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The longest request target accepted: RRDP paths are short; nginx's default buffer is 8 KiB.
const MAX_URI: usize = 8 << 10;
/// The most header bytes (names and values) and header lines accepted.
const MAX_HEADER_BYTES: usize = 16 << 10;
const MAX_HEADERS: usize = 64;

/// Requests refused before routing: an overlong target (414) or header (431), and any request
/// carrying a body. GET and HEAD have none, and a `Transfer-Encoding` on one is the usual
/// start of request smuggling (pingora drops a `Content-Length` sent beside it); the
/// connection is closed after the answer, so no byte of such a body is read as a request.
fn refuse(req: &RequestHeader) -> Option<Answer> {
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return Some(Answer::text(414, Kind::Other, "URI too long\n"));
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES || req.headers.len() > MAX_HEADERS {
        return Some(Answer::text(
            431,
            Kind::Other,
            "request header fields too large\n",
        ));
    }
    let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Some(Answer::text(
            400,
            Kind::Other,
            "a request body is not accepted\n",
        ));
    }
    None
}

fn method_not_allowed(kind: Kind) -> Answer {
    let mut a = Answer::text(405, kind, "only GET and HEAD\n");
    a.headers
        .push(("Allow", HeaderValue::from_static("GET, HEAD")));
    a
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.to_str().ok())
}

/// Turns a 200 into a 304 with the same validators and caching headers (no body, so no
/// Content-Type or Content-Encoding).
fn not_modified_answer(mut a: Answer) -> Answer {
    a.status = 304;
    a.headers
        .retain(|(k, _)| *k != "Content-Type" && *k != "Content-Encoding");
    a.body = Body::Empty;
    a
}

/// RFC 9110 §13.1: If-None-Match wins over If-Modified-Since.
fn not_modified(req: &RequestHeader, etag: Option<&str>, last_modified: Option<&str>) -> bool {
    if let Some(inm) = req
        .headers
        .get("If-None-Match")
        .and_then(|v| v.to_str().ok())
    {
        // A client holding either encoding of the body has it: the identity and the gzip
        // ETag both match.
        let Some(etag) = etag else { return false };
        let gz = gzip_etag(etag);
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag || t == gz);
    }
    let ims = req
        .headers
        .get("If-Modified-Since")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let lm = last_modified.and_then(|v| httpdate::parse_http_date(v).ok());
    match (ims, lm) {
        (Some(ims), Some(lm)) => lm <= ims,
        _ => false,
    }
}

/// Writes an answer; returns the body bytes sent.
async fn send(session: &mut ServerSession, a: Answer) -> Result<u64> {
    let head = session.req_header().method == http::Method::HEAD;
    let len = a.body.len();
    let mut h = ResponseHeader::build(a.status, Some(a.headers.len() + 1))?;
    for (k, v) in a.headers {
        h.insert_header(k, v)?;
    }
    if a.status != 304 {
        // Always an explicit length: a response without one falls back to close-delimited.
        h.insert_header("Content-Length", HeaderValue::from(len))?;
    }
    let no_body = head || a.status == 304 || len == 0;
    session.write_response_header(Box::new(h)).await?;
    if no_body {
        return Ok(0);
    }
    match a.body {
        Body::Empty => Ok(0),
        Body::Bytes(b) => {
            session.write_response_body(b, true).await?;
            Ok(len)
        }
        Body::File { file, start, len } => Box::pin(send_file(session, file, start, len)).await,
    }
}

/// Streams `len` bytes of a stored file from `start`; returns the bytes sent.
async fn send_file(
    session: &mut ServerSession,
    file: std::fs::File,
    start: u64,
    len: u64,
) -> Result<u64> {
    let file = Arc::new(file);
    let mut sent = 0u64;
    while sent < len {
        let want = CHUNK.min((len - sent) as usize);
        let chunk = read_chunk(&file, start + sent, want).await?;
        sent += chunk.len() as u64;
        session.write_response_body(chunk, sent == len).await?;
    }
    Ok(sent)
}

/// Reads up to `want` bytes of a stored object at `offset`. What the page cache holds is read
/// right here (`preadv2` with `RWF_NOWAIT`, which never waits for the disk), the way nginx
/// reads its cache files; only what would wait for the disk goes to the blocking pool. With
/// every chunk sent through the blocking pool, the two thread switches per 256 KiB cost more
/// CPU than the copies (docs/benchmarks.md).
async fn read_chunk(file: &Arc<std::fs::File>, offset: u64, want: usize) -> Result<Bytes> {
    let fail = |e: std::io::Error| Error::because(ReadError, "reading a stored object", e);
    match read_cached(file, offset, want) {
        Ok(Some(chunk)) => return Ok(chunk),
        Ok(None) => {}
        Err(e) => return Err(fail(e)),
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; want];
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Err(short_object());
        }
        buf.truncate(n);
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::because(ReadError, "reading a stored object", e))?
    .map_err(fail)
}

/// The part of `want` bytes at `offset` that the page cache holds, or `None` if reading it
/// would wait for the disk (or the file system cannot say). The buffer is not zeroed first:
/// for a 1 MiB delta that was a quarter of the extra cost of not holding it in memory.
fn read_cached(file: &std::fs::File, offset: u64, want: usize) -> std::io::Result<Option<Bytes>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: want,
    };
    let offset = i64::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: the kernel writes at most `iov_len` bytes into the vector's spare capacity, which
    // has that size; the length is then set to what it reports having written.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    match n {
        0 => Err(short_object()),
        n if n > 0 => {
            // SAFETY: the first `n` bytes were written by the read above.
            unsafe { buf.set_len(n as usize) };
            Ok(Some(Bytes::from(buf)))
        }
        // EAGAIN: not cached; EOPNOTSUPP: a file system without RWF_NOWAIT; EINTR: try the
        // blocking read, which retries. Any other error shows there again.
        _ => Ok(None),
    }
}

fn short_object() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "stored object shorter than its length",
    )
}

impl RrdpProxy {
    /// Answers the request read on `session`; the answer's facts go to `ctx` for the log.
    async fn respond(&self, session: &mut ServerSession, ctx: &mut Ctx) -> Result<()> {
        // HTTP/1.1 connections stay open this long between requests (RPs poll every few
        // minutes at most, so longer would only hold idle sockets).
        session.set_keepalive(Some(KEEPALIVE_IDLE_SECS));
        let a = self.route(session).await;
        if matches!(a.status, 400 | 414 | 431) {
            // Whatever follows on this connection cannot be trusted to be a request.
            session.set_keepalive(None);
        }
        ctx.kind = a.kind;
        ctx.outcome = a.outcome;
        ctx.status = a.status;
        ctx.gzip = header(&a, "Content-Encoding") == Some("gzip");
        ctx.bytes = send(session, a).await?;
        Ok(())
    }
}

#[async_trait]
impl HttpServerApp for RrdpProxy {
    fn server_options(&self) -> Option<&pingora::apps::HttpServerOptions> {
        Some(&self.server_options)
    }

    /// One request on a connection: read it, answer it, log it, and hand a reusable HTTP/1.1
    /// connection back to pingora for the next one.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut stopping = shutdown.clone();
        let read = {
            let reading = session.read_request();
            tokio::pin!(reading);
            let before_stopping = tokio::select! {
                // A request already buffered is answered even when the server is stopping.
                biased;
                read = &mut reading => Some(read),
                _ = stopping.wait_for(|stop| *stop) => None,
            };
            match before_stopping {
                Some(read) => read,
                // Stopping: a request on its way is still answered; an idle kept-alive
                // connection is closed after the grace rather than waited on.
                None => match tokio::time::timeout(STOPPING_REQUEST_GRACE, &mut reading).await {
                    Ok(read) => read,
                    Err(_) => return None,
                },
            }
        };
        match read {
            Ok(true) => {}
            // The client closed the connection between requests.
            Ok(false) => return None,
            Err(e) => {
                if e.etype == InvalidHTTPHeader {
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        let mut ctx = Ctx::default();
        let sent = self.respond(&mut session, &mut ctx).await;
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        self.shared
            .metrics
            .count_request(ctx.kind, ctx.outcome, ctx.status, ctx.bytes);
        if ctx.gzip {
            self.shared.metrics.count_gzip_response();
        }
        access_log(
            &session,
            &ctx,
            sent.as_ref().err().map(|e| &**e),
            self.shared.config.log.access,
            self.access_file.as_ref(),
        );
        // A response cut short leaves the connection in no state to carry another request.
        sent.ok()?;
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

/// Appends the current time as an HTTP date, formatted once a second per thread. The system
/// clock, not the node's injected one: an access log is read beside other systems' logs, and
/// says when the bytes crossed the wire.
fn http_date_now(out: &mut String) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.push_str(&d.1);
    });
}

/// Appends `s` to a quoted field of the combined log as nginx escapes it: `"`, `\\`, control
/// characters and non-ASCII bytes as `\xHH`, so that a client's header can neither end the
/// field nor start a line of its own.
fn escape_into(line: &mut String, s: &str) {
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = std::fmt::Write::write_fmt(line, format_args!("\\x{b:02X}"));
        } else {
            line.push(char::from(b));
        }
    }
}

/// A `fmt::Write` that appends to a quoted log field through [`escape_into`]: a value is
/// escaped as it is formatted, with no copy of it.
struct Escaped<'a>(&'a mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// One line per request, to the access-log file if there is one, else to the `access` log
/// target: the combined log format followed by kind and result, or a JSON object.
fn access_log(
    session: &ServerSession,
    ctx: &Ctx,
    e: Option<&pingora::Error>,
    format: AccessLog,
    file: Option<&access_log::AccessFile>,
) {
    if format == AccessLog::Off
        || (file.is_none() && !log::log_enabled!(target: "access", log::Level::Info))
    {
        return;
    }
    let req = session.req_header();
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let header = |name: http::header::HeaderName| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    let line = match format {
        AccessLog::Json => serde_json::json!({
            "time": httpdate::fmt_http_date(SystemTime::now()),
            "client": client.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            "method": req.method.as_str(),
            "uri": req.uri.to_string(),
            "version": format!("{:?}", req.version),
            "status": ctx.status,
            "bytes": ctx.bytes,
            "referer": header(http::header::REFERER),
            "user_agent": header(http::header::USER_AGENT),
            "kind": ctx.kind.as_str(),
            "result": ctx.outcome.as_str(),
            "encoding": if ctx.gzip { "gzip" } else { "identity" },
            "error": e.map(|e| e.to_string()),
        })
        .to_string(),
        _ => {
            // One allocation: written in place, the date formatted once a second.
            use std::fmt::Write as _;
            let mut line = String::with_capacity(256);
            match client {
                Some(ip) => {
                    let _ = write!(line, "{ip}");
                }
                None => line.push('-'),
            }
            line.push_str(" - - [");
            http_date_now(&mut line);
            line.push_str("] \"");
            escape_into(&mut line, req.method.as_str());
            line.push(' ');
            let _ = write!(Escaped(&mut line), "{}", req.uri);
            let _ = write!(line, " {:?}\" {} {} \"", req.version, ctx.status, ctx.bytes);
            escape_into(&mut line, header(http::header::REFERER));
            line.push_str("\" \"");
            escape_into(&mut line, header(http::header::USER_AGENT));
            let _ = write!(line, "\" {} {}", ctx.kind.as_str(), ctx.outcome.as_str());
            if let Some(e) = e {
                line.push_str(" error=\"");
                let _ = write!(Escaped(&mut line), "{e}");
                line.push('"');
            }
            line
        }
    };
    match file {
        Some(f) => f.send(line),
        None => log::info!(target: "access", "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// Regression (issue 26, item 9): a `"` in a client's header ended the field early, so a
    /// User-Agent could forge the rest of a combined-log line.
    #[test]
    fn combined_log_fields_are_escaped() {
        let mut line = String::new();
        escape_into(&mut line, "evil\" 200 \"x\\y\nz\u{e9}");
        assert_eq!(line, "evil\\x22 200 \\x22x\\x5Cy\\x0Az\\xC3\\xA9");
        assert!(!line.contains('"') && !line.contains('\n'));
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(&req(&[("Accept-Encoding", "gzip, deflate")])));
        assert!(accepts_gzip(&req(&[(
            "Accept-Encoding",
            "br;q=1.0, gzip;q=0.5"
        )])));
        assert!(accepts_gzip(&req(&[("Accept-Encoding", "*")])));
        assert!(!accepts_gzip(&req(&[("Accept-Encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&req(&[("Accept-Encoding", "*, gzip;q=0")])));
        assert!(!accepts_gzip(&req(&[("Accept-Encoding", "identity")])));
        assert!(!accepts_gzip(&req(&[])));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            ByteRange::parse("bytes=0-9"),
            Some(ByteRange::From(0, Some(9)))
        );
        assert_eq!(
            ByteRange::parse("bytes=10-"),
            Some(ByteRange::From(10, None))
        );
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(ByteRange::parse("bytes=5-1"), None);
        assert_eq!(ByteRange::parse("bytes=0-1,4-5"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::From(0, Some(9)).resolve(5), Some((0, 5)));
        assert_eq!(ByteRange::From(5, None).resolve(5), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 3)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 10)));
        let etag = "\"abc\"";
        let r = req(&[("Range", "bytes=1-2"), ("If-Range", "\"other\"")]);
        assert_eq!(
            requested_range(&r, etag),
            None,
            "If-Range mismatch: whole body"
        );
        let r = req(&[("Range", "bytes=1-2"), ("If-Range", etag)]);
        assert_eq!(requested_range(&r, etag), Some(ByteRange::From(1, Some(2))));
    }

    #[test]
    fn etags_per_encoding() {
        let etag = "\"abc\"";
        assert_eq!(gzip_etag(etag), "\"abc-gzip\"");
        assert!(not_modified(
            &req(&[("If-None-Match", "\"abc-gzip\"")]),
            Some(etag),
            None
        ));
        assert!(not_modified(
            &req(&[("If-None-Match", "W/\"abc\"")]),
            Some(etag),
            None
        ));
        assert!(!not_modified(
            &req(&[("If-None-Match", "\"abd\"")]),
            Some(etag),
            None
        ));
    }
}
