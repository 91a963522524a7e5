//! Real (decodable) media: VP8 frames from an IVF file and Opus packets from an Ogg file, held
//! in memory and sent in a loop, paced in real time, for tests that need media a decoder (the
//! node's recorder, ffmpeg) accepts.
//!
//! - [`RealMedia::generate`] makes both with ffmpeg (`testsrc` in a colour and a sine tone at a
//!   frequency derived from a label, so participants differ); [`RealMedia::from_files`] reads
//!   files made elsewhere (speech: an espeak-ng WAV encoded to Opus).
//! - Video: one RTP timestamp per frame on the 90 kHz clock, stepping by the IVF frame period
//!   (3000 at 30 fps); each frame split by the rtp crate's `Vp8Payloader` (RFC 7741 descriptor
//!   with a picture id, S=1 on the frame's first packet only), marker on its last packet.
//!   Single layer only (no simulcast, no H.264).
//! - Audio: one RTP packet per Opus packet, its timestamp advanced by the packet's duration at
//!   48 kHz (read from its TOC byte: 960 for 20 ms).
//! - Keyframes cannot be made on demand from pre-encoded frames: a keyframe request (PLI/FIR)
//!   makes the sender skip ahead to the next keyframe of the loop. [`RealMedia::generate`]
//!   encodes with `-g 30` and a whole number of seconds at 30 fps, so a keyframe comes every
//!   second and the loop point (frame 0) is one.
//! - Real payloads carry no stamp: receivers count them
//!   ([`StreamStats::unstamped`](crate::participant::StreamStats::unstamped)) without latency.
//! - In a [`Participant`](crate::Participant): [`Publish::with_real_media`](crate::Publish::with_real_media).
//!   Outside one (a test's own peer connection): [`local_track`] and [`send`].

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use crate::LoadError;
use crate::participant::{PublishControl, Publisher, keyframe_requests_in, opus, rand_u32, vp8};
use crate::synth::Phase;

/// RTP payload bytes per video packet at most (descriptor included): fits a 1500-byte MTU with
/// SRTP and header extensions to spare.
pub const VIDEO_MTU: usize = 1200;
/// webrtc-rs's default payload types, which our offers carry: VP8 and Opus.
const VP8_PAYLOAD_TYPE: u8 = 96;
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Video frame rate [`RealMedia::generate`] encodes at, and its keyframe interval in frames.
const GENERATE_FPS: u32 = 30;
const GENERATE_GOP: u32 = 30;

/// One VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    pub data: Bytes,
    /// The frame tag's P bit is 0.
    pub keyframe: bool,
}

/// One Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket {
    pub data: Bytes,
    /// Its duration in 48 kHz samples (960 for 20 ms).
    pub samples: u32,
}

/// Encoded media held in memory, sent in a loop.
#[derive(Clone, PartialEq, Eq)]
pub struct RealMedia {
    pub width: u16,
    pub height: u16,
    /// Time between video frames (from the IVF timebase; 1/30 s for what `generate` makes).
    pub frame_period: Duration,
    /// The RTP timestamp step per video frame on the 90 kHz clock (3000 at 30 fps).
    pub frame_ticks: u32,
    pub frames: Vec<VideoFrame>,
    pub audio: Vec<AudioPacket>,
}

impl std::fmt::Debug for RealMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealMedia")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("frame_period", &self.frame_period)
            .field("frames", &self.frames.len())
            .field("keyframes", &self.frames.iter().filter(|f| f.keyframe).count())
            .field("audio_packets", &self.audio.len())
            .finish()
    }
}

