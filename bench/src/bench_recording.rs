//! `make bench-recording`: what recording costs, against the same work without it, in one run.
//!
//! 1. **Capture CPU**: one release `parley node` (SQLite, files under its data dir, transcripts
//!    off) and a meeting of 4 publishers sending real VP8 + Opus (the load tester's
//!    `RealMedia`), measured twice over the same window length: forwarding only, then with the
//!    meeting recorded. The node's CPU seconds (from /proc) give the ratio (goal ≤ 1.10×).
//! 2. **Concurrent recorded meetings**: `--meetings N` meetings of 4 publishers, all recorded at
//!    once: the forwarding loss of each (packets expected vs received by the load tester) and
//!    whether every recording reaches `ready` (goal: 20 meetings, 0 loss, on 2 cores).
//! 3. **Pipeline speed** (skipped with `--minutes 0`): a `--minutes M` (default 10) two-person recording's per-track files
//!    (ffmpeg-made VP8 + espeak-ng speech as Opus), through the same steps a worker runs —
//!    compose, thumbnail, transcript (faster-whisper tiny.en) — as × real time (goal > 1).
//!
//! Needs PARLEY_BIN (release binary; the script sets it), ffmpeg, espeak-ng and faster-whisper
//! (`scripts/services.sh` installs them). The load tester shares the machine's cores with the
//! node: on a 2-core machine the figures are a floor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parley_integration::{Backend, NodeOptions, TestNode, cpu_seconds};
use parley_loadtest::{LoadTest, RealMedia, Summary};
use parley_recording::compose::{self, ComposeSpec, ComposeTrack, Layout, TrackKind};
use parley_recording::thumbnail;
use parley_recording::transcript::{FasterWhisper, SpeakerAudio, Transcriber, webvtt};
use uuid::Uuid;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One load-test run; returns its summary and the node's CPU seconds over the measured window.
async fn measured(node: &TestNode, test: LoadTest) -> anyhow::Result<(Summary, f64)> {
    let marks: Mutex<Vec<f64>> = Mutex::new(Vec::new());
    let stat = format!("/proc/{}/stat", node.pid());
    let summary = parley_loadtest::run::run_observed(
        &test,
        |l| eprintln!("  {l}"),
        |_| marks.lock().unwrap_or_else(|e| e.into_inner()).push(cpu_seconds(&stat)),
    )
    .await?;
    let m = marks.into_inner().unwrap_or_else(|e| e.into_inner());
    let cpu = match m.as_slice() {
        [a, b, ..] => b - a,
        _ => 0.0,
    };
    Ok((summary, cpu))
}

fn test(node: &TestNode, secs: u64, media: &[Arc<RealMedia>]) -> LoadTest {
    LoadTest {
        url: node.base.clone(),
        secret: node.secret.as_bytes().to_vec(),
        publishers: 4,
        subscribers: 0,
        duration: Duration::from_secs(secs),
        real_media: true,
        real_sources: Some(media.to_vec()),
        ..Default::default()
    }
}

