//! `POST /api/users` (operator token): register a user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use parley_core::model::Plan;
use parley_core::validate;
use parley_store::users::User;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    display_name: String,
    #[serde(default)]
    plan: Option<Plan>,
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    caller.require_admin()?;
    let email = validate::email("email", &req.email)?;
    let name = validate::text("display_name", &req.display_name, validate::MAX_DISPLAY_NAME_CHARS)?;
    let user = app.store.create_user(&email, &name, req.plan.unwrap_or(Plan::Free)).await?;
    tracing::info!(user_id = %user.user_id, "user registered");
    Ok((StatusCode::CREATED, Json(user)))
}
