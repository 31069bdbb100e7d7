//! Erik (draft-ietf-sidrops-rpki-erik-protocol), the content-addressed synchronisation
//! protocol for the RPKI: what a relay serves of the repositories this node publishes.
//!
//! - `wire`: the ErikIndex and ErikPartition objects as DER (no I/O).
//! - `partition`: from the current manifests of a repository state to partitions and an
//!   index per FQDN (no I/O).

pub(crate) mod partition;
pub mod wire;
