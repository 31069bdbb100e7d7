//! The built-in demo Publication Server: a generated RRDP repository on loopback that
//! publishes a new serial every few seconds, so the proxy can be seen working with nothing
//! else installed.
//!
//! It behaves like Krill where that matters to a cache: unguessable file paths
//! (`<session>/<serial>/<random>/snapshot.xml`), `Cache-Control: max-age=60` on the
//! notification and `max-age=86400` on files, no ETag or Last-Modified, HEAD answered with
//! 405, superseded files deleted at once, and `/ta/ta.cer` with no Cache-Control.
//! The test suite's fake origin uses the same [`Publisher`] generator.
//!
//! Its first repository holds a small, validly signed RPKI tree ([`signed`]) whose TAL ships
//! as `demo.tal`, so the demo validates as a real repository does; the others, and the
//! `large` ones benchmarks ask for, hold random bytes (only the RRDP transport is exercised).

pub mod signed;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;

use crate::rrdp::{render_notification, xml_escape, DeltaRef, FileRef, Hash, RRDP_NS};

/// How many deltas the demo lists (Krill lists few).
const KEEP_DELTAS: usize = 10;
/// Above this many objects, the demo withdraws faster than it adds.
const MAX_OBJECTS: usize = 40;
/// rsync URIs of the demo's objects.
const OBJECT_BASE: &str = "rsync://demo.test/repo/";

/// A generated RRDP repository.
#[derive(Clone)]
pub struct Publisher {
    /// Base URI the files are published under, ending in `/`.
    base_uri: String,
    session_id: String,
    serial: u64,
    /// Current objects: rsync URI → content.
    objects: BTreeMap<String, Vec<u8>>,
    next_object: u64,
    /// Files served now: relative path → body.
    files: HashMap<String, Bytes>,
    snapshot: (String, Hash),
    /// Newest first.
    deltas: VecDeque<(u64, String, Hash)>,
    notification: Bytes,
    /// How many deltas are listed (older ones are deleted, like Krill does).
    keep_deltas: usize,
    /// Above this many objects, the oldest are withdrawn faster than new ones come.
    max_objects: usize,
}

impl Publisher {
    /// A new session at serial 1 with a few objects.
    pub fn new(base_uri: &str) -> Publisher {
        let mut r = Publisher {
            base_uri: base_uri.to_string(),
            session_id: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            objects: BTreeMap::new(),
            next_object: 0,
            files: HashMap::new(),
            snapshot: (String::new(), Hash([0; 32])),
            deltas: VecDeque::new(),
            notification: Bytes::new(),
            keep_deltas: KEEP_DELTAS,
            max_objects: MAX_OBJECTS,
        };
        r.advance();
        r
    }

    /// A repository shaped like a large RIR's: a snapshot of about `snapshot_bytes` (objects of
    /// 16 KiB) and `deltas` listed deltas of 1 KiB to 1 MiB each. For benchmarks.
    pub fn large(base_uri: &str, snapshot_bytes: u64, deltas: usize) -> Publisher {
        let mut rng = rand::thread_rng();
        let mut r = Publisher {
            keep_deltas: deltas.max(1),
            max_objects: usize::MAX,
            ..Publisher::new(base_uri)
        };
        r.reset_session();
        // Objects published by the deltas end up in the snapshot too: draw their sizes
        // first and fill the rest with bulk objects. Base64 makes 3 bytes 4 characters.
        let sizes: Vec<usize> = (0..deltas).map(|_| rng.gen_range(768..786_432)).collect();
        let in_deltas: u64 = sizes.iter().map(|s| *s as u64).sum();
        let count = ((snapshot_bytes * 3 / 4).saturating_sub(in_deltas) / LARGE_OBJECT) as usize;
        for _ in 0..count {
            r.next_object += 1;
            let uri = format!("{OBJECT_BASE}bulk-{}.roa", r.next_object);
            r.objects
                .insert(uri, random_bytes(&mut rng, LARGE_OBJECT as usize));
        }
        for (i, size) in sizes.into_iter().enumerate() {
            r.step(Some(size), i + 1 == deltas);
        }
        if deltas == 0 {
            r.step(None, true);
        }
        r
    }

