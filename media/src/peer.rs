//! The WebRTC adapter: one server-side peer connection per participant, behind a small API the
//! media-router actor drives. Everything webrtc-rs specific lives here; the forwarding decisions
//! (which packets, which layer, which sequence numbers) are the forwarder's ([`crate::forward`])
//! and the pure modules'. The types a peer shares with its owner and with the shared socket's
//! driver ([`PeerEvent`], [`IncomingRtp`], [`OutTrack`], [`Outbox`], [`RtpSink`], …) live in
//! [`crate::track`] and [`crate::codec`], the SDP names and parsing in [`crate::sdp`]; they are
//! re-exported here, where the peer's users find them.
//!
//! Shape:
//! - [`Peer::new`] creates the connection — on the node's shared [`MediaSocket`] when the
//!   config carries one (one UDP port for every peer, see [`crate::socket`]), else with a UDP
//!   socket of its own (a port from the configured range) and webrtc-rs's own driver — and
//!   returns the peer plus its two receivers: [`PeerEvent`]s (local ICE candidates,
//!   state, tracks opening/ending, keyframe requests from this participant) and [`IncomingRtp`]
//!   (every RTP packet this participant publishes, tagged with kind, SSRC and simulcast RID).
//! - Negotiation in both directions: [`Peer::accept_offer`] (client offers, we answer: the join
//!   and client-side renegotiation such as starting a screen share) and [`Peer::create_offer`] +
//!   [`Peer::accept_answer`] (server-initiated renegotiation after [`Peer::add_track`] /
//!   [`Peer::remove_track`]). Glare is the caller's to avoid: one negotiation at a time.
//! - Outgoing tracks are [`OutTrack`]s with a fixed SSRC chosen by the caller; [`OutTrack::write_rtp`]
//!   stamps that SSRC and the payload type negotiated on this leg and strips header extensions,
//!   because the webrtc-rs sender silently drops any packet whose SSRC, payload type or extension
//!   ids were not negotiated on its leg (it logs, and `write_rtp` still returns `Ok`).
//!
//! Forwarding without a hop: [`Peer::route_rtp_to`] hands every published packet to an
//! [`RtpSink`] on the receive path itself (the shared socket's driver, or the track's reader
//! task), and what the sink writes ([`Outbox`]) goes out from there: on the shared socket,
//! straight into the subscribers' connections in the same driver turn (those another driver
//! thread owns get one batch per packet). Without a sink, packets go to the
//! [`PeerChannels::rtp`] queue.
//!
//! Back-pressure: inbound RTP goes into a bounded queue with `try_send`; when the router falls
//! behind, packets are dropped and counted ([`Peer::dropped_rtp`]) rather than stalling the
//! connection's driver (whose own per-track queue holds 256 events and drops beyond that). An
//! [`Outbox`] write to a connection of its own never waits either: a full queue drops the packet
//! and counts it on the track ([`OutTrack::dropped`]).
//!
//! Teardown: [`Peer::close`] closes the connection, which ends every event stream; the tasks this
//! module spawned end with them and are aborted as well (also on drop), so nothing outlives the
//! peer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{NackGeneratorBuilder, Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde::{Deserialize, Serialize};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceCandidateType, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, SettingEngineBuilder, configure_rtcp_reports,
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};

use crate::codec::NO_PAYLOAD_TYPE;
use crate::error::{MediaError, Result};
use crate::interceptors::{
    Filtered, KEYFRAME_FORWARDER_SLOT, KeyframeRequestForwarder, RID_REPORT_FILTER_SLOT, node_send_filters,
};
use crate::placement::PeerId;
use crate::pli::PliThrottle;
use crate::sdp::REPAIRED_RID_URI;
use crate::socket::{Command, MediaSocket, PeerSlot};
use crate::track::{OutSink, PeerShared, SocketLink, feedback_events, lock};

// What a peer's owner handles, kept reachable where it always was (`parley_media::peer::…`):
// the connection types live in `track` and `codec`, the SDP names in `sdp`.
pub use crate::codec::{Codec, MediaKind};
pub use crate::sdp::{AUDIO_LEVEL_URI, H264_FMTP, MID_URI, RID_URI, extmap_id};
pub use crate::track::{
    IncomingRtp, OutTrack, OutTrackSpec, Outbox, PeerChannels, PeerEvent, PeerState, RtpPacket, RtpSink,
};

/// Inbound RTP packets queued between the connection and the router before drops begin
/// (~1 s of a 720p publisher plus its audio).
pub const DEFAULT_RTP_QUEUE_PACKETS: usize = 2048;
/// Ports tried from the range before giving up on binding.
const MAX_BIND_ATTEMPTS: usize = 16;

