//! `MediaRouterActor`: the SFU of one live meeting, on the node that owns the meeting. A child of
//! the meeting actor (started on the first media request, stopped with the meeting).
//!
//! It owns one [`Peer`] (server-side WebRTC connection) per participant and decides who receives
//! what; it never touches RTP itself. The packets take a shorter road, off the actor's mailbox
//! and without a queue or a task of their own: each publisher's [`Ingest`] is its peer's
//! [`RtpSink`], called on the receive path itself (the shared socket's driver, or the track's
//! reader task), and runs each subscriber's [`Egress`] in place:
//!
//! ```text
//! publisher's Peer ──IncomingRtp──▶ Ingest ──────────────▶ Egress (per subscriber) ──Outbox──▶ subscriber's Peer
//!                     (routes by the shared route   (layer choice, seq/timestamp
//!                      table; audio levels to the    rewrite, its OutTracks)
//!                      speaker detector)
//! ```
//!
//! On the shared socket a packet is received, forwarded and sent to every subscriber in one turn
//! of its driver. The actor keeps the route table and each egress's bindings current: it turns the
//! meeting's media (who publishes what, who speaks, who shares a screen) and each subscriber's
//! view into a `views::Plan`, and the difference between plans into `add_track`/`remove_track`,
//! bindings and a server offer. Negotiation is one at a time per peer: while the server's offer
//! waits for its answer, further changes wait (`renegotiate`) and a client offer is refused
//! (`negotiation_state`: the client is the polite peer).
//!
//! Signalling to a participant (offer, candidates, `active_speaker`, `media_closed`) goes
//! through the meeting actor, which knows where each connection is in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use parley_core::protocol::{ErrorCode, Event, MediaSource, ReplyData, Request, ViewKind};
use parley_media::MediaError;
use parley_media::layers::{BitrateMeter, Layer, LayerInfo, LayerSelector, PacketAction, split_budget};
use parley_media::nack_cache::{self, NackCache};
use parley_media::peer::{
    Codec, IncomingRtp, MediaKind, OutTrack, OutTrackSpec, Outbox, Peer, PeerChannels, PeerConfig, PeerEvent,
    PeerState, RtpPacket, RtpSink,
};
use parley_media::pli::MIN_KEYFRAME_REQUEST_INTERVAL;
use parley_media::rewrite::StreamRewriter;
use parley_media::speaker::SpeakerDetector;
use parley_media::views::{self, AudioPolicy, MeetingMedia, Publisher, View};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::meeting::{MeetingMsg, MeetingRef};

pub type RouterRef = ActorRef<RouterMsg>;
type Answer = Result<ReplyData, (ErrorCode, String)>;

/// How often the active speaker and every subscriber's simulcast layers are re-decided.
const SPEAKER_TICK: Duration = Duration::from_millis(200);
/// An egress waiting for a keyframe asks again after this long.
const KEYFRAME_REASK: Duration = Duration::from_millis(500);

/// Messages to a media router.
pub enum RouterMsg {
    /// A participant's media request (`offer`, `answer`, `ice_candidate`, `subscribe`).
    Request { user_id: Uuid, request: Request, reply: RpcReplyPort<Answer> },
    /// A participant left the meeting: close their peer.
    Left { user_id: Uuid },
    /// Something a participant's peer reported (`generation` tells stale peers apart).
    Peer { user_id: Uuid, generation: u64, event: PeerEvent },
    /// An egress waits for a keyframe of `key` at `layer` (`None`: not simulcast).
    KeyframeWanted { key: Arc<str>, layer: Option<Layer> },
    /// A keyframe request that the throttle held back: its second is over.
    DeferredKeyframe { key: Arc<str>, layer: Option<Layer> },
    /// Time to re-decide the active speaker.
    Tick,
    /// Counters, for the admin API and tests.
    Stats(RpcReplyPort<RouterStats>),
    /// Fault injection (drills, tests): panic, as a bug would.
    Crash,
}

impl ractor::Message for RouterMsg {}

/// What a router reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub peers: u32,
    pub published_tracks: u32,
    pub forwarded_packets: u64,
    pub dropped_packets: u64,
    pub retransmitted_packets: u64,
    pub not_retransmitted_packets: u64,
}

pub struct RouterArgs {
    pub meeting_id: Uuid,
    pub meeting: MeetingRef,
    pub config: Arc<PeerConfig>,
    /// Where to publish the peer count (the node's meeting table).
    pub peers_gauge: Arc<AtomicU32>,
}

pub struct MediaRouterActor;

/// One received packet on its way to the subscribers of its track.
struct Forward {
    key: Arc<str>,
    ssrc: u32,
    layer: Option<Layer>,
    keyframe: bool,
    packet: parley_media::peer::RtpPacket,
}

/// Who receives each published track: read by every publisher's [`Ingest`] on every packet,
/// written by the actor on every plan change.
#[derive(Default)]
struct Routes {
    by_track: HashMap<(Uuid, Arc<str>), Route>,
}

struct Route {
    key: Arc<str>,
    codec: Codec,
    subscribers: Arc<[Subscriber]>,
    rates: Arc<LayerRates>,
    /// Video only: the packets forwarded lately, for NACKs.
    cache: Option<Arc<PacketCache>>,
}

/// The packets of one published video track forwarded lately, by SSRC (one stream per simulcast
/// layer) and sequence number: what subscribers' NACKs are answered from. One entry per
/// published packet, whatever the number of subscribers (the payload is shared, not copied).
type PacketCache = Mutex<HashMap<u32, NackCache<RtpPacket>>>;

/// One subscriber of a route.
#[derive(Clone)]
struct Subscriber {
    user: Uuid,
    egress: Arc<Egress>,
    /// The simulcast layers it needs now (bits of [`layer_bit`]): the one it receives and the
    /// one it is switching to. Set by its egress.
    wants: Arc<AtomicU8>,
}

/// Every layer: what a subscriber of a stream without simulcast wants.
const ALL_LAYERS: u8 = 0b111;

