//! Configuration: the raw TOML file as serde structs, and the validated form the rest of the
//! crate uses.
//!
//! Nothing downstream sees an unvalidated value: durations and sizes are parsed, URIs checked,
//! listeners parsed. A bad file is refused with the key and the reason
//! (`repository[0].upstream: ...`), so `rrdp-proxy check` and start-up say the same thing.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::rrdp::uri::BaseUri;

//------------ Defaults ------------------------------------------------------------------------

/// How often a repository's upstream notification is polled when the config does not say.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// `Cache-Control: max-age` of the served notification. The publication-server BCP: never over
/// a minute.
pub const DEFAULT_NOTIFICATION_MAX_AGE: Duration = Duration::from_secs(60);
/// `Cache-Control: max-age` of snapshot and delta files, which never change under their URI.
pub const DEFAULT_FILE_MAX_AGE: Duration = Duration::from_secs(86400);
/// How long files of superseded generations stay servable (the BCP asks for at least 2 h).
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(2 * 3600);
/// Memory tier size.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
/// Largest object kept in the memory tier by default. RRDP deltas are mostly a few KiB (a
/// manifest, a CRL, a few ROAs), and for those the memory tier saves much of the CPU of a
/// request; larger files are read from the page cache, as nginx does, rather than held twice
/// (docs/benchmarks.md has the figures).
pub const DEFAULT_MEMORY_OBJECT_MAX: u64 = 64 << 10;
/// The most `cache.memory_object_max` may be.
pub const MAX_MEMORY_OBJECT_MAX: u64 = 64 << 20;
/// The largest notification file accepted from an upstream. RIPE NCC's is well under 1 MiB.
pub const DEFAULT_MAX_NOTIFICATION_SIZE: u64 = 16 << 20;
/// The largest snapshot or delta accepted from an upstream. The largest RIR snapshots are a few
/// hundred MB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 << 30;
/// How many snapshot/delta downloads one repository runs at once.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 4;
/// Upper bound for one whole file download (a large snapshot over a slow link).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `rsync_retain`: an rsync client that started on a tree finishes within the hour.
pub const DEFAULT_RSYNC_RETAIN: Duration = Duration::from_secs(3600);
/// How long a delta stays listed in the served notification after it was published: the
/// publication-server BCP asks for at least 4 hours; a day helps RPs that were away longer,
/// and the entry and size caps below usually bind first.
pub const DEFAULT_DELTA_HISTORY: Duration = Duration::from_secs(24 * 3600);
/// At most this many deltas are listed. Routinator takes the snapshot when it would need more
/// than 100 deltas (so more entries only help rpki-client, which reads 300) and every RP
/// downloads the whole list with each changed notification.
pub const DEFAULT_DELTA_HISTORY_MAX: usize = 100;
/// Report what RPs would reject, publish all the same: a proxy put in front of a working
/// origin must not start withholding its repository on upgrade (a TAL not yet configured, a
/// check the origin's own RPs do not make); the operator turns on `refuse` after seeing the
/// reports stay clean.
pub const DEFAULT_VALIDATE: Validate = Validate::Warn;
/// Certificates that expire within this long are named in the health.
pub const DEFAULT_EXPIRY_WINDOW: Duration = Duration::from_secs(7 * 86400);
pub const DEFAULT_PRE_VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Routinator ignores a delta list of more than 500 entries (and takes the snapshot): a
/// longer list would cost every Routinator a snapshot.
pub const MAX_DELTA_HISTORY_MAX: usize = 500;
/// Freshness of a passthrough response whose upstream sends no Cache-Control (Krill's
/// `/ta/ta.cer`).
pub const DEFAULT_PASSTHROUGH_MAX_AGE: Duration = Duration::from_secs(60);
/// The largest passthrough body that is cached (and served stale on error).
pub const DEFAULT_PASSTHROUGH_MAX_SIZE: u64 = 16 << 20;

//------------ Raw file ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    repository: Vec<RawRepository>,
    #[serde(default)]
    passthrough: Vec<RawPassthrough>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    log: RawLog,
    demo: Option<RawDemo>,
    cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    peers: Vec<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    publish_from_peers: Option<bool>,
}

/// One upstream base, or several (failover, first preferred).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    access: Option<String>,
    access_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    tls_listen: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_listen: Option<String>,
    admin_token: Option<String>,
    #[serde(default)]
    admin_names: Vec<String>,
    threads: Option<usize>,
    upgrade_sock: Option<PathBuf>,
    request_timeout: Option<String>,
    write_buffer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<PathBuf>,
    memory_limit: Option<String>,
    memory_object_max: Option<String>,
    retain: Option<String>,
    disk_limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    public: String,
    upstream: OneOrMany,
    notification: Option<String>,
    poll_interval: Option<String>,
    upstream_ca: Option<PathBuf>,
    #[serde(default)]
    upstream_insecure: bool,
    max_deltas: Option<usize>,
    notification_max_age: Option<String>,
    file_max_age: Option<String>,
    max_notification_size: Option<String>,
    max_file_size: Option<String>,
    max_object_size: Option<String>,
    fetch_concurrency: Option<usize>,
    fetch_timeout: Option<String>,
    min_objects: Option<u64>,
    max_shrink: Option<u8>,
    export_rrdp: Option<PathBuf>,
    notify_delay: Option<String>,
    export_rsync: Option<PathBuf>,
    #[serde(default)]
    rsync_include_host: bool,
    rsync_retain: Option<String>,
    publish_delay: Option<String>,
    delta_history: Option<String>,
    delta_history_max: Option<usize>,
    validate: Option<String>,
    tal: Option<OneOrMany>,
    expiry_window: Option<String>,
    pre_validate: Option<Vec<String>>,
    pre_validate_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassthrough {
    public: String,
    upstream: String,
    default_max_age: Option<String>,
    max_size: Option<String>,
    upstream_ca: Option<PathBuf>,
    #[serde(default)]
    upstream_insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    max_stale: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemo {
    listen: String,
    interval: Option<String>,
}

//------------ Validated config ----------------------------------------------------------------

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub repositories: Vec<RepositoryConfig>,
    pub passthroughs: Vec<PassthroughConfig>,
    pub health: HealthConfig,
    pub log: LogConfig,
    /// When set, this process also runs the built-in demo Publication Server.
    pub demo: Option<DemoConfig>,
    /// Other nodes serving the same repositories (peer fill).
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: the other nodes of a group serving the same repositories.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Base URIs of the peers' public listeners, e.g. `https://node2.example.net:8443/`.
    pub peers: Vec<BaseUri>,
    /// Shared secret the peers' object endpoint requires (`Authorization: Bearer`).
    pub token: String,
    pub tls: UpstreamTls,
    /// Whether a node whose upstreams all fail publishes a newer serial a peer publishes
    /// (else peers only fill in files on request).
    pub publish_from_peers: bool,
}

