//! One UDP port for every media peer of a node: driver threads that own the socket and every
//! server-side connection (sans-IO `rtc::RTCPeerConnection`s), demultiplex datagrams to them
//! ([`crate::demux`]), and send what they produce in batches (`sendmmsg`, one system call for
//! many datagrams to many peers).
//!
//! Why: production SFUs expose one port (firewalls, load balancers), and webrtc-rs's own driver
//! spends one loop iteration and one `sendmsg` per packet per peer. Here one loop iteration
//! takes every queued command and every readable datagram, lets each touched connection produce
//! its output, and flushes it all with as few system calls as the kernel allows.
//!
//! Shape: [`MediaSocket::bind`] starts one driver per thread (`threads`, one per core by
//! default), each on a thread of its own with its own socket bound to the same port
//! (`SO_REUSEPORT`: the kernel spreads remote addresses over them). A connection belongs to one
//! driver, chosen by [`crate::placement`] (a meeting's connections together until the meeting
//! is large, then spread); its id names the driver. [`crate::peer::Peer::on_socket`] registers
//! a connection and talks to it through [`Command`]s — signalling runs as a closure on the
//! driver ([`PeerSlot`] is the connection plus what the driver knows of it), RTP writes are
//! plain messages. A datagram read by a driver that does not own its connection (the kernel
//! chose by address, not by meeting) is handed to the owner through a shared [`Directory`] of
//! ufrags and addresses. A published packet is forwarded by the owner of its publisher: into
//! its own connections in the same turn, to another driver's as one batch per packet. Events
//! and published RTP leave through the peer's own channels or sink, as with a per-peer socket.
//!
//! The driver works with the connection types of [`crate::track`] (the peer's shared state, its
//! events and packets, outgoing tracks) and never with the peer adapter itself: the adapter
//! builds on this module, not the other way round. An outgoing track reaches its driver's queue
//! through `track::SocketLink`, implemented here.
//!
//! Limits: ICE over UDP only (no TCP candidates); host candidates only (a public address is
//! advertised through `public_ip`, 1:1 NAT).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCIceGatheringState};
use rtc::rtp;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{Codec, MediaKind};
use crate::demux;
use crate::error::{MediaError, Result};
use crate::latency::{LatencyHistogram, LatencySnapshot};
use crate::placement::{self, PeerId, Placement, thread_of};
use crate::sdp;
use crate::track::{IncomingRtp, OutTrack, Outbox, PeerEvent, PeerShared, PeerState, SocketLink, feedback_events};

/// Commands queued to a driver; it drains up to this many per loop iteration.
const COMMAND_BATCH: usize = 1024;
/// Datagrams read per loop iteration before the driver turns to its other work.
const RECV_BATCH: usize = 64;
/// Capacity of a driver's media queue: writers wait when it is full (outbound back-pressure).
const COMMAND_QUEUE: usize = 8192;
/// Largest datagram accepted (above any path MTU).
const MAX_DATAGRAM: usize = 2048;
/// Socket buffers asked of the kernel: a burst of a fan-out to hundreds of peers fits.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// How many times one flush lets a connection run timers that are already due before moving on.
const IMMEDIATE_ROUNDS: u32 = 4;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 256;

/// Tells one node's sockets apart (a forwarded packet is written inline only into a connection
/// of the same socket).
static NEXT_SOCKET_KEY: AtomicU64 = AtomicU64::new(1);

/// How to bind a [`MediaSocket`].
#[derive(Debug, Clone)]
pub struct SocketOptions {
    pub ip: IpAddr,
    /// 0: one the system picks.
    pub port: u16,
    /// What candidates advertise when the node sits behind a 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// Driver threads, each with its own socket on the port ([`default_threads`]).
    pub threads: usize,
    /// A meeting's connections share one driver until it has this many
    /// ([`placement::DEFAULT_SPREAD_AT`]).
    pub spread_at: usize,
}

impl SocketOptions {
    pub fn new(ip: IpAddr, port: u16, public_ip: Option<IpAddr>) -> Self {
        Self { ip, port, public_ip, threads: default_threads(), spread_at: placement::DEFAULT_SPREAD_AT }
    }
}

/// One driver per core (the SRTP and interceptor work of a fan-out is what fills them), at most
/// [`placement::MAX_THREADS`]; one where the kernel cannot spread a port over sockets.
pub fn default_threads() -> usize {
    if cfg!(target_os = "linux") {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(placement::MAX_THREADS)
    } else {
        1
    }
}

/// The node's media socket. Dropping the last handle stops the drivers and closes every
/// connection on them.
pub struct MediaSocket {
    drivers: Vec<DriverHandle>,
    local_addr: SocketAddr,
    advertised: SocketAddr,
    key: u64,
    placement: Mutex<Placement>,
    directory: Arc<Directory>,
}

