//! The REST API (axum 0.8): routes, shared state and the layers every request passes.
//!
//! Handlers are thin: parse and validate input (core), call the store, shape the reply.
//! Authorisation that needs stored data (is the caller the host?) is decided by the store in the
//! same statement/transaction that acts, so it cannot race.

mod admin;
mod dashboard;
mod error;
pub mod extract;
mod guests;
mod meetings;
mod notifications;
mod recordings;
mod reports;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use parley_core::throttle::JoinGuard;
use parley_store::Store;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::auth::TokenKeys;

/// Largest request body accepted, in bytes (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Arc<TokenKeys>,
    /// Base of join links, e.g. `http://127.0.0.1:8080`.
    pub public_url: Arc<str>,
    pub node_name: Arc<str>,
    /// Slows down password guessing on join-check (shared with WebSocket joins).
    pub join_guard: Arc<JoinGuard>,
    /// The live-meeting side: supervisor and the services its actors use.
    pub live: Live,
    /// Whether `POST /api/admin/meetings/{id}/crash` is enabled.
    pub fault_injection: bool,
    /// Where recordings are stored (`None`: recording is off on this node).
    pub objects: Option<Arc<dyn parley_recording::object_store::ObjectStore>>,
    /// What `GET /metrics` renders.
    pub metrics: Arc<crate::telemetry::NodeMetrics>,
    /// The token Prometheus may read `/metrics` with besides an operator token.
    pub scrape_token: Option<Arc<str>>,
    /// Paces guest identities (`POST /api/meetings/{id}/guest`).
    pub guests: Arc<guests::GuestLimiter>,
}

/// Handles to the live-meeting actors.
#[derive(Clone)]
pub struct Live {
    pub supervisor: parley_actors::SupervisorRef,
    pub services: Arc<parley_actors::LiveServices>,
}

impl AppState {
    pub fn new(
        store: Store,
        tokens: TokenKeys,
        public_url: &str,
        node_name: &str,
        live: Live,
        metrics: Arc<crate::telemetry::NodeMetrics>,
    ) -> AppState {
        AppState {
            store,
            tokens: Arc::new(tokens),
            public_url: public_url.into(),
            node_name: node_name.into(),
            join_guard: live.services.join_guard.clone(),
            live,
            fault_injection: false,
            objects: None,
            metrics,
            scrape_token: None,
            guests: Arc::default(),
        }
    }

    /// The link a participant follows to join.
    pub fn join_url(&self, meeting_id: uuid::Uuid) -> String {
        format!("{}/j/{meeting_id}", self.public_url)
    }
}

/// Builds the router with all routes and layers.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/users", post(users::create))
        .route("/meetings", post(meetings::create))
        .route("/meetings/upcoming", get(reports::upcoming))
        .route("/meetings/{id}", get(meetings::get).patch(meetings::update).delete(meetings::cancel))
        .route("/meetings/{id}/join-check", post(meetings::join_check))
        .route("/meetings/{id}/guest", post(guests::create))
        .route("/meetings/{id}/recordings", get(recordings::of_meeting))
        .route("/recordings/{id}", get(recordings::get).delete(recordings::delete))
        .route("/recordings/{id}/{*artifact}", get(recordings::artifact))
        .route("/series/{id}", get(meetings::get_series).delete(meetings::cancel_series))
        .route("/analytics/meetings", get(reports::analytics))
        .route("/notifications", get(notifications::of_meeting))
        .route("/admin/meetings/{id}/crash", post(admin::crash_meeting))
        .route("/admin/cluster", get(admin::cluster))
        .route("/admin/overview", get(dashboard::overview))
        .route("/admin/overview/stream", get(dashboard::stream))
        .route("/admin/nodes/{name}/drain", post(admin::drain));
    Router::new()
        .route("/", get(client_page))
        .route("/j/{id}", get(client_page))
        .route("/dashboard", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(admin::metrics))
        .route("/ws", get(crate::ws::upgrade))
        .nest("/api", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(close_after_unread_body))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(TraceLayer::new_for_http().make_span_with(http_span).on_response(
            |res: &axum::http::Response<_>, _: std::time::Duration, span: &tracing::Span| {
                span.record("status", res.status().as_u16());
            },
        ))
        .with_state(state)
}

/// The span of one HTTP request (`http.request`, by route template): a child of the caller's
/// trace when it sends W3C `traceparent`/`tracestate` headers. Health checks and scrapes are
/// not traced.
fn http_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
    if matches!(route, "/healthz" | "/metrics") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "http.request",
        method = %req.method(),
        route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    let carried: parley_actors::trace_context::TraceContext = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), req.headers().get(k)?.to_str().ok()?.to_owned())))
        .collect();
    parley_actors::trace_context::adopt(&span, &carried);
    parley_actors::trace_context::record_trace_id(&span);
    span
}

/// The browser client (one static page, compiled in): `GET /`, and `GET /j/{meeting_id}` (the
/// join links the API hands out) which prefills the meeting id.
const CLIENT_PAGE: &str = include_str!("../../static/index.html");

async fn client_page() -> impl IntoResponse {
    use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-cache")], CLIENT_PAGE)
}

/// 200 while the database answers (the node only listens once migrations are applied).
async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ok", "node": &*app.node_name}))).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A 413 leaves the rest of the oversized body unread on the connection, so the connection
/// cannot carry another request: tell the client to open a new one instead of reusing it.
async fn close_after_unread_body(mut resp: axum::response::Response) -> axum::response::Response {
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}
