//! One simulated participant: a WebSocket in a meeting and a webrtc-rs peer connection to the
//! meeting's media router, behaving as the protocol asks of a browser (PROTOCOL.md, "Media").
//!
//! - [`Participant::join`] opens the socket and starts or joins the meeting.
//! - [`Participant::connect_media`] offers (its synthetic camera and microphone, or receive-only
//!   transceivers), applies the answer, trickles candidates both ways and waits until connected.
//!   Server offers (someone published, left, the view changed) are answered as they come.
//! - [`Participant::publish`] sends synthetic VP8 + Opus until stopped.
//! - Everything received is counted per stream (`<user_id>:<source>`) in [`Received`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};

use parley_media::interceptors::{Filtered, KEYFRAME_FORWARDER_SLOT, KeyframeRequestForwarder, PacketFilter};
use parley_media::peer::{AUDIO_LEVEL_URI, MID_URI, RID_URI, extmap_id};
use rtc::interceptor::{Packet as ChainPacket, Slot, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{TransportLayerNack, nack_pairs_from_sequence_numbers};
use webrtc::media_stream::track_local::TrackLocalEvent;

use crate::LoadError;
use crate::real::{self, RealMedia, RealStream};
use crate::signal::{Api, Signal};
use crate::synth::{self, Phase, Stamp};

/// How long media setup may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a participant publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub video: bool,
    pub audio: bool,
    /// The camera in three simulcast layers (RIDs `q`, `h`, `f`), as browsers send it.
    pub simulcast: bool,
    /// Offer only H.264 for video (as a browser without VP8 would) and send H.264 payloads.
    pub h264: bool,
    /// Decodable media for the camera and microphone instead of synthetic payloads
    /// ([`Publish::with_real_media`]). One VP8 layer: not with `simulcast` or `h264`.
    pub real: Option<Arc<RealMedia>>,
}

impl Publish {
    pub const NOTHING: Publish = Publish { video: false, audio: false, simulcast: false, h264: false, real: None };
    pub const CAMERA_AND_MIC: Publish = Publish { video: true, audio: true, simulcast: false, h264: false, real: None };
    pub const SIMULCAST_CAMERA_AND_MIC: Publish =
        Publish { video: true, audio: true, simulcast: true, h264: false, real: None };
    pub const H264_CAMERA_AND_MIC: Publish =
        Publish { video: true, audio: true, simulcast: false, h264: true, real: None };

    /// The camera and microphone send `media` (VP8 and Opus, looped in real time) instead of
    /// synthetic payloads, from the moment [`Participant::connect_media`] connects, as a
    /// browser does; [`Participant::publish`] takes the sending over (to count it, to stop it),
    /// carrying on the same streams. Of [`Rates`], only `audio_level` applies to real media.
    /// Receivers count its packets as [`StreamStats::unstamped`], without latency. The screen
    /// stays synthetic.
    pub fn with_real_media(mut self, media: Arc<RealMedia>) -> Publish {
        self.real = Some(media);
        self
    }
}

/// The simulcast layers a simulcast camera sends, lowest first: RID, packets per frame,
/// bytes per packet (≈ 120 kbit/s, 380 kbit/s and 1 Mbit/s at 30 fps).
const SIMULCAST_LAYERS: [(&str, u32, usize); 3] = [("q", 1, 500), ("h", 2, 800), ("f", 4, 1100)];

/// Counters of one received stream.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub packets: u64,
    /// Packets by the simulcast layer they were sent on (0 none, 1 `q`, 2 `h`, 3 `f`).
    pub by_layer: [u64; 4],
    /// The layer of the latest packet.
    pub last_layer: u8,
    pub warm_up: u64,
    pub measured: synth::Seen,
    pub keyframes: u64,
    pub ssrcs: Vec<u32>,
    /// The sequence number of the latest packet.
    pub last_sequence_number: u16,
    /// The negotiated codec's MIME type (`video/VP8`, `video/H264`, `audio/opus`).
    pub codec: String,
    /// Packets without a synthetic stamp (real media, [`Publish::with_real_media`]): in
    /// `packets` too, never in `measured`, `warm_up` or the latencies.
    pub unstamped: u64,
}

/// What a participant received.
#[derive(Debug, Default)]
pub struct Received {
    /// By stream id (`<user_id>:<source>`).
    pub streams: BTreeMap<String, StreamStats>,
    /// One-way latency of every measured packet, in microseconds.
    pub latencies_us: Vec<u32>,
    /// When the first packet arrived.
    pub first_packet: Option<Instant>,
}

struct Shared {
    pc: Mutex<Option<Arc<dyn PeerConnection>>>,
    remote_set: AtomicBool,
    pending_candidates: Mutex<Vec<RTCIceCandidateInit>>,
    received: Mutex<Received>,
    events: Mutex<Vec<Value>>,
    offers_answered: AtomicU32,
    /// Keyframe requests (PLI/FIR) the server sent about our video tracks.
    keyframe_requests: AtomicU64,
    /// The same, by the SSRC they named.
    keyframe_requests_by_ssrc: Mutex<HashMap<u32, u64>>,
    /// Streams (SSRCs) whose next frame is a keyframe (the server asked for one).
    force_keyframe: Arc<Mutex<std::collections::HashSet<u32>>>,
    /// Video tracks we receive and their SSRC (REMB names them).
    remote_video: Mutex<Vec<(Arc<dyn TrackRemote>, u32)>>,
    /// Receive-side loss injection: drop the first copy of every Nth VP8 packet (0 = none).
    drop_every: AtomicU32,
    dropped: Arc<AtomicU64>,
    /// The server answered or offered; the number of negotiations completed.
    negotiations: watch::Sender<u32>,
    /// Held from sending our offer until its answer is applied: a server offer arriving
    /// meanwhile (its reply comes first, then the events it caused) waits, as a browser's
    /// signalling queue would.
    signalling: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One of our published tracks: one RTP stream, or one per simulcast layer.
#[derive(Clone)]
struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    source: &'static str,
    kind: RtpCodecKind,
    /// Video in H.264 (else VP8).
    h264: bool,
    streams: Vec<SendStream>,
    /// Held by the real-media sender of this track: a new one waits for the old one to stop,
    /// then carries on its sequence numbers and timestamps.
    sending: Arc<tokio::sync::Mutex<()>>,
}

