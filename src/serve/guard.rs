//! The public listener's HTTP/1 connections: a deadline for reading each request (the
//! slowloris guard), and a response's header sent together with its body (see [`coalesce`]).
//!
//! pingora bounds each single read of a request header (60 s), and the connection loop
//! (`serve/connection.rs`) the idle time between keep-alive requests, but neither the whole
//! header: a client that trickles one byte every few seconds would hold a connection (and its
//! task) for as long as it liked. nginx bounds the whole header (`client_header_timeout`);
//! this does the same for HTTP/1 connections. The clock starts when the connection is
//! accepted and, on a kept-alive connection, at the first byte of the next request; the
//! response's first byte stops it. A request not read in time ends the connection with a read
//! error: the connection loop and pingora's session both close the connection on it.
//!
//! It wraps the transport stream that pingora's HTTP/1 server reads from and writes to.
//! HTTP/2 (by ALPN on TLS) gets only the first deadline: its 24-byte connection preface must
//! arrive within `request_timeout` of the accept (pingora's handshake waits for it without
//! one; a client that negotiated `h2` and sent nothing was connected after 150 s). The
//! server's own SETTINGS, written before the preface is read, do not stop that clock, and
//! nothing is held back (h2's framing gathers its writes). After the preface, pingora's
//! `h2_idle_timeout` closes a connection with no stream open (see `RrdpProxy::new`).
//!
//! [`coalesce`]: crate::serve::coalesce

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::serve::coalesce::Coalescer;
use crate::serve::sendfile::{self, FileSender};
use crate::serve::{connection, RrdpProxy};

/// The public service's app: HTTP/1 connections get a request-reading deadline, send each
/// response's header with its body, and hold only their stream between requests (see
/// [`connection`](crate::serve::connection)); HTTP/2 connections go to pingora's loop.
pub(crate) struct Guarded {
    pub app: Arc<RrdpProxy>,
    pub request_timeout: Duration,
    /// The largest write held back to go out with the next (`server.write_buffer`).
    pub coalesce: usize,
    /// Plain-HTTP/1 connections send stored files with `sendfile` (`server.sendfile`).
    pub sendfile: bool,
}

#[async_trait]
impl ServerApp for Guarded {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            let stream = Box::new(ClientStream::h2(stream, self.request_timeout)) as Stream;
            return self.app.process_new(stream, shutdown).await;
        }
        let conn = ClientStream::new(stream, self.request_timeout, self.coalesce)
            .sending_files(self.sendfile);
        // A task of its own: pingora's task for the connection is sized by its largest state
        // (the TLS handshake's), about 9 KiB kept for the connection's life; this one is the
        // size of the loop's state between requests. pingora's task ends here.
        let (app, shutdown) = (self.app.clone(), shutdown.clone());
        tokio::spawn(async move {
            connection::serve_http1(&app, Box::new(conn), &shutdown).await;
        });
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

/// A client connection: reads fail once a request has been read for longer than its limit;
/// writes are coalesced.
#[derive(Debug)]
pub(crate) struct ClientStream {
    inner: Stream,
    out: Coalescer,
    limit: Duration,
    /// Running while a request is being read.
    timer: Option<Pin<Box<Sleep>>>,
    /// A response was written: the next byte read starts the clock again.
    between_requests: bool,
    /// HTTP/2: bytes of the connection preface still to come (the timer runs until then);
    /// `None` for HTTP/1.
    preface_left: Option<usize>,
    /// Plain HTTP/1: stored files go out with `sendfile` (see [`sendfile`]).
    files: Option<Arc<FileSender>>,
}

/// The HTTP/2 client connection preface's length (RFC 9113, 3.4).
const H2_PREFACE: usize = 24;

/// The first read of a request takes up to this much, as pingora's own first read would (its
/// header buffer starts at 4 KiB); the session reads the rest as it would have.
pub(crate) const HEADER_BUFFER: usize = 4096;

impl ClientStream {
    pub(crate) fn new(inner: Stream, limit: Duration, coalesce: usize) -> ClientStream {
        ClientStream {
            inner,
            out: Coalescer::new(coalesce),
            limit,
            // The first request's clock starts at accept: a client that connects and sends
            // nothing is as slow as one that sends a byte a minute.
            timer: Some(Box::pin(tokio::time::sleep(limit))),
            between_requests: false,
            preface_left: None,
            files: None,
        }
    }

