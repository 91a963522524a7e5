//! One subscriber's side of the forwarding path: for each outgoing track, which simulcast layer
//! it receives, how its numbers are rewritten, and where the packets go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::shared::{
    ALL_LAYERS, Counters, Forward, LOG_TARGET, LayerRates, PacketCache, Traffic, TrafficCount, Upstream, layer_bit,
    lock,
};
use crate::codec::MediaKind;
use crate::layers::{BitrateMeter, Layer, LayerInfo, LayerSelector, PacketAction, split_budget};
use crate::rewrite::StreamRewriter;
use crate::track::{OutTrack, Outbox};

/// An egress waiting for a keyframe asks again after this long.
pub(super) const KEYFRAME_REASK: Duration = Duration::from_millis(500);

/// One bound outgoing track of a subscriber.
pub(super) struct Binding {
    pub(super) track: OutTrack,
    pub(super) rewriter: StreamRewriter,
    /// For simulcast video: which layer to forward.
    pub(super) selector: Option<LayerSelector>,
    pub(super) tile: u32,
    /// The layers the publisher sends, and their measured bitrates.
    pub(super) layers: Vec<Layer>,
    pub(super) rates: Arc<LayerRates>,
    /// Where the ingest reads which layers to send us.
    pub(super) wants: Arc<AtomicU8>,
    /// The publisher's packet cache (video), what this track's NACKs are answered from.
    pub(super) cache: Option<Arc<PacketCache>>,
    /// Fault injection: packets since the last one withheld.
    withheld: u32,
    /// What we send on this track (for streams that cannot adapt: their share of the budget).
    sent: BitrateMeter,
    last_keyframe_ask: Option<Instant>,
    /// Packets the track took, and refused (not negotiated yet): logged at 1, 2, 4, 8…
    sent_packets: u64,
    unsent: u64,
}

impl Binding {
    /// Re-decides the layer of a simulcast binding within `budget_bps`.
    fn select(&mut self, key: &str, budget_bps: u64, subscriber: Uuid, now: Instant) {
        let Some(selector) = self.selector.as_mut() else { return };
        let before = selector.target();
        let mut infos: Vec<LayerInfo> = self
            .layers
            .iter()
            .map(|l| LayerInfo {
                layer: *l,
                bitrate_bps: self.rates.slot(*l).load(Ordering::Relaxed),
                height: nominal_height(*l),
            })
            .collect();
        // Once any layer is measured, a layer at 0 is one the publisher stopped sending (a
        // browser drops its top layers when its uplink is short): not a choice, or its
        // subscribers would wait for its keyframes forever.
        if infos.iter().any(|i| i.bitrate_bps > 0) {
            infos.retain(|i| i.bitrate_bps > 0);
        }
        let after = selector.update(&infos, self.tile, budget_bps, now);
        if after != before {
            let budget_bps = (budget_bps != u64::MAX).then_some(budget_bps);
            tracing::debug!(target: LOG_TARGET, track = key, %subscriber, from = ?before, to = ?after, tile = self.tile, ?budget_bps, "simulcast layer");
        }
        self.publish_wants();
    }

    /// Tells the ingest which layers to send: the one forwarded and the one switched to.
    fn publish_wants(&self) {
        let mask = match &self.selector {
            None => ALL_LAYERS,
            Some(s) => layer_bit(s.current()) | layer_bit(s.target()),
        };
        self.wants.store(mask, Ordering::Relaxed);
    }
}

/// Nominal frame height of each simulcast layer (the layer selector's view cap).
pub(super) fn nominal_height(layer: Layer) -> u32 {
    match layer {
        Layer::Low => 180,
        Layer::Mid => 360,
        Layer::High => 720,
    }
}

