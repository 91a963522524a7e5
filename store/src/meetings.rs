//! Meetings: the transactional create, reads, host-only updates and cancellation.
//!
//! Creation is ONE transaction (seed FLOW 1): the series (if recurring), a meeting row per
//! occurrence, the pending users for unknown invitee emails, every participant row and every
//! occurrence row either all commit or none do. Invitees are validated inside the transaction,
//! in order, so an invalid one half-way down the list rolls back the pending users already
//! created for the ones before it. The invitations go into the notification outbox in the same
//! transaction (see [`crate::notifications`]), as do the updates and cancellations that later
//! changes send: a change nobody is told about cannot commit, nor a message about one that did not.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use parley_core::model::{InviteStatus, MeetingSettings, MeetingSettingsPatch, MeetingStatus, MeetingType, Role};
use parley_core::notice::{self, CalendarMethod, NoticeKind};
use parley_core::recurrence::{RecurrenceRule, SeriesEnd};
use parley_core::validate;
use parley_schema::{meeting, meeting_participant, recurring_occurrence, recurring_series, user};
use sea_orm::sea_query::Expr;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

use crate::notifications::{EventScope, drop_pending_reminders, event_notices};
use crate::users::{corrupt, find_or_invite};
use crate::{Store, StoreError};

/// Rows per multi-row INSERT (well under PostgreSQL's 65,535 bind parameters).
const INSERT_CHUNK: usize = 1000;

/// An invitee as given by the API: the email is validated inside the transaction.
#[derive(Debug, Clone)]
pub struct Invitee {
    pub email: String,
    pub role: Role,
}

/// A recurring series to create: the rule and the instants it expanded to.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    pub rule: RecurrenceRule,
    pub occurrences: Vec<DateTime<Utc>>,
}

/// Everything needed to create a meeting (already validated, except invitee emails).
#[derive(Debug, Clone)]
pub struct NewMeeting {
    pub host: Uuid,
    pub title: String,
    pub meeting_type: MeetingType,
    pub scheduled_time: DateTime<Utc>,
    pub duration_minutes: i32,
    pub timezone: String,
    pub password_hash: Option<String>,
    pub settings: MeetingSettings,
    pub invitees: Vec<Invitee>,
    pub series: Option<SeriesPlan>,
}

/// A meeting as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meeting {
    pub meeting_id: Uuid,
    pub host_user_id: Uuid,
    pub title: String,
    pub meeting_type: MeetingType,
    pub scheduled_time: DateTime<Utc>,
    pub duration_minutes: i32,
    pub timezone: String,
    pub has_password: bool,
    pub settings: MeetingSettings,
    pub status: MeetingStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub actual_duration_seconds: Option<i64>,
    pub assigned_node: Option<String>,
    pub series_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<meeting::Model> for Meeting {
    type Error = StoreError;
    fn try_from(m: meeting::Model) -> Result<Self, StoreError> {
        Ok(Meeting {
            meeting_id: m.id,
            host_user_id: m.host_user_id,
            meeting_type: m.meeting_type.parse().map_err(corrupt)?,
            status: m.status.parse().map_err(corrupt)?,
            settings: MeetingSettings {
                waiting_room: m.waiting_room_enabled,
                recording_allowed: m.recording_allowed,
                mute_on_entry: m.mute_on_entry,
                video_on_entry: m.video_on_entry,
                screen_share: m.screen_share.parse().map_err(corrupt)?,
                share_recordings: m.share_recordings,
                reminder_minutes: u16::try_from(m.reminder_minutes).map_err(corrupt)?,
            },
            has_password: m.password_hash.is_some(),
            title: m.title,
            scheduled_time: m.scheduled_time,
            duration_minutes: m.duration_minutes,
            timezone: m.timezone,
            started_at: m.started_at,
            ended_at: m.ended_at,
            actual_duration_seconds: m.actual_duration_seconds,
            assigned_node: m.assigned_node,
            series_id: m.series_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

/// One invited person (the host included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub invite_status: InviteStatus,
}

/// A meeting with its host's name, its participants and, for an occurrence, whether it was
/// changed on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeetingDetails {
    #[serde(flatten)]
    pub meeting: Meeting,
    pub host_display_name: String,
    pub participants: Vec<Participant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_exception: Option<bool>,
}

impl MeetingDetails {
    /// The caller's role in this meeting, if invited (the host is always a participant).
    pub fn role_of(&self, user: Uuid) -> Option<Role> {
        self.participants.iter().find(|p| p.user_id == user).map(|p| p.role)
    }
}

/// A reference to one occurrence of a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OccurrenceRef {
    pub meeting_id: Uuid,
    pub scheduled_time: DateTime<Utc>,
}

/// What creating a meeting produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreatedMeeting {
    #[serde(flatten)]
    pub first: MeetingDetails,
    /// Every occurrence, first included; empty for a one-off meeting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub occurrences: Vec<OccurrenceRef>,
}

