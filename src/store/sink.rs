//! The file side of an object being written: buffered at first, then past the page cache.
//!
//! Every byte written through the page cache is copied into a page the kernel hands out,
//! and a big snapshot needs hundreds of MiB of them at once. On this project's 2-core VMs,
//! copying into pages not touched for a while runs at 420–630 MB/s (`dd` to a new file; into
//! pages just freed, 5 GB/s): storing a 500 MiB snapshot that way cost more than downloading
//! it, and the fsync then wrote it all out again before it could be published. From
//! [`DIRECT_FROM`] on, a file is written with `O_DIRECT` instead, as databases write their
//! logs: the bytes go from one reused, aligned buffer to the disk (1.7–2.2 GB/s here), so the
//! fsync at the end has only the first [`DIRECT_FROM`], the last partial block, the new
//! blocks' metadata and the device's cache left to make durable. The cost: a new
//! big snapshot is not in the page cache, so its first reader (an RP that starts over, or the
//! gzip variant made after publishing) reads it from disk. Where a file system refuses
//! `O_DIRECT` (some FUSE; tmpfs before Linux 6.6), or a device refuses a direct write, the
//! file goes on buffered, and its pages are handed to
//! writeback as it grows (`sync_file_range`) so that the fsync has little left.

use std::fs::File;
use std::io::{self, Write};

/// Files are written past the page cache from this offset on.
pub(super) const DIRECT_FROM: u64 = 8 << 20;

/// What direct writes are aligned to (memory, file offset and length): the logical block size
/// of every common device (512 or 4096 bytes). A device that wants more refuses the write,
/// and the file goes on buffered.
const ALIGN: usize = 4096;

/// The aligned buffer direct writes go from.
const STAGE: usize = 1 << 20;

/// A buffered file's pages are handed to writeback every this many bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// The temporary file of an object being written.
pub(super) struct Sink {
    file: File,
    /// Bytes taken (written, or staged for a direct write).
    written: u64,
    /// Bytes of the buffered part already handed to writeback.
    queued: u64,
    /// Set while writing direct: the aligned buffer.
    stage: Option<Stage>,
    /// Direct writes were refused: the rest stays buffered.
    buffered_only: bool,
    /// Tests: the next direct write is refused, as a device may refuse it.
    #[cfg(test)]
    refuse_direct: bool,
}

impl Sink {
    pub(super) fn new(file: File) -> Sink {
        Sink {
            file,
            written: 0,
            queued: 0,
            stage: None,
            buffered_only: false,
            #[cfg(test)]
            refuse_direct: false,
        }
    }