/// Where peers fetch objects by SHA-256 from each other (with the cluster token).
pub const PEER_OBJECT_PATH: &str = "/.well-known/rrdp-proxy/object/";
/// Where peers ask each other what a public path they still serve (current or retained) is:
/// followed by the public path without its leading `/` (with the cluster token).
pub const PEER_LOOKUP_PATH: &str = "/.well-known/rrdp-proxy/lookup/";

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners; they need `tls`.
    pub tls_listen: Vec<SocketAddr>,
    /// Certificate chain and key (PEM) for `tls_listen`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The admin listener (/metrics, /status, /healthz, POST /refresh).
    pub admin_listen: Option<SocketAddr>,
    /// A bearer token every admin request but `/healthz` and the page's static files must
    /// present (`Authorization: Bearer …`), if set.
    pub admin_token: Option<String>,
    /// Host names (besides IP addresses and `localhost`) the admin listener answers to: a
    /// request with another `Host` is refused (DNS rebinding).
    pub admin_names: Vec<String>,
    /// Worker threads of the public listener.
    pub threads: usize,
    /// Unix socket over which a new process takes the listening sockets over from this one
    /// (zero-downtime upgrade).
    pub upgrade_sock: PathBuf,
    /// How long a client may take to send a whole HTTP/1 request header (slowloris guard).
    pub request_timeout: Duration,
    /// The largest write an HTTP/1 connection holds back to send with the next one (the
    /// response header, sent with the body in one vectored write: one send, one wake-up of the
    /// client, no copy of the body). 0 sends each write as it comes.
    pub write_buffer: usize,
}

/// Default `server.write_buffer`: any response header this program makes fits many times.
pub const DEFAULT_WRITE_BUFFER: usize = 64 << 10;
/// A bound on nonsense: only a response header is ever held, and ours are well under 1 KiB.
const MAX_WRITE_BUFFER: u64 = 16 << 20;

/// Default `server.request_timeout`: RPs send a few hundred bytes of header at once.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Logging.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Event log level (`error` … `trace`, or `off`); `RUST_LOG` overrides it.
    pub level: String,
    pub access: AccessLog,
    /// Write the access log to this file (buffered, off the request path, reopened on
    /// SIGUSR1) instead of standard error.
    pub access_file: Option<PathBuf>,
}

/// The access log's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLog {
    /// NCSA combined log format, then kind and result.
    Combined,
    /// One JSON object per line.
    Json,
    Off,
}

impl std::str::FromStr for AccessLog {
    type Err = String;

    fn from_str(s: &str) -> Result<AccessLog, String> {
        match s {
            "combined" => Ok(AccessLog::Combined),
            "json" => Ok(AccessLog::Json),
            "off" => Ok(AccessLog::Off),
            other => Err(format!("{other:?} is not one of combined, json, off")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub memory_limit: u64,
    /// Objects larger than this are never held in the memory tier.
    pub memory_object_max: u64,
    pub retain: Duration,
    /// No new objects are written past this many bytes on disk.
    pub disk_limit: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct RepositoryConfig {
    /// Base URI clients use; the served notification names files under it.
    pub public: BaseUri,
    /// The same tree at the Publication Server.
    pub upstream: BaseUri,
    /// File name of the notification under both bases.
    pub notification: String,
    pub poll_interval: Duration,
    pub tls: UpstreamTls,
    /// Serve at most this many (newest) deltas.
    pub max_deltas: Option<usize>,
    pub notification_max_age: Duration,
    pub file_max_age: Duration,
    pub max_notification_size: u64,
    pub max_file_size: u64,
    /// The largest RPKI object (decoded) a snapshot or delta may publish: a larger one
    /// refuses the round. Bounds the memory one element can cost.
    pub max_object_size: u64,
    pub fetch_concurrency: usize,
    pub fetch_timeout: Duration,
    /// Read the upstream from this local directory (a Publication Server's RRDP directory)
    /// instead of over HTTP; `upstream` is then `public`, under which its URIs must lie.
    pub source_dir: Option<PathBuf>,
    /// Content guards: never publish a snapshot with fewer objects, or (within a session)
    /// one that shrank by more than this percentage against the published one.
    pub min_objects: Option<u64>,
    pub max_shrink: Option<u8>,
    /// Write each published generation here as static RRDP files (notification last).
    pub export_rrdp: Option<PathBuf>,
    /// Wait this long between writing the files and the notification of an export.
    pub notify_delay: Duration,
    /// Materialise each published snapshot here as an rsync tree (`current` symlink).
    pub export_rsync: Option<PathBuf>,
    /// Put the rsync URI's host as the first path component of the tree.
    pub rsync_include_host: bool,
    /// Keep superseded rsync trees this long after they stop being `current`.
    pub rsync_retain: Duration,
    /// Every upstream base, the preferred (`upstream`) first; failover in this order.
    pub upstreams: Vec<BaseUri>,
    /// Hold a new generation this long after its files are stored, and publish it only if the
    /// upstream still answers then (a publish barrier for nodes polling out of step).
    pub publish_delay: Duration,
    /// The served notification lists the session's stored deltas published within this long
    /// (also when the upstream no longer lists them); zero: exactly the upstream's list.
    pub delta_history: Duration,
    /// ... and at most this many of them (and `max_deltas`, if smaller).
    pub delta_history_max: usize,
    /// RPKI validation of each new generation before it is published.
    pub validation: Validation,
}

/// What is done with what RPKI validation finds (`validate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validate {
    /// No validation.
    Off,
    /// Publish, and report what RPs would reject (`/status`, metrics, log).
    Warn,
    /// Publish nothing that an RP would reject, in whole or in part: the previous generation
    /// stays served.
    Refuse,
}

impl Validate {
    /// The value as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Validate::Off => "off",
            Validate::Warn => "warn",
            Validate::Refuse => "refuse",
        }
    }
}

/// A repository's RPKI validation settings.
#[derive(Clone, Debug)]
pub struct Validation {
    pub validate: Validate,
    /// Trust anchors (`tal`) to validate top-down from, read at start.
    pub tals: Vec<crate::objects::TalFile>,
    /// Per TAL, where its trust anchor certificate is fetched from, in order.
    pub ta_sources: Vec<Vec<TaSource>>,
    /// Certificates expiring within this long are counted in the health.
    pub expiry_window: Duration,
    /// An operator's own check of the candidate tree (`pre_validate`), and its deadline.
    pub pre_validate: Option<Vec<String>>,
    pub pre_validate_timeout: Duration,
}

/// Where a trust anchor certificate is fetched from: one of its TAL's HTTPS URIs, through
/// the passthrough that serves it when there is one (a TAL may name this proxy's own public
/// URIs, e.g. Krill's `/ta/ta.cer`), else directly.
#[derive(Clone, Debug)]
pub struct TaSource {
    pub base: BaseUri,
    pub rel: String,
    pub tls: UpstreamTls,
}

/// The places a TAL's HTTPS URIs are fetched from (its rsync URIs are not: no rsync here).
fn ta_sources(uris: &[String], passthroughs: &[PassthroughConfig]) -> Vec<TaSource> {
    let mut out = Vec::new();
    for uri in uris.iter().filter(|u| u.starts_with("https://")) {
        if let Some((p, rel)) = passthroughs
            .iter()
            .find_map(|p| Some((p, p.public.relative(uri)?)))
        {
            out.push(TaSource {
                base: p.upstream.clone(),
                rel: rel.to_string(),
                tls: p.tls.clone(),
            });
            continue;
        }
        let Some((dir, name)) = uri.rsplit_once('/') else {
            continue;
        };
        if let Ok(base) = BaseUri::parse(&format!("{dir}/")) {
            out.push(TaSource {
                base,
                rel: name.to_string(),
                tls: UpstreamTls::default(),
            });
        }
    }
    out
}

impl Validation {
    /// Whether a round validates at all (an operator's command runs under `validate = off`
    /// too: it is asked for explicitly).
    pub fn enabled(&self) -> bool {
        self.validate != Validate::Off || self.pre_validate.is_some()
    }
}

impl Config {
    /// What `rrdp-proxy check` checked, one line per part: the listeners, the cache, each
    /// repository (its upstream, validation and TAL files, exports) and passthrough, the
    /// cluster.
    pub fn summary(&self) -> Vec<String> {
        let s = &self.server;
        let addrs = |v: &[SocketAddr]| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        let mut listeners = Vec::new();
        if !s.listen.is_empty() {
            listeners.push(format!("http {}", addrs(&s.listen)));
        }
        if !s.tls_listen.is_empty() {
            listeners.push(format!("https {}", addrs(&s.tls_listen)));
        }
        if let Some(a) = s.admin_listen {
            let token = if s.admin_token.is_some() {
                ", token set"
            } else {
                ""
            };
            listeners.push(format!("admin {a}{token}"));
        }
        out.push(format!("listeners: {}", listeners.join("; ")));
        if let Some((cert, key)) = &s.tls {
            out.push(format!(
                "tls: {} and {} readable",
                cert.display(),
                key.display()
            ));
        }
        out.push(format!(
            "cache: {} (memory {} MiB, retain {}s)",
            self.cache.dir.display(),
            self.cache.memory_limit >> 20,
            self.cache.retain.as_secs()
        ));
        for r in &self.repositories {
            let upstream = match &r.source_dir {
                Some(d) => format!("directory {}", d.display()),
                None => r
                    .upstreams
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let mode = r.validation.validate.as_str();
            let mut line = format!("repository {} from {upstream}; validate {mode}", r.public);
            for t in &r.validation.tals {
                line.push_str(&format!(", TAL {} read", t.path.display()));
            }
            for (name, dir) in [
                ("export_rrdp", &r.export_rrdp),
                ("export_rsync", &r.export_rsync),
            ] {
                if let Some(d) = dir {
                    line.push_str(&format!("; {name} {}", d.display()));
                }
            }
            out.push(line);
        }
        for p in &self.passthroughs {
            out.push(format!("passthrough {} from {}", p.public, p.upstream));
        }
        if let Some(c) = &self.cluster {
            out.push(format!(
                "cluster: {} peers, publish_from_peers {}",
                c.peers.len(),
                c.publish_from_peers
            ));
        }
        if let Some(d) = &self.demo {
            out.push(format!("demo Publication Server on {}", d.listen));
        }
        out
    }
}

impl RepositoryConfig {
    /// What a snapshot or delta of this repository must be: `kind`, of `session_id`, at
    /// `serial`, with objects no larger than `max_object_size`.
    pub fn expected(
        &self,
        kind: crate::rrdp::content::Document,
        session_id: &str,
        serial: u64,
    ) -> crate::rrdp::content::Expected {
        crate::rrdp::content::Expected::new(kind, session_id, serial)
            .with_max_object_size(self.max_object_size)
    }

