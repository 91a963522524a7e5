use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000002_recurring_series::RecurringSeries;
use crate::m20261124_000003_meetings::Meetings;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum RecurringOccurrences {
    Table,
    SeriesId,
    MeetingId,
    OccurrenceTime,
    IsException,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RecurringOccurrences::Table)
                    .col(uuid(RecurringOccurrences::SeriesId))
                    .col(uuid_uniq(RecurringOccurrences::MeetingId))
                    .col(timestamp_with_time_zone(RecurringOccurrences::OccurrenceTime))
                    .col(boolean(RecurringOccurrences::IsException).default(false))
                    .primary_key(
                        Index::create().col(RecurringOccurrences::SeriesId).col(RecurringOccurrences::MeetingId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_occurrences_series")
                            .from(RecurringOccurrences::Table, RecurringOccurrences::SeriesId)
                            .to(RecurringSeries::Table, RecurringSeries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_occurrences_meeting")
                            .from(RecurringOccurrences::Table, RecurringOccurrences::MeetingId)
                            .to(Meetings::Table, Meetings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RecurringOccurrences::Table).to_owned()).await
    }
}
