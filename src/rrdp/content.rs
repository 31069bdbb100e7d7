//! Snapshot and delta files: a streaming check that a file is what the notification says it is.
//!
//! The SHA-256 proves the bytes are the ones the upstream announced, not that the upstream
//! announced something sane: a publication server that mixes up sessions or serials, or
//! writes a broken file, produces a matching hash all the same, and every Relying Party would
//! then reject the file (and with it the repository). So before a snapshot or delta is stored
//! it is read once with quick-xml's pull reader: the root element, namespace, version,
//! session and serial must match the notification, the children must be `<publish>` (and, in
//! a delta, `<withdraw>`) with the attributes RFC 8182 gives them and Base64 content, no
//! larger than `max_object_size` decoded. A DOCTYPE is refused, so no entity is ever
//! expanded. Memory stays bounded whatever the file holds: quick-xml reads through
//! [`Lexer`], which passes it markup of at most 64 KiB a token and classifies text itself as
//! it streams by, so the check holds one input chunk and one tag, and a walk that gathers
//! content one object's Base64 at most.

use std::fmt;
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::rrdp::lexer::{self, Lexer};
use crate::rrdp::{Hash, RRDP_NS};

/// Default `max_object_size`: Routinator's default for the largest RPKI object it accepts
/// (`max-object-size`, 20 MB). The largest objects published in the RPKI are RIR CRLs and
/// manifests of a few MB; an RP refuses anything above its own limit, so a larger one is
/// useless to the RPs and costs the node its memory.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 20_000_000;

/// Which file is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Snapshot,
    Delta,
}

impl Document {
    fn element(self) -> &'static [u8] {
        match self {
            Document::Snapshot => b"snapshot",
            Document::Delta => b"delta",
        }
    }
}

/// What a snapshot or delta must declare: the notification's session and the serial it lists
/// the file under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub kind: Document,
    pub session_id: String,
    pub serial: u64,
    /// The largest object (decoded) a `<publish>` may hold (`max_object_size`).
    pub max_object_size: u64,
}

impl Expected {
    /// A file of `kind` at `serial` of `session_id`, with objects up to the default size.
    pub fn new(kind: Document, session_id: impl Into<String>, serial: u64) -> Expected {
        Expected {
            kind,
            session_id: session_id.into(),
            serial,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
        }
    }

    /// The same with objects up to `max` bytes.
    pub fn with_max_object_size(mut self, max: u64) -> Expected {
        self.max_object_size = max;
        self
    }
}

/// What a valid file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// `<publish>` elements.
    pub publishes: u64,
    /// `<withdraw>` elements (deltas only).
    pub withdraws: u64,
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentError(pub String);

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ContentError {}

fn bad<T>(msg: impl Into<String>) -> Result<T, ContentError> {
    Err(ContentError(msg.into()))
}

/// The longest `uri` attribute accepted; rsync URIs of real repositories are far shorter.
const MAX_URI: usize = 4096;

/// A `<publish>` element's content decoded: Base64 (white space allowed), as [`walk`]
/// hands it over. `scratch` is reused between calls.
pub fn decode(b64: &[u8], scratch: &mut Vec<u8>) -> Result<Vec<u8>, ContentError> {
    use base64::Engine;
    scratch.clear();
    scratch.extend(b64.iter().copied().filter(|b| !b.is_ascii_whitespace()));
    base64::engine::general_purpose::STANDARD
        .decode(&scratch)
        .map_err(|e| ContentError(format!("publish content is not Base64: {e}")))
}

/// Every object a snapshot publishes, decoded, by URI. It holds them all: for tests and
/// tools, not for the poller.
pub fn read_objects(
    input: impl BufRead,
    expected: &Expected,
) -> Result<std::collections::BTreeMap<String, bytes::Bytes>, ContentError> {
    let mut objects = std::collections::BTreeMap::new();
    let mut scratch = Vec::new();
    walk(input, expected, &mut |uri, b64| {
        let der = decode(b64, &mut scratch).map_err(|e| ContentError(format!("{uri}: {e}")))?;
        objects.insert(uri.to_string(), bytes::Bytes::from(der));
        Ok(())
    })?;
    Ok(objects)
}

/// Reads a whole snapshot or delta and checks it against `expected`.
pub fn check(input: impl BufRead, expected: &Expected) -> Result<Summary, ContentError> {
    walk_with(input, expected, None)
}

/// Called with each `<publish>` element's URI and Base64 content, and with each
/// `<withdraw>` element's URI and empty content (a publish is never empty).
pub type Visit<'a> = dyn FnMut(&str, &[u8]) -> Result<(), ContentError> + 'a;