/// How the socket (and the other drivers) reach one driver.
struct DriverHandle {
    /// Signalling and lifecycle (open, calls, close): few, never stuck behind media.
    control: mpsc::UnboundedSender<Command>,
    /// RTP writes, forwarded batches, handed-over datagrams: bounded.
    media: mpsc::Sender<Command>,
    stats: Arc<SocketStats>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for MediaSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSocket")
            .field("local_addr", &self.local_addr)
            .field("advertised", &self.advertised)
            .field("threads", &self.drivers.len())
            .finish()
    }
}

/// Counters of one driver, written only by it.
#[derive(Debug, Default)]
struct SocketStats {
    peers: AtomicUsize,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    send_calls: AtomicU64,
    unclaimed: AtomicU64,
    refused: AtomicU64,
    handed_over: AtomicU64,
    forwarded_inline: AtomicU64,
    forwarded_across: AtomicU64,
    dropped_across: AtomicU64,
    forward_latency: LatencyHistogram,
}

/// The socket's counters at one moment, summed over its drivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketStatsSnapshot {
    /// Connections registered and not yet closed.
    pub peers: usize,
    /// Of `peers`, on each driver thread.
    pub peers_per_thread: Vec<usize>,
    /// Remote addresses the connections are known by (back to 0 once every peer is gone).
    pub addresses: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// `sendmmsg` calls (datagrams_out / send_calls is the batching achieved).
    pub send_calls: u64,
    /// Datagrams from an address no connection claims (not a STUN check naming one of ours).
    pub unclaimed: u64,
    /// Datagrams a connection refused (bad DTLS, SRTP authentication failure, …).
    pub refused: u64,
    /// Datagrams read by one driver and handed to the driver owning their connection.
    pub handed_over: u64,
    /// RTP packets forwarded within the driver's turn: published on one connection and written
    /// into another of the same driver by its [`RtpSink`](crate::track::RtpSink), no queue
    /// between.
    pub forwarded_inline: u64,
    /// RTP packets forwarded into another driver's connection (one queued batch per published
    /// packet and driver).
    pub forwarded_across: u64,
    /// Of those, dropped because the other driver's queue was full.
    pub dropped_across: u64,
    /// Of each packet forwarded (inline or across): from reading the datagram that carried it
    /// to the return of the system call that sent it on (the packet's time in this node, less
    /// any wait in the socket's receive buffer). When a turn reads several datagrams of one
    /// connection, the first one's time counts for all (an upper bound).
    pub forward_latency: LatencySnapshot,
}

impl MediaSocket {
    /// Binds `ip:port` (port 0: one the system picks) with the default number of driver threads.
    /// `public_ip` is what candidates advertise when the node sits behind a 1:1 NAT.
    pub async fn bind(ip: IpAddr, port: u16, public_ip: Option<IpAddr>) -> Result<Arc<MediaSocket>> {
        Self::bind_with(SocketOptions::new(ip, port, public_ip)).await
    }

