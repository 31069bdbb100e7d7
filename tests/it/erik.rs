//! The Erik relay (`server.erik`) over the real objects of a Krill testbed: the index, its
//! partitions and every object they reach, by hash; what changes with a serial; what is
//! never served (another FQDN, an unknown hash, an object only a refused round carries).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use rpki::repository::manifest::Manifest;
use rrdp_proxy::erik::wire::{Index, Partition};
use rrdp_proxy::rrdp::Hash;
use rrdp_proxy::RequestKind;

use crate::support::*;
use crate::validation::{break_r1, recorded, setup_with_server, tal, R1, TESTBED};

const INDEX: &str = "/.well-known/erik/index/rrdp.test";

fn ni(hash: &Hash) -> String {
    format!(
        "/.well-known/ni/sha-256/{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.0)
    )
}

/// Waits until the relay serves the objects of `serial` (it switches right after the
/// generation is published).
async fn erik_at(proxy: &Proxy, serial: u64) {
    proxy
        .wait("the Erik part", |s| s.erik_serial == Some(serial))
        .await;
}

/// What an Erik client mirrors from the proxy: every object the index reaches, by URI, each
/// checked against the hash it was asked for; and the partitions' hashes.
async fn mirror(proxy: &Proxy) -> (BTreeMap<String, Vec<u8>>, Vec<Hash>) {
    let r = proxy.get(INDEX).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding"), None, "gzip only when asked");
    let index = Index::from_der(&r.body).unwrap();
    assert_eq!(index.scope, "rrdp.test");
    let mut out = BTreeMap::new();
    let mut partitions = Vec::new();
    for p in &index.partitions {
        let r = proxy.get(&ni(&p.hash)).await;
        assert_eq!(r.status, 200, "partition {}", p.hash);
        assert_eq!(Hash::of(&r.body), p.hash);
        assert_eq!(r.body.len() as u64, p.size);
        partitions.push(p.hash);
        for m in Partition::from_der(&r.body).unwrap().manifests {
            let r = proxy.get(&ni(&m.hash)).await;
            assert_eq!(r.status, 200, "manifest {}", m.locations[0]);
            assert_eq!(Hash::of(&r.body), m.hash);
            let uri = &m.locations[0];
            let dir = &uri[..uri.rfind('/').unwrap() + 1];
            let mft = Manifest::decode(Bytes::from(r.body.clone()), false).unwrap();
            out.insert(uri.clone(), r.body);
            for item in mft.content().iter() {
                let hash = Hash(item.hash().as_ref().try_into().unwrap());
                let r = proxy.get(&ni(&hash)).await;
                assert_eq!(r.status, 200, "{:?} listed on {uri}", item.file());
                assert_eq!(Hash::of(&r.body), hash);
                let name = std::str::from_utf8(item.file()).unwrap();
                out.insert(format!("{dir}{name}"), r.body);
            }
        }
    }
    (out, partitions)
}

/// The objects of a recorded state a manifest reaches (the manifests and what they list).
fn reachable(objects: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (uri, der) in objects.iter().filter(|(u, _)| u.ends_with(".mft")) {
        out.insert(uri.clone(), der.clone());
        let dir = &uri[..uri.rfind('/').unwrap() + 1];
        let mft = Manifest::decode(Bytes::from(der.clone()), false).unwrap();
        for item in mft.content().iter() {
            let listed = format!("{dir}{}", std::str::from_utf8(item.file()).unwrap());
            if let Some(d) = objects.get(&listed) {
                out.insert(listed, d.clone());
            }
        }
    }
    out
}

