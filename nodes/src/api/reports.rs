//! The caller's views over many meetings: upcoming (QUERY 1) and per-day analytics (QUERY 3).

use axum::Json;
use axum::extract::State;
use chrono::{Duration, Utc};
use parley_store::queries::{DayAnalytics, MAX_ANALYTICS_DAYS, MAX_UPCOMING, UpcomingMeeting};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, Caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpcomingParams {
    limit: Option<u64>,
}

#[derive(Serialize)]
pub struct Upcoming {
    meetings: Vec<UpcomingMeeting>,
}

pub async fn upcoming(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<UpcomingParams>,
) -> Result<Json<Upcoming>, ApiError> {
    let limit = p.limit.unwrap_or(10);
    if !(1..=MAX_UPCOMING).contains(&limit) {
        return Err(ApiError::invalid_field(format!("limit: must be between 1 and {MAX_UPCOMING}")));
    }
    let meetings = app.store.upcoming_meetings(caller.user_id()?, Utc::now(), limit).await?;
    Ok(Json(Upcoming { meetings }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsParams {
    days: Option<u32>,
}

#[derive(Serialize)]
pub struct Analytics {
    days: u32,
    rows: Vec<DayAnalytics>,
}

pub async fn analytics(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AnalyticsParams>,
) -> Result<Json<Analytics>, ApiError> {
    let days = p.days.unwrap_or(30);
    if !(1..=MAX_ANALYTICS_DAYS).contains(&days) {
        return Err(ApiError::invalid_field(format!("days: must be between 1 and {MAX_ANALYTICS_DAYS}")));
    }
    let since = Utc::now() - Duration::days(i64::from(days));
    let rows = app.store.analytics_per_day(caller.user_id()?, since).await?;
    Ok(Json(Analytics { days, rows }))
}
