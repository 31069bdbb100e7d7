//! krill-sync parity: static RRDP and rsync exports, a directory as source, content guards,
//! and the one-shot `sync` mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use rrdp_proxy::demo::Publisher;
use rrdp_proxy::rrdp::{Hash, Notification};
use rrdp_proxy::testing::export;
use rrdp_proxy::unix_now;

use crate::support::{fetch_consistent, free_port, path_of, Origin, Proxy};

impl Proxy {
    /// Waits until the exports hold the published serial.
    pub async fn wait_exported(&self, serial: u64) {
        self.wait(&format!("serial {serial} exported"), |s| {
            s.exported_serial == Some(serial)
        })
        .await;
    }
}

/// Every file under `dir` (relative path → bytes), symlinks followed.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The notification in a static export and every file it references, read from the
/// directory: each must be there with its hash. Returns the serial.
fn check_export(dir: &Path) -> u64 {
    let n = Notification::parse(&std::fs::read(dir.join("notification.xml")).unwrap()).unwrap();
    let mut refs = vec![&n.snapshot];
    refs.extend(n.deltas.iter().map(|d| &d.file));
    for f in refs {
        let rel = path_of(&f.uri).trim_start_matches("/rrdp/").to_string();
        let data = std::fs::read(dir.join(&rel)).unwrap_or_else(|e| {
            panic!("serial {}: {rel} referenced but unreadable: {e}", n.serial)
        });
        assert_eq!(Hash::of(&data), f.hash, "{rel}");
    }
    n.serial
}

#[tokio::test(flavor = "multi_thread")]
async fn the_static_rrdp_export_is_the_origins_files_with_the_notification_last() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rrdp");
    let proxy = Proxy::start(
        cache.path(),
        &origin.base(),
        &format!("export_rrdp = \"{}\"", dir.display()),
    );
    proxy.wait_exported(1).await;

    // A reader that keeps reading the export as a web server would, while serials come.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                check_export(&dir);
                reads += 1;
            }
            reads
        })
    };
    for serial in 2..=6 {
        origin.advance();
        proxy.poll().await;
        proxy.wait_exported(serial).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "the reader read");

    // Byte for byte the origin's files, and the notification the proxy serves.
    assert_eq!(check_export(&dir), 6);
    let served = fetch_consistent(proxy.port).await;
    assert_eq!(
        std::fs::read(dir.join("notification.xml")).unwrap(),
        served.1[0].1
    );
    for rel in std::iter::once(origin.with(|s| s.repo.snapshot_path().to_string()))
        .chain(origin.with(|s| s.repo.delta_paths()))
    {
        let want = origin.with(|s| s.repo.file(&rel).unwrap());
        assert_eq!(
            std::fs::read(dir.join(&rel)).unwrap(),
            want.to_vec(),
            "{rel}"
        );
    }
    // Written last: no referenced file is newer than the notification.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let notified = mtime(&dir.join("notification.xml"));
    for rel in tree(&dir).keys() {
        assert!(
            mtime(&dir.join(rel)) <= notified,
            "{rel} written after the notification"
        );
    }

    // Superseded snapshots stay for cache.retain (2h here), then go; referenced files stay.
    let g = proxy.shared.repos[0].current().unwrap();
    let old_snapshot = tree(&dir)
        .keys()
        .filter(|k| k.ends_with("snapshot.xml"))
        .count();
    assert!(old_snapshot > 1, "superseded snapshots are kept");
    assert_eq!(export::cleanup_rrdp(&dir, &g, unix_now()).unwrap(), 0);
    let removed = export::cleanup_rrdp(&dir, &g, unix_now() + 2 * 3600 + 1).unwrap();
    assert_eq!(
        removed,
        old_snapshot - 1,
        "every superseded snapshot, nothing else"
    );
    assert_eq!(check_export(&dir), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_delay_writes_the_files_first_and_the_notification_later() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rrdp");
    let (proxy, clock) = Proxy::start_manual(
        cache.path(),
        &origin.base(),
        &format!("export_rrdp = \"{}\"\nnotify_delay = \"3s\"", dir.display()),
    );
    // The first export waits notify_delay too.
    clock.until_waited_on().await;
    clock.advance(Duration::from_secs(3));
    proxy.wait_exported(1).await;
    origin.advance();
    let snapshot = dir.join(origin.with(|s| s.repo.snapshot_path().to_string()));
    proxy.poll().await;
    // Once the exporter waits out notify_delay, the new snapshot is in the directory and the
    // notification is still serial 1: it comes notify_delay later.
    clock.until_waited_on().await;
    assert!(snapshot.exists(), "the files are written before the wait");
    assert_eq!(check_export(&dir), 1);
    clock.advance(Duration::from_secs(3));
    proxy.wait_exported(2).await;
    assert_eq!(check_export(&dir), 2);
}

