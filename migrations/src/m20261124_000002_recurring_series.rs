use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000001_users::Users;
use crate::one_of;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum RecurringSeries {
    Table,
    Id,
    HostUserId,
    Frequency,
    Interval,
    Days,
    UntilDate,
    OccurrenceCount,
    Timezone,
    LocalStartTime,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RecurringSeries::Table)
                    .col(pk_uuid(RecurringSeries::Id))
                    .col(uuid(RecurringSeries::HostUserId))
                    .col(
                        string_len(RecurringSeries::Frequency, 16)
                            .check(one_of(RecurringSeries::Frequency, &["daily", "weekly", "monthly"])),
                    )
                    .col(integer(RecurringSeries::Interval))
                    .col(string_len(RecurringSeries::Days, 32))
                    .col(date_null(RecurringSeries::UntilDate))
                    .col(integer_null(RecurringSeries::OccurrenceCount))
                    .col(string_len(RecurringSeries::Timezone, 64))
                    .col(string_len(RecurringSeries::LocalStartTime, 8))
                    .col(timestamp_with_time_zone(RecurringSeries::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_recurring_series_host")
                            .from(RecurringSeries::Table, RecurringSeries::HostUserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RecurringSeries::Table).to_owned()).await
    }
}