/// Re-decides every simulcast layer of one subscriber: the downlink estimate, less what its
/// other streams take, shared by tile area (`layers::split_budget`).
fn reselect(bindings: &mut HashMap<Arc<str>, Binding>, estimate: &AtomicU64, subscriber: Uuid, now: Instant) {
    let estimate = match estimate.load(Ordering::Relaxed) {
        0 => None,
        bps => Some(bps),
    };
    let fixed: u64 = bindings.values_mut().filter(|b| b.selector.is_none()).map(|b| b.sent.bps(now)).sum();
    let mut adaptive: Vec<(&Arc<str>, &mut Binding)> =
        bindings.iter_mut().filter(|(_, b)| b.selector.is_some()).collect();
    let tiles: Vec<u32> = adaptive.iter().map(|(_, b)| b.tile).collect();
    for ((key, b), budget) in adaptive.iter_mut().zip(split_budget(estimate, fixed, &tiles)) {
        b.select(key, budget, subscriber, now);
    }
}

/// One subscriber's outgoing streams: which layer of each, rewritten how, on which track. Run
/// by whichever publisher's packet reaches it (that publisher's ingest, on its receive path)
/// and changed by the router; the lock is held for one packet or one change.
///
/// Made by [`Forwarder::egress`](super::Forwarder::egress); bound and unbound through
/// [`Subscriptions`](super::Subscriptions).
pub struct Egress {
    /// The subscriber (for the log).
    pub(super) user: Uuid,
    pub(super) bindings: Mutex<HashMap<Arc<str>, Binding>>,
    /// The subscriber's downlink estimate (REMB), bits/s, 0 while unknown.
    estimate: Arc<AtomicU64>,
    /// Fault injection: withhold every Nth video packet sent to this subscriber (0: never).
    drop_every: u32,
    /// Everything sent to the subscriber, retransmissions included.
    pub(super) sent_traffic: Traffic,
    /// A packet went out already (the owner heard of the first, `Upstream::first_forwarded`).
    started: AtomicBool,
}

impl Egress {
    pub(super) fn new(user: Uuid, estimate: Arc<AtomicU64>, drop_every: u32) -> Egress {
        Egress {
            user,
            bindings: Mutex::new(HashMap::new()),
            estimate,
            drop_every,
            sent_traffic: Traffic::default(),
            started: AtomicBool::new(false),
        }
    }

    /// What was sent to the subscriber so far.
    pub fn sent(&self) -> TrafficCount {
        self.sent_traffic.read()
    }

    /// The simulcast layer each adaptive video track is forwarded at now (`None`: none yet,
    /// waiting for a keyframe), by key.
    pub fn layers(&self) -> Vec<(Arc<str>, Option<Layer>)> {
        let mut v: Vec<_> = lock(&self.bindings)
            .iter()
            .filter_map(|(k, b)| b.selector.as_ref().map(|s| (k.clone(), s.current())))
            .collect();
        v.sort();
        v
    }

    /// The subscriber's downlink estimate (REMB), bits/s, 0 while unknown.
    pub fn downlink_estimate(&self) -> u64 {
        self.estimate.load(Ordering::Relaxed)
    }

