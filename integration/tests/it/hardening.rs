//! Regressions of defects found by trying the node as a new user would and with outside bad
//! input: a panic reachable from the network, 500s from user input, an advertised media port
//! that is not the bound one, join rules that disagreed between REST and WebSocket, and one bad
//! byte that stalled a meeting's writes.

use std::time::Duration;

use parley_integration::ws::WsClient;
use parley_integration::{Backend, NodeOptions, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{assert_error, create_meeting, id_of, in_hours, meeting_body, on_both_backends};

fn code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "expected an error: {reply}");
    reply["error"]["code"].as_str().unwrap_or("")
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "expected success: {reply}");
    reply
}

#[track_caller]
fn assert_no_panic(node: &TestNode) {
    let log = node.log();
    assert!(!log.contains("panicked"), "no panic in the node log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closed_for_flooding_leaves_no_panic_behind() {
    // A slow refill (1/s) so that the 500 refusals in a row that close the socket come however
    // slowly a loaded machine reads the flood.
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite).env("PARLEY_RATE_PER_SEC", "1")).await;
    let (_, token) = node.user("flood@example.com", "Flood").await;
    let mut flooder = WsClient::connect(&node, &token).await;
    // 1,000 heartbeats in one write: past the burst, 500 refusals in a row close the socket
    // (1008), which ends the connection's writer before its reader.
    flooder.send_batch((0..1000).map(|i| json!({"id": i, "type": "heartbeat"}).to_string())).await;
    while flooder.next_frame(Duration::from_secs(10)).await.is_some() {}
    let (close, reason) = flooder.closed.clone().expect("closed with a close frame");
    assert_eq!(close, 1008, "{reason}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut other = WsClient::connect(&node, &token).await;
    assert_eq!(code(&other.request(json!({"type": "heartbeat"})).await), "not_in_meeting", "still serving");
    assert_no_panic(&node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_of_the_websocket_endpoint_is_a_json_error() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (_, token) = node.user("plain@example.com", "Plain").await;
    for auth in [None, Some(token.as_str())] {
        let r = node.call(Method::GET, "/ws", auth, None).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "upgrade_required");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_as_protocol_md_says() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (_, token) = node.user("fields@example.com", "Fields").await;
    let mut c = WsClient::connect(&node, &token).await;
    for bad in [
        json!({"type": "heartbeat", "x": 1}),
        json!({"type": "leave", "why": "bored"}),
        json!({"type": "chat", "text": "hi", "colour": "red"}),
    ] {
        let r = c.request(bad.clone()).await;
        assert_eq!(code(&r), "invalid_field", "{bad}: {r}");
    }
    assert_eq!(code(&c.request(json!({"type": "heartbeat"})).await), "not_in_meeting", "the plain one is read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_at_the_edge_and_the_meetings_writes_go_on() {
    let node = TestNode::start_with(NodeOptions::new(Backend::Postgres).with_redis()).await;
    let (_, host_token) = node.user("host@example.com", "Host").await;
    let (_, guest_token) = node.user("guest@example.com", "Guest").await;
    let r =
        node.call(Method::POST, "/api/meetings", Some(&host_token), Some(meeting_body("a\u{0}b", in_hours(1)))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    let mut body = meeting_body("NUL", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let mut host = WsClient::connect(&node, &host_token).await;
    let mut guest = WsClient::connect(&node, &guest_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    let r = guest.request(json!({"type": "join", "meeting_id": m, "display_name": "Eve\u{0}"})).await;
    assert_eq!(code(&r), "invalid_field", "{r}");
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);

    ok(&guest.request(json!({"type": "chat", "text": "before"})).await);
    let r = guest.request(json!({"type": "chat", "text": "bad\u{0}byte"})).await;
    assert_eq!(code(&r), "invalid_field", "{r}");
    assert!(r["error"]["message"].as_str().unwrap_or("").contains("NUL"), "{r}");
    let r = guest.request_msgpack(json!({"type": "chat", "text": "\u{0}"})).await;
    assert_eq!(code(&r), "invalid_field", "MessagePack too: {r}");
    for i in 0..5 {
        ok(&guest.request(json!({"type": "chat", "text": format!("after {i}")})).await);
    }
    ok(&host.request(json!({"type": "end_meeting"})).await);
    let rows = node.sql(&format!("SELECT body FROM meeting_chat_messages WHERE meeting_id = '{m}' ORDER BY seq")).await;
    let bodies: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "body").unwrap_or_default()).collect();
    assert_eq!(bodies, ["before", "after 0", "after 1", "after 2", "after 3", "after 4"]);
    let rows = node.sql(&format!("SELECT status FROM meetings WHERE id = '{m}'")).await;
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap_or_default(), "ended", "the end is stored");
    assert_no_panic(&node);
}

async fn times_the_api_cannot_give_back_are_refused_and_analytics_never_fail(backend: Backend) {
    let node = TestNode::start(backend).await;
    let (_, host) = node.user("host@example.com", "Host").await;
    let create = |body: Value| node.call(Method::POST, "/api/meetings", Some(&host), Some(body));
    let mut leap = meeting_body("Leap", in_hours(1));
    leap["scheduled_time"] = json!("2031-06-30T23:59:60Z");
    assert_error(&create(leap).await, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let mut far = meeting_body("Far", in_hours(1));
    far["scheduled_time"] = json!("9999-12-01T10:00:00Z");
    far["meeting_type"] = json!("recurring");
    far["recurrence"] = json!({"frequency": "weekly", "days": ["Mon"], "count": 50});
    let r = create(far).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(r.1["error"]["message"].as_str().unwrap_or("").contains("occurrence"), "{}", r.1);
    let mut last_minute = meeting_body("Last", in_hours(1));
    last_minute["scheduled_time"] = json!("9999-12-31T23:45:00Z");
    assert_error(&create(last_minute).await, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let id = id_of(&create_meeting(&node, &host, meeting_body("Fine", in_hours(1))).await, "meeting_id");
    let r = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{id}"),
            Some(&host),
            Some(json!({"scheduled_time": "2031-06-30T23:59:60Z"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    // A leap second already stored (written before such times were refused, or by hand):
    // analytics and the meeting's own reads still answer.
    let stored = match backend {
        Backend::Postgres => "scheduled_time = '2031-06-30 23:59:60+00'".to_owned(),
        Backend::Sqlite => {
            "scheduled_time = replace(scheduled_time, substr(scheduled_time, 12, 8), '23:59:60')".to_owned()
        }
    };
    node.exec(&format!("UPDATE meetings SET {stored} WHERE id = {}", node.id_lit(id))).await;
    let (status, v) = node.call(Method::GET, "/api/analytics/meetings?days=30", Some(&host), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = node.call(Method::GET, &format!("/api/meetings/{id}"), Some(&host), None).await;
    assert!(status == StatusCode::OK, "{status}: {v}");
    let (status, v) = node.call(Method::GET, "/api/meetings/upcoming", Some(&host), None).await;
    assert!(status == StatusCode::OK, "{status}: {v}");
}

on_both_backends!(times_the_api_cannot_give_back_are_refused_and_analytics_never_fail);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_names_the_media_port_the_node_actually_bound() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (_, host) = node.user("host@example.com", "Host").await;
    let m = id_of(&create_meeting(&node, &host, meeting_body("Media", in_hours(1))).await, "meeting_id");
    let mut c = WsClient::connect(&node, &host).await;
    let r = c.request(json!({"type": "start", "meeting_id": m})).await;
    let addr: std::net::SocketAddr =
        ok(&r)["media"]["media_addr"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{r}"));
    assert_ne!(addr.port(), 0, "{r}");
    let taken = std::net::UdpSocket::bind(addr);
    assert!(taken.is_err(), "the advertised port {addr} is bound by the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_websocket_apply_one_join_rule_and_a_host_restarts_an_ended_meeting() {
    let node = TestNode::start_with(NodeOptions::new(Backend::Postgres).with_redis()).await;
    let (_, host) = node.user("host@example.com", "Host").await;
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let (_, eve) = node.user("eve@example.com", "Eve").await;
    let mut body = meeting_body("Rules", in_hours(1));
    body["password"] = json!("pw");
    body["settings"] = json!({"waiting_room": false});
    body["participants"] = json!([{"email": "alice@example.com"}]);
    let m = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let path = format!("/api/meetings/{m}/join-check");
    let rest = |token: &str, pw: &str| {
        let (node, path, token, pw) = (&node, path.clone(), token.to_owned(), pw.to_owned());
        async move {
            let (status, v) = node.call(Method::POST, &path, Some(&token), Some(json!({"password": pw}))).await;
            if status == StatusCode::OK {
                v["status"].as_str().unwrap_or("").to_owned()
            } else {
                v["error"]["code"].as_str().unwrap_or("").to_owned()
            }
        }
    };
    let mut a = WsClient::connect(&node, &alice).await;
    let join = json!({"type": "join", "meeting_id": m, "password": "pw"});

    // Not started: the same answer both ways.
    assert_eq!(rest(&alice, "pw").await, "meeting_not_started");
    assert_eq!(code(&a.request(join.clone()).await), "meeting_not_started");
    // The host's `join` starts it, as join-check's `allowed` promised.
    assert_eq!(rest(&host, "").await, "allowed");
    let mut h = WsClient::connect(&node, &host).await;
    let r = h.request(json!({"type": "join", "meeting_id": m})).await;
    assert_eq!(ok(&r)["result"], "joined", "{r}");
    assert!(r["resume_token"].is_string(), "joined is complete: {r}");
    assert_eq!(rest(&alice, "pw").await, "allowed");
    ok(&a.request(join.clone()).await);

    // Guessing: wrong_password five times, then too_many_attempts, over either way in.
    let mut e = WsClient::connect(&node, &eve).await;
    for i in 0..3 {
        assert_eq!(
            code(&e.request(json!({"type": "join", "meeting_id": m, "password": format!("g{i}")})).await),
            "wrong_password"
        );
    }
    assert_eq!(rest(&eve, "g3").await, "wrong_password");
    assert_eq!(rest(&eve, "g4").await, "wrong_password");
    assert_eq!(code(&e.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await), "too_many_attempts");
    assert_eq!(rest(&eve, "pw").await, "too_many_attempts");

    ok(&a.request(json!({"type": "chat", "text": "first run"})).await);
    let resume = r["resume_token"].as_str().unwrap_or("").to_owned();
    ok(&h.request(json!({"type": "end_meeting"})).await);
    let mut a = WsClient::connect(&node, &alice).await;
    assert_eq!(code(&a.request(join.clone()).await), "meeting_not_available");
    assert_eq!(rest(&alice, "pw").await, "meeting_not_available");
    // A resume into the ended meeting is refused without any actor crashing on the way.
    let mut late = WsClient::connect(&node, &host).await;
    let r = late.request(json!({"type": "resume", "meeting_id": m, "resume_token": resume})).await;
    assert_eq!(code(&r), "meeting_not_available", "{r}");

    // Ended before its scheduled end: the host restarts it; chat goes on where it was.
    let mut h = WsClient::connect(&node, &host).await;
    let r = h.request(json!({"type": "start", "meeting_id": m})).await;
    assert_eq!(ok(&r)["result"], "joined", "{r}");
    assert_eq!(r["meeting"]["chat"][0]["text"], "first run", "the earlier chat is back: {r}");
    ok(&a.request(join.clone()).await);
    ok(&a.request(json!({"type": "chat", "text": "second run"})).await);
    ok(&h.request(json!({"type": "end_meeting"})).await);
    let rows = node.sql(&format!("SELECT body FROM meeting_chat_messages WHERE meeting_id = '{m}' ORDER BY seq")).await;
    let bodies: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "body").unwrap_or_default()).collect();
    assert_eq!(bodies, ["first run", "second run"], "numbered on from the first run, none lost");
    let rows = node.sql(&format!("SELECT status FROM meetings WHERE id = '{m}'")).await;
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap_or_default(), "ended");
    assert_eq!(node.count(&format!("meeting_analytics WHERE meeting_id = '{m}'")).await, 1);

    // After its scheduled end, not even the host.
    let past = node.ts_lit(chrono::Utc::now() - chrono::Duration::hours(3));
    node.exec(&format!("UPDATE meetings SET scheduled_time = {past} WHERE id = '{m}'")).await;
    let mut h = WsClient::connect(&node, &host).await;
    assert_eq!(code(&h.request(json!({"type": "start", "meeting_id": m})).await), "meeting_not_available");
    assert_eq!(rest(&host, "").await, "meeting_not_available");
    assert_no_panic(&node);
}
