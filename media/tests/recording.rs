//! Recording end to end, without a browser: real VP8, H.264 and Opus (encoded by ffmpeg from
//! its test sources), packetized with the `rtp` crate's payloaders, handed to the node's own
//! forwarder as a publisher's peer would hand them (its ingest, `Forwarder::ingest`, is the
//! peer's `RtpSink`), recorded through the forwarder's tap ([`Forwarder::record`]) into a
//! bounded channel, written by [`TrackWriter`]s and checked with ffprobe and ffmpeg.
//!
//! Needs `ffmpeg` and `ffprobe` on the PATH: without them the tests fail (they do not skip).

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_media::codec::{Codec, MediaKind};
use parley_media::forward::{Forwarder, RecordSink, RecordedPacket, Upstream};
use parley_media::layers::Layer;
use parley_media::record::TrackWriter;
use parley_media::track::{IncomingRtp, Outbox, RtpSink};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;
use uuid::Uuid;

const MTU: usize = 1200;

// ---------------------------------------------------------------------------------------------
// ffmpeg and ffprobe.

/// Runs a tool; panics with its stderr if it cannot start or fails.
fn run(tool: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}): these tests need ffmpeg and ffprobe on the PATH (apt-get install -y ffmpeg)")
    });
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "`{tool} {}` failed: {stderr}", args.join(" "));
    (stdout, stderr)
}

/// A fresh directory for one test's files.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parley-recording-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `seconds` of VP8 test pattern at 30 fps, a keyframe every `gop` frames, as IVF.
fn make_vp8(dir: &Path, name: &str, size: &str, seconds: f64, gop: u32) -> PathBuf {
    let out = dir.join(name);
    let (t, g) = (seconds.to_string(), gop.to_string());
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size={size}:rate=30"),
            "-t",
            &t,
            "-c:v",
            "libvpx",
            "-b:v",
            "600k",
            "-g",
            &g,
            "-keyint_min",
            &g,
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-f",
            "ivf",
            s(&out),
        ],
    );
    out
}

/// `seconds` of a 440 Hz tone as 20 ms Opus packets, one per Ogg page.
fn make_opus(dir: &Path, seconds: f64) -> PathBuf {
    let out = dir.join("audio.ogg");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &seconds.to_string(),
            "-ac",
            "2",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-frame_duration",
            "20",
            "-page_duration",
            "20000",
            "-f",
            "ogg",
            s(&out),
        ],
    );
    out
}

/// `seconds` of H.264 Constrained Baseline (no B-frames, as WebRTC sends), Annex-B with an
/// access unit delimiter before each frame.
fn make_h264(dir: &Path, seconds: f64) -> PathBuf {
    let out = dir.join("video.h264");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=30",
            "-t",
            &seconds.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-x264-params",
            "aud=1",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
            s(&out),
        ],
    );
    out
}

/// The frames of an IVF file.
fn ivf_frames(path: &Path) -> Vec<Bytes> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"DKIF");
    let header = usize::from(u16::from_le_bytes([data[6], data[7]]));
    let mut at = header;
    let mut frames = Vec::new();
    while at + 12 <= data.len() {
        let size = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        frames.push(Bytes::copy_from_slice(&data[at + 12..at + 12 + size]));
        at += 12 + size;
    }
    frames
}

