use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000001_users::Users;
use crate::m20261124_000003_meetings::Meetings;
use crate::one_of;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum MeetingParticipants {
    Table,
    MeetingId,
    UserId,
    Role,
    Email,
    InviteStatus,
    InvitedAt,
    ScheduledTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MeetingParticipants::Table)
                    .col(uuid(MeetingParticipants::MeetingId))
                    .col(uuid(MeetingParticipants::UserId))
                    .col(
                        string_len(MeetingParticipants::Role, 16)
                            .check(one_of(MeetingParticipants::Role, &["host", "co_host", "panelist", "attendee"])),
                    )
                    .col(string_len(MeetingParticipants::Email, 254))
                    .col(
                        string_len(MeetingParticipants::InviteStatus, 16)
                            .check(one_of(MeetingParticipants::InviteStatus, &["pending", "accepted", "declined"])),
                    )
                    .col(timestamp_with_time_zone(MeetingParticipants::InvitedAt))
                    .col(timestamp_with_time_zone(MeetingParticipants::ScheduledTime))
                    .primary_key(Index::create().col(MeetingParticipants::MeetingId).col(MeetingParticipants::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_participants_meeting")
                            .from(MeetingParticipants::Table, MeetingParticipants::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_participants_user")
                            .from(MeetingParticipants::Table, MeetingParticipants::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The seed's INDEX (user_id, scheduled_time): "my upcoming meetings" is a range scan.
        manager
            .create_index(
                Index::create()
                    .name("idx_participants_user_time")
                    .table(MeetingParticipants::Table)
                    .col(MeetingParticipants::UserId)
                    .col(MeetingParticipants::ScheduledTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MeetingParticipants::Table).to_owned()).await
    }
}
