//! One `[[repository]]`: its keys checked and made into a [`RepositoryConfig`] (upstreams,
//! polling, limits, exports, history, validation).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::*;
use super::raw::*;
use super::units::*;
use super::*;

/// A key's full name: `repository[<i>].<key>`.
type Key<'a> = &'a dyn Fn(&str) -> String;

pub(super) fn validate_repository(
    i: usize,
    mut r: RawRepository,
    base: &Path,
) -> Result<RepositoryConfig, ConfigError> {
    let key = |k: &str| format!("repository[{i}].{k}");
    let key: Key = &key;
    let public = base_uri(&key("public"), &r.public)?;
    let (source_dir, upstreams) = repository_upstreams(i, &public, r.upstream.clone())?;
    let upstream = upstreams[0].clone();
    if source_dir.is_some() && (r.upstream_ca.is_some() || r.upstream_insecure) {
        let reason = "upstream_ca and upstream_insecure only make sense with an https upstream";
        return Err(ConfigError::new(key("upstream_ca"), reason));
    }
    let notification = r
        .notification
        .take()
        .unwrap_or_else(|| "notification.xml".to_string());
    if notification.is_empty() || !crate::rrdp::uri::is_safe_relative(&notification) {
        return Err(ConfigError::new(
            key("notification"),
            format!("{notification:?} is not a plain relative file name"),
        ));
    }
    let poll_interval = duration(
        key,
        "poll_interval",
        r.poll_interval.take(),
        DEFAULT_POLL_INTERVAL,
    )?;
    if poll_interval < Duration::from_millis(10) {
        return Err(ConfigError::new(
            key("poll_interval"),
            "must be at least 10ms",
        ));
    }
    Ok(RepositoryConfig {
        tls: upstream_tls(
            &key("upstream_ca"),
            r.upstream_ca.take(),
            r.upstream_insecure,
            &upstream,
            base,
        )?,
        public,
        upstream,
        upstreams,
        source_dir,
        notification,
        poll_interval,
        publish_delay: duration(key, "publish_delay", r.publish_delay.take(), Duration::ZERO)?,
        fetch: FetchLimits::from_raw(key, &mut r)?,
        history: HistoryConfig::from_raw(key, &mut r)?,
        headers: ServeHeaders::from_raw(key, &mut r)?,
        guards: Guards::from_raw(key, &mut r)?,
        export: Exports::from_raw(key, &mut r, base)?,
        validation: Validation::from_raw(key, &mut r, base)?,
    })
}

/// A duration key with its default.
fn duration(
    key: Key,
    k: &str,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    Ok(opt_duration(&key(k), v)?.unwrap_or(default))
}

/// A size key with its default.
fn size(key: Key, k: &str, v: Option<String>, default: u64) -> Result<u64, ConfigError> {
    Ok(opt_size(&key(k), v)?.unwrap_or(default))
}

impl FetchLimits {
    fn from_raw(key: Key, r: &mut RawRepository) -> Result<FetchLimits, ConfigError> {
        let fetch_concurrency = r.fetch_concurrency.unwrap_or(DEFAULT_FETCH_CONCURRENCY);
        if fetch_concurrency == 0 {
            return Err(ConfigError::new(
                key("fetch_concurrency"),
                "must be at least 1",
            ));
        }
        let max_object_size = match opt_size(&key("max_object_size"), r.max_object_size.take())? {
            Some(0) => {
                return Err(ConfigError::new(
                    key("max_object_size"),
                    "must be at least 1 byte",
                ))
            }
            Some(n) => n,
            None => crate::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
        };
        Ok(FetchLimits {
            max_notification_size: size(
                key,
                "max_notification_size",
                r.max_notification_size.take(),
                DEFAULT_MAX_NOTIFICATION_SIZE,
            )?,
            max_file_size: size(
                key,
                "max_file_size",
                r.max_file_size.take(),
                DEFAULT_MAX_FILE_SIZE,
            )?,
            max_object_size,
            fetch_concurrency,
            fetch_timeout: duration(
                key,
                "fetch_timeout",
                r.fetch_timeout.take(),
                DEFAULT_FETCH_TIMEOUT,
            )?,
        })
    }
}

