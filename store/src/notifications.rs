//! The notification outbox: messages written in the transaction of the change that causes
//! them, then claimed, delivered and closed by workers on any node.
//!
//! Writing: [`event_notices`] (an invitation, update or cancellation to every invitee of a
//! meeting, a series or one occurrence) and [`recording_notices`] (a recording is ready, or
//! failed, to the meeting's moderators) run inside the caller's transaction, so a change and
//! its messages commit or roll back together. Each row is one message to one recipient with an
//! idempotency key unique in the table: the same message is never queued twice, and a receiver
//! that sees a delivery twice (a worker died after sending, before recording it) can drop it.
//!
//! Delivering: [`Store::claim_notification`] leases the oldest due message (PostgreSQL skips
//! rows other workers hold; on SQLite a compare-and-set decides), then the worker reports
//! [`Store::notification_sent`] or [`Store::notification_failed`]; a lease that expires (the
//! worker died) makes the message claimable again. After [`MAX_ATTEMPTS`], or at once for a
//! permanent failure (the recipient's server refused the address), the message is `failed`
//! with the reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use parley_core::model::Role;
use parley_core::notice::{Attendee, CalendarEvent, CalendarMethod, Notice, NoticeKind, Person, RecordingFacts};
use parley_schema::{meeting, meeting_participant, notification, user};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

use crate::users::corrupt;
use crate::{Store, StoreError};

/// Attempts before a message that keeps failing is given up as `failed`.
pub const MAX_ATTEMPTS: i32 = 10;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The wait after failed attempt number `attempt` (1-based): `base`, then ×4 each time, capped
/// at [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(16);
    base.saturating_mul(4u32.saturating_pow(exp)).min(MAX_BACKOFF)
}

/// Which calendar event a change is about.
#[derive(Debug, Clone)]
pub(crate) enum EventScope {
    /// A one-off meeting: the event is the meeting.
    Meeting,
    /// A whole series: the event carries the `RRULE` (and the cancelled occurrences).
    Series { series_id: Uuid, rrule: Option<String>, exdates: Vec<DateTime<Utc>> },
    /// One occurrence of a series, by the instant the rule gave it (`RECURRENCE-ID`).
    Occurrence { series_id: Uuid, original: DateTime<Utc> },
}

impl EventScope {
    fn uid(&self, meeting_id: Uuid) -> String {
        match self {
            EventScope::Meeting => format!("{meeting_id}@parley"),
            EventScope::Series { series_id, .. } | EventScope::Occurrence { series_id, .. } => {
                format!("{series_id}@parley")
            }
        }
    }
}

/// The people of a meeting: the host and everybody invited, with their roles.
async fn people(db: &impl ConnectionTrait, meeting_id: Uuid) -> Result<Vec<(Person, Role)>, StoreError> {
    let rows = meeting_participant::Entity::find()
        .filter(meeting_participant::Column::MeetingId.eq(meeting_id))
        .find_also_related(user::Entity)
        .order_by_asc(meeting_participant::Column::InvitedAt)
        .order_by_asc(meeting_participant::Column::Email)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (p, u) in rows {
        let role: Role = p.role.parse().map_err(corrupt)?;
        out.push((Person { name: u.map(|u| u.display_name).unwrap_or_default(), email: p.email }, role));
    }
    out.sort_by_key(|(_, r)| *r != Role::Host);
    Ok(out)
}

fn host_of(people: &[(Person, Role)]) -> Result<Person, StoreError> {
    people.iter().find(|(_, r)| *r == Role::Host).map(|(p, _)| p.clone()).ok_or(StoreError::NotFound("meeting host"))
}

fn is_moderator(role: Role) -> bool {
    matches!(role, Role::Host | Role::CoHost)
}

/// Queues one calendar message (`kind` with `method`) about meeting `m` to each of its invitees
/// (everyone but the host, who made the change). `sequence` is the event's new `SEQUENCE`.
pub(crate) async fn event_notices(
    txn: &impl ConnectionTrait,
    kind: NoticeKind,
    method: CalendarMethod,
    m: &meeting::Model,
    scope: EventScope,
    sequence: i32,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let people = people(txn, m.id).await?;
    let host = host_of(&people)?;
    let uid = scope.uid(m.id);
    let (rrule, exdates, recurrence_id) = match &scope {
        EventScope::Meeting => (None, Vec::new(), None),
        EventScope::Series { rrule, exdates, .. } => (rrule.clone(), exdates.clone(), None),
        EventScope::Occurrence { original, .. } => (None, Vec::new(), Some(*original)),
    };
    let event = CalendarEvent {
        method,
        uid: uid.clone(),
        sequence,
        title: m.title.clone(),
        start: m.scheduled_time,
        duration_minutes: m.duration_minutes,
        timezone: m.timezone.clone(),
        rrule,
        exdates,
        recurrence_id,
        organizer: host.clone(),
        attendees: people.iter().map(|(p, r)| Attendee { person: p.clone(), chair: is_moderator(*r) }).collect(),
        stamp: now,
    };
    let instance = recurrence_id.map(|t| format!(":{}", t.format("%Y%m%dT%H%M%SZ"))).unwrap_or_default();
    let mut sent = 0;
    for (person, role) in &people {
        if *role == Role::Host {
            continue;
        }
        let notice = Notice {
            kind,
            meeting_id: m.id,
            title: m.title.clone(),
            start: m.scheduled_time,
            timezone: m.timezone.clone(),
            duration_minutes: m.duration_minutes,
            to: person.clone(),
            host: host.clone(),
            event: Some(event.clone()),
            recording: None,
        };
        let key = format!("{kind}:{uid}:{sequence}{instance}:{}", person.email);
        enqueue(txn, &notice, None, key, now).await?;
        sent += 1;
    }
    Ok(sent)
}

