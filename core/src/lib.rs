//! Parley's pure domain logic.
//!
//! Nothing in this crate performs I/O, spawns tasks or knows about a database, a socket or an
//! actor runtime. Every rule that decides something about a meeting lives here as plain types and
//! functions so that it can be unit-tested exhaustively and reused by the REST API, the live
//! meeting actors and (later) the cluster placement code.
//!
//! - [`model`]: the vocabulary shared by every layer (meeting types, statuses, roles, settings).
//! - [`recurrence`]: expands a recurrence rule into occurrence instants, in the meeting's own
//!   IANA time zone, so a 10:00 daily series stays at 10:00 local across DST changes.
//! - [`join`]: the join decision (the seed's QUERY 2) over already-loaded facts.
//! - [`meeting`]: the live meeting state machine (requests in, reply and effects out).
//! - [`password`], [`throttle`]: argon2 meeting passwords and password-guess throttling.
//! - [`validate`]: field validation of user input (emails, titles, durations, time zones).
//! - [`recording`]: object keys, capture manifests and the plan that joins a recording's parts.
//! - [`notice`]: what the notification outbox tells one person (invitations, updates,
//!   cancellations, reminders, recording notices) and the iCalendar `RRULE` of a series.
//! - [`protocol`]: the WebSocket protocol's requests, replies and events, JSON and MessagePack.

pub mod join;
pub mod meeting;
pub mod model;
pub mod notice;
pub mod password;
pub mod placement;
pub mod protocol;
pub mod recording;
pub mod recurrence;
pub mod throttle;
pub mod validate;

/// The `tracing` target of the event an I/O adapter emits, inside its call's span, when the
/// call failed at the server it talks to (the database, Redis): connection lost, timeout, a
/// query the server rejected. Not for answers ("not found", a broken domain rule). The node
/// counts these per call (`parley_db_call_errors_total`, `parley_presence_call_errors_total`).
pub const CALL_FAILED: &str = "parley::call_failed";
