//! `notifications`: the outbox. A change that should tell someone (an invitation, a move, a
//! cancellation, a recording that is ready) leaves one row per recipient here in the change's
//! own transaction; delivery workers on any node claim, send and close them.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `email` or `webhook`.
    pub channel: String,
    /// `parley_core::notice::NoticeKind` (`invitation`, `recording_ready`…) for email,
    /// `parley_core::notice::WebhookKind` (`participant.joined`…) for a webhook.
    pub kind: String,
    pub meeting_id: Uuid,
    pub recording_id: Option<Uuid>,
    /// JSON: a `parley_core::notice::Notice` (email) or the `WebhookEvent` body (webhook).
    pub payload: String,
    /// `pending` until delivered (`sent`) or given up (`failed`).
    pub status: String,
    pub created_at: DateTimeUtc,
    /// The email address or webhook URL the message goes to.
    pub recipient: String,
    /// Unique: the same message is never queued twice; receivers drop duplicates by it.
    pub idempotency_key: String,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Not before (backoff after a failed attempt); `None`: at once.
    pub run_after: Option<DateTimeUtc>,
    /// The worker holding the message while it sends it, and until when.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub sent_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
