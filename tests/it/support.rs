//! Test support: a fake origin on a real loopback socket, the real proxy on its own thread, and
//! a minimal HTTP/1.1 client.
//!
//! The fake origin serves a generated RRDP repository (the demo's generator) and can be told
//! to lie (override the notification, corrupt or delete files) or die (stop listening).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rrdp_proxy::demo::Publisher;
use rrdp_proxy::Config;
use rrdp_proxy::RepoStatus;
use rrdp_proxy::Shared;
use rrdp_proxy::{Clock, ManualClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for waiting on an event; hitting it fails the test (it is not a sleep).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback port for a server under test to bind.
///
/// Taken below the kernel's ephemeral range (32768 and up), by a per-process counter: a port
/// from `bind(:0)` would be released and then could be handed out again to the next `bind(:0)`
/// (an origin, or a client's source port) before the server under test takes it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 1000) * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((base + n) % 20_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

//------------ Fake origin ---------------------------------------------------------------------

/// What the fake origin serves.
pub struct OriginState {
    pub repo: Publisher,
    /// Served instead of the repository's notification, if set.
    pub notification_override: Option<Bytes>,
    /// Extra paths (absolute request paths) → (status, content type, body).
    pub extra: HashMap<String, (u16, &'static str, Bytes)>,
    /// Every request path, in order.
    pub requests: Vec<String>,
    /// Send bodies in small pieces with pauses (a slow upstream), so that a client is likely
    /// to be mid-download at any moment.
    pub trickle: bool,
    /// Publish the next serial each time the current snapshot has been sent in full: churn
    /// as fast as the client keeps up, whatever the machine's load.
    pub advance_after_snapshot: bool,
    /// Hold snapshot bodies until this is notified (after sending the header).
    pub stall_snapshots: Option<Arc<tokio::sync::Notify>>,
    /// Broken transfers, by request path.
    pub faults: HashMap<String, Fault>,
    /// Connections open now (accepted, not yet closed by either side): a test awaits its
    /// return to a baseline.
    pub connections: Arc<tokio::sync::watch::Sender<usize>>,
}

/// How the fake origin breaks a transfer: each sends the header with the full Content-Length
/// and half of the body first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Then closes the connection (FIN): a truncated body.
    Truncate,
    /// Then resets the connection (RST).
    Reset,
    /// Then sends nothing more, holding the connection open until the client closes it: a
    /// stalled upstream.
    Stall,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<OriginState>>,
    task: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin on a free port; its RRDP base is `http://addr/rrdp/`.
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(OriginState {
            repo: Publisher::new(&format!("http://{addr}/rrdp/")),
            notification_override: None,
            extra: HashMap::new(),
            requests: Vec::new(),
            trickle: false,
            advance_after_snapshot: false,
            stall_snapshots: None,
            faults: HashMap::new(),
            connections: Arc::new(tokio::sync::watch::Sender::new(0)),
        }));
        let mut o = Origin {
            addr,
            state,
            task: None,
        };
        o.task = Some(tokio::spawn(serve(listener, o.state.clone())));
        o
    }

    pub fn base(&self) -> String {
        format!("http://{}/rrdp/", self.addr)
    }

    /// Stops listening and drops every open connection: connection refused from now on.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        self.stop();
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(serve(listener, self.state.clone())));
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut OriginState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn advance(&self) -> u64 {
        self.with(|s| {
            s.repo.advance();
            s.repo.serial()
        })
    }

    /// Returns once at most `n` connections are open (fails the test after [`EVENT_TIMEOUT`]).
    pub async fn until_connections_at_most(&self, n: usize) {
        let mut open = self.with(|s| s.connections.subscribe());
        let waited = tokio::time::timeout(EVENT_TIMEOUT, async {
            let _ = open.wait_for(|open| *open <= n).await;
        })
        .await;
        assert!(
            waited.is_ok(),
            "the origin still has {} connections open, expected at most {n}",
            *open.borrow()
        );
    }

    /// How many requests paths containing `needle` received.
    pub fn requests_for(&self, needle: &str) -> usize {
        self.with(|s| s.requests.iter().filter(|p| p.contains(needle)).count())
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<OriginState>>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        conns.spawn(handle(stream, state.clone()));
    }
}

