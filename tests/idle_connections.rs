//! Memory an idle keep-alive connection holds (issue 31, the idle-connection row), measured by
//! a counting allocator: its own test binary with one test, so nothing else allocates while it
//! counts.
//!
//! Waiting for its next request inside pingora's HTTP/1 loop, a connection held about 22 KiB
//! of heap: pingora's task for it (sized by the TLS handshake's state), the boxed futures of
//! pingora's loop and of the app's request handler, and the 4 KiB header buffer pingora
//! allocates before the first byte arrives. The connection loop (`serve/connection.rs`) waits
//! with nothing but the stream and a small task of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use support::{read_response, Origin, Proxy};

struct Counting;

/// Bytes allocated and not yet freed, by every thread of this process (the proxy's included).
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Connections held idle at once.
const CONNECTIONS: usize = 400;

/// The bound per idle connection, the test's own side of it included (a tokio stream, its
/// registration and [`CLIENT_BUFFER`]). Waiting inside pingora's loop it was about 22 KiB.
const MAX_PER_CONNECTION: isize = 6 << 10;

/// The test's read buffer per connection: small, as it is counted with the proxy's memory.
const CLIENT_BUFFER: usize = 256;

/// Sends one keep-alive request for `path` on `s` and reads the whole response; returns its
/// status.
async fn request(s: &mut BufReader<TcpStream>, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.get_mut().write_all(req.as_bytes()).await.unwrap();
    read_response(s, false).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_alive_connection_holds_a_few_kib() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "poll_interval = \"1h\"");
    proxy.wait_serial(1).await;
    // The gzip variants are made in the background after publishing: done before counting.
    proxy
        .wait("gzip variants", |s| s.compressed_serial == Some(1))
        .await;
    let path = "/rrdp/notification.xml";
    // Whatever the first requests make once (the memory tier's copy, metrics' labels).
    let mut warm = BufReader::with_capacity(
        CLIENT_BUFFER,
        TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap(),
    );
    for _ in 0..3 {
        assert_eq!(request(&mut warm, path).await, 200);
    }
    let mut conns = Vec::with_capacity(CONNECTIONS);
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..CONNECTIONS {
        let mut s = BufReader::with_capacity(
            CLIENT_BUFFER,
            TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap(),
        );
        assert_eq!(request(&mut s, path).await, 200);
        conns.push(s);
    }
    let per_connection = (LIVE.load(Ordering::Relaxed) - before) / CONNECTIONS as isize;
    // Still open and still served: a closed connection would hold nothing.
    for s in &mut conns {
        assert_eq!(request(s, path).await, 200);
    }
    assert!(
        per_connection <= MAX_PER_CONNECTION,
        "an idle keep-alive connection holds {per_connection} bytes of heap, over {MAX_PER_CONNECTION}"
    );
    eprintln!("heap per idle keep-alive connection: {per_connection} bytes");
}
