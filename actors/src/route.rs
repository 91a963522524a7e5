//! Finding a meeting's actor, wherever it runs: [`locate`] reads the owner (Redis, else the
//! database), uses it when alive, takes the meeting over when its owner is dead, and places it
//! when nobody carries it (placement.rs). [`recording_ready`] only tells a running meeting.

use std::sync::Arc;
use std::time::Duration;

use parley_core::placement::Owner;
use parley_core::protocol::ErrorCode;
use uuid::Uuid;

use crate::LiveServices;
use crate::error::{LiveError, LiveResult, fail};
use crate::messages::{MeetingHandle, MeetingMsg, SupervisorRef};
use crate::placement::{open_here, place};
use crate::transport::cast_node;
use crate::wire::Body;

/// Finds the meeting's actor, wherever it runs; places and starts it when nobody carries it,
/// and takes it over when its owner is dead. Retries briefly while ownership is changing hands.
pub async fn locate(s: &Arc<LiveServices>, supervisor: &SupervisorRef, meeting_id: Uuid) -> LiveResult<MeetingHandle> {
    let mut last = None;
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150 * u64::from(attempt))).await;
        }
        match try_locate(s, supervisor, meeting_id).await {
            Err(LiveError { code: ErrorCode::Unavailable, message }) => last = Some(message),
            other => return other,
        }
    }
    fail(ErrorCode::Unavailable, last.unwrap_or_else(|| "the meeting cannot be reached now".into()))
}

async fn try_locate(s: &Arc<LiveServices>, supervisor: &SupervisorRef, meeting_id: Uuid) -> LiveResult<MeetingHandle> {
    let me = s.node.as_str();
    if let Some(m) = s.meetings.get(meeting_id) {
        return Ok(MeetingHandle::Local(m));
    }
    if s.membership.is_standalone() {
        return open_here(supervisor, meeting_id, None).await;
    }
    let (raw, owner) = owner_of(s, meeting_id).await?;
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

/// Who owns the meeting: Redis's value (also returned raw, for a takeover's compare-and-set),
/// else the database's record.
async fn owner_of(s: &LiveServices, meeting_id: Uuid) -> LiveResult<(Option<String>, Option<Owner>)> {
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
        None => s.store.meeting_owner(meeting_id).await?.map(|(node, epoch)| Owner { node, epoch }),
    };
    Ok((raw, owner))
}

/// Tells a meeting's actor, wherever it runs, that one of its recordings is ready (its
/// moderators connected get `recording_ready`). A meeting running nowhere (it ended) is told
/// nothing and is not started for it. Returns where the news went: `None` when nowhere.
pub async fn recording_ready(
    s: &LiveServices,
    meeting_id: Uuid,
    recording_id: Uuid,
    duration_seconds: i64,
) -> Option<String> {
    if let Some(m) = s.meetings.get(meeting_id) {
        return m.cast(MeetingMsg::RecordingReady { recording_id, duration_seconds }).ok().map(|_| s.node.clone());
    }
    if s.membership.is_standalone() {
        return None;
    }
    // An owner whose node no longer runs the meeting (it ended there) drops the news.
    match owner_of(s, meeting_id).await.ok().and_then(|(_, owner)| owner) {
        Some(o) if o.node != s.node && s.membership.host(&o.node).is_some() => {
            cast_node(s, &o.node, Body::RecordingReady { meeting_id, recording_id, duration_seconds });
            Some(o.node)
        }
        _ => None,
    }
}
