//! A meeting recorded from the browser client: two headless Chromiums (one per participant, so
//! each has its own fake microphone, playing an espeak-ng sentence through
//! `--use-file-for-fake-audio-capture`, and Chromium's fake camera), the host's page turns
//! recording on and off with its Record button, everyone's page shows the red indicator, and
//! the pipeline's transcript has each sentence under its speaker's name while the composed MP4
//! shows both cameras.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_integration::{Backend, NodeOptions, TestNode};
use serde_json::json;

use crate::cdp::{Cdp, Chromium, Page, save_screenshot, tail};
use crate::recording::{download, ffprobe, newest_recording, wait_processed, words};
use crate::{create_meeting, id_of};

/// How long the host's page records.
const RECORD_FOR: Duration = Duration::from_secs(15);

fn run(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (make test installs espeak-ng and ffmpeg)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `sentence` spoken by espeak-ng, then four seconds of silence, as a 48 kHz mono WAV: what a fake
/// microphone plays (Chromium loops it).
fn speech_wav(dir: &Path, name: &str, sentence: &str) -> PathBuf {
    let raw = dir.join(format!("{name}-espeak.wav"));
    let wav = dir.join(format!("{name}.wav"));
    run(std::process::Command::new("espeak-ng").args(["-s", "140", "-w"]).arg(&raw).arg(sentence));
    run(std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&raw)
        .args(["-af", "apad=pad_dur=4", "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le"])
        .arg(&wav));
    wav
}

