//! What a publisher's ingest and its subscribers' egresses share: the packet in transit, the
//! measured layer rates and the wanted-layer bits, the packet cache, the counters, and the
//! owner's [`Upstream`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::layers::Layer;
use crate::nack_cache::NackCache;
use crate::track::RtpPacket;

/// The forwarding path logs as the media router always did.
pub(super) const LOG_TARGET: &str = "parley_actors::media_router";

/// What the forwarding path asks of its owner, from the receive path: implementations must not
/// block (queue the request and return).
pub trait Upstream: Send + Sync + 'static {
    /// A subscriber's egress waits for a keyframe of `key` at `layer` (`None`: not simulcast)
    /// to switch layers: ask the publisher. Asked again every 500 ms while it waits.
    fn keyframe_wanted(&self, key: Arc<str>, layer: Option<Layer>);

    /// The first packet of any track went out to `subscriber` (once per egress): the end of
    /// its media join. Called on the receive path: a message, never a wait.
    fn first_forwarded(&self, subscriber: Uuid) {
        let _ = subscriber;
    }
}

/// One received packet on its way to the subscribers of its track.
pub(super) struct Forward {
    pub(super) key: Arc<str>,
    pub(super) ssrc: u32,
    pub(super) layer: Option<Layer>,
    pub(super) keyframe: bool,
    pub(super) packet: RtpPacket,
}

/// The packets of one published video track forwarded lately, by SSRC (one stream per simulcast
/// layer) and sequence number: what subscribers' NACKs are answered from. One entry per
/// published packet, whatever the number of subscribers (the payload is shared, not copied).
pub(super) type PacketCache = Mutex<HashMap<u32, NackCache<RtpPacket>>>;

/// Every layer: what a subscriber of a stream without simulcast wants.
pub(super) const ALL_LAYERS: u8 = 0b111;

/// A layer's bit in a subscriber's wanted-layer mask (none: no bit).
pub(super) fn layer_bit(layer: Option<Layer>) -> u8 {
    match layer {
        Some(Layer::Low) => 0b001,
        Some(Layer::Mid) => 0b010,
        Some(Layer::High) => 0b100,
        None => 0,
    }
}

/// Measured bitrate of each simulcast layer of one published track, bits/s: written by the
/// publisher's ingest, read by its subscribers' egresses.
#[derive(Default)]
pub(super) struct LayerRates([AtomicU64; 3]);

impl LayerRates {
    pub(super) fn slot(&self, layer: Layer) -> &AtomicU64 {
        &self.0[layer_index(layer)]
    }
}

pub(super) fn layer_index(layer: Layer) -> usize {
    match layer {
        Layer::Low => 0,
        Layer::Mid => 1,
        Layer::High => 2,
    }
}

/// Counters shared by the ingests and egresses.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) forwarded: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// Packets sent again for a NACK, and NACKed packets no longer cached (or never sent).
    pub(super) retransmitted: AtomicU64,
    pub(super) not_retransmitted: AtomicU64,
}

/// Packets and bytes one peer moved in one direction, counted on the media path (relaxed
/// atomics: one add per packet, read by the operators' view).
#[derive(Default)]
pub(super) struct Traffic {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    /// One packet of `payload` bytes (the fixed RTP header is counted on top).
    pub(super) fn count(&self, payload: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload as u64 + 12, Ordering::Relaxed);
    }

    pub(super) fn read(&self) -> TrafficCount {
        TrafficCount { packets: self.packets.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

/// A [`Traffic`] reading: cumulative, so two readings give a rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCount {
    pub packets: u64,
    pub bytes: u64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
