//! The fencing epoch of a live meeting's owner. Each (re-)activation of a meeting on a node
//! increments it; every write the owner makes afterwards carries it, so a node that lost the
//! meeting (cut off, presumed dead) cannot overwrite what the new owner writes.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000003_meetings::Meetings;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OwnerEpoch {
    OwnerEpoch,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Meetings::Table)
                    .add_column(big_integer(OwnerEpoch::OwnerEpoch).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Meetings::Table).drop_column(OwnerEpoch::OwnerEpoch).to_owned()).await
    }
}
