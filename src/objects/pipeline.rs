//! Verifying signed objects on threads beside the one reading them, with the results taken
//! in the order read.
//!
//! The first validation of a repository reads every signed object from the snapshot (Base64,
//! the walk) and verifies it (DER, RSA): on one thread, 129 µs an object on this project's
//! machines (docs/benchmarks.md, first validation). Here the reading thread gathers batches
//! and hands them to worker threads while it reads on; each result comes back to the reading
//! thread in the order read, so what is made of them does not depend on the threads.
//!
//! Bounded whatever a repository holds: a batch is at most [`BATCH_OBJECTS`] items, or
//! [`BATCH_BYTES`] (or one item larger than that), and at most `workers + 1` batches are
//! handed out and not yet taken back; reading waits beyond that. Workers run at nice 10, so
//! that serving comes first when the cores are busy. A panic in `verify` is
//! caught on its thread, ends the reading, and is carried to the reading thread once the
//! workers are done, as if `verify` had run there.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};

/// Items per batch: enough to keep a thread busy a while (64 ROAs, about 6 ms of CPU), few
/// enough that the DER in flight stays small (each halving from 256 took 1–1.5 MiB off the
/// first validation's peak, at no cost in time: docs/benchmarks.md).
/// Two in unit tests, so that their small repositories go through several batches and
/// threads.
pub(super) const BATCH_OBJECTS: usize = if cfg!(test) { 2 } else { 64 };

/// Bytes per batch (an item larger than this is a batch of its own).
pub(super) const BATCH_BYTES: usize = 4 << 20;

