//! Exports of the published repository to the file system, for web and rsync servers
//! (what krill-sync does from cron, done after every publish).
//!
//! - **Static RRDP** (`export_rrdp`): the snapshot and deltas under their relative paths,
//!   each written to a temporary file, fsynced and renamed into place; after `notify_delay`
//!   the notification, the same way, last. A web server serving the directory never hands
//!   out a notification whose files are not there. Files stay while the generation lists
//!   them (superseded ones for `cache.retain`), then go.
//! - **rsync** (`export_rsync`): the snapshot's objects, Base64-decoded, at the paths of
//!   their rsync URIs in a new directory per session and serial; then the `current` symlink
//!   is switched with one rename. An rsync daemon whose module points at `current` resolves
//!   it when a client connects, so each client copies one whole tree. Trees that stopped
//!   being current more than `rsync_retain` ago are removed. Each file's modification time
//!   is the object's own (see `objects::made_at`), so rsync clients skip unchanged objects.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{info, warn};

use crate::clock::Clock;
use crate::published::{Generation, Repo};
use crate::rrdp::content::{self, ContentError, Expected};
use crate::store::Store;

/// The notification's file name in a static RRDP export.
const NOTIFICATION: &str = "notification.xml";
/// The symlink an rsync daemon's module points at.
pub const CURRENT: &str = "current";
/// Prefix of anything being written (never served, removed if left by a crash).
const TMP_PREFIX: &str = ".tmp-";

