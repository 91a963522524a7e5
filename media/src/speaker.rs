//! Active speaker detection from RFC 6464 audio levels (the `ssrc-audio-level` header
//! extension: 0 = 0 dBov, loudest … 127 = -127 dBov, silence).
//!
//! Each participant's loudness (127 − level, dB above silence) is averaged over a sliding
//! [`WINDOW`], counting frames that did not arrive (DTX sends nothing in silence) as silent, so a
//! participant who coughed once does not outrank one who talks steadily. The dominant speaker
//! changes only when someone else is louder by [`SWITCH_MARGIN_DB`] and the current one has held
//! the floor for [`MIN_HOLD`]; an event is emitted only on a change.
//!
//! Pure: the caller passes the clock and calls [`SpeakerDetector::tick`] (e.g. every 200 ms).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Span over which loudness is averaged.
pub const WINDOW: Duration = Duration::from_millis(1500);
/// Least time a dominant speaker keeps the floor.
pub const MIN_HOLD: Duration = Duration::from_millis(1500);
/// How much louder (mean dB over the window) a challenger must be to take the floor.
pub const SWITCH_MARGIN_DB: f64 = 6.0;
/// Mean loudness below which nobody counts as speaking (≈ −80 dBov over the window).
pub const MIN_SPEECH_DB: f64 = 20.0;
/// Audio frame length assumed when counting missing frames (Opus default).
pub const FRAME: Duration = Duration::from_millis(20);

/// The dominant speaker changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerChanged<P> {
    pub previous: Option<P>,
    pub current: P,
}

/// Dominant-speaker state of one meeting, keyed by participant `P`.
#[derive(Debug, Clone)]
pub struct SpeakerDetector<P> {
    /// Recent (arrival, loudness dB) samples per participant, oldest first.
    samples: HashMap<P, VecDeque<(Instant, u8)>>,
    dominant: Option<(P, Instant)>,
}

impl<P: Clone + Eq + Hash> Default for SpeakerDetector<P> {
    fn default() -> Self {
        Self { samples: HashMap::new(), dominant: None }
    }
}