/// One RTP stream of a track. Its sequence number and timestamp carry on across
/// [`Participant::publish`] calls, as a real sender's do (a restart would look like old
/// packets to the SFU).
#[derive(Clone)]
struct SendStream {
    /// Simulcast RID, `None` without simulcast.
    rid: Option<&'static str>,
    ssrc: u32,
    /// `seq << 32 | timestamp` of the next packet.
    next: Arc<AtomicU64>,
}

impl SendStream {
    fn new(rid: Option<&'static str>) -> Self {
        SendStream { rid, ssrc: rand_u32(), next: Arc::new(AtomicU64::new(u64::from(rand_u32()))) }
    }
}

/// A participant of a load test or an integration test.
pub struct Participant {
    pub user_id: Uuid,
    pub meeting_id: Uuid,
    pub signal: Signal,
    /// When the `join` (or `start`) request was sent.
    pub joined_at: Instant,
    shared: Arc<Shared>,
    connected: watch::Receiver<RTCPeerConnectionState>,
    connected_tx: Arc<watch::Sender<RTCPeerConnectionState>>,
    gathered: watch::Receiver<bool>,
    gathered_tx: Arc<watch::Sender<bool>>,
    tracks: Vec<LocalTrack>,
    screen_sender: Option<Arc<dyn webrtc::rtp_transceiver::RtpSender>>,
    bind_ip: String,
    /// Decodable media to send on the camera and microphone instead of synthetic payloads.
    real: Option<Arc<RealMedia>>,
    /// Real media sending since `connect_media`, by source, until `publish` takes over.
    auto: Mutex<HashMap<&'static str, Publisher>>,
}

