//! A recording survives its meeting's node: three real nodes on PostgreSQL and a real S3
//! server, a meeting recorded on node b with publishers connected through nodes a and c;
//! `kill -9` of b mid-recording. The new owner's media router continues the same recording as
//! its second part once the publishers have offered their media again, and the one MP4 that
//! comes out has both parts: the sound before the kill and after it.

use std::path::Path;
use std::time::{Duration, Instant};

use parley_integration::{TestCluster, eventually};
use parley_loadtest::{Api, Participant};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::recording::{download, ffprobe, newest_recording, real, wait_processed};
use crate::{id_of, in_hours, meeting_body};

/// Recorded before the kill, and again once media flows on the new owner.
const EACH_SIDE: Duration = Duration::from_secs(6);

/// Mean loudness (dBFS, as ffmpeg's `volumedetect` says) of `secs` of `path`'s audio from `from`.
fn mean_volume(path: &Path, from: f64, secs: f64) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-ss", &format!("{from:.2}"), "-t", &format!("{secs:.2}"), "-i"])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed (make test installs it)");
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no mean_volume from {from}s for {secs}s:\n{log}"))
}

/// The node a meeting is assigned to, as the database says.
async fn owner(c: &TestCluster, meeting: uuid::Uuid) -> Option<String> {
    let rows = c.nodes[0].sql(&format!("SELECT assigned_node FROM meetings WHERE id = '{meeting}'")).await;
    rows[0].try_get::<Option<String>>("", "assigned_node").ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_mid_recording_leaves_one_mp4_with_the_parts_before_and_after() {
    let bucket = format!("parley-it-{}", uuid::Uuid::new_v4().simple());
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: run through scripts/services.sh (make test)"));
    let s3 = [
        ("PARLEY_S3_ENDPOINT", var("PARLEY_TEST_S3_ENDPOINT")),
        ("PARLEY_S3_ACCESS_KEY", var("PARLEY_TEST_S3_ACCESS_KEY")),
        ("PARLEY_S3_SECRET_KEY", var("PARLEY_TEST_S3_SECRET_KEY")),
        ("PARLEY_S3_REGION", var("PARLEY_TEST_S3_REGION")),
        ("PARLEY_S3_BUCKET", bucket.clone()),
    ];
    let mut env: Vec<(&str, &str)> = s3.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("PARLEY_LEASE_TTL_MS", "1500"),
        ("PARLEY_RECORDING_TRANSCRIPT", "off"),
        ("PARLEY_LOG", "info,parley_actors=debug,parley_recording=debug"),
    ]);
    let mut c = TestCluster::start(3, 0, &env).await;
    let secret = c.secret();
    let api: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.base, secret.as_bytes())).collect();
    let logs = |c: &TestCluster| c.nodes.iter().map(|n| n.log()).collect::<Vec<_>>().join("\n=====\n");

    // The co-host starts the meeting through node b, so b owns it; the host (who records) and a
    // guest publish through a and c, which survive.
    let (host, host_token) = c.nodes[0].user("host@example.com", "Hannah Host").await;
    let (cohost, _) = c.nodes[0].user("cohost@example.com", "Cora Cohost").await;
    let (guest, _) = c.nodes[0].user("guest@example.com", "Gus Guest").await;
    let mut body = meeting_body("recorded across a failover", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    body["participants"] = json!([{"email": "cohost@example.com", "role": "co_host"}]);
    let (status, created) = c.nodes[0].call(Method::POST, "/api/meetings", Some(&host_token), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let meeting = id_of(&created, "meeting_id");
    let starter = Participant::join(&api[1], meeting, cohost, true).await.expect("the co-host starts it on b");
    let mut h = Participant::join(&api[0], meeting, host, false).await.expect("the host joins through a");
    let mut g = Participant::join(&api[2], meeting, guest, false).await.expect("the guest joins through c");
    let (host_media, guest_media) = (real("host"), real("guest"));
    h.connect_media(host_media.clone()).await.expect("host media");
    g.connect_media(guest_media.clone()).await.expect("guest media");
    assert_eq!(owner(&c, meeting).await.as_deref(), Some(c.names[1].as_str()), "b owns the meeting");

    tokio::time::sleep(Duration::from_secs(1)).await;
    h.signal.ok(json!({"type": "recording", "on": true})).await.expect("the host records");
    let started = Instant::now();
    tokio::time::sleep(EACH_SIDE).await;

    c.nodes[1].kill9();
    drop(starter);
    let dead = c.names[1].clone();
    let moved =
        eventually(Duration::from_secs(20), || async { owner(&c, meeting).await.is_some_and(|n| n != dead) }).await;
    assert!(moved, "the meeting never moved off the dead node\n{}", logs(&c));
    let new_owner = owner(&c, meeting).await.unwrap_or_default();
    // The new owner's router has never heard of these peers: they offer again (a browser does
    // when its connection fails).
    h.reconnect_media(host_media).await.expect("host media on the new owner");
    g.reconnect_media(guest_media).await.expect("guest media on the new owner");
    let resumed_at = started.elapsed();
    tokio::time::sleep(EACH_SIDE).await;
    h.signal.ok(json!({"type": "recording", "on": false})).await.expect("the host stops recording");
    let recorded = started.elapsed().as_secs_f64();

    let survivor = &c.nodes[0];
    let rec = newest_recording(survivor, &host_token, meeting).await;
    let id = rec["recording_id"].as_str().expect("a recording").to_owned();
    let done = wait_processed(survivor, &host_token, &id, Duration::from_secs(240)).await;
    assert_eq!(done["status"], "ready", "{done}\n{}", logs(&c));
    // The host (connected through a) hears it is ready from the meeting's new owner, whichever
    // node's worker processed it.
    let told =
        || async { h.events().iter().any(|e| e["event"] == "recording_ready" && e["recording_id"] == id.as_str()) };
    assert!(eventually(Duration::from_secs(10), told).await, "the host gets recording_ready\n{}", logs(&c));

    // Two parts: the dead node's and the new owner's.
    let parts = done["parts"].as_array().expect("parts");
    let nodes: Vec<&str> = parts.iter().filter_map(|p| p["node"].as_str()).collect();
    assert_eq!(nodes, [dead.as_str(), new_owner.as_str()], "{done}");
    let tracks: Vec<&str> = done["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .filter(|n| n.starts_with("tracks/"))
        .collect();
    assert_eq!(tracks.len(), 8, "each part has two cameras and two microphones: {tracks:?}");

    // One MP4 as long as the recording (the failover gap kept), with sound in both parts.
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("r.mp4");
    download(survivor, &host_token, &id, "recording.mp4", &mp4).await;
    let probe = ffprobe(&mp4);
    let duration: f64 = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration");
    assert!((duration - recorded).abs() <= 1.5, "MP4 is {duration} s, recorded {recorded:.2} s");
    let before = mean_volume(&mp4, 1.0, 3.0);
    let after = mean_volume(&mp4, resumed_at.as_secs_f64() + 1.5, 3.0);
    assert!(before > -40.0, "the part before the kill is in the MP4 ({before} dB)");
    assert!(after > -40.0, "the part after the failover is in the MP4 ({after} dB)");
    let kinds: Vec<&str> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_type"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "video").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "audio").count(), 1, "{kinds:?}");
}
