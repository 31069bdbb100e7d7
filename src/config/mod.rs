//! Configuration: the raw TOML file as serde structs, and the validated form the rest of the
//! crate uses.
//!
//! Nothing downstream sees an unvalidated value: durations and sizes are parsed, URIs checked,
//! listeners parsed. A bad file is refused with the key and the reason
//! (`repository[0].upstream: ...`), so `rrdp-proxy check` and start-up say the same thing.
//!
//! The parts: `raw` (the file as serde reads it), `units` (durations, sizes, URIs,
//! addresses), `defaults` (every default and limit, in one place), `sections` (the file as a
//! whole: server, cache, log, cluster, passthroughs, demo, and what spans sections),
//! `repository` (one `[[repository]]`); this file holds the validated types.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::rrdp::uri::BaseUri;

mod defaults;
mod raw;
mod repository;
mod sections;
mod units;

use raw::RawConfig;
pub use units::parse_duration;
pub use units::parse_size;

//------------ Validated config ----------------------------------------------------------------

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) cache: CacheConfig,
    pub(crate) repositories: Vec<RepositoryConfig>,
    pub(crate) passthroughs: Vec<PassthroughConfig>,
    pub(crate) health: HealthConfig,
    pub(crate) log: LogConfig,
    /// When set, this process also runs the built-in demo Publication Server.
    pub(crate) demo: Option<DemoConfig>,
    /// Other nodes serving the same repositories (peer fill).
    pub(crate) cluster: Option<ClusterConfig>,
}

/// `[cluster]`: the other nodes of a group serving the same repositories.
#[derive(Clone, Debug)]
pub(crate) struct ClusterConfig {
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
pub(crate) const PEER_OBJECT_PATH: &str = "/.well-known/rrdp-proxy/object/";
/// Where peers ask each other what a public path they still serve (current or retained) is:
/// followed by the public path without its leading `/` (with the cluster token).
pub(crate) const PEER_LOOKUP_PATH: &str = "/.well-known/rrdp-proxy/lookup/";

#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
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
    /// Serve Erik (`/.well-known/erik/index/`, `/.well-known/ni/sha-256/`) from what every
    /// repository publishes.
    pub erik: bool,
    /// Plain-HTTP/1 connections send stored files from the page cache with `sendfile`.
    pub sendfile: bool,
}

/// Logging.
#[derive(Clone, Debug)]
pub(crate) struct LogConfig {
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
pub(crate) struct CacheConfig {
    pub dir: PathBuf,
    pub memory_limit: u64,
    /// Objects larger than this are never held in the memory tier.
    pub memory_object_max: u64,
    pub retain: Duration,
    /// No new objects are written past this many bytes on disk.
    pub disk_limit: Option<u64>,
}

/// One `[[repository]]`, validated: where it is, how it is polled, and its settings in
/// groups (each built and checked from the raw keys by its own `from_raw` in `repository`).
#[derive(Clone, Debug)]
pub struct RepositoryConfig {
    /// Base URI clients use; the served notification names files under it.
    pub public: BaseUri,
    /// The same tree at the Publication Server.
    pub upstream: BaseUri,
    /// Every upstream base, the preferred (`upstream`) first; failover in this order.
    pub upstreams: Vec<BaseUri>,
    /// Read the upstream from this local directory (a Publication Server's RRDP directory)
    /// instead of over HTTP; `upstream` is then `public`, under which its URIs must lie.
    pub source_dir: Option<PathBuf>,
    pub tls: UpstreamTls,
    /// File name of the notification under both bases.
    pub notification: String,
    pub poll_interval: Duration,
    /// Hold a new generation this long after its files are stored, and publish it only if the
    /// upstream still answers then (a publish barrier for nodes polling out of step).
    pub publish_delay: Duration,
    pub fetch: FetchLimits,
    pub history: HistoryConfig,
    pub headers: ServeHeaders,
    pub guards: Guards,
    pub export: Exports,
    /// RPKI validation of each new generation before it is published.
    pub validation: Validation,
}

/// What a round may download, and how.
#[derive(Clone, Debug)]
pub struct FetchLimits {
    pub max_notification_size: u64,
    pub max_file_size: u64,
    /// The largest RPKI object (decoded) a snapshot or delta may publish: a larger one
    /// refuses the round. Bounds the memory one element can cost.
    pub max_object_size: u64,
    pub fetch_concurrency: usize,
    pub fetch_timeout: Duration,
}

/// Which deltas the served notification lists.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// Serve at most this many (newest) deltas.
    pub max_deltas: Option<usize>,
    /// The served notification lists the session's stored deltas published within this long
    /// (also when the upstream no longer lists them); zero: exactly the upstream's list.
    pub delta_history: Duration,
    /// ... and at most this many of them (and `max_deltas`, if smaller).
    pub delta_history_max: usize,
}