/// Counts a connection open for as long as it lives.
struct Open(Arc<tokio::sync::watch::Sender<usize>>);

impl Open {
    fn new(state: &Mutex<OriginState>) -> Open {
        let tx = state.lock().unwrap().connections.clone();
        tx.send_modify(|n| *n += 1);
        Open(tx)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// One request per connection, answered with `Connection: close`.
async fn handle(mut stream: TcpStream, state: Arc<Mutex<OriginState>>) {
    let _open = Open::new(&state);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (status, ctype, cache, body, trickle, stall, fault) = {
        let mut s = state.lock().unwrap();
        let fault = s.faults.get(&path).copied();
        let trickle = s.trickle;
        let stall = s
            .stall_snapshots
            .clone()
            .filter(|_| path.ends_with("snapshot.xml"));
        s.requests.push(path.clone());
        if method != "GET" {
            (
                405,
                "text/plain",
                None,
                Bytes::from_static(b"no\n"),
                trickle,
                None,
                fault,
            )
        } else if let Some((st, ct, b)) = s.extra.get(&path) {
            (*st, *ct, None, b.clone(), trickle, None, fault)
        } else if path == "/rrdp/notification.xml" {
            let body = s
                .notification_override
                .clone()
                .unwrap_or_else(|| s.repo.notification());
            (
                200,
                "application/xml",
                Some("max-age=60"),
                body,
                trickle,
                None,
                fault,
            )
        } else if let Some(body) = path.strip_prefix("/rrdp/").and_then(|r| s.repo.file(r)) {
            (
                200,
                "application/xml",
                Some("max-age=86400"),
                body,
                trickle,
                stall,
                fault,
            )
        } else {
            (
                404,
                "text/plain",
                None,
                Bytes::from_static(b"not found\n"),
                trickle,
                None,
                fault,
            )
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(cc) = cache {
        out.push_str(&format!("Cache-Control: {cc}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes()).await;
    if let Some(stall) = stall {
        stall.notified().await;
    }
    if let Some(fault) = fault {
        let _ = stream.write_all(&body[..body.len() / 2]).await;
        let _ = stream.flush().await;
        match fault {
            Fault::Truncate => {
                let _ = stream.shutdown().await;
            }
            Fault::Reset => {
                // A zero linger makes the close a reset; with zero it never blocks (the
                // reason for the deprecation).
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
            }
            // Until the client gives up: it closes, or resets.
            Fault::Stall => while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {},
        }
        return;
    }
    if trickle {
        for piece in body.chunks(2048) {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    } else if stream.write_all(&body).await.is_err() {
        return;
    }
    if status == 200 && path.ends_with("snapshot.xml") {
        let mut s = state.lock().unwrap();
        if s.advance_after_snapshot
            && s.repo
                .snapshot_path()
                .ends_with(path.trim_start_matches("/rrdp/"))
        {
            s.repo.advance();
        }
    }
    let _ = stream.shutdown().await;
}

//------------ The proxy under test ------------------------------------------------------------

struct Shutdown(Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait::async_trait]
impl pingora::server::ShutdownSignalWatch for Shutdown {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        let rx = self.0.lock().unwrap().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        pingora::server::ShutdownSignal::FastShutdown
    }
}

pub struct Proxy {
    pub port: u16,
    pub admin_port: u16,
    pub shared: Arc<Shared>,
    pub config_text: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A config for one repository in front of `origin_base`, with `extra` TOML appended to the
/// repository table (and further tables after it).
pub fn config_text(
    port: u16,
    admin_port: u16,
    cache: &std::path::Path,
    origin_base: &str,
    repo_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin_port}"
threads = 2
[cache]
dir = "{}"
memory_limit = "16MiB"
retain = "2h"
[[repository]]
public = "http://127.0.0.1:{port}/rrdp/"
upstream = "{origin_base}"
{repo_extra}
"#,
        cache.display()
    )
}

/// [`config_text`] with a 64 KiB memory tier, which keeps nothing over 8 KiB: a larger file
/// (a snapshot) is sent from its stored file.
pub fn config_with_small_memory_tier(
    port: u16,
    admin_port: u16,
    cache: &std::path::Path,
    origin_base: &str,
) -> String {
    let text = config_text(port, admin_port, cache, origin_base, "")
        .replace("memory_limit = \"16MiB\"", "memory_limit = \"64KiB\"");
    assert!(text.contains("memory_limit = \"64KiB\""));
    text
}

impl Proxy {
    /// Starts the real server on fresh ports in front of `origin_base`. By default it polls
    /// once at start and then only when told to ([`Proxy::poll`]), so tests are deterministic.
    pub fn start(cache: &std::path::Path, origin_base: &str, repo_extra: &str) -> Proxy {
        let extra = if repo_extra.contains("poll_interval") {
            repo_extra.to_string()
        } else {
            format!("poll_interval = \"1h\"\n{repo_extra}")
        };
        let (port, admin_port) = (free_port(), free_port());
        Proxy::start_with(
            config_text(port, admin_port, cache, origin_base, &extra),
            port,
            admin_port,
        )
    }

    pub fn start_with(text: String, port: u16, admin_port: u16) -> Proxy {
        Proxy::start_with_clock(text, port, admin_port, Clock::System)
    }

    /// [`Proxy::start`] with `publish_delay` and `notify_delay` on a manual clock, which the
    /// test moves instead of waiting the delay out.
    pub fn start_manual(
        cache: &std::path::Path,
        origin_base: &str,
        repo_extra: &str,
    ) -> (Proxy, Arc<ManualClock>) {
        let extra = format!("poll_interval = \"1h\"\n{repo_extra}");
        let (port, admin_port) = (free_port(), free_port());
        let text = config_text(port, admin_port, cache, origin_base, &extra);
        let manual = ManualClock::new();
        let proxy = Proxy::start_with_clock(text, port, admin_port, Clock::Manual(manual.clone()));
        (proxy, manual)
    }

    pub fn start_with_clock(text: String, port: u16, admin_port: u16, clock: Clock) -> Proxy {
        let config = Config::parse(&text, std::path::Path::new("/")).expect("valid test config");
        let (server, shared) =
            rrdp_proxy::build_server_with_clock(config, clock).expect("server builds");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            server.run(pingora::server::RunArgs {
                shutdown_signal: Box::new(Shutdown(Mutex::new(Some(rx)))),
            });
        });
        // pingora binds its listeners on its own threads and tells no one: wait until they
        // accept, so no test request races the bind.
        for p in [port, admin_port] {
            let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "port {p} never listened"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Proxy {
            port,
            admin_port,
            shared,
            config_text: text,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the server and waits for it to exit. The cache's lock goes as with the
    /// process's exit (the test keeps the shared state to look at).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.store.release();
    }

    pub fn status(&self) -> RepoStatus {
        self.shared.repos[0].status()
    }

    /// Waits until the repository's status satisfies `f`.
    pub async fn wait(&self, what: &str, f: impl Fn(&RepoStatus) -> bool) -> RepoStatus {
        let mut rx = self.shared.repos[0].watch_status();
        let found = tokio::time::timeout(EVENT_TIMEOUT, async {
            rx.wait_for(|s| f(s)).await.map(|s| s.clone())
        })
        .await;
        match found {
            Ok(Ok(s)) => s,
            _ => panic!("timed out waiting for {what}; status: {:?}", self.status()),
        }
    }

    /// Waits for the published serial.
    pub async fn wait_serial(&self, serial: u64) {
        self.wait(&format!("serial {serial}"), |s| s.serial == Some(serial))
            .await;
    }

    /// Waits for the first poll round to finish.
    pub async fn wait_first_poll(&self) -> RepoStatus {
        self.wait("the first poll", |s| s.polls_ok + s.polls_failed >= 1)
            .await
    }

    /// Runs one poll round now and waits for it to finish.
    pub async fn poll(&self) -> RepoStatus {
        self.wait_first_poll().await;
        // A round may be under way (one that just published, say): let it end first, so the
        // round waited for below is the one asked for here.
        let before = self
            .wait("no round under way", |s| {
                s.polls_ok + s.polls_failed == s.rounds_started
            })
            .await;
        let n = before.polls_ok + before.polls_failed;
        self.shared.repos[0].poll_now();
        self.wait("a poll round", |s| s.polls_ok + s.polls_failed > n)
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, &[]).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts connections on the loopback port. pingora binds its
/// listeners on its own threads and tells no one, so this is the only event there is.
pub fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

//------------ Client --------------------------------------------------------------------------

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub async fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut raw))
        .await
        .expect("response within the event timeout")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete header");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Reads one response off a kept-alive connection: status, headers, and as many body bytes as
/// Content-Length says (none for HEAD and 304). Fails the test if the server closes the
/// connection or takes longer than [`EVENT_TIMEOUT`].
pub async fn read_response(
    r: &mut tokio::io::BufReader<TcpStream>,
    head: bool,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        let status_line = read_line(r).await;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("a status line: {status_line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let line = read_line(r).await;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        let mut body = vec![0u8; if head || status == 304 { 0 } else { len }];
        r.read_exact(&mut body).await.unwrap();
        (status, headers, body)
    })
    .await
    .expect("a response within the event timeout")
}

/// One line of a response's head; the connection closing before it fails the test.
async fn read_line(r: &mut tokio::io::BufReader<TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let n = r.read_line(&mut line).await.unwrap();
    assert!(n > 0, "the server closed the connection mid-response");
    line
}

/// The path part of an absolute URI.
pub fn path_of(uri: &str) -> String {
    let rest = uri.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_string()
}

//------------ Publisher checks ---------------------------------------------------------------

/// The served notification and the (path, hash) of every file it references; `None` while the
/// proxy answers 503 (nothing published).
pub async fn referenced(
    port: u16,
) -> Option<(
    rrdp_proxy::rrdp::Notification,
    Vec<(String, rrdp_proxy::rrdp::Hash)>,
)> {
    let r = http(port, "GET", "/rrdp/notification.xml", &[]).await;
    if r.status == 503 {
        return None;
    }
    assert_eq!(r.status, 200, "{r:?}");
    let n = rrdp_proxy::rrdp::Notification::parse(&r.body).unwrap();
    let mut files = vec![(path_of(&n.snapshot.uri), n.snapshot.hash)];
    files.extend(n.deltas.iter().map(|d| (path_of(&d.file.uri), d.file.hash)));
    Some((n, files))
}

/// Fetches the notification and every file it references, checking each is 200 with its
/// hash; returns the notification and all bodies (notification first).
pub async fn fetch_consistent(
    port: u16,
) -> (rrdp_proxy::rrdp::Notification, Vec<(String, Vec<u8>)>) {
    let (n, files) = referenced(port).await.expect("a published notification");
    let mut bodies = vec![(
        "/rrdp/notification.xml".to_string(),
        http(port, "GET", "/rrdp/notification.xml", &[]).await.body,
    )];
    for (path, hash) in files {
        let r = http(port, "GET", &path, &[]).await;
        assert_eq!(r.status, 200, "{path} referenced by serial {}", n.serial);
        assert_eq!(rrdp_proxy::rrdp::Hash::of(&r.body), hash, "{path}");
        bodies.push((path, r.body));
    }
    (n, bodies)
}

/// Where the store keeps an object.
pub fn object_path(cache: &std::path::Path, h: &rrdp_proxy::rrdp::Hash) -> std::path::PathBuf {
    cache
        .join("objects")
        .join(&h.to_hex()[..2])
        .join(h.to_hex())
}

/// Flips one byte of a stored object (same size, wrong hash); returns the damaged bytes.
pub fn damage(cache: &std::path::Path, h: &rrdp_proxy::rrdp::Hash) -> Vec<u8> {
    let p = object_path(cache, h);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&p, &bytes).unwrap();
    bytes
}