    /// The base URI the notification's file URIs start with.
    pub fn base_uri(&self) -> &str {
        &self.base_uri
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn notification(&self) -> Bytes {
        self.notification.clone()
    }

    /// The body of a file by its path relative to the base.
    pub fn file(&self, rel: &str) -> Option<Bytes> {
        self.files.get(rel).cloned()
    }

    /// Relative paths of the current snapshot and deltas (newest first).
    pub fn snapshot_path(&self) -> &str {
        &self.snapshot.0
    }

    pub fn delta_paths(&self) -> Vec<String> {
        self.deltas.iter().map(|d| d.1.clone()).collect()
    }

    /// Writes the repository as a Publication Server keeps it on disk (Krill's
    /// `data/repo/rrdp/`): the files under their relative paths, the notification last, and
    /// files no longer served removed (Krill deletes superseded files at once).
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        for (rel, body) in &self.files {
            let path = dir.join(rel);
            if !path.exists() {
                std::fs::create_dir_all(path.parent().expect("files are under the base"))?;
                std::fs::write(&path, body)?;
            }
        }
        let tmp = dir.join(".notification.xml.tmp");
        std::fs::write(&tmp, &self.notification)?;
        std::fs::rename(&tmp, dir.join("notification.xml"))?;
        let keep: std::collections::HashSet<std::path::PathBuf> =
            self.files.keys().map(|rel| dir.join(rel)).collect();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name() != Some("notification.xml".as_ref())
                    && !keep.contains(&path)
                {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(())
    }

    /// The objects the current snapshot publishes: rsync URI → content.
    pub fn objects(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.objects
    }

    /// Replaces a served file's bytes (tests: an upstream that lies about a hash).
    pub fn corrupt(&mut self, rel: &str, body: Bytes) {
        self.files.insert(rel.to_string(), body);
    }

    /// Stops serving a file (tests: an upstream that deleted it).
    pub fn remove(&mut self, rel: &str) {
        self.files.remove(rel);
    }

    /// Starts a new session at serial 1 (a Publication Server that lost its state).
    pub fn reset_session(&mut self) {
        self.session_id = uuid::Uuid::new_v4().to_string();
        self.serial = 0;
        self.deltas.clear();
        self.files.clear();
        self.advance();
    }

    /// Publishes the next serial: a few objects added, one replaced, one withdrawn.
    pub fn advance(&mut self) {
        self.step(None, true);
    }

    /// One serial; `extra` adds an object of that many bytes; `with_snapshot: false` skips
    /// writing a snapshot (building a large repository, only the last one is needed).
    ///
    /// Long on purpose (about 90 lines): one serial of a Publication Server, withdrawals,
    /// updates, new objects, the delta and the snapshot, read best top to bottom.
    fn step(&mut self, extra: Option<usize>, with_snapshot: bool) {
        let mut rng = rand::thread_rng();
        let mut delta = self.next_delta();
        // Withdraw the oldest objects, more of them once the repository is large, so it
        // stays at a few dozen objects however long the demo runs.
        let withdraw = match self.objects.len() {
            // Building a large repository: every delta only adds.
            _ if extra.is_some() => 0,
            n if n > self.max_objects => 3,
            n if n > 6 => 1,
            _ => 0,
        };
        for _ in 0..withdraw {
            let uri = self.objects.keys().next().cloned().expect("not empty");
            let old = self.objects.remove(&uri).expect("present");
            let _ = writeln!(
                delta,
                "  <withdraw uri=\"{}\" hash=\"{}\"/>",
                xml_escape(&uri),
                Hash::of(&old)
            );
        }
        if let Some(uri) = self
            .objects
            .keys()
            .last()
            .cloned()
            .filter(|_| extra.is_none())
        {
            let len = rng.gen_range(200..2000);
            let content = random_bytes(&mut rng, len);
            let old = self
                .objects
                .insert(uri.clone(), content.clone())
                .expect("present");
            let _ = writeln!(
                delta,
                "  <publish uri=\"{}\" hash=\"{}\">{}</publish>",
                xml_escape(&uri),
                Hash::of(&old),
                base64::engine::general_purpose::STANDARD.encode(&content)
            );
        }
        let sizes: Vec<usize> = match extra {
            Some(size) => vec![size],
            None => (0..rng.gen_range(1..=3))
                .map(|_| rng.gen_range(200..2000))
                .collect(),
        };
        for size in sizes {
            self.next_object += 1;
            let uri = format!("{OBJECT_BASE}object-{}.roa", self.next_object);
            let content = random_bytes(&mut rng, size);
            let _ = writeln!(
                delta,
                "  <publish uri=\"{}\">{}</publish>",
                xml_escape(&uri),
                base64::engine::general_purpose::STANDARD.encode(&content)
            );
            self.objects.insert(uri, content);
        }
        delta.push_str("</delta>\n");
        self.end_serial(delta, with_snapshot);
    }

    /// Starts the next serial: its number, and its delta's root element.
    fn next_delta(&mut self) -> String {
        self.serial += 1;
        format!(
            "<delta xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{}\" serial=\"{}\">\n",
            self.session_id, self.serial
        )
    }

    /// The next serial with exactly these changes: each URI published with the content, or
    /// withdrawn (`None`). Tests and benchmarks serve real RPKI objects this way.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = (String, Option<Vec<u8>>)>) {
        let mut delta = self.next_delta();
        for (uri, content) in changes {
            let old = self.objects.remove(&uri);
            let hash = old
                .map(|o| format!(" hash=\"{}\"", Hash::of(&o)))
                .unwrap_or_default();
            match content {
                Some(c) => {
                    let _ = writeln!(
                        delta,
                        "  <publish uri=\"{}\"{hash}>{}</publish>",
                        xml_escape(&uri),
                        base64::engine::general_purpose::STANDARD.encode(&c)
                    );
                    self.objects.insert(uri, c);
                }
                None if !hash.is_empty() => {
                    let _ = writeln!(delta, "  <withdraw uri=\"{}\"{hash}/>", xml_escape(&uri));
                }
                None => {}
            }
        }
        delta.push_str("</delta>\n");
        self.end_serial(delta, true);
    }

