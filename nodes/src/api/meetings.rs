//! Meeting endpoints: create (one transaction), read, host-only update and cancel, the join
//! check, and recurring series.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use parley_actors::admission::admit;
use parley_core::join::{JoinDecision, JoinMode, Refusal};
use parley_core::model::{Frequency, MeetingSettings, MeetingSettingsPatch, MeetingType, Role};
use parley_core::password;
use parley_core::recurrence::RecurrenceRule;
use parley_core::validate;
use parley_store::StoreError;
use parley_store::meetings::{Invitee, MeetingDetails, MeetingPatch, NewMeeting, Series, SeriesPlan};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiJsonOrEmpty, ApiPath, Caller, parse_id};

/// How far in the past a scheduled time may be (clock skew, slow clients).
const PAST_TOLERANCE: Duration = Duration::minutes(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMeeting {
    title: String,
    scheduled_time: Option<DateTime<Utc>>,
    duration_minutes: i64,
    timezone: Option<String>,
    meeting_type: Option<MeetingType>,
    password: Option<String>,
    settings: Option<MeetingSettings>,
    #[serde(default)]
    participants: Vec<InviteeReq>,
    recurrence: Option<RecurrenceReq>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteeReq {
    email: String,
    #[serde(default)]
    role: Option<Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecurrenceReq {
    frequency: Frequency,
    interval: Option<u32>,
    #[serde(default)]
    days: Vec<String>,
    until: Option<NaiveDate>,
    count: Option<u32>,
}

/// A meeting reply: the stored view plus its join link.
#[derive(Serialize)]
pub struct MeetingReply<T: Serialize> {
    #[serde(flatten)]
    inner: T,
    join_url: String,
}

/// A meeting time the API can store and give back as it came (no leap second, and the meeting
/// ends by the year 9999), or 422.
fn storable(field: &str, at: DateTime<Utc>, duration_minutes: i32) -> Result<DateTime<Utc>, ApiError> {
    let end = at.checked_add_signed(chrono::Duration::minutes(i64::from(duration_minutes)));
    validate::instant(field, at)
        .and_then(|at| match end {
            Some(end) => validate::instant(field, end).map(|_| at),
            None => Err(validate::FieldError::new(field, "the meeting would end after the year 9999")),
        })
        .map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// Hashes off the async executor: argon2 is deliberately slow.
async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || password::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateMeeting>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let host = caller.user_id()?;
    let title = validate::text("title", &req.title, validate::MAX_TITLE_CHARS)?;
    let duration = validate::duration_minutes("duration_minutes", req.duration_minutes)?;
    if let Some(s) = &req.settings {
        validate::reminder_minutes("settings.reminder_minutes", s.reminder_minutes)?;
    }
    let tz_name = req.timezone.unwrap_or_else(|| "UTC".to_owned());
    let tz = validate::timezone("timezone", &tz_name)?;
    let meeting_type = req.meeting_type.unwrap_or(if req.recurrence.is_some() {
        MeetingType::Recurring
    } else {
        MeetingType::Scheduled
    });
    if req.recurrence.is_some() != (meeting_type == MeetingType::Recurring) {
        return Err(ApiError::unprocessable(
            "`recurrence` is required for, and only allowed with, meeting_type `recurring`",
        ));
    }
    let now = Utc::now();
    let scheduled_time = match (req.scheduled_time, meeting_type) {
        (Some(t), _) => t,
        (None, MeetingType::Instant) => now,
        (None, _) => {
            return Err(ApiError::invalid_field(
                "scheduled_time: required (RFC 3339) unless meeting_type is `instant`",
            ));
        }
    };
    let scheduled_time = storable("scheduled_time", scheduled_time, duration)?;
    if scheduled_time < now - PAST_TOLERANCE {
        return Err(ApiError::unprocessable("scheduled_time is in the past"));
    }
    if req.participants.len() > validate::MAX_INVITEES {
        return Err(ApiError::invalid_field(format!("participants: at most {} invitees", validate::MAX_INVITEES)));
    }
    let series = match req.recurrence {
        Some(r) => {
            let rule = RecurrenceRule::new(r.frequency, r.interval, &r.days, r.until, r.count)
                .map_err(|e| ApiError::unprocessable(format!("recurrence: {e}")))?;
            let occurrences =
                rule.expand(scheduled_time, tz).map_err(|e| ApiError::unprocessable(format!("recurrence: {e}")))?;
            for (i, at) in occurrences.iter().enumerate() {
                storable(&format!("recurrence: occurrence {}", i + 1), *at, duration)?;
            }
            Some(SeriesPlan { rule, occurrences })
        }
        None => None,
    };
    let password_hash = match req.password {
        Some(p) => Some(hash(validate::password("password", &p)?).await?),
        None => None,
    };
    let new = NewMeeting {
        host,
        title,
        meeting_type,
        scheduled_time,
        duration_minutes: duration,
        timezone: tz_name,
        password_hash,
        settings: req.settings.unwrap_or_default(),
        invitees: req
            .participants
            .into_iter()
            .map(|p| Invitee { email: p.email, role: p.role.unwrap_or(Role::Attendee) })
            .collect(),
        series,
    };
    let created = app.store.create_meeting(new).await.map_err(|e| match e {
        StoreError::NotFound("host user") => {
            ApiError::new(StatusCode::FORBIDDEN, "unknown_user", "the token's user does not exist; register it first")
        }
        other => other.into(),
    })?;
    let id = created.first.meeting.meeting_id;
    tracing::info!(meeting_id = %id, occurrences = created.occurrences.len().max(1), "meeting created");
    let mut body = serde_json::to_value(MeetingReply { join_url: app.join_url(id), inner: created })
        .map_err(ApiError::internal)?;
    body["meeting_id"] = json!(id);
    Ok((StatusCode::CREATED, Json(body)))
}

/// The host, the invitees and operators may read a meeting.
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MeetingReply<MeetingDetails>>, ApiError> {
    let id = parse_id(&id, "meeting")?;
    let details = app.store.meeting(id).await?.ok_or_else(|| ApiError::not_found("meeting not found"))?;
    if !caller.admin && details.role_of(caller.user_id()?).is_none() {
        return Err(ApiError::forbidden("only the host and invitees may see this meeting"));
    }
    Ok(Json(MeetingReply { join_url: app.join_url(id), inner: details }))
}

/// Deserialises a field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeeting {
    title: Option<String>,
    scheduled_time: Option<DateTime<Utc>>,
    duration_minutes: Option<i64>,
    timezone: Option<String>,
    /// A new password, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    password: Option<Option<String>>,
    #[serde(default)]
    settings: MeetingSettingsPatch,
}

pub async fn update(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateMeeting>,
) -> Result<Json<MeetingReply<MeetingDetails>>, ApiError> {
    let id = parse_id(&id, "meeting")?;
    let user = caller.user_id()?;
    if let Some(m) = req.settings.reminder_minutes {
        validate::reminder_minutes("settings.reminder_minutes", m)?;
    }
    if let Some(t) = req.scheduled_time {
        storable("scheduled_time", t, req.duration_minutes.unwrap_or(0).clamp(0, 24 * 60) as i32)?;
        if t < Utc::now() - PAST_TOLERANCE {
            return Err(ApiError::unprocessable("scheduled_time is in the past"));
        }
    }
    let password_hash = match req.password {
        Some(Some(p)) => Some(Some(hash(validate::password("password", &p)?).await?)),
        Some(None) => Some(None),
        None => None,
    };
    let patch = MeetingPatch {
        title: req.title.map(|t| validate::text("title", &t, validate::MAX_TITLE_CHARS)).transpose()?,
        scheduled_time: req.scheduled_time,
        duration_minutes: req
            .duration_minutes
            .map(|d| validate::duration_minutes("duration_minutes", d))
            .transpose()?,
        timezone: req.timezone.map(|t| validate::timezone("timezone", &t).map(|_| t)).transpose()?,
        password_hash,
        settings: req.settings,
    };
    let details = app.store.update_meeting(id, user, patch).await?;
    tracing::info!(meeting_id = %id, "meeting updated");
    Ok(Json(MeetingReply { join_url: app.join_url(id), inner: details }))
}

pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MeetingReply<MeetingDetails>>, ApiError> {
    let id = parse_id(&id, "meeting")?;
    let details = app.store.cancel_meeting(id, caller.user_id()?).await?;
    tracing::info!(meeting_id = %id, "meeting cancelled");
    Ok(Json(MeetingReply { join_url: app.join_url(id), inner: details }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JoinCheck {
    password: Option<String>,
}

/// The seed's QUERY 2: may the caller join, and how — the same decision as WebSocket `join`
/// (`parley_actors::admission`), previewed from the stored facts.
pub async fn join_check(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<JoinCheck>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "meeting")?;
    let user = caller.user_id()?;
    let admission = admit(&app.store, &app.join_guard, id, user, req.password.as_deref(), JoinMode::Join)
        .await?
        .ok_or_else(|| ApiError::not_found("meeting not found"))?;
    let status = match admission.decision {
        JoinDecision::Enter { .. } => "allowed",
        JoinDecision::WaitingRoom => "waiting_room",
        JoinDecision::Refused(r @ Refusal::TooManyAttempts) => {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, r.code(), r.message()));
        }
        JoinDecision::Refused(r) => r.code(),
    };
    Ok(Json(json!({ "meeting_id": id, "status": status, "role": admission.role })))
}

pub async fn get_series(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Series>, ApiError> {
    let id = parse_id(&id, "series")?;
    Ok(Json(app.store.series(id, caller.user_id()?).await?))
}

pub async fn cancel_series(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "series")?;
    let n = app.store.cancel_series(id, caller.user_id()?).await?;
    tracing::info!(series_id = %id, cancelled = n, "series cancelled");
    Ok(Json(json!({ "series_id": id, "cancelled_occurrences": n })))
}
