//! `MeetingActor`: one per live meeting. Owns the [`LiveMeeting`] state machine and performs the
//! effects of each step: deliver events to participant actors, mirror presence, persist chat,
//! roles and the end of the meeting. Presence/database failures while performing an effect are
//! logged and do not stop the meeting: its memory stays authoritative while it runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parley_core::meeting::{CHAT_HISTORY, Caller, DurableFlags, Effect, LiveMeeting, MeetingConfig, Outcome, Snapshot};
use parley_core::protocol::{ErrorCode, EventFrame, LeaveReason, ReplyData, Request};
use parley_presence::PresenceRecord;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use crate::participant::{ParticipantMsg, ParticipantRef, SharedEvent};
use crate::{LiveServices, now_ms};

pub type MeetingRef = ActorRef<MeetingMsg>;

/// Messages to a meeting actor.
pub enum MeetingMsg {
    /// A participant's request; the reply goes back on `reply`.
    Request {
        caller: Caller,
        conn: ParticipantRef,
        request: Request,
        reply: RpcReplyPort<Result<ReplyData, (ErrorCode, String)>>,
    },
    /// A participant's connection closed.
    Disconnected { user_id: Uuid, conn: ActorId },
    /// Time to look for expired presence.
    Sweep,
    /// The grace period that started at generation `generation` is over.
    GraceExpired { generation: u64 },
    /// A connection of a known user re-attaches after this actor restarted.
    Attach { user_id: Uuid, conn: ParticipantRef },
    /// Fault injection (operators' drills, tests): panic, as a bug would.
    Crash,
    /// Fault injection: make one participant's connection actor panic.
    CrashParticipant { user_id: Uuid },
}

/// The process group of a meeting's connections: survives the meeting actor, so a restarted
/// actor can find them.
pub fn connections_group(meeting_id: Uuid) -> String {
    format!("meeting-connections:{meeting_id}")
}

pub struct MeetingArgs {
    pub meeting_id: Uuid,
    pub services: Arc<LiveServices>,
}

pub struct MeetingActor;

