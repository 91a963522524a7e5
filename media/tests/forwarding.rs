//! Real WebRTC on loopback: a Rust client publishes synthetic VP8 + Opus to an SFU-side
//! [`Peer`]; the node's own forwarder ([`parley_media::forward`], set up as the media-router
//! actor sets it up: the publisher's ingest as its peer's sink, an egress per subscriber bound
//! to its outgoing tracks) forwards each packet on the receive path to two subscriber peers,
//! which a Rust client each receives and counts.
//!
//! Exercises: client offer → `accept_offer`; server offer → `create_offer`/`accept_answer`
//! (initial and a renegotiation that adds the audio tracks, then one that removes a track);
//! trickle ICE from the server (`PeerEvent::LocalCandidate` → client); RTP through the
//! forwarder (`Peer::route_rtp_to`, `Outbox`) with per-subscriber SSRC/PT and continuous
//! sequence numbers, its counters; a subscriber's NACK answered from the forwarder's packet
//! cache (`Forwarder::retransmit`); RTP out of `PeerChannels::rtp` for a peer without a sink;
//! `OutTrack::write_rtp`; PLI to the publisher; clean close.
//!
//! Each test runs twice: SFU peers with a socket each, and SFU peers sharing the node's one
//! media port ([`MediaSocket`]).

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_media::MediaError;
use parley_media::forward::{Egress, ForwardStats, Forwarder, Upstream};
use parley_media::layers::Layer;
use parley_media::peer::{
    Codec, IncomingRtp, MediaKind, OutTrack, OutTrackSpec, Outbox, Peer, PeerChannels, PeerConfig, PeerEvent,
    PeerState, RtpSink,
};
use parley_media::socket::MediaSocket;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use uuid::Uuid;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry, register_default_interceptors,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Packets the publisher sends per kind.
const PACKETS: u32 = 500;
/// Publisher SSRCs and the payload types its offer gives VP8 and Opus (webrtc-rs defaults).
const PUB_VIDEO_SSRC: u32 = 0x1111_0001;
const PUB_AUDIO_SSRC: u32 = 0x1111_0002;
const PUB_VP8_PT: u8 = 96;
const PUB_OPUS_PT: u8 = 111;
const STEP: Duration = Duration::from_secs(10);
/// What subscribers receive the publisher's tracks as (the router's `<user>:<source>` keys):
/// the forwarder's keys and the outgoing tracks' ids.
const VIDEO_KEY: &str = "publisher:camera";
const AUDIO_KEY: &str = "publisher:microphone";

/// How the SFU side's peers reach the network.
#[derive(Clone)]
enum Server {
    /// A UDP socket (and webrtc-rs driver) per peer.
    OwnSockets,
    /// One socket for all, as a node runs by default.
    Shared(Arc<MediaSocket>),
}

impl Server {
    async fn shared() -> Server {
        Server::Shared(MediaSocket::bind(LOOPBACK, 0, None).await.unwrap())
    }

    async fn peer(&self, config: &PeerConfig) -> (Peer, PeerChannels) {
        match self {
            Server::OwnSockets => Peer::new(config).await.unwrap(),
            Server::Shared(socket) => Peer::on_socket(config, socket, Some("test")).await.unwrap(),
        }
    }

