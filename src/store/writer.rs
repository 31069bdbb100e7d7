//! Writing a new object: hashed, written and (for a snapshot or delta) checked as its bytes
//! arrive; then made durable and renamed under its hash.
//!
//! The bytes go to the temporary file in batches of about [`BATCH`]: one job on the blocking
//! pool writes a batch ([`Sink`]: past the page cache once the file is big) while another
//! hashes it and the next batch fills; the content check gets the same batches, uncopied.
//! Written through tokio's `File`, every 64 KiB chunk of a download was copied twice more
//! (for the check and into tokio's buffer), made its own round trip to the blocking pool,
//! and the SHA-256 ran on the async worker between them: a 500 MiB snapshot took three to
//! four times as long to store as to download (docs/benchmarks.md, big snapshots). The
//! writing and hashing jobs hold no thread between batches; the content check, a pull
//! parser, holds one for the whole download, as it did before.
//!
//! Memory per download: the batch filling, the batch being written, and the two the check
//! may have queued (shared, not copied), about 4 MiB, plus the 1 MiB stage of a direct write.
//! Chunks smaller than [`SMALL_CHUNK`] (an upstream may send one byte per chunk) are first
//! gathered into one buffer, so that a batch is never a million one-byte pieces.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sha2::Digest;
use tokio::task::JoinHandle;

use super::sink::Sink;
use super::{checker, sync_dir, DiskLimit, Key, Store, Stored};
use crate::rrdp::content::{ContentError, Expected};
use crate::rrdp::Hash;

/// Bytes gathered before a batch goes to the blocking pool (a batch may pass it by one chunk):
/// large enough that the round trip is rare (500 per 500 MiB), small enough that a download
/// holds little.
const BATCH: usize = 1 << 20;

/// Chunks below this size are copied together into pieces of [`GATHERED`] before they join
/// a batch, so every piece of a batch but the last carries at least this many bytes.
const SMALL_CHUNK: usize = 16 << 10;
const GATHERED: usize = 64 << 10;

/// Batches from this size on are hashed in a job of their own, beside the write; smaller
/// ones (a small object's only batch) at once, sparing a round trip.
const HASH_APART: usize = 64 << 10;

/// Objects from this size on log where their storing time went (download, content check,
/// fsync): the phases of a large snapshot's round.
const LOG_PHASES_FROM: u64 = 64 << 20;

/// The jobs writing and hashing the last batch.
struct InFlight {
    write: JoinHandle<io::Result<Box<Sink>>>,
    hash: Option<JoinHandle<sha2::Sha256>>,
}

/// Why an object could not be stored ([`ObjectWriter::commit`]).
#[derive(Debug)]
pub enum CommitError {
    /// The bytes do not have the hash they were announced with.
    HashMismatch {
        expected: Hash,
        actual: Hash,
    },
    /// The bytes have the right hash but are not the file the notification describes.
    Invalid(ContentError),
    Io(io::Error),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::HashMismatch { expected, actual } => {
                write!(f, "SHA-256 mismatch: expected {expected}, got {actual}")
            }
            CommitError::Invalid(e) => write!(f, "content refused: {e}"),
            CommitError::Io(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for CommitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommitError::HashMismatch { .. } => None,
            CommitError::Invalid(e) => Some(e),
            CommitError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for CommitError {
    fn from(e: io::Error) -> Self {
        CommitError::Io(e)
    }
}

/// A new object being written; it becomes visible only through [`ObjectWriter::commit`].
pub struct ObjectWriter {
    store: Arc<Store>,
    path: PathBuf,
    /// The file and hash between batches; `None` while a batch is written and hashed
    /// (`in_flight`), or once a batch failed.
    sink: Option<Box<Sink>>,
    hasher: Option<sha2::Sha256>,
    in_flight: Option<InFlight>,
    /// The batch being gathered, and small chunks being copied together for it.
    pending: Vec<Bytes>,
    pending_len: usize,
    small: BytesMut,
    len: u64,
    /// The bytes too, while the object may still go to the memory tier.
    keep: Vec<u8>,
    /// Renamed into place: the temporary file is gone.
    committed: bool,
    /// When the writer was made (the download began): large objects log their phases.
    started: Instant,
    /// The content check, when it runs beside the writing ([`ObjectWriter::check_while_writing`]).
    checker: Option<checker::Checker>,
}

impl Store {
    /// Starts writing a new object.
    pub async fn writer(self: &Arc<Self>) -> io::Result<ObjectWriter> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()));
        let file = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::File::create(&path)
        })
        .await
        .map_err(io::Error::other)?
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
        Ok(ObjectWriter {
            store: self.clone(),
            path,
            sink: Some(Box::new(Sink::new(file))),
            hasher: Some(sha2::Sha256::new()),
            in_flight: None,
            pending: Vec::new(),
            pending_len: 0,
            small: BytesMut::new(),
            len: 0,
            keep: Vec::new(),
            committed: false,
            started: Instant::now(),
            checker: None,
        })
    }
}

