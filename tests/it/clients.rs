//! Hostile clients: slowloris, idle connection floods, request smuggling, overlong requests,
//! path traversal.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{http, read_response, Origin, Proxy, EVENT_TIMEOUT};

/// A proxy whose request timeout is short enough to watch it act.
async fn proxy_with_request_timeout(origin: &Origin, cache: &std::path::Path) -> Proxy {
    let (port, admin) = (crate::support::free_port(), crate::support::free_port());
    let text =
        crate::support::config_text(port, admin, cache, &origin.base(), "poll_interval = \"1h\"")
            .replace("threads = 2\n", "threads = 2\nrequest_timeout = \"1s\"\n");
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(1).await;
    proxy
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    out
}

/// How many responses a raw byte stream holds.
fn responses(raw: &[u8]) -> usize {
    String::from_utf8_lossy(raw).matches("HTTP/1.1 ").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = proxy_with_request_timeout(&origin, cache.path()).await;

    // Trickles a header line every 100 ms, forever: each read is quick, the header never ends.
    let mut slow = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    slow.write_all(b"GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return i;
            }
            let mut b = [0u8; 64];
            // A read that ends (0 bytes or an error) means the server closed.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut b)).await
            {
                assert_eq!(n, 0, "no response to an unfinished header");
                return i;
            }
        }
        unreachable!()
    };
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let (lines, silent_got, normal) = tokio::join!(
        async {
            tokio::time::timeout(EVENT_TIMEOUT, trickle)
                .await
                .expect("cut off")
        },
        read_until_closed(&mut silent),
        proxy.get("/rrdp/notification.xml"),
    );
    assert!(lines > 0, "the slow client got going before it was cut off");
    assert!(silent_got.is_empty(), "no answer to a request never sent");
    assert_eq!(normal.status, 200, "others are served meanwhile");
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_idle_connections_neither_block_clients_nor_stay() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = proxy_with_request_timeout(&origin, cache.path()).await;

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    }
    let r = proxy.get("/rrdp/notification.xml").await;
    assert_eq!(r.status, 200);
    // Every idle connection is closed by the server.
    let closed = all_closed(&mut idle).await;
    assert_eq!(closed, 2000);
    assert_eq!(proxy.get("/rrdp/notification.xml").await.status, 200);
}

async fn all_closed(conns: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for c in conns.iter_mut() {
        if read_until_closed(c).await.is_empty() {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread")]
async fn request_smuggling_is_refused_and_the_connection_closed() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    let smuggled = "GET /rrdp/smuggled.xml HTTP/1.1\r\nHost: x\r\n\r\n";
    let attacks = [
        // CL.TE: the body as Content-Length counts it holds a whole second request.
        format!(
            "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
        // TE.CL.
        format!(
            "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
            smuggled.len()
        ),
        // A body on a GET, by Content-Length alone.
        format!(
            "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
    ];
    for attack in attacks {
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        s.write_all(attack.as_bytes()).await.unwrap();
        let raw = read_until_closed(&mut s).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 400"), "{attack:?} → {text}");
        assert_eq!(
            responses(&raw),
            1,
            "one answer, then the connection closes: {text}"
        );
    }
    assert_eq!(
        origin.requests_for("smuggled"),
        0,
        "the smuggled request never ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overlong_uris_and_headers_get_414_and_431() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    let long = format!("/rrdp/{}.xml", "a".repeat(10_000));
    assert_eq!(proxy.get(&long).await.status, 414);
    let big = "b".repeat(20_000);
    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[("X-Big", &big)],
    )
    .await;
    assert_eq!(r.status, 431);
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = http(proxy.port, "GET", "/rrdp/notification.xml", &many).await;
    assert_eq!(r.status, 431);
    assert_eq!(origin.requests_for(&"a".repeat(100)), 0);
    // Ordinary requests still work.
    assert_eq!(proxy.get("/rrdp/notification.xml").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_spelling_of_traversal_leaves_a_prefix_or_names_a_store_file() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let (n, _) = crate::support::fetch_consistent(proxy.port).await;
    let hex = n.snapshot.hash.to_hex();
    let object = format!("objects/{}/{hex}", &hex[..2]);

    let before = origin.with(|s| s.requests.len());
    for path in [
        "/rrdp/../api/v1/authorized".to_string(),
        "/rrdp/%2e%2e/api/v1/authorized".into(),
        "/rrdp/%2E%2E/%2E%2E/etc/passwd".into(),
        "/rrdp/.%2e/etc/passwd".into(),
        "/rrdp/..%2fetc%2fpasswd".into(),
        "/rrdp/%252e%252e/etc/passwd".into(),
        "/rrdp//etc/passwd".into(),
        "/rrdp/a\\..\\..\\etc\\passwd".into(),
        "/rrdp/%5c..%5cetc".into(),
        "/rrdp/a/../../etc/passwd".into(),
        "/rrdp/./notification.xml".into(),
        "/rrdp/notification.xml%00.txt".into(),
        format!("/rrdp/../{object}"),
        format!("/rrdp/%2e%2e/{object}"),
        format!("/{object}"),
    ] {
        let r = proxy.get(&path).await;
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: expected 404 or 400, got {}",
            r.status
        );
    }
    assert_eq!(
        origin.with(|s| s.requests.len()),
        before,
        "no such request reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    // Three requests in one write, as Net::Async::HTTP (Erik's reference client) sends them;
    // the last asks the server to close after it.
    let pipelined = "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\n\r\n\
                     GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n\
                     HEAD /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let raw = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&raw);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "200"], "{text}");
    let notification = proxy.get("/rrdp/notification.xml").await;
    assert!(text.contains(&String::from_utf8_lossy(&notification.body).to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_reads_long_headers_and_times_its_next_request() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = proxy_with_request_timeout(&origin, cache.path()).await;
    let expected = proxy.get("/rrdp/notification.xml").await.body;
    let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    let plain = "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\n\r\n";
    s.get_mut().write_all(plain.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, false).await.2, expected);

    // A header longer than the first read of a request between requests takes (4 KiB): the
    // session reads the rest.
    let long = format!(
        "GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(6000)
    );
    s.get_mut().write_all(long.as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s, false).await;
    assert_eq!(status, 200);
    assert_eq!(body, expected);

    // Idle for longer than the request timeout: no request is being read, so no clock runs
    // (one left running from the last request would close the connection here).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.get_mut().write_all(plain.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, false).await.2, expected);

    // The next request trickles: its clock starts at its first byte, and it is cut off.
    s.get_mut()
        .write_all(b"GET /rrdp/notification.xml HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickled = tokio::time::timeout(EVENT_TIMEOUT, async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.get_mut()
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return i;
            }
            let mut b = [0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
            {
                assert_eq!(n, 0, "no response to an unfinished header");
                return i;
            }
        }
        unreachable!()
    })
    .await
    .expect("the trickling request is cut off");
    assert!(trickled > 0, "the trickle got going before it was cut off");
}
