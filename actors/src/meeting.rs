//! `MeetingActor`: one per live meeting. Owns the [`LiveMeeting`] state machine and performs the
//! effects of each step: deliver events to participant actors, mirror presence, persist chat,
//! roles and the end of the meeting. Presence/database failures while performing an effect are
//! logged and do not stop the meeting: its memory stays authoritative while it runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_core::meeting::{
    Analytics, Answer, Audience, CHAT_HISTORY, Caller, DurableFlags, Effect, LiveMeeting, MeetingConfig, Outcome,
    Snapshot,
};
use parley_core::placement::Owner;
use parley_core::protocol::{
    Encoding, ErrorCode, Event, EventFrame, EventSeq, LeaveReason, MediaNode, ReplyData, Request, decode,
};
use parley_presence::{LoggedEvent, PresenceError, PresenceRecord};
use parley_store::StoreError;
use parley_store::recordings::Capture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{LiveError, LiveResult};
use crate::media_router::{MediaRights, MediaRouterActor, RecordStart, RouterArgs, RouterMsg, RouterRef};
use crate::messages::{Conn, MeetingHandle, MeetingMsg, ParticipantMsg, SharedEvent, connections_group};
use crate::presence_repair;
use crate::transport::cast_node;
use crate::wire::Body;
use crate::write_queue::{Flushed, Write, WriteQueue};
use crate::{LiveServices, now_ms};

