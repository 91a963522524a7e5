//! The one way a live request fails: [`LiveError`], a protocol [`ErrorCode`] for the client
//! and a message for people. Every actor answer, cluster answer and handle call ends in it;
//! the store's and presence's errors convert into it in one place each.

use parley_core::protocol::ErrorCode;
use parley_presence::PresenceError;
use parley_store::StoreError;
use serde::{Deserialize, Serialize};

/// Why a live request was not carried out.
///
/// On the cluster wire it travels as the `(code, message)` pair it replaced, so peers of the
/// previous build read it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(from = "(ErrorCode, String)", into = "(ErrorCode, String)")]
#[error("{message} ({})", code.as_str())]
pub struct LiveError {
    pub code: ErrorCode,
    pub message: String,
}

/// A live request's outcome.
pub type LiveResult<T> = Result<T, LiveError>;

impl LiveError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> LiveError {
        LiveError { code, message: message.into() }
    }

    /// The meeting (or its node, or the database) cannot be reached now: retry.
    pub fn unavailable(message: impl Into<String>) -> LiveError {
        LiveError::new(ErrorCode::Unavailable, message)
    }
}

/// `Err` of a [`LiveError`], for early returns.
pub fn fail<T>(code: ErrorCode, message: impl Into<String>) -> LiveResult<T> {
    Err(LiveError::new(code, message))
}

/// The state machine's refusals (`parley_core` keeps plain pairs: it knows no actors).
impl From<(ErrorCode, String)> for LiveError {
    fn from((code, message): (ErrorCode, String)) -> LiveError {
        LiveError { code, message }
    }
}

impl From<LiveError> for (ErrorCode, String) {
    fn from(e: LiveError) -> (ErrorCode, String) {
        (e.code, e.message)
    }
}

/// What a database failure means to the client: a meeting that is over or gone is not
/// available; everything else (unreachable, timed out, refused) is "try again".
impl From<StoreError> for LiveError {
    fn from(e: StoreError) -> LiveError {
        let code = match &e {
            StoreError::NotFound(_) => ErrorCode::MeetingNotFound,
            StoreError::Rule(_) => ErrorCode::MeetingNotAvailable,
            StoreError::Forbidden(_) => ErrorCode::Forbidden,
            _ => ErrorCode::Unavailable,
        };
        LiveError::new(code, e.to_string())
    }
}

impl From<PresenceError> for LiveError {
    fn from(e: PresenceError) -> LiveError {
        LiveError::unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn travels_as_the_pair_it_replaced() {
        let e = LiveError::new(ErrorCode::Forbidden, "hosts only");
        let pair: (ErrorCode, String) = (ErrorCode::Forbidden, "hosts only".into());
        assert_eq!(rmp_serde::to_vec_named(&e).unwrap(), rmp_serde::to_vec_named(&pair).unwrap());
        let back: LiveError = rmp_serde::from_slice(&rmp_serde::to_vec_named(&pair).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn store_failures_say_whether_to_retry() {
        assert_eq!(LiveError::from(StoreError::NotFound("meeting")).code, ErrorCode::MeetingNotFound);
        assert_eq!(LiveError::from(StoreError::Rule("ended".into())).code, ErrorCode::MeetingNotAvailable);
        let timeout = LiveError::from(StoreError::Timeout(std::time::Duration::from_secs(2)));
        assert_eq!(timeout.code, ErrorCode::Unavailable);
        assert!(timeout.to_string().contains("unavailable"), "{timeout}");
    }
}
