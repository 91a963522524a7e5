//! How a connection reaches its meeting and a meeting its connections, wherever each lives:
//! [`MeetingHandle`] (participant → meeting) and [`Conn`] (meeting → participant) are either a
//! local actor reference or a node name plus an id, reached through that node's `NodeHost`.
//! [`locate`] finds (or places and starts) a meeting's actor anywhere in the cluster.

use std::sync::Arc;
use std::time::Duration;

use parley_core::meeting::Caller;
use parley_core::placement::{self, NodeLoad, Owner};
use parley_core::protocol::{ErrorCode, Request};
use ractor::rpc::CallResult;
use uuid::Uuid;

use crate::LiveServices;
use crate::meeting::{MeetingMsg, MeetingRef};
use crate::participant::ParticipantRef;
use crate::supervisor::{SupervisorMsg, SupervisorRef};
use crate::wire::{Answer, Body, ConnAddr, Envelope, NodeHostMsg};

/// How long a request may wait for its meeting's reply (cross-node included).
pub const MEETING_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long placement waits for a peer's load.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, (ErrorCode, String)> {
    Err((code, message.into()))
}

/// A meeting's connection, as the meeting actor holds it.
#[derive(Clone, Debug)]
pub enum Conn {
    Local(ParticipantRef),
    Remote(ConnAddr),
}

impl Conn {
    /// The cluster-wide address of the connection.
    pub fn addr(&self, me: &str) -> ConnAddr {
        match self {
            Conn::Local(r) => ConnAddr { node: me.to_owned(), id: r.get_id().pid() },
            Conn::Remote(a) => a.clone(),
        }
    }

    /// Whether two handles name the same connection.
    pub fn same(&self, other: &Conn, me: &str) -> bool {
        self.addr(me) == other.addr(me)
    }
}

/// A participant's way to its meeting.
#[derive(Clone, Debug)]
pub enum MeetingHandle {
    Local(MeetingRef),
    Remote { node: String },
}

impl MeetingHandle {
    pub fn node<'a>(&'a self, me: &'a str) -> &'a str {
        match self {
            MeetingHandle::Local(_) => me,
            MeetingHandle::Remote { node } => node,
        }
    }

    /// Sends a request and waits for the meeting's answer. `Unavailable` when the meeting's
    /// actor or node is gone (the caller may [`locate`] again).
    pub async fn call(
        &self,
        s: &LiveServices,
        meeting_id: Uuid,
        caller: &Caller,
        conn: &ParticipantRef,
        request: Request,
    ) -> Answer {
        match self {
            MeetingHandle::Local(meeting) => {
                ask_local(meeting, caller.clone(), Conn::Local(conn.clone()), request).await
            }
            MeetingHandle::Remote { node } => {
                let body = Body::Request {
                    meeting_id,
                    caller: caller.clone(),
                    conn: ConnAddr { node: s.node.clone(), id: conn.get_id().pid() },
                    request,
                };
                match call_node(s, node, body, MEETING_CALL_TIMEOUT).await? {
                    Body::Answer { answer } => answer,
                    other => fail(ErrorCode::Internal, format!("unexpected answer from {node}: {other:?}")),
                }
            }
        }
    }

    /// Tells the meeting this connection closed.
    pub fn disconnected(&self, s: &LiveServices, meeting_id: Uuid, user_id: Uuid, conn: &ParticipantRef) {
        match self {
            MeetingHandle::Local(m) => {
                let _ = m.cast(MeetingMsg::Disconnected { user_id, conn: Conn::Local(conn.clone()).addr(&s.node) });
            }
            MeetingHandle::Remote { node } => {
                let conn = ConnAddr { node: s.node.clone(), id: conn.get_id().pid() };
                cast_node(s, node, Body::Disconnected { meeting_id, user_id, conn });
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
pub async fn ask_local(meeting: &MeetingRef, caller: Caller, conn: Conn, request: Request) -> Answer {
    match meeting
        .call(move |reply| MeetingMsg::Request { caller, conn, request, reply }, Some(MEETING_CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(answer)) => answer,
        Ok(_) => fail(ErrorCode::Unavailable, "the meeting did not answer in time"),
        Err(_) => fail(ErrorCode::Unavailable, "the meeting is not running"),
    }
}

/// Sends one envelope to `node`'s host and waits for its answer.
pub async fn call_node(
    s: &LiveServices,
    node: &str,
    body: Body,
    timeout: Duration,
) -> Result<Body, (ErrorCode, String)> {
    let Some(host) = s.membership.host(node) else {
        return fail(ErrorCode::Unavailable, format!("node {node} is not reachable"));
    };
    let env = Envelope::new(&s.node, body);
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
            if let Err(e) = host.cast(NodeHostMsg::Cast(Envelope::new(&s.node, body))) {
                tracing::debug!(%node, error = %e, "cluster: message to a departed node dropped");
            }
        }
        None => tracing::debug!(%node, "cluster: node not reachable; message dropped"),
    }
}

/// This node's load, from its meeting table.
pub fn local_load(s: &LiveServices) -> NodeLoad {
    let me = s.membership.me();
    let (meetings, participants) = s.meetings.load();
    NodeLoad {
        node: me.name.clone(),
        meetings,
        participants,
        max_meetings: me.max_meetings,
        max_participants: me.max_participants,
        draining: s.membership.draining() || !s.membership.lease_held(),
    }
}

/// Finds the meeting's actor, wherever it runs; places and starts it when nobody carries it,
/// and takes it over when its owner is dead. Retries briefly while ownership is changing hands.
pub async fn locate(
    s: &Arc<LiveServices>,
    supervisor: &SupervisorRef,
    meeting_id: Uuid,
) -> Result<MeetingHandle, (ErrorCode, String)> {
    let mut last = None;
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150 * u64::from(attempt))).await;
        }
        match try_locate(s, supervisor, meeting_id).await {
            Err((ErrorCode::Unavailable, m)) => last = Some(m),
            other => return other,
        }
    }
    fail(ErrorCode::Unavailable, last.unwrap_or_else(|| "the meeting cannot be reached now".into()))
}

