//! RRDP (RFC 8182) notification files: parsing with limits, validation, and rendering the
//! notification this proxy serves.
//!
//! The parser reads the whole (size-limited) file with quick-xml's pull reader. It accepts only
//! what RPs accept: version 1, a UUID session, one snapshot, and a delta list that is contiguous
//! and ends at the notification's serial. A DOCTYPE is refused outright, so no entity can ever
//! be expanded. Whether URIs are acceptable is the caller's business (it knows the bases).

use std::fmt;
use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The RRDP XML namespace.
pub const RRDP_NS: &str = "http://www.ripe.net/rpki/rrdp";

/// The most deltas a notification may list. RIPE NCC lists a few hundred; a list of many
/// thousands is an upstream gone wrong, and rendering it would cost every client.
pub const MAX_DELTAS: usize = 10_000;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Parses 64 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Hash {
        use sha2::Digest;
        Hash(sha2::Sha256::digest(data).into())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

/// A file a notification references: where, and what its SHA-256 must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub uri: String,
    pub hash: Hash,
}

/// A delta a notification references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaRef {
    pub serial: u64,
    pub file: FileRef,
}

/// A parsed and validated notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The session, a UUID in lower case.
    pub session_id: String,
    pub serial: u64,
    pub snapshot: FileRef,
    /// Newest first; contiguous, the first one's serial is `serial`.
    pub deltas: Vec<DeltaRef>,
}

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationError(pub String);

impl fmt::Display for NotificationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotificationError {}

fn err<T>(msg: impl Into<String>) -> Result<T, NotificationError> {
    Err(NotificationError(msg.into()))
}

//------------ Parsing -------------------------------------------------------------------------

impl Notification {
    /// Parses and validates a notification file.
    ///
    /// Long on purpose (about 100 lines): one pull-parser loop whose arms are the document's
    /// states and limits; split, the state would have to travel between functions.
    pub fn parse(xml: &[u8]) -> Result<Notification, NotificationError> {
        if std::str::from_utf8(xml).is_err() {
            return err("not valid UTF-8");
        }
        let mut reader = Reader::from_reader(xml);
        reader.config_mut().trim_text(true);
        let mut root: Option<(String, u64)> = None;
        let mut snapshot: Option<FileRef> = None;
        let mut deltas: Vec<DeltaRef> = Vec::new();
        let mut depth = 0usize;
        let mut closed = false;
        loop {
            let ev = reader
                .read_event()
                .map_err(|e| NotificationError(format!("malformed XML: {e}")))?;
            let (start, empty) = match &ev {
                Event::Start(s) => (Some(s), false),
                Event::Empty(s) => (Some(s), true),
                _ => (None, false),
            };
            if let Some(s) = start {
                if closed {
                    return err("content after the notification element");
                }
                match depth {
                    0 => {
                        if s.name().as_ref() != b"notification" {
                            return err(format!(
                                "root element is <{}>, not <notification>",
                                String::from_utf8_lossy(s.name().as_ref())
                            ));
                        }
                        root = Some(parse_root(s)?);
                    }
                    1 => match s.name().as_ref() {
                        b"snapshot" => {
                            if snapshot.is_some() {
                                return err("more than one <snapshot>");
                            }
                            let a = attrs(s, &["uri", "hash"])?;
                            snapshot = Some(file_ref(&a[0], &a[1])?);
                        }
                        b"delta" => {
                            if deltas.len() >= MAX_DELTAS {
                                return err(format!("more than {MAX_DELTAS} deltas"));
                            }
                            let a = attrs(s, &["serial", "uri", "hash"])?;
                            deltas.push(DeltaRef {
                                serial: parse_serial(&a[0])?,
                                file: file_ref(&a[1], &a[2])?,
                            });
                        }
                        other => {
                            return err(format!(
                                "unexpected element <{}>",
                                String::from_utf8_lossy(other)
                            ))
                        }
                    },
                    _ => return err("unexpected nested element"),
                }
                if !empty {
                    depth += 1;
                } else if depth == 0 {
                    closed = true;
                }
                continue;
            }
            match ev {
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        closed = true;
                    }
                }
                Event::Text(t) if !t.iter().all(|b| b.is_ascii_whitespace()) => {
                    return err("unexpected text content");
                }
                Event::DocType(_) => return err("a DOCTYPE is not allowed"),
                Event::CData(_) => return err("unexpected CDATA"),
                Event::Eof => break,
                // XML declaration, comments, processing instructions: harmless.
                _ => {}
            }
        }
        let (session_id, serial) = match root {
            Some(r) if closed => r,
            Some(_) => return err("truncated: the notification element is not closed"),
            None => return err("no notification element"),
        };
        let snapshot = match snapshot {
            Some(s) => s,
            None => return err("no <snapshot>"),
        };
        check_deltas(serial, &mut deltas)?;
        Ok(Notification {
            session_id,
            serial,
            snapshot,
            deltas,
        })
    }
}

