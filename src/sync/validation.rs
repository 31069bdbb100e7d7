//! RPKI validation of a stored round (`validate`, `tal`, `pre_validate`): before it is
//! published when it may refuse it (`refuse`, `pre_validate`), after when it only reports
//! (`warn`).
//!
//! The repository state is brought up to the round's serial — from the last validated state
//! and the round's deltas when they connect, else from the snapshot — and validated with
//! [`objects`]: publication points nothing changed are replayed, the others
//! checked, signed objects read and verified only when their result is not cached. Trust
//! anchor certificates are fetched at most every ten minutes, the last good one kept
//! (also across restarts, in the store's index directory) for when the fetch fails. The
//! operator's `pre_validate` command then sees the candidate tree. The work runs on the
//! blocking pool. Memory holds a hash and a cached result per object, the DER of the
//! certificates, manifests and CRLs, and one signed object at a time: it grows with the
//! number of objects, not with their size.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{info, warn};
use tokio::io::AsyncReadExt;

use crate::config::{RepositoryConfig, TaSource, Validate};
use crate::objects::{self, Anchor, Cache, ObjectIndex, ObjectKind, Report};
use crate::origin::client::{within, Client};
use crate::published::{PreValidated, Round, ValidationStatus};
use crate::rrdp::content::{self, ContentError, Expected};
use crate::rrdp::Hash;
use crate::store::Store;

/// The largest trust anchor certificate accepted.
const MAX_TA_SIZE: u64 = 1 << 20;
/// How long one TA certificate download may take.
const TA_TIMEOUT: Duration = Duration::from_secs(30);
/// A trust anchor certificate in hand is fetched again after this long (a TA certificate
/// changes rarely; a round that is refused, and so repeated each poll, must not ask for it
/// each time).
const TA_REFRESH: Duration = Duration::from_secs(600);
/// How much of `pre_validate`'s output is kept for the status and the log.
const OUTPUT_KEPT: usize = 8 << 10;

/// One repository's validation state between rounds.
pub(crate) struct Validator {
    core: Option<Core>,
    /// Per TAL: the last good trust anchor certificate.
    anchors: Vec<Anchor>,
    /// Per TAL: the clients for its sources.
    sources: Vec<Vec<(TaSource, Arc<Client>)>>,
    /// Per TAL: when its certificate was last fetched, and the last fetch error (logged
    /// when it changes).
    fetched: Vec<(Option<Instant>, Option<String>)>,
}

/// The validated state: its session and serial, the index, and the cached results.
#[derive(Default)]
struct Core {
    at: Option<(String, u64)>,
    index: ObjectIndex,
    cache: Cache,
}

/// A stored round's files, as validation reads them (taken before the round is published,
/// which consumes it).
#[derive(Clone, Debug)]
pub(crate) struct RoundFiles {
    pub session_id: String,
    pub serial: u64,
    /// Relative path and stored file.
    pub snapshot: (String, PathBuf),
    /// Serial, relative path and stored file of each delta the notification lists.
    pub deltas: Vec<(u64, String, PathBuf)>,
}

impl RoundFiles {
    pub(crate) fn of(round: &Round, store: &Store) -> RoundFiles {
        RoundFiles {
            session_id: round.session_id.clone(),
            serial: round.serial,
            snapshot: (
                round.snapshot.0.clone(),
                store.object_path(&round.snapshot.1.hash()),
            ),
            deltas: round
                .deltas
                .iter()
                .map(|(serial, rel, s)| (*serial, rel.clone(), store.object_path(&s.hash())))
                .collect(),
        }
    }

    pub(super) fn delta(&self, serial: u64) -> Option<&PathBuf> {
        self.deltas
            .iter()
            .find(|(s, _, _)| *s == serial)
            .map(|(_, _, p)| p)
    }
}

