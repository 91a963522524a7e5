use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum MeetingChatMessages {
    Table,
    MeetingId,
    Seq,
    FromUserId,
    FromName,
    ToUserId,
    Room,
    Body,
    SentAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MeetingChatMessages::Table)
                    .col(uuid(MeetingChatMessages::MeetingId))
                    .col(big_integer(MeetingChatMessages::Seq))
                    .col(uuid(MeetingChatMessages::FromUserId))
                    .col(string_len(MeetingChatMessages::FromName, 100))
                    .col(uuid_null(MeetingChatMessages::ToUserId))
                    .col(integer_null(MeetingChatMessages::Room))
                    .col(text(MeetingChatMessages::Body))
                    .col(big_integer(MeetingChatMessages::SentAt))
                    .primary_key(Index::create().col(MeetingChatMessages::MeetingId).col(MeetingChatMessages::Seq))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_chat_meeting")
                            .from(MeetingChatMessages::Table, MeetingChatMessages::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MeetingChatMessages::Table).to_owned()).await
    }
}