/// Queues a recording notice (`RecordingReady` / `RecordingFailed`) to each moderator (host
/// and co-hosts) of the recording's meeting.
pub(crate) async fn recording_notices(
    txn: &impl ConnectionTrait,
    kind: NoticeKind,
    meeting_id: Uuid,
    facts: RecordingFacts,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let m = meeting::Entity::find_by_id(meeting_id).one(txn).await?.ok_or(StoreError::NotFound("meeting"))?;
    let people = people(txn, meeting_id).await?;
    let host = host_of(&people)?;
    for (person, _) in people.iter().filter(|(_, r)| is_moderator(*r)) {
        let notice = Notice {
            kind,
            meeting_id,
            title: m.title.clone(),
            start: m.scheduled_time,
            timezone: m.timezone.clone(),
            duration_minutes: m.duration_minutes,
            to: person.clone(),
            host: host.clone(),
            event: None,
            recording: Some(facts.clone()),
        };
        let key = format!("{kind}:{}:{}", facts.recording_id, person.email);
        enqueue(txn, &notice, Some(facts.recording_id), key, now).await?;
    }
    Ok(())
}

/// Inserts one message. A key already queued is a bug in the caller's key, not a retry: the
/// unique index turns it into an error that rolls the change back.
async fn enqueue(
    txn: &impl ConnectionTrait,
    notice: &Notice,
    recording_id: Option<Uuid>,
    idempotency_key: String,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(notice).map_err(|e| StoreError::Rule(format!("notice: {e}")))?;
    notification::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(notice.kind.as_str().to_owned()),
        meeting_id: Set(notice.meeting_id),
        recording_id: Set(recording_id),
        payload: Set(payload),
        status: Set("pending".into()),
        created_at: Set(now),
        recipient: Set(notice.to.email.clone()),
        idempotency_key: Set(idempotency_key),
        attempts: Set(0),
        run_after: Set(None),
        lease_owner: Set(None),
        lease_until: Set(None),
        last_error: Set(None),
        sent_at: Set(None),
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// A message a worker holds under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedNotification {
    pub id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub idempotency_key: String,
    /// The notice, or why the stored payload cannot be read (deliver nothing; fail it).
    pub notice: Result<Notice, String>,
    /// This attempt's number, from 1.
    pub attempt: i32,
    lease: String,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Queued again, not before this instant.
    Retrying(DateTime<Utc>),
    /// Given up: the message is `failed`.
    Failed,
    /// The lease had expired and another worker holds the message now: nothing was written.
    NotOurs,
}

/// One outbox row as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub kind: String,
    pub meeting_id: Uuid,
    pub recording_id: Option<Uuid>,
    pub recipient: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

enum Claim {
    Got(Box<ClaimedNotification>),
    Nothing,
    Lost,
}

impl Store {
    /// Leases the oldest due message to `owner` for `lease`. `None`: nothing is due.
    pub async fn claim_notification(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedNotification>, StoreError> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        // As `claim_job`: on SQLite another worker may win the compare-and-set, or hold the
        // write lock between our read and our write.
        for attempt in 0..8u64 {
            match self.try_claim_notification(owner, lease).await {
                Ok(Claim::Got(n)) => return Ok(Some(*n)),
                Ok(Claim::Nothing) => return Ok(None),
                Ok(Claim::Lost) => {}
                Err(e) if self.backend() == sea_orm::DbBackend::Sqlite && e.to_string().contains("locked") => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(5 + attempt * 10)).await;
        }
        Ok(None)
    }

