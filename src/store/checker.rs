//! The content check of a snapshot or delta, run beside its download.
//!
//! Checked after the download, a big snapshot was read back from the page cache and parsed
//! while nothing else happened, which made up much of a round (docs/benchmarks.md, big
//! snapshots, has the figures). Fed the same chunks as they arrive, the check runs on a
//! blocking thread (another core) while the download goes on, and is done shortly after the
//! last byte.

use std::io;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::rrdp::content::{check, ContentError, Expected, Summary};

/// Batches in flight between the download and the check: the download waits beyond this, so
/// a slow check holds back the download instead of queueing the file in memory.
const QUEUED_BATCHES: usize = 2;

/// A content check consuming the bytes of an object being written.
pub(super) struct Checker {
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    done: tokio::task::JoinHandle<Result<Summary, ContentError>>,
}

impl Checker {
    pub(super) fn start(expected: &Expected) -> Checker {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let expected = expected.clone();
        let done = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                batch: Vec::new().into_iter(),
                current: Bytes::new(),
            };
            check(reader, &expected)
        });
        Checker { tx: Some(tx), done }
    }

    /// Hands the check the next bytes (shared, not copied). A check that has already ended
    /// (it found the file bad) takes no more; its verdict comes from [`Checker::finish`].
    pub(super) async fn feed(&mut self, batch: &[Bytes]) {
        let Some(tx) = &self.tx else { return };
        if tx.send(batch.to_vec()).await.is_err() {
            self.tx = None;
        }
    }

    /// The verdict on everything fed: the end of input is the end of the file.
    pub(super) async fn finish(mut self) -> io::Result<Result<Summary, ContentError>> {
        self.tx = None;
        (&mut self.done).await.map_err(io::Error::other)
    }
}

/// The batches from the channel as one buffered reader; the end of the channel is the end of
/// the input.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<Bytes>>,
    batch: std::vec::IntoIter<Bytes>,
    current: Bytes,
}

impl io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = io::BufRead::fill_buf(self)?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            if let Some(next) = self.batch.next() {
                self.current = next;
                continue;
            }
            match self.rx.blocking_recv() {
                Some(batch) => self.batch = batch.into_iter(),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rrdp::content::Document;

    const SESSION: &str = "9df4b597-af9e-4dca-bdda-719cce2c4e28";

    fn snapshot() -> Vec<u8> {
        let publish: String = (0..50)
            .map(|i| format!("<publish uri=\"rsync://x/r/{i}.roa\">AAECAwQFBgc=</publish>\n"))
            .collect();
        format!(
            "<snapshot xmlns=\"http://www.ripe.net/rpki/rrdp\" version=\"1\" \
             session_id=\"{SESSION}\" serial=\"3\">\n{publish}</snapshot>\n"
        )
        .into_bytes()
    }

    fn expected() -> Expected {
        Expected {
            kind: Document::Snapshot,
            session_id: SESSION.into(),
            serial: 3,
            max_object_size: crate::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
        }
    }

    /// Fed in chunks of `size` bytes (cut anywhere, inside tags and Base64 alike).
    async fn feed(doc: &[u8], size: usize) -> Result<Summary, ContentError> {
        let mut checker = Checker::start(&expected());
        // In batches of three chunks, as the writer gathers them.
        let chunks: Vec<Bytes> = doc.chunks(size).map(Bytes::copy_from_slice).collect();
        for batch in chunks.chunks(3) {
            checker.feed(batch).await;
        }
        checker.finish().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn gives_the_same_verdict_as_checking_the_whole_file() {
        let doc = snapshot();
        let whole = check(&doc[..], &expected()).unwrap();
        for size in [1, 7, 64, 4096, doc.len()] {
            assert_eq!(feed(&doc, size).await.unwrap(), whole, "chunks of {size}");
        }
        // Cut short (a download that ended early) and changed (a bad file): refused.
        let cut = &doc[..doc.len() - 20];
        assert!(feed(cut, 64).await.is_err());
        let other = String::from_utf8(doc.clone())
            .unwrap()
            .replace("serial=\"3\"", "serial=\"4\"");
        assert!(feed(other.as_bytes(), 64).await.is_err());
    }
}
