//! One UDP port for every media peer of a node: a driver task that owns the socket and every
//! server-side connection (sans-IO `rtc::RTCPeerConnection`s), demultiplexes datagrams to them
//! ([`crate::demux`]), and sends what they produce in batches (`sendmmsg`, one system call for
//! many datagrams to many peers).
//!
//! Why: production SFUs expose one port (firewalls, load balancers), and webrtc-rs's own driver
//! spends one loop iteration and one `sendmsg` per packet per peer. Here one loop iteration
//! takes every queued command (an SFU fan-out of one packet to fifty subscribers is fifty
//! queued writes) and every readable datagram, lets each touched connection produce its
//! output, and flushes it all with as few system calls as the kernel allows.
//!
//! Shape: [`MediaSocket::bind`] spawns the driver; [`crate::peer::Peer::on_socket`] registers a
//! connection with it and talks to it through [`Command`]s — signalling runs as a closure on the
//! driver ([`PeerSlot`] is the connection plus what the driver knows of it), RTP writes are
//! plain messages. Events and published RTP leave through the peer's own channels, as with a
//! per-peer socket.
//!
//! Limits: one driver task, so one core's worth of SRTP and interceptor work per node; ICE over
//! UDP only (no TCP candidates); host candidates only (a public address is advertised through
//! `public_ip`, 1:1 NAT).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCIceGatheringState;
use rtc::rtp;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::demux;
use crate::error::{MediaError, Result};
use crate::latency::LatencyHistogram;
use crate::peer::{Codec, IncomingRtp, MediaKind, Outbox, PeerEvent, PeerShared, PeerState, is_keyframe_request};

/// Commands queued to the driver; it drains up to this many per loop iteration.
const COMMAND_BATCH: usize = 1024;
/// Datagrams read per loop iteration before the driver turns to its other work.
const RECV_BATCH: usize = 64;
/// Capacity of the command queue: writers wait when it is full (outbound back-pressure).
const COMMAND_QUEUE: usize = 8192;
/// Largest datagram accepted (above any path MTU).
const MAX_DATAGRAM: usize = 2048;
/// Socket buffers asked of the kernel: a burst of a fan-out to hundreds of peers fits.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// How many times one flush lets a connection run timers that are already due before moving on.
const IMMEDIATE_ROUNDS: u32 = 4;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 256;

/// A connection registered with the driver.
pub(crate) type PeerId = u64;

/// The node's media socket. Dropping the last handle stops the driver and closes every
/// connection on it.
pub struct MediaSocket {
    /// Signalling and lifecycle (open, calls, close): few, never stuck behind media.
    control: mpsc::UnboundedSender<Command>,
    /// RTP writes: bounded, so writers wait when the driver falls behind.
    media: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    advertised: SocketAddr,
    next_id: AtomicU64,
    stats: Arc<SocketStats>,
    driver: tokio::task::AbortHandle,
}

impl std::fmt::Debug for MediaSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSocket")
            .field("local_addr", &self.local_addr)
            .field("advertised", &self.advertised)
            .finish()
    }
}

/// Counters of the driver, readable from any thread.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Connections registered and not yet closed.
    pub peers: AtomicUsize,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// `sendmmsg` calls (datagrams_out / send_calls is the batching achieved).
    pub send_calls: AtomicU64,
    /// Datagrams from an address no connection claims (not a STUN check naming one of ours).
    pub unclaimed: AtomicU64,
    /// Datagrams a connection refused (bad DTLS, SRTP authentication failure, …).
    pub refused: AtomicU64,
    /// RTP packets forwarded within the driver's turn: published on one connection and written
    /// into another by its [`RtpSink`](crate::peer::RtpSink), no queue between.
    pub forwarded_inline: AtomicU64,
    /// Of each packet forwarded inline: from reading the datagram that carried it to the return
    /// of the system call that sent it on (the packet's time in this node, less any wait in
    /// the socket's receive buffer). When a turn reads several datagrams of one connection,
    /// the first one's time counts for all (an upper bound).
    pub forward_latency: LatencyHistogram,
}

