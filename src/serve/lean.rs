//! The lean path: plain GETs and HEADs of the notification and of published files, answered
//! on the connection without a pingora session.
//!
//! A small-file hit spent more of its CPU in pingora's per-request machinery than in its own
//! work: the session, the request's header map, the response's header map and its
//! serialization (docs/benchmarks.md, "The floors under the small-file hit path"). The common
//! request here, an RP's or a CDN's GET of a file the published generation lists, needs none
//! of it: the request is parsed in place from the bytes the connection loop read
//! (`httparse`, which pingora uses too) and the answer's head is written as one block beside
//! its body.
//!
//! It answers only what it reads completely, and what the full path would answer the same
//! way. Everything else is declined, and pingora's session parses the same bytes as it always
//! did:
//! - a request whose header is not complete in the bytes read so far, or that `httparse` does
//!   not take as it stands (pingora's session may escape its target, or answer 400);
//! - any method but GET and HEAD, any version but HTTP/1.1;
//! - a target that is not a plain path (a query, an absolute URI, bytes outside RFC 3986's
//!   path characters);
//! - a header that asks for more than the answers here give or that frames a body:
//!   `Content-Length`, `Transfer-Encoding`, `Range`, `If-Range`, `Expect`, `Upgrade`, a
//!   `Connection` other than `keep-alive` or `close`, a header the answers read given twice
//!   or with bytes other than visible ASCII, or more than [`MAX_HEADERS`] lines;
//! - any path but a repository's notification and the files its published generation lists
//!   (the cluster and Erik endpoints, misses, passthroughs, 404s).
//!
//! The answers are the full path's own (`files`: 304, gzip, the RP counts), and the head
//! holds what pingora's would: the answer's headers, `Content-Length`, `Date` and
//! `Connection`. tests/it/lean.rs compares the two paths' responses byte for byte.

use std::fmt::Write as _;

use bytes::{Buf, BytesMut};
use pingora::protocols::http::date::get_cached_date;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use super::access_log::{self, Logged};
use super::answer::{Answer, RequestView};
use super::dispatch::RepoPath;
use super::guard::{ClientStream, HEADER_BUFFER};
use super::send::{send_body, BodyOut};
use super::{Ctx, RrdpProxy};
use crate::published::Repo;

/// The most header lines a request answered here may have (more: declined). RPs send five
/// or six; pingora's session takes up to 256.
pub(crate) const MAX_HEADERS: usize = 24;

/// The longest request answered here: one first read's worth ([`HEADER_BUFFER`]), well
/// under the limits of `answer::refuse` (8 KiB of target, 16 KiB of header).
const MAX_LEN: usize = HEADER_BUFFER;

/// What became of a request's bytes.
pub(crate) enum Lean {
    /// Answered; the connection carries on. The bytes read past the request (the start of
    /// the next one, sent without waiting: pipelining), empty if none.
    Answered(BytesMut),
    /// Answered, and the connection is closed: the client asked for it, the server is
    /// stopping, or the answer could not be written.
    Closed,
    /// Not a request this path answers: the bytes, untouched, for pingora's session.
    Declined(BytesMut),
}

/// A request as this path reads it: borrowed from the bytes it was parsed from.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request<'a> {
    get: bool,
    target: &'a str,
    /// `Connection: close`.
    close: bool,
    accept_encoding: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
    /// The header's length, the blank line included.
    len: usize,
}

impl RequestView for Request<'_> {
    fn is_get(&self) -> bool {
        self.get
    }

    fn header(&self, name: &str) -> Option<&str> {
        match name {
            "Accept-Encoding" => self.accept_encoding,
            "If-None-Match" => self.if_none_match,
            "If-Modified-Since" => self.if_modified_since,
            // A request with either is declined.
            "Range" | "If-Range" => None,
            _ => {
                // The answers ask for nothing else; one that did would need it kept here.
                debug_assert!(false, "the lean path does not keep {name}");
                None
            }
        }
    }
}