/// Why a meeting's actor did not start: a refusal, not a crash (the supervisor turns it into a
/// reply code; nothing panicked).
#[derive(Debug, thiserror::Error)]
pub enum StartRefused {
    /// Another live node owns the meeting (it is moving between nodes).
    #[error("the meeting is owned by another node")]
    OwnedElsewhere,
    /// In a cluster, ownership cannot be claimed without presence.
    #[error("presence unavailable: {0}")]
    PresenceUnavailable(String),
    /// The database refused or could not be reached (an ended meeting, for one).
    #[error("{0}")]
    Store(#[from] StoreError),
}

pub struct MeetingArgs {
    pub meeting_id: Uuid,
    pub services: Arc<LiveServices>,
    /// The owner value of a dead node this activation may replace.
    pub takeover_from: Option<String>,
    /// Where to publish the connected-participant count (the node's meeting table).
    pub participants: Arc<std::sync::atomic::AtomicU32>,
    /// Where the media router publishes its peer count.
    pub media_peers: Arc<std::sync::atomic::AtomicU32>,
}

pub struct MeetingActor;

pub struct MeetingState {
    meeting: LiveMeeting,
    conns: HashMap<Uuid, Conn>,
    services: Arc<LiveServices>,
    /// The fencing epoch this activation holds; every database write carries it.
    epoch: i64,
    participants: Arc<std::sync::atomic::AtomicU32>,
    media_peers: Arc<std::sync::atomic::AtomicU32>,
    /// The meeting's SFU, started on the first media request.
    router: Option<RouterRef>,
    /// Another node took the meeting over: stop acting for it.
    fenced: bool,
    grace_generation: u64,
    /// When each connected user was last heard from (any request counts as a heartbeat). The
    /// owner decides expiry from this, not from Redis: a Redis restart must not evict anybody.
    last_seen: HashMap<Uuid, Instant>,
    /// The flags last mirrored to presence.
    mirrored_flags: Option<DurableFlags>,
    rehydrated: bool,
    /// Database writes not stored yet (the database was unreachable), oldest first; retried in
    /// order before any newer write (on [`MeetingMsg::RetryWrites`] and every sweep).
    writes: WriteQueue,
    /// This activation's event numbering (see [`EventSeq`]).
    seq: EventSeq,
}
/// How long a meeting that ended during a database outage keeps retrying to record its end.
const END_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

impl Actor for MeetingActor {
    type Msg = MeetingMsg;
    type State = MeetingState;
    type Arguments = MeetingArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MeetingMsg>,
        args: MeetingArgs,
    ) -> Result<MeetingState, ActorProcessingErr> {
        let s = &args.services;
        let id = args.meeting_id;
        // Claim first (compare-and-set in presence), then take a new epoch in the database,
        // then record the epoch with the claim. A node alone may run without the claim when
        // presence is down; in a cluster the claim is what keeps a meeting on one node.
        let claim = Owner { node: s.node.clone(), epoch: 0 };
        match s.presence.claim_owner(id, &claim, args.takeover_from.as_deref()).await {
            Ok(true) => {}
            Ok(false) => return Err(StartRefused::OwnedElsewhere.into()),
            Err(e) if s.membership.is_standalone() => {
                tracing::warn!(meeting_id = %id, error = %e, "presence: ownership not recorded");
            }
            Err(e) => return Err(StartRefused::PresenceUnavailable(e.to_string()).into()),
        }
        let info = match s.store.start_meeting(id, &s.node).await {
            Ok(info) => info,
            Err(e) => {
                if matches!(e, StoreError::Rule(_) | StoreError::NotFound(_)) {
                    // Over (ended, cancelled) or gone: the claim just made must not linger.
                    let _ = s.presence.clear(id, &[]).await;
                }
                return Err(StartRefused::Store(e).into());
            }
        };
        let owner = Owner { node: s.node.clone(), epoch: info.epoch };
        if let Err(e) = s.presence.claim_owner(id, &owner, None).await {
            tracing::warn!(meeting_id = %id, error = %e, "presence: owner epoch not recorded");
        }
        let cfg = MeetingConfig { meeting_id: info.meeting_id, host: info.host, settings: info.settings };
        let started = info.started_at.timestamp_millis();
        let (meeting, rehydrated) = if info.was_active {
            (LiveMeeting::restore(cfg, started, now_ms(), saved_state(s, args.meeting_id).await), true)
        } else {
            // A meeting restarted after it ended keeps its chat and numbers new messages after it.
            let chat = s.store.chat_history(id, CHAT_HISTORY as u64).await.unwrap_or_else(|e| {
                tracing::warn!(meeting_id = %id, error = %e, "earlier chat unreadable");
                Vec::new()
            });
            let meeting = if chat.is_empty() {
                LiveMeeting::new(cfg, started)
            } else {
                let earlier = Snapshot { participants: Vec::new(), waiting: Vec::new(), flags: None, chat };
                LiveMeeting::restore(cfg, started, now_ms(), earlier)
            };
            (meeting, false)
        };
        myself.send_interval(s.config.sweep_interval, || MeetingMsg::Sweep);
        tracing::info!(
            meeting_id = %args.meeting_id,
            node = %s.node,
            epoch = info.epoch,
            title = %info.title,
            participants = meeting.participant_count(),
            "{}",
            if rehydrated { "meeting re-activated from saved state" } else { "meeting live" }
        );
        let mirrored_flags = rehydrated.then(|| meeting.flags());
        // Restored participants get a full TTL to show up again.
        let last_seen = meeting.connected_users().into_iter().map(|u| (u, Instant::now())).collect();
        args.participants.store(meeting.participant_count() as u32, std::sync::atomic::Ordering::Relaxed);
        if rehydrated && meeting.is_recording() {
            // The recording goes on here (the next part): capture restarts once this is up.
            let _ = myself.cast(MeetingMsg::ContinueRecording);
        }
        Ok(MeetingState {
            meeting,
            conns: HashMap::new(),
            epoch: info.epoch,
            participants: args.participants,
            media_peers: args.media_peers,
            router: None,
            fenced: false,
            services: args.services,
            grace_generation: 0,
            last_seen,
            mirrored_flags,
            rehydrated,
            writes: WriteQueue::default(),
            seq: EventSeq::for_epoch(info.epoch),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<MeetingMsg>,
        state: &mut MeetingState,
    ) -> Result<(), ActorProcessingErr> {
        if state.rehydrated {
            // Tell the connections still open for this meeting where it lives now.
            let group = connections_group(state.meeting.meeting_id());
            let members = ractor::pg::get_local_members(&group);
            tracing::info!(meeting_id = %state.meeting.meeting_id(), connections = members.len(), "asking connections to re-attach");
            for cell in members {
                let _ = cell.send_message(ParticipantMsg::Reattach {
                    meeting_id: state.meeting.meeting_id(),
                    meeting: MeetingHandle::Local(myself.clone()),
                });
            }
            // And the connections on other nodes (after a failover or a move).
            let s = &state.services;
            for peer in s.membership.peers() {
                let body =
                    Body::Moved { meeting_id: state.meeting.meeting_id(), owner: s.node.clone(), epoch: state.epoch };
                cast_node(s, &peer.name, body);
            }
            if state.meeting.participant_count() == 0 {
                // Nobody came back with it: the usual grace period, then it ends.
                state.grace_generation += 1;
                let generation = state.grace_generation;
                myself.send_after(state.services.config.empty_grace, move || MeetingMsg::GraceExpired { generation });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MeetingMsg>,
        state: &mut MeetingState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(r) = state.router.take() {
            r.stop(Some("meeting stopped".to_owned()));
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MeetingMsg>,
        event: SupervisionEvent,
        state: &mut MeetingState,
    ) -> Result<(), ActorProcessingErr> {
        // The only child is the media router. Its failure costs the meeting its media, not its
        // state: connections are told to offer again, which starts a new router.
        if let SupervisionEvent::ActorFailed(who, _) | SupervisionEvent::ActorTerminated(who, _, _) = &event
            && state.router.as_ref().is_some_and(|r| r.get_id() == who.get_id())
        {
            state.router = None;
            state.media_peers.store(0, std::sync::atomic::Ordering::Relaxed);
            if matches!(event, SupervisionEvent::ActorFailed(..)) && state.meeting.is_recording() {
                let _ = _myself.cast(MeetingMsg::ContinueRecording);
            }
            if let SupervisionEvent::ActorFailed(_, reason) = &event {
                tracing::error!(meeting_id = %state.meeting.meeting_id(), %reason, "media router failed; clients will reconnect media");
                state.services.metrics.actor_restarted(crate::metrics::ActorKind::MediaRouter);
                state.services.ops.actor_failed(
                    crate::metrics::ActorKind::MediaRouter,
                    state.meeting.meeting_id(),
                    &reason.to_string(),
                );
                let shared = SharedEvent::new(EventFrame::unsequenced(
                    state.meeting.meeting_id(),
                    Event::MediaClosed { reason: "the media router restarted".to_owned() },
                ));
                deliver(&state.services.clone(), state.conns.values(), &shared);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MeetingMsg>,
        msg: MeetingMsg,
        state: &mut MeetingState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MeetingMsg::Request { caller, conn, request, reply, span, .. } if request.is_media() => {
                state.last_seen.insert(caller.user_id, Instant::now());
                let user_id = caller.user_id;
                if state.meeting.participant(user_id).is_none() {
                    let why = if state.meeting.is_waiting(user_id) {
                        "you are in the waiting room"
                    } else {
                        "join the meeting first"
                    };
                    let _ = reply.send(Err(LiveError::new(ErrorCode::NotInMeeting, why.to_owned())));
                    return Ok(());
                }
                state.conns.entry(user_id).or_insert(conn);
                match router(&myself, state).await {
                    // The router answers on `reply` itself: signalling never waits in this mailbox.
                    Ok(r) => {
                        if let Err(ractor::MessagingErr::SendErr(RouterMsg::Request { reply, .. })) =
                            r.cast(RouterMsg::Request { user_id, request, reply, span })
                        {
                            let _ = reply.send(Err(LiveError::new(ErrorCode::Unavailable, "the media router stopped")));
                        }
                    }
                    Err(e) => {
                        tracing::error!(meeting_id = %state.meeting.meeting_id(), error = %e, "media router not started");
                        let _ = reply
                            .send(Err(LiveError::new(ErrorCode::MediaUnavailable, "the media router could not start")));
                    }
                }
            }
            MeetingMsg::MediaEvent { to, event } => {
                let shared = SharedEvent::new(EventFrame::unsequenced(state.meeting.meeting_id(), event));
                let s = state.services.clone();
                match to {
                    Some(user) => deliver(&s, state.conns.get(&user).into_iter(), &shared),
                    None => deliver(&s, state.conns.values(), &shared),
                }
            }
            MeetingMsg::Request { caller, conn, request, seen, reply, span } => {
                // An untraced request (a heartbeat) opens no span of its own here either.
                let span = if span.is_none() {
                    tracing::Span::none()
                } else {
                    tracing::info_span!(parent: &span, "meeting.request", kind = request.kind(), meeting_id = %state.meeting.meeting_id())
                };
                request_of(&myself, state, caller, conn, request, seen, reply).instrument(span).await;
            }
            MeetingMsg::Disconnected { user_id, conn, lost } => {
                if state.conns.get(&user_id).is_some_and(|c| c.addr(&state.services.node) == conn) {
                    state.conns.remove(&user_id);
                    if lost {
                        // The network dropped, not the person: the seat stays for a `resume`
                        // until its presence times out (the sweep), as after a node's death.
                        tracing::info!(meeting_id = %state.meeting.meeting_id(), user = %user_id, "connection lost; the seat is kept for a resume until its presence times out");
                    } else {
                        let outcome = state.meeting.disconnected(now_ms(), user_id, LeaveReason::Disconnected);
                        perform(&myself, state, outcome.effects).await;
                    }
                }
            }
            MeetingMsg::Sweep => sweep(&myself, state).await,
            MeetingMsg::RetryWrites => {
                state.writes.retry_due();
                save(&myself, state).await;
                if state.fenced {
                    step_down(&myself, state);
                }
            }
            MeetingMsg::Superseded { epoch } => {
                if epoch > state.epoch {
                    step_down(&myself, state);
                }
            }
            MeetingMsg::Attach { user_id, conn, after } => {
                if state.meeting.participant(user_id).is_some() || state.meeting.is_waiting(user_id) {
                    if let Some(after) = after {
                        // Missed events first, on the same path as the live ones after them.
                        let missed = replay(state, user_id, after).await;
                        if !missed.is_empty() {
                            tracing::debug!(meeting_id = %state.meeting.meeting_id(), user = %user_id, after, events = missed.len(), "replaying missed events");
                        }
                        for frame in missed {
                            deliver(&state.services, std::iter::once(&conn), &SharedEvent::new(frame));
                        }
                    }
                    state.conns.insert(user_id, conn);
                }
            }
            MeetingMsg::CrashParticipant { user_id } => {
                if let Some(Conn::Local(c)) = state.conns.get(&user_id) {
                    let _ = c.cast(ParticipantMsg::Crash);
                }
            }
            MeetingMsg::ContinueRecording => {
                if state.meeting.is_recording() && !state.meeting.is_ended() {
                    continue_capture(&myself, state).await;
                }
            }
            MeetingMsg::RecordingFailed { by, reason } => {
                tracing::error!(meeting_id = %state.meeting.meeting_id(), %reason, "recording stopped: capture failed");
                let outcome = state.meeting.capture_failed(by);
                perform(&myself, state, outcome.effects).await;
            }
            MeetingMsg::RecordingReady { recording_id, duration_seconds } => {
                tracing::info!(meeting_id = %state.meeting.meeting_id(), %recording_id, "recording ready: moderators told");
                let outcome = state.meeting.recording_ready(recording_id, duration_seconds);
                perform(&myself, state, outcome.effects).await;
            }
            MeetingMsg::Inspect { reply } => {
                let me = &state.services.node;
                let view = crate::ops::MeetingView {
                    meeting_id: state.meeting.meeting_id(),
                    epoch: state.epoch,
                    recording: state.meeting.is_recording(),
                    participants: state.meeting.participants().cloned().collect(),
                    waiting: state.meeting.waiting_count() as u32,
                    connections: state.conns.iter().map(|(u, c)| (*u, c.addr(me).node)).collect(),
                    actor: Default::default(),
                    media_router: None,
                };
                let _ = reply.send((view, state.router.clone()));
            }
            MeetingMsg::CrashMediaRouter => {
                if let Some(r) = &state.router {
                    let _ = r.cast(RouterMsg::Crash);
                }
            }
            MeetingMsg::Crash => panic!("fault injection: meeting {} crashed on purpose", state.meeting.meeting_id()),
            MeetingMsg::GraceExpired { generation } => {
                if generation == state.grace_generation {
                    let outcome = state.meeting.grace_expired(now_ms());
                    perform(&myself, state, outcome.effects).await;
                }
            }
        }
        Ok(())
    }
}

/// Expires participants silent for a whole TTL, and repairs presence a Redis restart lost for
/// those who are alive.
async fn sweep(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState) {
    let meeting_id = state.meeting.meeting_id();
    if !state.writes.is_empty() && !state.writes.retry_armed() {
        save(myself, state).await;
        if state.fenced {
            step_down(myself, state);
            return;
        }
    }
    let ttl = state.services.presence.ttl();
    let connected = state.meeting.connected_users();
    state.last_seen.retain(|u, _| connected.contains(u));
    let (silent, alive) = presence_repair::by_liveness(connected, &state.last_seen, ttl, Instant::now());
    for user in silent {
        tracing::info!(%meeting_id, %user, "presence expired: no heartbeat within the TTL");
        state.last_seen.remove(&user);
        if let Some(c) = state.conns.remove(&user) {
            detach(&state.services, &c, meeting_id, LeaveReason::Timeout);
        }
        let outcome = state.meeting.disconnected(now_ms(), user, LeaveReason::Timeout);
        perform(myself, state, outcome.effects).await;
    }
    let participants: Vec<Uuid> = alive.into_iter().filter(|u| state.meeting.participant(*u).is_some()).collect();
    let me = Owner { node: state.services.node.clone(), epoch: state.epoch };
    let repair = match presence_repair::check(&state.services.presence, meeting_id, &me, participants).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%meeting_id, error = %e, "presence check failed; will retry");
            return;
        }
    };
    tracing::warn!(%meeting_id, lost_meeting_keys = repair.meeting_keys, rewrite = repair.rewrite.len(), "presence lost (store restarted?): repairing");
    let mut repairs: Vec<Effect> = repair
        .rewrite
        .iter()
        .filter_map(|u| state.meeting.participant(*u).cloned())
        .map(Effect::PresenceUpsert)
        .collect();
    if repair.meeting_keys {
        repairs.push(Effect::WaitingRoomChanged(state.meeting.waiting()));
        match state.services.presence.claim_owner(meeting_id, &me, None).await {
            Ok(true) => {}
            Ok(false) => {
                // Somebody else holds the meeting now: the database epochs decide.
                tracing::warn!(%meeting_id, "another node claimed this meeting");
                step_down(myself, state);
                return;
            }
            Err(e) => tracing::warn!(%meeting_id, error = %e, "presence: owner not repaired"),
        }
        state.mirrored_flags = None;
    }
    perform(myself, state, repairs).await;
}

/// What a restarted meeting restores: presence (participants, waiting room, flags) and the
/// database (chat history). Unreadable parts are logged and start empty.
async fn saved_state(s: &LiveServices, meeting_id: Uuid) -> Snapshot {
    let participants = match s.presence.records(meeting_id).await {
        Ok(r) => r.into_iter().map(|r| r.view).collect(),
        Err(e) => {
            tracing::warn!(%meeting_id, error = %e, "rehydrate: participants unreadable");
            Vec::new()
        }
    };
    let waiting = s.presence.waiting(meeting_id).await.unwrap_or_else(|e| {
        tracing::warn!(%meeting_id, error = %e, "rehydrate: waiting room unreadable");
        Vec::new()
    });
    let flags = match s.presence.flags(meeting_id).await {
        Ok(Some(json)) => serde_json::from_str(&json).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(%meeting_id, error = %e, "rehydrate: flags unreadable");
            None
        }
    };
    let chat = s.store.chat_history(meeting_id, CHAT_HISTORY as u64).await.unwrap_or_else(|e| {
        tracing::warn!(%meeting_id, error = %e, "rehydrate: chat history unreadable");
        Vec::new()
    });
    Snapshot { participants, waiting, flags, chat }
}

/// Performs a step's effects, in order, then mirrors the flags if they changed.
async fn perform(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState, effects: Vec<Effect>) {
    perform_effects(myself, state, effects).await;
    state.participants.store(state.meeting.participant_count() as u32, std::sync::atomic::Ordering::Relaxed);
    if state.fenced {
        step_down(myself, state);
        return;
    }
    if state.meeting.is_ended() {
        return;
    }
    let flags = state.meeting.flags();
    if state.mirrored_flags.as_ref() != Some(&flags) {
        let meeting_id = state.meeting.meeting_id();
        match serde_json::to_string(&flags) {
            Ok(json) => match state.services.presence.set_flags(meeting_id, &json).await {
                Ok(()) => state.mirrored_flags = Some(flags),
                Err(e) => tracing::warn!(%meeting_id, error = %e, "presence: flags not mirrored"),
            },
            Err(e) => tracing::error!(%meeting_id, error = %e, "flags not serialisable"),
        }
    }
}

async fn perform_effects(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState, effects: Vec<Effect>) {
    let meeting_id = state.meeting.meeting_id();
    let s = state.services.clone();
    for effect in effects {
        match effect {
            Effect::Send { to, mut event } => {
                // The admitted user learns where to send media and gets its seat's resume
                // token, as a joiner does from `joined`.
                if let Event::Admitted { meeting: Some(_), media, resume_token, user_id } = &mut event {
                    *media = Some(media_node(&s));
                    *resume_token = Some(s.resume.issue(meeting_id, *user_id));
                }
                let shared = announce(state, Audience::User { user_id: to }, event).await;
                if let Some(c) = state.conns.get(&to) {
                    deliver(&s, std::iter::once(c), &shared);
                }
            }
            Effect::Broadcast { scope, event } => {
                let shared = announce(state, Audience::from(scope), event).await;
                let audience = state.meeting.audience(scope);
                deliver(&s, audience.iter().filter_map(|u| state.conns.get(u)), &shared);
            }
            Effect::PresenceUpsert(view) => {
                if let Some(r) = &state.router {
                    let _ = r.cast(RouterMsg::Rights { user_id: view.user_id, rights: MediaRights::of(&view) });
                    if state.meeting.is_recording() {
                        let _ = r.cast(RouterMsg::Labels(state.meeting.display_names().into_iter().collect()));
                    }
                }
                let addr = state.conns.get(&view.user_id).map(|c| c.addr(&s.node));
                let connection_id = addr.as_ref().map(|a| a.id.to_string()).unwrap_or_default();
                let node = addr.map(|a| a.node).unwrap_or_else(|| s.node.clone());
                let rec = PresenceRecord { view, connection_id, node };
                if let Err(e) = s.presence.upsert(meeting_id, &rec, now_ms()).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: participant not mirrored");
                }
            }
            Effect::PresenceRemove(user) => {
                if let Some(r) = &state.router {
                    let _ = r.cast(RouterMsg::Left { user_id: user });
                }
                if let Err(e) = s.presence.remove(meeting_id, user).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: participant not removed");
                }
            }
            Effect::WaitingRoomChanged(list) => {
                if let Err(e) = s.presence.set_waiting(meeting_id, &list).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: waiting room not mirrored");
                }
            }
            Effect::PersistChat(message) => persist(myself, state, Write::Chat(message)).await,
            Effect::PersistRole { user_id, role } => persist(myself, state, Write::Role { user_id, role }).await,
            Effect::PersistAttendance(a) => {
                // Only worth a database round trip when a webhook wants it.
                if s.store.wants_attendance() {
                    let w = Write::Attendance { id: Uuid::now_v7(), at: chrono::Utc::now(), attendance: a };
                    persist(myself, state, w).await;
                }
            }
            Effect::Detach { user_id, reason } => {
                if let Some(c) = state.conns.remove(&user_id) {
                    detach(&s, &c, meeting_id, reason);
                }
            }
            Effect::Record { on: true, by } => {
                if let Err(reason) = start_capture(myself, state, by).await {
                    let _ = myself.cast(MeetingMsg::RecordingFailed { by, reason });
                }
            }
            Effect::Record { on: false, .. } => stop_capture(state).await,
            Effect::BecameEmpty => {
                state.grace_generation += 1;
                let generation = state.grace_generation;
                myself.send_after(s.config.empty_grace, move || MeetingMsg::GraceExpired { generation });
            }
            Effect::Ended { reason, analytics } => {
                match store_end(&s, meeting_id, state.epoch, &mut state.writes, &analytics).await {
                    Err(StoreError::Fenced) => {
                        // Not ours to end any more: the new owner carries on.
                        state.fenced = true;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(%meeting_id, error = %e, "meeting end not stored yet; retrying in the background");
                        let writes = std::mem::take(&mut state.writes);
                        tokio::spawn(store_end_later(s.clone(), meeting_id, state.epoch, writes, analytics));
                    }
                    Ok(()) => {}
                }
                let users: Vec<Uuid> = state.conns.keys().copied().collect();
                if let Err(e) = s.presence.clear(meeting_id, &users).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: keys not cleared");
                }
                for (_, c) in state.conns.drain() {
                    detach(&s, &c, meeting_id, LeaveReason::MeetingEnded);
                }
                tracing::info!(
                    %meeting_id,
                    ?reason,
                    participants = analytics.total_participants,
                    peak = analytics.peak_participants,
                    seconds = analytics.duration_ms / 1000,
                    "meeting ended"
                );
                myself.stop(Some("ended".to_owned()));
            }
        }
    }
}

