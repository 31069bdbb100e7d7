//! One send per response: the header is held back and goes out with the body.
//!
//! pingora's HTTP/1 server writes a response as separate writes: the serialized header, then
//! the body in one or more pieces, then a flush. Sent as they come, a notification goes out in
//! two `send`s, each waking the client; behind a write buffer large enough for both, it is
//! copied once more in user space (a measurable part of a notification request's CPU:
//! docs/benchmarks.md has the figures). Instead, the first write after a flush (the header) is
//! held if it is small, and sent together with the next write in one vectored write
//! (`writev`), the way nginx sends a response: no copy of the body, one system call.
//!
//! [`Coalescer`] is the state; the stream that owns it calls [`Coalescer::poll_write`] and
//! [`Coalescer::poll_flush`] with its inner stream.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Held bytes of a connection's response header.
#[derive(Debug)]
pub(crate) struct Coalescer {
    held: Vec<u8>,
    /// Writes longer than this are never held (0: nothing is).
    limit: usize,
}

impl Coalescer {
    pub(crate) fn new(limit: usize) -> Coalescer {
        Coalescer {
            held: Vec::new(),
            limit,
        }
    }

    /// Writes `buf`: held if it is the first small write since a flush, else sent with
    /// whatever is held in one vectored write. Returns how much of `buf` was taken.
    pub(crate) fn poll_write<S: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.held.is_empty() && buf.len() <= self.limit && inner.is_write_vectored() {
            self.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        while !self.held.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *inner)
                .poll_write_vectored(cx, &[IoSlice::new(&self.held), IoSlice::new(buf)]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            if n >= self.held.len() {
                let of_buf = n - self.held.len();
                self.held.clear();
                if of_buf > 0 {
                    return Poll::Ready(Ok(of_buf));
                }
            } else {
                // A short write: keep the rest of the header, try again.
                self.held.drain(..n);
            }
        }
        Pin::new(inner).poll_write(cx, buf)
    }

    /// Sends what is held, then flushes `inner`.
    pub(crate) fn poll_flush<S: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(|held| Pin::new(&mut *inner).poll_write(cx, held)))?;
        Pin::new(inner).poll_flush(cx)
    }

    /// Sends what is held with `send`, which returns how much of it went out.
    pub(crate) fn poll_drain(
        &mut self,
        mut send: impl FnMut(&[u8]) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<()>> {
        while !self.held.is_empty() {
            let n = std::task::ready!(send(&self.held))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Whether bytes are waiting for a write or a flush.
    #[cfg(test)]
    pub(crate) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream over a real socket pair that counts the writes reaching it.
    struct Counted<S> {
        inner: S,
        writes: usize,
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes += 1;
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.writes += 1;
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The owner of a coalescer, as the connection stream is.
    struct Out<S> {
        inner: S,
        c: Coalescer,
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Out<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = &mut *self;
            this.c.poll_write(&mut this.inner, cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            this.c.poll_flush(&mut this.inner, cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap());
        let (c, a) = tokio::join!(c, l.accept());
        (c.unwrap(), a.unwrap().0)
    }

    #[tokio::test]
    async fn header_and_body_go_out_in_one_write_and_in_order() {
        let (a, mut b) = pair().await;
        // Read while writing: the body is larger than what the socket buffers may hold.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut out = Out {
            inner: Counted {
                inner: a,
                writes: 0,
            },
            c: Coalescer::new(4096),
        };
        // A response: header, body, flush; then one without a body: header, flush.
        out.write_all(b"HEAD1\r\n").await.unwrap();
        assert!(out.c.is_holding(), "the header waits for the body");
        assert_eq!(out.inner.writes, 0);
        let body = vec![b'x'; 100_000];
        out.write_all(&body).await.unwrap();
        out.flush().await.unwrap();
        out.write_all(b"HEAD2\r\n").await.unwrap();
        out.flush().await.unwrap();
        assert!(!out.c.is_holding());
        drop(out);
        let got = reader.await.unwrap();
        let mut want = b"HEAD1\r\n".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b"HEAD2\r\n");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn counts_one_vectored_write_for_a_small_response() {
        let (a, mut b) = pair().await;
        let mut out = Out {
            inner: Counted {
                inner: a,
                writes: 0,
            },
            c: Coalescer::new(4096),
        };
        out.write_all(b"header").await.unwrap();
        out.write_all(b"body").await.unwrap();
        out.flush().await.unwrap();
        assert_eq!(out.inner.writes, 1, "header and body in one write");
        drop(out);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"headerbody");
    }

    #[tokio::test]
    async fn a_zero_limit_holds_nothing() {
        let (a, _b) = pair().await;
        let mut out = Out {
            inner: Counted {
                inner: a,
                writes: 0,
            },
            c: Coalescer::new(0),
        };
        out.write_all(b"header").await.unwrap();
        assert!(!out.c.is_holding());
        assert_eq!(out.inner.writes, 1);
    }
}
