//! RTP packets → whole frames, without decoding: the payload formats of VP8 (RFC 7741),
//! H.264 (RFC 6184: single NAL units, STAP-A, FU-A, out as Annex-B access units) and Opus
//! (one packet, one frame).
//!
//! - **Order**: packets are put back in sequence order within a small window: one that is
//!   missing is waited for while fewer than [`REORDER_MAX_HELD`] packets queue behind it and
//!   for at most [`REORDER_MAX_WAIT`] (long enough for a NACKed packet to come back), then
//!   given up as lost.
//! - **Frames**: a frame is the packets of one RTP timestamp; it ends at the marker bit, or
//!   when the timestamp changes.
//! - **Loss**: a lost packet breaks the video frame it belonged to (and, between frames, the
//!   next one). A broken frame and every frame after it until the next keyframe are dropped (a
//!   decoder could not use them), and the caller is told a keyframe is needed; so is video
//!   before its first keyframe. Asked again every [`KEYFRAME_REASK`] while it waits. Audio
//!   just has a hole.
//! - Empty payloads (padding-only packets) take their sequence number and add nothing.
//!
//! One SSRC at a time: a new stream needs a new [`Depacketizer`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp;

use super::avc;
use crate::codec::Codec;

/// Packets that may queue behind a missing one before it is given up as lost.
pub const REORDER_MAX_HELD: usize = 64;
/// How long a missing packet is waited for (measured by the arrival of later ones).
pub const REORDER_MAX_WAIT: Duration = Duration::from_millis(150);
/// While video waits for a keyframe, it is asked for again after this long.
pub const KEYFRAME_REASK: Duration = Duration::from_millis(500);
/// A packet this far from the one expected (behind or ahead) is a restarted sequence, not a
/// late or early packet.
const RESTART_DISTANCE: u64 = 3_000;
/// An Annex-B start code.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// One whole frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub rtp_timestamp: u32,
    /// A video frame a decoder can start from (VP8 keyframe, H.264 access unit with an IDR
    /// slice); every Opus frame.
    pub keyframe: bool,
    /// VP8: the frame (no payload descriptors); H.264: the access unit in Annex-B (each NAL
    /// unit behind `00 00 00 01`); Opus: the packet.
    pub data: Vec<u8>,
    /// When its first packet arrived.
    pub arrival: Instant,
}

/// What one packet led to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assembled {
    /// Frames completed, in order.
    pub frames: Vec<Frame>,
    /// Frames dropped: broken by a loss, or waiting for a keyframe.
    pub dropped: u64,
    /// Ask the publisher for a keyframe.
    pub keyframe_needed: bool,
}

/// A packet waiting for its turn.
#[derive(Debug)]
struct Held {
    timestamp: u32,
    marker: bool,
    payload: Bytes,
    arrival: Instant,
}

/// The frame being assembled.
#[derive(Debug)]
struct Partial {
    timestamp: u32,
    arrival: Instant,
    data: Vec<u8>,
    keyframe: bool,
    /// Nothing missing or malformed so far.
    intact: bool,
    /// H.264: an FU-A unit is open.
    in_fragment: bool,
}

/// Frames out of one stream's packets (see the module docs).
#[derive(Debug)]
pub struct Depacketizer {
    codec: Codec,
    /// The newest extended (wrap-free) sequence number seen.
    newest: Option<u64>,
    /// The extended sequence number expected next.
    next: Option<u64>,
    held: BTreeMap<u64, Held>,
    partial: Option<Partial>,
    /// Video: frames are dropped until a keyframe.
    waiting_keyframe: bool,
    last_ask: Option<Instant>,
}

impl Depacketizer {
    /// A depacketizer for `codec`; video waits for its first keyframe.
    pub fn new(codec: Codec) -> Depacketizer {
        Depacketizer {
            codec,
            newest: None,
            next: None,
            held: BTreeMap::new(),
            partial: None,
            waiting_keyframe: codec != Codec::Opus,
            last_ask: None,
        }
    }

