//! HTTP/1.1 pipelining (RFC 9112 §9.3.2) for pingora's HTTP/1 server, which answers the
//! first of several requests a client sends without waiting and drops the rest with the
//! connection: whatever its read buffer holds past the request it parsed is lost when the
//! connection is reused (cloudflare/pingora#377). Erik's reference client (Perl's
//! Net::Async::HTTP) pipelines by default, and lost every object behind the first.
//!
//! The fix sits in the connection stream ([`super::guard::ClientStream`]): a read hands
//! pingora at most one request header. Bytes after its end wait here until the response has
//! started, then are handed over as the next read. Only GET and HEAD requests are framed:
//! they have no body (one with a body is refused and the connection closed), so a header's
//! end is the request's end. A request with any other method turns framing off for the rest
//! of the connection, and its bytes pass as read.

use std::task::Waker;

/// Where a request header's end is, and what waits behind it.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    /// Bytes read past the end of the header pingora is answering.
    pending: Vec<u8>,
    /// How far `pending` has been handed over.
    taken: usize,
    /// Progress through a header's end: 1 after a line feed, 2 after a line feed and a
    /// carriage return (a line feed then ends the header: "\n\n" or "\n\r\n").
    state: u8,
    /// The next byte handed over starts a request.
    at_start: bool,
    /// A whole header was handed over and no response written since.
    held: bool,
    /// The read that found `held`, woken when the response starts.
    waker: Option<Waker>,
    /// Framing is off for the rest of the connection.
    off: bool,
}

impl Framer {
    pub(crate) fn new() -> Framer {
        Framer {
            at_start: true,
            ..Framer::default()
        }
    }

    /// Whether a read must wait for the response (and `waker` was kept to be woken then).
    pub(crate) fn must_wait(&mut self, waker: &Waker) -> bool {
        if self.held && !self.off {
            self.waker = Some(waker.clone());
        }
        self.held && !self.off
    }

    /// Bytes a previous read left behind, to be handed over now: up to `room` of them, and
    /// no further than the next header's end.
    pub(crate) fn take_pending(&mut self, room: usize) -> Option<&[u8]> {
        if self.taken == self.pending.len() {
            return None;
        }
        let start = self.taken;
        let end = (start + room).min(self.pending.len());
        let pending = std::mem::take(&mut self.pending);
        let cut = self
            .frame_start(&pending[start..end])
            .map_or(end, |n| start + n);
        self.pending = pending;
        self.taken = cut;
        Some(&self.pending[start..cut])
    }

    /// After the pending bytes were copied out: drops them once all are handed over.
    pub(crate) fn compact(&mut self) {
        if self.taken == self.pending.len() {
            self.pending.clear();
            self.taken = 0;
        }
    }

    /// `fresh` was just read from the client: how much of it to hand over now. The rest is
    /// kept (the caller truncates its buffer to the returned length).
    pub(crate) fn split_fresh(&mut self, fresh: &[u8]) -> usize {
        match self.frame_start(fresh) {
            Some(n) if n < fresh.len() => {
                self.pending.extend_from_slice(&fresh[n..]);
                n
            }
            _ => fresh.len(),
        }
    }

    /// A response has started: what waits may go; wakes the read that waited.
    pub(crate) fn responded(&mut self) {
        if self.held {
            self.held = false;
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Scans `bytes`, about to be handed over: the length up to and including a header's end
    /// (setting `held`), or `None` when they hold none (or framing is off).
    fn frame_start(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.off || bytes.is_empty() {
            return None;
        }
        if self.at_start {
            self.at_start = false;
            if !matches!(bytes[0], b'G' | b'H' | b'\r' | b'\n') {
                self.off = true;
                return None;
            }
        }
        for (i, b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (1 | 2, b'\n') => {
                    self.state = 0;
                    self.at_start = true;
                    self.held = true;
                    return Some(i + 1);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn two_requests_in_one_read_are_handed_over_one_at_a_time() {
        let mut f = Framer::new();
        let first = f.split_fresh(TWO);
        assert_eq!(&TWO[..first], b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        let waker = futures_waker();
        assert!(
            f.must_wait(&waker),
            "the second waits for the first's response"
        );
        f.responded();
        assert!(!f.must_wait(&waker));
        let second = f.take_pending(1 << 16).unwrap().to_vec();
        assert_eq!(second, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        f.compact();
        assert!(f.must_wait(&waker));
        f.responded();
        assert!(f.take_pending(1 << 16).is_none());
    }

    #[test]
    fn a_header_split_over_reads_and_bare_line_feeds_are_found() {
        let mut f = Framer::new();
        assert_eq!(f.split_fresh(b"GET / HTTP/1.1\r\nHost: x\r"), 24);
        assert_eq!(f.split_fresh(b"\n\r\nGET /b"), 3);
        f.responded();
        assert_eq!(f.take_pending(64).unwrap(), b"GET /b");
        let mut g = Framer::new();
        assert_eq!(g.split_fresh(b"HEAD / HTTP/1.0\n\nGET"), 17);
    }

    #[test]
    fn another_method_turns_framing_off() {
        let mut f = Framer::new();
        let post = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab\n\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(f.split_fresh(post), post.len());
        assert!(!f.must_wait(&futures_waker()));
    }

    #[test]
    fn pending_bytes_respect_the_room_of_the_read() {
        let mut f = Framer::new();
        let first = f.split_fresh(TWO);
        f.responded();
        let part = f.take_pending(5).unwrap().to_vec();
        assert_eq!(part, &TWO[first..first + 5]);
        let rest = f.take_pending(1 << 16).unwrap().to_vec();
        assert_eq!(rest, &TWO[first + 5..]);
    }

    fn futures_waker() -> Waker {
        std::task::Waker::noop().clone()
    }
}