impl Participant {
    /// Opens a socket as `user` and starts (`start`, for the host) or joins the meeting.
    pub async fn join(api: &Api, meeting_id: Uuid, user: Uuid, start: bool) -> Result<Participant, LoadError> {
        let (signal, events) = Signal::connect(api, &api.token(&user.to_string(), false)).await?;
        let joined_at = Instant::now();
        let request = if start {
            json!({"type": "start", "meeting_id": meeting_id})
        } else {
            json!({"type": "join", "meeting_id": meeting_id})
        };
        let reply = signal.ok(request).await?;
        if reply["result"] != "joined" {
            return Err(LoadError::Refused { what: "join".to_owned(), reply: reply.to_string() });
        }
        let (negotiations, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            pc: Mutex::new(None),
            remote_set: AtomicBool::new(false),
            pending_candidates: Mutex::new(Vec::new()),
            received: Mutex::new(Received::default()),
            events: Mutex::new(Vec::new()),
            offers_answered: AtomicU32::new(0),
            keyframe_requests: AtomicU64::new(0),
            keyframe_requests_by_ssrc: Mutex::new(HashMap::new()),
            force_keyframe: Arc::default(),
            remote_video: Mutex::new(Vec::new()),
            drop_every: AtomicU32::new(0),
            dropped: Arc::new(AtomicU64::new(0)),
            negotiations,
            signalling: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(handle_events(events, signal.clone(), shared.clone()));
        let (connected_tx, connected) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        let bind_ip = api
            .base()
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .filter(|h| h.parse::<std::net::IpAddr>().is_ok_and(|ip| !ip.is_unspecified()))
            .unwrap_or("0.0.0.0")
            .to_owned();
        Ok(Participant {
            user_id: user,
            meeting_id,
            signal,
            joined_at,
            shared,
            connected,
            connected_tx: Arc::new(connected_tx),
            gathered,
            gathered_tx: Arc::new(gathered_tx),
            tracks: Vec::new(),
            screen_sender: None,
            bind_ip,
            real: None,
            auto: Mutex::new(HashMap::new()),
        })
    }

    /// Sets up media: offers `publish` (or receive-only transceivers), applies the answer and
    /// waits until the connection is up.
    pub async fn connect_media(&mut self, publish: Publish) -> Result<(), LoadError> {
        if publish.real.is_some() && publish.video && (publish.simulcast || publish.h264) {
            return Err(LoadError::Media("real media is one VP8 layer: no simulcast, no H.264".to_owned()));
        }
        self.real = publish.real.clone();
        let first_new_track = self.tracks.len();
        let shared = self.shared.clone();
        let _signalling = shared.signalling.lock().await;
        let pc = self.build_peer(publish.h264).await?;
        let mut sources = serde_json::Map::new();
        if publish.video {
            let streams: Vec<SendStream> = if publish.simulcast {
                SIMULCAST_LAYERS.iter().map(|(rid, ..)| SendStream::new(Some(rid))).collect()
            } else {
                vec![SendStream::new(None)]
            };
            let codec = if publish.h264 { h264() } else { vp8() };
            let t = local_track(self.user_id, "camera", RtpCodecKind::Video, codec, &streams);
            pc.add_track(t.clone() as Arc<dyn TrackLocal>).await.map_err(rtc_err)?;
            sources.insert(format!("{}-camera", self.user_id), json!("camera"));
            let h264 = publish.h264;
            let kind = RtpCodecKind::Video;
            self.tracks.push(LocalTrack { track: t, source: "camera", kind, h264, streams, sending: Arc::default() });
        }
        if publish.audio {
            let streams = vec![SendStream::new(None)];
            let t = local_track(self.user_id, "microphone", RtpCodecKind::Audio, opus(), &streams);
            pc.add_track(t.clone() as Arc<dyn TrackLocal>).await.map_err(rtc_err)?;
            sources.insert(format!("{}-microphone", self.user_id), json!("microphone"));
            let kind = RtpCodecKind::Audio;
            let (source, sending) = ("microphone", Arc::default());
            self.tracks.push(LocalTrack { track: t, source, kind, h264: false, streams, sending });
        }
        for t in &self.tracks {
            // Drain the RTCP the server sends about our tracks (the stack's queue is bounded);
            // count keyframe requests and answer them with a keyframe.
            let (t, shared) = (t.track.clone(), self.shared.clone());
            tokio::spawn(watch_feedback(t, shared));
        }
        if self.tracks.is_empty() {
            // An offer needs a media section; one receive-only video section is enough (what
            // we receive arrives on sections the server adds).
            recv_only(&pc, RtpCodecKind::Video).await?;
        }
        let offer = pc.create_offer(None).await.map_err(rtc_err)?;
        pc.set_local_description(offer).await.map_err(rtc_err)?;
        // Our candidates go in the offer (no client-side trickle: fewer requests).
        let mut gathered = self.gathered.clone();
        tokio::time::timeout(CONNECT_TIMEOUT, gathered.wait_for(|g| *g))
            .await
            .map_err(|_| LoadError::Media("ICE gathering did not complete".to_owned()))?
            .map_err(|_| LoadError::Media("peer closed".to_owned()))?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        let reply = self.signal.ok(json!({"type": "offer", "sdp": sdp, "sources": sources})).await?;
        let answer = reply["sdp"].as_str().unwrap_or_default().to_owned();
        pc.set_remote_description(RTCSessionDescription::answer(answer).map_err(rtc_err)?).await.map_err(rtc_err)?;
        apply_remote_set(&self.shared, &pc).await;
        self.shared.negotiations.send_modify(|n| *n += 1);
        drop(_signalling);
        let mut connected = self.connected.clone();
        tokio::time::timeout(CONNECT_TIMEOUT, connected.wait_for(|s| *s == RTCPeerConnectionState::Connected))
            .await
            .map_err(|_| LoadError::Media(format!("not connected within {CONNECT_TIMEOUT:?}")))?
            .map_err(|_| LoadError::Media("peer closed".to_owned()))?;
        if self.real.is_some() {
            // Real media flows from now on, as a browser's camera does.
            let new: Vec<&'static str> = self.tracks[first_new_track..].iter().map(|t| t.source).collect();
            for source in new {
                let publisher = self.publish_sources(&[source], Rates::default());
                lock(&self.auto).insert(source, publisher);
            }
        }
        Ok(())
    }

    /// `h264_only`: video offers H.264 alone (webrtc-rs's payload type 125), as a browser
    /// without VP8 would.
    async fn build_peer(&self, h264_only: bool) -> Result<Arc<dyn PeerConnection>, LoadError> {
        let mut me = MediaEngine::default();
        if h264_only {
            let with_pt = |rtp_codec: RTCRtpCodec, payload_type: u8| RTCRtpCodecParameters { rtp_codec, payload_type };
            me.register_codec(with_pt(opus(), 111), RtpCodecKind::Audio).map_err(rtc_err)?;
            me.register_codec(with_pt(h264(), H264_PAYLOAD_TYPE), RtpCodecKind::Video).map_err(rtc_err)?;
        } else {
            me.register_default_codecs().map_err(rtc_err)?;
        }
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_owned() },
            RtpCodecKind::Audio,
            None,
        )
        .map_err(rtc_err)?;
        // Simulcast layers are told apart by these (the SSRCs are not signalled).
        for uri in [MID_URI, RID_URI] {
            me.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
                RtpCodecKind::Video,
                None,
            )
            .map_err(rtc_err)?;
        }
        let mut registry = register_default_interceptors(Registry::new(), &mut me)
            .map_err(rtc_err)?
            .with(Slot::from(KEYFRAME_FORWARDER_SLOT), Filtered::new(KeyframeRequestForwarder::default()));
        let every = self.shared.drop_every.load(Ordering::Relaxed);
        if every > 0 {
            registry = registry
                .with(Slot::from(LOSS_SLOT), Filtered::new(LossInjector::new(every, self.shared.dropped.clone())));
        }
        let handler = Handler {
            shared: self.shared.clone(),
            connected: self.connected_tx.clone(),
            gathered: self.gathered_tx.clone(),
        };
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(vec![format!("{}:0", self.bind_ip)])
            .build()
            .await
            .map_err(rtc_err)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        // A new connection (a reconnect): server candidates wait for its first answer again.
        self.shared.remote_set.store(false, Ordering::Release);
        lock(&self.shared.pending_candidates).clear();
        *lock(&self.shared.pc) = Some(pc.clone());
        Ok(pc)
    }

    /// Starts sending media on the published tracks: synthetic, or the real media of
    /// [`Publish::with_real_media`] (taking over from the sending `connect_media` started).
    pub fn publish(&self, rates: Rates) -> Publisher {
        self.publish_sources(&["camera", "microphone"], rates)
    }

    /// Starts sending on the published tracks of these sources only.
    pub fn publish_sources(&self, sources: &[&str], rates: Rates) -> Publisher {
        let control = Arc::new(PublishControl::default());
        // Real media sending since `connect_media` stops; the new senders wait for it.
        lock(&self.auto).retain(|source, _| !sources.contains(source));
        for track in self.tracks.iter().filter(|t| sources.contains(&t.source)) {
            let (track, control, shared) = (track.clone(), control.clone(), self.shared.clone());
            let pc = lock(&self.shared.pc).clone();
            let real = self
                .real
                .clone()
                .filter(|_| matches!(track.source, "camera" | "microphone") && !track.h264 && track.streams.len() == 1);
            tokio::spawn(async move {
                let sdp = match pc {
                    Some(pc) => pc.local_description().await.map(|d| d.sdp).unwrap_or_default(),
                    None => String::new(),
                };
                let track_id = track.track.track().await.track_id().to_owned();
                let extensions = Extensions {
                    audio_level: extmap_id(&sdp, AUDIO_LEVEL_URI),
                    mid: extmap_id(&sdp, MID_URI).zip(mid_of_track(&sdp, &track_id)),
                    rid: extmap_id(&sdp, RID_URI),
                };
                match (real, track.streams.first().cloned()) {
                    (Some(media), Some(stream)) => {
                        let s = RealStream {
                            track: track.track.clone(),
                            ssrc: stream.ssrc,
                            next: stream.next.clone(),
                            audio_level: extensions.audio_level.map(|id| (id, rates.audio_level)),
                        };
                        let _turn = track.sending.lock().await;
                        if track.kind == RtpCodecKind::Video {
                            real::send_video(s, media, control, shared.force_keyframe.clone()).await;
                        } else {
                            real::send_audio(s, media, control).await;
                        }
                    }
                    _ => send_media(track, shared, control, rates, extensions).await,
                }
            });
        }
        Publisher { control }
    }

    /// Starts a screen share: adds a video track and renegotiates from this side (an `offer`
    /// request naming it `screen`), then tells the meeting (`screen_share_start`). Send on it
    /// with `publish_sources(&["screen"], …)`.
    pub async fn share_screen(&mut self) -> Result<(), LoadError> {
        let pc = lock(&self.shared.pc).clone().ok_or_else(|| LoadError::Media("connect media first".to_owned()))?;
        let streams = vec![SendStream::new(None)];
        let t = local_track(self.user_id, "screen", RtpCodecKind::Video, vp8(), &streams);
        let sender = pc.add_track(t.clone() as Arc<dyn TrackLocal>).await.map_err(rtc_err)?;
        tokio::spawn(watch_feedback(t.clone(), self.shared.clone()));
        let (kind, sending) = (RtpCodecKind::Video, Arc::default());
        self.tracks.push(LocalTrack { track: t, source: "screen", kind, h264: false, streams, sending });
        self.screen_sender = Some(sender);
        self.offer_again(&pc).await?;
        self.signal.ok(json!({"type": "screen_share_start"})).await.map(|_| ())
    }

    /// Stops the screen share: removes the track, renegotiates, `screen_share_stop`.
    pub async fn stop_screen(&mut self) -> Result<(), LoadError> {
        let pc = lock(&self.shared.pc).clone().ok_or_else(|| LoadError::Media("connect media first".to_owned()))?;
        if let Some(sender) = self.screen_sender.take() {
            pc.remove_track(&sender).await.map_err(rtc_err)?;
        }
        self.tracks.retain(|t| t.source != "screen");
        self.offer_again(&pc).await?;
        self.signal.ok(json!({"type": "screen_share_stop"})).await.map(|_| ())
    }

    /// A client-side renegotiation: our offer with every published track's source.
    async fn offer_again(&self, pc: &Arc<dyn PeerConnection>) -> Result<(), LoadError> {
        let sources: serde_json::Map<String, Value> =
            self.tracks.iter().map(|t| (format!("{}-{}", self.user_id, t.source), json!(t.source))).collect();
        let _signalling = self.shared.signalling.lock().await;
        let offer = pc.create_offer(None).await.map_err(rtc_err)?;
        pc.set_local_description(offer).await.map_err(rtc_err)?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        let reply = self.signal.ok(json!({"type": "offer", "sdp": sdp, "sources": sources})).await?;
        let answer = reply["sdp"].as_str().unwrap_or_default().to_owned();
        pc.set_remote_description(RTCSessionDescription::answer(answer).map_err(rtc_err)?).await.map_err(rtc_err)
    }

    /// Before [`Participant::connect_media`]: drop the first copy of every `every`th VP8 packet
    /// received, closest to the wire (so the NACK machinery sees the gap and asks again).
    pub fn inject_receive_loss(&self, every: u32) {
        self.shared.drop_every.store(every, Ordering::Relaxed);
    }

    /// Packets the loss injection dropped so far.
    pub fn injected_drops(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Keyframe requests (PLI/FIR) the server sent this publisher so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.shared.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Keyframe requests the server sent for our camera's simulcast layer `rid` so far.
    pub fn keyframe_requests_for(&self, rid: &str) -> u64 {
        let ssrc = self.tracks.iter().flat_map(|t| t.streams.iter()).find(|s| s.rid == Some(rid)).map(|s| s.ssrc);
        ssrc.and_then(|ssrc| lock(&self.shared.keyframe_requests_by_ssrc).get(&ssrc).copied()).unwrap_or(0)
    }

    /// Sends the server a receiver estimate (RTCP REMB) of `bps` for what it sends us, as a
    /// browser's congestion control would. Needs a received video track to name.
    pub async fn send_remb(&self, bps: u64) -> Result<(), LoadError> {
        let first = lock(&self.shared.remote_video).first().cloned();
        let (track, ssrc) = first.ok_or_else(|| LoadError::Media("no video received yet".to_owned()))?;
        let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: 0, bitrate: bps as f32, ssrcs: vec![ssrc] };
        track.write_rtcp(vec![Box::new(remb)]).await.map_err(rtc_err)
    }

    /// Tells the server that the packets numbered `lost` of the first video track we receive
    /// never arrived (RTCP NACK), whether or not they did.
    pub async fn send_nack(&self, lost: &[u16]) -> Result<(), LoadError> {
        let first = lock(&self.shared.remote_video).first().cloned();
        let (track, ssrc) = first.ok_or_else(|| LoadError::Media("no video received yet".to_owned()))?;
        let nack =
            TransportLayerNack { sender_ssrc: 0, media_ssrc: ssrc, nacks: nack_pairs_from_sequence_numbers(lost) };
        track.write_rtcp(vec![Box::new(nack)]).await.map_err(rtc_err)
    }

    /// Asks for a view (`subscribe`).
    pub async fn subscribe(&self, view: &str, audio: Option<u32>) -> Result<(), LoadError> {
        let mut req = json!({"type": "subscribe", "view": view});
        if let Some(n) = audio {
            req["audio"] = json!(n);
        }
        self.signal.ok(req).await.map(|_| ())
    }

    /// A snapshot of what arrived so far.
    pub fn received(&self) -> Received {
        let r = lock(&self.shared.received);
        Received { streams: r.streams.clone(), latencies_us: r.latencies_us.clone(), first_packet: r.first_packet }
    }

    /// Takes the measured latencies collected so far (for long runs: keeps memory flat).
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut lock(&self.shared.received).latencies_us)
    }

    /// Every event received so far (`offer`/`ice_candidate` included).
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.events).clone()
    }

    /// Server offers answered so far.
    pub fn offers_answered(&self) -> u32 {
        self.shared.offers_answered.load(Ordering::Relaxed)
    }

    /// Waits until `f` holds of what was received, or `timeout` passes; returns whether it held.
    pub async fn wait_received(&self, timeout: Duration, f: impl Fn(&Received) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if f(&lock(&self.shared.received)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the media connection (as a browser tab closing would).
    pub async fn close_media(&self) {
        let pc = lock(&self.shared.pc).take();
        if let Some(pc) = pc {
            let _ = pc.close().await;
        }
    }

    /// Sets media up again from scratch, as a browser does when its connection failed (its
    /// meeting moved to another node, whose media router has never heard of it): stops what
    /// was sending, closes the old connection, and offers `publish` on a new one.
    pub async fn reconnect_media(&mut self, publish: Publish) -> Result<(), LoadError> {
        lock(&self.auto).clear();
        self.close_media().await;
        self.tracks.clear();
        self.screen_sender = None;
        let _ = self.connected_tx.send(RTCPeerConnectionState::New);
        let _ = self.gathered_tx.send(false);
        self.connect_media(publish).await
    }

    /// Leaves: closes media and the socket.
    pub async fn leave(self) {
        self.close_media().await;
        self.signal.close();
    }
}

/// Sending rates of synthetic media.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub video_fps: u32,
    pub packets_per_frame: u32,
    pub video_packet_bytes: usize,
    /// A keyframe every this many frames.
    pub keyframe_every: u32,
    /// RFC 6464 level sent with audio (0 loudest … 127 silence); `None`: no extension.
    pub audio_level: Option<u8>,
    /// Spread a video frame's packets evenly over the frame interval, as a browser's pacer
    /// does (a track without simulcast only); `false`: send them back to back (a burst per
    /// frame, the harder case for an SFU).
    pub paced: bool,
}