    /// A new session whose first serial publishes exactly `objects`.
    pub fn with_objects(base_uri: &str, objects: BTreeMap<String, Vec<u8>>) -> Publisher {
        let mut r = Publisher::new(base_uri);
        r.session_id = uuid::Uuid::new_v4().to_string();
        r.serial = 1;
        r.deltas.clear();
        r.files.clear();
        r.objects = objects;
        r.max_objects = usize::MAX;
        r.end_serial(String::new(), true);
        r
    }

    /// Ends a serial: its delta (not for serial 1) listed, old deltas dropped, the snapshot
    /// written, the notification rendered.
    fn end_serial(&mut self, delta: String, with_snapshot: bool) {
        let mut rng = rand::thread_rng();
        let dir = format!(
            "{}/{}/{:016x}",
            self.session_id,
            self.serial,
            rng.gen::<u64>()
        );
        if self.serial > 1 {
            let delta_path = format!("{dir}/delta.xml");
            self.deltas
                .push_front((self.serial, delta_path.clone(), Hash::of(delta.as_bytes())));
            self.files.insert(delta_path, Bytes::from(delta));
        }
        while self.deltas.len() > self.keep_deltas {
            if let Some((_, path, _)) = self.deltas.pop_back() {
                self.files.remove(&path);
            }
        }
        if with_snapshot {
            self.write_snapshot(&dir);
        }
        self.render();
    }