impl Validator {
    pub(crate) fn new(cfg: &RepositoryConfig, store: &Store) -> Validator {
        let v = &cfg.validation;
        let anchors = v
            .tals
            .iter()
            .map(|tal| Anchor {
                tal: tal.clone(),
                cert: store
                    .read_index(&ta_index_name(&tal.path))
                    .ok()
                    .flatten()
                    .map(Bytes::from),
            })
            .collect();
        let sources = v
            .ta_sources
            .iter()
            .map(|list| {
                list.iter()
                    .map(|s| (s.clone(), Client::new(&s.tls)))
                    .collect()
            })
            .collect();
        Validator {
            core: Some(Core::default()),
            fetched: vec![(None, None); v.tals.len()],
            anchors,
            sources,
        }
    }

    /// Validates a stored round. `Err` only when a refusal is due (`refuse` and findings, or
    /// `pre_validate` failed); the status says what was found either way.
    pub(crate) async fn check(
        &mut self,
        cfg: &RepositoryConfig,
        store: &Arc<Store>,
        files: &RoundFiles,
        now: i64,
    ) -> Result<ValidationStatus, ValidationStatus> {
        let started = Instant::now();
        let v = &cfg.validation;
        let files = files.clone();
        let mut status = ValidationStatus {
            session_id: files.session_id.clone(),
            serial: files.serial,
            at: u64::try_from(now).unwrap_or(0),
            ..ValidationStatus::default()
        };
        if v.validate != Validate::Off {
            self.refresh_anchors(store).await;
            let mut core = self.core.take().unwrap_or_default();
            let anchors = self.anchors.clone();
            let window = v.expiry_window.as_secs() as i64;
            let joined = tokio::task::spawn_blocking(move || {
                let result = core.run(&files, &anchors, now, window);
                (core, files, result)
            })
            .await;
            match joined {
                Ok((core, back, Ok((report, from_deltas, verified)))) => {
                    self.core = Some(core);
                    status.from_deltas = from_deltas;
                    status.verified = verified;
                    status.report = Some(report);
                    return self.finish(v, status, back, store.tmp_dir(), started).await;
                }
                Ok((_, _, Err(e))) => {
                    // The state is unknown now: the next round starts from its snapshot.
                    self.core = Some(Core::default());
                    status.error = Some(e.to_string());
                }
                Err(e) => {
                    self.core = Some(Core::default());
                    status.error = Some(format!("validation task failed: {e}"));
                }
            }
            status.seconds = started.elapsed().as_secs_f64();
            // Not knowing is not passing.
            status.refused = v.validate == Validate::Refuse;
            return if status.refused {
                Err(status)
            } else {
                Ok(status)
            };
        }
        self.finish(v, status, files, store.tmp_dir(), started)
            .await
    }

    /// Runs `pre_validate`, then decides.
    async fn finish(
        &self,
        v: &crate::config::Validation,
        mut status: ValidationStatus,
        files: RoundFiles,
        tmp: PathBuf,
        started: Instant,
    ) -> Result<ValidationStatus, ValidationStatus> {
        if let Some(argv) = &v.pre_validate {
            let pre = pre_validate(argv, v.pre_validate_timeout, files, tmp).await;
            status.pre_validate = Some(pre);
        }
        status.seconds = started.elapsed().as_secs_f64();
        let found = status.report.as_ref().is_some_and(|r| r.failed() > 0);
        let pre_failed = status.pre_validate.as_ref().is_some_and(|p| !p.ok);
        status.refused = pre_failed || (found && v.validate == Validate::Refuse);
        if status.refused {
            Err(status)
        } else {
            Ok(status)
        }
    }