    /// Writes the next bytes (possibly into the stage, for a later direct write).
    pub(super) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.stage.is_none() && !self.buffered_only && self.written >= DIRECT_FROM {
            // Up to the next aligned offset buffered; direct from there.
            let misaligned = (self.written % ALIGN as u64) as usize;
            let pad = ((ALIGN - misaligned) % ALIGN).min(data.len());
            self.write_buffered(&data[..pad])?;
            data = &data[pad..];
            if self.written.is_multiple_of(ALIGN as u64) {
                self.start_direct();
            }
        }
        if self.stage.is_none() {
            return self.write_buffered(data);
        }
        while !data.is_empty() {
            let Some(stage) = self.stage.as_mut() else {
                // A refused direct write fell back: the rest goes buffered.
                return self.write_buffered(data);
            };
            let n = stage.push(data);
            data = &data[n..];
            self.written += n as u64;
            if stage.is_full() {
                self.write_staged()?;
            }
        }
        Ok(())
    }

    /// Bytes taken so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Ends a batch: staged whole blocks go to disk; a buffered part's pages to writeback.
    pub(super) fn end_batch(&mut self) -> io::Result<()> {
        if self.stage.is_some() {
            self.write_staged()?;
        }
        if self.written - self.queued >= WRITEBACK_EVERY && self.stage.is_none() {
            start_writeback(&self.file, self.queued, self.written - self.queued);
            self.queued = self.written;
        }
        Ok(())
    }

    /// Writes what is left and makes the file durable.
    pub(super) fn finish(mut self) -> io::Result<File> {
        if self.stage.is_some() {
            self.write_staged()?;
            // The last partial block, buffered.
            if let Some(stage) = self.stage.take() {
                set_direct(&self.file, false)?;
                self.file.write_all(stage.bytes())?;
            }
        }
        self.file.sync_all()?;
        Ok(self.file)
    }

    fn write_buffered(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn start_direct(&mut self) {
        if set_direct(&self.file, true).is_ok() {
            self.stage = Some(Stage::new());
        } else {
            self.buffered_only = true;
        }
    }

    /// Writes the stage's whole blocks direct, keeping the partial one staged. A refused
    /// direct write (a file system that took the flag but not the write) is done buffered,
    /// and the file stays buffered.
    fn write_staged(&mut self) -> io::Result<()> {
        let stage = self.stage.as_mut().expect("writing direct");
        let whole = stage.whole();
        if whole.is_empty() {
            return Ok(());
        }
        let len = whole.len();
        #[cfg(test)]
        if self.refuse_direct {
            return self.fall_back();
        }
        match self.file.write(whole) {
            Ok(n) if n == len => {
                stage.drop_front(len);
                Ok(())
            }
            // A short direct write leaves the offset misaligned: the rest goes buffered.
            Ok(n) => {
                stage.drop_front(n);
                self.fall_back()
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => self.fall_back(),
            Err(e) => Err(e),
        }
    }

    /// Leaves direct writing: the staged bytes are written buffered, and so is the rest.
    fn fall_back(&mut self) -> io::Result<()> {
        self.buffered_only = true;
        let Some(stage) = self.stage.take() else {
            return Ok(());
        };
        set_direct(&self.file, false)?;
        self.file.write_all(stage.bytes())
    }
}

/// A buffer whose start is aligned for direct writes: a plain `Vec`, used from its first
/// aligned byte (no allocator tricks).
struct Stage {
    buf: Vec<u8>,
    start: usize,
    fill: usize,
}

impl Stage {
    fn new() -> Stage {
        let buf = vec![0u8; STAGE + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Stage {
            buf,
            start,
            fill: 0,
        }
    }

    /// Copies in what fits; how much that was.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = (STAGE - self.fill).min(data.len());
        let at = self.start + self.fill;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.fill += n;
        n
    }

    fn is_full(&self) -> bool {
        self.fill == STAGE
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.fill]
    }

    /// The staged whole blocks.
    fn whole(&self) -> &[u8] {
        &self.bytes()[..self.fill / ALIGN * ALIGN]
    }

    /// Forgets the first `n` staged bytes, moving the rest to the aligned start.
    fn drop_front(&mut self, n: usize) {
        let from = self.start + n;
        self.buf
            .copy_within(from..self.start + self.fill, self.start);
        self.fill -= n;
    }
}

#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor borrowed for the call; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    } else {
        Ok(())
    }
}

/// Starts writing back `len` bytes from `offset` without waiting for them. Only a head start
/// for the fsync, which alone decides durability: a failure here changes nothing.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor borrowed for the call; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset (a misplaced block shows).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Writes `data` in pieces of `piece` bytes, a batch every ten pieces, calling `between`
    /// after each batch; returns the file's bytes.
    fn write_all(data: &[u8], piece: usize, mut between: impl FnMut(&mut Sink)) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let mut sink = Sink::new(File::create(&path).unwrap());
        for batch in data.chunks(piece * 10) {
            for p in batch.chunks(piece) {
                sink.write(p).unwrap();
            }
            sink.end_batch().unwrap();
            between(&mut sink);
        }
        sink.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_big_file_written_direct_holds_the_bytes() {
        // Where the file system takes O_DIRECT (it does where the tests run, ext4), the writes
        // past DIRECT_FROM went direct; elsewhere they stayed buffered.
        let probe = tempfile::tempfile().unwrap();
        let direct_here = set_direct(&probe, true).is_ok();
        let data = pattern(2 * DIRECT_FROM as usize + 12_345);
        if !direct_here {
            eprintln!("this file system refuses O_DIRECT: only the buffered path was tested");
        }
        for piece in [100_003, 65_536, 4_095] {
            let mut went_direct = false;
            let written = write_all(&data, piece, |s| went_direct |= s.stage.is_some());
            assert_eq!(went_direct, direct_here, "pieces of {piece}");
            assert!(written == data, "pieces of {piece}: the file differs");
        }
    }

    #[test]
    fn a_refused_direct_write_goes_on_buffered() {
        let data = pattern(DIRECT_FROM as usize + 3 * STAGE + 777);
        let mut fell_back = false;
        let written = write_all(&data, 50_001, |s| {
            if s.stage.is_some() && !fell_back {
                // As if the device refused the next direct write, which comes when the stage
                // fills in the middle of a piece.
                s.refuse_direct = true;
                fell_back = true;
            }
        });
        assert!(written == data, "the file differs");
        let probe = tempfile::tempfile().unwrap();
        assert_eq!(fell_back, set_direct(&probe, true).is_ok());
    }
}
