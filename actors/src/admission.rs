//! The join decision's I/O half, used by both ways in: REST `join-check` (nodes/src/api) and
//! WebSocket `join` / `start` (participant.rs). It loads the facts (the seed's QUERY 2),
//! checks the password when the rule asks for one — throttled per (meeting, user), argon2 on
//! the blocking pool — and lets `parley_core::join` decide. Nothing else decides a join.

use chrono::Utc;
use parley_core::join::{JoinDecision, JoinMode, PasswordCheck};
use parley_core::model::Role;
use parley_core::password;
use parley_core::throttle::JoinGuard;
use parley_store::{Store, StoreError};
use uuid::Uuid;

/// The decision and the caller's invited role (`None`: not invited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub decision: JoinDecision,
    pub role: Option<Role>,
}

/// Decides whether `user_id` may come into `meeting_id` (`Ok(None)`: no such meeting).
pub async fn admit(
    store: &Store,
    guard: &JoinGuard,
    meeting_id: Uuid,
    user_id: Uuid,
    password: Option<&str>,
    mode: JoinMode,
) -> Result<Option<Admission>, StoreError> {
    let Some(loaded) = store.join_facts(meeting_id, user_id).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let facts = loaded.facts;
    let check = if !facts.needs_password(mode, now) {
        PasswordCheck::NotNeeded
    } else if !guard.allowed(meeting_id, user_id) {
        PasswordCheck::Throttled
    } else {
        let right = match (password.map(str::to_owned), loaded.password_hash) {
            (Some(pw), Some(phc)) => {
                // A panicked verification (a bug in the hash library) counts as a wrong password.
                tokio::task::spawn_blocking(move || password::verify_password(&pw, &phc)).await.unwrap_or(false)
            }
            _ => false,
        };
        if right {
            guard.succeeded(meeting_id, user_id);
            PasswordCheck::Right
        } else {
            guard.failed(meeting_id, user_id);
            PasswordCheck::Wrong
        }
    };
    Ok(Some(Admission { decision: facts.decide(mode, check, now), role: facts.caller_role }))
}
