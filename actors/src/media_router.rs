//! `MediaRouterActor`: the SFU of one live meeting, on the node that owns the meeting. A child of
//! the meeting actor (started on the first media request, stopped with the meeting).
//!
//! It owns one [`Peer`] (server-side WebRTC connection) per participant and decides who receives
//! what; it never touches RTP itself. The packets take a shorter road, off the actor's mailbox
//! and without a queue or a task of their own, through the media crate's forwarder
//! ([`parley_media::forward`]): each publisher's ingest is its peer's `RtpSink`, called on the
//! receive path itself (the shared socket's driver, or the track's reader task), and runs each
//! subscriber's [`Egress`] in place (layer choice, seq/timestamp rewrite, its `OutTrack`s).
//!
//! This file is the shell around it: the router's state (members, their peers, published
//! tracks, views, negotiation), its messages, the signalling, and the glue that keeps the
//! forwarder in line: it turns the meeting's media (who publishes what, who speaks, who shares
//! a screen) and each subscriber's view into a `views::Plan`, and the difference between plans
//! into `add_track`/`remove_track`, the forwarder's routes and bindings
//! ([`Forwarder::publish`], [`Forwarder::subscriptions`]) and a server offer. What the
//! forwarder asks of the router (a keyframe an egress waits for) arrives as
//! [`RouterMsg::KeyframeWanted`]; subscribers' keyframe requests and NACKs arrive as their
//! peers' events and go to the publisher (PLI, throttled) or to [`Forwarder::retransmit`].
//! Negotiation is one at a time per peer: while the server's offer waits for its answer,
//! further changes wait (`renegotiate`) and a client offer is refused (`negotiation_state`: the
//! client is the polite peer).
//!
//! Signalling to a participant (offer, candidates, `active_speaker`, `media_closed`) goes
//! through the meeting actor, which knows where each connection is in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parley_core::protocol::{ErrorCode, Event, MediaSource, ReplyData, Request, ViewKind};
use parley_media::MediaError;
use parley_media::forward::{Egress, Forwarder, TrafficCount, Upstream};
use parley_media::layers::Layer;
use parley_media::peer::{
    Codec, MediaKind, OutTrack, OutTrackSpec, Peer, PeerChannels, PeerConfig, PeerEvent, PeerState,
};
use parley_media::pli::MIN_KEYFRAME_REQUEST_INTERVAL;
use parley_media::sdp::{dtls_fingerprint, sending_track_ids, simulcast_layer};
use parley_media::views::{self, AudioPolicy, MeetingMedia, Publisher, View};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{LiveError, LiveResult, fail};
use crate::messages::{MeetingMsg, MeetingRef};
use crate::recorder::{KeyframeSource, RecorderActor, RecorderArgs, RecorderMsg, RecorderRef, RecordingServices, Tap};
use parley_core::recording::TrackKind;
use parley_store::recordings::Capture;

pub type RouterRef = ActorRef<RouterMsg>;
type Answer = LiveResult<ReplyData>;

/// How often the active speaker and every subscriber's simulcast layers are re-decided.
const SPEAKER_TICK: Duration = Duration::from_millis(200);

/// A media join's trace ends here if no packet reached the peer by then (nobody publishes, or
/// its connection never came up).
const MEDIA_JOIN_TRACE_LIMIT: Duration = Duration::from_secs(30);

/// The trace of one peer's media join, from its first offer to the first packet forwarded to
/// it: the `media.join` span, and the phase it is in as a child span (`media.ice` until ICE
/// connects, `media.dtls` until the connection is up, `media.first_packet` until a packet goes
/// out to it). Dropping it ends them.
///
/// A phase ends when the router hears of it. ICE and DTLS reach it through the peer's event
/// pump, the first packet directly, so the packet can come first: the phases still open then
/// end with it (zero-length), as a packet out means both are done.
struct MediaJoin {
    started: Instant,
    at: JoinPhase,
    phase: tracing::Span,
    join: tracing::Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum JoinPhase {
    Ice,
    Dtls,
    FirstPacket,
}

impl MediaJoin {
    /// Starts with the ICE phase, as a child of the current span (the offer's).
    fn start(user: Uuid) -> MediaJoin {
        let join = tracing::info_span!("media.join", %user);
        let phase = tracing::info_span!(parent: &join, "media.ice");
        MediaJoin { started: Instant::now(), at: JoinPhase::Ice, phase, join }
    }

