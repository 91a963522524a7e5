//! Reminders and webhooks.
//!
//! - `meetings.reminder_minutes` (default 10; 0: none): how long before its start every invitee
//!   is reminded of a meeting.
//! - `meetings.remind_at`: when the reminder is due — set when the meeting is created, moved or
//!   its lead time changes, cleared by the node that queues the reminders (a compare-and-set, so
//!   exactly one node does, though every node looks). Scheduled meetings that exist when this
//!   step runs get theirs on PostgreSQL; on SQLite (the single-node embedded default) they get
//!   none — only meetings created or moved afterwards are reminded.
//! - `notifications.channel`: `email` (a notice to one address) or `webhook` (an event to one
//!   endpoint, delivered in order per meeting and endpoint).

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;
use crate::m20261203_000010_recording_pipeline::Notifications;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Added {
    ReminderMinutes,
    RemindAt,
    Channel,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Meetings::Table)
                    .add_column(integer(Added::ReminderMinutes).default(10))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Meetings::Table)
                    .add_column(timestamp_with_time_zone_null(Added::RemindAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Notifications::Table)
                    .add_column(
                        string_len(Added::Channel, 16)
                            .default("email")
                            .check(crate::one_of(Added::Channel, &["email", "webhook"])),
                    )
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared(
                "UPDATE meetings SET remind_at = scheduled_time - INTERVAL '10 minutes' \
                 WHERE status = 'scheduled' AND scheduled_time > now()",
            )
            .await?;
        }
        // The schedulers look for due reminders: only those not yet queued are indexed.
        manager
            .create_index(
                Index::create()
                    .name("idx_meetings_remind_at")
                    .table(Meetings::Table)
                    .col(Added::RemindAt)
                    .and_where(Expr::col(Added::RemindAt).is_not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("idx_meetings_remind_at").table(Meetings::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Notifications::Table).drop_column(Added::Channel).to_owned()).await?;
        for col in [Added::RemindAt, Added::ReminderMinutes] {
            manager.alter_table(Table::alter().table(Meetings::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