/// An rsync daemon from Debian serving `module_dir` on a free loopback port.
struct RsyncDaemon {
    port: u16,
    child: std::process::Child,
}

impl RsyncDaemon {
    fn start(module_dir: &Path, work: &Path) -> RsyncDaemon {
        let port = free_port();
        let conf = work.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nread only = yes\npid file = {}/rsyncd.pid\n[repo]\npath = {}\n",
                work.display(),
                module_dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--config={}", conf.display()))
            .spawn()
            .expect("rsync is installed (Debian package rsync)");
        crate::support::wait_listening(port);
        RsyncDaemon { port, child }
    }
}

/// Copies the daemon's module into a fresh directory with the rsync client.
fn rsync_copy(port: u16, dest: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let st = Command::new("rsync")
        .args(["-rt", "--delete"])
        .arg(format!("rsync://127.0.0.1:{port}/repo/"))
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success(), "rsync client failed");
    tree(dest)
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The snapshot's objects as an rsync tree would hold them (module/path → bytes).
fn objects_as_tree(repo: &Publisher) -> BTreeMap<String, Vec<u8>> {
    repo.objects()
        .iter()
        .map(|(uri, data)| (export::rsync_path(uri, false).unwrap(), data.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rsync_export_switches_whole_trees_under_a_copying_rsync_client() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // The daemon, run as root, reads as nobody: the tree must be world-readable.
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = out.path().join("rsync");
    let proxy = Proxy::start(
        cache.path(),
        &origin.base(),
        &format!("export_rsync = \"{}\"", dir.display()),
    );
    proxy.wait_exported(1).await;
    let current = dir.join(export::CURRENT);
    assert_eq!(tree(&current), origin.with(|s| objects_as_tree(&s.repo)));

    // rsync clients copy through the daemon while new serials switch `current` under them:
    // every copy is exactly one whole tree.
    let daemon = RsyncDaemon::start(&current, out.path());
    let copies = out.path().join("copies");
    let copier = {
        let (copies, port) = (copies.clone(), daemon.port);
        std::thread::spawn(move || {
            (0..12)
                .map(|i| rsync_copy(port, &copies.join(i.to_string())))
                .collect::<Vec<_>>()
        })
    };
    let mut trees = vec![tree(&current)];
    for serial in 2..=5 {
        origin.advance();
        proxy.poll().await;
        proxy.wait_exported(serial).await;
        let want = origin.with(|s| objects_as_tree(&s.repo));
        assert_eq!(tree(&current), want, "serial {serial}");
        trees.push(want);
    }
    for (i, copy) in copier.join().unwrap().into_iter().enumerate() {
        assert!(trees.contains(&copy), "copy {i} is not one whole tree");
    }
    assert_eq!(
        rsync_copy(daemon.port, &out.path().join("last")),
        trees[trees.len() - 1]
    );

    // Superseded trees stay for rsync_retain (1h), then go; `current` stays.
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&dir).len(),
        6,
        "five trees and current: {:?}",
        names(&dir)
    );
    let now = std::time::SystemTime::now();
    assert_eq!(
        export::cleanup_rsync(&dir, now, std::time::Duration::from_secs(3600)).unwrap(),
        0
    );
    let later = now + std::time::Duration::from_secs(3601);
    assert_eq!(
        export::cleanup_rsync(&dir, later, std::time::Duration::from_secs(3600)).unwrap(),
        4
    );
    assert_eq!(tree(&current), trees[trees.len() - 1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publication_servers_directory_is_a_source() {
    let rrdp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    // The Publication Server names its files under the public URI the proxy serves.
    let public = format!("http://127.0.0.1:{port}/rrdp/");
    let mut repo = Publisher::new(&public);
    repo.write_to(rrdp.path()).unwrap();
    let source = format!("{}/", rrdp.path().display());
    let text =
        crate::support::config_text(port, admin, cache.path(), &source, "poll_interval = \"1h\"");
    let proxy = Proxy::start_with(text, port, admin);
    proxy.wait_serial(1).await;
    assert_eq!(fetch_consistent(port).await.0.serial, 1);

    // New serials; Krill deletes superseded files at once, the proxy keeps serving them.
    let first_snapshot = repo.snapshot_path().to_string();
    for _ in 0..3 {
        repo.advance();
        repo.write_to(rrdp.path()).unwrap();
    }
    proxy.poll().await;
    assert_eq!(fetch_consistent(port).await.0.serial, 4);
    assert!(!rrdp.path().join(&first_snapshot).exists());
    assert_eq!(
        proxy.get(&format!("/rrdp/{first_snapshot}")).await.status,
        200
    );

    // Unchanged: answered from the file's identity (no change, nothing fetched).
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);

    // A broken file in the directory is refused like one over HTTP.
    repo.advance();
    repo.write_to(rrdp.path()).unwrap();
    std::fs::write(rrdp.path().join(repo.snapshot_path()), b"<snapshot/>").unwrap();
    let st = proxy.poll().await;
    assert!(st.last_error.unwrap().contains("mismatch"));
    assert_eq!(fetch_consistent(port).await.0.serial, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_guards_refuse_a_shrunk_snapshot_but_not_a_declared_reset() {
    let origin = Origin::start().await;
    let count = origin.with(|s| s.repo.objects().len() as u64);
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        cache.path(),
        &origin.base(),
        &format!("min_objects = {}\nmax_shrink = 20", count + 1000),
    );
    // Too few objects: nothing is published.
    let st = proxy.wait_first_poll().await;
    assert!(
        st.last_error.unwrap().contains("fewer than min_objects"),
        "{:?}",
        proxy.status()
    );
    assert_eq!(proxy.shared.metrics.poll_errors("content_guard"), 1);
    drop(proxy);

    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "max_shrink = 20");
    proxy.wait_serial(1).await;

    // The next serial's snapshot lost most of its objects (hash announced correctly).
    origin.advance();
    origin.with(|s| {
        let rel = s.repo.snapshot_path().to_string();
        let good = s.repo.file(&rel).unwrap();
        let text = String::from_utf8(good.to_vec()).unwrap();
        let mut parts: Vec<&str> = text.split("<publish ").collect();
        let keep = (parts.len() / 4).max(1); // the part before the first publish, at least
        let tail = parts
            .last()
            .unwrap()
            .split("</publish>")
            .nth(1)
            .unwrap()
            .to_string();
        parts.truncate(keep);
        let shrunk = format!("{}{}", parts.join("<publish "), tail);
        let n = String::from_utf8(s.repo.notification().to_vec()).unwrap();
        s.notification_override = Some(Bytes::from(n.replace(
            &Hash::of(&good).to_hex(),
            &Hash::of(shrunk.as_bytes()).to_hex(),
        )));
        s.repo.corrupt(&rel, Bytes::from(shrunk));
    });
    let st = proxy.poll().await;
    let err = st.last_error.unwrap();
    assert!(
        err.contains("shrank") && err.contains("max_shrink = 20%"),
        "{err}"
    );
    assert_eq!(
        fetch_consistent(proxy.port).await.0.serial,
        1,
        "still the last good"
    );
    assert_eq!(proxy.shared.metrics.poll_errors("content_guard"), 1);

    // A declared session reset may be small: published.
    origin.with(|s| {
        s.notification_override = None;
        s.repo = Publisher::new(s.repo.base_uri());
    });
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);
    let (n, _) = fetch_consistent(proxy.port).await;
    assert_eq!(
        n.session_id,
        origin.with(|s| s.repo.session_id().to_string())
    );
}

fn sync(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rrdp-proxy"))
        .args(["sync", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn one_shot_sync_exits_with_a_clear_status() {
    let mut origin = Origin::start().await;
    let work = tempfile::tempdir().unwrap();
    let export = work.path().join("rrdp");
    let write = |upstream: &str| -> PathBuf {
        let p = work.path().join("sync.toml");
        std::fs::write(
            &p,
            format!(
                "[server]\nlisten = [\"127.0.0.1:1\"]\n[cache]\ndir = \"{}\"\n[[repository]]\npublic = \"https://rrdp.example.net/rrdp/\"\nupstream = \"{upstream}\"\nexport_rrdp = \"{}\"\n",
                work.path().join("cache").display(),
                export.display()
            ),
        )
        .unwrap();
        p
    };
    let config = write(&origin.base());

    let (code, out, err) = tokio::task::spawn_blocking({
        let c = config.clone();
        move || sync(&c)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("published session") && out.contains("serial 1"),
        "{out}"
    );
    assert_eq!(check_export(&export), 1);

    let c = config.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || sync(&c)).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("unchanged at serial 1"), "{out}");

    // The origin down: 2, and the export stays as it was.
    origin.stop();
    let c = config.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || sync(&c)).await.unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("serial 1 stays published"), "{err}");
    assert_eq!(check_export(&export), 1);
    origin.advance();
    origin.restart().await;

    // Another process owning the cache (a run, or a running proxy): 3, nothing done, and
    // the message names the owner.
    let owner = rrdp_proxy::testing::Owner::take(&work.path().join("cache")).unwrap();
    let c = config.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || sync(&c)).await.unwrap();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("in use by process {}", std::process::id())),
        "{err}"
    );
    drop(owner);
    let c = config.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || sync(&c)).await.unwrap();
    assert_eq!((code, check_export(&export)), (0, 2), "{out}");

    // A bad config: 1, with the key.
    let bad = write("ftp://nowhere/");
    let (code, _, err) = tokio::task::spawn_blocking(move || sync(&bad))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("repository[0].upstream"), "{err}");
}

