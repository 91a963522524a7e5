//! How a connection and its meeting reach each other across the cluster: a call to a meeting
//! actor here ([`ask_local`]) or through another node's `NodeHost` ([`call_node`],
//! [`cast_node`]), and the I/O of [`MeetingHandle`] (call, attach, disconnected).

use std::time::Duration;

use parley_core::meeting::Caller;
use parley_core::protocol::{ErrorCode, Request};
use ractor::rpc::CallResult;
use uuid::Uuid;

use crate::LiveServices;
use crate::error::{LiveResult, fail};
use crate::messages::{Conn, MeetingHandle, MeetingMsg, MeetingRef, ParticipantRef};
use crate::wire::{Answer, Body, ConnAddr, Envelope, NodeHostMsg};

/// How long a request may wait for its meeting's reply (cross-node included).
pub const MEETING_CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl MeetingHandle {
    /// Sends a request and waits for the meeting's answer. `Unavailable` when the meeting's
    /// actor or node is gone (the caller may [`locate`](crate::route::locate) again).
    pub async fn call(
        &self,
        s: &LiveServices,
        meeting_id: Uuid,
        caller: &Caller,
        conn: &ParticipantRef,
        request: Request,
        seen: Option<u64>,
    ) -> Answer {
        match self {
            MeetingHandle::Local(meeting) => {
                ask_local(meeting, caller.clone(), Conn::Local(conn.clone()), request, seen).await
            }
            MeetingHandle::Remote { node } => {
                let body = Body::Request {
                    meeting_id,
                    caller: caller.clone(),
                    conn: ConnAddr { node: s.node.clone(), id: conn.get_id().pid() },
                    request,
                    seen,
                };
                match call_node(s, node, body, MEETING_CALL_TIMEOUT).await? {
                    Body::Answer { answer } => answer,
                    other => fail(ErrorCode::Internal, format!("unexpected answer from {node}: {other:?}")),
                }
            }
        }
    }

    /// Tells the meeting this connection closed (`lost`: without a closing handshake).
    pub fn disconnected(&self, s: &LiveServices, meeting_id: Uuid, user_id: Uuid, conn: &ParticipantRef, lost: bool) {
        match self {
            MeetingHandle::Local(m) => {
                let conn = Conn::Local(conn.clone()).addr(&s.node);
                let _ = m.cast(MeetingMsg::Disconnected { user_id, conn, lost });
            }
            MeetingHandle::Remote { node } => {
                let conn = ConnAddr { node: s.node.clone(), id: conn.get_id().pid() };
                cast_node(s, node, Body::Disconnected { meeting_id, user_id, conn, lost });
            }
        }
    }

    /// Re-attaches this connection to the meeting (after the meeting's actor moved); with
    /// `after`, the events it missed since that `seq` come first.
    pub fn attach(&self, s: &LiveServices, meeting_id: Uuid, user_id: Uuid, conn: &ParticipantRef, after: Option<u64>) {
        match self {
            MeetingHandle::Local(m) => {
                let _ = m.cast(MeetingMsg::Attach { user_id, conn: Conn::Local(conn.clone()), after });
            }
            MeetingHandle::Remote { node } => {
                let conn = ConnAddr { node: s.node.clone(), id: conn.get_id().pid() };
                cast_node(s, node, Body::Attach { meeting_id, user_id, conn, after });
            }
        }
    }
}

/// A request to a meeting actor on this node, from a connection here or (through the node host)
/// on another node. `Unavailable` when the actor is gone or does not answer in time.
pub async fn ask_local(
    meeting: &MeetingRef,
    caller: Caller,
    conn: Conn,
    request: Request,
    seen: Option<u64>,
) -> Answer {
    let span = tracing::Span::current();
    match meeting
        .call(move |reply| MeetingMsg::Request { caller, conn, request, seen, reply, span }, Some(MEETING_CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(answer)) => answer,
        Ok(_) => fail(ErrorCode::Unavailable, "the meeting did not answer in time"),
        Err(_) => fail(ErrorCode::Unavailable, "the meeting is not running"),
    }
}

/// Sends one envelope to `node`'s host and waits for its answer.
pub async fn call_node(s: &LiveServices, node: &str, body: Body, timeout: Duration) -> LiveResult<Body> {
    let Some(host) = s.membership.host(node) else {
        return fail(ErrorCode::Unavailable, format!("node {node} is not reachable"));
    };
    let env = Envelope::traced(&s.node, body);
    s.metrics.cluster_message(true, true);
    match host.call(move |port| NodeHostMsg::Call(env, port), Some(timeout)).await {
        Ok(CallResult::Success(reply)) => Ok(reply.body),
        Ok(_) => fail(ErrorCode::Unavailable, format!("node {node} did not answer in time")),
        Err(_) => fail(ErrorCode::Unavailable, format!("node {node} is not reachable")),
    }
}

/// Sends one envelope to `node`'s host, at most once; a lost peer drops it.
pub fn cast_node(s: &LiveServices, node: &str, body: Body) {
    match s.membership.host(node) {
        Some(host) => {
            s.metrics.cluster_message(true, false);
            if let Err(e) = host.cast(NodeHostMsg::Cast(Envelope::traced(&s.node, body))) {
                tracing::debug!(%node, error = %e, "cluster: message to a departed node dropped");
            }
        }
        None => tracing::debug!(%node, "cluster: node not reachable; message dropped"),
    }
}
