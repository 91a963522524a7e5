//! The forwarder without a network: packets handed to an ingest as a peer's receive path would,
//! outgoing tracks on a stand-in socket link that keeps what it is given, the outbox read back.
//! (`media/tests/forwarding.rs` runs the same forwarder between real peers on loopback.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use uuid::Uuid;

use super::egress::{KEYFRAME_REASK, nominal_height};
use super::shared::{layer_bit, layer_index};
use super::*;
use crate::placement::PeerId;
use crate::track::{IncomingRtp, OutSink, OutTrackSpec, Outbox, SocketLink};

/// A socket link that keeps every packet written to it (retransmissions go this way).
#[derive(Default)]
struct Link {
    sent: Mutex<Vec<rtp::Packet>>,
}

impl SocketLink for Link {
    fn send_rtp(
        &self,
        _id: PeerId,
        _sender: RTCRtpSenderId,
        packet: rtp::Packet,
    ) -> Pin<Box<dyn Future<Output = crate::Result<()>> + Send + '_>> {
        self.sent.lock().unwrap().push(packet);
        Box::pin(async { Ok(()) })
    }

    fn try_send_rtp(&self, _id: PeerId, _sender: RTCRtpSenderId, packet: rtp::Packet) -> bool {
        self.sent.lock().unwrap().push(packet);
        true
    }
}

/// Keyframe requests the forwarder asked for, and the subscribers it said got their first packet.
#[derive(Default)]
struct Asks(Mutex<Vec<(Arc<str>, Option<Layer>)>>, Mutex<Vec<Uuid>>);

impl Upstream for Asks {
    fn keyframe_wanted(&self, key: Arc<str>, layer: Option<Layer>) {
        self.0.lock().unwrap().push((key, layer));
    }

    fn first_forwarded(&self, subscriber: Uuid) {
        self.1.lock().unwrap().push(subscriber);
    }
}

impl Asks {
    fn taken(&self) -> Vec<(Arc<str>, Option<Layer>)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const PT_VP8: u8 = 96;
const PT_OPUS: u8 = 111;

/// An outgoing track on `link`, negotiated with `pt` unless `None`.
fn out_track(link: &Arc<Link>, track_id: &str, codec: Codec, ssrc: u32, pt: Option<u8>) -> OutTrack {
    let spec = OutTrackSpec { track_id: track_id.into(), stream_id: "s".into(), codec, ssrc };
    let sink = OutSink::Socket { socket: link.clone(), key: 0, id: 1, sender: RTCRtpSenderId::default() };
    let track = OutTrack::new(spec, sink);
    if let Some(pt) = pt {
        track.negotiated_as(pt);
    }
    track
}

/// VP8 payload: a keyframe (start code, 640x360) or an interframe, then a marker byte.
fn vp8(keyframe: bool, mark: u8) -> Bytes {
    let mut p = vec![0x10];
    if keyframe {
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        p.extend_from_slice(&[0x11, 0x02, 0x00]);
    }
    p.push(mark);
    Bytes::from(p)
}

fn incoming(track_id: &str, ssrc: u32, rid: Option<&str>, seq: u16, ts: u32, payload: Bytes) -> IncomingRtp {
    let mut header = rtp::header::Header {
        version: 2,
        payload_type: 100,
        sequence_number: seq,
        timestamp: ts,
        ssrc,
        csrc: vec![7, 8],
        ..Default::default()
    };
    // The publisher's leg's extensions: none of them leaves the node.
    header.set_extension(3, Bytes::from_static(&[0x2a])).unwrap();
    let kind = if track_id == "mic" { MediaKind::Audio } else { MediaKind::Video };
    IncomingRtp {
        track_id: Arc::from(track_id),
        kind,
        ssrc,
        rid: rid.map(Arc::from),
        audio_level: None,
        packet: rtp::Packet { header, payload },
    }
}

/// What one packet put in the outbox: (outgoing track id, packet as stamped).
fn sent(outbox: &mut Outbox) -> Vec<(String, rtp::Packet)> {
    outbox.drain().map(|(t, p)| (t.track_id().to_owned(), p)).collect()
}

struct Setup {
    forwarder: Forwarder,
    asks: Arc<Asks>,
    publisher: Uuid,
    ingest: Arc<dyn RtpSink>,
    link: Arc<Link>,
}

fn setup(drop_every: u32) -> Setup {
    let asks = Arc::new(Asks::default());
    let forwarder = Forwarder::new(asks.clone(), drop_every);
    let publisher = Uuid::new_v4();
    let ingest = forwarder.ingest(publisher);
    Setup { forwarder, asks, publisher, ingest, link: Arc::default() }
}

impl Setup {
    /// A subscriber (estimate unknown) bound to the publisher's `track_id` as `key` on a
    /// track with SSRC `ssrc`.
    fn subscriber(
        &self,
        track_id: &str,
        key: &str,
        codec: Codec,
        ssrc: u32,
        tile: Option<u32>,
        layers: Vec<Layer>,
    ) -> (Uuid, Arc<Egress>) {
        let user = Uuid::new_v4();
        let egress = self.forwarder.egress(user, Arc::new(AtomicU64::new(0)));
        let pt = if codec == Codec::Opus { PT_OPUS } else { PT_VP8 };
        let track = out_track(&self.link, key, codec, ssrc, Some(pt));
        let mut change = self.forwarder.subscriptions(user, &egress);
        change.bind(self.publisher, &Arc::from(track_id), Arc::from(key), track, tile, layers);
        change.apply();
        (user, egress)
    }

