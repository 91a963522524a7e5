//! `MeetingActor`: one per live meeting. Owns the [`LiveMeeting`] state machine and performs the
//! effects of each step: deliver events to participant actors, mirror presence, persist chat,
//! roles and the end of the meeting. Presence/database failures while performing an effect are
//! logged and do not stop the meeting: its memory stays authoritative while it runs.

use std::collections::HashMap;
use std::sync::Arc;

use parley_core::meeting::{Caller, Effect, LiveMeeting, MeetingConfig, Outcome};
use parley_core::protocol::{ErrorCode, EventFrame, LeaveReason, ReplyData, Request};
use parley_presence::PresenceRecord;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use crate::participant::{ParticipantMsg, ParticipantRef};
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
        let meeting = LiveMeeting::new(cfg, info.started_at.timestamp_millis());
        myself.send_interval(s.config.sweep_interval, || MeetingMsg::Sweep);
        tracing::info!(meeting_id = %args.meeting_id, node = %s.node, title = %info.title, "meeting live");
        Ok(MeetingState { meeting, conns: HashMap::new(), services: args.services, grace_generation: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<MeetingMsg>,
        msg: MeetingMsg,
        state: &mut MeetingState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MeetingMsg::Request { caller, conn, request, reply } => {
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
            MeetingMsg::Sweep => {
                let users: Vec<Uuid> = state.meeting.audience(parley_core::meeting::Scope::Everyone);
                match state.services.presence.expired(state.meeting.meeting_id(), &users).await {
                    Ok(expired) => {
                        for user in expired {
                            tracing::info!(meeting_id = %state.meeting.meeting_id(), %user, "presence expired");
                            if let Some(c) = state.conns.remove(&user) {
                                let _ = c.cast(ParticipantMsg::Detached {
                                    meeting_id: state.meeting.meeting_id(),
                                    reason: LeaveReason::Timeout,
                                });
                            }
                            let outcome = state.meeting.disconnected(now_ms(), user, LeaveReason::Timeout);
                            perform(&myself, state, outcome.effects).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(meeting_id = %state.meeting.meeting_id(), error = %e, "presence sweep failed")
                    }
                }
            }
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

/// Performs a step's effects, in order.
async fn perform(myself: &ActorRef<MeetingMsg>, state: &mut MeetingState, effects: Vec<Effect>) {
    let meeting_id = state.meeting.meeting_id();
    let s = state.services.clone();
    for effect in effects {
        match effect {
            Effect::Send { to, event } => {
                if let Some(c) = state.conns.get(&to) {
                    let _ = c.cast(ParticipantMsg::Event(Arc::new(EventFrame { meeting_id, event })));
                }
            }
            Effect::Broadcast { scope, event } => {
                let frame = Arc::new(EventFrame { meeting_id, event });
                for user in state.meeting.audience(scope) {
                    if let Some(c) = state.conns.get(&user) {
                        let _ = c.cast(ParticipantMsg::Event(frame.clone()));
                    }
                }
                if let Ok(json) = serde_json::to_string(&*frame)
                    && let Err(e) = s.presence.publish(meeting_id, &json).await
                {
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