/// Stores one write of this step. Normally it is stored before the reply goes out; while
/// earlier writes wait for the database it only joins the queue (in order), so that an outage
/// costs the meeting at most one timeout per retry, not one per write.
async fn persist(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState, w: Write) {
    let waiting = !state.writes.is_empty();
    state.writes.push(state.meeting.meeting_id(), w);
    if !waiting {
        save(myself, state).await;
    }
}

/// Stores the unsaved writes in order (see [`WriteQueue::flush`]); while the database is away a
/// retry is scheduled with backoff. A fenced write marks the meeting fenced: the rest belongs
/// to the new owner.
async fn save(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState) {
    let meeting_id = state.meeting.meeting_id();
    let backlog = state.writes.len();
    let (s, epoch) = (Arc::clone(&state.services), state.epoch);
    match state.writes.flush(meeting_id, |w| write(Arc::clone(&s), meeting_id, epoch, w)).await {
        Flushed::Done { stored } => {
            if backlog > 1 {
                tracing::info!(%meeting_id, writes = stored, "deferred database writes stored");
            }
        }
        Flushed::Fenced => state.fenced = true,
        Flushed::Deferred { error, retry_in } => {
            tracing::warn!(%meeting_id, %error, unsaved = state.writes.len(), "database write deferred; will retry");
            if let Some(after) = retry_in {
                myself.send_after(after, || MeetingMsg::RetryWrites);
            }
        }
    }
}