fn layer_bit(layer: Option<Layer>) -> u8 {
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
struct LayerRates([AtomicU64; 3]);

impl LayerRates {
    fn slot(&self, layer: Layer) -> &AtomicU64 {
        &self.0[layer_index(layer)]
    }
}

fn layer_index(layer: Layer) -> usize {
    match layer {
        Layer::Low => 0,
        Layer::Mid => 1,
        Layer::High => 2,
    }
}

/// Counters shared by the ingests and egresses.
#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// Packets sent again for a NACK, and NACKed packets no longer cached (or never sent).
    retransmitted: AtomicU64,
    not_retransmitted: AtomicU64,
}

/// A published track (camera, microphone or screen) of one participant.
struct Published {
    key: Arc<str>,
    /// Video only: what its subscribers' NACKs are answered from (shared with its route).
    cache: Option<Arc<PacketCache>>,
    source: MediaSource,
    /// What it carries; its subscribers get an outgoing track of the same codec.
    codec: Codec,
    /// SSRC → simulcast layer (`None` without simulcast).
    ssrcs: BTreeMap<u32, Option<Layer>>,
    rates: Arc<LayerRates>,
}

impl Published {
    fn layers(&self) -> Vec<Layer> {
        let mut v: Vec<Layer> = self.ssrcs.values().flatten().copied().collect();
        v.sort();
        v.dedup();
        v
    }
}

struct Member {
    peer: Arc<Peer>,
    generation: u64,
    egress: Arc<Egress>,
    tasks: Vec<AbortHandle>,
    /// What the client said each of its tracks is (by msid track id).
    sources: BTreeMap<String, MediaSource>,
    /// Its published tracks that have sent packets, by msid track id.
    published: HashMap<Arc<str>, Published>,
    view: View,
    audio: AudioPolicy,
    /// What it receives: key → (outgoing track, tile height of a video track).
    out: HashMap<Arc<str>, (OutTrack, Option<u32>)>,
    /// An offer of ours awaits the client's answer.
    offer_pending: bool,
    /// Something changed while our offer was pending: offer again after the answer.
    renegotiate: bool,
    /// Video tracks added for it whose publishers are asked for a keyframe once it answers
    /// (before that it could not decode one).
    awaiting_keyframe: Vec<Arc<str>>,
    /// The DTLS fingerprint of the client's connection, from its last accepted offer.
    fingerprint: Option<String>,
}

impl Member {
    fn source_of(&self, track_id: &str, kind: MediaKind) -> MediaSource {
        if let Some(s) = self.sources.get(track_id) {
            return *s;
        }
        let taken = |s: MediaSource| self.published.values().any(|p| p.source == s);
        match kind {
            MediaKind::Audio => MediaSource::Microphone,
            MediaKind::Video if taken(MediaSource::Camera) => MediaSource::Screen,
            MediaKind::Video => MediaSource::Camera,
        }
    }
}

