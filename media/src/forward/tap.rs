//! The recording tap: what a publisher's ingest hands a recording sink, before it decides
//! whether any subscriber wants the packet (a track is recorded whoever watches it).
//!
//! A track without simulcast is passed as it comes. A simulcast track is passed one layer at
//! a time — the best one arriving (the highest whose measured rate in the route's
//! `LayerRates` is not zero; before any rate is measured, the highest seen so far) — and one
//! SSRC at a time: when the best layer changes (the top layer stops, or comes back), the old
//! one keeps flowing until a keyframe of the new one, which is asked for
//! ([`Upstream::keyframe_wanted`], every [`KEYFRAME_REASK`] while it waits). So the sink sees
//! a single stream between switches, and each new one starts at a keyframe.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

use super::egress::KEYFRAME_REASK;
use super::shared::{LayerRates, Upstream, layer_bit, lock};
use crate::codec::{Codec, MediaKind};
use crate::layers::Layer;
use crate::track::{IncomingRtp, RtpPacket};

/// Where the forwarder hands the packets of a recorded track
/// ([`Forwarder::record`](super::Forwarder::record)). Called on the receive path: it must not
/// block — `try_send` into a bounded channel and count what did not fit.
pub trait RecordSink: Send + Sync + 'static {
    fn on_packet(&self, p: &RecordedPacket);
}

/// One packet of a recorded track, as received (header extensions and CSRCs left out).
#[derive(Debug, Clone)]
pub struct RecordedPacket {
    pub publisher: Uuid,
    /// The published track's id (msid track id).
    pub track_id: Arc<str>,
    pub kind: MediaKind,
    pub codec: Codec,
    /// The stream it came on (one per simulcast layer): a change is a new stream for the
    /// writer (`record::TrackWriter` copes).
    pub ssrc: u32,
    /// When the node received it.
    pub arrival: Instant,
    pub packet: RtpPacket,
}

/// One recorded route's tap: its sink and, for simulcast, which layer it passes.
pub(super) struct RecordTap {
    publisher: Uuid,
    track_id: Arc<str>,
    codec: Codec,
    sink: Arc<dyn RecordSink>,
    layers: Mutex<LayerTap>,
}

impl RecordTap {
    pub(super) fn new(publisher: Uuid, track_id: Arc<str>, codec: Codec, sink: Arc<dyn RecordSink>) -> RecordTap {
        RecordTap { publisher, track_id, codec, sink, layers: Mutex::default() }
    }

    /// One received packet of the route (`key`: what subscribers receive it as, the name
    /// keyframe requests go by; `layer`: its simulcast layer, `None` without simulcast).
    pub(super) fn offer(
        &self,
        p: &IncomingRtp,
        layer: Option<Layer>,
        rates: &LayerRates,
        key: &Arc<str>,
        now: Instant,
        upstream: &dyn Upstream,
    ) {
        if let Some(layer) = layer {
            let measured =
                [Layer::Low, Layer::Mid, Layer::High].map(|l| rates.slot(l).load(std::sync::atomic::Ordering::Relaxed));
            let keyframe = self.codec.is_keyframe(&p.packet.payload);
            let decision = lock(&self.layers).on_packet(layer, p.ssrc, keyframe, measured, now);
            if let Some(wanted) = decision.ask {
                upstream.keyframe_wanted(key.clone(), Some(wanted));
            }
            if !decision.pass {
                return;
            }
        }
        let h = &p.packet.header;
        let header = rtc::rtp::header::Header {
            version: h.version,
            padding: h.padding,
            marker: h.marker,
            payload_type: h.payload_type,
            sequence_number: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            ..Default::default()
        };
        self.sink.on_packet(&RecordedPacket {
            publisher: self.publisher,
            track_id: self.track_id.clone(),
            kind: self.codec.kind(),
            codec: self.codec,
            ssrc: p.ssrc,
            arrival: now,
            packet: RtpPacket { header, payload: p.packet.payload.clone() },
        });
    }
}

/// What the tap does with one packet of a simulcast track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TapDecision {
    /// Hand it to the sink.
    pub(super) pass: bool,
    /// Ask the publisher for a keyframe of this layer.
    pub(super) ask: Option<Layer>,
}

/// Which simulcast layer the tap passes (see the module docs): plain state, decisions out.
#[derive(Debug, Default)]
pub(super) struct LayerTap {
    /// The stream passed now: its layer and SSRC.
    current: Option<(Layer, u32)>,
    /// Layers seen so far (bits of `layer_bit`), for before any rate is measured.
    seen: u8,
    last_ask: Option<Instant>,
}

