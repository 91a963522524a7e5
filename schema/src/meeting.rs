//! `meetings`: one row per meeting, and one per occurrence of a recurring series.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "meetings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub host_user_id: Uuid,
    pub title: String,
    /// `parley_core::model::MeetingType`.
    pub meeting_type: String,
    pub scheduled_time: DateTimeUtc,
    pub duration_minutes: i32,
    /// IANA zone the meeting was scheduled in; recurrence is computed in it.
    pub timezone: String,
    /// argon2 PHC string; `None` when the meeting has no password.
    pub password_hash: Option<String>,
    pub waiting_room_enabled: bool,
    pub recording_allowed: bool,
    pub mute_on_entry: bool,
    pub video_on_entry: bool,
    /// `parley_core::model::ScreenSharePolicy`.
    pub screen_share: String,
    /// Participants other than the moderators may watch the recordings.
    pub share_recordings: bool,
    /// `parley_core::model::MeetingStatus`.
    pub status: String,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub actual_duration_seconds: Option<i64>,
    /// Name of the cluster node running the live meeting, while active.
    pub assigned_node: Option<String>,
    /// Fencing epoch of the owner: incremented at each activation; the owner's writes must match it.
    pub owner_epoch: i64,
    /// The series this meeting is an occurrence of.
    pub series_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The iCalendar `SEQUENCE` of the last calendar message about this meeting.
    pub ics_sequence: i32,
    /// Minutes before the start at which invitees are reminded (0: never).
    pub reminder_minutes: i32,
    /// When the reminders are due; `None` once queued (or with no reminder).
    pub remind_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::HostUserId",
        to = "super::user::Column::Id",
        on_delete = "Restrict"
    )]
    Host,
    #[sea_orm(
        belongs_to = "super::recurring_series::Entity",
        from = "Column::SeriesId",
        to = "super::recurring_series::Column::Id",
        on_delete = "Cascade"
    )]
    Series,
    #[sea_orm(has_many = "super::meeting_participant::Entity")]
    Participants,
    #[sea_orm(has_many = "super::meeting_recording::Entity")]
    Recordings,
    #[sea_orm(has_one = "super::meeting_analytics::Entity")]
    Analytics,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Host.def()
    }
}

impl Related<super::meeting_participant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Participants.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
