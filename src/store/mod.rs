//! The object store: content-addressed files on disk under `cache.dir`, with a bounded memory
//! tier in front.
//!
//! An object is named by the SHA-256 of its bytes (`objects/ab/abcd…`). It is written to
//! `tmp/`, hashed while it streams in, fsynced, and only then renamed into place, so an object
//! that exists under its name is whole and has that hash. Index files (which generation is
//! published) are written the same way, and only after every object they name is in place.
//!
//! The memory tier (moka, LRU with a byte weigher) holds small objects; large ones are served
//! from disk in chunks, so a big snapshot never needs its size in RAM per client.
//!
//! [`Stored`] is the proof that an object is here and verified; only this module makes one.
//! [`flight`] holds the single flights (one download per object or path at a time). Uses
//! `rrdp` only (hashes, the content check).

mod checker;
pub(crate) mod flight;
pub(crate) mod owner;
mod sink;
mod writer;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::rrdp::Hash;

pub(crate) use writer::CommitError;

/// Objects that nothing references are removed only once they are this old on disk, so that a
/// file fetched for a generation that is about to be published is never collected under it.
pub const GC_GRACE: Duration = Duration::from_secs(600);

/// A stored object, ready to serve.
pub enum Object {
    /// Whole in memory.
    Memory(Bytes),
    /// On disk; `len` bytes (read it with positioned reads: the handle may be shared).
    File { file: std::fs::File, len: u64 },
}

impl Object {
    pub fn len(&self) -> u64 {
        match self {
            Object::Memory(b) => b.len() as u64,
            Object::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A memory-tier key: an object, or its gzip variant.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    hash: Hash,
    gzip: bool,
}

/// The process that writes a temporary file, from its name: `<pid>-<n>[.gz]`,
/// `<index>.<pid>-<n>.new`, `pre-validate-<pid>-<random>`.
fn writer_pid(name: &str) -> Option<u32> {
    let rest = match (
        name.strip_prefix("pre-validate-"),
        name.strip_suffix(".new"),
    ) {
        (Some(rest), _) => rest,
        (None, Some(index)) => index.rsplit('.').next()?,
        (None, None) => name,
    };
    rest.split('-').next()?.parse().ok()
}

/// How long after a failed write (a full disk) a gzip variant is not tried again.
const GZIP_RETRY: std::time::Duration = std::time::Duration::from_secs(600);

/// A gzip variant is kept only if it saves at least this share of the identity size.
const GZIP_MIN_SAVING_PERCENT: u64 = 5;

/// The content-addressed store.
pub struct Store {
    /// `cache.dir`.
    dir: PathBuf,
    /// Small objects, by hash, weighed by size.
    memory: moka::sync::Cache<Key, Bytes>,
    /// Largest object admitted to `memory`.
    memory_object_max: u64,
    /// Names temporary files uniquely within this process.
    tmp_counter: AtomicU64,
    /// Objects whose hash this process has checked (it wrote them, or read them back). Any
    /// other object on disk is in doubt: it is hashed before its first byte is served.
    verified: Mutex<HashSet<Key>>,
    /// Objects whose gzip variant was found not worth keeping (so it is not tried again).
    no_gzip: Mutex<HashSet<Hash>>,
    /// Objects whose gzip variant could not be written, and when: tried again only after
    /// [`GZIP_RETRY`].
    gzip_failed: Mutex<std::collections::HashMap<Hash, std::time::Instant>>,
    /// Bytes and number of objects on disk.
    usage: AtomicU64,
    objects: AtomicU64,
    /// `cache.disk_limit`: no new object is written past it.
    disk_limit: Option<u64>,
    /// Downloads in progress, by what they fill: one per object at a time.
    pub flights: crate::store::flight::Flights,
    /// This process's lock on `dir`: nothing else writes it.
    owner: owner::Owner,
}

/// A write refused by `cache.disk_limit`: carried inside an `io::Error` of kind
/// `StorageFull`, so callers tell it from a full disk by type ([`DiskLimit::is`]).
#[derive(Debug)]
pub(crate) struct DiskLimit {
    pub limit: u64,
}

impl std::fmt::Display for DiskLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache.disk_limit reached ({} bytes)", self.limit)
    }
}