/// Keeps a repository's exports in step with its published generation until `shutdown`.
pub async fn run(
    repo: Arc<Repo>,
    store: Arc<Store>,
    clock: Clock,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut status = repo.watch_status();
    let mut done: Option<(String, u64)> = None;
    loop {
        let published = repo.current();
        if let Some(g) = published {
            let key = (g.session_id.clone(), g.serial);
            if done.as_ref() != Some(&key) {
                match export_once(&repo, &store, &g, &clock).await {
                    Ok(()) => {
                        done = Some(key);
                        repo.report(|s| s.exported_serial = Some(g.serial));
                    }
                    Err(e) => warn!(
                        "{}: export of serial {} failed: {e}; retried at the next change",
                        repo.name(),
                        g.serial
                    ),
                }
            }
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Writes the configured exports of one generation.
pub async fn export_once(
    repo: &Repo,
    store: &Arc<Store>,
    g: &Arc<Generation>,
    clock: &Clock,
) -> io::Result<()> {
    let cfg = &repo.config;
    // Created here, not when the config is read: `rrdp-proxy check` writes nothing.
    for dir in [&cfg.export.export_rrdp, &cfg.export.export_rsync]
        .into_iter()
        .flatten()
    {
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    if let Some(dir) = &cfg.export.export_rrdp {
        write_rrdp(dir, g, store, cfg.export.notify_delay, clock).await?;
        let now = clock.unix_now();
        let removed = blocking({
            let (dir, g) = (dir.clone(), g.clone());
            move || cleanup_rrdp(&dir, &g, now)
        })
        .await?;
        info!(
            "{}: serial {} exported to {}{}",
            repo.name(),
            g.serial,
            dir.display(),
            if removed > 0 {
                format!(" ({removed} expired files removed)")
            } else {
                String::new()
            }
        );
    }
    if let Some(dir) = &cfg.export.export_rsync {
        let (dir, g2, store2, host) = (
            dir.clone(),
            g.clone(),
            store.clone(),
            cfg.export.rsync_include_host,
        );
        let retain = cfg.export.rsync_retain;
        let name = blocking(move || {
            let name = write_rsync(&dir, &g2, &store2, host)?;
            // The trees' modification times are the file system's clock, so "now" is too.
            cleanup_rsync(&dir, SystemTime::now(), retain)?;
            Ok(name)
        })
        .await?;
        info!("{}: rsync tree {name} is current", repo.name());
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

//------------ Static RRDP ---------------------------------------------------------------------

/// Writes the generation's servable files into `dir` (those missing or not known to be
/// right), then, `delay` later, the notification. Every file it writes is first entered in
/// the directory's record of its own files ([`RECORD`]): cleanup removes only what the
/// record lists, and a file is skipped only when the record says this exporter wrote it with
/// that hash (a same-size file of someone else's is overwritten).
pub async fn write_rrdp(
    dir: &Path,
    g: &Arc<Generation>,
    store: &Arc<Store>,
    delay: Duration,
    clock: &Clock,
) -> io::Result<()> {
    let (d, g2, s) = (dir.to_path_buf(), g.clone(), store.clone());
    let now = clock.unix_now();
    blocking(move || {
        let mut record = Record::load(&d)?;
        let loaded = record.files.clone();
        let live: Vec<_> = g2.files.iter().filter(|(_, f)| f.is_live(now)).collect();
        if !d.join(RECORD).exists() {
            // A directory without a record (exported by a version that kept none): the files
            // at this generation's paths with its hashes are taken as this exporter's.
            for (rel, f) in &live {
                if file_hash(&d.join(rel)).is_ok_and(|h| h == f.hash) {
                    record.files.insert(rel.to_string(), f.hash.to_hex());
                }
            }
        }
        let todo: Vec<_> = live
            .into_iter()
            .filter(|(rel, f)| {
                let ours = record.files.get(rel.as_str()) == Some(&f.hash.to_hex());
                !(ours && std::fs::metadata(d.join(rel)).is_ok_and(|m| m.len() == f.size))
            })
            .collect();
        // The record names a file before it is written: a crash leaves nothing unrecorded.
        for (rel, f) in &todo {
            record.files.insert(rel.to_string(), f.hash.to_hex());
        }
        record.files.insert(NOTIFICATION.to_string(), String::new());
        if record.files != loaded {
            record.save(&d)?;
        }
        for (rel, f) in todo {
            // Copied by the kernel, not through memory: a snapshot can be 500 MB. The store's
            // objects were hashed when written (and at start if referenced).
            copy_atomic(&s.object_path(&f.hash), &d.join(rel))
                .map_err(|e| io::Error::new(e.kind(), format!("{rel}: {e}")))?;
        }
        Ok(())
    })
    .await?;
    if !delay.is_zero() {
        clock.sleep(delay).await;
    }
    let (target, body) = (dir.join(NOTIFICATION), g.notification.clone());
    blocking(move || write_atomic(&target, &body)).await
}

/// The SHA-256 of a file, read in pieces.
fn file_hash(path: &Path) -> io::Result<crate::rrdp::Hash> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(crate::rrdp::Hash(hasher.finalize().into()))
}

/// The file in an RRDP export directory that lists what the exporter wrote there (relative
/// path and SHA-256 in hex), so that cleanup removes its own files and nothing else.
pub const RECORD: &str = ".rrdp-proxy-export";

/// The record of an export directory's own files.
#[derive(Default)]
struct Record {
    files: std::collections::BTreeMap<String, String>,
}

impl Record {
    fn load(dir: &Path) -> io::Result<Record> {
        let text = match std::fs::read_to_string(dir.join(RECORD)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(e),
        };
        let files = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(hash, rel)| (rel.to_string(), hash.to_string()))
            .collect();
        Ok(Record { files })
    }

    fn save(&self, dir: &Path) -> io::Result<()> {
        let mut text = String::new();
        for (rel, hash) in &self.files {
            let hash = if hash.is_empty() { "-" } else { hash };
            text.push_str(&format!("{hash} {rel}\n"));
        }
        write_atomic(&dir.join(RECORD), text.as_bytes())
    }
}

/// Removes the files this exporter wrote under `dir` that the generation no longer lists as
/// servable at `now`, and temporary files of its own left by a crash; then the directories
/// those removals emptied. Anything else in `dir` is someone else's and stays. Returns how
/// many files went.
pub fn cleanup_rrdp(dir: &Path, g: &Generation, now: u64) -> io::Result<usize> {
    let keep: HashSet<&str> = g
        .files
        .iter()
        .filter(|(_, f)| f.is_live(now))
        .map(|(rel, _)| rel.as_str())
        .chain([NOTIFICATION])
        .collect();
    let mut record = Record::load(dir)?;
    let gone: Vec<String> = record
        .files
        .keys()
        .filter(|rel| !keep.contains(rel.as_str()))
        .cloned()
        .collect();
    let mut removed = 0;
    for rel in &gone {
        // Only relative paths below `dir` (the record is ours, but read from disk).
        if !crate::rrdp::uri::is_safe_relative(rel) {
            record.files.remove(rel);
            continue;
        }
        let path = dir.join(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        record.files.remove(rel);
        // Directories it emptied, up to (not including) `dir`.
        let mut parent = path.parent();
        while let Some(p) = parent.filter(|p| *p != dir && p.starts_with(dir)) {
            if std::fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
    }
    if !gone.is_empty() {
        record.save(dir)?;
    }
    remove_own_temporaries(dir, &mut removed)?;
    Ok(removed)
}

/// Removes the temporary files this exporter's crashed writes left (named [`TMP_PREFIX`]…)
/// in `dir` and below.
fn remove_own_temporaries(dir: &Path, removed: &mut usize) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            remove_own_temporaries(&entry.path(), removed)?;
        } else if name.to_string_lossy().starts_with(TMP_PREFIX) {
            std::fs::remove_file(entry.path())?;
            *removed += 1;
        }
    }
    Ok(())
}

/// Copies `src` to a temporary file beside `target`, fsyncs it and renames it into place.
fn copy_atomic(src: &Path, target: &Path) -> io::Result<()> {
    let parent = target
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!("{TMP_PREFIX}copy-{}", std::process::id()));
    std::fs::copy(src, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(parent)?.sync_all()
}

/// Writes `data` to a temporary file beside `target`, fsyncs it, renames it over `target` and
/// fsyncs the directory.
fn write_atomic(target: &Path, data: &[u8]) -> io::Result<()> {
    let parent = target
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(parent)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(parent)?.sync_all()
}

//------------ rsync ---------------------------------------------------------------------------

/// The tree name of a generation.
pub fn tree_name(g: &Generation) -> String {
    format!("{}-{}", g.session_id, g.serial)
}

/// Materialises the generation's snapshot as a tree under `dir` (unless it exists) and
/// makes it `current`. Returns the tree's name.
pub fn write_rsync(
    dir: &Path,
    g: &Generation,
    store: &Store,
    include_host: bool,
) -> io::Result<String> {
    let name = tree_name(g);
    let tree = dir.join(&name);
    if !tree.is_dir() {
        let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let (_, snapshot) = g
            .snapshot()
            .ok_or_else(|| io::Error::other("the generation has no snapshot"))?;
        let file = std::fs::File::open(store.object_path(&snapshot.hash))?;
        // Checked, `max_object_size` included, when it was stored.
        let expected = Expected::new(content::Document::Snapshot, &g.session_id, g.serial)
            .with_max_object_size(u64::MAX);
        let mut dirs = HashSet::new();
        content::walk(
            io::BufReader::with_capacity(256 << 10, file),
            &expected,
            &mut |uri, b64| {
                write_object(&tmp, uri, b64, include_host, &mut dirs)
                    .map_err(|e| ContentError(e.to_string()))
            },
        )
        .map_err(|e| io::Error::other(format!("snapshot {}: {e}", snapshot.hash)))?;
        sync_tree(&tmp, &dirs)?;
        std::fs::rename(&tmp, &tree)?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    switch_current(dir, &name)?;
    Ok(name)
}

/// Writes one object at the path of its rsync URI.
fn write_object(
    tree: &Path,
    uri: &str,
    b64: &[u8],
    include_host: bool,
    dirs: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    let rel = rsync_path(uri, include_host)
        .ok_or_else(|| io::Error::other(format!("unusable rsync URI {uri:?}")))?;
    let der = content::decode(b64, &mut Vec::new())
        .map_err(|e| io::Error::other(format!("{uri}: {e}")))?;
    let path = tree.join(&rel);
    let parent = path.parent().expect("a relative path with a file name");
    if dirs.insert(parent.to_path_buf()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&der)?;
    if let Some(t) = crate::objects::made_at(&rel, &der).filter(|t| *t >= 0) {
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64))?;
    }
    Ok(())
}

/// fsyncs every file of a freshly written tree, then its directories, so the tree is whole
/// on disk before it is renamed into view.
fn sync_tree(tree: &Path, dirs: &HashSet<PathBuf>) -> io::Result<()> {
    for d in dirs {
        for entry in std::fs::read_dir(d)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::File::open(entry.path())?.sync_all()?;
            }
        }
        std::fs::File::open(d)?.sync_all()?;
    }
    std::fs::File::open(tree)?.sync_all()
}

