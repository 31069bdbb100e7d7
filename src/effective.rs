//! The effective configuration (`rrdp-proxy config`): what a config file means once every
//! default is filled in and every path resolved, written back as a config file that `check`
//! accepts and that means the same again.

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use crate::config::{normalize, AccessLog, Config, RepositoryConfig, UpstreamTls, Validation};

impl Config {
    /// The effective configuration as TOML: every key, defaults included, the tables in the
    /// order of the configuration reference.
    pub fn to_toml(&self) -> String {
        let mut top = Table::new();
        top.insert("server".into(), Value::Table(self.server_table()));
        top.insert("cache".into(), Value::Table(self.cache_table()));
        top.insert("log".into(), Value::Table(self.log_table()));
        let mut health = Table::new();
        opt(
            &mut health,
            "max_stale",
            self.health.max_stale.map(duration),
        );
        top.insert("health".into(), Value::Table(health));
        if let Some(d) = &self.demo {
            let mut t = Table::new();
            t.insert("listen".into(), d.listen.to_string().into());
            t.insert("interval".into(), duration(d.interval));
            top.insert("demo".into(), Value::Table(t));
        }
        if let Some(c) = &self.cluster {
            let mut t = Table::new();
            t.insert(
                "peers".into(),
                strings(c.peers.iter().map(|p| p.to_string())),
            );
            t.insert("token".into(), c.token.clone().into());
            tls(&mut t, &c.tls, "ca", "insecure");
            t.insert("publish_from_peers".into(), c.publish_from_peers.into());
            top.insert("cluster".into(), Value::Table(t));
        }
        let repos = self
            .repositories
            .iter()
            .map(|r| Value::Table(repository(r)));
        top.insert("repository".into(), Value::Array(repos.collect()));
        if !self.passthroughs.is_empty() {
            let passes = self.passthroughs.iter().map(|p| {
                let mut t = Table::new();
                t.insert("public".into(), p.public.to_string().into());
                t.insert("upstream".into(), p.upstream.to_string().into());
                t.insert("default_max_age".into(), duration(p.default_max_age));
                t.insert("max_size".into(), size(p.max_size));
                tls(&mut t, &p.tls, "upstream_ca", "upstream_insecure");
                Value::Table(t)
            });
            top.insert("passthrough".into(), Value::Array(passes.collect()));
        }
        let mut out = String::from(
            "# The effective configuration: every key, defaults filled in, paths resolved.\n",
        );
        for name in [
            "server",
            "cache",
            "log",
            "health",
            "demo",
            "cluster",
            "repository",
            "passthrough",
        ] {
            if let Some(v) = top.remove(name) {
                let mut one = Table::new();
                one.insert(name.to_string(), v);
                out.push('\n');
                out.push_str(&toml::to_string(&one).unwrap_or_default());
            }
        }
        out
    }

    fn server_table(&self) -> Table {
        let s = &self.server;
        let mut t = Table::new();
        t.insert(
            "listen".into(),
            strings(s.listen.iter().map(|a| a.to_string())),
        );
        t.insert(
            "tls_listen".into(),
            strings(s.tls_listen.iter().map(|a| a.to_string())),
        );
        if let Some((cert, key)) = &s.tls {
            t.insert("tls_cert".into(), path(cert));
            t.insert("tls_key".into(), path(key));
        }
        opt(
            &mut t,
            "admin_listen",
            s.admin_listen.map(|a| a.to_string().into()),
        );
        opt(
            &mut t,
            "admin_token",
            s.admin_token.clone().map(Value::from),
        );
        t.insert("admin_names".into(), strings(s.admin_names.iter().cloned()));
        t.insert("threads".into(), (s.threads as i64).into());
        t.insert("upgrade_sock".into(), path(&s.upgrade_sock));
        t.insert("request_timeout".into(), duration(s.request_timeout));
        t.insert("write_buffer".into(), size(s.write_buffer as u64));
        t.insert("erik".into(), toml::Value::Boolean(s.erik));
        t.insert("sendfile".into(), toml::Value::Boolean(s.sendfile));
        t
    }

    fn cache_table(&self) -> Table {
        let c = &self.cache;
        let mut t = Table::new();
        t.insert("dir".into(), path(&c.dir));
        t.insert("memory_limit".into(), size(c.memory_limit));
        t.insert("memory_object_max".into(), size(c.memory_object_max));
        t.insert("retain".into(), duration(c.retain));
        opt(&mut t, "disk_limit", c.disk_limit.map(size));
        t
    }

