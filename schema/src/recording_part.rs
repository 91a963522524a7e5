//! `recording_parts`: the capture segments of one recording, one per owner node. A failover
//! continues the recording on the new owner as the next part; the pipeline joins them.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recording_parts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub recording_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub part: i32,
    /// The node whose media router captured it.
    pub node: String,
    pub started_at: DateTimeUtc,
    /// `None` while capturing, or when its node died first (the part's manifest says how far it got).
    pub ended_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
