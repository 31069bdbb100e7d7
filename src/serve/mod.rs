//! The public listener: a pingora `HttpServerApp` that answers every request itself.
//!
//! It sits directly on pingora's HTTP server sessions (HTTP/1.1 and HTTP/2, plain and TLS)
//! rather than on pingora's proxy framework: nothing here is ever proxied blindly, and the
//! framework's per-request machinery (cache, module and retry state, its phases) cost a
//! measurable part of a notification request's CPU (docs/benchmarks.md has the profile).
//!
//! Routing is by path prefix. Under a repository prefix the notification comes from the
//! published generation and snapshots/deltas from the store; a file the store does not have
//! is fetched from the upstream for the request (and kept if it matches a known hash). Under
//! a passthrough prefix the passthrough cache answers. Everything else is 404: this is never
//! an open proxy, and never reaches a Publication Server's API or UI.
//!
//! The read side: it uses `shared` (the node's state), `published` (what to answer),
//! `store` (the bytes), `origin` (a forwarded miss, peer fill) and `metrics`; never `sync`.
//!
//! The parts: `dispatch` (routing), `files` (the published generation's answers),
//! [`miss`] (a file no notification this node holds names), `peer` (the cluster endpoints),
//! `answer` (304, Range, gzip: pure), `send`, `connection` (an HTTP/1 connection's requests,
//! one after another), `lean` (the common GETs, answered without a pingora session),
//! [`guard`] (the whole-request deadline), [`coalesce`] (header and body in one write),
//! [`sendfile`] (stored files from the page cache), [`access_log`] (the line and its file).

pub(crate) mod access_log;
mod answer;
pub(crate) mod coalesce;
mod connection;
mod dispatch;
mod erik;
mod files;
pub(crate) mod guard;
mod lean;
pub(crate) mod miss;
mod peer;
mod send;
pub(crate) mod sendfile;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::prelude::*;
use pingora::protocols::http::server::ReusableHttpStream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::metrics::{RequestKind, RequestResult};
use crate::origin::client::Client;
use crate::shared::Shared;
use answer::header;

pub(crate) use peer::constant_time_eq;

/// Idle time after which an HTTP/1.1 keep-alive connection is closed.
pub(crate) const KEEPALIVE_IDLE_SECS: u64 = 60;

/// When the server starts stopping, how long a connection still waits for its request: one
/// accepted just before (or at an upgrade, by the old process) has it on the way, and closing
/// it at once failed that client's request. Within pingora's 1 s grace period.
const STOPPING_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// Per-request state for logging.
pub(crate) struct Ctx {
    kind: RequestKind,
    outcome: RequestResult,
    status: u16,
    bytes: u64,
    /// Sent with Content-Encoding: gzip.
    gzip: bool,
}

impl Ctx {
    /// An answer's facts, before its body is sent (`bytes` is set once it is).
    fn of(a: &answer::Answer) -> Ctx {
        Ctx {
            kind: a.kind,
            outcome: a.outcome,
            status: a.status,
            bytes: 0,
            gzip: header(a, "Content-Encoding") == Some("gzip"),
        }
    }
}

impl Default for Ctx {
    fn default() -> Ctx {
        Ctx {
            kind: RequestKind::Other,
            outcome: RequestResult::Pass,
            status: 0,
            bytes: 0,
            gzip: false,
        }
    }
}

/// The public service.
pub struct RrdpProxy {
    shared: Arc<Shared>,
    /// One client per repository for requests forwarded on a miss (this service's runtime
    /// owns its pooled connections).
    forward: Vec<Arc<Client>>,
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
            .map(|r| Client::for_repository(&r.config))
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

