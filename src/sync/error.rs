//! Why a poll round failed. The published generation stays as it was, whatever the reason.

use std::fmt;
use std::io;

use crate::origin::client::FetchError;
use crate::rrdp::NotificationError;

/// Why a round failed. Causes are kept as sources ([`std::error::Error::source`]).
#[derive(Debug)]
pub(crate) enum PollError {
    /// The notification could not be fetched.
    Notification(FetchError),
    /// The notification was fetched but refused.
    Invalid(NotificationError),
    /// The serial went backwards within the session.
    Regression { published: u64, upstream: u64 },
    /// The upstream went back to a session this repository left less than `cache.retain` ago.
    SessionReturn { session_id: String },
    /// The upstream lists a delta with another hash than the one this node lists for that
    /// serial (RFC 9697: RPs distrust a serial whose delta hash changes).
    DeltaChanged { serial: u64 },
    /// A content guard (`min_objects`, `max_shrink`) refused the new snapshot.
    Guard(String),
    /// A stored round waits for the upstream to answer again after `publish_delay`.
    Barrier { serial: u64, cause: Box<PollError> },
    /// A snapshot or delta could not be fetched or verified.
    File { uri: String, error: FetchError },
    /// RPKI validation (`validate = "refuse"`) or the operator's `pre_validate` refused the
    /// round: `reason` is `rpki_validation` or `pre_validate`.
    Refused {
        serial: u64,
        reason: &'static str,
        detail: String,
    },
    /// Our own disk failed.
    Store(io::Error),
}

impl PollError {
    /// A short, stable label for metrics and for "did the state change" in logs.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PollError::Notification(e) => e.reason(),
            PollError::Invalid(_) => "invalid_notification",
            PollError::Regression { .. } => "serial_regression",
            PollError::SessionReturn { .. } => "session_return",
            PollError::DeltaChanged { .. } => "delta_changed",
            PollError::Guard(_) => "content_guard",
            PollError::Barrier { .. } => "publish_barrier",
            PollError::File { error, .. } => error.reason(),
            PollError::Refused { reason, .. } => reason,
            PollError::Store(_) => "store",
        }
    }

    /// A notification refused for `reason`.
    pub(crate) fn invalid(reason: impl Into<String>) -> PollError {
        PollError::Invalid(NotificationError(reason.into()))
    }
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Notification(e) => write!(f, "notification: {e}"),
            PollError::Invalid(e) => write!(f, "notification refused: {e}"),
            PollError::Regression {
                published,
                upstream,
            } => write!(
                f,
                "serial went back from {published} to {upstream} within the session: not published"
            ),
            PollError::SessionReturn { session_id } => write!(
                f,
                "went back to session {session_id}, which it left earlier (a stale replica?): not published"
            ),
            PollError::DeltaChanged { serial } => write!(
                f,
                "the delta of serial {serial} has another hash than the one published: not published"
            ),
            PollError::Guard(e) => write!(f, "content guard: {e}; not published"),
            PollError::Barrier { serial, cause } => write!(
                f,
                "publish barrier: serial {serial} waits until the upstream answers again after publish_delay ({cause})"
            ),
            PollError::File { uri, error } => write!(f, "{uri}: {error}"),
            PollError::Refused {
                serial,
                reason,
                detail,
            } => write!(f, "serial {serial} refused ({reason}): {detail}; not published"),
            PollError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

/// A notification download that failed (the deadline of `origin::client::within`).
impl From<FetchError> for PollError {
    fn from(e: FetchError) -> PollError {
        PollError::Notification(e)
    }
}

impl std::error::Error for PollError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PollError::Notification(e) => Some(e),
            PollError::Invalid(e) => Some(e),
            PollError::Barrier { cause, .. } => Some(cause.as_ref()),
            PollError::File { error, .. } => Some(error),
            PollError::Store(e) => Some(e),
            _ => None,
        }
    }
}
