//! A bounded front end for quick-xml: what the content check reads a snapshot or delta
//! through, so that no single element, comment or attribute can make it hold more than a
//! fixed amount of memory.
//!
//! quick-xml's pull reader hands over one whole event at a time: a `<publish>` whose Base64
//! text is 768 MiB is one text event of 768 MiB in its buffer (the node was seen at 784 MiB
//! RSS with `memory_limit` 64 MiB), and a huge comment or start tag the same. This reader
//! sits between the input and quick-xml and splits the document at markup:
//!
//! - **Text** (character data between two tags) never reaches quick-xml. It is classified
//!   here in one pass as it streams by (Base64 or not, blank or not, how many non-blank
//!   bytes) and, only when the caller gathers content, kept. A run longer than the encoded
//!   size of `max_object_size` is refused as soon as it gets there. quick-xml sees a one-byte
//!   marker in its place ([`BASE64`] or [`OTHER`]; nothing for a blank run), and the walk
//!   takes the run's facts with [`Lexer::take_run`].
//! - **Markup** (tags, comments, processing instructions, CDATA) is passed through byte for
//!   byte, at most [`MAX_MARKUP`] bytes each: a start tag with a 4,096-byte URI and a hash
//!   needs a few KiB. A DOCTYPE is refused here (no entity is ever declared, let alone
//!   expanded).
//!
//! Memory is then one input chunk, one markup token and, when gathering, one object's Base64
//! text, whatever the upstream sends.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

/// The longest tag, comment or processing instruction accepted.
pub const MAX_MARKUP: usize = 64 << 10;

/// What quick-xml sees in place of a text run that is all Base64 (and white space).
pub const BASE64: u8 = b'A';
/// What it sees in place of any other non-blank text run.
pub const OTHER: u8 = b'!';

/// One run of character data between two pieces of markup.
#[derive(Debug, Default)]
pub struct Run {
    /// Bytes that are not white space.
    pub len: u64,
    /// Whether every byte is Base64 or white space.
    pub base64: bool,
    /// `=` padding bytes among them.
    pub pads: u64,
    /// The text itself (white space included), when the lexer gathers; else empty.
    pub text: Vec<u8>,
}

/// Which piece of markup is being passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Markup {
    /// Just after `<` (or `<!`): not yet known.
    Open,
    Bang,
    /// A start or end tag; the quote it is inside, if any (`>` in a value does not end it).
    Tag(Option<u8>),
    Comment,
    Pi,
    CData,
}

/// The markup token under way: its kind, length and last three bytes.
#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Markup,
    len: usize,
    tail: [u8; 3],
}

impl Token {
    fn open() -> Token {
        Token {
            kind: Markup::Open,
            len: 1,
            tail: [0, 0, b'<'],
        }
    }

    /// Takes the token's next byte; whether it ended the token.
    fn step(&mut self, b: u8) -> io::Result<bool> {
        self.len += 1;
        if self.len > MAX_MARKUP {
            return Err(invalid(format!(
                "a tag, comment or processing instruction longer than {MAX_MARKUP} bytes"
            )));
        }
        self.tail = [self.tail[1], self.tail[2], b];
        let m = self.kind;
        let (next, ended) = match m {
            Markup::Open => match b {
                b'!' => (Markup::Bang, false),
                b'?' => (Markup::Pi, false),
                b'>' => (m, true),
                b'"' | b'\'' => (Markup::Tag(Some(b)), false),
                _ => (Markup::Tag(None), false),
            },
            Markup::Bang => match b {
                b'-' => (Markup::Comment, false),
                b'[' => (Markup::CData, false),
                _ => return Err(invalid("a DOCTYPE is not allowed".into())),
            },
            Markup::Tag(None) => match b {
                b'>' => (m, true),
                b'"' | b'\'' => (Markup::Tag(Some(b)), false),
                _ => (m, false),
            },
            Markup::Tag(Some(q)) => (Markup::Tag((b != q).then_some(q)), false),
            Markup::Comment => (m, self.len >= 7 && &self.tail == b"-->"),
            Markup::Pi => (m, self.len >= 4 && self.tail[1..] == *b"?>"),
            Markup::CData => (m, self.len >= 12 && &self.tail == b"]]>"),
        };
        self.kind = next;
        Ok(ended)
    }
}

