//! Per-subscriber outgoing stream rewriter: keeps one outgoing RTP stream continuous while the
//! source behind it changes (simulcast layer switch; another speaker in speaker view; resuming
//! after a pause).
//!
//! The subscriber sees one SSRC per track for its whole life (set by `peer::OutTrack`); what this
//! module maps is the sequence number and the RTP timestamp:
//!
//! - Within one source, `out = in + offset` (mod 2^16 for sequence numbers, 2^32 for
//!   timestamps). Gaps stay gaps — so a subscriber's NACK names a packet the NACK cache can map
//!   back — and out-of-order packets keep their place.
//! - At a switch (a packet from another source, or the first one after [`StreamRewriter::pause`]),
//!   the new offsets make that packet's sequence number the highest sent so far + 1, and its
//!   timestamp the last one sent plus the wall-clock time since, in the codec's clock (at least
//!   one tick): the decoder sees time move on, not back.
//! - Packets older than the switch point, or more than [`MAX_REORDER_PACKETS`] behind the newest,
//!   are dropped: their numbers are taken or ambiguous.
//!
//! - [`StreamRewriter::origin`] maps an outgoing sequence number back to its source and incoming
//!   number (within [`MAX_REORDER_PACKETS`] of the newest, over the last [`PAST_SEGMENTS`]
//!   segments): a subscriber's NACK is answered from the publisher's packet cache.
//!
//! The caller decides switches: it passes only packets of the source it selected (late packets
//! of the previous source are filtered out there) and switches video only at a keyframe
//! (`layers`).

use std::collections::VecDeque;
use std::time::Instant;

/// How far behind the newest forwarded packet a late packet may arrive and still be forwarded.
pub const MAX_REORDER_PACKETS: u16 = 512;
/// Segments before the current one that [`StreamRewriter::origin`] still maps.
pub const PAST_SEGMENTS: usize = 8;

/// Where an outgoing packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Its source (publisher SSRC / layer).
    pub source: u32,
    /// Its sequence number as the source sent it.
    pub sequence_number: u16,
    /// Added to the source's timestamp to give the one it left with.
    pub ts_offset: u32,
}

/// Sequence number and timestamp a packet leaves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub sequence_number: u16,
    pub timestamp: u32,
    /// This packet starts a new segment (first packet, switch or resume).
    pub switched: bool,
}

/// Where the current segment (run of packets from one source) stands.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Source (publisher SSRC / layer) of the segment.
    source: u32,
    /// Added to incoming sequence numbers.
    seq_offset: u16,
    /// Added to incoming timestamps.
    ts_offset: u32,
    /// Newest incoming sequence number of the segment.
    highest_in: u16,
    /// Packets the segment has advanced by since its first (saturating): how far back
    /// the switch point lies.
    advanced: u32,
    /// Outgoing sequence number of its first packet.
    first_out: u16,
}

/// The rewriter of one outgoing track.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    /// RTP clock of the codec, Hz.
    clock_rate: u32,
    segment: Option<Segment>,
    /// The segments before it, oldest first (at most [`PAST_SEGMENTS`]).
    past: VecDeque<Segment>,
    /// Set by [`Self::pause`]: the next packet starts a new segment even from the same source.
    resync: bool,
    /// Newest sequence number sent, its timestamp, and when it was sent.
    last_out: Option<(u16, u32, Instant)>,
}

impl StreamRewriter {
    /// A rewriter for a codec with `clock_rate` Hz (90 000 video, 48 000 Opus).
    pub fn new(clock_rate: u32) -> Self {
        Self { clock_rate: clock_rate.max(1), segment: None, past: VecDeque::new(), resync: false, last_out: None }
    }

    /// The next packet (from any source) starts a new segment: forwarding stopped for a while
    /// (paused layer, muted in the view), so the incoming numbers skipped meanwhile must not
    /// show up as a gap the subscriber would NACK.
    pub fn pause(&mut self) {
        self.resync = true;
    }

    /// The source of the current segment.
    pub fn source(&self) -> Option<u32> {
        self.segment.map(|s| s.source)
    }

    /// Newest sequence number sent.
    pub fn last_sequence_number(&self) -> Option<u16> {
        self.last_out.map(|(seq, _, _)| seq)
    }

