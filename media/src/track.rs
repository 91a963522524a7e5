//! What a server-side connection shares with its owner and with whatever drives it (its own
//! webrtc-rs connection in [`crate::peer`], or the shared socket's driver in [`crate::socket`]):
//! the [`PeerEvent`]s it reports, the packets it publishes ([`IncomingRtp`], to an [`RtpSink`]
//! or a queue), the outgoing tracks it is sent on ([`OutTrack`], written directly or through an
//! [`Outbox`]) and the state behind them (`PeerShared`).
//!
//! Both the peer adapter and the socket driver build on these types; neither needs the other
//! for them. An outgoing track on the shared socket reaches its driver through `SocketLink`,
//! which the socket implements.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rtc::rtcp;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::RTCPeerConnectionState;
use webrtc::rtp_transceiver::RtpSender;

use parley_core::protocol::IceCandidate;

use crate::codec::{Codec, MediaKind, NO_PAYLOAD_TYPE};
use crate::error::{MediaError, Result};
use crate::interceptors::is_keyframe_request;
use crate::placement::PeerId;

/// An RTP packet (header and payload) as the stack parses it.
pub use rtc::rtp::Packet as RtpPacket;

/// Peer connection state, as the actor needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    New,
    Connecting,
    Connected,
    /// Transient: ICE lost consent; may come back.
    Disconnected,
    /// Terminal: ICE or DTLS failed; close the peer.
    Failed,
    Closed,
}

impl PeerState {
    pub(crate) fn from_rtc(state: RTCPeerConnectionState) -> Self {
        match state {
            RTCPeerConnectionState::Connecting => PeerState::Connecting,
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => PeerState::New,
        }
    }
}

/// What a peer tells its owner, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// A local candidate to send to the client (trickle ICE).
    LocalCandidate(IceCandidate),
    /// All local candidates have been emitted.
    GatheringComplete,
    /// ICE found a working candidate pair (DTLS starts now; `StateChanged(Connected)` follows
    /// once it is up). Once per connection.
    IceConnected,
    /// The connection state changed.
    StateChanged(PeerState),
    /// A published stream sent its first packet (one per simulcast layer, each with its RID).
    /// `codec`: what it carries, `None` for a codec Parley does not forward (VP9, AV1, …).
    TrackOpened { track_id: String, kind: MediaKind, ssrc: u32, rid: Option<String>, codec: Option<Codec> },
    /// A published track ended (the client removed it or the connection closed).
    TrackEnded { track_id: String },
    /// The client asked for a keyframe (PLI or FIR) on one of our outgoing tracks: the router
    /// should ask that track's current source.
    KeyframeRequested { track_id: String },
    /// The client lost these packets (RTP sequence numbers as we sent them) of one of our
    /// outgoing tracks: the router answers from the publisher's packet cache.
    NackReceived { track_id: String, sequence_numbers: Vec<u16> },
}

/// What the client's feedback about our outgoing track `track_id` asks of the router: a
/// keyframe, lost packets again, both or neither.
pub(crate) fn feedback_events(track_id: &str, packets: &[Box<dyn rtcp::Packet>]) -> Vec<PeerEvent> {
    let mut events = Vec::new();
    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
        events.push(PeerEvent::KeyframeRequested { track_id: track_id.to_owned() });
    }
    let lost: Vec<u16> = packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .flat_map(|nack| nack.nacks.iter().flat_map(|pair| pair.packet_list()))
        .collect();
    if !lost.is_empty() {
        events.push(PeerEvent::NackReceived { track_id: track_id.to_owned(), sequence_numbers: lost });
    }
    events
}

/// One RTP packet published by this peer.
#[derive(Debug, Clone)]
pub struct IncomingRtp {
    /// Id of the published track (the `msid` track id).
    pub track_id: Arc<str>,
    pub kind: MediaKind,
    /// SSRC of the stream (one per simulcast layer).
    pub ssrc: u32,
    /// Simulcast layer id (`q`/`h`/`f` from browsers), `None` without simulcast.
    pub rid: Option<Arc<str>>,
    /// RFC 6464 audio level (0 loudest … 127 silence, -dBov) when the client sends it.
    pub audio_level: Option<u8>,
    pub packet: rtp::Packet,
}