/// What a meeting owes the database when it ends: its queued writes, then the end itself.
async fn store_end(
    s: &Arc<LiveServices>,
    meeting_id: Uuid,
    epoch: i64,
    writes: &mut WriteQueue,
    analytics: &Analytics,
) -> Result<(), StoreError> {
    match writes.flush(meeting_id, |w| write(Arc::clone(s), meeting_id, epoch, w)).await {
        Flushed::Done { .. } => s.store.end_meeting(meeting_id, epoch, analytics).await,
        Flushed::Fenced => Err(StoreError::Fenced),
        Flushed::Deferred { error, .. } => Err(error),
    }
}

/// One write, fenced by `epoch`. Chat inserts and attendance events are idempotent and role
/// updates absolute, so a write that timed out after committing is safe to repeat.
async fn write(s: Arc<LiveServices>, meeting_id: Uuid, epoch: i64, w: Write) -> Result<(), StoreError> {
    match w {
        Write::Chat(m) => s.store.insert_chat(meeting_id, epoch, &m).await,
        Write::Role { user_id, role } => s.store.set_participant_role(meeting_id, epoch, user_id, role).await,
        Write::Attendance { id, at, attendance } => {
            s.store.record_attendance(meeting_id, epoch, id, at, &attendance).await
        }
    }
}

