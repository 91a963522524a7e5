//! Keeping a running meeting's presence mirror true (the meeting actor's sweep): who has gone
//! silent for a whole TTL, renewing the mirror's TTLs for everyone the owner knows to be alive,
//! and what to rewrite when the mirror lost keys (Redis restarted empty, or some hashes
//! expired). The decisions are plain functions, unit-tested; [`check`] is the one Redis round
//! trip pair they need.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parley_core::placement::Owner;
use parley_presence::{Presence, PresenceError};
use uuid::Uuid;

/// Of the connected users, `(silent, alive)`: silent ones were not heard from (any request
/// counts) for a whole `ttl`, or never since this activation knew them.
pub fn by_liveness(
    connected: Vec<Uuid>,
    last_seen: &HashMap<Uuid, Instant>,
    ttl: Duration,
    now: Instant,
) -> (Vec<Uuid>, Vec<Uuid>) {
    connected.into_iter().partition(|u| last_seen.get(u).is_none_or(|t| now.saturating_duration_since(*t) >= ttl))
}

/// What the mirror needs rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Participants whose record to write again.
    pub rewrite: Vec<Uuid>,
    /// The meeting-level keys are gone (owner, waiting room, flags): rewrite them and claim
    /// the meeting again.
    pub meeting_keys: bool,
}

/// The repair for what the mirror showed: with the meeting's own keys lost every alive
/// participant is rewritten; otherwise only those whose record is missing. `None`: all there.
pub fn plan(lost_meeting_keys: bool, alive_participants: Vec<Uuid>, missing: Vec<Uuid>) -> Option<Repair> {
    if lost_meeting_keys {
        return Some(Repair { rewrite: alive_participants, meeting_keys: true });
    }
    (!missing.is_empty()).then_some(Repair { rewrite: missing, meeting_keys: false })
}

/// Reads whether the meeting's keys survived (its owner key still names `me`) and renews the
/// TTLs of `alive_participants` (the owner decides who is alive: a participant who only chats
/// must never be missing from a takeover's restore), then plans the repair.
pub async fn check(
    presence: &Presence,
    meeting_id: Uuid,
    me: &Owner,
    alive_participants: Vec<Uuid>,
) -> Result<Option<Repair>, PresenceError> {
    let lost_meeting_keys = presence.owner(meeting_id).await?.as_ref() != Some(me);
    let missing = presence.keep_alive(meeting_id, &alive_participants).await?;
    Ok(plan(lost_meeting_keys, alive_participants, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_means_unheard_for_a_whole_ttl_or_never() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        // Instants after a base (never before it: the monotonic clock may be young).
        let base = Instant::now();
        let now = base + Duration::from_secs(120);
        let ttl = Duration::from_secs(60);
        let seen = HashMap::from([(a, base + Duration::from_secs(59)), (b, base + Duration::from_secs(115))]);
        assert_eq!(by_liveness(vec![a, b, c], &seen, ttl, now), (vec![a, c], vec![b]));
    }

    #[test]
    fn lost_meeting_keys_rewrite_everyone_alive_else_only_the_missing() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(plan(false, vec![a, b], vec![]), None, "all there: nothing to do");
        assert_eq!(plan(false, vec![a, b], vec![b]), Some(Repair { rewrite: vec![b], meeting_keys: false }));
        assert_eq!(plan(true, vec![a, b], vec![]), Some(Repair { rewrite: vec![a, b], meeting_keys: true }));
    }
}