impl HistoryConfig {
    fn from_raw(key: Key, r: &mut RawRepository) -> Result<HistoryConfig, ConfigError> {
        if r.max_deltas == Some(0) {
            return Err(ConfigError::new(
                key("max_deltas"),
                "must be at least 1 (leave it out to serve every delta)",
            ));
        }
        let delta_history_max = match r.delta_history_max {
            None => DEFAULT_DELTA_HISTORY_MAX,
            Some(0) => {
                return Err(ConfigError::new(
                    key("delta_history_max"),
                    "must be at least 1 (delta_history = \"0s\" lists exactly the upstream's deltas)",
                ))
            }
            Some(n) if n > MAX_DELTA_HISTORY_MAX => {
                return Err(ConfigError::new(
                    key("delta_history_max"),
                    format!(
                        "{n} is more than {MAX_DELTA_HISTORY_MAX}: Routinator ignores a longer delta list and takes the snapshot"
                    ),
                ))
            }
            Some(n) => n,
        };
        Ok(HistoryConfig {
            max_deltas: r.max_deltas,
            delta_history: duration(
                key,
                "delta_history",
                r.delta_history.take(),
                DEFAULT_DELTA_HISTORY,
            )?,
            delta_history_max,
        })
    }
}

impl ServeHeaders {
    fn from_raw(key: Key, r: &mut RawRepository) -> Result<ServeHeaders, ConfigError> {
        let notification_max_age = duration(
            key,
            "notification_max_age",
            r.notification_max_age.take(),
            DEFAULT_NOTIFICATION_MAX_AGE,
        )?;
        if notification_max_age > Duration::from_secs(60) {
            return Err(ConfigError::new(
                key("notification_max_age"),
                "must not exceed 60s (publication-server BCP: a notification is never cached over a minute)",
            ));
        }
        Ok(ServeHeaders {
            notification_max_age,
            file_max_age: duration(
                key,
                "file_max_age",
                r.file_max_age.take(),
                DEFAULT_FILE_MAX_AGE,
            )?,
        })
    }
}

impl Guards {
    fn from_raw(key: Key, r: &mut RawRepository) -> Result<Guards, ConfigError> {
        if let Some(p) = r.max_shrink.filter(|p| *p > 100) {
            return Err(ConfigError::new(
                key("max_shrink"),
                format!("{p} is not a percentage (0 to 100)"),
            ));
        }
        Ok(Guards {
            min_objects: r.min_objects,
            max_shrink: r.max_shrink,
        })
    }
}

impl Exports {
    /// Each directory checked, and the two not the same one.
    fn from_raw(key: Key, r: &mut RawRepository, base: &Path) -> Result<Exports, ConfigError> {
        let export_rrdp = export_dir(&key("export_rrdp"), r.export_rrdp.take(), base)?;
        let export_rsync = export_dir(&key("export_rsync"), r.export_rsync.take(), base)?;
        if export_rrdp.is_some() && export_rrdp == export_rsync {
            return Err(ConfigError::new(
                key("export_rsync"),
                "must not be the same directory as export_rrdp",
            ));
        }
        Ok(Exports {
            export_rrdp,
            notify_delay: duration(key, "notify_delay", r.notify_delay.take(), Duration::ZERO)?,
            export_rsync,
            rsync_include_host: r.rsync_include_host,
            rsync_retain: duration(
                key,
                "rsync_retain",
                r.rsync_retain.take(),
                DEFAULT_RSYNC_RETAIN,
            )?,
        })
    }
}

impl Validation {
    fn from_raw(key: Key, r: &mut RawRepository, base: &Path) -> Result<Validation, ConfigError> {
        let validate = match r.validate.as_deref() {
            None => DEFAULT_VALIDATE,
            Some(v) => v
                .parse()
                .map_err(|e| ConfigError::new(key("validate"), e))?,
        };
        let paths = match r.tal.take() {
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
        let pre_validate = match r.pre_validate.take() {
            Some(argv) if argv.is_empty() || argv[0].is_empty() => {
                return Err(ConfigError::new(
                    key("pre_validate"),
                    "must name a command: [\"command\", \"argument\", …]",
                ))
            }
            other => other,
        };
        let pre_validate_timeout = duration(
            key,
            "pre_validate_timeout",
            r.pre_validate_timeout.take(),
            DEFAULT_PRE_VALIDATE_TIMEOUT,
        )?;
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
            expiry_window: duration(
                key,
                "expiry_window",
                r.expiry_window.take(),
                DEFAULT_EXPIRY_WINDOW,
            )?,
            pre_validate,
            pre_validate_timeout,
        })
    }
}

/// A repository's upstreams: one local directory (the Publication Server's RRDP directory,
/// an absolute path; its base is then the public one), or one or more distinct base URIs.
pub(super) fn repository_upstreams(
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

/// An export directory, relative to the config file. Validating writes nothing (`check` must
/// not touch the disk): the directory must exist as a directory, or be creatable under its
/// nearest existing ancestor, which must be a directory. The exporter creates it.
pub(super) fn export_dir(
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

pub(super) fn upstream_tls(
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