    /// One received packet, at `arrival`.
    pub fn push(&mut self, packet: &rtp::Packet, arrival: Instant) -> Assembled {
        let mut out = Assembled::default();
        let h = &packet.header;
        let ext = self.extend(h.sequence_number);
        let next = *self.next.get_or_insert(ext);
        if ext > next + RESTART_DISTANCE {
            // A jump far ahead: the sender started its numbers again (or lost a lot).
            self.give_up_all(&mut out);
            self.lost(&mut out);
            self.next = Some(ext);
        } else if ext < next {
            if next - ext > RESTART_DISTANCE {
                // The sender started its numbers again: go on from here.
                self.give_up_all(&mut out);
                self.newest = Some(ext);
                self.next = Some(ext);
            } else {
                return self.asked(out, arrival); // too late, or a repeat: its frame is done
            }
        }
        self.held.entry(ext).or_insert(Held {
            timestamp: h.timestamp,
            marker: h.marker,
            payload: packet.payload.clone(),
            arrival,
        });
        self.release(&mut out);
        while self.held.len() > REORDER_MAX_HELD
            || self
                .held
                .values()
                .next()
                .is_some_and(|o| arrival.saturating_duration_since(o.arrival) >= REORDER_MAX_WAIT)
        {
            self.skip_gap(&mut out);
        }
        self.asked(out, arrival)
    }

    /// The stream ended: what is held goes out (gaps as losses), a frame without its end is
    /// dropped.
    pub fn flush(&mut self) -> Assembled {
        let mut out = Assembled::default();
        self.give_up_all(&mut out);
        if let Some(p) = self.partial.take()
            && self.codec != Codec::Opus
        {
            self.complete(p, false, &mut out);
        }
        out
    }

    /// Extends a 16-bit sequence number against the newest one seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.newest {
            None => (1 << 32) + u64::from(seq),
            Some(newest) => {
                let delta = i64::from(seq.wrapping_sub(newest as u16) as i16);
                newest.saturating_add_signed(delta)
            }
        };
        if self.newest.is_none_or(|n| ext > n) {
            self.newest = Some(ext);
        }
        ext
    }

    /// Packets in order while the next one is here.
    fn release(&mut self, out: &mut Assembled) {
        while let Some(next) = self.next {
            let Some(p) = self.held.remove(&next) else { break };
            self.next = Some(next + 1);
            self.packet(p, out);
        }
    }

    /// The one expected is not coming: a loss, then on from the first that is here.
    fn skip_gap(&mut self, out: &mut Assembled) {
        let Some((&first, _)) = self.held.iter().next() else { return };
        self.next = Some(first);
        self.lost(out);
        self.release(out);
    }

    fn give_up_all(&mut self, out: &mut Assembled) {
        while !self.held.is_empty() {
            self.skip_gap(out);
        }
    }

    /// A gap in the sequence: the frame under way is broken; between frames, the next one
    /// may be missing its start or a frame may be gone whole: wait for a keyframe.
    fn lost(&mut self, out: &mut Assembled) {
        if self.codec == Codec::Opus {
            return;
        }
        match &mut self.partial {
            Some(p) => p.intact = false,
            None => self.waiting_keyframe = true,
        }
        out.keyframe_needed = true;
    }

    /// Reports `keyframe_needed` (a loss, or a frame dropped while video waits for a keyframe)
    /// at most every [`KEYFRAME_REASK`]. Not before a frame is lost: the first packets of a
    /// stream are usually its keyframe's.
    fn asked(&mut self, mut out: Assembled, now: Instant) -> Assembled {
        out.keyframe_needed =
            out.keyframe_needed && self.last_ask.is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REASK);
        if out.keyframe_needed {
            self.last_ask = Some(now);
        }
        out
    }

    /// One packet, in sequence order.
    fn packet(&mut self, p: Held, out: &mut Assembled) {
        if self.codec == Codec::Opus {
            if !p.payload.is_empty() {
                out.frames.push(Frame {
                    rtp_timestamp: p.timestamp,
                    keyframe: true,
                    data: p.payload.to_vec(),
                    arrival: p.arrival,
                });
            }
            return;
        }
        if p.payload.is_empty() {
            return; // padding
        }
        if let Some(partial) = self.partial.take_if(|f| f.timestamp != p.timestamp) {
            // A new timestamp without the marker before it: the frame ended (nothing was
            // missing, or a gap would have broken it).
            self.complete(partial, true, out);
        }
        let partial = self.partial.get_or_insert_with(|| Partial {
            timestamp: p.timestamp,
            arrival: p.arrival,
            data: Vec::new(),
            keyframe: false,
            intact: true,
            in_fragment: false,
        });
        let ok = match self.codec {
            Codec::Vp8 => vp8(partial, &p.payload),
            Codec::H264 => h264(partial, &p.payload),
            Codec::Opus => true,
        };
        partial.intact &= ok;
        if p.marker
            && let Some(partial) = self.partial.take()
        {
            self.complete(partial, true, out);
        }
    }

    /// A frame ended: out if whole and decodable, else dropped and a keyframe awaited.
    fn complete(&mut self, f: Partial, ended: bool, out: &mut Assembled) {
        let whole = ended && f.intact && !f.data.is_empty() && !f.in_fragment;
        if !whole {
            out.dropped += 1;
            self.waiting_keyframe = true;
            out.keyframe_needed = true;
            return;
        }
        if self.waiting_keyframe && !f.keyframe {
            out.dropped += 1;
            out.keyframe_needed = true;
            return;
        }
        if self.waiting_keyframe {
            // Resumed: the next loss is asked about at once.
            self.waiting_keyframe = false;
            self.last_ask = None;
        }
        out.frames.push(Frame { rtp_timestamp: f.timestamp, keyframe: f.keyframe, data: f.data, arrival: f.arrival });
    }
}

