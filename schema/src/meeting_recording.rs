//! `meeting_recordings`: one row per recording, its object-storage URLs and the processing
//! pipeline's status (thumbnail, MP4, transcript).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "meeting_recordings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub meeting_id: Uuid,
    pub started_at: DateTimeUtc,
    pub duration_seconds: Option<i64>,
    pub file_size_bytes: Option<i64>,
    /// The original WebM in object storage.
    pub storage_url: Option<String>,
    pub mp4_url: Option<String>,
    pub mp4_size_bytes: Option<i64>,
    pub thumbnail_url: Option<String>,
    pub transcript_url: Option<String>,
    /// `parley_core::model::ProcessingStatus`.
    pub processing_status: String,
    /// Why processing failed, when it did.
    pub error: Option<String>,
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
