//! What operators see of a node (the supervisor dashboard's data): its vitals and load history,
//! the meetings it runs with their participants and media peers, the actors under its
//! supervisor with their restart counts, and a journal of lifecycle events.
//!
//! Every node answers [`inspect`] for itself; the node layer gathers the answers of all nodes
//! over the cluster (`wire::Body::Inspect`) into one view of the cluster. The views are plain
//! serialisable types, the same on the wire as in the admin API's JSON.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use parley_core::protocol::ParticipantView;
use ractor::rpc::CallResult;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::MeetingMsg;
use crate::metrics::ActorKind;
use crate::{LiveServices, Membership, now_ms};

/// Lifecycle events a node keeps (oldest dropped first).
pub const EVENTS_KEPT: usize = 200;
/// The load history: one sample per [`HISTORY_STEP`] over the last 15 minutes.
pub const HISTORY_STEP: Duration = Duration::from_secs(10);
pub const HISTORY_SAMPLES: usize = 90;
/// How long [`inspect`] waits for one meeting (or its media router) to answer.
const INSPECT_WAIT: Duration = Duration::from_millis(500);

/// One node's view of itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeView {
    pub node: String,
    pub version: String,
    pub started_at_ms: i64,
    pub now_ms: i64,
    pub draining: bool,
    pub lease_held: bool,
    pub max_meetings: u32,
    pub max_participants: u32,
    pub vitals: Vitals,
    /// Oldest first.
    pub history: Vec<LoadSample>,
    pub meetings: Vec<MeetingView>,
    /// Newest last.
    pub events: Vec<OpsEvent>,
}

/// The process and its media socket, sampled about once a second by the node layer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Vitals {
    /// Of one core (200 = two cores busy).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub packets_in_per_sec: f64,
    pub packets_out_per_sec: f64,
    pub websockets: i64,
}

/// One point of the load history.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LoadSample {
    pub at_ms: i64,
    pub meetings: u32,
    pub participants: u32,
    pub media_peers: u32,
    pub cpu_percent: f64,
}

/// A live meeting on its owner node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeetingView {
    pub meeting_id: Uuid,
    pub epoch: i64,
    pub recording: bool,
    pub participants: Vec<ParticipantView>,
    pub waiting: u32,
    /// Where each participant's connection is (user → node).
    pub connections: HashMap<Uuid, String>,
    /// The meeting actor.
    pub actor: ActorView,
    /// Its media router, while it runs.
    pub media_router: Option<RouterView>,
}

/// A supervised actor: how often it was restarted on this node, and why last.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActorView {
    pub actor_id: String,
    pub restarts: u32,
    pub last_failure: Option<String>,
    pub last_failure_at_ms: Option<i64>,
}

/// A meeting's SFU.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouterView {
    pub actor: ActorView,
    /// Whether a recorder captures the meeting here.
    pub recorder: bool,
    pub peers: Vec<MediaPeerView>,
}

/// One participant's WebRTC connection to the router.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MediaPeerView {
    pub user_id: Uuid,
    /// What it publishes, by key (`<user>:camera`…).
    pub published: Vec<String>,
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Its receive estimate (REMB), 0 while unknown.
    pub downlink_estimate_bps: u64,
    /// The simulcast layer of each video track it receives (`None`: waiting for a keyframe).
    pub layers: Vec<(String, Option<String>)>,
    /// What it reports about receiving from us (RTCP report blocks).
    pub loss: f64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    /// NACKs and keyframe requests (PLI/FIR) it sent us; keyframe requests we sent it.
    pub nacks_received: u64,
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
}

/// Something that happened to a node, a meeting or an actor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpsEvent {
    pub at_ms: i64,
    pub node: String,
    pub kind: EventKind,
    pub meeting_id: Option<Uuid>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    NodeStarted,
    MeetingStarted,
    MeetingTakenOver,
    MeetingStopped,
    MeetingMoved,
    ActorRestarted,
    NodeStatus,
    NodeDraining,
}

/// A peer's state as this node sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Alive,
    Suspect,
    Dead,
    Draining,
    /// This node, without its lease (cut off from Redis): it takes no new meetings.
    Isolated,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Alive => "alive",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Dead => "dead",
            NodeStatus::Draining => "draining",
            NodeStatus::Isolated => "isolated",
        }
    }
}

/// This node's status.
pub fn own_status(m: &Membership) -> NodeStatus {
    if m.draining() {
        NodeStatus::Draining
    } else if m.lease_held() {
        NodeStatus::Alive
    } else {
        NodeStatus::Isolated
    }
}

