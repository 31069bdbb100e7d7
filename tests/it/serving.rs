//! What clients see: headers, validators, 304, HEAD, 405, 404 and 503.

use rrdp_proxy::rrdp::{Hash, Notification};
use rrdp_proxy::RequestKind;

use crate::support::{
    config_text, config_with_small_memory_tier, free_port, http, path_of, read_response, Origin,
    Proxy,
};

#[tokio::test(flavor = "multi_thread")]
async fn notification_and_files_carry_validators_and_answer_304_and_head() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    let n = proxy.get("/rrdp/notification.xml").await;
    assert_eq!(n.status, 200);
    assert_eq!(n.header("Cache-Control"), Some("max-age=60"));
    assert_eq!(
        n.header("Content-Length"),
        Some(n.body.len().to_string().as_str())
    );
    let etag = n.header("ETag").expect("an ETag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    let lm = n
        .header("Last-Modified")
        .expect("a Last-Modified")
        .to_string();
    let parsed = Notification::parse(&n.body).unwrap();
    // URIs are rewritten to the public base.
    let public = format!("http://127.0.0.1:{}/rrdp/", proxy.port);
    assert!(
        parsed.snapshot.uri.starts_with(&public),
        "{}",
        parsed.snapshot.uri
    );

    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("ETag"), Some(etag.as_str()));
    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[("If-Modified-Since", &lm)],
    )
    .await;
    assert_eq!(r.status, 304);
    let earlier = httpdate::fmt_http_date(
        httpdate::parse_http_date(&lm).unwrap() - std::time::Duration::from_secs(1),
    );
    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[("If-Modified-Since", &earlier)],
    )
    .await;
    assert_eq!(r.status, 200);

    // HEAD works although the origin answers HEAD with 405, as Krill does.
    let r = http(proxy.port, "HEAD", "/rrdp/notification.xml", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some(n.body.len().to_string().as_str())
    );
    assert!(r.body.is_empty());

    let snap = path_of(&parsed.snapshot.uri);
    let s = proxy.get(&snap).await;
    assert_eq!(s.status, 200);
    assert_eq!(Hash::of(&s.body), parsed.snapshot.hash);
    let file_etag = format!("\"{}\"", parsed.snapshot.hash);
    assert_eq!(s.header("ETag"), Some(file_etag.as_str()));
    assert_eq!(
        s.header("Cache-Control"),
        Some("public, max-age=86400, immutable")
    );
    let r = http(proxy.port, "GET", &snap, &[("If-None-Match", &file_etag)]).await;
    assert_eq!(r.status, 304);
    let r = http(proxy.port, "HEAD", &snap, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some(s.body.len().to_string().as_str())
    );
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_get_and_head_and_nothing_outside_the_prefixes() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    for method in ["POST", "PUT", "DELETE"] {
        let r = http(proxy.port, method, "/rrdp/notification.xml", &[]).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    }
    let before = origin.with(|s| s.requests.len());
    for path in [
        "/api/v1/authorized",
        "/",
        "/index.html",
        "/rrdp",
        "/rrdp/../api/v1/authorized",
        "/rrdp/%2e%2e/api/v1/authorized",
        "/rrdp//etc/passwd",
        "/rrdp/a\\..\\b",
        "/rrdp/./notification.xml",
    ] {
        let r = proxy.get(path).await;
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: expected 404, got {}",
            r.status
        );
        assert_ne!(r.status, 200);
    }
    assert_eq!(
        origin.with(|s| s.requests.len()),
        before,
        "no request outside a prefix reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn before_anything_is_fetched_the_notification_is_503_with_retry_after() {
    let mut origin = Origin::start().await;
    origin.stop();
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    let st = proxy.wait_first_poll().await;
    assert_eq!(st.polls_failed, 1);
    let r = proxy.get("/rrdp/notification.xml").await;
    assert_eq!(r.status, 503);
    assert!(r.header("Retry-After").is_some());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let health = http(proxy.admin_port, "GET", "/healthz", &[]).await;
    assert_eq!(health.status, 503, "{}", health.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_files_under_a_prefix_are_forwarded_and_404s_are_never_cached() {
    let origin = Origin::start().await;
    origin.with(|s| {
        s.extra.insert(
            "/rrdp/other/file.xml".into(),
            (200, "application/xml", bytes::Bytes::from_static(b"<x/>")),
        )
    });
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    let r = proxy.get("/rrdp/other/file.xml").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"<x/>".as_slice()));
    // A body that is no XML document, or an HTML page, is an upstream error, not a file.
    origin.with(|s| {
        s.extra.insert(
            "/rrdp/other/error.xml".into(),
            (
                200,
                "application/json",
                bytes::Bytes::from_static(b"{\"error\": \"busy\"}"),
            ),
        );
        s.extra.insert(
            "/rrdp/other/portal.xml".into(),
            (
                200,
                "text/html",
                bytes::Bytes::from_static(b"<html>log in</html>"),
            ),
        );
        s.extra.insert(
            "/rrdp/other/empty.xml".into(),
            (204, "application/xml", bytes::Bytes::new()),
        );
    });
    for path in [
        "/rrdp/other/error.xml",
        "/rrdp/other/portal.xml",
        "/rrdp/other/empty.xml",
    ] {
        let r = proxy.get(path).await;
        assert_eq!(r.status, 502, "{path}");
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
    }
    for _ in 0..2 {
        let r = proxy.get("/rrdp/gone/delta.xml").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
    }
    assert_eq!(
        origin.requests_for("/rrdp/gone/delta.xml"),
        2,
        "a 404 is asked again"
    );
    assert_eq!(
        proxy
            .shared
            .metrics
            .requests_with_status(&[RequestKind::File], 404),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn last_modified_increases_and_a_client_clock_never_hides_a_new_serial() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let first = proxy.get("/rrdp/notification.xml").await;
    let lm1 = httpdate::parse_http_date(first.header("Last-Modified").unwrap()).unwrap();
    // Fort sends its own download time as If-Modified-Since.
    let client_clock = httpdate::fmt_http_date(std::time::SystemTime::now());

    origin.advance();
    proxy.poll().await;
    assert_eq!(proxy.status().serial, Some(2));
    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[("If-Modified-Since", &client_clock)],
    )
    .await;
    assert_eq!(r.status, 200, "a newer serial must not be answered 304");
    assert_eq!(Notification::parse(&r.body).unwrap().serial, 2);
    let lm2 = httpdate::parse_http_date(r.header("Last-Modified").unwrap()).unwrap();
    assert!(lm2 > lm1, "Last-Modified strictly increases");
    assert_ne!(r.header("ETag"), first.header("ETag"));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_refresh_polls_now() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    origin.advance();
    let r = http(proxy.admin_port, "POST", "/refresh", &[]).await;
    assert_eq!(r.status, 202);
    proxy.wait_serial(2).await;
    let status = http(proxy.admin_port, "GET", "/status", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(v["repositories"][0]["serial"], 2);
    // Where a published round's time went: its phases, which are parts of the round.
    let r = &v["repositories"][0];
    let phases = &r["last_round_seconds"];
    let names = [
        "notification",
        "snapshot",
        "count_objects",
        "deltas",
        "validate_before",
        "publish",
    ];
    let sum: f64 = names
        .iter()
        .map(|n| {
            phases[n]
                .as_f64()
                .unwrap_or_else(|| panic!("{n} in {phases}"))
        })
        .sum();
    assert!(sum <= r["last_publish_seconds"].as_f64().unwrap(), "{r}");
    let health = http(proxy.admin_port, "GET", "/healthz", &[]).await;
    assert_eq!(health.status, 200);
    // The admin endpoints are not on the public listener.
    assert_eq!(proxy.get("/status").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_repositories_are_served_side_by_side() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    b.advance();
    let cache = tempfile::tempdir().unwrap();
    let (port, admin) = (crate::support::free_port(), crate::support::free_port());
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin}"
[cache]
dir = "{}"
[[repository]]
public = "http://127.0.0.1:{port}/a/"
upstream = "{}"
poll_interval = "1h"
[[repository]]
public = "http://127.0.0.1:{port}/b/"
upstream = "{}"
poll_interval = "1h"
"#,
        cache.path().display(),
        a.base(),
        b.base()
    );
    let proxy = Proxy::start_with(text, port, admin);
    for (i, serial) in [(0, 1), (1, 2)] {
        let mut rx = proxy.shared.repos[i].watch_status();
        tokio::time::timeout(
            crate::support::EVENT_TIMEOUT,
            rx.wait_for(|s| s.serial == Some(serial)),
        )
        .await
        .expect("published")
        .unwrap();
    }
    for (prefix, origin) in [("/a/", &a), ("/b/", &b)] {
        let r = proxy.get(&format!("{prefix}notification.xml")).await;
        let n = Notification::parse(&r.body).unwrap();
        assert_eq!(
            n.session_id,
            origin.with(|s| s.repo.session_id().to_string())
        );
        assert!(path_of(&n.snapshot.uri).starts_with(prefix));
        let s = proxy.get(&path_of(&n.snapshot.uri)).await;
        assert_eq!(Hash::of(&s.body), n.snapshot.hash);
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("a valid gzip body");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_for_clients_that_accept_it_and_ranges_on_the_identity_body() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    // Variants are made in the background after a round publishes.
    proxy
        .wait("gzip variants of serial 1", |s| {
            s.compressed_serial == Some(1)
        })
        .await;
    let gz = [("Accept-Encoding", "gzip, deflate")];

    let plain = proxy.get("/rrdp/notification.xml").await;
    let n = http(proxy.port, "GET", "/rrdp/notification.xml", &gz).await;
    assert_eq!(n.header("Content-Encoding"), Some("gzip"));
    assert_eq!(n.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(gunzip(&n.body), plain.body);
    let gz_etag = n.header("ETag").unwrap().to_string();
    assert_ne!(
        Some(gz_etag.as_str()),
        plain.header("ETag"),
        "ETags differ per encoding"
    );
    let r = http(
        proxy.port,
        "GET",
        "/rrdp/notification.xml",
        &[gz[0], ("If-None-Match", &gz_etag)],
    )
    .await;
    assert_eq!(r.status, 304);

    let parsed = Notification::parse(&plain.body).unwrap();
    let snap = path_of(&parsed.snapshot.uri);
    let s = http(proxy.port, "GET", &snap, &gz).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("Content-Encoding"), Some("gzip"));
    assert_eq!(
        s.header("Content-Length"),
        Some(s.body.len().to_string().as_str())
    );
    assert_eq!(
        Hash::of(&gunzip(&s.body)),
        parsed.snapshot.hash,
        "hash over the decoded body"
    );
    let head = http(proxy.port, "HEAD", &snap, &gz).await;
    assert_eq!(head.header("Content-Length"), s.header("Content-Length"));
    let r = http(proxy.port, "GET", &snap, &[("Accept-Encoding", "gzip;q=0")]).await;
    assert_eq!(r.header("Content-Encoding"), None);
    let identity = r.body;
    assert_eq!(Hash::of(&identity), parsed.snapshot.hash);
    let len = identity.len();

    // Ranges are served from the identity body, whatever the client accepts.
    let r = http(proxy.port, "GET", &snap, &[gz[0], ("Range", "bytes=0-99")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Encoding"), None);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 0-99/{len}").as_str())
    );
    assert_eq!(r.body, identity[..100]);
    let r = http(proxy.port, "GET", &snap, &[("Range", "bytes=-10")]).await;
    assert_eq!((r.status, r.body.as_slice()), (206, &identity[len - 10..]));
    let r = http(
        proxy.port,
        "GET",
        &snap,
        &[("Range", &format!("bytes={len}-"))],
    )
    .await;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{len}").as_str())
    );
    let etag = format!("\"{}\"", parsed.snapshot.hash);
    let r = http(
        proxy.port,
        "GET",
        &snap,
        &[("Range", "bytes=5-"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (206, &identity[5..]));
    let r = http(
        proxy.port,
        "GET",
        &snap,
        &[("Range", "bytes=5-"), ("If-Range", "\"stale\"")],
    )
    .await;
    assert_eq!(
        (r.status, r.body.len()),
        (200, len),
        "If-Range mismatch: the whole body"
    );

    let metrics = http(proxy.admin_port, "GET", "/metrics", &[]).await.text();
    assert!(
        metrics.contains("kind=\"snapshot\",result=\"hit\",status=\"206\""),
        "{metrics}"
    );
    // The notification, the snapshot and its HEAD went out gzip-encoded.
    assert!(
        metrics.contains("rrdp_proxy_gzip_responses_total 3"),
        "{metrics}"
    );
}

/// Regression (issue 18): `/metrics` interleaved the samples of two families
/// (`rrdp_proxy_seconds_stale` and `rrdp_proxy_last_success_timestamp_seconds`: both HELP/TYPE
/// blocks first, then their samples mixed), which the exposition format forbids. Every
/// family must be one group: its HELP and TYPE once, then only its own samples.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_family_is_one_group() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    proxy.wait_first_poll().await;
    let text = http(proxy.admin_port, "GET", "/metrics", &[]).await.text();
    let mut seen = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    let mut families = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(
                seen.insert(name.clone()),
                "{name} has two groups in\n{text}"
            );
            current = Some(name);
            families += 1;
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            // A histogram's samples are its family's name with _bucket, _sum or _count.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| seen.contains(*f)))
                .unwrap_or(name);
            assert_eq!(
                Some(family),
                current.as_deref(),
                "{line:?} outside its group in\n{text}"
            );
        }
    }
    assert!(families >= 10, "too few families to judge:\n{text}");
    assert!(seen.contains("rrdp_proxy_seconds_stale"));
    assert!(seen.contains("rrdp_proxy_last_success_timestamp_seconds"));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_report_what_operators_need() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    // The round is counted when it ends, a moment after the generation is installed.
    proxy.wait_first_poll().await;
    proxy.get("/rrdp/notification.xml").await;

    let m = http(proxy.admin_port, "GET", "/metrics", &[]).await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for series in [
        "rrdp_proxy_requests_total{kind=\"notification\",result=\"hit\",status=\"200\"} 1",
        "rrdp_proxy_publishes_total 1",
        "rrdp_proxy_serial{repository=",
        "rrdp_proxy_seconds_stale{repository=",
        "rrdp_proxy_last_success_timestamp_seconds{repository=",
        "rrdp_proxy_publish_duration_seconds{repository=",
        "rrdp_proxy_disk_bytes ",
        "rrdp_proxy_memory_bytes ",
        "rrdp_proxy_bytes_served_total ",
        "rrdp_proxy_upstream_fetches_total ",
        "rrdp_proxy_hash_mismatches_total 0",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&http(proxy.admin_port, "GET", "/status", &[]).await.body).unwrap();
    let repo = &s["repositories"][0];
    assert_eq!(repo["serial"], 1);
    assert_eq!(
        repo["session_id"],
        origin.with(|s| s.repo.session_id().to_string())
    );
    assert!(repo["last_success"].is_u64());
    assert!(s["cache"]["disk_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["healthy"], true);
    assert_eq!(
        http(proxy.admin_port, "GET", "/nope", &[]).await.status,
        404
    );
    assert_eq!(
        http(proxy.admin_port, "GET", "/refresh", &[]).await.status,
        405
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_files_stream_from_disk_whole_and_in_ranges_across_chunks() {
    let origin = Origin::start().await;
    // A snapshot of about 1 MiB: several of the 256 KiB pieces a stored file is sent in.
    origin.state.lock().unwrap().repo =
        rrdp_proxy::demo::Publisher::large(&origin.base(), 1 << 20, 2);
    let cache = tempfile::tempdir().unwrap();
    // A 64 KiB memory tier keeps nothing over 8 KiB: the snapshot is served from its file.
    let (port, admin) = (free_port(), free_port());
    let text = config_with_small_memory_tier(port, admin, cache.path(), &origin.base());
    let proxy = Proxy::start_with(text, port, admin);
    let st = proxy.wait_first_poll().await;
    assert!(st.serial.is_some(), "{st:?}");
    let n = Notification::parse(&proxy.get("/rrdp/notification.xml").await.body).unwrap();
    let snap = path_of(&n.snapshot.uri);
    let whole = http(proxy.port, "GET", &snap, &[]).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body.len() > 3 * (256 << 10), "{}", whole.body.len());
    assert_eq!(Hash::of(&whole.body), n.snapshot.hash);
    let (in_memory, _) = proxy.shared.store.memory_usage();
    assert!(
        in_memory < 64 << 10,
        "the snapshot is not in the memory tier"
    );
    // A range that starts inside one piece and ends inside a later one.
    let (from, to) = ((256 << 10) - 7, (3 << 18) + 11);
    let r = http(
        proxy.port,
        "GET",
        &snap,
        &[("Range", &format!("bytes={from}-{to}"))],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.as_slice(), &whole.body[from..=to]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_sent_with_sendfile_are_the_bodies_sent_from_memory() {
    let origin = Origin::start().await;
    origin.state.lock().unwrap().repo =
        rrdp_proxy::demo::Publisher::large(&origin.base(), 1 << 20, 2);
    // Two proxies in front of the same origin: `sendfile` on (the default) and off. The
    // snapshot is served from its file (a 64 KiB memory tier keeps nothing over 8 KiB); the
    // notification, plain and gzip, from its in-memory file or from memory.
    let start = |sendfile: bool| {
        let cache = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let text = config_with_small_memory_tier(port, admin, cache.path(), &origin.base())
            .replace(
                "threads = 2",
                &format!("threads = 2\nsendfile = {sendfile}"),
            );
        assert!(text.contains("sendfile = "));
        (Proxy::start_with(text, port, admin), cache)
    };
    let ((on, _c1), (off, _c2)) = (start(true), start(false));
    on.wait_first_poll().await;
    off.wait_first_poll().await;
    let gz = [("Accept-Encoding", "gzip")];
    let plain = http(on.port, "GET", "/rrdp/notification.xml", &[]).await;
    assert_eq!(plain.status, 200);
    let n = Notification::parse(&plain.body).unwrap();
    let zipped = http(on.port, "GET", "/rrdp/notification.xml", &gz).await;
    assert_eq!(zipped.header("Content-Encoding"), Some("gzip"));
    assert_eq!(
        gunzip(&zipped.body),
        plain.body,
        "the gzip variant decodes to the plain one"
    );
    let snap = path_of(&n.snapshot.uri);
    let whole = http(on.port, "GET", &snap, &[]).await;
    assert_eq!(Hash::of(&whole.body), n.snapshot.hash);
    let range = [("Range", "bytes=300000-700000")];
    let part = http(on.port, "GET", &snap, &range).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body.as_slice(), &whole.body[300_000..=700_000]);
    // Without sendfile: the same bytes (the URIs differ only in the port).
    let other = http(off.port, "GET", "/rrdp/notification.xml", &[]).await;
    let ports = |b: &[u8], port: u16| String::from_utf8_lossy(b).replace(&port.to_string(), "P");
    assert_eq!(ports(&other.body, off.port), ports(&plain.body, on.port));
    let off_part = http(off.port, "GET", &snap, &range).await;
    assert_eq!(off_part.body, part.body);
}

/// The connection stream holds each response's header back to send it with the body
/// (coalesce.rs): a response without a body (HEAD, 304) must still go out at once, and every
/// response must arrive whole and in order on a kept-alive connection.
#[tokio::test(flavor = "multi_thread")]
async fn one_kept_alive_connection_carries_answers_of_every_shape_in_order() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let n = proxy.get("/rrdp/notification.xml").await;
    let etag = n.header("ETag").unwrap().to_string();
    let snapshot = Notification::parse(&n.body).unwrap().snapshot;
    let snap = path_of(&snapshot.uri);

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let host = format!("127.0.0.1:{}", proxy.port);
    // (method, path, extra header, status, body expected)
    type Step<'a> = (&'a str, &'a str, String, u16, Option<Vec<u8>>);
    let steps: Vec<Step> = vec![
        (
            "GET",
            "/rrdp/notification.xml",
            String::new(),
            200,
            Some(n.body.clone()),
        ),
        (
            "HEAD",
            "/rrdp/notification.xml",
            String::new(),
            200,
            Some(Vec::new()),
        ),
        (
            "GET",
            "/rrdp/notification.xml",
            format!("If-None-Match: {etag}\r\n"),
            304,
            Some(Vec::new()),
        ),
        ("GET", "/rrdp/nothing-here.xml", String::new(), 404, None),
        ("HEAD", &snap, String::new(), 200, Some(Vec::new())),
        ("GET", &snap, String::new(), 200, None),
        (
            "GET",
            "/rrdp/notification.xml",
            String::new(),
            200,
            Some(n.body.clone()),
        ),
    ];
    for (i, (method, path, extra, status, body)) in steps.into_iter().enumerate() {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        conn.get_mut().write_all(req.as_bytes()).await.unwrap();
        let (got, headers, got_body) = tokio::time::timeout(
            crate::support::EVENT_TIMEOUT,
            read_response(&mut conn, method == "HEAD"),
        )
        .await
        .unwrap_or_else(|_| panic!("step {i}: {method} {path}: no whole response in time"));
        assert_eq!(got, status, "step {i}: {method} {path}");
        match body {
            Some(b) => assert_eq!(got_body, b, "step {i}: {method} {path}"),
            None if status == 200 => assert_eq!(Hash::of(&got_body), snapshot.hash),
            None => assert!(!got_body.is_empty(), "step {i}: an error text"),
        }
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "connection" && v == "close"),
            "step {i}: the connection stays open"
        );
    }
}

