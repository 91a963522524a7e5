//! Hostile clients on `/ws`: fuzzed frames, floods, oversized messages, bad tokens. The node
//! never panics, answers or closes with a reason, and keeps serving everybody else.

use std::time::Duration;

use parley_integration::ws::WsClient;
use parley_integration::{Backend, NodeOptions, TestNode};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{create_meeting, id_of, in_hours, meeting_body};

/// Frames of every malformed kind, reproducible from `seed`.
fn malformed_frames(seed: u64, n: usize) -> Vec<(bool, Vec<u8>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let valid_json = json!({"id": 9, "type": "chat", "text": "hi", "to": null}).to_string();
    let valid_pack = rmp_serde::to_vec_named(&json!({"id": 9, "type": "mute", "muted": true})).unwrap();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let frame = match i % 10 {
            // Random bytes, as text (lossy UTF-8) and as binary.
            0 => (
                true,
                String::from_utf8_lossy(&(0..rng.random_range(1..200)).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
                    .into_owned()
                    .into_bytes(),
            ),
            1 => (false, (0..rng.random_range(1..300)).map(|_| rng.random::<u8>()).collect()),
            // Truncated JSON and MessagePack.
            2 => (true, valid_json.as_bytes()[..rng.random_range(1..valid_json.len())].to_vec()),
            3 => (false, valid_pack[..rng.random_range(1..valid_pack.len())].to_vec()),
            // Wrong types for known fields.
            4 => (true, json!({"id": i, "type": "mute", "muted": ["not", "a", "bool"]}).to_string().into_bytes()),
            5 => (true, json!({"id": i, "type": "breakout_join", "room": -7}).to_string().into_bytes()),
            // Huge numbers where ids and counts go.
            6 => (
                true,
                format!("{{\"id\": 1{}, \"type\": \"heartbeat\"}}", "0".repeat(rng.random_range(20..400))).into_bytes(),
            ),
            7 => (true, json!({"id": i, "type": "breakouts_create", "count": u64::MAX}).to_string().into_bytes()),
            // Unknown types and deep nesting.
            8 => (true, json!({"id": i, "type": format!("t{}", rng.random::<u32>())}).to_string().into_bytes()),
            _ => (
                true,
                format!("{}{}", "[".repeat(rng.random_range(1..2000)), "]".repeat(rng.random_range(0..3))).into_bytes(),
            ),
        };
        out.push(frame);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_frames_are_answered_and_the_node_keeps_serving() {
    let node = TestNode::start(Backend::Postgres).await;
    let (_, host_token) = node.user("host@example.com", "Host").await;
    let (_, other_token) = node.user("other@example.com", "Other").await;
    let mut body = meeting_body("Fuzz", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let mut bystander = WsClient::connect(&node, &other_token).await;
    let mut host = WsClient::connect(&node, &host_token).await;
    assert_eq!(host.request(json!({"type": "start", "meeting_id": m})).await["ok"], true);
    assert_eq!(bystander.request(json!({"type": "join", "meeting_id": m})).await["ok"], true);

    let frames = malformed_frames(0x5eed, 240);
    let mut answered = 0;
    let mut fuzzer = WsClient::connect(&node, &host_token).await;
    for (i, (text, bytes)) in frames.into_iter().enumerate() {
        if fuzzer.closed.is_some() {
            // Closed with a reason: reconnect and go on.
            let (code, reason) = fuzzer.closed.clone().unwrap();
            assert!(!reason.is_empty() || code == 1000, "close without a reason after frame {i}: {code}");
            fuzzer = WsClient::connect(&node, &host_token).await;
        }
        if text {
            match String::from_utf8(bytes) {
                Ok(s) => fuzzer.send_text(s).await,
                Err(e) => fuzzer.send_binary(e.into_bytes()).await,
            }
        } else {
            fuzzer.send_binary(bytes).await;
        }
        match fuzzer.next_frame(Duration::from_secs(5)).await {
            Some(reply) => {
                assert_eq!(reply["ok"], false, "frame {i} is malformed, yet: {reply}");
                assert!(reply["error"]["code"].is_string(), "frame {i}: {reply}");
                answered += 1;
            }
            None => assert!(fuzzer.closed.is_some(), "frame {i}: neither answered nor closed with a reason"),
        }
    }
    assert!(answered >= 200, "most malformed frames get an error reply ({answered})");

    // Everybody else is still served, and the process is alive.
    assert_eq!(bystander.request(json!({"type": "chat", "text": "still here?"})).await["ok"], true);
    assert_eq!(host.event("chat").await["message"]["text"], "still here?");
    assert!(!node.log().contains("panicked"), "no panic in the node log:\n{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_huge_messages_close_with_a_reason() {
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite)).await;
    let (_, token) = node.user("flood@example.com", "Flood").await;
    let mut c = WsClient::connect(&node, &token).await;
    for i in 0..300 {
        c.send_text(json!({"id": i, "type": "heartbeat"}).to_string()).await;
    }
    let mut limited = 0;
    for _ in 0..300 {
        let r: Value = c.next_frame(Duration::from_secs(5)).await.expect("every frame is answered");
        if r["error"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited > 100, "a burst of 300 is mostly rate-limited ({limited})");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c.request(json!({"type": "heartbeat"})).await;
    assert_eq!(r["error"]["code"], "not_in_meeting", "after the burst the connection works normally: {r}");

    // Over the 1 MiB message cap: closed with code 1009 and a reason.
    c.send_text("x".repeat(2 * 1024 * 1024)).await;
    assert!(c.next_frame(Duration::from_secs(5)).await.is_none());
    let (code, reason) = c.closed.clone().expect("closed");
    assert_eq!(code, 1009, "{reason}");
    assert!(!reason.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_need_a_valid_user_token() {
    let node = TestNode::start(Backend::Sqlite).await;
    let ws = node.base.replacen("http://", "ws://", 1);
    for (q, status) in [
        ("?token=garbage", StatusCode::UNAUTHORIZED),
        (&format!("?token={}", node.admin_token()), StatusCode::UNAUTHORIZED),
        (&format!("?token={}", node.token(&uuid::Uuid::new_v4().to_string(), false)), StatusCode::FORBIDDEN),
    ] {
        let err = tokio_tungstenite::connect_async(format!("{ws}/ws{q}")).await.expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status().as_u16(), status.as_u16(), "{q}")
            }
            other => panic!("{q}: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_token_authenticates_with_its_first_frame() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (_, token) = node.user("first@example.com", "First").await;

    let mut c = WsClient::connect_anonymous(&node).await;
    let r = c.request(json!({"type": "auth", "token": token})).await;
    assert_eq!((r["ok"].as_bool(), r["result"].as_str()), (Some(true), Some("done")), "{r}");
    assert_eq!(
        c.request(json!({"type": "heartbeat"})).await["error"]["code"],
        "not_in_meeting",
        "authenticated and served"
    );
    assert_eq!(c.request(json!({"type": "auth", "token": token})).await["error"]["code"], "invalid_field", "only once");

    let mut c = WsClient::connect_anonymous(&node).await;
    let r = c.request_msgpack(json!({"type": "auth", "token": token})).await;
    assert_eq!(r["ok"], true, "MessagePack auth: {r}");

    for first in [
        json!({"type": "heartbeat"}),
        json!({"type": "auth", "token": "forged"}),
        json!({"type": "auth", "token": node.admin_token()}),
    ] {
        let mut c = WsClient::connect_anonymous(&node).await;
        let r = c.request(first.clone()).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{first}: {r}");
        assert!(c.next_frame(Duration::from_secs(5)).await.is_none());
        let (code, reason) = c.closed.clone().expect("closed after a failed auth");
        assert_eq!(code, 4401, "{reason}");
        assert!(!reason.is_empty());
    }
}