/// A peer's status: dead once its lease expired, suspect while its lease or session is missing.
pub fn peer_status(m: &Membership, name: &str) -> NodeStatus {
    let st = m.peer(name).unwrap_or_default();
    if m.is_dead(name) {
        NodeStatus::Dead
    } else if st.lease.as_ref().is_some_and(|l| l.load.draining) {
        NodeStatus::Draining
    } else if st.lease.is_some() && st.connected {
        NodeStatus::Alive
    } else {
        NodeStatus::Suspect
    }
}

/// Which supervised actor a failure was of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ActorKey {
    kind: ActorKind,
    meeting_id: Uuid,
}

#[derive(Debug, Clone, Default)]
struct Failures {
    count: u32,
    last: String,
    at_ms: i64,
}

/// What a node remembers for its operators: lifecycle events, actor failures, vitals and the
/// load history. Written by the actors and the node's sampler; read by [`inspect`].
pub struct Journal {
    node: String,
    started_at_ms: i64,
    events: Mutex<VecDeque<OpsEvent>>,
    failures: Mutex<HashMap<ActorKey, Failures>>,
    vitals: Mutex<Vitals>,
    history: Mutex<VecDeque<LoadSample>>,
    peers: Mutex<HashMap<String, NodeStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    pub fn new(node: &str) -> Journal {
        let j = Journal {
            node: node.to_owned(),
            started_at_ms: now_ms(),
            events: Mutex::default(),
            failures: Mutex::default(),
            vitals: Mutex::default(),
            history: Mutex::default(),
            peers: Mutex::default(),
        };
        j.event(EventKind::NodeStarted, None, format!("{node} started"));
        j
    }

    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// Notes an event.
    pub fn event(&self, kind: EventKind, meeting_id: Option<Uuid>, detail: impl Into<String>) {
        let e = OpsEvent { at_ms: now_ms(), node: self.node.clone(), kind, meeting_id, detail: detail.into() };
        let mut events = lock(&self.events);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(e);
    }

    /// A supervised actor of `meeting_id` failed and is restarted (the meeting actor by the
    /// supervisor; the media router when its clients offer again).
    pub fn actor_failed(&self, kind: ActorKind, meeting_id: Uuid, reason: &str) {
        let count = {
            let mut f = lock(&self.failures);
            let entry = f.entry(ActorKey { kind, meeting_id }).or_default();
            entry.count += 1;
            entry.last = reason.to_owned();
            entry.at_ms = now_ms();
            entry.count
        };
        self.event(
            EventKind::ActorRestarted,
            Some(meeting_id),
            format!("{} actor restarted (restart {count}): {reason}", kind.label()),
        );
    }

    /// The restart record of one actor.
    pub fn actor(&self, kind: ActorKind, meeting_id: Uuid, actor_id: String) -> ActorView {
        let f = lock(&self.failures).get(&ActorKey { kind, meeting_id }).cloned();
        ActorView {
            actor_id,
            restarts: f.as_ref().map_or(0, |f| f.count),
            last_failure: f.as_ref().map(|f| f.last.clone()),
            last_failure_at_ms: f.map(|f| f.at_ms),
        }
    }

    /// A peer's status now: an event when it changed since the last look.
    pub fn observe_peer(&self, name: &str, status: NodeStatus) {
        let before = lock(&self.peers).insert(name.to_owned(), status);
        if before.is_some_and(|b| b != status) || (before.is_none() && status != NodeStatus::Alive) {
            self.event(EventKind::NodeStatus, None, format!("{name} is {}", status.as_str()));
        }
    }

    /// The latest vitals, and a history sample when the last one is [`HISTORY_STEP`] old.
    pub fn sample(&self, vitals: Vitals, load: (u32, u32, u32)) {
        *lock(&self.vitals) = vitals;
        let now = now_ms();
        let mut h = lock(&self.history);
        if h.back().is_some_and(|s| now - s.at_ms < HISTORY_STEP.as_millis() as i64) {
            return;
        }
        if h.len() == HISTORY_SAMPLES {
            h.pop_front();
        }
        h.push_back(LoadSample {
            at_ms: now,
            meetings: load.0,
            participants: load.1,
            media_peers: load.2,
            cpu_percent: vitals.cpu_percent,
        });
    }

    pub fn vitals(&self) -> Vitals {
        *lock(&self.vitals)
    }

    pub fn history(&self) -> Vec<LoadSample> {
        lock(&self.history).iter().copied().collect()
    }

    pub fn events(&self) -> Vec<OpsEvent> {
        lock(&self.events).iter().cloned().collect()
    }

    /// Forgets the failures of a meeting that ended here.
    pub fn forget_meeting(&self, meeting_id: Uuid) {
        lock(&self.failures).retain(|k, _| k.meeting_id != meeting_id);
    }
}