async fn try_locate(
    s: &Arc<LiveServices>,
    supervisor: &SupervisorRef,
    meeting_id: Uuid,
) -> Result<MeetingHandle, (ErrorCode, String)> {
    let me = s.node.as_str();
    if let Some(m) = s.meetings.get(meeting_id) {
        return Ok(MeetingHandle::Local(m));
    }
    if s.membership.is_standalone() {
        return open_here(supervisor, meeting_id, None).await;
    }
    let raw = match s.presence.media_server(meeting_id).await {
        Ok(raw) => raw,
        Err(e) => {
            // This node cannot read Redis (it may be cut off from it while its peers are not):
            // the database's record of the owner still routes the request.
            tracing::debug!(%meeting_id, error = %e, "presence unavailable: owner from the database");
            None
        }
    };
    let owner = match raw.as_deref().and_then(Owner::parse) {
        Some(o) => Some(o),
        // Redis may have lost the key (restart): the database remembers the owner.
        None => s
            .store
            .meeting_owner(meeting_id)
            .await
            .map_err(|e| (ErrorCode::Unavailable, e.to_string()))?
            .map(|(node, epoch)| Owner { node, epoch }),
    };
    match owner {
        Some(o) if o.node == me => open_here(supervisor, meeting_id, raw).await,
        Some(o) if s.membership.is_dead(&o.node) => {
            tracing::warn!(%meeting_id, dead = %o.node, "meeting's node is dead: taking the meeting over");
            place(s, supervisor, meeting_id, raw).await
        }
        Some(o) if s.membership.host(&o.node).is_some() => Ok(MeetingHandle::Remote { node: o.node }),
        Some(o) => fail(ErrorCode::Unavailable, format!("the meeting's node {} is not reachable yet", o.node)),
        None => place(s, supervisor, meeting_id, None).await,
    }
}

/// Picks the least-loaded node with room and starts the meeting there.
async fn place(
    s: &Arc<LiveServices>,
    supervisor: &SupervisorRef,
    meeting_id: Uuid,
    takeover_from: Option<String>,
) -> Result<MeetingHandle, (ErrorCode, String)> {
    let mut loads = vec![local_load(s)];
    // Live figures from each candidate (leases are up to a refresh old).
    // A candidate that does not answer in time is left out.
    let asks = s.membership.candidates().into_iter().map(|(node, _)| async move {
        match call_node(s, &node, Body::GetLoad, LOAD_TIMEOUT).await {
            Ok(Body::Load { load }) => Some(load),
            _ => None,
        }
    });
    loads.extend(futures_util::future::join_all(asks).await.into_iter().flatten());
    let Some(chosen) = placement::choose(&loads, &s.node).map(str::to_owned) else {
        return fail(ErrorCode::Unavailable, "no node has room for the meeting now");
    };
    tracing::info!(%meeting_id, node = %chosen, takeover = takeover_from.is_some(), "meeting placed");
    if chosen == s.node {
        return open_here(supervisor, meeting_id, takeover_from).await;
    }
    match call_node(s, &chosen, Body::Activate { meeting_id, takeover_from }, MEETING_CALL_TIMEOUT).await? {
        Body::Activated { result: Ok(()) } => Ok(MeetingHandle::Remote { node: chosen }),
        Body::Activated { result: Err(e) } => Err(e),
        other => fail(ErrorCode::Internal, format!("unexpected answer from {chosen}: {other:?}")),
    }
}

/// Starts (or finds) the meeting's actor on this node.
pub async fn open_here(
    supervisor: &SupervisorRef,
    meeting_id: Uuid,
    takeover_from: Option<String>,
) -> Result<MeetingHandle, (ErrorCode, String)> {
    let opened = ractor::call_t!(
        supervisor,
        |reply| SupervisorMsg::Open { meeting_id, takeover_from, reply },
        MEETING_CALL_TIMEOUT.as_millis() as u64
    )
    .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    opened.map(MeetingHandle::Local)
}

/// Stops taking new meetings here and moves every meeting here to the least-loaded other node
/// (its participants follow: the new owner announces itself). Returns `(moved, remaining)`.
pub async fn drain(s: &Arc<LiveServices>, supervisor: &SupervisorRef) -> (u32, u32) {
    s.membership.set_draining(true);
    tracing::warn!(node = %s.node, "draining: no new meetings; moving meetings away");
    let mut moved = 0;
    for (meeting_id, _, _) in s.meetings.list() {
        let raw = match s.presence.media_server(meeting_id).await {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(%meeting_id, error = %e, "drain: presence unavailable; meeting stays");
                continue;
            }
        };
        match place(s, supervisor, meeting_id, raw).await {
            Ok(MeetingHandle::Remote { node }) => {
                let _ = supervisor.cast(SupervisorMsg::Release { meeting_id });
                tracing::info!(%meeting_id, to = %node, "drain: meeting moved");
                moved += 1;
            }
            Ok(MeetingHandle::Local(_)) => {}
            Err((_, e)) => tracing::warn!(%meeting_id, error = %e, "drain: meeting could not move"),
        }
    }
    // Releases are asynchronous: give them a moment before counting.
    for _ in 0..50 {
        if s.meetings.load().0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (moved, s.meetings.load().0)
}