    /// Moves on to `next` (through the phases in between); never back.
    fn reach(&mut self, next: JoinPhase) {
        while self.at < next {
            (self.at, self.phase) = match self.at {
                JoinPhase::Ice => (JoinPhase::Dtls, tracing::info_span!(parent: &self.join, "media.dtls")),
                JoinPhase::Dtls | JoinPhase::FirstPacket => {
                    (JoinPhase::FirstPacket, tracing::info_span!(parent: &self.join, "media.first_packet"))
                }
            };
        }
    }
}

/// Messages to a media router.
pub enum RouterMsg {
    /// A participant's media request (`offer`, `answer`, `ice_candidate`, `subscribe`);
    /// `span`: the caller's, which the router's handling continues.
    Request { user_id: Uuid, request: Request, reply: RpcReplyPort<Answer>, span: tracing::Span },
    /// The first packet went out to this participant's peer: its media join is over.
    FirstForwarded { user_id: Uuid },
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
    /// Operators: every media peer's traffic, layers and reception (`ops::RouterView`).
    Inspect(RpcReplyPort<crate::ops::RouterView>),
    /// Start capturing the meeting's recording (`Some`: this part of it) or stop (`None`:
    /// the recording is over). Replies once the recorder has started, or taken its tail over.
    Record { start: Option<RecordStart>, reply: RpcReplyPort<Result<(), String>> },
    /// Participants' display names (the recording's tile and transcript labels).
    Labels(HashMap<Uuid, String>),
    /// What the meeting's state lets one participant's media do now (sent on every change of
    /// their view): a muted microphone and a camera turned off are held at the ingest, and a
    /// breakout room sees and hears only its own members.
    Rights { user_id: Uuid, rights: MediaRights },
    /// The recorder needs a keyframe of this published track.
    RecorderKeyframe { publisher: Uuid, track_id: Arc<str> },
    /// Fault injection (drills, tests): panic, as a bug would.
    Crash,
}

/// What the meeting lets one participant's media do (from their `ParticipantView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRights {
    /// Breakout room (`None`: the main room).
    pub room: Option<u32>,
    /// Their microphone reaches others (not muted).
    pub audio: bool,
    /// Their camera reaches others (video on).
    pub video: bool,
}

impl Default for MediaRights {
    /// Before the meeting says anything: the main room, nothing held.
    fn default() -> Self {
        MediaRights { room: None, audio: true, video: true }
    }
}

impl MediaRights {
    pub fn of(view: &parley_core::protocol::ParticipantView) -> MediaRights {
        MediaRights { room: view.room, audio: !view.audio_muted, video: view.video_on }
    }

    /// Whether a track of `source` is held under these rights.
    fn holds(self, source: MediaSource) -> bool {
        match source {
            MediaSource::Microphone => !self.audio,
            MediaSource::Camera => !self.video,
            MediaSource::Screen => false,
        }
    }
}

/// What a recorder starts with.
pub struct RecordStart {
    pub capture: Capture,
    pub labels: HashMap<Uuid, String>,
}

/// The recorder of this router, and the tap its tracks feed.
struct ActiveRecorder {
    actor: RecorderRef,
    tap: Arc<Tap>,
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
    /// Object storage and database for recordings (`None`: this router cannot record).
    pub recording: Option<RecordingServices>,
}

pub struct MediaRouterActor;

/// A published track (camera, microphone or screen) of one participant. Its route (layer
/// rates, packet cache, subscribers) is the forwarder's.
struct Published {
    key: Arc<str>,
    source: MediaSource,
    /// What it carries; its subscribers get an outgoing track of the same codec.
    codec: Codec,
    /// SSRC → simulcast layer (`None` without simulcast).
    ssrcs: BTreeMap<u32, Option<Layer>>,
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
    /// What operators are shown: feedback counts, and the last traffic reading.
    feedback: Feedback,
    reading: Option<TrafficReading>,
    /// Its media join's trace, until the first packet reaches it.
    joining: Option<MediaJoin>,
}

/// RTCP feedback about one member's connection.
#[derive(Default)]
struct Feedback {
    nacks_received: u64,
    keyframe_requests_received: u64,
    keyframe_requests_sent: u64,
}