    fn write_snapshot(&mut self, dir: &str) {
        let size: usize = self.objects.values().map(|c| c.len() * 4 / 3 + 100).sum();
        let mut snapshot = String::with_capacity(size + 256);
        let _ = writeln!(
            snapshot,
            "<snapshot xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{}\" serial=\"{}\">",
            self.session_id, self.serial
        );
        for (uri, content) in &self.objects {
            let _ = writeln!(
                snapshot,
                "  <publish uri=\"{}\">{}</publish>",
                xml_escape(uri),
                base64::engine::general_purpose::STANDARD.encode(content)
            );
        }
        snapshot.push_str("</snapshot>\n");

        // Like Krill: the superseded snapshot is deleted at once.
        let old_snapshot = std::mem::take(&mut self.snapshot.0);
        self.files.remove(&old_snapshot);
        let snapshot_path = format!("{dir}/snapshot.xml");
        self.snapshot = (snapshot_path.clone(), Hash::of(snapshot.as_bytes()));
        self.files.insert(snapshot_path, Bytes::from(snapshot));
    }

    fn render(&mut self) {
        let snapshot = FileRef {
            uri: format!("{}{}", self.base_uri, self.snapshot.0),
            hash: self.snapshot.1,
        };
        let deltas: Vec<DeltaRef> = self
            .deltas
            .iter()
            .map(|(serial, path, hash)| DeltaRef {
                serial: *serial,
                file: FileRef {
                    uri: format!("{}{path}", self.base_uri),
                    hash: *hash,
                },
            })
            .collect();
        self.notification = Bytes::from(render_notification(
            &self.session_id,
            self.serial,
            &snapshot,
            &deltas,
        ));
    }
}

fn random_bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Object size in a [`Publisher::large`].
const LARGE_OBJECT: u64 = 16 << 10;

/// The bytes served as the TA certificate by a demo that holds no signed repository (a
/// `large` one, for benchmarks).
const PLACEHOLDER_TA_CER: &[u8] = b"demo trust anchor certificate placeholder\n";

//------------ The HTTP side -------------------------------------------------------------------

/// Serves a [`Publisher`] under `/rrdp/` and a TA certificate under `/ta/`; with more than
/// one repository, the others (small ones) under `/rrdp-2/`, `/rrdp-3/`, … (an origin behind
/// which an edge node fronts many CAs, for benchmarks).
pub struct DemoServer {
    pub repo: Arc<Mutex<Publisher>>,
    /// The signed tree the first repository publishes (none in a `large` one).
    pub signed: Option<Arc<Mutex<signed::SignedDemo>>>,
    /// What `/ta/ta.cer` serves.
    ta_cert: Bytes,
    /// Repositories 2, 3, … (under `/rrdp-<n>/`).
    pub more: Vec<Arc<Mutex<Publisher>>>,
    /// GET requests per path, for benchmarks (`GET /_stats`).
    requests: Mutex<HashMap<String, u64>>,
}

impl DemoServer {
    /// A demo server whose files are published under `http://<listen>/rrdp/`; with `large`
    /// (snapshot bytes, deltas), a repository of that shape (see [`Publisher::large`]).
    pub fn new(
        listen: std::net::SocketAddr,
        interval: Duration,
        large: Option<(u64, usize)>,
        repositories: usize,
    ) -> DemoServer {
        let base = format!("http://{listen}/rrdp/");
        let (repo, signed) = match large {
            Some((bytes, deltas)) => (Publisher::large(&base, bytes, deltas), None),
            None => {
                let signed = signed::SignedDemo::new(interval);
                (
                    Publisher::with_objects(&base, signed.objects()),
                    Some(signed),
                )
            }
        };
        let ta_cert = signed.as_ref().map_or(
            Bytes::from_static(PLACEHOLDER_TA_CER),
            signed::SignedDemo::ta_cert_der,
        );
        let more = (2..=repositories)
            .map(|n| {
                let base = format!("http://{listen}/rrdp-{n}/");
                Arc::new(Mutex::new(Publisher::new(&base)))
            })
            .collect();
        DemoServer {
            repo: Arc::new(Mutex::new(repo)),
            signed: signed.map(|s| Arc::new(Mutex::new(s))),
            ta_cert,
            more,
            requests: Mutex::new(HashMap::new()),
        }
    }
}

impl DemoServer {
    /// The repository a path is under, and the path relative to it.
    fn repository_of<'a>(&self, path: &'a str) -> Option<(&Arc<Mutex<Publisher>>, &'a str)> {
        if let Some(rel) = path.strip_prefix("/rrdp/") {
            return Some((&self.repo, rel));
        }
        let (n, rel) = path.strip_prefix("/rrdp-")?.split_once('/')?;
        let n: usize = n.parse().ok()?;
        Some((self.more.get(n.checked_sub(2)?)?, rel))
    }
}

