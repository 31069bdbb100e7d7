//! Bodies sent from the page cache with `sendfile`, on plain-HTTP/1 connections.
//!
//! pingora writes a body only from memory: a stored file was read into a buffer (one copy)
//! and written to the socket (a second copy, `_copy_from_iter`, the largest single line of a
//! file hit's profile). nginx serving the same files hands the socket the page cache's pages
//! with `sendfile`, and on a 1 MiB delta it was 1.45× rrdp-proxy (docs/benchmarks.md). Here the
//! connection does the same, while pingora still frames the response and counts its bytes:
//!
//! - The body is handed to pingora as [`STAND_IN`] bytes: a static region that stands for a
//!   range of a file and is never itself sent. The connection's [`FileSender`] is told first
//!   which file range that is ([`FileSender::expect`]).
//! - The connection stream ([`ClientStream`]) sees a write that lies in [`STAND_IN`] and
//!   sends the matching part of the file with `sendfile` instead. A write of stand-in bytes
//!   that no file range backs is refused with an error. This rests on pingora's HTTP/1 body
//!   writer passing the body's slice through uncopied (pingora 0.9 does: `write_all` of it);
//!   were it to copy it first, the copy would not be recognised and zeros would be sent.
//!   tests/it/serving.rs compares bodies sent this way with bodies sent from memory, so an
//!   upgrade of pingora that did so fails there.
//! - The response's held header goes out first with `MSG_MORE`, so that header and body still
//!   leave in one segment, as nginx's `tcp_nopush` does.
//! - Only a piece the page cache holds in full is sent this way ([`page_cached`], by
//!   `cachestat`, asked once per 256 KiB piece): `sendfile` of pages not in memory would
//!   wait for the disk on the worker thread. Anything else takes the buffered path
//!   (`send::read_chunk`), which does not. A page evicted while a slow client takes its piece
//!   is read back by the kernel within `sendfile`: rare, as the piece was just found cached.
//!
//! When the socket is full, `sendfile` says `EAGAIN` behind tokio's back, and tokio still
//! believes the socket writable. One page of the file is then written through tokio: either it
//! goes out (the socket drained meanwhile), or tokio learns the socket is full and wakes the
//! task when it is not.
//!
//! TLS and HTTP/2 connections never get a sender: their bodies are encrypted or framed in
//! memory anyway.
//!
//! [`ClientStream`]: crate::serve::guard::ClientStream

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// The largest body sent with `sendfile`; larger ones (big snapshots) are copied. Measured on
/// loopback with a client reading 1 MiB every 20 ms: a 16 MiB body took 4.6–4.9 s with
/// `sendfile`, nginx's included, against 0.55 s copied (the socket's wake-ups come a few
/// hundred milliseconds apart once it has been full). A body this size fits in the socket's
/// buffer and is handed over at once; the throughput that matters for big snapshots is many
/// clients at once, where the copying path is already ahead of nginx (docs/benchmarks.md).
pub(crate) const SENDFILE_MAX: u64 = 4 << 20;

/// The largest piece of a file one stand-in write may stand for.
pub(crate) const STAND_IN_LEN: usize = 256 << 10;

/// Bytes that stand for a file's; recognised by address, never sent.
static STAND_IN: [u8; STAND_IN_LEN] = [0; STAND_IN_LEN];

/// The stand-in for `len` bytes of a file (at most [`STAND_IN_LEN`]).
pub(crate) fn stand_in(len: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(&STAND_IN[..len])
}

/// Where `buf` starts within [`STAND_IN`], if it lies in it.
fn stand_in_offset(buf: &[u8]) -> Option<usize> {
    let base = STAND_IN.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).checked_sub(base)?;
    (at + buf.len() <= STAND_IN_LEN && !buf.is_empty()).then_some(at)
}

/// The file range the next stand-in write stands for.
#[derive(Debug)]
struct FileRange {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// A connection's side of `sendfile`: its socket, and the file range its next stand-in body
/// write stands for. Shared (`Arc`) between the connection stream and the code writing the
/// response, which reaches the stream only through pingora's session.
#[derive(Debug)]
pub(crate) struct FileSender {
    socket: RawFd,
    next: Mutex<Option<FileRange>>,
}

impl FileSender {
    pub(crate) fn new(socket: RawFd) -> FileSender {
        FileSender {
            socket,
            next: Mutex::new(None),
        }
    }