/// A meeting ended while its database was away: keep trying to store what it still owes (the
/// deferred writes, then the end itself) once a second, for up to [`END_RETRY_FOR`].
async fn store_end_later(
    s: Arc<LiveServices>,
    meeting_id: Uuid,
    epoch: i64,
    mut writes: WriteQueue,
    analytics: Analytics,
) {
    let started = Instant::now();
    let mut attempts = 0u32;
    while started.elapsed() < END_RETRY_FOR {
        tokio::time::sleep(Duration::from_secs(1)).await;
        attempts += 1;
        match store_end(&s, meeting_id, epoch, &mut writes, &analytics).await {
            Ok(()) => {
                tracing::info!(%meeting_id, attempts, "meeting end stored after the database came back");
                return;
            }
            Err(StoreError::Fenced) => {
                tracing::warn!(%meeting_id, "meeting end not stored: another node owns the meeting now");
                return;
            }
            Err(e) if attempts % 10 == 1 => {
                tracing::warn!(%meeting_id, attempts, error = %e, "meeting end still not stored; retrying")
            }
            Err(_) => {}
        }
    }
    tracing::error!(%meeting_id, writes = writes.len(), "meeting end never stored: gave up");
}

/// Numbers an event and logs it (and publishes it) before anyone receives it: whatever a
/// participant has seen is in the log for the others to replay, so a new owner can fill every
/// gap. A log the store refuses as stale means a newer activation numbers this meeting's
/// events now: this one is fenced. With presence unavailable the event still goes out, and
/// that gap cannot be replayed later (logged).
async fn announce(state: &mut MeetingState, audience: Audience, event: Event) -> Arc<SharedEvent> {
    let meeting_id = state.meeting.meeting_id();
    let (seq, past_block) = state.seq.take();
    if past_block {
        tracing::error!(%meeting_id, seq, "event numbers ran past this activation's block");
    }
    let shared = SharedEvent::new(EventFrame { meeting_id, seq: Some(seq), event });
    let frame = String::from_utf8_lossy(shared.bytes(Encoding::Json)).into_owned();
    match state.services.presence.log_event(meeting_id, &LoggedEvent { seq, audience, frame }).await {
        Ok(()) => {}
        Err(PresenceError::Corrupt(why)) => {
            tracing::warn!(%meeting_id, seq, %why, "event log has newer events: another activation owns this meeting");
            state.fenced = true;
        }
        Err(e) => tracing::warn!(%meeting_id, seq, error = %e, "presence: event not logged (a replay cannot fill it)"),
    }
    shared
}