pub struct MeetingState {
    meeting: LiveMeeting,
    conns: HashMap<Uuid, ParticipantRef>,
    services: Arc<LiveServices>,
    grace_generation: u64,
    /// When each connected user was last heard from (any request counts as a heartbeat). The
    /// owner decides expiry from this, not from Redis: a Redis restart must not evict anybody.
    last_seen: HashMap<Uuid, Instant>,
    /// The flags last mirrored to presence.
    mirrored_flags: Option<DurableFlags>,
    rehydrated: bool,
}

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
        let info = s.store.start_meeting(args.meeting_id, &s.node).await.map_err(|e| format!("start: {e}"))?;
        if let Err(e) = s.presence.set_media_server(args.meeting_id, &s.node).await {
            tracing::warn!(meeting_id = %args.meeting_id, error = %e, "presence: media server not recorded");
        }
        let cfg = MeetingConfig { meeting_id: info.meeting_id, host: info.host, settings: info.settings };
        let started = info.started_at.timestamp_millis();
        let (meeting, rehydrated) = if info.was_active {
            (LiveMeeting::restore(cfg, started, now_ms(), saved_state(s, args.meeting_id).await), true)
        } else {
            (LiveMeeting::new(cfg, started), false)
        };
        myself.send_interval(s.config.sweep_interval, || MeetingMsg::Sweep);
        tracing::info!(
            meeting_id = %args.meeting_id,
            node = %s.node,
            title = %info.title,
            participants = meeting.participant_count(),
            "{}",
            if rehydrated { "meeting re-activated from saved state" } else { "meeting live" }
        );
        let mirrored_flags = rehydrated.then(|| meeting.flags());
        // Restored participants get a full TTL to show up again.
        let last_seen = meeting.connected_users().into_iter().map(|u| (u, Instant::now())).collect();
        Ok(MeetingState {
            meeting,
            conns: HashMap::new(),
            services: args.services,
            grace_generation: 0,
            last_seen,
            mirrored_flags,
            rehydrated,
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
                    meeting: myself.clone(),
                });
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

    async fn handle(
        &self,
        myself: ActorRef<MeetingMsg>,
        msg: MeetingMsg,
        state: &mut MeetingState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MeetingMsg::Request { caller, conn, request, reply } => {
                state.last_seen.insert(caller.user_id, Instant::now());
                let is_join = matches!(request, Request::Join { .. });
                let outcome = state.meeting.handle(now_ms(), &caller, &request);
                if is_join && matches!(outcome.reply, Some(Ok(_))) {
                    if let Some(old) = state.conns.insert(caller.user_id, conn.clone())
                        && old.get_id() != conn.get_id()
                    {
                        let _ = old.cast(ParticipantMsg::Detached {
                            meeting_id: state.meeting.meeting_id(),
                            reason: LeaveReason::Replaced,
                        });
                    }
                } else if state.meeting.participant(caller.user_id).is_some()
                    || state.meeting.is_waiting(caller.user_id)
                {
                    // A request from a known user re-attaches their connection (after a restart).
                    state.conns.entry(caller.user_id).or_insert(conn);
                }
                let Outcome { reply: r, effects } = outcome;
                // Effects first: a reply means the change is delivered, mirrored and stored.
                perform(&myself, state, effects).await;
                let _ = reply.send(r.unwrap_or(Err((ErrorCode::Internal, "no reply".to_owned()))));
            }
            MeetingMsg::Disconnected { user_id, conn } => {
                if state.conns.get(&user_id).is_some_and(|c| c.get_id() == conn) {
                    state.conns.remove(&user_id);
                    let outcome = state.meeting.disconnected(now_ms(), user_id, LeaveReason::Disconnected);
                    perform(&myself, state, outcome.effects).await;
                }
            }
            MeetingMsg::Sweep => sweep(&myself, state).await,
            MeetingMsg::Attach { user_id, conn } => {
                if state.meeting.participant(user_id).is_some() || state.meeting.is_waiting(user_id) {
                    state.conns.insert(user_id, conn);
                }
            }
            MeetingMsg::CrashParticipant { user_id } => {
                if let Some(c) = state.conns.get(&user_id) {
                    let _ = c.cast(ParticipantMsg::Crash);
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
    let ttl = state.services.presence.ttl();
    let connected = state.meeting.connected_users();
    state.last_seen.retain(|u, _| connected.contains(u));
    let (silent, alive): (Vec<Uuid>, Vec<Uuid>) =
        connected.into_iter().partition(|u| state.last_seen.get(u).is_none_or(|t| t.elapsed() >= ttl));
    for user in silent {
        tracing::info!(%meeting_id, %user, "presence expired: no heartbeat within the TTL");
        state.last_seen.remove(&user);
        if let Some(c) = state.conns.remove(&user) {
            let _ = c.cast(ParticipantMsg::Detached { meeting_id, reason: LeaveReason::Timeout });
        }
        let outcome = state.meeting.disconnected(now_ms(), user, LeaveReason::Timeout);
        perform(myself, state, outcome.effects).await;
    }
    // The mirror may have been lost (Redis restarted empty) or may lack some participants:
    // the meeting's own `media_server` key says whether the meeting-level keys survived.
    let participants: Vec<Uuid> = alive.into_iter().filter(|u| state.meeting.participant(*u).is_some()).collect();
    let node = state.services.node.clone();
    let lost_meeting_keys = match state.services.presence.media_server(meeting_id).await {
        Ok(owner) => owner.as_deref() != Some(node.as_str()),
        Err(e) => {
            tracing::warn!(%meeting_id, error = %e, "presence check failed; will retry");
            return;
        }
    };
    let missing = match state.services.presence.expired(meeting_id, &participants).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(%meeting_id, error = %e, "presence check failed; will retry");
            return;
        }
    };
    if !lost_meeting_keys && missing.is_empty() {
        return;
    }
    tracing::warn!(%meeting_id, lost_meeting_keys, missing = missing.len(), "presence lost (store restarted?): repairing");
    let to_rewrite = if lost_meeting_keys { participants } else { missing };
    let mut repairs: Vec<Effect> =
        to_rewrite.iter().filter_map(|u| state.meeting.participant(*u).cloned()).map(Effect::PresenceUpsert).collect();
    if lost_meeting_keys {
        repairs.push(Effect::WaitingRoomChanged(state.meeting.waiting()));
        if let Err(e) = state.services.presence.set_media_server(meeting_id, &node).await {
            tracing::warn!(%meeting_id, error = %e, "presence: media server not repaired");
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
            Effect::Send { to, event } => {
                if let Some(c) = state.conns.get(&to) {
                    let _ = c.cast(ParticipantMsg::Event(SharedEvent::new(EventFrame { meeting_id, event })));
                }
            }
            Effect::Broadcast { scope, event } => {
                let shared = SharedEvent::new(EventFrame { meeting_id, event });
                for user in state.meeting.audience(scope) {
                    if let Some(c) = state.conns.get(&user) {
                        let _ = c.cast(ParticipantMsg::Event(shared.clone()));
                    }
                }
                let json = shared.bytes(parley_core::protocol::Encoding::Json);
                if let Err(e) = s.presence.publish(meeting_id, &String::from_utf8_lossy(json)).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: event not published");
                }
            }
            Effect::PresenceUpsert(view) => {
                let connection_id = state.conns.get(&view.user_id).map(|c| c.get_id().to_string()).unwrap_or_default();
                let rec = PresenceRecord { view, connection_id, node: s.node.clone() };
                if let Err(e) = s.presence.upsert(meeting_id, &rec, now_ms()).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: participant not mirrored");
                }
            }
            Effect::PresenceRemove(user) => {
                if let Err(e) = s.presence.remove(meeting_id, user).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: participant not removed");
                }
            }
            Effect::WaitingRoomChanged(list) => {
                if let Err(e) = s.presence.set_waiting(meeting_id, &list).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: waiting room not mirrored");
                }
            }
            Effect::PersistChat(message) => {
                if let Err(e) = s.store.insert_chat(meeting_id, &message).await {
                    tracing::warn!(%meeting_id, error = %e, "chat message not persisted");
                }
            }
            Effect::PersistRole { user_id, role } => {
                if let Err(e) = s.store.set_participant_role(meeting_id, user_id, role).await {
                    tracing::warn!(%meeting_id, error = %e, "role change not persisted");
                }
            }
            Effect::Detach { user_id, reason } => {
                if let Some(c) = state.conns.remove(&user_id) {
                    let _ = c.cast(ParticipantMsg::Detached { meeting_id, reason });
                }
            }
            Effect::BecameEmpty => {
                state.grace_generation += 1;
                let generation = state.grace_generation;
                myself.send_after(s.config.empty_grace, move || MeetingMsg::GraceExpired { generation });
            }
            Effect::Ended { reason, analytics } => {
                if let Err(e) = s.store.end_meeting(meeting_id, &analytics).await {
                    tracing::error!(%meeting_id, error = %e, "meeting end not persisted");
                }
                let users: Vec<Uuid> = state.conns.keys().copied().collect();
                if let Err(e) = s.presence.clear(meeting_id, &users).await {
                    tracing::warn!(%meeting_id, error = %e, "presence: keys not cleared");
                }
                for (_, c) in state.conns.drain() {
                    let _ = c.cast(ParticipantMsg::Detached { meeting_id, reason: LeaveReason::MeetingEnded });
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
