//! Notices: what the notification outbox tells one person, as plain data.
//!
//! The store writes a [`Notice`] (as JSON) into the outbox in the same transaction as the change
//! that causes it; a delivery worker later turns it into an email (with an iCalendar part for
//! calendar notices). Everything a message needs is captured here at the time of the change, so
//! delivery never re-reads a meeting that may have changed again since.

use std::fmt;

use chrono::{DateTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::Frequency;
use crate::recurrence::{RecurrenceRule, SeriesEnd};

/// Someone a message is addressed to or about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The display name; may be empty for a pending (invited, not registered) user.
    pub name: String,
    pub email: String,
}

/// What a notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// You are invited (a meeting or a whole series was created).
    Invitation,
    /// The meeting (or one occurrence of a series) changed: moved, retitled, resized.
    Update,
    /// The meeting, one occurrence or the whole series was cancelled.
    Cancellation,
    /// The meeting starts soon.
    Reminder,
    /// A recording finished processing.
    RecordingReady,
    /// A recording could not be processed.
    RecordingFailed,
}

impl NoticeKind {
    /// The name stored in the outbox's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Invitation => "invitation",
            NoticeKind::Update => "update",
            NoticeKind::Cancellation => "cancellation",
            NoticeKind::Reminder => "reminder",
            NoticeKind::RecordingReady => "recording_ready",
            NoticeKind::RecordingFailed => "recording_failed",
        }
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The iCalendar method of a calendar notice (RFC 5546).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CalendarMethod {
    /// Add or update the event.
    Request,
    /// Remove the event (or one occurrence of it).
    Cancel,
}

impl CalendarMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarMethod::Request => "REQUEST",
            CalendarMethod::Cancel => "CANCEL",
        }
    }
}

/// One attendee of a calendar event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendee {
    pub person: Person,
    /// `true` for the host and co-hosts (iCalendar `ROLE=CHAIR`), else `REQ-PARTICIPANT`.
    pub chair: bool,
}

/// A calendar event as an invitation, update or cancellation carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarEvent {
    pub method: CalendarMethod,
    /// Stable across every message about the same meeting or series (`<id>@parley`).
    pub uid: String,
    /// Grows with every change the calendar should apply over the previous message.
    pub sequence: i32,
    pub title: String,
    /// The start of the event (of the first occurrence, for a whole series).
    pub start: DateTime<Utc>,
    pub duration_minutes: i32,
    /// The meeting's IANA time zone: the event is written in it (`TZID` + `VTIMEZONE`).
    pub timezone: String,
    /// The recurrence rule's value (`FREQ=WEEKLY;BYDAY=MO,WE;COUNT=5`), for a whole series.
    pub rrule: Option<String>,
    /// Occurrences of the series that were cancelled (`EXDATE`), for a whole series.
    pub exdates: Vec<DateTime<Utc>>,
    /// The original start of the one occurrence this message is about (`RECURRENCE-ID`).
    pub recurrence_id: Option<DateTime<Utc>>,
    pub organizer: Person,
    pub attendees: Vec<Attendee>,
    /// When the change happened (`DTSTAMP`).
    pub stamp: DateTime<Utc>,
}

/// What a recording notice says about the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFacts {
    pub recording_id: Uuid,
    pub duration_seconds: Option<i64>,
    /// Why processing failed, for `RecordingFailed`.
    pub error: Option<String>,
}

/// One message to one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub meeting_id: Uuid,
    /// The meeting's title when the notice was written.
    pub title: String,
    /// The meeting's start (the first occurrence's, for a series) and time zone.
    pub start: DateTime<Utc>,
    pub timezone: String,
    pub duration_minutes: i32,
    pub to: Person,
    /// Who the message comes from (the host), for the greeting.
    pub host: Person,
    /// Set for invitations, updates and cancellations.
    pub event: Option<CalendarEvent>,
    /// Set for recording notices.
    pub recording: Option<RecordingFacts>,
}

/// What a webhook event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookKind {
    #[serde(rename = "meeting.started")]
    MeetingStarted,
    #[serde(rename = "meeting.ended")]
    MeetingEnded,
    #[serde(rename = "participant.joined")]
    ParticipantJoined,
    #[serde(rename = "participant.left")]
    ParticipantLeft,
    #[serde(rename = "recording.ready")]
    RecordingReady,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 5] = [
        WebhookKind::MeetingStarted,
        WebhookKind::MeetingEnded,
        WebhookKind::ParticipantJoined,
        WebhookKind::ParticipantLeft,
        WebhookKind::RecordingReady,
    ];

    /// The name receivers see (`"event"` in the body, `X-Parley-Event`) and `events` lists.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::MeetingStarted => "meeting.started",
            WebhookKind::MeetingEnded => "meeting.ended",
            WebhookKind::ParticipantJoined => "participant.joined",
            WebhookKind::ParticipantLeft => "participant.left",
            WebhookKind::RecordingReady => "recording.ready",
        }
    }
}

