//! One track's RTP timestamps on the recording's clock: milliseconds since the recording
//! started, the same zero for every track of the recording, so their files line up when
//! composed.
//!
//! A stream's first frame sits at its arrival (its offset from the recording's start
//! `Instant`); every later frame at that plus its RTP time since the first (32-bit wrap
//! handled by signed deltas). Arrival places the stream once, RTP time spaces its frames: the
//! network's jitter does not reach the file. Sender reports (RTP ↔ NTP) would align tracks
//! more exactly; the receive path does not hand them to the forwarder, so arrival it is.
//!
//! Never backwards: a frame whose time would go back stays at the last one. A new stream on
//! the same track (an SSRC change: a simulcast switch, a republish) and a jump of RTP time that
//! wall time does not show (a publisher that restarted its timestamps) are *rebased*: the next
//! frame continues from the last one by the wall time between their arrivals.

use std::time::Instant;

/// A forward RTP jump this much larger than the wall time between two frames (ms) is a
/// discontinuity, not a pause.
pub const MAX_FORWARD_JUMP_MS: i64 = 10_000;
/// A backward RTP step larger than this (ms) is a discontinuity, not a late frame.
pub const MAX_BACKWARD_STEP_MS: i64 = 1_000;

/// The RTP → recording-time mapping of one track (see the module docs).
#[derive(Debug, Clone)]
pub struct TrackClock {
    rate: i64,
    start: Instant,
    /// The stream being mapped; `None` before its first frame or after a rebase.
    stream: Option<Stream>,
    /// The last frame's time (ms) and arrival (ms since the start).
    last: Option<(u64, i64)>,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The newest RTP timestamp seen and its extended (wrap-free) value.
    newest: u32,
    newest_ext: i64,
    /// The stream's first frame: its extended timestamp and its time (ms).
    base_ext: i64,
    base_ms: i64,
}

impl TrackClock {
    /// A clock for RTP at `clock_rate` Hz (90 000 video, 48 000 Opus) whose zero is
    /// `recording_start`.
    pub fn new(clock_rate: u32, recording_start: Instant) -> TrackClock {
        TrackClock { rate: i64::from(clock_rate.max(1)), start: recording_start, stream: None, last: None }
    }

    /// The time (ms since the recording's start) of the frame with RTP timestamp `rtp_ts`
    /// whose first packet arrived at `arrival`. Never less than the previous frame's.
    pub fn map(&mut self, rtp_ts: u32, arrival: Instant) -> u64 {
        let arrival_ms = i64::try_from(arrival.saturating_duration_since(self.start).as_millis()).unwrap_or(i64::MAX);
        let ms = match self.stream {
            Some(mut s) => {
                let delta = i64::from(rtp_ts.wrapping_sub(s.newest) as i32);
                let delta_ms = delta * 1000 / self.rate;
                let wall_ms = self.last.map_or(0, |(_, a)| arrival_ms - a);
                if delta_ms - wall_ms > MAX_FORWARD_JUMP_MS || delta_ms < -MAX_BACKWARD_STEP_MS {
                    self.begin(rtp_ts, arrival_ms)
                } else {
                    let ext = s.newest_ext + delta;
                    if delta > 0 {
                        s.newest = rtp_ts;
                        s.newest_ext = ext;
                    }
                    self.stream = Some(s);
                    s.base_ms + (ext - s.base_ext) * 1000 / self.rate
                }
            }
            None => self.begin(rtp_ts, arrival_ms),
        };
        let ms = u64::try_from(ms).unwrap_or(0);
        let ms = self.last.map_or(ms, |(last, _)| ms.max(last));
        self.last = Some((ms, arrival_ms));
        ms
    }

    /// A new stream starts with the next frame (an SSRC change): it continues from the last
    /// frame by the wall time between their arrivals.
    pub fn new_stream(&mut self) {
        self.stream = None;
    }

    /// The last frame's time (ms), if any.
    pub fn last_ms(&self) -> Option<u64> {
        self.last.map(|(ms, _)| ms)
    }

