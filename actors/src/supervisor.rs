//! `MeetingSupervisor`: finds or starts the actor of a live meeting, and notices when one stops.

use std::collections::HashMap;
use std::sync::Arc;

use parley_core::protocol::ErrorCode;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use crate::LiveServices;
use crate::error::LiveError;
use crate::meeting::{MeetingActor, MeetingArgs, StartRefused};
use crate::messages::{CrashTarget, MeetingMsg, MeetingRef, SupervisorMsg};
use crate::ops::EventKind;
use parley_store::StoreError;

pub struct MeetingSupervisor;

pub struct SupervisorState {
    services: Arc<LiveServices>,
    meetings: HashMap<Uuid, MeetingRef>,
    by_actor: HashMap<ActorId, Uuid>,
}

impl Actor for MeetingSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<LiveServices>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        services: Arc<LiveServices>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState { services, meetings: HashMap::new(), by_actor: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Open { meeting_id, takeover_from, reply } => {
                if let Some(m) = state.meetings.get(&meeting_id) {
                    let _ = reply.send(Ok(m.clone()));
                    return Ok(());
                }
                match spawn_meeting(&myself, state, meeting_id, takeover_from).await {
                    Ok(actor) => {
                        let _ = reply.send(Ok(actor));
                    }
                    Err(e) => {
                        let (code, text) = start_refusal(meeting_id, &e);
                        let _ = reply.send(Err(LiveError::new(code, text.to_owned())));
                    }
                }
            }
            SupervisorMsg::Running { meeting_id, reply } => {
                let _ = reply.send(state.meetings.get(&meeting_id).cloned());
            }
            SupervisorMsg::Count { reply } => {
                let _ = reply.send(state.meetings.len());
            }
            SupervisorMsg::Release { meeting_id } => {
                if let Some(m) = state.meetings.get(&meeting_id) {
                    m.stop(Some("moved".to_owned()));
                }
            }
            SupervisorMsg::Crash { meeting_id, target, reply } => {
                let running = state.meetings.get(&meeting_id);
                if let Some(m) = running {
                    let _ = m.cast(match target {
                        CrashTarget::Participant(user_id) => MeetingMsg::CrashParticipant { user_id },
                        CrashTarget::Meeting => MeetingMsg::Crash,
                        CrashTarget::MediaRouter => MeetingMsg::CrashMediaRouter,
                    });
                }
                let _ = reply.send(running.is_some());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop the supervisor because a child did (ractor's default would).
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id()) {
                    state.meetings.remove(&id);
                    state.services.meetings.remove(id);
                    let why = reason.as_deref().unwrap_or("ended");
                    tracing::info!(meeting_id = %id, reason = why, "meeting actor stopped");
                    state.services.ops.event(
                        EventKind::MeetingStopped,
                        Some(id),
                        format!("meeting stopped here: {why}"),
                    );
                    state.services.ops.forget_meeting(id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id()) {
                    state.meetings.remove(&id);
                    state.services.meetings.remove(id);
                    tracing::error!(meeting_id = %id, error = %err, "meeting actor failed; restarting it from saved state");
                    state.services.metrics.actor_restarted(crate::metrics::ActorKind::Meeting);
                    state.services.ops.actor_failed(crate::metrics::ActorKind::Meeting, id, &err.to_string());
                    match spawn_meeting(&myself, state, id, None).await {
                        Ok(_) => {}
                        Err(e) => {
                            // Logged by `start_refusal`; the next request tries again.
                            let _ = start_refusal(id, &e);
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The reply to a meeting that did not start, logged as one line: a refusal (moved, ended,
/// storage away) is not a crash, and is not reported as one.
fn start_refusal(meeting_id: Uuid, e: &ractor::SpawnErr) -> (ErrorCode, &'static str) {
    let refused = match e {
        ractor::SpawnErr::StartupFailed(inner) => inner.downcast_ref::<StartRefused>(),
        _ => None,
    };
    match refused {
        Some(r @ StartRefused::OwnedElsewhere) => {
            tracing::info!(%meeting_id, reason = %r, "meeting not started here");
            (ErrorCode::Unavailable, "the meeting is moving between nodes; retry")
        }
        Some(r @ StartRefused::PresenceUnavailable(_))
        | Some(r @ StartRefused::Store(StoreError::Unavailable(_) | StoreError::Timeout(_))) => {
            tracing::warn!(%meeting_id, reason = %r, "meeting could not start");
            (ErrorCode::Unavailable, "the meeting cannot be started now")
        }
        Some(r @ StartRefused::Store(StoreError::Rule(_) | StoreError::NotFound(_))) => {
            tracing::info!(%meeting_id, reason = %r, "meeting not started");
            (ErrorCode::MeetingNotAvailable, "the meeting has ended or was cancelled")
        }
        Some(r) => {
            tracing::error!(%meeting_id, reason = %r, "meeting could not start");
            (ErrorCode::Unavailable, "the meeting cannot be started now")
        }
        None => {
            tracing::error!(%meeting_id, error = %e, "meeting actor failed while starting");
            (ErrorCode::Internal, "the meeting could not be started")
        }
    }
}

/// Spawns a meeting's actor under the supervisor and lists it in the node's meeting table.
async fn spawn_meeting(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    meeting_id: Uuid,
    takeover_from: Option<String>,
) -> Result<MeetingRef, ractor::SpawnErr> {
    if takeover_from.is_some() {
        state.services.metrics.failover();
    }
    let participants = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let media_peers = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let args = MeetingArgs {
        meeting_id,
        services: state.services.clone(),
        takeover_from,
        participants: participants.clone(),
        media_peers: media_peers.clone(),
    };
    let takeover = args.takeover_from.clone();
    let (actor, _) = Actor::spawn_linked(None, MeetingActor, args, myself.get_cell()).await?;
    let ops = &state.services.ops;
    match takeover {
        Some(dead) => {
            ops.event(EventKind::MeetingTakenOver, Some(meeting_id), format!("meeting taken over from {dead}"))
        }
        None => ops.event(EventKind::MeetingStarted, Some(meeting_id), "meeting started here"),
    }
    state.by_actor.insert(actor.get_id(), meeting_id);
    state.meetings.insert(meeting_id, actor.clone());
    state.services.meetings.insert(meeting_id, crate::MeetingEntry { actor: actor.clone(), participants, media_peers });
    Ok(actor)
}
