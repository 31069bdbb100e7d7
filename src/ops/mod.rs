//! What operators drive and watch: the admin listener, the exports, the one-shot `sync`.
//!
//! - [`admin`]: `/metrics`, `/status`, `/history`, `/healthz`, `POST /refresh` on the admin
//!   listener; [`admin_access`]: who may ask (Host, Origin, token).
//! - [`page`]: the operator's page at `/` on the admin listener.
//! - [`export`]: static RRDP and rsync trees written after every publish (krill-sync's job).
//! - [`oneshot`]: `rrdp-proxy sync`, one round and an exit status, for cron.
//!
//! The top of the dependency graph below `app`: it reads the published state and may run a
//! poller round, and nothing but `app` and `main` uses it.

pub(crate) mod admin;
pub(crate) mod admin_access;
pub mod export;
pub mod oneshot;
pub(crate) mod page;