    /// Binds the port once per driver thread and starts the drivers.
    pub async fn bind_with(options: SocketOptions) -> Result<Arc<MediaSocket>> {
        let SocketOptions { ip, port, public_ip, threads, spread_at } = options;
        let threads = threads.clamp(1, placement::MAX_THREADS);
        let bind_error = |e: std::io::Error| MediaError::Bind { ip, from: port, to: port, detail: e.to_string() };
        if port != 0 {
            // Sockets that share a port with SO_REUSEPORT would also share it with anyone else
            // who asked for it so: make sure nobody holds it first.
            drop(std::net::UdpSocket::bind((ip, port)).map_err(bind_error)?);
        }
        let first = reuseport_socket(SocketAddr::new(ip, port)).map_err(bind_error)?;
        let local_addr = first.local_addr().map_err(bind_error)?;
        let mut sockets = vec![first];
        for _ in 1..threads {
            sockets.push(reuseport_socket(local_addr).map_err(bind_error)?);
        }
        if threads > 1
            && let Err(e) = steer_to_first(&sockets[0])
        {
            // The kernel then spreads remote addresses over the sockets: it still works, but a
            // peer that sends from two addresses may have its datagrams taken in another order.
            tracing::warn!(error = %e, "media socket: cannot steer every datagram to the first driver");
        }
        let advertised = SocketAddr::new(public_ip.unwrap_or(ip), local_addr.port());
        let key = NEXT_SOCKET_KEY.fetch_add(1, Ordering::Relaxed);
        let directory = Arc::new(Directory::default());
        let mut controls = Vec::new();
        let mut medias = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..threads {
            let (control, control_rx) = mpsc::unbounded_channel();
            let (media, media_rx) = mpsc::channel(COMMAND_QUEUE);
            controls.push(control);
            medias.push(media);
            receivers.push((control_rx, media_rx));
        }
        let links: Arc<[mpsc::Sender<Command>]> = medias.clone().into();
        let mut drivers = Vec::new();
        for (thread, ((socket, (control_rx, media_rx)), (control, media))) in
            sockets.into_iter().zip(receivers).zip(controls.into_iter().zip(medias)).enumerate()
        {
            let stats = Arc::new(SocketStats::default());
            let driver =
                Driver::new(thread, key, local_addr, Arc::clone(&stats), Arc::clone(&directory), links.clone());
            let task = spawn_driver(thread, socket, driver, control_rx, media_rx).await.map_err(bind_error)?;
            drivers.push(DriverHandle { control, media, stats, task });
        }
        tracing::info!(%local_addr, %advertised, threads, "media socket bound: one UDP port for every peer");
        Ok(Arc::new(MediaSocket {
            drivers,
            local_addr,
            advertised,
            key,
            placement: Mutex::new(Placement::new(threads, spread_at)),
            directory,
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

    /// Driver threads.
    pub fn threads(&self) -> usize {
        self.drivers.len()
    }

    /// The drivers' counters, summed.
    pub fn stats(&self) -> SocketStatsSnapshot {
        let mut total = SocketStatsSnapshot {
            peers: 0,
            peers_per_thread: Vec::new(),
            addresses: self.directory.addrs.read().unwrap_or_else(PoisonError::into_inner).len(),
            datagrams_in: 0,
            datagrams_out: 0,
            send_calls: 0,
            unclaimed: 0,
            refused: 0,
            handed_over: 0,
            forwarded_inline: 0,
            forwarded_across: 0,
            dropped_across: 0,
            forward_latency: LatencySnapshot { counts: Vec::new() },
        };
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for d in &self.drivers {
            let s = &d.stats;
            let peers = s.peers.load(Ordering::Relaxed);
            total.peers += peers;
            total.peers_per_thread.push(peers);
            total.datagrams_in += read(&s.datagrams_in);
            total.datagrams_out += read(&s.datagrams_out);
            total.send_calls += read(&s.send_calls);
            total.unclaimed += read(&s.unclaimed);
            total.refused += read(&s.refused);
            total.handed_over += read(&s.handed_over);
            total.forwarded_inline += read(&s.forwarded_inline);
            total.forwarded_across += read(&s.forwarded_across);
            total.dropped_across += read(&s.dropped_across);
            total.forward_latency = total.forward_latency.merged(&s.forward_latency.snapshot());
        }
        total
    }

    /// Identifies this socket among the node's.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// A new connection's id, placed with the rest of meeting `group` ([`crate::placement`]).
    pub(crate) fn admit(&self, group: Option<&str>) -> PeerId {
        self.placement.lock().unwrap_or_else(PoisonError::into_inner).admit(group)
    }

    fn driver(&self, id: PeerId) -> &DriverHandle {
        // Ids come from `admit`, whose threads are ours; `min` keeps a stray one in bounds.
        &self.drivers[thread_of(id).min(self.drivers.len() - 1)]
    }

    pub(crate) async fn send(&self, command: Command) -> Result<()> {
        match command {
            Command::Rtp { id, .. } => self.driver(id).media.send(command).await.map_err(|_| MediaError::Closed),
            Command::Open { id, .. } | Command::Call { id, .. } => {
                self.driver(id).control.send(command).map_err(|_| MediaError::Closed)
            }
            Command::Close { id } => {
                self.placement.lock().unwrap_or_else(PoisonError::into_inner).release(id);
                self.driver(id).control.send(command).map_err(|_| MediaError::Closed)
            }
            // Only drivers send these, to each other.
            Command::Datagram { .. } | Command::Forwarded { .. } => Err(MediaError::Closed),
        }
    }

    /// Queues an RTP write without waiting; `false` if the queue is full or the driver gone.
    pub(crate) fn try_send_media(&self, command: Command) -> bool {
        match &command {
            Command::Rtp { id, .. } => self.driver(*id).media.try_send(command).is_ok(),
            _ => false,
        }
    }

    /// Closes connection `id` without waiting (for `Drop`).
    pub(crate) fn close_soon(&self, id: PeerId) {
        self.placement.lock().unwrap_or_else(PoisonError::into_inner).release(id);
        let _ = self.driver(id).control.send(Command::Close { id });
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

/// How an outgoing track on this socket reaches its connection's driver.
impl SocketLink for MediaSocket {
    fn send_rtp(
        &self,
        id: PeerId,
        sender: RTCRtpSenderId,
        packet: rtp::Packet,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.send(Command::Rtp { id, sender, packet }))
    }

    fn try_send_rtp(&self, id: PeerId, sender: RTCRtpSenderId, packet: rtp::Packet) -> bool {
        self.try_send_media(Command::Rtp { id, sender, packet })
    }
}

impl Drop for MediaSocket {
    fn drop(&mut self) {
        for d in &self.drivers {
            d.task.abort();
        }
    }
}

/// A UDP socket on `addr` that shares its port with the socket's other drivers.
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Every datagram to the port goes to the group's first socket (a classic BPF program that
/// answers "index 0"): one driver reads them all, in the order they came, and hands each to the
/// driver owning its connection; the other sockets only send. Reading on several sockets would
/// let the kernel spread a peer's addresses over drivers, and a browser that sends from two
/// addresses at once (a second candidate pair, renomination) could have its ICE checks taken
/// out of order and end up on a pair it no longer listens on.
#[cfg(target_os = "linux")]
fn steer_to_first(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic; not exported by `libc` for every target).
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let mut program = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let fprog = libc::sock_fprog { len: program.len() as libc::c_ushort, filter: program.as_mut_ptr() };
    // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies them.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn steer_to_first(_socket: &std::net::UdpSocket) -> std::io::Result<()> {
    Err(std::io::Error::other("one driver thread only where the kernel cannot steer"))
}

/// Runs `driver` on a thread of its own, with a single-threaded runtime: drivers are busy
/// enough to want a core each, and a thread of their own keeps the runtime from running two on
/// one worker. Returns once it runs.
async fn spawn_driver(
    thread: usize,
    socket: std::net::UdpSocket,
    driver: Driver,
    control: mpsc::UnboundedReceiver<Command>,
    media: mpsc::Receiver<Command>,
) -> std::io::Result<tokio::task::AbortHandle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (started, running) = oneshot::channel();
    std::thread::Builder::new().name(format!("parley-media-{thread}")).spawn(move || {
        let task = runtime.spawn(async move {
            match UdpSocket::from_std(socket) {
                Ok(socket) => driver.run(socket, control, media).await,
                Err(e) => tracing::error!(error = %e, thread, "media driver cannot use its socket"),
            }
        });
        let _ = started.send(task.abort_handle());
        let _ = runtime.block_on(task);
    })?;
    running.await.map_err(|_| std::io::Error::other("media driver thread ended at start"))
}

/// Who owns which ufrag and which remote address, for every driver of a socket. Read for each
/// datagram, written when a connection opens, learns an address or closes.
#[derive(Debug, Default)]
struct Directory {
    ufrags: RwLock<HashMap<String, PeerId>>,
    addrs: RwLock<HashMap<SocketAddr, PeerId>>,
}

impl Directory {
    fn by_ufrag(&self, ufrag: &str) -> Option<PeerId> {
        self.ufrags.read().unwrap_or_else(PoisonError::into_inner).get(ufrag).copied()
    }

    fn by_addr(&self, addr: &SocketAddr) -> Option<PeerId> {
        self.addrs.read().unwrap_or_else(PoisonError::into_inner).get(addr).copied()
    }

    fn add_ufrag(&self, ufrag: String, id: PeerId) {
        self.ufrags.write().unwrap_or_else(PoisonError::into_inner).insert(ufrag, id);
    }

    /// Moves `addr` to `id`; returns whom it belonged to.
    fn claim_addr(&self, addr: SocketAddr, id: PeerId) -> Option<PeerId> {
        self.addrs.write().unwrap_or_else(PoisonError::into_inner).insert(addr, id)
    }

    /// `addr` is `id`'s unless it is already someone's.
    fn learn_addr(&self, addr: SocketAddr, id: PeerId) {
        self.addrs.write().unwrap_or_else(PoisonError::into_inner).entry(addr).or_insert(id);
    }

    fn forget(&self, id: PeerId, ufrags: &[String], addrs: &[SocketAddr]) {
        let mut by_ufrag = self.ufrags.write().unwrap_or_else(PoisonError::into_inner);
        for ufrag in ufrags {
            if by_ufrag.get(ufrag) == Some(&id) {
                by_ufrag.remove(ufrag);
            }
        }
        drop(by_ufrag);
        let mut by_addr = self.addrs.write().unwrap_or_else(PoisonError::into_inner);
        for addr in addrs {
            if by_addr.get(addr) == Some(&id) {
                by_addr.remove(addr);
            }
        }
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
    /// A datagram another driver read for a connection of this one; `claimed`: it is a STUN
    /// check naming the connection that moved its address to it.
    Datagram { id: PeerId, from: SocketAddr, data: BytesMut, read_at: Instant, claimed: bool },
    /// Packets another driver's sink forwarded into this one's connections; `received`: when
    /// the datagram that carried them in was read.
    Forwarded { writes: Vec<(OutTrack, rtp::Packet)>, received: Option<Instant> },
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
    /// Where its DTLS and SRTP go: the pair its client nominated last.
    nominations: demux::Nominations,
    /// RTP writes the stack refused (a sender gone, not yet started, …).
    refused_writes: u64,
}

impl PeerSlot {
    /// Hands the connection's events to the peer's channels and its RTP to the peer's sink (its
    /// forwarded packets into `outbox`) or queue.
    fn drain_events(&mut self, outbox: &mut Outbox) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceCandidateEvent(e) => match e.candidate.to_json() {
                    Ok(init) => self.shared.emit(PeerEvent::LocalCandidate(parley_core::protocol::IceCandidate {
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
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(RTCIceConnectionState::Connected) => {
                    self.shared.emit(PeerEvent::IceConnected);
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
                // Only keyframe requests and NACKs reach here (our forwarder marks them); about
                // our outgoing tracks, whose ids are the router's.
                RTCMessage::RtcpPacket(track_id, packets) if !self.remote.contains_key(&track_id) => {
                    for event in feedback_events(&track_id, &packets) {
                        self.shared.emit(event);
                    }
                }
                _ => {}
            }
        }
    }

    /// Local ufrags in the current local description not yet known.
    fn new_ufrags(&mut self) -> Vec<String> {
        let Some(sdp) = self.pc.local_description().map(|d| d.sdp.clone()) else { return Vec::new() };
        let mut found = Vec::new();
        for ufrag in sdp::ice_ufrags(&sdp) {
            let ufrag = ufrag.to_owned();
            if !self.ufrags.contains(&ufrag) && !found.contains(&ufrag) {
                found.push(ufrag);
            }
        }
        self.ufrags.extend(found.iter().cloned());
        found
    }
}

/// One driver's state: its connections, and how to reach the socket's other drivers.
struct Driver {
    /// Its index among the socket's drivers ([`thread_of`] its connections' ids).
    thread: usize,
    /// The socket's [`MediaSocket::key`].
    key: u64,
    local_addr: SocketAddr,
    stats: Arc<SocketStats>,
    directory: Arc<Directory>,
    /// Every driver's media queue, this one's included.
    links: Arc<[mpsc::Sender<Command>]>,
    slots: HashMap<PeerId, PeerSlot>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    dirty: Vec<PeerId>,
    out: Vec<(BytesMut, SocketAddr)>,
    /// What the connection being flushed forwards to others, written right after it.
    outbox: Outbox,
    /// For each packet forwarded whose datagram is in `out`: when the datagram that carried it
    /// in was read.
    forwarded_from: Vec<Instant>,
    /// Per driver: what the connection being flushed forwards into that driver's connections.
    across: Vec<Vec<(OutTrack, rtp::Packet)>>,
    /// What it forwards into this driver's connections (kept to reuse its allocation).
    mine: Vec<(PeerId, RTCRtpSenderId, rtp::Packet)>,
}

impl Driver {
    fn new(
        thread: usize,
        key: u64,
        local_addr: SocketAddr,
        stats: Arc<SocketStats>,
        directory: Arc<Directory>,
        links: Arc<[mpsc::Sender<Command>]>,
    ) -> Self {
        Self {
            thread,
            key,
            local_addr,
            stats,
            directory,
            across: vec![Vec::new(); links.len()],
            mine: Vec::new(),
            links,
            slots: HashMap::new(),
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
                    Ok((n, from)) => self.datagram(from, &buf[..n], Instant::now()),
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
                    Ok((n, from)) => self.datagram(from, &buf[..n], Instant::now()),
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
                self.directory.add_ufrag(ufrag.clone(), id);
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
                        nominations: demux::Nominations::default(),
                        refused_writes: 0,
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
                    self.directory.add_ufrag(ufrag, id);
                }
                self.touch(id);
            }
            Command::Rtp { id, sender, packet } => self.write_rtp(id, sender, packet, now),
            Command::Datagram { id, from, data, read_at, claimed } => self.receive(id, from, data, read_at, claimed),
            Command::Forwarded { writes, received } => {
                for (track, packet) in writes {
                    let Some((_, id, sender)) = track.socket_target() else { continue };
                    self.write_forwarded(id, sender, packet, now, received);
                }
            }
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
            let refused = match slot.pc.rtp_sender(sender) {
                None => "no such sender".to_owned(),
                Some(mut rtp_sender) => match rtp_sender.write_rtp(now, packet) {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                },
            };
            // Logged on the 1st, 2nd, 4th, 8th… refusal of a connection: seen, never a flood.
            slot.refused_writes += 1;
            if slot.refused_writes.is_power_of_two() {
                tracing::debug!(peer = id, ?sender, refused = slot.refused_writes, reason = %refused, "rtp write refused");
            }
        });
        self.touch(id);
    }

    /// Writes what the last flushed connection's sink forwarded: to the socket's other drivers
    /// first, as one batch each (they encrypt theirs while this one encrypts its own), then
    /// into this driver's connections, and elsewhere (a connection with a socket of its own)
    /// without waiting. `received`: when that connection's datagrams were read.
    fn write_outbox(&mut self, now: Instant, received: Option<Instant>) {
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut mine = std::mem::take(&mut self.mine);
        for (track, packet) in outbox.drain() {
            match track.socket_target() {
                Some((key, id, sender)) if key == self.key && thread_of(id) == self.thread => {
                    mine.push((id, sender, packet));
                }
                Some((key, id, _)) if key == self.key && thread_of(id) < self.across.len() => {
                    self.across[thread_of(id)].push((track, packet));
                }
                _ => track.send_detached(packet),
            }
        }
        self.outbox = outbox;
        for thread in 0..self.across.len() {
            if self.across[thread].is_empty() {
                continue;
            }
            let writes = std::mem::take(&mut self.across[thread]);
            let n = writes.len() as u64;
            match self.links[thread].try_send(Command::Forwarded { writes, received }) {
                Ok(()) => self.stats.forwarded_across.fetch_add(n, Ordering::Relaxed),
                Err(refused) => {
                    if let Command::Forwarded { writes, .. } = refused.into_inner() {
                        for (track, _) in writes {
                            track.count_dropped();
                        }
                    }
                    self.stats.dropped_across.fetch_add(n, Ordering::Relaxed)
                }
            };
        }
        self.stats.forwarded_inline.fetch_add(mine.len() as u64, Ordering::Relaxed);
        for (id, sender, packet) in mine.drain(..) {
            self.write_forwarded(id, sender, packet, now, received);
        }
        self.mine = mine;
    }

    /// Writes a forwarded packet into connection `id`, to be timed from `received` (when the
    /// datagram that carried it in was read) once it is sent.
    fn write_forwarded(
        &mut self,
        id: PeerId,
        sender: RTCRtpSenderId,
        packet: rtp::Packet,
        now: Instant,
        received: Option<Instant>,
    ) {
        self.write_rtp(id, sender, packet, now);
        if let Some(at) = received
            && let Some(slot) = self.slots.get_mut(&id)
        {
            slot.forwarded_from.push(at);
        }
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
        self.directory.forget(id, &slot.ufrags, &slot.addrs);
        self.stats.peers.fetch_sub(1, Ordering::Relaxed);
        Some(slot)
    }

    /// A datagram this driver read: handled here if its connection is this driver's, else
    /// handed to the driver that owns it.
    fn datagram(&mut self, from: SocketAddr, data: &[u8], read_at: Instant) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        // A STUN check names its connection outright (and may move an address to a new one: a
        // client that reconnected from the same port); anything else goes by address.
        let claimed = demux::stun_local_ufrag(data).and_then(|ufrag| self.directory.by_ufrag(ufrag));
        let Some(id) = claimed.or_else(|| self.directory.by_addr(&from)) else {
            self.stats.unclaimed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // The address is the connection's from now on, for every driver at once: the datagrams
        // right behind this one must not wait for its owner to take it.
        let claimed = claimed.is_some() && self.directory.claim_addr(from, id) != Some(id);
        let data = BytesMut::from(data);
        let owner = thread_of(id);
        if owner == self.thread {
            self.receive(id, from, data, read_at, claimed);
            return;
        }
        let handed = Command::Datagram { id, from, data, read_at, claimed };
        let handed = self.links.get(owner).is_some_and(|link| link.try_send(handed).is_ok());
        // Otherwise the owner is swamped (or gone): the datagram is lost, as UDP allows.
        let counter = if handed { &self.stats.handed_over } else { &self.stats.refused };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A datagram for connection `id`, which is this driver's. `claimed`: a STUN check naming
    /// it moved `from` to it in the directory just now (the connection keeps the address, to
    /// forget it when it closes).
    fn receive(&mut self, id: PeerId, from: SocketAddr, data: BytesMut, read_at: Instant, claimed: bool) {
        let Some(slot) = self.slots.get_mut(&id) else {
            // Closed since it was read: the address it was given goes with it.
            if claimed {
                self.directory.forget(id, &[], &[from]);
            }
            self.stats.unclaimed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if claimed && !slot.addrs.contains(&from) {
            slot.addrs.push(from);
        }
        slot.nominations.received(from, &data);
        slot.received_at.get_or_insert(read_at);
        let message = TaggedBytesMut {
            // The stack's clock must not run backwards: a datagram handed over from another
            // driver was read before ones this driver has already given the connection.
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: data,
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
                        let to = slot.nominations.route(&w.message, w.transport.peer_addr);
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
            self.directory.learn_addr(to, id);
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
    use crate::track::OutTrackSpec;

    #[tokio::test]
    async fn a_connection_that_panics_is_failed_alone() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let socket = MediaSocket::bind(loopback, 0, None).await.unwrap();
        let config = PeerConfig::local(loopback);
        let (doomed, mut doomed_channels) = Peer::on_socket(&config, &socket, None).await.unwrap();
        let (survivor, _survivor_channels) = Peer::on_socket(&config, &socket, None).await.unwrap();
        let survivor_id = survivor.socket_id().unwrap();
        let id = doomed.socket_id().unwrap();
        // Both registrations are through (each driver takes its commands in order).
        socket.call(survivor_id, |_, _| Ok(())).await.unwrap();
        socket.call(id, |_, _| Ok(())).await.unwrap();
        assert_eq!(socket.stats().peers, 2);

        // Standing in for a bug in the WebRTC stack reached by some input.
        let answer = socket.call(id, |_, _| -> Result<()> { panic!("stack bug") }).await;
        assert!(matches!(answer, Err(MediaError::Closed)), "the caller hears the peer is gone: {answer:?}");
        let event = tokio::time::timeout(Duration::from_secs(5), doomed_channels.events.recv()).await.unwrap();
        assert_eq!(event, Some(PeerEvent::StateChanged(PeerState::Failed)), "its owner hears it failed");
        assert_eq!(socket.stats().peers, 1);

        // The driver and the other connection go on.
        assert!(socket.call(survivor_id, |slot, _| Ok(slot.pc.local_description().is_none())).await.unwrap());
        assert!(doomed.local_description().await.is_none());
        survivor.close().await.unwrap();
        doomed.close().await.unwrap();
    }

    /// A driver that is not running, on thread `thread` of a `threads`-thread socket `key`,
    /// with links to the other drivers of capacity 1 (their receivers returned, none drained).
    fn idle_driver(
        thread: usize,
        threads: usize,
        key: u64,
    ) -> (Driver, Arc<SocketStats>, Arc<Directory>, Vec<mpsc::Receiver<Command>>) {
        let (links, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel(1)).unzip();
        let stats = Arc::new(SocketStats::default());
        let directory = Arc::new(Directory::default());
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let driver = Driver::new(thread, key, local, Arc::clone(&stats), Arc::clone(&directory), links.into());
        (driver, stats, directory, receivers)
    }

    #[tokio::test]
    async fn a_datagram_for_a_swamped_driver_is_dropped_and_counted_and_the_next_one_goes_through() {
        // Connection 1 is thread 1's; this driver (thread 0) reads its datagrams, as the port's
        // steering (or, without it, the kernel) may have it do.
        let (mut driver, stats, directory, mut receivers) = idle_driver(0, 2, 7);
        let id: PeerId = 1;
        assert_eq!(thread_of(id), 1);
        directory.add_ufrag("owned".into(), id);
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000));
        // The owner's queue is full.
        driver.links[1].try_send(Command::Close { id: 99 }).unwrap();

        driver.datagram(from, &stun_naming("owned"), Instant::now());
        let counted = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!((counted(&stats.refused), counted(&stats.handed_over)), (1, 0), "lost, as UDP allows, and counted");
        assert_eq!(directory.by_addr(&from), Some(id), "the address is the connection's all the same");

        // Once the owner has taken what it had, the next datagram is handed over.
        assert!(matches!(receivers[1].try_recv(), Ok(Command::Close { id: 99 })));
        driver.datagram(from, &[0x80, 96, 0, 1], Instant::now());
        assert_eq!((counted(&stats.refused), counted(&stats.handed_over)), (1, 1));
        match receivers[1].try_recv() {
            Ok(Command::Datagram { id: to, from: sender, claimed, .. }) => {
                assert_eq!((to, sender, claimed), (id, from, false), "by address, claimed already");
            }
            _ => panic!("the datagram was not handed to its connection's driver"),
        }
        assert_eq!(counted(&stats.datagrams_in), 2);
    }

    #[tokio::test]
    async fn copies_for_a_swamped_driver_are_dropped_and_counted_on_their_track() {
        let (socket, loopback) = two_driver_socket().await;
        let (subscriber, _channels) = Peer::on_socket(&PeerConfig::local(loopback), &socket, None).await.unwrap();
        let spec =
            OutTrackSpec { track_id: "cam".into(), stream_id: "publisher".into(), codec: Codec::Vp8, ssrc: 1234 };
        let track = subscriber.add_track(spec).await.unwrap();
        track.negotiated_as(96);
        let owner = thread_of(subscriber.socket_id().unwrap());
        // A driver of the same socket on the other thread forwards copies to the subscriber.
        let (mut driver, stats, _directory, mut receivers) = idle_driver(1 - owner, 2, socket.key());
        driver.links[owner].try_send(Command::Close { id: 99 }).unwrap();

        for _ in 0..3 {
            driver.outbox.write(&track, rtp::Packet::default()).unwrap();
        }
        driver.write_outbox(Instant::now(), None);
        let counted = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!((counted(&stats.dropped_across), counted(&stats.forwarded_across)), (3, 0));
        assert_eq!(track.dropped(), 3, "each lost copy counts on its track");
        assert!(driver.across.iter().all(Vec::is_empty), "nothing left behind for later");

        // With room again, the next packet's copies go as one batch.
        assert!(matches!(receivers[owner].try_recv(), Ok(Command::Close { id: 99 })));
        for _ in 0..2 {
            driver.outbox.write(&track, rtp::Packet::default()).unwrap();
        }
        driver.write_outbox(Instant::now(), None);
        assert_eq!((counted(&stats.dropped_across), counted(&stats.forwarded_across)), (3, 2));
        match receivers[owner].try_recv() {
            Ok(Command::Forwarded { writes, .. }) => {
                assert_eq!(writes.len(), 2);
                assert!(writes.iter().all(|(_, p)| p.header.ssrc == 1234 && p.header.payload_type == 96));
            }
            _ => panic!("the copies were not handed to the subscriber's driver"),
        }
        assert_eq!(track.dropped(), 3);
        subscriber.close().await.unwrap();
    }

    /// A socket on a loopback port with two driver threads, and that address.
    async fn two_driver_socket() -> (Arc<MediaSocket>, IpAddr) {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut options = SocketOptions::new(loopback, 0, None);
        options.threads = 2;
        (MediaSocket::bind_with(options).await.unwrap(), loopback)
    }

    /// A STUN binding request naming `ufrag` (no valid integrity: it claims an address, no more).
    fn stun_naming(ufrag: &str) -> Vec<u8> {
        let username = format!("{ufrag}:remote");
        crate::demux::binding_request(&[(crate::demux::ATTR_USERNAME, username.as_bytes())])
    }

    #[tokio::test]
    async fn the_first_driver_reads_every_datagram_and_hands_each_to_its_connections_driver() {
        let (socket, loopback) = two_driver_socket().await;
        assert_eq!(socket.threads(), 2);
        let config = PeerConfig::local(loopback);
        let (a, _a_channels) = Peer::on_socket(&config, &socket, None).await.unwrap();
        let (b, _b_channels) = Peer::on_socket(&config, &socket, None).await.unwrap();
        let (a_id, b_id) = (a.socket_id().unwrap(), b.socket_id().unwrap());
        assert_ne!(thread_of(a_id), thread_of(b_id), "two lone connections: one per thread");
        socket.call(b_id, |_, _| Ok(())).await.unwrap();
        socket.call(a_id, |_, _| Ok(())).await.unwrap();
        assert_eq!(socket.stats().peers_per_thread, vec![1, 1]);
        let ufrag_of = |id| {
            let ufrags = socket.directory.ufrags.read().unwrap();
            ufrags.iter().find(|(_, owner)| **owner == id).map(|(u, _)| u.clone()).expect("registered")
        };
        let (a_ufrag, b_ufrag) = (ufrag_of(a_id), ufrag_of(b_id));

        // From 32 addresses, checks naming one connection or the other: all read by the first
        // driver (the port's steering), the other connection's handed over.
        let mut remotes = Vec::new();
        for i in 0..32 {
            let remote = tokio::net::UdpSocket::bind((loopback, 0)).await.unwrap();
            let ufrag = if i % 2 == 0 { &a_ufrag } else { &b_ufrag };
            remote.send_to(&stun_naming(ufrag), socket.local_addr()).await.unwrap();
            remotes.push((remote.local_addr().unwrap(), if i % 2 == 0 { a_id } else { b_id }));
        }
        let claimed_all = async {
            loop {
                if remotes.iter().all(|(addr, id)| socket.directory.by_addr(addr) == Some(*id)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), claimed_all).await.expect("every check claimed its address");
        // Each connection's driver took every check naming it, whichever thread read it.
        for id in [a_id, b_id] {
            let want: Vec<SocketAddr> = remotes.iter().filter(|(_, owner)| *owner == id).map(|(a, _)| *a).collect();
            let mut held = Vec::new();
            for _ in 0..500 {
                held = socket.call(id, |slot, _| Ok(slot.addrs.clone())).await.unwrap();
                if want.iter().all(|a| held.contains(a)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(want.iter().all(|a| held.contains(a)), "{held:?} lacks some of {want:?}");
        }
        let stats = socket.stats();
        assert_eq!(stats.datagrams_in, 32);
        assert_eq!(stats.handed_over, 16, "{stats:?}");
        assert_eq!(stats.unclaimed, 0, "{stats:?}");

        // Closing forgets every address and ufrag, whichever thread learned them.
        a.close().await.unwrap();
        b.close().await.unwrap();
        for _ in 0..100 {
            if socket.stats().peers == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(socket.stats().peers, 0);
        assert!(socket.directory.addrs.read().unwrap().is_empty());
        assert!(socket.directory.ufrags.read().unwrap().is_empty());
    }
}