/// Traffic counters at one moment, and the rates since the reading before.
#[derive(Clone, Copy)]
struct TrafficReading {
    at: Instant,
    received: TrafficCount,
    sent: TrafficCount,
    in_bps: u64,
    out_bps: u64,
}

/// Readings closer together than this keep the previous rates (several dashboards may ask).
const RATE_WINDOW: Duration = Duration::from_millis(500);

impl TrafficReading {
    /// The reading now, its rates measured from `before`.
    fn next(before: Option<TrafficReading>, at: Instant, received: TrafficCount, sent: TrafficCount) -> TrafficReading {
        let Some(b) = before else { return TrafficReading { at, received, sent, in_bps: 0, out_bps: 0 } };
        let secs = at.duration_since(b.at).as_secs_f64();
        if secs < RATE_WINDOW.as_secs_f64() {
            return b;
        }
        let bps = |now: u64, then: u64| (now.saturating_sub(then) as f64 * 8.0 / secs) as u64;
        TrafficReading {
            at,
            received,
            sent,
            in_bps: bps(received.bytes, b.received.bytes),
            out_bps: bps(sent.bytes, b.sent.bytes),
        }
    }
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
    /// The RTP path: routes, every member's ingest and egress, the speaker detector, counters.
    forwarder: Forwarder,
    /// Loudest first.
    speakers: Vec<Uuid>,
    generations: u64,
    peers_gauge: Arc<AtomicU32>,
    myself: RouterRef,
    /// Keyframe requests waiting for the throttle's second to pass.
    deferred_keyframes: std::collections::HashSet<(Arc<str>, Option<Layer>)>,
    recording: Option<RecordingServices>,
    recorder: Option<ActiveRecorder>,
    /// What the meeting lets each participant's media do (`RouterMsg::Rights`).
    rights: HashMap<Uuid, MediaRights>,
}

/// What the forwarder asks of the router from the receive path: a message, never a wait.
struct KeyframeRequests(RouterRef);

impl Upstream for KeyframeRequests {
    fn keyframe_wanted(&self, key: Arc<str>, layer: Option<Layer>) {
        let _ = self.0.cast(RouterMsg::KeyframeWanted { key, layer });
    }

    fn first_forwarded(&self, subscriber: Uuid) {
        let _ = self.0.cast(RouterMsg::FirstForwarded { user_id: subscriber });
    }
}

fn media_error(e: MediaError) -> LiveError {
    let code = match e {
        MediaError::Sdp(_) => ErrorCode::InvalidSdp,
        MediaError::Candidate(_) => ErrorCode::InvalidField,
        MediaError::Bind { .. } => ErrorCode::MediaUnavailable,
        _ => ErrorCode::Internal,
    };
    LiveError::new(code, e.to_string())
}