impl Default for Rates {
    fn default() -> Self {
        // ≈ a 720p camera: 30 fps × 4 packets of 1,100 B ≈ 1 Mbit/s, a keyframe every 2 s.
        Rates {
            video_fps: 30,
            packets_per_frame: 4,
            video_packet_bytes: 1100,
            keyframe_every: 60,
            audio_level: None,
            paced: false,
        }
    }
}

/// Controls a publisher's sending.
#[derive(Default)]
pub struct PublishControl {
    pub(crate) phase: AtomicU8,
    pub(crate) stop: AtomicBool,
    /// Measured packets sent, video and audio.
    pub(crate) sent_video: AtomicU64,
    pub(crate) sent_audio: AtomicU64,
    /// Current audio level + 1 (1..=128); 0 = as in `Rates`.
    pub(crate) level: AtomicU8,
    /// Simulcast layers not being sent: bit `i` for `SIMULCAST_LAYERS[i]`.
    paused_layers: AtomicU8,
}

/// A running publisher.
pub struct Publisher {
    pub(crate) control: Arc<PublishControl>,
}

impl Publisher {
    /// From now on packets count (their index restarts at 0).
    pub fn measure(&self) {
        self.control.phase.store(Phase::Measure as u8, Ordering::Release);
    }

    /// Stops counting (and stamping) packets as measured; sending goes on.
    pub(crate) fn end_measure(&self) {
        self.control.phase.store(Phase::WarmUp as u8, Ordering::Release);
    }