    /// Ready with the next request's first bytes once they have been read, with `None` if
    /// the client closed the connection first, and with an error if the read failed or the
    /// request's clock ran out. Between polls nothing is held: the bytes are read into the
    /// stack, and only once they are here are they copied to the heap, into a buffer their
    /// size (most requests are answered by the lean path from it; one handed to pingora's
    /// session is first given the room the session's own header buffer has,
    /// [`HEADER_BUFFER`]).
    pub(crate) fn poll_request_start(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<Option<BytesMut>>> {
        std::task::ready!(self.poll_deadline(cx))?;
        let mut space = [MaybeUninit::<u8>::uninit(); HEADER_BUFFER];
        let mut buf = ReadBuf::uninit(&mut space);
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(None));
        }
        // Small enough for the allocator's per-thread cache, where 4 KiB is not.
        let start = BytesMut::from(buf.filled());
        self.request_bytes_read();
        Poll::Ready(Ok(Some(start)))
    }

    /// An error once the request being read has taken longer than its limit.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(timer) = self.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request not received within the request timeout",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Bytes of a request were read: on a kept-alive connection, the first byte of the next
    /// request starts its clock.
    fn request_bytes_read(&mut self) {
        if self.between_requests {
            self.between_requests = false;
            self.timer = Some(Box::pin(tokio::time::sleep_until(
                Instant::now() + self.limit,
            )));
        }
    }

    /// With `on`, a plain-TCP connection sends stored files with `sendfile`; over TLS the
    /// body is encrypted in memory anyway, so nothing changes there.
    pub(crate) fn sending_files(mut self, on: bool) -> ClientStream {
        self.files = (*self.inner)
            .as_any()
            .downcast_ref::<pingora::protocols::l4::stream::Stream>()
            .filter(|_| on)
            .map(|s| Arc::new(FileSender::new(std::os::fd::AsRawFd::as_raw_fd(s))));
        self
    }

    /// The client's IP address, as pingora's session gives it (`client_addr`).
    pub(crate) fn client_ip(&self) -> Option<std::net::IpAddr> {
        let digest = self.inner.get_socket_digest()?;
        digest.peer_addr()?.as_inet().map(|a| a.ip())
    }

    /// This connection's `sendfile` side, if it has one (plain HTTP/1).
    pub(crate) fn file_sender(&self) -> Option<Arc<FileSender>> {
        self.files.clone()
    }

    /// Writes the file bytes the stand-in `buf` stands for: the held header first, marked as
    /// having more to follow, then the file from the page cache.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let ClientStream {
            inner, out, files, ..
        } = self;
        let Some(files) = files.as_ref() else {
            return Poll::Ready(Err(sendfile::unbacked()));
        };
        std::task::ready!(out.poll_drain(|held| files.poll_send_more(&mut *inner, cx, held)))?;
        // Nothing may wait below this stream when the file goes out beside it.
        std::task::ready!(Pin::new(&mut *inner).poll_flush(cx))?;
        files.poll_send(&mut *inner, cx, buf)
    }

    /// An HTTP/2 connection: its preface must arrive within `limit`; nothing else is timed
    /// or held back here.
    pub(crate) fn h2(inner: Stream, limit: Duration) -> ClientStream {
        ClientStream {
            preface_left: Some(H2_PREFACE),
            ..ClientStream::new(inner, limit, 0)
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_deadline(cx))?;
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(left) = this.preface_left.as_mut() {
            if matches!(res, Poll::Ready(Ok(()))) {
                *left = left.saturating_sub(buf.filled().len() - before);
                if *left == 0 {
                    this.timer = None;
                }
            }
            return res;
        }
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.request_bytes_read();
        }
        res
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = if FileSender::is_stand_in(buf) {
            this.poll_send_file(cx, buf)
        } else {
            this.out.poll_write(&mut this.inner, cx, buf)
        };
        if this.preface_left.is_some() {
            // HTTP/2: the server's SETTINGS go out before the preface is read.
            return res;
        }
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            // The response has started: the request was read in time.
            this.timer = None;
            this.between_requests = true;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.out.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.out.poll_flush(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// The rest is plain delegation to the wrapped stream.

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        // What is held goes out first (pingora flushes before this; this is for certainty).
        let _ = tokio::io::AsyncWriteExt::flush(self).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for ClientStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
