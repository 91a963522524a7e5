//! Synthetic media: payloads that look like their codec to the SFU (a VP8 payload descriptor and
//! frame tag, keyframes with the VP8 start code; an Opus TOC byte) and carry a stamp at their
//! end — phase, index within the publisher's stream, send time — so a receiver measures one-way
//! latency and loss without decoding anything.
//!
//! The stamp sits at the end so its offset does not depend on the codec header:
//! `… | layer u8 | phase u8 | index u32 BE | sent_ns u64 BE | magic 0x504C ("PL")`, where `layer`
//! is the simulcast layer the packet was sent on (0 without simulcast, 1 `q`, 2 `h`, 3 `f`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

const MAGIC: [u8; 2] = *b"PL";
/// Bytes the stamp adds to every payload.
pub const STAMP_LEN: usize = 1 + 1 + 4 + 8 + 2;

/// Packets sent before measuring (negotiation settles, keyframes flow) and during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    WarmUp = 0,
    Measure = 1,
}

/// What a receiver reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub phase: Phase,
    pub index: u32,
    /// Nanoseconds since [`clock_base`] when it was sent.
    pub sent_ns: u64,
    /// Simulcast layer sent on: 0 without simulcast, 1 `q`, 2 `h`, 3 `f`.
    pub layer: u8,
}

/// The process-wide time origin of stamps: publishers and subscribers of one run share it.
pub fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since [`clock_base`].
pub fn now_ns() -> u64 {
    clock_base().elapsed().as_nanos() as u64
}

/// One-way latency of a stamp received now.
pub fn latency(stamp: &Stamp) -> Duration {
    Duration::from_nanos(now_ns().saturating_sub(stamp.sent_ns))
}

fn push_stamp(p: &mut Vec<u8>, stamp: Stamp) {
    p.push(stamp.layer);
    p.push(stamp.phase as u8);
    p.extend_from_slice(&stamp.index.to_be_bytes());
    p.extend_from_slice(&stamp.sent_ns.to_be_bytes());
    p.extend_from_slice(&MAGIC);
}

/// A VP8 RTP payload of `len` bytes (at least the headers and stamp): descriptor with S=1,
/// then a keyframe header (P=0, start code `9d 01 2a`, 1280×720) or an interframe tag.
pub fn vp8_payload(keyframe: bool, stamp: Stamp, len: usize) -> Bytes {
    let mut p = Vec::with_capacity(len.max(32));
    p.push(0x10);
    if keyframe {
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]);
    } else {
        p.extend_from_slice(&[0x11, 0x02, 0x00]);
    }
    let body = len.saturating_sub(p.len() + STAMP_LEN);
    p.resize(p.len() + body, 0xAB);
    push_stamp(&mut p, stamp);
    Bytes::from(p)
}

/// A continuation packet of a VP8 frame (S=0): never a keyframe start.
pub fn vp8_continuation(stamp: Stamp, len: usize) -> Bytes {
    let mut p = vec![0x00];
    let body = len.saturating_sub(1 + STAMP_LEN);
    p.resize(1 + body, 0xAB);
    push_stamp(&mut p, stamp);
    Bytes::from(p)
}

/// The first packet of an H.264 frame of `len` bytes (at least the headers and stamp): an FU-A
/// fragment (RFC 6184) starting an IDR slice for a keyframe, a non-IDR slice otherwise.
pub fn h264_payload(keyframe: bool, stamp: Stamp, len: usize) -> Bytes {
    // FU indicator: NRI 3, type 28; FU header: S=1, NAL type 5 (IDR) or 1.
    let mut p = vec![0x7c, if keyframe { 0x85 } else { 0x81 }];
    let body = len.saturating_sub(p.len() + STAMP_LEN);
    p.resize(p.len() + body, 0xAB);
    push_stamp(&mut p, stamp);
    Bytes::from(p)
}

