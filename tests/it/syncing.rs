//! The poller: publish only after verify, and every way an upstream can be wrong.

use std::time::Duration;

use bytes::Bytes;
use rrdp_proxy::rrdp::{Hash, Notification};
use rrdp_proxy::RequestKind;

use crate::support::{Origin, Proxy, EVENT_TIMEOUT};

/// Fetches the served notification and checks every file it references: 200, right hash.
async fn check_consistent(proxy: &Proxy) -> Notification {
    crate::support::fetch_consistent(proxy.port).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_with_a_wrong_hash_is_never_published_nor_served() {
    let origin = Origin::start().await;
    let snapshot = origin.with(|s| s.repo.snapshot_path().to_string());
    let evil = Bytes::from_static(b"<snapshot>not what the notification promised</snapshot>");
    origin.with(|s| s.repo.corrupt(&snapshot, evil.clone()));
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");

    let st = proxy.wait_first_poll().await;
    assert_eq!(st.serial, None);
    assert!(
        st.last_error.as_deref().unwrap().contains("mismatch"),
        "{st:?}"
    );
    assert_eq!(proxy.get("/rrdp/notification.xml").await.status, 503);
    // Asked for directly, the bad bytes are fetched, refused and not served.
    let r = proxy.get(&format!("/rrdp/{snapshot}")).await;
    assert_eq!(r.status, 502);
    assert_ne!(r.body, evil.to_vec());
    assert!(!proxy.shared.store.contains(&Hash::of(&evil), None));

    // The origin heals: the next serial has a good snapshot.
    origin.advance();
    proxy.poll().await;
    assert_eq!(proxy.status().serial, Some(2));
    check_consistent(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_with_a_wrong_hash_keeps_the_previous_generation() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    origin.advance();
    let delta = origin.with(|s| s.repo.delta_paths()[0].clone());
    let good = origin.with(|s| s.repo.file(&delta).unwrap());
    origin.with(|s| {
        s.repo
            .corrupt(&delta, Bytes::from_static(b"<delta>tampered</delta>"))
    });
    let st = proxy.poll().await;
    assert!(st.last_error.unwrap().contains("mismatch"));
    assert_eq!(
        check_consistent(&proxy).await.serial,
        1,
        "still serving serial 1"
    );

    origin.with(|s| s.repo.corrupt(&delta, good));
    proxy.poll().await;
    assert_eq!(check_consistent(&proxy).await.serial, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn uris_on_other_hosts_schemes_or_ports_are_never_fetched() {
    let origin = Origin::start().await;
    let evil = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    // Another port of the same host: the evil origin's own notification.
    let foreign = evil.with(|s| s.repo.notification());
    let own = origin.with(|s| s.repo.notification());
    let own_text = String::from_utf8(own.to_vec()).unwrap();
    let variants = [
        foreign,
        Bytes::from(own_text.replace(&origin.base(), "http://169.254.169.254/rrdp/")),
        Bytes::from(own_text.replace(&origin.base(), "file:///etc/")),
        Bytes::from(own_text.replace(&origin.base(), &format!("https://{}/rrdp/", origin.addr))),
        Bytes::from(own_text.replace(&origin.base(), &format!("{}../", origin.base()))),
    ];
    for v in variants {
        origin.with(|s| s.notification_override = Some(v.clone()));
        let st = proxy.poll().await;
        let err = st.last_error.expect("refused");
        assert!(err.contains("is not under"), "{err}");
    }
    assert_eq!(
        evil.requests_for("/"),
        0,
        "nothing was fetched from another port"
    );
    assert_eq!(check_consistent(&proxy).await.serial, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serial_going_back_is_not_published_and_a_new_session_is() {
    let origin = Origin::start().await;
    origin.advance();
    let old = origin.with(|s| s.repo.notification());
    origin.advance();
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(3).await;

    origin.with(|s| s.notification_override = Some(old));
    let st = proxy.poll().await;
    assert!(st.last_error.unwrap().contains("went back"));
    assert_eq!(check_consistent(&proxy).await.serial, 3);

    origin.with(|s| {
        s.notification_override = None;
        s.repo.reset_session();
    });
    let new_session = origin.with(|s| s.repo.session_id().to_string());
    proxy.poll().await;
    let n = check_consistent(&proxy).await;
    assert_eq!((n.session_id.as_str(), n.serial), (new_session.as_str(), 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_gone_upstream_leaves_the_contiguous_newer_tail() {
    let origin = Origin::start().await;
    for _ in 0..4 {
        origin.advance();
    }
    // Deltas 5, 4, 3, 2 are listed; 3 is deleted upstream.
    let gone = origin.with(|s| s.repo.delta_paths()[2].clone());
    origin.with(|s| s.repo.remove(&gone));
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(5).await;
    let n = check_consistent(&proxy).await;
    assert_eq!(
        n.deltas.iter().map(|d| d.serial).collect::<Vec<_>>(),
        vec![5, 4]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_deltas_trims_to_the_newest() {
    let origin = Origin::start().await;
    for _ in 0..5 {
        origin.advance();
    }
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "max_deltas = 2");
    proxy.wait_serial(6).await;
    let n = check_consistent(&proxy).await;
    assert_eq!(
        n.deltas.iter().map(|d| d.serial).collect::<Vec<_>>(),
        vec![6, 5]
    );
    assert_eq!(
        origin.requests_for("/4/"),
        0,
        "trimmed deltas are not fetched"
    );
}

/// The promise the proxy exists for: while the origin publishes and deletes superseded files
/// at once (as Krill does), a client that follows the notification it just got never sees a
/// 404 or 5xx, and superseded files stay servable.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_polling_during_churn_never_sees_a_missing_file() {
    const SERIALS: u64 = 30;
    let origin = Origin::start().await;
    let first_snapshot = origin.with(|s| s.repo.snapshot_path().to_string());
    let first_hash = Hash::of(&origin.with(|s| s.repo.file(&first_snapshot).unwrap()));
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "poll_interval = \"20ms\"");
    proxy.wait_serial(1).await;

    let state = origin.state.clone();
    let churn = tokio::spawn(async move {
        // The origin's publishing pace; the client below synchronises on what it sees.
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        for _ in 1..SERIALS {
            tick.tick().await;
            state.lock().unwrap().repo.advance();
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while seen.last() != Some(&SERIALS) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "saw serials {seen:?}"
        );
        seen.insert(check_consistent(&proxy).await.serial);
    }
    churn.await.unwrap();
    assert!(
        seen.len() > 3,
        "the client saw the repository change: {seen:?}"
    );
    assert_eq!(
        proxy.shared.metrics.requests_with_status(
            &[RequestKind::File, RequestKind::Snapshot, RequestKind::Delta],
            404
        ),
        0
    );
    assert_eq!(
        proxy
            .shared
            .metrics
            .requests_with_status(&[RequestKind::Notification], 503),
        0
    );

    // The first snapshot is long gone upstream, and still servable within cache.retain.
    assert_eq!(origin.with(|s| s.repo.file(&first_snapshot)), None);
    let r = proxy.get(&format!("/rrdp/{first_snapshot}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(Hash::of(&r.body), first_hash);
}

/// 50 clients ask for a new snapshot while the poller is still downloading it: they wait for
/// that one download instead of each asking the origin.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_for_a_file_in_flight_make_one_origin_request() {
    const CLIENTS: usize = 50;
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    let (stall, snapshot, hash) = advance_with_stalled_snapshot(&origin);
    proxy.shared.repos[0].poll_now();
    // The poller is now downloading the new snapshot, held by the origin.
    let key = rrdp_proxy::testing::object_key(&hash);
    let flights = &proxy.shared.store.flights;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while origin.requests_for(&snapshot) == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let port = proxy.port;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let path = format!("/rrdp/{snapshot}");
            tokio::spawn(async move { crate::support::http(port, "GET", &path, &[]).await })
        })
        .collect();
    // Every client is waiting behind the poller's download.
    while flights.waiting(&key) < CLIENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting: {}",
            flights.waiting(&key)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stall.notify_one();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!((r.status, Hash::of(&r.body)), (200, hash));
    }
    assert_eq!(
        origin.requests_for(&snapshot),
        1,
        "one origin request for the new file"
    );
    proxy.wait_serial(2).await;
}

/// A client asks for a new snapshot before this node has read the notification naming it:
/// the request makes the poller read the notification now (issue 26, item 7: an unknown name
/// is no longer forwarded blindly), and the client and the poller share one origin request
/// for the file, which the client gets verified by the hash the notification gives.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_a_new_file_and_the_poller_share_one_origin_request() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;

    let (stall, snapshot, hash) = advance_with_stalled_snapshot(&origin);
    let port = proxy.port;
    let path = format!("/rrdp/{snapshot}");
    let client = tokio::spawn(async move { crate::support::http(port, "GET", &path, &[]).await });
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while origin.requests_for(&snapshot) == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stall.notify_one();
    let r = client.await.unwrap();
    assert_eq!((r.status, Hash::of(&r.body)), (200, hash));
    proxy.wait_serial(2).await;
    assert_eq!(
        origin.requests_for(&snapshot),
        1,
        "one origin request for the new snapshot"
    );
    assert_eq!(proxy.shared.metrics.unknown_names("named"), 1);
}

/// Publishes a new serial at the origin whose snapshot download is held until the returned
/// Notify is told to release it (`notify_one`: the one request counted may not be waiting
/// yet, and a permit waits for it; `notify_waiters` lost that wake-up, and the test hung);
/// gives its path and hash.
fn advance_with_stalled_snapshot(
    origin: &Origin,
) -> (std::sync::Arc<tokio::sync::Notify>, String, Hash) {
    let stall = std::sync::Arc::new(tokio::sync::Notify::new());
    origin.advance();
    let (snapshot, hash) = origin.with(|s| {
        s.stall_snapshots = Some(stall.clone());
        let p = s.repo.snapshot_path().to_string();
        (p.clone(), Hash::of(&s.repo.file(&p).unwrap()))
    });
    (stall, snapshot, hash)
}