/// The packets of an Ogg stream (lacing joined across pages), without OpusHead and OpusTags.
fn ogg_packets(path: &Path) -> Vec<Bytes> {
    let data = std::fs::read(path).unwrap();
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= data.len() {
        assert_eq!(&data[at..at + 4], b"OggS");
        let segments = usize::from(data[at + 26]);
        let lacing = &data[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &l in lacing {
            current.extend_from_slice(&data[body..body + usize::from(l)]);
            body += usize::from(l);
            if l < 255 {
                packets.push(Bytes::from(std::mem::take(&mut current)));
            }
        }
        at = body;
    }
    assert!(packets[0].starts_with(b"OpusHead") && packets[1].starts_with(b"OpusTags"));
    packets.split_off(2)
}

/// The access units of an Annex-B stream with AUDs (each starts at an AUD).
fn h264_access_units(path: &Path) -> Vec<Bytes> {
    let data = std::fs::read(path).unwrap();
    let mut starts = Vec::new();
    for i in 0..data.len().saturating_sub(4) {
        if data[i..i + 4] == [0, 0, 0, 1] && data[i + 4] & 0x1F == 9 {
            starts.push(i);
        }
    }
    starts.push(data.len());
    starts.windows(2).map(|w| Bytes::copy_from_slice(&data[w[0]..w[1]])).collect()
}

/// What ffprobe says of a recorded file: its codec, picture size and the span of its packets
/// (first timestamp to the end of the last packet, seconds). A live file has no Duration
/// element (so ffprobe's format duration is N/A): the span is what it plays for.
struct Probe {
    codec: String,
    width: Option<u32>,
    start: f64,
    span: f64,
}

fn probe(path: &Path) -> Probe {
    let (streams, _) =
        run("ffprobe", &["-v", "error", "-show_entries", "stream=codec_name,width", "-of", "default=nw=1", s(path)]);
    let field = |k: &str| streams.lines().find_map(|l| l.strip_prefix(k)).map(str::to_owned);
    let (packets, _) =
        run("ffprobe", &["-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", s(path)]);
    let (mut first, mut end) = (f64::MAX, 0f64);
    for line in packets.lines() {
        let mut it = line.split(',');
        let pts: f64 = it.next().unwrap().parse().unwrap();
        let dur: f64 = it.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
        first = first.min(pts);
        end = end.max(pts + dur);
    }
    assert!(first < f64::MAX, "{} has no packets", path.display());
    Probe {
        codec: field("codec_name=").unwrap(),
        width: field("width=").and_then(|w| w.parse().ok()),
        start: first,
        span: end - first,
    }
}

/// Decodes the whole file; panics on any decoder error.
fn decodes_clean(path: &Path) {
    let (_, stderr) = run("ffmpeg", &["-v", "error", "-i", s(path), "-f", "null", "-"]);
    assert!(stderr.trim().is_empty(), "{} does not decode cleanly: {stderr}", path.display());
}

// ---------------------------------------------------------------------------------------------
// RTP, the forwarder, the recorder.

/// One RTP stream: seq and timestamps from random-looking starts, as a browser's.
struct Stream {
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl Stream {
    fn new(ssrc: u32) -> Stream {
        Stream { ssrc, seq: (ssrc as u16).wrapping_mul(7919), ts: ssrc.wrapping_mul(2_654_435_761) }
    }

    /// The packets of one frame's payloads; the clock advances by `step` after it.
    fn frame(&mut self, payloads: Vec<Bytes>, step: u32) -> Vec<rtp::Packet> {
        let n = payloads.len();
        let packets = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let header = rtp::header::Header {
                    version: 2,
                    marker: i + 1 == n,
                    payload_type: 96,
                    sequence_number: self.seq.wrapping_add(i as u16),
                    timestamp: self.ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                };
                rtp::Packet { header, payload }
            })
            .collect();
        self.seq = self.seq.wrapping_add(n as u16);
        self.ts = self.ts.wrapping_add(step);
        packets
    }
}

/// One packet to hand the ingest at `at` (from the start of the run).
struct Scheduled {
    at: Duration,
    track: &'static str,
    kind: MediaKind,
    rid: Option<&'static str>,
    packet: rtp::Packet,
}

/// Every packet of a 30 fps video (frames packetized by `payloader`), `offset` from the start.
fn video_schedule(
    frames: &[Bytes],
    ssrc: u32,
    rid: Option<&'static str>,
    payloader: &mut dyn Payloader,
) -> Vec<Scheduled> {
    let mut stream = Stream::new(ssrc);
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let at = Duration::from_micros(i as u64 * 33_333);
        let payloads = payloader.payload(MTU, frame).unwrap();
        for (j, packet) in stream.frame(payloads, 3000).into_iter().enumerate() {
            // Packets of a frame leave a little apart (paced).
            let at = at + Duration::from_micros(j as u64 * 200);
            out.push(Scheduled { at, track: "cam", kind: MediaKind::Video, rid, packet });
        }
    }
    out
}

/// Every Opus packet, one per 20 ms.
fn audio_schedule(packets: &[Bytes], ssrc: u32) -> Vec<Scheduled> {
    let mut stream = Stream::new(ssrc);
    packets
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let at = Duration::from_millis(i as u64 * 20);
            stream.frame(vec![p.clone()], 960).into_iter().map(move |packet| Scheduled {
                at,
                track: "mic",
                kind: MediaKind::Audio,
                rid: None,
                packet,
            })
        })
        .collect()
}