    /// Stops (or resumes) sending simulcast layer `rid`, as a browser does when its uplink is
    /// short.
    pub fn pause_layer(&self, rid: &str, paused: bool) {
        if let Some(i) = SIMULCAST_LAYERS.iter().position(|(r, ..)| *r == rid) {
            if paused {
                self.control.paused_layers.fetch_or(1 << i, Ordering::AcqRel);
            } else {
                self.control.paused_layers.fetch_and(!(1 << i), Ordering::AcqRel);
            }
        }
    }

    /// Changes the audio level sent from now on.
    pub fn set_audio_level(&self, level: u8) {
        self.control.level.store(level.min(127) + 1, Ordering::Release);
    }

    /// Measured packets sent so far: (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        (self.control.sent_video.load(Ordering::Acquire), self.control.sent_audio.load(Ordering::Acquire))
    }

    pub fn stop(&self) {
        self.control.stop.store(true, Ordering::Release);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Header extension ids (and our mid) negotiated for a track's packets.
#[derive(Debug, Clone, Copy, Default)]
struct Extensions {
    audio_level: Option<u8>,
    /// Id of the mid extension and the track's mid: with `rid`, what tells simulcast layers apart.
    mid: Option<(u8, u32)>,
    rid: Option<u8>,
}

/// Where one stream of a track stands.
struct StreamState {
    stream: SendStream,
    seq: u16,
    ts: u32,
    index: u32,
    /// Packets per frame and their size.
    packets: u32,
    bytes: usize,
    /// Stamped layer: 0 without simulcast, 1.. from the lowest.
    layer: u8,
}

async fn send_media(
    local: LocalTrack,
    shared: Arc<Shared>,
    control: Arc<PublishControl>,
    rates: Rates,
    ext: Extensions,
) {
    let LocalTrack { track, kind, h264, streams, .. } = local;
    let video = kind == RtpCodecKind::Video;
    let (period, clock_step) = if video {
        (Duration::from_secs(1) / rates.video_fps.max(1), 90_000 / rates.video_fps.max(1))
    } else {
        (Duration::from_millis(20), 960)
    };
    let mut states: Vec<StreamState> = streams
        .into_iter()
        .map(|stream| {
            let resume = stream.next.load(Ordering::Acquire);
            let layer = SIMULCAST_LAYERS.iter().position(|(rid, ..)| Some(*rid) == stream.rid);
            let (packets, bytes) = match layer {
                Some(i) if i + 1 < SIMULCAST_LAYERS.len() => (SIMULCAST_LAYERS[i].1, SIMULCAST_LAYERS[i].2),
                _ if video => (rates.packets_per_frame.max(1), rates.video_packet_bytes),
                _ => (1, 80),
            };
            StreamState {
                stream,
                seq: (resume >> 32) as u16,
                ts: resume as u32,
                index: 0,
                packets,
                bytes,
                layer: layer.map_or(0, |i| i as u8 + 1),
            }
        })
        .collect();
    let pace = video && rates.paced && states.len() == 1;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut frame = 0u32;
    let mut measuring = false;
    while !control.stop.load(Ordering::Acquire) {
        tick.tick().await;
        let phase =
            if control.phase.load(Ordering::Acquire) == Phase::Measure as u8 { Phase::Measure } else { Phase::WarmUp };
        if phase == Phase::Measure && !measuring {
            measuring = true;
            states.iter_mut().for_each(|s| s.index = 0);
        }
        let paused = control.paused_layers.load(Ordering::Acquire);
        for st in &mut states {
            let sending = st.layer == 0 || paused & (1 << (st.layer - 1)) == 0;
            for i in (0..st.packets).filter(|_| sending) {
                let stamp = Stamp { phase, index: st.index, sent_ns: synth::now_ns(), layer: st.layer };
                let payload = if !video {
                    synth::opus_payload(stamp, st.bytes)
                } else if i == 0 {
                    let asked = lock(&shared.force_keyframe).remove(&st.stream.ssrc);
                    let keyframe = asked || frame.is_multiple_of(rates.keyframe_every.max(1));
                    if h264 {
                        synth::h264_payload(keyframe, stamp, st.bytes)
                    } else {
                        synth::vp8_payload(keyframe, stamp, st.bytes)
                    }
                } else if h264 {
                    synth::h264_continuation(stamp, st.bytes)
                } else {
                    synth::vp8_continuation(stamp, st.bytes)
                };
                let mut packet = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: i + 1 == st.packets,
                        // webrtc-rs's default registry: VP8 96, H.264 125, Opus 111 (what our
                        // offer carries).
                        payload_type: match (video, h264) {
                            (true, false) => 96,
                            (true, true) => H264_PAYLOAD_TYPE,
                            (false, _) => 111,
                        },
                        sequence_number: st.seq,
                        timestamp: st.ts,
                        ssrc: st.stream.ssrc,
                        ..Default::default()
                    },
                    payload,
                };
                if let (Some(rid), Some((mid_id, mid)), Some(rid_id)) = (st.stream.rid, ext.mid, ext.rid) {
                    let _ = packet.header.set_extension(mid_id, bytes::Bytes::from(mid.to_string()));
                    let _ = packet.header.set_extension(rid_id, bytes::Bytes::from_static(rid.as_bytes()));
                }
                if !video && let Some(id) = ext.audio_level {
                    let level = match control.level.load(Ordering::Acquire) {
                        0 => rates.audio_level,
                        l => Some(l - 1),
                    };
                    if let Some(level) = level {
                        let _ = packet.header.set_extension(id, bytes::Bytes::copy_from_slice(&[level & 0x7f]));
                    }
                }
                if track.write_rtp(packet).await.is_err() {
                    return;
                }
                if pace && i + 1 < st.packets {
                    tokio::time::sleep(period / st.packets).await;
                }
                st.seq = st.seq.wrapping_add(1);
                st.index += 1;
                if phase == Phase::Measure {
                    let counter = if video { &control.sent_video } else { &control.sent_audio };
                    counter.fetch_add(1, Ordering::AcqRel);
                }
            }
            st.ts = st.ts.wrapping_add(clock_step);
            st.stream.next.store(u64::from(st.seq) << 32 | u64::from(st.ts), Ordering::Release);
        }
        frame += 1;
    }
}

