//! Delta history: the served notification lists the session's stored deltas further back
//! than the origin does (the demo origin keeps 10), contiguous and byte-identical per serial,
//! across a restart; a changed delta hash refuses the round; what RPs lag is counted.

use std::collections::HashMap;

use rrdp_proxy::demo::Publisher;
use rrdp_proxy::rrdp::{Hash, Notification};

use crate::support::{fetch_consistent, http, Origin, Proxy};

/// An origin shaped like a real repository: a snapshot (1 MiB) much larger than its deltas
/// (a few KiB), and, like Krill, only the newest delta listed.
async fn origin() -> Origin {
    let origin = Origin::start().await;
    let base = origin.base();
    origin.with(|s| s.repo = Publisher::large(&base, 1 << 20, 0));
    origin
}

/// The deltas the origin lists now, serial → hash.
fn origin_deltas(origin: &Origin) -> HashMap<u64, Hash> {
    origin.with(|s| {
        let n = Notification::parse(&s.repo.notification()).unwrap();
        n.deltas.iter().map(|d| (d.serial, d.file.hash)).collect()
    })
}

/// Publishes `rounds` serials at the origin, the proxy taking each; returns every delta hash
/// the origin ever listed.
async fn churn(origin: &Origin, proxy: &Proxy, rounds: usize) -> HashMap<u64, Hash> {
    let mut published = origin_deltas(origin);
    for _ in 0..rounds {
        let serial = origin.advance();
        proxy.poll().await;
        proxy.wait_serial(serial).await;
        published.extend(origin_deltas(origin));
    }
    published
}