impl Actor for MediaRouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(&self, myself: RouterRef, args: RouterArgs) -> Result<RouterState, ActorProcessingErr> {
        myself.send_interval(SPEAKER_TICK, || RouterMsg::Tick);
        tracing::info!(meeting_id = %args.meeting_id, "media router started");
        let forwarder = Forwarder::new(Arc::new(KeyframeRequests(myself.clone())), args.config.drop_forwarded_every);
        Ok(RouterState {
            meeting_id: args.meeting_id,
            meeting: args.meeting,
            config: args.config,
            members: HashMap::new(),
            order: Vec::new(),
            forwarder,
            speakers: Vec::new(),
            generations: 0,
            peers_gauge: args.peers_gauge,
            myself: myself.clone(),
            deferred_keyframes: Default::default(),
            recording: args.recording,
            recorder: None,
            rights: HashMap::new(),
        })
    }

    async fn post_stop(&self, _myself: RouterRef, state: &mut RouterState) -> Result<(), ActorProcessingErr> {
        // The meeting stops here but is not over (it moves, or its actor restarts): this part
        // of the recording ends; the next owner continues it.
        stop_recorder(state, false).await;
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
            RouterMsg::Request { user_id, request, reply, span } => {
                let span = tracing::info_span!(parent: &span, "media.request", kind = request.kind());
                let answer = request_of(&myself, state, user_id, request).instrument(span).await;
                let _ = reply.send(answer);
            }
            RouterMsg::FirstForwarded { user_id } => {
                if let Some(mut join) = state.members.get_mut(&user_id).and_then(|m| m.joining.take()) {
                    join.reach(JoinPhase::FirstPacket);
                    let ms = join.started.elapsed().as_millis();
                    let _in = join.join.enter();
                    tracing::info!(meeting_id = %state.meeting_id, user = %user_id, ms, "media flowing: first packet forwarded to the peer");
                }
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
                for m in state.members.values_mut() {
                    m.egress.reselect();
                    if m.joining.as_ref().is_some_and(|j| j.started.elapsed() > MEDIA_JOIN_TRACE_LIMIT) {
                        m.joining = None;
                    }
                }
                speaker_tick(state).await;
            }
            RouterMsg::Stats(reply) => {
                let forwarded = state.forwarder.stats();
                let _ = reply.send(RouterStats {
                    peers: state.members.len() as u32,
                    published_tracks: state.members.values().map(|m| m.published.len() as u32).sum(),
                    forwarded_packets: forwarded.forwarded,
                    dropped_packets: forwarded.dropped
                        + state.members.values().flat_map(|m| m.out.values()).map(|(t, _)| t.dropped()).sum::<u64>(),
                    retransmitted_packets: forwarded.retransmitted,
                    not_retransmitted_packets: forwarded.not_retransmitted,
                });
            }
            RouterMsg::Inspect(reply) => {
                let _ = reply.send(inspect(state));
            }
            RouterMsg::Record { start: Some(start), reply } => {
                let _ = reply.send(start_recorder(&myself, state, start).await);
            }
            RouterMsg::Record { start: None, reply } => {
                stop_recorder(state, true).await;
                let _ = reply.send(Ok(()));
            }
            RouterMsg::Labels(labels) => {
                if let Some(r) = &state.recorder {
                    let _ = r.actor.cast(RecorderMsg::Labels(labels));
                }
            }
            RouterMsg::Rights { user_id, rights } => {
                let before = state.rights.insert(user_id, rights).unwrap_or_default();
                if before == rights {
                    return Ok(());
                }
                let tracks: Vec<Arc<str>> =
                    state.members.get(&user_id).map(|m| m.published.keys().cloned().collect()).unwrap_or_default();
                for track_id in tracks {
                    apply_hold(state, user_id, &track_id).await;
                }
                if before.room != rights.room {
                    tracing::info!(meeting_id = %state.meeting_id, user = %user_id, room = ?rights.room, "media follows to another room");
                    replan_all(state).await;
                }
            }
            RouterMsg::RecorderKeyframe { publisher, track_id } => {
                let key = state.members.get(&publisher).and_then(|m| m.published.get(&track_id)).map(|p| p.key.clone());
                if let Some(key) = key {
                    request_keyframe(state, &key, None).await;
                }
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
                m.joining = Some(MediaJoin::start(user));
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

async fn new_member(myself: &RouterRef, state: &mut RouterState, user: Uuid) -> LiveResult<Member> {
    // Its packets go to its `Ingest`; the queue stays unused.
    // On the shared port, a meeting's connections share a driver thread while it is small.
    let meeting = state.meeting_id.to_string();
    let (peer, PeerChannels { events, rtp: _ }) =
        Peer::in_meeting(&state.config, Some(&meeting)).await.map_err(media_error)?;
    let peer = Arc::new(peer);
    peer.route_rtp_to(state.forwarder.ingest(user));
    state.generations += 1;
    let generation = state.generations;
    let egress = state.forwarder.egress(user, peer.downlink_estimate());
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
        feedback: Feedback::default(),
        reading: None,
        joining: None,
    })
}

