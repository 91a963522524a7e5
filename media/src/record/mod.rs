//! The capture half of recording, without decoding: one published track's RTP → whole frames →
//! a Matroska/WebM file, handed out in pieces each of which continues a valid file, so what was
//! handed out survives a crash.
//!
//! - [`frames`]: the depacketizers (VP8, H.264 to Annex-B, Opus), reordering, loss → "keyframe
//!   needed".
//! - [`clock`]: the track's RTP timestamps on the recording's clock (ms since it started).
//! - [`webm`]: the muxer (EBML header, unknown-size Segment and Clusters, SimpleBlocks), with
//!   [`avc`] for what H.264 needs in a Matroska file (AVCC, the decoder configuration record).
//! - [`TrackWriter`]: the three together for one track, a plain object (packets in, bytes out).
//!
//! The forwarder's tap ([`crate::forward::Forwarder::record`]) hands a recording sink every
//! packet of the tracks it records, one simulcast layer at a time; whoever owns the sink (the
//! recorder) runs a writer per track off the receive path, asks the publisher for a keyframe
//! when a writer says so, and appends [`TrackWriter::take_ready`] to the track's file.

pub mod avc;
pub mod clock;
pub mod frames;
pub mod webm;

use std::time::Instant;

use rtc::rtp;

use crate::codec::{Codec, MediaKind};
use clock::TrackClock;
use frames::{Assembled, Depacketizer, Frame};
use webm::{TrackInfo, WebmMuxer};

/// Why a track cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The codec is not of the track's kind (e.g. Opus for a video track).
    #[error("{codec:?} cannot be recorded as a {kind:?} track")]
    KindMismatch { kind: MediaKind, codec: Codec },
}

/// What one packet asks of the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Ask the publisher for a keyframe: video before its first one, after a loss, or after a
    /// new stream that did not start with one. Reported at most every
    /// [`frames::KEYFRAME_REASK`] while it waits (throttle further as for any PLI).
    pub keyframe_needed: bool,
}

/// A writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackWriterStats {
    /// Frames in the file.
    pub frames_written: u64,
    /// Frames lost to packet loss or dropped waiting for a keyframe.
    pub frames_dropped: u64,
    /// The first and the last frame written, ms on the recording's clock.
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    /// Bytes of the file so far (handed out or ready to be).
    pub bytes: u64,
}

/// One track's file being written: packets in ([`TrackWriter::push`]), the file's bytes out
/// ([`TrackWriter::take_ready`], [`TrackWriter::finish`]). A plain object: no I/O, no clock of
/// its own (arrival times come with the packets).
///
/// One SSRC at a time; a packet of another SSRC starts a new stream on the same clock (a
/// simulcast switch, a republish): what was held of the old one is written or dropped, the new
/// one's timestamps continue from the last frame, and video waits for its keyframe.
#[derive(Debug)]
pub struct TrackWriter {
    codec: Codec,
    depacketizer: Depacketizer,
    clock: TrackClock,
    ssrc: Option<u32>,
    /// Created with the first frame the header can be written for.
    muxer: Option<WebmMuxer>,
    stats: TrackWriterStats,
}

impl TrackWriter {
    /// A writer for a `kind` track in `codec` whose clock's zero is `recording_start` (shared
    /// by every track of the recording).
    pub fn new(kind: MediaKind, codec: Codec, recording_start: Instant) -> Result<TrackWriter, RecordError> {
        if codec.kind() != kind {
            return Err(RecordError::KindMismatch { kind, codec });
        }
        Ok(TrackWriter {
            codec,
            depacketizer: Depacketizer::new(codec),
            clock: TrackClock::new(codec.clock_rate(), recording_start),
            ssrc: None,
            muxer: None,
            stats: TrackWriterStats::default(),
        })
    }

    /// One received packet (arrived at `arrival`); returns whether a keyframe should be
    /// requested from the publisher.
    pub fn push(&mut self, packet: &rtp::Packet, arrival: Instant) -> PushOutcome {
        let ssrc = packet.header.ssrc;
        if self.ssrc.is_some_and(|s| s != ssrc) {
            // The old stream's end: a frame it left unfinished is dropped, but no keyframe is
            // asked for on its account (the new stream waits for one of its own).
            let rest = self.depacketizer.flush();
            self.write(rest);
            self.depacketizer = Depacketizer::new(self.codec);
            self.clock.new_stream();
        }
        self.ssrc = Some(ssrc);
        let got = self.depacketizer.push(packet, arrival);
        PushOutcome { keyframe_needed: self.write(got) }
    }

