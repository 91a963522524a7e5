//! `users`: everybody who can host or be invited.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Lower-cased, unique.
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    /// `parley_core::model::Plan`.
    pub plan: String,
    /// `parley_core::model::UserStatus`: `pending` for invitees nobody registered yet.
    pub status: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::meeting::Entity")]
    HostedMeetings,
    #[sea_orm(has_many = "super::meeting_participant::Entity")]
    Participations,
}

impl Related<super::meeting_participant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Participations.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
