//! Simulcast layer selection for one subscriber of one video track.
//!
//! Inputs: the layers the publisher currently sends (RID `q`/`h`/`f` with measured bitrate and
//! frame height), the height of the tile the subscriber shows the track in, and the share of
//! the subscriber's downlink estimate given to this track. Output: the layer to forward, or
//! none (paused: the tile is hidden).
//!
//! Rules:
//! - The view caps the layer: the smallest layer at least as tall as the tile (no point sending
//!   1080p into a 180p thumbnail).
//! - The budget caps it too. Going **down** happens at once (congestion hurts now); going **up**
//!   needs the higher layer to fit with [`UPGRADE_HEADROOM`] for [`UPGRADE_HOLD`] without
//!   interruption, so an estimate that wobbles around a layer's bitrate does not flap.
//! - The budget never pauses a visible tile: the lowest layer is the floor. The router does not
//!   probe (no padding, no TWCC), so a paused track would never show that the link has room
//!   again: a receiver's REMB follows what it receives, and one estimated from the audio alone
//!   (a browser's first REMB often is) would keep its video paused for good. Only the view
//!   pauses (a hidden tile).
//! - A change of target takes effect only at a keyframe of the new layer: until then the old
//!   layer keeps flowing ([`LayerSelector::on_packet`]) and [`LayerSelector::needs_keyframe`]
//!   tells the router to ask the publisher for one (throttled by `pli`).

use std::time::{Duration, Instant};

/// Factor a higher layer's bitrate must fit within the budget before upgrading.
pub const UPGRADE_HEADROOM: f64 = 1.25;
/// How long the higher layer must keep fitting before upgrading.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(3);

/// A simulcast layer, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// RID `q`: quarter resolution.
    Low,
    /// RID `h`: half resolution.
    Mid,
    /// RID `f` (or no simulcast): full resolution.
    High,
}

impl Layer {
    /// The layer of a stream from its RID; a stream without RID is the only, full layer.
    /// Unknown RIDs are `None` (ignored).
    pub fn from_rid(rid: Option<&str>) -> Option<Layer> {
        match rid {
            None | Some("f") => Some(Layer::High),
            Some("h") => Some(Layer::Mid),
            Some("q") => Some(Layer::Low),
            Some(_) => None,
        }
    }
}

/// What the router measured of one layer the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerInfo {
    pub layer: Layer,
    /// Measured bitrate, bits/s; 0 while unknown (treated as fitting any budget).
    pub bitrate_bps: u64,
    /// Frame height in pixels (from the keyframe header or the publisher's announcement).
    pub height: u32,
}

/// What to do with one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketAction {
    /// Not the forwarded layer (or paused): drop.
    Drop,
    /// Forward; `switched`: this packet starts the new layer (call `StreamRewriter::pause`
    /// first if the source might be the same as before, e.g. resuming after a pause).
    Forward { switched: bool },
}

/// Layer choice of one subscriber for one video track.
#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    /// Layer being forwarded now.
    current: Option<Layer>,
    /// Layer wanted; replaces `current` at its next keyframe.
    target: Option<Layer>,
    /// Since when a higher layer than `target` has fitted the budget with headroom.
    upgrade_since: Option<(Layer, Instant)>,
    /// The last target was below what the view asked for, for lack of budget: going up again
    /// needs the hold. (Otherwise changes follow the view at once.)
    budget_limited: bool,
}