/// Swaps every `every`-th packet with the one after it (the network reordered them).
fn reorder(schedule: &mut [Scheduled], every: usize) {
    let mut i = every;
    while i + 1 < schedule.len() {
        let (a, b) = (schedule[i].at, schedule[i + 1].at);
        schedule.swap(i, i + 1);
        (schedule[i].at, schedule[i + 1].at) = (a, b);
        i += every;
    }
}

/// Keyframes the forwarder asked for.
#[derive(Default)]
struct Asks(Mutex<Vec<(Arc<str>, Option<Layer>)>>);

impl Upstream for Asks {
    fn keyframe_wanted(&self, key: Arc<str>, layer: Option<Layer>) {
        self.0.lock().unwrap().push((key, layer));
    }
}

/// A recording sink as the recorder would write it: `try_send` into a bounded channel, count
/// what did not fit.
struct ChannelSink {
    tx: SyncSender<RecordedPacket>,
    full: Mutex<u64>,
}

impl RecordSink for ChannelSink {
    fn on_packet(&self, p: &RecordedPacket) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(p.clone()) {
            *self.full.lock().unwrap() += 1;
        }
    }
}

/// One track's file as the recorder builds it: every take appended, each take's end noted.
struct TrackFile {
    writer: TrackWriter,
    bytes: Vec<u8>,
    boundaries: Vec<usize>,
    keyframes_needed: u32,
    ssrcs: Vec<u32>,
}

/// The recorder's side: the channel drained into one writer per track.
struct Recorder {
    rx: Receiver<RecordedPacket>,
    start: Instant,
    files: HashMap<Arc<str>, TrackFile>,
}

impl Recorder {
    fn drain(&mut self) {
        while let Ok(p) = self.rx.try_recv() {
            let file = self.files.entry(p.track_id.clone()).or_insert_with(|| TrackFile {
                writer: TrackWriter::new(p.kind, p.codec, self.start).unwrap(),
                bytes: Vec::new(),
                boundaries: Vec::new(),
                keyframes_needed: 0,
                ssrcs: Vec::new(),
            });
            if file.ssrcs.last() != Some(&p.ssrc) {
                file.ssrcs.push(p.ssrc);
            }
            if file.writer.push(&p.packet, p.arrival).keyframe_needed {
                file.keyframes_needed += 1;
            }
            let ready = file.writer.take_ready();
            if !ready.is_empty() {
                file.bytes.extend_from_slice(&ready);
                file.boundaries.push(file.bytes.len());
            }
        }
    }

    fn finish(&mut self, dir: &Path) -> HashMap<String, (PathBuf, TrackFile)> {
        self.drain();
        self.files
            .drain()
            .map(|(track, mut f)| {
                let rest = f.writer.finish();
                f.bytes.extend_from_slice(&rest);
                let path = dir.join(format!("{track}.{}", f.writer.file_extension()));
                std::fs::write(&path, &f.bytes).unwrap();
                (track.to_string(), (path, f))
            })
            .collect()
    }
}

/// A publisher's tracks on the node's forwarder, recorded; nobody subscribes.
struct Node {
    forwarder: Forwarder,
    asks: Arc<Asks>,
    ingest: Arc<dyn RtpSink>,
    sink: Arc<ChannelSink>,
    recorder: Recorder,
}

fn node(tracks: &[(&str, Codec)]) -> Node {
    let asks = Arc::new(Asks::default());
    let forwarder = Forwarder::new(asks.clone(), 0);
    let publisher = Uuid::new_v4();
    let (tx, rx) = sync_channel(16_384);
    let sink = Arc::new(ChannelSink { tx, full: Mutex::new(0) });
    for (track, codec) in tracks {
        forwarder.publish(publisher, Arc::from(*track), Arc::from(format!("publisher:{track}")), *codec);
        forwarder.record(publisher, track, sink.clone());
    }
    let ingest = forwarder.ingest(publisher);
    Node { forwarder, asks, ingest, sink, recorder: Recorder { rx, start: Instant::now(), files: HashMap::new() } }
}

impl Node {
    /// Hands every packet to the ingest, in `at` order; `real_time`: at its time (else as
    /// fast as it goes). The recorder drains as it goes.
    fn play(&mut self, mut schedule: Vec<Scheduled>, real_time: bool) {
        schedule.sort_by_key(|s| s.at);
        let t0 = Instant::now();
        self.recorder.start = t0;
        for s in schedule {
            if real_time && let Some(wait) = (t0 + s.at).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let ssrc = s.packet.header.ssrc;
            let incoming = IncomingRtp {
                track_id: Arc::from(s.track),
                kind: s.kind,
                ssrc,
                rid: s.rid.map(Arc::from),
                audio_level: None,
                packet: s.packet,
            };
            let mut outbox = Outbox::default();
            self.ingest.on_rtp(incoming, &mut outbox);
            assert!(outbox.is_empty(), "nobody subscribes");
            self.recorder.drain();
        }
        assert_eq!(*self.sink.full.lock().unwrap(), 0, "the channel never filled");
    }
}

