//! Request extractors whose rejections are [`ApiError`]s, so every malformed request gets the
//! same JSON error shape and the right 4xx — never axum's plain-text defaults.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::auth::TokenError;

/// A JSON body. 400 `malformed_json` for text that is not JSON, 400 `invalid_field` for JSON of
/// the wrong shape (the field's path in the message), 413 over the body limit, 415 without a
/// JSON content type.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is over the 1 MiB limit",
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", r.body_text())
        }
    })
}

/// The body as `T`, read once. Only a body that fails is read again, to tell text that is not
/// JSON (`malformed_json`) from JSON of the wrong shape (`invalid_field`, with the field's
/// path): serde_json alone reports some shape errors (a number where a name goes) as syntax.
/// Duplicate keys are a shape error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let shaped = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (".".to_owned(), e)));
    shaped.map_err(|(path, e)| {
        if let Err(syntax) = serde_json::from_slice::<serde_json::Value>(bytes) {
            return ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("not JSON: {syntax}"));
        }
        if path == "." {
            ApiError::invalid_field(e.to_string())
        } else {
            ApiError::invalid_field(format!("{path}: {e}"))
        }
    })
}

/// Query parameters. 400 `invalid_query` when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r: QueryRejection| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text()))
    }
}

/// Path parameters. 400 `invalid_id` when a segment is not what the route names (not UTF-8
/// after percent-decoding, for one).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r: PathRejection| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", r.body_text()))
    }
}

/// Parses an id from the path; 400 `invalid_id` if it is not a UUID.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", format!("`{raw}` is not a valid {what} id")))
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
    /// Operator rights.
    pub admin: bool,
}

impl Caller {
    /// The caller as a user id; 401 for an operator token whose subject is not a user.
    pub fn user_id(&self) -> Result<Uuid, ApiError> {
        Uuid::parse_str(&self.subject).map_err(|_| ApiError::unauthorized("this token does not identify a user"))
    }

    /// 403 unless the token has operator rights.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin { Ok(()) } else { Err(ApiError::forbidden("an operator (admin) token is required")) }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = AppState::from_ref(state);
        Caller::from_token(&app, bearer(&parts.headers)?)
    }
}

impl Caller {
    /// The caller a signed token names; 401 when it is expired or not ours.
    pub fn from_token(app: &AppState, token: &str) -> Result<Caller, ApiError> {
        match app.tokens.verify(token) {
            Ok(c) if c.gst => Err(ApiError::forbidden("a guest token joins meetings (WebSocket) and nothing else")),
            Ok(c) => Ok(Caller { subject: c.sub, admin: c.adm }),
            Err(TokenError::Expired) => Err(ApiError::unauthorized("token expired")),
            Err(TokenError::Invalid(_)) => Err(ApiError::unauthorized("invalid token")),
        }
    }
}

/// The token of `Authorization: Bearer <token>`; 401 when the header is missing or not that.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let value = header.to_str().map_err(|_| ApiError::unauthorized("unreadable Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
    Ok(token.trim())
}

/// A JSON body that may be absent: an empty body yields `T::default()`.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        parse_json(&bytes).map(ApiJsonOrEmpty)
    }
}
