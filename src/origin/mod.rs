//! Verified bytes into the store: everything that talks to an upstream or a peer.
//!
//! - [`client`]: a small HTTP client over pingora's `Connector`, or a local directory.
//! - [`fetch`]: one verified download into the store, upstreams first, then peers.
//! - [`peers`]: the cluster's other nodes, by hash and by their notifications.
//! - [`passthrough`]: other trees (e.g. `/ta/`), cached by HTTP rules and served stale.
//!
//! Uses `rrdp`, `store`, `config` and `metrics`; never the write side (`sync`) or the read
//! side (`serve`), which both fetch through here.

pub(crate) mod client;
pub(crate) mod fetch;
pub(crate) mod passthrough;
pub(crate) mod peers;