/// Every member's traffic, layers and reception, for the operators' view.
fn inspect(state: &mut RouterState) -> crate::ops::RouterView {
    let now = Instant::now();
    let mut peers = Vec::with_capacity(state.members.len());
    for (user, m) in state.members.iter_mut() {
        let (received, sent) = (state.forwarder.received(*user), m.egress.sent());
        let reading = TrafficReading::next(m.reading, now, received, sent);
        m.reading = Some(reading);
        let reception = m.peer.reception();
        let mut published: Vec<String> = m.published.values().map(|p| p.key.to_string()).collect();
        published.sort();
        peers.push(crate::ops::MediaPeerView {
            user_id: *user,
            published,
            bitrate_in_bps: reading.in_bps,
            bitrate_out_bps: reading.out_bps,
            packets_in: received.packets,
            packets_out: sent.packets,
            downlink_estimate_bps: m.egress.downlink_estimate(),
            layers: m
                .egress
                .layers()
                .into_iter()
                .map(|(k, l)| (k.to_string(), l.map(|l| format!("{l:?}").to_lowercase())))
                .collect(),
            loss: reception.loss,
            jitter_ms: reception.jitter_ms,
            rtt_ms: reception.rtt_ms,
            nacks_received: m.feedback.nacks_received,
            keyframe_requests_received: m.feedback.keyframe_requests_received,
            keyframe_requests_sent: m.feedback.keyframe_requests_sent,
        });
    }
    peers.sort_by_key(|p| p.user_id);
    crate::ops::RouterView { actor: Default::default(), recorder: state.recorder.is_some(), peers }
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
    recorder_tracks_gone(state, user, None);
    state.forwarder.forget(user);
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
        PeerEvent::IceConnected => {
            if let Some(j) = state.members.get_mut(&user).and_then(|m| m.joining.as_mut()) {
                j.reach(JoinPhase::Dtls);
            }
        }
        PeerEvent::StateChanged(PeerState::Connected) => {
            if let Some(j) = state.members.get_mut(&user).and_then(|m| m.joining.as_mut()) {
                j.reach(JoinPhase::FirstPacket);
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
                m.published.insert(track_id.clone(), Published { key, source, codec, ssrcs: BTreeMap::new() });
            }
            let Some(p) = m.published.get_mut(&track_id) else { return };
            p.ssrcs.insert(ssrc, layer);
            let (key, layers, codec) = (p.key.clone(), p.layers(), p.codec);
            if is_new {
                tracing::info!(meeting_id = %state.meeting_id, %user, track = %key, ?codec, "publishing");
                let source = p.source;
                state.forwarder.publish(user, track_id.clone(), key, codec);
                apply_hold(state, user, &track_id).await;
                record_track(state, user, track_id, source, codec);
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
            if let Some(m) = state.members.get_mut(&user) {
                m.feedback.keyframe_requests_received += 1;
            }
            // A subscriber's decoder wants a keyframe of what we send it as `track_id` (the key).
            request_keyframe(state, &track_id, None).await;
        }
        PeerEvent::NackReceived { track_id, sequence_numbers } => {
            if let Some(m) = state.members.get_mut(&user) {
                m.feedback.nacks_received += 1;
            }
            retransmit(state, user, &track_id, &sequence_numbers).await;
        }
        PeerEvent::GatheringComplete => {}
    }
}

/// Sends `user` again the packets of its outgoing track `key` it says it lost, from the
/// publisher's packet cache ([`Forwarder::retransmit`]).
async fn retransmit(state: &RouterState, user: Uuid, key: &str, lost: &[u16]) {
    let Some(m) = state.members.get(&user) else { return };
    state.forwarder.retransmit(&m.egress, key, lost).await;
}

/// A published track ended: its route goes and every subscriber's plan is redone.
async fn unpublish(state: &mut RouterState, user: Uuid, track_id: &str) {
    let Some(m) = state.members.get_mut(&user) else { return };
    if let Some(p) = m.published.remove(track_id) {
        tracing::info!(meeting_id = %state.meeting_id, %user, track = %p.key, "stopped publishing");
        recorder_tracks_gone(state, user, Some(track_id));
        state.forwarder.unpublish(user, track_id);
        replan_all(state).await;
    }
}

/// Asks the publisher of `key` for a keyframe on `layer`'s stream (every stream when `None`).
/// The peer allows one request per stream per second; a request inside that second is not
/// dropped but sent when the second is over (once, however many were asked for meanwhile), so
/// a subscriber arriving just after another still gets its keyframe.
/// Holds or releases `user`'s published `track_id` as their rights say; a camera released
/// asks its publisher for a keyframe, so its viewers can decode again at once.
async fn apply_hold(state: &mut RouterState, user: Uuid, track_id: &Arc<str>) {
    let Some(p) = state.members.get(&user).and_then(|m| m.published.get(track_id)) else { return };
    let (key, source, kind) = (p.key.clone(), p.source, p.codec.kind());
    let held = state.rights.get(&user).copied().unwrap_or_default().holds(source);
    if state.forwarder.hold(user, track_id, held) {
        tracing::info!(meeting_id = %state.meeting_id, %user, track = %key, held, "track held by the meeting's state");
        if !held && kind == MediaKind::Video {
            request_keyframe(state, &key, None).await;
        }
    }
}