/// Network settings of the media node, shared by all its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Address the UDP sockets bind to. Must be a concrete address: a wildcard (`0.0.0.0`)
    /// expands to every interface except loopback.
    pub bind_ip: IpAddr,
    /// Inclusive UDP port range, one port per peer, when peers do not share a socket
    /// (`shared_socket` is `None`). `None`: an ephemeral port each.
    pub port_range: Option<(u16, u16)>,
    /// Every peer on one UDP port: the node binds a [`MediaSocket`] on this port (0: the
    /// system picks) at start and sets `shared_socket`. `None`: a socket per peer.
    pub shared_port: Option<u16>,
    /// Driver threads of the shared socket, each with a core's worth of SRTP and interceptor
    /// work (`None`: one per core, [`crate::socket::default_threads`]).
    pub socket_threads: Option<usize>,
    /// Meeting size from which its connections are spread over the shared socket's threads
    /// (`None`: [`crate::placement::DEFAULT_SPREAD_AT`]).
    pub spread_at: Option<usize>,
    /// The node's media socket, bound from `shared_port`; [`Peer::new`] puts peers on it.
    #[serde(skip)]
    pub shared_socket: Option<Arc<MediaSocket>>,
    /// Public address behind a 1:1 NAT (cloud VM): advertised instead of `bind_ip` in host
    /// candidates.
    pub public_ip: Option<IpAddr>,
    /// STUN/TURN servers handed to clients in `joined` (the server itself needs none).
    pub ice_servers: Vec<IceServer>,
    /// ICE-lite (RFC 8445 §2.7): fewer checks, fit for a server with a public address.
    pub ice_lite: bool,
    /// Capacity of the inbound RTP queue ([`DEFAULT_RTP_QUEUE_PACKETS`]).
    pub rtp_queue_packets: usize,
    /// How long a peer may go without ICE traffic (consent checks, media) before it is failed:
    /// the client vanished without closing ([`DEFAULT_DEAD_PEER_TIMEOUT`]).
    pub dead_peer_timeout: Duration,
    /// Fault injection (tests, drills): the router withholds the first transmission of every
    /// Nth video packet it forwards to each subscriber, who loses it, NACKs it and gets it again
    /// from the publisher's cache. 0: off.
    #[serde(default)]
    pub drop_forwarded_every: u32,
}

impl PeerConfig {
    /// Where clients' media goes, as `joined.media.media_addr` tells them: the shared port's
    /// advertised address (`public_ip` or `bind_ip`, and the port actually bound), else the
    /// advertised IP with the per-peer port range (`ip:from-to`) or the IP alone (ephemeral
    /// ports).
    pub fn media_addr(&self) -> String {
        if let Some(socket) = &self.shared_socket {
            return socket.advertised_addr().to_string();
        }
        let ip = self.public_ip.unwrap_or(self.bind_ip);
        match self.port_range {
            Some((from, to)) if ip.is_ipv6() => format!("[{ip}]:{from}-{to}"),
            Some((from, to)) => format!("{ip}:{from}-{to}"),
            None => ip.to_string(),
        }
    }
}

/// webrtc-rs's own default: 5 s to `disconnected`, 25 s more to `failed`.
pub const DEFAULT_DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(30);

impl PeerConfig {
    /// Ephemeral ports on `bind_ip`, no NAT mapping, full ICE: what tests use.
    pub fn local(bind_ip: IpAddr) -> Self {
        Self {
            bind_ip,
            port_range: None,
            shared_port: None,
            socket_threads: None,
            spread_at: None,
            shared_socket: None,
            public_ip: None,
            ice_servers: Vec::new(),
            ice_lite: false,
            rtp_queue_packets: DEFAULT_RTP_QUEUE_PACKETS,
            dead_peer_timeout: DEFAULT_DEAD_PEER_TIMEOUT,
            drop_forwarded_every: 0,
        }
    }
}

/// STUN/TURN servers and ICE candidates are the protocol's own types (browser shapes), so
/// they cross the WebSocket and the cluster unchanged.
pub use parley_core::protocol::{IceCandidate, IceServer};

/// One participant's server-side peer connection.
pub struct Peer {
    backend: Backend,
    shared: Arc<PeerShared>,
    out_tracks: Mutex<HashMap<String, OutTrack>>,
    pli: Mutex<PliThrottle>,
    local_port: u16,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("local_port", &self.local_port).finish_non_exhaustive()
    }
}

/// The connection behind a [`Peer`].
enum Backend {
    /// Its own webrtc-rs connection with its own socket and driver task.
    Own(Arc<dyn PeerConnection>),
    /// A sans-IO connection on the node's shared [`MediaSocket`].
    Socket { socket: Arc<MediaSocket>, id: PeerId },
}

impl Peer {
    /// Creates the peer connection: on the node's shared socket when `config` has one, else
    /// with its own UDP socket (a port from the configured range). Nothing is negotiated yet.
    pub async fn new(config: &PeerConfig) -> Result<(Peer, PeerChannels)> {
        Peer::in_meeting(config, None).await
    }

