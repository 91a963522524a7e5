//! Keyframe-request throttle: at most one PLI/FIR per publisher source per
//! [`MIN_KEYFRAME_REQUEST_INTERVAL`].
//!
//! Every subscriber that joins, switches layer or loses packets wants a keyframe, and a meeting
//! of fifty can ask for one fifty times in the same second. A keyframe is 5–10× a delta frame;
//! asking more often than the encoder can answer only inflates the publisher's uplink. One
//! request per source per second answers them all: the keyframe that comes back is forwarded to
//! everyone waiting on that source.
//!
//! Pure: the caller passes the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shortest gap between two keyframe requests to the same source.
pub const MIN_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Remembers when each source (publisher SSRC) was last asked for a keyframe.
#[derive(Debug, Clone)]
pub struct PliThrottle {
    /// Shortest gap between two requests to one source.
    min_interval: Duration,
    /// Last request sent, per source SSRC.
    last_sent: HashMap<u32, Instant>,
}

impl Default for PliThrottle {
    fn default() -> Self {
        Self::new(MIN_KEYFRAME_REQUEST_INTERVAL)
    }
}

impl PliThrottle {
    /// A throttle with a custom interval (tests, or screen share wanting a slower cadence).
    pub fn new(min_interval: Duration) -> Self {
        Self { min_interval, last_sent: HashMap::new() }
    }

    /// Whether a request to `source` may go out at `now`; if so, it is recorded as sent.
    pub fn allow(&mut self, source: u32, now: Instant) -> bool {
        match self.last_sent.get(&source) {
            Some(&last) if now.saturating_duration_since(last) < self.min_interval => false,
            _ => {
                self.last_sent.insert(source, now);
                true
            }
        }
    }

    /// Forgets a source that went away, so its entry does not outlive it.
    pub fn forget(&mut self, source: u32) {
        self.last_sent.remove(&source);
    }

    /// Sources currently remembered.
    pub fn len(&self) -> usize {
        self.last_sent.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.last_sent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_second_per_source() {
        let mut t = PliThrottle::default();
        let t0 = Instant::now();
        assert!(t.allow(1, t0));
        assert!(!t.allow(1, t0), "same instant is throttled");
        assert!(!t.allow(1, t0 + Duration::from_millis(999)));
        assert!(t.allow(2, t0 + Duration::from_millis(10)), "other sources are independent");
        assert!(t.allow(1, t0 + Duration::from_secs(1)));
        assert!(!t.allow(1, t0 + Duration::from_millis(1500)), "the window restarts at the last allowed request");
        assert!(t.allow(1, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_throttled_request_does_not_extend_the_window() {
        let mut t = PliThrottle::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(t.allow(7, t0));
        for ms in (10..100).step_by(10) {
            assert!(!t.allow(7, t0 + Duration::from_millis(ms)));
        }
        assert!(t.allow(7, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn clock_going_backwards_is_throttled_not_panicking() {
        let mut t = PliThrottle::default();
        let t0 = Instant::now() + Duration::from_secs(10);
        assert!(t.allow(1, t0));
        assert!(!t.allow(1, t0 - Duration::from_secs(5)));
    }

    #[test]
    fn forget_releases_the_source() {
        let mut t = PliThrottle::default();
        let t0 = Instant::now();
        assert!(t.allow(1, t0));
        t.forget(1);
        assert!(t.is_empty());
        assert!(t.allow(1, t0));
        assert_eq!(t.len(), 1);
    }
}