impl fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WebhookKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        WebhookKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = WebhookKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown webhook event `{s}` (known: {})", known.join(", "))
        })
    }
}

/// The meeting a webhook event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookMeeting {
    pub id: Uuid,
    pub title: String,
}

/// The participant a `participant.*` event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookParticipant {
    pub user_id: Uuid,
    pub display_name: String,
    /// `parley_core::model::Role`, e.g. `host`, `attendee`.
    pub role: String,
    /// Why they left (`participant.left`): `left`, `removed`, `timeout`, `meeting_ended`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One webhook event: the JSON body every subscribed endpoint receives, stored once and sent
/// byte for byte the same on every attempt (the signature covers exactly these bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique per event: receivers drop a repeated delivery by it.
    pub id: Uuid,
    pub event: WebhookKind,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    pub meeting: WebhookMeeting,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<WebhookParticipant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingFacts>,
    /// How long the meeting ran (`meeting.ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

/// The iCalendar `RRULE` value of a series whose expansion gave `occurrences` (in order).
///
/// Mirrors [`RecurrenceRule::expand`]: weeks start on Monday (`WKST=MO`), a monthly series skips
/// months without its day (as RFC 5545 does), and the end is written as `COUNT`, or as `UNTIL`
/// at the last occurrence's UTC instant, so the calendar expands exactly the stored occurrences.
pub fn rrule(rule: &RecurrenceRule, occurrences: &[DateTime<Utc>]) -> String {
    let freq = match rule.frequency {
        Frequency::Daily => "DAILY",
        Frequency::Weekly => "WEEKLY",
        Frequency::Monthly => "MONTHLY",
    };
    let mut out = format!("FREQ={freq}");
    if rule.interval != 1 {
        out.push_str(&format!(";INTERVAL={}", rule.interval));
    }
    if !rule.days.is_empty() {
        let days: Vec<&str> = rule.days.iter().map(|d| ical_day(*d)).collect();
        out.push_str(&format!(";BYDAY={}", days.join(",")));
    }
    match (rule.end, occurrences.last()) {
        (SeriesEnd::Until(_), Some(last)) => out.push_str(&format!(";UNTIL={}", last.format("%Y%m%dT%H%M%SZ"))),
        _ => out.push_str(&format!(";COUNT={}", occurrences.len())),
    }
    out.push_str(";WKST=MO");
    out
}

fn ical_day(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, d, h, 0, 0).single().unwrap()
    }

    #[test]
    fn count_rules_keep_their_count_and_weekdays() {
        let rule = RecurrenceRule::new(Frequency::Weekly, None, &["wed".into(), "Mon".into()], None, Some(4)).unwrap();
        let occ = [at(1, 9), at(3, 9), at(8, 9), at(10, 9)];
        assert_eq!(rrule(&rule, &occ), "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4;WKST=MO");
    }

    #[test]
    fn until_rules_end_at_the_last_occurrence_in_utc() {
        let until = NaiveDate::from_ymd_opt(2027, 3, 9).unwrap();
        let rule = RecurrenceRule::new(Frequency::Daily, Some(2), &[], Some(until), None).unwrap();
        let occ = [at(1, 17), at(3, 17), at(5, 17), at(7, 17), at(9, 17)];
        assert_eq!(rrule(&rule, &occ), "FREQ=DAILY;INTERVAL=2;UNTIL=20270309T170000Z;WKST=MO");
    }

    #[test]
    fn webhook_kinds_parse_and_serialise_as_their_dotted_names() {
        for k in WebhookKind::ALL {
            assert_eq!(k.as_str().parse::<WebhookKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
        }
        let err = "meeting.exploded".parse::<WebhookKind>().unwrap_err();
        assert!(err.contains("meeting.started"), "{err}");
    }

    #[test]
    fn kinds_serialise_as_their_column_names() {
        for k in [
            NoticeKind::Invitation,
            NoticeKind::Update,
            NoticeKind::Cancellation,
            NoticeKind::Reminder,
            NoticeKind::RecordingReady,
            NoticeKind::RecordingFailed,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.as_str().into()));
        }
    }
}
