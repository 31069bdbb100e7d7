//! Memory the content check spends on one huge element (issue 26, item 1), measured by a
//! counting allocator: its own test binary, so no other test's allocations are counted.
//!
//! A correctly hashed snapshot whose one `<publish>` held 768 MiB of Base64 took the node to
//! 784 MiB of RSS: quick-xml buffered the element whole. Checked through the lexer, the same
//! document costs a fixed amount, whatever the element's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use rrdp_proxy::rrdp::content::{check, walk, Document, Expected};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SESSION: &str = "9df4b597-af9e-4dca-bdda-719cce2c4e28";

/// A snapshot with one `<publish>` of `b64` bytes of Base64, made as it is read (the test
/// holds none of it).
struct HugeSnapshot {
    parts: Vec<Vec<u8>>,
    part: usize,
    pos: usize,
    left: u64,
    filler: Vec<u8>,
}

impl HugeSnapshot {
    fn new(b64: u64) -> HugeSnapshot {
        let head = format!(
            "<snapshot xmlns=\"http://www.ripe.net/rpki/rrdp\" version=\"1\" session_id=\"{SESSION}\" serial=\"1\">\n<publish uri=\"rsync://x/big.crl\">"
        );
        HugeSnapshot {
            parts: vec![head.into_bytes(), b"</publish>\n</snapshot>\n".to_vec()],
            part: 0,
            pos: 0,
            left: b64,
            filler: b"QUJD".repeat(16 << 10),
        }
    }
}

impl Read for HugeSnapshot {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.fill_buf()?[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for HugeSnapshot {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(match self.part {
            0 => &self.parts[0][self.pos..],
            1 if self.left > 0 => {
                let n = self.left.min(self.filler.len() as u64) as usize;
                &self.filler[..n]
            }
            1 | 2 => &self.parts[1][self.pos..],
            _ => &[],
        })
    }

    fn consume(&mut self, n: usize) {
        match self.part {
            1 if self.left > 0 => {
                self.left -= n as u64;
                if self.left == 0 {
                    self.part = 2;
                }
            }
            _ => {
                self.pos += n;
                let len = self.parts[if self.part == 0 { 0 } else { 1 }].len();
                if self.pos == len {
                    self.pos = 0;
                    self.part += 1;
                }
            }
        }
    }
}

/// Peak bytes allocated while `f` runs, above what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

#[test]
fn one_huge_element_costs_a_fixed_amount_of_memory() {
    const MIB: u64 = 1 << 20;
    let expected =
        |max: u64| Expected::new(Document::Snapshot, SESSION, 1).with_max_object_size(max);
    // The check (no content gathered) of a 96 MiB element under a 100 MiB limit: it passes,
    // and holds no more than the lexer's and quick-xml's buffers.
    let (verdict, peak) = peak_during(|| check(HugeSnapshot::new(96 * MIB), &expected(100 * MIB)));
    assert!(verdict.is_ok(), "{verdict:?}");
    assert!(
        peak < MIB as usize,
        "the check of a 96 MiB element peaked at {peak} bytes"
    );

    // Over the limit (the default, 20 MB): refused as soon as the element passes it.
    let (verdict, peak) = peak_during(|| {
        check(
            HugeSnapshot::new(768 * MIB),
            &Expected::new(Document::Snapshot, SESSION, 1),
        )
    });
    let err = verdict.unwrap_err();
    assert!(err.0.contains("max_object_size"), "{err}");
    assert!(peak < MIB as usize, "the refusal peaked at {peak} bytes");

    // A walk that gathers each object (validation, the rsync export) holds one object's
    // Base64 at most: bounded by the limit, then refused.
    let (verdict, peak) = peak_during(|| {
        walk(
            HugeSnapshot::new(64 * MIB),
            &expected(4 * MIB),
            &mut |_, _| Ok(()),
        )
    });
    assert!(verdict.unwrap_err().0.contains("max_object_size"));
    assert!(
        peak < (2 * 4 * 4 / 3 * MIB) as usize,
        "the gathering walk peaked at {peak} bytes under a 4 MiB limit"
    );
}