    /// Fetches each TAL's trust anchor certificate (unless one came within [`TA_REFRESH`]);
    /// keeps the last good one when no source gives one that matches the TAL.
    async fn refresh_anchors(&mut self, store: &Arc<Store>) {
        for (i, anchor) in self.anchors.iter_mut().enumerate() {
            let (fetched_at, last_error) = &mut self.fetched[i];
            if anchor.cert.is_some() && fetched_at.is_some_and(|t| t.elapsed() < TA_REFRESH) {
                continue;
            }
            if self.sources[i].is_empty() {
                // Only rsync URIs: the certificate can only come from the repository itself
                // (objects::check looks there), nothing to fetch or warn about here.
                continue;
            }
            let mut fetched = None;
            let mut errors = Vec::new();
            for (source, client) in &self.sources[i] {
                match fetch_ta(source, client).await {
                    Ok(der) if matches_tal(&der, anchor) => {
                        fetched = Some(der);
                        break;
                    }
                    Ok(_) => errors.push(format!(
                        "{}{}: not a certificate with the TAL's key",
                        source.base, source.rel
                    )),
                    Err(e) => errors.push(format!("{}{}: {e}", source.base, source.rel)),
                }
            }
            let Some(der) = fetched else {
                let error = errors.join("; ");
                if last_error.as_deref() != Some(error.as_str()) {
                    warn!(
                        "trust anchor of {}: {error}; {}",
                        anchor.tal.path.display(),
                        if anchor.cert.is_some() {
                            "keeping the last good certificate"
                        } else {
                            "none to validate from yet"
                        }
                    );
                    *last_error = Some(error);
                }
                continue;
            };
            *fetched_at = Some(Instant::now());
            *last_error = None;
            if anchor.cert.as_ref() != Some(&der) {
                let name = ta_index_name(&anchor.tal.path);
                if let Err(e) = store.write_index(&name, &der).await {
                    warn!("cannot keep the trust anchor certificate: {e}");
                }
                anchor.cert = Some(der);
            }
        }
    }
}

/// The store index file that keeps a TAL's last good trust anchor certificate.
fn ta_index_name(tal: &Path) -> String {
    format!(
        "ta-{}.cer",
        &Hash::of(tal.to_string_lossy().as_bytes()).to_hex()[..16]
    )
}

fn matches_tal(der: &Bytes, anchor: &Anchor) -> bool {
    rpki::repository::Cert::decode(der.clone())
        .is_ok_and(|c| c.subject_public_key_info() == anchor.tal.tal.key_info())
}

async fn fetch_ta(source: &TaSource, client: &Arc<Client>) -> Result<Bytes, String> {
    let fetch = async {
        let resp = client.get(&source.base, &source.rel, &[]).await?;
        if resp.status() != 200 {
            return Err(crate::origin::client::FetchError::transport(format!(
                "HTTP {}",
                resp.status()
            )));
        }
        resp.body(MAX_TA_SIZE).await
    };
    within(TA_TIMEOUT, fetch).await.map_err(|e| e.to_string())
}

impl Core {
    /// Brings the index to the round's serial and validates it: (report, whether from
    /// deltas, how many signed objects were read and verified).
    fn run(
        &mut self,
        files: &RoundFiles,
        anchors: &[Anchor],
        now: i64,
        window: i64,
    ) -> io::Result<(Report, bool, u64)> {
        // Signed objects the deltas brought: handed to validation without a snapshot pass.
        let mut fresh: HashMap<String, Bytes> = HashMap::new();
        let from_deltas = self.advance(files, &mut fresh)?;
        let mut verified = 0u64;
        let index = &self.index;
        let mut read_error = None;
        let mut fetch = |wanted: &objects::check::Wanted<'_>,
                         give: &mut dyn FnMut(&str, Bytes) -> bool| {
            // The wanted map itself says what is still wanted (`give` marks what it takes):
            // no second set of the round's URIs.
            let mut left = wanted.len();
            for &uri in wanted.keys() {
                if let Some(der) = fresh.remove(uri) {
                    if give(uri, der) {
                        verified += 1;
                        left -= 1;
                    }
                }
            }
            if left == 0 {
                return;
            }
            // The rest from the snapshot, one at a time, if it agrees with the index.
            let walked = walk_snapshot(files, |uri, der| {
                let Some(der) = der else { return };
                // Only what is still wanted is hashed. The hash first: a snapshot that
                // publishes a URI twice leaves the index with the last copy, and the first
                // must not use up the URI.
                if wanted.get(uri).is_some_and(|w| w.is_open())
                    && index.hash(uri) == Some(&objects::index::sha(&der))
                    && give(uri, der)
                {
                    verified += 1;
                }
            });
            if let Err(e) = walked {
                read_error = Some(e);
            }
        };
        let report =
            objects::validate_with(index, &mut self.cache, &mut fetch, anchors, now, window);
        if let Some(e) = read_error {
            return Err(e);
        }
        self.index.clean();
        self.at = Some((files.session_id.clone(), files.serial));
        Ok((report, from_deltas, verified))
    }

