//! The seed's three read queries, each one SQL statement.
//!
//! - QUERY 1 [`Store::upcoming_meetings`]: a range scan of `idx_participants_user_time`
//!   (`meeting_participants(user_id, scheduled_time)`), joined to the meeting and its host.
//! - QUERY 2 [`Store::join_facts`]: the meeting's primary key plus a LEFT JOIN to the caller's
//!   participant row (primary key `(meeting_id, user_id)`), feeding
//!   [`parley_core::join::JoinFacts`].
//! - QUERY 3 [`Store::analytics_per_day`]: `idx_meetings_host_time` range, grouped by UTC date.
//!
//! The statement builders are public so `make bench-db` can EXPLAIN exactly what runs.

use chrono::{DateTime, Utc};
use parley_core::join::JoinFacts;
use parley_core::model::{MeetingStatus, Role};
use parley_schema::{meeting, meeting_participant, user};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, JoinType, QueryFilter, QueryOrder, QuerySelect,
    RelationTrait, Select, StatementBuilder,
};
use serde::Serialize;
use uuid::Uuid;

use crate::users::corrupt;
use crate::{Store, StoreError};

/// Most rows one upcoming-meetings call returns.
pub const MAX_UPCOMING: u64 = 100;
/// Longest analytics window, in days.
pub const MAX_ANALYTICS_DAYS: u32 = 366;

/// One row of "my upcoming meetings".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpcomingMeeting {
    pub meeting_id: Uuid,
    pub title: String,
    pub scheduled_time: DateTime<Utc>,
    pub duration_minutes: i32,
    pub host_user_id: Uuid,
    pub host_display_name: String,
    pub role: Role,
    pub series_id: Option<Uuid>,
}

#[derive(Debug, FromQueryResult)]
struct UpcomingRow {
    meeting_id: Uuid,
    title: String,
    scheduled_time: DateTime<Utc>,
    duration_minutes: i32,
    host_user_id: Uuid,
    host_display_name: String,
    role: String,
    series_id: Option<Uuid>,
}

/// What the join decision needs, plus the hash to verify a password against.
#[derive(Debug, Clone)]
pub struct JoinCheckFacts {
    pub facts: JoinFacts,
    pub password_hash: Option<String>,
}

#[derive(Debug, FromQueryResult)]
struct JoinRow {
    status: String,
    password_hash: Option<String>,
    waiting_room_enabled: bool,
    host_user_id: Uuid,
    scheduled_time: DateTime<Utc>,
    duration_minutes: i32,
    caller_role: Option<String>,
}

/// One day of a host's meetings.
#[derive(Debug, Clone, PartialEq, Serialize, FromQueryResult)]
pub struct DayAnalytics {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    pub total_meetings: i64,
    /// Mean scheduled duration, minutes.
    pub avg_duration_minutes: f64,
    /// Mean real duration of the ended ones, minutes (`null` if none ended).
    pub avg_actual_duration_minutes: Option<f64>,
    pub completed_meetings: i64,
}

/// QUERY 1 as a SeaORM select: the caller's scheduled meetings after `now`, soonest first.
pub fn upcoming_select(user_id: Uuid, now: DateTime<Utc>, limit: u64) -> Select<meeting_participant::Entity> {
    meeting_participant::Entity::find()
        .select_only()
        .column_as(meeting::Column::Id, "meeting_id")
        .column(meeting::Column::Title)
        .column_as(meeting_participant::Column::ScheduledTime, "scheduled_time")
        .column(meeting::Column::DurationMinutes)
        .column(meeting::Column::HostUserId)
        .column_as(user::Column::DisplayName, "host_display_name")
        .column(meeting_participant::Column::Role)
        .column(meeting::Column::SeriesId)
        .join(JoinType::InnerJoin, meeting_participant::Relation::Meeting.def())
        .join(JoinType::InnerJoin, meeting::Relation::Host.def())
        .filter(meeting_participant::Column::UserId.eq(user_id))
        .filter(meeting_participant::Column::ScheduledTime.gt(now))
        .filter(meeting::Column::Status.eq(MeetingStatus::Scheduled.as_str()))
        .order_by_asc(meeting_participant::Column::ScheduledTime)
        .limit(limit.clamp(1, MAX_UPCOMING))
}