    /// Whether the object count of each new snapshot is needed (guards, rsync export).
    pub fn counts_objects(&self) -> bool {
        self.min_objects.is_some() || self.max_shrink.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct PassthroughConfig {
    pub public: BaseUri,
    pub upstream: BaseUri,
    pub default_max_age: Duration,
    pub max_size: u64,
    pub tls: UpstreamTls,
}

/// How the upstream's TLS certificate is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust these CAs (PEM) instead of the system's.
    pub ca: Option<PathBuf>,
    /// Do not verify the certificate at all (a lab origin with a self-signed certificate).
    pub insecure: bool,
}

#[derive(Clone, Debug, Default)]
pub struct HealthConfig {
    /// `/healthz` answers 503 once the last successful poll is older than this.
    pub max_stale: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub listen: SocketAddr,
    pub interval: Duration,
}

//------------ Errors --------------------------------------------------------------------------

/// A refused configuration: which key, and why.
#[derive(Debug)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

//------------ Loading -------------------------------------------------------------------------

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses and validates config text; `base` anchors relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(e, text))?;
        validate(raw, base)
    }
}

/// Turns a toml/serde error into our form, keeping the key toml names in its message.
fn toml_error(err: toml::de::Error, text: &str) -> ConfigError {
    // serde's "unknown field `x`, expected one of ..." already names the key; a wrong type
    // ("invalid type: integer `1460`, expected a string") does not, so the key is taken from
    // the line the error points at, under the table it belongs to.
    let reason = err.message().trim().to_string();
    let Some(span) = err.span() else {
        return ConfigError::new("", reason);
    };
    let Some(before) = text.get(..span.start) else {
        return ConfigError::new("", reason);
    };
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let head = &before[..line_start];
    let table = head
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let name = l.trim_matches(|c| c == '[' || c == ']').trim();
            if l.starts_with("[[") {
                // The n-th [[repository]] is "repository[n]", as elsewhere in errors.
                let n = head.lines().filter(|x| x.trim() == l).count();
                format!("{name}[{n}]")
            } else {
                name.to_string()
            }
        });
    let name = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_string(),
        _ => String::new(),
    };
    ConfigError::new(&name, format!("{reason} (line {line_no})"))
}

fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
    let cache_dir = base.join(
        raw.cache
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("cache")),
    );
    let server = validate_server(raw.server, base, &cache_dir)?;
    let cache = validate_cache(raw.cache, cache_dir)?;
    if raw.repository.is_empty() {
        return Err(ConfigError::new(
            "repository",
            "at least one [[repository]] is needed",
        ));
    }
    let mut repositories = Vec::new();
    for (i, r) in raw.repository.into_iter().enumerate() {
        repositories.push(validate_repository(i, r, base)?);
    }
    let mut passthroughs = Vec::new();
    for (i, p) in raw.passthrough.into_iter().enumerate() {
        passthroughs.push(validate_passthrough(i, p, base)?);
    }
    check_prefixes_distinct(&repositories, &passthroughs)?;
    check_directories_apart(&cache.dir, &repositories)?;
    for r in &mut repositories {
        r.validation.ta_sources = r
            .validation
            .tals
            .iter()
            .map(|t| ta_sources(&t.uris(), &passthroughs))
            .collect();
    }
    let health = HealthConfig {
        max_stale: opt_duration("health.max_stale", raw.health.max_stale)?,
    };
    let log = validate_log(raw.log, base)?;
    let demo = match raw.demo {
        None => None,
        Some(d) => Some(DemoConfig {
            listen: socket_addr("demo.listen", &d.listen)?,
            interval: opt_duration("demo.interval", d.interval)?.unwrap_or(Duration::from_secs(5)),
        }),
    };
    let cluster = match raw.cluster {
        None => None,
        Some(c) => Some(validate_cluster(c, base)?),
    };
    Ok(Config {
        cluster,
        server,
        cache,
        repositories,
        passthroughs,
        health,
        log,
        demo,
    })
}

