//! `meetings.share_recordings`: whether the meeting's participants other than its host and
//! co-hosts may watch its recordings. Existing meetings keep what they had: hosts only.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ShareRecordings {
    ShareRecordings,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Meetings::Table)
                    .add_column(boolean(ShareRecordings::ShareRecordings).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Meetings::Table).drop_column(ShareRecordings::ShareRecordings).to_owned())
            .await
    }
}