/// Like [`check`], and hands each `<publish>` element's URI and Base64 content (white space
/// removed), and each `<withdraw>`'s URI with empty content, to `visit` as it is read. An
/// error from `visit` ends the walk.
///
/// Long on purpose (about 80 lines): one pull-parser loop whose arms are the document's
/// states; split, the state would have to travel between functions.
pub fn walk(
    input: impl BufRead,
    expected: &Expected,
    visit: &mut Visit<'_>,
) -> Result<Summary, ContentError> {
    walk_with(input, expected, Some(visit))
}

/// The walk; without a visitor no content is gathered (the check of a 500 MB snapshot copies
/// nothing it does not need).
fn walk_with(
    input: impl BufRead,
    expected: &Expected,
    mut visit: Option<&mut Visit<'_>>,
) -> Result<Summary, ContentError> {
    // Content is gathered only for a visitor.
    let gather = visit.is_some();
    let mut visit = move |uri: &str, b64: &[u8]| match visit.as_mut() {
        Some(v) => v(uri, b64),
        None => Ok(()),
    };
    let max_run = lexer::encoded_len(expected.max_object_size);
    let mut reader = Reader::from_reader(Lexer::new(input, expected.max_object_size, gather));
    // The current publish element's URI and content.
    let mut uri = String::new();
    let mut text: Vec<u8> = Vec::new();
    let mut buf = Vec::with_capacity(8192);
    let mut summary = Summary::default();
    // 0: before the root, 1: inside the root, 2: inside a publish/withdraw, 3: after the root.
    let mut depth = 0u8;
    // Whether the element we are in at depth 2 has had non-empty content.
    let mut content = false;
    // Base64 bytes of the element's content so far (it may be cut by comments), and `=`.
    let mut content_len = 0u64;
    let mut content_pads = 0u64;
    let mut in_withdraw = false;
    loop {
        buf.clear();
        let ev = reader.read_event_into(&mut buf).map_err(|e| match e {
            // The lexer's own refusals (too large, a DOCTYPE) say what they are.
            quick_xml::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                ContentError(io.to_string())
            }
            e => ContentError(format!("malformed XML: {e}")),
        })?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                match depth {
                    0 => {
                        check_root(s, expected)?;
                        depth = if empty { 3 } else { 1 };
                    }
                    1 => {
                        (in_withdraw, uri) = child(s, expected.kind, &mut summary)?;
                        content = false;
                        content_len = 0;
                        content_pads = 0;
                        text.clear();
                        if empty {
                            end_child(in_withdraw, false)?;
                            if in_withdraw {
                                visit(&uri, &[])?;
                            }
                        } else {
                            depth = 2;
                        }
                    }
                    2 => return bad("unexpected element inside <publish> or <withdraw>"),
                    _ => return bad("content after the root element"),
                }
            }
            Event::End(_) => match depth {
                2 => {
                    end_child(in_withdraw, content)?;
                    // Exactly: the early refusal counts whole Base64 groups.
                    let decoded = (content_len / 4 * 3).saturating_sub(content_pads);
                    if decoded > expected.max_object_size {
                        return Err(lexer::too_large(expected.max_object_size));
                    }
                    // A withdraw as empty content: a publish is never empty.
                    visit(&uri, if in_withdraw { &[] } else { &text })?;
                    depth = 1;
                }
                1 => depth = 3,
                _ => return bad("unbalanced end tag"),
            },
            Event::Text(t) => {
                // Markers from the lexer, one for each non-blank run of text it read.
                for _ in 0..t.len() {
                    let Some(run) = reader.get_mut().take_run() else {
                        return bad("unexpected text content");
                    };
                    if depth != 2 {
                        return bad("unexpected text content");
                    }
                    if !run.base64 {
                        return bad("publish content is not Base64");
                    }
                    content_len += run.len;
                    content_pads += run.pads;
                    if content_len > max_run {
                        return Err(lexer::too_large(expected.max_object_size));
                    }
                    if gather {
                        if text.is_empty() {
                            text = run.text;
                        } else {
                            text.extend_from_slice(&run.text);
                        }
                    }
                    content = true;
                }
            }
            Event::CData(_) => return bad("unexpected CDATA"),
            Event::DocType(_) => return bad("a DOCTYPE is not allowed"),
            Event::GeneralRef(_) => return bad("an entity reference is not allowed here"),
            Event::Eof => break,
            // XML declaration, comments, processing instructions: harmless.
            _ => {}
        }
    }
    match depth {
        3 => Ok(summary),
        0 => bad("no root element"),
        _ => bad("truncated: the root element is not closed"),
    }
}

