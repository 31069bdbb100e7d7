//! The access log to a file (`[log] access_file`), written off the request path.
//!
//! A request formats its line and hands it to a bounded queue without waiting
//! ([`AccessFile::send`]); one writer thread takes the queued lines every 100 ms and appends
//! them through a 64 KiB buffer (as nginx's `buffer=` and `flush=` do), so under load many
//! lines go out in one write and a line is on disk within about 100 ms. When the disk
//! is slow or full the queue fills and further lines are dropped and counted
//! (`rrdp_proxy_access_log_dropped_total`): a request never waits for the log.
//!
//! SIGUSR1 reopens the file (logrotate's `postrotate`; contrib/logrotate.d/rrdp-proxy): the
//! writer finishes what it holds into the old file, then opens the path anew.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use log::warn;

use std::time::SystemTime;

use pingora::protocols::http::ServerSession;

use super::Ctx;
use crate::config::AccessLog;
use crate::metrics::Metrics;

/// Lines queued for the writer before further ones are dropped.
pub(crate) const QUEUE_LINES: usize = 65_536;
/// The writer's buffer.
const BUFFER: usize = 64 << 10;
/// How often the writer takes the queued lines, writes them and flushes (nginx's `flush=`).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Counted up by the SIGUSR1 handler; each writer reopens its file when the count moved
/// since it last looked (so every writer of the process sees every signal).
static REOPENS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Only an atomic add: async-signal-safe.
    REOPENS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the SIGUSR1 handler that asks every access-log writer to reopen its file.
pub(crate) fn reopen_on_sigusr1() {
    let handler: extern "C" fn(libc::c_int) = on_sigusr1;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
    }
}

/// The request side of the access-log file.
pub(crate) struct AccessFile {
    queue: SyncSender<String>,
    metrics: Arc<Metrics>,
    /// The writer thread (joined by tests; in the server it lives as long as the process).
    #[cfg_attr(not(test), allow(dead_code))]
    writer: std::thread::JoinHandle<()>,
}

impl AccessFile {
    /// Opens (appending, creating) `path` and starts the writer thread.
    pub(crate) fn open(path: &Path, metrics: Arc<Metrics>) -> io::Result<AccessFile> {
        let file = open_append(path)?;
        let target = Target::File {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(BUFFER, file),
        };
        Ok(AccessFile::start(target, QUEUE_LINES, metrics))
    }

    fn start(target: Target, capacity: usize, metrics: Arc<Metrics>) -> AccessFile {
        let (queue, lines) = mpsc::sync_channel(capacity);
        let counted = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, target, counted))
            .expect("a thread can be started");
        AccessFile {
            queue,
            metrics,
            writer,
        }
    }

    /// Stops taking lines and waits until the writer has written what it holds.
    #[cfg(test)]
    fn close(self) {
        drop(self.queue);
        self.writer.join().expect("the writer does not panic");
    }

    /// Queues one line (without its newline); drops and counts it if the queue is full.
    pub(crate) fn send(&self, line: String) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.count_access_log_dropped(1)
            }
        }
    }
}

/// Where the writer writes: the file (reopened by path), or any writer (tests).
enum Target {
    File {
        path: PathBuf,
        file: BufWriter<File>,
    },
    #[cfg(test)]
    Other(Box<dyn Write + Send>),
}