impl std::error::Error for DiskLimit {}

impl DiskLimit {
    /// Whether `e` is a write refused by `cache.disk_limit`.
    pub(crate) fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<DiskLimit>())
    }
}

impl Store {
    /// Opens (creating if needed) the store under `dir`, and clears leftovers of interrupted
    /// writes from `tmp/`. The memory tier holds up to `memory_limit` bytes of objects of at
    /// most `memory_object_max` bytes and 1/8 of `memory_limit` each (so that one object never
    /// evicts most of the others).
    pub fn open(
        dir: &Path,
        memory_limit: u64,
        memory_object_max: u64,
        disk_limit: Option<u64>,
    ) -> io::Result<Arc<Store>> {
        let ctx = |what: &str, p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| ctx("cannot create", dir, e))?;
        // First, before anything in it is touched: another process may be writing it.
        let owner = owner::Owner::take(dir)?;
        for sub in ["objects", "tmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| ctx("cannot create", &p, e))?;
        }
        let tmp = dir.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|e| ctx("cannot read", &tmp, e))? {
            let entry = entry?;
            // A process being upgraded away may still be finishing a write of its own (an
            // object a request fetched); only a dead writer's leftovers go.
            if writer_pid(&entry.file_name().to_string_lossy()).is_some_and(|pid| {
                pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
            }) {
                continue;
            }
            let _ = match entry.file_type()?.is_dir() {
                true => std::fs::remove_dir_all(entry.path()),
                false => std::fs::remove_file(entry.path()),
            };
        }
        let memory = moka::sync::Cache::builder()
            .max_capacity(memory_limit)
            .weigher(|_k: &Key, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            // TinyLFU may refuse a new, never-seen entry; a fresh delta that every client is
            // about to ask for must be admitted.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let (usage, objects) = disk_usage(&dir.join("objects"))?;
        Ok(Arc::new(Store {
            dir: dir.to_path_buf(),
            memory,
            memory_object_max: (memory_limit / 8).min(memory_object_max),
            tmp_counter: AtomicU64::new(0),
            verified: Mutex::new(HashSet::new()),
            no_gzip: Mutex::new(HashSet::new()),
            gzip_failed: Mutex::new(std::collections::HashMap::new()),
            usage: AtomicU64::new(usage),
            objects: AtomicU64::new(objects),
            disk_limit,
            flights: crate::store::flight::Flights::default(),
            owner,
        }))
    }

    /// Lets go of the cache directory's lock: this process writes it no more (its writers
    /// stopped, for a graceful upgrade's new process to take over).
    pub fn release(&self) {
        self.owner.release();
    }

    /// The directory of this store's temporary files (emptied at start): objects being
    /// written, and the candidate trees of `pre_validate`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Where an object lives on disk (read it only after [`Store::contains`] said it is there).
    pub fn object_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join("objects").join(&hex[..2]).join(hex)
    }

    /// Where an object's gzip variant lives: beside it, with `.gz`.
    fn gzip_path(&self, hash: &Hash) -> PathBuf {
        let mut p = self.object_path(hash).into_os_string();
        p.push(".gz");
        PathBuf::from(p)
    }

    /// Whether the object is on disk with the expected size.
    pub fn contains(&self, hash: &Hash, size: Option<u64>) -> bool {
        self.size_of(hash)
            .is_some_and(|len| size.is_none_or(|s| s == len))
    }

    /// The object, if a file is in the store under its hash: the proof a generation is built
    /// from (see [`Stored`] for what it does and does not check). An object exists under its
    /// name only after the writer hashed it and renamed it into place.
    pub fn stored(&self, hash: &Hash) -> Option<Stored> {
        self.size_of(hash).map(|size| Stored { hash: *hash, size })
    }

    /// Marks an object as just written, for garbage collection: a caller about to list an
    /// object it found already stored (perhaps unreferenced for long) keeps it through
    /// [`GC_GRACE`], before what lists it is live. Blocking; `false` if it is not there.
    pub(crate) fn touch(&self, hash: &Hash) -> bool {
        std::fs::File::options()
            .write(true)
            .open(self.object_path(hash))
            .and_then(|f| f.set_modified(SystemTime::now()))
            .is_ok()
    }

    /// The size of the object on disk, if it is there.
    fn size_of(&self, hash: &Hash) -> Option<u64> {
        std::fs::metadata(self.object_path(hash))
            .ok()
            .map(|m| m.len())
    }

    /// Opens an object for serving: from memory if there, else from disk (and small objects
    /// are then kept in memory for the next client).
    pub async fn get(self: &Arc<Self>, hash: &Hash) -> io::Result<Object> {
        self.open_variant(Key {
            hash: *hash,
            gzip: false,
        })
        .await
    }

    /// The object or its gzip variant if the memory tier holds it: answered without waiting,
    /// so the request path tries this before [`Store::get`] and [`Store::get_gzip`].
    pub fn get_in_memory(&self, hash: &Hash, gzip: bool) -> Option<Object> {
        let key = Key { hash: *hash, gzip };
        self.memory.get(&key).map(Object::Memory)
    }

    /// The gzip variant of an object, if one was made (see [`Store::make_gzip`]).
    pub async fn get_gzip(self: &Arc<Self>, hash: &Hash) -> Option<Object> {
        let key = Key {
            hash: *hash,
            gzip: true,
        };
        if self.memory.contains_key(&key) || self.gzip_path(hash).exists() {
            self.open_variant(key).await.ok()
        } else {
            None
        }
    }

    async fn open_variant(self: &Arc<Self>, key: Key) -> io::Result<Object> {
        if let Some(b) = self.memory.get(&key) {
            return Ok(Object::Memory(b));
        }
        if !self.is_verified(&key) && !self.verify_variant(key).await? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "object {} was damaged on disk and has been removed",
                    key.hash
                ),
            ));
        }
        let path = self.variant_path(&key);
        // Opening a cached file and asking its size are answered from the kernel's dentry and
        // inode caches for files served this often, so they are done right here on the worker
        // thread, as nginx does; through the blocking pool they were two thread round trips
        // per request, more than serving a small file from the page cache costs.
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        if len <= self.memory_object_max {
            let data = Bytes::from(tokio::fs::read(&path).await?);
            self.memory.insert(key, data.clone());
            return Ok(Object::Memory(data));
        }
        Ok(Object::File { file, len })
    }

    fn variant_path(&self, key: &Key) -> PathBuf {
        if key.gzip {
            self.gzip_path(&key.hash)
        } else {
            self.object_path(&key.hash)
        }
    }

    /// Makes the gzip variant of a stored object (once): compressed to a temporary file,
    /// fsynced, renamed beside the object. Kept only if it saves at least 5 %. Returns whether
    /// a variant exists now.
    pub async fn make_gzip(self: &Arc<Self>, hash: Hash) -> io::Result<bool> {
        if self.gzip_path(&hash).exists() {
            return Ok(true);
        }
        if self
            .no_gzip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&hash)
        {
            return Ok(false);
        }
        if let Some(at) = self
            .gzip_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
        {
            if at.elapsed() < GZIP_RETRY {
                return Ok(false);
            }
        }
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}-{n}.gz", std::process::id()));
        let store = self.clone();
        let made = tokio::task::spawn_blocking({
            let tmp = tmp.clone();
            move || store.write_gzip(hash, &tmp)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        let mut failed = self.gzip_failed.lock().unwrap_or_else(|e| e.into_inner());
        if made.is_err() {
            // Nothing half-written stays behind (a full disk stays full otherwise), and the
            // next try waits: every poll retried it. Failures older than that are forgotten,
            // so the map holds at most the objects that failed within GZIP_RETRY.
            let _ = std::fs::remove_file(&tmp);
            failed.retain(|_, at| at.elapsed() < GZIP_RETRY);
            failed.insert(hash, std::time::Instant::now());
        } else {
            failed.remove(&hash);
        }
        made
    }

    /// [`Store::make_gzip`]'s work, on a blocking thread, through `tmp`.
    fn write_gzip(&self, hash: Hash, tmp: &Path) -> io::Result<bool> {
        let src_path = self.object_path(&hash);
        let mut src = std::fs::File::open(&src_path)?;
        let src_len = src.metadata()?.len();
        let out = std::fs::File::create(tmp)?;
        let mut enc = flate2::write::GzEncoder::new(
            std::io::BufWriter::with_capacity(1 << 20, out),
            flate2::Compression::default(),
        );
        std::io::copy(&mut src, &mut enc)?;
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        let gz_len = out.metadata()?.len();
        if gz_len * 100 > src_len * (100 - GZIP_MIN_SAVING_PERCENT) {
            drop(out);
            let _ = std::fs::remove_file(tmp);
            self.no_gzip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(hash);
            return Ok(false);
        }
        if let Some(limit) = self.disk_limit {
            if self.usage.load(Ordering::Relaxed) + gz_len > limit {
                drop(out);
                let _ = std::fs::remove_file(tmp);
                return Ok(false);
            }
        }
        out.sync_all()?;
        drop(out);
        let dst = self.gzip_path(&hash);
        std::fs::rename(tmp, &dst)?;
        if let Some(parent) = dst.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        self.usage.fetch_add(gz_len, Ordering::Relaxed);
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.mark_verified(Key { hash, gzip: true });
        Ok(true)
    }

    /// Reads an object and checks its hash: for start-up, when its integrity is in doubt.
    pub fn read_verified(&self, hash: &Hash) -> Option<Vec<u8>> {
        let data = std::fs::read(self.object_path(hash)).ok()?;
        if Hash::of(&data) != *hash {
            self.remove_damaged(hash);
            return None;
        }
        self.mark_verified(Key {
            hash: *hash,
            gzip: false,
        });
        Some(data)
    }

    fn is_verified(&self, key: &Key) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    fn mark_verified(&self, key: Key) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
    }

    /// Hashes an object on disk (streaming, off the async threads). A damaged object is
    /// removed, so that it is fetched again and never served. `Ok(false)` if it was damaged;
    /// an error if it cannot be read at all.
    pub fn verify_blocking(&self, hash: &Hash) -> io::Result<bool> {
        self.verify_variant_blocking(Key {
            hash: *hash,
            gzip: false,
        })
    }

    /// Checks an object or (decompressing it) its gzip variant against the object's hash.
    fn verify_variant_blocking(&self, key: Key) -> io::Result<bool> {
        use std::io::Read;
        let f = std::fs::File::open(self.variant_path(&key))?;
        let mut reader: Box<dyn Read> = if key.gzip {
            Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
        } else {
            Box::new(f)
        };
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let whole = loop {
            match reader.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => hasher.update(&buf[..n]),
                // A gzip stream that does not decode is damage too.
                Err(e) if key.gzip && e.kind() != io::ErrorKind::NotFound => break false,
                Err(e) => return Err(e),
            }
        };
        if whole && Hash(hasher.finalize().into()) == key.hash {
            self.mark_verified(key);
            Ok(true)
        } else if key.gzip {
            log::error!("gzip variant of {} is damaged on disk: removed", key.hash);
            self.remove_file_counted(&self.gzip_path(&key.hash));
            self.memory.invalidate(&key);
            Ok(false)
        } else {
            self.remove_damaged(&key.hash);
            Ok(false)
        }
    }

    async fn verify_variant(self: &Arc<Self>, key: Key) -> io::Result<bool> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.verify_variant_blocking(key))
            .await
            .map_err(io::Error::other)?
    }

    /// Removes a file under `objects/`, keeping the usage counters right.
    fn remove_file_counted(&self, path: &Path) {
        if let Ok(m) = std::fs::metadata(path) {
            if std::fs::remove_file(path).is_ok() {
                self.usage.fetch_sub(m.len(), Ordering::Relaxed);
                self.objects.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn remove_damaged(&self, hash: &Hash) {
        log::error!("object {hash} is damaged on disk: removed, it will be fetched again");
        // Its gzip variant goes too: it would be made again from the new copy.
        for gzip in [false, true] {
            let key = Key { hash: *hash, gzip };
            self.remove_file_counted(&self.variant_path(&key));
            self.memory.invalidate(&key);
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }

    /// Bytes and number of objects on disk.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.usage.load(Ordering::Relaxed),
            self.objects.load(Ordering::Relaxed),
        )
    }

    /// Bytes and number of objects in the memory tier.
    pub fn memory_usage(&self) -> (u64, u64) {
        self.memory.run_pending_tasks();
        (self.memory.weighted_size(), self.memory.entry_count())
    }

    /// Stores a whole in-memory body and returns its hash.
    pub async fn put(self: &Arc<Self>, data: &[u8]) -> io::Result<Hash> {
        let mut w = self.writer().await?;
        w.write(Bytes::copy_from_slice(data)).await?;
        let stored = w.commit(None).await.map_err(|e| match e {
            CommitError::Io(e) => e,
            other => io::Error::other(other),
        })?;
        Ok(stored.hash())
    }

    /// Writes an index file atomically: temp file, fsync, rename, fsync of the directory.
    pub async fn write_index(&self, name: &str, data: &[u8]) -> io::Result<()> {
        // Unique per writer: two writes of one index at once (two passthrough paths stored
        // together) each rename a whole file; the last one wins.
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{name}.{}-{n}.new", std::process::id()));
        let dst = self.dir.join(name);
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(data).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &dst).await?;
        sync_dir(&self.dir).await
    }

    /// Reads an index file, if there is one.
    pub fn read_index(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes objects not in `live` that were written more than [`GC_GRACE`] before `now`.
    /// Returns how many were removed. (`now` is a parameter so tests can move time on.)
    pub async fn collect_garbage(
        self: &Arc<Self>,
        live: HashSet<Hash>,
        now: SystemTime,
    ) -> io::Result<usize> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || -> io::Result<usize> {
            let dir = store.dir.join("objects");
            let mut removed = 0;
            for sub in std::fs::read_dir(&dir)? {
                let sub = sub?;
                if !sub.file_type()?.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(sub.path())? {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let (base, gzip) = match name.strip_suffix(".gz") {
                        Some(b) => (b, true),
                        None => (name, false),
                    };
                    let Some(hash) = Hash::from_hex(base) else {
                        continue;
                    };
                    if live.contains(&hash) {
                        continue;
                    }
                    let meta = entry.metadata()?;
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|m| now.duration_since(m).ok())
                        .unwrap_or_default();
                    if age >= GC_GRACE {
                        std::fs::remove_file(entry.path())?;
                        store.memory.invalidate(&Key { hash, gzip });
                        // Else the set of verified objects grows with every object ever
                        // stored (Erik's objects alone: every manifest and CRL re-signed).
                        store
                            .verified
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&Key { hash, gzip });
                        store.usage.fetch_sub(meta.len(), Ordering::Relaxed);
                        store.objects.fetch_sub(1, Ordering::Relaxed);
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Many small objects written from a blocking thread, made durable together: each is
/// written and renamed into place under the hash of its bytes, and [`Batch::finish`] makes
/// them all durable with one `syncfs` where [`Store::put`] takes two fsyncs each (a first
/// Erik walk of a large repository stores a hundred thousand objects). Until `finish`
/// returns, nothing may list them: a crash before it can leave a short file under its
/// name (a later batch writes it again: [`Batch::put`] checks the size too).
pub(crate) struct Batch<'a> {
    store: &'a Store,
}

impl Store {
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch { store: self }
    }
}

impl Batch<'_> {
    /// Stores `data`, whose SHA-256 the caller computed as `hash`, unless it is there with
    /// its size (then it is touched, so that garbage collection keeps it: it may be one
    /// nothing listed for long).
    pub(crate) fn put(&mut self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        let store = self.store;
        // A walk still running when the cache was handed to a new process (an upgrade)
        // writes no more: the directory is the new owner's.
        if !store.owner.is_held() {
            return Err(io::Error::other("the cache directory was handed over"));
        }
        let key = Key {
            hash: *hash,
            gzip: false,
        };
        if store.contains(hash, Some(data.len() as u64)) {
            // There with its size: kept if its bytes are these (a crash can leave a file of
            // the right size and other content), hashed once per process.
            let whole = store.is_verified(&key)
                || std::fs::read(store.object_path(hash)).is_ok_and(|d| Hash::of(&d) == *hash);
            if whole && store.touch(hash) {
                store.mark_verified(key);
                return Ok(());
            }
        }
        if let Some(limit) = store.disk_limit {
            if store.usage.load(Ordering::Relaxed) + data.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    DiskLimit { limit },
                ));
            }
        }
        let n = store.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = store.tmp_dir().join(format!("{}-b{n}", std::process::id()));
        let dst = store.object_path(hash);
        let parent = dst.parent().expect("objects have a parent");
        let written = std::fs::write(&tmp, data).and_then(|()| {
            if !parent.exists() {
                std::fs::create_dir_all(parent)?;
            }
            Ok(std::fs::metadata(&dst).ok().map(|m| m.len()))
        });
        let before = match written.and_then(|before| std::fs::rename(&tmp, &dst).map(|()| before)) {
            Ok(before) => before,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        match before {
            // A damaged one replaced: the usage follows the new size.
            Some(old) => {
                store.usage.fetch_add(data.len() as u64, Ordering::Relaxed);
                store.usage.fetch_sub(old, Ordering::Relaxed);
            }
            None => {
                store.usage.fetch_add(data.len() as u64, Ordering::Relaxed);
                store.objects.fetch_add(1, Ordering::Relaxed);
            }
        }
        store.memory.invalidate(&key);
        store.mark_verified(key);
        Ok(())
    }

    /// Makes every object written so far durable (data and names): one `syncfs` of the
    /// file system the store is on.
    pub(crate) fn finish(self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(&self.store.dir)?;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Proof that an object is in the store under its SHA-256: only the store makes one, in two
/// ways. [`ObjectWriter::commit`] hashed the bytes as they were written, named the file by
/// that hash, and (given `Some(expected)`) refused any other; with `None` (a forwarded file
/// no notification named) the proof says only "stored under the hash of its bytes".
/// [`Store::stored`] finds a file already under that name: the writer is the only thing that
/// names files, so it was hashed when written, but the look-up reads only its size; a file
/// damaged on disk since is caught by hashing (at start for what a generation references,
/// and before the first byte of a retained file is served), not by this type.
/// `published` builds the generations clients see only from these proofs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    hash: Hash,
    size: u64,
}

