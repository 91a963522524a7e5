//! Live meetings over real WebSockets against a node with real PostgreSQL and real Redis:
//! the seed's flows (start, waiting room, admit, mute, chat, screen share, breakouts, end) with
//! Redis keys and PostgreSQL rows asserted directly.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use parley_integration::ws::WsClient;
use parley_integration::{Backend, NodeOptions, TestNode, eventually, redis_client};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{create_meeting, id_of, in_hours, meeting_body};

fn key(meeting: Uuid, rest: &str) -> String {
    format!("meeting:{{{meeting}}}:{rest}")
}

async fn live_node(extra: &[(&str, &str)]) -> TestNode {
    let mut opts = NodeOptions::new(Backend::Postgres).with_redis();
    for (k, v) in extra {
        opts = opts.env(k, *v);
    }
    TestNode::start_with(opts).await
}

/// A node, a host and a meeting (waiting room on, password `pw`) with Alice invited.
async fn setup(settings: Value) -> (TestNode, Uuid, String, String, Uuid) {
    let node = live_node(&[]).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    let (alice_id, alice) = node.user("alice@example.com", "Alice").await;
    let mut body = meeting_body("Live", in_hours(1));
    body["password"] = json!("pw");
    body["settings"] = settings;
    body["participants"] = json!([{"email": "alice@example.com"}]);
    let m = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    (node, m, host, alice, alice_id)
}

/// A started meeting (no waiting room) with its host and one guest connected and in.
struct InProgress {
    m: Uuid,
    host: WsClient,
    guest: WsClient,
    guest_id: Uuid,
    guest_token: String,
}

async fn in_progress(node: &TestNode, title: &str) -> InProgress {
    let (_, host_token) = node.user("host@example.com", "Host").await;
    let (guest_id, guest_token) = node.user("guest@example.com", "Guest").await;
    let mut body = meeting_body(title, in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let m = id_of(&create_meeting(node, &host_token, body).await, "meeting_id");
    let mut host = WsClient::connect(node, &host_token).await;
    let mut guest = WsClient::connect(node, &guest_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);
    InProgress { m, host, guest, guest_id, guest_token }
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "expected success: {reply}");
    reply
}