fn check_root(s: &BytesStart, expected: &Expected) -> Result<(), ContentError> {
    let name = s.name();
    if name.as_ref() != expected.kind.element() {
        return bad(format!(
            "root element is <{}>, not <{}>",
            String::from_utf8_lossy(name.as_ref()),
            String::from_utf8_lossy(expected.kind.element())
        ));
    }
    let (mut ns, mut version, mut session, mut serial) = (None, None, None, None);
    for a in s.attributes() {
        let a = a.map_err(|e| ContentError(format!("malformed attribute: {e}")))?;
        let v = a
            .unescape_value()
            .map_err(|e| ContentError(format!("malformed attribute value: {e}")))?
            .into_owned();
        let slot = match a.key.as_ref() {
            b"xmlns" => &mut ns,
            b"version" => &mut version,
            b"session_id" => &mut session,
            b"serial" => &mut serial,
            other => {
                return bad(format!(
                    "unexpected attribute {:?} on the root element",
                    String::from_utf8_lossy(other)
                ))
            }
        };
        if slot.replace(v).is_some() {
            return bad("duplicate attribute on the root element");
        }
    }
    if ns.as_deref() != Some(RRDP_NS) {
        return bad(format!("wrong namespace {ns:?}"));
    }
    if version.as_deref() != Some("1") {
        return bad(format!("unsupported version {version:?}"));
    }
    match session {
        Some(s) if s.eq_ignore_ascii_case(&expected.session_id) => {}
        other => {
            return bad(format!(
                "session_id {other:?} is not the notification's {}",
                expected.session_id
            ))
        }
    }
    let want = expected.serial.to_string();
    if serial.as_deref() != Some(want.as_str()) {
        return bad(format!(
            "serial {serial:?} is not the {want} the notification lists"
        ));
    }
    Ok(())
}