/// The reader quick-xml reads: markup passed through, text replaced by markers.
pub struct Lexer<R> {
    inner: R,
    /// What quick-xml has yet to read: markup and markers.
    out: Vec<u8>,
    pos: usize,
    /// The markup token under way; `None` in text.
    token: Option<Token>,
    /// The text run under way, and whether it is all white space so far.
    run: Run,
    blank: bool,
    gather: bool,
    /// The most non-blank bytes a run may hold: the Base64 of `max_object`.
    max_run: u64,
    max_object: u64,
    /// Runs ended, in document order, whose markers quick-xml has been given.
    runs: VecDeque<Run>,
    eof: bool,
    /// Whether the input's first bytes were looked at (a byte order mark passes through).
    started: bool,
}

impl<R: BufRead> Lexer<R> {
    /// `max_object`: the largest object one text run may hold, decoded (its Base64 is what
    /// is counted). `gather`: keep each run's text (without white space) for
    /// [`Lexer::take_run`].
    pub fn new(inner: R, max_object: u64, gather: bool) -> Lexer<R> {
        Lexer {
            inner,
            out: Vec::with_capacity(8192),
            pos: 0,
            token: None,
            run: new_run(),
            blank: true,
            gather,
            max_run: encoded_len(max_object),
            max_object,
            runs: VecDeque::new(),
            eof: false,
            started: false,
        }
    }

    /// The next ended run, in document order: one for each marker quick-xml handed over.
    pub fn take_run(&mut self) -> Option<Run> {
        self.runs.pop_front()
    }

    /// Ends the text run under way: a non-blank one is queued and its marker written.
    fn end_run(&mut self) {
        let run = std::mem::replace(&mut self.run, new_run());
        if !std::mem::replace(&mut self.blank, true) {
            self.out.push(if run.base64 { BASE64 } else { OTHER });
            self.runs.push_back(run);
        }
    }

    /// Reads the next input chunk and turns it into output (possibly none: a chunk of text).
    fn produce(&mut self) -> io::Result<()> {
        let chunk = self.inner.fill_buf()?;
        if chunk.is_empty() {
            self.eof = true;
            if self.token.is_none() {
                // Text after the root (or a document that is only text): quick-xml says so.
                self.end_run();
            }
            return Ok(());
        }
        if !self.started {
            self.started = true;
            if chunk.starts_with(&[0xEF, 0xBB, 0xBF]) {
                self.out.extend_from_slice(&chunk[..3]);
                self.inner.consume(3);
                return Ok(());
            }
        }
        let (used, text_ended) = match &mut self.token {
            None => {
                // Where the text ends (memchr, SIMD), then its bytes classified in blocks.
                let end = memchr::memchr(b'<', chunk);
                let Classes {
                    base64,
                    solid,
                    pads,
                } = classify(&chunk[..end.unwrap_or(chunk.len())]);
                let text = &chunk[..end.unwrap_or(chunk.len())];
                self.run.base64 &= base64;
                self.run.len += solid;
                self.run.pads += pads;
                self.blank &= solid == 0;
                if self.run.len > self.max_run {
                    return Err(invalid(too_large(self.max_object).0));
                }
                if self.gather && solid > 0 {
                    // Grown by doubling, but never past the limit: one object's Base64 and
                    // at most half of it again while the buffer moves.
                    let kept = &mut self.run.text;
                    let need = kept.len() + solid as usize;
                    if need > kept.capacity() {
                        let cap = usize::try_from(self.max_run).unwrap_or(usize::MAX);
                        let target = (kept.capacity() * 2).clamp(need, cap.max(need));
                        kept.reserve_exact(target - kept.len());
                    }
                    kept.extend(text.iter().filter(|b| !b.is_ascii_whitespace()));
                }
                (text.len() + usize::from(end.is_some()), end.is_some())
            }
            Some(token) => {
                let mut used = chunk.len();
                for (i, &b) in chunk.iter().enumerate() {
                    self.out.push(b);
                    if token.step(b)? {
                        used = i + 1;
                        self.token = None;
                        break;
                    }
                }
                (used, false)
            }
        };
        self.inner.consume(used);
        if text_ended {
            self.end_run();
            self.out.push(b'<');
            self.token = Some(Token::open());
        }
        Ok(())
    }
}