/// Headers that send a request to pingora's session (see the module's list).
const DECLINED: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "range",
    "if-range",
    "expect",
    "upgrade",
];

/// The request at the start of `buf`, if it is one this path answers.
fn parse(buf: &[u8]) -> Option<Request<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(buf).ok()? else {
        return None;
    };
    if len > MAX_LEN {
        // Bytes carried over from a session may hold a longer request than the first read's
        // 4 KiB: a margin, well inside the limits `answer::refuse` sets (414, 431).
        return None;
    }
    let get = match parsed.method? {
        "GET" => true,
        "HEAD" => false,
        _ => return None,
    };
    let target = parsed.path?;
    if parsed.version? != 1 || !target.starts_with('/') || !target.bytes().all(path_byte) {
        return None;
    }
    let mut r = Request {
        get,
        target,
        len,
        ..Request::default()
    };
    let (mut connection, mut host) = (false, false);
    for h in parsed.headers.iter() {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let field = if is("accept-encoding") {
            &mut r.accept_encoding
        } else if is("if-none-match") {
            &mut r.if_none_match
        } else if is("if-modified-since") {
            &mut r.if_modified_since
        } else if is("referer") {
            &mut r.referer
        } else if is("user-agent") {
            &mut r.user_agent
        } else if is("connection") {
            let value = visible(h.value)?.trim();
            if connection {
                return None;
            }
            connection = true;
            if value.eq_ignore_ascii_case("close") {
                r.close = true;
            } else if !value.eq_ignore_ascii_case("keep-alive") {
                return None;
            }
            continue;
        } else if is("host") {
            // pingora's session refuses a second Host and userinfo in one (400): an
            // ambiguous authority.
            if host || h.value.contains(&b'@') {
                return None;
            }
            host = true;
            continue;
        } else if DECLINED.iter().any(|d| is(d)) {
            return None;
        } else {
            continue;
        };
        if field.replace(visible(h.value)?).is_some() {
            return None;
        }
    }
    Some(r)
}

/// A byte of a plain path: RFC 3986's `pchar` and `/` (no query, no fragment).
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// `value` as text if it is visible ASCII (and tabs), as `HeaderValue::to_str` takes it.
fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

impl RrdpProxy {
    /// Answers the request at the start of `bytes` on `conn` if it is one for this path (see
    /// the module); else gives the bytes back for pingora's session.
    pub(crate) async fn lean(
        &self,
        conn: &mut ClientStream,
        mut bytes: BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Lean {
        let Some(req) = parse(&bytes) else {
            return Lean::Declined(bytes);
        };
        let Some(route) = self.lean_route(req.target) else {
            return Lean::Declined(bytes);
        };
        let (format, file) = (self.shared.config.log.access, self.access_file.as_ref());
        let logging = access_log::enabled(format, file);
        // Asked of the socket only where something uses it: the RP counts and the log.
        let mut client = None;
        let a = match route {
            (repo, RepoPath::Published(known)) => {
                client = conn.client_ip();
                self.published_file(repo, known, &req, client).await
            }
            // The notification: `lean_route` gives nothing else.
            (repo, _) => self.notification(repo, &req),
        };
        if logging && client.is_none() {
            client = conn.client_ip();
        }
        // A stopping server answers this request and closes the connection (the session path
        // does the same, `RrdpProxy::respond`).
        let close = req.close || *shutdown.borrow();
        let mut ctx = Ctx::of(&a);
        let sent = write_answer(conn, a, !req.get, close).await;
        if let Ok(n) = sent {
            ctx.bytes = n;
        }
        self.count(&ctx);
        self.shared.metrics.count_lean_response();
        if logging {
            let logged = Logged {
                client,
                method: if req.get { "GET" } else { "HEAD" },
                target: &req.target,
                version: "HTTP/1.1",
                referer: req.referer,
                user_agent: req.user_agent,
            };
            access_log::log_line(
                &logged,
                &ctx,
                sent.as_ref().err().map(|e| &**e),
                format,
                file,
            );
        }
        let len = req.len;
        if sent.is_err() {
            return Lean::Closed;
        }
        if close {
            let _ = conn.shutdown().await;
            return Lean::Closed;
        }
        bytes.advance(len);
        Lean::Answered(bytes)
    }

    /// The repository and what `target` names in it, if it is the notification or a file the
    /// published generation lists, and nothing routed before the repositories claims it.
    fn lean_route<'p>(&self, target: &'p str) -> Option<(&Repo, RepoPath<'p>)> {
        if target.starts_with("/.well-known/") {
            // The cluster's and Erik's endpoints (`dispatch` routes them first).
            return None;
        }
        match self.repository_path(target)? {
            (i, named @ (RepoPath::Notification | RepoPath::Published(_))) => {
                Some((&self.shared.repos[i], named))
            }
            _ => None,
        }
    }
}