/// Checks a `<publish>` or `<withdraw>` start tag; returns whether it is a withdraw, and its
/// URI.
fn child(
    s: &BytesStart,
    kind: Document,
    summary: &mut Summary,
) -> Result<(bool, String), ContentError> {
    let withdraw = match s.name().as_ref() {
        b"publish" => false,
        b"withdraw" if kind == Document::Delta => true,
        other => {
            return bad(format!(
                "unexpected element <{}>",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let (mut uri, mut hash) = (None, None);
    for a in s.attributes() {
        let a = a.map_err(|e| ContentError(format!("malformed attribute: {e}")))?;
        let v = a
            .unescape_value()
            .map_err(|e| ContentError(format!("malformed attribute value: {e}")))?
            .into_owned();
        let slot = match a.key.as_ref() {
            b"uri" => &mut uri,
            b"hash" => &mut hash,
            other => {
                return bad(format!(
                    "unexpected attribute {:?} on <publish>/<withdraw>",
                    String::from_utf8_lossy(other)
                ))
            }
        };
        if slot.replace(v).is_some() {
            return bad("duplicate attribute on <publish>/<withdraw>");
        }
    }
    let uri = match uri {
        None => return bad("<publish>/<withdraw> without uri"),
        Some(u) if u.is_empty() || u.len() > MAX_URI || u.chars().any(char::is_control) => {
            return bad("unusable uri on <publish>/<withdraw>")
        }
        Some(u) => u,
    };
    if let Some(h) = &hash {
        if Hash::from_hex(h).is_none() {
            return bad(format!("hash {h:?} is not a SHA-256 in hex"));
        }
    }
    if withdraw && hash.is_none() {
        return bad("<withdraw> without hash");
    }
    if kind == Document::Snapshot && hash.is_some() {
        return bad("<publish> in a snapshot carries a hash");
    }
    if withdraw {
        summary.withdraws += 1;
    } else {
        summary.publishes += 1;
    }
    Ok((withdraw, uri))
}

fn end_child(withdraw: bool, content: bool) -> Result<(), ContentError> {
    match (withdraw, content) {
        (true, true) => bad("<withdraw> with content"),
        (false, false) => bad("<publish> without content"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "9df4b597-af9e-4dca-bdda-719cce2c4e28";

    fn expected(kind: Document, serial: u64) -> Expected {
        Expected {
            kind,
            session_id: SESSION.into(),
            serial,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
        }
    }

    fn snapshot(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<snapshot xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{SESSION}\" serial=\"3\">\n{body}</snapshot>\n"
        )
    }

    fn delta(body: &str) -> String {
        format!(
            "<delta xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{SESSION}\" serial=\"3\">{body}</delta>"
        )
    }

    fn run(doc: &str, kind: Document) -> Result<Summary, ContentError> {
        check(doc.as_bytes(), &expected(kind, 3))
    }

    #[test]
    fn accepts_snapshots_and_deltas() {
        let s = snapshot("<publish uri=\"rsync://x/a.cer\">AAAA\nBBBB==</publish>\n<publish uri=\"rsync://x/b.roa\">QUJD</publish>\n");
        assert_eq!(
            run(&s, Document::Snapshot).unwrap(),
            Summary {
                publishes: 2,
                withdraws: 0
            }
        );
        let h = "a".repeat(64);
        let d = delta(&format!(
            "<publish uri=\"rsync://x/a.cer\" hash=\"{h}\">AAAA</publish><withdraw uri=\"rsync://x/c.roa\" hash=\"{h}\"/>"
        ));
        assert_eq!(
            run(&d, Document::Delta).unwrap(),
            Summary {
                publishes: 1,
                withdraws: 1
            }
        );
        // An empty snapshot is a valid (if useless) repository.
        assert_eq!(run(&snapshot(""), Document::Snapshot).unwrap().publishes, 0);
    }

    #[test]
    fn refuses_files_that_do_not_match_the_notification() {
        let s = snapshot("<publish uri=\"rsync://x/a.cer\">AAAA</publish>");
        let other_session = s.replace(SESSION, "11111111-2222-4333-8444-555555555555");
        let cases = [
            (s.clone(), Document::Delta, "root element"),
            (other_session, Document::Snapshot, "session_id"),
            (
                s.replace("serial=\"3\"", "serial=\"4\""),
                Document::Snapshot,
                "serial",
            ),
            (
                s.replace(RRDP_NS, "http://example.com/"),
                Document::Snapshot,
                "namespace",
            ),
            (
                s.replace("version=\"1\"", "version=\"2\""),
                Document::Snapshot,
                "version",
            ),
        ];
        for (doc, kind, want) in cases {
            let e = run(&doc, kind).unwrap_err();
            assert!(e.0.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn refuses_broken_files() {
        let h = "a".repeat(64);
        let cases = [
            (
                snapshot("<publish uri=\"rsync://x/a\">not base64!</publish>"),
                "Base64",
            ),
            (
                snapshot("<publish uri=\"rsync://x/a\"></publish>"),
                "without content",
            ),
            (snapshot("<publish>AAAA</publish>"), "without uri"),
            (
                snapshot(&format!(
                    "<publish uri=\"rsync://x/a\" hash=\"{h}\">AAAA</publish>"
                )),
                "carries a hash",
            ),
            (
                snapshot(&format!("<withdraw uri=\"rsync://x/a\" hash=\"{h}\"/>")),
                "unexpected element",
            ),
            (
                snapshot("<publish uri=\"rsync://x/a\"><x/></publish>"),
                "inside",
            ),
            (snapshot("text"), "text"),
            (
                snapshot("<publish uri=\"rsync://x/a\">AAAA</publish>").replace("</snapshot>", ""),
                "truncated",
            ),
            (
                format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", snapshot("")),
                "DOCTYPE",
            ),
            // An entity reference is text that is not Base64: never expanded.
            (
                snapshot("<publish uri=\"rsync://x/a\">&a;</publish>"),
                "not Base64",
            ),
            (snapshot("") + "<snapshot/>", "after the root"),
            (String::new(), "no root"),
        ];
        for (doc, want) in cases {
            let e = run(&doc, Document::Snapshot).unwrap_err();
            assert!(e.0.contains(want), "{want}: {e}");
        }
        let withdraw_without_hash = delta("<withdraw uri=\"rsync://x/a\"/>");
        assert!(run(&withdraw_without_hash, Document::Delta).is_err());
        let withdraw_with_content = delta(&format!(
            "<withdraw uri=\"rsync://x/a\" hash=\"{h}\">AAAA</withdraw>"
        ));
        assert!(run(&withdraw_with_content, Document::Delta).is_err());
    }

    /// Input in pieces of the sizes given, cycled: what a download hands the check.
    struct Pieces<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = std::io::BufRead::fill_buf(self)?.len().min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            std::io::BufRead::consume(self, n);
            Ok(n)
        }
    }

    impl BufRead for Pieces<'_> {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            let size = self.sizes[self.next % self.sizes.len()];
            Ok(&self.data[..size.min(self.data.len())])
        }

        fn consume(&mut self, n: usize) {
            self.data = &self.data[n..];
            self.next += 1;
        }
    }

    /// Property (issue 26, item 1): whatever the sizes of the elements and however the input
    /// is cut, the verdict and the objects are those of the whole input, an object over
    /// `max_object_size` is refused, and the check holds no element whole (the lexer's
    /// output is one tag or marker at a time).
    #[test]
    fn any_chunking_and_element_size_gives_the_same_verdict() {
        use base64::Engine;
        use rand::{Rng, SeedableRng};
        for (seed, round) in (0..3u64).flat_map(|seed| (0..40).map(move |r| (seed, r))) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + round);
            let max = rng.gen_range(1..20_000u64);
            let mut body = String::new();
            let mut objects = Vec::new();
            for i in 0..rng.gen_range(1..6) {
                let size = rng.gen_range(1..(max * 3 / 2 + 2)) as usize;
                let der: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
                let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
                // Line breaks and a comment inside the content, as some servers write it.
                let mut text = String::new();
                for (j, line) in b64.as_bytes().chunks(rng.gen_range(4..200)).enumerate() {
                    if j == 1 && rng.gen_bool(0.3) {
                        text.push_str("<!-- a > b -->");
                    }
                    text.push_str(std::str::from_utf8(line).unwrap());
                    text.push('\n');
                }
                body.push_str(&format!(
                    "<publish uri=\"rsync://x/{i}.roa\">{text}</publish>\n"
                ));
                objects.push((format!("rsync://x/{i}.roa"), der));
            }
            let doc = snapshot(&body);
            let e = expected(Document::Snapshot, 3).with_max_object_size(max);
            let whole = read_objects(doc.as_bytes(), &e);
            let too_large = objects.iter().any(|(_, d)| d.len() as u64 > max);
            match &whole {
                Ok(found) => {
                    assert!(
                        !too_large,
                        "round {round}: an object over {max} bytes passed"
                    );
                    for (uri, der) in &objects {
                        assert_eq!(&found[uri][..], &der[..], "round {round}");
                    }
                }
                Err(err) => {
                    assert!(too_large, "round {round}: {err}");
                    assert!(err.0.contains("max_object_size"), "round {round}: {err}");
                }
            }
            for _ in 0..4 {
                let sizes: Vec<usize> = (0..7).map(|_| rng.gen_range(1..300)).collect();
                let pieces = Pieces {
                    data: doc.as_bytes(),
                    sizes,
                    next: 0,
                };
                let cut = read_objects(pieces, &e);
                assert_eq!(cut.is_ok(), whole.is_ok(), "round {round}");
                if let (Ok(a), Ok(b)) = (&cut, &whole) {
                    assert_eq!(a, b);
                }
                let pieces = Pieces {
                    data: doc.as_bytes(),
                    sizes: vec![rng.gen_range(1..64)],
                    next: 0,
                };
                assert_eq!(check(pieces, &e).is_ok(), whole.is_ok(), "round {round}");
            }
        }
    }

    /// The lexer hands quick-xml markers, never the text: a 4 MiB element passes through an
    /// output buffer that stays at its first size.
    #[test]
    fn the_lexer_never_holds_an_element_whole() {
        let text = "QUJD".repeat(1 << 20);
        let doc = snapshot(&format!("<publish uri=\"rsync://x/a\">{text}</publish>"));
        let mut lexer = Lexer::new(doc.as_bytes(), u64::MAX, false);
        let mut seen = Vec::new();
        loop {
            let chunk = lexer.fill_buf().unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(
                chunk.len() <= 8192,
                "the lexer handed over {} bytes at once",
                chunk.len()
            );
            seen.extend_from_slice(chunk);
            let n = chunk.len();
            lexer.consume(n);
        }
        let seen = String::from_utf8(seen).unwrap();
        assert!(
            seen.contains("<publish uri=\"rsync://x/a\">A</publish>"),
            "{seen}"
        );
        let run = lexer.take_run().unwrap();
        assert_eq!(run.len, text.len() as u64);
        assert!(run.base64 && run.text.is_empty());
        // Refused as soon as the run passes the limit, not at its end.
        let mut lexer = Lexer::new(doc.as_bytes(), 1000, false);
        let mut err = None;
        for _ in 0..10 {
            match lexer.fill_buf() {
                Ok(c) => {
                    let n = c.len();
                    lexer.consume(n)
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(err.unwrap().to_string().contains("max_object_size"));
        // A tag longer than 64 KiB (an attribute, say) is refused.
        let long = format!("<snapshot a=\"{}\"/>", "x".repeat(70_000));
        assert!(check(long.as_bytes(), &expected(Document::Snapshot, 3))
            .unwrap_err()
            .0
            .contains("longer than"));
    }
}
