//! The SFU's RTP forwarding path: every published packet from its publisher's peer to each of
//! its subscribers' outgoing tracks, run on the receive path itself (no actor mailbox, no queue,
//! no task of its own):
//!
//! ```text
//! publisher's Peer ──IncomingRtp──▶ Ingest ──────────────▶ Egress (per subscriber) ──Outbox──▶ subscriber's Peer
//!                     (routes by the shared route   (layer choice, seq/timestamp
//!                      table; audio levels to the    rewrite, its OutTracks)
//!                      speaker detector)
//! ```
//!
//! - Each publisher's ingest ([`Forwarder::ingest`], `ingest.rs`) is its peer's [`RtpSink`]:
//!   it looks the packet's track up in the shared route table, measures each simulcast layer's
//!   bitrate into the route's `LayerRates`, feeds audio levels to the speaker detector, skips
//!   layers no subscriber wants, keeps each video packet once in the track's packet cache (for
//!   NACKs) and runs every subscriber's egress in place.
//! - Each subscriber's [`Egress`] (`egress.rs`) holds one binding per outgoing track: the
//!   simulcast layer choice (`layers::LayerSelector` within the subscriber's share of its REMB
//!   estimate), the seq/timestamp rewrite (`rewrite::StreamRewriter`) and the [`OutTrack`] the
//!   packet goes out on; one mutex per subscriber, held for one packet or one change.
//!
//! The route table between them is `routes.rs`; what ingests and egresses share (the packet in
//! transit, layer rates and wanted-layer bits, the packet cache, counters, [`Upstream`]) is
//! `shared.rs`; the recording tap is `tap.rs`. Files depend one way: this one on all,
//! `ingest.rs` on `routes.rs`, `tap.rs` and `shared.rs`, `routes.rs` on `egress.rs`, `tap.rs`
//! and `shared.rs`, `tap.rs` on `egress.rs` and `shared.rs`, `egress.rs` on `shared.rs`.
//!
//! The owner (the media-router actor) drives it through a small surface and decides everything
//! else (who publishes what, each subscriber's plan, negotiation):
//!
//! - routes: [`Forwarder::publish`] / [`Forwarder::unpublish`] a track, [`Forwarder::forget`]
//!   a participant who left;
//! - bindings: [`Forwarder::subscriptions`] changes one subscriber's (bind, unbind, the cache
//!   NACKs are answered from), applied to the route table at once by [`Subscriptions::apply`];
//!   [`Egress::set_layers`] and [`Egress::reselect`] re-decide its layers;
//! - recording: [`Forwarder::record`] / [`Forwarder::stop_recording`] a track: its ingest hands
//!   a [`RecordSink`] every packet of it (one simulcast layer at a time, switching at
//!   keyframes), before the "no subscriber wants this layer" check (`tap.rs`);
//! - loss repair: [`Forwarder::retransmit`] answers a subscriber's NACK from the cache;
//! - active speaker: [`Forwarder::speaker_tick`], [`Forwarder::speaker_scores`];
//! - counters: [`Forwarder::stats`].
//!
//! Upward, the one thing the receive path itself asks of the owner is a keyframe: an egress
//! waiting to switch layers calls [`Upstream::keyframe_wanted`] (the owner asks the publisher,
//! throttled). Keyframe requests and NACKs from subscribers reach the owner as `PeerEvent`s of
//! their peers, as before.
//!
//! Logs keep the target `parley_actors::media_router` (where this code used to live), so log
//! filters and the tests reading the node's log see the same lines.

mod egress;
mod ingest;
mod routes;
mod shared;
mod tap;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use uuid::Uuid;

pub use egress::Egress;
use ingest::Ingest;
use routes::{Route, Routes, Subscriber};
pub use shared::TrafficCount;
pub use shared::Upstream;
use shared::{ALL_LAYERS, Counters, LOG_TARGET, LayerRates, PacketCache, Traffic, lock};
use tap::RecordTap;
pub use tap::{RecordSink, RecordedPacket};

use crate::codec::{Codec, MediaKind};
use crate::layers::Layer;
use crate::speaker::{SpeakerChanged, SpeakerDetector};
use crate::track::{OutTrack, RtpSink};