/// The mid of the m-section that sends `track_id` (`a=msid:<stream> <track_id>`) in an SDP.
fn mid_of_track(sdp: &str, track_id: &str) -> Option<u32> {
    sdp.split("\nm=")
        .find(|section| {
            section.lines().any(|l| l.trim_end().ends_with(&format!(" {track_id}")) && l.starts_with("a=msid:"))
        })
        .and_then(|section| {
            section.lines().find_map(|l| l.trim_end().strip_prefix("a=mid:")).and_then(|m| m.parse().ok())
        })
}

pub(crate) fn rand_u32() -> u32 {
    Uuid::new_v4().as_u128() as u32
}

/// H.264's payload type in webrtc-rs's default registry (constrained baseline, mode 1).
const H264_PAYLOAD_TYPE: u8 = 125;

fn h264() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90_000,
        sdp_fmtp_line: parley_media::peer::H264_FMTP.into(),
        rtcp_feedback: vec![
            RTCPFeedback { typ: "nack".into(), parameter: String::new() },
            RTCPFeedback { typ: "nack".into(), parameter: "pli".into() },
            RTCPFeedback { typ: "goog-remb".into(), parameter: String::new() },
        ],
        ..Default::default()
    }
}

pub(crate) fn vp8() -> RTCRtpCodec {
    RTCRtpCodec { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() }
}