pub struct RouterState {
    meeting_id: Uuid,
    meeting: MeetingRef,
    config: Arc<PeerConfig>,
    members: HashMap<Uuid, Member>,
    /// Participants in the order they first connected media (gallery order).
    order: Vec<Uuid>,
    routes: Arc<RwLock<Routes>>,
    speaker: Arc<Mutex<SpeakerDetector<Uuid>>>,
    /// Loudest first.
    speakers: Vec<Uuid>,
    generations: u64,
    counters: Arc<Counters>,
    peers_gauge: Arc<AtomicU32>,
    myself: RouterRef,
    /// Keyframe requests waiting for the throttle's second to pass.
    deferred_keyframes: std::collections::HashSet<(Arc<str>, Option<Layer>)>,
}

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, (ErrorCode, String)> {
    Err((code, message.into()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn media_error(e: MediaError) -> (ErrorCode, String) {
    match e {
        MediaError::Sdp(_) => (ErrorCode::InvalidSdp, e.to_string()),
        MediaError::Candidate(_) => (ErrorCode::InvalidField, e.to_string()),
        MediaError::Bind { .. } => (ErrorCode::MediaUnavailable, e.to_string()),
        _ => (ErrorCode::Internal, e.to_string()),
    }
}

impl Actor for MediaRouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(&self, myself: RouterRef, args: RouterArgs) -> Result<RouterState, ActorProcessingErr> {
        myself.send_interval(SPEAKER_TICK, || RouterMsg::Tick);
        tracing::info!(meeting_id = %args.meeting_id, "media router started");
        Ok(RouterState {
            meeting_id: args.meeting_id,
            meeting: args.meeting,
            config: args.config,
            members: HashMap::new(),
            order: Vec::new(),
            routes: Arc::default(),
            speaker: Arc::new(Mutex::new(SpeakerDetector::new())),
            speakers: Vec::new(),
            generations: 0,
            counters: Arc::default(),
            peers_gauge: args.peers_gauge,
            myself: myself.clone(),
            deferred_keyframes: Default::default(),
        })
    }

    async fn post_stop(&self, _myself: RouterRef, state: &mut RouterState) -> Result<(), ActorProcessingErr> {
        let users: Vec<Uuid> = state.members.keys().copied().collect();
        for user in users {
            if let Some(m) = state.members.remove(&user) {
                close_member(m).await;
            }
        }
        state.peers_gauge.store(0, Ordering::Relaxed);
        tracing::info!(meeting_id = %state.meeting_id, "media router stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: RouterRef,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Request { user_id, request, reply } => {
                let answer = request_of(&myself, state, user_id, request).await;
                let _ = reply.send(answer);
            }
            RouterMsg::Left { user_id } => {
                if let Some(m) = state.members.remove(&user_id) {
                    tracing::info!(meeting_id = %state.meeting_id, user = %user_id, "media peer closed: left the meeting");
                    forget_member(state, user_id);
                    close_member(m).await;
                    replan_all(state).await;
                }
            }
            RouterMsg::Peer { user_id, generation, event } => {
                if state.members.get(&user_id).is_some_and(|m| m.generation == generation) {
                    peer_event(state, user_id, event).await;
                }
            }
            RouterMsg::KeyframeWanted { key, layer } => request_keyframe(state, &key, layer).await,
            RouterMsg::DeferredKeyframe { key, layer } => {
                state.deferred_keyframes.remove(&(key.clone(), layer));
                request_keyframe(state, &key, layer).await;
            }
            RouterMsg::Tick => {
                for m in state.members.values() {
                    m.egress.reselect();
                }
                speaker_tick(state).await;
            }
            RouterMsg::Stats(reply) => {
                let _ = reply.send(RouterStats {
                    peers: state.members.len() as u32,
                    published_tracks: state.members.values().map(|m| m.published.len() as u32).sum(),
                    forwarded_packets: state.counters.forwarded.load(Ordering::Relaxed),
                    dropped_packets: state.counters.dropped.load(Ordering::Relaxed)
                        + state.members.values().flat_map(|m| m.out.values()).map(|(t, _)| t.dropped()).sum::<u64>(),
                    retransmitted_packets: state.counters.retransmitted.load(Ordering::Relaxed),
                    not_retransmitted_packets: state.counters.not_retransmitted.load(Ordering::Relaxed),
                });
            }
            RouterMsg::Crash => panic!("fault injection: media router of {} crashed on purpose", state.meeting_id),
        }
        Ok(())
    }
}

async fn request_of(myself: &RouterRef, state: &mut RouterState, user: Uuid, request: Request) -> Answer {
    match request {
        Request::Offer { sdp, sources } => offer(myself, state, user, sdp, sources).await,
        Request::Answer { sdp } => {
            let Some(m) = state.members.get_mut(&user) else {
                return fail(ErrorCode::NegotiationState, "no offer of the server is pending: send an offer first");
            };
            if !m.offer_pending {
                return fail(ErrorCode::NegotiationState, "no offer of the server is pending");
            }
            m.offer_pending = false;
            if let Err(e) = m.peer.accept_answer(sdp).await {
                // Rolled back to the last agreed state; the next change offers again.
                m.renegotiate = true;
                return Err(media_error(e));
            }
            let keyframes = std::mem::take(&mut m.awaiting_keyframe);
            if std::mem::take(&mut m.renegotiate) {
                renegotiate(state, user).await;
            }
            // Its new video tracks are negotiated: it can start decoding at the next keyframe.
            for key in keyframes {
                request_keyframe(state, &key, None).await;
            }
            Ok(ReplyData::Done)
        }
        Request::IceCandidate { candidate } => {
            let Some(m) = state.members.get(&user) else {
                return fail(ErrorCode::NegotiationState, "send an offer before ICE candidates");
            };
            m.peer.add_remote_candidate(candidate).await.map_err(media_error)?;
            Ok(ReplyData::Done)
        }
        Request::Subscribe { view, page, page_size, audio } => {
            let view = match view {
                ViewKind::Gallery => View::Gallery { page, page_size },
                ViewKind::Speaker => View::Speaker,
            };
            let audio = audio.map_or(AudioPolicy::Everyone, |n| AudioPolicy::Loudest(n as usize));
            let Some(m) = state.members.get_mut(&user) else {
                return fail(ErrorCode::NegotiationState, "send an offer before choosing a view");
            };
            m.view = view;
            m.audio = audio;
            replan(state, user).await;
            Ok(ReplyData::Done)
        }
        _ => fail(ErrorCode::Internal, "not a media request"),
    }
}

/// The client's offer: its first (a new peer) or a renegotiation of its own tracks.
async fn offer(
    myself: &RouterRef,
    state: &mut RouterState,
    user: Uuid,
    sdp: String,
    sources: BTreeMap<String, MediaSource>,
) -> Answer {
    let fingerprint = dtls_fingerprint(&sdp);
    if let Some(m) = state.members.get(&user)
        && fingerprint.is_some()
        && m.fingerprint.is_some()
        && m.fingerprint != fingerprint
    {
        // Another certificate: a new connection of the client's (a reload, a reconnect before
        // the server noticed the old one die). The old peer can never recover: replace it.
        if let Some(old) = state.members.remove(&user) {
            tracing::info!(meeting_id = %state.meeting_id, %user, "media peer replaced: the client offered from a new connection");
            forget_member(state, user);
            close_member(old).await;
            replan_all(state).await;
        }
    }
    let is_new = !state.members.contains_key(&user);
    if is_new {
        let member = new_member(myself, state, user).await?;
        state.members.insert(user, member);
        if !state.order.contains(&user) {
            state.order.push(user);
        }
        state.peers_gauge.store(state.members.len() as u32, Ordering::Relaxed);
    }
    let Some(m) = state.members.get_mut(&user) else { return fail(ErrorCode::Internal, "member vanished") };
    if m.offer_pending {
        return fail(ErrorCode::NegotiationState, "the server's offer awaits your answer: answer it, then offer again");
    }
    let sending = sending_track_ids(&sdp);
    match m.peer.accept_offer(sdp).await {
        Ok(answer) => {
            m.sources.extend(sources);
            m.fingerprint = fingerprint;
            // Tracks the client stopped sending (a screen share ended, a camera removed) go
            // now, without waiting for the stack to notice.
            let stopped: Vec<Arc<str>> =
                m.published.keys().filter(|t| !sending.contains(t.as_ref())).cloned().collect();
            for track_id in stopped {
                unpublish(state, user, &track_id).await;
            }
            let Some(m) = state.members.get_mut(&user) else { return fail(ErrorCode::Internal, "member vanished") };
            if is_new {
                tracing::info!(meeting_id = %state.meeting_id, %user, "media peer connected: offer answered");
                // What the others publish: offered once the client has our answer (the reply
                // reaches it before any event, see module docs).
                replan(state, user).await;
            } else if std::mem::take(&mut m.renegotiate) {
                renegotiate(state, user).await;
            }
            Ok(ReplyData::Answer { sdp: answer })
        }
        Err(e) => {
            if is_new {
                // A peer whose first offer failed may have started ICE: replace it next time.
                if let Some(m) = state.members.remove(&user) {
                    close_member(m).await;
                }
                state.order.retain(|u| *u != user);
                state.peers_gauge.store(state.members.len() as u32, Ordering::Relaxed);
            }
            tracing::debug!(meeting_id = %state.meeting_id, %user, error = %e, "offer refused");
            Err(media_error(e))
        }
    }
}

async fn new_member(myself: &RouterRef, state: &mut RouterState, user: Uuid) -> Result<Member, (ErrorCode, String)> {
    // Its packets go to its `Ingest`; the queue stays unused.
    // On the shared port, a meeting's connections share a driver thread while it is small.
    let meeting = state.meeting_id.to_string();
    let (peer, PeerChannels { events, rtp: _ }) =
        Peer::in_meeting(&state.config, Some(&meeting)).await.map_err(media_error)?;
    let peer = Arc::new(peer);
    peer.route_rtp_to(Arc::new(Ingest {
        user,
        routes: state.routes.clone(),
        speaker: state.speaker.clone(),
        counters: state.counters.clone(),
        router: myself.clone(),
        meters: Mutex::new(HashMap::new()),
    }));
    state.generations += 1;
    let generation = state.generations;
    let egress = Arc::new(Egress {
        user,
        bindings: Mutex::new(HashMap::new()),
        estimate: peer.downlink_estimate(),
        drop_every: state.config.drop_forwarded_every,
    });
    let tasks = vec![tokio::spawn(pump_events(myself.clone(), user, generation, events)).abort_handle()];
    Ok(Member {
        peer,
        generation,
        egress,
        tasks,
        sources: BTreeMap::new(),
        published: HashMap::new(),
        view: View::Gallery { page: 0, page_size: views::MAX_PAGE_SIZE },
        audio: AudioPolicy::Everyone,
        out: HashMap::new(),
        offer_pending: false,
        renegotiate: false,
        awaiting_keyframe: Vec::new(),
        fingerprint: None,
    })
}

async fn close_member(m: Member) {
    if let Err(e) = m.peer.close().await {
        tracing::debug!(error = %e, "peer close");
    }
    // Dropping `m` aborts its tasks.
}

/// A router that panics never reaches `post_stop`: its state is dropped instead. The member's
/// tasks go with it, and with them the last handles on its peer, whose own `Drop` releases the
/// connection — nothing outlives a crashed router.
impl Drop for Member {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Takes a departing member out of the routes (as publisher and as subscriber) and the
/// speaker detector.
fn forget_member(state: &mut RouterState, user: Uuid) {
    {
        let mut routes = state.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.by_track.retain(|(publisher, _), _| *publisher != user);
        for route in routes.by_track.values_mut() {
            if route.subscribers.iter().any(|s| s.user == user) {
                route.subscribers = route.subscribers.iter().filter(|s| s.user != user).cloned().collect();
            }
        }
    }
    lock(&state.speaker).remove(&user);
    state.speakers.retain(|u| *u != user);
    state.order.retain(|u| *u != user);
    state.peers_gauge.store(state.members.len() as u32, Ordering::Relaxed);
}

async fn peer_event(state: &mut RouterState, user: Uuid, event: PeerEvent) {
    match event {
        PeerEvent::LocalCandidate(c) => {
            send_to(state, user, Event::IceCandidate { candidate: c });
        }
        PeerEvent::StateChanged(s @ (PeerState::Failed | PeerState::Closed)) => {
            // Ours to close only after taking the member out, so this is the client's doing:
            // it closed its connection, or went silent (no ICE consent for `dead_peer_timeout`).
            if let Some(m) = state.members.remove(&user) {
                let reason = if s == PeerState::Failed {
                    tracing::warn!(meeting_id = %state.meeting_id, %user, "media peer failed (ICE/DTLS, or silent): closed");
                    "the media connection failed"
                } else {
                    tracing::info!(meeting_id = %state.meeting_id, %user, "media peer closed by the client");
                    "the media connection was closed"
                };
                forget_member(state, user);
                close_member(m).await;
                send_to(state, user, Event::MediaClosed { reason: reason.to_owned() });
                replan_all(state).await;
            }
        }
        PeerEvent::StateChanged(s) => {
            tracing::debug!(meeting_id = %state.meeting_id, %user, state = ?s, "media peer state");
        }
        PeerEvent::TrackOpened { track_id, kind, ssrc, rid, codec } => {
            let Some(m) = state.members.get_mut(&user) else { return };
            let track_id: Arc<str> = Arc::from(track_id);
            let layer = simulcast_layer(rid.as_deref());
            let is_new = !m.published.contains_key(&track_id);
            if is_new {
                let source = m.source_of(&track_id, kind);
                let key: Arc<str> = Arc::from(format!("{user}:{}", source.as_str()));
                let codec = codec.unwrap_or_else(|| {
                    // The negotiation offers only codecs we forward, so this is not expected.
                    tracing::warn!(meeting_id = %state.meeting_id, %user, track = %key, "codec unknown: assumed VP8/Opus");
                    match kind {
                        MediaKind::Audio => Codec::Opus,
                        MediaKind::Video => Codec::Vp8,
                    }
                });
                let cache = (codec.kind() == MediaKind::Video).then(Arc::default);
                m.published.insert(
                    track_id.clone(),
                    Published { key, cache, source, codec, ssrcs: BTreeMap::new(), rates: Arc::default() },
                );
            }
            let Some(p) = m.published.get_mut(&track_id) else { return };
            p.ssrcs.insert(ssrc, layer);
            let (key, layers, rates, codec, cache) =
                (p.key.clone(), p.layers(), p.rates.clone(), p.codec, p.cache.clone());
            if is_new {
                tracing::info!(meeting_id = %state.meeting_id, %user, track = %key, ?codec, "publishing");
                state
                    .routes
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .by_track
                    .insert((user, track_id), Route { key, codec, subscribers: Arc::from(Vec::new()), rates, cache });
                replan_all(state).await;
            } else {
                // A further simulcast layer: subscribers may choose it now.
                for s in state.members.values() {
                    if let Some((_, Some(tile))) = s.out.get(&key) {
                        s.egress.set_layers(&key, *tile, layers.clone());
                    }
                }
            }
        }
        PeerEvent::TrackEnded { track_id } => unpublish(state, user, &track_id).await,
        PeerEvent::KeyframeRequested { track_id } => {
            // A subscriber's decoder wants a keyframe of what we send it as `track_id` (the key).
            request_keyframe(state, &track_id, None).await;
        }
        PeerEvent::NackReceived { track_id, sequence_numbers } => {
            retransmit(state, user, &track_id, &sequence_numbers).await;
        }
        PeerEvent::GatheringComplete => {}
    }
}

/// Sends `user` again the packets of its outgoing track `key` it says it lost, from the
/// publisher's packet cache, each with the sequence number and timestamp it first left with.
/// A packet no longer cached (or never sent) is not answered: the receiver's decoder asks for a
/// keyframe if it needs one.
async fn retransmit(state: &RouterState, user: Uuid, key: &str, lost: &[u16]) {
    let Some(m) = state.members.get(&user) else { return };
    let mut resend = Vec::new();
    let track = {
        let bindings = lock(&m.egress.bindings);
        let Some(b) = bindings.get(key) else { return };
        let Some(cache) = &b.cache else { return };
        let cache = lock(cache);
        for &seq in lost {
            let packet = b.rewriter.origin(seq).and_then(|o| {
                let mut packet = cache.get(&o.source)?.get(o.sequence_number)?.clone();
                packet.header.sequence_number = seq;
                packet.header.timestamp = packet.header.timestamp.wrapping_add(o.ts_offset);
                Some(packet)
            });
            resend.extend(packet);
        }
        b.track.clone()
    };
    let missed = (lost.len() - resend.len()) as u64;
    let missed_before = state.counters.not_retransmitted.fetch_add(missed, Ordering::Relaxed);
    if (missed_before + 1..=missed_before + missed).any(u64::is_power_of_two) {
        tracing::debug!(%user, track = %key, missed, total = missed_before + missed, "NACK not answered: packets no longer cached or never sent");
    }
    let mut sent = 0;
    for packet in resend {
        match track.write_rtp(packet).await {
            Ok(()) => sent += 1,
            Err(e) => {
                tracing::debug!(%user, track = %key, error = %e, "retransmission not sent");
                break;
            }
        }
    }
    let before = state.counters.retransmitted.fetch_add(sent, Ordering::Relaxed);
    // Logged at the 1st, 2nd, 4th… retransmission of the router: seen, never a flood.
    if sent > 0 && (before + 1..=before + sent).any(u64::is_power_of_two) {
        tracing::debug!(%user, track = %key, sent, missed, total = before + sent, "NACK answered from the publisher's cache");
    }
}

/// A published track ended: its route goes and every subscriber's plan is redone.
async fn unpublish(state: &mut RouterState, user: Uuid, track_id: &str) {
    let Some(m) = state.members.get_mut(&user) else { return };
    if let Some(p) = m.published.remove(track_id) {
        tracing::info!(meeting_id = %state.meeting_id, %user, track = %p.key, "stopped publishing");
        state.routes.write().unwrap_or_else(|p| p.into_inner()).by_track.remove(&(user, Arc::from(track_id)));
        replan_all(state).await;
    }
}

/// The msid track ids an SDP offers to send (media sections that are `sendrecv`/`sendonly`
/// and not rejected).
fn sending_track_ids(sdp: &str) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for section in sdp.split("\nm=").skip(1) {
        let rejected = section.split_whitespace().nth(1) == Some("0");
        let mut sends = true;
        let mut tracks = Vec::new();
        for line in section.lines().map(str::trim) {
            match line {
                "a=recvonly" | "a=inactive" => sends = false,
                _ => {
                    if let Some(msid) = line.strip_prefix("a=msid:")
                        && let Some(track) = msid.split_whitespace().nth(1)
                    {
                        tracks.push(track.to_owned());
                    }
                }
            }
        }
        if sends && !rejected {
            out.extend(tracks);
        }
    }
    out
}

/// Asks the publisher of `key` for a keyframe on `layer`'s stream (every stream when `None`).
/// The peer allows one request per stream per second; a request inside that second is not
/// dropped but sent when the second is over (once, however many were asked for meanwhile), so
/// a subscriber arriving just after another still gets its keyframe.
async fn request_keyframe(state: &mut RouterState, key: &str, layer: Option<Layer>) {
    let Some((peer, ssrcs)) = state.members.values().find_map(|m| {
        let p = m.published.values().find(|p| &*p.key == key)?;
        let ssrcs: Vec<u32> =
            p.ssrcs.iter().filter(|(_, l)| layer.is_none() || **l == layer).map(|(s, _)| *s).collect();
        Some((m.peer.clone(), ssrcs))
    }) else {
        return;
    };
    let mut throttled = false;
    for ssrc in ssrcs {
        match peer.request_keyframe(ssrc).await {
            Ok(sent) => {
                tracing::debug!(key, ssrc, sent, "keyframe requested");
                throttled |= !sent;
            }
            Err(e) => tracing::debug!(key, error = %e, "keyframe request failed"),
        }
    }
    let deferred: (Arc<str>, Option<Layer>) = (Arc::from(key), layer);
    if throttled && state.deferred_keyframes.insert(deferred.clone()) {
        let (key, layer) = deferred;
        state.myself.send_after(MIN_KEYFRAME_REQUEST_INTERVAL, move || RouterMsg::DeferredKeyframe { key, layer });
    }
}

async fn speaker_tick(state: &mut RouterState) {
    let now = Instant::now();
    let changed = lock(&state.speaker).tick(now);
    let Some(change) = changed else { return };
    let mut order: Vec<(Uuid, f64)> = {
        let d = lock(&state.speaker);
        state.members.keys().map(|u| (*u, d.score(u, now))).collect()
    };
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    state.speakers = order.into_iter().map(|(u, _)| u).collect();
    state.speakers.retain(|u| *u != change.current);
    state.speakers.insert(0, change.current);
    let _ = state
        .meeting
        .cast(MeetingMsg::MediaEvent { to: None, event: Event::ActiveSpeaker { user_id: change.current } });
    let depends: Vec<Uuid> = state
        .members
        .iter()
        .filter(|(_, m)| m.view == View::Speaker || matches!(m.audio, AudioPolicy::Loudest(_)))
        .map(|(u, _)| *u)
        .collect();
    for u in depends {
        replan(state, u).await;
    }
}

fn send_to(state: &RouterState, user: Uuid, event: Event) {
    let _ = state.meeting.cast(MeetingMsg::MediaEvent { to: Some(user), event });
}

/// The meeting's media as the view planner sees it.
fn meeting_media(state: &RouterState) -> MeetingMedia {
    let mut media = MeetingMedia::default();
    for u in &state.order {
        let Some(m) = state.members.get(u) else { continue };
        let key_of = |s: MediaSource| m.published.values().find(|p| p.source == s).map(|p| p.key.to_string());
        let screen = key_of(MediaSource::Screen);
        if screen.is_some() && media.screen_sharer.is_none() {
            media.screen_sharer = Some(u.to_string());
        }
        media.publishers.push(Publisher {
            participant: u.to_string(),
            camera: key_of(MediaSource::Camera),
            microphone: key_of(MediaSource::Microphone),
            screen,
        });
    }
    media.speakers = state.speakers.iter().map(Uuid::to_string).collect();
    media
}

async fn replan_all(state: &mut RouterState) {
    let users: Vec<Uuid> = state.order.clone();
    for u in users {
        replan(state, u).await;
    }
}

/// Where a key's packets come from: publisher, msid track id, codec, simulcast layers, their
/// rates and (video) the packet cache that answers NACKs.
type Source = (Uuid, Arc<str>, Codec, Vec<Layer>, Arc<LayerRates>, Option<Arc<PacketCache>>);

/// Brings one subscriber's outgoing tracks in line with its plan; offers if that changed them.
async fn replan(state: &mut RouterState, user: Uuid) {
    let media = meeting_media(state);
    let Some(m) = state.members.get(&user) else { return };
    let plan = match views::plan(&media, &user.to_string(), m.view, m.audio) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%user, error = %e, "no plan for this view");
            return;
        }
    };
    let mut want: HashMap<Arc<str>, Option<u32>> = HashMap::new();
    for (key, tile) in &plan.video {
        want.insert(Arc::from(key.as_str()), Some(tile.height()));
    }
    for key in &plan.audio {
        want.insert(Arc::from(key.as_str()), None);
    }
    // Where each wanted key comes from: (publisher, msid track id, kind, layers).
    let mut source_of: HashMap<Arc<str>, Source> = HashMap::new();
    for (u, pm) in &state.members {
        for (track_id, p) in &pm.published {
            if want.contains_key(&p.key) {
                source_of.insert(
                    p.key.clone(),
                    (*u, track_id.clone(), p.codec, p.layers(), p.rates.clone(), p.cache.clone()),
                );
            }
        }
    }
    let Some(m) = state.members.get_mut(&user) else { return };
    let mut changed = false;
    let remove: Vec<Arc<str>> = m.out.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    let mut routes_add: Vec<(Uuid, Arc<str>, Arc<AtomicU8>)> = Vec::new();
    let mut routes_remove: Vec<Arc<str>> = Vec::new();
    for key in remove {
        if let Some((track, _)) = m.out.remove(&key) {
            tracing::debug!(%user, track = %key, ssrc = track.ssrc(), "outgoing track removed");
            m.egress.unbind(&key);
            if let Err(e) = m.peer.remove_track(&track).await {
                tracing::debug!(%user, error = %e, "remove_track");
            }
            routes_remove.push(key);
            changed = true;
        }
    }
    let mut keyframes = Vec::new();
    for (key, tile) in &want {
        let Some((publisher, track_id, codec, layers, rates, cache)) = source_of.get(key) else { continue };
        match m.out.get_mut(key) {
            Some((_, old_tile)) => {
                // The same key may now be a new track of its publisher's (it published again).
                m.egress.answer_nacks_from(key, cache);
                if *old_tile != *tile
                    && let Some(t) = tile
                {
                    *old_tile = *tile;
                    m.egress.set_layers(key, *t, layers.clone());
                }
            }
            None => {
                let spec = OutTrackSpec {
                    track_id: key.to_string(),
                    stream_id: key.to_string(),
                    codec: *codec,
                    ssrc: rand::random(),
                };
                match m.peer.add_track(spec).await {
                    Ok(track) => {
                        tracing::debug!(%user, track = %key, ssrc = track.ssrc(), "outgoing track added");
                        let wants = Arc::new(AtomicU8::new(ALL_LAYERS));
                        m.egress.bind(
                            key.clone(),
                            track.clone(),
                            *tile,
                            layers.clone(),
                            rates.clone(),
                            wants.clone(),
                            cache.clone(),
                        );
                        m.out.insert(key.clone(), (track, *tile));
                        routes_add.push((*publisher, track_id.clone(), wants));
                        if codec.kind() == MediaKind::Video {
                            keyframes.push(key.clone());
                        }
                        changed = true;
                    }
                    Err(e) => tracing::warn!(%user, track = %key, error = %e, "cannot add an outgoing track"),
                }
            }
        }
    }
    let egress = m.egress.clone();
    {
        let mut routes = state.routes.write().unwrap_or_else(|p| p.into_inner());
        for route in routes.by_track.values_mut() {
            if routes_remove.contains(&route.key) {
                route.subscribers = route.subscribers.iter().filter(|s| s.user != user).cloned().collect();
            }
        }
        for (publisher, track_id, wants) in routes_add {
            if let Some(route) = routes.by_track.get_mut(&(publisher, track_id)) {
                let mut subs: Vec<Subscriber> = route.subscribers.to_vec();
                subs.push(Subscriber { user, egress: egress.clone(), wants });
                route.subscribers = Arc::from(subs);
            }
        }
    }
    if let Some(m) = state.members.get_mut(&user) {
        m.awaiting_keyframe.extend(keyframes);
    }
    if changed {
        renegotiate(state, user).await;
    }
}