async fn request_keyframe(state: &mut RouterState, key: &str, layer: Option<Layer>) {
    let Some((publisher, peer, ssrcs)) = state.members.iter().find_map(|(u, m)| {
        let p = m.published.values().find(|p| &*p.key == key)?;
        let ssrcs: Vec<u32> =
            p.ssrcs.iter().filter(|(_, l)| layer.is_none() || **l == layer).map(|(s, _)| *s).collect();
        Some((*u, m.peer.clone(), ssrcs))
    }) else {
        return;
    };
    let mut throttled = false;
    let mut sent_any = 0;
    for ssrc in ssrcs {
        match peer.request_keyframe(ssrc).await {
            Ok(sent) => {
                tracing::debug!(key, ssrc, sent, "keyframe requested");
                throttled |= !sent;
                sent_any += u64::from(sent);
            }
            Err(e) => tracing::debug!(key, error = %e, "keyframe request failed"),
        }
    }
    if let Some(m) = state.members.get_mut(&publisher) {
        m.feedback.keyframe_requests_sent += sent_any;
    }
    let deferred: (Arc<str>, Option<Layer>) = (Arc::from(key), layer);
    if throttled && state.deferred_keyframes.insert(deferred.clone()) {
        let (key, layer) = deferred;
        state.myself.send_after(MIN_KEYFRAME_REQUEST_INTERVAL, move || RouterMsg::DeferredKeyframe { key, layer });
    }
}

