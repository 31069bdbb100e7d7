//! rrdp-proxy: a caching reverse proxy for RPKI RRDP repositories, on pingora.
//!
//! The one invariant: every file that a notification a client can receive references is
//! servable by this node, with the hash the notification gives. The folders follow the data
//! flow, and dependencies point one way (down this list never up):
//!
//! - [`rrdp`]: the protocol, no I/O — notification parse/render, the snapshot/delta content
//!   check, base URIs.
//! - `objects`: the RPKI objects inside a repository, parsed and validated with the `rpki`
//!   crate (no I/O); repository health.
//! - [`erik`]: the Erik protocol's index and partition objects (DER), and building them from
//!   a repository's manifests; no I/O.
//! - `config`: the TOML file, validated into [`Config`]; nothing downstream sees an
//!   unvalidated value.
//! - `clock`: seconds since the epoch, and the clock configured delays run on (a manual
//!   one in tests).
//! - `metrics`: lock-free counters that every layer bumps; rendered by `ops::admin`.
//! - `heap`: bounding what glibc's malloc keeps of freed memory (process-wide).
//! - `effective`: the effective configuration as TOML (`rrdp-proxy config`).
//! - `man`: the manual page of the configuration file, from docs/configuration.md.
//! - `store`: durable content-addressed objects (atomic writer, gzip variants, memory tier,
//!   single flights).
//! - `origin`: verified bytes into the store — the upstream/directory client, one fetch over
//!   upstreams then peers, peer fill, passthrough caches.
//! - `published`: the seam between the write and the read side — a repository's published
//!   generation, which only a stored and verified round can replace.
//! - `sync`: the write side — poll, round, publish barrier, building the next generation.
//! - `shared`: one node's state ([`Shared`]), built at start, read by every listener and task.
//! - `serve`: the read side — routing, answers (304, range, gzip), sending, client guards.
//! - `ops`: admin endpoints, exports, the one-shot `sync`.
//! - `app`: wiring it into a pingora server; [`build_server`] is what both the binary and
//!   the tests call.
//! - [`demo`]: the built-in demo Publication Server (used by the shipped config and tests).
//! - `fuzz_checks`: the properties the fuzz targets and their replay tests check.
//!
//! Only [`rrdp`] and [`erik`] (the protocols, libraries in their own right) and [`demo`]
//! are public modules; the rest are private, and what the binary, the tests and the fuzz targets use
//! of them is re-exported here (`testing` holds what only the integration tests reach
//! for). Inside, items are `pub(crate)` unless reachable from that surface:
//! `unreachable_pub` is on, and CI's clippy denies warnings.

#![warn(unreachable_pub)]

mod app;
mod clock;
mod config;
pub mod demo;
mod effective;
pub mod erik;
#[doc(hidden)]
pub mod fuzz_checks;
mod heap;
mod man;
mod metrics;
mod objects;
mod ops;
mod origin;
mod published;
pub mod rrdp;
mod serve;
mod shared;
mod store;
mod sync;

pub use app::raise_fd_limit;
pub use app::{add_demo, build_server, build_server_upgrading, build_server_with_clock};
pub use clock::{unix_now, Clock, ManualClock};
pub use config::{parse_duration, parse_size, AccessLog, Config};
pub use heap::limit_arenas;
pub use man::{conf_page, text as roff_text};
pub use metrics::RequestKind;
pub use ops::oneshot;
pub use published::RepoStatus;
pub use serve::RrdpProxy;
pub use shared::Shared;

/// What the integration tests reach inside the crate for and nothing else should: limits
/// they check against, and the pieces they drive one at a time. Not part of the API.
#[doc(hidden)]
pub mod testing {
    pub use crate::objects::{made_at, validate, Check, MAX_FINDINGS};
    pub use crate::ops::export;
    pub use crate::origin::passthrough::ENTRIES_KEPT;
    pub use crate::store::flight::object_key;
    pub use crate::store::owner::Owner;
    pub use crate::store::GC_GRACE;
}
