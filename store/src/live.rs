//! What live meetings write: start (status `active`), chat, role changes, and the end
//! (status `ended`, duration, analytics row) — each one statement or one transaction.

use chrono::{DateTime, Utc};
use parley_core::meeting::Analytics;
use parley_core::model::{InviteStatus, MeetingSettings, MeetingStatus, Role};
use parley_core::protocol::ChatMessage;
use parley_schema::{meeting, meeting_analytics, meeting_chat_message, meeting_participant, user};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use crate::meetings::Meeting;
use crate::notifications::{webhook_event, webhook_events};
use crate::{Store, StoreError};
use parley_core::notice::WebhookKind;

/// What a meeting actor needs to run a meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMeetingInfo {
    pub meeting_id: Uuid,
    pub host: Uuid,
    pub title: String,
    pub settings: MeetingSettings,
    pub started_at: DateTime<Utc>,
    /// It was already active: a restarted actor must rehydrate instead of starting fresh.
    pub was_active: bool,
    /// The owner's fencing epoch, new with this activation: every later write carries it.
    pub epoch: i64,
}

/// An active meeting and who carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveMeeting {
    pub meeting_id: Uuid,
    pub title: String,
    pub node: Option<String>,
    pub epoch: i64,
    pub started_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Marks a scheduled meeting active on `node` (or re-activates an already active one there,
    /// after a restart or a failover), incrementing its owner epoch. Ended/cancelled meetings
    /// cannot start.
    #[tracing::instrument(name = "db.start_meeting", skip_all)]
    pub async fn start_meeting(&self, id: Uuid, node: &str) -> Result<LiveMeetingInfo, StoreError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let m = meeting::Entity::find_by_id(id).one(&txn).await?.ok_or(StoreError::NotFound("meeting"))?;
        let status: MeetingStatus = m.status.parse().map_err(crate::users::corrupt)?;
        let was_active = status == MeetingStatus::Active;
        let started_at = match status {
            MeetingStatus::Scheduled => {
                let res = meeting::Entity::update_many()
                    .col_expr(meeting::Column::Status, Expr::value(MeetingStatus::Active.as_str()))
                    .col_expr(meeting::Column::StartedAt, Expr::value(now))
                    .col_expr(meeting::Column::AssignedNode, Expr::value(node))
                    .col_expr(
                        meeting::Column::OwnerEpoch,
                        sea_orm::sea_query::ExprTrait::add(Expr::col(meeting::Column::OwnerEpoch), 1),
                    )
                    .col_expr(meeting::Column::UpdatedAt, Expr::value(now))
                    .filter(meeting::Column::Id.eq(id))
                    .filter(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
                    .exec(&txn)
                    .await?;
                if res.rows_affected == 0 {
                    // Started concurrently by someone else: fine, it is active now.
                    txn.rollback().await?;
                    return Box::pin(self.start_meeting(id, node)).await;
                }
                let event = webhook_event(WebhookKind::MeetingStarted, Uuid::now_v7(), &m, now);
                webhook_events(&txn, &self.webhooks, &event, None).await?;
                now
            }
            MeetingStatus::Active => {
                meeting::Entity::update_many()
                    .col_expr(meeting::Column::AssignedNode, Expr::value(node))
                    .col_expr(
                        meeting::Column::OwnerEpoch,
                        sea_orm::sea_query::ExprTrait::add(Expr::col(meeting::Column::OwnerEpoch), 1),
                    )
                    .filter(meeting::Column::Id.eq(id))
                    .exec(&txn)
                    .await?;
                m.started_at.unwrap_or(now)
            }
            MeetingStatus::Ended | MeetingStatus::Cancelled => {
                return Err(StoreError::Rule(format!("the meeting is {status}")));
            }
        };
        // Read back inside the transaction: our own increment, serialised by the row lock.
        let epoch = meeting::Entity::find_by_id(id)
            .select_only()
            .column(meeting::Column::OwnerEpoch)
            .into_tuple::<i64>()
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("meeting"))?;
        txn.commit().await?;
        let view = Meeting::try_from(m)?;
        Ok(LiveMeetingInfo {
            meeting_id: id,
            host: view.host_user_id,
            title: view.title,
            settings: view.settings,
            started_at,
            was_active,
            epoch,
        })
    }

    /// Puts an ended meeting back to `scheduled`, so that its next start restarts it (a
    /// moderator restarting it before its scheduled end: `parley_core::join` decides that).
    /// Returns whether it was ended; a meeting in any other status is left as it is.
    #[tracing::instrument(name = "db.reopen_meeting", skip_all)]
    pub async fn reopen_meeting(&self, id: Uuid) -> Result<bool, StoreError> {
        let res = meeting::Entity::update_many()
            .col_expr(meeting::Column::Status, Expr::value(MeetingStatus::Scheduled.as_str()))
            .col_expr(meeting::Column::EndedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(meeting::Column::ActualDurationSeconds, Expr::value(Option::<i64>::None))
            .col_expr(meeting::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(meeting::Column::Id.eq(id))
            .filter(meeting::Column::Status.eq(MeetingStatus::Ended.as_str()))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Active meetings with their owner node and epoch (all of them, or those on `node`).
    pub async fn active_meetings(&self, node: Option<&str>) -> Result<Vec<ActiveMeeting>, StoreError> {
        let mut q = meeting::Entity::find().filter(meeting::Column::Status.eq(MeetingStatus::Active.as_str()));
        if let Some(n) = node {
            q = q.filter(meeting::Column::AssignedNode.eq(n));
        }
        let rows = q.order_by_asc(meeting::Column::Id).all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|m| ActiveMeeting {
                meeting_id: m.id,
                title: m.title,
                node: m.assigned_node,
                epoch: m.owner_epoch,
                started_at: m.started_at,
            })
            .collect())
    }

    /// The owner node and epoch of an active meeting (`None` if it is not active).
    #[tracing::instrument(name = "db.meeting_owner", skip_all)]
    pub async fn meeting_owner(&self, id: Uuid) -> Result<Option<(String, i64)>, StoreError> {
        let m = meeting::Entity::find_by_id(id)
            .filter(meeting::Column::Status.eq(MeetingStatus::Active.as_str()))
            .one(&self.db)
            .await?;
        Ok(m.and_then(|m| m.assigned_node.map(|n| (n, m.owner_epoch))))
    }

    /// Fails with [`StoreError::Fenced`] unless `epoch` is the meeting's current owner epoch.
    /// The row stays share-locked until the caller's transaction ends, so a takeover (which
    /// bumps the epoch with an UPDATE) waits for this write or makes it fail — never both.
    /// (SQLite has no row locks; there a single node writes anyway.)
    pub(crate) async fn check_epoch<C: sea_orm::ConnectionTrait>(
        c: &C,
        id: Uuid,
        epoch: i64,
    ) -> Result<(), StoreError> {
        let current = meeting::Entity::find_by_id(id)
            .select_only()
            .column(meeting::Column::OwnerEpoch)
            .lock_shared()
            .into_tuple::<i64>()
            .one(c)
            .await?
            .ok_or(StoreError::NotFound("meeting"))?;
        if current == epoch { Ok(()) } else { Err(StoreError::Fenced) }
    }

    /// Ends a live meeting: status, end time, real duration and the analytics row, in one
    /// transaction, by the owner holding `epoch`. Idempotent: a second call changes nothing.
    #[tracing::instrument(name = "db.end_meeting", skip_all)]
    pub async fn end_meeting(&self, id: Uuid, epoch: i64, analytics: &Analytics) -> Result<(), StoreError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let m = meeting::Entity::find_by_id(id).one(&txn).await?.ok_or(StoreError::NotFound("meeting"))?;
        if m.status == MeetingStatus::Ended.as_str() {
            return Ok(());
        }
        if m.owner_epoch != epoch {
            return Err(StoreError::Fenced);
        }
        let duration = m.started_at.map(|s| (now - s).num_seconds().max(0)).unwrap_or(analytics.duration_ms / 1000);
        meeting::Entity::update_many()
            .col_expr(meeting::Column::Status, Expr::value(MeetingStatus::Ended.as_str()))
            .col_expr(meeting::Column::EndedAt, Expr::value(now))
            .col_expr(meeting::Column::ActualDurationSeconds, Expr::value(duration))
            .col_expr(meeting::Column::AssignedNode, Expr::value(Option::<String>::None))
            .col_expr(meeting::Column::UpdatedAt, Expr::value(now))
            .filter(meeting::Column::Id.eq(id))
            .filter(meeting::Column::OwnerEpoch.eq(epoch))
            .exec(&txn)
            .await?;
        let mut event = webhook_event(WebhookKind::MeetingEnded, Uuid::now_v7(), &m, now);
        event.duration_seconds = Some(duration);
        webhook_events(&txn, &self.webhooks, &event, None).await?;
        meeting_analytics::Entity::insert(meeting_analytics::ActiveModel {
            meeting_id: Set(id),
            total_participants: Set(analytics.total_participants as i32),
            avg_participants: Set(analytics.avg_participants),
            peak_participants: Set(analytics.peak_participants as i32),
            total_duration_seconds: Set(duration),
            created_at: Set(now),
        })
        // A restarted meeting ends again: its row gives the latest run.
        .on_conflict(
            OnConflict::column(meeting_analytics::Column::MeetingId)
                .update_columns([
                    meeting_analytics::Column::TotalParticipants,
                    meeting_analytics::Column::AvgParticipants,
                    meeting_analytics::Column::PeakParticipants,
                    meeting_analytics::Column::TotalDurationSeconds,
                    meeting_analytics::Column::CreatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Keeps one chat message, written by the owner holding `epoch`. Idempotent per
    /// `(meeting, seq)`: a retry after a lost commit acknowledgement stores it once.
    #[tracing::instrument(name = "db.insert_chat", skip_all)]
    pub async fn insert_chat(&self, meeting_id: Uuid, epoch: i64, m: &ChatMessage) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        Self::check_epoch(&txn, meeting_id, epoch).await?;
        let row = meeting_chat_message::ActiveModel {
            meeting_id: Set(meeting_id),
            seq: Set(m.seq as i64),
            from_user_id: Set(m.from),
            from_name: Set(m.from_name.chars().take(100).collect()),
            to_user_id: Set(m.to),
            room: Set(m.room.map(|r| r as i32)),
            body: Set(m.text.clone()),
            sent_at: Set(m.at),
        };
        meeting_chat_message::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([meeting_chat_message::Column::MeetingId, meeting_chat_message::Column::Seq])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The last `limit` chat messages of a meeting, oldest first.
    #[tracing::instrument(name = "db.chat_history", skip_all)]
    pub async fn chat_history(&self, meeting_id: Uuid, limit: u64) -> Result<Vec<ChatMessage>, StoreError> {
        let mut rows = meeting_chat_message::Entity::find()
            .filter(meeting_chat_message::Column::MeetingId.eq(meeting_id))
            .order_by_desc(meeting_chat_message::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|r| ChatMessage {
                seq: r.seq as u64,
                from: r.from_user_id,
                from_name: r.from_name,
                to: r.to_user_id,
                room: r.room.map(|x| x as u32),
                text: r.body,
                at: r.sent_at,
            })
            .collect())
    }

    /// Records a role given during the meeting (inviting the user if they were not invited),
    /// written by the owner holding `epoch`.
    #[tracing::instrument(name = "db.set_participant_role", skip_all)]
    pub async fn set_participant_role(
        &self,
        meeting_id: Uuid,
        epoch: i64,
        user_id: Uuid,
        role: Role,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        Self::check_epoch(&txn, meeting_id, epoch).await?;
        let res = meeting_participant::Entity::update_many()
            .col_expr(meeting_participant::Column::Role, Expr::value(role.as_str()))
            .filter(meeting_participant::Column::MeetingId.eq(meeting_id))
            .filter(meeting_participant::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        if res.rows_affected > 0 {
            txn.commit().await?;
            return Ok(());
        }
        let u = user::Entity::find_by_id(user_id).one(&txn).await?.ok_or(StoreError::NotFound("user"))?;
        let m = meeting::Entity::find_by_id(meeting_id).one(&txn).await?.ok_or(StoreError::NotFound("meeting"))?;
        meeting_participant::ActiveModel {
            meeting_id: Set(meeting_id),
            user_id: Set(user_id),
            role: Set(role.as_str().to_owned()),
            email: Set(u.email),
            invite_status: Set(InviteStatus::Accepted.as_str().to_owned()),
            invited_at: Set(Utc::now()),
            scheduled_time: Set(m.scheduled_time),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}