/// Writes `a` as pingora's session would (its head: the answer's headers, `Content-Length`,
/// `Date`, `Connection`), the head and a small body in one write; returns the body bytes sent.
async fn write_answer(
    conn: &mut ClientStream,
    a: Answer,
    head_only: bool,
    close: bool,
) -> pingora::Result<u64> {
    let len = a.body.len();
    let mut head = String::with_capacity(320);
    let status = http::StatusCode::from_u16(a.status).unwrap_or(http::StatusCode::OK);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &a.headers {
        head.push_str(name);
        head.push_str(": ");
        // Header values here are made by this server: visible ASCII.
        head.push_str(value.to_str().unwrap_or(""));
        head.push_str("\r\n");
    }
    if a.status != 304 {
        let _ = write!(head, "Content-Length: {len}\r\n");
    }
    head.push_str("Date: ");
    head.push_str(get_cached_date().to_str().unwrap_or(""));
    head.push_str(if close {
        "\r\nConnection: close\r\n\r\n"
    } else {
        "\r\nConnection: keep-alive\r\n\r\n"
    });
    // The errors say what pingora's session says for the same failures (the access log's
    // `error=`).
    let failed = |what: &'static str| {
        move |e: std::io::Error| pingora::Error::because(pingora::ErrorType::WriteError, what, e)
    };
    conn.write_all(head.as_bytes())
        .await
        .map_err(failed("writing response header"))?;
    let (sent, flushing) = if head_only || a.status == 304 || len == 0 {
        (0, "flushing response header")
    } else {
        let sent = send_body(&mut BodyOut::Stream(conn), a.body).await?;
        (sent, "flushing body")
    };
    conn.flush().await.map_err(failed(flushing))?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_rps_request_and_declines_what_it_does_not_answer() {
        let rp = b"GET /rrdp/notification.xml HTTP/1.1\r\nHost: rrdp.example\r\n\
            User-Agent: rpki-client/9.8\r\nAccept-Encoding: gzip, deflate\r\n\
            If-Modified-Since: Mon, 07 Dec 2026 05:31:34 GMT\r\nConnection: keep-alive\r\n\r\nGET /";
        let r = parse(rp).expect("an RP's request");
        assert!(r.get && !r.close);
        assert_eq!(r.target, "/rrdp/notification.xml");
        assert_eq!(r.accept_encoding, Some("gzip, deflate"));
        assert_eq!(r.user_agent, Some("rpki-client/9.8"));
        assert_eq!(
            r.header("If-Modified-Since"),
            Some("Mon, 07 Dec 2026 05:31:34 GMT")
        );
        assert_eq!(&rp[r.len..], b"GET /", "the next request's start is left");
        let head = parse(b"HEAD /a HTTP/1.1\r\nconnection: Close\r\n\r\n").unwrap();
        assert!(!head.get && head.close);

        for declined in [
            &b"GET /rrdp/notification.xml HTTP/1.1\r\nHost: x\r\n"[..],
            b"POST /a HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a?x=1 HTTP/1.1\r\n\r\n",
            b"GET http://x/a HTTP/1.1\r\n\r\n",
            b"GET /a\"b HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nIf-Range: \"x\"\r\n\r\n",
            b"GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /a HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET /a HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            b"GET /a HTTP/1.1\r\nConnection: close\r\nConnection: close\r\n\r\n",
            b"GET /a HTTP/1.1\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n\r\n",
            b"GET /a HTTP/1.1\r\nAccept-Encoding: gzip\xff\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n",
        ] {
            assert_eq!(
                parse(declined),
                None,
                "{}",
                String::from_utf8_lossy(declined)
            );
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        let many = format!("GET /a HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(many.as_bytes()),
            None,
            "more header lines than it takes"
        );
    }

    /// Every request the lean path takes, pingora's session takes too, and reads alike: the
    /// method, the target, the headers the answers read, keep-alive. And what the session
    /// refuses, the lean path declines. (Were a pingora upgrade to refuse another of these,
    /// this fails.)
    #[tokio::test]
    async fn what_the_lean_path_takes_pingoras_session_takes_alike() {
        use tokio::io::AsyncWriteExt as _;
        let cases: &[&[u8]] = &[
            b"GET /rrdp/notification.xml HTTP/1.1\r\nHost: rrdp.example\r\n\r\n",
            b"HEAD /rrdp/a/b/snapshot.xml HTTP/1.1\r\nhost: x\r\nCONNECTION: close\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate\r\n\
              If-Modified-Since: Mon, 07 Dec 2026 05:31:34 GMT\r\nUser-Agent: rpki-client/9.8\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nIf-None-Match: \"a\", W/\"b\"\r\nReferer: http://r/\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\nHost: x\nConnection:  keep-alive \n\n",
            b"GET /r/%41~a:b@c!$&'()*+,;=/d.xml HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nHost: x\r\nX-Other: caf\xc3\xa9\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\t\r\n\r\n",
            b"GET //rrdp/n.xml HTTP/1.1\r\nHost: x\r\n\r\n",
            // Refused by the session: the lean path must decline them.
            b"GET /rrdp/n.xml HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nHost: u@a\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /rrdp/n.xml HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET http://u@x/rrdp/n.xml HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        let mut taken = 0;
        for &raw in cases {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (client, server) = tokio::join!(
                tokio::net::TcpStream::connect(listener.local_addr().unwrap()),
                listener.accept()
            );
            let mut client = client.unwrap();
            client.write_all(raw).await.unwrap();
            let stream: pingora::protocols::Stream = Box::new(
                pingora::protocols::l4::stream::Stream::from(server.unwrap().0),
            );
            let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(10), session.read_request())
                    .await
                    .expect("a whole request is read at once");
            let what = raw.escape_ascii().to_string();
            let Some(lean) = parse(raw) else {
                continue;
            };
            taken += 1;
            assert!(
                matches!(read, Ok(true)),
                "{what}: the session says {read:?}"
            );
            let req = session.req_header();
            assert_eq!(req.method.as_str(), if lean.get { "GET" } else { "HEAD" });
            assert_eq!(
                (req.uri.path(), req.uri.query()),
                (lean.target, None),
                "{what}"
            );
            for name in ["Accept-Encoding", "If-None-Match", "If-Modified-Since"] {
                assert_eq!(RequestView::header(req, name), lean.header(name), "{what}");
            }
            let named = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
            assert_eq!(named("Referer"), lean.referer, "{what}");
            assert_eq!(named("User-Agent"), lean.user_agent, "{what}");
            assert_eq!(session.get_keepalive().is_none(), lean.close, "{what}");
        }
        assert_eq!(taken, 9, "the first nine are the lean path's");
    }
}