pub(crate) fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        ..Default::default()
    }
}

/// A local track with one encoding per stream (simulcast: one per RID).
fn local_track(
    user: Uuid,
    source: &str,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    streams: &[SendStream],
) -> Arc<TrackLocalStaticRTP> {
    let id = format!("{user}-{source}");
    let encodings = streams
        .iter()
        .map(|s| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: s.rid.unwrap_or_default().to_owned(),
                ssrc: Some(s.ssrc),
                ..Default::default()
            },
            codec: codec.clone(),
            ..Default::default()
        })
        .collect();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(user.to_string(), id.clone(), id, kind, encodings)))
}

async fn recv_only(pc: &Arc<dyn PeerConnection>, kind: RtpCodecKind) -> Result<(), LoadError> {
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
    pc.add_transceiver_from_kind(kind, Some(init)).await.map_err(rtc_err)?;
    Ok(())
}

fn rtc_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Media(e.to_string())
}

async fn apply_remote_set(shared: &Shared, pc: &Arc<dyn PeerConnection>) {
    shared.remote_set.store(true, Ordering::Release);
    let pending = std::mem::take(&mut *lock(&shared.pending_candidates));
    for c in pending {
        if let Err(e) = pc.add_ice_candidate(c).await {
            tracing::debug!(error = %e, "server candidate refused");
        }
    }
}

/// Reads the RTCP the server sends about one of our tracks: keyframe requests are counted and
/// make the next video frame a keyframe.
async fn watch_feedback(track: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>) {
    while let Some(event) = track.poll().await {
        for ssrc in keyframe_requests_in(&event) {
            shared.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            *lock(&shared.keyframe_requests_by_ssrc).entry(ssrc).or_default() += 1;
            lock(&shared.force_keyframe).insert(ssrc);
        }
    }
}

/// The SSRCs the keyframe requests (PLI, FIR) in a track's RTCP event name.
pub(crate) fn keyframe_requests_in(event: &TrackLocalEvent) -> Vec<u32> {
    let TrackLocalEvent::OnRtcpPacket(packets) = event else { return Vec::new() };
    packets
        .iter()
        .filter_map(|p| {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                Some(pli.media_ssrc)
            } else {
                any.downcast_ref::<FullIntraRequest>().map(|fir| fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc))
            }
        })
        .collect()
}

/// Where the loss injector sits: closest to the wire, before every built-in interceptor reads.
const LOSS_SLOT: usize = 500;

/// Drops the first copy of every Nth inbound VP8 packet (payload type 96); a retransmission of
/// it passes.
struct LossInjector {
    every: u32,
    seen: u32,
    dropped_seqs: std::collections::HashSet<(u32, u16)>,
    dropped: Arc<AtomicU64>,
}

impl LossInjector {
    fn new(every: u32, dropped: Arc<AtomicU64>) -> Self {
        LossInjector { every, seen: 0, dropped_seqs: Default::default(), dropped }
    }
}

