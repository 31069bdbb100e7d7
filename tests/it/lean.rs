//! The lean path (src/serve/lean.rs): the requests it answers get, byte for byte, what
//! pingora's session sends for them; a request split across its reads goes to the session.

use rrdp_proxy::rrdp::Notification;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{
    config_text, free_port, http, path_of, read_response, Origin, Proxy, EVENT_TIMEOUT,
};

/// The whole response to `request` on a connection of its own (which it asks to close).
async fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut raw))
        .await
        .expect("the response within the event timeout")
        .unwrap();
    // Bodies are compared as bytes; gzip ones are not text.
    raw.escape_ascii().to_string()
}

/// `raw` without its `Date` line, the one part of a response that may differ between two
/// requests (a second apart).
fn without_date(raw: &str) -> String {
    raw.split("\\r\\n")
        .filter(|line| !line.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\\r\\n")
}

async fn lean_responses(proxy: &Proxy) -> u64 {
    let metrics = http(proxy.admin_port, "GET", "/metrics", &[]).await.text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("rrdp_proxy_lean_responses_total "))
        .expect("the lean path's counter")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lean_path_answers_as_pingoras_session_does_byte_for_byte() {
    let origin = Origin::start().await;
    origin.state.lock().unwrap().repo =
        rrdp_proxy::demo::Publisher::large(&origin.base(), 1 << 20, 2);
    // A 64 KiB memory tier keeps nothing over 8 KiB: the snapshot is sent from its file (with
    // `sendfile`), the deltas and the notification from memory.
    let cache = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let text = config_text(port, admin, cache.path(), &origin.base(), "")
        .replace("memory_limit = \"16MiB\"", "memory_limit = \"64KiB\"");
    assert!(text.contains("memory_limit = \"64KiB\""));
    let proxy = Proxy::start_with(text, port, admin);
    let serial = proxy.wait_first_poll().await.serial;
    assert_eq!(serial, Some(3), "a snapshot and two deltas");
    // The gzip variants are made in the background: both paths must find them made.
    proxy
        .wait("gzip variants", |s| s.compressed_serial == serial)
        .await;
    let n = proxy.get("/rrdp/notification.xml").await;
    let (etag, lm) = (
        n.header("ETag").unwrap(),
        n.header("Last-Modified").unwrap(),
    );
    let parsed = Notification::parse(&n.body).unwrap();
    assert!(!parsed.deltas.is_empty(), "the repository has deltas");
    let snap = path_of(&parsed.snapshot.uri);
    let delta = path_of(&parsed.deltas[0].file.uri);
    let snap_etag = http(port, "HEAD", &snap, &[]).await;
    let snap_etag = snap_etag.header("ETag").unwrap();

    let notification = "/rrdp/notification.xml";
    let gzip = "Accept-Encoding: gzip, deflate\r\n";
    let inm = format!("If-None-Match: {etag}\r\n");
    let ims = format!("If-Modified-Since: {lm}\r\n");
    let snap_inm = format!("If-None-Match: {snap_etag}\r\n");
    let ua = "User-Agent: rpki-client/9.8\r\n";
    let cases: Vec<(&str, &str, &str)> = vec![
        ("GET", notification, ""),
        ("GET", notification, gzip),
        ("GET", notification, &inm),
        ("GET", notification, &ims),
        ("HEAD", notification, ua),
        ("HEAD", notification, gzip),
        ("GET", &snap, ""),
        ("GET", &snap, gzip),
        ("HEAD", &snap, ""),
        ("GET", &snap, &snap_inm),
        ("GET", &delta, ""),
        ("GET", &delta, gzip),
        ("HEAD", &delta, ua),
    ];
    let before = lean_responses(&proxy).await;
    for (method, path, headers) in &cases {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n");
        let lean = exchange(port, &format!("{request}\r\n")).await;
        // An empty body's `Content-Length: 0` is a header the lean path declines: the same
        // request, answered by pingora's session.
        let session = exchange(port, &format!("{request}Content-Length: 0\r\n\r\n")).await;
        assert!(lean.starts_with("HTTP/1.1 "), "{lean}");
        assert_eq!(
            without_date(&lean),
            without_date(&session),
            "{method} {path} {headers}"
        );
    }
    assert_eq!(
        lean_responses(&proxy).await - before,
        cases.len() as u64,
        "the lean path answered each request once, the session each copy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_begun_behind_an_answered_one_is_read_whole_by_the_session() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let expected = proxy.get("/rrdp/notification.xml").await.body;
    let before = lean_responses(&proxy).await;

    let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    // One request and the first bytes of the next in one write: the lean path answers the
    // first and keeps the start of the second, which is not whole.
    let first = "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\n\r\nGET /rrdp/noti";
    s.get_mut().write_all(first.as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s, false).await;
    assert_eq!((status, &body), (200, &expected));
    // The rest, after the first answer: pingora's session takes the kept bytes and reads on.
    let rest = "fication.xml HTTP/1.1\r\nHost: x\r\n\r\n";
    s.get_mut().write_all(rest.as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s, false).await;
    assert_eq!((status, &body), (200, &expected));
    assert_eq!(
        lean_responses(&proxy).await - before,
        1,
        "the first by the lean path, the second by the session"
    );
}
