//! One owner per cache directory: an exclusive lock on `<cache.dir>/lock`, held by the one
//! process that writes the directory.
//!
//! Two processes on one cache destroyed each other's data: opening the store deletes the
//! temporary files of writes in progress, and garbage collection deletes the objects the
//! other process's generation lists. A second process now refuses to start, naming the
//! holder. A graceful upgrade (`--upgrade`) hands the lock over: the old process lets go of it
//! once its pollers, exporters and garbage collection (the writers that replace and delete)
//! have stopped, and the new one waits for it before it opens the store. Requests the old
//! process is still answering may store an object they fetched: content-addressed, under a
//! temporary name of its own, which the new process leaves alone while the old one lives
//! (`Store::open`), so nothing is torn or deleted under either.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lock file's name in the cache directory; it holds the owner's pid.
pub(crate) const LOCK_FILE: &str = "lock";

/// The held lock (released on drop, or by [`Owner::release`]).
pub struct Owner(Mutex<Option<File>>);

impl Owner {
    /// Takes the lock on `dir`, or says who holds it.
    pub fn take(dir: &Path) -> io::Result<Owner> {
        let path = dir.join(LOCK_FILE);
        // Not truncated before it is ours: the file names the holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
        if file.try_lock().is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("process {holder}")
            };
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by {who} (it holds {}); one cache directory, one rrdp-proxy",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(Owner(Mutex::new(Some(file))))
    }

    /// Waits until nobody holds the lock on `dir` (an upgrade: the old process lets go of it
    /// once its writers stopped), at most `limit`. Does not take it.
    pub fn wait_free(dir: &Path, limit: Duration) -> io::Result<()> {
        let path = dir.join(LOCK_FILE);
        let Ok(file) = File::open(&path) else {
            return Ok(());
        };
        let deadline = Instant::now() + limit;
        loop {
            if file.try_lock().is_ok() {
                return file.unlock();
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} was not let go of within {}s by the process being upgraded",
                        path.display(),
                        limit.as_secs()
                    ),
                ));
            }
            // A lock has no event to wait on across processes; the handover takes
            // milliseconds.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether this process still holds the lock (and so may write the directory).
    pub(crate) fn is_held(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Lets go of the lock: this process writes the directory no more.
    pub fn release(&self) {
        let file = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = file {
            let _ = f.unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_holders_pid_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = Owner::take(dir.path()).unwrap();
        let e = Owner::take(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        assert!(Owner::wait_free(dir.path(), Duration::from_millis(50)).is_err());
        first.release();
        Owner::wait_free(dir.path(), Duration::from_secs(5)).unwrap();
        let _second = Owner::take(dir.path()).unwrap();
    }
}