    fn log_table(&self) -> Table {
        let l = &self.log;
        let mut t = Table::new();
        t.insert("level".into(), l.level.clone().into());
        let access = match l.access {
            AccessLog::Combined => "combined",
            AccessLog::Json => "json",
            AccessLog::Off => "off",
        };
        t.insert("access".into(), access.into());
        opt(&mut t, "access_file", l.access_file.as_deref().map(path));
        t
    }
}

fn repository(r: &RepositoryConfig) -> Table {
    let mut t = Table::new();
    t.insert("public".into(), r.public.to_string().into());
    let upstream = match &r.source_dir {
        Some(dir) => {
            let mut d = dir.display().to_string();
            if !d.ends_with('/') {
                d.push('/');
            }
            d.into()
        }
        None if r.upstreams.len() == 1 => r.upstreams[0].to_string().into(),
        None => strings(r.upstreams.iter().map(|u| u.to_string())),
    };
    t.insert("upstream".into(), upstream);
    t.insert("notification".into(), r.notification.clone().into());
    t.insert("poll_interval".into(), duration(r.poll_interval));
    if r.source_dir.is_none() {
        tls(&mut t, &r.tls, "upstream_ca", "upstream_insecure");
    }
    opt(
        &mut t,
        "max_deltas",
        r.history.max_deltas.map(|n| Value::from(n as i64)),
    );
    t.insert(
        "notification_max_age".into(),
        duration(r.headers.notification_max_age),
    );
    t.insert("file_max_age".into(), duration(r.headers.file_max_age));
    t.insert(
        "max_notification_size".into(),
        size(r.fetch.max_notification_size),
    );
    t.insert("max_file_size".into(), size(r.fetch.max_file_size));
    t.insert("max_object_size".into(), size(r.fetch.max_object_size));
    t.insert(
        "fetch_concurrency".into(),
        (r.fetch.fetch_concurrency as i64).into(),
    );
    t.insert("fetch_timeout".into(), duration(r.fetch.fetch_timeout));
    opt(
        &mut t,
        "min_objects",
        r.guards.min_objects.map(|n| Value::from(n as i64)),
    );
    opt(
        &mut t,
        "max_shrink",
        r.guards.max_shrink.map(|n| Value::from(i64::from(n))),
    );
    opt(
        &mut t,
        "export_rrdp",
        r.export.export_rrdp.as_deref().map(path),
    );
    t.insert("notify_delay".into(), duration(r.export.notify_delay));
    opt(
        &mut t,
        "export_rsync",
        r.export.export_rsync.as_deref().map(path),
    );
    t.insert(
        "rsync_include_host".into(),
        r.export.rsync_include_host.into(),
    );
    t.insert("rsync_retain".into(), duration(r.export.rsync_retain));
    t.insert("publish_delay".into(), duration(r.publish_delay));
    t.insert("delta_history".into(), duration(r.history.delta_history));
    t.insert(
        "delta_history_max".into(),
        (r.history.delta_history_max as i64).into(),
    );
    validation(&mut t, &r.validation);
    t
}

/// A repository's validation keys.
fn validation(t: &mut Table, v: &Validation) {
    t.insert("validate".into(), v.validate.as_str().into());
    if !v.tals.is_empty() {
        t.insert(
            "tal".into(),
            Value::Array(v.tals.iter().map(|f| path(&f.path)).collect()),
        );
    }
    t.insert("expiry_window".into(), duration(v.expiry_window));
    opt(
        t,
        "pre_validate",
        v.pre_validate.clone().map(|a| strings(a.into_iter())),
    );
    t.insert(
        "pre_validate_timeout".into(),
        duration(v.pre_validate_timeout),
    );
}

fn tls(t: &mut Table, tls: &UpstreamTls, ca: &str, insecure: &str) {
    opt(t, ca, tls.ca.as_deref().map(path));
    t.insert(insecure.into(), tls.insecure.into());
}

fn opt(t: &mut Table, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        t.insert(key.into(), v);
    }
}

fn strings(items: impl Iterator<Item = String>) -> Value {
    Value::Array(items.map(Value::from).collect())
}

/// A path made absolute (a relative one in the config is already relative to the working
/// directory: the config file's directory was joined when it was read).
fn path(p: &Path) -> Value {
    normalize(p).display().to_string().into()
}

/// A duration as the config writes it: whole seconds, else milliseconds.
fn duration(d: Duration) -> Value {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs()).into()
    } else {
        format!("{}ms", d.as_millis()).into()
    }
}

/// A size as the config writes it: in bytes.
fn size(n: u64) -> Value {
    format!("{n}B").into()
}