/// This node as its operators see it: asks each meeting here (and its router) for its state,
/// all at once, each within [`INSPECT_WAIT`]; a meeting that does not answer in time is left out.
pub async fn inspect(s: &LiveServices) -> NodeView {
    let m = &s.membership;
    let me = m.me();
    let asks = s.meetings.list().into_iter().filter_map(|(id, _, _)| s.meetings.get(id).map(|a| (id, a))).map(
        |(meeting_id, actor)| async move {
            let answer = actor.call(|reply| MeetingMsg::Inspect { reply }, Some(INSPECT_WAIT)).await;
            let Ok(CallResult::Success((mut view, router))) = answer else { return None };
            view.actor = s.ops.actor(ActorKind::Meeting, meeting_id, actor.get_id().to_string());
            if let Some(router) = router
                && let Ok(CallResult::Success(mut r)) =
                    router.call(crate::media_router::RouterMsg::Inspect, Some(INSPECT_WAIT)).await
            {
                r.actor = s.ops.actor(ActorKind::MediaRouter, meeting_id, router.get_id().to_string());
                view.media_router = Some(r);
            }
            Some(view)
        },
    );
    // Asked all at once: a meeting slow to answer delays the view by one wait, not one each.
    let mut meetings: Vec<MeetingView> = futures_util::future::join_all(asks).await.into_iter().flatten().collect();
    meetings.sort_by_key(|v| v.meeting_id);
    NodeView {
        node: me.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: s.ops.started_at_ms(),
        now_ms: now_ms(),
        draining: m.draining(),
        lease_held: m.lease_held(),
        max_meetings: me.max_meetings,
        max_participants: me.max_participants,
        vitals: s.ops.vitals(),
        history: s.ops.history(),
        meetings,
        events: s.ops.events(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_the_latest_events_only() {
        let j = Journal::new("n1");
        for i in 0..EVENTS_KEPT + 5 {
            j.event(EventKind::MeetingStarted, None, format!("e{i}"));
        }
        let events = j.events();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(events.last().map(|e| e.detail.as_str()), Some(format!("e{}", EVENTS_KEPT + 4).as_str()));
        assert!(events.iter().all(|e| e.node == "n1"));
    }

    #[test]
    fn failures_count_per_actor_and_are_journalled() {
        let j = Journal::new("n1");
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        j.actor_failed(ActorKind::Meeting, a, "panicked: boom");
        j.actor_failed(ActorKind::Meeting, a, "panicked: again");
        j.actor_failed(ActorKind::MediaRouter, a, "panicked: router");
        let v = j.actor(ActorKind::Meeting, a, "0.1".into());
        assert_eq!((v.restarts, v.last_failure.as_deref()), (2, Some("panicked: again")));
        assert_eq!(j.actor(ActorKind::MediaRouter, a, String::new()).restarts, 1);
        assert_eq!(j.actor(ActorKind::Meeting, b, String::new()).restarts, 0);
        let restarts: Vec<_> = j.events().into_iter().filter(|e| e.kind == EventKind::ActorRestarted).collect();
        assert_eq!(restarts.len(), 3);
        assert!(restarts[1].detail.contains("restart 2"), "{restarts:?}");
        j.forget_meeting(a);
        assert_eq!(j.actor(ActorKind::Meeting, a, String::new()).restarts, 0);
    }

    #[test]
    fn peer_status_changes_are_events_and_repeats_are_not() {
        let j = Journal::new("n1");
        j.observe_peer("n2", NodeStatus::Alive);
        j.observe_peer("n2", NodeStatus::Alive);
        j.observe_peer("n2", NodeStatus::Suspect);
        j.observe_peer("n2", NodeStatus::Dead);
        j.observe_peer("n2", NodeStatus::Dead);
        j.observe_peer("n3", NodeStatus::Suspect);
        let said: Vec<String> =
            j.events().into_iter().filter(|e| e.kind == EventKind::NodeStatus).map(|e| e.detail).collect();
        assert_eq!(said, ["n2 is suspect", "n2 is dead", "n3 is suspect"]);
    }

    #[test]
    fn the_history_takes_one_sample_per_step() {
        let j = Journal::new("n1");
        let v = Vitals { cpu_percent: 12.5, ..Vitals::default() };
        j.sample(v, (1, 2, 3));
        j.sample(Vitals { cpu_percent: 50.0, ..v }, (4, 5, 6));
        let h = j.history();
        assert_eq!(h.len(), 1, "the second sample came within the step");
        assert_eq!((h[0].meetings, h[0].participants, h[0].media_peers, h[0].cpu_percent), (1, 2, 3, 12.5));
        assert_eq!(j.vitals().cpu_percent, 50.0, "the vitals are always the latest");
    }
}
