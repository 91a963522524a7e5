//! Users: registered by an administrator, or pending because somebody invited their email.

use chrono::{DateTime, Utc};
use parley_core::model::{Plan, UserStatus};
use parley_schema::user;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::Serialize;
use uuid::Uuid;

use crate::{Store, StoreError};

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub plan: Plan,
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<user::Model> for User {
    type Error = StoreError;
    fn try_from(m: user::Model) -> Result<Self, StoreError> {
        Ok(User {
            user_id: m.id,
            plan: m.plan.parse().map_err(corrupt)?,
            status: m.status.parse().map_err(corrupt)?,
            email: m.email,
            display_name: m.display_name,
            created_at: m.created_at,
        })
    }
}

/// A stored value outside its CHECK constraint's set: only possible if somebody bypassed the
/// migrations. Reported, never panicked on.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom(format!("corrupt row: {e}")))
}

impl Store {
    /// Registers a user. A pending user (created by an invitation) with the same email is
    /// promoted to active, keeping its id and invitations; an active one is a conflict.
    pub async fn create_user(&self, email: &str, display_name: &str, plan: Plan) -> Result<User, StoreError> {
        let now = Utc::now();
        if let Some(existing) = user::Entity::find().filter(user::Column::Email.eq(email)).one(&self.db).await? {
            if existing.status == UserStatus::Pending.as_str() {
                let mut am: user::ActiveModel = existing.into();
                am.display_name = Set(display_name.to_owned());
                am.plan = Set(plan.as_str().to_owned());
                am.status = Set(UserStatus::Active.as_str().to_owned());
                am.updated_at = Set(now);
                return am.update(&self.db).await?.try_into();
            }
            return Err(StoreError::Conflict(format!("a user with email {email} already exists")));
        }
        let am = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.to_owned()),
            display_name: Set(display_name.to_owned()),
            plan: Set(plan.as_str().to_owned()),
            status: Set(UserStatus::Active.as_str().to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        am.insert(&self.db).await?.try_into()
    }

    /// Looks a user up by id.
    pub async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        user::Entity::find_by_id(id).one(&self.db).await?.map(User::try_from).transpose()
    }
}

/// Finds the user with `email`, or creates a pending one named after the email's local part.
/// Runs inside the caller's transaction.
pub(crate) async fn find_or_invite(txn: &impl ConnectionTrait, email: &str) -> Result<user::Model, StoreError> {
    if let Some(u) = user::Entity::find().filter(user::Column::Email.eq(email)).one(txn).await? {
        return Ok(u);
    }
    let now = Utc::now();
    let name = email.split('@').next().unwrap_or(email).chars().take(100).collect::<String>();
    let am = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.to_owned()),
        display_name: Set(name),
        plan: Set(Plan::Free.as_str().to_owned()),
        status: Set(UserStatus::Pending.as_str().to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    // Two meetings inviting the same new address at once: the second insert waits for the
    // first and does nothing, and both read the one row.
    let on_conflict = sea_orm::sea_query::OnConflict::column(user::Column::Email).do_nothing().to_owned();
    user::Entity::insert(am).on_conflict(on_conflict).exec_without_returning(txn).await?;
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(txn)
        .await?
        .ok_or(StoreError::NotFound("invited user"))
}
