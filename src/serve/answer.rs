//! What a request gets, decided without I/O: the answer's parts, byte ranges (and If-Range),
//! gzip by `Accept-Encoding`, conditional requests (304), and the requests refused before
//! routing (overlong target or header, a body on GET/HEAD). Pure, and unit-tested here.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::metrics::{RequestKind, RequestResult};
use crate::published::gzip_etag;
use crate::store::Object;

/// A response body.
pub(super) enum Body {
    Empty,
    Bytes(Bytes),
    /// Bytes that are also a whole file that stays in memory (a notification's `memfd`):
    /// sent from the file where the connection can (`sendfile`), else from the bytes.
    Resident {
        bytes: Bytes,
        file: std::sync::Arc<std::fs::File>,
    },
    /// `len` bytes of a file from `start`.
    File {
        file: std::fs::File,
        start: u64,
        len: u64,
    },
}

impl Body {
    pub(super) fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) | Body::Resident { bytes: b, .. } => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    /// `bytes`, sent from `file` (the same bytes, resident) where the connection can.
    pub(super) fn resident(bytes: &Bytes, file: Option<&std::sync::Arc<std::fs::File>>) -> Body {
        match file {
            Some(file) => Body::Resident {
                bytes: bytes.clone(),
                file: file.clone(),
            },
            None => Body::Bytes(bytes.clone()),
        }
    }

    pub(super) fn from_object(o: Object) -> Body {
        match o {
            Object::Memory(b) => Body::Bytes(b),
            Object::File { file, len } => Body::File {
                file,
                start: 0,
                len,
            },
        }
    }

    /// The part `start..start+len` of a body of an object.
    pub(super) fn slice(o: Object, start: u64, len: u64) -> Body {
        match o {
            Object::Memory(b) => Body::Bytes(b.slice(start as usize..(start + len) as usize)),
            Object::File { file, .. } => Body::File { file, start, len },
        }
    }
}

/// What to send back.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, HeaderValue)>,
    pub(super) body: Body,
    pub(super) kind: RequestKind,
    pub(super) outcome: RequestResult,
}

impl Answer {
    pub(super) fn text(status: u16, kind: RequestKind, text: &str) -> Answer {
        Answer {
            status,
            headers: vec![
                (
                    "Content-Type",
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                // An error for an RRDP path must never be cached by a CDN in front of us.
                ("Cache-Control", HeaderValue::from_static("no-store")),
            ],
            body: Body::Bytes(Bytes::copy_from_slice(text.as_bytes())),
            kind,
            outcome: RequestResult::Pass,
        }
    }
}

/// What the answers read of a request: its method and header values. pingora's parsed request
/// has it, and so has the lean path's (`serve::lean`), which makes no header map.
pub(super) trait RequestView {
    /// GET (not HEAD, not anything else).
    fn is_get(&self) -> bool;
    /// The first value of the header `name` (any case), if it is visible ASCII.
    fn header(&self, name: &str) -> Option<&str>;
}

impl RequestView for RequestHeader {
    fn is_get(&self) -> bool {
        self.method == http::Method::GET
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A single byte range from a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// `bytes=start-` or `bytes=start-end` (inclusive).
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses one range; multiple ranges or bad syntax give `None` (the Range header is then
    /// ignored and the whole body served, as RFC 9110 allows).
    pub(super) fn parse(v: &str) -> Option<ByteRange> {
        let spec = v.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(ByteRange::Suffix(b.parse().ok()?));
        }
        let start = a.parse().ok()?;
        let end = if b.is_empty() {
            None
        } else {
            Some(b.parse().ok()?)
        };
        if end.is_some_and(|e| e < start) {
            return None;
        }
        Some(ByteRange::From(start, end))
    }

    /// (start, length) within a body of `total` bytes, or `None` if unsatisfiable.
    pub(super) fn resolve(self, total: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(start, _) if start >= total => None,
            ByteRange::From(start, end) => {
                let end = end.map_or(total - 1, |e| e.min(total - 1));
                Some((start, end - start + 1))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => {
                let n = n.min(total);
                Some((total - n, n))
            }
        }
    }
}

/// The range a GET asks for, honouring If-Range (only our strong ETag matches; files have no
/// Last-Modified, so a date never does).
pub(super) fn requested_range(req: &impl RequestView, etag: &str) -> Option<ByteRange> {
    if !req.is_get() {
        return None;
    }
    let range = ByteRange::parse(req.header("Range")?)?;
    match req.header("If-Range") {
        Some(tag) if tag.trim() != etag => None,
        _ => Some(range),
    }
}

/// Whether the client accepts a gzip body (`Accept-Encoding: gzip` or `*` with q > 0).
pub(super) fn accepts_gzip(req: &impl RequestView) -> bool {
    let Some(v) = req.header("Accept-Encoding") else {
        return false;
    };
    let mut gzip = None;
    let mut star = None;
    for item in v.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q > 0.0),
            "*" => star = Some(q > 0.0),
            _ => {}
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// The longest request target accepted: RRDP paths are short; nginx's default buffer is 8 KiB.
const MAX_URI: usize = 8 << 10;
/// The most header bytes (names and values) and header lines accepted.
const MAX_HEADER_BYTES: usize = 16 << 10;
const MAX_HEADERS: usize = 64;

/// Requests refused before routing: an overlong target (414) or header (431), and any request
/// carrying a body. GET and HEAD have none, and a `Transfer-Encoding` on one is the usual
/// start of request smuggling (pingora drops a `Content-Length` sent beside it); the
/// connection is closed after the answer, so no byte of such a body is read as a request.
pub(super) fn refuse(req: &RequestHeader) -> Option<Answer> {
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return Some(Answer::text(414, RequestKind::Other, "URI too long\n"));
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES || req.headers.len() > MAX_HEADERS {
        return Some(Answer::text(
            431,
            RequestKind::Other,
            "request header fields too large\n",
        ));
    }
    let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Some(Answer::text(
            400,
            RequestKind::Other,
            "a request body is not accepted\n",
        ));
    }
    None
}

pub(super) fn method_not_allowed(kind: RequestKind) -> Answer {
    let mut a = Answer::text(405, kind, "only GET and HEAD\n");
    a.headers
        .push(("Allow", HeaderValue::from_static("GET, HEAD")));
    a
}

pub(super) fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.to_str().ok())
}