    /// Where the packet sent as `out_seq` came from; `None` if it is more than
    /// [`MAX_REORDER_PACKETS`] behind the newest, not sent yet, or in a segment too old to
    /// remember.
    pub fn origin(&self, out_seq: u16) -> Option<Origin> {
        let (newest, _, _) = self.last_out?;
        // Ahead of the newest wraps to far behind: refused with the rest.
        let behind = newest.wrapping_sub(out_seq);
        if behind > MAX_REORDER_PACKETS {
            return None;
        }
        // Segments follow each other without a gap: the newest one that began at or before
        // `out_seq` sent it.
        self.segment.iter().chain(self.past.iter().rev()).find(|s| newest.wrapping_sub(s.first_out) >= behind).map(
            |s| Origin {
                source: s.source,
                sequence_number: out_seq.wrapping_sub(s.seq_offset),
                ts_offset: s.ts_offset,
            },
        )
    }

    /// Maps one packet of `source` arriving at `now`; `None`: drop it.
    pub fn rewrite(&mut self, source: u32, seq: u16, ts: u32, now: Instant) -> Option<Rewritten> {
        let mut segment = match self.segment {
            Some(s) if s.source == source && !self.resync => s,
            _ => return Some(self.start_segment(source, seq, ts, now)),
        };
        let ahead = seq.wrapping_sub(segment.highest_in) as i16;
        if ahead > 0 {
            segment.highest_in = seq;
            segment.advanced = segment.advanced.saturating_add(ahead.unsigned_abs().into());
        } else {
            let behind = u32::from(ahead.unsigned_abs());
            if behind > segment.advanced.min(MAX_REORDER_PACKETS.into()) {
                return None;
            }
        }
        self.segment = Some(segment);
        let out = Rewritten {
            sequence_number: seq.wrapping_add(segment.seq_offset),
            timestamp: ts.wrapping_add(segment.ts_offset),
            switched: false,
        };
        if ahead > 0 {
            self.last_out = Some((out.sequence_number, out.timestamp, now));
        }
        Some(out)
    }

    fn start_segment(&mut self, source: u32, seq: u16, ts: u32, now: Instant) -> Rewritten {
        let (out_seq, out_ts) = match self.last_out {
            None => (seq, ts),
            Some((last_seq, last_ts, at)) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks = (elapsed.as_micros().saturating_mul(u128::from(self.clock_rate)) / 1_000_000).max(1);
                // RTP timestamps wrap: only the low 32 bits of the delta matter.
                (last_seq.wrapping_add(1), last_ts.wrapping_add(ticks as u32))
            }
        };
        if let Some(ended) = self.segment.take() {
            if self.past.len() == PAST_SEGMENTS {
                self.past.pop_front();
            }
            self.past.push_back(ended);
        }
        self.segment = Some(Segment {
            source,
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            highest_in: seq,
            advanced: 0,
            first_out: out_seq,
        });
        self.resync = false;
        self.last_out = Some((out_seq, out_ts, now));
        Rewritten { sequence_number: out_seq, timestamp: out_ts, switched: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn origin_maps_each_sent_number_back_to_its_source_across_switches() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        assert_eq!(r.origin(0), None, "nothing sent yet");
        r.rewrite(1, 100, 5000, t0).unwrap();
        r.rewrite(1, 101, 8000, ms(t0, 33)).unwrap();
        let s = r.rewrite(2, 40_000, 1_000_000, ms(t0, 73)).unwrap();
        r.rewrite(2, 40_001, 1_003_000, ms(t0, 106)).unwrap();
        let old = Origin { source: 1, sequence_number: 101, ts_offset: 0 };
        assert_eq!(r.origin(101), Some(old));
        assert_eq!(r.origin(100), Some(Origin { sequence_number: 100, ..old }));
        let new = r.origin(103).expect("current segment");
        assert_eq!((new.source, new.sequence_number), (2, 40_001));
        assert_eq!(1_000_000u32.wrapping_add(new.ts_offset), s.timestamp, "the timestamp it left with");
        assert_eq!(r.origin(104), None, "not sent yet");
        // A gap in what the source sent is a gap here too: it maps to the number it skipped.
        r.rewrite(2, 40_003, 1_009_000, ms(t0, 170)).unwrap();
        assert_eq!(r.origin(104).map(|o| (o.source, o.sequence_number)), Some((2, 40_002)));
    }