impl LayerSelector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Layer being forwarded now.
    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// Layer wanted.
    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// Whether a keyframe of the target layer is awaited (ask the publisher).
    pub fn needs_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// Re-decides the target from the current inputs; returns it. Call on every estimate,
    /// view or layer-set change, and periodically (so an upgrade hold can complete).
    pub fn update(&mut self, layers: &[LayerInfo], tile_height: u32, budget_bps: u64, now: Instant) -> Option<Layer> {
        let cap = view_cap(layers, tile_height);
        let best = |headroom: f64| {
            layers
                .iter()
                .filter(|l| Some(l.layer) <= cap)
                .filter(|l| l.bitrate_bps == 0 || l.bitrate_bps as f64 * headroom <= budget_bps as f64)
                .map(|l| l.layer)
                .max()
        };
        // The floor: the lowest layer of a visible tile, whatever the budget.
        let floor = || layers.iter().map(|l| l.layer).filter(|l| Some(*l) <= cap).min();
        let (plain, roomy) = (best(1.0).or_else(floor), best(UPGRADE_HEADROOM).or_else(floor));
        // A target the publisher stopped sending is no target.
        let target = self.target.filter(|t| layers.iter().any(|l| l.layer == *t));
        // `None < Some(Low)`: pausing is going down.
        let next = if plain <= target || !self.budget_limited {
            // Down, unchanged, or a first / view-driven choice: at once.
            self.upgrade_since = None;
            plain
        } else if roomy > target {
            match self.upgrade_since {
                Some((candidate, since)) if roomy >= Some(candidate) => {
                    if now.saturating_duration_since(since) >= UPGRADE_HOLD {
                        self.upgrade_since = None;
                        roomy
                    } else {
                        target
                    }
                }
                _ => {
                    self.upgrade_since = roomy.map(|l| (l, now));
                    target
                }
            }
        } else {
            // The next layer fits, but without headroom: stay, and restart any hold.
            self.upgrade_since = None;
            target
        };
        self.budget_limited = next < cap;
        self.target = next;
        if next.is_none() {
            self.current = None;
        }
        next
    }

    /// Decides what to do with a packet of `layer` (`keyframe`: it starts a keyframe, see
    /// `vp8::is_keyframe`).
    pub fn on_packet(&mut self, layer: Layer, keyframe: bool) -> PacketAction {
        let Some(target) = self.target else {
            return PacketAction::Drop;
        };
        if Some(target) != self.current && layer == target && keyframe {
            self.current = Some(target);
            return PacketAction::Forward { switched: true };
        }
        if Some(layer) == self.current { PacketAction::Forward { switched: false } } else { PacketAction::Drop }
    }
}

/// Bitrate of one stream: the bytes of the last completed [`RATE_PERIOD`], as bits/s.
#[derive(Debug, Clone, Default)]
pub struct BitrateMeter {
    /// Bytes in the period under way.
    bytes: u64,
    /// When the period under way began.
    since: Option<Instant>,
    /// Figure of the last completed period, bits/s.
    bps: u64,
}

/// The span a [`BitrateMeter`] counts over.
pub const RATE_PERIOD: Duration = Duration::from_millis(500);

impl BitrateMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `bytes` received at `now`.
    pub fn record(&mut self, bytes: usize, now: Instant) {
        self.roll(now);
        self.bytes += bytes as u64;
    }

    /// Bits per second of the last completed period; 0 before the first one ends.
    pub fn bps(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.bps
    }

    fn roll(&mut self, now: Instant) {
        let since = *self.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed < RATE_PERIOD {
            return;
        }
        // Over two periods without a packet: the stream is silent.
        self.bps = if elapsed >= RATE_PERIOD * 2 { 0 } else { self.bytes * 8 * 1000 / elapsed.as_millis() as u64 };
        self.bytes = 0;
        self.since = Some(now);
    }
}

/// Splits a downlink estimate between a subscriber's video tracks: first what cannot adapt
/// (`fixed_bps`: audio, single-layer video) is taken off, then the rest is shared in
/// proportion to each tile's area (height², tiles share an aspect ratio). A tile of height 0
/// (hidden) gets nothing. `None` estimate (no feedback yet): every track is unlimited.
pub fn split_budget(estimate_bps: Option<u64>, fixed_bps: u64, tile_heights: &[u32]) -> Vec<u64> {
    let Some(estimate) = estimate_bps else {
        return vec![u64::MAX; tile_heights.len()];
    };
    let left = estimate.saturating_sub(fixed_bps) as u128;
    let total: u128 = tile_heights.iter().map(|h| u128::from(*h) * u128::from(*h)).sum();
    tile_heights
        .iter()
        .map(|h| (left * u128::from(*h) * u128::from(*h)).checked_div(total).unwrap_or(0) as u64)
        .collect()
}