/// A further FU-A fragment of an H.264 frame (S=0): never a keyframe start.
pub fn h264_continuation(stamp: Stamp, len: usize) -> Bytes {
    let mut p = vec![0x7c, 0x01];
    let body = len.saturating_sub(p.len() + STAMP_LEN);
    p.resize(p.len() + body, 0xAB);
    push_stamp(&mut p, stamp);
    Bytes::from(p)
}

/// An Opus RTP payload (TOC: SILK wideband 20 ms, mono) of about `len` bytes.
pub fn opus_payload(stamp: Stamp, len: usize) -> Bytes {
    let mut p = vec![0x48];
    let body = len.saturating_sub(1 + STAMP_LEN);
    p.resize(1 + body, 0xCD);
    push_stamp(&mut p, stamp);
    Bytes::from(p)
}

/// The stamp of a payload made here; `None` for anything else.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let n = payload.len();
    if n < STAMP_LEN || payload[n - 2..] != MAGIC {
        return None;
    }
    let s = &payload[n - STAMP_LEN..];
    let layer = s[0];
    let phase = match s[1] {
        0 => Phase::WarmUp,
        1 => Phase::Measure,
        _ => return None,
    };
    let index = u32::from_be_bytes(s[2..6].try_into().ok()?);
    let sent_ns = u64::from_be_bytes(s[6..14].try_into().ok()?);
    Some(Stamp { phase, index, sent_ns, layer })
}

/// Distinct indices seen of one stream, for loss: a bitmap grown on demand.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    bits: Vec<u64>,
    distinct: u64,
    duplicates: u64,
}

impl Seen {
    /// Records `index`; `false` if it was already seen (a retransmission or a duplicate).
    pub fn insert(&mut self, index: u32) -> bool {
        let (word, bit) = ((index / 64) as usize, index % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.bits[word] & mask != 0 {
            self.duplicates += 1;
            return false;
        }
        self.bits[word] |= mask;
        self.distinct += 1;
        true
    }

    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_every_payload() {
        let stamp = Stamp { phase: Phase::Measure, index: 70_000, sent_ns: 123_456_789_012, layer: 3 };
        for p in [vp8_payload(true, stamp, 1000), vp8_payload(false, stamp, 1000), vp8_continuation(stamp, 1000)] {
            assert_eq!(p.len(), 1000);
            assert_eq!(read_stamp(&p), Some(stamp));
        }
        let tiny = opus_payload(stamp, 0);
        assert_eq!(read_stamp(&tiny), Some(stamp), "a payload never drops its stamp");
        assert_eq!(read_stamp(b"not a stamped payload at all"), None);
        assert_eq!(read_stamp(&[]), None);
    }

    #[test]
    fn the_sfu_sees_keyframes_where_they_are() {
        let stamp = Stamp { phase: Phase::WarmUp, index: 0, sent_ns: 0, layer: 0 };
        assert!(parley_media::vp8::is_keyframe(&vp8_payload(true, stamp, 1200)));
        assert!(parley_media::h264::is_keyframe(&h264_payload(true, stamp, 1200)));
        assert!(!parley_media::h264::is_keyframe(&h264_payload(false, stamp, 1200)));
        assert!(!parley_media::h264::is_keyframe(&h264_continuation(stamp, 1200)));
        assert_eq!(read_stamp(&h264_payload(true, stamp, 1200)), Some(stamp));
        assert!(!parley_media::vp8::is_keyframe(&vp8_payload(false, stamp, 1200)));
        assert!(!parley_media::vp8::is_keyframe(&vp8_continuation(stamp, 1200)));
        assert_eq!(parley_media::vp8::keyframe_size(&vp8_payload(true, stamp, 1200)), Some((1280, 720)));
    }

    #[test]
    fn seen_counts_distinct_indices_and_duplicates() {
        let mut s = Seen::default();
        assert!(s.insert(5));
        assert!(s.insert(200));
        assert!(!s.insert(5));
        assert_eq!((s.distinct(), s.duplicates()), (2, 1));
    }
}