/// The file cut at the take boundary nearest `fraction` of it, as a crash would leave it.
fn truncated(path: &Path, file: &TrackFile, fraction: f64) -> PathBuf {
    let target = (file.bytes.len() as f64 * fraction) as usize;
    let cut = *file.boundaries.iter().min_by_key(|b| b.abs_diff(target)).unwrap();
    let out = path.with_extension(format!("cut.{}", path.extension().unwrap().to_str().unwrap()));
    std::fs::write(&out, &file.bytes[..cut]).unwrap();
    out
}

fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!((actual - expected).abs() <= tolerance, "{what}: {actual:.3} s, expected {expected:.3} ± {tolerance} s");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn vp8_and_opus_through_the_forwarder_make_webm_files_ffmpeg_plays_whole_and_cut() {
    let dir = workdir("vp8-opus");
    let video = ivf_frames(&make_vp8(&dir, "video.ivf", "640x360", 3.0, 30));
    let audio = ogg_packets(&make_opus(&dir, 3.0));
    assert_eq!(video.len(), 90);
    assert!((150..=152).contains(&audio.len()), "3 s of 20 ms packets (and the encoder's delay)");

    let mut node = node(&[("cam", Codec::Vp8), ("mic", Codec::Opus)]);
    let mut payloader = Vp8Payloader::default();
    payloader.enable_picture_id = true;
    let mut schedule = video_schedule(&video, 0x1111_0001, None, &mut payloader);
    reorder(&mut schedule, 17);
    let packets = schedule.len();
    schedule.extend(audio_schedule(&audio, 0x1111_0002));
    node.play(schedule, true);
    let files = node.recorder.finish(&dir);

    let (vpath, vfile) = &files["cam"];
    let (apath, afile) = &files["mic"];
    let (vs, as_) = (vfile.writer.stats(), afile.writer.stats());
    assert_eq!((vs.frames_written, vs.frames_dropped), (90, 0), "every frame, reordered packets put back");
    assert_eq!((as_.frames_written, as_.frames_dropped), (audio.len() as u64, 0));
    assert_eq!(vfile.keyframes_needed, 0, "the stream starts with a keyframe and loses nothing");
    assert_eq!(vs.bytes, vfile.bytes.len() as u64);
    assert!(packets > 90, "frames span packets");
    // Both tracks start when they arrived, on the same clock.
    let (v0, a0) = (vs.first_ms.unwrap(), as_.first_ms.unwrap());
    assert!(v0 < 100 && a0 < 100, "first frames at {v0} / {a0} ms");
    close(vs.last_ms.unwrap() as f64 / 1000.0, 89.0 / 30.0, 0.05, "last video frame");

    let v = probe(vpath);
    assert_eq!((v.codec.as_str(), v.width), ("vp8", Some(640)));
    close(v.span + 1.0 / 30.0, 3.0, 0.2, "video");
    let a = probe(apath);
    assert_eq!(a.codec, "opus");
    close(a.span, 3.0, 0.2, "audio");
    close(a.start - v.start, (a0 as f64 - v0 as f64) / 1000.0, 0.01, "files keep the recording's clock");
    decodes_clean(vpath);
    decodes_clean(apath);

    // A crash: each file cut where a take ended still plays, as far as it got.
    for (path, file, full) in [(vpath, vfile, 3.0), (apath, afile, 3.0)] {
        assert!(file.boundaries.len() > 10, "handed out as it went, not at the end");
        let cut = truncated(path, file, 0.5);
        let p = probe(&cut);
        assert!(p.span > 0.8 && p.span < full - 0.5, "{}: cut file plays {:.2} s", cut.display(), p.span);
        decodes_clean(&cut);
    }
    // Remuxed (as the compose step does), the file has its duration.
    let remuxed = dir.join("remuxed.webm");
    run("ffmpeg", &["-v", "error", "-y", "-i", s(vpath), "-i", s(apath), "-c", "copy", s(&remuxed)]);
    let (duration, _) =
        run("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", s(&remuxed)]);
    close(duration.trim().parse().unwrap(), 3.0, 0.2, "remuxed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lost_video_packet_drops_frames_until_the_next_keyframe_and_the_file_still_plays() {
    let dir = workdir("loss");
    let video = ivf_frames(&make_vp8(&dir, "video.ivf", "640x360", 3.0, 30));
    let mut node = node(&[("cam", Codec::Vp8)]);
    let mut schedule = video_schedule(&video, 0x2222_0001, None, &mut Vp8Payloader::default());
    // Lose the first packet of frame 40 (a delta frame; the next keyframe is frame 60).
    let frame_40 = schedule.iter().position(|s| s.at >= Duration::from_micros(40 * 33_333)).unwrap();
    schedule.remove(frame_40);
    node.play(schedule, false);
    let files = node.recorder.finish(&dir);
    let (path, file) = &files["cam"];
    let stats = file.writer.stats();
    assert!(file.keyframes_needed >= 1, "a keyframe was asked for");
    assert_eq!(stats.frames_dropped, 20, "frames 40..60");
    assert_eq!(stats.frames_written, 70);
    let p = probe(path);
    close(p.span + 1.0 / 30.0, 3.0, 0.2, "video with a hole");
    decodes_clean(path);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn h264_through_the_forwarder_makes_a_matroska_file_ffmpeg_plays() {
    let dir = workdir("h264");
    let units = h264_access_units(&make_h264(&dir, 3.0));
    assert_eq!(units.len(), 90);
    let mut node = node(&[("cam", Codec::H264)]);
    let mut schedule = video_schedule(&units, 0x3333_0001, None, &mut H264Payloader::default());
    reorder(&mut schedule, 23);
    node.play(schedule, false);
    let files = node.recorder.finish(&dir);
    let (path, file) = &files["cam"];
    assert!(path.to_str().unwrap().ends_with(".mkv"));
    let stats = file.writer.stats();
    assert_eq!((stats.frames_written, stats.frames_dropped), (90, 0));
    let p = probe(path);
    assert_eq!((p.codec.as_str(), p.width), ("h264", Some(640)));
    close(p.span + 1.0 / 30.0, 3.0, 0.2, "h264");
    decodes_clean(path);
    let cut = truncated(path, file, 0.4);
    decodes_clean(&cut);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_simulcast_recording_follows_the_best_layer_switching_at_keyframes() {
    let dir = workdir("simulcast");
    let high = ivf_frames(&make_vp8(&dir, "high.ivf", "640x360", 4.0, 15));
    let low = ivf_frames(&make_vp8(&dir, "low.ivf", "320x180", 4.0, 15));
    let mut node = node(&[("cam", Codec::Vp8)]);
    let (high_ssrc, low_ssrc) = (0x4444_000F, 0x4444_000A);
    let mut schedule = video_schedule(&low, low_ssrc, Some("q"), &mut Vp8Payloader::default());
    // The publisher's uplink shrinks: its top layer stops at 1.5 s (after frame 44).
    let mut top = video_schedule(&high, high_ssrc, Some("f"), &mut Vp8Payloader::default());
    top.retain(|s| s.at < Duration::from_micros(45 * 33_333));
    schedule.extend(top);
    node.play(schedule, true);
    let asks = std::mem::take(&mut *node.asks.0.lock().unwrap());
    let files = node.recorder.finish(&dir);
    let (path, file) = &files["cam"];

    // One stream at a time: the high layer as soon as it is seen (the low one may lead for the
    // first packets), then the low one once the high one is gone.
    let mut expected = vec![high_ssrc, low_ssrc];
    if file.ssrcs.first() == Some(&low_ssrc) {
        expected.insert(0, low_ssrc);
    }
    assert_eq!(file.ssrcs, expected, "one SSRC at a time");
    assert!(
        asks.iter().any(|(k, l)| &**k == "publisher:cam" && *l == Some(Layer::Low)),
        "asked for a low keyframe: {asks:?}"
    );
    let stats = file.writer.stats();
    // Every stream begins at a keyframe; at most the low layer's first frame, cut short by the
    // switch to the high one, is lost.
    assert!(stats.frames_dropped <= 1, "{stats:?}");
    let p = probe(path);
    assert_eq!(p.codec, "vp8");
    close(p.span + 1.0 / 30.0, 4.0, 0.2, "simulcast video");
    decodes_clean(path);
    let _ = std::fs::remove_dir_all(&dir);
    drop(node.forwarder);
}