/// The logged events after `after` that are meant for `user`, oldest first. Unreadable parts
/// of the log are logged and skipped.
async fn replay(state: &MeetingState, user: Uuid, after: u64) -> Vec<EventFrame> {
    let meeting_id = state.meeting.meeting_id();
    let logged = match state.services.presence.events_after(meeting_id, after).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%meeting_id, %user, after, error = %e, "event log unreadable: nothing replayed");
            return Vec::new();
        }
    };
    logged
        .into_iter()
        .filter(|e| state.meeting.reaches(e.audience, user))
        .filter_map(|e| match decode::<EventFrame>(e.frame.as_bytes(), Encoding::Json) {
            Ok(frame) => Some(frame),
            Err(why) => {
                tracing::warn!(%meeting_id, seq = e.seq, %why, "logged event unreadable: skipped");
                None
            }
        })
        .collect()
}

/// This node as the meeting's media node.
fn media_node(s: &LiveServices) -> MediaNode {
    let me = s.membership.me();
    MediaNode { node: me.name.clone(), media_addr: s.media.media_addr(), ice_servers: s.media.ice_servers.clone() }
}

/// Sends one event to connections: local ones directly, remote ones in one message per node.
fn deliver<'a>(s: &LiveServices, conns: impl Iterator<Item = &'a Conn>, shared: &Arc<SharedEvent>) {
    let mut remote: HashMap<&str, Vec<u64>> = HashMap::new();
    for c in conns {
        match c {
            Conn::Local(r) => {
                let _ = r.cast(ParticipantMsg::Event(shared.clone()));
            }
            Conn::Remote(a) => remote.entry(a.node.as_str()).or_default().push(a.id),
        }
    }
    for (node, ids) in remote {
        let body = Body::Deliver { meeting_id: shared.frame.meeting_id, conns: ids, frame: shared.frame.clone() };
        cast_node(s, node, body);
    }
}

