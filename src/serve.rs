//! The public listener: pingora's `ProxyHttp`, answering every request in `request_filter`.
//!
//! Routing is by path prefix. Under a repository prefix the notification comes from the
//! published generation and snapshots/deltas from the store; a file the store does not have
//! is fetched from the upstream for the request (and kept if it matches a known hash). Under
//! a passthrough prefix the passthrough cache answers. Everything else is 404: this is never
//! an open proxy, and never reaches a Publication Server's API or UI.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use log::{error, info};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use tokio::io::AsyncReadExt;

use crate::metrics::{Kind, Outcome};
use crate::repo::{unix_now, Repo};
use crate::rrdp::Hash;
use crate::store::Object;
use crate::sync::fetch_object;
use crate::upstream::{FetchError, Upstream};
use crate::Shared;

/// Size of the pieces a file is sent in from disk.
const CHUNK: usize = 256 << 10;
/// Content type of RRDP files (what Krill and RIPE NCC send).
const RRDP_CONTENT_TYPE: &str = "application/xml";

/// A response body.
enum Body {
    Empty,
    Bytes(Bytes),
    File(tokio::fs::File, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, l) => *l,
        }
    }
}

/// What to send back.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    kind: Kind,
    outcome: Outcome,
}

impl Answer {
    fn text(status: u16, kind: Kind, text: &str) -> Answer {
        Answer {
            status,
            headers: vec![
                ("Content-Type", "text/plain; charset=utf-8".into()),
                // An error for an RRDP path must never be cached by a CDN in front of us.
                ("Cache-Control", "no-store".into()),
            ],
            body: Body::Bytes(Bytes::copy_from_slice(text.as_bytes())),
            kind,
            outcome: Outcome::Pass,
        }
    }
}

/// Per-request state for logging.
pub struct Ctx {
    kind: Kind,
    outcome: Outcome,
    status: u16,
    bytes: u64,
}

/// The public service.
pub struct RrdpProxy {
    shared: Arc<Shared>,
    /// One client per repository for requests forwarded on a miss (this service's runtime
    /// owns its pooled connections).
    forward: Vec<Arc<Upstream>>,
}

impl RrdpProxy {
    pub fn new(shared: Arc<Shared>) -> RrdpProxy {
        let forward = shared
            .repos
            .iter()
            .map(|r| Upstream::new(&r.config.tls))
            .collect();
        RrdpProxy { shared, forward }
    }

    async fn route(&self, session: &Session) -> Answer {
        let req = session.req_header();
        let path = req.uri.path();
        let method = &req.method;
        let is_get_or_head = method == http::Method::GET || method == http::Method::HEAD;

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
            return self.file(repo, &self.forward[i], rel, req).await;
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
            let r = pass.serve(rel).await;
            let mut a = Answer {
                status: r.status,
                headers: r.headers,
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
        let Some(generation) = repo.published.load_full() else {
            let mut a = Answer::text(
                503,
                Kind::Notification,
                "no repository state fetched from the upstream yet\n",
            );
            let retry = repo.config.poll_interval.as_secs().max(1);
            a.headers.push(("Retry-After", retry.to_string()));
            return a;
        };
        let lm = generation.last_modified_http();
        let a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", RRDP_CONTENT_TYPE.into()),
                (
                    "Cache-Control",
                    format!("max-age={}", repo.config.notification_max_age.as_secs()),
                ),
                ("ETag", generation.etag.clone()),
                ("Last-Modified", lm),
            ],
            body: Body::Bytes(generation.notification.clone()),
            kind: Kind::Notification,
            outcome: Outcome::Hit,
        };
        if not_modified(
            req,
            Some(&generation.etag),
            Some(&generation.last_modified_http()),
        ) {
            return not_modified_answer(a);
        }
        a
    }

    /// A snapshot or delta: from the store if the generation knows it, else from upstream.
    async fn file(
        &self,
        repo: &Repo,
        upstream: &Arc<Upstream>,
        rel: &str,
        req: &RequestHeader,
    ) -> Answer {
        let known = repo
            .published
            .load()
            .as_ref()
            .and_then(|g| g.file(rel, unix_now()).map(|f| f.hash));
        if let Some(hash) = known {
            return self.object(repo, hash, true, Outcome::Hit, req).await;
        }
        // Not published (yet, or any more): ask the upstream. If the newest upstream
        // notification names this file, the bytes must have its hash, and are kept.
        let expected = repo.pending.load().get(rel).copied();
        self.shared.metrics.count_upstream_fetch();
        let fetched = tokio::time::timeout(
            repo.config.fetch_timeout,
            fetch_object(
                upstream,
                &self.shared.store,
                &repo.config.upstream,
                rel,
                expected,
                repo.config.max_file_size,
            ),
        )
        .await
        .unwrap_or(Err(FetchError::Timeout));
        match fetched {
            Ok((hash, _)) => {
                self.object(repo, hash, expected.is_some(), Outcome::Miss, req)
                    .await
            }
            Err(FetchError::Status(404 | 410)) => Answer::text(404, Kind::File, "not found\n"),
            Err(e) => {
                if matches!(e, FetchError::HashMismatch(_)) {
                    self.shared.metrics.count_hash_mismatch();
                }
                info!("{}{rel}: forwarding failed: {e}", repo.config.public);
                Answer::text(502, Kind::File, "upstream failed\n")
            }
        }
    }

    /// Serves a stored object. `verified`: its hash came from a notification, so it is
    /// immutable under its URI.
    async fn object(
        &self,
        repo: &Repo,
        hash: Hash,
        verified: bool,
        outcome: Outcome,
        req: &RequestHeader,
    ) -> Answer {
        let etag = format!("\"{}\"", hash.to_hex());
        let cache_control = if verified {
            format!(
                "public, max-age={}, immutable",
                repo.config.file_max_age.as_secs()
            )
        } else {
            // Forwarded, but named by no notification we know: do not let caches pin it.
            "max-age=60".to_string()
        };
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", RRDP_CONTENT_TYPE.into()),
                ("Cache-Control", cache_control),
                ("ETag", etag.clone()),
            ],
            body: Body::Empty,
            kind: Kind::File,
            outcome,
        };
        if not_modified(req, Some(&etag), None) {
            return not_modified_answer(a);
        }
        match self.shared.store.get(&hash).await {
            Ok(Object::Memory(b)) => a.body = Body::Bytes(b),
            Ok(Object::File { file, len }) => a.body = Body::File(file, len),
            Err(e) => {
                // Damaged on disk (now removed) or unreadable: say so loudly, let no cache
                // keep the error, and have the poller fetch it again if still referenced.
                error!("{}: object {hash} not servable: {e}", repo.config.public);
                repo.refresh.notify_one();
                let mut a =
                    Answer::text(503, Kind::File, "stored file damaged; fetching it again\n");
                a.headers.push(("Retry-After", "5".into()));
                return a;
            }
        }
        a
    }
}

