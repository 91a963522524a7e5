//! Guests from a join link (`POST /api/meetings/{id}/guest`): a token without a hand-minted
//! one, that joins over the WebSocket under the meeting's own rules and that the REST API
//! refuses; bad requests get clear errors and create nothing.

use parley_integration::ws::WsClient;
use parley_integration::{Backend, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::{assert_error, create_meeting, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_token_joins_the_meeting_and_nothing_else() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let body = json!({"title": "Open house", "meeting_type": "instant", "duration_minutes": 30,
                      "settings": {"waiting_room": true}});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let path = format!("/api/meetings/{m}/guest");

    let (status, guest) = node.call(Method::POST, &path, None, Some(json!({"display_name": "  Gwen Guest "}))).await;
    assert_eq!(status, StatusCode::CREATED, "{guest}");
    assert_eq!(guest["display_name"], "Gwen Guest", "trimmed");
    assert_eq!(guest["expires_in"], 4 * 3600);
    let token = guest["token"].as_str().expect("a token").to_owned();
    let guest_id = guest["user_id"].as_str().expect("an id").to_owned();

    // Over the WebSocket it joins, under the meeting's rules: the waiting room, then admitted.
    let mut host = WsClient::connect(&node, &host_token).await;
    assert_eq!(host.request(json!({"type": "start", "meeting_id": m})).await["ok"], true);
    let mut gwen = WsClient::connect(&node, &token).await;
    let reply = gwen.request(json!({"type": "join", "meeting_id": m})).await;
    assert_eq!(reply["result"], "waiting", "{reply}");
    let waiting = host.event("waiting_room_user").await;
    assert_eq!((waiting["user_id"].as_str(), waiting["display_name"].as_str()), (Some(&*guest_id), Some("Gwen Guest")));
    assert_eq!(host.request(json!({"type": "admit", "user_id": guest_id})).await["ok"], true);
    let admitted = gwen.event("admitted").await;
    assert!(admitted["resume_token"].as_str().is_some_and(|t| !t.is_empty()), "{admitted}");

    // The REST API refuses it everywhere: no meetings of its own, nobody else's.
    let create = json!({"title": "mine", "meeting_type": "instant", "duration_minutes": 5});
    for (method, p, body) in [
        (Method::POST, "/api/meetings".to_owned(), Some(create)),
        (Method::GET, format!("/api/meetings/{m}"), None),
        (Method::GET, "/api/meetings/upcoming".to_owned(), None),
        (Method::GET, format!("/api/meetings/{m}/recordings"), None),
    ] {
        let got = node.call(method.clone(), &p, Some(&token), body).await;
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_guest_requests_get_clear_errors_and_create_no_one() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let body = json!({"title": "Soon gone", "meeting_type": "instant", "duration_minutes": 30});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let users_before = node.count("users").await;
    let guest = |id: String, body: serde_json::Value| {
        let node = &node;
        async move { node.call(Method::POST, &format!("/api/meetings/{id}/guest"), None, Some(body)).await }
    };
    assert_error(
        &guest(Uuid::new_v4().to_string(), json!({"display_name": "G"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(&guest("nope".into(), json!({"display_name": "G"})).await, StatusCode::BAD_REQUEST, "invalid_id");
    let empty = guest(m.to_string(), json!({"display_name": "   "})).await;
    assert!(
        empty.0.is_client_error() && empty.1["error"]["message"].as_str().is_some_and(|t| t.contains("display_name")),
        "{empty:?}"
    );
    let long = guest(m.to_string(), json!({"display_name": "x".repeat(101)})).await;
    assert!(long.0.is_client_error(), "{long:?}");
    let extra = guest(m.to_string(), json!({"display_name": "G", "admin": true})).await;
    assert!(extra.0.is_client_error(), "unknown fields are refused: {extra:?}");
    let (status, _) = node.call(Method::DELETE, &format!("/api/meetings/{m}"), Some(&host_token), None).await;
    assert!(status.is_success());
    assert_error(
        &guest(m.to_string(), json!({"display_name": "G"})).await,
        StatusCode::CONFLICT,
        "meeting_not_available",
    );
    assert_eq!(node.count("users").await, users_before, "no guest row was made");
}