    /// As [`Peer::new`], for a participant of meeting `group`: on the shared socket, a
    /// meeting's connections are kept on one driver thread while it is small
    /// ([`crate::placement`]).
    pub async fn in_meeting(config: &PeerConfig, group: Option<&str>) -> Result<(Peer, PeerChannels)> {
        if let Some(socket) = &config.shared_socket {
            return Peer::on_socket(config, socket, group).await;
        }
        let (shared, channels) = PeerShared::new(config.rtp_queue_packets);
        let (pc, local_port) = build_connection(config, &shared).await?;
        Ok((Peer::with_backend(Backend::Own(pc), shared, local_port), channels))
    }

    /// Creates the peer connection on the node's one media port: `socket` carries its
    /// datagrams along with every other peer's; `group` (a meeting) places it among the
    /// socket's driver threads. Nothing is negotiated yet.
    pub async fn on_socket(
        config: &PeerConfig,
        socket: &Arc<MediaSocket>,
        group: Option<&str>,
    ) -> Result<(Peer, PeerChannels)> {
        let (shared, channels) = PeerShared::new(config.rtp_queue_packets);
        let (media_engine, registry, settings) = stack_parts(config, &shared)?;
        // Our own ICE credentials: the ufrag is how the socket's driver knows this peer's
        // datagrams (a client's first packet is a STUN check naming it).
        let ufrag = uuid::Uuid::new_v4().simple().to_string();
        let pwd = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings.with_ice_credentials(ufrag.clone(), pwd).build())
            .build(Instant::now())?;
        let id = socket.admit(group);
        socket.send(Command::Open { id, pc: Box::new(pc), ufrag, shared: Arc::clone(&shared) }).await?;
        let port = socket.local_addr().port();
        let peer = Peer::with_backend(Backend::Socket { socket: Arc::clone(socket), id }, shared, port);
        Ok((peer, channels))
    }

    /// Its id on the shared socket, if it is on one.
    #[cfg(test)]
    pub(crate) fn socket_id(&self) -> Option<PeerId> {
        match &self.backend {
            Backend::Socket { id, .. } => Some(*id),
            Backend::Own(_) => None,
        }
    }

    fn with_backend(backend: Backend, shared: Arc<PeerShared>, local_port: u16) -> Peer {
        Peer {
            backend,
            shared,
            out_tracks: Mutex::new(HashMap::new()),
            pli: Mutex::new(PliThrottle::default()),
            local_port,
        }
    }

    /// The UDP port this peer's socket is bound to (0 if the stack chose and did not say).
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Applies the client's offer and returns our answer (candidates follow as
    /// [`PeerEvent::LocalCandidate`]). A malformed or unacceptable offer is [`MediaError::Sdp`]
    /// and is rolled back. One that does not parse leaves the peer as it was; one that parses
    /// but cannot be answered may already have started ICE (webrtc-rs does not undo that on
    /// rollback), so if it was the first offer, replace the peer.
    pub async fn accept_offer(&self, sdp: String) -> Result<String> {
        self.ensure_open()?;
        let offer = RTCSessionDescription::offer(sdp).map_err(sdp_error)?;
        // webrtc-rs answers an offer whose media sections it cannot use (no media at all, or a
        // section cut short) with an answer that silently lacks them: refuse those instead.
        let offered = offer.unmarshal().map_err(sdp_error)?;
        if offered.media_descriptions.is_empty() {
            return Err(MediaError::Sdp("offer has no media section".to_owned()));
        }
        if let Some(mid) = crate::sdp::repeated_mid(&offered) {
            return Err(MediaError::Sdp(format!("mid {mid} names two media sections")));
        }
        // An offer that parses can still be unapplicable or unanswerable, and webrtc-rs may have
        // moved to `have-remote-offer` before failing; roll back so the connection is `stable`
        // again and the next offer is not refused for the signalling state.
        let answer = match &self.backend {
            Backend::Own(pc) => {
                let answered = async {
                    pc.set_remote_description(offer).await.map_err(sdp_error)?;
                    let answer = pc.create_answer(None).await?;
                    check_answer(&offered, &answer)?;
                    pc.set_local_description(answer.clone()).await?;
                    Ok(answer)
                }
                .await;
                match answered {
                    Ok(answer) => answer,
                    Err(e) => {
                        if pc.pending_remote_description().await.is_some()
                            && let Err(e) = pc.set_remote_description(rollback()).await
                        {
                            tracing::warn!(error = %e, "cannot roll back a refused offer");
                        }
                        return Err(remote_fault(e));
                    }
                }
            }
            Backend::Socket { socket, id } => {
                let host = socket.advertised_addr();
                socket.call(*id, move |slot, now| answer_on_socket(slot, now, offer, offered, host)).await?
            }
        };
        self.after_negotiation().await;
        Ok(answer.sdp)
    }

    /// Starts a server-initiated renegotiation (after adding or removing tracks): returns our
    /// offer for the client; its answer goes to [`Peer::accept_answer`].
    pub async fn create_offer(&self) -> Result<String> {
        self.ensure_open()?;
        let offer = match &self.backend {
            Backend::Own(pc) => {
                let offer = pc.create_offer(None).await?;
                pc.set_local_description(offer.clone()).await?;
                offer
            }
            Backend::Socket { socket, id } => {
                let host = socket.advertised_addr();
                socket
                    .call(*id, move |slot, now| {
                        let offer = slot.pc.create_offer(None)?;
                        slot.pc.set_local_description(now, offer.clone())?;
                        add_host_candidate(slot, host)?;
                        Ok(offer)
                    })
                    .await?
            }
        };
        Ok(offer.sdp)
    }

    /// Applies the client's answer to our offer.
    pub async fn accept_answer(&self, sdp: String) -> Result<()> {
        self.ensure_open()?;
        // On a refused answer, back to `stable` (our offer withdrawn): the caller re-offers when
        // it wants to.
        match &self.backend {
            Backend::Own(pc) => {
                let applied = match RTCSessionDescription::answer(sdp) {
                    Ok(answer) => pc.set_remote_description(answer).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = applied {
                    if let Err(r) = pc.set_local_description(rollback()).await {
                        tracing::debug!(error = %r, "nothing to roll back after a refused answer");
                    }
                    return Err(sdp_error(e));
                }
            }
            Backend::Socket { socket, id } => {
                socket
                    .call(*id, move |slot, now| {
                        let applied = RTCSessionDescription::answer(sdp)
                            .and_then(|answer| slot.pc.set_remote_description(now, answer));
                        if let Err(e) = applied {
                            if let Err(r) = slot.pc.set_local_description(now, rollback()) {
                                tracing::debug!(error = %r, "nothing to roll back after a refused answer");
                            }
                            return Err(sdp_error(e));
                        }
                        Ok(())
                    })
                    .await?;
            }
        }
        self.after_negotiation().await;
        Ok(())
    }

    /// Our current local description including gathered candidates, for clients that do not
    /// trickle.
    pub async fn local_description(&self) -> Option<String> {
        match &self.backend {
            Backend::Own(pc) => pc.local_description().await.map(|d| d.sdp),
            Backend::Socket { socket, id } => {
                socket.call(*id, |slot, _| Ok(slot.pc.local_description().map(|d| d.sdp.clone()))).await.ok().flatten()
            }
        }
    }

    /// Adds a candidate trickled by the client. Needs a remote description first.
    pub async fn add_remote_candidate(&self, candidate: IceCandidate) -> Result<()> {
        self.ensure_open()?;
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: candidate.username_fragment,
            ..Default::default()
        };
        match &self.backend {
            Backend::Own(pc) => pc.add_ice_candidate(init).await.map_err(|e| MediaError::Candidate(e.to_string())),
            Backend::Socket { socket, id } => {
                socket
                    .call(*id, move |slot, _| {
                        slot.pc.add_remote_candidate(init).map_err(|e| MediaError::Candidate(e.to_string()))
                    })
                    .await
            }
        }
    }

    /// Adds an outgoing track on a new send-only transceiver. Takes effect after the next
    /// negotiation ([`Peer::create_offer`]); until then [`OutTrack::write_rtp`] answers
    /// [`MediaError::NotNegotiated`].
    pub async fn add_track(&self, spec: OutTrackSpec) -> Result<OutTrack> {
        self.ensure_open()?;
        if lock(&self.out_tracks).contains_key(&spec.track_id) {
            return Err(MediaError::Config(format!("duplicate outgoing track id {}", spec.track_id)));
        }
        let kind = match spec.codec.kind() {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let track = MediaStreamTrack::new(
            spec.stream_id.clone(),
            spec.track_id.clone(),
            spec.track_id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(spec.ssrc), ..Default::default() },
                codec: spec.codec.rtc_codec(),
                ..Default::default()
            }],
        );
        // A new transceiver every time: `add_track` would re-use the receive transceiver of a
        // track this participant publishes, turning its m-line into sendrecv.
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
        let sink = match &self.backend {
            Backend::Own(pc) => {
                let local = Arc::new(TrackLocalStaticRTP::new(track));
                let transceiver =
                    pc.add_transceiver_from_track(Arc::clone(&local) as Arc<dyn TrackLocal>, Some(init)).await?;
                let sender = transceiver.sender().await?.ok_or(MediaError::Closed)?;
                let feedback =
                    read_local_track_feedback(Arc::clone(&self.shared), Arc::clone(&local), spec.track_id.clone());
                self.shared.track_task(tokio::spawn(feedback).abort_handle());
                OutSink::Own { local, sender }
            }
            Backend::Socket { socket, id } => {
                // Keyframe requests about it come back through the driver (by track id).
                let sender = socket
                    .call(*id, move |slot, _| {
                        let transceiver = slot.pc.add_transceiver_from_track(track, Some(init))?;
                        let sender = slot.pc.rtp_transceiver(transceiver).and_then(|t| t.sender());
                        sender.ok_or(MediaError::Closed)
                    })
                    .await?;
                let link: Arc<dyn SocketLink> = Arc::clone(socket) as Arc<dyn SocketLink>;
                OutSink::Socket { socket: link, key: socket.key(), id: *id, sender }
            }
        };
        let out = OutTrack::new(spec.clone(), sink);
        lock(&self.out_tracks).insert(spec.track_id, out.clone());
        Ok(out)
    }

    /// Stops sending a track. The client sees it go after the next negotiation.
    pub async fn remove_track(&self, track: &OutTrack) -> Result<()> {
        self.ensure_open()?;
        lock(&self.out_tracks).remove(track.track_id());
        track.set_payload_type(NO_PAYLOAD_TYPE);
        match track.sink() {
            OutSink::Own { sender, .. } => {
                let Backend::Own(pc) = &self.backend else { return Err(MediaError::Closed) };
                pc.remove_track(sender).await?;
            }
            OutSink::Socket { id, sender, .. } => {
                // The track's connection is this peer's, on this peer's socket.
                let Backend::Socket { socket, .. } = &self.backend else { return Err(MediaError::Closed) };
                let sender = *sender;
                socket.call(*id, move |slot, _| Ok(slot.pc.remove_track(sender)?)).await?;
            }
        }
        Ok(())
    }

    /// Asks the publisher for a keyframe on stream `media_ssrc` (PLI), at most once per second
    /// per stream. `Ok(false)`: throttled, or no such stream.
    pub async fn request_keyframe(&self, media_ssrc: u32) -> Result<bool> {
        self.ensure_open()?;
        let pli = move || -> Vec<Box<dyn rtcp::Packet>> {
            vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]
        };
        match &self.backend {
            Backend::Own(_) => {
                let Some(track) = lock(&self.shared.remote_tracks).get(&media_ssrc).cloned() else {
                    return Ok(false);
                };
                if !lock(&self.pli).allow(media_ssrc, Instant::now()) {
                    return Ok(false);
                }
                track.write_rtcp(pli()).await?;
                Ok(true)
            }
            Backend::Socket { socket, id } => {
                if !lock(&self.pli).allow(media_ssrc, Instant::now()) {
                    return Ok(false);
                }
                socket
                    .call(*id, move |slot, now| {
                        let Some(receiver) = slot.remote_ssrcs.get(&media_ssrc).copied() else { return Ok(false) };
                        let Some(mut receiver) = slot.pc.rtp_receiver(receiver) else { return Ok(false) };
                        receiver.write_rtcp(now, pli())?;
                        Ok(true)
                    })
                    .await
            }
        }
    }

    /// From now on, every packet this peer publishes goes to `sink`, called on the receive path
    /// (see [`RtpSink`]), instead of the [`PeerChannels::rtp`] queue. Set it before
    /// negotiating; a closed peer keeps no sink.
    pub fn route_rtp_to(&self, sink: Arc<dyn RtpSink>) {
        if !self.shared.closed.load(Ordering::Acquire) {
            *lock(&self.shared.sink) = Some(sink);
        }
    }

    /// Inbound RTP packets dropped so far because the router's queue was full.
    pub fn dropped_rtp(&self) -> u64 {
        self.shared.dropped_rtp.load(Ordering::Relaxed)
    }

    /// The client's latest estimate of the bandwidth it can receive (RTCP REMB), bits/s, as a
    /// shared cell the egress reads without asking: 0 until the client sends one.
    pub fn downlink_estimate(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.downlink_bps)
    }

    /// What the client last reported about receiving our streams (RTCP report blocks).
    pub fn reception(&self) -> crate::reception::ReceptionFigures {
        self.shared.reception.read()
    }

    /// Closes the connection and ends every task of this peer; both [`PeerChannels`] receivers
    /// end after a last `StateChanged(Closed)`. Idempotent.
    pub async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = match &self.backend {
            Backend::Own(pc) => pc.close().await.map_err(MediaError::from),
            Backend::Socket { socket, id } => socket.send(Command::Close { id: *id }).await,
        };
        self.abort_tasks();
        lock(&self.shared.remote_tracks).clear();
        lock(&self.out_tracks).clear();
        self.shared.emit(PeerEvent::StateChanged(PeerState::Closed));
        // End the owner's receivers: with the tasks aborted these were the last senders.
        lock(&self.shared.events).take();
        lock(&self.shared.rtp).take();
        lock(&self.shared.sink).take();
        result
    }

    fn ensure_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) { Err(MediaError::Closed) } else { Ok(()) }
    }

    fn abort_tasks(&self) {
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
    }

    /// Reads what the negotiation settled: payload types of our outgoing tracks, the
    /// audio-level extension id of the publishing leg.
    async fn after_negotiation(&self) {
        let tracks: Vec<OutTrack> = lock(&self.out_tracks).values().cloned().collect();
        if let Backend::Socket { socket, id } = &self.backend {
            let senders: Vec<(OutTrack, RTCRtpSenderId)> = tracks
                .into_iter()
                .filter_map(|t| match t.sink() {
                    OutSink::Socket { sender, .. } => Some((t.clone(), *sender)),
                    OutSink::Own { .. } => None,
                })
                .collect();
            let settled = socket
                .call(*id, move |slot, _| {
                    for (track, sender) in &senders {
                        let pt = slot.pc.rtp_sender(*sender).map_or(NO_PAYLOAD_TYPE, |mut s| {
                            track.codec().payload_type_in(&s.get_parameters().rtp_parameters.codecs)
                        });
                        track.set_payload_type(pt);
                    }
                    Ok(slot.pc.remote_description().map(|d| d.sdp.clone()))
                })
                .await;
            if let Ok(Some(remote)) = settled {
                let id = extmap_id(&remote, AUDIO_LEVEL_URI).unwrap_or(0);
                self.shared.audio_level_ext_id.store(id, Ordering::Release);
            }
            return;
        }
        let Backend::Own(pc) = &self.backend else { return };
        for track in tracks {
            let OutSink::Own { sender, .. } = track.sink() else { continue };
            let pt = match sender.get_parameters().await {
                Ok(params) => track.codec().payload_type_in(&params.rtp_parameters.codecs),
                Err(e) => {
                    tracing::warn!(track = track.track_id(), error = %e, "no sender parameters after negotiation");
                    NO_PAYLOAD_TYPE
                }
            };
            track.set_payload_type(pt);
        }
        if let Some(remote) = pc.remote_description().await {
            let id = extmap_id(&remote.sdp, AUDIO_LEVEL_URI).unwrap_or(0);
            self.shared.audio_level_ext_id.store(id, Ordering::Release);
        }
    }
}

