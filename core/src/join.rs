//! The join decision: may this caller enter this meeting now, and how?
//!
//! One rule for every way in: REST `POST /api/meetings/{id}/join-check` previews it and the
//! WebSocket `join` / `start` requests apply it, with the same codes ([`Refusal::code`]). It is
//! the seed's QUERY 2 with these corrections:
//!
//! - passwords are compared by verifying an argon2 hash, done by the caller only when
//!   [`JoinFacts::needs_password`] says so (it is deliberately slow) and only while the caller's
//!   guesses are not throttled; the outcome comes back as a [`PasswordCheck`];
//! - an *active* meeting is joinable (the seed only accepted `scheduled`, which would lock
//!   everybody out once the host started);
//! - a *scheduled* meeting is entered by a moderator (host, co-host), which starts it — by
//!   `join` as well as by `start` — while anyone else is told it has not started yet;
//! - an *ended* meeting may be restarted by a moderator until its scheduled end
//!   ([`JoinFacts::scheduled_end`]): an occurrence started early by mistake, or ended by
//!   accident, is not lost. After its scheduled end, or once cancelled, it is not available.
//!
//! The waiting-room rule ([`must_wait`]) is used here and by the live meeting
//! (`meeting::LiveMeeting`), which applies it to the roles it holds live.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{MeetingStatus, Role};

/// How the caller asks to come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinMode {
    /// `join`: anyone with the link.
    Join,
    /// `start`: a moderator starting (or restarting) the meeting; refused to anyone else.
    Start,
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
    /// When the meeting is scheduled to end (its scheduled time plus its duration): until then
    /// a moderator may restart it after it ended.
    pub scheduled_end: DateTime<Utc>,
}

/// The outcome of checking the caller's password, when [`JoinFacts::needs_password`] asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// No password was needed, so none was checked.
    NotNeeded,
    /// The supplied password verified against the hash.
    Right,
    /// Missing or wrong.
    Wrong,
    /// The caller guessed wrong too often recently: nothing was verified.
    Throttled,
}

/// What the caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinDecision {
    /// Straight in. `starts`: the meeting is not live yet and this entry starts it (a
    /// moderator's; `reopens` too when it had ended and is restarted before its scheduled end).
    Enter { starts: bool, reopens: bool },
    /// In, but held in the waiting room until a moderator admits them.
    WaitingRoom,
    /// Not in, and why.
    Refused(Refusal),
}

/// Why a caller may not come in. The same code is a WebSocket error code and a REST
/// join-check status (or, for [`Refusal::TooManyAttempts`], the code of its 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Scheduled and not started: the host (or a co-host) starts it.
    MeetingNotStarted,
    /// Cancelled, or ended and past its scheduled end.
    MeetingNotAvailable,
    /// The meeting has a password and the caller's was missing or wrong.
    WrongPassword,
    /// Too many wrong passwords recently; try again later.
    TooManyAttempts,
    /// `start` by someone who is not a moderator.
    NotAModerator,
}

impl Refusal {
    /// The code sent over REST and WebSocket alike.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::MeetingNotStarted => "meeting_not_started",
            Refusal::MeetingNotAvailable => "meeting_not_available",
            Refusal::WrongPassword => "wrong_password",
            Refusal::TooManyAttempts => "too_many_attempts",
            Refusal::NotAModerator => "forbidden",
        }
    }

    /// A sentence for the person.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MeetingNotStarted => "the host has not started the meeting yet",
            Refusal::MeetingNotAvailable => "the meeting has ended or was cancelled",
            Refusal::WrongPassword => "wrong or missing meeting password",
            Refusal::TooManyAttempts => "too many wrong passwords; try again later",
            Refusal::NotAModerator => "only the host or a co-host may start the meeting",
        }
    }
}

/// The waiting-room rule: with the waiting room on, everyone but moderators waits.
pub fn must_wait(waiting_room: bool, role: Role) -> bool {
    waiting_room && !role.is_moderator()
}

impl JoinFacts {
    /// Moderators (host, co-hosts) are never asked for the password nor held in the waiting room.
    fn caller_is_moderator(&self) -> bool {
        self.caller_role.is_some_and(Role::is_moderator)
    }

    /// Where the meeting stands for this caller before any password is looked at: `Ok(starts,
    /// reopens)` if they may come in at all.
    fn entry(&self, mode: JoinMode, now: DateTime<Utc>) -> Result<(bool, bool), Refusal> {
        let moderator = self.caller_is_moderator();
        if mode == JoinMode::Start && !moderator {
            return Err(Refusal::NotAModerator);
        }
        match self.status {
            MeetingStatus::Active => Ok((false, false)),
            MeetingStatus::Scheduled if moderator => Ok((true, false)),
            MeetingStatus::Scheduled => Err(Refusal::MeetingNotStarted),
            MeetingStatus::Ended if moderator && now < self.scheduled_end => Ok((true, true)),
            MeetingStatus::Ended | MeetingStatus::Cancelled => Err(Refusal::MeetingNotAvailable),
        }
    }

    /// Whether the caller must supply a password, which the caller of [`decide`](Self::decide)
    /// verifies first (unless throttled). False when the caller could not come in anyway, so no
    /// hash is verified for nothing.
    pub fn needs_password(&self, mode: JoinMode, now: DateTime<Utc>) -> bool {
        self.entry(mode, now).is_ok() && self.has_password && !self.caller_is_moderator()
    }