/// `[cache]`, its directory already resolved.
fn validate_cache(raw: RawCache, dir: PathBuf) -> Result<CacheConfig, ConfigError> {
    let cache = CacheConfig {
        dir,
        memory_limit: opt_size("cache.memory_limit", raw.memory_limit)?
            .unwrap_or(DEFAULT_MEMORY_LIMIT),
        memory_object_max: opt_size("cache.memory_object_max", raw.memory_object_max)?
            .unwrap_or(DEFAULT_MEMORY_OBJECT_MAX),
        retain: opt_duration("cache.retain", raw.retain)?.unwrap_or(DEFAULT_RETAIN),
        disk_limit: opt_size("cache.disk_limit", raw.disk_limit)?,
    };
    if cache.memory_object_max > MAX_MEMORY_OBJECT_MAX {
        return Err(ConfigError::new(
            "cache.memory_object_max",
            format!(
                "{} bytes is more than the memory tier can hold per object (at most 64MiB; larger \
                 files are always read from disk)",
                cache.memory_object_max
            ),
        ));
    }
    Ok(cache)
}

/// `[log]`: the level, the access log's form and file.
fn validate_log(raw: RawLog, base: &Path) -> Result<LogConfig, ConfigError> {
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if !["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(ConfigError::new(
            "log.level",
            format!("{level:?} is not one of off, error, warn, info, debug, trace"),
        ));
    }
    let access: AccessLog = raw
        .access
        .as_deref()
        .unwrap_or("combined")
        .parse()
        .map_err(|e| ConfigError::new("log.access", e))?;
    let access_file = match raw.access_file {
        None => None,
        Some(_) if access == AccessLog::Off => {
            return Err(ConfigError::new(
                "log.access_file",
                "the access log is off (log.access = \"off\"): choose combined or json",
            ))
        }
        Some(f) => {
            let f = base.join(f);
            // Created when the server starts; checking writes nothing.
            match f.parent() {
                Some(dir) if dir.is_dir() => Some(f),
                _ => {
                    return Err(ConfigError::new(
                        "log.access_file",
                        format!("{}: its directory does not exist", f.display()),
                    ))
                }
            }
        }
    };
    let log = LogConfig {
        level,
        access,
        access_file,
    };
    Ok(log)
}