/// How long clients and caches may keep what is served.
#[derive(Clone, Debug)]
pub struct ServeHeaders {
    pub notification_max_age: Duration,
    pub file_max_age: Duration,
}

/// Content guards: never publish a snapshot with fewer objects, or (within a session) one
/// that shrank by more than this percentage against the published one.
#[derive(Clone, Debug)]
pub struct Guards {
    pub min_objects: Option<u64>,
    pub max_shrink: Option<u8>,
}

/// Where each published generation is written besides the store.
#[derive(Clone, Debug)]
pub struct Exports {
    /// Static RRDP files (notification last).
    pub export_rrdp: Option<PathBuf>,
    /// Wait this long between writing the files and the notification of an export.
    pub notify_delay: Duration,
    /// Each published snapshot as an rsync tree (`current` symlink).
    pub export_rsync: Option<PathBuf>,
    /// Put the rsync URI's host as the first path component of the tree.
    pub rsync_include_host: bool,
    /// Keep superseded rsync trees this long after they stop being `current`.
    pub rsync_retain: Duration,
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

impl std::str::FromStr for Validate {
    type Err = String;

    fn from_str(s: &str) -> Result<Validate, String> {
        match s {
            "off" => Ok(Validate::Off),
            "warn" => Ok(Validate::Warn),
            "refuse" => Ok(Validate::Refuse),
            other => Err(format!(
                "{other:?} is not one of \"off\", \"warn\", \"refuse\""
            )),
        }
    }
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
                ("export_rrdp", &r.export.export_rrdp),
                ("export_rsync", &r.export.export_rsync),
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
            .with_max_object_size(self.fetch.max_object_size)
    }

    /// Whether the object count of each new snapshot is needed (guards, rsync export).
    pub fn counts_objects(&self) -> bool {
        self.guards.min_objects.is_some() || self.guards.max_shrink.is_some()
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
pub(crate) struct HealthConfig {
    /// `/healthz` answers 503 once the last successful poll is older than this.
    pub max_stale: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) struct DemoConfig {
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

impl Config {
    /// `log.level`: the event log level (`RUST_LOG` overrides it).
    pub fn log_level(&self) -> &str {
        &self.log.level
    }

    /// `log.access`: the access log's format, or off.
    pub fn access_log(&self) -> AccessLog {
        self.log.access
    }

    /// `cache.retain`: how long files no notification names any more stay servable.
    pub fn retain(&self) -> Duration {
        self.cache.retain
    }

    /// Reads and validates a config file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses and validates config text; `base` anchors relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| sections::toml_error(e, text))?;
        sections::validate(raw, base)
    }
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

#[cfg(test)]
mod tests {
    use super::defaults::*;
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
        assert_eq!(c.repositories[0].fetch.max_object_size, 20_000_000);
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
        assert_eq!(r.history.delta_history, DEFAULT_DELTA_HISTORY);
        assert_eq!(r.history.delta_history_max, DEFAULT_DELTA_HISTORY_MAX);
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
        let text = include_str!("../../proxy.toml");
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
