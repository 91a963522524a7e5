//! The join decision: may this caller enter this meeting now, and how?
//!
//! This is the seed's QUERY 2 with two corrections: passwords are compared by verifying an
//! argon2 hash (done by the caller, only when [`JoinFacts::needs_password`] says so, because it
//! is deliberately slow), and an *active* meeting is joinable — the seed only accepted
//! `scheduled`, which would lock everybody out once the host started.

use serde::{Deserialize, Serialize};

use crate::model::{MeetingStatus, Role};

/// What the caller gets told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStatus {
    /// Straight in.
    Allowed,
    /// Password fine, but a moderator must admit the caller.
    WaitingRoom,
    /// The meeting has a password and the caller's was missing or wrong.
    WrongPassword,
    /// Ended or cancelled.
    MeetingNotAvailable,
}

/// Everything the decision needs, already loaded from storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinFacts {
    /// The meeting's lifecycle status.
    pub status: MeetingStatus,
    /// Whether the meeting has a password hash.
    pub has_password: bool,
    /// Whether the waiting room is enabled.
    pub waiting_room: bool,
    /// The caller's role if they are the host or an invitee; `None` for anyone else with the link.
    pub caller_role: Option<Role>,
}

impl JoinFacts {
    /// Moderators (host, co-hosts) are never asked for the password nor held in the waiting room.
    fn caller_is_moderator(&self) -> bool {
        self.caller_role.is_some_and(Role::is_moderator)
    }

    /// Whether the caller must supply a password that the caller of [`decide`](Self::decide)
    /// verifies first. False for unavailable meetings so no hash is verified for nothing.
    pub fn needs_password(&self) -> bool {
        self.is_available() && self.has_password && !self.caller_is_moderator()
    }

    fn is_available(&self) -> bool {
        matches!(self.status, MeetingStatus::Scheduled | MeetingStatus::Active)
    }

    /// Decides. `password_ok` is the outcome of verifying the supplied password against the
    /// hash; it is only read when [`needs_password`](Self::needs_password) is true.
    pub fn decide(&self, password_ok: bool) -> JoinStatus {
        if !self.is_available() {
            JoinStatus::MeetingNotAvailable
        } else if self.needs_password() && !password_ok {
            JoinStatus::WrongPassword
        } else if self.waiting_room && !self.caller_is_moderator() {
            JoinStatus::WaitingRoom
        } else {
            JoinStatus::Allowed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: MeetingStatus, has_password: bool, waiting_room: bool, role: Option<Role>) -> JoinFacts {
        JoinFacts { status, has_password, waiting_room, caller_role: role }
    }

    #[test]
    fn ended_and_cancelled_meetings_are_not_available_even_for_the_host() {
        for s in [MeetingStatus::Ended, MeetingStatus::Cancelled] {
            let f = facts(s, true, true, Some(Role::Host));
            assert_eq!(f.decide(true), JoinStatus::MeetingNotAvailable);
            assert!(!f.needs_password());
        }
    }

    #[test]
    fn password_is_checked_before_the_waiting_room() {
        let f = facts(MeetingStatus::Active, true, true, Some(Role::Attendee));
        assert!(f.needs_password());
        assert_eq!(f.decide(false), JoinStatus::WrongPassword);
        assert_eq!(f.decide(true), JoinStatus::WaitingRoom);
    }

    #[test]
    fn moderators_skip_password_and_waiting_room() {
        for r in [Role::Host, Role::CoHost] {
            let f = facts(MeetingStatus::Scheduled, true, true, Some(r));
            assert!(!f.needs_password());
            assert_eq!(f.decide(false), JoinStatus::Allowed);
        }
    }

    #[test]
    fn uninvited_callers_are_treated_as_attendees() {
        let f = facts(MeetingStatus::Scheduled, false, false, None);
        assert_eq!(f.decide(false), JoinStatus::Allowed);
        let f = facts(MeetingStatus::Scheduled, false, true, None);
        assert_eq!(f.decide(false), JoinStatus::WaitingRoom);
    }
}