/// Offers the subscriber its current tracks, or remembers to once its pending offer is answered.
async fn renegotiate(state: &mut RouterState, user: Uuid) {
    let Some(m) = state.members.get_mut(&user) else { return };
    if m.offer_pending {
        m.renegotiate = true;
        return;
    }
    match m.peer.create_offer().await {
        Ok(sdp) => {
            m.offer_pending = true;
            send_to(state, user, Event::Offer { sdp });
        }
        Err(e) => tracing::warn!(%user, error = %e, "cannot create an offer"),
    }
}

/// Forwards one peer's events to the router, tagged with the peer's generation.
async fn pump_events(
    router: RouterRef,
    user_id: Uuid,
    generation: u64,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
) {
    while let Some(event) = events.recv().await {
        if router.cast(RouterMsg::Peer { user_id, generation, event }).is_err() {
            return;
        }
    }
}

/// One publisher's packets to the subscribers of each of its tracks, audio levels to the
/// speaker detector: its peer's [`RtpSink`], run on the receive path.
struct Ingest {
    user: Uuid,
    routes: Arc<RwLock<Routes>>,
    speaker: Arc<Mutex<SpeakerDetector<Uuid>>>,
    counters: Arc<Counters>,
    router: RouterRef,
    /// Bitrate of each simulcast layer, by track.
    meters: Mutex<HashMap<Arc<str>, [BitrateMeter; 3]>>,
}