/// A peer dropped without [`Peer::close`] (its owner panicked) still releases its connection:
/// its socket and driver task, or its slot on the shared socket.
impl Drop for Peer {
    fn drop(&mut self) {
        self.abort_tasks();
        // Nothing it publishes is forwarded any more, even while its connection winds down; and
        // the sink (which holds other peers' tracks) is not kept alive by that connection.
        lock(&self.shared.sink).take();
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        match &self.backend {
            Backend::Socket { socket, id } => socket.close_soon(*id),
            Backend::Own(pc) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let pc = Arc::clone(pc);
                    runtime.spawn(async move {
                        let _ = pc.close().await;
                    });
                }
            }
        }
    }
}

/// Refuses an answer that lacks media sections the offer had (webrtc-rs answers what it
/// cannot use by leaving it out) or that rejects every section the offer asked for.
fn check_answer(offer: &rtc::sdp::SessionDescription, answer: &RTCSessionDescription) -> Result<()> {
    let answer = answer.unmarshal()?;
    let (offered, answered) = (offer.media_descriptions.len(), answer.media_descriptions.len());
    if answered != offered {
        return Err(MediaError::Sdp(format!("{offered} media sections offered, {answered} usable")));
    }
    if crate::sdp::nothing_usable(offer, &answer) {
        return Err(MediaError::Sdp("no usable media section: no codec this server forwards".to_owned()));
    }
    Ok(())
}