    /// Decides. `password` is what checking the password gave ([`PasswordCheck::NotNeeded`]
    /// when [`needs_password`](Self::needs_password) was false).
    pub fn decide(&self, mode: JoinMode, password: PasswordCheck, now: DateTime<Utc>) -> JoinDecision {
        let (starts, reopens) = match self.entry(mode, now) {
            Ok(e) => e,
            Err(r) => return JoinDecision::Refused(r),
        };
        if self.needs_password(mode, now) {
            match password {
                PasswordCheck::Right => {}
                PasswordCheck::Throttled => return JoinDecision::Refused(Refusal::TooManyAttempts),
                PasswordCheck::Wrong | PasswordCheck::NotNeeded => {
                    return JoinDecision::Refused(Refusal::WrongPassword);
                }
            }
        }
        if must_wait(self.waiting_room, self.caller_role.unwrap_or(Role::Attendee)) {
            JoinDecision::WaitingRoom
        } else {
            JoinDecision::Enter { starts, reopens }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap_or_default()
    }

    /// Scheduled to end at hour 1.
    fn facts(status: MeetingStatus, has_password: bool, waiting_room: bool, role: Option<Role>) -> JoinFacts {
        JoinFacts { status, has_password, waiting_room, caller_role: role, scheduled_end: at(1) }
    }

    const IN: JoinDecision = JoinDecision::Enter { starts: false, reopens: false };

    #[test]
    fn cancelled_meetings_are_not_available_even_for_the_host() {
        let f = facts(MeetingStatus::Cancelled, true, true, Some(Role::Host));
        for mode in [JoinMode::Join, JoinMode::Start] {
            assert_eq!(
                f.decide(mode, PasswordCheck::NotNeeded, at(0)),
                JoinDecision::Refused(Refusal::MeetingNotAvailable)
            );
            assert!(!f.needs_password(mode, at(0)));
        }
    }

    #[test]
    fn an_ended_meeting_is_restarted_by_a_moderator_until_its_scheduled_end() {
        for role in [Role::Host, Role::CoHost] {
            let f = facts(MeetingStatus::Ended, true, true, Some(role));
            let restart = JoinDecision::Enter { starts: true, reopens: true };
            assert_eq!(f.decide(JoinMode::Start, PasswordCheck::NotNeeded, at(0)), restart);
            assert_eq!(f.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)), restart);
            assert_eq!(
                f.decide(JoinMode::Start, PasswordCheck::NotNeeded, at(1)),
                JoinDecision::Refused(Refusal::MeetingNotAvailable),
                "not at or after its scheduled end"
            );
        }
        let guest = facts(MeetingStatus::Ended, false, false, Some(Role::Attendee));
        assert_eq!(
            guest.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)),
            JoinDecision::Refused(Refusal::MeetingNotAvailable)
        );
        assert!(!guest.needs_password(JoinMode::Join, at(0)));
    }

    #[test]
    fn a_scheduled_meeting_is_started_by_a_moderator_and_waited_for_by_everyone_else() {
        let host = facts(MeetingStatus::Scheduled, true, true, Some(Role::Host));
        let start = JoinDecision::Enter { starts: true, reopens: false };
        assert_eq!(host.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)), start, "the host's join starts it");
        assert_eq!(host.decide(JoinMode::Start, PasswordCheck::NotNeeded, at(0)), start);
        let guest = facts(MeetingStatus::Scheduled, true, false, None);
        assert_eq!(
            guest.decide(JoinMode::Join, PasswordCheck::Right, at(0)),
            JoinDecision::Refused(Refusal::MeetingNotStarted)
        );
        assert!(!guest.needs_password(JoinMode::Join, at(0)), "no hash verified for a meeting they cannot enter");
    }

    #[test]
    fn start_is_for_moderators_only() {
        for role in [None, Some(Role::Attendee), Some(Role::Panelist)] {
            for status in [MeetingStatus::Scheduled, MeetingStatus::Active] {
                let f = facts(status, false, false, role);
                assert_eq!(
                    f.decide(JoinMode::Start, PasswordCheck::NotNeeded, at(0)),
                    JoinDecision::Refused(Refusal::NotAModerator)
                );
            }
        }
    }

    #[test]
    fn password_is_checked_before_the_waiting_room_and_throttling_wins() {
        let f = facts(MeetingStatus::Active, true, true, Some(Role::Attendee));
        assert!(f.needs_password(JoinMode::Join, at(0)));
        assert_eq!(
            f.decide(JoinMode::Join, PasswordCheck::Wrong, at(0)),
            JoinDecision::Refused(Refusal::WrongPassword)
        );
        assert_eq!(
            f.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)),
            JoinDecision::Refused(Refusal::WrongPassword)
        );
        assert_eq!(
            f.decide(JoinMode::Join, PasswordCheck::Throttled, at(0)),
            JoinDecision::Refused(Refusal::TooManyAttempts)
        );
        assert_eq!(f.decide(JoinMode::Join, PasswordCheck::Right, at(0)), JoinDecision::WaitingRoom);
    }

    #[test]
    fn moderators_skip_password_and_waiting_room() {
        for r in [Role::Host, Role::CoHost] {
            let f = facts(MeetingStatus::Active, true, true, Some(r));
            assert!(!f.needs_password(JoinMode::Join, at(0)));
            assert_eq!(f.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)), IN);
        }
    }

    #[test]
    fn uninvited_callers_are_treated_as_attendees() {
        let f = facts(MeetingStatus::Active, false, false, None);
        assert_eq!(f.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)), IN);
        let f = facts(MeetingStatus::Active, false, true, None);
        assert_eq!(f.decide(JoinMode::Join, PasswordCheck::NotNeeded, at(0)), JoinDecision::WaitingRoom);
    }

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Refusal::MeetingNotStarted.code(), "meeting_not_started");
        assert_eq!(Refusal::TooManyAttempts.code(), "too_many_attempts");
        let json = serde_json::to_string(&Refusal::MeetingNotAvailable).unwrap_or_default();
        assert_eq!(json, "\"meeting_not_available\"");
    }
}
