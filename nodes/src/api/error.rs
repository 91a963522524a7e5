//! The one place where failures become HTTP statuses and JSON error bodies:
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! | status | code(s) | when |
//! |---|---|---|
//! | 400 | `malformed_json`, `invalid_field`, `invalid_id`, `invalid_query` | the request cannot be read or a field is wrong |
//! | 400, 405, 426 | `upgrade_required` | `GET /ws` without (valid) WebSocket upgrade headers |
//! | 401 | `unauthorized` | no token, bad signature, expired, not a user token |
//! | 403 | `forbidden`, `unknown_user` | not the host / not an admin / token user does not exist |
//! | 404 | `not_found` | no such meeting, series or route |
//! | 405 | `method_not_allowed` | |
//! | 409 | `conflict` | duplicate email |
//! | 413 | `payload_too_large` | body over 1 MiB |
//! | 415 | `unsupported_media_type` | body is not `application/json` |
//! | 422 | `unprocessable` | well-formed but against a rule (past time, bad recurrence, …) |
//! | 429 | `too_many_attempts` | repeated wrong meeting passwords |
//! | 503 | `unavailable` | the database is unreachable |
//! | 500 | `internal` | a bug; logged with its cause, never shown |

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parley_core::validate::FieldError;
use parley_store::StoreError;
use serde_json::json;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn invalid_field(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        (self.status, body).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid_field(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Forbidden(why) => ApiError::forbidden(why),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(f) => f.into(),
            StoreError::Rule(m) => ApiError::unprocessable(m),
            StoreError::Fenced => ApiError::new(StatusCode::CONFLICT, "conflict", "the meeting moved to another node"),
            e @ (StoreError::Unavailable(_) | StoreError::Timeout(_)) => {
                tracing::warn!(cause = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry shortly",
                )
            }
            StoreError::Db(cause) => ApiError::internal(cause),
        }
    }
}