impl Stored {
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Sums the sizes of the objects under `dir` (at start).
fn disk_usage(dir: &Path) -> io::Result<(u64, u64)> {
    let (mut bytes, mut count) = (0, 0);
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(sub.path())? {
            bytes += entry?.metadata()?.len();
            count += 1;
        }
    }
    Ok((bytes, count))
}

/// fsyncs a directory so a rename in it survives a crash.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Store {
        /// A whole object in memory.
        async fn read(self: &Arc<Self>, hash: &Hash) -> io::Result<Bytes> {
            match self.get(hash).await? {
                Object::Memory(b) => Ok(b),
                Object::File { .. } => {
                    Ok(Bytes::from(tokio::fs::read(self.object_path(hash)).await?))
                }
            }
        }
    }

    #[tokio::test]
    async fn a_batch_stores_objects_under_their_hash_and_writes_a_damaged_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let (a, b) = (Hash::of(b"one object"), Hash::of(b"another"));
        let mut batch = store.batch();
        batch.put(&a, b"one object").unwrap();
        batch.put(&b, b"another").unwrap();
        batch.finish().unwrap();
        assert_eq!(store.usage(), (17, 2));
        assert_eq!(&store.read(&a).await.unwrap()[..], b"one object");
        // A file of the right size and other bytes (a crash before `finish`) is written
        // again, not taken as stored, by a new process (this one knows it wrote it whole).
        std::fs::write(store.object_path(&b), b"anothe!").unwrap();
        store.release();
        let again = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let mut batch = again.batch();
        batch.put(&b, b"another").unwrap();
        batch.finish().unwrap();
        assert_eq!(&again.read(&b).await.unwrap()[..], b"another");
        assert_eq!(again.usage(), (17, 2), "counted once");
        // Handed over (an upgrade): nothing more is written.
        again.release();
        assert!(again.batch().put(&Hash::of(b"late"), b"late").is_err());
        let full = Store::open(&dir.path().join("full"), 1 << 20, u64::MAX, Some(4)).unwrap();
        let err = full.batch().put(&a, b"one object").unwrap_err();
        assert!(DiskLimit::is(&err), "{err}");
    }

    #[tokio::test]
    async fn commit_verifies_and_names_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        let expected = Hash::of(b"hello world");
        let stored = w.commit(Some(expected)).await.unwrap();
        let (h, len) = (stored.hash(), stored.size());
        assert_eq!((h, len), (expected, 11));
        assert!(store.contains(&h, Some(11)));
        assert!(!store.contains(&h, Some(12)));
        assert_eq!(&store.read(&h).await.unwrap()[..], b"hello world");
    }

    #[tokio::test]
    async fn hash_mismatch_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(Bytes::from_static(b"evil")).await.unwrap();
        let claimed = Hash::of(b"good");
        match w.commit(Some(claimed)).await {
            Err(CommitError::HashMismatch { expected, actual }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Hash::of(b"evil"));
            }
            other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
        }
        assert!(!store.contains(&Hash::of(b"evil"), None));
        assert!(!store.contains(&claimed, None));
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "the temporary file is removed");
    }

    #[tokio::test]
    async fn a_damaged_object_is_detected_removed_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let h = {
            let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
            store.put(b"the real content").await.unwrap()
        };
        // Same size, other bytes: only the hash can tell.
        std::fs::write(
            dir.path()
                .join("objects")
                .join(&h.to_hex()[..2])
                .join(h.to_hex()),
            b"the fake content",
        )
        .unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        assert!(store.contains(&h, Some(16)), "the size alone looks right");
        let err = store.get(&h).await.err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!store.contains(&h, None), "removed, to be fetched again");
        assert_eq!(store.usage(), (0, 0));
    }

    #[tokio::test]
    async fn gzip_variants_decode_to_the_object_and_are_kept_only_when_smaller() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let text = "<publish uri=\"rsync://x/y.roa\">AAAA</publish>\n".repeat(500);
        let h = store.put(text.as_bytes()).await.unwrap();
        assert!(store.make_gzip(h).await.unwrap());
        let Some(Object::Memory(gz)) = store.get_gzip(&h).await else {
            panic!("a small gzip variant is served from memory");
        };
        assert!(gz.len() < text.len() / 10);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(Hash::of(&out), h, "the hash holds over the decoded body");

        // Random bytes do not compress: no variant.
        let noise: Vec<u8> = (0..128u32)
            .flat_map(|i| Hash::of(&i.to_be_bytes()).0)
            .collect();
        let n = store.put(&noise).await.unwrap();
        assert!(!store.make_gzip(n).await.unwrap());
        assert!(store.get_gzip(&n).await.is_none());

        // A damaged variant on disk is found when reopened, removed, and not served.
        drop(store);
        std::fs::write(
            dir.path()
                .join("objects")
                .join(&h.to_hex()[..2])
                .join(format!("{}.gz", h.to_hex())),
            b"not gzip at all",
        )
        .unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        assert!(store.get_gzip(&h).await.is_none());
        assert!(
            store.get(&h).await.is_ok(),
            "the identity object is unharmed"
        );
    }

    #[tokio::test]
    async fn disk_limit_refuses_new_objects_and_keeps_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, Some(10)).unwrap();
        let kept = store.put(b"12345678").await.unwrap();
        let err = store.put(b"too much").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(DiskLimit::is(&err), "{err}");
        assert!(!DiskLimit::is(&io::Error::from(io::ErrorKind::StorageFull)));
        assert_eq!(&store.read(&kept).await.unwrap()[..], b"12345678");
        assert_eq!(store.usage(), (8, 1));
    }

    #[tokio::test]
    async fn large_objects_are_served_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB memory tier: objects over 8 KiB stay on disk.
        let store = Store::open(dir.path(), 64 << 10, u64::MAX, None).unwrap();
        let big = vec![7u8; 100_000];
        let h = store.put(&big).await.unwrap();
        match store.get(&h).await.unwrap() {
            Object::File { len, .. } => assert_eq!(len, 100_000),
            Object::Memory(_) => panic!("a 100 kB object must not be held in a 64 KiB tier"),
        }
        let small = store.put(b"tiny").await.unwrap();
        assert!(matches!(
            store.get(&small).await.unwrap(),
            Object::Memory(_)
        ));
    }

    #[tokio::test]
    async fn objects_over_memory_object_max_are_served_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        // Room for both, but only objects of up to 16 bytes are admitted.
        let store = Store::open(dir.path(), 1 << 20, 16, None).unwrap();
        let h = store.put(&[1u8; 17]).await.unwrap();
        assert!(matches!(
            store.get(&h).await.unwrap(),
            Object::File { len: 17, .. }
        ));
        let small = store.put(&[2u8; 16]).await.unwrap();
        assert!(matches!(
            store.get(&small).await.unwrap(),
            Object::Memory(_)
        ));
        assert_eq!(store.memory_usage().0, 16);
    }

    #[tokio::test]
    async fn gc_keeps_live_and_young_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let live = store.put(b"live").await.unwrap();
        let dead = store.put(b"dead").await.unwrap();
        // Young objects survive even when unreferenced. Age is the file system's: "now" is
        // the dead object's own modification time (the kernel's clock, which a test clock
        // such as libfaketime does not move), so this holds whatever the date.
        let now = std::fs::metadata(store.object_path(&dead))
            .unwrap()
            .modified()
            .unwrap();
        let live_set = || HashSet::from([live]);
        assert_eq!(store.collect_garbage(live_set(), now).await.unwrap(), 0);
        assert_eq!(store.usage(), (8, 2));
        // Past the grace period (an injected clock), the unreferenced one goes.
        let later = now + GC_GRACE + Duration::from_secs(1);
        assert_eq!(store.collect_garbage(live_set(), later).await.unwrap(), 1);
        assert!(store.contains(&live, None));
        assert_eq!(store.usage(), (4, 1));
        assert!(!store.contains(&dead, None));
    }

    /// Regression (issue 26, item 13): a gzip variant that failed to be written left its
    /// temporary file behind (on a full disk, for good) and was tried again after every poll.
    #[tokio::test]
    async fn a_failed_gzip_leaves_nothing_and_waits_before_trying_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        // An "object" the compressor cannot read: a directory where the file should be.
        let hash = Hash::of(b"unreadable");
        std::fs::create_dir_all(store.object_path(&hash)).unwrap();
        assert!(store.make_gzip(hash).await.is_err());
        let left: Vec<_> = std::fs::read_dir(store.tmp_dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!store.make_gzip(hash).await.unwrap(), "tried again at once");
    }

    /// At start, only a dead writer's temporary files go: a process being upgraded away may
    /// still be finishing a write of its own.
    #[test]
    fn start_clears_only_dead_writers_temporaries() {
        assert_eq!(writer_pid("1234-7"), Some(1234));
        assert_eq!(writer_pid("1234-7.gz"), Some(1234));
        assert_eq!(writer_pid("repository-12ab.json.1234-7.new"), Some(1234));
        assert_eq!(writer_pid("pre-validate-1234-99"), Some(1234));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        // pid 1 is alive; 99,999,999 is above any pid_max.
        std::fs::write(dir.path().join("tmp/1-3"), b"live").unwrap();
        std::fs::write(dir.path().join("tmp/99999999-3"), b"dead").unwrap();
        let _store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        assert!(dir.path().join("tmp/1-3").exists());
        assert!(!dir.path().join("tmp/99999999-3").exists());
    }
}
