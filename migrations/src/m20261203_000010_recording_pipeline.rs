//! The recording pipeline: the capture state `recording` and `ready` (was `completed`) in
//! `meeting_recordings` with progress, layout, who started it and its artifacts; the capture
//! parts of a recording (one per owner node: a failover continues the recording as a new part);
//! the durable job queue the workers of every node claim from; and the notification outbox a
//! finished recording leaves its "ready" message in.
//!
//! SQLite cannot change a CHECK constraint in place, so `meeting_recordings` is rebuilt (the
//! old table renamed aside, the new one created under the name, rows copied with `completed` →
//! `ready`, the old one dropped) — the same statements on both engines.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;
use crate::one_of;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The recording states a row goes through (`parley_core::model::ProcessingStatus`).
pub(crate) const RECORDING_STATES: &[&str] = &["recording", "queued", "processing", "ready", "failed"];

#[derive(DeriveIden)]
pub enum MeetingRecordings {
    Table,
    Id,
    MeetingId,
    StartedAt,
    EndedAt,
    StartedBy,
    Layout,
    DurationSeconds,
    FileSizeBytes,
    StorageUrl,
    Mp4Url,
    Mp4SizeBytes,
    ThumbnailUrl,
    TranscriptUrl,
    ProcessingStatus,
    Progress,
    Error,
    Artifacts,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum MeetingRecordingsOld {
    Table,
}

#[derive(DeriveIden)]
pub enum RecordingParts {
    Table,
    RecordingId,
    Part,
    Node,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
pub enum RecordingJobs {
    Table,
    Id,
    RecordingId,
    Status,
    Attempts,
    MaxAttempts,
    RunAfter,
    LeaseOwner,
    LeaseToken,
    LeaseUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum Notifications {
    Table,
    Id,
    Kind,
    MeetingId,
    RecordingId,
    Payload,
    Status,
    CreatedAt,
}

/// The columns the old table had, in the order the copy reads them.
const COPIED: &str = "id, meeting_id, started_at, duration_seconds, file_size_bytes, storage_url, mp4_url, \
                      mp4_size_bytes, thumbnail_url, transcript_url, error, created_at, updated_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .rename_table(Table::rename().table(MeetingRecordings::Table, MeetingRecordingsOld::Table).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MeetingRecordings::Table)
                    .col(pk_uuid(MeetingRecordings::Id))
                    .col(uuid(MeetingRecordings::MeetingId))
                    .col(timestamp_with_time_zone(MeetingRecordings::StartedAt))
                    .col(timestamp_with_time_zone_null(MeetingRecordings::EndedAt))
                    .col(uuid_null(MeetingRecordings::StartedBy))
                    .col(
                        string_len(MeetingRecordings::Layout, 16)
                            .default("speaker")
                            .check(one_of(MeetingRecordings::Layout, &["speaker", "gallery"])),
                    )
                    .col(big_integer_null(MeetingRecordings::DurationSeconds))
                    .col(big_integer_null(MeetingRecordings::FileSizeBytes))
                    .col(text_null(MeetingRecordings::StorageUrl))
                    .col(text_null(MeetingRecordings::Mp4Url))
                    .col(big_integer_null(MeetingRecordings::Mp4SizeBytes))
                    .col(text_null(MeetingRecordings::ThumbnailUrl))
                    .col(text_null(MeetingRecordings::TranscriptUrl))
                    .col(
                        string_len(MeetingRecordings::ProcessingStatus, 16)
                            .check(one_of(MeetingRecordings::ProcessingStatus, RECORDING_STATES)),
                    )
                    .col(integer(MeetingRecordings::Progress).default(0))
                    .col(text_null(MeetingRecordings::Error))
                    .col(text_null(MeetingRecordings::Artifacts))
                    .col(timestamp_with_time_zone(MeetingRecordings::CreatedAt))
                    .col(timestamp_with_time_zone(MeetingRecordings::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_recordings_meeting_v2")
                            .from(MeetingRecordings::Table, MeetingRecordings::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "INSERT INTO meeting_recordings ({COPIED}, processing_status, progress) \
             SELECT {COPIED}, CASE processing_status WHEN 'completed' THEN 'ready' ELSE processing_status END, \
             CASE processing_status WHEN 'completed' THEN 100 ELSE 0 END FROM meeting_recordings_old"
        ))
        .await?;
        // Its indexes go with it, so theirs can be made again under the same names.
        manager.drop_table(Table::drop().table(MeetingRecordingsOld::Table).to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_recordings_meeting")
                    .table(MeetingRecordings::Table)
                    .col(MeetingRecordings::MeetingId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RecordingParts::Table)
                    .col(uuid(RecordingParts::RecordingId))
                    .col(integer(RecordingParts::Part))
                    .col(text(RecordingParts::Node))
                    .col(timestamp_with_time_zone(RecordingParts::StartedAt))
                    .col(timestamp_with_time_zone_null(RecordingParts::EndedAt))
                    .primary_key(Index::create().col(RecordingParts::RecordingId).col(RecordingParts::Part))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_recording_parts_recording")
                            .from(RecordingParts::Table, RecordingParts::RecordingId)
                            .to(MeetingRecordings::Table, MeetingRecordings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RecordingJobs::Table)
                    .col(pk_uuid(RecordingJobs::Id))
                    .col(uuid_uniq(RecordingJobs::RecordingId))
                    .col(
                        string_len(RecordingJobs::Status, 16)
                            .check(one_of(RecordingJobs::Status, &["queued", "running", "done", "failed"])),
                    )
                    .col(integer(RecordingJobs::Attempts).default(0))
                    .col(integer(RecordingJobs::MaxAttempts).default(5))
                    .col(timestamp_with_time_zone(RecordingJobs::RunAfter))
                    .col(text_null(RecordingJobs::LeaseOwner))
                    .col(uuid_null(RecordingJobs::LeaseToken))
                    .col(timestamp_with_time_zone_null(RecordingJobs::LeaseUntil))
                    .col(text_null(RecordingJobs::LastError))
                    .col(timestamp_with_time_zone(RecordingJobs::CreatedAt))
                    .col(timestamp_with_time_zone(RecordingJobs::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_recording_jobs_recording")
                            .from(RecordingJobs::Table, RecordingJobs::RecordingId)
                            .to(MeetingRecordings::Table, MeetingRecordings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Workers poll for claimable work: only unfinished jobs are indexed.
        manager
            .create_index(
                Index::create()
                    .name("idx_recording_jobs_claimable")
                    .table(RecordingJobs::Table)
                    .col(RecordingJobs::RunAfter)
                    .and_where(Expr::col(RecordingJobs::Status).is_in(["queued", "running"]))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(pk_uuid(Notifications::Id))
                    .col(string_len(Notifications::Kind, 32))
                    .col(uuid(Notifications::MeetingId))
                    .col(uuid_null(Notifications::RecordingId))
                    .col(text(Notifications::Payload))
                    .col(string_len(Notifications::Status, 16).default("pending"))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_notifications_meeting")
                            .from(Notifications::Table, Notifications::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in ["notifications", "recording_jobs", "recording_parts"] {
            manager.drop_table(Table::drop().table(Alias::new(t)).to_owned()).await?;
        }
        // The rebuilt `meeting_recordings` keeps its new columns; the states it added stay valid.
        Ok(())
    }
}