fn method_not_allowed(kind: Kind) -> Answer {
    let mut a = Answer::text(405, kind, "only GET and HEAD\n");
    a.headers.push(("Allow", "GET, HEAD".into()));
    a
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Turns a 200 into a 304 with the same validators and caching headers.
fn not_modified_answer(mut a: Answer) -> Answer {
    a.status = 304;
    a.headers.retain(|(k, _)| *k != "Content-Type");
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
        let Some(etag) = etag else { return false };
        let ours = etag.trim_start_matches("W/");
        return inm
            .split(',')
            .map(|t| t.trim())
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
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
async fn send(session: &mut Session, a: Answer) -> Result<u64> {
    let head = session.req_header().method == http::Method::HEAD;
    let len = a.body.len();
    let mut h = ResponseHeader::build(a.status, Some(a.headers.len() + 2))?;
    for (k, v) in &a.headers {
        h.insert_header(*k, v.as_str())?;
    }
    if a.status != 304 {
        // Always an explicit length: a response without one falls back to close-delimited.
        h.insert_header("Content-Length", len.to_string())?;
    }
    let no_body = head || a.status == 304 || len == 0;
    session.write_response_header(Box::new(h), no_body).await?;
    if no_body {
        return Ok(0);
    }
    match a.body {
        Body::Empty => Ok(0),
        Body::Bytes(b) => {
            session.write_response_body(Some(b), true).await?;
            Ok(len)
        }
        Body::File(mut file, len) => {
            let mut sent = 0u64;
            while sent < len {
                let want = CHUNK.min((len - sent) as usize);
                let mut buf = vec![0u8; want];
                file.read_exact(&mut buf)
                    .await
                    .map_err(|e| Error::because(ReadError, "reading a stored object", e))?;
                sent += want as u64;
                session
                    .write_response_body(Some(Bytes::from(buf)), sent == len)
                    .await?;
            }
            Ok(sent)
        }
    }
}

#[async_trait]
impl ProxyHttp for RrdpProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            kind: Kind::Other,
            outcome: Outcome::Pass,
            status: 0,
            bytes: 0,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Every request is answered in request_filter; nothing is proxied blindly.
        Error::e_explain(InternalError, "rrdp-proxy never proxies without a route")
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let a = self.route(session).await;
        ctx.kind = a.kind;
        ctx.outcome = a.outcome;
        ctx.status = a.status;
        ctx.bytes = send(session, a).await?;
        Ok(true)
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        self.shared
            .metrics
            .count_request(ctx.kind, ctx.outcome, ctx.status, ctx.bytes);
        access_log(session, ctx, e);
    }
}

/// One line per request, in the combined log format, to the `access` log target.
fn access_log(session: &Session, ctx: &Ctx, e: Option<&pingora::Error>) {
    if !log::log_enabled!(target: "access", log::Level::Info) {
        return;
    }
    let req = session.req_header();
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or_else(|| "-".to_string(), |a| a.ip().to_string());
    let h = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let when = httpdate::fmt_http_date(UNIX_EPOCH + now);
    let err = e.map(|e| format!(" error=\"{e}\"")).unwrap_or_default();
    log::info!(
        target: "access",
        "{client} - - [{when}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {} {}{err}",
        req.method,
        req.uri,
        req.version,
        ctx.status,
        ctx.bytes,
        h("Referer"),
        h("User-Agent"),
        ctx.kind.as_str(),
        ctx.outcome.as_str(),
    );
}
