//! The durable cache: retention and garbage collection on an injected clock, damaged objects,
//! the disk limit, and kill -9 at random moments of churn.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rrdp_proxy::rrdp::Hash;
use rrdp_proxy::testing::GC_GRACE;
use rrdp_proxy::unix_now;

use crate::support::{
    damage, free_port, http, object_path, referenced, wait_listening, Origin, Proxy,
};

#[tokio::test(flavor = "multi_thread")]
async fn superseded_files_are_kept_for_retain_then_collected() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let (_, old) = referenced(proxy.port).await.unwrap();
    let (old_path, old_hash) = old[0].clone();
    origin.advance();
    proxy.poll().await;
    let (_, current) = referenced(proxy.port).await.unwrap();
    assert!(
        current.iter().all(|(p, _)| *p != old_path),
        "serial 1's snapshot is superseded"
    );

    let shared = &proxy.shared;
    let retain = shared.config().retain().as_secs();
    let now = unix_now();
    let rel = old_path.strip_prefix("/rrdp/").unwrap();
    let generation = shared.repos[0].current().unwrap();
    assert!(
        generation.file(rel, now).is_some(),
        "servable within retain"
    );
    assert!(
        generation.file(rel, now + retain + 1).is_none(),
        "not after"
    );
    assert!(shared.live_objects(now).contains(&old_hash));
    let later_live = shared.live_objects(now + retain + 1);
    assert!(!later_live.contains(&old_hash));

    // Collect as if retain and the grace period had passed.
    let later = SystemTime::now() + Duration::from_secs(retain) + GC_GRACE;
    let removed = shared
        .store
        .collect_garbage(later_live, later)
        .await
        .unwrap();
    assert!(removed >= 1);
    assert!(!object_path(cache.path(), &old_hash).exists());
    for (path, hash) in &current {
        assert!(
            object_path(cache.path(), hash).exists(),
            "{path} is referenced: kept"
        );
        assert_eq!(Hash::of(&proxy.get(path).await.body), *hash);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_referenced_object_is_not_served_and_is_fetched_again() {
    let mut origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let (_, files) = referenced(proxy.port).await.unwrap();
    let (snap_path, snap_hash) = files[0].clone();
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();

    // Flip one byte: same size, wrong hash.
    let bytes = damage(cache.path(), &snap_hash);

    // With the origin down, a generation that cannot be served whole is not served.
    origin.stop();
    let proxy = Proxy::start_with(text, port, admin);
    let st = proxy.wait_first_poll().await;
    assert_eq!(st.serial, None, "not published: its snapshot is damaged");
    assert_eq!(proxy.get("/rrdp/notification.xml").await.status, 503);
    let r = proxy.get(&snap_path).await;
    assert_ne!(r.status, 200);
    assert_ne!(r.body, bytes, "the damaged bytes are never served");

    // The origin is back: the snapshot is fetched again and everything is whole.
    origin.restart().await;
    proxy.poll().await;
    assert_eq!(proxy.status().serial, Some(1));
    let r = proxy.get(&snap_path).await;
    assert_eq!((r.status, Hash::of(&r.body)), (200, snap_hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_retained_object_is_caught_before_its_first_byte() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let (_, files) = referenced(proxy.port).await.unwrap();
    let (old_path, old_hash) = files[0].clone();
    origin.advance();
    proxy.poll().await;
    let (text, port, admin) = (proxy.config_text.clone(), proxy.port, proxy.admin_port);
    proxy.stop();

    damage(cache.path(), &old_hash);
    let p = object_path(cache.path(), &old_hash);

    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(2).await;
    let r = proxy.get(&old_path).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert!(!p.exists(), "removed from the store");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_limit_refuses_new_generations_and_keeps_serving() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let before = referenced(proxy.port).await.unwrap();
    proxy.stop();

    let text = proxy
        .config_text
        .replace("retain = \"2h\"", "retain = \"2h\"\ndisk_limit = \"1KiB\"");
    // The new serial is there before the proxy starts, so its first poll is the one refused.
    origin.advance();
    let proxy = Proxy::start_with(text, proxy.port, proxy.admin_port);
    let st = proxy.wait_first_poll().await;
    assert!(st.last_error.unwrap().contains("cache.disk_limit"));
    let metrics = http(proxy.admin_port, "GET", "/metrics", &[]).await.text();
    assert!(
        metrics.contains("rrdp_proxy_poll_errors_total{reason=\"disk_limit\"} 1"),
        "{metrics}"
    );
    let after = referenced(proxy.port).await.unwrap();
    assert_eq!(
        after.0, before.0,
        "the published generation is still served"
    );
    for (path, hash) in after.1 {
        assert_eq!(Hash::of(&proxy.get(&path).await.body), hash);
    }
}

/// Runs the real binary on a config file.
fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rrdp-proxy"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,access=off")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(config.with_extension("log"))
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

/// kill -9 at random moments while the origin churns (a new serial as soon as the proxy has
/// its snapshot) and trickles bodies (so the proxy is often mid-download, mid-write or
/// mid-publish); after every restart, with the origin down,
/// the proxy must serve a consistent repository, and no object on disk may be torn.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_never_leaves_an_inconsistent_repository() {
    const ITERATIONS: usize = 25;
    // A failure is re-run with the same moments: CRASH_SEED=<the printed seed> cargo test ...
    let seed: u64 = match std::env::var("CRASH_SEED") {
        Ok(s) => s.parse().expect("CRASH_SEED is a number"),
        Err(_) => rand::thread_rng().gen(),
    };
    println!("crash test seed {seed} (re-run with CRASH_SEED={seed})");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);

    let mut origin = Origin::start().await;
    origin.with(|s| {
        s.trickle = true;
        s.advance_after_snapshot = true;
    });
    let cache = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config = cache.path().join("proxy.toml");
    std::fs::write(
        &config,
        crate::support::config_text(
            port,
            admin,
            &cache.path().join("store"),
            &origin.base(),
            "poll_interval = \"10ms\"",
        ),
    )
    .unwrap();
    let mut published_once = false;
    let mut last_serial = 0;
    let mut serials = Vec::new();
    for i in 0..ITERATIONS {
        let mut child = spawn(&config);
        wait_listening(port);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        origin.stop();

        let mut child = spawn(&config);
        wait_listening(port);
        match referenced(port).await {
            None => assert!(
                !published_once,
                "iteration {i}: a published repository was lost"
            ),
            Some((n, files)) => {
                published_once = true;
                // What survives a crash is the last published generation: never older than
                // what an earlier restart already served.
                assert!(n.serial >= last_serial, "iteration {i}: serial went back");
                last_serial = n.serial;
                serials.push(n.serial);
                for (path, hash) in files {
                    let r = http(port, "GET", &path, &[]).await;
                    assert_eq!(
                        r.status, 200,
                        "iteration {i}: {path} of serial {}",
                        n.serial
                    );
                    assert_eq!(Hash::of(&r.body), hash, "iteration {i}: {path}");
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // No torn object: every file under objects/ has the hash it is named by.
        for sub in std::fs::read_dir(cache.path().join("store/objects")).unwrap() {
            for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                let f = f.unwrap();
                let name = f.file_name().into_string().unwrap();
                let mut data = std::fs::read(f.path()).unwrap();
                // A gzip variant must decode to the object it is named after.
                let name = match name.strip_suffix(".gz") {
                    Some(base) => {
                        use std::io::Read;
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(&data[..])
                            .read_to_end(&mut out)
                            .unwrap_or_else(|e| panic!("iteration {i}: torn gzip {name}: {e}"));
                        data = out;
                        base.to_string()
                    }
                    None => name,
                };
                assert_eq!(Hash::of(&data).to_hex(), name, "iteration {i}: torn object");
            }
        }
        origin.restart().await;
    }
    println!("serials served after each crash: {serials:?}");
    if std::env::var_os("KEEP_CRASH_LOG").is_some() {
        std::fs::copy(config.with_extension("log"), "/tmp/crash-test.log").unwrap();
    }
    assert!(
        published_once,
        "the proxy published at least once in {ITERATIONS} runs"
    );
}