impl MediaSocket {
    /// Binds `ip:port` (port 0: one the system picks) and starts the driver. `public_ip` is what
    /// candidates advertise when the node sits behind a 1:1 NAT.
    pub async fn bind(ip: IpAddr, port: u16, public_ip: Option<IpAddr>) -> Result<Arc<MediaSocket>> {
        let bind_error = |e: std::io::Error| MediaError::Bind { ip, from: port, to: port, detail: e.to_string() };
        let std_socket = std::net::UdpSocket::bind((ip, port)).map_err(bind_error)?;
        std_socket.set_nonblocking(true).map_err(bind_error)?;
        let sock = socket2::Socket::from(std_socket);
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let socket = UdpSocket::from_std(sock.into()).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let advertised = SocketAddr::new(public_ip.unwrap_or(ip), local_addr.port());
        let (control, control_rx) = mpsc::unbounded_channel();
        let (media, media_rx) = mpsc::channel(COMMAND_QUEUE);
        let stats = Arc::new(SocketStats::default());
        let driver = Driver::new(local_addr, Arc::clone(&stats));
        let task = tokio::spawn(driver.run(socket, control_rx, media_rx));
        tracing::info!(%local_addr, %advertised, "media socket bound: one UDP port for every peer");
        Ok(Arc::new(MediaSocket {
            control,
            media,
            local_addr,
            advertised,
            next_id: AtomicU64::new(1),
            stats,
            driver: task.abort_handle(),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address host candidates advertise (public IP, bound port).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// The driver's counters.
    pub fn stats(&self) -> &SocketStats {
        &self.stats
    }

    pub(crate) fn next_id(&self) -> PeerId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn send(&self, command: Command) -> Result<()> {
        match command {
            Command::Rtp { .. } => self.media.send(command).await.map_err(|_| MediaError::Closed),
            _ => self.control.send(command).map_err(|_| MediaError::Closed),
        }
    }

    /// Queues an RTP write without waiting; `false` if the queue is full or the driver gone.
    pub(crate) fn try_send_media(&self, command: Command) -> bool {
        self.media.try_send(command).is_ok()
    }

    /// Closes connection `id` without waiting (for `Drop`).
    pub(crate) fn close_soon(&self, id: PeerId) {
        let _ = self.control.send(Command::Close { id });
    }

    /// Runs `call` on the driver with the connection `id` and returns what it returns.
    pub(crate) async fn call<R, F>(&self, id: PeerId, call: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut PeerSlot, Instant) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let call: SlotCall = Box::new(move |slot, now| {
            let _ = tx.send(call(slot, now));
        });
        self.send(Command::Call { id, call }).await?;
        // The driver drops the closure unrun when the connection is gone.
        rx.await.map_err(|_| MediaError::Closed)?
    }
}

impl Drop for MediaSocket {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

type SlotCall = Box<dyn FnOnce(&mut PeerSlot, Instant) + Send>;

/// What the peers ask of the driver.
pub(crate) enum Command {
    /// Register a connection; `ufrag` is its local ICE username fragment.
    Open { id: PeerId, pc: Box<RTCPeerConnection>, ufrag: String, shared: Arc<PeerShared> },
    /// Run signalling (or anything else) against a connection.
    Call { id: PeerId, call: SlotCall },
    /// Send one RTP packet on a negotiated sender.
    Rtp { id: PeerId, sender: RTCRtpSenderId, packet: rtp::Packet },
    /// Close and forget a connection.
    Close { id: PeerId },
}

/// Rounds of a flush: a connection written to by another's sink is flushed in the same turn,
/// and one more round covers anything that writes in turn (nothing does today).
const FLUSH_ROUNDS: usize = 8;
/// Datagrams that, once produced, are sent before the rest of the turn's work is done.
const SEND_EARLY: usize = 32;

/// A published track as the driver tracks it.
struct RemoteTrack {
    track_id: Arc<str>,
    kind: MediaKind,
    /// Simulcast RID per SSRC, from each stream's first packet.
    rids: HashMap<u32, Option<Arc<str>>>,
}

/// One connection on the socket, with what the driver knows about it.
pub(crate) struct PeerSlot {
    pub(crate) pc: Box<RTCPeerConnection>,
    pub(crate) shared: Arc<PeerShared>,
    /// Published tracks by the stack's track id.
    remote: HashMap<MediaStreamTrackId, RemoteTrack>,
    /// Published stream SSRC → its receiver, to address PLIs.
    pub(crate) remote_ssrcs: HashMap<u32, RTCRtpReceiverId>,
    /// The socket's host candidate has been added (on the first answer).
    pub(crate) candidate_added: bool,
    /// Remote addresses this connection has been reached from.
    addrs: Vec<SocketAddr>,
    /// Local ufrags it answers to (a new one after an ICE restart).
    ufrags: Vec<String>,
    /// Earliest deadline queued for it in the driver's timer heap.
    scheduled: Option<Instant>,
    /// Queued in the driver's dirty list.
    dirty: bool,
    /// When the first datagram since its last flush was read.
    received_at: Option<Instant>,
    /// For each packet another connection's sink wrote into it since its last flush: when the
    /// datagram that carried it in was read.
    forwarded_from: Vec<Instant>,
}

impl PeerSlot {
    /// Hands the connection's events to the peer's channels and its RTP to the peer's sink (its
    /// forwarded packets into `outbox`) or queue.
    fn drain_events(&mut self, outbox: &mut Outbox) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceCandidateEvent(e) => match e.candidate.to_json() {
                    Ok(init) => self.shared.emit(PeerEvent::LocalCandidate(crate::peer::IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: init.sdp_mid,
                        sdp_mline_index: init.sdp_mline_index,
                        username_fragment: None,
                    })),
                    Err(e) => tracing::warn!(error = %e, "local candidate not serialisable"),
                },
                RTCPeerConnectionEvent::OnIceGatheringStateChangeEvent(RTCIceGatheringState::Complete) => {
                    self.shared.emit(PeerEvent::GatheringComplete);
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.shared.emit(PeerEvent::StateChanged(PeerState::from_rtc(state)));
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let (kind, codec) = self
                        .pc
                        .rtp_receiver(init.receiver_id)
                        .map(|r| {
                            let codec = r.track().codec(init.ssrc).and_then(|c| Codec::from_mime(&c.mime_type));
                            (MediaKind::from_rtc(r.track().kind()), codec)
                        })
                        .unwrap_or((MediaKind::Video, None));
                    let track = self.remote.entry(init.track_id.clone()).or_insert_with(|| RemoteTrack {
                        track_id: Arc::from(init.track_id.as_str()),
                        kind,
                        rids: HashMap::new(),
                    });
                    track.rids.insert(init.ssrc, init.rid.as_deref().map(Arc::from));
                    self.remote_ssrcs.insert(init.ssrc, init.receiver_id);
                    self.shared.emit(PeerEvent::TrackOpened {
                        codec,
                        track_id: init.track_id,
                        kind: track.kind,
                        ssrc: init.ssrc,
                        rid: init.rid,
                    });
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                    if let Some(track) = self.remote.remove(&track_id) {
                        self.remote_ssrcs.retain(|ssrc, _| !track.rids.contains_key(ssrc));
                        self.shared.emit(PeerEvent::TrackEnded { track_id });
                    }
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let Some(track) = self.remote.get(&track_id) else { continue };
                    let ssrc = packet.header.ssrc;
                    let audio_level = match self.shared.audio_level_ext_id.load(Ordering::Acquire) {
                        0 => None,
                        id => packet.header.get_extension(id).and_then(|b| b.first().map(|v| v & 0x7f)),
                    };
                    self.shared.deliver(
                        IncomingRtp {
                            track_id: Arc::clone(&track.track_id),
                            kind: track.kind,
                            ssrc,
                            rid: track.rids.get(&ssrc).cloned().flatten(),
                            audio_level,
                            packet,
                        },
                        outbox,
                    );
                }
                // Only keyframe requests reach here (our forwarder marks them); about our
                // outgoing tracks, whose ids are the router's.
                RTCMessage::RtcpPacket(track_id, packets)
                    if !self.remote.contains_key(&track_id)
                        && packets.iter().any(|p| is_keyframe_request(p.as_ref())) =>
                {
                    self.shared.emit(PeerEvent::KeyframeRequested { track_id });
                }
                _ => {}
            }
        }
    }