/// A host's change to a meeting. `password: Some(None)` removes the password.
#[derive(Debug, Clone, Default)]
pub struct MeetingPatch {
    pub title: Option<String>,
    pub scheduled_time: Option<DateTime<Utc>>,
    pub duration_minutes: Option<i32>,
    pub timezone: Option<String>,
    pub password_hash: Option<Option<String>>,
    pub settings: MeetingSettingsPatch,
}

/// One occurrence in a series listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesOccurrence {
    pub meeting_id: Uuid,
    /// Where the rule put it.
    pub occurrence_time: DateTime<Utc>,
    /// Where it is now (differs once moved).
    pub scheduled_time: DateTime<Utc>,
    pub status: MeetingStatus,
    pub is_exception: bool,
}

/// A recurring series and its occurrences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    pub series_id: Uuid,
    pub host_user_id: Uuid,
    pub frequency: String,
    pub interval: i32,
    pub days: Vec<String>,
    pub until: Option<NaiveDate>,
    pub count: Option<i32>,
    pub timezone: String,
    pub local_start_time: String,
    pub occurrences: Vec<SeriesOccurrence>,
}

impl Store {
    /// Creates a meeting (or a whole recurring series) in one transaction.
    pub async fn create_meeting(&self, new: NewMeeting) -> Result<CreatedMeeting, StoreError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let host = user::Entity::find_by_id(new.host).one(&txn).await?.ok_or(StoreError::NotFound("host user"))?;

        let series_id = match &new.series {
            Some(plan) => Some(insert_series(&txn, &new, plan, now).await?),
            None => None,
        };
        let times: Vec<DateTime<Utc>> = match &new.series {
            Some(plan) => plan.occurrences.clone(),
            None => vec![new.scheduled_time],
        };

        // Invitees, in order, validated as we go: an invalid one rolls back everything above.
        let mut seen = HashSet::from([host.id]);
        let mut invited: Vec<(user::Model, Role)> = Vec::with_capacity(new.invitees.len());
        for (i, inv) in new.invitees.iter().enumerate() {
            let field = format!("participants[{i}].email");
            let email = validate::email(&field, &inv.email)?;
            if inv.role == Role::Host {
                return Err(StoreError::Rule(format!(
                    "participants[{i}].role: the creator is the meeting's only host"
                )));
            }
            let u = find_or_invite(&txn, &email).await?;
            if !seen.insert(u.id) {
                return Err(StoreError::Rule(format!("participants[{i}]: {email} is listed twice (or is the host)")));
            }
            invited.push((u, inv.role));
        }