/// The forwarding path of one meeting: its route table, speaker detector and counters, and the
/// handle its owner drives it by (see the module docs).
pub struct Forwarder {
    routes: Arc<RwLock<Routes>>,
    speaker: Arc<Mutex<SpeakerDetector<Uuid>>>,
    counters: Arc<Counters>,
    upstream: Arc<dyn Upstream>,
    /// What each publisher's ingest received.
    received: Mutex<HashMap<Uuid, Arc<Traffic>>>,
    /// Fault injection: each egress withholds every Nth video packet (0: never).
    drop_every: u32,
}

/// The forwarder's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Copies handed to a subscriber's outgoing track.
    pub forwarded: u64,
    /// Copies an outgoing track refused (not negotiated yet).
    pub dropped: u64,
    /// Packets sent again for a NACK.
    pub retransmitted: u64,
    /// NACKed packets no longer cached (or never sent).
    pub not_retransmitted: u64,
}

impl Forwarder {
    /// An empty forwarder: no routes, no subscribers. `drop_forwarded_every`: fault injection
    /// (`PeerConfig::drop_forwarded_every`), 0 for none.
    pub fn new(upstream: Arc<dyn Upstream>, drop_forwarded_every: u32) -> Forwarder {
        Forwarder {
            routes: Arc::default(),
            speaker: Arc::new(Mutex::new(SpeakerDetector::new())),
            counters: Arc::default(),
            upstream,
            received: Mutex::default(),
            drop_every: drop_forwarded_every,
        }
    }

    /// The ingest of `publisher`'s packets: give it to its peer (`Peer::route_rtp_to`).
    pub fn ingest(&self, publisher: Uuid) -> Arc<dyn RtpSink> {
        let received = Arc::new(Traffic::default());
        lock(&self.received).insert(publisher, received.clone());
        Arc::new(Ingest {
            received,
            user: publisher,
            routes: self.routes.clone(),
            speaker: self.speaker.clone(),
            counters: self.counters.clone(),
            upstream: self.upstream.clone(),
            meters: Mutex::new(HashMap::new()),
        })
    }

    /// A new subscriber's egress, nothing bound yet. `downlink_estimate`: its peer's REMB cell
    /// (`Peer::downlink_estimate`), which its simulcast layers are chosen within.
    pub fn egress(&self, subscriber: Uuid, downlink_estimate: Arc<AtomicU64>) -> Arc<Egress> {
        Arc::new(Egress::new(subscriber, downlink_estimate, self.drop_every))
    }

    /// `publisher` publishes its track `track_id` (msid track id), which subscribers receive as
    /// `key`: a route with no subscribers yet, its layer rates unmeasured and, for video, an
    /// empty packet cache. Replaces any route of that track.
    pub fn publish(&self, publisher: Uuid, track_id: Arc<str>, key: Arc<str>, codec: Codec) {
        let cache = (codec.kind() == MediaKind::Video).then(Arc::default);
        let route = Route {
            key,
            codec,
            subscribers: Arc::from(Vec::new()),
            rates: Arc::default(),
            cache,
            record: None,
            held: false,
        };
        self.routes.write().unwrap_or_else(|p| p.into_inner()).by_track.insert((publisher, track_id), route);
    }

    /// The track ended: its packets go nowhere from now on.
    pub fn unpublish(&self, publisher: Uuid, track_id: &str) {
        self.routes.write().unwrap_or_else(|p| p.into_inner()).by_track.remove(&(publisher, Arc::from(track_id)));
    }

