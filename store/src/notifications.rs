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
//! Reminders: [`Store::plan_reminders`] runs on every node; a meeting whose `remind_at` has
//! come is claimed by clearing it (a compare-and-set: one node wins) and its reminders are
//! queued in the same transaction, one per invitee, keyed by the occurrence's start.
//!
//! Webhooks: [`webhook_events`] queues one row per subscribed endpoint of an event (meeting
//! started or ended, participant joined or left, recording ready), also in the transaction of
//! the change. A webhook row is claimable only when no earlier row for the same meeting and
//! endpoint is still pending, so each endpoint sees a meeting's events in order — a retrying
//! event holds back the ones after it.
//!
//! Delivering: [`Store::claim_notification`] leases the oldest due message (PostgreSQL skips
//! rows other workers hold; on SQLite a compare-and-set decides), then the worker reports
//! [`Store::notification_sent`] or [`Store::notification_failed`]; a lease that expires (the
//! worker died) makes the message claimable again. After [`MAX_ATTEMPTS`], or at once for a
//! permanent failure (the recipient's server refused the address), the message is `failed`
//! with the reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use parley_core::meeting::Attendance;
use parley_core::model::Role;
use parley_core::model::{InviteStatus, MeetingStatus};
use parley_core::notice::{
    Attendee, CalendarEvent, CalendarMethod, Notice, NoticeKind, Person, RecordingFacts, WebhookEvent, WebhookKind,
    WebhookMeeting, WebhookParticipant,
};
use parley_schema::{meeting, meeting_participant, notification, user};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

use crate::users::corrupt;
use crate::{Claim, Store, StoreError};

/// `notifications.channel` of a notice to an email address.
pub const CHANNEL_EMAIL: &str = "email";
/// `notifications.channel` of an event to a webhook endpoint.
pub const CHANNEL_WEBHOOK: &str = "webhook";

/// An endpoint that receives webhook events, and which. Its signing secret stays with the
/// nodes' configuration: the outbox names the endpoint by its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRoute {
    pub url: String,
    pub events: Vec<WebhookKind>,
}

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

/// The people of a meeting: the host and everybody invited, with their roles (and, for
/// reminders, who declined).
async fn people(db: &impl ConnectionTrait, meeting_id: Uuid) -> Result<Vec<(Person, Role)>, StoreError> {
    Ok(people_with_answers(db, meeting_id).await?.into_iter().map(|(p, r, _)| (p, r)).collect())
}

async fn people_with_answers(
    db: &impl ConnectionTrait,
    meeting_id: Uuid,
) -> Result<Vec<(Person, Role, InviteStatus)>, StoreError> {
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
        let answer: InviteStatus = p.invite_status.parse().map_err(corrupt)?;
        out.push((Person { name: u.map(|u| u.display_name).unwrap_or_default(), email: p.email }, role, answer));
    }
    out.sort_by_key(|(_, r, _)| *r != Role::Host);
    Ok(out)
}

fn host_of(people: &[(Person, Role)]) -> Result<Person, StoreError> {
    people.iter().find(|(_, r)| *r == Role::Host).map(|(p, _)| p.clone()).ok_or(StoreError::NotFound("meeting host"))
}

/// A notice about meeting `m` to `to`, as `m` is now.
fn notice_about(
    kind: NoticeKind,
    m: &meeting::Model,
    to: &Person,
    host: &Person,
    event: Option<CalendarEvent>,
    recording: Option<RecordingFacts>,
) -> Notice {
    Notice {
        kind,
        meeting_id: m.id,
        title: m.title.clone(),
        start: m.scheduled_time,
        timezone: m.timezone.clone(),
        duration_minutes: m.duration_minutes,
        to: to.clone(),
        host: host.clone(),
        event,
        recording,
    }
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
        let notice = notice_about(kind, m, person, &host, Some(event.clone()), None);
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
        let notice = notice_about(kind, &m, person, &host, None, Some(facts.clone()));
        let key = format!("{kind}:{}:{}", facts.recording_id, person.email);
        enqueue(txn, &notice, Some(facts.recording_id), key, now).await?;
    }
    Ok(())
}

/// Queues a reminder of meeting `m` (as it is now: its start and title) to each of its people
/// who has not declined — the host too. The key names the start, so a meeting moved back to a
/// time it was already reminded for is not reminded twice; nothing else can repeat a key, and a
/// repeat is skipped, not an error.
async fn reminder_notices(
    txn: &impl ConnectionTrait,
    m: &meeting::Model,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let people = people_with_answers(txn, m.id).await?;
    let host = people
        .iter()
        .find(|(_, r, _)| *r == Role::Host)
        .map(|(p, _, _)| p.clone())
        .ok_or(StoreError::NotFound("meeting host"))?;
    let start = m.scheduled_time.format("%Y%m%dT%H%M%SZ");
    let mut queued = 0;
    for (person, _, answer) in &people {
        if *answer == InviteStatus::Declined {
            continue;
        }
        let notice = notice_about(NoticeKind::Reminder, m, person, &host, None, None);
        let key = format!("reminder:{}:{start}:{}", m.id, person.email);
        queued += insert_row(txn, email_row(&notice, None, key, now)?).await?;
    }
    Ok(queued)
}

