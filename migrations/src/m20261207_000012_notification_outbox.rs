//! The notification outbox becomes a delivery queue: one row per message to one recipient,
//! written in the transaction of the change that causes it and delivered by workers on any node.
//!
//! - `recipient`: the address the message goes to; `idempotency_key` (unique): the same message
//!   is never queued twice, and a receiver can drop a duplicate delivery by it.
//! - `attempts`, `run_after` (backoff), `lease_owner`/`lease_until` (a worker's claim, taken
//!   over when it expires), `last_error` (why the last attempt failed), `sent_at`.
//! - `status`: `pending` until delivered (`sent`) or given up (`failed`, with the reason).
//! - `meetings.ics_sequence`, `recurring_series.ics_sequence`: the iCalendar `SEQUENCE` of the
//!   last calendar message about the meeting or series, so every update supersedes the last.
//!
//! Rows written before this step had no recipient: they are closed as `failed` with that reason.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000002_recurring_series::RecurringSeries;
use crate::m20261124_000003_meetings::Meetings;
use crate::m20261203_000010_recording_pipeline::Notifications;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Recipient,
    IdempotencyKey,
    Attempts,
    RunAfter,
    LeaseOwner,
    LeaseUntil,
    LastError,
    SentAt,
    IcsSequence,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite takes no more.
        let columns = [
            text(Outbox::Recipient).default("").to_owned(),
            string_len(Outbox::IdempotencyKey, 200).default("").to_owned(),
            integer(Outbox::Attempts).default(0).to_owned(),
            timestamp_with_time_zone_null(Outbox::RunAfter),
            string_len_null(Outbox::LeaseOwner, 100),
            timestamp_with_time_zone_null(Outbox::LeaseUntil),
            text_null(Outbox::LastError),
            timestamp_with_time_zone_null(Outbox::SentAt),
        ];
        for mut col in columns {
            manager.alter_table(Table::alter().table(Notifications::Table).add_column(&mut col).to_owned()).await?;
        }
        for table in [Meetings::Table.into_iden(), RecurringSeries::Table.into_iden()] {
            manager
                .alter_table(Table::alter().table(table).add_column(integer(Outbox::IcsSequence).default(0)).to_owned())
                .await?;
        }
        let db = manager.get_connection();
        let legacy = "UPDATE notifications SET idempotency_key = 'legacy:' || CAST(id AS TEXT), \
                      status = 'failed', last_error = 'queued before delivery existed: no recipient' \
                      WHERE idempotency_key = ''";
        db.execute_unprepared(legacy).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_idempotency_key")
                    .table(Notifications::Table)
                    .col(Outbox::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Workers poll for due messages: only undelivered ones are indexed.
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_pending")
                    .table(Notifications::Table)
                    .col(Outbox::RunAfter)
                    .and_where(Expr::col(Notifications::Status).eq("pending"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_meeting")
                    .table(Notifications::Table)
                    .col(Notifications::MeetingId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["idx_notifications_meeting", "idx_notifications_pending", "idx_notifications_idempotency_key"] {
            manager.drop_index(Index::drop().name(name).table(Notifications::Table).to_owned()).await?;
        }
        for col in [
            Outbox::SentAt,
            Outbox::LastError,
            Outbox::LeaseUntil,
            Outbox::LeaseOwner,
            Outbox::RunAfter,
            Outbox::Attempts,
            Outbox::IdempotencyKey,
            Outbox::Recipient,
        ] {
            manager.alter_table(Table::alter().table(Notifications::Table).drop_column(col).to_owned()).await?;
        }
        for table in [Meetings::Table.into_iden(), RecurringSeries::Table.into_iden()] {
            manager.alter_table(Table::alter().table(table).drop_column(Outbox::IcsSequence).to_owned()).await?;
        }
        Ok(())
    }
}