/// Tells a connection the meeting let go of it.
fn detach(s: &LiveServices, conn: &Conn, meeting_id: Uuid, reason: LeaveReason) {
    match conn {
        Conn::Local(r) => {
            let _ = r.cast(ParticipantMsg::Detached { meeting_id, reason });
        }
        Conn::Remote(a) => cast_node(s, &a.node, Body::Detached { meeting_id, conn: a.id, reason }),
    }
}

/// Another node holds a newer epoch: stop without touching the meeting's shared state (it is
/// the new owner's now). Connections find the new owner on their next request, or when it
/// announces itself.
fn step_down(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState) {
    tracing::warn!(
        meeting_id = %state.meeting.meeting_id(),
        epoch = state.epoch,
        "fenced: another node took this meeting over; stopping here"
    );
    myself.stop(Some("fenced".to_owned()));
}

/// The meeting's media router, started (as a linked child) on first use.
async fn router(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState) -> Result<RouterRef, ractor::SpawnErr> {
    if let Some(r) = &state.router {
        return Ok(r.clone());
    }
    let args = RouterArgs {
        meeting_id: state.meeting.meeting_id(),
        meeting: myself.clone(),
        config: state.services.media.clone(),
        peers_gauge: state.media_peers.clone(),
        recording: state.services.recording.clone(),
    };
    let (r, _) = Actor::spawn_linked(None, MediaRouterActor, args, myself.get_cell()).await?;
    // What everyone's media may do so far; every later change follows (PresenceUpsert).
    for view in state.meeting.participants() {
        let _ = r.cast(RouterMsg::Rights { user_id: view.user_id, rights: MediaRights::of(view) });
    }
    state.router = Some(r.clone());
    Ok(r)
}

/// Starts capture of a new recording by `by` (the core just turned recording on).
async fn start_capture(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState, by: Uuid) -> Result<(), String> {
    let s = state.services.clone();
    let Some(layout) = s.recording.as_ref().map(|r| r.layout) else {
        return Err("recording is not configured on this node".into());
    };
    let meeting_id = state.meeting.meeting_id();
    let capture = s
        .store
        .start_recording(meeting_id, by, layout, &s.node)
        .await
        .map_err(|e| format!("the recording could not be created: {e}"))?;
    begin_capture(myself, state, capture).await
}