fn run(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// One participant's camera and microphone files, `secs` long.
fn tracks(dir: &Path, name: &str, secs: u64, hue: u32, sentence: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let wav = dir.join(format!("{name}.wav"));
    let audio = dir.join(format!("{name}-audio.webm"));
    let video = dir.join(format!("{name}-camera.webm"));
    run(std::process::Command::new("espeak-ng").arg("-w").arg(&wav).arg(sentence))?;
    let t = secs.to_string();
    run(std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "-1", "-i"])
        .arg(&wav)
        .args(["-af", "apad=pad_dur=2", "-t", &t, "-ar", "48000", "-ac", "2", "-c:a", "libopus"])
        .arg(&audio))?;
    run(std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-t", &t])
        .args(["-vf", &format!("hue=h={hue}"), "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
        .args(["-b:v", "600k", "-g", "60"])
        .arg(&video))?;
    Ok((audio, video))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = arg("--seconds", 15);
    let meetings = arg("--meetings", 20) as usize;
    let minutes = arg("--minutes", 10);
    let node = TestNode::start_with(
        NodeOptions::new(Backend::Sqlite).env("PARLEY_RECORDING_TRANSCRIPT", "off").env("PARLEY_LOG", "warn"),
    )
    .await;
    let mut lines = Vec::new();
    // One encoding of the publishers' media for every run (not one ffmpeg per run, which at
    // 20 meetings would be the heaviest load on the machine).
    eprintln!("bench-recording: encoding the publishers' real media once");
    let media = parley_loadtest::run::encode_real_media(4).await?;

    eprintln!("bench-recording: 4 publishers, forwarding only, {secs} s");
    let (plain, plain_cpu) = measured(&node, test(&node, secs, &media)).await?;
    eprintln!("bench-recording: the same, recorded");
    let recorded_test = LoadTest { record: Some(Duration::from_secs(secs)), ..test(&node, secs, &media) };
    let (rec, rec_cpu) = measured(&node, recorded_test).await?;
    let ratio = if plain_cpu > 0.0 { rec_cpu / plain_cpu } else { f64::NAN };
    let ready = rec.recording.as_ref().map(|r| r.status.clone()).unwrap_or_default();
    lines.push(format!(
        "| capture CPU, 1 meeting × 4 publishers, {secs} s | forwarding {plain_cpu:.2} CPU-s (loss {:.2} %) | recorded {rec_cpu:.2} CPU-s (loss {:.2} %, recording {ready}) | **{ratio:.2}×** (goal ≤ 1.10×) |",
        plain.loss_pct, rec.loss_pct
    ));

    eprintln!("bench-recording: {meetings} recorded meetings at once");
    let cpu0 = node.cpu_seconds();
    let t0 = Instant::now();
    let runs = futures_util::future::join_all((0..meetings).map(|_| {
        let t = LoadTest { record: Some(Duration::from_secs(secs)), ..test(&node, secs, &media) };
        async move { parley_loadtest::run::run(&t, |_| {}).await }
    }))
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cores = (node.cpu_seconds() - cpu0) / wall;
    let mut worst_loss: f64 = 0.0;
    let mut ready = 0;
    let mut failed = Vec::new();
    for r in &runs {
        match r {
            Ok(s) => {
                worst_loss = worst_loss.max(s.loss_pct);
                if s.recording.as_ref().is_some_and(|r| r.status == "ready") {
                    ready += 1;
                }
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    lines.push(format!(
        "| {meetings} recorded meetings × 4 publishers at once | worst forwarding loss {worst_loss:.2} % | {ready}/{meetings} recordings ready{} | node process {cores:.2} cores over {wall:.0} s (capture to ready; its ffmpeg children not counted) |",
        if failed.is_empty() { String::new() } else { format!(", {} runs failed: {}", failed.len(), failed.join("; ")) }
    ));
    drop(node);
    if minutes == 0 {
        return print_table(lines);
    }

    eprintln!("bench-recording: a {minutes}-minute two-person recording through compose, thumbnail, transcript");
    let dir = tempfile::tempdir()?;
    let len = minutes * 60;
    let (a_audio, a_video) = tracks(dir.path(), "ann", len, 0, "the quick brown fox jumps over the lazy dog")?;
    let (b_audio, b_video) = tracks(dir.path(), "bob", len, 120, "please send the yellow bicycles to the harbour")?;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let track = |path: &PathBuf, who: Uuid, label: &str, kind| ComposeTrack {
        path: path.clone(),
        participant: who,
        label: label.into(),
        kind,
        offset: Duration::ZERO,
    };
    let speakers: Vec<(Duration, Uuid)> =
        (0..len / 10).map(|i| (Duration::from_secs(i * 10), if i % 2 == 0 { ann } else { bob })).collect();
    let spec = ComposeSpec::new(
        vec![
            track(&a_audio, ann, "Ann", TrackKind::Audio),
            track(&a_video, ann, "Ann", TrackKind::Camera),
            track(&b_audio, bob, "Bob", TrackKind::Audio),
            track(&b_video, bob, "Bob", TrackKind::Camera),
        ],
        Duration::from_secs(len),
        Layout::Speaker,
        speakers,
    );
    let t = Instant::now();
    let mp4 = dir.path().join("out.mp4");
    compose::compose(&spec, &mp4, &|_| {}).await?;
    let compose_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    thumbnail::thumbnail(&mp4, &dir.path().join("t.jpg")).await?;
    let thumb_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let engine = FasterWhisper::default();
    let sa = engine.transcribe(&a_audio).await?;
    let sb = engine.transcribe(&b_audio).await?;
    let vtt = webvtt(&[
        SpeakerAudio { label: "Ann", offset: Duration::ZERO, segments: &sa },
        SpeakerAudio { label: "Bob", offset: Duration::ZERO, segments: &sb },
    ]);
    let transcript_s = t.elapsed().as_secs_f64();
    let total = compose_s + thumb_s + transcript_s;
    let len_f = len as f64;
    lines.push(format!(
        "| pipeline, {minutes} min × 2 people (720p speaker layout, tiny.en) | compose {compose_s:.0} s ({:.2}× real time), thumbnail {thumb_s:.1} s, transcript {transcript_s:.0} s ({} cues) | total {total:.0} s | **{:.2}× real time** (goal > 1) |",
        len_f / compose_s,
        vtt.matches(" --> ").count(),
        len_f / total
    ));

    print_table(lines)
}

fn print_table(lines: Vec<String>) -> anyhow::Result<()> {
    println!("| scenario | measured | with | result |");
    println!("|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
