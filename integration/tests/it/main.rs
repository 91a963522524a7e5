//! Black-box tests of `parley node` over HTTP, against real PostgreSQL and the embedded SQLite.
//! One binary (faster to link); each test starts its own node and database.

mod bad_input;
mod browser;
mod browser_host;
mod browser_recording;
mod cdp;
mod cli;
mod cluster;
mod dashboard;
mod database_outage;
mod errors;
mod event_replay;
mod guests;
mod hardening;
mod live;
mod media;
mod meetings;
mod metrics;
mod notifications;
mod queries;
mod recording;
mod recording_failover;
mod recording_queue;
mod recurring;
mod traces;
mod users;
mod webhooks;
mod ws_abuse;

use chrono::{DateTime, Utc};
use parley_integration::{Backend, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Runs one async test body against both engines, as `<name>::postgres` and `<name>::sqlite`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(parley_integration::Backend::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(parley_integration::Backend::Sqlite).await
                }
            }
        )+
    };
}

/// A time `hours` from now, whole seconds, as RFC 3339.
pub fn in_hours(hours: i64) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::hours(hours);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Creates a meeting as `token` and returns the reply (asserting 201).
pub async fn create_meeting(node: &TestNode, token: &str, body: Value) -> Value {
    let (status, reply) = node.call(Method::POST, "/api/meetings", Some(token), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "create {body}: {reply}");
    reply
}

/// A minimal valid meeting body.
pub fn meeting_body(title: &str, at: DateTime<Utc>) -> Value {
    json!({"title": title, "scheduled_time": at.to_rfc3339(), "duration_minutes": 30, "timezone": "UTC"})
}

pub fn id_of(v: &Value, key: &str) -> Uuid {
    v[key].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Asserts an error reply's status and code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message present: {}", got.1);
}

/// Starts a node and registers a host user.
pub async fn node_with_host(backend: Backend) -> (TestNode, Uuid, String) {
    let node = TestNode::start(backend).await;
    let (id, token) = node.user("host@example.com", "Hannah Host").await;
    (node, id, token)
}