/// Continues the meeting's recording here as its next part.
async fn continue_capture(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState) {
    let s = state.services.clone();
    let meeting_id = state.meeting.meeting_id();
    let by = state.meeting.flags().recording_by.unwrap_or(state.meeting.host());
    let result = match s.store.continue_recording(meeting_id, &s.node).await {
        Ok(Some(capture)) => {
            tracing::info!(%meeting_id, recording_id = %capture.recording_id, part = capture.part, "recording continues here");
            begin_capture(myself, state, capture).await
        }
        Ok(None) => Err("no recording to continue".into()),
        Err(e) => Err(format!("the recording could not be continued: {e}")),
    };
    if let Err(reason) = result {
        let _ = myself.cast(MeetingMsg::RecordingFailed { by, reason });
    }
}

async fn begin_capture(
    myself: &ActorRef<MeetingMsg>,
    state: &mut MeetingState,
    capture: Capture,
) -> Result<(), String> {
    let recording_id = capture.recording_id;
    let router = router(myself, state).await.map_err(|e| format!("media router did not start: {e}"))?;
    let labels = state.meeting.display_names().into_iter().collect();
    let start = RecordStart { capture, labels };
    let started = ractor::call_t!(router, |reply| RouterMsg::Record { start: Some(start), reply }, 10_000)
        .map_err(|e| format!("media router did not answer: {e}"))
        .and_then(|r| r);
    if started.is_err() {
        // Nothing will be captured: end it so it does not stay "recording" forever.
        let _ = state.services.store.finish_capture(recording_id, "").await;
    }
    started
}

/// Stops capture: the recorder hands over its tail before this returns, so the meeting may end
/// (and its router stop) right after.
async fn stop_capture(state: &mut MeetingState) {
    let Some(router) = &state.router else { return };
    if let Err(e) = ractor::call_t!(router, |reply| RouterMsg::Record { start: None, reply }, 10_000) {
        tracing::warn!(meeting_id = %state.meeting.meeting_id(), error = %e, "media router did not stop the recording");
    }
}

/// A participant's request to the meeting's state machine: decided, its effects performed in
/// order, then answered on `reply`.
async fn request_of(
    myself: &ActorRef<MeetingMsg>,
    state: &mut MeetingState,
    caller: Caller,
    conn: Conn,
    request: Request,
    seen: Option<u64>,
    reply: RpcReplyPort<LiveResult<ReplyData>>,
) {
    state.last_seen.insert(caller.user_id, Instant::now());
    let is_join = matches!(request, Request::Join { .. } | Request::Resume { .. });
    let outcome = state.meeting.handle(now_ms(), &caller, &request);
    if is_join && matches!(outcome.reply, Some(Ok(_))) {
        let node = state.services.node.clone();
        if let Some(old) = state.conns.insert(caller.user_id, conn.clone())
            && !old.same(&conn, &node)
        {
            detach(&state.services, &old, state.meeting.meeting_id(), LeaveReason::Replaced);
        }
    } else if state.meeting.participant(caller.user_id).is_some() || state.meeting.is_waiting(caller.user_id) {
        // A request from a known user re-attaches their connection (after a restart,
        // or a move whose `Attach` has not come yet): what it missed first, so that
        // nothing newer reaches it before the older events it still lacks.
        if !state.conns.contains_key(&caller.user_id) {
            if let Some(after) = seen {
                for frame in replay(state, caller.user_id, after).await {
                    deliver(&state.services, std::iter::once(&conn), &SharedEvent::new(frame));
                }
            }
            state.conns.insert(caller.user_id, conn);
        }
    }
    let Outcome { reply: r, effects } = outcome;
    // Effects first: a reply means the change is delivered, mirrored and stored.
    perform(myself, state, effects).await;
    if state.fenced {
        // Another activation owns the meeting: what this one just did is not the
        // meeting's (its log and database refused it), so it is not acknowledged.
        let why = "the meeting moved to another node while this was carried out: check, then resend";
        let _ = reply.send(Err(LiveError::unavailable(why)));
        return;
    }
    let answer = match r {
        Some(Ok(Answer::Reply(data))) => Ok(data),
        Some(Ok(Answer::Entered(entered))) => {
            let after = match request {
                Request::Resume { last_seq, .. } => last_seq,
                _ => None,
            };
            let missed = match after {
                Some(after) => replay(state, caller.user_id, after).await,
                None => Vec::new(),
            };
            let s = &state.services;
            let token = s.resume.issue(state.meeting.meeting_id(), caller.user_id);
            Ok(entered.joined(media_node(s), token, state.seq.last(), missed))
        }
        Some(Err(refused)) => Err(LiveError::from(refused)),
        None => Err(LiveError::new(ErrorCode::Internal, "no reply")),
    };
    let _ = reply.send(answer);
}
