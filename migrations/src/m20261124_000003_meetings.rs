use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000001_users::Users;
use crate::m20261124_000002_recurring_series::RecurringSeries;
use crate::one_of;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Meetings {
    Table,
    Id,
    HostUserId,
    Title,
    MeetingType,
    ScheduledTime,
    DurationMinutes,
    Timezone,
    PasswordHash,
    WaitingRoomEnabled,
    RecordingAllowed,
    MuteOnEntry,
    VideoOnEntry,
    ScreenShare,
    Status,
    StartedAt,
    EndedAt,
    ActualDurationSeconds,
    AssignedNode,
    SeriesId,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Meetings::Table)
                    .col(pk_uuid(Meetings::Id))
                    .col(uuid(Meetings::HostUserId))
                    .col(string_len(Meetings::Title, 200))
                    .col(
                        string_len(Meetings::MeetingType, 16)
                            .check(one_of(Meetings::MeetingType, &["scheduled", "instant", "recurring", "webinar"])),
                    )
                    .col(timestamp_with_time_zone(Meetings::ScheduledTime))
                    .col(
                        integer(Meetings::DurationMinutes).check(Expr::col(Meetings::DurationMinutes).between(1, 1440)),
                    )
                    .col(string_len(Meetings::Timezone, 64))
                    .col(string_len_null(Meetings::PasswordHash, 255))
                    .col(boolean(Meetings::WaitingRoomEnabled))
                    .col(boolean(Meetings::RecordingAllowed))
                    .col(boolean(Meetings::MuteOnEntry))
                    .col(boolean(Meetings::VideoOnEntry))
                    .col(
                        string_len(Meetings::ScreenShare, 16)
                            .check(one_of(Meetings::ScreenShare, &["host_only", "all"])),
                    )
                    .col(
                        string_len(Meetings::Status, 16)
                            .check(one_of(Meetings::Status, &["scheduled", "active", "ended", "cancelled"])),
                    )
                    .col(timestamp_with_time_zone_null(Meetings::StartedAt))
                    .col(timestamp_with_time_zone_null(Meetings::EndedAt))
                    .col(big_integer_null(Meetings::ActualDurationSeconds))
                    .col(string_len_null(Meetings::AssignedNode, 64))
                    .col(uuid_null(Meetings::SeriesId))
                    .col(timestamp_with_time_zone(Meetings::CreatedAt))
                    .col(timestamp_with_time_zone(Meetings::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_meetings_host")
                            .from(Meetings::Table, Meetings::HostUserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_meetings_series")
                            .from(Meetings::Table, Meetings::SeriesId)
                            .to(RecurringSeries::Table, RecurringSeries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The seed's INDEX (host_user_id, scheduled_time DESC): a host's meetings, newest first,
        // and the per-day analytics of one host.
        manager
            .create_index(
                Index::create()
                    .name("idx_meetings_host_time")
                    .table(Meetings::Table)
                    .col(Meetings::HostUserId)
                    .col((Meetings::ScheduledTime, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        // The seed's partial INDEX (scheduled_time) WHERE status = 'scheduled': what starts soon.
        manager
            .create_index(
                Index::create()
                    .name("idx_meetings_scheduled_time_pending")
                    .table(Meetings::Table)
                    .col(Meetings::ScheduledTime)
                    .and_where(Expr::col(Meetings::Status).eq("scheduled"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_meetings_series").table(Meetings::Table).col(Meetings::SeriesId).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Meetings::Table).to_owned()).await
    }
}