impl RtpSink for Ingest {
    fn on_rtp(&self, p: IncomingRtp, out: &mut Outbox) {
        let now = Instant::now();
        if let Some(level) = p.audio_level {
            lock(&self.speaker).observe(self.user, level, now);
        }
        let route = {
            let r = self.routes.read().unwrap_or_else(|p| p.into_inner());
            r.by_track
                .get(&(self.user, p.track_id.clone()))
                .map(|r| (r.key.clone(), r.codec, r.subscribers.clone(), r.rates.clone(), r.cache.clone()))
        };
        let Some((key, codec, subscribers, rates, cache)) = route else { return };
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
            s.egress.forward(&fwd, now, out, &self.router, &self.counters);
        }
    }
}

/// The first `a=fingerprint:` value of an SDP (session or media level): which certificate,
/// hence which client connection, the SDP belongs to.
fn dtls_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=fingerprint:")).map(str::to_owned)
}

/// The simulcast layer of a stream: `None` without simulcast (no RID), so that such a stream
/// is forwarded whole instead of going through layer selection.
fn simulcast_layer(rid: Option<&str>) -> Option<Layer> {
    rid.and_then(|r| Layer::from_rid(Some(r)))
}

/// One bound outgoing track of a subscriber.
struct Binding {
    track: OutTrack,
    rewriter: StreamRewriter,
    /// For simulcast video: which layer to forward.
    selector: Option<LayerSelector>,
    tile: u32,
    /// The layers the publisher sends, and their measured bitrates.
    layers: Vec<Layer>,
    rates: Arc<LayerRates>,
    /// Where the ingest reads which layers to send us.
    wants: Arc<AtomicU8>,
    /// The publisher's packet cache (video), what this track's NACKs are answered from.
    cache: Option<Arc<PacketCache>>,
    /// Fault injection: packets since the last one withheld.
    withheld: u32,
    /// What we send on this track (for streams that cannot adapt: their share of the budget).
    sent: BitrateMeter,
    last_keyframe_ask: Option<Instant>,
    /// Packets the track took, and refused (not negotiated yet): logged at 1, 2, 4, 8…
    sent_packets: u64,
    unsent: u64,
}