fn reply(status: u16, cache_control: Option<&str>, body: Bytes) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(status)
        .header("Content-Length", body.len());
    if status == 200 {
        b = b.header("Content-Type", "application/xml");
    }
    if let Some(cc) = cache_control {
        b = b.header("Cache-Control", cc);
    }
    b.body(body.to_vec()).expect("valid response")
}

#[async_trait]
impl ServeHttp for DemoServer {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == http::Method::POST && req.uri.path() == "/advance" {
            // Publish the next serial of every repository now (benchmarks and manual trials).
            for other in &self.more {
                other.lock().unwrap_or_else(|e| e.into_inner()).advance();
            }
            let serial = advance(&self.repo, self.signed.as_ref());
            let body = format!("serial {serial}\n");
            return reply(202, None, Bytes::from(body));
        }
        if req.method != http::Method::GET {
            // Krill answers HEAD with 405 too.
            return reply(405, None, Bytes::from_static(b"method not allowed\n"));
        }
        let path = req.uri.path();
        if path == "/_stats" {
            // How often each path was asked for: how much load a cache in front passes on.
            let counts = self
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let body = serde_json::to_string(&counts).unwrap_or_default();
            return reply(200, None, Bytes::from(body));
        }
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.to_string())
            .or_default() += 1;
        if path == "/ta/ta.cer" {
            return reply(200, None, self.ta_cert.clone());
        }
        let Some((repo, rel)) = self.repository_of(path) else {
            return reply(404, None, Bytes::from_static(b"not found\n"));
        };
        let repo = repo.lock().unwrap_or_else(|e| e.into_inner());
        if rel == "notification.xml" {
            return reply(200, Some("max-age=60"), repo.notification());
        }
        let range = req
            .headers
            .get("Range")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_simple_range);
        match repo.file(rel) {
            // A single "bytes=a-b" range, as web servers in front of Publication Servers
            // answer (so a cache passing a Range through does not pull the whole file).
            Some(body) if range.is_some_and(|(a, _)| a < body.len()) => {
                let (a, b) = range.expect("checked");
                let b = b.min(body.len() - 1);
                let mut r = reply(206, Some("max-age=86400"), body.slice(a..b + 1));
                r.headers_mut().insert(
                    "Content-Range",
                    http::HeaderValue::from_str(&format!("bytes {a}-{b}/{}", body.len()))
                        .expect("ascii"),
                );
                r
            }
            Some(body) => reply(200, Some("max-age=86400"), body),
            None => reply(404, None, Bytes::from_static(b"not found\n")),
        }
    }
}

/// "bytes=a-b" → (a, b); anything else is ignored (the whole file is served).
fn parse_simple_range(v: &str) -> Option<(usize, usize)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b))
}

/// Publishes the next serial of `repo`: the signed tree's next change when it holds one,
/// else random objects. Returns the serial.
fn advance(repo: &Mutex<Publisher>, signed: Option<&Arc<Mutex<signed::SignedDemo>>>) -> u64 {
    // The signing happens before the repository's lock is taken (readers never wait for it),
    // and the signed tree stays locked until its changes are applied: two advances at once
    // (the ticker and POST /advance) apply theirs in the order they were signed.
    let mut signed = signed.map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
    let changes = signed.as_mut().map(|s| s.advance());
    let mut repo = repo.lock().unwrap_or_else(|e| e.into_inner());
    match changes {
        Some(changes) => repo.apply(changes),
        None => repo.advance(),
    }
    repo.serial()
}

/// Publishes a new serial of every repository every `interval`.
pub struct DemoTicker {
    /// The first repository, and the signed tree it publishes if any.
    pub repo: Arc<Mutex<Publisher>>,
    pub signed: Option<Arc<Mutex<signed::SignedDemo>>>,
    /// The others.
    pub more: Vec<Arc<Mutex<Publisher>>>,
    pub interval: Duration,
}