    /// The bytes completed since the last call: the header first, then clusters block by
    /// block. Append them to the file (or upload them as its next piece): every prefix of
    /// takes is a valid file, so a crash loses only what was not taken, and concatenating every
    /// take (then [`TrackWriter::finish`]) gives the whole file. Clusters have unknown sizes,
    /// so the open one is handed out as far as it goes without being closed: a video cluster
    /// still starts at a keyframe. Empty until the first frame (video: the first keyframe).
    pub fn take_ready(&mut self) -> Vec<u8> {
        self.muxer.as_mut().map(WebmMuxer::take).unwrap_or_default()
    }

    /// The end of the track: what the depacketizer still holds is written (a frame without
    /// its end is dropped), and the rest of the file returned. Nothing more is needed to close
    /// it (unknown sizes end at the end of the file).
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = self.depacketizer.flush();
        self.write(rest);
        self.take_ready()
    }

    /// The writer's counters.
    pub fn stats(&self) -> TrackWriterStats {
        TrackWriterStats { bytes: self.muxer.as_ref().map_or(0, WebmMuxer::bytes_written), ..self.stats }
    }

    /// The file's MIME type: `video/webm` (VP8), `audio/webm` (Opus), `video/x-matroska`
    /// (H.264, which WebM does not allow).
    pub fn mime_type(&self) -> &'static str {
        match self.codec {
            Codec::Vp8 => "video/webm",
            Codec::Opus => "audio/webm",
            Codec::H264 => "video/x-matroska",
        }
    }

    /// The file's usual extension: `webm`, or `mkv` for H.264.
    pub fn file_extension(&self) -> &'static str {
        match self.codec {
            Codec::H264 => "mkv",
            _ => "webm",
        }
    }

    /// Writes what the depacketizer completed; whether a keyframe is needed.
    fn write(&mut self, got: Assembled) -> bool {
        self.stats.frames_dropped += got.dropped;
        let mut keyframe_needed = got.keyframe_needed;
        for frame in got.frames {
            keyframe_needed |= !self.write_frame(frame);
        }
        keyframe_needed
    }

    /// One frame into the file; `false` if it had to be dropped because the header cannot be
    /// written from it (an H.264 keyframe without its SPS/PPS).
    fn write_frame(&mut self, frame: Frame) -> bool {
        if self.muxer.is_none() {
            let Some(info) = self.track_info(&frame) else {
                self.stats.frames_dropped += 1;
                return false;
            };
            self.muxer = Some(WebmMuxer::new(&info));
        }
        let Some(muxer) = self.muxer.as_mut() else { return false };
        let ms = self.clock.map(frame.rtp_timestamp, frame.arrival);
        match self.codec {
            Codec::H264 => muxer.write_frame(ms, frame.keyframe, &avc::to_avcc(&frame.data)),
            _ => muxer.write_frame(ms, frame.keyframe, &frame.data),
        }
        let written = muxer.last_ms();
        self.stats.first_ms = self.stats.first_ms.or(written);
        self.stats.last_ms = written;
        self.stats.frames_written += 1;
        true
    }

    /// The header's description of the track, from its first frame (video: a keyframe).
    fn track_info(&self, first: &Frame) -> Option<TrackInfo> {
        match self.codec {
            Codec::Opus => Some(TrackInfo::Opus),
            Codec::Vp8 => {
                let (width, height) = vp8_size(&first.data).unwrap_or((640, 360));
                Some(TrackInfo::Vp8 { width, height })
            }
            Codec::H264 => {
                let (sps, pps) = avc::parameter_sets(&first.data)?;
                let info = avc::parse_sps(sps)?;
                let avcc = avc::decoder_config(sps, pps)?;
                Some(TrackInfo::H264 { width: info.width, height: info.height, avcc })
            }
        }
    }
}