    /// Sends `key` on `track` from now on. `tile`: the tile height of a video track (drives
    /// the layer); `rates`: the publisher's measured layer bitrates; `wants`: where to say which
    /// layers this subscriber needs (the ingest skips the others); `cache`: what its NACKs are
    /// answered from (the publisher's packet cache of a video track).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bind(
        &self,
        key: Arc<str>,
        track: OutTrack,
        tile: Option<u32>,
        layers: Vec<Layer>,
        rates: Arc<LayerRates>,
        wants: Arc<AtomicU8>,
        cache: Option<Arc<PacketCache>>,
    ) {
        let clock = track.codec().clock_rate();
        // Audio and single-layer video are forwarded as they come.
        let selector = (tile.is_some() && !layers.is_empty()).then(LayerSelector::new);
        let binding = Binding {
            track,
            rewriter: StreamRewriter::new(clock),
            selector,
            tile: tile.unwrap_or(0),
            layers,
            rates,
            wants,
            cache,
            withheld: 0,
            sent: BitrateMeter::new(),
            last_keyframe_ask: None,
            unsent: 0,
            sent_packets: 0,
        };
        binding.publish_wants();
        let mut bindings = lock(&self.bindings);
        bindings.insert(key, binding);
        reselect(&mut bindings, &self.estimate, self.user, Instant::now());
    }

    /// NACKs about `key` are answered from `cache` (none: not answered) from now on: its
    /// publisher published the track again, with a new cache.
    pub(super) fn answer_nacks_from(&self, key: &Arc<str>, cache: &Option<Arc<PacketCache>>) {
        if let Some(b) = lock(&self.bindings).get_mut(key) {
            b.cache = cache.clone();
        }
    }

    pub(super) fn unbind(&self, key: &Arc<str>) {
        let mut bindings = lock(&self.bindings);
        bindings.remove(key);
        reselect(&mut bindings, &self.estimate, self.user, Instant::now());
    }

    /// The tile or the publisher's layers of a bound video track changed.
    pub fn set_layers(&self, key: &Arc<str>, tile: u32, layers: Vec<Layer>) {
        let mut bindings = lock(&self.bindings);
        if let Some(b) = bindings.get_mut(key) {
            b.tile = tile;
            if !layers.is_empty() {
                b.selector.get_or_insert_with(LayerSelector::new);
                b.layers = layers;
            }
        }
        reselect(&mut bindings, &self.estimate, self.user, Instant::now());
    }

    /// Re-decides every layer from the latest estimate and rates (on the router's tick).
    pub fn reselect(&self) {
        reselect(&mut lock(&self.bindings), &self.estimate, self.user, Instant::now());
    }

    /// One packet of a track it may receive: layer choice, rewrite, into `out`.
    pub(super) fn forward(
        &self,
        fwd: &Forward,
        now: Instant,
        out: &mut Outbox,
        upstream: &dyn Upstream,
        counters: &Counters,
    ) {
        let mut bindings = lock(&self.bindings);
        let Some(b) = bindings.get_mut(&fwd.key) else { return };
        if let (Some(selector), Some(layer)) = (b.selector.as_mut(), fwd.layer) {
            match selector.on_packet(layer, fwd.keyframe) {
                PacketAction::Drop => {
                    if selector.needs_keyframe()
                        && b.last_keyframe_ask.is_none_or(|t| now.duration_since(t) >= KEYFRAME_REASK)
                    {
                        b.last_keyframe_ask = Some(now);
                        upstream.keyframe_wanted(fwd.key.clone(), selector.target());
                    }
                    return;
                }
                // The old layer is no longer needed.
                PacketAction::Forward { switched: true } => {
                    tracing::debug!(target: LOG_TARGET, track = %fwd.key, subscriber = %self.user, ?layer, ssrc = fwd.ssrc, "simulcast layer switched at a keyframe");
                    b.publish_wants();
                }
                PacketAction::Forward { switched: false } => {}
            }
        }
        let h = &fwd.packet.header;
        let Some(rw) = b.rewriter.rewrite(fwd.ssrc, h.sequence_number, h.timestamp, now) else { return };
        if self.drop_every > 0 && b.track.codec().kind() == MediaKind::Video {
            // Fault injection: numbered and cached, never sent; the subscriber will NACK it.
            b.withheld = (b.withheld + 1) % self.drop_every;
            if b.withheld == 0 {
                return;
            }
        }
        let mut packet = fwd.packet.clone();
        packet.header.sequence_number = rw.sequence_number;
        packet.header.timestamp = rw.timestamp;
        let payload = packet.payload.len();
        if b.selector.is_none() {
            b.sent.record(payload + 12, now);
        }
        match out.write(&b.track, packet) {
            Ok(()) => {
                counters.forwarded.fetch_add(1, Ordering::Relaxed);
                self.sent_traffic.count(payload);
                if !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::Relaxed) {
                    upstream.first_forwarded(self.user);
                }
                b.sent_packets += 1;
                if b.sent_packets.is_power_of_two() {
                    tracing::debug!(target: LOG_TARGET, key = %fwd.key, subscriber = %self.user, sent = b.sent_packets, seq = rw.sequence_number, "packets forwarded");
                }
            }
            Err(e) => {
                // Not negotiated yet (the answer is on its way): the packet is lost.
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                b.unsent += 1;
                if b.unsent.is_power_of_two() {
                    tracing::debug!(target: LOG_TARGET, key = %fwd.key, subscriber = %self.user, unsent = b.unsent, keyframe = fwd.keyframe, error = %e, "packet not sent");
                }
            }
        }
    }
}
