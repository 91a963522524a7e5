//! How well a remote receives what we send it, from the report blocks of its RTCP receiver
//! and sender reports (RFC 3550 §6.4): loss fraction, interarrival jitter and round-trip time.
//!
//! The interceptor that sees inbound RTCP (`KeyframeRequestForwarder`) feeds a
//! [`ReceptionQuality`] per peer; the operators' view reads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The latest figures a remote reported about our streams to it (the worst stream of its
/// latest report), readable without a lock.
#[derive(Debug, Default)]
pub struct ReceptionQuality {
    /// Loss fraction since its previous report, in 1/256.
    fraction_lost: AtomicU32,
    /// Interarrival jitter, µs.
    jitter_us: AtomicU32,
    /// Round-trip time, µs (0: not known yet).
    rtt_us: AtomicU32,
    /// Reports taken in.
    reports: AtomicU64,
}

/// A [`ReceptionQuality`] reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceptionFigures {
    /// 0.0 ..= 1.0.
    pub loss: f64,
    pub jitter_ms: f64,
    /// `None` before a report that echoes one of our sender reports.
    pub rtt_ms: Option<f64>,
    pub reports: u64,
}

/// One report block as this module needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// In the stream's RTP clock units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last sender report we sent on the stream (0: none).
    pub last_sender_report: u32,
    /// Since then until the report was sent, in 1/65 536 s.
    pub delay: u32,
}

impl ReceptionQuality {
    /// Takes in one report's blocks about our streams (`clock_rates`: ours, by SSRC; blocks
    /// about other streams are ignored), received at `now_ntp_middle` (see [`ntp_middle`]).
    pub fn observe(&self, blocks: &[Block], clock_rates: &HashMap<u32, u32>, now_ntp_middle: u32) {
        let mut seen = false;
        let (mut lost, mut jitter_us, mut rtt_us) = (0u32, 0u32, None::<u32>);
        for b in blocks {
            let Some(&rate) = clock_rates.get(&b.ssrc) else { continue };
            seen = true;
            lost = lost.max(u32::from(b.fraction_lost));
            if rate > 0 {
                jitter_us =
                    jitter_us.max((u64::from(b.jitter) * 1_000_000 / u64::from(rate)).min(u32::MAX as u64) as u32);
            }
            if let Some(rtt) = round_trip(now_ntp_middle, b.last_sender_report, b.delay) {
                let us = rtt.as_micros().min(u32::MAX as u128) as u32;
                rtt_us = Some(rtt_us.map_or(us, |r| r.max(us)));
            }
        }
        if !seen {
            return;
        }
        self.fraction_lost.store(lost, Ordering::Relaxed);
        self.jitter_us.store(jitter_us, Ordering::Relaxed);
        if let Some(rtt) = rtt_us {
            // At least 1 µs: 0 means "not known".
            self.rtt_us.store(rtt.max(1), Ordering::Relaxed);
        }
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> ReceptionFigures {
        let rtt = self.rtt_us.load(Ordering::Relaxed);
        ReceptionFigures {
            loss: f64::from(self.fraction_lost.load(Ordering::Relaxed)) / 256.0,
            jitter_ms: f64::from(self.jitter_us.load(Ordering::Relaxed)) / 1000.0,
            rtt_ms: (rtt > 0).then(|| f64::from(rtt) / 1000.0),
            reports: self.reports.load(Ordering::Relaxed),
        }
    }
}

/// The round trip a report block tells (RFC 3550 §6.4.1: arrival − LSR − DLSR), `None` when
/// the block echoes no sender report or the figures do not make sense (clock step, garbage).
pub fn round_trip(now_ntp_middle: u32, last_sender_report: u32, delay: u32) -> Option<Duration> {
    if last_sender_report == 0 {
        return None;
    }
    let rtt = now_ntp_middle.wrapping_sub(last_sender_report).wrapping_sub(delay);
    // More than a minute (or "negative"): not a round trip.
    if rtt > 60 << 16 {
        return None;
    }
    Some(Duration::from_micros((u64::from(rtt) * 1_000_000) >> 16))
}

/// The middle 32 bits of the NTP timestamp of `t` (what LSR echoes).
pub fn ntp_middle(t: SystemTime) -> u32 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET_SECS;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (((secs & 0xFFFF) << 16) | (frac >> 16)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, fraction_lost: u8, jitter: u32, lsr: u32, dlsr: u32) -> Block {
        Block { ssrc, fraction_lost, jitter, last_sender_report: lsr, delay: dlsr }
    }

    #[test]
    fn round_trip_is_arrival_minus_echo_minus_delay() {
        // Sent at 1.0 s, held 0.25 s, back at 1.5 s: 250 ms on the wire.
        let rtt = round_trip(3 << 15, 1 << 16, 1 << 14).expect("a round trip");
        assert_eq!(rtt, Duration::from_millis(250));
        // Across the 16-bit seconds wrap.
        let rtt = round_trip(0x0000_8000, 0xFFFF_8000, 0).expect("wraps");
        assert_eq!(rtt, Duration::from_secs(1));
        assert_eq!(round_trip(5 << 16, 0, 0), None, "no sender report echoed");
        assert_eq!(round_trip(1 << 16, 2 << 16, 0), None, "arrival before the echo: a clock step");
    }

    #[test]
    fn ntp_middle_of_a_known_time() {
        // Unix 0 is NTP 2 208 988 800 s = 0x83AA7E80: the low 16 bits of the seconds are 0x7E80.
        assert_eq!(ntp_middle(UNIX_EPOCH), 0x7E80_0000);
        assert_eq!(ntp_middle(UNIX_EPOCH + Duration::from_millis(500)), 0x7E80_8000);
    }

    #[test]
    fn the_worst_of_our_streams_counts_and_others_are_ignored() {
        let q = ReceptionQuality::default();
        let rates = HashMap::from([(10, 90_000), (20, 48_000)]);
        let now = 10 << 16;
        q.observe(
            &[
                block(10, 64, 900, (10 << 16) - (1 << 13), 0), // 25 % lost, 10 ms, rtt 125 ms
                block(20, 13, 480, 0, 0),                      // 10 ms jitter, no rtt
                block(99, 255, 1_000_000, 0, 0),               // not ours
            ],
            &rates,
            now,
        );
        let f = q.read();
        assert_eq!(f.loss, 0.25);
        assert_eq!(f.jitter_ms, 10.0);
        assert_eq!(f.rtt_ms, Some(125.0));
        assert_eq!(f.reports, 1);
        // A report about nobody of ours changes nothing.
        q.observe(&[block(99, 0, 0, 0, 0)], &rates, now);
        assert_eq!(q.read().reports, 1);
        // A later report without an echo keeps the last known round trip.
        q.observe(&[block(20, 0, 48, 0, 0)], &rates, now);
        let f = q.read();
        assert_eq!((f.loss, f.jitter_ms, f.rtt_ms, f.reports), (0.0, 1.0, Some(125.0), 2));
    }
}
