//! The lean path (src/serve/lean.rs): the requests it answers get, byte for byte, what
//! pingora's session sends for them; a request split across its reads goes to the session.

use rrdp_proxy::rrdp::Notification;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{
    config_with_small_memory_tier, free_port, http, path_of, read_response, Origin, Proxy,
    EVENT_TIMEOUT,
};

/// One response, read whole from a kept-alive connection: its bytes, escaped (gzip bodies
/// are not text). `head`: the request was a HEAD (a body's length, none of its bytes).
async fn one_response(conn: &mut BufReader<TcpStream>, head: bool) -> String {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n\r\n") {
            let n = conn.read_until(b'\n', &mut raw).await.unwrap();
            assert!(n > 0, "closed within a head: {}", raw.escape_ascii());
        }
        let text = String::from_utf8_lossy(&raw).to_string();
        let len = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        let status_304 = text.starts_with("HTTP/1.1 304");
        if !head && !status_304 {
            let mut body = vec![0; len];
            conn.read_exact(&mut body).await.unwrap();
            raw.extend_from_slice(&body);
        }
        raw.escape_ascii().to_string()
    })
    .await
    .expect("a response within the event timeout")
}

/// `raw` without its `Date` line, the one part of a response that may differ between two
/// requests (a second apart).
fn without_date(raw: &str) -> String {
    raw.split("\\r\\n")
        .filter(|line| !line.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\\r\\n")
}

async fn connect(port: u16) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
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
    // A 64 KiB memory tier keeps nothing over 8 KiB: the snapshot is sent from its stored
    // file and the notification from its in-memory file (both with `sendfile`), the deltas
    // from memory.
    let cache = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let text = config_with_small_memory_tier(port, admin, cache.path(), &origin.base());
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
    // On one kept-alive connection, each request and then the same request answered by the
    // session: an empty body's `Content-Length: 0` is a header the lean path declines.
    let mut conn = connect(port).await;
    let mut answers = Vec::new();
    for (method, path, headers) in &cases {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}");
        let head = *method == "HEAD";
        conn.get_mut()
            .write_all(format!("{request}\r\n").as_bytes())
            .await
            .unwrap();
        let lean = one_response(&mut conn, head).await;
        conn.get_mut()
            .write_all(format!("{request}Content-Length: 0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let session = one_response(&mut conn, head).await;
        assert!(lean.contains("Connection: keep-alive"), "{lean}");
        assert_eq!(
            without_date(&lean),
            without_date(&session),
            "{method} {path} {headers}"
        );
        answers.push((request, head, without_date(&lean)));
    }
    // All of them at once (pipelined), the last asking to close: the same answers, in order,
    // and the connection closed after the last.
    let mut conn = connect(port).await;
    let all: String = answers
        .iter()
        .enumerate()
        .map(|(i, (request, ..))| match i + 1 == answers.len() {
            true => format!("{request}Connection: close\r\n\r\n"),
            false => format!("{request}\r\n"),
        })
        .collect();
    conn.get_mut().write_all(all.as_bytes()).await.unwrap();
    for (i, (request, head, answer)) in answers.iter().enumerate() {
        let got = without_date(&one_response(&mut conn, *head).await);
        if i + 1 == answers.len() {
            assert_eq!(got, answer.replace("keep-alive", "close"), "{request}");
        } else {
            assert_eq!(&got, answer, "{request}");
        }
    }
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after the last answer");
    assert_eq!(
        lean_responses(&proxy).await - before,
        2 * cases.len() as u64,
        "the lean path answered each request, the session each copy"
    );
}

/// A request the session refuses is never answered by the lean path: an ambiguous authority
/// (two Host fields, or userinfo in one) gets the session's 400 and a closed connection.
#[tokio::test(flavor = "multi_thread")]
async fn requests_the_session_refuses_are_refused_whatever_path_they_would_take() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let before = lean_responses(&proxy).await;
    for host in ["Host: a\r\nHost: b\r\n", "Host: user@a\r\n"] {
        let mut conn = connect(proxy.port).await;
        let request = format!("GET /rrdp/notification.xml HTTP/1.1\r\n{host}\r\n");
        conn.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(EVENT_TIMEOUT, conn.read_to_end(&mut raw))
            .await
            .expect("the answer and the close")
            .unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 400 "), "{}", raw.escape_ascii());
    }
    assert_eq!(lean_responses(&proxy).await, before);
}

/// Before the first poll the notification is a 503 with Retry-After, from either path.
#[tokio::test(flavor = "multi_thread")]
async fn the_notification_before_any_poll_is_the_same_503_from_either_path() {
    // An upstream nobody listens on: the notification has no state to give.
    let dead = format!("http://127.0.0.1:{}/rrdp/", free_port());
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &dead, "");
    let mut conn = connect(proxy.port).await;
    let request = "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\n";
    conn.get_mut()
        .write_all(format!("{request}\r\n{request}Content-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let lean = without_date(&one_response(&mut conn, false).await);
    let session = without_date(&one_response(&mut conn, false).await);
    assert_eq!(
        lean_responses(&proxy).await,
        1,
        "the first by the lean path"
    );
    assert!(lean.starts_with("HTTP/1.1 503 "), "{lean}");
    assert!(lean.contains("Retry-After: "), "{lean}");
    assert_eq!(lean, session);
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
