//! A small HTTP client for upstreams, over pingora's `Connector` (the same TLS stack and
//! connection pooling as the proxy itself).
//!
//! DNS is resolved here, asynchronously, and a failure is an ordinary error: `HttpPeer::new`
//! would resolve synchronously and panic on failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use std::io;

use crate::config::UpstreamTls;
use crate::rrdp::content::ContentError;
use crate::rrdp::uri::BaseUri;
use crate::rrdp::Hash;
use crate::store::{CommitError, DiskLimit};

/// Connecting (TCP and TLS) must not take longer than this.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that brings no byte for this long fails: a stalled upstream.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pooled upstream connections are closed after this idle time.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// What we call ourselves upstream.
pub(crate) const USER_AGENT: &str = concat!("rrdp-proxy/", env!("CARGO_PKG_VERSION"));

/// Why a request to the upstream (or a download into the store) failed. The causes are kept
/// as sources, not flattened into text: [`FetchError::reason`] and the retry logic decide by
/// type.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// DNS, connect, TLS, reset, malformed response: what failed, and the transport's error.
    Transport {
        context: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An HTTP status we cannot use.
    Status(u16),
    /// The body is larger than allowed.
    TooLarge(u64),
    /// The response is not what the path needs (HTML error page, 204, encoding).
    Unusable(String),
    /// The bytes do not have the announced hash.
    HashMismatch { expected: Hash, actual: Hash },
    /// The bytes have the announced hash but are not the snapshot or delta announced.
    Invalid(ContentError),
    /// Writing to our own store failed (`cache.disk_limit` is a [`DiskLimit`] inside).
    Store(io::Error),
    /// The whole download took too long.
    Timeout,
}

impl FetchError {
    /// A short, stable label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            FetchError::Transport { .. } => "transport",
            FetchError::Status(_) => "status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Unusable(_) => "unusable",
            FetchError::HashMismatch { .. } => "hash_mismatch",
            FetchError::Invalid(_) => "invalid_content",
            FetchError::Store(e) if DiskLimit::is(e) => "disk_limit",
            FetchError::Store(_) => "store",
            FetchError::Timeout => "timeout",
        }
    }

    /// A transport failure described by `context` alone.
    pub(crate) fn transport(context: impl Into<String>) -> FetchError {
        FetchError::Transport {
            context: context.into(),
            source: None,
        }
    }
}