impl<P: Clone + Eq + Hash> SpeakerDetector<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current dominant speaker.
    pub fn dominant(&self) -> Option<&P> {
        self.dominant.as_ref().map(|(p, _)| p)
    }

    /// Records one audio packet's level (RFC 6464: 0 loudest … 127 silent; higher values are
    /// clamped) for `participant`.
    pub fn observe(&mut self, participant: P, level: u8, now: Instant) {
        let loudness = 127 - level.min(127);
        let q = self.samples.entry(participant).or_default();
        q.push_back((now, loudness));
        // Bounded whatever the caller does: at most a window's worth of 10 ms frames, doubled.
        let cap = (2 * WINDOW.as_millis() / 10) as usize;
        while q.len() > cap || q.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW) {
            q.pop_front();
        }
    }

    /// Forgets a participant who left; if it held the floor, the next tick picks someone else.
    pub fn remove(&mut self, participant: &P) {
        self.samples.remove(participant);
        if self.dominant.as_ref().is_some_and(|(p, _)| p == participant) {
            self.dominant = None;
        }
    }

    /// Mean loudness of a participant over the window ending at `now`, dB above silence.
    pub fn score(&self, participant: &P, now: Instant) -> f64 {
        let frames = (WINDOW.as_millis() / FRAME.as_millis()) as f64;
        let Some(q) = self.samples.get(participant) else { return 0.0 };
        let recent = q.iter().filter(|(t, _)| now.saturating_duration_since(*t) <= WINDOW);
        let (sum, n) = recent.fold((0.0, 0.0), |(s, n), (_, l)| (s + f64::from(*l), n + 1.0));
        sum / frames.max(n)
    }

    /// Re-decides the dominant speaker; `Some` only when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<SpeakerChanged<P>> {
        self.samples.retain(|_, q| {
            while q.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let (loudest, best) = self
            .samples
            .keys()
            .map(|p| (p, self.score(p, now)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, s)| (p.clone(), s))?;
        if best < MIN_SPEECH_DB {
            return None;
        }
        match &self.dominant {
            Some((current, _)) if *current == loudest => None,
            Some((current, since)) => {
                let held = now.saturating_duration_since(*since) >= MIN_HOLD;
                if held && best >= self.score(current, now) + SWITCH_MARGIN_DB {
                    let previous = Some(current.clone());
                    self.dominant = Some((loudest.clone(), now));
                    Some(SpeakerChanged { previous, current: loudest })
                } else {
                    None
                }
            }
            None => {
                self.dominant = Some((loudest.clone(), now));
                Some(SpeakerChanged { previous: None, current: loudest })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `who` a 20 ms frame at `level` for `ms` starting at `from`.
    fn speak(d: &mut SpeakerDetector<&'static str>, who: &'static str, level: u8, from: Instant, ms: u64) {
        for f in 0..ms / 20 {
            d.observe(who, level, from + Duration::from_millis(f * 20));
        }
    }

    #[test]
    fn first_speaker_takes_the_floor_at_once_and_silence_elects_nobody() {
        let mut d = SpeakerDetector::new();
        let t0 = Instant::now();
        speak(&mut d, "bob", 127, t0, 1000);
        assert_eq!(d.tick(t0 + Duration::from_millis(1000)), None, "silence");
        speak(&mut d, "ann", 30, t0, 1000);
        let e = d.tick(t0 + Duration::from_millis(1000)).unwrap();
        assert_eq!(e, SpeakerChanged { previous: None, current: "ann" });
        assert_eq!(d.tick(t0 + Duration::from_millis(1200)), None, "no repeat event");
        assert_eq!(d.dominant(), Some(&"ann"));
    }

    #[test]
    fn a_louder_challenger_takes_over_only_after_the_hold_and_by_the_margin() {
        let mut d = SpeakerDetector::new();
        let t0 = Instant::now();
        speak(&mut d, "ann", 40, t0, 3000);
        assert_eq!(d.tick(t0 + Duration::from_millis(500)).map(|e| e.current), Some("ann"));
        // Bob is slightly louder (4 dB): not enough.
        speak(&mut d, "bob", 36, t0 + Duration::from_millis(500), 2500);
        assert_eq!(d.tick(t0 + Duration::from_millis(2900)), None);
        // Ann stops, Bob goes on: Ann's mean falls, Bob takes over.
        speak(&mut d, "bob", 36, t0 + Duration::from_millis(3000), 1500);
        let e = d.tick(t0 + Duration::from_millis(4500)).unwrap();
        assert_eq!(e, SpeakerChanged { previous: Some("ann"), current: "bob" });
    }

    #[test]
    fn no_switch_within_the_hold_time() {
        let mut d = SpeakerDetector::new();
        let t0 = Instant::now();
        speak(&mut d, "ann", 50, t0, 500);
        assert!(d.tick(t0 + Duration::from_millis(500)).is_some());
        speak(&mut d, "bob", 10, t0 + Duration::from_millis(500), 800);
        assert_eq!(d.tick(t0 + Duration::from_millis(1300)), None, "ann holds for 1.5 s");
        speak(&mut d, "bob", 10, t0 + Duration::from_millis(1300), 400);
        assert_eq!(d.tick(t0 + Duration::from_millis(2000)).map(|e| e.current), Some("bob"));
    }

    #[test]
    fn a_single_loud_blip_does_not_outrank_steady_speech() {
        let mut d = SpeakerDetector::new();
        let t0 = Instant::now();
        speak(&mut d, "ann", 45, t0, 4000);
        d.tick(t0 + Duration::from_millis(100));
        // One 0 dBov frame from Bob (a cough), then DTX silence: missing frames count as silent.
        d.observe("bob", 0, t0 + Duration::from_millis(3900));
        assert!(d.score(&"bob", t0 + Duration::from_millis(4000)) < d.score(&"ann", t0 + Duration::from_millis(4000)));
        assert_eq!(d.tick(t0 + Duration::from_millis(4000)), None);
    }

    #[test]
    fn leaving_frees_the_floor() {
        let mut d = SpeakerDetector::new();
        let t0 = Instant::now();
        speak(&mut d, "ann", 20, t0, 1000);
        speak(&mut d, "bob", 60, t0, 1000);
        d.tick(t0 + Duration::from_millis(1000));
        d.remove(&"ann");
        assert_eq!(d.dominant(), None);
        let e = d.tick(t0 + Duration::from_millis(1000)).unwrap();
        assert_eq!(e, SpeakerChanged { previous: None, current: "bob" });
    }

    #[test]
    fn old_samples_expire_and_memory_stays_bounded() {
        let mut d = SpeakerDetector::new();
        let t0 = Instant::now();
        // A burst far faster than real audio: still bounded.
        for _ in 0..10_000 {
            d.observe("ann", 0, t0);
        }
        assert!(d.samples[&"ann"].len() <= 300);
        assert_eq!(d.score(&"ann", t0 + Duration::from_secs(10)), 0.0);
        d.tick(t0 + Duration::from_secs(10));
        assert!(d.samples.is_empty(), "silent participants are dropped from the map");
        d.observe("ann", 200, t0);
        assert_eq!(d.score(&"ann", t0), 0.0, "out-of-range level clamped to silence");
    }
}