impl RealMedia {
    /// Encodes `seconds` of `testsrc` video (`width`×`height`, 30 fps, VP8 600 kbit/s, a
    /// keyframe every 30 frames) and a sine tone (Opus, 20 ms packets) with ffmpeg, in a temporary
    /// directory, and reads them in. `label` picks the video's hue and the tone's frequency,
    /// so different labels look and sound different.
    pub fn generate(seconds: u32, width: u32, height: u32, label: &str) -> Result<RealMedia, LoadError> {
        let seconds = seconds.max(1);
        let dir = std::env::temp_dir().join(format!("parley-real-media-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| LoadError::Media(format!("{}: {e}", dir.display())))?;
        let result = (|| {
            let (ivf, ogg) = (dir.join("video.ivf"), dir.join("audio.ogg"));
            let h = fnv1a(label);
            let hue = h % 360;
            let frequency = 220 + (h / 360 % 32) * 30;
            let t = seconds.to_string();
            let size = format!("testsrc=size={width}x{height}:rate={GENERATE_FPS}");
            let gop = GENERATE_GOP.to_string();
            let vf = format!("hue=h={hue}");
            #[rustfmt::skip]
            let video = [
                "-f", "lavfi", "-i", &size, "-t", &t, "-vf", &vf,
                "-c:v", "libvpx", "-b:v", "600k", "-g", &gop, "-keyint_min", &gop,
                "-deadline", "realtime", "-cpu-used", "8", "-lag-in-frames", "0", "-auto-alt-ref", "0",
                "-error-resilient", "1", "-f", "ivf",
            ];
            ffmpeg(&video, &ivf)?;
            let tone = format!("sine=frequency={frequency}:sample_rate=48000");
            #[rustfmt::skip]
            let audio = [
                "-f", "lavfi", "-i", &tone, "-t", &t, "-ac", "2", "-c:a", "libopus", "-b:a", "48k",
                "-frame_duration", "20", "-page_duration", "20000", "-f", "ogg",
            ];
            ffmpeg(&audio, &ogg)?;
            RealMedia::from_files(&ivf, &ogg)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Reads a VP8 IVF file and an Ogg Opus file.
    pub fn from_files(ivf: impl AsRef<Path>, ogg: impl AsRef<Path>) -> Result<RealMedia, LoadError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| LoadError::Media(format!("{}: {e}", p.display())));
        RealMedia::from_bytes(&read(ivf.as_ref())?, &read(ogg.as_ref())?)
    }

    /// Parses a VP8 IVF file's bytes and an Ogg Opus file's bytes.
    pub fn from_bytes(ivf: &[u8], ogg: &[u8]) -> Result<RealMedia, LoadError> {
        let video = parse_ivf(ivf)?;
        let audio = parse_ogg_opus(ogg)?;
        if video.frames.is_empty() || audio.is_empty() {
            return Err(LoadError::Media(format!(
                "real media needs video and audio: {} frames, {} audio packets",
                video.frames.len(),
                audio.len()
            )));
        }
        if !video.frames[0].keyframe {
            return Err(LoadError::Media("the IVF's first frame is not a keyframe".to_owned()));
        }
        // The timebase is seconds per timestamp unit; ffmpeg writes one unit per frame.
        let (num, den) = (u64::from(video.timebase.0), u64::from(video.timebase.1));
        let fps_ok = num > 0 && den > 0 && (1..=240).contains(&(den / num));
        let (num, den) = if fps_ok { (num, den) } else { (1, 30) };
        Ok(RealMedia {
            width: video.width,
            height: video.height,
            frame_period: Duration::from_nanos(1_000_000_000 * num / den),
            frame_ticks: (90_000 * num / den) as u32,
            frames: video.frames,
            audio,
        })
    }

    /// How long one pass of the video lasts.
    pub fn video_duration(&self) -> Duration {
        self.frame_period * self.frames.len() as u32
    }

    /// How long one pass of the audio lasts.
    pub fn audio_duration(&self) -> Duration {
        Duration::from_micros(self.audio.iter().map(|p| u64::from(p.samples)).sum::<u64>() * 1000 / 48)
    }

    /// The index of the first keyframe at or after `i`, wrapping (frame 0 is one).
    fn next_keyframe(&self, i: usize) -> usize {
        (i..self.frames.len()).find(|&j| self.frames[j].keyframe).unwrap_or(0)
    }
}

fn ffmpeg<S: AsRef<str>>(args: &[S], out: &Path) -> Result<(), LoadError> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args.iter().map(AsRef::as_ref))
        .arg(out)
        .output()
        .map_err(|e| LoadError::Media(format!("cannot run ffmpeg (is it installed?): {e}")))?;
    if !output.status.success() {
        return Err(LoadError::Media(format!(
            "ffmpeg failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// An IVF file's contents.
#[derive(Debug)]
pub(crate) struct Ivf {
    pub width: u16,
    pub height: u16,
    /// (numerator, denominator): seconds per timestamp unit.
    pub timebase: (u32, u32),
    pub frames: Vec<VideoFrame>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IVF file of VP8: a 32-byte header (`DKIF`, version, header size, `VP80`, width,
/// height, timebase denominator and numerator, frame count), then per frame a 12-byte header
/// (size u32, timestamp u64, little-endian) and the frame.
pub(crate) fn parse_ivf(b: &[u8]) -> Result<Ivf, LoadError> {
    let bad = |what: &str| LoadError::Media(format!("IVF: {what}"));
    if b.len() < 32 || &b[..4] != b"DKIF" {
        return Err(bad("no DKIF header"));
    }
    if &b[8..12] != b"VP80" {
        return Err(bad(&format!("codec {:?}, not VP80", String::from_utf8_lossy(&b[8..12]))));
    }
    let header_size = usize::from(le16(b, 6)).max(32);
    let (width, height) = (le16(b, 12), le16(b, 14));
    let (den, num) = (le32(b, 16), le32(b, 20));
    let mut frames = Vec::new();
    let mut at = header_size;
    while at + 12 <= b.len() {
        let size = le32(b, at) as usize;
        let start = at + 12;
        let end = start.checked_add(size).filter(|&e| e <= b.len()).ok_or_else(|| bad("truncated frame"))?;
        if size > 0 {
            let data = Bytes::copy_from_slice(&b[start..end]);
            frames.push(VideoFrame { keyframe: data[0] & 0x01 == 0, data });
        }
        at = end;
    }
    Ok(Ivf { width, height, timebase: (num, den), frames })
}

/// The Opus packets of an Ogg file (the first logical stream), without the `OpusHead` and
/// `OpusTags` headers. Pages: `OggS`, version, type, granule (8), serial (4), sequence (4),
/// CRC (4), segment count, segment table; a packet ends at the first segment shorter than 255
/// bytes and may continue on the next page.
pub(crate) fn parse_ogg_opus(b: &[u8]) -> Result<Vec<AudioPacket>, LoadError> {
    let bad = |what: &str| LoadError::Media(format!("Ogg: {what}"));
    let mut packets: Vec<Bytes> = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut serial = None;
    let mut at = 0;
    while at < b.len() {
        if b.len() < at + 27 || &b[at..at + 4] != b"OggS" {
            return Err(bad(&format!("no page at byte {at}")));
        }
        let page_serial = le32(b, at + 14);
        let segments = usize::from(b[at + 26]);
        let table = b.get(at + 27..at + 27 + segments).ok_or_else(|| bad("truncated segment table"))?;
        let mut body = at + 27 + segments;
        let first_serial = *serial.get_or_insert(page_serial);
        for &len in table {
            let len = usize::from(len);
            let seg = b.get(body..body + len).ok_or_else(|| bad("truncated page"))?;
            body += len;
            if page_serial != first_serial {
                continue;
            }
            partial.extend_from_slice(seg);
            if len < 255 {
                packets.push(Bytes::from(std::mem::take(&mut partial)));
            }
        }
        at = body;
    }
    let mut out = Vec::new();
    for p in packets {
        if p.starts_with(b"OpusHead") || p.starts_with(b"OpusTags") || p.is_empty() {
            continue;
        }
        let samples = opus_samples(&p).ok_or_else(|| bad("malformed Opus packet"))?;
        out.push(AudioPacket { data: p, samples });
    }
    if out.is_empty() {
        return Err(bad("no Opus packets"));
    }
    Ok(out)
}

/// The duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1).
pub(crate) fn opus_samples(p: &[u8]) -> Option<u32> {
    let toc = *p.first()?;
    let config = toc >> 3;
    // Frame sizes in units of 2.5 ms (120 samples).
    let units = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*p.get(1)? & 0x3f),
    };
    Some(units * 120 * frames)
}

/// Splits VP8 frames into RTP packets: sequence numbers run on, one timestamp per frame.
pub(crate) struct Vp8Packetizer {
    payloader: Vp8Payloader,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub ticks_per_frame: u32,
}

impl Vp8Packetizer {
    pub fn new(ssrc: u32, seq: u16, ts: u32, ticks_per_frame: u32) -> Self {
        let mut payloader = Vp8Payloader::default();
        payloader.enable_picture_id = true;
        Vp8Packetizer { payloader, ssrc, seq, ts, ticks_per_frame }
    }

    /// The packets of one frame (marker on the last), then the timestamp steps on.
    pub fn packetize(&mut self, frame: &Bytes) -> Result<Vec<rtp::Packet>, LoadError> {
        let payloads = self.payloader.payload(VIDEO_MTU, frame).map_err(|e| LoadError::Media(e.to_string()))?;
        let n = payloads.len();
        let packets = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let header = rtp::header::Header {
                    version: 2,
                    marker: i + 1 == n,
                    payload_type: VP8_PAYLOAD_TYPE,
                    sequence_number: self.seq.wrapping_add(i as u16),
                    timestamp: self.ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                };
                rtp::Packet { header, payload }
            })
            .collect();
        self.seq = self.seq.wrapping_add(n as u16);
        self.ts = self.ts.wrapping_add(self.ticks_per_frame);
        Ok(packets)
    }
}

/// Where one real-media stream sends: its SSRC and where its sequence number and timestamp
/// carry on across publishes (`seq << 32 | timestamp`).
pub(crate) struct RealStream {
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub next: Arc<AtomicU64>,
    /// The audio-level extension's id and the level to send (RFC 6464), audio only.
    pub audio_level: Option<(u8, Option<u8>)>,
}

/// Sends `media`'s video on `s` until `control` stops: a frame per frame period, skipping ahead
/// to the next keyframe when `keyframe_wanted` names our SSRC.
pub(crate) async fn send_video(
    s: RealStream,
    media: Arc<RealMedia>,
    control: Arc<PublishControl>,
    keyframe_wanted: Arc<Mutex<HashSet<u32>>>,
) {
    if media.frames.is_empty() {
        return;
    }
    let resume = s.next.load(Ordering::Acquire);
    let mut p = Vp8Packetizer::new(s.ssrc, (resume >> 32) as u16, resume as u32, media.frame_ticks);
    let mut tick = tokio::time::interval(media.frame_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0usize;
    while !control.stop.load(Ordering::Acquire) {
        tick.tick().await;
        if control.stop.load(Ordering::Acquire) {
            return;
        }
        let asked = keyframe_wanted.lock().unwrap_or_else(|e| e.into_inner()).remove(&s.ssrc);
        if asked {
            i = media.next_keyframe(i);
        }
        let packets = match p.packetize(&media.frames[i].data) {
            Ok(packets) => packets,
            Err(e) => {
                tracing::warn!(error = %e, "VP8 frame not packetized");
                Vec::new()
            }
        };
        for packet in packets {
            if s.track.write_rtp(packet).await.is_err() {
                return;
            }
            if control.phase.load(Ordering::Acquire) == Phase::Measure as u8 {
                control.sent_video.fetch_add(1, Ordering::AcqRel);
            }
        }
        s.next.store(u64::from(p.seq) << 32 | u64::from(p.ts), Ordering::Release);
        i = (i + 1) % media.frames.len();
    }
}

/// Sends `media`'s audio on `s` until `control` stops: each packet at its time, its timestamp
/// advanced by its duration.
pub(crate) async fn send_audio(s: RealStream, media: Arc<RealMedia>, control: Arc<PublishControl>) {
    if media.audio.is_empty() {
        return;
    }
    let resume = s.next.load(Ordering::Acquire);
    let (mut seq, mut ts) = ((resume >> 32) as u16, resume as u32);
    let start = tokio::time::Instant::now();
    let mut elapsed_samples = 0u64;
    let mut i = 0usize;
    while !control.stop.load(Ordering::Acquire) {
        tokio::time::sleep_until(start + Duration::from_micros(elapsed_samples * 1000 / 48)).await;
        if control.stop.load(Ordering::Acquire) {
            return;
        }
        let packet = &media.audio[i];
        let mut rtp_packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: OPUS_PAYLOAD_TYPE,
                sequence_number: seq,
                timestamp: ts,
                ssrc: s.ssrc,
                ..Default::default()
            },
            payload: packet.data.clone(),
        };
        if let Some((id, default_level)) = s.audio_level {
            let level = match control.level.load(Ordering::Acquire) {
                0 => default_level,
                l => Some(l - 1),
            };
            if let Some(level) = level {
                let _ = rtp_packet.header.set_extension(id, Bytes::copy_from_slice(&[level & 0x7f]));
            }
        }
        if s.track.write_rtp(rtp_packet).await.is_err() {
            return;
        }
        if control.phase.load(Ordering::Acquire) == Phase::Measure as u8 {
            control.sent_audio.fetch_add(1, Ordering::AcqRel);
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(packet.samples);
        elapsed_samples += u64::from(packet.samples);
        s.next.store(u64::from(seq) << 32 | u64::from(ts), Ordering::Release);
        i = (i + 1) % media.audio.len();
    }
}

/// A local track for [`send`], outside a [`Participant`](crate::Participant) (a test's own
/// peer connection): VP8 for video, Opus for audio, one encoding with a random SSRC, which is
/// returned with it.
pub fn local_track(stream_id: &str, track_id: &str, kind: RtpCodecKind) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand_u32();
    let codec = if kind == RtpCodecKind::Video { vp8() } else { opus() };
    let encoding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
        codec,
        ..Default::default()
    };
    let track =
        MediaStreamTrack::new(stream_id.to_owned(), track_id.to_owned(), track_id.to_owned(), kind, vec![encoding]);
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc)
}

/// Sends `media` on a track made by [`local_track`] (its video for a video track, its audio for
/// an audio track) in real time until the returned [`Publisher`] stops or drops. Keyframe
/// requests the track receives (if an interceptor delivers them) skip ahead to a keyframe.
pub fn send(track: Arc<TrackLocalStaticRTP>, ssrc: u32, kind: RtpCodecKind, media: Arc<RealMedia>) -> Publisher {
    let control = Arc::new(PublishControl::default());
    let stream = RealStream {
        track: track.clone(),
        ssrc,
        next: Arc::new(AtomicU64::new(u64::from(rand_u32()))),
        audio_level: None,
    };
    if kind == RtpCodecKind::Video {
        let wanted: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let w = wanted.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                let asked = keyframe_requests_in(&event);
                w.lock().unwrap_or_else(|e| e.into_inner()).extend(asked);
            }
        });
        tokio::spawn(send_video(stream, media, control.clone(), wanted));
    } else {
        tokio::spawn(send_audio(stream, media, control.clone()));
    }
    Publisher { control }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::vp8::Vp8Packet;
    use rtc::rtp::packetizer::Depacketizer;

    fn ivf(frames: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"DKIF");
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&32u16.to_le_bytes());
        b.extend_from_slice(b"VP80");
        b.extend_from_slice(&320u16.to_le_bytes());
        b.extend_from_slice(&240u16.to_le_bytes());
        b.extend_from_slice(&30u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(i as u64).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    /// One Ogg page of `packets` (CRC not checked by the parser, left 0); a packet of 255×k
    /// bytes or more gets its lacing values, and `continued` leaves the last one open.
    fn page(serial: u32, seq: u32, packets: &[&[u8]], open_last: bool) -> Vec<u8> {
        let mut table = Vec::new();
        let mut body = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let mut n = p.len();
            while n >= 255 {
                table.push(255u8);
                n -= 255;
            }
            if !(open_last && i + 1 == packets.len()) {
                table.push(n as u8);
            }
            body.extend_from_slice(p);
        }
        let mut b = b"OggS".to_vec();
        b.push(0);
        b.push(0);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&serial.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(table.len() as u8);
        b.extend_from_slice(&table);
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn an_ivf_is_read_frame_by_frame_with_its_keyframes() {
        let key = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0xaa];
        let inter = [0x31, 0x02, 0x00, 0xbb];
        let parsed = parse_ivf(&ivf(&[&key, &inter, &inter])).unwrap();
        assert_eq!((parsed.width, parsed.height, parsed.timebase), (320, 240, (1, 30)));
        let keys: Vec<bool> = parsed.frames.iter().map(|f| f.keyframe).collect();
        assert_eq!(keys, [true, false, false]);
        assert_eq!(&parsed.frames[0].data[..], &key);
        assert!(parse_ivf(b"RIFF").is_err());
        let mut truncated = ivf(&[&key]);
        truncated.pop();
        assert!(parse_ivf(&truncated).is_err(), "a frame cut short is an error");
    }

    #[test]
    fn ogg_pages_give_opus_packets_without_the_headers() {
        let head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";
        let tags = b"OpusTags\x00\x00\x00\x00\x00\x00\x00\x00";
        let p20 = [0xfcu8, 1, 2, 3]; // CELT FB 20 ms, one frame
        let long = vec![0x78u8; 600]; // hybrid FB 20 ms, spans pages: 255 + (255 + 90)
        let mut b = page(7, 0, &[head], false);
        b.extend(page(7, 1, &[tags], false));
        b.extend(page(9, 0, &[b"other stream"], false));
        b.extend(page(7, 2, &[&p20, &long[..255]], true));
        b.extend(page(7, 3, &[&long[255..]], false));
        let packets = parse_ogg_opus(&b).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(&packets[0].data[..], &p20);
        assert_eq!(packets[1].data.len(), 600, "a packet continued on the next page is joined");
        assert!(packets.iter().all(|p| p.samples == 960));
        // TOC durations: SILK 60 ms, CELT 2.5 ms ×2 (code 1), CELT 10 ms ×3 (code 3).
        assert_eq!(opus_samples(&[0x18]), Some(2880));
        assert_eq!(opus_samples(&[0x81]), Some(240));
        assert_eq!(opus_samples(&[0xf3, 0x03]), Some(1440));
    }

    #[test]
    fn a_vp8_frame_is_split_with_s_on_the_first_packet_and_the_marker_on_the_last() {
        let mut p = Vp8Packetizer::new(0x1234, 65534, 4_294_966_000, 3000);
        let frame: Bytes = (0..3000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        let packets = p.packetize(&frame).unwrap();
        assert_eq!(packets.len(), 3, "3000 bytes in 1200-byte payloads");
        let mut joined = Vec::new();
        for (i, pkt) in packets.iter().enumerate() {
            assert!(pkt.payload.len() <= VIDEO_MTU);
            let mut d = Vp8Packet::default();
            joined.extend_from_slice(&d.depacketize(&pkt.payload).unwrap());
            assert_eq!(d.s == 1, i == 0, "S only on the first packet");
            assert_eq!(d.pid, 0);
            assert_eq!(d.i, 1, "a picture id, as browsers send");
            assert_eq!(pkt.header.marker, i == 2, "marker only on the last packet");
            assert_eq!(pkt.header.timestamp, 4_294_966_000, "one timestamp per frame");
            assert_eq!((pkt.header.ssrc, pkt.header.payload_type), (0x1234, 96));
        }
        let seqs: Vec<u16> = packets.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, [65534, 65535, 0], "sequence numbers wrap");
        assert_eq!(joined, &frame[..], "the frame reassembles");
        let next = p.packetize(&Bytes::from_static(&[0x31, 0x02, 0x00, 0xbb])).unwrap();
        assert_eq!(next.len(), 1);
        assert!(next[0].header.marker);
        assert_eq!(next[0].header.sequence_number, 1);
        assert_eq!(next[0].header.timestamp, 4_294_966_000u32.wrapping_add(3000), "30 fps: +3000 at 90 kHz");
    }

    #[test]
    fn media_from_bytes_takes_its_rate_from_the_timebase_and_finds_keyframes() {
        let key = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        let inter = [0x31, 0x02, 0x00];
        let mut ogg = page(1, 0, &[b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"], false);
        ogg.extend(page(1, 1, &[&[0xfc, 0], &[0xfc, 1]], false));
        let m = RealMedia::from_bytes(&ivf(&[&key, &inter, &inter, &key, &inter]), &ogg).unwrap();
        assert_eq!((m.frame_ticks, m.frame_period), (3000, Duration::from_nanos(33_333_333)));
        assert_eq!(m.audio_duration(), Duration::from_millis(40));
        assert_eq!((m.next_keyframe(0), m.next_keyframe(1), m.next_keyframe(4)), (0, 3, 0));
        assert!(RealMedia::from_bytes(&ivf(&[&inter, &key]), &ogg).is_err(), "must start on a keyframe");
    }
}
