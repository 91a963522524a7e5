//! Operator endpoints (admin token).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Caller, parse_id};

#[derive(Deserialize)]
pub struct CrashParams {
    /// Crash this user's connection actor instead of the meeting's.
    participant: Option<String>,
}

/// `POST /api/admin/meetings/{id}/crash[?participant=USER_ID]`: makes a running meeting actor
/// (or one participant's connection actor) panic, to drill (and test) supervision and
/// rehydration. Only when the node runs with fault injection enabled
/// (`PARLEY_FAULT_INJECTION=1`); otherwise the route answers 404 like any unknown one.
pub async fn crash_meeting(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<CrashParams>,
) -> Result<Json<Value>, ApiError> {
    if !app.fault_injection {
        return Err(ApiError::not_found("no such route"));
    }
    caller.require_admin()?;
    let id = parse_id(&id, "meeting")?;
    let participant = p.participant.as_deref().map(|u| parse_id(u, "user")).transpose()?;
    let running = ractor::call_t!(
        app.live.supervisor,
        |reply| parley_actors::SupervisorMsg::Crash { meeting_id: id, participant, reply },
        5_000
    )
    .map_err(ApiError::internal)?;
    if !running {
        return Err(ApiError::not_found("that meeting is not running on this node"));
    }
    tracing::warn!(meeting_id = %id, ?participant, operator = %caller.subject, "fault injection: actor crashed on purpose");
    Ok(Json(json!({"meeting_id": id, "participant": participant, "crashed": true})))
}