    /// Connections still registered on the shared socket (none for own sockets).
    async fn open_peers(&self) -> usize {
        match self {
            Server::OwnSockets => 0,
            Server::Shared(socket) => {
                // Closing is queued to the driver: give it a moment.
                for _ in 0..100 {
                    if socket.stats().peers == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                socket.stats().peers
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal client peer (what a browser would be), plain webrtc-rs.

enum ClientEvent {
    Gathered,
    Connected,
    Track(Arc<dyn TrackRemote>),
}

struct ClientHandler(mpsc::UnboundedSender<ClientEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(ClientEvent::Gathered);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.0.send(ClientEvent::Connected);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(ClientEvent::Track(track));
    }
}

struct Client {
    pc: Arc<dyn PeerConnection>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    /// Candidates gathered once (they do not change on renegotiation).
    gathered: bool,
}

async fn client() -> Client {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(ClientHandler(tx)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    Client { pc: Arc::new(pc), events, gathered: false }
}

impl Client {
    /// Waits for a client event matching `want`, keeping the others' tracks aside.
    async fn wait(&mut self, what: &str, mut want: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        timeout(STEP, async {
            loop {
                match self.events.recv().await {
                    Some(e) if want(&e) => return e,
                    Some(_) => {}
                    None => panic!("client events closed while waiting for {what}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Applies a server offer and returns the answer with all candidates (no trickle this way).
    async fn answer(&mut self, offer: String) -> String {
        self.pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap()).await.unwrap();
        let answer = self.pc.create_answer(None).await.unwrap();
        self.pc.set_local_description(answer).await.unwrap();
        if !self.gathered {
            self.wait("client gathered", |e| matches!(e, ClientEvent::Gathered)).await;
            self.gathered = true;
        }
        self.pc.local_description().await.unwrap().sdp
    }
}

fn client_track(id: &str, kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher".to_owned(),
        id.to_owned(),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            ..Default::default()
        }],
    )))
}

// ---------------------------------------------------------------------------------------------
// Server side glue: trickles the SFU peer's candidates to its client once the client has a
// remote description, and hands every other event to the test.

fn pump_sfu_events(
    mut channels_events: mpsc::UnboundedReceiver<PeerEvent>,
    client: Arc<dyn PeerConnection>,
) -> (oneshot::Sender<()>, mpsc::UnboundedReceiver<PeerEvent>) {
    let (ready_tx, mut ready_rx) = oneshot::channel::<()>();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut ready = false;
        loop {
            tokio::select! {
                r = &mut ready_rx, if !ready => {
                    ready = r.is_ok();
                    for c in pending.drain(..) {
                        add_candidate(&client, c).await;
                    }
                }
                event = channels_events.recv() => match event {
                    None => break,
                    Some(PeerEvent::LocalCandidate(c)) if ready => add_candidate(&client, c).await,
                    Some(PeerEvent::LocalCandidate(c)) => pending.push(c),
                    Some(other) => { let _ = out_tx.send(other); }
                },
            }
        }
    });
    (ready_tx, out_rx)
}

async fn add_candidate(client: &Arc<dyn PeerConnection>, c: parley_media::peer::IceCandidate) {
    let init = RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        ..Default::default()
    };
    client.add_ice_candidate(init).await.expect("server candidate accepted by the client");
}

async fn wait_event(
    rx: &mut mpsc::UnboundedReceiver<PeerEvent>,
    what: &str,
    want: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    timeout(STEP, async {
        loop {
            match rx.recv().await {
                Some(e) if want(&e) => return e,
                Some(_) => {}
                None => panic!("sfu events closed while waiting for {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------------------------
// Synthetic media: a payload that looks like its codec, carrying (index, send time).

/// VP8: payload descriptor (S=1, partition 0), then a keyframe header every 30th packet (P=0,
/// start code 9d 01 2a, 640x360) or an interframe byte, then index and send time.
fn vp8_payload(index: u32, sent_ns: u64, len: usize) -> Bytes {
    let mut p = Vec::with_capacity(len);
    p.push(0x10);
    if index.is_multiple_of(30) {
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        p.extend_from_slice(&[0x11, 0x02, 0x00]);
    }
    p.extend_from_slice(&index.to_be_bytes());
    p.extend_from_slice(&sent_ns.to_be_bytes());
    p.resize(len.max(p.len()), 0xAB);
    Bytes::from(p)
}

/// Opus: a TOC byte (SILK WB 20 ms, mono) then index and send time.
fn opus_payload(index: u32, sent_ns: u64) -> Bytes {
    let mut p = vec![0x48];
    p.extend_from_slice(&index.to_be_bytes());
    p.extend_from_slice(&sent_ns.to_be_bytes());
    p.resize(80, 0xCD);
    Bytes::from(p)
}

/// (index, send time) back out of either payload.
fn stamp(kind: MediaKind, payload: &[u8]) -> Option<(u32, u64)> {
    let at = match kind {
        MediaKind::Audio => 1,
        MediaKind::Video if payload.get(1)? & 0x01 == 0 => 11,
        MediaKind::Video => 4,
    };
    let index = u32::from_be_bytes(payload.get(at..at + 4)?.try_into().ok()?);
    let sent = u64::from_be_bytes(payload.get(at + 4..at + 12)?.try_into().ok()?);
    Some((index, sent))
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers.

/// What a subscriber's client saw of one packet.
#[derive(Debug, Clone, Copy)]
struct Seen {
    sub: usize,
    kind: MediaKind,
    ssrc: u32,
    pt: u8,
    seq: u16,
    index: u32,
    latency: Duration,
}

struct Subscriber {
    sfu: Arc<Peer>,
    client: Client,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    video: OutTrack,
    audio: Option<OutTrack>,
}

fn out_ssrc(sub: usize, kind: MediaKind) -> u32 {
    0x5000_0000 + (sub as u32) * 16 + if kind == MediaKind::Video { 1 } else { 2 }
}

/// Spawns the counting loop of one received track.
fn count_track(sub: usize, track: Arc<dyn TrackRemote>, base: Instant, seen: mpsc::UnboundedSender<Seen>) {
    tokio::spawn(async move {
        let kind = if track.kind().await == RtpCodecKind::Audio { MediaKind::Audio } else { MediaKind::Video };
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(p) = event {
                let Some((index, sent_ns)) = stamp(kind, &p.payload) else { continue };
                let now = base.elapsed();
                let latency = now.saturating_sub(Duration::from_nanos(sent_ns));
                let h = &p.header;
                let s = Seen { sub, kind, ssrc: h.ssrc, pt: h.payload_type, seq: h.sequence_number, index, latency };
                let _ = seen.send(s);
            }
        }
    });
}

async fn connect_subscriber(sub: usize, config: &PeerConfig, server: &Server) -> Subscriber {
    let (sfu, PeerChannels { events, rtp: _ }) = server.peer(config).await;
    let sfu = Arc::new(sfu);
    let mut client = client().await;
    let (ready, mut events) = pump_sfu_events(events, Arc::clone(&client.pc));

    let video = sfu
        .add_track(OutTrackSpec {
            track_id: VIDEO_KEY.to_owned(),
            stream_id: "publisher".to_owned(),
            codec: Codec::Vp8,
            ssrc: out_ssrc(sub, MediaKind::Video),
        })
        .await
        .unwrap();
    assert!(
        matches!(video.write_rtp(packet(96, 1, 1, 1, false, Bytes::new())).await, Err(MediaError::NotNegotiated(_))),
        "writing before negotiation is refused"
    );
    let offer = sfu.create_offer().await.unwrap();
    let answer = client.answer(offer).await;
    let _ = ready.send(());
    sfu.accept_answer(answer).await.unwrap();
    assert_eq!(video.payload_type(), Some(96), "VP8 payload type read from the negotiated sender");
    wait_event(&mut events, "subscriber connected", |e| *e == PeerEvent::StateChanged(PeerState::Connected)).await;
    client.wait("subscriber client connected", |e| matches!(e, ClientEvent::Connected)).await;
    Subscriber { sfu, client, events, video, audio: None }
}

/// Server-initiated renegotiation adding the audio track.
async fn add_audio(sub: usize, s: &mut Subscriber) {
    let audio = s
        .sfu
        .add_track(OutTrackSpec {
            track_id: AUDIO_KEY.to_owned(),
            stream_id: "publisher".to_owned(),
            codec: Codec::Opus,
            ssrc: out_ssrc(sub, MediaKind::Audio),
        })
        .await
        .unwrap();
    let offer = s.sfu.create_offer().await.unwrap();
    assert!(offer.contains("opus/48000"), "renegotiation offer carries the new audio m-line");
    let answer = s.client.answer(offer).await;
    s.sfu.accept_answer(answer).await.unwrap();
    assert_eq!(audio.payload_type(), Some(111));
    s.audio = Some(audio);
}

// ---------------------------------------------------------------------------------------------

/// A forwarder never waits on a subscriber: what does not fit its connection's queue is dropped
/// and counted, and the rest goes out. On this single-threaded runtime the connection's driver
/// cannot drain its queue while the outbox is sent, so the queue fills.
#[tokio::test]
async fn an_outbox_drops_and_counts_what_a_full_connection_queue_cannot_take() {
    let config = PeerConfig::local(LOOPBACK);
    let s = connect_subscriber(0, &config, &Server::OwnSockets).await;
    const N: u16 = 2000;
    let mut outbox = Outbox::default();
    for i in 0..N {
        let p = packet(96, i, u32::from(i) * 3000, PUB_VIDEO_SSRC, true, vp8_payload(u32::from(i), 0, 1000));
        outbox.write(&s.video, p).expect("a negotiated track");
    }
    assert_eq!(outbox.len(), usize::from(N));
    outbox.send_now();
    assert!(outbox.is_empty());
    let dropped = s.video.dropped();
    // webrtc-rs queues 256 writes per connection: the rest of the burst is dropped.
    assert!((u64::from(N) - 256..u64::from(N)).contains(&dropped), "{dropped} of {N} dropped");
    // What was queued still goes out, and later packets are taken again once it drains.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut later = Outbox::default();
    later.write(&s.video, packet(96, N, 0, PUB_VIDEO_SSRC, true, vp8_payload(0, 0, 100))).unwrap();
    later.send_now();
    assert_eq!(s.video.dropped(), dropped, "room again once the driver has run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_to_two_subscribers_through_the_sfu() {
    publisher_to_two_subscribers(Server::OwnSockets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_to_two_subscribers_on_one_shared_media_port() {
    let server = Server::shared().await;
    publisher_to_two_subscribers(server.clone()).await;
    assert_eq!(server.open_peers().await, 0, "every connection left the shared socket");
    let Server::Shared(socket) = server else { unreachable!() };
    let stats = socket.stats();
    let (out, calls) = (stats.datagrams_out, stats.send_calls);
    eprintln!("shared socket: {out} datagrams out in {calls} sendmmsg calls, {} in", stats.datagrams_in);
    assert!(out >= 4 * u64::from(PACKETS), "all media left through the one socket");
}

/// What the forwarder asked of its owner (the router would ask the publisher for keyframes).
#[derive(Default)]
struct Asks(std::sync::Mutex<Vec<(Arc<str>, Option<Layer>)>>);

impl Upstream for Asks {
    fn keyframe_wanted(&self, key: Arc<str>, layer: Option<Layer>) {
        self.0.lock().unwrap().push((key, layer));
    }
}

/// The publishing side: the SFU's peer and the client (its two tracks) that publishes to it.
struct Publisher {
    sfu: Arc<Peer>,
    client: Client,
    /// The SFU peer's events other than candidates.
    events: mpsc::UnboundedReceiver<PeerEvent>,
    /// Published packets, when no sink takes them.
    rtp: mpsc::Receiver<IncomingRtp>,
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
}

/// A client publishing VP8 (`cam`) + Opus (`mic`): it offers, the SFU answers, the server's
/// candidates trickle, both ends connect. `sink` (as the router's ingest) takes the SFU peer's
/// published packets from the start; without one they queue on its `rtp` channel.
async fn connect_publisher(server: &Server, config: &PeerConfig, sink: Option<Arc<dyn RtpSink>>) -> Publisher {
    let (sfu, PeerChannels { events, rtp }) = server.peer(config).await;
    assert_ne!(sfu.local_port(), 0);
    if let Server::Shared(socket) = server {
        assert_eq!(sfu.local_port(), socket.local_addr().port(), "the shared port");
    }
    if let Some(sink) = sink {
        sfu.route_rtp_to(sink);
    }
    let sfu = Arc::new(sfu);
    let mut client = client().await;
    let (ready, mut events) = pump_sfu_events(events, Arc::clone(&client.pc));
    let vp8 = RTCRtpCodec { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() };
    let opus = RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        ..Default::default()
    };
    let video = client_track("cam", RtpCodecKind::Video, PUB_VIDEO_SSRC, vp8);
    let audio = client_track("mic", RtpCodecKind::Audio, PUB_AUDIO_SSRC, opus);
    client.pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>).await.unwrap();
    client.pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>).await.unwrap();
    let offer = client.pc.create_offer(None).await.unwrap();
    client.pc.set_local_description(offer).await.unwrap();
    client.wait("publisher gathered", |e| matches!(e, ClientEvent::Gathered)).await;
    let offer = client.pc.local_description().await.unwrap().sdp;
    let answer = sfu.accept_offer(offer).await.unwrap();
    client.pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
    let _ = ready.send(());
    wait_event(&mut events, "publisher connected", |e| *e == PeerEvent::StateChanged(PeerState::Connected)).await;
    client.wait("publisher client connected", |e| matches!(e, ClientEvent::Connected)).await;
    Publisher { sfu, client, events, rtp, video, audio }
}

impl Publisher {
    /// `n` packets of each track, video and audio interleaved, one of each per 1 ms; returns
    /// the time it took.
    async fn send(&self, n: u32, base: Instant) -> Duration {
        let started = Instant::now();
        let mut seq = 4_000u16.wrapping_sub(200); // crosses no wrap; see rewrite tests for that
        for i in 0..n {
            let now_ns = u64::try_from(base.elapsed().as_nanos()).unwrap();
            let v = packet(PUB_VP8_PT, seq, i * 3000, PUB_VIDEO_SSRC, true, vp8_payload(i, now_ns, 1000));
            self.video.write_rtp(v).await.unwrap();
            let a = packet(PUB_OPUS_PT, seq, i * 960, PUB_AUDIO_SSRC, false, opus_payload(i, now_ns));
            self.audio.write_rtp(a).await.unwrap();
            seq = seq.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }
}

/// The forwarder as the router sets it up for one publisher and `subs`: routes for the
/// publisher's two tracks, each subscriber's egress bound to its outgoing tracks (a 360p tile,
/// no simulcast layers). Returns each subscriber's id and egress, in `subs` order.
fn forward_to(forwarder: &Forwarder, publisher: Uuid, subs: &[Subscriber]) -> Vec<(Uuid, Arc<Egress>)> {
    let (cam, mic): (Arc<str>, Arc<str>) = (Arc::from("cam"), Arc::from("mic"));
    forwarder.publish(publisher, cam.clone(), Arc::from(VIDEO_KEY), Codec::Vp8);
    forwarder.publish(publisher, mic.clone(), Arc::from(AUDIO_KEY), Codec::Opus);
    subs.iter()
        .map(|s| {
            let user = Uuid::new_v4();
            let egress = forwarder.egress(user, s.sfu.downlink_estimate());
            let mut change = forwarder.subscriptions(user, &egress);
            change.bind(publisher, &cam, Arc::from(VIDEO_KEY), s.video.clone(), Some(360), Vec::new());
            change.bind(publisher, &mic, Arc::from(AUDIO_KEY), s.audio.clone().expect("audio added"), None, Vec::new());
            change.apply();
            (user, egress)
        })
        .collect()
}

async fn publisher_to_two_subscribers(server: Server) {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let config = PeerConfig::local(LOOPBACK);
    let base = Instant::now();
    let setup_started = Instant::now();

    // Subscribers first: they are negotiated and connected before any media flows.
    let mut subs = Vec::new();
    for sub in 0..2 {
        let mut s = connect_subscriber(sub, &config, &server).await;
        add_audio(sub, &mut s).await;
        subs.push(s);
    }
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let (tracks_tx, mut tracks_rx) = mpsc::unbounded_channel::<(usize, Arc<dyn TrackRemote>)>();
    for (i, s) in subs.iter_mut().enumerate() {
        // Tracks appear on their first packet; count them in the background.
        let rx = std::mem::replace(&mut s.client.events, mpsc::unbounded_channel().1);
        tokio::spawn(watch_client_tracks(i, rx, base, seen_tx.clone(), tracks_tx.clone()));
    }

    // The forwarder, routes and bindings in place before the publisher sends anything.
    let asks = Arc::new(Asks::default());
    let forwarder = Forwarder::new(asks.clone(), 0);
    let publisher_id = Uuid::new_v4();
    let egresses = forward_to(&forwarder, publisher_id, &subs);

    // The publisher: client offers VP8 + Opus, the SFU answers; server candidates trickle.
    let mut publisher = connect_publisher(&server, &config, Some(forwarder.ingest(publisher_id))).await;
    if let Server::Shared(socket) = &server {
        assert!(subs.iter().all(|s| s.sfu.local_port() == socket.local_addr().port()));
    }
    let setup = setup_started.elapsed();

    // Send: video and audio interleaved, one packet of each per 1 ms.
    let send_started = Instant::now();
    let send_time = publisher.send(PACKETS, base).await;

    // The SFU saw both tracks open, and can ask the publisher for a keyframe (throttled).
    let opened = wait_event(&mut publisher.events, "video track opened", |e| {
        matches!(e, PeerEvent::TrackOpened { kind: MediaKind::Video, .. })
    })
    .await;
    assert_eq!(
        opened,
        PeerEvent::TrackOpened {
            track_id: "cam".into(),
            kind: MediaKind::Video,
            ssrc: PUB_VIDEO_SSRC,
            rid: None,
            codec: Some(Codec::Vp8)
        }
    );
    let sfu_pub = Arc::clone(&publisher.sfu);
    assert!(sfu_pub.request_keyframe(PUB_VIDEO_SSRC).await.unwrap(), "first PLI goes out");
    assert!(!sfu_pub.request_keyframe(PUB_VIDEO_SSRC).await.unwrap(), "second within a second is throttled");
    assert!(!sfu_pub.request_keyframe(0xdead).await.unwrap(), "unknown stream");

    // Collect: every packet, to both subscribers.
    let expected = 2 * 2 * PACKETS as usize;
    let mut seen = Vec::with_capacity(expected);
    let collect = timeout(Duration::from_secs(5), async {
        while seen.len() < expected {
            match seen_rx.recv().await {
                Some(s) => seen.push(s),
                None => break,
            }
        }
    })
    .await;
    let delivered_time = send_started.elapsed();
    if collect.is_err() {
        let mut by: HashMap<(usize, MediaKind), usize> = HashMap::new();
        for s in &seen {
            *by.entry((s.sub, s.kind)).or_default() += 1;
        }
        panic!(
            "only {} of {expected} packets arrived: {by:?}; sfu dropped {}; forwarder {:?}",
            seen.len(),
            sfu_pub.dropped_rtp(),
            forwarder.stats()
        );
    }

    for sub in 0..2 {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let got: Vec<&Seen> = seen.iter().filter(|s| s.sub == sub && s.kind == kind).collect();
            assert_eq!(got.len(), PACKETS as usize, "sub {sub} {kind:?}: zero loss");
            assert!(got.iter().all(|s| s.ssrc == out_ssrc(sub, kind)), "sub {sub} {kind:?}: rewritten SSRC");
            let pt = if kind == MediaKind::Video { 96 } else { 111 };
            assert!(got.iter().all(|s| s.pt == pt), "sub {sub} {kind:?}: negotiated payload type");
            let mut indexes: Vec<u32> = got.iter().map(|s| s.index).collect();
            indexes.sort_unstable();
            assert_eq!(indexes, (0..PACKETS).collect::<Vec<_>>(), "sub {sub} {kind:?}: each packet once");
            // Sequence numbers continue +1 per packet in arrival order (loopback: no reordering).
            for w in got.windows(2) {
                assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sub {sub} {kind:?}: continuous seq");
            }
        }
    }
    assert_eq!(sfu_pub.dropped_rtp(), 0);
    // The forwarder's counters: every copy handed over, none refused or dropped on the way.
    assert_eq!(forwarder.stats(), ForwardStats { forwarded: expected as u64, ..Default::default() });
    assert!(subs.iter().all(|s| s.video.dropped() == 0 && s.audio.as_ref().is_some_and(|a| a.dropped() == 0)));
    assert!(asks.0.lock().unwrap().is_empty(), "no simulcast: no keyframe to wait for");

    // The subscribers' received tracks, by subscriber and kind.
    let mut received: HashMap<(usize, MediaKind), Arc<dyn TrackRemote>> = HashMap::new();
    while let Ok((sub, track)) = tracks_rx.try_recv() {
        let kind = if track.kind().await == RtpCodecKind::Video { MediaKind::Video } else { MediaKind::Audio };
        received.insert((sub, kind), track);
    }

    // A subscriber's NACK reaches the SFU as lost sequence numbers of that track, and the
    // forwarder sends the packet again from its cache, numbered as it first left.
    let video_of_sub0 = received.get(&(0, MediaKind::Video)).expect("subscriber 0 saw its video track");
    let resent_seq =
        seen.iter().find(|s| s.sub == 0 && s.kind == MediaKind::Video && s.index == PACKETS - 10).unwrap().seq;
    let nack = rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack {
        sender_ssrc: 0,
        media_ssrc: out_ssrc(0, MediaKind::Video),
        nacks: vec![rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair::new(resent_seq)],
    };
    video_of_sub0.write_rtcp(vec![Box::new(nack)]).await.unwrap();
    let lost =
        wait_event(&mut subs[0].events, "NACK from subscriber 0", |e| matches!(e, PeerEvent::NackReceived { .. }))
            .await;
    let PeerEvent::NackReceived { track_id, sequence_numbers } = lost else { unreachable!() };
    assert_eq!((track_id.as_str(), sequence_numbers.as_slice()), (VIDEO_KEY, &[resent_seq][..]));
    forwarder.retransmit(&egresses[0].1, &track_id, &sequence_numbers).await;
    assert_eq!((forwarder.stats().retransmitted, forwarder.stats().not_retransmitted), (1, 0));
    let again = timeout(STEP, async {
        loop {
            match seen_rx.recv().await {
                Some(s) if s.sub == 0 && s.kind == MediaKind::Video => return s,
                Some(_) => {}
                None => panic!("subscriber tracks ended"),
            }
        }
    })
    .await
    .expect("the retransmission reached subscriber 0");
    assert_eq!((again.index, again.seq, again.ssrc), (PACKETS - 10, resent_seq, out_ssrc(0, MediaKind::Video)));

    // A subscriber's PLI on its video reaches the SFU as a keyframe request for that track.
    let video_of_sub1 = received.get(&(1, MediaKind::Video)).expect("subscriber 1 saw its video track");
    let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: out_ssrc(1, MediaKind::Video),
    };
    video_of_sub1.write_rtcp(vec![Box::new(pli)]).await.unwrap();
    let want = PeerEvent::KeyframeRequested { track_id: subs[1].video.track_id().to_owned() };
    wait_event(&mut subs[1].events, "keyframe request from subscriber 1", |e| *e == want).await;

    // Removing a track: refused afterwards, renegotiation succeeds.
    let s0 = &mut subs[0];
    let (user0, egress0) = &egresses[0];
    let mut change = forwarder.subscriptions(*user0, egress0);
    change.unbind(&Arc::from(VIDEO_KEY));
    change.apply();
    s0.sfu.remove_track(&s0.video).await.unwrap();
    assert!(matches!(
        s0.video.write_rtp(packet(96, 1, 1, 1, false, Bytes::new())).await,
        Err(MediaError::NotNegotiated(_))
    ));
    let offer = s0.sfu.create_offer().await.unwrap();
    let answer = s0.client.answer(offer).await;
    s0.sfu.accept_answer(answer).await.unwrap();
    assert_eq!(s0.video.payload_type(), None, "a removed track stays unwritable after renegotiation");

    // Report.
    let mut lat: Vec<Duration> = seen.iter().map(|s| s.latency).collect();
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "setup (2 subscribers + publisher, incl. renegotiation) {setup:?}; sent {} packets in {send_time:?} \
         ({:.0} pkt/s in); delivered {} in {delivered_time:?} ({:.0} pkt/s out); latency p50 {:?} p99 {:?} max {:?}",
        2 * PACKETS,
        f64::from(2 * PACKETS) / send_time.as_secs_f64(),
        seen.len(),
        seen.len() as f64 / delivered_time.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );

    // Clean close: the publisher's peer lets go of the forwarder's ingest.
    sfu_pub.close().await.unwrap();
    sfu_pub.close().await.unwrap();
    assert!(matches!(sfu_pub.create_offer().await, Err(MediaError::Closed)));
    for s in &subs {
        s.sfu.close().await.unwrap();
        s.client.pc.close().await.unwrap();
    }
    publisher.client.pc.close().await.unwrap();
    drop(subs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sink_published_packets_queue_for_the_owner() {
    queued_for_the_owner(Server::OwnSockets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sink_published_packets_queue_for_the_owner_on_the_shared_port() {
    let server = Server::shared().await;
    queued_for_the_owner(server.clone()).await;
    assert_eq!(server.open_peers().await, 0, "every connection left the shared socket");
}

/// A peer nobody gave a sink queues what it receives on `PeerChannels::rtp`, tagged with its
/// track, kind and SSRC.
async fn queued_for_the_owner(server: Server) {
    let config = PeerConfig::local(LOOPBACK);
    let mut publisher = connect_publisher(&server, &config, None).await;
    const N: u32 = 20;
    publisher.send(N, Instant::now()).await;
    let mut got: HashMap<MediaKind, Vec<u32>> = HashMap::new();
    let all = timeout(STEP, async {
        while got.values().map(Vec::len).sum::<usize>() < 2 * N as usize {
            let IncomingRtp { track_id, kind, ssrc, rid, packet, .. } = publisher.rtp.recv().await.expect("rtp");
            let (want_track, want_ssrc) = match kind {
                MediaKind::Video => ("cam", PUB_VIDEO_SSRC),
                MediaKind::Audio => ("mic", PUB_AUDIO_SSRC),
            };
            assert_eq!((&*track_id, ssrc, rid), (want_track, want_ssrc, None));
            got.entry(kind).or_default().push(stamp(kind, &packet.payload).expect("our payload").0);
        }
    })
    .await;
    assert!(all.is_ok(), "every packet queued: {got:?}");
    for kind in [MediaKind::Video, MediaKind::Audio] {
        assert_eq!(got[&kind], (0..N).collect::<Vec<_>>(), "{kind:?} in order");
    }
    assert_eq!(publisher.sfu.dropped_rtp(), 0);
    publisher.sfu.close().await.unwrap();
    assert!(publisher.rtp.recv().await.is_none(), "the queue ends with the peer");
    publisher.client.pc.close().await.unwrap();
}

async fn watch_client_tracks(
    sub: usize,
    mut events: mpsc::UnboundedReceiver<ClientEvent>,
    base: Instant,
    seen: mpsc::UnboundedSender<Seen>,
    tracks: mpsc::UnboundedSender<(usize, Arc<dyn TrackRemote>)>,
) {
    while let Some(e) = events.recv().await {
        if let ClientEvent::Track(track) = e {
            count_track(sub, Arc::clone(&track), base, seen.clone());
            let _ = tracks.send((sub, track));
        }
    }
}

#[tokio::test]
async fn malformed_sdp_is_an_error_not_a_panic() {
    malformed_sdp(Server::OwnSockets).await;
}

#[tokio::test]
async fn malformed_sdp_is_an_error_not_a_panic_on_the_shared_port() {
    let server = Server::shared().await;
    malformed_sdp(server.clone()).await;
    assert_eq!(server.open_peers().await, 0, "closed peers left the shared socket");
}

async fn malformed_sdp(server: Server) {
    let (peer, _channels) = server.peer(&PeerConfig::local(LOOPBACK)).await;
    let garbage = [
        String::new(),
        "hello".to_owned(),
        "v=0".to_owned(),
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n".to_owned(),
        "v=0\r\nm=\r\na=rtpmap:\r\n".to_owned(),
        String::from_utf8_lossy(&[0xff, 0x00, 0x13, 0x37, b'\n', b'=']).into_owned(),
    ];
    for sdp in garbage {
        match peer.accept_offer(sdp.clone()).await {
            Err(e @ MediaError::Sdp(_)) => assert!(e.is_remote_fault()),
            other => panic!("offer {sdp:?}: expected an SDP error, got {other:?}"),
        }
    }
    // An answer with no offer outstanding is refused too.
    assert!(matches!(peer.accept_answer("v=0".to_owned()).await, Err(MediaError::Sdp(_))));

    // A real offer from a client gets an answer that takes its video up. The media router
    // replaces a peer whose first offer failed (it may have started ICE, and a refused section
    // can stay bound to its mid), so this one goes to a fresh peer, as there.
    peer.close().await.unwrap();
    let (peer, _channels) = server.peer(&PeerConfig::local(LOOPBACK)).await;
    let c = client().await;
    let track = client_track(
        "cam",
        RtpCodecKind::Video,
        7,
        RTCRtpCodec { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() },
    );
    c.pc.add_track(track as Arc<dyn TrackLocal>).await.unwrap();
    let offer = c.pc.create_offer(None).await.unwrap();
    let answer = peer.accept_offer(offer.sdp.clone()).await.expect("a real offer is answered after the bad ones");
    assert!(answer.contains("a=fingerprint:"));
    assert!(!answer.contains("m=video 0 "), "the video section is taken up:\n{answer}");

    // Offers cut short parse but are unusable: refused (webrtc-rs would answer them with no media
    // sections). Such an offer may have started ICE, so each gets a fresh peer: the caller
    // replaces a peer whose first offer failed.
    let before_media = offer.sdp.find("m=").unwrap();
    for cut in [before_media, before_media + 20, offer.sdp.len() / 2] {
        let (fresh, _channels) = server.peer(&PeerConfig::local(LOOPBACK)).await;
        let refused = fresh.accept_offer(offer.sdp[..cut].to_owned()).await;
        assert!(matches!(refused, Err(MediaError::Sdp(_))), "offer cut at {cut} is refused: {refused:?}");
        fresh.close().await.unwrap();
    }

    // A bad candidate is an error as well.
    let bad = parley_media::peer::IceCandidate {
        candidate: "candidate:garbage".into(),
        sdp_mid: None,
        sdp_mline_index: None,
        username_fragment: None,
    };
    assert!(matches!(peer.add_remote_candidate(bad).await, Err(MediaError::Candidate(_))));
    peer.close().await.unwrap();
    c.pc.close().await.unwrap();
}

/// A deterministic junk datagram: every first byte (so every RFC 7983 kind) and many lengths.
fn junk(i: u32) -> Vec<u8> {
    let mut x = i.wrapping_mul(2_654_435_761).wrapping_add(1);
    let len = 1 + (i as usize * 37) % 1400;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    out[0] = i as u8;
    out
}

/// A STUN binding request naming `ufrag` with no valid integrity: enough to claim an address
/// on the shared port, not to pass ICE.
fn stun_naming(ufrag: &str) -> Vec<u8> {
    let username = format!("{ufrag}:intruder");
    parley_media::demux::binding_request(&[(parley_media::demux::ATTR_USERNAME, username.as_bytes())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_shared_port_is_refused_and_the_peer_on_it_goes_on() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let server = Server::shared().await;
    let Server::Shared(socket) = &server else { unreachable!() };
    let config = PeerConfig::local(LOOPBACK);
    let mut sub = connect_subscriber(0, &config, &server).await;
    let base = Instant::now();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let (tracks_tx, _tracks_rx) = mpsc::unbounded_channel();
    let rx = std::mem::replace(&mut sub.client.events, mpsc::unbounded_channel().1);
    tokio::spawn(watch_client_tracks(0, rx, base, seen_tx, tracks_tx));

    let intruder = tokio::net::UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let target = socket.local_addr();
    // From an address nobody claimed: dropped before any connection sees it.
    let before = socket.stats();
    let (unclaimed_before, in_before) = (before.unclaimed, before.datagrams_in);
    for i in 0..300 {
        intruder.send_to(&junk(i), target).await.unwrap();
    }
    // Claim the address for the peer (a STUN check naming its ufrag), then junk of every kind
    // straight into its connection: refused there, one datagram at a time.
    let local = sub.sfu.local_description().await.expect("negotiated");
    let ufrag = local.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).expect("our ufrag").trim().to_owned();
    intruder.send_to(&stun_naming(&ufrag), target).await.unwrap();
    for i in 0..5000 {
        intruder.send_to(&junk(i), target).await.unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = socket.stats();
    let unclaimed = stats.unclaimed - unclaimed_before;
    let into_connection = stats.datagrams_in - in_before - unclaimed;
    assert!((290..=300).contains(&unclaimed), "junk from a stranger is unclaimed ({unclaimed} of 300)");
    assert!(into_connection >= 5000, "junk from the claimed address reached the connection ({into_connection})");
    assert_eq!(stats.peers, 1, "the peer is still registered");

    // The peer carries on: media reaches its client, renegotiation still works.
    for i in 0..50u32 {
        let now_ns = u64::try_from(base.elapsed().as_nanos()).unwrap();
        let p = packet(96, 100 + i as u16, i * 3000, 0, true, vp8_payload(i, now_ns, 800));
        sub.video.write_rtp(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = 0;
    let arrived = timeout(STEP, async {
        while got < 50 {
            if seen_rx.recv().await.is_none() {
                break;
            }
            got += 1;
        }
    })
    .await;
    assert!(arrived.is_ok() && got == 50, "all 50 packets arrived after the junk, got {got}");
    add_audio(0, &mut sub).await;
    while let Ok(e) = sub.events.try_recv() {
        assert!(
            !matches!(e, PeerEvent::StateChanged(PeerState::Failed | PeerState::Closed)),
            "the peer survived: {e:?}"
        );
    }
    sub.sfu.close().await.unwrap();
    sub.client.pc.close().await.unwrap();
    assert_eq!(server.open_peers().await, 0);
}

#[tokio::test]
async fn an_offer_of_codecs_we_do_not_forward_gets_no_track_of_them() {
    only_unforwarded_codecs(Server::OwnSockets).await;
}

#[tokio::test]
async fn an_offer_of_codecs_we_do_not_forward_gets_no_track_of_them_on_the_shared_port() {
    let server = Server::shared().await;
    only_unforwarded_codecs(server.clone()).await;
    assert_eq!(server.open_peers().await, 0, "closed peers left the shared socket");
}

/// A client that offers only VP9 video and PCMU audio (codecs the router does not forward): the
/// node rejects both sections instead of accepting tracks it would forward mislabelled.
async fn only_unforwarded_codecs(server: Server) {
    let (peer, _channels) = server.peer(&PeerConfig::local(LOOPBACK)).await;
    let mut me = MediaEngine::default();
    let vp9 = RTCRtpCodec {
        mime_type: "video/VP9".into(),
        clock_rate: 90_000,
        sdp_fmtp_line: "profile-id=0".into(),
        ..Default::default()
    };
    let pcmu = RTCRtpCodec { mime_type: "audio/PCMU".into(), clock_rate: 8_000, channels: 1, ..Default::default() };
    me.register_codec(RTCRtpCodecParameters { rtp_codec: vp9.clone(), payload_type: 98 }, RtpCodecKind::Video).unwrap();
    me.register_codec(RTCRtpCodecParameters { rtp_codec: pcmu.clone(), payload_type: 0 }, RtpCodecKind::Audio).unwrap();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_handler(Arc::new(ClientHandler(mpsc::unbounded_channel().0)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    pc.add_track(client_track("cam", RtpCodecKind::Video, 21, vp9) as Arc<dyn TrackLocal>).await.unwrap();
    pc.add_track(client_track("mic", RtpCodecKind::Audio, 22, pcmu) as Arc<dyn TrackLocal>).await.unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    // Nothing in it is usable: refused as a whole (`invalid_sdp` for the client), not answered
    // with every section rejected.
    match peer.accept_offer(offer.sdp.clone()).await {
        Err(MediaError::Sdp(why)) => assert!(why.contains("no usable media section"), "{why}"),
        other => panic!("an offer of only VP9 and PCMU must be refused: {other:?}"),
    }
    peer.close().await.unwrap();
    pc.close().await.unwrap();
}
