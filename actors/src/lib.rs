//! Live meetings as actors (ractor) — NOT BUILT YET; this crate only reserves its place.
//!
//! The live-meetings issue fills it in. The planned shape, so the rest of the workspace can be
//! built around it:
//!
//! ```text
//! NodeHost (one per node; the only actor whose messages cross nodes)
//! └── MeetingSupervisor            restarts a failed MeetingActor, which rehydrates from
//!     │                            PostgreSQL (parley-store) + presence (Redis or in-process)
//!     └── MeetingActor (one per live meeting; owns parley_core's meeting state machine)
//!         ├── ParticipantActor (one per WebSocket connection; a crash never touches the meeting)
//!         └── MediaRouterActor (one per meeting on its media node; SFU forwarding)
//! ```
//!
//! Rules it will follow: pure decisions live in `parley-core` (`step(input) -> effects`); the
//! actors own state, perform effects (persist, mirror presence, broadcast) and talk; I/O sits
//! behind adapters with a local and a networked implementation.