/// Highest layer the tile justifies: the smallest at least as tall as the tile, or the tallest
/// if none is; `None` when the tile is hidden (height 0) or no layer is sent.
fn view_cap(layers: &[LayerInfo], tile_height: u32) -> Option<Layer> {
    if tile_height == 0 {
        return None;
    }
    layers
        .iter()
        .filter(|l| l.height >= tile_height)
        .min_by_key(|l| l.height)
        .or_else(|| layers.iter().max_by_key(|l| l.height))
        .map(|l| l.layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1000;

    fn layers() -> Vec<LayerInfo> {
        vec![
            LayerInfo { layer: Layer::Low, bitrate_bps: 150 * K, height: 180 },
            LayerInfo { layer: Layer::Mid, bitrate_bps: 500 * K, height: 360 },
            LayerInfo { layer: Layer::High, bitrate_bps: 1500 * K, height: 720 },
        ]
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_meter_reports_the_last_period() {
        let (mut m, t0) = (BitrateMeter::new(), Instant::now());
        for i in 0..50u64 {
            m.record(1250, at(t0, i * 10)); // 1,250 B every 10 ms = 1 Mbit/s
        }
        assert_eq!(m.bps(at(t0, 499)), 0, "first period not over");
        let bps = m.bps(at(t0, 500));
        assert!((990 * K..=1010 * K).contains(&bps), "{bps}");
        assert_eq!(m.bps(at(t0, 2000)), 0, "silent for longer than two periods");
    }

    #[test]
    fn the_budget_is_split_by_tile_area_after_fixed_streams() {
        assert_eq!(split_budget(None, 0, &[720, 180]), vec![u64::MAX, u64::MAX], "no estimate: unlimited");
        // 1,100 k minus 100 k of audio; a 720 tile has 16 times the area of a 180 one.
        assert_eq!(split_budget(Some(1100 * K), 100 * K, &[720, 180]), vec![1_000_000 * 16 / 17, 1_000_000 / 17]);
        assert_eq!(split_budget(Some(50 * K), 100 * K, &[720]), vec![0], "audio takes it all");
        assert_eq!(split_budget(Some(500 * K), 0, &[0, 360]), vec![0, 500 * K], "a hidden tile gets nothing");
        assert!(split_budget(Some(K), 0, &[]).is_empty());
    }

    #[test]
    fn rids_map_to_layers() {
        assert_eq!(Layer::from_rid(Some("q")), Some(Layer::Low));
        assert_eq!(Layer::from_rid(Some("h")), Some(Layer::Mid));
        assert_eq!(Layer::from_rid(Some("f")), Some(Layer::High));
        assert_eq!(Layer::from_rid(None), Some(Layer::High), "no simulcast: the one layer");
        assert_eq!(Layer::from_rid(Some("x")), None);
    }

    #[test]
    fn the_view_caps_the_layer_and_changes_apply_at_once() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let l = layers();
        assert_eq!(s.update(&l, 720, 10_000 * K, t0), Some(Layer::High), "first choice needs no hold");
        assert_eq!(s.update(&l, 360, 10_000 * K, t0), Some(Layer::Mid));
        assert_eq!(s.update(&l, 200, 10_000 * K, t0), Some(Layer::Mid), "smallest layer at least as tall");
        assert_eq!(s.update(&l, 100, 10_000 * K, t0), Some(Layer::Low));
        assert_eq!(s.update(&l, 1080, 10_000 * K, t0), Some(Layer::High), "taller than all: the tallest, at once");
        assert_eq!(s.update(&l, 0, 10_000 * K, t0), None, "hidden tile: paused");
        assert_eq!(s.on_packet(Layer::High, true), PacketAction::Drop);
        assert_eq!(s.update(&l, 360, 10_000 * K, t0), Some(Layer::Mid), "visible again: at once");
    }

    #[test]
    fn congestion_goes_down_at_once_and_up_only_after_the_hold() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let l = layers();
        assert_eq!(s.update(&l, 720, 3000 * K, t0), Some(Layer::High));
        assert_eq!(s.update(&l, 720, 1000 * K, at(t0, 100)), Some(Layer::Mid), "down at once");
        assert_eq!(s.update(&l, 720, 3000 * K, at(t0, 200)), Some(Layer::Mid), "hold starts");
        assert_eq!(s.update(&l, 720, 3000 * K, at(t0, 3100)), Some(Layer::Mid));
        assert_eq!(s.update(&l, 720, 3000 * K, at(t0, 3200)), Some(Layer::High), "held for 3 s");
    }

    #[test]
    fn an_estimate_wobbling_around_a_layer_does_not_flap() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let l = layers();
        s.update(&l, 720, 1000 * K, t0);
        let mut changes = 0;
        let mut last = s.target();
        // 1.6 Mb/s fits High (1.5) but not with 25 % headroom (1.875); 1.0 does not fit it.
        for i in 1..200u64 {
            let budget = if i % 2 == 0 { 1600 * K } else { 1000 * K };
            let t = s.update(&l, 720, budget, at(t0, i * 500));
            changes += usize::from(t != last);
            last = t;
        }
        assert_eq!((changes, last), (0, Some(Layer::Mid)));
    }

    #[test]
    fn an_interrupted_hold_starts_over() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let l = layers();
        s.update(&l, 720, 1000 * K, t0);
        s.update(&l, 720, 2000 * K, at(t0, 0));
        s.update(&l, 720, 2000 * K, at(t0, 2000));
        assert_eq!(s.update(&l, 720, 1700 * K, at(t0, 2500)), Some(Layer::Mid), "fits, but no headroom");
        assert_eq!(s.update(&l, 720, 2000 * K, at(t0, 2600)), Some(Layer::Mid));
        assert_eq!(s.update(&l, 720, 2000 * K, at(t0, 5000)), Some(Layer::Mid), "2.4 s since restart");
        assert_eq!(s.update(&l, 720, 2000 * K, at(t0, 5600)), Some(Layer::High));
    }

    #[test]
    fn when_nothing_fits_the_lowest_layer_still_flows_and_the_hold_still_applies() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let l = layers();
        s.update(&l, 720, 3000 * K, t0);
        assert_eq!(s.update(&l, 720, 100 * K, at(t0, 10)), Some(Layer::Low), "below Low: Low, not paused");
        assert!(s.needs_keyframe(), "switching down to Low");
        assert_eq!(s.update(&l, 720, 0, at(t0, 20)), Some(Layer::Low), "a zero budget too");
        assert_eq!(s.update(&l, 720, 700 * K, at(t0, 30)), Some(Layer::Low), "Mid fits with headroom, hold starts");
        assert_eq!(s.update(&l, 720, 700 * K, at(t0, 3030)), Some(Layer::Mid));
    }

    #[test]
    fn a_first_estimate_from_the_audio_alone_does_not_keep_video_off() {
        // A receiver's first REMB, before any video reached it, is about the audio's rate: the
        // budget left for video is 0. It still gets the lowest layer, hence a chance to grow.
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let budget = split_budget(Some(45 * K), 40 * K, &[720])[0];
        assert_eq!(s.update(&layers(), 720, budget, t0), Some(Layer::Low));
        assert!(s.needs_keyframe());
        assert_eq!(s.on_packet(Layer::Low, true), PacketAction::Forward { switched: true });
        assert_eq!(s.update(&layers(), 180, 0, t0), Some(Layer::Low), "a small tile: the same floor");
        assert_eq!(s.update(&layers(), 0, 10_000 * K, t0), None, "hidden: the view still pauses");
    }

    #[test]
    fn unknown_bitrates_fit_and_vanished_layers_are_replaced() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let mut l = layers();
        l[2].bitrate_bps = 0;
        assert_eq!(s.update(&l, 720, 10 * K, t0), Some(Layer::High), "not measured yet: assumed to fit");
        l.pop();
        assert_eq!(s.update(&l, 720, 10_000 * K, t0), Some(Layer::Mid), "publisher stopped sending f");
        assert_eq!(s.update(&[], 720, 10_000 * K, t0), None);
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_new_layer() {
        let (mut s, t0) = (LayerSelector::new(), Instant::now());
        let l = layers();
        s.update(&l, 720, 3000 * K, t0);
        assert!(s.needs_keyframe(), "nothing forwarded yet");
        assert_eq!(s.on_packet(Layer::High, false), PacketAction::Drop, "cannot start on a delta frame");
        assert_eq!(s.on_packet(Layer::High, true), PacketAction::Forward { switched: true });
        assert_eq!(s.on_packet(Layer::High, false), PacketAction::Forward { switched: false });
        assert!(!s.needs_keyframe());

        s.update(&l, 720, 1000 * K, at(t0, 10));
        assert!(s.needs_keyframe());
        assert_eq!(s.current(), Some(Layer::High));
        assert_eq!(s.on_packet(Layer::High, false), PacketAction::Forward { switched: false }, "old layer until then");
        assert_eq!(s.on_packet(Layer::Mid, false), PacketAction::Drop);
        assert_eq!(s.on_packet(Layer::Low, true), PacketAction::Drop, "a keyframe of another layer");
        assert_eq!(s.on_packet(Layer::Mid, true), PacketAction::Forward { switched: true });
        assert_eq!(s.on_packet(Layer::High, true), PacketAction::Drop);
        assert_eq!(s.current(), Some(Layer::Mid));
        assert!(!s.needs_keyframe());
    }
}