/// What the caller chooses about an outgoing track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutTrackSpec {
    /// Track id the client sees (`msid` track id); unique within this peer.
    pub track_id: String,
    /// Stream id the client sees (`msid` stream id), e.g. the publisher's participant id.
    pub stream_id: String,
    pub codec: Codec,
    /// SSRC this track is sent with, fixed for its lifetime whatever the source.
    pub ssrc: u32,
}

/// The receivers of a peer: drain both, or RTP is dropped and events pile up. `rtp` stays
/// empty once the peer routes its packets to an [`RtpSink`].
#[derive(Debug)]
pub struct PeerChannels {
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    pub rtp: mpsc::Receiver<IncomingRtp>,
}

/// Receives a peer's published packets on the receive path itself
/// ([`Peer::route_rtp_to`](crate::peer::Peer::route_rtp_to)): the shared socket's driver or the
/// track's reader task calls it for every packet. It must not block; what it forwards it writes
/// into `out`, which is sent once it returns.
pub trait RtpSink: Send + Sync + 'static {
    fn on_rtp(&self, rtp: IncomingRtp, out: &mut Outbox);
}

/// Packets an [`RtpSink`] forwards, sent after it returns: on the node's shared socket, straight
/// into the subscribers' connections in the same driver turn (no queue, no task switch; those
/// of another driver thread as one batch per packet); to a connection with its own socket, into its driver's queue without waiting (a full queue drops
/// the packet, counted by [`OutTrack::dropped`]).
#[derive(Default)]
pub struct Outbox {
    writes: Vec<(OutTrack, rtp::Packet)>,
}

impl Outbox {
    /// Queues `packet` on `track`, stamped as [`OutTrack::write_rtp`] does; `NotNegotiated`
    /// (and nothing queued) before the track's first negotiation.
    pub fn write(&mut self, track: &OutTrack, packet: rtp::Packet) -> Result<()> {
        let packet = track.stamp(packet)?;
        self.writes.push((track.clone(), packet));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, (OutTrack, rtp::Packet)> {
        self.writes.drain(..)
    }

    /// Sends everything queued from outside a socket driver (as a track reader task does),
    /// without waiting: a packet whose connection's queue is full is dropped and counted on its
    /// track ([`OutTrack::dropped`]).
    pub fn send_now(&mut self) {
        for (track, packet) in self.writes.drain(..) {
            track.send_detached(packet);
        }
    }
}

/// The node's shared socket as an outgoing track on it sees it: the queue of the driver that
/// owns the track's connection. [`MediaSocket`](crate::socket::MediaSocket) implements it; a
/// trait, so that these types need not know the socket's driver.
pub(crate) trait SocketLink: Send + Sync + 'static {
    /// Queues one stamped packet for `sender` of connection `id`, waiting while the driver's
    /// queue is full (outbound back-pressure).
    fn send_rtp(
        &self,
        id: PeerId,
        sender: RTCRtpSenderId,
        packet: rtp::Packet,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;

    /// The same without waiting; `false` if the queue is full or the driver gone.
    fn try_send_rtp(&self, id: PeerId, sender: RTCRtpSenderId, packet: rtp::Packet) -> bool;
}

/// An outgoing track of one peer: write rewritten RTP to it. Cheap to clone.
#[derive(Clone)]
pub struct OutTrack {
    inner: Arc<OutTrackInner>,
}

struct OutTrackInner {
    spec: OutTrackSpec,
    /// Payload type negotiated on this leg, or [`NO_PAYLOAD_TYPE`].
    payload_type: AtomicU16,
    sink: OutSink,
    /// Packets an [`Outbox`] could not hand over without waiting.
    dropped: AtomicU64,
}

/// Where an outgoing track's packets go.
pub(crate) enum OutSink {
    /// The peer's own webrtc-rs connection (a socket per peer).
    Own { local: Arc<TrackLocalStaticRTP>, sender: Arc<dyn RtpSender> },
    /// A connection on the node's media socket (the one whose [`MediaSocket::key`] is `key`):
    /// a queued write to its driver.
    ///
    /// [`MediaSocket::key`]: crate::socket::MediaSocket
    Socket { socket: Arc<dyn SocketLink>, key: u64, id: PeerId, sender: RTCRtpSenderId },
}

impl std::fmt::Debug for OutTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutTrack").field("spec", &self.inner.spec).field("payload_type", &self.payload_type()).finish()
    }
}

