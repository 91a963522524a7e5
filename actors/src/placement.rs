//! Where a meeting runs: this node's load ([`local_load`]), the choice of a node for a meeting
//! nobody carries (`place`, by `parley_core::placement`), starting it here ([`open_here`]),
//! and moving every meeting away from a node that drains ([`drain`]).

use std::sync::Arc;
use std::time::Duration;

use parley_core::placement::{self, NodeLoad};
use parley_core::protocol::ErrorCode;
use uuid::Uuid;

use crate::LiveServices;
use crate::error::{LiveError, LiveResult, fail};
use crate::messages::{MeetingHandle, SupervisorMsg, SupervisorRef};
use crate::transport::{MEETING_CALL_TIMEOUT, call_node};
use crate::wire::Body;

/// How long placement waits for a peer's load.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

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

/// Picks the least-loaded node with room and starts the meeting there.
pub(crate) async fn place(
    s: &Arc<LiveServices>,
    supervisor: &SupervisorRef,
    meeting_id: Uuid,
    takeover_from: Option<String>,
) -> LiveResult<MeetingHandle> {
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
) -> LiveResult<MeetingHandle> {
    let opened = ractor::call_t!(
        supervisor,
        |reply| SupervisorMsg::Open { meeting_id, takeover_from, reply },
        MEETING_CALL_TIMEOUT.as_millis() as u64
    )
    .map_err(|e| LiveError::new(ErrorCode::Internal, e.to_string()))?;
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
                s.ops.event(crate::ops::EventKind::MeetingMoved, Some(meeting_id), format!("drain: moved to {node}"));
                moved += 1;
            }
            Ok(MeetingHandle::Local(_)) => {}
            Err(e) => tracing::warn!(%meeting_id, error = %e.message, "drain: meeting could not move"),
        }
    }
    // Releases are asynchronous: give them a moment before counting.
    for _ in 0..50 {
        if s.meetings.load().0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let remaining = s.meetings.load().0;
    s.ops.event(
        crate::ops::EventKind::NodeDraining,
        None,
        format!("{} drained: {moved} meetings moved, {remaining} remaining", s.node),
    );
    (moved, remaining)
}
