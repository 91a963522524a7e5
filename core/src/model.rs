//! The vocabulary of meetings, shared by every layer.
//!
//! Each enum has one canonical lowercase string form (`as_str` / `FromStr`), which is what the
//! database stores (a plain text column with a CHECK constraint, identical on PostgreSQL and
//! SQLite) and what JSON carries.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An enum string that is not one of the allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} (expected one of: {allowed})")]
pub struct UnknownVariant {
    /// Which enum was being parsed, e.g. `meeting_type`.
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted values, comma separated.
    pub allowed: &'static str,
}

/// Declares a string-backed enum with `as_str`, `Display`, `FromStr`, serde and `ALL`.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident as $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical string form stored in the database and sent as JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        kind: $kind,
                        value: s.to_owned(),
                        allowed: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// What kind of meeting this is.
    MeetingType as "meeting_type" {
        /// A one-off meeting at a set time.
        Scheduled => "scheduled",
        /// Started right away, no scheduled time to speak of.
        Instant => "instant",
        /// One occurrence of a recurring series.
        Recurring => "recurring",
        /// Panelists speak, attendees watch.
        Webinar => "webinar",
    }
}

string_enum! {
    /// Where a meeting is in its life.
    MeetingStatus as "meeting_status" {
        /// Created, not started yet.
        Scheduled => "scheduled",
        /// Live: a meeting actor owns it.
        Active => "active",
        /// Finished; `ended_at` and `actual_duration_seconds` are set.
        Ended => "ended",
        /// Called off by the host before it happened.
        Cancelled => "cancelled",
    }
}

string_enum! {
    /// A participant's role in one meeting.
    Role as "role" {
        /// Owns the meeting; exactly one per meeting.
        Host => "host",
        /// May do everything the host does except end the meeting for all or demote the host.
        CoHost => "co_host",
        /// Webinar speaker.
        Panelist => "panelist",
        /// Everybody else.
        Attendee => "attendee",
    }
}

impl Role {
    /// Hosts and co-hosts run the meeting: they skip the waiting room and may do host actions.
    pub fn is_moderator(self) -> bool {
        matches!(self, Role::Host | Role::CoHost)
    }
}

string_enum! {
    /// Whether an invitee answered the invitation.
    InviteStatus as "invite_status" {
        /// Invited, no answer yet.
        Pending => "pending",
        /// Will attend.
        Accepted => "accepted",
        /// Will not attend.
        Declined => "declined",
    }
}

string_enum! {
    /// Who may share their screen.
    ScreenSharePolicy as "screen_share" {
        /// Only the host and co-hosts.
        HostOnly => "host_only",
        /// Anyone in the meeting (one at a time).
        All => "all",
    }
}

string_enum! {
    /// Whether a user account was registered or only exists because somebody invited its email.
    UserStatus as "user_status" {
        /// Created by an administrator; can sign in.
        Active => "active",
        /// Created implicitly by an invitation to an unknown email.
        Pending => "pending",
    }
}

string_enum! {
    /// A user's subscription plan (limits are enforced by later features, not yet).
    Plan as "plan" {
        /// The default for new and invited users.
        Free => "free",
        /// Paid individual plan.
        Pro => "pro",
        /// Paid team plan.
        Business => "business",
        /// Negotiated plan.
        Enterprise => "enterprise",
    }
}

string_enum! {
    /// How far a recording has got, from capture through the processing pipeline.
    ProcessingStatus as "processing_status" {
        /// The media node is capturing it.
        Recording => "recording",
        /// Captured and in object storage, waiting for a worker.
        Queued => "queued",
        /// A worker is making the MP4, thumbnail and transcript (`progress` says how far).
        Processing => "processing",
        /// All outputs are in object storage (the seed's `completed`).
        Ready => "ready",
        /// Gave up; `error` says why.
        Failed => "failed",
    }
}

string_enum! {
    /// How the composed recording lays out video.
    RecordingLayout as "recording_layout" {
        /// The active speaker large (a screen share larger still), the others in a strip.
        Speaker => "speaker",
        /// Everyone in a grid.
        Gallery => "gallery",
    }
}

string_enum! {
    /// How often a recurring series repeats.
    Frequency as "frequency" {
        /// Every day (or only on `days`, if given).
        Daily => "daily",
        /// Every week on `days` (default: the weekday of the first occurrence).
        Weekly => "weekly",
        /// Every month on the day-of-month of the first occurrence.
        Monthly => "monthly",
    }
}