fn parse_root(s: &BytesStart) -> Result<(String, u64), NotificationError> {
    let a = attrs(s, &["xmlns", "version", "session_id", "serial"])?;
    if a[0] != RRDP_NS {
        return err(format!("wrong namespace {:?}", a[0]));
    }
    if a[1] != "1" {
        return err(format!("unsupported version {:?}", a[1]));
    }
    let session = uuid::Uuid::try_parse(&a[2])
        .map_err(|_| NotificationError(format!("session_id {:?} is not a UUID", a[2])))?;
    // Only the hyphenated form is RRDP's; try_parse also takes braces and URNs.
    if a[2].len() != 36 {
        return err(format!("session_id {:?} is not a UUID", a[2]));
    }
    Ok((session.hyphenated().to_string(), parse_serial(&a[3])?))
}

/// Reads the named attributes (all required, each once). Unknown attributes are refused: RRDP
/// has none, and an upstream that adds some is not one we understand.
fn attrs(s: &BytesStart, names: &[&str]) -> Result<Vec<String>, NotificationError> {
    let mut out: Vec<Option<String>> = vec![None; names.len()];
    for a in s.attributes() {
        let a = a.map_err(|e| NotificationError(format!("malformed attribute: {e}")))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let idx = names.iter().position(|n| *n == key).ok_or_else(|| {
            NotificationError(format!(
                "unexpected attribute {key:?} on <{}>",
                String::from_utf8_lossy(s.name().as_ref())
            ))
        })?;
        if out[idx].is_some() {
            return err(format!("duplicate attribute {key:?}"));
        }
        let v = a
            .unescape_value()
            .map_err(|e| NotificationError(format!("attribute {key:?}: {e}")))?;
        out[idx] = Some(v.into_owned());
    }
    out.into_iter()
        .zip(names)
        .map(|(v, n)| {
            v.ok_or_else(|| {
                NotificationError(format!(
                    "<{}> lacks attribute {n:?}",
                    String::from_utf8_lossy(s.name().as_ref())
                ))
            })
        })
        .collect()
}

fn parse_serial(s: &str) -> Result<u64, NotificationError> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 && !s.starts_with('+') => Ok(n),
        _ => err(format!("serial {s:?} is not a positive integer")),
    }
}

fn file_ref(uri: &str, hash: &str) -> Result<FileRef, NotificationError> {
    let hash = Hash::from_hex(hash)
        .ok_or_else(|| NotificationError(format!("hash {hash:?} is not a SHA-256 in hex")))?;
    Ok(FileRef {
        uri: uri.to_string(),
        hash,
    })
}

/// Sorts deltas newest first and checks that they are contiguous and end at `serial`:
/// rpki-client and Fort reject a notification whose delta list has holes.
fn check_deltas(serial: u64, deltas: &mut [DeltaRef]) -> Result<(), NotificationError> {
    deltas.sort_by_key(|d| std::cmp::Reverse(d.serial));
    if let Some(first) = deltas.first() {
        if first.serial != serial {
            return err(format!(
                "newest delta has serial {}, the notification {serial}",
                first.serial
            ));
        }
    }
    for w in deltas.windows(2) {
        if w[1].serial == w[0].serial {
            return err(format!("delta serial {} listed twice", w[0].serial));
        }
        if w[1].serial + 1 != w[0].serial {
            return err(format!(
                "delta list has a hole between serials {} and {}",
                w[1].serial, w[0].serial
            ));
        }
    }
    Ok(())
}

//------------ Rendering -----------------------------------------------------------------------

