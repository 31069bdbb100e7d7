//! The configuration file as written: serde structs with every key optional where the file
//! may leave it out, and unknown keys refused. Nothing here is checked; `validate` and
//! `repository` make the validated form.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) repository: Vec<RawRepository>,
    #[serde(default)]
    pub(super) passthrough: Vec<RawPassthrough>,
    #[serde(default)]
    pub(super) health: RawHealth,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) demo: Option<RawDemo>,
    pub(super) cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(default)]
    pub(super) peers: Vec<String>,
    pub(super) token: Option<String>,
    pub(super) ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) insecure: bool,
    pub(super) publish_from_peers: Option<bool>,
}

/// One upstream base, or several (failover, first preferred).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) access: Option<String>,
    pub(super) access_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default)]
    pub(super) listen: Vec<String>,
    #[serde(default)]
    pub(super) tls_listen: Vec<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) admin_listen: Option<String>,
    pub(super) admin_token: Option<String>,
    #[serde(default)]
    pub(super) admin_names: Vec<String>,
    pub(super) threads: Option<usize>,
    pub(super) upgrade_sock: Option<PathBuf>,
    pub(super) request_timeout: Option<String>,
    pub(super) write_buffer: Option<String>,
    pub(super) erik: Option<bool>,
    pub(super) sendfile: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) dir: Option<PathBuf>,
    pub(super) memory_limit: Option<String>,
    pub(super) memory_object_max: Option<String>,
    pub(super) retain: Option<String>,
    pub(super) disk_limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub(super) public: String,
    pub(super) upstream: OneOrMany,
    pub(super) notification: Option<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) upstream_insecure: bool,
    pub(super) max_deltas: Option<usize>,
    pub(super) notification_max_age: Option<String>,
    pub(super) file_max_age: Option<String>,
    pub(super) max_notification_size: Option<String>,
    pub(super) max_file_size: Option<String>,
    pub(super) max_object_size: Option<String>,
    pub(super) fetch_concurrency: Option<usize>,
    pub(super) fetch_timeout: Option<String>,
    pub(super) min_objects: Option<u64>,
    pub(super) max_shrink: Option<u8>,
    pub(super) export_rrdp: Option<PathBuf>,
    pub(super) notify_delay: Option<String>,
    pub(super) export_rsync: Option<PathBuf>,
    #[serde(default)]
    pub(super) rsync_include_host: bool,
    pub(super) rsync_retain: Option<String>,
    pub(super) publish_delay: Option<String>,
    pub(super) delta_history: Option<String>,
    pub(super) delta_history_max: Option<usize>,
    pub(super) validate: Option<String>,
    pub(super) tal: Option<OneOrMany>,
    pub(super) expiry_window: Option<String>,
    pub(super) pre_validate: Option<Vec<String>>,
    pub(super) pre_validate_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassthrough {
    pub(super) public: String,
    pub(super) upstream: String,
    pub(super) default_max_age: Option<String>,
    pub(super) max_size: Option<String>,
    pub(super) upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) upstream_insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) max_stale: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDemo {
    pub(super) listen: String,
    pub(super) interval: Option<String>,
}