    /// Local ufrags in the current local description not yet known.
    fn new_ufrags(&mut self) -> Vec<String> {
        let Some(sdp) = self.pc.local_description().map(|d| d.sdp.clone()) else { return Vec::new() };
        let mut found = Vec::new();
        for line in sdp.lines() {
            if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
                let ufrag = ufrag.trim().to_owned();
                if !self.ufrags.contains(&ufrag) && !found.contains(&ufrag) {
                    found.push(ufrag);
                }
            }
        }
        self.ufrags.extend(found.iter().cloned());
        found
    }
}

/// The driver's state: every connection and how to find it.
struct Driver {
    local_addr: SocketAddr,
    stats: Arc<SocketStats>,
    slots: HashMap<PeerId, PeerSlot>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    dirty: Vec<PeerId>,
    out: Vec<(BytesMut, SocketAddr)>,
    /// What the connection being flushed forwards to others, written right after it.
    outbox: Outbox,
    /// For each packet forwarded inline whose datagram is in `out`: when the datagram that
    /// carried it in was read.
    forwarded_from: Vec<Instant>,
}

impl Driver {
    fn new(local_addr: SocketAddr, stats: Arc<SocketStats>) -> Self {
        Self {
            local_addr,
            stats,
            slots: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            out: Vec::new(),
            outbox: Outbox::default(),
            forwarded_from: Vec::new(),
        }
    }