impl ObjectWriter {
    /// Runs the content check `expected` on the bytes as they are written; its verdict
    /// decides at [`ObjectWriter::commit`].
    pub fn check_while_writing(&mut self, expected: &Expected) {
        self.checker = Some(checker::Checker::start(expected));
    }

    /// Takes the next bytes. They reach the file (and the check) in batches: an error writing
    /// one comes back from a later call, or from the commit.
    pub async fn write(&mut self, data: Bytes) -> io::Result<()> {
        if let Some(limit) = self.store.disk_limit {
            let used = self.store.usage.load(Ordering::Relaxed);
            if used + self.len + data.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    DiskLimit { limit },
                ));
            }
        }
        self.len += data.len() as u64;
        if self.len <= self.store.memory_object_max {
            self.keep.extend_from_slice(&data);
        } else if !self.keep.is_empty() {
            self.keep = Vec::new();
        }
        self.pending_len += data.len();
        if data.len() < SMALL_CHUNK {
            self.small.extend_from_slice(&data);
            if self.small.len() >= GATHERED {
                self.pending.push(self.small.split().freeze());
            }
        } else {
            self.gather_small();
            self.pending.push(data);
        }
        if self.pending_len >= BATCH {
            self.send_batch().await?;
        }
        Ok(())
    }

    /// Small chunks copied together so far join the batch, in their place.
    fn gather_small(&mut self) {
        if !self.small.is_empty() {
            self.pending.push(self.small.split().freeze());
        }
    }

    /// The file and hash, once the batch under way (if any) is written and hashed.
    async fn settle(&mut self) -> io::Result<(Box<Sink>, sha2::Sha256)> {
        if let Some(InFlight { write, hash }) = self.in_flight.take() {
            if let Some(hash) = hash {
                self.hasher = Some(hash.await.map_err(io::Error::other)?);
            }
            self.sink = Some(write.await.map_err(io::Error::other)??);
        }
        match (self.sink.take(), self.hasher.take()) {
            (Some(sink), Some(hasher)) => Ok((sink, hasher)),
            _ => Err(io::Error::other("an earlier write of this object failed")),
        }
    }

    /// Hands the gathered batch to the check, and to jobs that write and hash it once the
    /// previous batch is written and hashed.
    async fn send_batch(&mut self) -> io::Result<()> {
        self.gather_small();
        let batch = std::mem::take(&mut self.pending);
        let apart = std::mem::take(&mut self.pending_len) >= HASH_APART;
        if let Some(checker) = &mut self.checker {
            checker.feed(&batch).await;
        }
        let (mut sink, mut hasher) = self.settle().await?;
        let hash = if apart {
            let batch = batch.clone();
            Some(tokio::task::spawn_blocking(move || {
                batch.iter().for_each(|bytes| hasher.update(bytes));
                hasher
            }))
        } else {
            batch.iter().for_each(|bytes| hasher.update(bytes));
            self.hasher = Some(hasher);
            None
        };
        let write = tokio::task::spawn_blocking(move || {
            for bytes in &batch {
                sink.write(bytes)?;
            }
            sink.end_batch()?;
            Ok(sink)
        });
        self.in_flight = Some(InFlight { write, hash });
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Verifies the hash (if one is expected) and, if the check ran beside the writing
    /// ([`ObjectWriter::check_while_writing`]), that the bytes are the snapshot or delta it
    /// expects; then makes the object durable and visible under its name. A refused file is
    /// never stored.
    pub async fn commit(mut self, expected: Option<Hash>) -> Result<Stored, CommitError> {
        if self.pending_len > 0 {
            self.send_batch().await?;
        }
        let (sink, hasher) = self.settle().await?;
        if sink.written() != self.len {
            // Only a `write` cancelled midway (its batch taken, not sent) can cause this; no
            // caller goes on with a writer after that, but a short file must never be stored.
            return Err(CommitError::Io(io::Error::other(format!(
                "{} bytes written of {}",
                sink.written(),
                self.len
            ))));
        }
        let actual = Hash(hasher.finalize().into());
        if let Some(expected) = expected {
            if expected != actual {
                return Err(CommitError::HashMismatch { expected, actual });
            }
        }
        let downloaded = Instant::now();
        // The rest of the file and the fsync run beside the end of the check (a big file is
        // all but on disk already); the rename waits for both.
        let fsync = tokio::task::spawn_blocking(move || {
            sink.finish()?;
            Ok::<_, io::Error>(Instant::now())
        });
        let verdict = match self.checker.take() {
            Some(checker) => Some(checker.finish().await?),
            None => None,
        };
        if let Some(Err(e)) = verdict {
            // Refused whatever the fsync does; dropping the writer removes the temporary file.
            return Err(CommitError::Invalid(e));
        }
        let checked = Instant::now();
        let synced = fsync.await.map_err(io::Error::other)??;
        if self.len >= LOG_PHASES_FROM {
            log::info!(
                "stored {actual}: {} MiB; download and SHA-256 {:.2} s, content check {:.2} s, \
                 fsync {:.2} s (check and fsync at once)",
                self.len >> 20,
                downloaded.duration_since(self.started).as_secs_f64(),
                checked.duration_since(downloaded).as_secs_f64(),
                synced.duration_since(downloaded).as_secs_f64()
            );
        }
        self.publish(actual).await
    }

    /// Renames the durable temporary file under its hash and counts it.
    async fn publish(mut self, actual: Hash) -> Result<Stored, CommitError> {
        let dst = self.store.object_path(&actual);
        let parent = dst.parent().expect("objects have a parent");
        if !tokio::fs::try_exists(parent).await.unwrap_or(false) {
            tokio::fs::create_dir_all(parent).await?;
            // A new `objects/ab` must survive a crash too: its entry in `objects/` is synced.
            sync_dir(parent.parent().expect("objects/ab is under objects")).await?;
        }
        let existed = tokio::fs::try_exists(&dst).await.unwrap_or(false);
        tokio::fs::rename(&self.path, &dst).await?;
        self.committed = true;
        sync_dir(parent).await?;
        if !existed {
            self.store.usage.fetch_add(self.len, Ordering::Relaxed);
            self.store.objects.fetch_add(1, Ordering::Relaxed);
        }
        let key = Key {
            hash: actual,
            gzip: false,
        };
        self.store.mark_verified(key);
        if !self.keep.is_empty() || self.len == 0 {
            let data = Bytes::from(std::mem::take(&mut self.keep));
            self.store.memory.insert(key, data);
        }
        Ok(Stored {
            hash: actual,
            size: self.len,
        })
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Not committed: the temporary file goes (a batch still being written goes on into
        // the unlinked file and ends).
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rrdp::content::Document;

    const SESSION: &str = "9df4b597-af9e-4dca-bdda-719cce2c4e28";

    /// A snapshot of about `size` bytes, and the content check it passes.
    fn snapshot(size: usize) -> (Vec<u8>, Expected) {
        let mut doc = format!(
            "<snapshot xmlns=\"http://www.ripe.net/rpki/rrdp\" version=\"1\" \
             session_id=\"{SESSION}\" serial=\"3\">\n"
        );
        let mut i = 0;
        while doc.len() < size {
            let b64: String = (0..1000)
                .map(|j| ['A', 'g', '9', '+'][(i + j) % 4])
                .collect();
            doc.push_str(&format!(
                "<publish uri=\"rsync://x/r/{i}.roa\">{b64}</publish>\n"
            ));
            i += 1;
        }
        doc.push_str("</snapshot>\n");
        (
            doc.into_bytes(),
            Expected::new(Document::Snapshot, SESSION, 3),
        )
    }

    fn leftovers(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    /// Many batches, some past the writeback step: the stored file is the bytes, named by
    /// their hash, and the check's verdict is on all of them.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_of_many_batches_is_stored_whole_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let (doc, expected) = snapshot(3 * super::super::sink::DIRECT_FROM as usize / 2);
        assert!(doc.len() > 10 * BATCH);
        let mut w = store.writer().await.unwrap();
        w.check_while_writing(&expected);
        // Odd chunks: the switch to direct writes needs padding, and the stage fills in the
        // middle of a chunk.
        for chunk in doc.chunks(65_537) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let stored = w.commit(Some(Hash::of(&doc))).await.unwrap();
        assert_eq!(
            (stored.hash(), stored.size()),
            (Hash::of(&doc), doc.len() as u64)
        );
        let on_disk = std::fs::read(store.object_path(&stored.hash())).unwrap();
        assert!(
            on_disk == doc,
            "the stored file differs from the bytes written"
        );
        assert_eq!(leftovers(dir.path()), 0);

        // The same bytes with one changed in the last batch: the hash and the check both see
        // it, and nothing is left behind.
        let mut bad = doc.clone();
        let at = bad.len() - 100;
        bad[at] = b'!';
        for claimed in [Some(Hash::of(&bad)), Some(Hash::of(&doc))] {
            let mut w = store.writer().await.unwrap();
            w.check_while_writing(&expected);
            for chunk in bad.chunks(64 << 10) {
                w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            match w.commit(claimed).await {
                Err(CommitError::Invalid(_)) if claimed == Some(Hash::of(&bad)) => {}
                Err(CommitError::HashMismatch { .. }) if claimed == Some(Hash::of(&doc)) => {}
                other => panic!("refused for the wrong reason: {:?}", other.map(|_| ())),
            }
            assert!(!store.contains(&Hash::of(&bad), None));
            assert_eq!(leftovers(dir.path()), 0);
        }
    }

    /// An upstream sending one byte per chunk: the pieces of a batch are gathered, not a
    /// million one-byte `Bytes`; the object is stored whole all the same.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_byte_chunks_are_gathered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 10, u64::MAX, None).unwrap();
        let data: Vec<u8> = (0..BATCH + 5).map(|i| (i % 251) as u8).collect();
        let mut w = store.writer().await.unwrap();
        for (i, b) in data.iter().enumerate() {
            w.write(Bytes::copy_from_slice(&[*b])).await.unwrap();
            assert!(
                w.pending.len() <= BATCH / GATHERED + 1,
                "{} pieces after {i} bytes",
                w.pending.len()
            );
        }
        let stored = w.commit(Some(Hash::of(&data))).await.unwrap();
        assert_eq!(stored.size(), data.len() as u64);
        assert!(std::fs::read(store.object_path(&stored.hash())).unwrap() == data);
    }

    /// A writer dropped with a batch being written (a download's timeout) leaves nothing.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_writer_dropped_midway_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 10, u64::MAX, None).unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(Bytes::from(vec![b'x'; BATCH + 1])).await.unwrap();
        let job = w.in_flight.take().expect("a batch is being written");
        drop(w);
        // The job ends, writing into the unlinked file.
        assert!(job.write.await.unwrap().is_ok());
        assert_eq!(leftovers(dir.path()), 0);
        assert_eq!(store.usage(), (0, 0));
    }

    /// A batch that fails to write (the file's descriptor is gone) fails the write after it
    /// or the commit, and stores nothing.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_batch_fails_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, u64::MAX, None).unwrap();
        let mut w = store.writer().await.unwrap();
        // Swap the file for a read-only one: every write to it fails.
        let read_only = std::fs::File::open(&w.path).unwrap();
        w.sink = Some(Box::new(Sink::new(read_only)));
        let chunk = Bytes::from(vec![b'x'; BATCH]);
        let mut failed = false;
        for _ in 0..3 {
            failed |= w.write(chunk.clone()).await.is_err();
        }
        let committed = w.commit(None).await;
        assert!(
            failed || committed.is_err(),
            "a failed write went unnoticed"
        );
        assert!(committed.is_err());
        assert_eq!(leftovers(dir.path()), 0);
    }
}