fn validate_server(
    raw: RawServer,
    base: &Path,
    cache_dir: &Path,
) -> Result<ServerConfig, ConfigError> {
    let (listen, tls_listen, admin_listen) =
        server_listeners(&raw.listen, &raw.tls_listen, raw.admin_listen)?;
    let tls = server_tls(raw.tls_cert, raw.tls_key, base)?;
    if !tls_listen.is_empty() && tls.is_none() {
        return Err(ConfigError::new(
            "server.tls_cert",
            "server.tls_listen needs server.tls_cert and server.tls_key",
        ));
    }
    let threads = match raw.threads {
        Some(0) => return Err(ConfigError::new("server.threads", "must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    // By default in the cache directory, which this process owns: a fixed path in a shared
    // /tmp could be bound first by any local user, who would then be handed the listening
    // sockets at the next upgrade.
    let upgrade_sock = match raw.upgrade_sock {
        Some(p) => base.join(p),
        None => cache_dir.join("upgrade.sock"),
    };
    let request_timeout = match opt_duration("server.request_timeout", raw.request_timeout)? {
        Some(d) if d.is_zero() => {
            return Err(ConfigError::new(
                "server.request_timeout",
                "must be longer than zero",
            ))
        }
        Some(d) => d,
        None => DEFAULT_REQUEST_TIMEOUT,
    };
    let write_buffer = match opt_size("server.write_buffer", raw.write_buffer)? {
        Some(n) if n > MAX_WRITE_BUFFER => {
            return Err(ConfigError::new(
                "server.write_buffer",
                "must be at most 16MiB (only a response header is ever held)",
            ))
        }
        Some(n) => n as usize,
        None => DEFAULT_WRITE_BUFFER,
    };
    if let Some(t) = &raw.admin_token {
        check_secret(
            "server.admin_token",
            t,
            "must be at least 16 characters (a secret, e.g. from `openssl rand -hex 16`)",
        )?;
    }
    let admin_token = raw.admin_token;
    check_admin_names(&raw.admin_names)?;
    Ok(ServerConfig {
        listen,
        tls_listen,
        tls,
        admin_listen,
        admin_token,
        admin_names: raw
            .admin_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        threads,
        upgrade_sock,
        request_timeout,
        write_buffer,
    })
}

/// A shared secret (`server.admin_token`, `cluster.token`): at least 16 characters, and no
/// white space or control characters (it is sent in an `Authorization` header).
fn check_secret(key: &str, token: &str, too_short: &str) -> Result<(), ConfigError> {
    if token.len() < 16 {
        return Err(ConfigError::new(key, too_short));
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::new(
            key,
            "must not contain white space or control characters",
        ));
    }
    Ok(())
}

/// `server.admin_names`: host names, without ports.
fn check_admin_names(names: &[String]) -> Result<(), ConfigError> {
    for (i, name) in names.iter().enumerate() {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            return Err(ConfigError::new(
                format!("server.admin_names[{i}]"),
                "must be a host name (letters, digits, '-' and '.'), without a port",
            ));
        }
    }
    Ok(())
}

/// Every directory the node writes (the cache, each export) must be its one writer's alone:
/// no two the same, none inside another, and none the same as or inside a repository's
/// `upstream` directory (a Publication Server's own files), or containing one. An export's
/// cleanup in the cache directory deleted the cache's objects.
fn check_directories_apart(
    cache: &Path,
    repositories: &[RepositoryConfig],
) -> Result<(), ConfigError> {
    let mut written: Vec<(String, PathBuf)> = vec![("cache.dir".into(), normalize(cache))];
    for (i, r) in repositories.iter().enumerate() {
        for (name, dir) in [
            ("export_rrdp", &r.export_rrdp),
            ("export_rsync", &r.export_rsync),
        ] {
            if let Some(d) = dir {
                written.push((format!("repository[{i}].{name}"), normalize(d)));
            }
        }
    }
    for (n, (key, dir)) in written.iter().enumerate() {
        for (other_key, other) in &written[..n] {
            if dir.starts_with(other) || other.starts_with(dir) {
                return Err(ConfigError::new(
                    key.clone(),
                    format!(
                        "{} overlaps {other_key} ({}): every directory the node writes and cleans up must be its own",
                        dir.display(),
                        other.display()
                    ),
                ));
            }
        }
        for (i, r) in repositories.iter().enumerate() {
            let Some(source) = r.source_dir.as_deref().map(normalize) else {
                continue;
            };
            if dir.starts_with(&source) || source.starts_with(dir) {
                return Err(ConfigError::new(
                    key.clone(),
                    format!(
                        "{} overlaps repository[{i}].upstream ({}), the Publication Server's own directory",
                        dir.display(),
                        source.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `p` made absolute against the working directory and without `.` and `..` components,
/// by its text alone (the directories need not exist yet).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The public listeners (at least one) and the admin listener (never one of them).
type Listeners = (Vec<SocketAddr>, Vec<SocketAddr>, Option<SocketAddr>);

fn server_listeners(
    listen: &[String],
    tls_listen: &[String],
    admin_listen: Option<String>,
) -> Result<Listeners, ConfigError> {
    let addrs = |name: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .map(|(i, a)| socket_addr(&format!("server.{name}[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()
    };
    let listen = addrs("listen", listen)?;
    let tls_listen = addrs("tls_listen", tls_listen)?;
    if listen.is_empty() && tls_listen.is_empty() {
        return Err(ConfigError::new(
            "server.listen",
            "no listener: give server.listen or server.tls_listen",
        ));
    }
    let admin_listen = match admin_listen {
        Some(a) if !a.is_empty() => Some(socket_addr("server.admin_listen", &a)?),
        _ => None,
    };
    if let Some(admin) = admin_listen {
        if listen.contains(&admin) || tls_listen.contains(&admin) {
            return Err(ConfigError::new(
                "server.admin_listen",
                "must not be one of the public listeners",
            ));
        }
    }
    Ok((listen, tls_listen, admin_listen))
}

/// The TLS certificate and key: both or neither, each a readable file.
fn server_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    base: &Path,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (cert, key) {
        (Some(c), Some(k)) => {
            let (c, k) = (base.join(c), base.join(k));
            for (key, p) in [("server.tls_cert", &c), ("server.tls_key", &k)] {
                if !p.is_file() {
                    return Err(ConfigError::new(
                        key,
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
            Ok(Some((c, k)))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            "server.tls_key",
            "missing: tls_cert needs tls_key",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "server.tls_cert",
            "missing: tls_key needs tls_cert",
        )),
    }
}

fn validate_repository(
    i: usize,
    r: RawRepository,
    base: &Path,
) -> Result<RepositoryConfig, ConfigError> {
    let key = |k: &str| format!("repository[{i}].{k}");
    let public = base_uri(&key("public"), &r.public)?;
    let (source_dir, upstreams) = repository_upstreams(i, &public, r.upstream)?;
    let upstream = upstreams[0].clone();
    if source_dir.is_some() && (r.upstream_ca.is_some() || r.upstream_insecure) {
        let reason = "upstream_ca and upstream_insecure only make sense with an https upstream";
        return Err(ConfigError::new(key("upstream_ca"), reason));
    }
    let (export_rrdp, export_rsync) = exports(&key, r.export_rrdp, r.export_rsync, base)?;
    let polling = repository_polling(
        &key,
        r.notification,
        r.poll_interval,
        r.notification_max_age,
        r.fetch_concurrency,
        r.max_deltas,
    )?;
    // The plain values: a default each, no check beyond the unit.
    let duration = |k: &str, v: Option<String>, default: Duration| {
        Ok::<_, ConfigError>(opt_duration(&key(k), v)?.unwrap_or(default))
    };
    let size = |k: &str, v: Option<String>, default: u64| {
        Ok::<_, ConfigError>(opt_size(&key(k), v)?.unwrap_or(default))
    };
    Ok(RepositoryConfig {
        tls: upstream_tls(
            &key("upstream_ca"),
            r.upstream_ca,
            r.upstream_insecure,
            &upstream,
            base,
        )?,
        public,
        upstream,
        notification: polling.notification,
        poll_interval: polling.poll_interval,
        max_deltas: r.max_deltas,
        notification_max_age: polling.notification_max_age,
        file_max_age: duration("file_max_age", r.file_max_age, DEFAULT_FILE_MAX_AGE)?,
        max_notification_size: size(
            "max_notification_size",
            r.max_notification_size,
            DEFAULT_MAX_NOTIFICATION_SIZE,
        )?,
        max_file_size: size("max_file_size", r.max_file_size, DEFAULT_MAX_FILE_SIZE)?,
        max_object_size: max_object_size(&key, r.max_object_size)?,
        fetch_concurrency: polling.fetch_concurrency,
        fetch_timeout: duration("fetch_timeout", r.fetch_timeout, DEFAULT_FETCH_TIMEOUT)?,
        source_dir,
        min_objects: r.min_objects,
        max_shrink: max_shrink(&key, r.max_shrink)?,
        export_rrdp,
        notify_delay: duration("notify_delay", r.notify_delay, Duration::ZERO)?,
        export_rsync,
        rsync_include_host: r.rsync_include_host,
        rsync_retain: duration("rsync_retain", r.rsync_retain, DEFAULT_RSYNC_RETAIN)?,
        upstreams,
        publish_delay: duration("publish_delay", r.publish_delay, Duration::ZERO)?,
        delta_history: duration("delta_history", r.delta_history, DEFAULT_DELTA_HISTORY)?,
        delta_history_max: delta_history_max(&key, r.delta_history_max)?,
        validation: validation(
            &key,
            RawValidation {
                validate: r.validate,
                tal: r.tal,
                expiry_window: r.expiry_window,
                pre_validate: r.pre_validate,
                pre_validate_timeout: r.pre_validate_timeout,
            },
            base,
        )?,
    })
}

/// A repository's export directories (`export_rrdp`, `export_rsync`): each checked, and not
/// the same one.
fn exports(
    key: &dyn Fn(&str) -> String,
    rrdp: Option<PathBuf>,
    rsync: Option<PathBuf>,
    base: &Path,
) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let rrdp = export_dir(&key("export_rrdp"), rrdp, base)?;
    let rsync = export_dir(&key("export_rsync"), rsync, base)?;
    if rrdp.is_some() && rrdp == rsync {
        return Err(ConfigError::new(
            key("export_rsync"),
            "must not be the same directory as export_rrdp",
        ));
    }
    Ok((rrdp, rsync))
}

/// `max_shrink`: a percentage.
fn max_shrink(key: &dyn Fn(&str) -> String, v: Option<u8>) -> Result<Option<u8>, ConfigError> {
    match v {
        Some(p) if p > 100 => Err(ConfigError::new(
            key("max_shrink"),
            format!("{p} is not a percentage (0 to 100)"),
        )),
        v => Ok(v),
    }
}

/// `max_object_size`: at least one byte.
fn max_object_size(key: &dyn Fn(&str) -> String, v: Option<String>) -> Result<u64, ConfigError> {
    match opt_size(&key("max_object_size"), v)? {
        Some(0) => Err(ConfigError::new(
            key("max_object_size"),
            "must be at least 1 byte",
        )),
        Some(n) => Ok(n),
        None => Ok(crate::rrdp::content::DEFAULT_MAX_OBJECT_SIZE),
    }
}

/// The validation keys of one repository, as written.
struct RawValidation {
    validate: Option<String>,
    tal: Option<OneOrMany>,
    expiry_window: Option<String>,
    pre_validate: Option<Vec<String>>,
    pre_validate_timeout: Option<String>,
}

fn validation(
    key: &dyn Fn(&str) -> String,
    r: RawValidation,
    base: &Path,
) -> Result<Validation, ConfigError> {
    let validate = match r.validate.as_deref() {
        None => DEFAULT_VALIDATE,
        Some("off") => Validate::Off,
        Some("warn") => Validate::Warn,
        Some("refuse") => Validate::Refuse,
        Some(other) => {
            return Err(ConfigError::new(
                key("validate"),
                format!("{other:?} is not one of \"off\", \"warn\", \"refuse\""),
            ))
        }
    };
    let paths = match r.tal {
        None => Vec::new(),
        Some(OneOrMany::One(p)) => vec![p],
        Some(OneOrMany::Many(v)) => v,
    };
    let mut tals = Vec::new();
    for p in paths {
        let tal = crate::objects::TalFile::read(&base.join(&p))
            .map_err(|e| ConfigError::new(key("tal"), e))?;
        tals.push(tal);
    }
    if !tals.is_empty() && validate == Validate::Off {
        return Err(ConfigError::new(
            key("tal"),
            "a TAL is only used with validate = \"warn\" or \"refuse\"",
        ));
    }
    let pre_validate = match r.pre_validate {
        Some(argv) if argv.is_empty() || argv[0].is_empty() => {
            return Err(ConfigError::new(
                key("pre_validate"),
                "must name a command: [\"command\", \"argument\", …]",
            ))
        }
        other => other,
    };
    let pre_validate_timeout = opt_duration(&key("pre_validate_timeout"), r.pre_validate_timeout)?
        .unwrap_or(DEFAULT_PRE_VALIDATE_TIMEOUT);
    if pre_validate_timeout.is_zero() {
        return Err(ConfigError::new(
            key("pre_validate_timeout"),
            "must be more than zero",
        ));
    }
    Ok(Validation {
        validate,
        tals,
        ta_sources: Vec::new(),
        expiry_window: opt_duration(&key("expiry_window"), r.expiry_window)?
            .unwrap_or(DEFAULT_EXPIRY_WINDOW),
        pre_validate,
        pre_validate_timeout,
    })
}

/// The entry cap of the delta history: at least 1, at most [`MAX_DELTA_HISTORY_MAX`].
fn delta_history_max(
    key: &dyn Fn(&str) -> String,
    value: Option<usize>,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(DEFAULT_DELTA_HISTORY_MAX),
        Some(0) => Err(ConfigError::new(
            key("delta_history_max"),
            "must be at least 1 (delta_history = \"0s\" lists exactly the upstream's deltas)",
        )),
        Some(n) if n > MAX_DELTA_HISTORY_MAX => Err(ConfigError::new(
            key("delta_history_max"),
            format!(
                "{n} is more than {MAX_DELTA_HISTORY_MAX}: Routinator ignores a longer delta list and takes the snapshot"
            ),
        )),
        Some(n) => Ok(n),
    }
}

/// How a repository is polled and its notification served.
struct Polling {
    notification: String,
    poll_interval: Duration,
    notification_max_age: Duration,
    fetch_concurrency: usize,
}

fn repository_polling(
    key: &dyn Fn(&str) -> String,
    notification: Option<String>,
    poll_interval: Option<String>,
    notification_max_age: Option<String>,
    fetch_concurrency: Option<usize>,
    max_deltas: Option<usize>,
) -> Result<Polling, ConfigError> {
    let notification = notification.unwrap_or_else(|| "notification.xml".to_string());
    if notification.is_empty() || !crate::rrdp::uri::is_safe_relative(&notification) {
        return Err(ConfigError::new(
            key("notification"),
            format!("{notification:?} is not a plain relative file name"),
        ));
    }
    let poll_interval =
        opt_duration(&key("poll_interval"), poll_interval)?.unwrap_or(DEFAULT_POLL_INTERVAL);
    if poll_interval < Duration::from_millis(10) {
        return Err(ConfigError::new(
            key("poll_interval"),
            "must be at least 10ms",
        ));
    }
    let notification_max_age = opt_duration(&key("notification_max_age"), notification_max_age)?
        .unwrap_or(DEFAULT_NOTIFICATION_MAX_AGE);
    if notification_max_age > Duration::from_secs(60) {
        return Err(ConfigError::new(
            key("notification_max_age"),
            "must not exceed 60s (publication-server BCP: a notification is never cached over a minute)",
        ));
    }
    let fetch_concurrency = fetch_concurrency.unwrap_or(DEFAULT_FETCH_CONCURRENCY);
    if fetch_concurrency == 0 {
        return Err(ConfigError::new(
            key("fetch_concurrency"),
            "must be at least 1",
        ));
    }
    if max_deltas == Some(0) {
        return Err(ConfigError::new(
            key("max_deltas"),
            "must be at least 1 (leave it out to serve every delta)",
        ));
    }
    Ok(Polling {
        notification,
        poll_interval,
        notification_max_age,
        fetch_concurrency,
    })
}

/// A repository's upstreams: one local directory (the Publication Server's RRDP directory,
/// an absolute path; its base is then the public one), or one or more distinct base URIs.
fn repository_upstreams(
    i: usize,
    public: &BaseUri,
    upstream: OneOrMany,
) -> Result<(Option<PathBuf>, Vec<BaseUri>), ConfigError> {
    let key = format!("repository[{i}].upstream");
    let list = match upstream {
        OneOrMany::One(u) => vec![u],
        OneOrMany::Many(v) => v,
    };
    let Some(first) = list.first() else {
        return Err(ConfigError::new(key, "no upstream given"));
    };
    if list.len() > 1 && list.iter().any(|u| u.starts_with('/')) {
        return Err(ConfigError::new(
            key,
            "a directory upstream cannot be one of several",
        ));
    }
    if first.starts_with('/') {
        let dir = PathBuf::from(first);
        if !dir.is_dir() {
            return Err(ConfigError::new(
                key,
                format!("{} is not a directory", dir.display()),
            ));
        }
        return Ok((Some(dir), vec![public.clone()]));
    }
    let mut upstreams = vec![base_uri(&key, first)?];
    for (j, u) in list.iter().enumerate().skip(1) {
        let b = base_uri(&format!("{key}[{j}]"), u)?;
        if upstreams.contains(&b) {
            return Err(ConfigError::new(key, format!("{b} is listed twice")));
        }
        upstreams.push(b);
    }
    Ok((None, upstreams))
}

fn validate_cluster(c: RawCluster, base: &Path) -> Result<ClusterConfig, ConfigError> {
    let token = c.token.unwrap_or_default();
    check_secret(
        "cluster.token",
        &token,
        "a shared secret of at least 16 characters is needed (every node's the same)",
    )?;
    let mut peers = Vec::new();
    for (i, p) in c.peers.iter().enumerate() {
        let p = if p.ends_with('/') {
            p.clone()
        } else {
            format!("{p}/")
        };
        peers.push(base_uri(&format!("cluster.peers[{i}]"), &p)?);
    }
    let any_tls = peers.first().cloned();
    let tls = match any_tls {
        Some(first) => upstream_tls("cluster.ca", c.ca, c.insecure, &first, base)?,
        None => UpstreamTls {
            ca: None,
            insecure: c.insecure,
        },
    };
    Ok(ClusterConfig {
        peers,
        token,
        tls,
        publish_from_peers: c.publish_from_peers.unwrap_or(true),
    })
}

/// An export directory, relative to the config file. Validating writes nothing (`check` must
/// not touch the disk): the directory must exist as a directory, or be creatable under its
/// nearest existing ancestor, which must be a directory. The exporter creates it.
fn export_dir(
    key: &str,
    dir: Option<PathBuf>,
    base: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let dir = base.join(dir);
    let existing = dir.ancestors().find(|a| a.exists());
    match existing {
        Some(a) if a.is_dir() => Ok(Some(dir)),
        Some(a) => Err(ConfigError::new(
            key,
            format!(
                "cannot create {}: {} is not a directory",
                dir.display(),
                a.display()
            ),
        )),
        None => Err(ConfigError::new(
            key,
            format!("cannot create {}: no part of it exists", dir.display()),
        )),
    }
}

fn validate_passthrough(
    i: usize,
    p: RawPassthrough,
    base: &Path,
) -> Result<PassthroughConfig, ConfigError> {
    let key = |k: &str| format!("passthrough[{i}].{k}");
    let public = base_uri(&key("public"), &p.public)?;
    let upstream = base_uri(&key("upstream"), &p.upstream)?;
    Ok(PassthroughConfig {
        tls: upstream_tls(
            &key("upstream_ca"),
            p.upstream_ca,
            p.upstream_insecure,
            &upstream,
            base,
        )?,
        public,
        upstream,
        default_max_age: opt_duration(&key("default_max_age"), p.default_max_age)?
            .unwrap_or(DEFAULT_PASSTHROUGH_MAX_AGE),
        max_size: opt_size(&key("max_size"), p.max_size)?.unwrap_or(DEFAULT_PASSTHROUGH_MAX_SIZE),
    })
}

fn upstream_tls(
    key: &str,
    ca: Option<PathBuf>,
    insecure: bool,
    upstream: &BaseUri,
    base: &Path,
) -> Result<UpstreamTls, ConfigError> {
    let ca = ca.map(|c| base.join(c));
    if let Some(c) = &ca {
        if !c.is_file() {
            return Err(ConfigError::new(
                key,
                format!("{} is not a readable file", c.display()),
            ));
        }
        if !upstream.is_tls() {
            return Err(ConfigError::new(
                key,
                "only makes sense with an https upstream",
            ));
        }
    }
    Ok(UpstreamTls { ca, insecure })
}

/// Two prefixes that overlap would make routing depend on order: refuse them.
fn check_prefixes_distinct(
    repos: &[RepositoryConfig],
    passes: &[PassthroughConfig],
) -> Result<(), ConfigError> {
    let mut seen: Vec<(String, &str)> = Vec::new();
    let all = repos
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("repository[{i}].public"), r.public.path()))
        .chain(
            passes
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("passthrough[{i}].public"), p.public.path())),
        );
    for (key, path) in all {
        for (other_key, other) in &seen {
            if path.starts_with(other) || other.starts_with(path) {
                return Err(ConfigError::new(
                    key,
                    format!("path {path} overlaps {other} of {other_key}"),
                ));
            }
        }
        seen.push((key, path));
    }
    Ok(())
}

fn base_uri(key: &str, s: &str) -> Result<BaseUri, ConfigError> {
    BaseUri::parse(s).map_err(|e| ConfigError::new(key, e.0))
}

fn socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{s:?} is not an address:port (e.g. \"127.0.0.1:8080\" or \"[::]:443\")"),
        )
    })
}

fn opt_duration(key: &str, s: Option<String>) -> Result<Option<Duration>, ConfigError> {
    s.map(|s| parse_duration(&s).map_err(|e| ConfigError::new(key, e.0)))
        .transpose()
}

fn opt_size(key: &str, s: Option<String>) -> Result<Option<u64>, ConfigError> {
    s.map(|s| parse_size(&s).map_err(|e| ConfigError::new(key, e.0)))
        .transpose()
}

//------------ Units ---------------------------------------------------------------------------

/// Why a duration or size was refused (the reason names the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

/// Parses "500ms", "10s", "5m", "2h", "1d" (one number, one unit).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    duration_text(s).map_err(ValueError)
}

/// Parses "256MiB", "1GiB", "512KiB", "100MB", "4096" (bytes).
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    size_text(s).map_err(ValueError)
}

