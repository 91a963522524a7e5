//! In-process presence for a single node: the same operations and TTL semantics as Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parley_core::protocol::WaitingView;
use uuid::Uuid;

use crate::{EVENT_LOG_LEN, LoggedEvent, Owner, PresenceError, PresenceRecord, REPLAY_MAX};

#[derive(Default)]
struct MeetingPresence {
    /// Participant → when their record expires.
    participants: HashMap<Uuid, (PresenceRecord, Instant)>,
    waiting: Vec<WaitingView>,
    media_server: Option<String>,
    flags: Option<String>,
    log: std::collections::VecDeque<LoggedEvent>,
}

#[derive(Default)]
pub(crate) struct LocalPresence {
    meetings: Mutex<HashMap<Uuid, MeetingPresence>>,
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalPresence {
    fn with<R>(&self, meeting: Uuid, f: impl FnOnce(&mut MeetingPresence) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        let mut map = self.meetings.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(meeting).or_default())
    }

    pub(crate) fn upsert(&self, meeting: Uuid, rec: &PresenceRecord, _now_ms: i64, ttl: Duration) {
        self.with(meeting, |m| {
            m.participants.insert(rec.view.user_id, (rec.clone(), Instant::now() + ttl));
        });
    }

    pub(crate) fn remove(&self, meeting: Uuid, user: Uuid) {
        self.with(meeting, |m| {
            m.participants.remove(&user);
        });
    }

    pub(crate) fn set_waiting(&self, meeting: Uuid, list: &[WaitingView]) {
        self.with(meeting, |m| m.waiting = list.to_vec());
    }

    pub(crate) fn waiting(&self, meeting: Uuid) -> Vec<WaitingView> {
        self.with(meeting, |m| m.waiting.clone())
    }

    pub(crate) fn set_media_server(&self, meeting: Uuid, node: &str) {
        self.with(meeting, |m| m.media_server = Some(node.to_owned()));
    }

    pub(crate) fn claim_owner(&self, meeting: Uuid, owner: &Owner, expected: Option<&str>) -> bool {
        self.with(meeting, |m| {
            let mine = m.media_server.as_deref().and_then(Owner::parse).is_some_and(|o| o.node == owner.node);
            if mine || m.media_server.as_deref() == expected {
                m.media_server = Some(owner.encode());
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn put_lease(&self, node: &str, json: String, ttl: Duration) {
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_owned(), (json, Instant::now() + ttl));
    }

    pub(crate) fn lease(&self, node: &str) -> Option<String> {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.get(node).filter(|(_, exp)| *exp > Instant::now()).map(|(j, _)| j.clone())
    }

    pub(crate) fn media_server(&self, meeting: Uuid) -> Option<String> {
        self.with(meeting, |m| m.media_server.clone())
    }

    /// Like Redis's set: membership does not expire with the hash.
    pub(crate) fn participants(&self, meeting: Uuid) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = self.with(meeting, |m| m.participants.keys().copied().collect());
        v.sort();
        v
    }

    pub(crate) fn expired(&self, meeting: Uuid, users: &[Uuid]) -> Vec<Uuid> {
        let now = Instant::now();
        self.with(meeting, |m| {
            users.iter().copied().filter(|u| m.participants.get(u).is_none_or(|(_, exp)| *exp <= now)).collect()
        })
    }

    pub(crate) fn keep_alive(&self, meeting: Uuid, users: &[Uuid], ttl: Duration) -> Vec<Uuid> {
        let now = Instant::now();
        self.with(meeting, |m| {
            users
                .iter()
                .copied()
                .filter(|u| match m.participants.get_mut(u) {
                    Some((_, exp)) if *exp > now => {
                        *exp = now + ttl;
                        false
                    }
                    _ => true,
                })
                .collect()
        })
    }

    pub(crate) fn records(&self, meeting: Uuid) -> Vec<PresenceRecord> {
        let now = Instant::now();
        let mut v: Vec<PresenceRecord> = self
            .with(meeting, |m| m.participants.values().filter(|(_, exp)| *exp > now).map(|(r, _)| r.clone()).collect());
        v.sort_by_key(|r| r.view.user_id);
        v
    }

    pub(crate) fn set_flags(&self, meeting: Uuid, json: &str) {
        self.with(meeting, |m| m.flags = Some(json.to_owned()));
    }

    pub(crate) fn flags(&self, meeting: Uuid) -> Option<String> {
        self.with(meeting, |m| m.flags.clone())
    }

    pub(crate) fn log_event(&self, meeting: Uuid, event: &LoggedEvent) -> Result<(), PresenceError> {
        self.with(meeting, |m| {
            if m.log.back().is_some_and(|top| top.seq >= event.seq) {
                return Err(PresenceError::Corrupt(format!("event {} is not above the log's top", event.seq)));
            }
            if m.log.len() >= EVENT_LOG_LEN {
                m.log.pop_front();
            }
            m.log.push_back(event.clone());
            Ok(())
        })
    }

    pub(crate) fn events_after(&self, meeting: Uuid, after: u64) -> Vec<LoggedEvent> {
        self.with(meeting, |m| m.log.iter().filter(|e| e.seq > after).take(REPLAY_MAX).cloned().collect())
    }

    pub(crate) fn clear(&self, meeting: Uuid) {
        self.meetings.lock().unwrap_or_else(|p| p.into_inner()).remove(&meeting);
    }
}
