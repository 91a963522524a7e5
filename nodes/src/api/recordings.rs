//! Recording endpoints: a meeting's recordings, one recording with its artifacts, an
//! artifact's bytes (streamed through the node from object storage, with HTTP ranges so a
//! browser can seek), and deletion (objects, then rows).
//!
//! Who may: the host and co-hosts of the meeting (invited or made co-host during it) and
//! operators see and delete them; its other invitees watch them (list, details, bytes) when the
//! meeting's settings have `share_recordings`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_core::model::ProcessingStatus;
use parley_core::recording as rec;
use parley_recording::object_store::{ByteRange, ObjectError};
use parley_store::recordings::Recording;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, Caller, parse_id};

/// What a caller wants to do with a meeting's recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// List them, read one, download its artifacts.
    Watch,
    /// Delete them.
    Manage,
}

/// 403 unless the caller may do `need` with `meeting_id`'s recordings (see the module's
/// summary); 404 for a meeting the caller is not invited to.
async fn allowed(app: &AppState, caller: &Caller, meeting_id: Uuid, need: Access) -> Result<(), ApiError> {
    if caller.admin {
        return Ok(());
    }
    let user = caller.user_id()?;
    let details = app.store.meeting(meeting_id).await?.ok_or_else(|| ApiError::not_found("meeting not found"))?;
    let shared = details.meeting.settings.share_recordings;
    match (details.role_of(user), need) {
        (Some(role), _) if role.is_moderator() => Ok(()),
        (Some(_), Access::Watch) if shared => Ok(()),
        (Some(_), Access::Watch) => {
            Err(ApiError::forbidden("this meeting's recordings are shared with its host and co-hosts only"))
        }
        (Some(_), Access::Manage) => {
            Err(ApiError::forbidden("only the host and co-hosts may delete this meeting's recordings"))
        }
        (None, _) => Err(ApiError::not_found("meeting not found")),
    }
}

