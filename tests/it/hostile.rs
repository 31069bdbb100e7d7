//! Hostile or broken upstreams, clients and peers: every resource a node spends on one is
//! bounded, and the node keeps serving its last good repository.

use bytes::Bytes;

use crate::support::{Fault, Origin, Proxy};

/// Regression (issue 26, item 2): the delta downloads of a round outlived it. An upstream
/// that answers one delta with 404 and stalls the older ones kept a task and a connection per
/// stalled delta until `fetch_timeout`, after the round had already ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_rounds_delta_downloads_end_with_the_round() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        cache.path(),
        &origin.base(),
        "fetch_concurrency = 4\nfetch_timeout = \"10m\"",
    );
    proxy.wait_serial(1).await;
    origin.until_connections_at_most(0).await;

    for _ in 0..20 {
        origin.advance();
    }
    // Newest first: the two newest deltas are served, the third is gone, the rest stall.
    origin.with(|s| {
        let paths = s.repo.delta_paths();
        s.extra.insert(
            format!("/rrdp/{}", paths[2]),
            (404, "text/plain", Bytes::from_static(b"gone\n")),
        );
        for p in &paths[3..] {
            s.faults.insert(format!("/rrdp/{p}"), Fault::Stall);
        }
    });
    let st = proxy.poll().await;
    assert_eq!(st.serial, Some(21), "{st:?}");
    assert!(
        origin.requests_for("/rrdp/") > 0,
        "the round fetched from the origin"
    );
    // The stalled downloads were abandoned with the round: their connections are closed.
    origin.until_connections_at_most(0).await;
}

/// Issue 26, item 1: an object larger than `max_object_size` (one element holding hundreds of
/// MiB, in the probe) refuses the round with its reason; the last good serial stays served
/// and nothing of the refused one is stored. (The memory it costs: tests/memory.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn an_object_over_max_object_size_refuses_the_round() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "max_object_size = \"4KiB\"");
    proxy.wait_serial(1).await;

    let big = vec![7u8; 5000];
    origin.with(|s| {
        s.repo
            .apply([("rsync://x/repo/big.crl".to_string(), Some(big.clone()))])
    });
    let st = proxy.poll().await;
    assert_eq!(st.serial, Some(1), "{st:?}");
    let err = st.last_error.unwrap();
    assert!(err.contains("max_object_size"), "{err}");
    assert_eq!(st.last_error_reason, Some("invalid_content"), "{err}");
    crate::support::fetch_consistent(proxy.port).await;
}

/// Issue 26, item 9: the passthrough's 502 told the public the upstream's internal address,
/// and its cache grew with every made-up name a client asked for that the upstream answered.
#[tokio::test(flavor = "multi_thread")]
async fn the_passthrough_keeps_its_upstream_private_and_its_cache_bounded() {
    let mut origin = Origin::start().await;
    let names = rrdp_proxy::testing::ENTRIES_KEPT + 20;
    origin.with(|s| {
        for i in 0..names {
            s.extra.insert(
                format!("/ta/{i}.cer"),
                (
                    200,
                    "application/pkix-cert",
                    Bytes::from(format!("cert {i}")),
                ),
            );
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[passthrough]]\npublic = \"http://127.0.0.1:1/ta/\"\nupstream = \"http://{}/ta/\"\n",
        origin.addr
    );
    let mut proxy = Proxy::start(cache.path(), &origin.base(), &extra);
    proxy.wait_serial(1).await;
    for i in 0..names {
        assert_eq!(proxy.get(&format!("/ta/{i}.cer")).await.status, 200);
    }
    let kept = proxy.shared.passthroughs[0].cached_count();
    assert_eq!(kept, rrdp_proxy::testing::ENTRIES_KEPT);

    origin.stop();
    let r = proxy.get("/ta/never-seen.cer").await;
    assert_eq!(r.status, 502);
    let body = r.text();
    assert!(
        !body.contains(&origin.addr.to_string()) && !body.contains("127.0.0.1"),
        "the 502 shows the upstream: {body}"
    );
    // The restart loads no more than was kept.
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();
    let proxy = Proxy::start_with(text, port, admin);
    assert!(proxy.shared.passthroughs[0].cached_count() <= kept);
}

/// Issue 26, item 7: 300 requests for made-up names under a repository's prefix made 600
/// requests to the origin. Now a flood of them costs the origin at most a notification a
/// second and a small budget of forwards (under 10 % of the flood), while a client of a real,
/// newer notification in the middle of the flood still gets its file.
#[tokio::test(flavor = "multi_thread")]
async fn made_up_names_cost_the_origin_little_and_real_new_files_are_served() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    // A serial the node has not polled yet: an RP got its notification elsewhere.
    origin.advance();
    let (snapshot, want) = origin.with(|s| {
        let p = s.repo.snapshot_path().to_string();
        let h = rrdp_proxy::rrdp::Hash::of(&s.repo.file(&p).unwrap());
        (p, h)
    });
    let before = origin.with(|s| s.requests.len());
    let port = proxy.port;
    let flood: Vec<_> = (0..300)
        .map(|i| {
            let path = if i == 150 {
                format!("/rrdp/{snapshot}")
            } else {
                format!("/rrdp/{:016x}/{i}/made-up/delta.xml", rand::random::<u64>())
            };
            tokio::spawn(async move { (i, crate::support::http(port, "GET", &path, &[]).await) })
        })
        .collect();
    for task in flood {
        let (i, r) = task.await.unwrap();
        if i == 150 {
            assert_eq!(r.status, 200, "the real new snapshot");
            assert_eq!(rrdp_proxy::rrdp::Hash::of(&r.body), want);
        } else {
            assert_eq!(r.status, 404, "{i}");
        }
    }
    let reached = origin.with(|s| s.requests.len()) - before;
    assert!(
        reached <= 30,
        "{reached} origin requests for a flood of 300"
    );
    let m = &proxy.shared.metrics;
    assert!(
        m.unknown_names("refused") >= 270,
        "{}",
        m.unknown_names("refused")
    );
}
