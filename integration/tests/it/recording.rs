//! Recording end to end through a running node: webrtc-rs publishers (the load tester's
//! participants, sending real VP8 and Opus) in a meeting the host records for ~10 s; capture on
//! the media node, the processing job, and the artifacts read back through the API — on the
//! embedded default (SQLite, files under `data_dir`) and on PostgreSQL with a real S3 server.
//! ffprobe checks what came out.

use std::path::Path;
use std::time::{Duration, Instant};

use parley_integration::{Backend, NodeOptions, TestNode};
use parley_loadtest::{Api, Participant, Publish};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::assert_error;

/// How long the meeting is recorded.
const RECORD_FOR: Duration = Duration::from_secs(10);

pub(crate) fn s3_env(opts: NodeOptions, bucket: &str) -> NodeOptions {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run the tests through scripts/services.sh (make test) for the S3 server")
        })
    };
    opts.env("PARLEY_S3_ENDPOINT", var("PARLEY_TEST_S3_ENDPOINT"))
        .env("PARLEY_S3_ACCESS_KEY", var("PARLEY_TEST_S3_ACCESS_KEY"))
        .env("PARLEY_S3_SECRET_KEY", var("PARLEY_TEST_S3_SECRET_KEY"))
        .env("PARLEY_S3_REGION", var("PARLEY_TEST_S3_REGION"))
        .env("PARLEY_S3_BUCKET", bucket)
}

pub(crate) async fn recording_node(opts: NodeOptions) -> (TestNode, Api) {
    let node = TestNode::start_with(
        opts.env("PARLEY_LOG", "info,parley_actors=debug,parley_recording=debug")
            .env("PARLEY_RECORDING_TRANSCRIPT", "off"),
    )
    .await;
    let api = Api::new(&node.base, node.secret.as_bytes());
    (node, api)
}

/// Real media (decodable VP8 + Opus) for one publisher.
pub(crate) fn real(label: &str) -> Publish {
    let media = parley_loadtest::RealMedia::generate(4, 640, 360, label).expect("ffmpeg makes the test media");
    Publish::CAMERA_AND_MIC.with_real_media(std::sync::Arc::new(media))
}