/// Closes the reminders of `meetings` not delivered yet (waiting for a retry, say): they were
/// cancelled, or moved to a time the next plan reminds of. `why` is kept as the reason.
pub(crate) async fn drop_pending_reminders(
    txn: &impl ConnectionTrait,
    meetings: Vec<Uuid>,
    why: &str,
) -> Result<u64, StoreError> {
    if meetings.is_empty() {
        return Ok(0);
    }
    let res = notification::Entity::update_many()
        .col_expr(notification::Column::Status, Expr::value("failed"))
        .col_expr(notification::Column::LastError, Expr::value(why))
        .col_expr(notification::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(notification::Column::MeetingId.is_in(meetings))
        .filter(notification::Column::Kind.eq(NoticeKind::Reminder.as_str()))
        .filter(notification::Column::Status.eq("pending"))
        .exec(txn)
        .await?;
    Ok(res.rows_affected)
}

/// Queues `event` to every endpoint of `routes` that subscribes to it (none: nothing is
/// written). The key is the event's id and the endpoint, so writing the same event again (a
/// live meeting repeating a write whose commit it did not see) queues nothing new.
pub(crate) async fn webhook_events(
    txn: &impl ConnectionTrait,
    routes: &[WebhookRoute],
    event: &WebhookEvent,
    recording_id: Option<Uuid>,
) -> Result<usize, StoreError> {
    let mut queued = 0;
    for route in routes.iter().filter(|r| r.events.contains(&event.event)) {
        let key = format!("webhook:{}:{:016x}", event.id, fnv1a(route.url.as_bytes()));
        let r = row(
            CHANNEL_WEBHOOK,
            event.event.as_str(),
            event.meeting.id,
            recording_id,
            route.url.clone(),
            event,
            key,
            event.created_at,
        )?;
        queued += insert_row(txn, r).await?;
    }
    Ok(queued)
}

/// A short, stable name of an endpoint for idempotency keys (which must stay short; a URL
/// need not be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The webhook event about meeting `m` (the title as it is now).
pub(crate) fn webhook_event(kind: WebhookKind, id: Uuid, m: &meeting::Model, at: DateTime<Utc>) -> WebhookEvent {
    WebhookEvent {
        id,
        event: kind,
        created_at: at,
        meeting: WebhookMeeting { id: m.id, title: m.title.clone() },
        participant: None,
        recording: None,
        duration_seconds: None,
    }
}

/// One outbox row, pending.
#[allow(clippy::too_many_arguments)]
fn row(
    channel: &str,
    kind: &str,
    meeting_id: Uuid,
    recording_id: Option<Uuid>,
    recipient: String,
    payload: &impl Serialize,
    idempotency_key: String,
    now: DateTime<Utc>,
) -> Result<notification::ActiveModel, StoreError> {
    let payload = serde_json::to_string(payload).map_err(|e| StoreError::Rule(format!("{kind}: {e}")))?;
    Ok(notification::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel: Set(channel.to_owned()),
        kind: Set(kind.to_owned()),
        meeting_id: Set(meeting_id),
        recording_id: Set(recording_id),
        payload: Set(payload),
        status: Set("pending".into()),
        created_at: Set(now),
        recipient: Set(recipient),
        idempotency_key: Set(idempotency_key),
        attempts: Set(0),
        run_after: Set(None),
        lease_owner: Set(None),
        lease_until: Set(None),
        last_error: Set(None),
        sent_at: Set(None),
    })
}

/// Inserts a row unless its idempotency key is already queued: 1 if inserted, else 0.
async fn insert_row(txn: &impl ConnectionTrait, r: notification::ActiveModel) -> Result<usize, StoreError> {
    let res = notification::Entity::insert(r)
        .on_conflict(OnConflict::column(notification::Column::IdempotencyKey).do_nothing().to_owned())
        .exec_without_returning(txn)
        .await?;
    Ok(res as usize)
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
    email_row(notice, recording_id, idempotency_key, now)?.insert(txn).await?;
    Ok(())
}

/// The outbox row of an email notice to its addressee.
fn email_row(
    notice: &Notice,
    recording_id: Option<Uuid>,
    idempotency_key: String,
    now: DateTime<Utc>,
) -> Result<notification::ActiveModel, StoreError> {
    let to = notice.to.email.clone();
    row(CHANNEL_EMAIL, notice.kind.as_str(), notice.meeting_id, recording_id, to, notice, idempotency_key, now)
}

/// What a claimed row asks to deliver.
#[derive(Debug, Clone)]
pub enum Message {
    /// An email to `recipient`.
    Email(Box<Notice>),
    /// A POST of `body` (the stored JSON, exactly) to the webhook endpoint `recipient`.
    Webhook { body: String },
}

/// A message a worker holds under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedNotification {
    pub id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub idempotency_key: String,
    /// The message, or why the stored row cannot be read (deliver nothing; fail it).
    pub message: Result<Message, String>,
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
    /// `email` or `webhook`.
    pub channel: String,
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