    async fn run(
        mut self,
        socket: UdpSocket,
        mut control: mpsc::UnboundedReceiver<Command>,
        mut media: mpsc::Receiver<Command>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            // Connections a full flush left dirty go on at once.
            let next_timer = if self.dirty.is_empty() {
                self.timers.peek().map(|Reverse((at, _))| *at)
            } else {
                Some(Instant::now())
            };
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = control.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(command) = media.recv() => self.command(command),
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.datagram(from, &buf[..n]),
                    Err(e) => tracing::debug!(error = %e, "media socket receive"),
                },
                () = sleep => {}
            }
            // Take whatever else is ready without waiting: that is the batch. Signalling first,
            // so a join never waits behind a queue of media.
            while let Ok(command) = control.try_recv() {
                self.command(command);
            }
            for _ in 0..COMMAND_BATCH {
                match media.try_recv() {
                    Ok(command) => self.command(command),
                    Err(_) => break,
                }
            }
            for _ in 0..RECV_BATCH {
                match socket.try_recv_from(&mut buf) {
                    Ok((n, from)) => self.datagram(from, &buf[..n]),
                    Err(_) => break,
                }
            }
            self.fire_timers(Instant::now());
            self.flush(&socket).await;
        }
        // Every handle is gone: close what is left.
        for (_, mut slot) in self.slots.drain() {
            let _ = slot.pc.close();
        }
    }

    fn touch(&mut self, id: PeerId) {
        if let Some(slot) = self.slots.get_mut(&id)
            && !slot.dirty
        {
            slot.dirty = true;
            self.dirty.push(id);
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Open { id, pc, ufrag, shared } => {
                self.by_ufrag.insert(ufrag.clone(), id);
                self.slots.insert(
                    id,
                    PeerSlot {
                        pc,
                        shared,
                        remote: HashMap::new(),
                        remote_ssrcs: HashMap::new(),
                        candidate_added: false,
                        addrs: Vec::new(),
                        ufrags: vec![ufrag],
                        scheduled: None,
                        dirty: false,
                        received_at: None,
                        forwarded_from: Vec::new(),
                    },
                );
                self.stats.peers.fetch_add(1, Ordering::Relaxed);
                self.touch(id);
            }
            Command::Call { id, call } => {
                // A panicking call drops its reply channel: the caller sees the peer closed.
                let ufrags = self.with_slot(id, |slot| {
                    call(slot, now);
                    slot.new_ufrags()
                });
                for ufrag in ufrags.into_iter().flatten() {
                    self.by_ufrag.insert(ufrag, id);
                }
                self.touch(id);
            }
            Command::Rtp { id, sender, packet } => self.write_rtp(id, sender, packet, now),
            Command::Close { id } => {
                let Some(mut slot) = self.remove(id) else { return };
                let out = &mut self.out;
                let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if let Err(e) = slot.pc.close() {
                        tracing::debug!(error = %e, "closing a media connection");
                    }
                    // Its last words (DTLS close_notify) still go out.
                    while let Some(w) = slot.pc.poll_write() {
                        out.push((w.message, w.transport.peer_addr));
                    }
                }));
                if closed.is_err() {
                    tracing::error!(peer = id, "media connection panicked while closing");
                }
            }
        }
    }

    /// Sends one RTP packet on connection `id`'s sender (the datagram goes at the next flush).
    fn write_rtp(&mut self, id: PeerId, sender: RTCRtpSenderId, packet: rtp::Packet, now: Instant) {
        self.with_slot(id, |slot| {
            let Some(mut rtp_sender) = slot.pc.rtp_sender(sender) else { return };
            if let Err(e) = rtp_sender.write_rtp(now, packet) {
                tracing::trace!(error = %e, "rtp write refused");
            }
        });
        self.touch(id);
    }

    /// Writes what the last flushed connection's sink forwarded: into connections on this
    /// socket at once, elsewhere without waiting. `received`: when that connection's datagrams
    /// were read.
    fn write_outbox(&mut self, now: Instant, received: Option<Instant>) {
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut inline = 0;
        for (track, packet) in outbox.drain() {
            match track.socket_target() {
                Some((addr, id, sender)) if addr == self.local_addr => {
                    self.write_rtp(id, sender, packet, now);
                    inline += 1;
                    if let Some(at) = received
                        && let Some(slot) = self.slots.get_mut(&id)
                    {
                        slot.forwarded_from.push(at);
                    }
                }
                _ => track.send_detached(packet),
            }
        }
        self.stats.forwarded_inline.fetch_add(inline, Ordering::Relaxed);
        self.outbox = outbox;
    }

    /// Runs `f` on connection `id`. The stack is not ours: should it panic, that connection is
    /// failed alone (its owner hears `Failed`) and every other peer on the socket goes on.
    fn with_slot<R>(&mut self, id: PeerId, f: impl FnOnce(&mut PeerSlot) -> R) -> Option<R> {
        let slot = self.slots.get_mut(&id)?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(slot))) {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::error!(peer = id, "media connection panicked in the WebRTC stack; failing it alone");
                if let Some(slot) = self.remove(id) {
                    slot.shared.emit(PeerEvent::StateChanged(PeerState::Failed));
                }
                None
            }
        }
    }

    /// Forgets connection `id` and every way to reach it.
    fn remove(&mut self, id: PeerId) -> Option<PeerSlot> {
        let slot = self.slots.remove(&id)?;
        for ufrag in &slot.ufrags {
            self.by_ufrag.remove(ufrag);
        }
        for addr in &slot.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        self.stats.peers.fetch_sub(1, Ordering::Relaxed);
        Some(slot)
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        // A STUN check names its connection outright (and may move an address to a new one: a
        // client that reconnected from the same port); anything else goes by address.
        let claimed = demux::stun_local_ufrag(data).and_then(|ufrag| self.by_ufrag.get(ufrag).copied());
        let id = match claimed {
            Some(id) => {
                if self.by_addr.insert(from, id) != Some(id)
                    && let Some(slot) = self.slots.get_mut(&id)
                {
                    slot.addrs.push(from);
                }
                id
            }
            None => match self.by_addr.get(&from) {
                Some(id) => *id,
                None => {
                    self.stats.unclaimed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let now = Instant::now();
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.received_at.get_or_insert(now);
        }
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        };
        if let Some(Err(e)) = self.with_slot(id, |slot| slot.pc.handle_read(message)) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(%from, error = %e, "datagram refused");
        }
        self.touch(id);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(&id) else { continue };
            if slot.scheduled != Some(at) {
                continue; // superseded by an earlier deadline that already fired
            }
            slot.scheduled = None;
            if let Some(Err(e)) = self.with_slot(id, |slot| slot.pc.handle_timeout(now)) {
                tracing::debug!(error = %e, "media connection timer");
            }
            self.touch(id);
        }
    }

    /// Lets every touched connection produce its events and datagrams, reschedules its timer,
    /// and sends everything queued.
    async fn flush(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        for _ in 0..FLUSH_ROUNDS {
            if self.dirty.is_empty() {
                break;
            }
            for id in std::mem::take(&mut self.dirty) {
                let received = self.flush_one(id, now);
                if !self.outbox.is_empty() {
                    self.write_outbox(now, received);
                }
                // A wide fan-out goes out as it is encrypted, not all at the end: the first
                // subscribers' copies need not wait for the last ones'.
                if self.out.len() >= SEND_EARLY {
                    self.send_out(socket).await;
                }
            }
        }
        self.send_out(socket).await;
    }

    /// Sends every datagram produced so far; times the forwarded packets among them.
    async fn send_out(&mut self, socket: &UdpSocket) {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            send_all(socket, &out, &self.stats).await;
            self.out = out;
            self.out.clear();
        }
        if !self.forwarded_from.is_empty() {
            let sent = Instant::now();
            for at in self.forwarded_from.drain(..) {
                self.stats.forward_latency.record(sent.saturating_duration_since(at));
            }
        }
    }

    /// Lets one connection produce its events and datagrams (its published RTP through its
    /// sink into the outbox) and reschedules its timer. Returns when its first datagram since
    /// the last flush was read.
    fn flush_one(&mut self, id: PeerId, now: Instant) -> Option<Instant> {
        let mut learned = Vec::new();
        let received = self.slots.get_mut(&id).and_then(|slot| slot.received_at.take());
        {
            let mut out = std::mem::take(&mut self.out);
            let mut outbox = std::mem::take(&mut self.outbox);
            let timer = self.with_slot(id, |slot| {
                slot.dirty = false;
                let mut rounds = 0;
                let deadline = loop {
                    slot.drain_events(&mut outbox);
                    while let Some(w) = slot.pc.poll_write() {
                        let to = w.transport.peer_addr;
                        // A new destination (a connectivity check of ours): what comes back
                        // from there is this connection's. A STUN response names no username,
                        // so without this the answer to our own check would be dropped until
                        // the client's checks taught us its address, and ICE would wait for a
                        // retry.
                        if !slot.addrs.contains(&to) {
                            slot.addrs.push(to);
                            learned.push(to);
                        }
                        out.push((w.message, to));
                    }
                    let deadline = slot.pc.poll_timeout()?;
                    // Work the stack queued for "now" while handling the last input (the DTLS
                    // handshake starting as ICE connects) is done at once: left to the next
                    // turn's timers it would wait for whatever deadline comes next.
                    if deadline <= now && rounds < IMMEDIATE_ROUNDS {
                        rounds += 1;
                        if let Err(e) = slot.pc.handle_timeout(now) {
                            tracing::debug!(error = %e, "media connection timer");
                        }
                        continue;
                    }
                    break deadline;
                };
                // A deadline still past is handled on the next turn, not in a spin.
                let deadline = deadline.max(now + Duration::from_micros(500));
                if slot.scheduled.is_none_or(|s| deadline < s) {
                    slot.scheduled = Some(deadline);
                    return Some(deadline);
                }
                None
            });
            self.out = out;
            self.outbox = outbox;
            if let Some(slot) = self.slots.get_mut(&id) {
                self.forwarded_from.append(&mut slot.forwarded_from);
            }
            if let Some(Some(deadline)) = timer {
                self.timers.push(Reverse((deadline, id)));
            }
        }
        // Never taken from another connection: a STUN check naming its username moves an
        // address, nothing else does.
        for to in learned {
            self.by_addr.entry(to).or_insert(id);
        }
        received
    }
}

