//! Live meetings as actors (ractor).
//!
//! ```text
//! MeetingSupervisor (one per node)           starts meetings on demand; restarts a failed
//! │                                          MeetingActor, which rehydrates (see meeting.rs)
//! └── MeetingActor (one per live meeting)    owns parley_core::meeting::LiveMeeting; performs its
//!                                            effects: deliver events, mirror presence, persist
//! ParticipantActor (one per WebSocket)       decodes frames, authorises joins (password, status),
//!                                            forwards requests, encodes replies/events; its crash
//!                                            or disconnect never touches the meeting
//! ```
//!
//! Actors are thin: every rule is in `parley-core`; I/O goes through `parley-store` (SQL) and
//! `parley-presence` (Redis or in-process). Messages here are node-local (the cluster layer will
//! add a serialisable `NodeHost` in front of them).

pub mod meeting;
pub mod participant;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use parley_core::throttle::JoinGuard;
use parley_presence::Presence;
use parley_store::Store;

pub use meeting::{MeetingMsg, MeetingRef};
pub use participant::{Outbound, ParticipantActor, ParticipantArgs, ParticipantMsg};
pub use supervisor::{MeetingSupervisor, SupervisorMsg, SupervisorRef};

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
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
