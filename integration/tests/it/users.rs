//! `POST /api/users`: operator-only registration, duplicate emails, pending invitees.

use parley_integration::{Backend, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{assert_error, create_meeting, in_hours, meeting_body, on_both_backends};

on_both_backends!(admin_registers_users_and_duplicates_conflict);

async fn admin_registers_users_and_duplicates_conflict(backend: Backend) {
    let node = TestNode::start(backend).await;
    let admin = node.admin_token();
    let (status, body) = node
        .call(
            Method::POST,
            "/api/users",
            Some(&admin),
            Some(json!({"email": " Alice@Example.COM ", "display_name": "Alice", "plan": "pro"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "alice@example.com", "emails are normalised");
    assert_eq!(body["plan"], "pro");
    assert_eq!(body["status"], "active");
    assert_eq!(node.count("users").await, 1);

    let dup = node
        .call(
            Method::POST,
            "/api/users",
            Some(&admin),
            Some(json!({"email": "alice@example.com", "display_name": "Other"})),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "conflict");
    assert_eq!(node.count("users").await, 1, "the duplicate wrote nothing");

    // Only operators register users; identity comes from the token.
    let user_token = node.token(body["user_id"].as_str().unwrap(), false);
    let r = node
        .call(
            Method::POST,
            "/api/users",
            Some(&user_token),
            Some(json!({"email": "b@example.com", "display_name": "B"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r =
        node.call(Method::POST, "/api/users", None, Some(json!({"email": "b@example.com", "display_name": "B"}))).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");

    for bad in [
        json!({"email": "not-an-email", "display_name": "B"}),
        json!({"email": "b@example.com", "display_name": "   "}),
        json!({"email": "b@example.com", "display_name": "B", "plan": "platinum"}),
        json!({"email": "b@example.com", "display_name": "B", "admin": true}),
        json!({"email": 42, "display_name": "B"}),
        json!({"display_name": "B"}),
    ] {
        let r = node.call(Method::POST, "/api/users", Some(&admin), Some(bad.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    }
    assert_eq!(node.count("users").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_invitee_keeps_its_invitations_when_registered() {
    let node = TestNode::start(Backend::Postgres).await;
    let (_, host) = node.user("host@example.com", "Host").await;
    let mut body = meeting_body("Planning", in_hours(5));
    body["participants"] = json!([{"email": "newbie@example.com", "role": "panelist"}]);
    let m = create_meeting(&node, &host, body).await;
    let pending = m["participants"][1].clone();
    assert_eq!(pending["email"], "newbie@example.com");
    assert_eq!(node.count("users WHERE status = 'pending'").await, 1);

    let (status, user) = node
        .call(
            Method::POST,
            "/api/users",
            Some(&node.admin_token()),
            Some(json!({"email": "NEWBIE@example.com", "display_name": "New Bie"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["user_id"], pending["user_id"], "same account, promoted");
    assert_eq!(user["status"], "active");
    let token = node.token(user["user_id"].as_str().unwrap(), false);
    let (_, upcoming) = node.call(Method::GET, "/api/meetings/upcoming", Some(&token), None).await;
    assert_eq!(upcoming["meetings"][0]["role"], "panelist");
}
