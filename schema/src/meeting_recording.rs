//! `meeting_recordings`: one row per recording — who started it, its capture and processing
//! state, progress, and the object-storage URLs and sizes of what the pipeline made.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "meeting_recordings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub meeting_id: Uuid,
    pub started_at: DateTimeUtc,
    /// When capture stopped (`None` while recording).
    pub ended_at: Option<DateTimeUtc>,
    /// The host or co-host who turned it on.
    pub started_by: Option<Uuid>,
    /// `parley_core::model::RecordingLayout`.
    pub layout: String,
    pub duration_seconds: Option<i64>,
    /// Total size of the captured per-track WebM files.
    pub file_size_bytes: Option<i64>,
    /// Where the captured per-track WebM files are (an object-store prefix URL).
    pub storage_url: Option<String>,
    pub mp4_url: Option<String>,
    pub mp4_size_bytes: Option<i64>,
    pub thumbnail_url: Option<String>,
    pub transcript_url: Option<String>,
    /// `parley_core::model::ProcessingStatus`.
    pub processing_status: String,
    /// 0‥100 while `processing`.
    pub progress: i32,
    /// Why processing failed, when it did.
    pub error: Option<String>,
    /// JSON: every artifact with its key, size and duration (see the recording API).
    pub artifacts: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::meeting::Entity",
        from = "Column::MeetingId",
        to = "super::meeting::Column::Id",
        on_delete = "Cascade"
    )]
    Meeting,
}

impl Related<super::meeting::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Meeting.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
