//! Gzip variants of the published files, made in the background: compressing a 500 MB
//! snapshot takes seconds, and neither a new serial nor the next poll may wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::warn;

use crate::published::Repo;
use crate::store::Store;

/// Starts compressing the files the published notification references, unless a compression
/// runs already (`running`). One compression at a time; a generation published meanwhile is
/// compressed right after, by the same task.
pub(crate) fn spawn(repo: Arc<Repo>, store: Arc<Store>, running: Arc<AtomicBool>) {
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        loop {
            let Some(g) = repo.current() else {
                running.store(false, Ordering::Release);
                return;
            };
            let started = std::time::Instant::now();
            for f in g.files.values().filter(|f| f.expires.is_none()) {
                if let Err(e) = store.make_gzip(f.hash).await {
                    warn!(
                        "{}: cannot make gzip variant of {}: {e}",
                        repo.name(),
                        f.hash
                    );
                }
            }
            let secs = started.elapsed().as_secs_f64();
            repo.report(|s| {
                s.compressed_serial = Some(g.serial);
                s.compress_seconds = Some(secs);
            });
            running.store(false, Ordering::Release);
            // A generation published while this ran found the flag set and left its files
            // to this task; take them on unless another task already has.
            let moved_on = repo
                .peek()
                .as_ref()
                .is_some_and(|now| !Arc::ptr_eq(now, &g));
            if !moved_on || running.swap(true, Ordering::AcqRel) {
                // The round's download and hashing buffers and the compressors' are free now.
                crate::heap::release_free();
                return;
            }
        }
    });
}