/// The operator's page is on the admin listener only, with its own script and style under a
/// policy that allows nothing else; `/history` feeds its plot.
#[tokio::test(flavor = "multi_thread")]
async fn the_operators_page_is_on_the_admin_listener_only() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    proxy.wait_first_poll().await;

    let page = http(proxy.admin_port, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.text().contains("<script src=\"/page.js\""));
    for (path, kind) in [("/page.js", "text/javascript"), ("/page.css", "text/css")] {
        let r = http(proxy.admin_port, "GET", path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("Content-Type").unwrap().starts_with(kind),
            "{path}"
        );
    }
    let history: serde_json::Value =
        serde_json::from_slice(&http(proxy.admin_port, "GET", "/history", &[]).await.body).unwrap();
    let samples = history["repositories"][0]["samples"].as_array().unwrap();
    assert_eq!(samples[0]["serial"], 1, "{history}");
    assert_eq!(http(proxy.admin_port, "POST", "/", &[]).await.status, 405);
    // Never on a public listener.
    assert_eq!(proxy.get("/").await.status, 404);
    assert_eq!(proxy.get("/page.js").await.status, 404);
}

/// `[log] access_file`: the access log goes to a file, written off the request path, and
/// SIGUSR1 (logrotate's postrotate) makes it reopen the path after a rotation.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_goes_to_a_file_reopened_on_sigusr1() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("access.log");
    let (port, admin) = (crate::support::free_port(), crate::support::free_port());
    let text = crate::support::config_text(port, admin, cache.path(), &origin.base(), "")
        + &format!(
            "[log]\naccess = \"json\"\naccess_file = \"{}\"\n",
            file.display()
        );
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(1).await;

    // Waits (bounded) until the file at `path` has a line for `uri`: the writer's own thread
    // writes it, so there is no event to await in this process.
    async fn logged(path: &std::path::Path, uri: &str) -> String {
        let deadline = tokio::time::Instant::now() + crate::support::EVENT_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(uri)) {
                return line.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line for {uri} in {path:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    assert_eq!(proxy.get("/rrdp/notification.xml").await.status, 200);
    let line = logged(&file, "/rrdp/notification.xml").await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["kind"], "notification");

    // logrotate: the file is renamed, then SIGUSR1; the next line goes to a new file.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    // SAFETY: raising a signal this process handles (the server installed the handler).
    assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
    assert_eq!(proxy.get("/rrdp/nothing-here.xml").await.status, 404);
    logged(&file, "/rrdp/nothing-here.xml").await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        !old.contains("nothing-here"),
        "written after the rotation, to the new file"
    );
    assert!(http(admin, "GET", "/metrics", &[])
        .await
        .text()
        .contains("rrdp_proxy_access_log_dropped_total 0"));
}

/// The combined format, written to a file: client, date, request line, status, bytes,
/// referer, user agent, then kind and result.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_file_in_combined_format() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("access.log");
    let (port, admin) = (free_port(), free_port());
    let text = config_text(port, admin, cache.path(), &origin.base(), "")
        + &format!("[log]\naccess_file = \"{}\"\n", file.display());
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(1).await;
    let r = http(
        port,
        "GET",
        "/rrdp/notification.xml",
        &[("User-Agent", "test-rp/1.0")],
    )
    .await;
    assert_eq!(r.status, 200);
    let deadline = tokio::time::Instant::now() + crate::support::EVENT_TIMEOUT;
    let line = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("test-rp/1.0")) {
            break l.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line in {file:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let (head, rest) = line.split_once(" - - [").unwrap();
    assert_eq!(head, "127.0.0.1");
    let (date, rest) = rest.split_once("] ").unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    let want = format!(
        "\"GET /rrdp/notification.xml HTTP/1.1\" 200 {} \"-\" \"test-rp/1.0\" notification hit",
        r.body.len()
    );
    assert_eq!(rest, want);
}
