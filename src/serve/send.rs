//! Writing an answer: the header, then the body from memory or from a stored file in
//! [`CHUNK`]s (read on the blocking pool unless the pages are cached).

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

use super::answer::{Answer, Body};
use super::guard::ClientStream;
use super::sendfile;

/// Size of the pieces a file is sent in from disk (each one `sendfile`'s stand-in at most).
const CHUNK: usize = super::sendfile::STAND_IN_LEN;

/// Writes an answer; returns the body bytes sent.
pub(super) async fn send(session: &mut ServerSession, a: Answer) -> Result<u64> {
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
    send_body(&mut BodyOut::Session(session), a.body).await
}

/// Where a response's body goes: pingora's session, which frames it, or (the lean path,
/// `serve::lean`) the connection itself, after a head written whole.
pub(super) enum BodyOut<'a> {
    Session(&'a mut ServerSession),
    Stream(&'a mut ClientStream),
}

impl BodyOut<'_> {
    /// Writes a piece of the body; `end`: the last.
    async fn write(&mut self, piece: Bytes, end: bool) -> Result<()> {
        match self {
            BodyOut::Session(s) => s.write_response_body(piece, end).await,
            BodyOut::Stream(s) => tokio::io::AsyncWriteExt::write_all(&mut **s, &piece)
                .await
                .map_err(|e| Error::because(WriteError, "while writing body", e)),
        }
    }

    /// The connection's `sendfile` side (plain HTTP/1), for a body of `len` bytes: bodies up
    /// to `SENDFILE_MAX` go out with `sendfile` (see `sendfile`).
    fn file_sender(&self, len: u64) -> Option<Arc<sendfile::FileSender>> {
        if len > sendfile::SENDFILE_MAX {
            return None;
        }
        match self {
            BodyOut::Session(s) => s
                .stream()
                .and_then(|s| s.as_any().downcast_ref::<ClientStream>())
                .and_then(ClientStream::file_sender),
            BodyOut::Stream(s) => s.file_sender(),
        }
    }
}

/// Writes a body of a response whose head is written; returns the body bytes sent.
pub(super) async fn send_body(out: &mut BodyOut<'_>, body: Body) -> Result<u64> {
    let len = body.len();
    match body {
        Body::Empty => Ok(0),
        Body::Bytes(b) => {
            out.write(b, true).await?;
            Ok(len)
        }
        Body::Resident { bytes, file } => match out.file_sender(len) {
            Some(f) => Box::pin(send_pieces(out, Some(&f), &file, 0, len, true)).await,
            None => {
                out.write(bytes, true).await?;
                Ok(len)
            }
        },
        Body::File { file, start, len } => Box::pin(send_file(out, file, start, len)).await,
    }
}

/// Streams `len` bytes of a stored file from `start`; returns the bytes sent.
pub(super) async fn send_file(
    out: &mut BodyOut<'_>,
    file: std::fs::File,
    start: u64,
    len: u64,
) -> Result<u64> {
    let files = out.file_sender(len);
    send_pieces(out, files.as_deref(), &Arc::new(file), start, len, false).await
}

/// Sends `len` bytes of `file` from `start` in [`CHUNK`]s: with `sendfile` where `files` is
/// given and the piece is in memory (`resident`: all of it is), else read and copied.
async fn send_pieces(
    out: &mut BodyOut<'_>,
    files: Option<&sendfile::FileSender>,
    file: &Arc<std::fs::File>,
    start: u64,
    len: u64,
    resident: bool,
) -> Result<u64> {
    let mut sent = 0u64;
    while sent < len {
        let want = CHUNK.min((len - sent) as usize);
        let at = start + sent;
        if let Some(f) = files.filter(|_| resident || sendfile::page_cached(file, at, want)) {
            // The stand-in bytes are backed by the file range while they are written.
            let _backed = f.expect(file, at, want);
            out.write(sendfile::stand_in(want), sent + want as u64 == len)
                .await?;
            sent += want as u64;
            continue;
        }
        let chunk = read_chunk(file, at, want).await?;
        sent += chunk.len() as u64;
        out.write(chunk, sent == len).await?;
    }
    Ok(sent)
}

/// Reads up to `want` bytes of a stored object at `offset`. What the page cache holds is read
/// right here (`preadv2` with `RWF_NOWAIT`, which never waits for the disk), the way nginx
/// reads its cache files; only what would wait for the disk goes to the blocking pool. With
/// every chunk sent through the blocking pool, the two thread switches per 256 KiB cost more
/// CPU than the copies (docs/benchmarks.md).
pub(super) async fn read_chunk(
    file: &Arc<std::fs::File>,
    offset: u64,
    want: usize,
) -> Result<Bytes> {
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
pub(super) fn read_cached(
    file: &std::fs::File,
    offset: u64,
    want: usize,
) -> std::io::Result<Option<Bytes>> {
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

pub(super) fn short_object() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "stored object shorter than its length",
    )
}