fn err_code(reply: &Value) -> String {
    assert_eq!(reply["ok"], false, "expected an error: {reply}");
    reply["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_waiting_room_admit_mute_chat_share_and_end() {
    let (node, m, host_token, alice_token, alice_id) =
        setup(json!({"waiting_room": true, "screen_share": "all"})).await;
    let redis = redis_client().await;
    let mut host = WsClient::connect(&node, &host_token).await;
    let mut alice = WsClient::connect(&node, &alice_token).await;

    // Nobody joins before the host starts.
    let r = alice.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await;
    assert_eq!(err_code(&r), "meeting_not_started");
    assert_eq!(err_code(&alice.request(json!({"type": "start", "meeting_id": m})).await), "forbidden");

    let r = host.request(json!({"type": "start", "meeting_id": m, "display_name": " "})).await;
    assert_eq!(err_code(&r), "invalid_field", "a blank name is refused: {r}");
    let r = host.request(json!({"type": "start", "meeting_id": m, "display_name": "Hostess"})).await;
    assert_eq!(ok(&r)["result"], "joined", "{r}");
    assert_eq!(r["you"]["role"], "host");
    assert_eq!(r["you"]["display_name"], "Hostess", "start takes a display name as join does");
    let rows = node.sql(&format!("SELECT status, assigned_node FROM meetings WHERE id = '{m}'")).await;
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap(), "active");
    let media: String = redis.get(key(m, "media_server")).await.unwrap();
    assert_eq!(media, "standalone/1", "owner and its fencing epoch");

    // Password, then the waiting room.
    assert_eq!(
        err_code(&alice.request(json!({"type": "join", "meeting_id": m, "password": "nope"})).await),
        "wrong_password"
    );
    let r = alice.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await;
    assert_eq!((ok(&r)["result"].as_str(), r["position"].as_u64()), (Some("waiting"), Some(1)));
    let e = host.event("waiting_room_user").await;
    assert_eq!(
        (e["user_id"].as_str(), e["meeting_id"].as_str()),
        (Some(alice_id.to_string().as_str()), Some(m.to_string().as_str()))
    );
    let waiting: Vec<String> = redis.lrange(key(m, "waiting_room"), 0, -1).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].contains(&alice_id.to_string()));
    assert_eq!(err_code(&alice.request(json!({"type": "raise_hand"})).await), "not_in_meeting");

    ok(&host.request(json!({"type": "admit", "user_id": alice_id})).await);
    let admitted = alice.event("admitted").await;
    assert_eq!(admitted["meeting"]["participants"].as_array().unwrap().len(), 2, "{admitted}");
    assert!(admitted["media"]["media_addr"].is_string(), "the admitted user learns the media node: {admitted}");
    let joined = host.event("participant_joined").await;
    assert_eq!(joined["participant"]["display_name"], "Alice");
    let members: Vec<String> = redis.smembers(key(m, "participants")).await.unwrap();
    assert_eq!(members.len(), 2);
    let waiting: Vec<String> = redis.lrange(key(m, "waiting_room"), 0, -1).await.unwrap();
    assert!(waiting.is_empty());
    let h: HashMap<String, String> = redis.hgetall(key(m, &format!("user:{alice_id}"))).await.unwrap();
    for field in ["connection_id", "audio", "video", "screen_share", "hand", "joined_at", "last_heartbeat"] {
        assert!(h.contains_key(field), "{field} in {h:?}");
    }
    assert_eq!(h["audio"], "true");
    let ttl: i64 = redis.pttl(key(m, &format!("user:{alice_id}"))).await.unwrap();
    assert!(ttl > 0, "participant hash has a TTL");

    // Host mutes Alice; only Alice can unmute herself.
    ok(&host.request(json!({"type": "mute_participant", "user_id": alice_id})).await);
    let e = alice.event("muted").await;
    assert_eq!((e["muted"].as_bool(), e["user_id"].as_str()), (Some(true), Some(alice_id.to_string().as_str())));
    let h: HashMap<String, String> = redis.hgetall(key(m, &format!("user:{alice_id}"))).await.unwrap();
    assert_eq!(h["audio"], "false");
    assert_eq!(err_code(&alice.request(json!({"type": "mute_participant", "user_id": alice_id})).await), "forbidden");
    ok(&host.request(json!({"type": "ask_unmute", "user_id": alice_id})).await);
    alice.event("asked_to_unmute").await;
    ok(&alice.request(json!({"type": "mute", "muted": false})).await);
    host.event("muted").await;

    // Chat reaches the host and is kept.
    let r = alice.request(json!({"type": "chat", "text": "hello everyone"})).await;
    assert_eq!(ok(&r)["result"], "chat_sent");
    let e = host.event("chat").await;
    assert_eq!(e["message"]["text"], "hello everyone");
    assert_eq!(node.count(&format!("meeting_chat_messages WHERE meeting_id = '{m}'")).await, 1);

    // Screen share: one at a time.
    ok(&alice.request(json!({"type": "screen_share_start"})).await);
    host.event("screen_share_started").await;
    assert_eq!(err_code(&host.request(json!({"type": "screen_share_start"})).await), "screen_share_busy");
    let h: HashMap<String, String> = redis.hgetall(key(m, &format!("user:{alice_id}"))).await.unwrap();
    assert_eq!(h["screen_share"], "true");
    ok(&alice.request(json!({"type": "screen_share_stop"})).await);
    host.event("screen_share_stopped").await;

    ok(&alice.request(json!({"type": "raise_hand"})).await);
    host.event("hand_raised").await;

    // Only the host ends it; everyone hears; PostgreSQL and Redis are settled.
    assert_eq!(err_code(&alice.request(json!({"type": "end_meeting"})).await), "forbidden");
    ok(&host.request(json!({"type": "end_meeting"})).await);
    let e = alice.event("meeting_ended").await;
    assert_eq!(e["reason"], "host_ended");
    let rows =
        node.sql(&format!("SELECT status, ended_at, actual_duration_seconds FROM meetings WHERE id = '{m}'")).await;
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap(), "ended");
    assert!(rows[0].try_get::<Option<i64>>("", "actual_duration_seconds").unwrap().is_some());
    let rows = node
        .sql(&format!("SELECT total_participants, peak_participants FROM meeting_analytics WHERE meeting_id = '{m}'"))
        .await;
    assert_eq!(rows.len(), 1, "analytics row written");
    assert_eq!(rows[0].try_get::<i32>("", "total_participants").unwrap(), 2);
    assert_eq!(rows[0].try_get::<i32>("", "peak_participants").unwrap(), 2);
    let n: i64 = redis
        .exists(vec![
            key(m, "participants"),
            key(m, "waiting_room"),
            key(m, "media_server"),
            key(m, &format!("user:{alice_id}")),
        ])
        .await
        .unwrap();
    assert_eq!(n, 0, "Redis keys deleted");
    assert_eq!(err_code(&alice.request(json!({"type": "chat", "text": "anyone?"})).await), "not_in_meeting");
    let r = alice.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await;
    assert_eq!(err_code(&r), "meeting_not_available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakout_rooms_round_trip_and_removal() {
    let (node, m, host_token, alice_token, alice_id) = setup(json!({"waiting_room": false})).await;
    let (bob_id, bob_token) = node.user("bob@example.com", "Bob").await;
    let mut host = WsClient::connect(&node, &host_token).await;
    let mut alice = WsClient::connect(&node, &alice_token).await;
    let mut bob = WsClient::connect(&node, &bob_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    assert_eq!(
        ok(&alice.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await)["result"],
        "joined"
    );
    ok(&bob.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await);

    let assignments = json!({alice_id.to_string(): 1, bob_id.to_string(): 2});
    assert_eq!(err_code(&alice.request(json!({"type": "breakouts_create", "count": 2})).await), "forbidden");
    ok(&host.request(json!({"type": "breakouts_create", "assignments": assignments})).await);
    ok(&host.request(json!({"type": "breakouts_open"})).await);
    alice.event("breakouts_opened").await;
    // Chat stays in the room: Bob (room 2) does not hear Alice (room 1).
    ok(&alice.request(json!({"type": "chat", "text": "room one only"})).await);
    assert!(bob.try_event("chat", Duration::from_millis(500)).await.is_none());
    ok(&bob.request(json!({"type": "breakout_join", "room": 1})).await);
    ok(&alice.request(json!({"type": "chat", "text": "now together"})).await);
    assert_eq!(bob.event("chat").await["message"]["text"], "now together");
    ok(&host.request(json!({"type": "breakouts_broadcast", "text": "one minute"})).await);
    assert_eq!(bob.event("breakouts_broadcast").await["text"], "one minute");
    ok(&host.request(json!({"type": "breakouts_close"})).await);
    alice.event("breakouts_closed").await;

    // Removal: Bob is out and cannot come back.
    ok(&host.request(json!({"type": "remove", "user_id": bob_id})).await);
    bob.event("removed").await;
    let left = alice.event("participant_left").await;
    assert_eq!(left["reason"], "removed");
    let r = bob.request(json!({"type": "join", "meeting_id": m, "password": "pw"})).await;
    assert_eq!(err_code(&r), "removed_from_meeting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_participants_time_out_and_the_last_one_out_ends_the_meeting() {
    let node = live_node(&[
        ("PARLEY_HEARTBEAT_TTL_MS", "1500"),
        ("PARLEY_SWEEP_INTERVAL_MS", "200"),
        ("PARLEY_EMPTY_GRACE_MS", "1500"),
    ])
    .await;
    let redis = redis_client().await;
    let InProgress { m, mut host, guest: mut carl, guest_id: carl_id, .. } = in_progress(&node, "Heartbeats").await;

    // The host heartbeats, Carl stays silent (his socket stays open).
    let mut left = None;
    for _ in 0..20 {
        ok(&host.request(json!({"type": "heartbeat"})).await);
        if let Some(e) = host.try_event("participant_left", Duration::from_millis(400)).await {
            left = Some(e);
            break;
        }
    }
    let left = left.expect("Carl timed out");
    assert_eq!(
        (left["user_id"].as_str(), left["reason"].as_str()),
        (Some(carl_id.to_string().as_str()), Some("timeout"))
    );
    let members: Vec<String> = redis.smembers(key(m, "participants")).await.unwrap();
    assert_eq!(members.len(), 1, "Carl is gone from the participants set");
    assert_eq!(err_code(&carl.request(json!({"type": "chat", "text": "hello?"})).await), "not_in_meeting");

    // The host leaves; after the grace period the meeting ends by itself.
    ok(&host.request(json!({"type": "leave"})).await);
    let ended = parley_integration::eventually(Duration::from_secs(10), || async {
        node.count(&format!("meetings WHERE id = '{m}' AND status = 'ended'")).await == 1
    })
    .await;
    assert!(ended, "the empty meeting ended:\n{}", node.log());
    assert_eq!(node.count(&format!("meeting_analytics WHERE meeting_id = '{m}'")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_replies_and_the_connection_stays_up() {
    let (node, m, host_token, _, _) = setup(json!({"waiting_room": false})).await;
    let mut c = WsClient::connect(&node, &host_token).await;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "malformed_frame"),
        ("[1,2,3]".into(), "malformed_frame"),
        (json!({"type": "leave"}).to_string(), "invalid_id"),
        (json!({"id": 1, "type": "teleport"}).to_string(), "unknown_type"),
        (json!({"id": 2, "type": "join"}).to_string(), "invalid_field"),
        (json!({"id": 3, "type": "mute", "muted": "loud"}).to_string(), "invalid_field"),
        (json!({"id": 4, "type": "chat", "text": "x".repeat(4097)}).to_string(), "text_too_long"),
        (json!({"id": 5, "type": "chat", "text": "y".repeat(70_000)}).to_string(), "frame_too_large"),
        (json!({"id": 6, "type": "raise_hand"}).to_string(), "not_in_meeting"),
        (json!({"id": 7, "type": "join", "meeting_id": Uuid::new_v4()}).to_string(), "meeting_not_found"),
    ];
    for (frame, code) in cases {
        c.send_text(frame.clone()).await;
        let r = c
            .next_frame(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no answer to {}", &frame[..frame.len().min(60)]));
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], code, "frame {}: {r}", &frame[..frame.len().min(60)]);
    }
    // MessagePack in, MessagePack out.
    let r = c.request_msgpack(json!({"type": "start", "meeting_id": m})).await;
    assert_eq!(r["result"], "joined");
    c.send_binary(vec![0xc1, 0x00, 0xff]).await;
    let r = c.next_frame(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r["error"]["code"], "malformed_frame");
    // Still up and serving.
    assert_eq!(c.request(json!({"type": "heartbeat"})).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_meeting_actor_comes_back_with_its_state() {
    let node = live_node(&[("PARLEY_FAULT_INJECTION", "1")]).await;
    let (_, host_token) = node.user("host@example.com", "Host").await;
    let (alice_id, alice_token) = node.user("alice@example.com", "Alice").await;
    let (bob_id, bob_token) = node.user("bob@example.com", "Bob").await;
    let (carol_id, carol_token) = node.user("carol@example.com", "Carol").await;
    let mut body = meeting_body("Resilient", in_hours(1));
    body["participants"] = json!([{"email": "alice@example.com", "role": "co_host"}]);
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let mut host = WsClient::connect(&node, &host_token).await;
    let mut alice = WsClient::connect(&node, &alice_token).await;
    let mut bob = WsClient::connect(&node, &bob_token).await;
    let mut carol = WsClient::connect(&node, &carol_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    assert_eq!(
        ok(&alice.request(json!({"type": "join", "meeting_id": m})).await)["result"],
        "joined",
        "co-hosts skip the waiting room"
    );
    assert_eq!(ok(&bob.request(json!({"type": "join", "meeting_id": m})).await)["position"], 1);
    assert_eq!(ok(&carol.request(json!({"type": "join", "meeting_id": m})).await)["position"], 2);
    ok(&alice.request(json!({"type": "raise_hand"})).await);
    ok(&alice.request(json!({"type": "chat", "text": "before the crash"})).await);
    ok(&host.request(json!({"type": "lock", "locked": true})).await);

    let admin = node.admin_token();
    let (status, body) =
        node.call(reqwest::Method::POST, &format!("/api/admin/meetings/{m}/crash"), Some(&admin), None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let back = parley_integration::eventually(Duration::from_secs(10), || async {
        node.log().contains("meeting re-activated from saved state")
    })
    .await;
    assert!(back, "the supervisor restarted the meeting:\n{}", node.log());

    // Waiting-room order survived: admitting the next one admits Bob, who is told on his open socket.
    ok(&host.request(json!({"type": "admit", "user_id": bob_id})).await);
    let admitted = bob.event("admitted").await;
    let snapshot = &admitted["meeting"];
    assert_eq!(snapshot["locked"], true, "the lock survived");
    assert!(
        snapshot["chat"].as_array().unwrap().iter().any(|c| c["text"] == "before the crash"),
        "chat survived: {snapshot}"
    );
    let alice_view =
        snapshot["participants"].as_array().unwrap().iter().find(|p| p["user_id"] == json!(alice_id)).cloned().unwrap();
    assert_eq!((alice_view["role"].as_str(), alice_view["hand_raised"].as_bool()), (Some("co_host"), Some(true)));
    // Alice is still a co-host to the rules, and her connection was re-attached: she hears Carol wait.
    ok(&alice.request(json!({"type": "admit", "user_id": carol_id})).await);
    carol.event("admitted").await;
    ok(&carol.request(json!({"type": "chat", "text": "after the crash"})).await);
    assert_eq!(alice.event("chat").await["message"]["text"], "before the crash");
    assert_eq!(alice.event("chat").await["message"]["text"], "after the crash");
    assert_eq!(
        node.count(&format!("meeting_chat_messages WHERE meeting_id = '{m}'")).await,
        2,
        "numbering continued, nothing overwritten"
    );
    assert_eq!(node.count(&format!("meetings WHERE id = '{m}' AND status = 'active'")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_off_by_default() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (status, _) = node
        .call(
            reqwest::Method::POST,
            &format!("/api/admin/meetings/{}/crash", Uuid::new_v4()),
            Some(&node.admin_token()),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_runs_live_meetings_without_redis() {
    // What `make run` gives: SQLite and in-process presence.
    let node = TestNode::start(Backend::Sqlite).await;
    assert!(node.log().contains("presence=\"in-process\""), "{}", node.log());
    let (_, host_token) = node.user("host@example.com", "Host").await;
    let (_, guest_token) = node.user("guest@example.com", "Guest").await;
    let mut body = meeting_body("Embedded", in_hours(1));
    body["settings"] = json!({"waiting_room": false, "mute_on_entry": true});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let mut host = WsClient::connect(&node, &host_token).await;
    let mut guest = WsClient::connect(&node, &guest_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    let r = guest.request_msgpack(json!({"type": "join", "meeting_id": m})).await;
    assert_eq!(r["you"]["audio_muted"], true, "mute on entry: {r}");
    assert_eq!(host.event("participant_joined").await["participant"]["display_name"], "Guest");
    ok(&guest.request(json!({"type": "chat", "text": "hi from sqlite"})).await);
    assert_eq!(host.event("chat").await["message"]["text"], "hi from sqlite");
    ok(&host.request(json!({"type": "end_meeting"})).await);
    guest.event("meeting_ended").await;
    assert_eq!(node.count("meetings WHERE status = 'ended'").await, 1);
    assert_eq!(node.count("meeting_analytics").await, 1);
    assert_eq!(node.count("meeting_chat_messages").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_and_restart_lose_nobody() {
    let redis_server = parley_integration::ThrowawayRedis::start_new();
    let opts = NodeOptions::new(Backend::Postgres)
        .env("PARLEY_REDIS_URL", redis_server.url())
        .env("PARLEY_HEARTBEAT_TTL_MS", "4000")
        .env("PARLEY_SWEEP_INTERVAL_MS", "250");
    let node = TestNode::start_with(opts).await;
    let InProgress { m, mut host, mut guest, guest_id, .. } = in_progress(&node, "Outage").await;
    let redis_errors =
        |text: &str| parley_integration::metric_sum(text, "parley_presence_call_errors_total", &[("backend", "redis")]);
    let before = node.metrics().await;
    let redis_calls = |text: &str| {
        parley_integration::metric_sum(text, "parley_presence_call_duration_seconds_count", &[("backend", "redis")])
    };
    assert!(redis_calls(&before) > 0.0, "Redis calls are timed:\n{before}");
    assert_eq!(redis_errors(&before), 0.0, "no Redis error yet:\n{before}");

    // Redis goes away: the meeting goes on (events, replies, chat kept in PostgreSQL).
    redis_server.stop();
    let started = std::time::Instant::now();
    ok(&guest.request(json!({"type": "chat", "text": "is Redis down?"})).await);
    assert_eq!(host.event("chat").await["message"]["text"], "is Redis down?");
    assert!(started.elapsed() < Duration::from_secs(3), "no long stall while Redis is down: {:?}", started.elapsed());
    for _ in 0..6 {
        ok(&host.request(json!({"type": "heartbeat"})).await);
        ok(&guest.request(json!({"type": "heartbeat"})).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let during = node.metrics().await;
    assert!(redis_errors(&during) > 0.0, "the failed Redis calls are counted:\n{during}");

    // Redis comes back empty: presence is repaired, nobody was evicted.
    redis_server.start();
    let c = {
        let c = Builder::from_config(Config::from_url(&redis_server.url()).unwrap()).build().unwrap();
        c.init().await.unwrap();
        c
    };
    let mut repaired = false;
    for _ in 0..40 {
        ok(&host.request(json!({"type": "heartbeat"})).await);
        ok(&guest.request(json!({"type": "heartbeat"})).await);
        let members: Vec<String> = c.smembers(key(m, "participants")).await.unwrap_or_default();
        let media: Option<String> = c.get(key(m, "media_server")).await.unwrap_or(None);
        if members.len() == 2 && media.is_some() {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(repaired, "presence rewritten after the restart:\n{}", node.log());
    let h: HashMap<String, String> = c.hgetall(key(m, &format!("user:{guest_id}"))).await.unwrap();
    assert_eq!(h["display_name"], "Guest");
    assert!(host.try_event("participant_left", Duration::from_millis(300)).await.is_none(), "nobody was evicted");
    assert_eq!(node.count(&format!("meeting_chat_messages WHERE meeting_id = '{m}'")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_keeps_live_meetings_running() {
    let pg = parley_integration::ThrowawayPostgres::start_new();
    let opts = NodeOptions::new(Backend::Postgres).with_redis();
    let mut opts = opts;
    opts.database_url = Some(pg.url("postgres"));
    let node = TestNode::start_with(opts).await;
    let InProgress { m, mut host, mut guest, .. } = in_progress(&node, "Database outage").await;
    let (_, late_token) = node.user("late@example.com", "Late").await;
    let mut late = WsClient::connect(&node, &late_token).await;

    pg.stop();
    // The live meeting goes on: state changes and chat reach everyone.
    ok(&guest.request(json!({"type": "raise_hand"})).await);
    host.event("hand_raised").await;
    ok(&guest.request(json!({"type": "chat", "text": "database is down"})).await);
    assert_eq!(host.event("chat").await["message"]["text"], "database is down");
    // A join needs the database (meeting status, password): a clear, retryable error.
    let r = late.request(json!({"type": "join", "meeting_id": m})).await;
    assert_eq!(err_code(&r), "unavailable", "{r}");
    let text = node.metrics().await;
    let failed = parley_integration::metric_sum(&text, "parley_db_call_errors_total", &[("op", "join_facts")]);
    assert!(failed >= 1.0, "the join's failed database call is counted:\n{text}");

    pg.start();
    let mut joined = false;
    for _ in 0..40 {
        let r = late.request(json!({"type": "join", "meeting_id": m})).await;
        if r["ok"] == true {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(joined, "joins work again once PostgreSQL is back:\n{}", node.log());
    ok(&host.request(json!({"type": "end_meeting"})).await);
    assert_eq!(node.count(&format!("meetings WHERE id = '{m}' AND status = 'ended'")).await, 1, "the end is persisted");
    assert_eq!(node.count(&format!("meeting_analytics WHERE meeting_id = '{m}'")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_ended_while_postgres_is_down_is_stored_as_ended_once_it_is_back() {
    let pg = parley_integration::ThrowawayPostgres::start_new();
    let mut opts = NodeOptions::new(Backend::Postgres).with_redis();
    opts.database_url = Some(pg.url("postgres"));
    let node = TestNode::start_with(opts).await;
    let InProgress { m, mut host, mut guest, .. } = in_progress(&node, "Ends during an outage").await;

    pg.stop();
    ok(&guest.request(json!({"type": "chat", "text": "last words"})).await);
    ok(&host.request(json!({"type": "end_meeting"})).await);
    assert_eq!(guest.event("meeting_ended").await["event"], "meeting_ended", "everyone hears at once");

    // The chat and the end wait in the background and land, in order, once PostgreSQL is back.
    pg.start();
    let ended = eventually(Duration::from_secs(30), || async {
        node.count(&format!("meetings WHERE id = '{m}' AND status = 'ended'")).await == 1
    })
    .await;
    assert!(ended, "the end was never stored:\n{}", node.log());
    assert_eq!(node.count(&format!("meeting_analytics WHERE meeting_id = '{m}'")).await, 1);
    assert_eq!(node.count(&format!("meeting_chat_messages WHERE meeting_id = '{m}'")).await, 1, "chat stored first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_connection_actor_closes_its_socket_and_leaves_the_meeting_alone() {
    let node = live_node(&[("PARLEY_FAULT_INJECTION", "1")]).await;
    let InProgress { m, mut host, mut guest, guest_id, guest_token } = in_progress(&node, "Connection crash").await;

    let path = format!("/api/admin/meetings/{m}/crash?participant={guest_id}");
    let (status, body) = node.call(reqwest::Method::POST, &path, Some(&node.admin_token()), None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // The guest's socket is closed with a reason instead of going silent.
    let mut closed = None;
    for _ in 0..50 {
        if guest.next_frame(Duration::from_millis(200)).await.is_none() && guest.closed.is_some() {
            closed = guest.closed.clone();
            break;
        }
    }
    let (code, reason) = closed.expect("the guest's socket was closed");
    assert_eq!(code, 1011, "{reason}");

    // The meeting did not notice: the host goes on, and the guest comes back on a new socket.
    ok(&host.request(json!({"type": "chat", "text": "still running"})).await);
    let mut again = WsClient::connect(&node, &guest_token).await;
    assert_eq!(ok(&again.request(json!({"type": "join", "meeting_id": m})).await)["result"], "joined");
    ok(&again.request(json!({"type": "chat", "text": "back"})).await);
    assert_eq!(host.event("chat").await["message"]["text"], "still running");
    assert_eq!(host.event("chat").await["message"]["text"], "back");
}