/// A failure while applying a remote offer is the offer's fault.
fn remote_fault(e: MediaError) -> MediaError {
    match e {
        MediaError::WebRtc(e) => sdp_error(e),
        e => e,
    }
}

/// [`Peer::accept_offer`] on the socket's driver: apply, answer, and on the first offer add the
/// socket's host candidate (trickled to the client like any other). Rolled back on failure.
fn answer_on_socket(
    slot: &mut PeerSlot,
    now: Instant,
    offer: RTCSessionDescription,
    offered: rtc::sdp::SessionDescription,
    host: SocketAddr,
) -> Result<RTCSessionDescription> {
    let answered = (|| {
        slot.pc.set_remote_description(now, offer).map_err(sdp_error)?;
        let answer = slot.pc.create_answer(None)?;
        check_answer(&offered, &answer)?;
        slot.pc.set_local_description(now, answer.clone())?;
        add_host_candidate(slot, host)?;
        Ok(answer)
    })();
    if let Err(e) = answered {
        if slot.pc.pending_remote_description().is_some()
            && let Err(e) = slot.pc.set_remote_description(now, rollback())
        {
            tracing::warn!(error = %e, "cannot roll back a refused offer");
        }
        return Err(remote_fault(e));
    }
    answered
}

/// Once per connection, after its first local description: the socket's host candidate, then
/// end-of-candidates (gathering complete). Both are trickled to the client as events.
fn add_host_candidate(slot: &mut PeerSlot, host: SocketAddr) -> Result<()> {
    if !slot.candidate_added {
        slot.pc.add_local_candidate(host_candidate(host)?)?;
        slot.pc.add_local_candidate(RTCIceCandidateInit::default())?;
        slot.candidate_added = true;
    }
    Ok(())
}

