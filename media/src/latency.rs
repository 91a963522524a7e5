//! A lock-free latency histogram: log-spaced buckets (each 10 % wider than the last, from
//! 10 µs to about 2 s), recorded from the hot path with one relaxed atomic add, read as
//! cumulative bucket counts that two snapshots can subtract.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bound of the first bucket, µs.
const FIRST_US: f64 = 10.0;
/// Each bucket's upper bound is this times the previous one's.
const GROWTH: f64 = 1.1;
/// Buckets: the last holds everything above ~2 s.
pub const BUCKETS: usize = 128;

/// Counts of durations by bucket.
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram").field("count", &self.snapshot().count()).finish()
    }
}

/// The upper bound of bucket `i`, µs.
pub fn bucket_upper_us(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i as i32)
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    ((us / FIRST_US).ln() / GROWTH.ln()).ceil().min((BUCKETS - 1) as f64) as usize
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        self.buckets[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot { counts: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect() }
    }
}

/// Bucket counts at one moment; `counts[i]` is the number of durations in bucket `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub counts: Vec<u64>,
}

impl LatencySnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was recorded between `earlier` and this one.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        let counts =
            self.counts.iter().enumerate().map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)));
        LatencySnapshot { counts: counts.collect() }
    }

    /// This one and `other` together (two threads' histograms read as one).
    pub fn merged(&self, other: &LatencySnapshot) -> LatencySnapshot {
        let len = self.counts.len().max(other.counts.len());
        let at = |s: &LatencySnapshot, i: usize| s.counts.get(i).copied().unwrap_or(0);
        LatencySnapshot { counts: (0..len).map(|i| at(self, i) + at(other, i)).collect() }
    }

    /// The `q` quantile (0..=1) as its bucket's upper bound, µs (so within 10 % above the true
    /// value); `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_upper_us(i));
            }
        }
        Some(bucket_upper_us(self.counts.len().saturating_sub(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_ten_percent_above_the_recorded_values() {
        let h = LatencyHistogram::default();
        // 90 at 100 µs, 9 at 2 ms, 1 at 50 ms.
        for _ in 0..90 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..9 {
            h.record(Duration::from_millis(2));
        }
        h.record(Duration::from_millis(50));
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile_us(0.5).unwrap();
        assert!((100.0..=110.0).contains(&p50), "{p50}");
        let p95 = s.quantile_us(0.95).unwrap();
        assert!((2000.0..=2200.0).contains(&p95), "{p95}");
        let max = s.quantile_us(1.0).unwrap();
        assert!((50_000.0..=55_000.0).contains(&max), "{max}");
    }

    #[test]
    fn a_difference_of_snapshots_holds_only_what_came_between() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_secs(1));
        let before = h.snapshot();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_micros(5));
        let d = h.snapshot().since(&before);
        assert_eq!(d.count(), 2);
        assert_eq!(d.quantile_us(0.99), Some(FIRST_US));
        assert_eq!(LatencyHistogram::default().snapshot().quantile_us(0.5), None);
    }

    #[test]
    fn merged_snapshots_count_both() {
        let (a, b) = (LatencyHistogram::default(), LatencyHistogram::default());
        a.record(Duration::from_micros(100));
        b.record(Duration::from_micros(100));
        b.record(Duration::from_millis(3));
        let both = a.snapshot().merged(&b.snapshot());
        assert_eq!(both.count(), 3);
        assert_eq!(both.counts[bucket_of(Duration::from_micros(100))], 2);
        assert_eq!(both.merged(&LatencySnapshot { counts: Vec::new() }), both);
    }

    #[test]
    fn beyond_the_last_bound_goes_to_the_last_bucket() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_secs(3600));
        assert_eq!(h.snapshot().counts[BUCKETS - 1], 1);
        assert!(bucket_upper_us(BUCKETS - 1) > 1e6, "the last bound is above a second");
    }
}