#[async_trait]
impl BackgroundService for DemoTicker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            for repo in &self.more {
                repo.lock().unwrap_or_else(|e| e.into_inner()).advance();
            }
            let serial = advance(&self.repo, self.signed.as_ref());
            log::info!(target: "demo", "demo origin published serial {serial}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rrdp::content::{check, Document, Expected};
    use crate::rrdp::Notification;

    /// The body the repository serves for a URI under its base.
    fn served(r: &Publisher, uri: &str) -> Bytes {
        let rel = uri.strip_prefix("http://127.0.0.1:3001/rrdp/").unwrap();
        r.file(rel).unwrap()
    }

    #[test]
    fn a_large_repository_has_the_requested_shape() {
        let r = Publisher::large("http://127.0.0.1:3001/rrdp/", 16 << 20, 20);
        let n = Notification::parse(&r.notification()).unwrap();
        assert_eq!(n.deltas.len(), 20);
        let snap = r.file(r.snapshot_path()).unwrap();
        // About the size asked for, unless the deltas alone were larger.
        assert!(
            snap.len() > (14 << 20) && snap.len() < (20 << 20),
            "{}",
            snap.len()
        );
        assert_eq!(Hash::of(&snap), n.snapshot.hash);
        for d in &n.deltas {
            let body = served(&r, &d.file.uri);
            assert!(
                body.len() >= 1024 && body.len() < 1_100_000,
                "{}",
                body.len()
            );
            assert_eq!(Hash::of(&body), d.file.hash);
        }
    }

    #[test]
    fn generated_notifications_are_valid_and_hashes_match() {
        let mut r = Publisher::new("http://127.0.0.1:3001/rrdp/");
        for _ in 0..15 {
            r.advance();
        }
        let n = Notification::parse(&r.notification()).unwrap();
        assert_eq!(n.serial, 16);
        assert_eq!(n.deltas.len(), KEEP_DELTAS);
        assert_eq!(Hash::of(&served(&r, &n.snapshot.uri)), n.snapshot.hash);
        for d in &n.deltas {
            assert_eq!(Hash::of(&served(&r, &d.file.uri)), d.file.hash);
        }
        // Superseded files are gone, like Krill's.
        assert_eq!(r.files.len(), 1 + KEEP_DELTAS);
    }

    #[test]
    fn many_repositories_are_served_each_under_its_own_path() {
        let listen = "127.0.0.1:3001".parse().unwrap();
        let demo = DemoServer::new(listen, Duration::from_secs(5), None, 3);
        let first = demo.repository_of("/rrdp/notification.xml").unwrap();
        assert!(Arc::ptr_eq(first.0, &demo.repo));
        let third = demo.repository_of("/rrdp-3/notification.xml").unwrap();
        assert!(Arc::ptr_eq(third.0, &demo.more[1]));
        assert_eq!(third.1, "notification.xml");
        // Each names its own base in its notification.
        let n = third.0.lock().unwrap().notification();
        assert!(std::str::from_utf8(&n)
            .unwrap()
            .contains("http://127.0.0.1:3001/rrdp-3/"));
        for none in [
            "/rrdp-1/notification.xml",
            "/rrdp-4/notification.xml",
            "/rrdp-x/a",
        ] {
            assert!(demo.repository_of(none).is_none(), "{none}");
        }
    }

    #[test]
    fn the_demo_generator_writes_valid_files() {
        let mut repo = Publisher::new("http://127.0.0.1/rrdp/");
        repo.advance();
        let session = repo.session_id().to_string();
        let snap = repo.file(repo.snapshot_path()).unwrap();
        let exp = Expected {
            kind: Document::Snapshot,
            session_id: session.clone(),
            serial: 2,
            max_object_size: crate::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
        };
        assert!(check(&snap[..], &exp).unwrap().publishes > 0);
        let delta = repo.file(&repo.delta_paths()[0]).unwrap();
        let exp = Expected {
            kind: Document::Delta,
            session_id: session,
            serial: 2,
            max_object_size: crate::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
        };
        assert!(check(&delta[..], &exp).is_ok());
    }
}