    /// Applies the round's deltas to the last validated state if they connect to it;
    /// otherwise reads the snapshot. Returns whether the deltas were used.
    fn advance(
        &mut self,
        files: &RoundFiles,
        fresh: &mut HashMap<String, Bytes>,
    ) -> io::Result<bool> {
        let connects = match &self.at {
            Some((session, serial)) if *session == files.session_id && *serial <= files.serial => {
                (serial + 1..=files.serial).all(|s| files.delta(s).is_some())
            }
            _ => false,
        };
        if connects {
            let from = self.at.as_ref().map_or(0, |(_, s)| *s);
            for serial in from + 1..=files.serial {
                let index = &mut self.index;
                walk_objects(
                    files.delta(serial).expect("checked above"),
                    &files.session_id,
                    serial,
                    false,
                    |uri, der| match der {
                        Some(der) => {
                            index.publish(uri, der.clone());
                            if !matches!(
                                ObjectKind::of(uri),
                                ObjectKind::Certificate | ObjectKind::Manifest | ObjectKind::Crl
                            ) {
                                fresh.insert(uri.to_string(), der);
                            }
                        }
                        None => {
                            index.withdraw(uri);
                            fresh.remove(uri);
                        }
                    },
                )?;
            }
            return Ok(true);
        }
        let mut index = ObjectIndex::default();
        walk_snapshot(files, |uri, der| {
            if let Some(der) = der {
                index.publish(uri, der);
            }
        })?;
        self.index = index;
        Ok(false)
    }
}

/// Walks the round's snapshot: each object decoded.
fn walk_snapshot(files: &RoundFiles, each: impl FnMut(&str, Option<Bytes>)) -> io::Result<()> {
    walk_objects(
        &files.snapshot.1,
        &files.session_id,
        files.serial,
        true,
        each,
    )
}

/// Walks a stored snapshot (or delta) and hands over each object decoded (`None`: a
/// withdraw).
pub(super) fn walk_objects(
    path: &Path,
    session_id: &str,
    serial: u64,
    snapshot: bool,
    mut each: impl FnMut(&str, Option<Bytes>),
) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    let kind = if snapshot {
        content::Document::Snapshot
    } else {
        content::Document::Delta
    };
    // A stored file passed the content check, `max_object_size` included, when it was
    // stored: it is not held to a limit again (one lowered since would hide it).
    let expected = Expected::new(kind, session_id, serial).with_max_object_size(u64::MAX);
    let mut scratch = Vec::new();
    content::walk(
        io::BufReader::with_capacity(256 << 10, file),
        &expected,
        &mut |uri, b64| {
            if b64.is_empty() {
                each(uri, None);
                return Ok(());
            }
            let der = content::decode(b64, &mut scratch)
                .map_err(|e| ContentError(format!("{uri}: {e}")))?;
            each(uri, Some(Bytes::from(der)));
            Ok(())
        },
    )
    .map(|_| ())
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Runs the operator's command on the candidate tree (written out in the rsync layout,
/// `<dir>/<host>/<module>/<path>`, the directory passed as the last argument), with a
/// deadline. Its output goes to the log and the status.
async fn pre_validate(
    argv: &[String],
    timeout: Duration,
    files: RoundFiles,
    tmp: PathBuf,
) -> PreValidated {
    let dir = match tokio::task::spawn_blocking(move || write_tree(&files, &tmp)).await {
        Ok(Ok(dir)) => dir,
        Ok(Err(e)) => return PreValidated::failed(format!("cannot write the candidate tree: {e}")),
        Err(e) => return PreValidated::failed(format!("cannot write the candidate tree: {e}")),
    };
    let result = run_command(argv, dir.path(), timeout).await;
    // `dir` is removed when dropped, after the command has ended.
    drop(dir);
    match &result {
        r if r.ok => info!("pre_validate passed: {}", r.output.trim_end()),
        r => warn!(
            "pre_validate refused the round: {} {}",
            r.detail,
            r.output.trim_end()
        ),
    }
    result
}