    fn send(&self, p: IncomingRtp) -> Vec<(String, rtp::Packet)> {
        let mut outbox = Outbox::default();
        self.ingest.on_rtp(p, &mut outbox);
        sent(&mut outbox)
    }
}

#[test]
fn layer_bits_indexes_and_heights_agree() {
    let all = [Layer::Low, Layer::Mid, Layer::High];
    assert_eq!(all.iter().fold(0, |m, l| m | layer_bit(Some(*l))), ALL_LAYERS);
    assert_eq!(layer_bit(None), 0, "no layer: no bit");
    assert_eq!(all.map(layer_index), [0, 1, 2]);
    assert_eq!(all.map(nominal_height), [180, 360, 720]);
    let rates = LayerRates::default();
    rates.slot(Layer::Mid).store(5, Ordering::Relaxed);
    assert_eq!(all.map(|l| rates.slot(l).load(Ordering::Relaxed)), [0, 5, 0], "one slot per layer");
}

#[test]
fn audio_and_plain_video_reach_every_subscriber_stamped_and_numbered_on() {
    let s = setup(0);
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    s.forwarder.publish(s.publisher, Arc::from("cam"), Arc::from("p:camera"), Codec::Vp8);
    let (a, _a) = s.subscriber("mic", "p:microphone", Codec::Opus, 0xA1, None, vec![]);
    let (b, _b) = s.subscriber("mic", "p:microphone", Codec::Opus, 0xB1, None, vec![]);
    let (c, _c) = s.subscriber("cam", "p:camera", Codec::Vp8, 0xC1, Some(360), vec![]);
    let firsts = || {
        let mut f = s.asks.1.lock().unwrap().clone();
        f.sort_unstable();
        f
    };
    assert!(firsts().is_empty(), "nothing sent yet");

    for i in 0..5u16 {
        let out = s.send(incoming("mic", 0x1111, None, 100 + i, 960 * u32::from(i), Bytes::from_static(b"opus")));
        assert_eq!(out.len(), 2, "both audio subscribers");
        let mut ssrcs: Vec<u32> = out.iter().map(|(_, p)| p.header.ssrc).collect();
        ssrcs.sort_unstable();
        assert_eq!(ssrcs, [0xA1, 0xB1]);
        for (_, p) in &out {
            // First packet keeps its numbers; the rest follow on.
            assert_eq!((p.header.sequence_number, p.header.timestamp), (100 + i, 960 * u32::from(i)));
            assert_eq!(p.header.payload_type, PT_OPUS);
            assert!(!p.header.extension && p.header.extensions.is_empty() && p.header.csrc.is_empty());
        }
    }
    let mut want = vec![a, b];
    want.sort_unstable();
    assert_eq!(firsts(), want, "each audio subscriber's first packet is told once, not five times");
    // Video without simulcast is forwarded whole, keyframe or not.
    let out = s.send(incoming("cam", 0x2222, None, 7, 90, vp8(false, 1)));
    want.push(c);
    want.sort_unstable();
    assert_eq!(firsts(), want);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.as_str(), out[0].1.header.ssrc, out[0].1.header.payload_type), ("p:camera", 0xC1, PT_VP8));
    assert_eq!(s.forwarder.stats(), ForwardStats { forwarded: 11, ..Default::default() });
    assert!(s.asks.taken().is_empty(), "nothing to ask for");
}

