//! The RRDP protocol, with no I/O: what a notification, snapshot or delta must be, and the
//! URIs in them.
//!
//! - [`notification`]: parsing the upstream notification with limits, rendering ours.
//! - [`content`]: the streaming check that a snapshot or delta is what its notification says.
//! - [`uri`]: base URIs (RFC 9674: same scheme, host and port) and safe relative paths.
//!
//! Uses nothing else of this crate: every other layer builds on these types.

pub mod content;
pub mod lexer;
pub mod notification;
pub mod uri;

pub use notification::{
    render_notification, xml_escape, DeltaRef, FileRef, Hash, Notification, NotificationError,
    MAX_DELTAS, RRDP_NS,
};
