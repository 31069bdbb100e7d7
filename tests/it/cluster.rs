//! Scale-out: peer fill between nodes, the publish barrier, several origins.

use std::time::Duration;

use rrdp_proxy::rrdp::Hash;

use crate::support::{config_text, fetch_consistent, free_port, http, Origin, Proxy};

const TOKEN: &str = "a-cluster-secret-of-some-length";

/// A node in front of `origin` whose peers are the given ports; both nodes serve the same
/// public base (as behind one load balancer).
fn node(cache: &std::path::Path, origin: &Origin, port: u16, admin: u16, peers: &[u16]) -> Proxy {
    node_with(cache, origin, port, admin, peers, "")
}

/// [`node`] with more keys in its `[cluster]` table.
fn node_with(
    cache: &std::path::Path,
    origin: &Origin,
    port: u16,
    admin: u16,
    peers: &[u16],
    cluster: &str,
) -> Proxy {
    let peers: Vec<String> = peers
        .iter()
        .map(|p| format!("\"http://127.0.0.1:{p}/\""))
        .collect();
    let text = config_text(port, admin, cache, &origin.base(), "poll_interval = \"1h\"").replace(
        &format!("http://127.0.0.1:{port}/rrdp/"),
        "http://rrdp.example.net/rrdp/",
    ) + &format!(
        "[cluster]\npeers = [{}]\ntoken = \"{TOKEN}\"\n{cluster}\n",
        peers.join(", ")
    );
    Proxy::start_with(text, port, admin)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_node_fills_from_its_peers_when_the_origin_is_down() {
    let mut origin = Origin::start().await;
    let (pa, pb) = (free_port(), free_port());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(ca.path(), &origin, pa, free_port(), &[pb]);
    let b = node(cb.path(), &origin, pb, free_port(), &[pa]);
    a.wait_serial(1).await;
    b.wait_serial(1).await;

    // The object endpoint is for peers only.
    let (n, _) = fetch_consistent(pa).await;
    let object = format!(
        "/.well-known/rrdp-proxy/object/{}",
        n.snapshot.hash.to_hex()
    );
    assert_eq!(http(pa, "GET", &object, &[]).await.status, 404);
    let wrong = http(
        pa,
        "GET",
        &object,
        &[("Authorization", "Bearer not-the-token-at-all")],
    )
    .await;
    assert_eq!(wrong.status, 404);
    let auth = format!("Bearer {TOKEN}");
    let r = http(pa, "GET", &object, &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(Hash::of(&r.body), n.snapshot.hash);

    // A moves on to serial 3; B does not poll; then the origin dies.
    origin.advance();
    origin.advance();
    a.poll().await;
    origin.stop();
    let (n3, files) = fetch_consistent(pa).await;
    assert_eq!(n3.serial, 3);

    // An RP took serial 3 from A and now asks B for each of its files: B has none of the
    // new ones, the origin is down, and B gets them from A, verified.
    for (path, body) in &files[1..] {
        let r = b.get(path).await;
        assert_eq!(r.status, 200, "{path} from the lagging node");
        assert_eq!(&r.body, body, "{path}");
    }
    assert!(b.shared.metrics.peer_fetches() > 0);

    // B's next round: the origin is still down, and B catches up to A's serial.
    let st = b.poll().await;
    assert!(st.last_error.is_some(), "the origin is still reported down");
    assert_eq!(fetch_consistent(pb).await.0.serial, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_lies_is_not_believed() {
    let origin = Origin::start().await;
    let evil = Origin::start().await;
    let pb = free_port();
    // "Peer" E is a fake origin answering every object request with other bytes.
    let cb = tempfile::tempdir().unwrap();
    let b = node(cb.path(), &origin, pb, free_port(), &[evil.addr.port()]);
    b.wait_serial(1).await;
    origin.advance();
    let delta = format!("/rrdp/{}", origin.with(|s| s.repo.delta_paths()[0].clone()));
    let want = Hash::of(&origin.with(|s| s.repo.file(&delta[6..]).unwrap()));
    // The origin deletes the delta at once; the "peer" claims a notification naming it.
    origin.with(|s| s.repo.remove(&delta[6..]));
    let forged = origin.with(|s| s.repo.notification());
    evil.with(|s| {
        s.notification_override = Some(forged.clone());
        s.extra.insert(
            format!("/.well-known/rrdp-proxy/object/{}", want.to_hex()),
            (
                200,
                "application/octet-stream",
                bytes::Bytes::from_static(b"<delta>forged</delta>"),
            ),
        );
    });
    let r = b.get(&delta).await;
    assert_ne!(r.status, 200, "forged bytes are never served");
    assert!(!b.shared.store.contains(&want, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publish_barrier_holds_a_serial_the_origin_no_longer_confirms() {
    let mut origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let (proxy, clock) =
        Proxy::start_manual(cache.path(), &origin.base(), "publish_delay = \"2s\"");
    // The first serial waits publish_delay too (on the test's clock).
    clock.until_waited_on().await;
    clock.advance(Duration::from_secs(2));
    proxy.poll().await;
    proxy.wait_serial(1).await;

    origin.advance();
    let snapshot = origin.with(|s| Hash::of(&s.repo.file(s.repo.snapshot_path()).unwrap()));
    let delta = format!("/rrdp/{}", origin.with(|s| s.repo.delta_paths()[0].clone()));
    // The round stores the files and holds the notification for the delay; the origin dies
    // meanwhile.
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);
    assert!(
        proxy.shared.store.contains(&snapshot, None),
        "stored at once"
    );
    assert_eq!(proxy.status().serial, Some(1), "not before the delay");
    origin.stop();
    clock.advance(Duration::from_secs(2));
    let st = proxy.wait("the barrier", |s| s.last_error.is_some()).await;
    assert!(st.last_error.unwrap().contains("publish barrier"));
    // Regression: a held round past its delay with the upstream down polled it in a tight
    // loop; now the next try waits for the backoff (an hour here): exactly one error.
    assert_eq!(proxy.shared.metrics.poll_errors("publish_barrier"), 1);
    assert_eq!(fetch_consistent(proxy.port).await.0.serial, 1);
    // Another node that did publish serial 2 sends RPs here for its files: they are stored.
    assert_eq!(proxy.get(&delta).await.status, 200);

    origin.restart().await;
    proxy.poll().await;
    assert_eq!(fetch_consistent(proxy.port).await.0.serial, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_publish_delay_a_serial_is_published_after_the_delay() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let (proxy, clock) =
        Proxy::start_manual(cache.path(), &origin.base(), "publish_delay = \"1s\"");
    // Held, then published by the round at the end of the delay, with nothing else asked.
    clock.until_waited_on().await;
    clock.advance(Duration::from_secs(1));
    proxy.wait_serial(1).await;
    origin.advance();
    let st = proxy.poll().await;
    assert_eq!(st.serial, Some(1));
    clock.until_waited_on().await;
    clock.advance(Duration::from_secs(1));
    proxy.wait_serial(2).await;
    assert_eq!(fetch_consistent(proxy.port).await.0.serial, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_origins_fail_over_and_a_stale_replica_is_not_followed() {
    let mut primary = Origin::start().await;
    let mut secondary = Origin::start().await;
    // The secondary is a replica: the same repository (its URIs name the primary's base,
    // files at the same relative paths).
    secondary.with(|s| s.repo = primary.with(|p| p.repo.clone()));
    let cache = tempfile::tempdir().unwrap();
    let extra = format!(
        "poll_interval = \"1h\"\nupstream = [\"{}\", \"{}\"]",
        primary.base(),
        secondary.base()
    );
    let (port, admin) = (free_port(), free_port());
    let text = config_text(port, admin, cache.path(), &primary.base(), &extra)
        .replace(&format!("upstream = \"{}\"\n", primary.base()), "");
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(1).await;

    // The primary dies; the replica has moved on: published from the replica.
    primary.advance();
    secondary.with(|s| s.repo = primary.with(|p| p.repo.clone()));
    primary.stop();
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);
    assert_eq!(fetch_consistent(port).await.0.serial, 2);
    assert!(secondary.requests_for("snapshot") > 0);

    // The primary comes back ahead (serial 3); then it dies again and the replica answers
    // with what it had before: serial 2, a replica that lost its last write. Not published.
    // (The secondary is down meanwhile: the primary, still backing off after its failure,
    // is tried anyway when nothing else answers.)
    let at_two = primary.with(|p| p.repo.clone());
    primary.advance();
    primary.restart().await;
    secondary.stop();
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);
    assert_eq!(fetch_consistent(port).await.0.serial, 3);
    secondary.with(|s| s.repo = at_two);
    secondary.restart().await;
    primary.stop();
    let st = proxy.poll().await;
    let err = st.last_error.unwrap();
    assert!(err.contains("went back from 3 to 2"), "{err}");
    assert_eq!(fetch_consistent(port).await.0.serial, 3);
}

/// Issue 17, found by a held-out check: an RP took notification N from node A and asked node
/// B, which never saw serial N, for its snapshot after the origin had deleted it and no peer's
/// current notification named it any more. A still retains it: B fills it from A (the hash
/// and what the file is from A's lookup endpoint, the bytes by hash, both checked).
#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_snapshot_a_peer_still_retains_is_filled_from_it() {
    let origin = Origin::start().await;
    let (pa, pb) = (free_port(), free_port());
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(ca.path(), &origin, pa, free_port(), &[pb]);
    a.wait_serial(1).await;
    // A takes serial 2, then 3: serial 2's snapshot is superseded at A (retained) and gone at
    // the origin, which deletes superseded files at once, like Krill.
    origin.advance();
    a.poll().await;
    let (n2, files2) = fetch_consistent(pa).await;
    assert_eq!(n2.serial, 2);
    origin.advance();
    a.poll().await;
    let snapshot2 = crate::support::path_of(&n2.snapshot.uri);
    assert_eq!(a.get(&snapshot2).await.status, 200, "A retains it");

    // B starts now: it has never seen serial 2, and nobody's notification names it.
    let b = node(cb.path(), &origin, pb, free_port(), &[pa]);
    b.wait_serial(3).await;
    let r = b.get(&snapshot2).await;
    assert_eq!(r.status, 200, "filled from the peer that retains it");
    assert_eq!(&r.body, &files2[1].1);
    assert!(b.shared.metrics.peer_fetches() > 0);

    // The lookup endpoint is for peers only, and names only what the node serves.
    let lookup = format!("/.well-known/rrdp-proxy/lookup{snapshot2}");
    assert_eq!(http(pa, "GET", &lookup, &[]).await.status, 404);
    let auth = format!("Bearer {TOKEN}");
    let r = http(pa, "GET", &lookup, &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["sha256"], n2.snapshot.hash.to_hex());
    assert_eq!(
        (v["kind"].as_str(), v["serial"].as_u64()),
        (Some("snapshot"), Some(2))
    );
    let nothing = format!(
        "/.well-known/rrdp-proxy/lookup/rrdp/{}/9/x/snapshot.xml",
        n2.session_id
    );
    assert_eq!(
        http(pa, "GET", &nothing, &[("Authorization", &auth)])
            .await
            .status,
        404
    );
}

/// Serves `body` as the object with its hash on a fake peer's object endpoint.
fn peer_object(peer: &Origin, body: bytes::Bytes) -> Hash {
    let h = Hash::of(&body);
    peer.with(|s| {
        s.extra.insert(
            format!("/.well-known/rrdp-proxy/object/{}", h.to_hex()),
            (200, "application/octet-stream", body),
        )
    });
    h
}

/// Issue 26, item 5: with every upstream down, a node published any notification a peer
/// showed it in its session with a higher serial. A peer announcing serial 2^62 (with a
/// snapshot that says so) would then make every real serial of the origin a regression. A
/// peer's notification must now continue ours: its delta list reaches back to our next
/// serial.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_cannot_jump_the_serial() {
    let mut origin = Origin::start().await;
    let evil = Origin::start().await;
    let cb = tempfile::tempdir().unwrap();
    let b = node(
        cb.path(),
        &origin,
        free_port(),
        free_port(),
        &[evil.addr.port()],
    );
    b.wait_serial(1).await;
    let huge = "4611686018427387904";
    let snapshot = origin.with(|s| s.repo.snapshot_path().to_string());
    let real = origin.with(|s| s.repo.file(&snapshot).unwrap());
    let forged = String::from_utf8(real.to_vec())
        .unwrap()
        .replace("serial=\"1\"", &format!("serial=\"{huge}\""));
    let h = peer_object(&evil, bytes::Bytes::from(forged));
    let real_hash = Hash::of(&real).to_hex();
    let notification = String::from_utf8(origin.with(|s| s.repo.notification()).to_vec())
        .unwrap()
        .replace("serial=\"1\"", &format!("serial=\"{huge}\""))
        .replace(&real_hash, &h.to_hex())
        .replace(&real_hash.to_uppercase(), &h.to_hex());
    assert!(notification.contains(huge) && notification.contains(&h.to_hex()));
    evil.with(|s| s.notification_override = Some(notification.into()));
    origin.stop();
    let st = b.poll().await;
    assert_eq!(st.serial, Some(1), "a peer's jump was believed: {st:?}");

    // The same jump (to serial 5000) with a delta list that reaches back to serial 2, of
    // made-up deltas the peer then answers 404 for: the deltas prove nothing unless served.
    let far = 5000u64;
    let forged = String::from_utf8(real.to_vec())
        .unwrap()
        .replace("serial=\"1\"", &format!("serial=\"{far}\""));
    let h = peer_object(&evil, bytes::Bytes::from(forged));
    let session = b.status().session_id.unwrap();
    let base = origin.base();
    let mut text = format!(
        "<notification xmlns=\"http://www.ripe.net/rpki/rrdp\" version=\"1\" session_id=\"{session}\" serial=\"{far}\">\n<snapshot uri=\"{base}{snapshot}\" hash=\"{}\"/>\n",
        h.to_hex()
    );
    for serial in 2..=far {
        let fake = Hash::of(&serial.to_be_bytes()).to_hex();
        text.push_str(&format!(
            "<delta serial=\"{serial}\" uri=\"{base}made-up/{serial}/delta.xml\" hash=\"{fake}\"/>\n"
        ));
    }
    text.push_str("</notification>\n");
    evil.with(|s| s.notification_override = Some(text.into()));
    let st = b.poll().await;
    assert_eq!(
        st.serial,
        Some(1),
        "a peer's jump by unserved deltas was believed: {st:?}"
    );

    // The origin comes back with its next serial: published, not a regression.
    origin.restart().await;
    origin.advance();
    let st = b.poll().await;
    assert_eq!(st.serial, Some(2), "{st:?}");
}

/// `cluster.publish_from_peers = false`: a node never publishes what a peer shows it, even a
/// well-formed next serial (peers still fill in files on request).
#[tokio::test(flavor = "multi_thread")]
async fn publishing_from_peers_can_be_turned_off() {
    let mut origin = Origin::start().await;
    let peer = Origin::start().await;
    let (c1, c2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let off = node_with(
        c1.path(),
        &origin,
        free_port(),
        free_port(),
        &[peer.addr.port()],
        "publish_from_peers = false",
    );
    let on = node(
        c2.path(),
        &origin,
        free_port(),
        free_port(),
        &[peer.addr.port()],
    );
    off.wait_serial(1).await;
    on.wait_serial(1).await;
    // The "peer" publishes the origin's next serial, content different from the origin's own
    // next one (which never comes: the origin is down).
    origin.advance();
    let (note, files) = origin.with(|s| {
        let mut rels = vec![s.repo.snapshot_path().to_string()];
        rels.extend(s.repo.delta_paths());
        let files: Vec<_> = rels.iter().map(|r| s.repo.file(r).unwrap()).collect();
        (s.repo.notification(), files)
    });
    for body in files {
        peer_object(&peer, body);
    }
    peer.with(|s| s.notification_override = Some(note));
    origin.stop();
    assert_eq!(off.poll().await.serial, Some(1), "published from a peer");
    assert_eq!(
        on.poll().await.serial,
        Some(2),
        "the default takes the peer's next serial"
    );
}