    /// Answers the request read on `session`; the answer's facts go to `ctx` for the log.
    async fn respond(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        shutdown: &ShutdownWatch,
    ) -> Result<()> {
        // HTTP/1.1 connections stay open this long between requests (RPs poll every few
        // minutes at most, so longer would only hold idle sockets).
        session.set_keepalive(Some(KEEPALIVE_IDLE_SECS));
        let a = self.route(session).await;
        if matches!(a.status, 400 | 414 | 431) {
            // Whatever follows on this connection cannot be trusted to be a request.
            session.set_keepalive(None);
        }
        if *shutdown.borrow() {
            // Stopping: this is the connection's last answer, and its head says so.
            session.set_keepalive(None);
        }
        *ctx = Ctx::of(&a);
        ctx.bytes = send::send(session, a).await?;
        Ok(())
    }

    /// Counts an answered request in the metrics (either path's).
    fn count(&self, ctx: &Ctx) {
        let metrics = &self.shared.metrics;
        metrics.count_request(ctx.kind, ctx.outcome, ctx.status, ctx.bytes);
        if ctx.gzip {
            metrics.count_gzip_response();
        }
    }

    /// One HTTP/1 request or HTTP/2 stream on `session`: read it, answer it, log it. Gives back
    /// a reusable HTTP/1.1 connection with what the next session on it inherits (the stream
    /// and any pipelined bytes are in the first part, as pingora's `finish` leaves them).
    ///
    /// `grace_until`: the server began stopping while the connection waited for this request,
    /// and the request's grace ends then (a request gets one grace, not one per wait).
    pub(crate) async fn one_request(
        &self,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
        grace_until: Option<tokio::time::Instant>,
    ) -> Option<(ReusableHttpStream, HttpPersistentSettings)> {
        let mut stopping = shutdown.clone();
        // Pipelined requests (RFC 9112 §9.3.2: several sent without waiting, as Perl's
        // Net::Async::HTTP does) are answered in order; off, pingora answers the first and
        // drops the connection with the rest. What it read past a request comes back with the
        // stream (`ReusableHttpStream::into_parts`) for the next request.
        session.set_pipelining_enabled(true);
        // Stopping: a request on its way is still answered; a connection that sends none is
        // closed after the grace rather than waited on.
        let (read, _) = unless_stopped(session.read_request(), &mut stopping, grace_until).await?;
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
        let sent = self.respond(&mut session, &mut ctx, shutdown).await;
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        self.count(&ctx);
        access_log::access_log(
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
            Ok(reusable) => reusable.map(|s| (s, settings)),
            Err(_) => None,
        }
    }
}

/// Awaits `work` (reading a request); once the server is stopping, only until the stopping
/// grace ends: at `grace_until` if an earlier wait already saw the stop, else
/// [`STOPPING_REQUEST_GRACE`] from when this one sees it. Work already done is taken even
/// when the server is stopping. Gives the output and, if the stop was seen, when the grace
/// ends; `None` if it ended first.
pub(crate) async fn unless_stopped<F: std::future::Future>(
    work: F,
    stopping: &mut ShutdownWatch,
    grace_until: Option<tokio::time::Instant>,
) -> Option<(F::Output, Option<tokio::time::Instant>)> {
    tokio::pin!(work);
    let before_stopping = tokio::select! {
        biased;
        done = &mut work => Some(done),
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    if let Some(done) = before_stopping {
        return Some((done, None));
    }
    let until = grace_until.unwrap_or_else(|| tokio::time::Instant::now() + STOPPING_REQUEST_GRACE);
    let done = tokio::time::timeout_at(until, &mut work).await.ok()?;
    Some((done, Some(until)))
}

/// pingora's HTTP server loop drives this for HTTP/2 streams only: HTTP/1 connections are
/// driven by `serve::connection`, which holds nothing but the stream between requests.
#[async_trait]
impl HttpServerApp for RrdpProxy {
    fn server_options(&self) -> Option<&pingora::apps::HttpServerOptions> {
        Some(&self.server_options)
    }

    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let (reusable, settings) = self.one_request(session, shutdown, None).await?;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}