    /// Records `publisher`'s track `track_id`: from now on its ingest hands `sink` every packet
    /// of it, before deciding whether any subscriber wants it (a simulcast track: one layer at
    /// a time, see `tap.rs`). Replaces any sink of that track. Call it once the track is
    /// published (it has no effect on a track without a route); a route published again starts
    /// without a sink, so call it again then (on `TrackOpened`).
    pub fn record(&self, publisher: Uuid, track_id: &str, sink: Arc<dyn RecordSink>) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let track: Arc<str> = Arc::from(track_id);
        match routes.by_track.get_mut(&(publisher, track.clone())) {
            Some(route) => route.record = Some(Arc::new(RecordTap::new(publisher, track, route.codec, sink))),
            None => {
                tracing::debug!(target: LOG_TARGET, %publisher, track = track_id, "not recorded: the track is not published")
            }
        }
    }

    /// Holds (`true`) or releases `publisher`'s track `track_id`: while held, its packets are
    /// dropped on arrival. Returns whether that changed anything (false for a track with no
    /// route: a route published again starts released, so call it again then).
    pub fn hold(&self, publisher: Uuid, track_id: &str, held: bool) -> bool {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        match routes.by_track.get_mut(&(publisher, Arc::from(track_id))) {
            Some(route) if route.held != held => {
                route.held = held;
                true
            }
            _ => false,
        }
    }

    /// Stops recording `publisher`'s track `track_id` (its sink is dropped).
    pub fn stop_recording(&self, publisher: Uuid, track_id: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(route) = routes.by_track.get_mut(&(publisher, Arc::from(track_id))) {
            route.record = None;
        }
    }

    /// A participant left: out of the routes (as publisher and as subscriber) and the speaker
    /// detector.
    pub fn forget(&self, user: Uuid) {
        {
            let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
            routes.by_track.retain(|(publisher, _), _| *publisher != user);
            for route in routes.by_track.values_mut() {
                if route.subscribers.iter().any(|s| s.user == user) {
                    route.subscribers = route.subscribers.iter().filter(|s| s.user != user).cloned().collect();
                }
            }
        }
        lock(&self.speaker).remove(&user);
        lock(&self.received).remove(&user);
    }

    /// What `publisher`'s latest ingest received so far.
    pub fn received(&self, publisher: Uuid) -> TrafficCount {
        lock(&self.received).get(&publisher).map(|t| t.read()).unwrap_or_default()
    }

    /// Changes what `subscriber` (whose egress is `egress`) receives: bindings change at once,
    /// the route table when the change is [applied](Subscriptions::apply).
    pub fn subscriptions<'a>(&'a self, subscriber: Uuid, egress: &Arc<Egress>) -> Subscriptions<'a> {
        Subscriptions { forwarder: self, subscriber, egress: egress.clone(), add: Vec::new(), remove: Vec::new() }
    }

    /// Sends `egress`'s subscriber again the packets of its outgoing track `key` it says it
    /// lost, from the publisher's packet cache, each with the sequence number and timestamp it
    /// first left with. A packet no longer cached (or never sent) is not answered: the
    /// receiver's decoder asks for a keyframe if it needs one.
    pub async fn retransmit(&self, egress: &Egress, key: &str, lost: &[u16]) {
        let user = egress.user;
        let mut resend = Vec::new();
        let track = {
            let bindings = lock(&egress.bindings);
            let Some(b) = bindings.get(key) else { return };
            let Some(cache) = &b.cache else { return };
            let cache = lock(cache);
            for &seq in lost {
                let packet = b.rewriter.origin(seq).and_then(|o| {
                    let mut packet = cache.get(&o.source)?.get(o.sequence_number)?.clone();
                    packet.header.sequence_number = seq;
                    packet.header.timestamp = packet.header.timestamp.wrapping_add(o.ts_offset);
                    Some(packet)
                });
                resend.extend(packet);
            }
            b.track.clone()
        };
        let missed = (lost.len() - resend.len()) as u64;
        let missed_before = self.counters.not_retransmitted.fetch_add(missed, Ordering::Relaxed);
        if (missed_before + 1..=missed_before + missed).any(u64::is_power_of_two) {
            tracing::debug!(target: LOG_TARGET, %user, track = %key, missed, total = missed_before + missed, "NACK not answered: packets no longer cached or never sent");
        }
        let mut sent = 0;
        for packet in resend {
            let payload = packet.payload.len();
            match track.write_rtp(packet).await {
                Ok(()) => {
                    sent += 1;
                    egress.sent_traffic.count(payload);
                }
                Err(e) => {
                    tracing::debug!(target: LOG_TARGET, %user, track = %key, error = %e, "retransmission not sent");
                    break;
                }
            }
        }
        let before = self.counters.retransmitted.fetch_add(sent, Ordering::Relaxed);
        // Logged at the 1st, 2nd, 4th… retransmission of the router: seen, never a flood.
        if sent > 0 && (before + 1..=before + sent).any(u64::is_power_of_two) {
            tracing::debug!(target: LOG_TARGET, %user, track = %key, sent, missed, total = before + sent, "NACK answered from the publisher's cache");
        }
    }

    /// Re-decides the active speaker from the audio levels the ingests observed; `Some` when it
    /// changed.
    pub fn speaker_tick(&self, now: Instant) -> Option<SpeakerChanged<Uuid>> {
        lock(&self.speaker).tick(now)
    }

    /// Each of `users`' loudness score now (`SpeakerDetector::score`), in the order given.
    pub fn speaker_scores(&self, users: impl IntoIterator<Item = Uuid>, now: Instant) -> Vec<(Uuid, f64)> {
        let d = lock(&self.speaker);
        users.into_iter().map(|u| (u, d.score(&u, now))).collect()
    }

    /// The counters, for the router's stats.
    pub fn stats(&self) -> ForwardStats {
        let c = &self.counters;
        ForwardStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retransmitted: c.retransmitted.load(Ordering::Relaxed),
            not_retransmitted: c.not_retransmitted.load(Ordering::Relaxed),
        }
    }
}

