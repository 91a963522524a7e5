//! One publisher's side of the forwarding path: its peer's [`RtpSink`], run on the receive path.
//! A recorded track's packets go to its recording tap (`tap.rs`) first, watched or not.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use uuid::Uuid;

use super::routes::Routes;
use super::shared::{ALL_LAYERS, Counters, Forward, Traffic, Upstream, layer_bit, layer_index, lock};
use crate::layers::{BitrateMeter, Layer};
use crate::nack_cache::{self, NackCache};
use crate::sdp::simulcast_layer;
use crate::speaker::SpeakerDetector;
use crate::track::{IncomingRtp, Outbox, RtpSink};

/// One publisher's packets to the subscribers of each of its tracks, audio levels to the
/// speaker detector: its peer's [`RtpSink`], run on the receive path.
pub(super) struct Ingest {
    pub(super) user: Uuid,
    pub(super) routes: Arc<RwLock<Routes>>,
    pub(super) speaker: Arc<Mutex<SpeakerDetector<Uuid>>>,
    pub(super) counters: Arc<Counters>,
    pub(super) upstream: Arc<dyn Upstream>,
    /// Everything the publisher sent us.
    pub(super) received: Arc<Traffic>,
    /// Bitrate of each simulcast layer, by track.
    pub(super) meters: Mutex<HashMap<Arc<str>, [BitrateMeter; 3]>>,
}

impl RtpSink for Ingest {
    fn on_rtp(&self, p: IncomingRtp, out: &mut Outbox) {
        let now = Instant::now();
        self.received.count(p.packet.payload.len());
        let route = {
            let r = self.routes.read().unwrap_or_else(|p| p.into_inner());
            r.by_track.get(&(self.user, p.track_id.clone())).map(|r| {
                let fields = (r.key.clone(), r.codec, r.subscribers.clone(), r.rates.clone(), r.cache.clone());
                (fields, r.record.clone(), r.held)
            })
        };
        // A held track (muted, camera off by the meeting's state) stops here: it reaches no
        // one, is not recorded, and a muted microphone does not make its owner the speaker.
        if route.as_ref().is_some_and(|(_, _, held)| *held) {
            return;
        }
        if let Some(level) = p.audio_level {
            lock(&self.speaker).observe(self.user, level, now);
        }
        let Some(((key, codec, subscribers, rates, cache), record, _)) = route else { return };
        let layer = simulcast_layer(p.rid.as_deref());
        if let Some(layer) = layer {
            let mut meters = lock(&self.meters);
            let track = meters.entry(p.track_id.clone()).or_default();
            // Payload plus the fixed RTP header: close enough to compare layers.
            track[layer_index(layer)].record(p.packet.payload.len() + 12, now);
            // Every layer of the track, so one the publisher stopped sending decays to 0.
            for l in [Layer::Low, Layer::Mid, Layer::High] {
                rates.slot(l).store(track[layer_index(l)].bps(now), Ordering::Relaxed);
            }
        }
        // Recording sees every packet of a recorded track (one layer of a simulcast one),
        // watched or not; a track not recorded costs this one check.
        if let Some(tap) = &record {
            tap.offer(&p, layer, &rates, &key, now, self.upstream.as_ref());
        }
        let bit = layer.map_or(ALL_LAYERS, |l| layer_bit(Some(l)));
        // Layers no subscriber watches stop here.
        let mut targets = subscribers.iter().filter(|s| s.wants.load(Ordering::Relaxed) & bit != 0).peekable();
        if targets.peek().is_none() {
            return;
        }
        let keyframe = codec.is_keyframe(&p.packet.payload);
        // Header extensions and CSRCs belong to the publisher's leg and every `OutTrack` drops
        // them: strip them once here, not in each subscriber's clone (a browser's packets carry
        // several extensions, each cloned and freed per subscriber otherwise).
        let mut packet = p.packet;
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.csrc.clear();
        if let Some(cache) = cache {
            lock(&cache)
                .entry(p.ssrc)
                .or_insert_with(|| NackCache::new(nack_cache::DEFAULT_CAPACITY))
                .insert(packet.header.sequence_number, packet.clone());
        }
        let fwd = Forward { key, ssrc: p.ssrc, layer, keyframe, packet };
        for s in targets {
            s.egress.forward(&fwd, now, out, self.upstream.as_ref(), &self.counters);
        }
    }
}
