//! SeaORM entities for Parley's relational schema.
//!
//! One module per table. The schema itself is created by `parley-migrations`; these entities
//! mirror it column for column. Enum-like columns (`status`, `role`, `meeting_type`, …) are plain
//! text with a CHECK constraint so that PostgreSQL and the embedded SQLite default share one
//! schema; `parley_core::model` owns their allowed values and the store converts them.
//!
//! Tables and who writes them:
//! - `users`: admin API (registered users) and meeting creation (pending invitees).
//! - `meetings`: the REST API (create/patch/cancel) and, later, the live meeting actor
//!   (start/end, assigned node).
//! - `meeting_participants`: invitations and roles; `scheduled_time` is denormalised from the
//!   meeting so "my upcoming meetings" is one index range scan.
//! - `recurring_series` + `recurring_occurrences`: a series and the meeting row of each occurrence.
//! - `meeting_recordings`: the recording pipeline's status and outputs; `recording_parts` its
//!   capture segments (one per owner node); `recording_jobs` the durable processing queue.
//! - `notifications`: the outbox: one message to one recipient per row, with its delivery state.
//! - `meeting_analytics`: one row per ended meeting.
//! - `meeting_chat_messages`: chat of live meetings, so a restarted meeting keeps its history.

pub mod meeting;
pub mod meeting_analytics;
pub mod meeting_chat_message;
pub mod meeting_participant;
pub mod meeting_recording;
pub mod notification;
pub mod recording_job;
pub mod recording_part;
pub mod recurring_occurrence;
pub mod recurring_series;
pub mod user;

/// `use parley_schema::prelude::*` brings every entity in under a table-like name.
pub mod prelude {
    pub use crate::meeting::Entity as Meetings;
    pub use crate::meeting_analytics::Entity as MeetingAnalytics;
    pub use crate::meeting_chat_message::Entity as MeetingChatMessages;
    pub use crate::meeting_participant::Entity as MeetingParticipants;
    pub use crate::meeting_recording::Entity as MeetingRecordings;
    pub use crate::notification::Entity as Notifications;
    pub use crate::recording_job::Entity as RecordingJobs;
    pub use crate::recording_part::Entity as RecordingParts;
    pub use crate::recurring_occurrence::Entity as RecurringOccurrences;
    pub use crate::recurring_series::Entity as RecurringSeries;
    pub use crate::user::Entity as Users;
}