    async fn try_claim_notification(&self, owner: &str, lease: chrono::Duration) -> Result<Claim, StoreError> {
        let now = Utc::now();
        let due = Condition::all()
            .add(notification::Column::Status.eq("pending"))
            .add(
                Condition::any()
                    .add(notification::Column::RunAfter.is_null())
                    .add(notification::Column::RunAfter.lte(now)),
            )
            .add(
                Condition::any()
                    .add(notification::Column::LeaseUntil.is_null())
                    .add(notification::Column::LeaseUntil.lt(now)),
            );
        let txn = self.db.begin().await?;
        let Some(row) = notification::Entity::find()
            .filter(due.clone())
            .order_by_asc(notification::Column::CreatedAt)
            .order_by_asc(notification::Column::Id)
            .limit(1)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .one(&txn)
            .await?
        else {
            return Ok(Claim::Nothing);
        };
        let token = format!("{owner}/{}", Uuid::new_v4());
        let res = notification::Entity::update_many()
            .col_expr(notification::Column::LeaseOwner, Expr::value(token.clone()))
            .col_expr(notification::Column::LeaseUntil, Expr::value(now + lease))
            .col_expr(notification::Column::Attempts, Expr::value(row.attempts + 1))
            .filter(notification::Column::Id.eq(row.id))
            .filter(notification::Column::Attempts.eq(row.attempts))
            .filter(due)
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(Claim::Lost);
        }
        txn.commit().await?;
        Ok(Claim::Got(Box::new(ClaimedNotification {
            id: row.id,
            notice: serde_json::from_str(&row.payload).map_err(|e| format!("unreadable payload: {e}")),
            kind: row.kind,
            recipient: row.recipient,
            idempotency_key: row.idempotency_key,
            attempt: row.attempts + 1,
            lease: token,
        })))
    }

    /// The message was delivered. `false`: the lease was no longer ours (another worker took
    /// it over and will deliver it again — the idempotency key lets the receiver drop that).
    pub async fn notification_sent(&self, n: &ClaimedNotification) -> Result<bool, StoreError> {
        let now = Utc::now();
        let res = notification::Entity::update_many()
            .col_expr(notification::Column::Status, Expr::value("sent"))
            .col_expr(notification::Column::SentAt, Expr::value(now))
            .col_expr(notification::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(notification::Column::LastError, Expr::value(Option::<String>::None))
            .filter(notification::Column::Id.eq(n.id))
            .filter(notification::Column::LeaseOwner.eq(n.lease.clone()))
            .filter(notification::Column::Status.eq("pending"))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// An attempt failed with `reason`: retried after `retry_in`, or — when `permanent` or out
    /// of attempts — `failed` for good with the reason.
    pub async fn notification_failed(
        &self,
        n: &ClaimedNotification,
        reason: &str,
        permanent: bool,
        retry_in: Duration,
    ) -> Result<DeliveryOutcome, StoreError> {
        let now = Utc::now();
        let give_up = permanent || n.attempt >= MAX_ATTEMPTS;
        let run_after = now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::seconds(60));
        let mut update = notification::Entity::update_many()
            .col_expr(notification::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(notification::Column::LastError, Expr::value(reason));
        update = if give_up {
            update.col_expr(notification::Column::Status, Expr::value("failed"))
        } else {
            update.col_expr(notification::Column::RunAfter, Expr::value(run_after))
        };
        let res = update
            .filter(notification::Column::Id.eq(n.id))
            .filter(notification::Column::LeaseOwner.eq(n.lease.clone()))
            .filter(notification::Column::Status.eq("pending"))
            .exec(&self.db)
            .await?;
        Ok(match (res.rows_affected, give_up) {
            (0, _) => DeliveryOutcome::NotOurs,
            (_, true) => DeliveryOutcome::Failed,
            (_, false) => DeliveryOutcome::Retrying(run_after),
        })
    }

    /// Every message about a meeting, oldest first.
    pub async fn notifications_of_meeting(&self, meeting_id: Uuid) -> Result<Vec<NotificationRecord>, StoreError> {
        Ok(notification::Entity::find()
            .filter(notification::Column::MeetingId.eq(meeting_id))
            .order_by_asc(notification::Column::CreatedAt)
            .order_by_asc(notification::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|n| NotificationRecord {
                next_attempt_at: if n.status == "pending" { n.run_after } else { None },
                id: n.id,
                kind: n.kind,
                meeting_id: n.meeting_id,
                recording_id: n.recording_id,
                recipient: n.recipient,
                status: n.status,
                attempts: n.attempts,
                last_error: n.last_error,
                idempotency_key: n.idempotency_key,
                created_at: n.created_at,
                sent_at: n.sent_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_fourfold_and_is_capped() {
        let base = Duration::from_secs(2);
        let secs: Vec<u64> = (1..=6).map(|a| backoff(base, a).as_secs()).collect();
        assert_eq!(secs, vec![2, 8, 32, 128, 512, 600]);
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, i32::MAX), MAX_BACKOFF);
    }
}
