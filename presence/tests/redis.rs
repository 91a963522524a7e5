//! The Redis implementation against a real Redis (`PARLEY_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379; `make test` provides one). Keys are asserted with a second client.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fred::prelude::*;
use parley_core::meeting::Audience;
use parley_core::model::Role;
use parley_core::protocol::{ParticipantView, WaitingView};
use parley_presence::{LoggedEvent, Presence, PresenceError, PresenceRecord, keys};
use uuid::Uuid;

fn url() -> String {
    std::env::var("PARLEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn raw() -> Client {
    let c = Builder::from_config(Config::from_url(&url()).unwrap()).build().unwrap();
    c.init().await.unwrap_or_else(|e| panic!("Redis at {} is required: {e}", url()));
    c
}

fn rec(user: Uuid, muted: bool) -> PresenceRecord {
    PresenceRecord {
        view: ParticipantView {
            user_id: user,
            display_name: "Alice".into(),
            role: Role::CoHost,
            audio_muted: muted,
            video_on: true,
            hand_raised: false,
            hand_raised_at: None,
            screen_sharing: false,
            joined_at: 1_700_000_000_000,
            room: None,
        },
        connection_id: "conn-1".into(),
        node: "node-a".into(),
    }
}

#[tokio::test]
async fn writes_the_seed_keys_and_expires_hashes() {
    let p = Presence::redis(&url(), Duration::from_millis(800)).await.unwrap();
    let r = raw().await;
    let (m, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    p.upsert(m, &rec(a, true), 1234).await.unwrap();
    p.upsert(m, &rec(b, false), 1234).await.unwrap();

    let members: Vec<String> = r.smembers(keys::participants(m)).await.unwrap();
    assert_eq!(members.len(), 2);
    let h: std::collections::HashMap<String, String> = r.hgetall(keys::user(m, a)).await.unwrap();
    assert_eq!(h["connection_id"], "conn-1");
    assert_eq!(h["audio"], "false");
    assert_eq!(h["video"], "true");
    assert_eq!(h["role"], "co_host");
    assert_eq!(h["last_heartbeat"], "1234");
    let ttl: i64 = r.pttl(keys::user(m, a)).await.unwrap();
    assert!(ttl > 0 && ttl <= 800, "hash has the TTL: {ttl}");

    // b keeps heartbeating, a does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.upsert(m, &rec(b, false), 2000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.expired(m, &[a, b]).await.unwrap(), vec![a]);
    // The owner keeps b alive without a heartbeat (b only chats): its TTL starts again; a's
    // hash is reported gone.
    assert_eq!(p.keep_alive(m, &[a, b]).await.unwrap(), vec![a]);
    let ttl: i64 = r.pttl(keys::user(m, b)).await.unwrap();
    assert!(ttl > 700, "b's TTL renewed: {ttl}");

    let w = vec![
        WaitingView { user_id: Uuid::new_v4(), display_name: "W1".into(), since: 1 },
        WaitingView { user_id: Uuid::new_v4(), display_name: "W2".into(), since: 2 },
    ];
    p.set_waiting(m, &w).await.unwrap();
    let raw_list: Vec<String> = r.lrange(keys::waiting_room(m), 0, -1).await.unwrap();
    assert_eq!(raw_list.len(), 2);
    assert!(raw_list[0].contains("W1"), "FIFO order: {raw_list:?}");
    assert_eq!(p.waiting(m).await.unwrap(), w);
    p.set_waiting(m, &w[1..]).await.unwrap();
    assert_eq!(p.waiting(m).await.unwrap(), w[1..].to_vec());

    p.set_media_server(m, "node-b").await.unwrap();
    let ms: String = r.get(keys::media_server(m)).await.unwrap();
    assert_eq!(ms, "node-b");

    p.remove(m, a).await.unwrap();
    assert_eq!(p.participants(m).await.unwrap(), vec![b]);

    p.clear(m, &[b]).await.unwrap();
    let n: i64 = r
        .exists(vec![keys::participants(m), keys::user(m, b), keys::waiting_room(m), keys::media_server(m)])
        .await
        .unwrap();
    assert_eq!(n, 0, "every key of the meeting is gone");
}

/// A presence handle, a new meeting, and a subscription to its event channel.
async fn listening()
-> (Presence, Uuid, fred::clients::SubscriberClient, tokio::sync::broadcast::Receiver<fred::types::Message>) {
    let p = Presence::redis(&url(), Duration::from_secs(5)).await.unwrap();
    let sub = Builder::from_config(Config::from_url(&url()).unwrap()).build_subscriber_client().unwrap();
    sub.init().await.unwrap();
    let m = Uuid::new_v4();
    let rx = sub.message_rx();
    sub.subscribe(keys::events(m)).await.unwrap();
    (p, m, sub, rx)
}

#[tokio::test]
async fn publishes_events_on_the_meeting_channel() {
    let (p, m, _sub, mut rx) = listening().await;
    p.publish(m, r#"{"event":"chat"}"#).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a message").unwrap();
    assert_eq!(msg.channel.to_string(), keys::events(m));
    assert_eq!(msg.value.as_string().unwrap(), r#"{"event":"chat"}"#);
}

#[tokio::test]
async fn logs_numbered_events_publishes_them_and_replays_after_a_number() {
    let (p, m, _sub, mut rx) = listening().await;
    let u = Uuid::new_v4();
    let ev = |seq: u64, audience| LoggedEvent { seq, audience, frame: format!(r#"{{"event":"chat","seq":{seq}}}"#) };
    p.log_event(m, &ev(3_000_000_001, Audience::Everyone)).await.unwrap();
    p.log_event(m, &ev(3_000_000_002, Audience::User { user_id: u })).await.unwrap();
    p.log_event(m, &ev(4_000_000_001, Audience::Moderators)).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("published").unwrap();
    assert_eq!(msg.value.as_string().unwrap(), ev(3_000_000_001, Audience::Everyone).frame);
    let after = p.events_after(m, 3_000_000_001).await.unwrap();
    assert_eq!(after, vec![ev(3_000_000_002, Audience::User { user_id: u }), ev(4_000_000_001, Audience::Moderators)]);
    assert!(p.events_after(m, 4_000_000_001).await.unwrap().is_empty());
    // An old owner's number (at or below the log's top) is refused as stale, not as an outage.
    let stale = p.log_event(m, &ev(3_000_000_003, Audience::Everyone)).await;
    assert!(matches!(stale, Err(PresenceError::Corrupt(_))), "{stale:?}");
    p.log_event(m, &ev(4_000_000_002, Audience::Everyone)).await.expect("the breaker did not open");
    let len: u64 = raw().await.xlen(keys::log(m)).await.unwrap();
    assert_eq!(len, 4);
    p.clear(m, &[]).await.unwrap();
    let gone: i64 = raw().await.exists(keys::log(m)).await.unwrap();
    assert_eq!(gone, 0, "the log goes with the meeting");
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_not_hung() {
    let started = std::time::Instant::now();
    let r = Presence::redis("redis://127.0.0.1:1", Duration::from_secs(5)).await;
    assert!(matches!(r, Err(parley_presence::PresenceError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(10));
}