#[test]
fn packets_without_a_route_or_a_binding_go_nowhere() {
    let s = setup(0);
    let key: Arc<str> = Arc::from("p:microphone");
    let mic = || incoming("mic", 1, None, 1, 1, Bytes::from_static(b"x"));
    assert!(s.send(mic()).is_empty(), "not published");
    s.forwarder.publish(s.publisher, Arc::from("mic"), key.clone(), Codec::Opus);
    assert!(s.send(mic()).is_empty(), "published, nobody subscribed");
    let (user, egress) = s.subscriber("mic", &key, Codec::Opus, 9, None, vec![]);
    assert_eq!(s.send(mic()).len(), 1);

    // Unbound: the egress stops at once, before the route table follows.
    let mut change = s.forwarder.subscriptions(user, &egress);
    change.unbind(&key);
    assert!(s.send(mic()).is_empty());
    change.apply();
    assert!(s.send(mic()).is_empty());

    // Bound again: the route table lets packets through once applied.
    let mut change = s.forwarder.subscriptions(user, &egress);
    change.bind(
        s.publisher,
        &Arc::from("mic"),
        key.clone(),
        out_track(&s.link, &key, Codec::Opus, 9, Some(111)),
        None,
        vec![],
    );
    assert!(s.send(mic()).is_empty(), "not in the route yet");
    change.apply();
    assert_eq!(s.send(mic()).len(), 1);

    // The subscriber leaves; then the track ends.
    s.forwarder.forget(user);
    assert!(s.send(mic()).is_empty(), "no longer a subscriber");
    let (_, _other) = s.subscriber("mic", &key, Codec::Opus, 10, None, vec![]);
    assert_eq!(s.send(mic()).len(), 1);
    s.forwarder.unpublish(s.publisher, "mic");
    assert!(s.send(mic()).is_empty(), "unpublished");
    s.forwarder.publish(s.publisher, Arc::from("mic"), key.clone(), Codec::Opus);
    assert!(s.send(mic()).is_empty(), "a new route starts without subscribers");
    s.forwarder.forget(s.publisher);
    assert!(s.send(mic()).is_empty(), "the publisher left");
}

#[test]
fn a_track_not_negotiated_yet_loses_the_packet_and_counts_it() {
    let s = setup(0);
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("k"), Codec::Opus);
    let user = Uuid::new_v4();
    let egress = s.forwarder.egress(user, Arc::new(AtomicU64::new(0)));
    let mut change = s.forwarder.subscriptions(user, &egress);
    change.bind(
        s.publisher,
        &Arc::from("mic"),
        Arc::from("k"),
        out_track(&s.link, "k", Codec::Opus, 1, None),
        None,
        vec![],
    );
    change.apply();
    for seq in 0..3 {
        assert!(s.send(incoming("mic", 1, None, seq, 0, Bytes::from_static(b"x"))).is_empty());
    }
    assert_eq!(s.forwarder.stats(), ForwardStats { dropped: 3, ..Default::default() });
}