impl Binding {
    /// Re-decides the layer of a simulcast binding within `budget_bps`.
    fn select(&mut self, key: &str, budget_bps: u64, subscriber: Uuid, now: Instant) {
        let Some(selector) = self.selector.as_mut() else { return };
        let before = selector.target();
        let mut infos: Vec<LayerInfo> = self
            .layers
            .iter()
            .map(|l| LayerInfo {
                layer: *l,
                bitrate_bps: self.rates.slot(*l).load(Ordering::Relaxed),
                height: nominal_height(*l),
            })
            .collect();
        // Once any layer is measured, a layer at 0 is one the publisher stopped sending (a
        // browser drops its top layers when its uplink is short): not a choice, or its
        // subscribers would wait for its keyframes forever.
        if infos.iter().any(|i| i.bitrate_bps > 0) {
            infos.retain(|i| i.bitrate_bps > 0);
        }
        let after = selector.update(&infos, self.tile, budget_bps, now);
        if after != before {
            let budget_bps = (budget_bps != u64::MAX).then_some(budget_bps);
            tracing::debug!(track = key, %subscriber, from = ?before, to = ?after, tile = self.tile, ?budget_bps, "simulcast layer");
        }
        self.publish_wants();
    }

    /// Tells the ingest which layers to send: the one forwarded and the one switched to.
    fn publish_wants(&self) {
        let mask = match &self.selector {
            None => ALL_LAYERS,
            Some(s) => layer_bit(s.current()) | layer_bit(s.target()),
        };
        self.wants.store(mask, Ordering::Relaxed);
    }
}