impl Store {
    /// Leases the oldest due message to `owner` for `lease`. `None`: nothing is due.
    pub async fn claim_notification(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedNotification>, StoreError> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        self.retry_claim(|| self.try_claim_notification(owner, lease)).await
    }

    async fn try_claim_notification(
        &self,
        owner: &str,
        lease: chrono::Duration,
    ) -> Result<Claim<ClaimedNotification>, StoreError> {
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
        // A webhook event waits for the earlier events of its meeting to the same endpoint.
        let in_order = Expr::cust(
            "(notifications.channel <> 'webhook' OR NOT EXISTS (SELECT 1 FROM notifications AS earlier \
             WHERE earlier.channel = 'webhook' AND earlier.status = 'pending' \
             AND earlier.meeting_id = notifications.meeting_id AND earlier.recipient = notifications.recipient \
             AND (earlier.created_at < notifications.created_at \
             OR (earlier.created_at = notifications.created_at AND earlier.id < notifications.id))))",
        );
        let txn = self.db.begin().await?;
        let Some(row) = notification::Entity::find()
            .filter(due.clone())
            .filter(in_order)
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
        let message = match row.channel.as_str() {
            CHANNEL_EMAIL => serde_json::from_str::<Notice>(&row.payload)
                .map(|n| Message::Email(Box::new(n)))
                .map_err(|e| format!("unreadable payload: {e}")),
            CHANNEL_WEBHOOK => Ok(Message::Webhook { body: row.payload }),
            other => Err(format!("unknown channel `{other}`")),
        };
        Ok(Claim::Got(ClaimedNotification {
            id: row.id,
            message,
            kind: row.kind,
            recipient: row.recipient,
            idempotency_key: row.idempotency_key,
            attempt: row.attempts + 1,
            lease: token,
        }))
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

    /// Queues the reminders that are due: of every scheduled meeting whose `remind_at` has come
    /// and which has not started. Every node may call this at once: each meeting is taken by
    /// one of them (clearing `remind_at` if it is still what was read), with its reminders in
    /// the same transaction. Returns the reminders queued by this call.
    pub async fn plan_reminders(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let due = meeting::Entity::find()
            .filter(meeting::Column::RemindAt.lte(now))
            .filter(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
            .order_by_asc(meeting::Column::RemindAt)
            .limit(200)
            .all(&self.db)
            .await?;
        let mut queued = 0;
        for m in due {
            let txn = self.db.begin().await?;
            let took = meeting::Entity::update_many()
                .col_expr(meeting::Column::RemindAt, Expr::value(Option::<DateTime<Utc>>::None))
                .filter(meeting::Column::Id.eq(m.id))
                .filter(meeting::Column::RemindAt.eq(m.remind_at))
                .filter(meeting::Column::ScheduledTime.eq(m.scheduled_time))
                .filter(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
                .exec(&txn)
                .await?;
            if took.rows_affected == 0 {
                // Another node took it, or it changed since we read it (its next scan sees it).
                txn.rollback().await?;
                continue;
            }
            // Too late to remind: it should have started already (the nodes were all down).
            let n = if m.scheduled_time > now { reminder_notices(&txn, &m, now).await? } else { 0 };
            txn.commit().await?;
            if n > 0 {
                tracing::info!(meeting_id = %m.id, reminders = n, "reminders queued");
            }
            queued += n;
        }
        Ok(queued)
    }

    /// Whether any webhook wants to hear who joins and leaves meetings.
    pub fn wants_attendance(&self) -> bool {
        self.webhooks.iter().any(|r| {
            r.events.iter().any(|e| matches!(e, WebhookKind::ParticipantJoined | WebhookKind::ParticipantLeft))
        })
    }

    /// Queues a `participant.joined` / `participant.left` event of a live meeting, written by
    /// its owner holding `epoch`. `id` names the event: writing it again queues nothing new.
    #[tracing::instrument(name = "db.record_attendance", skip_all)]
    pub async fn record_attendance(
        &self,
        meeting_id: Uuid,
        epoch: i64,
        id: Uuid,
        at: DateTime<Utc>,
        a: &Attendance,
    ) -> Result<(), StoreError> {
        let kind = if a.left.is_some() { WebhookKind::ParticipantLeft } else { WebhookKind::ParticipantJoined };
        if !self.webhooks.iter().any(|r| r.events.contains(&kind)) {
            return Ok(());
        }
        let txn = self.db.begin().await?;
        Self::check_epoch(&txn, meeting_id, epoch).await?;
        let m = meeting::Entity::find_by_id(meeting_id).one(&txn).await?.ok_or(StoreError::NotFound("meeting"))?;
        let mut event = webhook_event(kind, id, &m, at);
        event.participant = Some(WebhookParticipant {
            user_id: a.user_id,
            display_name: a.display_name.clone(),
            role: a.role.as_str().to_owned(),
            reason: a.left.and_then(|r| serde_json::to_value(r).ok()).and_then(|v| v.as_str().map(str::to_owned)),
        });
        webhook_events(&txn, &self.webhooks, &event, None).await?;
        txn.commit().await?;
        Ok(())
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
                channel: n.channel,
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
