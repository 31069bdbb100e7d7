//! An HTTP/1 connection's life: each request answered by the lean path (`serve::lean`: plain
//! GETs and HEADs of published files, no session) or else by a pingora session of its own,
//! and between requests a wait that holds nothing but the connection's stream.
//!
//! pingora's own HTTP/1 loop (its `ServerApp` for an `HttpServerApp`) waits for the next
//! request inside the session's `read_request`: the 4 KiB header buffer is allocated and the
//! boxed futures of its loop and of the app's `process_new_http` stay alive for as long as
//! the client keeps the connection idle (docs/benchmarks.md, idle connections). Here the wait
//! is a poll of the stream itself ([`ClientStream::poll_request_start`]): the first bytes of
//! the next request are read into a buffer on the stack, and only then are a header buffer
//! and a session made, the session taking the bytes as its buffer. It is the read and the
//! buffer pingora would have made; what a request costs more is copying its first bytes once
//! from the stack (a few hundred bytes; the A/B in docs/benchmarks.md finds no difference).
//!
//! Each connection runs as a task of its own (see `Guarded`), so what an idle plain-HTTP/1
//! connection holds is this loop's state, its stream and a task: about 3 KiB, against 22 KiB
//! when it waited inside pingora's loop and task (docs/benchmarks.md, idle connections). Over
//! TLS, rustls's session state comes on top.
//!
//! Of pingora's loop this keeps what the server uses: the keep-alive idle limit (60 s, also
//! for a new connection's first request, within `request_timeout`), pipelined bytes carried
//! to the next request, and the stopping grace. pingora's `keepalive_request_limit`, `h2c`
//! and custom ALPN are options this server does not set (`RrdpProxy::new`); HTTP/1 here takes
//! no notice of them.
//!
//! HTTP/2 connections stay on pingora's loop (see `Guarded`): their streams are multiplexed
//! over one connection whose state pingora holds whatever happens here.

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::serve::guard::{ClientStream, HEADER_BUFFER};
use crate::serve::lean::Lean;
use crate::serve::{unless_stopped, RrdpProxy, KEEPALIVE_IDLE_SECS};

/// Answers the requests of one HTTP/1 connection (plain or TLS) until it closes, fails, stays
/// idle too long, or the server stops.
pub(crate) async fn serve_http1(
    app: &RrdpProxy,
    mut conn: Box<ClientStream>,
    shutdown: &ShutdownWatch,
) {
    let mut stopping = shutdown.clone();
    // Bytes of the next request read with the last one (pipelining): it has begun.
    let mut pending: Option<BytesMut> = None;
    // A silent connection, new or kept alive, is closed after this long (as pingora's
    // keep-alive did), or sooner by the stream's clock (`request_timeout`, from the accept for
    // the first request).
    let idle = Duration::from_secs(KEEPALIVE_IDLE_SECS);
    loop {
        let (start, grace_until) = match pending.take() {
            Some(bytes) => {
                // Answering pipelined requests reads nothing from the socket: without this,
                // a read's worth of them would be answered without giving the thread back.
                tokio::task::consume_budget().await;
                (bytes, None)
            }
            None => match request_start(&mut conn, idle, &mut stopping).await {
                Some(Start { bytes, grace_until }) => (bytes, grace_until),
                None => return,
            },
        };
        // The common GETs first (`lean`); boxed, as the session's request below, so that the
        // connection's task does not carry their futures while it idles.
        let start = match Box::pin(app.lean(&mut conn, start, shutdown)).await {
            Lean::Answered(rest) => {
                pending = (!rest.is_empty()).then_some(rest);
                continue;
            }
            Lean::Closed => return,
            Lean::Declined(mut start) => {
                // The session reads the rest of a request into this buffer: the room its own
                // first buffer would have had (the first read took only what came).
                start.reserve(HEADER_BUFFER.saturating_sub(start.len()));
                start
            }
        };
        let mut session = ServerSession::new_http1(conn);
        // The session parses these first, as its header buffer. What the last session carried
        // over besides them (its keep-alive settings) each request sets again (`one_request`).
        session.set_pipelined_prefix(start);
        // Boxed: the request's future is as large as its largest path (a forwarded miss) and
        // exists only while a request is being answered, not while the connection idles.
        let Some((reusable, _)) = Box::pin(app.one_request(session, shutdown, grace_until)).await
        else {
            return;
        };
        let (stream, prefix) = reusable.into_parts();
        pending = prefix.filter(|p| !p.is_empty());
        // The session was made on this very box: pingora hands the stream back unwrapped.
        conn = match stream.into_any().downcast::<ClientStream>() {
            Ok(conn) => conn,
            Err(_) => return,
        };
    }
}

/// The first bytes of a request.
struct Start {
    bytes: BytesMut,
    /// The server began stopping while they were awaited: the request's grace ends then.
    grace_until: Option<Instant>,
}

/// The next request's first bytes, or `None` when the connection is done: closed by the
/// client, failed, silent for `idle`, or the server stopping (a request on its way, one
/// accepted just before or sent at an upgrade, still gets the stopping grace).
async fn request_start(
    conn: &mut ClientStream,
    idle: Duration,
    stopping: &mut ShutdownWatch,
) -> Option<Start> {
    let arrives = poll_fn(|cx| conn.poll_request_start(cx));
    let waited = unless_stopped(arrives, stopping, None);
    let (start, grace_until) = tokio::time::timeout(idle, waited).await.ok()??;
    let bytes = start.ok()??;
    Some(Start { bytes, grace_until })
}