    #[test]
    fn origin_forgets_what_is_too_far_behind_or_too_many_segments_ago() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        for seq in 0..=600u16 {
            r.rewrite(1, seq, u32::from(seq) * 3000, t0).unwrap();
        }
        assert_eq!(r.origin(600 - MAX_REORDER_PACKETS).map(|o| o.sequence_number), Some(600 - MAX_REORDER_PACKETS));
        assert_eq!(r.origin(600 - MAX_REORDER_PACKETS - 1), None, "beyond the reorder window");
        // One packet per source, switching each time: the segment of `source 1` ends up more
        // than PAST_SEGMENTS back.
        for source in 2..(PAST_SEGMENTS as u32 + 3) {
            r.rewrite(source, 7, 0, t0).unwrap();
        }
        assert_eq!(r.origin(600), None, "its segment is forgotten");
        // Sources 2 to PAST_SEGMENTS + 1 sent 601, 602…: all remembered, behind the current one.
        assert_eq!(r.origin(601).map(|o| o.source), Some(2));
        assert_eq!(r.origin(600 + PAST_SEGMENTS as u16 + 1).map(|o| o.source), Some(PAST_SEGMENTS as u32 + 2));
        // Across the wrap of outgoing numbers too.
        let mut w = StreamRewriter::new(90_000);
        w.rewrite(1, 65_534, 0, t0).unwrap();
        w.rewrite(1, 65_535, 0, t0).unwrap();
        w.rewrite(1, 0, 0, t0).unwrap();
        assert_eq!(w.origin(65_535).map(|o| o.sequence_number), Some(65_535));
        assert_eq!(w.origin(1), None, "ahead of the newest");
    }

    #[test]
    fn first_source_passes_through_unchanged() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        let a = r.rewrite(1, 100, 5000, t0).unwrap();
        assert_eq!(a, Rewritten { sequence_number: 100, timestamp: 5000, switched: true });
        let b = r.rewrite(1, 101, 8000, ms(t0, 33)).unwrap();
        assert_eq!(b, Rewritten { sequence_number: 101, timestamp: 8000, switched: false });
        assert_eq!(r.source(), Some(1));
        assert_eq!(r.last_sequence_number(), Some(101));
    }

    #[test]
    fn switch_continues_sequence_and_moves_time_forward_by_wall_clock() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 100, 5000, t0).unwrap();
        r.rewrite(1, 101, 8000, ms(t0, 33)).unwrap();
        // Layer h has its own numbering, far away.
        let s = r.rewrite(2, 40_000, 1_000_000, ms(t0, 73)).unwrap();
        assert_eq!(s.sequence_number, 102);
        assert_eq!(s.timestamp, 8000 + 40 * 90, "40 ms at 90 kHz after the last packet");
        assert!(s.switched);
        let n = r.rewrite(2, 40_001, 1_003_000, ms(t0, 106)).unwrap();
        assert_eq!((n.sequence_number, n.timestamp), (103, 8000 + 3600 + 3000));
        assert!(!n.switched);
    }

    #[test]
    fn switch_at_the_same_instant_still_advances_the_timestamp() {
        let mut r = StreamRewriter::new(48_000);
        let t0 = Instant::now();
        r.rewrite(1, 10, 960, t0).unwrap();
        let s = r.rewrite(2, 500, 123, t0).unwrap();
        assert_eq!((s.sequence_number, s.timestamp), (11, 961));
    }

    #[test]
    fn incoming_wraparound_stays_continuous() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 7, 0, t0).unwrap();
        // Switch to a source about to wrap: out continues at 8.
        let mut expected = 8u16;
        for seq in [65_533u16, 65_534, 65_535, 0, 1, 2] {
            let o = r.rewrite(2, seq, u32::MAX - 10, ms(t0, 20)).unwrap();
            assert_eq!(o.sequence_number, expected, "in {seq}");
            expected = expected.wrapping_add(1);
        }
    }

    #[test]
    fn outgoing_wraparound_is_continuous_too() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 65_534, u32::MAX - 3000, t0).unwrap();
        let o = r.rewrite(2, 9, 0, ms(t0, 1)).unwrap();
        assert_eq!(o.sequence_number, 65_535);
        assert_eq!(o.timestamp, (u32::MAX - 3000).wrapping_add(90));
        assert_eq!(r.rewrite(2, 10, 3000, ms(t0, 2)).unwrap().sequence_number, 0);
        let later = r.rewrite(2, 11, 6000, ms(t0, 3)).unwrap();
        assert_eq!(later.sequence_number, 1);
        assert_eq!(later.timestamp, (u32::MAX - 3000).wrapping_add(90).wrapping_add(6000), "timestamps wrap too");
    }

    #[test]
    fn out_of_order_packets_keep_their_place_and_gaps_stay_gaps() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 1000, 0, t0).unwrap();
        let s = r.rewrite(2, 50, 0, t0).unwrap().sequence_number; // switch: 50 ↦ 1001
        assert_eq!(s, 1001);
        assert_eq!(r.rewrite(2, 53, 0, t0).unwrap().sequence_number, 1004, "gap of two kept for NACK");
        assert_eq!(r.rewrite(2, 52, 0, t0).unwrap().sequence_number, 1003, "late packet in its place");
        assert_eq!(r.rewrite(2, 51, 0, t0).unwrap().sequence_number, 1002);
        assert_eq!(r.rewrite(2, 52, 0, t0).unwrap().sequence_number, 1003, "a duplicate maps the same way");
        assert_eq!(r.last_sequence_number(), Some(1004), "late packets do not move the head");
    }

    #[test]
    fn packets_older_than_the_switch_point_are_dropped() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 10, 0, t0).unwrap();
        r.rewrite(2, 500, 0, t0).unwrap(); // switch point
        r.rewrite(2, 501, 0, t0).unwrap();
        assert_eq!(r.rewrite(2, 499, 0, t0), None, "before the switch: its number would collide");
        assert_eq!(r.rewrite(2, 400, 0, t0), None);
        assert!(r.rewrite(2, 500, 0, t0).is_some(), "the switch packet itself (duplicate) is fine");
    }

    #[test]
    fn packets_too_far_behind_are_dropped() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 0, 0, t0).unwrap();
        for seq in 1..=2000u16 {
            r.rewrite(1, seq, 0, t0).unwrap();
        }
        assert!(r.rewrite(1, 2000 - MAX_REORDER_PACKETS, 0, t0).is_some());
        assert_eq!(r.rewrite(1, 2000 - MAX_REORDER_PACKETS - 1, 0, t0), None);
        // Half the sequence space away is ambiguous (ahead or behind?): dropped, not a new head.
        assert_eq!(r.rewrite(1, 2000u16.wrapping_sub(32_768), 0, t0), None);
        assert_eq!(r.last_sequence_number(), Some(2000));
    }

    #[test]
    fn resume_after_pause_on_the_same_source_hides_the_skipped_packets() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        r.rewrite(1, 100, 0, t0).unwrap();
        r.rewrite(1, 101, 3000, ms(t0, 33)).unwrap();
        r.pause();
        // 300 packets later, 2 s later, same layer again.
        let o = r.rewrite(1, 401, 183_000, ms(t0, 2033)).unwrap();
        assert!(o.switched);
        assert_eq!(o.sequence_number, 102, "no gap of 300 for the subscriber to NACK");
        assert_eq!(o.timestamp, 3000 + 2000 * 90);
        assert_eq!(r.rewrite(1, 402, 186_000, ms(t0, 2066)).unwrap().sequence_number, 103);
    }

    #[test]
    fn switching_back_and_forth_never_reuses_a_number() {
        let mut r = StreamRewriter::new(90_000);
        let t0 = Instant::now();
        let mut sent = std::collections::HashSet::new();
        let mut seqs = [0u16, 30_000, 65_000];
        for round in 0..30u64 {
            let src = (round % 3) as usize;
            for _ in 0..50 {
                let o = r.rewrite(src as u32, seqs[src], 0, ms(t0, round)).unwrap();
                assert!(sent.insert(o.sequence_number), "reused {}", o.sequence_number);
                seqs[src] = seqs[src].wrapping_add(1);
            }
            // The other layers keep advancing while not forwarded.
            for (i, s) in seqs.iter_mut().enumerate() {
                if i != src {
                    *s = s.wrapping_add(50);
                }
            }
        }
        assert_eq!(sent.len(), 1500);
    }
}