fn duration_text(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. \"10s\", \"5m\", \"2h\""))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"10s\""))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn size_text(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like \"256MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
[[repository]]
public = "http://127.0.0.1:8080/rrdp/"
upstream = "http://127.0.0.1:3001/rrdp/"
"#;

    #[test]
    fn units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten s").is_err());
        assert!(parse_duration("10parsecs").is_err());
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 potatoes").is_err());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/rrdp")).unwrap();
        assert_eq!(c.cache.dir, Path::new("/etc/rrdp/cache"));
        // Issue 26, item 13: not a fixed path in the shared /tmp.
        assert_eq!(
            c.server.upgrade_sock,
            Path::new("/etc/rrdp/cache/upgrade.sock")
        );
        assert_eq!(c.repositories[0].max_object_size, 20_000_000);
        assert_eq!(c.cache.retain, DEFAULT_RETAIN);
        let r = &c.repositories[0];
        assert_eq!(r.notification, "notification.xml");
        assert_eq!(r.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(r.public.path(), "/rrdp/");
    }

    fn refused(extra: &str) -> String {
        let text = format!("{MINIMAL}{extra}");
        Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string()
    }

    /// Regression (issue 26, item 11): `check` accepted an export in the cache directory and
    /// two repositories sharing one export; cleanup then deleted the other's files.
    #[test]
    fn directories_the_node_writes_must_not_overlap() {
        let parse = |text: String| {
            Config::parse(&text, Path::new("/srv"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let two = |a: &str, b: &str| {
            format!(
                "[server]\nlisten = [\"127.0.0.1:8080\"]\n[cache]\ndir = \"/srv/cache\"\n\
                 [[repository]]\npublic = \"http://127.0.0.1:8080/a/\"\nupstream = \"http://127.0.0.1:1/a/\"\n{a}\n\
                 [[repository]]\npublic = \"http://127.0.0.1:8080/b/\"\nupstream = \"http://127.0.0.1:1/b/\"\n{b}\n"
            )
        };
        let e = parse(two("export_rsync = \"/srv/cache\"", "")).unwrap_err();
        assert!(
            e.starts_with("repository[0].export_rsync:") && e.contains("cache.dir"),
            "{e}"
        );
        let e = parse(two("export_rrdp = \"cache/rrdp\"", "")).unwrap_err();
        assert!(e.starts_with("repository[0].export_rrdp:"), "{e}");
        let e = parse(two(
            "export_rrdp = \"/srv/out\"",
            "export_rrdp = \"/srv/out/\"",
        ))
        .unwrap_err();
        assert!(
            e.starts_with("repository[1].export_rrdp:") && e.contains("repository[0].export_rrdp"),
            "{e}"
        );
        let e = parse(two(
            "export_rrdp = \"/srv/out\"",
            "export_rsync = \"/srv/out/../out/rsync\"",
        ))
        .unwrap_err();
        assert!(e.starts_with("repository[1].export_rsync:"), "{e}");
        // The cache inside an export (a parent directory) is refused as well.
        let e = parse(two("export_rrdp = \"/srv\"", "")).unwrap_err();
        assert!(e.starts_with("repository[0].export_rrdp:"), "{e}");
        parse(two(
            "export_rrdp = \"/srv/out-a\"",
            "export_rrdp = \"/srv/out-b\"",
        ))
        .unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = refused("[cache]\nretain = \"forever\"\n");
        assert!(e.starts_with("cache.retain:"), "{e}");
        let e = refused("[cache]\nmemory_limit = \"lots\"\n");
        assert!(e.starts_with("cache.memory_limit:"), "{e}");
        let e = refused("[cache]\nmemory_object_max = \"1GiB\"\n");
        assert!(e.starts_with("cache.memory_object_max:"), "{e}");
        assert!(e.contains("at most 64MiB"), "{e}");
        let e = refused(
            "[[repository]]\npublic = \"ftp://x/rrdp/\"\nupstream = \"http://127.0.0.1:1/\"\n",
        );
        assert!(e.starts_with("repository[1].public:"), "{e}");
        let e = refused("[[passthrough]]\npublic = \"http://127.0.0.1:8080/rrdp/ta/\"\nupstream = \"http://127.0.0.1:1/ta/\"\n");
        assert!(e.contains("overlaps"), "{e}");
        let e = refused("[health]\nmax_stale = \"1x\"\n");
        assert!(e.starts_with("health.max_stale:"), "{e}");
        let e = refused("[log]\naccess = \"xml\"\n");
        assert!(e.starts_with("log.access:"), "{e}");
        let e = refused("[log]\nlevel = \"loud\"\n");
        assert!(e.starts_with("log.level:"), "{e}");
    }

    #[test]
    fn validation_settings_are_checked_at_start() {
        let c = Config::parse(MINIMAL, Path::new("/etc/rrdp")).unwrap();
        let v = &c.repositories[0].validation;
        assert_eq!(v.validate, Validate::Warn);
        assert!(v.tals.is_empty() && v.pre_validate.is_none());
        assert_eq!(v.expiry_window, DEFAULT_EXPIRY_WINDOW);
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/krill-testbed");
        let repo = |extra: &str| {
            let text = format!("{MINIMAL}{extra}\n[[passthrough]]\npublic = \"http://127.0.0.1:8080/ta/\"\nupstream = \"http://127.0.0.1:3001/ta/\"\n");
            Config::parse(&text, &fixture).map_err(|e| e.to_string())
        };
        // A TAL relative to the config file; its HTTPS URI (rrdp.test) is under no
        // passthrough's public base, so it is fetched directly (tests/it/validation.rs has one
        // through a passthrough).
        let c = repo("validate = \"refuse\"\ntal = \"ta.tal\"").unwrap();
        let v = &c.repositories[0].validation;
        assert_eq!(v.tals.len(), 1);
        assert_eq!(v.ta_sources[0].len(), 1);
        assert_eq!(v.ta_sources[0][0].base.to_string(), "https://rrdp.test/ta/");
        for (extra, key, reason) in [
            ("validate = \"strict\"", "validate", "not one of"),
            ("tal = \"missing.tal\"", "tal", "missing.tal"),
            ("tal = \"a/notification.xml\"", "tal", "not a TAL"),
            (
                "validate = \"off\"\ntal = \"ta.tal\"",
                "tal",
                "only used with",
            ),
            ("pre_validate = []", "pre_validate", "must name a command"),
            (
                "pre_validate = [\"true\"]\npre_validate_timeout = \"0s\"",
                "pre_validate_timeout",
                "more than zero",
            ),
            ("expiry_window = \"a week\"", "expiry_window", ""),
        ] {
            let e = repo(extra).unwrap_err();
            assert!(
                e.starts_with(&format!("repository[0].{key}:")),
                "{extra}: {e}"
            );
            assert!(e.contains(reason), "{extra}: {e}");
        }
    }

    #[test]
    fn the_delta_history_is_bounded_by_what_rps_accept() {
        let c = Config::parse(MINIMAL, Path::new("/etc/rrdp")).unwrap();
        let r = &c.repositories[0];
        assert_eq!(r.delta_history, DEFAULT_DELTA_HISTORY);
        assert_eq!(r.delta_history_max, DEFAULT_DELTA_HISTORY_MAX);
        for (value, reason) in [("0", "at least 1"), ("501", "Routinator ignores")] {
            let text = format!("{MINIMAL}delta_history_max = {value}\n");
            let e = Config::parse(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("repository[0].delta_history_max:"), "{e}");
            assert!(e.contains(reason), "{e}");
        }
        let e = Config::parse(
            &format!("{MINIMAL}delta_history = \"long\"\n"),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("repository[0].delta_history:"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let text = MINIMAL.replace("[server]\n", "[server]\nwrite_buffer = 1460\n");
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.write_buffer:"), "{e}");
        assert!(
            e.contains("expected a string") && e.contains("(line 3)"),
            "{e}"
        );
        let e = refused("[[repository]]\npublic = \"http://127.0.0.1:8080/b/\"\nupstream = \"http://127.0.0.1:1/b/\"\npoll_interval = 10\n");
        assert!(e.starts_with("repository[2].poll_interval:"), "{e}");
    }

    #[test]
    fn write_buffer_is_bounded() {
        let with =
            |v: &str| MINIMAL.replace("[server]\n", &format!("[server]\nwrite_buffer = \"{v}\"\n"));
        let c = Config::parse(&with("0"), Path::new(".")).unwrap();
        assert_eq!(c.server.write_buffer, 0, "0 turns buffering off");
        let c = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.server.write_buffer, DEFAULT_WRITE_BUFFER);
        let e = Config::parse(&with("1GiB"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.write_buffer:"), "{e}");
        let e = Config::parse(&with("big"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.write_buffer:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = refused("[cache]\nretian = \"2h\"\n");
        assert!(e.contains("retian"), "{e}");
    }

    #[test]
    fn notification_max_age_over_a_minute_is_refused() {
        let text = MINIMAL.replace(
            "upstream = \"http://127.0.0.1:3001/rrdp/\"",
            "upstream = \"http://127.0.0.1:3001/rrdp/\"\nnotification_max_age = \"5m\"",
        );
        let e = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("repository[0].notification_max_age:"), "{e}");
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../proxy.toml");
        let c = Config::parse(text, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(c.demo.is_some(), "the shipped config runs the demo origin");
        // A newcomer sees the whole product: the demo's signed tree validated from its TAL.
        let v = &c.repositories[0].validation;
        assert_eq!(v.validate, Validate::Refuse);
        assert_eq!(v.tals.len(), 1);
        assert_eq!(c.repositories.len(), 1);
        assert_eq!(c.passthroughs.len(), 1);
    }
}