impl LayerTap {
    /// One packet of `layer` on `ssrc` (`keyframe`: it starts one); `rates`: the measured
    /// rates of Low, Mid, High (bits/s).
    pub(super) fn on_packet(
        &mut self,
        layer: Layer,
        ssrc: u32,
        keyframe: bool,
        rates: [u64; 3],
        now: Instant,
    ) -> TapDecision {
        self.seen |= layer_bit(Some(layer));
        let all = [Layer::Low, Layer::Mid, Layer::High];
        // The highest layer arriving; before any rate is measured, the highest seen.
        let arriving = all.iter().zip(rates).rev().find(|(_, r)| *r > 0).map(|(l, _)| *l);
        let seen = all.iter().rev().find(|l| self.seen & layer_bit(Some(**l)) != 0).copied();
        let target = arriving.or(seen).unwrap_or(layer);
        let is_current = self.current == Some((layer, ssrc));
        let pass = TapDecision { pass: true, ask: None };
        if is_current && self.current.map(|(l, _)| l) == Some(target) {
            return pass;
        }
        if layer == target && !is_current {
            if keyframe {
                self.current = Some((layer, ssrc));
                self.last_ask = None;
                return pass;
            }
            // A layer switch asks; a new SSRC of the layer passed now (a restarted stream)
            // starts with a keyframe of its own.
            let switching = self.current.is_none_or(|(l, _)| l != layer);
            let ask = switching && self.last_ask.is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REASK);
            if ask {
                self.last_ask = Some(now);
            }
            // The old layer keeps flowing meanwhile (not this packet: it is of the new one).
            return TapDecision { pass: false, ask: ask.then_some(layer) };
        }
        // The old layer until the switch; other layers never.
        TapDecision { pass: is_current, ask: None }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PASS: TapDecision = TapDecision { pass: true, ask: None };
    const DROP: TapDecision = TapDecision { pass: false, ask: None };

    #[test]
    fn the_best_arriving_layer_at_its_keyframe_one_ssrc_at_a_time() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut tap = LayerTap::default();
        let none = [0, 0, 0];
        // Start-up, nothing measured: the low layer's keyframe first, then the high one seen.
        assert_eq!(tap.on_packet(Layer::Low, 1, true, none, ms(0)), PASS);
        assert_eq!(tap.on_packet(Layer::Low, 1, false, none, ms(1)), PASS);
        assert_eq!(
            tap.on_packet(Layer::High, 3, false, none, ms(2)),
            TapDecision { pass: false, ask: Some(Layer::High) }
        );
        assert_eq!(tap.on_packet(Layer::Low, 1, false, none, ms(3)), PASS, "the old layer until the switch");
        assert_eq!(tap.on_packet(Layer::High, 3, false, none, ms(4)), DROP, "asked already");
        assert_eq!(tap.on_packet(Layer::High, 3, true, none, ms(5)), PASS, "switched at its keyframe");
        assert_eq!(tap.on_packet(Layer::Low, 1, true, none, ms(6)), DROP, "one SSRC at a time");
        assert_eq!(tap.on_packet(Layer::Mid, 2, true, none, ms(7)), DROP);
        // The high layer stops (its rate falls to 0): down to mid at mid's keyframe.
        let no_high = [100_000, 300_000, 0];
        assert_eq!(
            tap.on_packet(Layer::Mid, 2, false, no_high, ms(1_000)),
            TapDecision { pass: false, ask: Some(Layer::Mid) }
        );
        assert_eq!(tap.on_packet(Layer::Low, 1, false, no_high, ms(1_001)), DROP);
        assert_eq!(
            tap.on_packet(Layer::Mid, 2, false, no_high, ms(1_600)),
            TapDecision { pass: false, ask: Some(Layer::Mid) },
            "asked again"
        );
        assert_eq!(tap.on_packet(Layer::Mid, 2, true, no_high, ms(1_610)), PASS);
        assert_eq!(tap.on_packet(Layer::Mid, 2, false, no_high, ms(1_620)), PASS);
        // It comes back.
        let all = [100_000, 300_000, 900_000];
        assert_eq!(
            tap.on_packet(Layer::High, 3, false, all, ms(2_000)),
            TapDecision { pass: false, ask: Some(Layer::High) }
        );
        assert_eq!(tap.on_packet(Layer::Mid, 2, false, all, ms(2_001)), PASS);
        assert_eq!(tap.on_packet(Layer::High, 3, true, all, ms(2_002)), PASS);
        // The same layer on a new SSRC (the publisher restarted it) waits for its keyframe too.
        assert_eq!(tap.on_packet(Layer::High, 9, false, all, ms(3_000)), DROP, "not asked: it starts with one");
        assert_eq!(tap.on_packet(Layer::High, 3, false, all, ms(3_001)), PASS);
        assert_eq!(tap.on_packet(Layer::High, 9, true, all, ms(3_002)), PASS);
        assert_eq!(tap.on_packet(Layer::High, 3, false, all, ms(3_003)), DROP);
    }
}
