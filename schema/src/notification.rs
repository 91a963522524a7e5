//! `notifications`: the outbox. A change that should tell someone (a recording is ready) leaves
//! a row here in its own transaction; delivery (email, webhooks) reads it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// What happened, e.g. `recording_ready`, `recording_failed`.
    pub kind: String,
    pub meeting_id: Uuid,
    pub recording_id: Option<Uuid>,
    /// JSON.
    pub payload: String,
    /// `pending` until delivered.
    pub status: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
