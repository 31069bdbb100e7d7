//! How fast the content check reads a snapshot or delta, against SHA-256 of the same bytes
//! (the two passes every downloaded file goes through). For docs/benchmarks.md:
//!
//!     cargo run --release --example content_check -- FILE [ROUNDS]
//!
//! FILE is a snapshot or delta (its root's session and serial are taken as the expected ones).

use std::time::Instant;

use rrdp_proxy::rrdp::content::{check, Document, Expected};
use sha2::Digest;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: content_check FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(3, |r| r.parse().expect("ROUNDS"));
    let data = std::fs::read(&path).expect("read FILE");
    let head = String::from_utf8_lossy(&data[..data.len().min(1024)]).into_owned();
    let attr = |name: &str| {
        let at = head.find(&format!("{name}=\"")).expect("root attribute") + name.len() + 2;
        head[at..at + head[at..].find('"').expect("closing quote")].to_string()
    };
    let kind = if head.contains("<delta") {
        Document::Delta
    } else {
        Document::Snapshot
    };
    let expected = Expected::new(kind, attr("session_id"), attr("serial").parse().unwrap());
    let mib = data.len() as f64 / f64::from(1 << 20);
    for _ in 0..rounds {
        let t = Instant::now();
        let summary = check(&data[..], &expected).expect("a valid file");
        let check_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let hash = sha2::Sha256::digest(&data);
        let sha_s = t.elapsed().as_secs_f64();
        println!(
            "{mib:.0} MiB, {} publishes: check {check_s:.3} s ({:.0} MiB/s), SHA-256 {sha_s:.3} s ({:.0} MiB/s) {:x}",
            summary.publishes,
            mib / check_s,
            mib / sha_s,
            hash[0]
        );
    }
}