/// Sends every datagram, `SEND_BATCH` per system call, waiting while the socket buffer is full.
/// A datagram the kernel refuses outright (unreachable destination) is dropped, not retried.
async fn send_all(socket: &UdpSocket, out: &[(BytesMut, SocketAddr)], stats: &SocketStats) {
    let mut sent = 0;
    while sent < out.len() {
        let end = (sent + SEND_BATCH).min(out.len());
        match socket.try_io(Interest::WRITABLE, || batch::send(socket, &out[sent..end])) {
            Ok(n) => {
                stats.send_calls.fetch_add(1, Ordering::Relaxed);
                stats.datagrams_out.fetch_add(n as u64, Ordering::Relaxed);
                sent += n.max(1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(to = %out[sent].1, error = %e, "media datagram not sent");
                sent += 1;
            }
        }
    }
}

/// Batched sends: `sendmmsg(2)` on Linux, one `send_to` per datagram elsewhere.
mod batch {
    use std::net::SocketAddr;

    use bytes::BytesMut;
    use tokio::net::UdpSocket;

    #[cfg(target_os = "linux")]
    pub(super) fn send(socket: &UdpSocket, datagrams: &[(BytesMut, SocketAddr)]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let addrs: Vec<socket2::SockAddr> = datagrams.iter().map(|(_, to)| socket2::SockAddr::from(*to)).collect();
        let mut iovecs: Vec<libc::iovec> = datagrams
            .iter()
            .map(|(bytes, _)| libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(&addrs)
            .map(|(iov, addr)| {
                // SAFETY: an all-zero msghdr is a valid "no name, no control" header.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                hdr.msg_namelen = addr.len();
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: hdr, msg_len: 0 }
            })
            .collect();
        // SAFETY: `headers` points into `iovecs`, `addrs` and `datagrams`, all alive and unmoved
        // for the duration of the call; the kernel only reads them (and writes `msg_len`).
        let n = unsafe {
            libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), headers.len() as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn send(socket: &UdpSocket, datagrams: &[(BytesMut, SocketAddr)]) -> std::io::Result<usize> {
        let (bytes, to) = &datagrams[0];
        socket.try_send_to(bytes, *to).map(|_| 1)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::peer::{Peer, PeerConfig};

    #[tokio::test]
    async fn a_connection_that_panics_is_failed_alone() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let socket = MediaSocket::bind(loopback, 0, None).await.unwrap();
        let config = PeerConfig::local(loopback);
        let (doomed, mut doomed_channels) = Peer::on_socket(&config, &socket).await.unwrap();
        let (survivor, _survivor_channels) = Peer::on_socket(&config, &socket).await.unwrap();
        let survivor_id = survivor.socket_id().unwrap();
        socket.call(survivor_id, |_, _| Ok(())).await.unwrap(); // both registrations are through
        assert_eq!(socket.stats().peers.load(Ordering::Relaxed), 2);

        // Standing in for a bug in the WebRTC stack reached by some input.
        let id = doomed.socket_id().unwrap();
        let answer = socket.call(id, |_, _| -> Result<()> { panic!("stack bug") }).await;
        assert!(matches!(answer, Err(MediaError::Closed)), "the caller hears the peer is gone: {answer:?}");
        let event = tokio::time::timeout(Duration::from_secs(5), doomed_channels.events.recv()).await.unwrap();
        assert_eq!(event, Some(PeerEvent::StateChanged(PeerState::Failed)), "its owner hears it failed");
        assert_eq!(socket.stats().peers.load(Ordering::Relaxed), 1);

        // The driver and the other connection go on.
        assert!(socket.call(survivor_id, |slot, _| Ok(slot.pc.local_description().is_none())).await.unwrap());
        assert!(doomed.local_description().await.is_none());
        survivor.close().await.unwrap();
        doomed.close().await.unwrap();
    }
}