/// The host candidate of the media socket, as a trickle candidate.
fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&candidate).to_json()?)
}

/// An RFC 9429 §5.7 rollback description (its `parsed` field is private, so no struct literal).
fn rollback() -> RTCSessionDescription {
    let mut rollback = RTCSessionDescription::default();
    rollback.sdp_type = RTCSdpType::Rollback;
    rollback
}

fn sdp_error(e: webrtc::error::Error) -> MediaError {
    MediaError::Sdp(e.to_string())
}

/// Builds the connection on a port from the configured range.
async fn build_connection(config: &PeerConfig, shared: &Arc<PeerShared>) -> Result<(Arc<dyn PeerConnection>, u16)> {
    let (from, to) = config.port_range.unwrap_or((0, 0));
    if from > to {
        return Err(MediaError::Config(format!("empty port range {from}..={to}")));
    }
    let mut last_error = String::from("no port tried");
    for port in candidate_ports(from, to) {
        let addr = SocketAddr::new(config.bind_ip, port);
        // Probe first: webrtc-rs builds a whole connection (certificate included) before it
        // binds, and reports a port in use only then.
        let port = match UdpSocket::bind(addr) {
            Ok(probe) if port == 0 => probe.local_addr().map_or(0, |a| a.port()),
            Ok(_) => port,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        match try_build(config, shared, SocketAddr::new(config.bind_ip, port)).await {
            Ok(pc) => return Ok((pc, port)),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(MediaError::Bind { ip: config.bind_ip, from, to, detail: last_error })
}

/// Up to [`MAX_BIND_ATTEMPTS`] ports of the range, starting at a rotating offset so
/// consecutive peers do not all probe the same first ports.
fn candidate_ports(from: u16, to: u16) -> Vec<u16> {
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    if from == 0 {
        return vec![0];
    }
    let span = u32::from(to - from) + 1;
    let start = CURSOR.fetch_add(1, Ordering::Relaxed) % span;
    (0..span.min(MAX_BIND_ATTEMPTS as u32))
        .filter_map(|i| u16::try_from(u32::from(from) + (start + i) % span).ok())
        .collect()
}

async fn try_build(config: &PeerConfig, shared: &Arc<PeerShared>, addr: SocketAddr) -> Result<Arc<dyn PeerConnection>> {
    let (media_engine, registry, settings) = stack_parts(config, shared)?;
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings.build())
        .with_handler(Arc::new(Handler { shared: Arc::clone(shared) }))
        .with_udp_addrs(vec![addr])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// What every server-side connection is built from, whichever socket it uses: the codecs and
/// header extensions we accept, the default interceptors plus our keyframe forwarder, and ICE
/// settings (lite, timeouts, NAT mapping).
/// Registers the codecs Parley forwards, and only those: Opus; VP8, then H.264 (non-interleaved,
/// baseline, constrained baseline and high profile), each video codec with its RTX. An offer of
/// anything else (VP9, AV1, PCMU, …) alone gets that section rejected in the answer, rather than
/// a track the router would forward under the wrong codec. Payload types are webrtc-rs's
/// defaults, so both ends of our own tests agree.
fn register_forwarded_codecs(engine: &mut MediaEngine) -> Result<()> {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() };
    let video_feedback =
        vec![feedback("goog-remb", ""), feedback("ccm", "fir"), feedback("nack", ""), feedback("nack", "pli")];
    let codec = |mime: &str, clock_rate: u32, channels: u16, fmtp: &str, rtcp_feedback: Vec<RTCPFeedback>, pt: u8| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback,
            },
            payload_type: pt,
        }
    };
    engine.register_codec(
        codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", vec![], 111),
        RtpCodecKind::Audio,
    )?;
    let h264 = |profile: &str| format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}");
    let video = [
        (MIME_TYPE_VP8, String::new(), 96, 97),
        (MIME_TYPE_H264, h264("42001f"), 102, 103),
        (MIME_TYPE_H264, H264_FMTP.to_owned(), 125, 105),
        (MIME_TYPE_H264, h264("640032"), 123, 124),
    ];
    for (mime, fmtp, pt, rtx) in video {
        engine.register_codec(codec(mime, 90_000, 0, &fmtp, video_feedback.clone(), pt), RtpCodecKind::Video)?;
        engine
            .register_codec(codec(MIME_TYPE_RTX, 90_000, 0, &format!("apt={pt}"), vec![], rtx), RtpCodecKind::Video)?;
    }
    Ok(())
}

