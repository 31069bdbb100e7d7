//! An HTTP/1 connection's life: one pingora session per request, and between requests a wait
//! that holds nothing but the connection's stream.
//!
//! pingora's own HTTP/1 loop (its `ServerApp` for an `HttpServerApp`) waits for the next
//! request inside the session's `read_request`: the 4 KiB header buffer is allocated and the
//! boxed futures of its loop and of the app's `process_new_http` stay alive for as long as
//! the client keeps the connection idle (docs/benchmarks.md, idle connections). Here the wait
//! is a poll of the stream itself ([`ClientStream::poll_request_start`]): the first bytes of
//! the next request are read into a buffer on the stack, and only then are a header buffer
//! and a session made, the session taking the bytes as its buffer. It is the read and the
//! buffer pingora would have made, so a request costs no syscall and no allocation more.
//!
//! Each connection runs as a task of its own (see `Guarded`), so what an idle connection
//! holds is this loop's state, its stream and a task: about 3 KiB, against 22 KiB when it
//! waited inside pingora's loop and task (docs/benchmarks.md, idle connections).
//!
//! HTTP/2 connections stay on pingora's loop (see `Guarded`): their streams are multiplexed
//! over one connection whose state pingora holds whatever happens here.

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;

use pingora::apps::HttpPersistentSettings;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::serve::guard::ClientStream;
use crate::serve::{RrdpProxy, KEEPALIVE_IDLE_SECS, STOPPING_REQUEST_GRACE};

/// What a kept-alive connection's next session inherits from the last one.
struct Carried {
    settings: HttpPersistentSettings,
    /// The last session read bytes past its request: the next request has begun, and its
    /// bytes are in `settings`, not on the socket.
    pipelined: bool,
}

/// Answers the requests of one HTTP/1 connection (plain or TLS) until it closes, fails, stays
/// idle too long, or the server stops.
pub(crate) async fn serve_http1(
    app: &RrdpProxy,
    mut conn: Box<ClientStream>,
    shutdown: &ShutdownWatch,
) {
    let mut stopping = shutdown.clone();
    let mut carried: Option<Carried> = None;
    loop {
        let start = match &carried {
            // The next request has begun: its bytes came with the last session.
            Some(c) if c.pipelined => None,
            _ => {
                // The first request is timed by the stream from the accept
                // (`request_timeout`); a kept-alive connection may then idle as long as
                // pingora's keep-alive would have let it.
                let idle = carried
                    .is_some()
                    .then_some(Duration::from_secs(KEEPALIVE_IDLE_SECS));
                match request_start(&mut conn, idle, &mut stopping).await {
                    Some(start) => Some(start),
                    None => return,
                }
            }
        };
        let mut session = ServerSession::new_http1(conn);
        if let Some(c) = carried.take() {
            c.settings.apply_to_session(&mut session);
        }
        if let Some(start) = start {
            // The session parses these first, as its header buffer.
            session.set_pipelined_prefix(start);
        }
        // Boxed: the request's future is as large as its largest path (a forwarded miss) and
        // exists only while a request is being answered, not while the connection idles.
        let Some((reusable, mut settings)) = Box::pin(app.one_request(session, shutdown)).await
        else {
            return;
        };
        let (stream, prefix) = reusable.into_parts();
        let pipelined = prefix.is_some();
        if let Some(prefix) = prefix {
            settings.set_pipelined_prefix(prefix);
        }
        // The session was made on this very box: pingora hands the stream back unwrapped.
        conn = match stream.into_any().downcast::<ClientStream>() {
            Ok(conn) => conn,
            Err(_) => return,
        };
        carried = Some(Carried {
            settings,
            pipelined,
        });
    }
}

/// The next request's first bytes, or `None` when the connection is done: closed by the
/// client, failed, idle past `idle`, or the server stopping.
async fn request_start(
    conn: &mut ClientStream,
    idle: Option<Duration>,
    stopping: &mut ShutdownWatch,
) -> Option<BytesMut> {
    let arrives = poll_fn(|cx| conn.poll_request_start(cx));
    tokio::pin!(arrives);
    let waited = async {
        let before_stopping = tokio::select! {
            // Bytes already here are answered even when the server is stopping.
            biased;
            start = &mut arrives => Some(start),
            _ = stopping.wait_for(|stop| *stop) => None,
        };
        match before_stopping {
            Some(start) => start,
            // Stopping: a request on its way (one accepted just before, or sent at an
            // upgrade) is still answered; an idle connection is closed after the grace.
            None => tokio::time::timeout(STOPPING_REQUEST_GRACE, &mut arrives)
                .await
                .unwrap_or(Ok(None)),
        }
    };
    let start = match idle {
        Some(idle) => tokio::time::timeout(idle, waited).await.unwrap_or(Ok(None)),
        None => waited.await,
    };
    start.ok().flatten()
}