    /// The next stand-in write of `len` bytes stands for `file` from `offset`, until the
    /// returned guard is dropped (the write sent, failed or abandoned).
    pub(crate) fn expect(&self, file: &Arc<File>, offset: u64, len: usize) -> Expecting<'_> {
        *self.lock() = Some(FileRange {
            file: file.clone(),
            offset,
            len,
        });
        Expecting(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<FileRange>> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent value.
        self.next.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `buf` is stand-in bytes (to be sent with [`FileSender::poll_send`]).
    pub(crate) fn is_stand_in(buf: &[u8]) -> bool {
        stand_in_offset(buf).is_some()
    }

    /// Sends the file bytes the stand-in `buf` stands for; returns how many were sent. `inner`
    /// is the connection's stream, over this sender's socket, with nothing buffered.
    pub(crate) fn poll_send<S: AsyncWrite + Unpin + ?Sized>(
        &self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(at) = stand_in_offset(buf) else {
            return Poll::Ready(Err(unbacked()));
        };
        let (file, offset) = {
            let next = self.lock();
            match next.as_ref() {
                Some(r) if at + buf.len() <= r.len => (r.file.clone(), r.offset + at as u64),
                _ => return Poll::Ready(Err(unbacked())),
            }
        };
        loop {
            let mut off = i64::try_from(offset).map_err(io::Error::other)?;
            // SAFETY: plain system call on two descriptors this connection owns (the socket)
            // or holds open (the file); `off` is a valid pointer for the call's duration.
            let n = unsafe { libc::sendfile(self.socket, file.as_raw_fd(), &mut off, buf.len()) };
            match n {
                n if n > 0 => return Poll::Ready(Ok(n as usize)),
                0 => return Poll::Ready(Err(super::send::short_object())),
                _ => {}
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return poll_through(inner, cx, &file, offset, buf),
                _ => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends `held` (a response header) marked as having more to follow, so that it leaves
    /// with the body `sendfile` adds next; returns how much went out. A full socket: through
    /// `inner`, as [`FileSender::poll_send`] does.
    pub(crate) fn poll_send_more<S: AsyncWrite + Unpin + ?Sized>(
        &self,
        inner: &mut S,
        cx: &mut Context<'_>,
        held: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            // SAFETY: `held` is valid for reads of its length for the call's duration.
            let n = unsafe {
                libc::send(
                    self.socket,
                    held.as_ptr().cast(),
                    held.len(),
                    libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Pin::new(inner).poll_write(cx, held),
                _ => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A file range expected by a [`FileSender`]; dropped, no stand-in bytes are backed any more.
pub(crate) struct Expecting<'a>(&'a FileSender);

impl Drop for Expecting<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

/// The socket was full for `sendfile`: one page of the file written through `inner` (whose
/// readiness tokio tracks) either goes out or registers the task for the socket's next
/// readiness.
fn poll_through<S: AsyncWrite + Unpin + ?Sized>(
    inner: &mut S,
    cx: &mut Context<'_>,
    file: &File,
    offset: u64,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    use std::os::unix::fs::FileExt;
    let mut page = [0u8; 4096];
    let want = buf.len().min(page.len());
    let n = file.read_at(&mut page[..want], offset)?;
    if n == 0 {
        return Poll::Ready(Err(super::send::short_object()));
    }
    Pin::new(inner).poll_write(cx, &page[..n])
}

pub(crate) fn unbacked() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a stand-in body write with no file range behind it",
    )
}

/// `cachestat` failed once: it is not asked again.
static CACHESTAT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether every page of `len` bytes of `file` from `offset` is in the page cache (so that
/// `sendfile` of them does not wait for the disk). `false` when the kernel cannot tell
/// (`cachestat` is Linux 6.5 and later): the buffered path, which never waits, then serves.
pub(crate) fn page_cached(file: &File, offset: u64, len: usize) -> bool {
    if len == 0 || CACHESTAT_UNSUPPORTED.load(Ordering::Relaxed) {
        return false;
    }
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // 451 in the generic system call table and in x86's, since 6.5 (other architectures
    // number it otherwise, and get the buffered path).
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    return false;
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range {
        off: offset,
        len: len as u64,
    };
    let mut stat = Stat::default();
    // SAFETY: both pointers are valid for the call's duration and of the kernel's layout.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if r != 0 {
        // ENOSYS (before 6.5), EPERM (a seccomp filter), …: none of them passes later.
        CACHESTAT_UNSUPPORTED.store(true, Ordering::Relaxed);
        log::info!(
            "cachestat unavailable ({}): stored files are sent by copying, not with sendfile",
            io::Error::last_os_error()
        );
        return false;
    }
    let page = page_size();
    let pages = (offset + len as u64 - 1) / page - offset / page + 1;
    stat.nr_cache >= pages
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::guard::ClientStream;
    use std::io::Write;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain-TCP connection stream as the public listener makes it, and the client's end,
    /// whose receive buffer is small: a body of a few hundred KiB fills the socket many times.
    async fn connection(files: bool) -> (ClientStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 << 10).unwrap();
        let (client, server) = tokio::join!(socket.connect(l.local_addr().unwrap()), l.accept());
        let inner: pingora::protocols::Stream = Box::new(
            pingora::protocols::l4::stream::Stream::from(server.unwrap().0),
        );
        let stream = ClientStream::new(inner, Duration::from_secs(10), 4096).sending_files(files);
        (stream, client.unwrap())
    }

    fn file_of(body: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(body).unwrap();
        Arc::new(f)
    }

    #[tokio::test]
    async fn the_header_then_the_file_in_order_through_a_full_socket() {
        let (mut out, mut client) = connection(true).await;
        let files = out.file_sender().expect("plain TCP sends files");
        let body: Vec<u8> = (0..450_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_of(&body);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        out.write_all(b"HEAD\r\n\r\n").await.unwrap();
        // As pingora writes a body: stand-in pieces, each backed while it is written; the
        // second starts inside the file, as a range would.
        let (first, second) = (STAND_IN_LEN, body.len() - STAND_IN_LEN);
        {
            let _b = files.expect(&file, 0, first);
            out.write_all(&stand_in(first)).await.unwrap();
        }
        {
            let _b = files.expect(&file, first as u64, second);
            out.write_all(&stand_in(second)).await.unwrap();
        }
        out.write_all(b"NEXT").await.unwrap();
        out.flush().await.unwrap();
        drop(out);
        let got = reader.await.unwrap();
        let mut want = b"HEAD\r\n\r\n".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b"NEXT");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes differ");
    }

    #[tokio::test]
    async fn stand_in_bytes_with_no_file_behind_them_are_refused_and_never_sent() {
        for files in [true, false] {
            let (mut out, mut client) = connection(files).await;
            out.write_all(b"HEAD").await.unwrap();
            let e = out.write_all(&stand_in(100)).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            // A range expected and dropped backs nothing either.
            if let Some(f) = out.file_sender() {
                drop(f.expect(&file_of(&[1; 100]), 0, 100));
                let e = out.write_all(&stand_in(100)).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            }
            out.flush().await.unwrap();
            drop(out);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"HEAD", "no stand-in byte reached the client");
        }
    }

    #[test]
    fn a_file_just_written_is_in_the_page_cache_and_a_range_past_its_end_is_not() {
        let file = file_of(&[7; 20_000]);
        if !page_cached(&file, 0, 20_000) {
            // Only where the kernel cannot say (before 6.5, or a seccomp filter): the
            // buffered path serves, which the rest of the suite covers.
            assert!(
                CACHESTAT_UNSUPPORTED.load(Ordering::Relaxed),
                "cachestat works but says a fresh file is not cached"
            );
            return;
        }
        assert!(page_cached(&file, 4095, 2));
        assert!(!page_cached(&file, 0, 0));
        assert!(!page_cached(&file, 1 << 20, 4096), "no pages there");
    }
}