/// QUERY 2 as a SeaORM select: the meeting's join-relevant columns and the caller's role.
pub fn join_facts_select(meeting_id: Uuid, user_id: Uuid) -> Select<meeting::Entity> {
    meeting::Entity::find_by_id(meeting_id)
        .select_only()
        .columns([
            meeting::Column::Status,
            meeting::Column::PasswordHash,
            meeting::Column::WaitingRoomEnabled,
            meeting::Column::HostUserId,
            meeting::Column::ScheduledTime,
            meeting::Column::DurationMinutes,
        ])
        .column_as(meeting_participant::Column::Role, "caller_role")
        .join(
            JoinType::LeftJoin,
            meeting::Relation::Participants.def().on_condition(move |_left, right| {
                Expr::col((right, meeting_participant::Column::UserId)).eq(user_id).into()
            }),
        )
}

/// QUERY 3 as a statement: per-UTC-day totals of `host`'s meetings scheduled since `since`.
pub fn analytics_statement(backend: DbBackend, host: Uuid, since: DateTime<Utc>) -> SelectStatement {
    // The one engine-specific expression: a timestamp's UTC calendar date as text.
    let day = match backend {
        DbBackend::Postgres => "to_char(scheduled_time AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        // strftime gives NULL for a stored text it cannot read as a time (a leap second written
        // before such times were refused): the text's own date still names the day.
        _ => "COALESCE(strftime('%Y-%m-%d', scheduled_time), substr(scheduled_time, 1, 10))",
    };
    let completed = Expr::cust("COUNT(DISTINCT CASE WHEN status = 'ended' THEN id END)");
    Query::select()
        .expr_as(Expr::cust(day), Alias::new("date"))
        .expr_as(Func::count_distinct(Expr::col(meeting::Column::Id)), Alias::new("total_meetings"))
        .expr_as(Expr::cust("CAST(AVG(duration_minutes) AS DOUBLE PRECISION)"), Alias::new("avg_duration_minutes"))
        .expr_as(
            Expr::cust(
                "CAST(AVG(CASE WHEN status = 'ended' THEN actual_duration_seconds END) / 60.0 AS DOUBLE PRECISION)",
            ),
            Alias::new("avg_actual_duration_minutes"),
        )
        .expr_as(completed, Alias::new("completed_meetings"))
        .from(meeting::Entity)
        .and_where(Expr::col(meeting::Column::HostUserId).eq(host))
        .and_where(Expr::col(meeting::Column::ScheduledTime).gte(since))
        .add_group_by([Expr::cust(day)])
        .order_by_expr(Expr::cust(day), Order::Desc)
        .to_owned()
}

impl Store {
    /// QUERY 1: the caller's upcoming scheduled meetings, as host or invitee, soonest first.
    pub async fn upcoming_meetings(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<UpcomingMeeting>, StoreError> {
        let rows = upcoming_select(user_id, now, limit).into_model::<UpcomingRow>().all(&self.db).await?;
        rows.into_iter()
            .map(|r| {
                Ok(UpcomingMeeting {
                    meeting_id: r.meeting_id,
                    title: r.title,
                    scheduled_time: r.scheduled_time,
                    duration_minutes: r.duration_minutes,
                    host_user_id: r.host_user_id,
                    host_display_name: r.host_display_name,
                    role: r.role.parse().map_err(corrupt)?,
                    series_id: r.series_id,
                })
            })
            .collect()
    }

    /// QUERY 2: the facts of a join decision, or `None` if the meeting does not exist.
    #[tracing::instrument(name = "db.join_facts", skip_all)]
    pub async fn join_facts(&self, meeting_id: Uuid, user_id: Uuid) -> Result<Option<JoinCheckFacts>, StoreError> {
        let Some(r) = join_facts_select(meeting_id, user_id).into_model::<JoinRow>().one(&self.db).await? else {
            return Ok(None);
        };
        let caller_role = match r.caller_role {
            Some(role) => Some(role.parse::<Role>().map_err(corrupt)?),
            // The host always has a participant row; be robust if it was removed by hand.
            None if r.host_user_id == user_id => Some(Role::Host),
            None => None,
        };
        Ok(Some(JoinCheckFacts {
            facts: JoinFacts {
                status: r.status.parse().map_err(corrupt)?,
                has_password: r.password_hash.is_some(),
                waiting_room: r.waiting_room_enabled,
                caller_role,
                scheduled_end: r
                    .scheduled_time
                    .checked_add_signed(chrono::Duration::minutes(i64::from(r.duration_minutes)))
                    .unwrap_or(r.scheduled_time),
            },
            password_hash: r.password_hash,
        }))
    }

    /// QUERY 3: per-day analytics of the meetings `host` scheduled since `since`, newest day first.
    pub async fn analytics_per_day(&self, host: Uuid, since: DateTime<Utc>) -> Result<Vec<DayAnalytics>, StoreError> {
        let stmt = StatementBuilder::build(&analytics_statement(self.backend(), host, since), &self.backend());
        Ok(DayAnalytics::find_by_statement(stmt).all(&self.db).await?)
    }
}
