use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum MeetingAnalytics {
    Table,
    MeetingId,
    TotalParticipants,
    AvgParticipants,
    PeakParticipants,
    TotalDurationSeconds,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MeetingAnalytics::Table)
                    .col(pk_uuid(MeetingAnalytics::MeetingId))
                    .col(integer(MeetingAnalytics::TotalParticipants))
                    .col(double(MeetingAnalytics::AvgParticipants))
                    .col(integer(MeetingAnalytics::PeakParticipants))
                    .col(big_integer(MeetingAnalytics::TotalDurationSeconds))
                    .col(timestamp_with_time_zone(MeetingAnalytics::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_analytics_meeting")
                            .from(MeetingAnalytics::Table, MeetingAnalytics::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MeetingAnalytics::Table).to_owned()).await
    }
}
