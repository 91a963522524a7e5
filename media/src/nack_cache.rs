//! Per-publisher-stream cache of recent RTP packets for NACK retransmission: a ring buffer
//! indexed by sequence number, bounded by packet count.
//!
//! Sequence numbers are 16-bit and wrap every 65 536 packets (≈ 20 min of 720p video), so each
//! slot keeps the packet's *extended* sequence number (wrap count × 2^16 + seq, unwrapped
//! against the newest packet seen): a lookup for seq 5 after a wrap never returns the seq 5 of
//! 65 536 packets ago. Packets more than [`NackCache::capacity`] behind the newest are gone.
//!
//! Generic over the stored value (an `rtp::Packet` in the router, anything in tests).

/// Default slots per stream: ~1 s of 720p video at ~250 packets/s, the usual NACK horizon.
pub const DEFAULT_CAPACITY: usize = 512;

/// Ring buffer of the last `capacity` packets of one stream, by sequence number.
#[derive(Debug, Clone)]
pub struct NackCache<T> {
    slots: Vec<Option<(u64, T)>>,
    /// Extended sequence number of the newest packet inserted.
    highest: Option<u64>,
}

impl<T> NackCache<T> {
    /// A cache of `capacity` packets (at least 1, at most 32 768 so "behind" stays unambiguous).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 15);
        Self { slots: std::iter::repeat_with(|| None).take(capacity).collect(), highest: None }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores a packet. Late (out-of-order) packets are kept if still within the window;
    /// older ones are ignored.
    pub fn insert(&mut self, seq: u16, value: T) {
        let ext = self.extend(seq);
        let highest = self.highest.map_or(ext, |h| h.max(ext));
        if highest - ext >= self.capacity() as u64 {
            return;
        }
        self.highest = Some(highest);
        let slot = (ext % self.capacity() as u64) as usize;
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some((ext, value));
        }
    }

    /// The packet with this sequence number, if still cached.
    pub fn get(&self, seq: u16) -> Option<&T> {
        self.highest?;
        let ext = self.extend(seq);
        let slot = (ext % self.capacity() as u64) as usize;
        match self.slots.get(slot)? {
            Some((stored, value)) if *stored == ext => Some(value),
            _ => None,
        }
    }

    /// Drops everything (the stream restarted).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.highest = None;
    }

    /// Extends `seq` to the value closest to the newest packet (within ±2^15).
    fn extend(&self, seq: u16) -> u64 {
        // Start one cycle up so the first packets can be "behind" without going negative.
        let Some(highest) = self.highest else { return (1 << 16) + u64::from(seq) };
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        // `highest` is ≥ 2^16 and moves forward only, so this stays positive in practice;
        // saturate anyway rather than trust it.
        highest.saturating_add_signed(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_recent_packets_and_forgets_old_ones() {
        let mut c = NackCache::new(4);
        for seq in 100..110u16 {
            c.insert(seq, seq);
        }
        assert_eq!(c.get(109), Some(&109));
        assert_eq!(c.get(106), Some(&106));
        assert_eq!(c.get(105), None, "evicted: capacity 4");
        assert_eq!(c.get(110), None, "not sent yet");
        assert_eq!(c.get(0), None);
    }

    #[test]
    fn empty_cache_finds_nothing() {
        let c: NackCache<u8> = NackCache::new(16);
        assert_eq!(c.get(0), None);
        assert_eq!(NackCache::<u8>::new(0).capacity(), 1);
    }

    #[test]
    fn wraparound_is_continuous() {
        let mut c = NackCache::new(8);
        for i in 0..8u16 {
            let seq = 65_532u16.wrapping_add(i);
            c.insert(seq, i);
        }
        for i in 0..8u16 {
            assert_eq!(c.get(65_532u16.wrapping_add(i)), Some(&i), "seq {}", 65_532u16.wrapping_add(i));
        }
    }

    #[test]
    fn a_full_cycle_later_the_same_number_is_not_the_old_packet() {
        let mut c = NackCache::new(16);
        c.insert(5, "old");
        // 65 536 packets later seq 5 comes around again; in between, only a few were cached.
        let mut seq = 5u16;
        for _ in 0..65_530 {
            seq = seq.wrapping_add(1);
            c.insert(seq, "filler");
        }
        assert_eq!(c.get(5), None, "the old seq 5 is long evicted");
        for _ in 0..6 {
            seq = seq.wrapping_add(1);
            c.insert(seq, "new");
        }
        assert_eq!(seq, 5);
        assert_eq!(c.get(5), Some(&"new"));
    }

    #[test]
    fn stale_slot_is_not_returned_for_a_different_cycle() {
        // Capacity 4: seq 1 and seq 5 share a slot; after 5 is in, 1 must not be found.
        let mut c = NackCache::new(4);
        c.insert(1, 1);
        c.insert(5, 5);
        assert_eq!(c.get(1), None);
        assert_eq!(c.get(5), Some(&5));
    }

    #[test]
    fn late_packets_within_the_window_are_kept() {
        let mut c = NackCache::new(8);
        c.insert(10, 10);
        c.insert(13, 13);
        c.insert(11, 11); // reordered
        assert_eq!(c.get(11), Some(&11));
        assert_eq!(c.get(12), None, "lost, never inserted");
        c.insert(2, 2); // 11 behind with capacity 8: too old
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(13), Some(&13), "a too-old insert evicts nothing");
        assert_eq!(c.get(10), Some(&10));
    }

    #[test]
    fn first_packet_may_be_followed_by_earlier_ones() {
        let mut c = NackCache::new(8);
        c.insert(0, 0);
        c.insert(65_535, 9); // just before 0
        assert_eq!(c.get(65_535), Some(&9));
        assert_eq!(c.get(0), Some(&0));
        c.clear();
        assert_eq!(c.get(0), None);
    }
}
