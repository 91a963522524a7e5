//! The schema of Parley's relational store, as sea-orm-migration steps.
//!
//! The same migrations serve PostgreSQL (production, tests) and SQLite (the embedded default of
//! `make run`): only portable DDL is used — text columns with CHECK constraints instead of native
//! enum types, partial indexes (both engines have them), foreign keys with explicit ON DELETE.
//! Each step runs in its own transaction on PostgreSQL. Never edit a released step: add one.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_users;
mod m20261124_000002_recurring_series;
mod m20261124_000003_meetings;
mod m20261124_000004_meeting_participants;
mod m20261124_000005_recurring_occurrences;
mod m20261124_000006_meeting_recordings;
mod m20261124_000007_meeting_analytics;
mod m20261125_000008_meeting_chat_messages;
mod m20261125_000009_meeting_owner_epoch;
mod m20261203_000010_recording_pipeline;
mod m20261206_000011_share_recordings;
mod m20261207_000012_notification_outbox;
mod m20261207_000013_reminders_and_webhooks;

/// Applies Parley's schema. `parley migrate` and `parley node` run it.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_users::Migration),
            Box::new(m20261124_000002_recurring_series::Migration),
            Box::new(m20261124_000003_meetings::Migration),
            Box::new(m20261124_000004_meeting_participants::Migration),
            Box::new(m20261124_000005_recurring_occurrences::Migration),
            Box::new(m20261124_000006_meeting_recordings::Migration),
            Box::new(m20261124_000007_meeting_analytics::Migration),
            Box::new(m20261125_000008_meeting_chat_messages::Migration),
            Box::new(m20261125_000009_meeting_owner_epoch::Migration),
            Box::new(m20261203_000010_recording_pipeline::Migration),
            Box::new(m20261206_000011_share_recordings::Migration),
            Box::new(m20261207_000012_notification_outbox::Migration),
            Box::new(m20261207_000013_reminders_and_webhooks::Migration),
        ]
    }
}

/// A CHECK constraint expression: `column IN ('a', 'b', …)`.
pub(crate) fn one_of<T: IntoIden>(column: T, allowed: &[&str]) -> SimpleExpr {
    Expr::col(column).is_in(allowed.iter().map(|s| String::from(*s)))
}