/// A change of one subscriber's bindings ([`Forwarder::subscriptions`]). Each call changes its
/// egress at once; the route table (which egresses get each published track's packets) changes
/// in one go at [`Subscriptions::apply`], so the ingests see either the old set or the new.
#[must_use = "the route table changes only when applied"]
pub struct Subscriptions<'a> {
    forwarder: &'a Forwarder,
    subscriber: Uuid,
    egress: Arc<Egress>,
    /// Routes to join: (publisher, msid track id, the binding's wanted layers).
    add: Vec<(Uuid, Arc<str>, Arc<AtomicU8>)>,
    /// Keys whose routes to leave.
    remove: Vec<Arc<str>>,
}

impl Subscriptions<'_> {
    /// The route of `publisher`'s `track_id`: its layer rates and packet cache (none if it
    /// has no route).
    fn source(&self, publisher: Uuid, track_id: &Arc<str>) -> (Arc<LayerRates>, Option<Arc<PacketCache>>) {
        let routes = self.forwarder.routes.read().unwrap_or_else(|p| p.into_inner());
        match routes.by_track.get(&(publisher, track_id.clone())) {
            Some(route) => (route.rates.clone(), route.cache.clone()),
            None => (Arc::default(), None),
        }
    }

    /// Sends `publisher`'s track `track_id` on `track` as `key` from now on. `tile`: the tile
    /// height of a video track (with `layers`, the simulcast layers the publisher sends, drives
    /// the layer); NACKs are answered from the track's packet cache.
    pub fn bind(
        &mut self,
        publisher: Uuid,
        track_id: &Arc<str>,
        key: Arc<str>,
        track: OutTrack,
        tile: Option<u32>,
        layers: Vec<Layer>,
    ) {
        let (rates, cache) = self.source(publisher, track_id);
        let wants = Arc::new(AtomicU8::new(ALL_LAYERS));
        self.egress.bind(key, track, tile, layers, rates, wants.clone(), cache);
        self.add.push((publisher, track_id.clone(), wants));
    }

    /// Stops sending `key`.
    pub fn unbind(&mut self, key: &Arc<str>) {
        self.egress.unbind(key);
        self.remove.push(key.clone());
    }

    /// NACKs about the bound `key` are answered from the packet cache of `publisher`'s
    /// `track_id` from now on (the same key may be a new track of its publisher's: it
    /// published again).
    pub fn answer_nacks_from(&self, key: &Arc<str>, publisher: Uuid, track_id: &Arc<str>) {
        let (_, cache) = self.source(publisher, track_id);
        self.egress.answer_nacks_from(key, &cache);
    }

    /// Brings the route table in line: out of the routes of the unbound keys, into those of
    /// the bound tracks.
    pub fn apply(self) {
        let mut routes = self.forwarder.routes.write().unwrap_or_else(|p| p.into_inner());
        let user = self.subscriber;
        for route in routes.by_track.values_mut() {
            if self.remove.contains(&route.key) {
                route.subscribers = route.subscribers.iter().filter(|s| s.user != user).cloned().collect();
            }
        }
        for (publisher, track_id, wants) in self.add {
            if let Some(route) = routes.by_track.get_mut(&(publisher, track_id)) {
                let mut subs: Vec<Subscriber> = route.subscribers.to_vec();
                subs.push(Subscriber { user, egress: self.egress.clone(), wants });
                route.subscribers = Arc::from(subs);
            }
        }
    }
}
