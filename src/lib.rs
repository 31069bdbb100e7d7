//! rrdp-proxy: a caching reverse proxy for RPKI RRDP repositories, on pingora.
//!
//! The one invariant: every file that a notification a client can receive references is
//! servable by this node, with the hash the notification gives. The folders follow the data
//! flow, and dependencies point one way (down this list never up):
//!
//! - [`rrdp`]: the protocol, no I/O — notification parse/render, the snapshot/delta content
//!   check, base URIs.
//! - [`objects`]: the RPKI objects inside a repository, parsed and validated with the `rpki`
//!   crate (no I/O); repository health.
//! - [`config`]: the TOML file, validated into [`config::Config`]; nothing downstream sees an
//!   unvalidated value.
//! - [`clock`]: seconds since the epoch, and the clock configured delays run on (a manual
//!   one in tests).
//! - [`metrics`]: lock-free counters that every layer bumps; rendered by `ops::admin`.
//! - [`heap`]: bounding what glibc's malloc keeps of freed memory (process-wide).
//! - `effective`: the effective configuration as TOML (`rrdp-proxy config`).
//! - [`man`]: the manual page of the configuration file, from docs/configuration.md.
//! - [`store`]: durable content-addressed objects (atomic writer, gzip variants, memory tier,
//!   single flights).
//! - [`origin`]: verified bytes into the store — the upstream/directory client, one fetch over
//!   upstreams then peers, peer fill, passthrough caches.
//! - [`published`]: the seam between the write and the read side — a repository's published
//!   generation, which only a stored and verified round can replace.
//! - `sync`: the write side — poll, round, publish barrier, building the next generation.
//! - `shared`: one node's state ([`Shared`]), built at start, read by every listener and task.
//! - [`serve`]: the read side — routing, answers (304, range, gzip), sending, client guards.
//! - [`ops`]: admin endpoints, exports, the one-shot `sync`.
//! - `app`: wiring it into a pingora server; [`build_server`] is what both the binary and
//!   the tests call.
//! - [`demo`]: the built-in demo Publication Server (used by the shipped config and tests).
//! - `fuzz_checks`: the properties the fuzz targets and their replay tests check.
//!
//! The modules in backticks without a link are private: nothing outside the crate uses them
//! but through what is re-exported here.

mod app;
pub mod clock;
pub mod config;
pub mod demo;
mod effective;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod heap;
pub mod man;
pub mod metrics;
pub mod objects;
pub mod ops;
pub mod origin;
pub mod published;
pub mod rrdp;
pub mod serve;
mod shared;
pub mod store;
mod sync;

pub use app::{add_demo, build_server, build_server_upgrading, build_server_with_clock};
pub use shared::Shared;
