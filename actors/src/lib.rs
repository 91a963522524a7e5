//! Live meetings as actors (ractor).
//!
//! ```text
//! MeetingSupervisor (one per node)           starts meetings on demand; restarts a failed
//! │                                          MeetingActor, which rehydrates (see meeting.rs)
//! └── MeetingActor (one per live meeting)    owns parley_core::meeting::LiveMeeting; performs its
//!     │                                      effects: deliver events, mirror presence, persist
//!     └── MediaRouterActor (on first media   the SFU: one WebRTC peer per participant; RTP is
//!         request)                           forwarded on the receive path by the media crate's
//!                                            `forward::Forwarder`, which the router drives
//! ParticipantActor (one per WebSocket)       decodes frames, authorises joins (password, status),
//!                                            forwards requests, encodes replies/events; its crash
//!                                            or disconnect never touches the meeting
//!
//! NodeHost (one per node)                    the only actor peers see (serialisable messages,
//!                                            see wire.rs): routes requests to meetings here and
//!                                            events to connections here
//! ```
//!
//! Actors are thin: every rule is in `parley-core`; I/O goes through `parley-store` (SQL) and
//! `parley-presence` (Redis or in-process). Meeting and participant messages are node-local; a
//! connection on one node reaches a meeting on another through the two nodes' `NodeHost`s
//! (route.rs).

pub mod admission;
pub mod error;
pub mod media_router;
pub mod meeting;
pub mod membership;
pub mod messages;
pub mod metrics;
pub mod node_host;
pub mod ops;
pub mod participant;
pub mod placement;
pub mod presence_repair;
pub mod recorder;
pub mod route;
pub mod supervisor;
pub mod trace_context;
pub mod transport;
pub mod wire;
pub mod write_queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use parley_core::throttle::JoinGuard;
use parley_presence::Presence;
use parley_store::Store;

pub use error::{LiveError, LiveResult};
pub use membership::{Membership, NodeSpec};
pub use messages::{CrashTarget, MeetingMsg, MeetingRef, Outbound, ParticipantMsg, SupervisorMsg, SupervisorRef};
pub use node_host::{NodeHost, NodeHostArgs};
pub use participant::{ParticipantActor, ParticipantArgs};
pub use supervisor::MeetingSupervisor;

/// Timing of live meetings. Defaults are production values; tests shorten them.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// How often a meeting looks for participants whose presence expired.
    pub sweep_interval: Duration,
    /// How long an empty meeting waits for somebody before it ends.
    pub empty_grace: Duration,
    /// Requests a connection may burst.
    pub rate_burst: u32,
    /// Requests per second a connection may sustain.
    pub rate_per_sec: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            sweep_interval: Duration::from_secs(5),
            empty_grace: Duration::from_secs(60),
            rate_burst: 60,
            rate_per_sec: 30,
        }
    }
}

/// What every live actor can reach.
pub struct LiveServices {
    pub store: Store,
    pub presence: Presence,
    pub node: String,
    pub config: LiveConfig,
    pub join_guard: Arc<JoinGuard>,
    pub membership: Arc<Membership>,
    pub meetings: MeetingTable,
    pub resume: Arc<dyn ResumeTokens>,
    /// WebRTC settings of this node's media routers.
    pub media: Arc<parley_media::peer::PeerConfig>,
    /// Where recordings go (`None`: this node does not record).
    pub recording: Option<recorder::RecordingServices>,
    /// What the live layer counts (exported by the node at `/metrics`).
    pub metrics: Arc<metrics::LiveMetrics>,
    /// What the node remembers for its operators (events, restarts, vitals).
    pub ops: Arc<ops::Journal>,
}

/// Issues and checks `resume` tokens (signed by the node layer with the cluster's secret, so
/// any node can check a token another node issued).
pub trait ResumeTokens: Send + Sync {
    fn issue(&self, meeting_id: uuid::Uuid, user_id: uuid::Uuid) -> String;
    /// The `(meeting, user)` a valid token names.
    fn verify(&self, token: &str) -> Option<(uuid::Uuid, uuid::Uuid)>;
}

/// The meetings running on this node, readable without asking the supervisor (the node host
/// routes by it; placement counts it).
#[derive(Clone, Default)]
pub struct MeetingTable(Arc<RwLock<HashMap<uuid::Uuid, MeetingEntry>>>);

#[derive(Clone)]
pub struct MeetingEntry {
    pub actor: MeetingRef,
    /// Connected participants, kept current by the meeting actor.
    pub participants: Arc<AtomicU32>,
    /// Media peers of its router, kept current by the router.
    pub media_peers: Arc<AtomicU32>,
}

impl MeetingTable {
    pub fn get(&self, id: uuid::Uuid) -> Option<MeetingRef> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(&id).map(|e| e.actor.clone())
    }

    pub fn insert(&self, id: uuid::Uuid, entry: MeetingEntry) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(id, entry);
    }

    pub fn remove(&self, id: uuid::Uuid) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// `(meetings, participants)` here.
    pub fn load(&self) -> (u32, u32) {
        let t = self.0.read().unwrap_or_else(|p| p.into_inner());
        (t.len() as u32, t.values().map(|e| e.participants.load(Ordering::Relaxed)).sum())
    }

    /// Each meeting here with its participant count and media peer count.
    pub fn list(&self) -> Vec<(uuid::Uuid, u32, u32)> {
        let t = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = t
            .iter()
            .map(|(id, e)| (*id, e.participants.load(Ordering::Relaxed), e.media_peers.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