/// The per-meeting settings the host chooses at creation time and may change later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeetingSettings {
    /// Non-moderators wait until admitted.
    pub waiting_room: bool,
    /// The host may record.
    pub recording_allowed: bool,
    /// Participants join with their microphone muted.
    pub mute_on_entry: bool,
    /// Participants join with their camera on.
    pub video_on_entry: bool,
    /// Who may share their screen.
    pub screen_share: ScreenSharePolicy,
    /// The meeting's other participants (invited, or who joined) may watch its recordings; the
    /// host and co-hosts always may.
    pub share_recordings: bool,
    /// Minutes before the start at which every invitee is reminded (0: no reminder; at most
    /// [`MAX_REMINDER_MINUTES`]).
    pub reminder_minutes: u16,
}

/// The longest lead time of a reminder: one week.
pub const MAX_REMINDER_MINUTES: u16 = 7 * 24 * 60;

impl Default for MeetingSettings {
    /// What a production conferencing user expects from a new meeting: a waiting room, recording
    /// allowed, microphones open, cameras on, only hosts share screens, recordings for the
    /// hosts only, a reminder ten minutes before the start.
    fn default() -> Self {
        MeetingSettings {
            waiting_room: true,
            recording_allowed: true,
            mute_on_entry: false,
            video_on_entry: true,
            screen_share: ScreenSharePolicy::HostOnly,
            share_recordings: false,
            reminder_minutes: 10,
        }
    }
}

/// A partial update of [`MeetingSettings`]: absent fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingSettingsPatch {
    pub waiting_room: Option<bool>,
    pub recording_allowed: Option<bool>,
    pub mute_on_entry: Option<bool>,
    pub video_on_entry: Option<bool>,
    pub screen_share: Option<ScreenSharePolicy>,
    pub share_recordings: Option<bool>,
    pub reminder_minutes: Option<u16>,
}

impl MeetingSettingsPatch {
    /// Applies the present fields to `s`.
    pub fn apply(&self, s: &mut MeetingSettings) {
        if let Some(v) = self.waiting_room {
            s.waiting_room = v;
        }
        if let Some(v) = self.recording_allowed {
            s.recording_allowed = v;
        }
        if let Some(v) = self.mute_on_entry {
            s.mute_on_entry = v;
        }
        if let Some(v) = self.video_on_entry {
            s.video_on_entry = v;
        }
        if let Some(v) = self.screen_share {
            s.screen_share = v;
        }
        if let Some(v) = self.share_recordings {
            s.share_recordings = v;
        }
        if let Some(v) = self.reminder_minutes {
            s.reminder_minutes = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_round_trips_through_its_string_form() {
        for v in Role::ALL {
            assert_eq!(v.as_str().parse::<Role>().unwrap(), *v);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{}\"", v.as_str()));
        }
        for v in MeetingType::ALL {
            assert_eq!(v.as_str().parse::<MeetingType>().unwrap(), *v);
        }
        for v in MeetingStatus::ALL {
            assert_eq!(v.as_str().parse::<MeetingStatus>().unwrap(), *v);
        }
        for v in ScreenSharePolicy::ALL {
            assert_eq!(v.as_str().parse::<ScreenSharePolicy>().unwrap(), *v);
        }
    }

    #[test]
    fn unknown_variant_names_the_allowed_values() {
        let err = "boss".parse::<Role>().unwrap_err();
        assert_eq!(err.kind, "role");
        assert!(err.to_string().contains("co_host"), "{err}");
    }

    #[test]
    fn settings_patch_touches_only_present_fields() {
        let mut s = MeetingSettings::default();
        let p: MeetingSettingsPatch = serde_json::from_str(r#"{"screen_share": "all"}"#).unwrap();
        p.apply(&mut s);
        assert_eq!(s.screen_share, ScreenSharePolicy::All);
        assert_eq!(s.waiting_room, MeetingSettings::default().waiting_room);
    }

    #[test]
    fn settings_reject_unknown_fields_and_fill_defaults() {
        let s: MeetingSettings = serde_json::from_str(r#"{"mute_on_entry": true}"#).unwrap();
        assert!(s.mute_on_entry);
        assert!(s.waiting_room, "unspecified fields keep their defaults");
        assert!(serde_json::from_str::<MeetingSettings>(r#"{"wating_room": true}"#).is_err());
    }
}