        let mut occurrences = Vec::new();
        let mut first_id = None;
        for at in &times {
            let id = Uuid::now_v7();
            first_id.get_or_insert(id);
            meeting_active_model(&new, id, *at, series_id, now).insert(&txn).await?;
            let mut rows = vec![participant_row(id, &host, Role::Host, InviteStatus::Accepted, *at, now)];
            rows.extend(invited.iter().map(|(u, r)| participant_row(id, u, *r, InviteStatus::Pending, *at, now)));
            for chunk in rows.chunks(INSERT_CHUNK) {
                meeting_participant::Entity::insert_many(chunk.to_vec()).exec(&txn).await?;
            }
            if let Some(series_id) = series_id {
                recurring_occurrence::ActiveModel {
                    series_id: Set(series_id),
                    meeting_id: Set(id),
                    occurrence_time: Set(*at),
                    is_exception: Set(false),
                }
                .insert(&txn)
                .await?;
                occurrences.push(OccurrenceRef { meeting_id: id, scheduled_time: *at });
            }
        }
        let first_id = first_id.ok_or_else(|| StoreError::Rule("the meeting has no occurrence".into()))?;
        let first = details(&txn, first_id).await?.ok_or(StoreError::NotFound("meeting"))?;
        let first_row =
            meeting::Entity::find_by_id(first_id).one(&txn).await?.ok_or(StoreError::NotFound("meeting"))?;
        let scope = match (&new.series, series_id) {
            (Some(plan), Some(series_id)) => EventScope::Series {
                series_id,
                rrule: Some(notice::rrule(&plan.rule, &plan.occurrences)),
                exdates: Vec::new(),
            },
            _ => EventScope::Meeting,
        };
        event_notices(&txn, NoticeKind::Invitation, CalendarMethod::Request, &first_row, scope, 0, now).await?;
        txn.commit().await?;
        Ok(CreatedMeeting { first, occurrences })
    }

    /// A meeting with its participants, or `None`.
    pub async fn meeting(&self, id: Uuid) -> Result<Option<MeetingDetails>, StoreError> {
        details(&self.db, id).await
    }

    /// Applies a host's change. Moving an occurrence marks it as an exception of its series;
    /// moving any meeting moves its participants' denormalised `scheduled_time` with it. A
    /// change a calendar shows (title, time, duration, zone) sends every invitee an update.
    pub async fn update_meeting(
        &self,
        id: Uuid,
        caller: Uuid,
        patch: MeetingPatch,
    ) -> Result<MeetingDetails, StoreError> {
        let txn = self.db.begin().await?;
        let m = host_owned(&txn, id, caller).await?;
        let status: MeetingStatus = m.status.parse().map_err(corrupt)?;
        if matches!(status, MeetingStatus::Ended | MeetingStatus::Cancelled) {
            return Err(StoreError::Rule(format!("the meeting is {status}; it can no longer be changed")));
        }
        let moved = patch.scheduled_time.filter(|t| *t != m.scheduled_time);
        if moved.is_some() && status != MeetingStatus::Scheduled {
            return Err(StoreError::Rule("a meeting that has started cannot be rescheduled".into()));
        }
        // The meeting as changed must end by the last instant the API can write back.
        let start = moved.unwrap_or(m.scheduled_time);
        let minutes = patch.duration_minutes.unwrap_or(m.duration_minutes);
        let end = start.checked_add_signed(chrono::Duration::minutes(i64::from(minutes)));
        if end.is_none_or(|e| parley_core::validate::instant("scheduled_time", e).is_err()) {
            return Err(StoreError::Rule("the meeting would end after the year 9999".into()));
        }
        let mut settings = Meeting::try_from(m.clone())?.settings;
        let old_lead = settings.reminder_minutes;
        patch.settings.apply(&mut settings);
        // Moved, or a new lead time: the reminders are planned again (a meeting already
        // reminded for this start is not reminded twice: see `reminder_notices`).
        let replan = moved.is_some() || settings.reminder_minutes != old_lead;
        let series_id = m.series_id;
        let calendar_changed = moved.is_some()
            || patch.title.as_ref().is_some_and(|t| *t != m.title)
            || patch.duration_minutes.is_some_and(|d| d != m.duration_minutes)
            || patch.timezone.as_ref().is_some_and(|tz| *tz != m.timezone);
        let old_sequence = m.ics_sequence;
        let mut am = m.into_active_model();
        if let Some(t) = patch.title {
            am.title = Set(t);
        }
        if let Some(t) = moved {
            am.scheduled_time = Set(t);
        }
        if let Some(d) = patch.duration_minutes {
            am.duration_minutes = Set(d);
        }
        if let Some(tz) = patch.timezone {
            am.timezone = Set(tz);
        }
        if let Some(p) = patch.password_hash {
            am.password_hash = Set(p);
        }
        set_settings(&mut am, &settings);
        if replan {
            am.remind_at = Set(remind_at(start, &settings));
        }
        let now = Utc::now();
        am.updated_at = Set(now);
        if calendar_changed && series_id.is_none() {
            am.ics_sequence = Set(old_sequence + 1);
        }
        let updated = am.update(&txn).await?;
        if moved.is_some() {
            drop_pending_reminders(&txn, vec![id], "the meeting moved; it is reminded of its new time").await?;
        }
        if let Some(t) = moved {
            meeting_participant::Entity::update_many()
                .col_expr(meeting_participant::Column::ScheduledTime, Expr::value(t))
                .filter(meeting_participant::Column::MeetingId.eq(id))
                .exec(&txn)
                .await?;
            if series_id.is_some() {
                mark_exception(&txn, id).await?;
            }
        }
        if calendar_changed {
            let (scope, sequence) = calendar_scope(&txn, &updated).await?;
            event_notices(&txn, NoticeKind::Update, CalendarMethod::Request, &updated, scope, sequence, now).await?;
        }
        let d = details(&txn, id).await?.ok_or(StoreError::NotFound("meeting"))?;
        txn.commit().await?;
        Ok(d)
    }

    /// Cancels a meeting that has not started (idempotent). Cancelling an occurrence marks it
    /// as an exception and leaves the rest of its series alone. Invitees are sent a
    /// cancellation (of that one occurrence, for a series).
    pub async fn cancel_meeting(&self, id: Uuid, caller: Uuid) -> Result<MeetingDetails, StoreError> {
        let txn = self.db.begin().await?;
        let m = host_owned(&txn, id, caller).await?;
        let status: MeetingStatus = m.status.parse().map_err(corrupt)?;
        match status {
            MeetingStatus::Cancelled => {}
            MeetingStatus::Scheduled => {
                let series_id = m.series_id;
                let now = Utc::now();
                let mut am = m.clone().into_active_model();
                am.status = Set(MeetingStatus::Cancelled.as_str().to_owned());
                am.remind_at = Set(None);
                am.updated_at = Set(now);
                if series_id.is_none() {
                    am.ics_sequence = Set(m.ics_sequence + 1);
                }
                let updated = am.update(&txn).await?;
                if series_id.is_some() {
                    mark_exception(&txn, id).await?;
                }
                drop_pending_reminders(&txn, vec![id], "the meeting was cancelled").await?;
                let (scope, sequence) = calendar_scope(&txn, &updated).await?;
                event_notices(&txn, NoticeKind::Cancellation, CalendarMethod::Cancel, &updated, scope, sequence, now)
                    .await?;
            }
            MeetingStatus::Active => return Err(StoreError::Rule("the meeting is live; end it instead".into())),
            MeetingStatus::Ended => return Err(StoreError::Rule("the meeting has already ended".into())),
        }
        let d = details(&txn, id).await?.ok_or(StoreError::NotFound("meeting"))?;
        txn.commit().await?;
        Ok(d)
    }

    /// A series and all its occurrences, soonest first. Visible to its host only.
    pub async fn series(&self, id: Uuid, caller: Uuid) -> Result<Series, StoreError> {
        let s = recurring_series::Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound("series"))?;
        if s.host_user_id != caller {
            return Err(StoreError::Forbidden("only the host may see a series"));
        }
        let rows = recurring_occurrence::Entity::find()
            .filter(recurring_occurrence::Column::SeriesId.eq(id))
            .find_also_related(meeting::Entity)
            .order_by_asc(recurring_occurrence::Column::OccurrenceTime)
            .all(&self.db)
            .await?;
        let mut occurrences = Vec::with_capacity(rows.len());
        for (o, m) in rows {
            let m = m.ok_or(StoreError::NotFound("occurrence meeting"))?;
            occurrences.push(SeriesOccurrence {
                meeting_id: o.meeting_id,
                occurrence_time: o.occurrence_time,
                scheduled_time: m.scheduled_time,
                status: m.status.parse().map_err(corrupt)?,
                is_exception: o.is_exception,
            });
        }
        Ok(Series {
            series_id: s.id,
            host_user_id: s.host_user_id,
            frequency: s.frequency,
            interval: s.interval,
            days: s.days.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect(),
            until: s.until_date,
            count: s.occurrence_count,
            timezone: s.timezone,
            local_start_time: s.local_start_time,
            occurrences,
        })
    }

    /// Cancels every occurrence of a series that has not started yet. Returns how many. If any
    /// was, invitees are sent one cancellation of the whole series.
    pub async fn cancel_series(&self, id: Uuid, caller: Uuid) -> Result<u64, StoreError> {
        let txn = self.db.begin().await?;
        let s = recurring_series::Entity::find_by_id(id).one(&txn).await?.ok_or(StoreError::NotFound("series"))?;
        if s.host_user_id != caller {
            return Err(StoreError::Forbidden("only the host may cancel a series"));
        }
        let now = Utc::now();
        let cancelled: Vec<Uuid> = meeting::Entity::find()
            .select_only()
            .column(meeting::Column::Id)
            .filter(meeting::Column::SeriesId.eq(id))
            .filter(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
            .into_tuple()
            .all(&txn)
            .await?;
        drop_pending_reminders(&txn, cancelled, "the meeting was cancelled").await?;
        let res = meeting::Entity::update_many()
            .col_expr(meeting::Column::Status, Expr::value(MeetingStatus::Cancelled.as_str()))
            .col_expr(meeting::Column::RemindAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(meeting::Column::UpdatedAt, Expr::value(now))
            .filter(meeting::Column::SeriesId.eq(id))
            .filter(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
            .exec(&txn)
            .await?;
        let first = meeting::Entity::find()
            .filter(meeting::Column::SeriesId.eq(id))
            .order_by_asc(meeting::Column::ScheduledTime)
            .one(&txn)
            .await?;
        if let (true, Some(first)) = (res.rows_affected > 0, first) {
            let sequence = bump_series_sequence(&txn, &s).await?;
            let scope = EventScope::Series { series_id: id, rrule: None, exdates: Vec::new() };
            event_notices(&txn, NoticeKind::Cancellation, CalendarMethod::Cancel, &first, scope, sequence, now).await?;
        }
        txn.commit().await?;
        Ok(res.rows_affected)
    }
}

/// Loads a meeting that `caller` hosts: `NotFound` if absent, `Forbidden` if not theirs.
async fn host_owned(db: &impl ConnectionTrait, id: Uuid, caller: Uuid) -> Result<meeting::Model, StoreError> {
    let m = meeting::Entity::find_by_id(id).one(db).await?.ok_or(StoreError::NotFound("meeting"))?;
    if m.host_user_id != caller {
        return Err(StoreError::Forbidden("only the host may change this meeting"));
    }
    Ok(m)
}

/// Which calendar event a change to `m` is about, and its new `SEQUENCE`: the meeting itself
/// (its sequence was already bumped on the row), or — for an occurrence — that instance of its
/// series (bumping the series' sequence, which every message about the series shares).
async fn calendar_scope(txn: &impl ConnectionTrait, m: &meeting::Model) -> Result<(EventScope, i32), StoreError> {
    let Some(series_id) = m.series_id else {
        return Ok((EventScope::Meeting, m.ics_sequence));
    };
    let s = recurring_series::Entity::find_by_id(series_id).one(txn).await?.ok_or(StoreError::NotFound("series"))?;
    let original = recurring_occurrence::Entity::find()
        .filter(recurring_occurrence::Column::MeetingId.eq(m.id))
        .one(txn)
        .await?
        .map(|o| o.occurrence_time)
        .ok_or(StoreError::NotFound("occurrence"))?;
    let sequence = bump_series_sequence(txn, &s).await?;
    Ok((EventScope::Occurrence { series_id, original }, sequence))
}

async fn bump_series_sequence(txn: &impl ConnectionTrait, s: &recurring_series::Model) -> Result<i32, StoreError> {
    let next = s.ics_sequence + 1;
    recurring_series::Entity::update_many()
        .col_expr(recurring_series::Column::IcsSequence, Expr::value(next))
        .filter(recurring_series::Column::Id.eq(s.id))
        .exec(txn)
        .await?;
    Ok(next)
}

async fn mark_exception(db: &impl ConnectionTrait, meeting_id: Uuid) -> Result<(), StoreError> {
    recurring_occurrence::Entity::update_many()
        .col_expr(recurring_occurrence::Column::IsException, Expr::value(true))
        .filter(recurring_occurrence::Column::MeetingId.eq(meeting_id))
        .exec(db)
        .await?;
    Ok(())
}

async fn details(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<MeetingDetails>, StoreError> {
    let Some((m, host)) = meeting::Entity::find_by_id(id).find_also_related(user::Entity).one(db).await? else {
        return Ok(None);
    };
    let host = host.ok_or(StoreError::NotFound("host user"))?;
    let is_exception = match m.series_id {
        Some(_) => recurring_occurrence::Entity::find()
            .filter(recurring_occurrence::Column::MeetingId.eq(id))
            .one(db)
            .await?
            .map(|o| o.is_exception),
        None => None,
    };
    let rows = meeting_participant::Entity::find()
        .filter(meeting_participant::Column::MeetingId.eq(id))
        .find_also_related(user::Entity)
        .order_by_asc(meeting_participant::Column::InvitedAt)
        .order_by_asc(meeting_participant::Column::Email)
        .all(db)
        .await?;
    let mut participants = Vec::with_capacity(rows.len());
    for (p, u) in rows {
        participants.push(Participant {
            user_id: p.user_id,
            display_name: u.map(|u| u.display_name).unwrap_or_default(),
            role: p.role.parse().map_err(corrupt)?,
            invite_status: p.invite_status.parse().map_err(corrupt)?,
            email: p.email,
        });
    }
    // The host first, then everybody else in invitation order.
    participants.sort_by_key(|p| p.role != Role::Host);
    Ok(Some(MeetingDetails {
        meeting: m.try_into()?,
        host_display_name: host.display_name,
        participants,
        is_exception,
    }))
}

async fn insert_series(
    txn: &impl ConnectionTrait,
    new: &NewMeeting,
    plan: &SeriesPlan,
    now: DateTime<Utc>,
) -> Result<Uuid, StoreError> {
    let tz: chrono_tz::Tz = new.timezone.parse().map_err(|_| StoreError::Rule("unknown time zone".into()))?;
    let local_start = new.scheduled_time.with_timezone(&tz).time().format("%H:%M:%S").to_string();
    let id = Uuid::now_v7();
    let (until, count) = match plan.rule.end {
        SeriesEnd::Until(d) => (Some(d), None),
        SeriesEnd::Count(c) => (None, Some(c as i32)),
    };
    recurring_series::ActiveModel {
        id: Set(id),
        host_user_id: Set(new.host),
        frequency: Set(plan.rule.frequency.as_str().to_owned()),
        interval: Set(plan.rule.interval as i32),
        days: Set(plan.rule.days_csv()),
        until_date: Set(until),
        occurrence_count: Set(count),
        timezone: Set(new.timezone.clone()),
        local_start_time: Set(local_start),
        created_at: Set(now),
        ics_sequence: Set(0),
    }
    .insert(txn)
    .await?;
    Ok(id)
}

fn meeting_active_model(
    new: &NewMeeting,
    id: Uuid,
    at: DateTime<Utc>,
    series_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> meeting::ActiveModel {
    let mut am = meeting::ActiveModel {
        id: Set(id),
        host_user_id: Set(new.host),
        title: Set(new.title.clone()),
        meeting_type: Set(new.meeting_type.as_str().to_owned()),
        scheduled_time: Set(at),
        duration_minutes: Set(new.duration_minutes),
        timezone: Set(new.timezone.clone()),
        password_hash: Set(new.password_hash.clone()),
        status: Set(MeetingStatus::Scheduled.as_str().to_owned()),
        started_at: Set(None),
        ended_at: Set(None),
        actual_duration_seconds: Set(None),
        assigned_node: Set(None),
        owner_epoch: Set(0),
        ics_sequence: Set(0),
        series_id: Set(series_id),
        created_at: Set(now),
        updated_at: Set(now),
        remind_at: Set(remind_at(at, &new.settings)),
        ..Default::default()
    };
    set_settings(&mut am, &new.settings);
    am
}

fn set_settings(am: &mut meeting::ActiveModel, s: &MeetingSettings) {
    am.waiting_room_enabled = Set(s.waiting_room);
    am.recording_allowed = Set(s.recording_allowed);
    am.mute_on_entry = Set(s.mute_on_entry);
    am.video_on_entry = Set(s.video_on_entry);
    am.screen_share = Set(s.screen_share.as_str().to_owned());
    am.share_recordings = Set(s.share_recordings);
    am.reminder_minutes = Set(i32::from(s.reminder_minutes));
}

/// When the reminders of a meeting starting at `start` are due (`None`: it has none).
fn remind_at(start: DateTime<Utc>, s: &MeetingSettings) -> Option<DateTime<Utc>> {
    (s.reminder_minutes > 0).then(|| start - chrono::Duration::minutes(i64::from(s.reminder_minutes)))
}

fn participant_row(
    meeting_id: Uuid,
    u: &user::Model,
    role: Role,
    status: InviteStatus,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> meeting_participant::ActiveModel {
    meeting_participant::ActiveModel {
        meeting_id: Set(meeting_id),
        user_id: Set(u.id),
        role: Set(role.as_str().to_owned()),
        email: Set(u.email.clone()),
        invite_status: Set(status.as_str().to_owned()),
        invited_at: Set(now),
        scheduled_time: Set(at),
    }
}
