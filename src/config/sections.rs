//! The whole file checked: the server, cache, log, cluster, passthrough and demo sections,
//! and what spans sections (prefixes distinct, directories apart, TAL sources).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::*;
use super::raw::*;
use super::repository::*;
use super::units::*;
use super::*;

/// Turns a toml/serde error into our form, keeping the key toml names in its message.
pub(super) fn toml_error(err: toml::de::Error, text: &str) -> ConfigError {
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

pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
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
pub(super) fn validate_cache(raw: RawCache, dir: PathBuf) -> Result<CacheConfig, ConfigError> {
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
pub(super) fn validate_log(raw: RawLog, base: &Path) -> Result<LogConfig, ConfigError> {
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

pub(super) fn validate_server(
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
        erik: raw.erik.unwrap_or(false),
        sendfile: raw.sendfile.unwrap_or(true),
    })
}

/// A shared secret (`server.admin_token`, `cluster.token`): at least 16 characters, and no
/// white space or control characters (it is sent in an `Authorization` header).
pub(super) fn check_secret(key: &str, token: &str, too_short: &str) -> Result<(), ConfigError> {
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
pub(super) fn check_admin_names(names: &[String]) -> Result<(), ConfigError> {
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
pub(super) fn check_directories_apart(
    cache: &Path,
    repositories: &[RepositoryConfig],
) -> Result<(), ConfigError> {
    let mut written: Vec<(String, PathBuf)> = vec![("cache.dir".into(), normalize(cache))];
    for (i, r) in repositories.iter().enumerate() {
        for (name, dir) in [
            ("export_rrdp", &r.export.export_rrdp),
            ("export_rsync", &r.export.export_rsync),
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

/// The public listeners (at least one) and the admin listener (never one of them).
pub(super) type Listeners = (Vec<SocketAddr>, Vec<SocketAddr>, Option<SocketAddr>);

pub(super) fn server_listeners(
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
pub(super) fn server_tls(
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

pub(super) fn validate_cluster(c: RawCluster, base: &Path) -> Result<ClusterConfig, ConfigError> {
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

pub(super) fn validate_passthrough(
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

/// Two prefixes that overlap would make routing depend on order: refuse them.
pub(super) fn check_prefixes_distinct(
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

/// The places a TAL's HTTPS URIs are fetched from (its rsync URIs are not: no rsync here).
pub(super) fn ta_sources(uris: &[String], passthroughs: &[PassthroughConfig]) -> Vec<TaSource> {
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