impl PacketFilter for LossInjector {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let ChainPacket::Rtp(p) = &msg.message.packet
            && p.header.payload_type == 96
        {
            let key = (p.header.ssrc, p.header.sequence_number);
            if !self.dropped_seqs.contains(&key) {
                self.seen += 1;
                if self.seen.is_multiple_of(self.every) {
                    self.dropped_seqs.insert(key);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        Some(msg)
    }
}

/// Answers server offers, applies server candidates, records the rest.
async fn handle_events(mut events: mpsc::UnboundedReceiver<Value>, signal: Signal, shared: Arc<Shared>) {
    while let Some(e) = events.recv().await {
        // An offer waits for our own pending negotiation, then goes to the connection current
        // by then.
        let _signalling = if e["event"] == "offer" { Some(shared.signalling.lock().await) } else { None };
        let pc = lock(&shared.pc).clone();
        match (e["event"].as_str(), pc) {
            (Some("offer"), Some(pc)) => {
                let sdp = e["sdp"].as_str().unwrap_or_default().to_owned();
                let answered = async {
                    pc.set_remote_description(RTCSessionDescription::offer(sdp).map_err(rtc_err)?)
                        .await
                        .map_err(rtc_err)?;
                    let answer = pc.create_answer(None).await.map_err(rtc_err)?;
                    pc.set_local_description(answer).await.map_err(rtc_err)?;
                    let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
                    signal.ok(json!({"type": "answer", "sdp": sdp})).await
                }
                .await;
                match answered {
                    Ok(_) => {
                        shared.offers_answered.fetch_add(1, Ordering::Relaxed);
                        shared.negotiations.send_modify(|n| *n += 1);
                    }
                    Err(err) => tracing::warn!(error = %err, "server offer not answered"),
                }
            }
            (Some("ice_candidate"), pc) => {
                let c = &e["candidate"];
                let init = RTCIceCandidateInit {
                    candidate: c["candidate"].as_str().unwrap_or_default().to_owned(),
                    sdp_mid: c["sdpMid"].as_str().map(str::to_owned),
                    sdp_mline_index: c["sdpMLineIndex"].as_u64().and_then(|i| u16::try_from(i).ok()),
                    ..Default::default()
                };
                match pc {
                    Some(pc) if shared.remote_set.load(Ordering::Acquire) => {
                        if let Err(err) = pc.add_ice_candidate(init).await {
                            tracing::debug!(error = %err, "server candidate refused");
                        }
                    }
                    _ => lock(&shared.pending_candidates).push(init),
                }
            }
            _ => {}
        }
        lock(&shared.events).push(e);
    }
}

struct Handler {
    shared: Arc<Shared>,
    connected: Arc<watch::Sender<RTCPeerConnectionState>>,
    gathered: Arc<watch::Sender<bool>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, _event: RTCPeerConnectionIceEvent) {}

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.connected.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(count_track(track, self.shared.clone()));
    }
}

/// Counts one received track's packets into [`Received`].
async fn count_track(track: Arc<dyn TrackRemote>, shared: Arc<Shared>) {
    let stream = track.stream_id().await.to_string();
    let video = track.kind().await == RtpCodecKind::Video;
    let mut ssrcs: HashMap<u32, ()> = HashMap::new();
    let mut h264 = false;
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(p) = event else { continue };
        // A new stream's codec is known once its first packet arrived (this one).
        let new_stream = !ssrcs.contains_key(&p.header.ssrc);
        let codec = if new_stream {
            ssrcs.insert(p.header.ssrc, ());
            let codec = track.codec(p.header.ssrc).await.map(|c| c.mime_type).unwrap_or_default();
            h264 = codec.eq_ignore_ascii_case("video/H264");
            Some(codec)
        } else {
            None
        };
        let stamp = synth::read_stamp(&p.payload);
        let now = Instant::now();
        let mut r = lock(&shared.received);
        r.first_packet.get_or_insert(now);
        let latency = stamp.filter(|s| s.phase == Phase::Measure).map(|s| synth::latency(&s));
        let s = r.streams.entry(stream.clone()).or_default();
        s.packets += 1;
        s.last_sequence_number = p.header.sequence_number;
        if let Some(st) = stamp {
            s.by_layer[usize::from(st.layer.min(3))] += 1;
            s.last_layer = st.layer;
        }
        if let Some(codec) = codec {
            s.codec = codec;
            s.ssrcs.push(p.header.ssrc);
            if video {
                lock(&shared.remote_video).push((track.clone(), p.header.ssrc));
            }
        }
        let keyframe =
            if h264 { parley_media::h264::is_keyframe(&p.payload) } else { parley_media::vp8::is_keyframe(&p.payload) };
        if video && keyframe {
            s.keyframes += 1;
        }
        match stamp {
            Some(Stamp { phase: Phase::Measure, index, .. }) => {
                // A NACK resend arrives as a duplicate: counted once, its latency not at all.
                if s.measured.insert(index)
                    && let Some(l) = latency
                {
                    r.latencies_us.push(l.as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            Some(_) => s.warm_up += 1,
            None => s.unstamped += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mid_of_a_track_is_read_from_its_section() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:u u-microphone\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:u u-camera\r\na=rid:q send\r\n";
        assert_eq!(mid_of_track(sdp, "u-camera"), Some(1));
        assert_eq!(mid_of_track(sdp, "u-microphone"), Some(0));
        assert_eq!(mid_of_track(sdp, "u-screen"), None);
        assert_eq!(mid_of_track("", "u-camera"), None);
    }
}
