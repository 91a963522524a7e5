//! `parley loadtest --record`'s wait for the recording, against a stand-in for the recordings
//! API (the shapes PROTOCOL.md's recording section and the API give): the newest recording of
//! the list until it is `ready`, then its artifacts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parley_loadtest::Api;
use parley_loadtest::run::await_recording;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// An HTTP server answering `GET <path>` with `reply(path, nth call)`; returns its base URL.
async fn serve(reply: impl Fn(&str, u32) -> Value + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let reply = Arc::new(reply);
    let calls = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let (reply, calls) = (reply.clone(), calls.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tcp.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                assert!(head.to_lowercase().contains("authorization: bearer "), "a token is sent: {head}");
                let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let body = reply(&path, calls.fetch_add(1, Ordering::Relaxed)).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

#[tokio::test]
async fn the_newest_recording_is_polled_until_ready_and_its_mp4_duration_read() {
    let meeting = Uuid::new_v4();
    let list_path = format!("/api/meetings/{meeting}/recordings");
    let base = serve(move |path, n| {
        if path == list_path {
            let status = if n < 2 { "processing" } else { "ready" };
            json!({"recordings": [
                {"recording_id": "new", "status": status, "progress": 50},
                {"recording_id": "old", "status": "ready", "progress": 100},
            ]})
        } else if path == "/api/recordings/new" {
            json!({"recording_id": "new", "status": "ready", "error": null, "artifacts": [
                {"name": "tracks/a-camera.webm", "key": "k1", "content_type": "video/webm", "size": 100, "duration_ms": 10100},
                {"name": "recording.mp4", "key": "k2", "content_type": "video/mp4", "size": 200, "duration_ms": 10040},
            ]})
        } else {
            json!({"unexpected": path})
        }
    })
    .await;
    let api = Api::new(&base, b"secret");
    let stopped = Instant::now();
    let r = await_recording(&api, meeting, Uuid::new_v4(), stopped, Duration::from_secs(30)).await;
    assert_eq!((r.id.as_deref(), r.status.as_str()), (Some("new"), "ready"), "{r:?}");
    assert_eq!(r.mp4_duration_s, Some(10.04));
    assert_eq!(r.artifacts.len(), 2);
    assert_eq!(r.error, None);
    let waited = r.seconds_to_ready.expect("time to ready");
    assert!((1.5..10.0).contains(&waited), "two polls of processing first: {waited} s");
}

#[tokio::test]
async fn a_recording_that_never_finishes_is_reported_with_its_last_status() {
    let base =
        serve(|_, _| json!({"recordings": [{"recording_id": "r", "status": "processing", "progress": 10}]})).await;
    let api = Api::new(&base, b"secret");
    let r = await_recording(&api, Uuid::new_v4(), Uuid::new_v4(), Instant::now(), Duration::from_millis(1500)).await;
    assert_eq!((r.id.as_deref(), r.status.as_str(), r.seconds_to_ready), (Some("r"), "processing", None));
    assert!(r.error.as_deref().is_some_and(|e| e.contains("within")), "{r:?}");
    let v = serde_json::to_value(&r).unwrap();
    assert!(v["seconds_to_ready"].is_null() && v["mp4_duration_s"].is_null(), "{v}");
}