fn stack_parts(config: &PeerConfig, shared: &Arc<PeerShared>) -> Result<(MediaEngine, Registry, SettingEngineBuilder)> {
    let mut media_engine = MediaEngine::default();
    register_forwarded_codecs(&mut media_engine)?;
    for uri in [MID_URI, RID_URI, REPAIRED_RID_URI] {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
            RtpCodecKind::Video,
            None,
        )?;
    }
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_owned() },
        RtpCodecKind::Audio,
        None,
    )?;
    // The stack's default interceptors but one: no NACK responder. It would keep a copy of
    // every packet of every leg to answer that leg's NACKs; the router answers them from the
    // publisher's packet cache instead, one entry per published packet (the NACK feedback
    // itself is in the video codecs registered above).
    configure_simulcast_extension_headers(&mut media_engine)?;
    let registry = Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    let registry = configure_rtcp_reports(configure_twcc_receiver_only(registry, &mut media_engine)?)
        .with(
            Slot::from(KEYFRAME_FORWARDER_SLOT),
            Filtered::new(
                KeyframeRequestForwarder::with_downlink_estimate(Arc::clone(&shared.downlink_bps))
                    .forwarding_nacks()
                    .reporting_reception(Arc::clone(&shared.reception)),
            ),
        )
        .with(Slot::from(RID_REPORT_FILTER_SLOT), node_send_filters());

    // `disconnected` after a sixth of the timeout (at most webrtc-rs's 5 s), `failed` after the
    // rest; keepalives often enough that a live but idle peer never gets near either.
    let disconnected = (config.dead_peer_timeout / 6).min(Duration::from_secs(5));
    let keepalive = (disconnected / 2).min(Duration::from_secs(2));
    let mut settings = SettingEngineBuilder::new().with_lite(config.ice_lite).with_ice_timeouts(
        Some(disconnected),
        Some(config.dead_peer_timeout.saturating_sub(disconnected)),
        Some(keepalive),
    );
    if let Some(public_ip) = config.public_ip {
        settings = settings.with_nat_1to1_ips(vec![public_ip.to_string()], RTCIceCandidateType::Host);
    }
    Ok((media_engine, registry, settings))
}

