//! `GET /api/notifications?meeting_id=`: what the outbox sent about a meeting, to whom, and how
//! it went (status, attempts, the last error). The meeting's host and operators may read it;
//! its other invitees get 403, everybody else 404 (as if the meeting did not exist).

use axum::Json;
use axum::extract::State;
use parley_core::model::Role;
use parley_store::notifications::NotificationRecord;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, Caller, parse_id};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    meeting_id: String,
}

#[derive(Serialize)]
pub struct Notifications {
    meeting_id: uuid::Uuid,
    notifications: Vec<NotificationRecord>,
}

pub async fn of_meeting(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Json<Notifications>, ApiError> {
    let meeting_id = parse_id(&p.meeting_id, "meeting_id")?;
    let details = app.store.meeting(meeting_id).await?.ok_or_else(|| ApiError::not_found("meeting not found"))?;
    if !caller.admin {
        match details.role_of(caller.user_id()?) {
            Some(Role::Host) => {}
            Some(_) => return Err(ApiError::forbidden("only the meeting's host may see what was sent about it")),
            None => return Err(ApiError::not_found("meeting not found")),
        }
    }
    let notifications = app.store.notifications_of_meeting(meeting_id).await?;
    Ok(Json(Notifications { meeting_id, notifications }))
}
