//! `POST /api/meetings/{id}/guest` (no token): a guest's way in from a join link, without a
//! token minted by hand. Anyone with the link may ask; the meeting's own rules (password,
//! waiting room, lock) still decide at `join`. The answer is a new guest identity (a `users`
//! row whose email is in the reserved `.invalid` domain) and a short-lived *guest token*: it
//! joins meetings over the WebSocket, and every REST endpoint refuses it (403), so a guest can
//! neither schedule meetings nor read anyone's. The node's secret never leaves the server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use parley_core::model::{MeetingStatus, Plan};
use parley_core::validate;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, parse_id};

/// How long a guest token lasts.
pub const GUEST_TTL_SECS: u64 = 4 * 3600;
/// Guest identities one node hands out per meeting per minute (a flood of rows otherwise).
pub const GUESTS_PER_MINUTE: u32 = 60;
/// The domain of guests' placeholder emails (RFC 2606: never deliverable).
pub const GUEST_EMAIL_DOMAIN: &str = "guests.parley.invalid";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRequest {
    display_name: String,
}

/// Counts guest identities per meeting in one-minute windows.
#[derive(Default)]
pub struct GuestLimiter(Mutex<HashMap<Uuid, (Instant, u32)>>);

impl GuestLimiter {
    /// Whether one more guest of `meeting` may be let in at `now`.
    pub fn allow(&self, meeting: Uuid, now: Instant) -> bool {
        let mut windows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        let (_, count) = windows.entry(meeting).or_insert((now, 0));
        if *count >= GUESTS_PER_MINUTE {
            return false;
        }
        *count += 1;
        true
    }
}

pub async fn create(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<GuestRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id, "meeting")?;
    let name = validate::text("display_name", &req.display_name, validate::MAX_DISPLAY_NAME_CHARS)?;
    let meeting = app.store.meeting(id).await?.ok_or_else(|| ApiError::not_found("meeting not found"))?;
    if meeting.meeting.status == MeetingStatus::Cancelled {
        return Err(ApiError::new(StatusCode::CONFLICT, "meeting_not_available", "the meeting was cancelled"));
    }
    if !app.guests.allow(id, Instant::now()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_guests",
            format!("at most {GUESTS_PER_MINUTE} guests a minute may arrive at this meeting; try again shortly"),
        ));
    }
    let email = format!("guest-{}@{GUEST_EMAIL_DOMAIN}", Uuid::now_v7().simple());
    let user = app.store.create_user(&email, &name, Plan::Free).await?;
    let token = app.tokens.mint_guest(&user.user_id.to_string(), GUEST_TTL_SECS);
    tracing::info!(meeting_id = %id, user_id = %user.user_id, "guest identity issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "meeting_id": id,
            "user_id": user.user_id,
            "display_name": name,
            "token": token,
            "expires_in": GUEST_TTL_SECS,
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_per_meeting_per_minute() {
        let l = GuestLimiter::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        assert!((0..GUESTS_PER_MINUTE).all(|_| l.allow(a, t0)));
        assert!(!l.allow(a, t0), "the 61st in a minute waits");
        assert!(l.allow(b, t0), "another meeting has its own count");
        assert!(l.allow(a, t0 + Duration::from_secs(61)), "a new minute");
    }
}