async fn speaker_tick(state: &mut RouterState) {
    let now = Instant::now();
    let changed = state.forwarder.speaker_tick(now);
    let Some(change) = changed else { return };
    let mut order: Vec<(Uuid, f64)> = state.forwarder.speaker_scores(state.members.keys().copied(), now);
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    state.speakers = order.into_iter().map(|(u, _)| u).collect();
    state.speakers.retain(|u| *u != change.current);
    state.speakers.insert(0, change.current);
    let _ = state
        .meeting
        .cast(MeetingMsg::MediaEvent { to: None, event: Event::ActiveSpeaker { user_id: change.current } });
    if let Some(r) = &state.recorder {
        let _ = r.actor.cast(RecorderMsg::Speaker(change.current));
    }
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
            room: state.rights.get(u).and_then(|r| r.room),
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

/// Where a key's packets come from: publisher, msid track id, codec, simulcast layers.
type Source = (Uuid, Arc<str>, Codec, Vec<Layer>);

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
                source_of.insert(p.key.clone(), (*u, track_id.clone(), p.codec, p.layers()));
            }
        }
    }
    let Some(m) = state.members.get_mut(&user) else { return };
    // Bindings change as we go, the forwarder's routes all at once at the end.
    let mut subscriptions = state.forwarder.subscriptions(user, &m.egress);
    let mut changed = false;
    let remove: Vec<Arc<str>> = m.out.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    for key in remove {
        if let Some((track, _)) = m.out.remove(&key) {
            tracing::debug!(%user, track = %key, ssrc = track.ssrc(), "outgoing track removed");
            subscriptions.unbind(&key);
            if let Err(e) = m.peer.remove_track(&track).await {
                tracing::debug!(%user, error = %e, "remove_track");
            }
            changed = true;
        }
    }
    let mut keyframes = Vec::new();
    for (key, tile) in &want {
        let Some((publisher, track_id, codec, layers)) = source_of.get(key) else { continue };
        match m.out.get_mut(key) {
            Some((_, old_tile)) => {
                // The same key may now be a new track of its publisher's (it published again).
                subscriptions.answer_nacks_from(key, *publisher, track_id);
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
                        subscriptions.bind(*publisher, track_id, key.clone(), track.clone(), *tile, layers.clone());
                        m.out.insert(key.clone(), (track, *tile));
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
    subscriptions.apply();
    m.awaiting_keyframe.extend(keyframes);
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

/// Where the recorder asks for keyframes: this router.
struct RouterKeyframes(RouterRef);

impl KeyframeSource for RouterKeyframes {
    fn keyframe(&self, publisher: Uuid, track_id: Arc<str>) {
        let _ = self.0.cast(RouterMsg::RecorderKeyframe { publisher, track_id });
    }
}

/// Starts this part of the recording: a recorder (a linked child), tapping every track
/// published so far; later tracks join it as they open (`record_track`).
async fn start_recorder(myself: &RouterRef, state: &mut RouterState, start: RecordStart) -> Result<(), String> {
    let Some(services) = state.recording.clone() else {
        return Err("this node cannot record (no object storage)".into());
    };
    if state.recorder.is_some() {
        return Ok(());
    }
    let (tap, packets) = Tap::new();
    let args = RecorderArgs {
        meeting_id: state.meeting_id,
        capture: start.capture,
        services,
        labels: start.labels,
        keyframes: Arc::new(RouterKeyframes(myself.clone())),
        packets,
    };
    let (actor, _) = Actor::spawn_linked(None, RecorderActor, args, myself.get_cell())
        .await
        .map_err(|e| format!("recorder did not start: {e}"))?;
    state.recorder = Some(ActiveRecorder { actor, tap });
    let tracks: Vec<(Uuid, Arc<str>, MediaSource, Codec)> = state
        .members
        .iter()
        .flat_map(|(u, m)| m.published.iter().map(|(t, p)| (*u, t.clone(), p.source, p.codec)))
        .collect();
    for (user, track_id, source, codec) in tracks {
        record_track(state, user, track_id, source, codec);
    }
    if let (Some(r), Some(first)) = (&state.recorder, state.speakers.first()) {
        let _ = r.actor.cast(RecorderMsg::Speaker(*first));
    }
    Ok(())
}

/// Stops the recorder, if any: it hands its tail to a task of its own before it replies.
/// `finish`: the recording is over; otherwise only this part is.
async fn stop_recorder(state: &mut RouterState, finish: bool) {
    let Some(r) = state.recorder.take() else { return };
    for (user, m) in &state.members {
        for track_id in m.published.keys() {
            state.forwarder.stop_recording(*user, track_id);
        }
    }
    let stopped = ractor::call_t!(r.actor, |reply| RecorderMsg::Stop { finish, reply }, 5_000);
    if let Err(e) = stopped {
        tracing::warn!(meeting_id = %state.meeting_id, error = %e, "recorder did not answer its stop");
        r.actor.stop(None);
    }
    let dropped = r.tap.dropped();
    if dropped > 0 {
        tracing::warn!(meeting_id = %state.meeting_id, dropped, "recording tap dropped packets (recorder behind)");
    }
}

/// Taps a published track for the recorder, if recording.
fn record_track(state: &RouterState, user: Uuid, track_id: Arc<str>, source: MediaSource, codec: Codec) {
    let Some(r) = &state.recorder else { return };
    let kind = match source {
        MediaSource::Microphone => TrackKind::Audio,
        MediaSource::Camera => TrackKind::Camera,
        MediaSource::Screen => TrackKind::Screen,
    };
    state.forwarder.record(user, &track_id, r.tap.clone());
    let _ = r.actor.cast(RecorderMsg::TrackStarted { publisher: user, track_id, kind, codec });
}

/// A publisher's track (`Some`) or all its tracks (`None`) stopped: their files end.
fn recorder_tracks_gone(state: &RouterState, user: Uuid, track_id: Option<&str>) {
    let Some(r) = &state.recorder else { return };
    match track_id {
        Some(t) => {
            state.forwarder.stop_recording(user, t);
            let _ = r.actor.cast(RecorderMsg::TrackEnded { publisher: user, track_id: Arc::from(t) });
        }
        None => {
            let _ = r.actor.cast(RecorderMsg::PublisherGone { publisher: user });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_media_join_moves_forward_through_every_phase_and_never_back() {
        let mut j = MediaJoin::start(Uuid::new_v4());
        assert_eq!(j.at, JoinPhase::Ice);
        j.reach(JoinPhase::FirstPacket);
        assert_eq!(j.at, JoinPhase::FirstPacket, "a packet before the events: the phases between end with it");
        j.reach(JoinPhase::Dtls);
        assert_eq!(j.at, JoinPhase::FirstPacket, "a late event does not go back");
        let mut j = MediaJoin::start(Uuid::new_v4());
        j.reach(JoinPhase::Dtls);
        j.reach(JoinPhase::Dtls);
        assert_eq!(j.at, JoinPhase::Dtls);
    }
}
