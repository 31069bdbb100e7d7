//! Snapshot and delta files: a streaming check that a file is what the notification says it is.
//!
//! The SHA-256 proves the bytes are the ones the upstream announced, not that the upstream
//! announced something sane: a publication server that mixes up sessions or serials, or
//! writes a broken file, produces a matching hash all the same, and every Relying Party would
//! then reject the file (and with it the repository). So before a snapshot or delta is stored
//! it is read once with quick-xml's pull reader: the root element, namespace, version,
//! session and serial must match the notification, the children must be `<publish>` (and, in
//! a delta, `<withdraw>`) with the attributes RFC 8182 gives them and Base64 content. A
//! DOCTYPE is refused, so no entity is ever expanded. Memory stays bounded whatever the file
//! size: the reader's buffer holds one element at a time.

use std::fmt;
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::rrdp::{Hash, RRDP_NS};

/// Which file is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Delta,
}

impl Kind {
    fn element(self) -> &'static [u8] {
        match self {
            Kind::Snapshot => b"snapshot",
            Kind::Delta => b"delta",
        }
    }
}

/// What a snapshot or delta must declare: the notification's session and the serial it lists
/// the file under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub kind: Kind,
    pub session_id: String,
    pub serial: u64,
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

/// A `<publish>` element's content decoded: Base64 with white space, as [`walk`] hands it
/// over. `scratch` is reused between calls.
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
/// included), and each `<withdraw>`'s URI with empty content, to `visit` as it is read. An error from `visit` ends the walk.
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
    let mut reader = Reader::from_reader(input);
    // The current publish element's URI and content.
    let mut uri = String::new();
    let mut text: Vec<u8> = Vec::new();
    let mut buf = Vec::with_capacity(8192);
    let mut summary = Summary::default();
    // 0: before the root, 1: inside the root, 2: inside a publish/withdraw, 3: after the root.
    let mut depth = 0u8;
    // Whether the element we are in at depth 2 has had non-empty content.
    let mut content = false;
    let mut in_withdraw = false;
    loop {
        buf.clear();
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| ContentError(format!("malformed XML: {e}")))?;
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
                    // A withdraw as empty content: a publish is never empty.
                    visit(&uri, if in_withdraw { &[] } else { &text })?;
                    depth = 1;
                }
                1 => depth = 3,
                _ => return bad("unbalanced end tag"),
            },
            Event::Text(t) => {
                // One pass over the bytes: each is Base64 and whether any is not white space.
                let (mut base64, mut blank) = (true, true);
                for b in t.iter() {
                    let class = CLASS[usize::from(*b)];
                    base64 &= class != 0;
                    blank &= class == SPACE;
                }
                if blank {
                    continue;
                }
                if depth != 2 {
                    return bad("unexpected text content");
                }
                if !base64 {
                    return bad("publish content is not Base64");
                }
                if gather {
                    text.extend_from_slice(&t);
                }
                content = true;
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

/// Byte classes for the text of a publish element: 0 not Base64, [`SPACE`] white space, 1
/// the Base64 alphabet and padding.
const SPACE: u8 = 2;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_whitespace() {
            SPACE
        } else if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=' {
            1
        } else {
            0
        };
        b += 1;
    }
    t
};

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
    kind: Kind,
    summary: &mut Summary,
) -> Result<(bool, String), ContentError> {
    let withdraw = match s.name().as_ref() {
        b"publish" => false,
        b"withdraw" if kind == Kind::Delta => true,
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
    if kind == Kind::Snapshot && hash.is_some() {
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

    fn expected(kind: Kind, serial: u64) -> Expected {
        Expected {
            kind,
            session_id: SESSION.into(),
            serial,
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

    fn run(doc: &str, kind: Kind) -> Result<Summary, ContentError> {
        check(doc.as_bytes(), &expected(kind, 3))
    }

    #[test]
    fn accepts_snapshots_and_deltas() {
        let s = snapshot("<publish uri=\"rsync://x/a.cer\">AAAA\nBBBB==</publish>\n<publish uri=\"rsync://x/b.roa\">QUJD</publish>\n");
        assert_eq!(
            run(&s, Kind::Snapshot).unwrap(),
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
            run(&d, Kind::Delta).unwrap(),
            Summary {
                publishes: 1,
                withdraws: 1
            }
        );
        // An empty snapshot is a valid (if useless) repository.
        assert_eq!(run(&snapshot(""), Kind::Snapshot).unwrap().publishes, 0);
    }

    #[test]
    fn refuses_files_that_do_not_match_the_notification() {
        let s = snapshot("<publish uri=\"rsync://x/a.cer\">AAAA</publish>");
        let other_session = s.replace(SESSION, "11111111-2222-4333-8444-555555555555");
        let cases = [
            (s.clone(), Kind::Delta, "root element"),
            (other_session, Kind::Snapshot, "session_id"),
            (
                s.replace("serial=\"3\"", "serial=\"4\""),
                Kind::Snapshot,
                "serial",
            ),
            (
                s.replace(RRDP_NS, "http://example.com/"),
                Kind::Snapshot,
                "namespace",
            ),
            (
                s.replace("version=\"1\"", "version=\"2\""),
                Kind::Snapshot,
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
            (
                snapshot("<publish uri=\"rsync://x/a\">&a;</publish>"),
                "entity",
            ),
            (snapshot("") + "<snapshot/>", "after the root"),
            (String::new(), "no root"),
        ];
        for (doc, want) in cases {
            let e = run(&doc, Kind::Snapshot).unwrap_err();
            assert!(e.0.contains(want), "{want}: {e}");
        }
        let withdraw_without_hash = delta("<withdraw uri=\"rsync://x/a\"/>");
        assert!(run(&withdraw_without_hash, Kind::Delta).is_err());
        let withdraw_with_content = delta(&format!(
            "<withdraw uri=\"rsync://x/a\" hash=\"{h}\">AAAA</withdraw>"
        ));
        assert!(run(&withdraw_with_content, Kind::Delta).is_err());
    }
}