/// Nominal frame height of each simulcast layer (the layer selector's view cap).
fn nominal_height(layer: Layer) -> u32 {
    match layer {
        Layer::Low => 180,
        Layer::Mid => 360,
        Layer::High => 720,
    }
}

/// Re-decides every simulcast layer of one subscriber: the downlink estimate, less what its
/// other streams take, shared by tile area (`layers::split_budget`).
fn reselect(bindings: &mut HashMap<Arc<str>, Binding>, estimate: &AtomicU64, subscriber: Uuid, now: Instant) {
    let estimate = match estimate.load(Ordering::Relaxed) {
        0 => None,
        bps => Some(bps),
    };
    let fixed: u64 = bindings.values_mut().filter(|b| b.selector.is_none()).map(|b| b.sent.bps(now)).sum();
    let mut adaptive: Vec<(&Arc<str>, &mut Binding)> =
        bindings.iter_mut().filter(|(_, b)| b.selector.is_some()).collect();
    let tiles: Vec<u32> = adaptive.iter().map(|(_, b)| b.tile).collect();
    for ((key, b), budget) in adaptive.iter_mut().zip(split_budget(estimate, fixed, &tiles)) {
        b.select(key, budget, subscriber, now);
    }
}

/// One subscriber's outgoing streams: which layer of each, rewritten how, on which track. Run
/// by whichever publisher's packet reaches it (that publisher's [`Ingest`], on its receive
/// path) and changed by the actor; the lock is held for one packet or one change.
struct Egress {
    /// The subscriber (for the log).
    user: Uuid,
    bindings: Mutex<HashMap<Arc<str>, Binding>>,
    /// The subscriber's downlink estimate (REMB), bits/s, 0 while unknown.
    estimate: Arc<AtomicU64>,
    /// Fault injection: withhold every Nth video packet sent to this subscriber (0: never).
    drop_every: u32,
}