/// Turns a 200 into a 304 with the same validators and caching headers (no body, so no
/// Content-Type or Content-Encoding).
pub(super) fn not_modified_answer(mut a: Answer) -> Answer {
    a.status = 304;
    a.headers
        .retain(|(k, _)| *k != "Content-Type" && *k != "Content-Encoding");
    a.body = Body::Empty;
    a
}

/// RFC 9110 §13.1: If-None-Match wins over If-Modified-Since.
pub(super) fn not_modified(
    req: &impl RequestView,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> bool {
    if let Some(inm) = req.header("If-None-Match") {
        // A client holding either encoding of the body has it: the identity and the gzip
        // ETag both match.
        let Some(etag) = etag else { return false };
        let gz = gzip_etag(etag);
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag || t == gz);
    }
    let ims = req
        .header("If-Modified-Since")
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let lm = last_modified.and_then(|v| httpdate::parse_http_date(v).ok());
    match (ims, lm) {
        (Some(ims), Some(lm)) => lm <= ims,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(&req(&[("Accept-Encoding", "gzip, deflate")])));
        assert!(accepts_gzip(&req(&[(
            "Accept-Encoding",
            "br;q=1.0, gzip;q=0.5"
        )])));
        assert!(accepts_gzip(&req(&[("Accept-Encoding", "*")])));
        assert!(!accepts_gzip(&req(&[("Accept-Encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&req(&[("Accept-Encoding", "*, gzip;q=0")])));
        assert!(!accepts_gzip(&req(&[("Accept-Encoding", "identity")])));
        assert!(!accepts_gzip(&req(&[])));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            ByteRange::parse("bytes=0-9"),
            Some(ByteRange::From(0, Some(9)))
        );
        assert_eq!(
            ByteRange::parse("bytes=10-"),
            Some(ByteRange::From(10, None))
        );
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(ByteRange::parse("bytes=5-1"), None);
        assert_eq!(ByteRange::parse("bytes=0-1,4-5"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::From(0, Some(9)).resolve(5), Some((0, 5)));
        assert_eq!(ByteRange::From(5, None).resolve(5), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 3)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 10)));
        let etag = "\"abc\"";
        let r = req(&[("Range", "bytes=1-2"), ("If-Range", "\"other\"")]);
        assert_eq!(
            requested_range(&r, etag),
            None,
            "If-Range mismatch: whole body"
        );
        let r = req(&[("Range", "bytes=1-2"), ("If-Range", etag)]);
        assert_eq!(requested_range(&r, etag), Some(ByteRange::From(1, Some(2))));
    }

    #[test]
    fn etags_per_encoding() {
        let etag = "\"abc\"";
        assert_eq!(gzip_etag(etag), "\"abc-gzip\"");
        assert!(not_modified(
            &req(&[("If-None-Match", "\"abc-gzip\"")]),
            Some(etag),
            None
        ));
        assert!(not_modified(
            &req(&[("If-None-Match", "W/\"abc\"")]),
            Some(etag),
            None
        ));
        assert!(!not_modified(
            &req(&[("If-None-Match", "\"abd\"")]),
            Some(etag),
            None
        ));
    }
}