/// RFC 7741: the payload after its descriptor joins the frame; the frame's first packet must
/// start partition 0, and its frame tag says whether it is a keyframe.
fn vp8(f: &mut Partial, payload: &[u8]) -> bool {
    let Some((start, body)) = crate::vp8::payload(payload) else { return false };
    if f.data.is_empty() {
        if !start {
            return false;
        }
        f.keyframe = body.first().is_some_and(|tag| tag & 0x01 == 0);
    }
    f.data.extend_from_slice(body);
    true
}

/// RFC 6184 (packetization modes 0 and 1) into an Annex-B access unit.
fn h264(f: &mut Partial, payload: &[u8]) -> bool {
    let Some(&indicator) = payload.first() else { return false };
    match indicator & 0x1F {
        1..=23 => {
            if f.in_fragment {
                return false; // an FU-A never ended
            }
            nal(f, payload);
            true
        }
        24 => {
            // STAP-A: (16-bit size, NAL unit)…
            if f.in_fragment {
                return false;
            }
            let mut rest = payload.get(1..).unwrap_or_default();
            while !rest.is_empty() {
                let (Some(&hi), Some(&lo)) = (rest.first(), rest.get(1)) else { return false };
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                let Some(unit) = rest.get(2..2 + size).filter(|u| !u.is_empty()) else { return false };
                nal(f, unit);
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            true
        }
        28 => {
            // FU-A: indicator, header |S|E|R|type|, fragment.
            let (Some(&header), Some(fragment)) = (payload.get(1), payload.get(2..)) else { return false };
            let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
            if start {
                if f.in_fragment {
                    return false;
                }
                let unit_header = (indicator & 0xE0) | (header & 0x1F);
                f.data.extend_from_slice(&START_CODE);
                f.data.push(unit_header);
                f.keyframe |= header & 0x1F == avc::NAL_IDR;
                f.in_fragment = true;
            } else if !f.in_fragment {
                return false; // its start was not seen
            }
            f.data.extend_from_slice(fragment);
            if end {
                f.in_fragment = false;
            }
            true
        }
        // STAP-B, MTAP, FU-B (interleaved mode), reserved: not what a WebRTC sender sends.
        _ => false,
    }
}

fn nal(f: &mut Partial, unit: &[u8]) {
    f.keyframe |= unit.first().is_some_and(|h| h & 0x1F == avc::NAL_IDR);
    f.data.extend_from_slice(&START_CODE);
    f.data.extend_from_slice(unit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp: ts,
                marker,
                ssrc: 1,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// A VP8 packet: descriptor (S and partition 0 on a frame's first packet), then `body`.
    fn vp8p(start: bool, body: &[u8]) -> Vec<u8> {
        [&[if start { 0x10 } else { 0x00 }][..], body].concat()
    }

    /// Keyframe and delta frame tags (bit 0: 0 = keyframe).
    const KEY: u8 = 0x00;
    const DELTA: u8 = 0x01;

    struct Feed {
        d: Depacketizer,
        t0: Instant,
    }

    impl Feed {
        fn new(codec: Codec) -> Feed {
            Feed { d: Depacketizer::new(codec), t0: Instant::now() }
        }
        fn push(&mut self, ms: u64, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Assembled {
            self.d.push(&packet(seq, ts, marker, payload), self.t0 + Duration::from_millis(ms))
        }
    }

    #[test]
    fn vp8_frames_join_across_packets_and_video_before_the_first_keyframe_is_dropped() {
        let mut f = Feed::new(Codec::Vp8);
        let a = f.push(0, 10, 1000, true, &vp8p(true, &[DELTA, 9]));
        assert!(a.frames.is_empty() && a.keyframe_needed && a.dropped == 1, "{a:?}");
        let again = f.push(100, 11, 4000, true, &vp8p(true, &[DELTA, 9]));
        assert!(!again.keyframe_needed, "asked 100 ms ago: not again yet");
        assert!(f.push(600, 12, 7000, true, &vp8p(true, &[DELTA])).keyframe_needed, "asked again after 500 ms");
        // A keyframe in two packets; its first packet is no reason to ask.
        let first = f.push(1_200, 13, 10_000, false, &vp8p(true, &[KEY, 1]));
        assert!(first.frames.is_empty() && !first.keyframe_needed);
        let b = f.push(1_201, 14, 10_000, true, &vp8p(false, &[2, 3]));
        assert_eq!(b.frames.len(), 1);
        assert_eq!((b.frames[0].keyframe, &b.frames[0].data[..]), (true, &[KEY, 1, 2, 3][..]));
        assert_eq!(b.frames[0].arrival, f.t0 + Duration::from_millis(1_200), "its first packet's arrival");
        assert!(!b.keyframe_needed);
        // Descriptor with extensions (picture id, TL0PICIDX, TID) is stripped too.
        let c = f.push(1_240, 15, 13_000, true, &[0x90, 0xE0, 0x81, 0x23, 0x07, 0x20, DELTA, 5]);
        assert_eq!(c.frames[0].data, [DELTA, 5]);
        assert!(!c.frames[0].keyframe);
        // Padding-only packets take a sequence number and nothing else.
        assert!(f.push(1_250, 16, 13_000, false, &[]).frames.is_empty());
        assert_eq!(f.push(1_270, 17, 16_000, true, &vp8p(true, &[DELTA, 6])).frames.len(), 1, "no gap seen");
    }

    #[test]
    fn reordered_packets_are_put_back_in_order() {
        let mut f = Feed::new(Codec::Vp8);
        f.push(0, 1, 0, true, &vp8p(true, &[KEY, 1]));
        assert!(f.push(1, 3, 3000, true, &vp8p(false, &[7])).frames.is_empty(), "3 waits for 2");
        let got = f.push(2, 2, 3000, false, &vp8p(true, &[DELTA, 6]));
        assert_eq!(got.frames.len(), 1);
        assert_eq!(got.frames[0].data, [DELTA, 6, 7]);
        assert!(!got.keyframe_needed && got.dropped == 0);
        // A late repeat is ignored.
        assert_eq!(f.push(3, 2, 3000, false, &vp8p(true, &[DELTA, 6])), Assembled::default());
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_all_until_the_next_keyframe() {
        let mut f = Feed::new(Codec::Vp8);
        f.push(0, 100, 0, true, &vp8p(true, &[KEY]));
        // Frame at 3000 is 101..=103; 102 is lost.
        f.push(33, 101, 3000, false, &vp8p(true, &[DELTA, 1]));
        f.push(34, 103, 3000, true, &vp8p(false, &[3]));
        let mut seq = 104;
        let mut dropped = 0;
        let mut asked = false;
        // Delta frames keep coming; after 150 ms packet 102 is given up.
        for i in 0..10u32 {
            let r = f.push(66 + 33 * u64::from(i), seq, 6000 + 3000 * i, true, &vp8p(true, &[DELTA, 9]));
            assert!(r.frames.is_empty(), "nothing decodable before the keyframe");
            dropped += r.dropped;
            asked |= r.keyframe_needed;
            seq += 1;
        }
        assert!(asked, "keyframe needed");
        assert_eq!(dropped, 11, "the broken frame and every delta after it");
        let k = f.push(500, seq, 90_000, true, &vp8p(true, &[KEY, 2]));
        assert_eq!(k.frames.len(), 1, "a keyframe resumes");
        assert!(k.frames[0].keyframe);
    }

    #[test]
    fn a_full_reorder_window_gives_the_missing_packet_up() {
        let mut f = Feed::new(Codec::Opus);
        assert_eq!(f.push(0, 1, 0, true, &[1]).frames.len(), 1);
        // 2 is missing; 3.. queue behind it, all at the same instant.
        for seq in 3..3 + REORDER_MAX_HELD as u16 {
            assert!(f.push(1, seq, u32::from(seq) * 960, true, &[1]).frames.is_empty());
        }
        let r = f.push(1, 3 + REORDER_MAX_HELD as u16, 0, true, &[1]);
        assert_eq!(r.frames.len(), REORDER_MAX_HELD + 1, "all released at once");
        assert!(!r.keyframe_needed, "audio never needs one");
    }

    #[test]
    fn sequence_numbers_wrap_and_a_restart_is_followed() {
        let mut f = Feed::new(Codec::Opus);
        assert_eq!(f.push(0, 65_534, 0, true, &[1]).frames.len(), 1);
        assert!(f.push(0, 0, 1920, true, &[3]).frames.is_empty(), "65535 missing: held");
        assert_eq!(f.push(0, 65_535, 960, true, &[2]).frames.len(), 2, "across the wrap, in order");
        assert!(f.push(0, 65_535, 960, true, &[2]).frames.is_empty(), "repeat");
        // The sender starts again far away: followed, not ignored nor waited for.
        assert_eq!(f.push(0, 20_000, 5_000, true, &[4]).frames.len(), 1, "ahead");
        assert_eq!(f.push(0, 20_001, 5_960, true, &[5]).frames.len(), 1);
        assert_eq!(f.push(0, 7, 6_920, true, &[6]).frames.len(), 1, "behind");
    }

    #[test]
    fn h264_single_stap_a_and_fu_a_become_annex_b() {
        let mut f = Feed::new(Codec::H264);
        let sps = [0x67, 0x42, 0xC0, 0x1F];
        let pps = [0x68, 0xCE];
        let stap = [&[0x78, 0, 4][..], &sps, &[0, 2], &pps].concat();
        assert!(f.push(0, 1, 90, false, &stap).frames.is_empty());
        assert!(f.push(0, 2, 90, false, &[0x7C, 0x85, 0xAA]).frames.is_empty(), "FU-A start of an IDR");
        assert!(f.push(0, 3, 90, false, &[0x7C, 0x05, 0xBB]).frames.is_empty());
        let got = f.push(0, 4, 90, true, &[0x7C, 0x45, 0xCC]);
        assert_eq!(got.frames.len(), 1);
        let frame = &got.frames[0];
        assert!(frame.keyframe);
        let expected = [&START_CODE[..], &sps, &START_CODE, &pps, &START_CODE, &[0x65, 0xAA, 0xBB, 0xCC]].concat();
        assert_eq!(frame.data, expected);
        assert_eq!(avc::to_avcc(&frame.data)[..4], [0, 0, 0, 4]);
        // A single non-IDR slice: a delta frame.
        let d = f.push(1, 5, 3090, true, &[0x41, 0x9A, 0x01]);
        assert_eq!((d.frames[0].keyframe, &d.frames[0].data[..]), (false, &[0, 0, 0, 1, 0x41, 0x9A, 0x01][..]));
        // An FU-A whose start was lost (a gap) breaks the frame.
        f.push(2, 6, 6090, false, &[0x7C, 0x81, 0x11]);
        let broken = f.push(200, 8, 6090, true, &[0x7C, 0x41, 0x33]);
        let next = f.push(400, 9, 9090, true, &[0x41, 0x9A]);
        assert!(broken.frames.is_empty() && next.frames.is_empty());
        assert!(broken.keyframe_needed || next.keyframe_needed);
        assert!(broken.dropped + next.dropped >= 1);
    }

    #[test]
    fn malformed_payloads_break_frames_and_never_panic() {
        for codec in [Codec::Vp8, Codec::H264, Codec::Opus] {
            let mut f = Feed::new(codec);
            let mut seq = 0u16;
            for bad in [
                &[][..],
                &[0x90],
                &[0x90, 0x80],
                &[0x18, 0, 9, 1],
                &[0x18, 0],
                &[0x1C],
                &[0x1F, 1],
                &[0x7C, 0x45],
                &[0x7C, 0x85],
                &[0x7C, 0x85, 1],
                &[0x78, 0, 0],
            ] {
                for marker in [false, true] {
                    let _ = f.push(u64::from(seq), seq, u32::from(seq / 3) * 3000, marker, bad);
                    seq = seq.wrapping_add(1);
                }
            }
            let _ = f.d.flush();
        }
    }

    #[test]
    fn flush_releases_what_is_held_and_drops_an_unfinished_frame() {
        let mut f = Feed::new(Codec::Vp8);
        f.push(0, 1, 0, true, &vp8p(true, &[KEY]));
        f.push(1, 3, 3000, true, &vp8p(true, &[DELTA]));
        f.push(2, 4, 6000, false, &vp8p(true, &[DELTA]));
        let r = f.d.flush();
        assert!(r.frames.is_empty(), "after the gap: waiting for a keyframe");
        assert_eq!(r.dropped, 2);
    }
}