#[tokio::test]
async fn an_erik_client_mirrors_what_the_manifests_list_and_a_serial_changes_one_partition() {
    let cache = tempfile::tempdir().unwrap();
    let settings = format!("validate = \"refuse\"\n{}", tal());
    let (origin, proxy, clock) = setup_with_server(cache.path(), &settings, "erik = true").await;
    erik_at(&proxy, 1).await;
    let (a, _) = recorded("a");
    let (mirrored, before) = mirror(&proxy).await;
    assert_eq!(mirrored, reachable(&a));
    assert!(mirrored.len() > 5, "{}", mirrored.len());

    // Conditional requests, gzip when asked, and no index for another FQDN.
    let r = proxy.get(INDEX).await;
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let again = http(proxy.port, "GET", INDEX, &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    let since = http(proxy.port, "GET", INDEX, &[("If-Modified-Since", &lm)]).await;
    assert_eq!(since.status, 304);
    // Asked for gzip: the gzip variant if it is smaller, else the identity body.
    let gz = http(proxy.port, "GET", INDEX, &[("Accept-Encoding", "gzip")]).await;
    let mut decoded = Vec::new();
    if gz.header("content-encoding") == Some("gzip") {
        use std::io::Read;
        flate2::read::GzDecoder::new(gz.body.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
    } else {
        decoded = gz.body.clone();
    }
    assert_eq!(decoded, r.body);
    assert_eq!(
        proxy.get("/.well-known/erik/index/other.test").await.status,
        404
    );
    assert_eq!(proxy.get(&ni(&Hash([7; 32]))).await.status, 404);
    assert_eq!(proxy.get("/.well-known/ni/sha-256/short").await.status, 404);
    let post = http(proxy.port, "POST", INDEX, &[]).await;
    assert_eq!(post.status, 405);

    // A refused serial changes nothing, and its broken object is not served.
    let refused = break_r1(&origin);
    assert_eq!(
        proxy.poll().await.serial,
        Some(1),
        "serial {refused} refused"
    );
    let broken = origin.with(|s| Hash::of(&s.repo.objects()[&format!("{TESTBED}{R1}")]));
    assert_eq!(proxy.get(&ni(&broken)).await.status, 404);
    assert_eq!(proxy.get(INDEX).await.body, r.body);

    // The next state Krill made (one CA changed): one partition changes, and the mirror is
    // the new state's.
    let (b, b_at) = recorded("b");
    let serial = origin.with(|s| {
        let now = s.repo.objects();
        let mut changes: Vec<(String, Option<Vec<u8>>)> = b
            .iter()
            .filter(|(u, d)| now.get(*u) != Some(*d))
            .map(|(u, d)| (u.clone(), Some(d.clone())))
            .collect();
        changes.extend(
            now.keys()
                .filter(|u| !b.contains_key(*u))
                .map(|u| (u.clone(), None)),
        );
        s.repo.apply(changes);
        s.repo.serial()
    });
    clock.advance(Duration::from_secs(
        b_at.saturating_sub(proxy.shared.clock().unix_now()),
    ));
    proxy.poll().await;
    erik_at(&proxy, serial).await;
    let (mirrored, after) = mirror(&proxy).await;
    assert_eq!(mirrored, reachable(&b));
    let new: HashSet<_> = after.iter().filter(|h| !before.contains(h)).collect();
    assert_eq!(
        new.len(),
        1,
        "one partition changed: {before:?} -> {after:?}"
    );
    assert_ne!(proxy.get(INDEX).await.body, r.body);

    let m = &proxy.shared.metrics;
    assert!(m.requests_with_status(&[RequestKind::ErikObject], 200) > 10);
    assert!(m.requests_with_status(&[RequestKind::ErikIndex], 404) >= 1);
    let status = http(proxy.admin_port, "GET", "/status", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(v["erik"]["fqdns"][0]["fqdn"], "rrdp.test", "{v:#}");
    assert_eq!(v["erik"]["fqdns"][0]["partitions"], after.len());
}

#[tokio::test]
async fn a_restarted_node_serves_the_same_index_after_its_first_round() {
    let cache = tempfile::tempdir().unwrap();
    let settings = format!("validate = \"refuse\"\n{}", tal());
    let (mut origin, proxy, _) = setup_with_server(cache.path(), &settings, "erik = true").await;
    erik_at(&proxy, 1).await;
    let index = proxy.get(INDEX).await.body;
    assert!(Index::from_der(&index).is_ok());
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    let at = rrdp_proxy::ManualClock::at_unix(proxy.shared.clock().unix_now());
    drop(proxy);
    origin.stop();
    let proxy = Proxy::start_with_clock(text, port, admin, rrdp_proxy::Clock::Manual(at));
    // The origin is down: the first round fails, and the relay is rebuilt from the stored
    // generation right after it.
    erik_at(&proxy, 1).await;
    assert_eq!(proxy.get(INDEX).await.body, index);
    let (mirrored, _) = mirror(&proxy).await;
    assert_eq!(mirrored, reachable(&recorded("a").0));
}

#[tokio::test]
async fn without_erik_the_paths_are_not_found() {
    let cache = tempfile::tempdir().unwrap();
    let (_origin, proxy, _) = setup_with_server(cache.path(), "", "").await;
    proxy.wait_serial(1).await;
    assert_eq!(proxy.get(INDEX).await.status, 404);
    let v = http(proxy.admin_port, "GET", "/status", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&v.body).unwrap();
    assert!(v["erik"].is_null());
}