fn write_tree(files: &RoundFiles, tmp: &Path) -> io::Result<tempdir::Dir> {
    let dir = tempdir::Dir::new(tmp)?;
    let mut made = HashSet::new();
    let mut failed = None;
    walk_snapshot(files, |uri, der| {
        let (Some(der), None) = (der, &failed) else {
            return;
        };
        let Some(rel) = uri
            .strip_prefix("rsync://")
            .filter(|r| crate::rrdp::uri::is_safe_relative(r))
        else {
            failed = Some(io::Error::other(format!("unusable rsync URI {uri:?}")));
            return;
        };
        let path = dir.path().join(rel);
        let parent = path
            .parent()
            .expect("a file under the directory")
            .to_path_buf();
        let written = (|| {
            if made.insert(parent.clone()) {
                std::fs::create_dir_all(&parent)?;
            }
            std::fs::write(&path, &der)
        })();
        if let Err(e) = written {
            failed = Some(e);
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(dir),
    }
}

/// Runs the command in a process group of its own and reads its stdout and stderr at once
/// (a command that fills one pipe while this waits on the other would stall forever), keeping
/// the last [`OUTPUT_KEPT`] bytes of each. At the deadline, and as soon as the command itself
/// has exited, the whole group is killed: nothing it started holds the round, its pipes or
/// the candidate tree past that.
async fn run_command(argv: &[String], dir: &Path, timeout: Duration) -> PreValidated {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return PreValidated::failed(format!("cannot run {:?}: {e}", argv[0])),
    };
    // Killed on every way out of here: the deadline, an error, the round being dropped.
    let group = ProcessGroup(std::sync::Mutex::new(child.id()));
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let exited = async {
            let status = child.wait().await;
            // What it left behind (a pipeline's other half, a background job) goes with it,
            // and closes the pipes read below.
            group.kill();
            status
        };
        tokio::join!(exited, tail(out), tail(err))
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => PreValidated::failed(format!(
            "{:?} did not finish within pre_validate_timeout ({}s); its process group was killed",
            argv[0],
            timeout.as_secs()
        )),
        Ok((Err(e), _, _)) => PreValidated::failed(format!("{:?}: {e}", argv[0])),
        Ok((Ok(status), a, b)) => {
            let mut output = a;
            output.push_str(&b);
            PreValidated {
                ok: status.success(),
                exit: status.code(),
                detail: format!("{:?} exited with {status}", argv[0]),
                output,
            }
        }
    }
}

/// A child's process group (its id is the child's pid), killed with SIGKILL once: when asked,
/// or on drop. Once only, so that a group id the system has since reused is never signalled.
struct ProcessGroup(std::sync::Mutex<Option<u32>>);

impl ProcessGroup {
    fn kill(&self) {
        let pgid = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(pgid) = pgid.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end, keeping only its last [`OUTPUT_KEPT`] bytes (a chatty command
/// costs no more memory than a quiet one), as text, marked with "…" where it was cut.
async fn tail(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = std::collections::VecDeque::with_capacity(OUTPUT_KEPT);
    let mut cut = false;
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        for &b in &buf[..n] {
            if kept.len() == OUTPUT_KEPT {
                kept.pop_front();
                cut = true;
            }
            kept.push_back(b);
        }
    }
    let bytes: Vec<u8> = kept.into_iter().collect();
    let text = String::from_utf8_lossy(&bytes);
    if cut {
        format!("…{text}")
    } else {
        text.into_owned()
    }
}

/// A temporary directory removed on drop (no extra dependency for one use). It is made in the
/// store's `tmp/`: the node's own directory, not a shared `/tmp`, and emptied at start.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub(super) struct Dir(PathBuf);

    impl Dir {
        pub(super) fn new(parent: &Path) -> std::io::Result<Dir> {
            let path = parent.join(format!(
                "pre-validate-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir(&path)?;
            Ok(Dir(path))
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