fn view(r: &Recording) -> Value {
    let artifacts: Value = r.artifacts.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null);
    json!({
        "recording_id": r.id,
        "meeting_id": r.meeting_id,
        "status": r.status,
        "progress": r.progress,
        "layout": r.layout,
        "started_by": r.started_by,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "duration_seconds": r.duration_seconds,
        "file_size_bytes": r.file_size_bytes,
        "storage_url": r.storage_url,
        "mp4_url": r.mp4_url,
        "mp4_size_bytes": r.mp4_size_bytes,
        "thumbnail_url": r.thumbnail_url,
        "transcript_url": r.transcript_url,
        "error": r.error,
        "artifacts": artifacts.get("artifacts").cloned().unwrap_or(Value::Array(Vec::new())),
        "transcript_error": artifacts.get("transcript_error").cloned().unwrap_or(Value::Null),
        "timings": artifacts.get("timings").cloned().unwrap_or(Value::Null),
        "parts": r.parts.iter().map(|p| json!({
            "part": p.part, "node": p.node, "started_at": p.started_at, "ended_at": p.ended_at,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /api/meetings/{id}/recordings`: newest first.
pub async fn of_meeting(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "meeting")?;
    allowed(&app, &caller, id, Access::Watch).await?;
    let list = app.store.recordings_of_meeting(id).await?;
    Ok(Json(json!({ "recordings": list.iter().map(view).collect::<Vec<_>>() })))
}

async fn load(app: &AppState, caller: &Caller, id: &str, need: Access) -> Result<Recording, ApiError> {
    let id = parse_id(id, "recording")?;
    let r = app.store.recording(id).await?;
    allowed(app, caller, r.meeting_id, need).await?;
    Ok(r)
}

/// `GET /api/recordings/{id}`.
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let r = load(&app, &caller, &id, Access::Watch).await?;
    Ok(Json(view(&r)))
}

/// `GET /api/recordings/{id}/{artifact}`: the bytes, with `Range` support.
pub async fn artifact(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((id, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = load(&app, &caller, &id, Access::Watch).await?;
    let objects = app.objects.clone().ok_or_else(|| ApiError::not_found("this node has no recording storage"))?;
    if r.status != ProcessingStatus::Ready {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_ready", format!("the recording is {}", r.status)));
    }
    let listed: Value = r.artifacts.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null);
    let known = listed
        .get("artifacts")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|a| a.get("name").and_then(Value::as_str) == Some(name.as_str())));
    if !known {
        return Err(ApiError::not_found("no such artifact"));
    }
    let key = rec::artifact_key(r.id, &name);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(raw) => match parse_range(raw) {
            Some(Wanted::From(start)) => Some(ByteRange { start, end: None }),
            Some(Wanted::Inclusive(start, end)) => Some(ByteRange { start, end: Some(end) }),
            // The last N bytes: where they start depends on the size.
            Some(Wanted::Last(n)) => {
                let size = match objects.head(&key).await {
                    Ok(Some(meta)) => meta.size,
                    Ok(None) => return Err(ApiError::not_found("the artifact is gone from storage")),
                    Err(e) => return Err(storage_error(e)),
                };
                if n == 0 {
                    return Ok(unsatisfiable(size));
                }
                Some(ByteRange { start: size.saturating_sub(n), end: None })
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    "unsupported Range header (one range: bytes=A-B, bytes=A- or bytes=-N)",
                ));
            }
        },
        None => None,
    };
    let body = match objects.get(&key, range).await {
        Ok(b) => b,
        Err(ObjectError::NotFound(_)) => return Err(ApiError::not_found("the artifact is gone from storage")),
        Err(ObjectError::RangeNotSatisfiable { total }) => return Ok(unsatisfiable(total)),
        Err(e) => return Err(storage_error(e)),
    };
    let partial = range.is_some();
    let length = body.end.saturating_sub(body.start) + 1;
    let mut resp = Response::new(Body::from_stream(body.body));
    *resp.status_mut() = if partial { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&body.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if body.total == 0 {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    } else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if partial && let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", body.start, body.end, body.total)) {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

fn storage_error(e: ObjectError) -> ApiError {
    match e {
        ObjectError::NotFound(_) => ApiError::not_found("the artifact is gone from storage"),
        e if e.is_retryable() => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("object storage: {e}"))
        }
        e => ApiError::internal(e),
    }
}

fn unsatisfiable(total: u64) -> Response {
    let mut resp =
        ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", "range outside the object")
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// One range a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    From(u64),
    Inclusive(u64, u64),
    Last(u64),
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` (one range; a list is refused).
fn parse_range(raw: &str) -> Option<Wanted> {
    let spec = raw.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (false, true) => Some(Wanted::From(a.parse().ok()?)),
        (false, false) => {
            let (start, end): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (start <= end).then_some(Wanted::Inclusive(start, end))
        }
        (true, false) => Some(Wanted::Last(b.parse().ok()?)),
        (true, true) => None,
    }
}

/// `DELETE /api/recordings/{id}`: its objects, then its rows. Refused while capturing.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let r = load(&app, &caller, &id, Access::Manage).await?;
    if r.status == ProcessingStatus::Recording {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "stop the recording before deleting it"));
    }
    let removed = match &app.objects {
        Some(objects) => objects.delete_prefix(&rec::recording_prefix(r.id)).await.map_err(|e| {
            if e.is_retryable() {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("object storage: {e}"))
            } else {
                ApiError::internal(e)
            }
        })?,
        None => 0,
    };
    app.store.delete_recording(r.id).await?;
    tracing::info!(recording_id = %r.id, objects = removed, "recording deleted");
    Ok((StatusCode::OK, Json(json!({ "deleted": r.id, "objects": removed }))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99"), Some(Wanted::Inclusive(0, 99)));
        assert_eq!(parse_range("bytes=100-"), Some(Wanted::From(100)));
        assert_eq!(parse_range("bytes=-500"), Some(Wanted::Last(500)));
        for bad in ["bytes=9-1", "bytes=-", "items=0-1", "bytes=0-1,5-6", "bytes=x-1"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}