/// Width and height of a VP8 keyframe (RFC 6386 §9.1: 3-byte frame tag, start code, then
/// 14-bit width and height).
fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    /// A VP8 keyframe (640x360) or delta frame payload, descriptor included.
    fn vp8(key: bool) -> Bytes {
        if key {
            Bytes::from_static(&[0x10, 0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0xAA])
        } else {
            Bytes::from_static(&[0x10, 0x31, 0x0c, 0x00, 0xBB])
        }
    }

    fn packet(ssrc: u32, seq: u16, ts: u32, payload: Bytes) -> rtp::Packet {
        let header = rtp::header::Header {
            version: 2,
            marker: true,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        };
        rtp::Packet { header, payload }
    }

    #[test]
    fn a_kind_that_does_not_match_the_codec_is_refused() {
        let e = TrackWriter::new(MediaKind::Video, Codec::Opus, Instant::now()).unwrap_err();
        assert_eq!(e, RecordError::KindMismatch { kind: MediaKind::Video, codec: Codec::Opus });
        let w = TrackWriter::new(MediaKind::Video, Codec::H264, Instant::now()).unwrap();
        assert_eq!((w.mime_type(), w.file_extension()), ("video/x-matroska", "mkv"));
    }

    #[test]
    fn nothing_before_the_first_keyframe_then_the_header_and_blocks() {
        let t0 = Instant::now();
        let mut w = TrackWriter::new(MediaKind::Video, Codec::Vp8, t0).unwrap();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(w.push(&packet(7, 1, 0, vp8(false)), ms(100)).keyframe_needed);
        assert!(w.take_ready().is_empty(), "no header before a keyframe");
        assert!(!w.push(&packet(7, 2, 3000, vp8(true)), ms(133)).keyframe_needed);
        let first = w.take_ready();
        assert!(first.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]));
        assert!(first.windows(3).any(|x| x == [0xB0, 0x82, 0x02]), "PixelWidth 640");
        w.push(&packet(7, 3, 6000, vp8(false)), ms(166));
        let s = w.stats();
        assert_eq!((s.frames_written, s.frames_dropped, s.first_ms, s.last_ms), (2, 1, Some(133), Some(166)));
        let rest = w.finish();
        assert_eq!(rest, [0xA3, 0x88, 0x81, 0x00, 0x21, 0x00, 0x31, 0x0c, 0x00, 0xBB], "the delta block at +33 ms");
        assert_eq!(w.stats().bytes, (first.len() + rest.len()) as u64);
    }

    #[test]
    fn a_new_ssrc_continues_the_clock_and_waits_for_its_keyframe() {
        let t0 = Instant::now();
        let mut w = TrackWriter::new(MediaKind::Video, Codec::Vp8, t0).unwrap();
        let ms = |n| t0 + Duration::from_millis(n);
        w.push(&packet(1, 10, 90_000, vp8(true)), ms(0));
        w.push(&packet(1, 11, 93_000, vp8(false)), ms(33));
        // Another layer, unrelated numbers: a delta first is dropped.
        assert!(w.push(&packet(2, 5_000, 7_777_777, vp8(false)), ms(66)).keyframe_needed);
        assert!(!w.push(&packet(2, 5_001, 7_780_777, vp8(true)), ms(100)).keyframe_needed);
        w.push(&packet(2, 5_002, 7_783_777, vp8(false)), ms(133));
        let s = w.stats();
        assert_eq!((s.frames_written, s.frames_dropped), (4, 1));
        assert_eq!(s.last_ms, Some(133), "continued 67 ms (wall time) after the last frame, then by RTP time");
    }

    #[test]
    fn opus_writes_at_once() {
        let t0 = Instant::now();
        let mut w = TrackWriter::new(MediaKind::Audio, Codec::Opus, t0).unwrap();
        for i in 0..10u16 {
            let out = w.push(&packet(9, i, 960 * u32::from(i), Bytes::from_static(&[0xFC, 1, 2])), t0);
            assert!(!out.keyframe_needed);
        }
        assert_eq!(w.stats().last_ms, Some(180));
        assert!(w.take_ready().windows(6).any(|x| x == b"A_OPUS"));
    }
}
