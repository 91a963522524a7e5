//! `NodeHost`: one per node, the only actor peers see. It turns cluster envelopes into local
//! messages — requests into the meeting actors here, events out to the connections here — and
//! never waits on a meeting itself: calls are answered from spawned tasks, so one slow meeting
//! cannot hold up another's traffic.

use std::sync::Arc;

use parley_core::protocol::{ErrorCode, EventFrame};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;
use uuid::Uuid;

use crate::LiveServices;
use crate::error::LiveError;
use crate::membership::{NODES_GROUP, SCOPE, host_group};
use crate::messages::{Conn, MeetingHandle, MeetingMsg, ParticipantMsg, SharedEvent, SupervisorRef, connections_group};
use crate::placement::{local_load, open_here};
use crate::transport::ask_local;
use crate::wire::{Body, Envelope, NodeHostMsg};

pub struct NodeHost;

pub struct NodeHostArgs {
    pub services: Arc<LiveServices>,
    pub supervisor: SupervisorRef,
}

pub struct NodeHostState {
    services: Arc<LiveServices>,
    supervisor: SupervisorRef,
}

impl Actor for NodeHost {
    type Msg = NodeHostMsg;
    type State = NodeHostState;
    type Arguments = NodeHostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeHostMsg>,
        a: NodeHostArgs,
    ) -> Result<NodeHostState, ActorProcessingErr> {
        let scope = SCOPE.to_owned();
        ractor::pg::join_scoped(scope.clone(), NODES_GROUP.to_owned(), vec![myself.get_cell()]);
        ractor::pg::join_scoped(scope, host_group(&a.services.node), vec![myself.get_cell()]);
        Ok(NodeHostState { services: a.services, supervisor: a.supervisor })
    }

    async fn handle(
        &self,
        _myself: ActorRef<NodeHostMsg>,
        msg: NodeHostMsg,
        state: &mut NodeHostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeHostMsg::Cast(env) => {
                state.services.metrics.cluster_message(false, false);
                let span = received_span(&env, false);
                let _in = span.enter();
                cast(state, env)
            }
            NodeHostMsg::Call(env, port) => {
                state.services.metrics.cluster_message(false, true);
                let s = state.services.clone();
                let supervisor = state.supervisor.clone();
                let from = env.from.clone();
                let span = received_span(&env, true);
                tokio::spawn(
                    async move {
                        let body = call(&s, &supervisor, env).await;
                        if port.send(Envelope::new(&s.node, body)).is_err() {
                            tracing::debug!(%from, "cluster: caller gave up before the answer");
                        }
                    }
                    .instrument(span),
                );
            }
        }
        Ok(())
    }
}

/// The span of a message from another node: a child of the sender's span when the envelope
/// carries its trace context (W3C, `trace_context`), else nothing traced.
fn received_span(env: &Envelope, call: bool) -> tracing::Span {
    if env.trace.is_empty() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "cluster.receive",
        from = %env.from,
        body = env.body.kind(),
        call,
        trace_id = tracing::field::Empty
    );
    crate::trace_context::adopt(&span, &env.trace);
    crate::trace_context::record_trace_id(&span);
    span
}

async fn call(s: &Arc<LiveServices>, supervisor: &SupervisorRef, env: Envelope) -> Body {
    match env.body {
        Body::GetLoad => Body::Load { load: local_load(s) },
        Body::Inspect => Body::Inspected { view: Box::new(crate::ops::inspect(s).await) },
        Body::Drain => {
            let (moved, remaining) = crate::placement::drain(s, supervisor).await;
            Body::Drained { moved, remaining }
        }
        Body::Activate { meeting_id, takeover_from } => {
            if s.membership.draining() || !s.membership.lease_held() {
                return Body::Activated {
                    result: Err(LiveError::new(ErrorCode::Unavailable, "node takes no new meetings")),
                };
            }
            Body::Activated { result: open_here(supervisor, meeting_id, takeover_from).await.map(|_| ()) }
        }
        Body::Request { meeting_id, caller, conn, request, seen } => {
            let Some(meeting) = s.meetings.get(meeting_id) else {
                return Body::Answer {
                    answer: Err(LiveError::new(ErrorCode::Unavailable, "the meeting is not on this node")),
                };
            };
            Body::Answer { answer: ask_local(&meeting, caller, Conn::Remote(conn), request, seen).await }
        }
        other => {
            tracing::warn!(from = %env.from, body = ?other, "cluster: not a call; ignored");
            Body::Answer { answer: Err(LiveError::new(ErrorCode::Internal, "not a call")) }
        }
    }
}

/// The connections of a meeting on this node whose ids are in `ids`.
fn local_conns(meeting_id: Uuid, ids: &[u64]) -> Vec<ractor::ActorCell> {
    let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
    ractor::pg::get_local_members(&connections_group(meeting_id))
        .into_iter()
        .filter(|c| wanted.contains(&c.get_id().pid()))
        .collect()
}

fn cast(state: &NodeHostState, env: Envelope) {
    let s = &state.services;
    match env.body {
        Body::Deliver { meeting_id, conns, frame } => deliver(meeting_id, &conns, frame),
        Body::Detached { meeting_id, conn, reason } => {
            for c in local_conns(meeting_id, &[conn]) {
                let _ = c.send_message(ParticipantMsg::Detached { meeting_id, reason });
            }
        }
        Body::Disconnected { meeting_id, user_id, conn, lost } => {
            if let Some(m) = s.meetings.get(meeting_id) {
                let _ = m.cast(MeetingMsg::Disconnected { user_id, conn, lost });
            }
        }
        Body::Attach { meeting_id, user_id, conn, after } => {
            if let Some(m) = s.meetings.get(meeting_id) {
                let _ = m.cast(MeetingMsg::Attach { user_id, conn: Conn::Remote(conn), after });
            }
        }
        Body::Moved { meeting_id, owner, epoch } => {
            if owner != s.node
                && let Some(m) = s.meetings.get(meeting_id)
            {
                // Still running here: the newer epoch wins (the meeting decides).
                let _ = m.cast(MeetingMsg::Superseded { epoch });
            }
            let handle = if owner == s.node {
                match s.meetings.get(meeting_id) {
                    Some(m) => MeetingHandle::Local(m),
                    None => return,
                }
            } else {
                MeetingHandle::Remote { node: owner }
            };
            let members = ractor::pg::get_local_members(&connections_group(meeting_id));
            tracing::info!(%meeting_id, owner = %handle.node(&s.node), connections = members.len(), "meeting moved: re-attaching connections");
            for c in members {
                let _ = c.send_message(ParticipantMsg::Reattach { meeting_id, meeting: handle.clone() });
            }
        }
        Body::RecordingReady { meeting_id, recording_id, duration_seconds } => {
            if let Some(m) = s.meetings.get(meeting_id) {
                let _ = m.cast(MeetingMsg::RecordingReady { recording_id, duration_seconds });
            }
        }
        other => tracing::warn!(from = %env.from, body = ?other, "cluster: not a one-way message; ignored"),
    }
}

fn deliver(meeting_id: Uuid, conns: &[u64], frame: EventFrame) {
    let shared = SharedEvent::new(frame);
    for c in local_conns(meeting_id, conns) {
        let _ = c.send_message(ParticipantMsg::Event(shared.clone()));
    }
}
