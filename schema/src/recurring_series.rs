//! `recurring_series`: the rule of a recurring meeting. Each occurrence is its own `meetings`
//! row, linked through `recurring_occurrences`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recurring_series")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub host_user_id: Uuid,
    /// `parley_core::model::Frequency`.
    pub frequency: String,
    pub interval: i32,
    /// Weekday short names, comma separated (`Mon,Wed`); empty for "any"/"the first's".
    pub days: String,
    /// Last local date (inclusive), when the series ends by date.
    pub until_date: Option<Date>,
    /// Number of occurrences, when the series ends by count.
    pub occurrence_count: Option<i32>,
    /// IANA zone the local wall-clock time is kept in.
    pub timezone: String,
    /// Local wall-clock start time of every occurrence, `HH:MM:SS`.
    pub local_start_time: String,
    pub created_at: DateTimeUtc,
    /// The iCalendar `SEQUENCE` of the last calendar message about the whole series.
    pub ics_sequence: i32,
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
    #[sea_orm(has_many = "super::recurring_occurrence::Entity")]
    Occurrences,
}

impl ActiveModelBehavior for ActiveModel {}