/// What a stretch of character data holds: see [`classify`].
#[derive(Debug, PartialEq, Eq)]
struct Classes {
    /// Every byte is Base64, `=` or white space.
    base64: bool,
    /// Bytes that are not white space.
    solid: u64,
    /// `=` bytes.
    pads: u64,
}

/// Classifies text in one pass of branch-free comparisons over 64-byte blocks, which the
/// compiler turns into vector code: a byte at a time with a table lookup, the check of a big
/// snapshot ran at about 1 GB/s, slower than its SHA-256 (docs/benchmarks.md, big snapshots).
fn classify(text: &[u8]) -> Classes {
    #[inline(always)]
    fn byte(c: u8) -> (bool, bool, bool) {
        // `u8::is_ascii_whitespace`: space, tab, line feed, form feed, carriage return.
        let space = (c == b' ') | (c == b'\t') | (c == b'\n') | (c == 0x0C) | (c == b'\r');
        let pad = c == b'=';
        let letter = (c | 0x20).wrapping_sub(b'a') < 26;
        let digit = c.wrapping_sub(b'0') < 10;
        let ok = letter | digit | (c == b'+') | (c == b'/') | pad | space;
        (space, pad, ok)
    }
    let (mut bad, mut solid, mut pads) = (0u8, 0u64, 0u64);
    let blocks = text.chunks_exact(64);
    let rest = blocks.remainder();
    for block in blocks {
        // Per-block counts fit a byte (64 at most), so the loop stays in byte lanes.
        let (mut blanks, mut p, mut b) = (0u8, 0u8, 0u8);
        for &c in block {
            let (space, pad, ok) = byte(c);
            blanks += u8::from(space);
            p += u8::from(pad);
            b |= u8::from(!ok);
        }
        solid += u64::from(64 - blanks);
        pads += u64::from(p);
        bad |= b;
    }
    for &c in rest {
        let (space, pad, ok) = byte(c);
        solid += u64::from(!space);
        pads += u64::from(pad);
        bad |= u8::from(!ok);
    }
    Classes {
        base64: bad == 0,
        solid,
        pads,
    }
}

fn new_run() -> Run {
    Run {
        base64: true,
        ..Run::default()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: BufRead> Read for Lexer<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Lexer<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.out.len() && !self.eof {
            self.out.clear();
            self.pos = 0;
            self.produce()?;
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.out.len());
    }
}

/// Why a file is refused for an object larger than `max_object_size`.
pub fn too_large(max_object_size: u64) -> crate::rrdp::content::ContentError {
    crate::rrdp::content::ContentError(format!(
        "an object is larger than max_object_size ({max_object_size} bytes)"
    ))
}

/// The most Base64 characters an object of `max_object_size` bytes is written with.
pub fn encoded_len(max_object_size: u64) -> u64 {
    max_object_size.div_ceil(3).saturating_mul(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classes byte by byte, as RFC 8182's Base64 content and XML white space define them.
    fn reference(text: &[u8]) -> Classes {
        let base64 = text
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(c) || c.is_ascii_whitespace());
        Classes {
            base64,
            solid: text.iter().filter(|c| !c.is_ascii_whitespace()).count() as u64,
            pads: text.iter().filter(|&&c| c == b'=').count() as u64,
        }
    }

    #[test]
    fn classify_agrees_with_the_byte_by_byte_definition() {
        // Every byte value alone, and at each place of a block and of the remainder.
        for c in 0..=255u8 {
            assert_eq!(classify(&[c]), reference(&[c]), "byte {c:#04x}");
            for at in [0, 31, 63, 64, 100] {
                let mut text = b"QUJDRA==\n  ".repeat(12);
                text[at] = c;
                assert_eq!(classify(&text), reference(&text), "byte {c:#04x} at {at}");
            }
        }
        // Lengths around the block size, with white space and padding throughout.
        let text: Vec<u8> = b"AAEC/+9z \t\r\nx="
            .iter()
            .copied()
            .cycle()
            .take(300)
            .collect();
        for len in 0..text.len() {
            assert_eq!(classify(&text[..len]), reference(&text[..len]), "len {len}");
        }
    }
}