impl Egress {
    /// Sends `key` on `track` from now on. `tile`: the tile height of a video track (drives
    /// the layer); `rates`: the publisher's measured layer bitrates; `wants`: where to say which
    /// layers this subscriber needs (the ingest skips the others); `cache`: what its NACKs are
    /// answered from (the publisher's packet cache of a video track).
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        key: Arc<str>,
        track: OutTrack,
        tile: Option<u32>,
        layers: Vec<Layer>,
        rates: Arc<LayerRates>,
        wants: Arc<AtomicU8>,
        cache: Option<Arc<PacketCache>>,
    ) {
        let clock = track.codec().clock_rate();
        // Audio and single-layer video are forwarded as they come.
        let selector = (tile.is_some() && !layers.is_empty()).then(LayerSelector::new);
        let binding = Binding {
            track,
            rewriter: StreamRewriter::new(clock),
            selector,
            tile: tile.unwrap_or(0),
            layers,
            rates,
            wants,
            cache,
            withheld: 0,
            sent: BitrateMeter::new(),
            last_keyframe_ask: None,
            unsent: 0,
            sent_packets: 0,
        };
        binding.publish_wants();
        let mut bindings = lock(&self.bindings);
        bindings.insert(key, binding);
        reselect(&mut bindings, &self.estimate, self.user, Instant::now());
    }

    /// NACKs about `key` are answered from `cache` (none: not answered) from now on: its
    /// publisher published the track again, with a new cache.
    fn answer_nacks_from(&self, key: &Arc<str>, cache: &Option<Arc<PacketCache>>) {
        if let Some(b) = lock(&self.bindings).get_mut(key) {
            b.cache = cache.clone();
        }
    }

    fn unbind(&self, key: &Arc<str>) {
        let mut bindings = lock(&self.bindings);
        bindings.remove(key);
        reselect(&mut bindings, &self.estimate, self.user, Instant::now());
    }

    /// The tile or the publisher's layers of a bound video track changed.
    fn set_layers(&self, key: &Arc<str>, tile: u32, layers: Vec<Layer>) {
        let mut bindings = lock(&self.bindings);
        if let Some(b) = bindings.get_mut(key) {
            b.tile = tile;
            if !layers.is_empty() {
                b.selector.get_or_insert_with(LayerSelector::new);
                b.layers = layers;
            }
        }
        reselect(&mut bindings, &self.estimate, self.user, Instant::now());
    }

    /// Re-decides every layer from the latest estimate and rates (on the router's tick).
    fn reselect(&self) {
        reselect(&mut lock(&self.bindings), &self.estimate, self.user, Instant::now());
    }

    /// One packet of a track it may receive: layer choice, rewrite, into `out`.
    fn forward(&self, fwd: &Forward, now: Instant, out: &mut Outbox, router: &RouterRef, counters: &Counters) {
        let mut bindings = lock(&self.bindings);
        let Some(b) = bindings.get_mut(&fwd.key) else { return };
        if let (Some(selector), Some(layer)) = (b.selector.as_mut(), fwd.layer) {
            match selector.on_packet(layer, fwd.keyframe) {
                PacketAction::Drop => {
                    if selector.needs_keyframe()
                        && b.last_keyframe_ask.is_none_or(|t| now.duration_since(t) >= KEYFRAME_REASK)
                    {
                        b.last_keyframe_ask = Some(now);
                        let _ =
                            router.cast(RouterMsg::KeyframeWanted { key: fwd.key.clone(), layer: selector.target() });
                    }
                    return;
                }
                // The old layer is no longer needed.
                PacketAction::Forward { switched: true } => {
                    tracing::debug!(track = %fwd.key, subscriber = %self.user, ?layer, ssrc = fwd.ssrc, "simulcast layer switched at a keyframe");
                    b.publish_wants();
                }
                PacketAction::Forward { switched: false } => {}
            }
        }
        let h = &fwd.packet.header;
        let Some(rw) = b.rewriter.rewrite(fwd.ssrc, h.sequence_number, h.timestamp, now) else { return };
        if self.drop_every > 0 && b.track.codec().kind() == MediaKind::Video {
            // Fault injection: numbered and cached, never sent; the subscriber will NACK it.
            b.withheld = (b.withheld + 1) % self.drop_every;
            if b.withheld == 0 {
                return;
            }
        }
        let mut packet = fwd.packet.clone();
        packet.header.sequence_number = rw.sequence_number;
        packet.header.timestamp = rw.timestamp;
        if b.selector.is_none() {
            b.sent.record(packet.payload.len() + 12, now);
        }
        match out.write(&b.track, packet) {
            Ok(()) => {
                counters.forwarded.fetch_add(1, Ordering::Relaxed);
                b.sent_packets += 1;
                if b.sent_packets.is_power_of_two() {
                    tracing::debug!(key = %fwd.key, subscriber = %self.user, sent = b.sent_packets, seq = rw.sequence_number, "packets forwarded");
                }
            }
            Err(e) => {
                // Not negotiated yet (the answer is on its way): the packet is lost.
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                b.unsent += 1;
                if b.unsent.is_power_of_two() {
                    tracing::debug!(key = %fwd.key, subscriber = %self.user, unsent = b.unsent, keyframe = fwd.keyframe, error = %e, "packet not sent");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sending_tracks_are_read_from_the_offer() {
        let sdp = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=msid:s cam\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendrecv\r\na=msid:s mic\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\na=msid:s screen\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\na=msid:s old\r\n";
        let got = sending_track_ids(sdp);
        assert_eq!(dtls_fingerprint(sdp), None);
        assert_eq!(
            dtls_fingerprint("v=0\r\na=fingerprint:sha-256 AB:CD\r\nm=audio 9 UDP 111\r\na=fingerprint:sha-256 EF\r\n")
                .as_deref(),
            Some("sha-256 AB:CD")
        );
        assert_eq!(got, ["cam", "mic"].into_iter().map(str::to_owned).collect::<std::collections::HashSet<_>>());
    }
}