impl Target {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Target::File { file, .. } => file,
            #[cfg(test)]
            Target::Other(w) => w,
        }
    }

    /// Finishes writing to the current file and opens its path anew (after a rotation).
    fn reopen(&mut self) {
        #[allow(irrefutable_let_patterns)] // refutable in tests
        let Target::File { path, file } = self
        else {
            return;
        };
        let _ = file.flush();
        match open_append(path) {
            Ok(f) => *file = BufWriter::with_capacity(BUFFER, f),
            Err(e) => warn!("access log {}: cannot reopen: {e}", path.display()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The writer thread: every `FLUSH_EVERY` it takes what the queue holds, writes it through
/// the buffer and flushes; it ends once every sender is gone and the queue is empty. It never
/// blocks on the queue, so a request's `try_send` never has a thread to wake (a wake-up per
/// line cost much of the throughput: docs/benchmarks.md, access log).
fn write_lines(lines: Receiver<String>, mut target: Target, metrics: Arc<Metrics>) {
    let mut failing = false;
    let mut reopens = REOPENS.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let now = REOPENS.load(Ordering::Relaxed);
        if now != reopens {
            reopens = now;
            target.reopen();
        }
        let (mut result, mut written, mut closed) = (Ok(()), 0, false);
        loop {
            match lines.try_recv() {
                Ok(line) => {
                    result = result.and_then(|()| write_line(target.writer(), &line));
                    written += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if written > 0 {
            result = result.and_then(|()| target.writer().flush());
            match result {
                Ok(()) => failing = false,
                Err(e) => {
                    // A full disk: the lines are lost (counted), the next batch tries again.
                    metrics.count_access_log_dropped(written);
                    if !failing {
                        warn!("access log: {e}; lines are dropped until it can be written");
                    }
                    failing = true;
                }
            }
        }
        if closed {
            let _ = target.writer().flush();
            return;
        }
    }
}

fn write_line(w: &mut dyn Write, line: &str) -> io::Result<()> {
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")
}

//------------ The line ----------------------------------------------------------------------------

/// Appends the current time as an HTTP date, formatted once a second per thread. The system
/// clock, not the node's injected one: an access log is read beside other systems' logs, and
/// says when the bytes crossed the wire.
pub(super) fn http_date_now(out: &mut String) {
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
pub(super) fn escape_into(line: &mut String, s: &str) {
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
pub(super) struct Escaped<'a>(&'a mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// What the access log says of a request, from pingora's session or the lean path's parse.
pub(super) struct Logged<'a> {
    pub(super) client: Option<IpAddr>,
    pub(super) method: &'a str,
    /// The request target as the client sent it (`req.uri`).
    pub(super) target: &'a dyn std::fmt::Display,
    /// `HTTP/1.1`, as `http::Version`'s `Debug` writes it.
    pub(super) version: &'a str,
    pub(super) referer: Option<&'a str>,
    pub(super) user_agent: Option<&'a str>,
}

/// A version as `http::Version`'s `Debug` writes it, without formatting.
fn version_name(v: http::Version) -> &'static str {
    use http::Version;
    [
        (Version::HTTP_09, "HTTP/0.9"),
        (Version::HTTP_10, "HTTP/1.0"),
        (Version::HTTP_11, "HTTP/1.1"),
        (Version::HTTP_2, "HTTP/2.0"),
        (Version::HTTP_3, "HTTP/3.0"),
    ]
    .into_iter()
    .find_map(|(known, name)| (known == v).then_some(name))
    .unwrap_or("HTTP/?")
}

/// Whether a line would be written anywhere (nothing is formatted otherwise).
pub(super) fn enabled(format: AccessLog, file: Option<&AccessFile>) -> bool {
    format != AccessLog::Off
        && (file.is_some() || log::log_enabled!(target: "access", log::Level::Info))
}

/// One line for a request pingora's session read (see [`log_line`]).
pub(super) fn access_log(
    session: &ServerSession,
    ctx: &Ctx,
    e: Option<&pingora::Error>,
    format: AccessLog,
    file: Option<&AccessFile>,
) {
    if !enabled(format, file) {
        return;
    }
    let req = session.req_header();
    let header =
        |name: http::header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let logged = Logged {
        client: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        method: req.method.as_str(),
        target: &req.uri,
        version: version_name(req.version),
        referer: header(http::header::REFERER),
        user_agent: header(http::header::USER_AGENT),
    };
    log_line(&logged, ctx, e, format, file);
}

/// One line per request, to the access-log file if there is one, else to the `access` log
/// target: the combined log format followed by kind and result, or a JSON object.
pub(super) fn log_line(
    req: &Logged<'_>,
    ctx: &Ctx,
    e: Option<&pingora::Error>,
    format: AccessLog,
    file: Option<&AccessFile>,
) {
    let client = req.client;
    let referer = req.referer.unwrap_or("-");
    let user_agent = req.user_agent.unwrap_or("-");
    let line = match format {
        AccessLog::Json => serde_json::json!({
            "time": httpdate::fmt_http_date(SystemTime::now()),
            "client": client.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            "method": req.method,
            "uri": req.target.to_string(),
            "version": req.version,
            "status": ctx.status,
            "bytes": ctx.bytes,
            "referer": referer,
            "user_agent": user_agent,
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
            escape_into(&mut line, req.method);
            line.push(' ');
            let _ = write!(Escaped(&mut line), "{}", req.target);
            let _ = write!(line, " {}\" {} {} \"", req.version, ctx.status, ctx.bytes);
            escape_into(&mut line, referer);
            line.push_str("\" \"");
            escape_into(&mut line, user_agent);
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
mod line_tests {
    use super::*;

    /// Regression (issue 26, item 9): a `"` in a client's header ended the field early, so a
    /// User-Agent could forge the rest of a combined-log line.
    #[test]
    fn combined_log_fields_are_escaped() {
        let mut line = String::new();
        escape_into(&mut line, "evil\" 200 \"x\\y\nz\u{e9}");
        assert_eq!(line, "evil\\x22 200 \\x22x\\x5Cy\\x0Az\\xC3\\xA9");
        assert!(!line.contains('"') && !line.contains('\n'));
    }

    /// The lean path and the session write the version the way the log always did.
    #[test]
    fn versions_are_named_as_their_debug_form() {
        use http::Version;
        for v in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(version_name(v), format!("{v:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A writer that blocks until released: a disk that does not keep up.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, released) = &*self.0;
            let mut free = lock.lock().unwrap();
            while !*free {
                free = released.wait(free).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_disk_drops_and_counts_lines_and_never_blocks_the_sender() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Metrics::default());
        let target = Target::Other(Box::new(Stuck(gate.clone(), out.clone())));
        let log = AccessFile::start(target, 4, metrics.clone());
        // The queue holds four lines; the writer takes them at its next tick and blocks in the
        // disk; the rest are dropped at once, without waiting.
        for i in 0..100 {
            log.send(format!("line {i}"));
        }
        let dropped = metrics.access_log_dropped();
        assert!((95..=96).contains(&dropped), "{dropped} dropped");
        // The disk recovers: what was queued is written.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        log.close();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 100 - dropped as usize, "{text}");
        assert!(text.starts_with("line 0\n"), "{text}");
    }
}