/// Renders a notification file (deltas newest first, as given).
pub fn render_notification(
    session_id: &str,
    serial: u64,
    snapshot: &FileRef,
    deltas: &[DeltaRef],
) -> String {
    let mut out = String::with_capacity(256 + deltas.len() * 200);
    let _ = writeln!(
        out,
        "<notification xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{session_id}\" serial=\"{serial}\">"
    );
    let _ = writeln!(
        out,
        "  <snapshot uri=\"{}\" hash=\"{}\"/>",
        xml_escape(&snapshot.uri),
        snapshot.hash
    );
    for d in deltas {
        let _ = writeln!(
            out,
            "  <delta serial=\"{}\" uri=\"{}\" hash=\"{}\"/>",
            d.serial,
            xml_escape(&d.file.uri),
            d.file.hash
        );
    }
    out.push_str("</notification>\n");
    out
}

/// Escapes a string for an XML attribute value.
pub fn xml_escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "9df4b597-af9e-4dca-bdda-719cce2c4e28";

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn doc(serial: u64, deltas: &[u64]) -> String {
        let mut s = format!(
            "<?xml version=\"1.0\"?>\n<notification xmlns=\"{RRDP_NS}\" version=\"1\" session_id=\"{SESSION}\" serial=\"{serial}\">\n<snapshot uri=\"https://x/rrdp/s.xml\" hash=\"{}\"/>\n",
            h('a')
        );
        for d in deltas {
            s.push_str(&format!(
                "<delta serial=\"{d}\" uri=\"https://x/rrdp/{d}.xml\" hash=\"{}\"/>\n",
                h('B')
            ));
        }
        s.push_str("</notification>");
        s
    }

    #[test]
    fn parses_and_sorts() {
        let n = Notification::parse(doc(5, &[3, 5, 4]).as_bytes()).unwrap();
        assert_eq!(n.session_id, SESSION);
        assert_eq!(n.serial, 5);
        assert_eq!(
            n.deltas.iter().map(|d| d.serial).collect::<Vec<_>>(),
            vec![5, 4, 3]
        );
        assert_eq!(n.deltas[0].file.hash.to_hex(), h('b'));
    }

    #[test]
    fn rendering_round_trips() {
        let n = Notification::parse(doc(7, &[6, 7]).as_bytes()).unwrap();
        let text = render_notification(&n.session_id, n.serial, &n.snapshot, &n.deltas);
        assert_eq!(Notification::parse(text.as_bytes()).unwrap(), n);
    }

    #[test]
    fn refuses_bad_delta_lists() {
        for (serial, deltas, why) in [
            (5, vec![5, 3], "hole"),
            (5, vec![4, 3], "newest delta"),
            (5, vec![5, 5, 4], "twice"),
            (5, vec![6, 5], "newest delta"),
        ] {
            let e = Notification::parse(doc(serial, &deltas).as_bytes()).unwrap_err();
            assert!(e.0.contains(why), "{deltas:?}: {e}");
        }
    }

    #[test]
    fn refuses_bad_documents() {
        let good = doc(2, &[2]);
        let cases = [
            (good.replace("version=\"1\"", "version=\"2\""), "version"),
            (good.replace(SESSION, "not-a-uuid"), "UUID"),
            (good.replace(RRDP_NS, "urn:other"), "namespace"),
            (good.replace("serial=\"2\" uri", "serial=\"x\" uri"), "serial"),
            (good.replace(&h('a'), "abc"), "hash"),
            (good.replace("</notification>", ""), "truncated"),
            (good.replace("<snapshot", "<snapshotx"), "unexpected element"),
            (
                format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", good.replace("<?xml version=\"1.0\"?>", "")),
                "DOCTYPE",
            ),
            ("<html><body>502 Bad Gateway</body></html>".to_string(), "root element"),
            (good.replace("<snapshot uri=\"https://x/rrdp/s.xml\" hash=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"/>", ""), "no <snapshot>"),
            (format!("{good}<notification/>"), "after"),
        ];
        for (text, why) in cases {
            let e = Notification::parse(text.as_bytes()).unwrap_err();
            assert!(e.0.contains(why), "expected {why:?}, got {e}");
        }
        let e = Notification::parse(&[0xff, 0xfe, b'<']).unwrap_err();
        assert!(e.0.contains("UTF-8"));
    }
}
