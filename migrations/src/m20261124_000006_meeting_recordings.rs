use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;
use crate::one_of;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum MeetingRecordings {
    Table,
    Id,
    MeetingId,
    StartedAt,
    DurationSeconds,
    FileSizeBytes,
    StorageUrl,
    Mp4Url,
    Mp4SizeBytes,
    ThumbnailUrl,
    TranscriptUrl,
    ProcessingStatus,
    Error,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MeetingRecordings::Table)
                    .col(pk_uuid(MeetingRecordings::Id))
                    .col(uuid(MeetingRecordings::MeetingId))
                    .col(timestamp_with_time_zone(MeetingRecordings::StartedAt))
                    .col(big_integer_null(MeetingRecordings::DurationSeconds))
                    .col(big_integer_null(MeetingRecordings::FileSizeBytes))
                    .col(text_null(MeetingRecordings::StorageUrl))
                    .col(text_null(MeetingRecordings::Mp4Url))
                    .col(big_integer_null(MeetingRecordings::Mp4SizeBytes))
                    .col(text_null(MeetingRecordings::ThumbnailUrl))
                    .col(text_null(MeetingRecordings::TranscriptUrl))
                    .col(string_len(MeetingRecordings::ProcessingStatus, 16).check(one_of(
                        MeetingRecordings::ProcessingStatus,
                        &["queued", "processing", "completed", "failed"],
                    )))
                    .col(text_null(MeetingRecordings::Error))
                    .col(timestamp_with_time_zone(MeetingRecordings::CreatedAt))
                    .col(timestamp_with_time_zone(MeetingRecordings::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_recordings_meeting")
                            .from(MeetingRecordings::Table, MeetingRecordings::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_recordings_meeting")
                    .table(MeetingRecordings::Table)
                    .col(MeetingRecordings::MeetingId)
                    .to_owned(),
            )
            .await?;
        // The processing pipeline polls for work: only unfinished rows are indexed.
        manager
            .create_index(
                Index::create()
                    .name("idx_recordings_pending")
                    .table(MeetingRecordings::Table)
                    .col(MeetingRecordings::CreatedAt)
                    .and_where(Expr::col(MeetingRecordings::ProcessingStatus).is_in(["queued", "processing"]))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MeetingRecordings::Table).to_owned()).await
    }
}