    /// A stream's first frame: at its arrival if it is the track's first, else one wall-time
    /// step after the last frame (at least 1 ms).
    fn begin(&mut self, rtp_ts: u32, arrival_ms: i64) -> i64 {
        let base_ms = match self.last {
            None => arrival_ms,
            Some((last, last_arrival)) => {
                i64::try_from(last).unwrap_or(i64::MAX).saturating_add((arrival_ms - last_arrival).max(1))
            }
        };
        let ext = i64::from(rtp_ts);
        self.stream = Some(Stream { newest: rtp_ts, newest_ext: ext, base_ext: ext, base_ms });
        base_ms
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_frame_sits_at_its_arrival_the_rest_by_rtp_time() {
        let t0 = Instant::now();
        let mut c = TrackClock::new(90_000, t0);
        assert_eq!(c.map(1_000, at(t0, 250)), 250);
        // Jitter on arrival does not move frames: 3000 ticks = 33 ms.
        assert_eq!(c.map(4_000, at(t0, 300)), 283);
        assert_eq!(c.map(7_000, at(t0, 301)), 316);
        assert_eq!(c.last_ms(), Some(316));
        let mut a = TrackClock::new(48_000, t0);
        assert_eq!(a.map(0, at(t0, 10)), 10);
        assert_eq!(a.map(960 * 50, at(t0, 1_010)), 1_010, "50 Opus frames = 1 s");
        // An arrival before the recording started counts as 0.
        let mut early = TrackClock::new(48_000, at(t0, 100));
        assert_eq!(early.map(5, t0), 0);
    }

    #[test]
    fn timestamps_wrap_at_32_bits() {
        let t0 = Instant::now();
        let mut c = TrackClock::new(90_000, t0);
        assert_eq!(c.map(u32::MAX - 9_000, at(t0, 500)), 500);
        assert_eq!(c.map(u32::MAX, at(t0, 600)), 600);
        assert_eq!(c.map(89_999, at(t0, 1_600)), 1_600, "across the wrap: 1 s later");
        assert_eq!(c.map(179_999, at(t0, 2_600)), 2_600);
    }

    #[test]
    fn never_backwards_and_discontinuities_rebase() {
        let t0 = Instant::now();
        let mut c = TrackClock::new(90_000, t0);
        assert_eq!(c.map(90_000, at(t0, 0)), 0);
        assert_eq!(c.map(180_000, at(t0, 1_000)), 1_000);
        assert_eq!(c.map(177_000, at(t0, 1_010)), 1_000, "a step back stays put");
        assert_eq!(c.map(183_000, at(t0, 1_030)), 1_033, "and the stream goes on");
        // The publisher restarted its timestamps far away: continue by wall time.
        assert_eq!(c.map(2_000_000_000, at(t0, 1_070)), 1_073);
        assert_eq!(c.map(2_000_003_000, at(t0, 1_100)), 1_106);
        // Far back, too.
        assert_eq!(c.map(10, at(t0, 1_140)), 1_146);
        // A long pause that wall time shows is not a jump.
        assert_eq!(c.map(10 + 90_000 * 60, at(t0, 61_140)), 61_146);
    }

    #[test]
    fn an_ssrc_change_continues_from_the_last_frame() {
        let t0 = Instant::now();
        let mut c = TrackClock::new(90_000, t0);
        assert_eq!(c.map(5_000, at(t0, 100)), 100);
        assert_eq!(c.map(95_000, at(t0, 1_100)), 1_100);
        c.new_stream();
        // The new layer's timestamps are unrelated; its first frame came 40 ms after the last.
        assert_eq!(c.map(3_000_000_000, at(t0, 1_140)), 1_140);
        assert_eq!(c.map(3_000_003_000, at(t0, 1_170)), 1_173);
        // Fed faster than real time (a replay): still continuous, 1 ms on.
        c.new_stream();
        assert_eq!(c.map(42, at(t0, 1_170)), 1_174);
    }
}
