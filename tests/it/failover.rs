//! The origin goes away: clients keep the last consistent repository, across a restart of
//! the proxy too, and passthrough files are served stale.

use bytes::Bytes;

use crate::support::{Origin, Proxy};

/// The served notification and every file it references, as bytes.
async fn snapshot_of(proxy: &Proxy) -> Vec<(String, Vec<u8>)> {
    crate::support::fetch_consistent(proxy.port).await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_down_serves_the_last_repository_even_after_a_restart() {
    let mut origin = Origin::start().await;
    origin.advance();
    origin.advance();
    let cache = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(3).await;
    let before = snapshot_of(&proxy).await;
    assert_eq!(
        before.len(),
        1 + 1 + 2,
        "notification, snapshot, two deltas"
    );

    origin.stop();
    let st = proxy.poll().await;
    assert!(st.last_error.is_some(), "the poll failed");
    assert_eq!(
        snapshot_of(&proxy).await,
        before,
        "byte for byte while the origin is down"
    );

    // Restart the proxy with the origin still down: same ports, same cache directory.
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();
    let proxy = Proxy::start_with(text, port, admin);
    let st = proxy.wait_first_poll().await;
    assert_eq!(st.polls_failed, 1);
    assert_eq!(st.serial, Some(3), "the stored generation was loaded");
    assert_eq!(
        snapshot_of(&proxy).await,
        before,
        "byte for byte after a restart"
    );

    // The origin comes back with news.
    origin.restart().await;
    origin.advance();
    proxy.poll().await;
    assert_eq!(proxy.status().serial, Some(4));
    assert_eq!(proxy.status().last_error, None);
    snapshot_of(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_is_cached_and_served_stale_when_the_origin_fails() {
    let mut origin = Origin::start().await;
    let cert = Bytes::from_static(b"\x30\x82 a TA certificate");
    origin.with(|s| {
        s.extra.insert(
            "/ta/ta.cer".into(),
            (200, "application/pkix-cert", cert.clone()),
        )
    });
    let cache = tempfile::tempdir().unwrap();
    // default_max_age = 0s: every request asks the origin, so the stale path is exercised.
    let extra = format!(
        "[[passthrough]]\npublic = \"http://127.0.0.1:1/ta/\"\nupstream = \"http://{}/ta/\"\ndefault_max_age = \"0s\"\n",
        origin.addr
    );
    let mut proxy = Proxy::start(cache.path(), &origin.base(), &extra);
    proxy.wait_serial(1).await;

    let r = proxy.get("/ta/ta.cer").await;
    assert_eq!((r.status, r.body.as_slice()), (200, cert.as_ref()));
    assert_eq!(r.header("Content-Type"), Some("application/pkix-cert"));
    let r = proxy.get("/ta/missing.cer").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));

    origin.stop();
    let r = proxy.get("/ta/ta.cer").await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, cert.as_ref()),
        "served stale"
    );
    assert_eq!(proxy.get("/ta/never-seen.cer").await.status, 502);

    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();
    let proxy = Proxy::start_with(text, port, admin);
    let r = proxy.get("/ta/ta.cer").await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, cert.as_ref()),
        "stale after a restart"
    );
}