/// Receives the connection's callbacks; runs on its driver, so it only forwards and spawns.
struct Handler {
    shared: Arc<PeerShared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.shared.emit(PeerEvent::LocalCandidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
                username_fragment: None,
            })),
            Err(e) => tracing::warn!(error = %e, "local candidate not serialisable"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.emit(PeerEvent::GatheringComplete);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Connected {
            self.shared.emit(PeerEvent::IceConnected);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.shared.emit(PeerEvent::StateChanged(PeerState::from_rtc(state)));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let handle = tokio::spawn(read_remote_track(Arc::clone(&self.shared), track));
        self.shared.track_task(handle.abort_handle());
    }
}

/// Pumps one published track: lifecycle to events, RTP to the router's queue.
async fn read_remote_track(shared: Arc<PeerShared>, track: Arc<dyn TrackRemote>) {
    let mut outbox = Outbox::default();
    let kind = MediaKind::from_rtc(track.kind().await);
    let track_id: Arc<str> = Arc::from(track.track_id().await);
    let mut rids: HashMap<u32, Option<Arc<str>>> = HashMap::new();
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                rids.insert(init.ssrc, init.rid.as_deref().map(Arc::from));
                lock(&shared.remote_tracks).insert(init.ssrc, Arc::clone(&track));
                let codec = track.codec(init.ssrc).await.and_then(|c| Codec::from_mime(&c.mime_type));
                shared.emit(PeerEvent::TrackOpened {
                    codec,
                    track_id: track_id.to_string(),
                    kind,
                    ssrc: init.ssrc,
                    rid: init.rid,
                });
            }
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let ssrc = packet.header.ssrc;
                let audio_level = match shared.audio_level_ext_id.load(Ordering::Acquire) {
                    0 => None,
                    id => packet.header.get_extension(id).and_then(|b| b.first().map(|v| v & 0x7f)),
                };
                let rtp = IncomingRtp {
                    track_id: Arc::clone(&track_id),
                    kind,
                    ssrc,
                    rid: rids.get(&ssrc).cloned().flatten(),
                    audio_level,
                    packet,
                };
                // Closed: the owner is tearing down; keep draining so the driver's queue does
                // not fill up with events nobody reads.
                shared.deliver(rtp, &mut outbox);
                outbox.send_now();
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    lock(&shared.remote_tracks).retain(|ssrc, _| !rids.contains_key(ssrc));
    shared.emit(PeerEvent::TrackEnded { track_id: track_id.to_string() });
}

/// Drains the RTCP the client sends about one of our outgoing tracks; keyframe requests and
/// NACKs become [`PeerEvent`]s ([`feedback_events`]). Draining also keeps the stack's 256-event
/// queue from filling with receiver reports (it would log an error per report).
async fn read_local_track_feedback(shared: Arc<PeerShared>, track: Arc<TrackLocalStaticRTP>, track_id: String) {
    while let Some(event) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event {
            for event in feedback_events(&track_id, &packets) {
                shared.emit(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_ports_stay_in_range() {
        assert_eq!(candidate_ports(0, 0), vec![0]);
        for _ in 0..5 {
            let ports = candidate_ports(40_000, 40_003);
            assert_eq!(ports.len(), 4);
            assert!(ports.iter().all(|p| (40_000..=40_003).contains(p)));
        }
        assert_eq!(candidate_ports(65_535, 65_535), vec![65_535]);
        assert_eq!(candidate_ports(10_000, 20_000).len(), MAX_BIND_ATTEMPTS);
    }
}