#[test]
fn simulcast_layers_nobody_wants_stop_at_the_ingest_and_a_switch_waits_for_a_keyframe() {
    let s = setup(0);
    let key: Arc<str> = Arc::from("p:camera");
    s.forwarder.publish(s.publisher, Arc::from("cam"), key.clone(), Codec::Vp8);
    let layers = vec![Layer::Low, Layer::Mid, Layer::High];
    // A small tile: the low layer (nothing measured, no estimate: the view decides).
    let (_, egress) = s.subscriber("cam", &key, Codec::Vp8, 0xC1, Some(180), layers.clone());
    let (q, h, f) = (0x10, 0x20, 0x30);
    assert!(s.send(incoming("cam", h, Some("h"), 1, 0, vp8(true, 0))).is_empty(), "not the layer chosen");
    assert!(s.send(incoming("cam", q, Some("q"), 1, 0, vp8(false, 0))).is_empty(), "waits for a keyframe");
    assert!(s.send(incoming("cam", q, Some("q"), 2, 0, vp8(false, 0))).is_empty());
    assert_eq!(
        s.asks.taken(),
        vec![(key.clone(), Some(Layer::Low))],
        "asked once, not again within {KEYFRAME_REASK:?}"
    );
    let out = s.send(incoming("cam", q, Some("q"), 3, 3000, vp8(true, 1)));
    assert_eq!(out.len(), 1, "the keyframe starts the layer");
    assert_eq!((out[0].1.header.sequence_number, out[0].1.header.ssrc), (3, 0xC1));
    assert_eq!(s.send(incoming("cam", q, Some("q"), 4, 6000, vp8(false, 2))).len(), 1);

    // A bigger tile: the high layer is wanted, the low one still flows until it switches; the
    // mid layer (nobody's) stops at the ingest and is not even cached. The egress asks for the
    // high layer's keyframe once its last ask is old enough.
    egress.set_layers(&key, 720, layers);
    std::thread::sleep(KEYFRAME_REASK);
    assert!(s.send(incoming("cam", f, Some("f"), 50, 0, vp8(false, 0))).is_empty());
    assert_eq!(s.asks.taken(), vec![(key.clone(), Some(Layer::High))]);
    assert_eq!(s.send(incoming("cam", q, Some("q"), 5, 9000, vp8(false, 3))).len(), 1, "the old layer until then");
    let out = s.send(incoming("cam", f, Some("f"), 51, 12_000, vp8(true, 4)));
    assert_eq!(out.len(), 1, "switched at the high layer's keyframe");
    assert_eq!(out[0].1.header.sequence_number, 6, "numbers run on across the switch");
    assert!(s.send(incoming("cam", q, Some("q"), 6, 12_000, vp8(false, 5))).is_empty(), "the old layer stops");
    assert!(s.send(incoming("cam", h, Some("h"), 9, 0, vp8(true, 0))).is_empty());
    let cache = s.forwarder.routes.read().unwrap().by_track[&(s.publisher, Arc::from("cam"))].cache.clone().unwrap();
    let cache = cache.lock().unwrap();
    assert!(cache.get(&h).is_none(), "a layer nobody wants is not cached");
    let low = cache.get(&q).unwrap();
    assert_eq!(low.get(5).map(|p| p.payload.clone()), Some(vp8(false, 3)), "a forwarded packet is");
    assert!(low.get(6).is_none(), "the low layer stopped at the ingest once nobody wanted it");
    assert_eq!(cache.get(&f).and_then(|c| c.get(51)).map(|p| p.payload.clone()), Some(vp8(true, 4)));
}

