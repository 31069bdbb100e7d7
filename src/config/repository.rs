//! One `[[repository]]`: its keys checked and made into a [`RepositoryConfig`] (upstreams,
//! polling, limits, exports, history, validation).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::*;
use super::raw::*;
use super::units::*;
use super::*;

pub(super) fn validate_repository(
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
pub(super) fn exports(
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
pub(super) fn max_shrink(
    key: &dyn Fn(&str) -> String,
    v: Option<u8>,
) -> Result<Option<u8>, ConfigError> {
    match v {
        Some(p) if p > 100 => Err(ConfigError::new(
            key("max_shrink"),
            format!("{p} is not a percentage (0 to 100)"),
        )),
        v => Ok(v),
    }
}

/// `max_object_size`: at least one byte.
pub(super) fn max_object_size(
    key: &dyn Fn(&str) -> String,
    v: Option<String>,
) -> Result<u64, ConfigError> {
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
pub(super) struct RawValidation {
    validate: Option<String>,
    tal: Option<OneOrMany>,
    expiry_window: Option<String>,
    pre_validate: Option<Vec<String>>,
    pre_validate_timeout: Option<String>,
}

pub(super) fn validation(
    key: &dyn Fn(&str) -> String,
    r: RawValidation,
    base: &Path,
) -> Result<Validation, ConfigError> {
    let validate = match r.validate.as_deref() {
        None => DEFAULT_VALIDATE,
        Some(v) => v
            .parse()
            .map_err(|e| ConfigError::new(key("validate"), e))?,
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
pub(super) fn delta_history_max(
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
pub(super) struct Polling {
    notification: String,
    poll_interval: Duration,
    notification_max_age: Duration,
    fetch_concurrency: usize,
}

pub(super) fn repository_polling(
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
