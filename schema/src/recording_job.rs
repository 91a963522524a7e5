//! `recording_jobs`: the durable processing queue. One job per recording, claimed by a worker
//! on any node with `FOR UPDATE SKIP LOCKED` under a lease; a worker that dies loses its lease
//! and another node takes the job over. Only the current lease's token may finish it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recording_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub recording_id: Uuid,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// Not claimable before (retry backoff).
    pub run_after: DateTimeUtc,
    /// The node holding the lease.
    pub lease_owner: Option<String>,
    /// The current lease; every write of the worker names it.
    pub lease_token: Option<Uuid>,
    pub lease_until: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
