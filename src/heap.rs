//! Giving freed heap memory back to the system.
//!
//! glibc's malloc gives each thread that allocates its own arena, up to eight per core, and an
//! arena keeps what is freed in it for reuse. After a buffer of a MiB or more has been freed,
//! its trim threshold rises to twice that, so each of the blocking-pool threads that fetched,
//! hashed or gzip-compressed files kept a few MiB, and a process that held nothing kept tens
//! of MiB after one sync (docs/benchmarks.md has the figures). Two arenas
//! are plenty for a proxy whose serving threads allocate little, and the bursts of background
//! work (a sync round and the compression after it) end with a trim that returns what they
//! freed.

/// Caps the number of malloc arenas; called once, before any other thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free memory of every arena to the system (after bursts of background work;
/// it walks the arenas, so not per request).
pub(crate) fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory malloc holds free; it takes the arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