/// Polls the recording until it is `ready` or `failed`.
pub(crate) async fn wait_processed(node: &TestNode, token: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = node.call(Method::GET, &format!("/api/recordings/{id}"), Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if v["status"] == "ready" || v["status"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "not processed within {within:?}: {v}\n--- log ---\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn newest_recording(node: &TestNode, token: &str, meeting: Uuid) -> Value {
    let (status, v) = node.call(Method::GET, &format!("/api/meetings/{meeting}/recordings"), Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["recordings"][0].clone()
}

pub(crate) fn ffprobe(path: &Path) -> Value {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .output()
        .expect("ffprobe is installed (apt-get install ffmpeg; make test does)");
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// Downloads an artifact through the node.
pub(crate) async fn download(
    node: &TestNode,
    token: &str,
    id: &str,
    name: &str,
    to: &Path,
) -> reqwest::header::HeaderMap {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/recordings/{id}/{name}", node.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), StatusCode::OK, "{name}");
    let headers = resp.headers().clone();
    std::fs::write(to, resp.bytes().await.expect("body")).expect("write");
    headers
}

/// Records `RECORD_FOR` of a two-publisher meeting and checks every artifact.
async fn record_and_check(node: &TestNode, api: &Api) -> (Value, String) {
    let host = api.create_user("Hannah Host").await.unwrap();
    let guest = api.create_user("Gus Guest").await.unwrap();
    // Ivy is invited and never joins: recordings are hers to watch once the host shares them.
    let ivy_email = format!("ivy-{}@example.test", Uuid::new_v4().simple());
    let admin = api.token("it-admin", true);
    let (status, ivy) = node
        .call(Method::POST, "/api/users", Some(&admin), Some(json!({"email": ivy_email, "display_name": "Ivy"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ivy}");
    let ivy_token = api.token(ivy["user_id"].as_str().expect("an id"), false);
    let (status, m) = node
        .call(
            Method::POST,
            "/api/meetings",
            Some(&api.token(&host.to_string(), false)),
            Some(json!({"title": "recorded", "meeting_type": "instant", "duration_minutes": 60,
                        "settings": {"waiting_room": false},
                        "participants": [{"email": ivy_email, "role": "attendee"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let meeting: Uuid = m["meeting_id"].as_str().unwrap().parse().unwrap();
    let mut h = Participant::join(api, meeting, host, true).await.unwrap();
    let mut g = Participant::join(api, meeting, guest, false).await.unwrap();
    h.connect_media(real("host")).await.unwrap();
    g.connect_media(real("guest")).await.unwrap();

    // A guest may not record.
    let refused = g.signal.request(json!({"type": "recording", "on": true})).await.unwrap();
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    h.signal.ok(json!({"type": "recording", "on": true})).await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(RECORD_FOR).await;
    h.signal.ok(json!({"type": "recording", "on": false})).await.unwrap();
    let recorded = started.elapsed();
    let token = api.token(&host.to_string(), false);
    let rec = newest_recording(node, &token, meeting).await;
    let id = rec["recording_id"].as_str().expect("an id").to_owned();
    let done = wait_processed(node, &token, &id, Duration::from_secs(180)).await;
    assert_eq!(done["status"], "ready", "{done}\n--- log ---\n{}", node.log());
    assert_eq!(done["progress"], 100);
    // The host, still connected, is told it is ready; the guest (no moderator) is not.
    let told = |p: &Participant| {
        p.events().iter().any(|e| e["event"] == "recording_ready" && e["recording_id"] == id.as_str())
    };
    assert!(
        parley_integration::eventually(Duration::from_secs(10), || async { told(&h) }).await,
        "the host gets recording_ready; it got {:?}\n--- log ---\n{}",
        h.events().iter().map(|e| e["event"].clone()).collect::<Vec<_>>(),
        node.log()
    );
    assert!(!told(&g), "only moderators are told");

    let names: Vec<&str> = done["artifacts"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
    assert!(names.contains(&"recording.mp4") && names.contains(&"thumbnail.jpg"), "{names:?}");
    let tracks = names.iter().filter(|n| n.starts_with("tracks/")).count();
    assert_eq!(tracks, 4, "two cameras and two microphones: {names:?}");

    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("r.mp4");
    let headers = download(node, &token, &id, "recording.mp4", &mp4).await;
    assert_eq!(headers["content-type"], "video/mp4");
    assert_eq!(headers["accept-ranges"], "bytes");
    let probe = ffprobe(&mp4);
    let duration: f64 = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration");
    let recorded_s = recorded.as_secs_f64();
    assert!((duration - recorded_s).abs() <= 1.0, "MP4 is {duration} s, recorded {recorded_s:.2} s");
    let streams = probe["streams"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s["codec_type"].as_str().unwrap_or(""), s["codec_name"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds.iter().filter(|k| k.0 == "video").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| k.0 == "audio").count(), 1, "{kinds:?}");
    assert!(kinds.contains(&("video", "h264")) && kinds.contains(&("audio", "aac")), "{kinds:?}");

    let jpg = dir.path().join("t.jpg");
    download(node, &token, &id, "thumbnail.jpg", &jpg).await;
    let decoded = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&jpg)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decoded.status.success() && decoded.stderr.is_empty(), "{}", String::from_utf8_lossy(&decoded.stderr));

    // A seek: the first 100 bytes, then the last 10.
    let http = reqwest::Client::new();
    let url = format!("{}/api/recordings/{id}/recording.mp4", node.base);
    let r = http.get(&url).bearer_auth(&token).header("Range", "bytes=0-99").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let total = std::fs::metadata(&mp4).unwrap().len();
    assert_eq!(r.headers()["content-range"], format!("bytes 0-99/{total}").as_str());
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    let r = http.get(&url).bearer_auth(&token).header("Range", "bytes=-10").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &std::fs::read(&mp4).unwrap()[total as usize - 10..]);
    let r = http.get(&url).bearer_auth(&token).header("Range", format!("bytes={}-", total + 5)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The guest was not invited (and is no moderator): the recording does not exist for them.
    let guest_token = api.token(&guest.to_string(), false);
    let got = node.call(Method::GET, &format!("/api/recordings/{id}"), Some(&guest_token), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let got = node.call(Method::GET, &format!("/api/recordings/{id}/recording.mp4"), Some(&guest_token), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    // Ivy is invited, but the meeting does not share its recordings yet.
    let got = node.call(Method::GET, &format!("/api/recordings/{id}"), Some(&ivy_token), None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let got = node.call(Method::GET, &format!("/api/meetings/{meeting}/recordings"), Some(&ivy_token), None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    // Once it does, she may watch (and seek) but not delete.
    let (status, v) = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{meeting}"),
            Some(&token),
            Some(json!({"settings": {"share_recordings": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["settings"]["share_recordings"], true, "{v}");
    let (status, v) =
        node.call(Method::GET, &format!("/api/meetings/{meeting}/recordings"), Some(&ivy_token), None).await;
    assert_eq!((status, v["recordings"][0]["recording_id"].as_str()), (StatusCode::OK, Some(id.as_str())), "{v}");
    let r = http.get(&url).bearer_auth(&ivy_token).header("Range", "bytes=0-9").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &std::fs::read(&mp4).unwrap()[..10]);
    let got = node.call(Method::DELETE, &format!("/api/recordings/{id}"), Some(&ivy_token), None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let got = node.call(Method::GET, &format!("/api/recordings/{id}"), Some(&guest_token), None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    // The outbox has the "ready" message, once.
    let ready = node
        .count(&format!(
            "notifications WHERE kind = 'recording_ready' AND recording_id = {}",
            node.id_lit(id.parse().unwrap())
        ))
        .await;
    assert_eq!(ready, 1);
    // …delivered to the host (no SMTP server here: as an .eml file in the data directory).
    let dir = node.data_dir.path().join("outbox");
    let ready_mail = || {
        let files: Vec<std::path::PathBuf> =
            std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        parley_integration::smtp::ics_dump(&files)
            .into_iter()
            .find(|m| m.subject.as_deref().is_some_and(|s| s.starts_with("Your recording is ready")))
    };
    assert!(
        parley_integration::eventually(Duration::from_secs(10), || async { ready_mail().is_some() }).await,
        "no recording-ready email in {}",
        dir.display()
    );
    let mail = ready_mail().unwrap();
    assert_eq!(mail.to.len(), 1, "{mail:?}");
    assert!(mail.text.as_deref().unwrap_or_default().contains(&id), "{mail:?}");
    (done, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_meeting_becomes_an_mp4_a_thumbnail_and_tracks_on_the_embedded_default() {
    let (node, api) = recording_node(NodeOptions::new(Backend::Sqlite)).await;
    let (done, host_token) = record_and_check(&node, &api).await;
    assert!(done["mp4_url"].as_str().unwrap_or("").starts_with("file://"), "{done}");
    // The files are under the node's data directory, and deleting the recording removes them.
    let id = done["recording_id"].as_str().unwrap();
    let objects = node.data_dir.path().join("objects").join("recordings").join(id);
    assert!(objects.join("recording.mp4").exists(), "{}", objects.display());
    assert!(!objects.join("part-1").exists(), "the raw chunks are gone once the tracks are joined");
    let (status, v) = node.call(Method::DELETE, &format!("/api/recordings/{id}"), Some(&host_token), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(!objects.exists(), "deleted with its objects");
    let gone = node.call(Method::GET, &format!("/api/recordings/{id}"), Some(&host_token), None).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_meeting_lands_in_a_real_s3_bucket_on_postgres() {
    let bucket = format!("parley-it-{}", Uuid::new_v4().simple());
    let (node, api) = recording_node(s3_env(NodeOptions::new(Backend::Postgres), &bucket)).await;
    let (done, _) = record_and_check(&node, &api).await;
    let mp4_url = done["mp4_url"].as_str().unwrap_or("");
    assert!(mp4_url.starts_with("s3://") && mp4_url.contains(&bucket), "{done}");
    // Straight from the bucket, not through the node: the objects are there.
    let store = parley_recording::object_store::S3Store::new(parley_recording::object_store::S3Config {
        endpoint: std::env::var("PARLEY_TEST_S3_ENDPOINT").ok(),
        region: std::env::var("PARLEY_TEST_S3_REGION").unwrap(),
        bucket: bucket.clone(),
        access_key: std::env::var("PARLEY_TEST_S3_ACCESS_KEY").unwrap(),
        secret_key: std::env::var("PARLEY_TEST_S3_SECRET_KEY").unwrap(),
        ..Default::default()
    })
    .unwrap();
    use parley_recording::object_store::ObjectStore;
    let id: Uuid = done["recording_id"].as_str().unwrap().parse().unwrap();
    let listed = store.list(&parley_core::recording::recording_prefix(id)).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    for name in ["recording.mp4", "thumbnail.jpg"] {
        assert!(keys.iter().any(|k| k.ends_with(name)), "{name} in the bucket: {keys:?}");
    }
    let mp4 = listed.iter().find(|o| o.key.ends_with("recording.mp4")).unwrap();
    assert_eq!(Some(mp4.size as i64), done["mp4_size_bytes"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_is_refused_where_the_meeting_forbids_it() {
    let (node, api) = recording_node(NodeOptions::new(Backend::Sqlite)).await;
    let host = api.create_user("Hannah").await.unwrap();
    let token = api.token(&host.to_string(), false);
    let (status, m) = node
        .call(
            Method::POST,
            "/api/meetings",
            Some(&token),
            Some(json!({"title": "private", "meeting_type": "instant", "duration_minutes": 30,
                        "settings": {"waiting_room": false, "recording_allowed": false}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let meeting: Uuid = m["meeting_id"].as_str().unwrap().parse().unwrap();
    let h = Participant::join(&api, meeting, host, true).await.unwrap();
    let refused = h.signal.request(json!({"type": "recording", "on": true})).await.unwrap();
    assert_eq!(refused["error"]["code"], "recording_not_allowed", "{refused}");
    let (_, list) = node.call(Method::GET, &format!("/api/meetings/{meeting}/recordings"), Some(&token), None).await;
    assert_eq!(list["recordings"], json!([]), "nothing was created");
}

/// A tool stand-in: an executable script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Records a few seconds of a two-publisher meeting; returns (meeting, host, recording id).
async fn record_briefly(node: &TestNode, api: &Api, secs: u64) -> (Uuid, Uuid, String, Participant, Participant) {
    let host = api.create_user("Hannah Host").await.unwrap();
    let guest = api.create_user("Gus Guest").await.unwrap();
    let meeting = api.create_meeting(host, "recorded").await.unwrap();
    let mut h = Participant::join(api, meeting, host, true).await.unwrap();
    let mut g = Participant::join(api, meeting, guest, false).await.unwrap();
    h.connect_media(real("host")).await.unwrap();
    g.connect_media(real("guest")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.signal.ok(json!({"type": "recording", "on": true})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    h.signal.ok(json!({"type": "recording", "on": false})).await.unwrap();
    let token = api.token(&host.to_string(), false);
    let id = newest_recording(node, &token, meeting).await["recording_id"].as_str().unwrap().to_owned();
    (meeting, host, id, h, g)
}

/// ffmpeg failing (here: the disk is full) fails the recording with ffmpeg's own words; the
/// meeting goes on, and can be recorded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_failure_fails_the_recording_with_the_reason_and_the_meeting_goes_on() {
    let tools = tempfile::tempdir().unwrap();
    let ffmpeg = script(tools.path(), "ffmpeg", "echo 'recording.mp4: No space left on device' >&2\nexit 1");
    let (node, api) =
        recording_node(NodeOptions::new(Backend::Sqlite).env("PARLEY_FFMPEG", ffmpeg.display().to_string())).await;
    let (meeting, host, id, h, _g) = record_briefly(&node, &api, 3).await;
    let token = api.token(&host.to_string(), false);
    let done = wait_processed(&node, &token, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or("");
    assert!(error.contains("No space left on device"), "the reason is ffmpeg's: {error}");
    let failed = node
        .count(&format!(
            "notifications WHERE kind = 'recording_failed' AND recording_id = {}",
            node.id_lit(id.parse().unwrap())
        ))
        .await;
    assert_eq!(failed, 1);
    // The meeting is untouched: chat works, and recording starts again.
    h.signal.ok(json!({"type": "chat", "text": "still here"})).await.unwrap();
    h.signal.ok(json!({"type": "recording", "on": true})).await.unwrap();
    let again = newest_recording(&node, &token, meeting).await;
    assert_ne!(again["recording_id"].as_str(), Some(id.as_str()));
    assert_eq!(again["status"], "recording");
}

/// The node processing a recording is killed mid-job: another node takes the job over once the
/// lease lapses and finishes it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_has_its_job_finished_once_by_another_node() {
    let bucket = format!("parley-it-{}", Uuid::new_v4().simple());
    let tools = tempfile::tempdir().unwrap();
    // Node A's ffmpeg hangs: A is mid-job as long as the test wants.
    let slow = script(tools.path(), "ffmpeg", "sleep 120\nexec ffmpeg \"$@\"");
    let a_opts = s3_env(NodeOptions::new(Backend::Postgres), &bucket)
        .env("PARLEY_FFMPEG", slow.display().to_string())
        .env("PARLEY_RECORDING_LEASE_SECS", "3");
    let (mut a, api) = recording_node(a_opts).await;
    let (_meeting, host, id, _h, _g) = record_briefly(&a, &api, 4).await;
    let token = api.token(&host.to_string(), false);
    let rid: Uuid = id.parse().unwrap();
    // A claims it and starts composing.
    let claimed = parley_integration::eventually(Duration::from_secs(30), || async {
        a.count(&format!("recording_jobs WHERE status = 'running' AND recording_id = {}", a.id_lit(rid))).await == 1
    })
    .await;
    assert!(claimed, "node A claimed the job:\n{}", a.log());
    let b_opts = s3_env(NodeOptions::new(Backend::Postgres), &bucket)
        .env("PARLEY_RECORDING_LEASE_SECS", "3")
        .env("PARLEY_SECRET", a.secret.clone());
    let b_opts = NodeOptions { database_url: Some(a.database_url.clone()), ..b_opts };
    let (b, _) = recording_node(b_opts).await;
    a.kill9();
    let done = wait_processed(&b, &token, &id, Duration::from_secs(180)).await;
    assert_eq!(done["status"], "ready", "{done}\n--- B ---\n{}", b.log());
    let attempts = b.sql(&format!("SELECT attempts FROM recording_jobs WHERE recording_id = {}", b.id_lit(rid))).await;
    let attempts: i32 = attempts[0].try_get("", "attempts").unwrap();
    assert_eq!(attempts, 2, "A's attempt, then B's");
    let ready =
        b.count(&format!("notifications WHERE kind = 'recording_ready' AND recording_id = {}", b.id_lit(rid))).await;
    assert_eq!(ready, 1, "finished once");
    assert!(b.log().contains("recording ready"), "B finished it:\n{}", b.log());
}

/// A publisher speaking `sentence` (espeak-ng → Opus) over a test picture.
fn speaking(dir: &Path, name: &str, sentence: &str) -> Publish {
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (make test installs espeak-ng and ffmpeg)"));
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let wav = dir.join(format!("{name}.wav"));
    let ogg = dir.join(format!("{name}.ogg"));
    let ivf = dir.join(format!("{name}.ivf"));
    // Speech, then a second of silence, so each repetition is a sentence of its own.
    run(std::process::Command::new("espeak-ng").args(["-s", "140", "-w"]).arg(&wav).arg(sentence));
    run(std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&wav)
        .args([
            "-af",
            "apad=pad_dur=1",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-c:a",
            "libopus",
            "-frame_duration",
            "20",
            "-page_duration",
            "20000",
        ])
        .arg(&ogg));
    run(std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            "2",
            "-c:v",
            "libvpx",
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-deadline",
            "realtime",
            "-b:v",
            "300k",
            "-f",
            "ivf",
        ])
        .arg(&ivf));
    let media = parley_loadtest::RealMedia::from_files(&ivf, &ogg).expect("speech media");
    Publish::CAMERA_AND_MIC.with_real_media(std::sync::Arc::new(media))
}

/// Words of a text, lower case, without punctuation.
pub(crate) fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Each participant's own audio is transcribed, so the transcript names who said what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transcript_has_each_speakers_words_under_their_name() {
    let python = std::env::var("PARLEY_WHISPER_PYTHON").unwrap_or_else(|_| "python3".into());
    let node = TestNode::start_with(
        NodeOptions::new(Backend::Sqlite)
            .env("PARLEY_RECORDING_TRANSCRIPT", "faster-whisper")
            .env("PARLEY_WHISPER_PYTHON", python),
    )
    .await;
    let api = Api::new(&node.base, node.secret.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let host = api.create_user("Hannah Host").await.unwrap();
    let guest = api.create_user("Gus Guest").await.unwrap();
    let meeting = api.create_meeting(host, "transcribed").await.unwrap();
    let mut h = Participant::join(&api, meeting, host, true).await.unwrap();
    let mut g = Participant::join(&api, meeting, guest, false).await.unwrap();
    h.connect_media(speaking(dir.path(), "host", "the quick brown fox jumps over the lazy dog")).await.unwrap();
    g.connect_media(speaking(dir.path(), "guest", "please send seven yellow bicycles to the harbour")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.signal.ok(json!({"type": "recording", "on": true})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    h.signal.ok(json!({"type": "recording", "on": false})).await.unwrap();
    let token = api.token(&host.to_string(), false);
    let id = newest_recording(&node, &token, meeting).await["recording_id"].as_str().unwrap().to_owned();
    let done = wait_processed(&node, &token, &id, Duration::from_secs(240)).await;
    assert_eq!(done["status"], "ready", "{done}\n{}", node.log());
    assert_eq!(done["transcript_error"], Value::Null, "{done}");
    let vtt_path = dir.path().join("t.vtt");
    download(&node, &token, &id, "transcript.vtt", &vtt_path).await;
    let vtt = std::fs::read_to_string(&vtt_path).unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let said = |label: &str| -> Vec<String> {
        vtt.lines().filter(|l| l.starts_with(&format!("<v {label}>"))).flat_map(words).collect()
    };
    let (hannah, gus) = (said("Hannah Host"), said("Gus Guest"));
    // The tiny.en model mishears some of espeak's words ("brown" as "round", "seven" as "San
    // Juan", once "fox jumps" as "foc-stump"), and which ones varies with the audio's
    // packetisation: each speaker must have most of their own distinctive words, and none of
    // the other's — the attribution is what this test is about.
    let spoken = |heard: &[String], own: &[&str]| own.iter().filter(|w| heard.iter().any(|x| x == *w)).count();
    let hannah_words = ["quick", "fox", "lazy", "dog"];
    let gus_words = ["please", "send", "yellow", "bicycles"];
    assert!(spoken(&hannah, &hannah_words) >= 3, "Hannah said most of {hannah_words:?}:\n{vtt}");
    assert!(spoken(&gus, &gus_words) >= 3, "Gus said most of {gus_words:?}:\n{vtt}");
    assert_eq!(spoken(&gus, &hannah_words), 0, "none of Hannah's words under Gus:\n{vtt}");
    assert_eq!(spoken(&hannah, &gus_words), 0, "none of Gus's words under Hannah:\n{vtt}");
}

/// A TCP forwarder to `target` that can be cut (connections refused, open ones dropped) and
/// restored on the same port: object storage going away and coming back.
struct Cuttable {
    port: u16,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cuttable {
    async fn start(target: &str) -> Cuttable {
        let mut c = Cuttable { port: parley_integration::free_port(), target: target.to_owned(), task: None };
        c.restore().await;
        c
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("proxy port");
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Refuses new connections and drops the open ones (the JoinSet goes with the task).
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Object storage unreachable for a while during capture: chunks wait and are retried, and the
/// recording comes out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_during_capture_loses_nothing() {
    let bucket = format!("parley-it-{}", Uuid::new_v4().simple());
    let s3 = std::env::var("PARLEY_TEST_S3_ENDPOINT").expect("PARLEY_TEST_S3_ENDPOINT (make test starts SeaweedFS)");
    let mut proxy = Cuttable::start(s3.trim_start_matches("http://")).await;
    let opts = s3_env(NodeOptions::new(Backend::Sqlite), &bucket).env("PARLEY_S3_ENDPOINT", proxy.url());
    let (node, api) = recording_node(opts).await;
    let host = api.create_user("Hannah Host").await.unwrap();
    let guest = api.create_user("Gus Guest").await.unwrap();
    let meeting = api.create_meeting(host, "outage").await.unwrap();
    let mut h = Participant::join(&api, meeting, host, true).await.unwrap();
    let mut g = Participant::join(&api, meeting, guest, false).await.unwrap();
    h.connect_media(real("host")).await.unwrap();
    g.connect_media(real("guest")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.signal.ok(json!({"type": "recording", "on": true})).await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.restore().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.signal.ok(json!({"type": "recording", "on": false})).await.unwrap();
    let recorded = started.elapsed().as_secs_f64();
    let token = api.token(&host.to_string(), false);
    let id = newest_recording(&node, &token, meeting).await["recording_id"].as_str().unwrap().to_owned();
    let done = wait_processed(&node, &token, &id, Duration::from_secs(180)).await;
    assert_eq!(done["status"], "ready", "{done}\n{}", node.log());
    assert!(node.log().contains("object store unavailable; retrying"), "the outage was seen:\n{}", node.log());
    assert!(node.log().contains("upload caught up"), "{}", node.log());
    // Every track covers the whole recording: nothing of the outage's 6 s is missing.
    for a in done["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"].as_str().is_some_and(|n| n.starts_with("tracks/")))
    {
        let ms = a["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        assert!(ms >= recorded - 2.0, "{} covers {ms:.1} s of {recorded:.1} s: {done}", a["name"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("r.mp4");
    download(&node, &token, &id, "recording.mp4", &mp4).await;
    let duration: f64 = ffprobe(&mp4)["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap();
    assert!((duration - recorded).abs() <= 1.0, "MP4 {duration} s, recorded {recorded:.2} s");
}