/// Runs `verify` over the items `read` hands over (each with its size in bytes) on `workers`
/// threads beside this one, and hands each result to `take` in the order read. With no
/// workers, everything runs on this thread.
pub(super) fn verify_in_order<I: Send, R: Send>(
    workers: usize,
    read: impl FnOnce(&mut dyn FnMut(I, usize)),
    verify: impl Fn(I) -> R + Sync,
    take: &mut dyn FnMut(R),
) {
    if workers == 0 {
        read(&mut |item, _| take(verify(item)));
        return;
    }
    let (to_verify, batches) = mpsc::sync_channel::<(u64, Vec<I>)>(1);
    let batches = Mutex::new(batches);
    let (verified_tx, verified) = mpsc::channel::<(u64, std::thread::Result<Vec<R>>)>();
    let panicked = std::thread::scope(|scope| {
        let (to_verify, verified_tx, verified) = (to_verify, verified_tx, verified);
        for _ in 0..workers {
            let (batches, verified_tx, verify) = (&batches, verified_tx.clone(), &verify);
            scope.spawn(move || {
                yield_to_serving();
                loop {
                    let next = batches.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((n, items)) = next else { break };
                    let results = panic::catch_unwind(AssertUnwindSafe(|| {
                        items.into_iter().map(verify).collect::<Vec<R>>()
                    }));
                    if verified_tx.send((n, results)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(verified_tx);
        let mut order = InOrder {
            workers,
            sent: 0,
            next: 0,
            early: BTreeMap::new(),
            panicked: None,
        };
        let mut gather = Gather::default();
        read(&mut |item, size| {
            if order.panicked.is_none() {
                gather.push(item, size, &mut |batch| {
                    order.send(&to_verify, batch, &verified, take);
                });
            }
        });
        if !gather.batch.is_empty() && order.panicked.is_none() {
            order.send(&to_verify, gather.batch, &verified, take);
        }
        // The workers end once the batches are all taken; the rest of the results follow.
        drop(to_verify);
        for done in verified {
            order.arrived(done, take);
        }
        order.panicked
    });
    if let Some(payload) = panicked {
        panic::resume_unwind(payload);
    }
}

/// Lowers this thread's priority (nice 10), so that the proxy's serving threads come first
/// when the cores are busy; on an idle machine it changes nothing. Linux sets the nice value
/// per thread; a refusal leaves the thread as it was.
fn yield_to_serving() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on this thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        if let Ok(tid) = libc::id_t::try_from(tid) {
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
}

/// The batch being gathered.
struct Gather<I> {
    batch: Vec<I>,
    bytes: usize,
}

impl<I> Default for Gather<I> {
    fn default() -> Self {
        Gather {
            batch: Vec::new(),
            bytes: 0,
        }
    }
}

impl<I> Gather<I> {
    /// Adds an item, handing `ready` each batch it completes: the one it would take past
    /// [`BATCH_BYTES`], and the one it fills to [`BATCH_OBJECTS`].
    fn push(&mut self, item: I, size: usize, ready: &mut dyn FnMut(Vec<I>)) {
        if !self.batch.is_empty() && self.bytes.saturating_add(size) > BATCH_BYTES {
            self.bytes = 0;
            ready(std::mem::take(&mut self.batch));
        }
        self.batch.push(item);
        self.bytes = self.bytes.saturating_add(size);
        if self.batch.len() >= BATCH_OBJECTS {
            self.bytes = 0;
            ready(std::mem::take(&mut self.batch));
        }
    }
}

/// The batches handed out, and those verified before an earlier one.
struct InOrder<R> {
    workers: usize,
    sent: u64,
    /// The next batch to take.
    next: u64,
    early: BTreeMap<u64, Vec<R>>,
    /// What a panicking `verify` left: no more batches are sent.
    panicked: Option<Box<dyn std::any::Any + Send>>,
}

impl<R> InOrder<R> {
    /// Hands out a batch, takes what is verified, and waits while more than `workers + 1`
    /// batches are out.
    fn send<I>(
        &mut self,
        to_verify: &mpsc::SyncSender<(u64, Vec<I>)>,
        batch: Vec<I>,
        verified: &mpsc::Receiver<(u64, std::thread::Result<Vec<R>>)>,
        take: &mut dyn FnMut(R),
    ) {
        // The workers take batches until the sender is dropped, and answer every one (a
        // panic included): the send fails only if they are all gone, which is a bug.
        to_verify
            .send((self.sent, batch))
            .expect("the verifying threads are running");
        self.sent += 1;
        while let Ok(done) = verified.try_recv() {
            self.arrived(done, take);
        }
        while self.panicked.is_none() && self.sent - self.next > self.workers as u64 + 1 {
            match verified.recv() {
                Ok(done) => self.arrived(done, take),
                Err(_) => break,
            }
        }
    }

    /// Takes a verified batch, and every batch that is now next in order.
    fn arrived(
        &mut self,
        (n, results): (u64, std::thread::Result<Vec<R>>),
        take: &mut dyn FnMut(R),
    ) {
        match results {
            Ok(results) => {
                self.early.insert(n, results);
            }
            Err(payload) => {
                self.panicked.get_or_insert(payload);
            }
        }
        if self.panicked.is_some() {
            // Nothing more is taken: the panic is carried once the workers are done.
            self.early.clear();
            return;
        }
        while let Some(results) = self.early.remove(&self.next) {
            results.into_iter().for_each(&mut *take);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item's result, in the order read, whatever the number of threads and however
    /// long each item takes.
    #[test]
    fn results_come_in_the_order_read() {
        for workers in [0, 1, 3] {
            let mut taken = Vec::new();
            verify_in_order(
                workers,
                |give| (0..1000u64).for_each(|i| give(i, 1)),
                // Uneven work, so that later batches often end first.
                |i| {
                    let spin = if i % 7 == 0 { 20_000 } else { 10 };
                    (0..spin).fold(i, |a, b| std::hint::black_box(a ^ b))
                        ^ (0..spin).fold(0, |a, b| a ^ b)
                },
                &mut |r| taken.push(r),
            );
            assert_eq!(taken, (0..1000).collect::<Vec<_>>(), "{workers} workers");
        }
    }

    /// Reading never runs more than `workers + 1` batches (and the one being gathered)
    /// ahead of what is taken, however uneven the work.
    #[test]
    fn reading_stays_within_a_few_batches_of_what_is_taken() {
        let workers = 2;
        let (given, taken) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
        let mut most = 0;
        verify_in_order(
            workers,
            |give| {
                for i in 0..2000u64 {
                    most = most.max(given.get() - taken.get());
                    given.set(given.get() + 1);
                    give(i, 1);
                }
            },
            |i| {
                (0..if i % 5 == 0 { 50_000 } else { 10 })
                    .fold(i, |a, b| std::hint::black_box(a ^ b))
            },
            &mut |_| taken.set(taken.get() + 1),
        );
        assert_eq!(taken.get(), 2000);
        assert!(
            most <= (workers + 2) * BATCH_OBJECTS,
            "{most} items read and not taken"
        );
    }

    /// A panic in `verify` comes back to the caller (it used to be the validation task's
    /// `JoinError`), and does not hang it, with one thread or several.
    #[test]
    fn a_panic_in_verify_is_carried_to_the_caller() {
        for workers in [1, 2] {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let outcome = panic::catch_unwind(|| {
                    verify_in_order(
                        workers,
                        |give| (0..200u64).for_each(|i| give(i, 1)),
                        |i| assert!(i % 50 != 49, "a broken object"),
                        &mut |_| {},
                    )
                });
                let _ = tx.send(outcome.is_err());
            });
            let carried = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("verify_in_order returned (it hung before)");
            assert!(carried, "{workers} workers: the panic was lost");
        }
    }

    /// A batch is cut before an item would take it past BATCH_BYTES, and an item larger
    /// than that goes alone.
    #[test]
    fn batches_are_bounded_in_bytes() {
        let b = BATCH_BYTES;
        let mut gather = Gather::default();
        let mut ready = Vec::new();
        for (i, size) in [b / 2, b / 2 + 1, 3 * b, 1].into_iter().enumerate() {
            gather.push(i, size, &mut |batch| ready.push(batch));
        }
        assert_eq!(ready, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(gather.batch, vec![3]);
        // And by count: BATCH_OBJECTS small items make a batch.
        let mut gather = Gather::default();
        let mut ready = Vec::new();
        for i in 0..BATCH_OBJECTS {
            gather.push(i, 1, &mut |batch| ready.push(batch));
        }
        assert_eq!(ready, vec![(0..BATCH_OBJECTS).collect::<Vec<_>>()]);
    }
}