/// Regression (issue 26, item 11): cleanup removed every file its generation did not list,
/// whoever's it was, and a same-size file at an exported path was taken for the right one.
/// Now it removes only what its record says it wrote, and skips only files it wrote.
#[tokio::test(flavor = "multi_thread")]
async fn the_rrdp_export_cleans_up_only_its_own_files() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rrdp");
    // Someone else's files, there before the first export: one of them where the next
    // serial's snapshot goes, the same size as that snapshot.
    origin.advance();
    let next_snapshot = origin.with(|s| s.repo.snapshot_path().to_string());
    let size = origin.with(|s| s.repo.file(&next_snapshot).unwrap().len());
    std::fs::create_dir_all(dir.join("operator")).unwrap();
    std::fs::write(dir.join("index.html"), "hello").unwrap();
    std::fs::write(dir.join("operator/notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(dir.join(&next_snapshot).parent().unwrap()).unwrap();
    std::fs::write(dir.join(&next_snapshot), vec![b'x'; size]).unwrap();

    let proxy = Proxy::start(
        cache.path(),
        &origin.base(),
        &format!("export_rrdp = \"{}\"", dir.display()),
    );
    proxy.wait_exported(2).await;
    assert_eq!(
        check_export(&dir),
        2,
        "the same-size stranger was overwritten"
    );
    for serial in 3..=5 {
        origin.advance();
        proxy.poll().await;
        proxy.wait_exported(serial).await;
    }
    assert_eq!(check_export(&dir), 5);
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("operator/notes.txt")).unwrap(),
        "mine"
    );
}