/// The luma of one region of the MP4's frame at `at` seconds (`crop`: an ffmpeg crop of the
/// frame, scaled to 160×90 grey): its standard deviation. A tile with video varies; an empty
/// tile or the bare canvas is one flat colour (≈ 0).
fn luma_spread(mp4: &Path, at: f64, crop: &str) -> f64 {
    let px = run(std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at:.2}"), "-i"])
        .arg(mp4)
        .args(["-frames:v", "1", "-vf", &format!("{crop},scale=160:90,format=gray"), "-f", "rawvideo", "-"]));
    assert_eq!(px.len(), 160 * 90, "one grey frame");
    let n = px.len() as f64;
    let mean = px.iter().map(|&p| f64::from(p)).sum::<f64>() / n;
    (px.iter().map(|&p| (f64::from(p) - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Waits (bounded) until `expression` holds on `page`.
async fn holds(page: &Page, expression: &str) -> bool {
    page.wait_for(expression, Duration::from_secs(20)).await
}

struct Browser {
    page: Page,
    cdp: Arc<Cdp>,
    chromium: Chromium,
}

impl Browser {
    /// A Chromium whose microphone plays `wav`, with one page open at `url`.
    async fn open(wav: &Path, url: &str, label: &'static str) -> Browser {
        let chromium = Chromium::launch_with(&[format!("--use-file-for-fake-audio-capture={}", wav.display())]);
        let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
        let page = Page::open(&cdp, url, label).await;
        Browser { page, cdp, chromium }
    }

    async fn report(&self) -> String {
        let state = self.page.eval("window.parley.state()").await.map(|v| v.to_string()).unwrap_or_else(|e| e);
        let status = self.page.eval("document.getElementById('status').textContent").await;
        let stderr = self.chromium.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
        format!(
            "--- {} page ---\nstate: {state}\nstatus: {status:?}\nconsole:\n{}\nchromium:\n{}",
            self.page.label,
            self.cdp.console_of(&self.page.session).join("\n"),
            tail(&stderr, 20)
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_recorded_from_the_page_has_both_cameras_and_each_speakers_words() {
    let dir = tempfile::tempdir().unwrap();
    let host_wav = speech_wav(dir.path(), "host", "good morning everyone and welcome to the weekly planning meeting");
    let guest_wav = speech_wav(dir.path(), "guest", "the budget report is due on friday afternoon");
    let python = std::env::var("PARLEY_WHISPER_PYTHON").unwrap_or_else(|_| "python3".into());
    let node = TestNode::start_with(
        NodeOptions::new(Backend::Sqlite)
            .env("PARLEY_RECORDING_TRANSCRIPT", "faster-whisper")
            .env("PARLEY_WHISPER_PYTHON", python)
            .env("PARLEY_RECORDING_LAYOUT", "gallery"),
    )
    .await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let (_, guest_token) = node.user("guest@example.com", "Gus Guest").await;
    let meeting = id_of(
        &create_meeting(
            &node,
            &host_token,
            json!({"title": "Recorded", "meeting_type": "instant", "duration_minutes": 30,
                   "settings": {"waiting_room": false, "recording_allowed": true}}),
        )
        .await,
        "meeting_id",
    );
    let url =
        |token: &str, name: &str| format!("{}/?meeting={meeting}&token={token}&name={name}&autojoin=1", node.base);

    let host = Browser::open(&host_wav, &url(&host_token, "Hannah%20Host"), "host").await;
    assert!(
        host.page.wait_for("window.parley.state().joined", Duration::from_secs(15)).await,
        "the host's page joins\n{}\n{}",
        host.report().await,
        tail(&node.log(), 40)
    );
    let guest = Browser::open(&guest_wav, &url(&guest_token, "Gus%20Guest"), "guest").await;
    let report =
        || async { format!("{}\n{}\nnode:\n{}", host.report().await, guest.report().await, tail(&node.log(), 60)) };
    let checks = [
        (&host.page, "window.parley.framesDecoded().then(n => n > 0)", "the host decodes the guest's camera"),
        (&guest.page, "window.parley.framesDecoded().then(n => n > 0)", "the guest decodes the host's camera"),
        // Only moderators get the Record button.
        (&host.page, "!document.getElementById('record').hidden", "the host has a Record button"),
        (&guest.page, "document.getElementById('record').hidden", "the guest has none"),
    ];
    for (page, expression, what) in checks {
        assert!(holds(page, expression).await, "{what}: `{expression}`\n{}", report().await);
    }

    host.page.eval("document.getElementById('record').click()").await.expect("record");
    let started = Instant::now();
    let checks = [
        (&guest.page, "!document.getElementById('rec').hidden", "the guest's page shows the meeting recorded"),
        (&host.page, "!document.getElementById('rec').hidden", "so does the host's"),
        (&host.page, "document.getElementById('record').textContent === 'Stop recording'", "the host can stop it"),
    ];
    for (page, expression, what) in checks {
        assert!(holds(page, expression).await, "{what}: `{expression}`\n{}", report().await);
    }
    save_screenshot(&guest.page, "browser-recording-indicator.png").await;
    tokio::time::sleep(RECORD_FOR.saturating_sub(started.elapsed())).await;
    host.page.eval("document.getElementById('record').click()").await.expect("stop recording");
    let recorded = started.elapsed().as_secs_f64();
    let gone = "document.getElementById('rec').hidden";
    assert!(holds(&guest.page, gone).await, "the indicator goes away for everyone\n{}", report().await);

    let id = newest_recording(&node, &host_token, meeting).await["recording_id"].as_str().unwrap().to_owned();
    let done = wait_processed(&node, &host_token, &id, Duration::from_secs(300)).await;
    assert_eq!(done["status"], "ready", "{done}\n{}", tail(&node.log(), 60));
    assert_eq!(done["transcript_error"], serde_json::Value::Null, "{done}");
    assert_eq!(done["layout"], "gallery", "the node's `[recording] layout`: {done}");
    println!("the recording: {done:#}");
    // Every artifact beside the screenshots (target/test-artifacts/browser-recording), where
    // the checks below read them and a failure's post-mortem finds them.
    let artifacts = crate::cdp::target_dir().join("test-artifacts").join("browser-recording");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    for name in done["artifacts"].as_array().unwrap().iter().filter_map(|a| a["name"].as_str()) {
        let file = artifacts.join(name.replace('/', "-"));
        download(&node, &host_token, &id, name, &file).await;
    }

    // The host's page lists the recording and plays it, seekable, with the transcript as
    // captions.
    host.page.eval("document.getElementById('recordings-refresh').click()").await.expect("refresh");
    let play = "document.querySelector('#recordings li button')";
    assert!(holds(&host.page, &format!("!!{play}")).await, "the host's page lists it ready\n{}", report().await);
    host.page.eval(&format!("{play}.click()")).await.expect("play");
    let player = "document.getElementById('player')";
    assert!(
        holds(&host.page, &format!("{player}.readyState >= 1 && {player}.duration > 10")).await,
        "the player loads the MP4\n{}",
        report().await
    );
    host.page.eval(&format!("{player}.currentTime = 5")).await.expect("seek");
    assert!(holds(&host.page, &format!("{player}.currentTime >= 5 && !{player}.seeking")).await, "it seeks");
    assert!(
        holds(&host.page, &format!("{player}.textTracks.length === 1 && {player}.textTracks[0].mode !== 'disabled'"))
            .await,
        "with the transcript as captions\n{}",
        report().await
    );
    save_screenshot(&host.page, "browser-recording-player.png").await;

    // Each page's own microphone is transcribed under that participant's name.
    let vtt = std::fs::read_to_string(artifacts.join("transcript.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    println!("the transcript:\n{vtt}");
    let said = |label: &str| -> Vec<String> {
        vtt.lines().filter(|l| l.starts_with(&format!("<v {label}>"))).flat_map(words).collect()
    };
    let (hannah, gus) = (said("Hannah Host"), said("Gus Guest"));
    // The tiny.en model mishears some of espeak's words (recording.rs has the list); each
    // speaker must have most of their own distinctive words and none of the other's.
    let spoken = |heard: &[String], own: &[&str]| own.iter().filter(|w| heard.iter().any(|x| x == *w)).count();
    let hannah_words = ["morning", "welcome", "weekly", "planning"];
    let gus_words = ["budget", "report", "friday", "afternoon"];
    assert!(spoken(&hannah, &hannah_words) >= 3, "Hannah said most of {hannah_words:?}:\n{vtt}");
    assert!(spoken(&gus, &gus_words) >= 3, "Gus said most of {gus_words:?}:\n{vtt}");
    assert_eq!(spoken(&gus, &hannah_words), 0, "none of Hannah's words under Gus:\n{vtt}");
    assert_eq!(spoken(&hannah, &gus_words), 0, "none of Gus's words under Hannah:\n{vtt}");

    // The MP4: one video and one audio stream, as long as the recording, and both cameras in
    // the gallery (two cells side by side).
    let mp4 = artifacts.join("recording.mp4");
    let probe = ffprobe(&mp4);
    let kinds: Vec<&str> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_type"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "video").count(), 1, "{probe}");
    assert_eq!(kinds.iter().filter(|k| **k == "audio").count(), 1, "{probe}");
    let duration: f64 = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap();
    assert!((duration - recorded).abs() <= 1.5, "MP4 {duration} s, recorded {recorded:.2} s");
    run(std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-ss", &format!("{:.2}", duration * 0.6), "-i"])
        .arg(&mp4)
        .args(["-frames:v", "1"])
        .arg(artifacts.join("frame.png")));
    // Each half, from the top of its cell to above the name label. The bare canvas there
    // measures σ ≈ 0.4; a cell with the fake camera 40–80.
    for (half, crop) in [("left", "crop=iw/2:ih*42/100:0:ih*26/100"), ("right", "crop=iw/2:ih*42/100:iw/2:ih*26/100")] {
        for at in [duration * 0.25, duration * 0.5, duration * 0.75] {
            let spread = luma_spread(&mp4, at, crop);
            assert!(spread > 10.0, "the {half} cell at {at:.1} s is flat (luma σ {spread:.1}): a camera is missing");
        }
    }
}
