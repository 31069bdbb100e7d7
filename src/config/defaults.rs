//! Every default and every limit of the configuration, in one place: the reference
//! (docs/configuration.md), `rrdp-proxy config` and the code read them here.

use std::time::Duration;

use super::Validate;

/// How often a repository's upstream notification is polled when the config does not say.
pub(super) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// `Cache-Control: max-age` of the served notification. The publication-server BCP: never over
/// a minute.
pub(super) const DEFAULT_NOTIFICATION_MAX_AGE: Duration = Duration::from_secs(60);

/// `Cache-Control: max-age` of snapshot and delta files, which never change under their URI.
pub(super) const DEFAULT_FILE_MAX_AGE: Duration = Duration::from_secs(86400);

/// How long files of superseded generations stay servable (the BCP asks for at least 2 h).
pub(super) const DEFAULT_RETAIN: Duration = Duration::from_secs(2 * 3600);

/// Memory tier size.
pub(super) const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// Largest object kept in the memory tier by default. RRDP deltas are mostly a few KiB (a
/// manifest, a CRL, a few ROAs), and for those the memory tier saves much of the CPU of a
/// request; larger files are read from the page cache, as nginx does, rather than held twice
/// (docs/benchmarks.md has the figures).
pub(super) const DEFAULT_MEMORY_OBJECT_MAX: u64 = 64 << 10;

/// The most `cache.memory_object_max` may be.
pub(super) const MAX_MEMORY_OBJECT_MAX: u64 = 64 << 20;

/// The largest notification file accepted from an upstream. RIPE NCC's is well under 1 MiB.
pub(super) const DEFAULT_MAX_NOTIFICATION_SIZE: u64 = 16 << 20;

/// The largest snapshot or delta accepted from an upstream. The largest RIR snapshots are a few
/// hundred MB.
pub(super) const DEFAULT_MAX_FILE_SIZE: u64 = 4 << 30;

/// How many snapshot/delta downloads one repository runs at once.
pub(super) const DEFAULT_FETCH_CONCURRENCY: usize = 4;

/// Upper bound for one whole file download (a large snapshot over a slow link).
pub(super) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Default `rsync_retain`: an rsync client that started on a tree finishes within the hour.
pub(super) const DEFAULT_RSYNC_RETAIN: Duration = Duration::from_secs(3600);

/// How long a delta stays listed in the served notification after it was published: the
/// publication-server BCP asks for at least 4 hours; a day helps RPs that were away longer,
/// and the entry and size caps below usually bind first.
pub(super) const DEFAULT_DELTA_HISTORY: Duration = Duration::from_secs(24 * 3600);

/// At most this many deltas are listed. Routinator takes the snapshot when it would need more
/// than 100 deltas (so more entries only help rpki-client, which reads 300) and every RP
/// downloads the whole list with each changed notification.
pub(super) const DEFAULT_DELTA_HISTORY_MAX: usize = 100;

/// Report what RPs would reject, publish all the same: a proxy put in front of a working
/// origin must not start withholding its repository on upgrade (a TAL not yet configured, a
/// check the origin's own RPs do not make); the operator turns on `refuse` after seeing the
/// reports stay clean.
pub(super) const DEFAULT_VALIDATE: Validate = Validate::Warn;

/// Certificates that expire within this long are named in the health.
pub(super) const DEFAULT_EXPIRY_WINDOW: Duration = Duration::from_secs(7 * 86400);

pub(super) const DEFAULT_PRE_VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Routinator ignores a delta list of more than 500 entries (and takes the snapshot): a
/// longer list would cost every Routinator a snapshot.
pub(super) const MAX_DELTA_HISTORY_MAX: usize = 500;

/// Freshness of a passthrough response whose upstream sends no Cache-Control (Krill's
/// `/ta/ta.cer`).
pub(super) const DEFAULT_PASSTHROUGH_MAX_AGE: Duration = Duration::from_secs(60);

/// The largest passthrough body that is cached (and served stale on error).
pub(super) const DEFAULT_PASSTHROUGH_MAX_SIZE: u64 = 16 << 20;

/// Default `server.write_buffer`: any response header this program makes fits many times.
pub(super) const DEFAULT_WRITE_BUFFER: usize = 64 << 10;

/// A bound on nonsense: only a response header is ever held, and ours are well under 1 KiB.
pub(super) const MAX_WRITE_BUFFER: u64 = 16 << 20;

/// Default `server.request_timeout`: RPs send a few hundred bytes of header at once.
pub(super) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