/// The deltas the proxy lists: contiguous down from the serial, each as the origin published
/// it, and every one servable with its hash (fetch_consistent).
async fn check_history(proxy: &Proxy, published: &HashMap<u64, Hash>) -> Notification {
    let (n, bodies) = fetch_consistent(proxy.port).await;
    for (i, d) in n.deltas.iter().enumerate() {
        assert_eq!(d.serial, n.serial - i as u64, "contiguous, newest first");
        assert_eq!(
            Some(&d.file.hash),
            published.get(&d.serial),
            "serial {}",
            d.serial
        );
    }
    let snapshot = bodies[1].1.len();
    let deltas: usize = bodies[2..].iter().map(|(_, b)| b.len()).sum();
    assert!(
        deltas < snapshot,
        "the deltas ({deltas} B) stay below the snapshot ({snapshot} B)"
    );
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn more_deltas_than_the_origin_keeps_are_listed_and_survive_a_restart() {
    let mut origin = origin().await;
    let cache = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(origin.with(|s| s.repo.serial())).await;
    let published = churn(&origin, &proxy, 14).await;
    let upstream = origin_deltas(&origin).len();

    let n = check_history(&proxy, &published).await;
    assert!(
        n.deltas.len() > upstream,
        "listed {} deltas, the origin {upstream}",
        n.deltas.len()
    );
    let status: serde_json::Value =
        serde_json::from_slice(&http(proxy.admin_port, "GET", "/status", &[]).await.body).unwrap();
    let history = &status["repositories"][0]["delta_history"];
    assert_eq!(history["entries"], n.deltas.len());
    assert_eq!(history["oldest_serial"], n.deltas.last().unwrap().serial);

    // The history is part of the published state: a restart with the origin down serves it.
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();
    origin.stop();
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(n.serial).await;
    let again = check_history(&proxy, &published).await;
    assert_eq!(again.deltas, n.deltas);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_history_the_origins_list_is_served_and_a_session_reset_starts_anew() {
    let origin = origin().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "delta_history = \"0s\"");
    proxy.wait_serial(origin.with(|s| s.repo.serial())).await;
    let published = churn(&origin, &proxy, 14).await;
    let n = check_history(&proxy, &published).await;
    assert_eq!(
        n.deltas.len(),
        origin_deltas(&origin).len(),
        "exactly the origin's"
    );

    let other = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(other.path(), &origin.base(), "");
    proxy.wait_serial(n.serial).await;
    let published = churn(&origin, &proxy, 3).await;
    assert!(check_history(&proxy, &published).await.deltas.len() >= 3);
    origin.with(|s| s.repo.reset_session());
    proxy.poll().await;
    let (n, _) = fetch_consistent(proxy.port).await;
    let session = origin.with(|s| s.repo.session_id().to_string());
    assert_eq!(n.session_id, session);
    let listed: Vec<u64> = n.deltas.iter().map(|d| d.serial).collect();
    let upstream: Vec<u64> = {
        let mut v: Vec<u64> = origin_deltas(&origin).into_keys().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    };
    assert_eq!(listed, upstream, "a new session starts a new history");
}

/// RFC 9697: an RP that saw a delta's hash for a serial distrusts the serial if it changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_delta_listed_with_another_hash_refuses_the_round() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    churn(&origin, &proxy, 3).await;
    let before = http(proxy.port, "GET", "/rrdp/notification.xml", &[])
        .await
        .body;

    // The origin's next serial lists serial 3's delta with another hash.
    origin.advance();
    let text = origin.with(|s| String::from_utf8(s.repo.notification().to_vec()).unwrap());
    let n = Notification::parse(text.as_bytes()).unwrap();
    let d3 = n.deltas.iter().find(|d| d.serial == 3).unwrap();
    let forged = text.replace(&d3.file.hash.to_hex(), &Hash::of(b"another delta").to_hex());
    origin.with(|s| s.notification_override = Some(forged.into()));
    let st = proxy.poll().await;
    let error = st.last_error.expect("the round is refused");
    assert!(
        error.contains("serial 3") && error.contains("another hash"),
        "{error}"
    );
    assert_eq!(proxy.shared.metrics.poll_errors("delta_changed"), 1);
    let after = http(proxy.port, "GET", "/rrdp/notification.xml", &[])
        .await
        .body;
    assert_eq!(after, before, "the published notification stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn how_far_behind_rps_are_is_counted() {
    let origin = origin().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(origin.with(|s| s.repo.serial())).await;
    churn(&origin, &proxy, 5).await;
    let (n, _) = crate::support::referenced(proxy.port).await.unwrap();
    // An RP two serials behind fetches the delta after its serial: it lags 3 serials
    // (S - N + 1 with N = S - 2).
    let behind = n.deltas.iter().find(|d| d.serial == n.serial - 2).unwrap();
    let path = crate::support::path_of(&behind.file.uri);
    assert_eq!(proxy.get(&path).await.status, 200);
    // Then it takes the snapshot although the deltas from its serial on are listed.
    let snapshot = crate::support::path_of(&n.snapshot.uri);
    assert_eq!(proxy.get(&snapshot).await.status, 200);

    let text = http(proxy.admin_port, "GET", "/metrics", &[]).await.text();
    let repo = format!("repository=\"http://127.0.0.1:{}/rrdp/\"", proxy.port);
    for series in [
        format!("rrdp_proxy_rp_lag_serials_bucket{{{repo},le=\"2\"}} 0"),
        format!("rrdp_proxy_rp_lag_serials_bucket{{{repo},le=\"3\"}} 1"),
        format!("rrdp_proxy_rp_lag_serials_count{{{repo}}} 1"),
        format!("rrdp_proxy_rp_lag_serials_sum{{{repo}}} 3"),
        format!("rrdp_proxy_snapshot_downloads_total{{delta_path=\"available\",{repo}}} 1"),
        format!(
            "rrdp_proxy_delta_history_entries{{{repo}}} {}",
            n.deltas.len()
        ),
    ] {
        assert!(text.contains(&series), "missing {series} in\n{text}");
    }
    let status: serde_json::Value =
        serde_json::from_slice(&http(proxy.admin_port, "GET", "/status", &[]).await.body).unwrap();
    let lag = &status["repositories"][0]["rp_lag"];
    assert_eq!(lag["delta_requests"], 1);
    assert_eq!(lag["snapshot_downloads"]["available"], 1);
}

/// A gap in the stored chain: a serial whose delta could not be fetched (the origin jumped
/// two serials and deleted the one in between at once). The list stops above the gap; it is
/// never listed with a hole.
#[tokio::test(flavor = "multi_thread")]
async fn a_gap_in_the_chain_cuts_the_list_there() {
    let origin = origin().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(origin.with(|s| s.repo.serial())).await;
    let published = churn(&origin, &proxy, 3).await;
    // Two serials at the origin before the next poll; like Krill, it lists only the newest.
    origin.advance();
    let serial = origin.advance();
    proxy.poll().await;
    proxy.wait_serial(serial).await;
    let mut published = published;
    published.extend(origin_deltas(&origin));
    let n = check_history(&proxy, &published).await;
    let listed: Vec<u64> = n.deltas.iter().map(|d| d.serial).collect();
    assert_eq!(listed, [serial], "stops at the serial never stored");
}

/// A listed delta damaged on disk while the proxy was down: at start the list is cut above
/// it (still contiguous, the remaining hashes unchanged), the rest of the state is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_delta_at_start_cuts_the_list_above_it() {
    let mut origin = origin().await;
    let cache = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(origin.with(|s| s.repo.serial())).await;
    let published = churn(&origin, &proxy, 6).await;
    let before = check_history(&proxy, &published).await;
    assert!(before.deltas.len() >= 5);
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();
    origin.stop();

    let damaged = &before.deltas[2];
    crate::support::damage(cache.path(), &damaged.file.hash);
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(before.serial).await;
    let after = check_history(&proxy, &published).await;
    assert_eq!(
        after.deltas,
        before.deltas[..2],
        "cut above serial {}",
        damaged.serial
    );
    assert_eq!(after.snapshot, before.snapshot);
    let r = proxy.get(&crate::support::path_of(&damaged.file.uri)).await;
    assert_ne!(r.status, 200, "the damaged delta is never served");
}