/// The path inside the tree for an rsync URI: `module/path` (or `host/module/path`). Every
/// segment must be a plain name: nothing can be written outside the tree.
pub fn rsync_path(uri: &str, include_host: bool) -> Option<String> {
    let rest = uri.strip_prefix("rsync://")?;
    let (host, path) = rest.split_once('/')?;
    let segments: Vec<&str> = path.split('/').collect();
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.starts_with(TMP_PREFIX)
            && !s.contains(['\\', '\0'])
    };
    if host.is_empty() || !plain(host) || segments.iter().any(|s| !plain(s)) {
        return None;
    }
    Some(if include_host {
        format!("{host}/{path}")
    } else {
        path.to_string()
    })
}

/// Points `current` at `name` with one rename; the tree it pointed at before gets its
/// modification time set to now: the moment it stopped being current.
fn switch_current(dir: &Path, name: &str) -> io::Result<()> {
    let link = dir.join(CURRENT);
    let previous = std::fs::read_link(&link).ok();
    if previous.as_deref() == Some(Path::new(name)) {
        return Ok(());
    }
    let tmp = dir.join(format!("{TMP_PREFIX}{CURRENT}-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)?;
    std::fs::rename(&tmp, &link)?;
    std::fs::File::open(dir)?.sync_all()?;
    if let Some(prev) = previous {
        let _ = std::fs::File::open(dir.join(prev)).and_then(|f| f.set_modified(SystemTime::now()));
    }
    Ok(())
}

/// Whether `name` is a tree's name as [`tree_name`] makes it: a session (a UUID) and a serial.
fn is_tree_name(name: &str) -> bool {
    let Some((session, serial)) = name.rsplit_once('-') else {
        return false;
    };
    !serial.is_empty()
        && serial.bytes().all(|b| b.is_ascii_digit())
        && session.len() == 36
        && uuid::Uuid::parse_str(session).is_ok()
}

/// Removes trees that are not current and stopped being current before `now - retain`, and
/// anything temporary. Returns how many trees went.
pub fn cleanup_rsync(dir: &Path, now: SystemTime, retain: Duration) -> io::Result<usize> {
    let current = std::fs::read_link(dir.join(CURRENT)).ok();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == CURRENT || current.as_deref() == Some(Path::new(&name)) {
            continue;
        }
        // Only trees this exporter made (and its temporaries): anything else is someone
        // else's.
        let ours = is_tree_name(&name);
        let tmp = name.starts_with(TMP_PREFIX);
        if !ours && !tmp {
            continue;
        }
        let meta = entry.metadata()?;
        let since = meta.modified()?;
        let expired = ours && since + retain <= now;
        let stale_tmp = tmp && since + Duration::from_secs(3600) <= now;
        if !meta.is_dir() || !(expired || stale_tmp) {
            continue;
        }
        std::fs::remove_dir_all(entry.path())?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_paths_stay_inside_the_tree() {
        assert_eq!(
            rsync_path("rsync://h/repo/a/b.cer", false).as_deref(),
            Some("repo/a/b.cer")
        );
        assert_eq!(
            rsync_path("rsync://h/repo/a/b.cer", true).as_deref(),
            Some("h/repo/a/b.cer")
        );
        for bad in [
            "https://h/repo/x.cer",
            "rsync://h/repo/../x.cer",
            "rsync://h/repo//x.cer",
            "rsync://h/repo/./x.cer",
            "rsync://h/repo/a\\..\\x.cer",
            "rsync://../repo/x.cer",
            "rsync://h/",
            "rsync://h/repo/.tmp-current-1",
        ] {
            assert_eq!(rsync_path(bad, true), None, "{bad}");
        }
    }
}