impl OutTrack {
    /// A track not negotiated yet, sent through `sink`.
    pub(crate) fn new(spec: OutTrackSpec, sink: OutSink) -> OutTrack {
        OutTrack {
            inner: Arc::new(OutTrackInner {
                spec,
                payload_type: AtomicU16::new(NO_PAYLOAD_TYPE),
                sink,
                dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn track_id(&self) -> &str {
        &self.inner.spec.track_id
    }

    pub fn ssrc(&self) -> u32 {
        self.inner.spec.ssrc
    }

    pub fn codec(&self) -> Codec {
        self.inner.spec.codec
    }

    /// Payload type negotiated on this leg; `None` before the first negotiation that included
    /// the track.
    pub fn payload_type(&self) -> Option<u8> {
        u8::try_from(self.inner.payload_type.load(Ordering::Acquire)).ok()
    }

    /// What a negotiation settled: payload type `pt`, or [`NO_PAYLOAD_TYPE`] (not sendable).
    pub(crate) fn set_payload_type(&self, pt: u16) {
        self.inner.payload_type.store(pt, Ordering::Release);
    }

    pub(crate) fn sink(&self) -> &OutSink {
        &self.inner.sink
    }

    /// Sends one packet: sets this track's SSRC and negotiated payload type, drops header
    /// extensions (their ids belong to the publisher's leg). Sequence number and timestamp are
    /// sent as given — rewrite them first (`rewrite::StreamRewriter`).
    ///
    /// Waits when the connection's driver queue is full (outbound back-pressure).
    pub async fn write_rtp(&self, packet: rtp::Packet) -> Result<()> {
        let packet = self.stamp(packet)?;
        match &self.inner.sink {
            OutSink::Own { local, .. } => local.write_rtp(packet).await.map_err(MediaError::from),
            OutSink::Socket { socket, id, sender, .. } => socket.send_rtp(*id, *sender, packet).await,
        }
    }

    /// Packets dropped because its connection's queue was full when an [`Outbox`] sent them.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// As if negotiated with payload type `pt` (tests of what happens to stamped packets).
    #[cfg(test)]
    pub(crate) fn negotiated_as(&self, pt: u8) {
        self.set_payload_type(u16::from(pt));
    }

    /// This leg's SSRC and payload type on `packet`, and no header extensions.
    fn stamp(&self, mut packet: rtp::Packet) -> Result<rtp::Packet> {
        let pt = self.payload_type().ok_or_else(|| MediaError::NotNegotiated(self.inner.spec.track_id.clone()))?;
        packet.header.ssrc = self.inner.spec.ssrc;
        packet.header.payload_type = pt;
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.csrc.clear();
        Ok(packet)
    }

    /// Where a stamped packet goes on a shared socket: `(socket key, connection, sender)`.
    pub(crate) fn socket_target(&self) -> Option<(u64, PeerId, RTCRtpSenderId)> {
        match &self.inner.sink {
            OutSink::Socket { key, id, sender, .. } => Some((*key, *id, *sender)),
            OutSink::Own { .. } => None,
        }
    }

    /// Hands a stamped packet to its connection without waiting; counts it dropped if the
    /// connection's queue is full (or the connection is gone).
    pub(crate) fn send_detached(&self, packet: rtp::Packet) {
        let sent = match &self.inner.sink {
            OutSink::Own { local, .. } => {
                // The driver queue's `send` completes on its first poll when there is room; a
                // pending one is dropped, which withdraws the packet. Unconstrained: tokio's
                // cooperative budget would otherwise make a send pending (a drop) after a
                // hundred or so in one turn of the calling task, whatever the room.
                let mut write = std::pin::pin!(tokio::task::coop::unconstrained(local.write_rtp(packet)));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                matches!(std::future::Future::poll(write.as_mut(), &mut cx), std::task::Poll::Ready(Ok(())))
            }
            OutSink::Socket { socket, id, sender, .. } => socket.try_send_rtp(*id, *sender, packet),
        };
        if !sent {
            self.count_dropped();
        }
    }

    /// One more packet that could not be handed over without waiting.
    pub(crate) fn count_dropped(&self) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared between the peer handle, its event handler and its tasks (or the media socket's
/// driver).
pub(crate) struct PeerShared {
    /// Taken on close, so the owner's receivers end.
    pub(crate) events: Mutex<Option<mpsc::UnboundedSender<PeerEvent>>>,
    /// Taken on close; each track task holds a clone until it is aborted.
    pub(crate) rtp: Mutex<Option<mpsc::Sender<IncomingRtp>>>,
    /// Set by [`Peer::route_rtp_to`](crate::peer::Peer::route_rtp_to): published packets go
    /// here instead of `rtp`. Taken on close (the sink may hold other peers' tracks).
    pub(crate) sink: Mutex<Option<Arc<dyn RtpSink>>>,
    /// Published streams by SSRC, to address PLIs.
    pub(crate) remote_tracks: Mutex<HashMap<u32, Arc<dyn TrackRemote>>>,
    /// Tasks spawned for this peer, aborted on close and drop.
    pub(crate) tasks: Mutex<Vec<AbortHandle>>,
    /// Inbound RTP packets dropped because the router's queue was full.
    pub(crate) dropped_rtp: AtomicU64,
    /// Negotiated id of the audio-level extension on the publishing leg, 0 if none.
    pub(crate) audio_level_ext_id: AtomicU8,
    /// The client's latest receive-bandwidth estimate (REMB) for what we send it, bits/s;
    /// 0 while it has sent none.
    pub(crate) downlink_bps: Arc<AtomicU64>,
    /// What the client reports about receiving our streams (loss, jitter, round trip).
    pub(crate) reception: Arc<crate::reception::ReceptionQuality>,
    pub(crate) closed: AtomicBool,
}

impl PeerShared {
    /// A peer's shared state and its owner's receivers; `rtp_queue_packets` bounds the queue of
    /// published packets (when no sink takes them).
    pub(crate) fn new(rtp_queue_packets: usize) -> (Arc<PeerShared>, PeerChannels) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (rtp_tx, rtp_rx) = mpsc::channel(rtp_queue_packets.max(1));
        let shared = Arc::new(PeerShared {
            events: Mutex::new(Some(events_tx)),
            rtp: Mutex::new(Some(rtp_tx)),
            sink: Mutex::new(None),
            remote_tracks: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            dropped_rtp: AtomicU64::new(0),
            audio_level_ext_id: AtomicU8::new(0),
            downlink_bps: Arc::new(AtomicU64::new(0)),
            reception: Arc::default(),
            closed: AtomicBool::new(false),
        });
        (shared, PeerChannels { events: events_rx, rtp: rtp_rx })
    }

    /// Hands one published packet to the sink (its writes into `out`), or queues it for the
    /// router and counts it as dropped when the queue is full.
    pub(crate) fn deliver(&self, rtp: IncomingRtp, out: &mut Outbox) {
        let sink = lock(&self.sink).clone();
        if let Some(sink) = sink {
            sink.on_rtp(rtp, out);
            return;
        }
        if let Some(tx) = lock(&self.rtp).as_ref()
            && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(rtp)
        {
            self.dropped_rtp.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn emit(&self, event: PeerEvent) {
        if let Some(events) = lock(&self.events).as_ref() {
            // The owner dropping its receiver means it is tearing the peer down; nothing to do.
            let _ = events.send(event);
        }
    }

    pub(crate) fn track_task(&self, handle: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single inserts/removes).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    use super::*;

    #[test]
    fn feedback_asks_for_keyframes_and_lost_packets() {
        let pli: Box<dyn rtcp::Packet> = Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: 7 });
        // Packet 40 and, from its bitmask, 41 and 43; then 90 in a second NACK.
        let nack = |pairs: Vec<NackPair>| -> Box<dyn rtcp::Packet> {
            Box::new(TransportLayerNack { sender_ssrc: 1, media_ssrc: 7, nacks: pairs })
        };
        let lost = NackPair { packet_id: 40, lost_packets: 0b101 };
        let events = feedback_events("t", &[nack(vec![lost]), pli, nack(vec![NackPair::new(90)])]);
        assert_eq!(
            events,
            vec![
                PeerEvent::KeyframeRequested { track_id: "t".into() },
                PeerEvent::NackReceived { track_id: "t".into(), sequence_numbers: vec![40, 41, 43, 90] },
            ]
        );
        assert!(feedback_events("t", &[]).is_empty());
    }
}