impl From<CommitError> for FetchError {
    fn from(e: CommitError) -> FetchError {
        match e {
            CommitError::HashMismatch { expected, actual } => {
                FetchError::HashMismatch { expected, actual }
            }
            CommitError::Invalid(e) => FetchError::Invalid(e),
            CommitError::Io(e) => FetchError::Store(e),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Transport {
                context,
                source: Some(e),
            } => write!(f, "{context}: {e}"),
            FetchError::Transport { context, .. } => write!(f, "{context}"),
            FetchError::Status(s) => write!(f, "HTTP status {s}"),
            FetchError::TooLarge(n) => write!(f, "body larger than the limit of {n} bytes"),
            FetchError::Unusable(s) => write!(f, "{s}"),
            FetchError::HashMismatch { expected, actual } => {
                write!(f, "SHA-256 mismatch: expected {expected}, got {actual}")
            }
            FetchError::Invalid(e) => write!(f, "content refused: {e}"),
            FetchError::Store(e) => write!(f, "store: {e}"),
            FetchError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Transport { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            FetchError::Invalid(e) => Some(e),
            FetchError::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// A transport failure, with what was being done.
fn transport<E: std::error::Error + Send + Sync + 'static>(
    context: impl Into<String>,
) -> impl FnOnce(E) -> FetchError {
    move |e| FetchError::Transport {
        context: context.into(),
        source: Some(Box::new(e)),
    }
}

/// Runs a download under a whole-download deadline: a peer that trickles a byte at a time
/// must not hold the caller past `limit`. Past it, the error is [`FetchError::Timeout`].
pub(crate) async fn within<T, E: From<FetchError>>(
    limit: Duration,
    download: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(limit, download)
        .await
        .unwrap_or_else(|_| Err(FetchError::Timeout.into()))
}

/// A client for one upstream: a host with its TLS settings, or a local directory.
pub(crate) struct Client {
    connector: Arc<Connector>,
    tls: UpstreamTls,
    /// Read files from this directory instead (a Publication Server's RRDP directory on the
    /// same host); the base URI of a request is then ignored.
    dir: Option<std::path::PathBuf>,
    /// Sent as `Authorization` with every request (the cluster token, to peers).
    authorization: Option<String>,
}

/// One connector per set of trusted CAs, shared by every client that trusts the same. A
/// connector holds its parsed root certificates (the system's) and a pool of idle
/// connections keyed by peer; one per client made memory grow with the repositories a node
/// fronts (docs/benchmarks.md, growth curves, has the figures).
fn shared_connector(ca: Option<&std::path::Path>) -> Arc<Connector> {
    type Connectors = std::collections::HashMap<Option<std::path::PathBuf>, Arc<Connector>>;
    static CONNECTORS: std::sync::OnceLock<std::sync::Mutex<Connectors>> =
        std::sync::OnceLock::new();
    let mut map = CONNECTORS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(ca.map(|p| p.to_path_buf()))
        .or_insert_with(|| {
            let mut opts = ConnectorOptions::new(CONNECTION_POOL);
            opts.ca_file = ca.map(|p| p.to_string_lossy().into_owned());
            Arc::new(Connector::new(Some(opts)))
        })
        .clone()
}

/// Idle upstream connections kept, across all clients sharing a connector.
const CONNECTION_POOL: usize = 64;

impl Client {
    pub(crate) fn new(tls: &UpstreamTls) -> Arc<Client> {
        Arc::new(Client {
            connector: shared_connector(tls.ca.as_deref()),
            tls: tls.clone(),
            dir: None,
            authorization: None,
        })
    }

    /// The client for a cluster's peers: their TLS settings, the token on every request.
    pub(crate) fn for_peers(cluster: &crate::config::ClusterConfig) -> Arc<Client> {
        let mut u = Client::new(&cluster.tls);
        Arc::get_mut(&mut u).expect("just made").authorization =
            Some(format!("Bearer {}", cluster.token));
        u
    }

    /// The client for a repository: its directory if it has one, else HTTP.
    pub(crate) fn for_repository(config: &crate::config::RepositoryConfig) -> Arc<Client> {
        let mut u = Client::new(&config.tls);
        if let Some(dir) = &config.source_dir {
            Arc::get_mut(&mut u).expect("just made").dir = Some(dir.clone());
        }
        u
    }

    /// A local file as a response: 200 with its length, 304 if `If-None-Match` names its
    /// current version, 404 if it is not there. The ETag is the file's identity and exact
    /// modification time, so a rewrite within the same second is still seen.
    async fn get_file(
        self: &Arc<Self>,
        dir: &std::path::Path,
        rel: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Response, FetchError> {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(rel);
        let status =
            |code: u16| ResponseHeader::build(code, None).map_err(transport("local response"));
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Response::local(self.clone(), status(404)?, None))
            }
            Err(e) => return Err(transport(path.display().to_string())(e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(transport(path.display().to_string()))?;
        if !meta.is_file() {
            return Ok(Response::local(self.clone(), status(404)?, None));
        }
        let etag = format!(
            "\"{:x}-{:x}-{:x}.{:x}\"",
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        if headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("If-None-Match") && *v == etag)
        {
            return Ok(Response::local(self.clone(), status(304)?, None));
        }
        let mut header = status(200)?;
        header
            .insert_header("Content-Length", meta.len().to_string())
            .and_then(|_| header.insert_header("ETag", etag))
            .map_err(transport("local response"))?;
        Ok(Response::local(self.clone(), header, Some(file)))
    }

    async fn peer(&self, base: &BaseUri) -> Result<HttpPeer, FetchError> {
        let host = base.host_for_connect();
        let addr = tokio::net::lookup_host((host, base.port()))
            .await
            .map_err(transport(format!("cannot resolve {host}")))?
            .next()
            .ok_or_else(|| FetchError::transport(format!("{host} has no address")))?;
        let mut peer = HttpPeer::new(addr, base.is_tls(), host.to_string());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(READ_TIMEOUT);
        peer.options.write_timeout = Some(READ_TIMEOUT);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        if self.tls.insecure {
            peer.options.verify_cert = false;
            peer.options.verify_hostname = false;
        }
        Ok(peer)
    }

    /// Sends `GET base+rel` with extra request headers and returns once the response header
    /// is in. The body is read from the returned [`Response`].
    pub(crate) async fn get(
        self: &Arc<Self>,
        base: &BaseUri,
        rel: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Response, FetchError> {
        if let Some(dir) = &self.dir {
            return self.get_file(dir, rel, headers).await;
        }
        let peer = self.peer(base).await?;
        let path = format!("{}{}", base.path(), rel);
        let mut req =
            RequestHeader::build("GET", path.as_bytes(), None).map_err(transport("request"))?;
        req.insert_header("Host", base.authority())
            .map_err(transport("request"))?;
        req.insert_header("User-Agent", USER_AGENT)
            .map_err(transport("request"))?;
        // We verify hashes over identity bodies and store them as such.
        req.insert_header("Accept-Encoding", "identity")
            .map_err(transport("request"))?;
        if let Some(auth) = &self.authorization {
            req.insert_header("Authorization", auth.as_str())
                .map_err(transport("request"))?;
        }
        for (k, v) in headers {
            req.insert_header(*k, v.as_str())
                .map_err(transport("request"))?;
        }
        let (mut session, _reused) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(transport(format!("connect to {base}")))?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(transport("request"))?;
        session
            .finish_request_body()
            .await
            .map_err(transport("request"))?;
        session
            .read_response_header()
            .await
            .map_err(transport("response header"))?;
        let header = session
            .response_header()
            .cloned()
            .ok_or_else(|| FetchError::transport("no response header"))?;
        Ok(Response {
            upstream: self.clone(),
            peer: Some(peer),
            session: Some(session),
            file: None,
            header,
        })
    }
}

/// A response whose header has arrived; read the body with [`Response::chunk`].
pub(crate) struct Response {
    upstream: Arc<Client>,
    peer: Option<HttpPeer>,
    session: Option<HttpSession>,
    /// The body of a local file.
    file: Option<tokio::fs::File>,
    pub header: ResponseHeader,
}

impl Response {
    fn local(
        upstream: Arc<Client>,
        header: ResponseHeader,
        file: Option<tokio::fs::File>,
    ) -> Response {
        Response {
            upstream,
            peer: None,
            session: None,
            file,
            header,
        }
    }

    pub(crate) fn status(&self) -> u16 {
        self.header.status.as_u16()
    }

    /// A header's value, if present and text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.header.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next piece of the body; `None` at its end (and the connection goes back to the
    /// pool).
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        if let Some(file) = self.file.as_mut() {
            use tokio::io::AsyncReadExt;
            let mut buf = bytes::BytesMut::with_capacity(64 << 10);
            let n = file.read_buf(&mut buf).await.map_err(transport("read"))?;
            if n == 0 {
                self.file = None;
                return Ok(None);
            }
            return Ok(Some(buf.freeze()));
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        match session
            .read_response_body()
            .await
            .map_err(transport("response body"))?
        {
            Some(b) => Ok(Some(b)),
            None => {
                if let (Some(s), Some(peer)) = (self.session.take(), self.peer.as_ref()) {
                    self.upstream
                        .connector
                        .release_http_session(s, peer, Some(IDLE_TIMEOUT))
                        .await;
                }
                Ok(None)
            }
        }
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    pub(crate) async fn body(mut self, limit: u64) -> Result<Bytes, FetchError> {
        if let Some(len) = self.content_length() {
            if len > limit {
                return Err(FetchError::TooLarge(limit));
            }
        }
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            if (out.len() + c.len()) as u64 > limit {
                return Err(FetchError::TooLarge(limit));
            }
            out.extend_from_slice(&c);
        }
        Ok(Bytes::from(out))
    }

    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("Content-Length").and_then(|v| v.parse().ok())
    }

    /// Whether the response is an HTML page (an error page from a proxy or a login portal).
    pub(crate) fn is_html(&self) -> bool {
        self.header("Content-Type")
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
    }

    /// Refuses responses whose body we could not verify or store as is.
    pub(crate) fn check_identity_encoding(&self) -> Result<(), FetchError> {
        match self.header("Content-Encoding") {
            None => Ok(()),
            Some(e) if e.trim().eq_ignore_ascii_case("identity") => Ok(()),
            Some(e) => Err(FetchError::Unusable(format!(
                "unrequested Content-Encoding {e:?}"
            ))),
        }
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // A session dropped mid-body is simply closed, never pooled.
        self.session.take();
    }
}