#[test]
fn a_nack_is_answered_from_the_cache_with_the_numbers_first_sent() {
    let s = setup(0);
    let key: Arc<str> = Arc::from("p:camera");
    s.forwarder.publish(s.publisher, Arc::from("cam"), key.clone(), Codec::Vp8);
    let (_, egress) = s.subscriber("cam", &key, Codec::Vp8, 0xC1, Some(360), vec![]);
    let mut out_seqs = Vec::new();
    for i in 0..4u16 {
        let out = s.send(incoming("cam", 0x2222, None, 500 + i, 3000 * u32::from(i), vp8(i == 0, i as u8)));
        out_seqs.push(out[0].1.header.sequence_number);
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // One cached, one never sent (ahead of the newest).
    rt.block_on(s.forwarder.retransmit(&egress, &key, &[out_seqs[2], out_seqs[3].wrapping_add(10)]));
    let resent = std::mem::take(&mut *s.link.sent.lock().unwrap());
    assert_eq!(resent.len(), 1);
    let h = &resent[0].header;
    assert_eq!((h.sequence_number, h.timestamp, h.ssrc, h.payload_type), (out_seqs[2], 6000, 0xC1, PT_VP8));
    assert_eq!(resent[0].payload, vp8(false, 2));
    let stats = s.forwarder.stats();
    assert_eq!((stats.forwarded, stats.retransmitted, stats.not_retransmitted), (4, 1, 1));

    // Audio keeps no cache; an unknown key is nobody's: neither answers nor counts.
    rt.block_on(s.forwarder.retransmit(&egress, "nobody", &[1]));
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    let (_, audio) = s.subscriber("mic", "p:microphone", Codec::Opus, 0xA1, None, vec![]);
    s.send(incoming("mic", 0x1111, None, 1, 0, Bytes::from_static(b"x")));
    rt.block_on(s.forwarder.retransmit(&audio, "p:microphone", &[1]));
    assert!(s.link.sent.lock().unwrap().is_empty());
    let after = s.forwarder.stats();
    assert_eq!((after.retransmitted, after.not_retransmitted), (1, 1));
}

#[test]
fn a_republished_track_answers_nacks_from_its_new_cache() {
    let s = setup(0);
    let key: Arc<str> = Arc::from("p:camera");
    s.forwarder.publish(s.publisher, Arc::from("cam"), key.clone(), Codec::Vp8);
    let (user, egress) = s.subscriber("cam", &key, Codec::Vp8, 0xC1, Some(360), vec![]);
    let seq = s.send(incoming("cam", 0x2222, None, 10, 0, vp8(true, 0)))[0].1.header.sequence_number;
    // The same key from a new track of the publisher's, whose cache has not seen the packet.
    s.forwarder.publish(s.publisher, Arc::from("cam2"), key.clone(), Codec::Vp8);
    s.forwarder.subscriptions(user, &egress).answer_nacks_from(&key, s.publisher, &Arc::from("cam2"));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(s.forwarder.retransmit(&egress, &key, &[seq]));
    assert!(s.link.sent.lock().unwrap().is_empty());
    assert_eq!(s.forwarder.stats().not_retransmitted, 1);
    // Back to the first track's cache: answered.
    s.forwarder.subscriptions(user, &egress).answer_nacks_from(&key, s.publisher, &Arc::from("cam"));
    rt.block_on(s.forwarder.retransmit(&egress, &key, &[seq]));
    assert_eq!(s.link.sent.lock().unwrap().len(), 1);
}

#[test]
fn fault_injection_withholds_every_nth_video_packet_numbered_and_cached() {
    let s = setup(3);
    let key: Arc<str> = Arc::from("p:camera");
    s.forwarder.publish(s.publisher, Arc::from("cam"), key.clone(), Codec::Vp8);
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    let (_, egress) = s.subscriber("cam", &key, Codec::Vp8, 0xC1, Some(360), vec![]);
    let (_, _audio) = s.subscriber("mic", "p:microphone", Codec::Opus, 0xA1, None, vec![]);
    let got: Vec<usize> = (0..6u16).map(|i| s.send(incoming("cam", 0x22, None, i, 0, vp8(i == 0, 0))).len()).collect();
    assert_eq!(got, [1, 1, 0, 1, 1, 0]);
    assert!((0..6u16).all(|i| s.send(incoming("mic", 0x11, None, i, 0, Bytes::from_static(b"a"))).len() == 1));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(s.forwarder.retransmit(&egress, &key, &[2, 5]));
    let resent: Vec<u16> = s.link.sent.lock().unwrap().iter().map(|p| p.header.sequence_number).collect();
    assert_eq!(resent, [2, 5], "the withheld packets are repaired from the cache");
}

#[test]
fn the_speaker_detector_hears_the_ingests_audio_levels() {
    let s = setup(0);
    let quiet = Uuid::new_v4();
    let quiet_ingest = s.forwarder.ingest(quiet);
    let start = Instant::now();
    for i in 0..50u16 {
        let mut outbox = Outbox::default();
        let mut loud = incoming("mic", 1, None, i, 0, Bytes::from_static(b"a"));
        loud.audio_level = Some(10);
        s.ingest.on_rtp(loud, &mut outbox);
        let mut soft = incoming("mic", 2, None, i, 0, Bytes::from_static(b"a"));
        soft.audio_level = Some(120);
        quiet_ingest.on_rtp(soft, &mut outbox);
        assert!(outbox.is_empty(), "nothing published: levels are heard all the same");
    }
    let now = Instant::now().max(start + Duration::from_millis(1));
    let change = s.forwarder.speaker_tick(now).expect("a speaker");
    assert_eq!(change.current, s.publisher);
    let scores = s.forwarder.speaker_scores([quiet, s.publisher], now);
    assert_eq!(scores.iter().map(|(u, _)| *u).collect::<Vec<_>>(), [quiet, s.publisher], "in the order asked");
    assert!(scores[1].1 > scores[0].1);
    s.forwarder.forget(s.publisher);
    assert_eq!(s.forwarder.speaker_scores([s.publisher], now)[0].1, 0.0, "forgotten");
}

/// A recording sink that keeps what it is handed.
#[derive(Default)]
struct Recorded(Mutex<Vec<RecordedPacket>>);

impl RecordSink for Recorded {
    fn on_packet(&self, p: &RecordedPacket) {
        self.0.lock().unwrap().push(p.clone());
    }
}

impl Recorded {
    fn taken(&self) -> Vec<RecordedPacket> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[test]
fn a_recorded_track_reaches_its_sink_watched_or_not_and_stops_when_told() {
    let s = setup(0);
    let sink = Arc::new(Recorded::default());
    s.forwarder.record(s.publisher, "mic", sink.clone());
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    assert!(s.send(incoming("mic", 0x1111, None, 1, 0, Bytes::from_static(b"opus"))).is_empty());
    assert!(sink.taken().is_empty(), "recording before the route exists has no effect");

    s.forwarder.record(s.publisher, "mic", sink.clone());
    for i in 0..3u16 {
        assert!(
            s.send(incoming("mic", 0x1111, None, 2 + i, 960, Bytes::from_static(b"opus"))).is_empty(),
            "no subscriber"
        );
    }
    let got = sink.taken();
    assert_eq!(got.len(), 3, "recorded though nobody watches");
    let p = &got[0];
    assert_eq!(
        (p.publisher, &*p.track_id, p.kind, p.codec, p.ssrc),
        (s.publisher, "mic", MediaKind::Audio, Codec::Opus, 0x1111)
    );
    assert_eq!(p.packet.header.sequence_number, 2);
    assert!(
        p.packet.header.extensions.is_empty() && p.packet.header.csrc.is_empty(),
        "the publisher's leg stays behind"
    );
    assert_eq!(&p.packet.payload[..], b"opus");

    // A subscriber gets its copy as before.
    let (_, _sub) = s.subscriber("mic", "p:microphone", Codec::Opus, 0xA1, None, vec![]);
    assert_eq!(s.send(incoming("mic", 0x1111, None, 5, 1920, Bytes::from_static(b"opus"))).len(), 1);
    assert_eq!(sink.taken().len(), 1);

    // Replaced, then stopped.
    let other = Arc::new(Recorded::default());
    s.forwarder.record(s.publisher, "mic", other.clone());
    s.send(incoming("mic", 0x1111, None, 6, 2880, Bytes::from_static(b"opus")));
    assert_eq!((sink.taken().len(), other.taken().len()), (0, 1));
    s.forwarder.stop_recording(s.publisher, "mic");
    s.send(incoming("mic", 0x1111, None, 7, 3840, Bytes::from_static(b"opus")));
    assert!(other.taken().is_empty());
    // Published again: a new route, without the sink.
    s.forwarder.record(s.publisher, "mic", other.clone());
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    s.send(incoming("mic", 0x1111, None, 8, 4800, Bytes::from_static(b"opus")));
    assert!(other.taken().is_empty(), "the owner records it again on TrackOpened");
}

#[test]
fn a_recorded_simulcast_track_passes_one_layer_and_switches_at_its_keyframe() {
    let s = setup(0);
    s.forwarder.publish(s.publisher, Arc::from("cam"), Arc::from("p:camera"), Codec::Vp8);
    let sink = Arc::new(Recorded::default());
    s.forwarder.record(s.publisher, "cam", sink.clone());
    let ssrcs = |got: Vec<RecordedPacket>| got.iter().map(|p| p.ssrc).collect::<Vec<_>>();
    // The low layer starts with a keyframe: passed.
    s.send(incoming("cam", 0xA, Some("q"), 1, 0, vp8(true, 1)));
    s.send(incoming("cam", 0xA, Some("q"), 2, 3000, vp8(false, 2)));
    assert_eq!(ssrcs(sink.taken()), [0xA, 0xA]);
    // The high layer appears mid-frame: asked for, not passed; low goes on meanwhile.
    s.send(incoming("cam", 0xC, Some("f"), 50, 9000, vp8(false, 3)));
    assert_eq!(s.asks.taken(), [(Arc::from("p:camera"), Some(Layer::High))]);
    s.send(incoming("cam", 0xA, Some("q"), 3, 6000, vp8(false, 4)));
    assert_eq!(ssrcs(sink.taken()), [0xA]);
    // Its keyframe: switched; low is no longer passed.
    s.send(incoming("cam", 0xC, Some("f"), 51, 12_000, vp8(true, 5)));
    s.send(incoming("cam", 0xA, Some("q"), 4, 9000, vp8(true, 6)));
    s.send(incoming("cam", 0xC, Some("f"), 52, 15_000, vp8(false, 7)));
    assert_eq!(ssrcs(sink.taken()), [0xC, 0xC], "one SSRC at a time");
    assert!(s.asks.taken().is_empty());
}

#[test]
fn a_held_track_reaches_no_subscriber_no_recording_and_no_speaker_detector_until_released() {
    let s = setup(0);
    let sink = Arc::new(Recorded::default());
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    s.forwarder.record(s.publisher, "mic", sink.clone());
    let (_a, _egress) = s.subscriber("mic", "p:microphone", Codec::Opus, 0xA1, None, vec![]);
    assert!(!s.forwarder.hold(s.publisher, "nothing", true), "no such route: nothing held");
    assert!(s.forwarder.hold(s.publisher, "mic", true), "held");
    assert!(!s.forwarder.hold(s.publisher, "mic", true), "already held");
    let start = Instant::now();
    for i in 0..20u16 {
        let mut p = incoming("mic", 0x1111, None, i, 960 * u32::from(i), Bytes::from_static(b"opus"));
        p.audio_level = Some(5);
        assert!(s.send(p).is_empty(), "a muted microphone reaches nobody");
    }
    assert!(sink.taken().is_empty(), "and is not recorded");
    let now = Instant::now().max(start + Duration::from_millis(1));
    assert!(s.forwarder.speaker_tick(now).is_none(), "nor does it make its owner the speaker");
    assert_eq!(s.forwarder.received(s.publisher).packets, 20, "what arrived is still counted");

    assert!(s.forwarder.hold(s.publisher, "mic", false), "released");
    let out = s.send(incoming("mic", 0x1111, None, 20, 960 * 20, Bytes::from_static(b"opus")));
    assert_eq!(out.len(), 1, "released: forwarded again");
    assert_eq!(sink.taken().len(), 1, "and recorded");
    s.forwarder.publish(s.publisher, Arc::from("mic"), Arc::from("p:microphone"), Codec::Opus);
    assert!(s.forwarder.hold(s.publisher, "mic", true), "a route published again starts released");
}
