//! The WebSocket protocol: requests, replies and events, and their two encodings.
//!
//! Text frames carry JSON, binary frames carry MessagePack (rmp-serde, maps with field names) of
//! the same types; a reply uses the encoding of the request it answers. The same types cross the
//! cluster, so every one of them round-trips through both encodings.
//!
//! - Request: `{"id": <u64>, "type": "<name>", …fields}`.
//! - Reply: `{"reply_to": <id>, "ok": true, …}` or
//!   `{"reply_to": <id>, "ok": false, "error": {"code", "message"}}`.
//! - Event: `{"event": "<name>", "meeting_id": "…", …}`.
//!
//! [`decode_request`] reads a frame in two stages (a generic value, then the typed request) so
//! that every failure has its own error code: not a map, no `id`, unknown `type`, missing or
//! mistyped field. Limits ([`MAX_FRAME_BYTES`], [`MAX_TEXT_BYTES`]) are enforced here too.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::Role;

/// Largest frame accepted, in bytes (64 KiB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest chat/broadcast text, in bytes (4 KiB).
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Most breakout rooms.
pub const MAX_BREAKOUT_ROOMS: u32 = 50;

/// Which encoding a frame used; replies use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A text frame with JSON.
    Json,
    /// A binary frame with MessagePack.
    MessagePack,
}

/// A client request (the `type` tag selects the variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Authenticate a connection opened without a token; only valid as its first frame.
    Auth {
        token: String,
    },
    /// Host (or co-host) starts a scheduled meeting and joins it.
    Start {
        meeting_id: Uuid,
        /// The name shown in this meeting (default: the account's).
        #[serde(default)]
        display_name: Option<String>,
    },
    /// Join a live meeting (may land in the waiting room).
    Join {
        meeting_id: Uuid,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        display_name: Option<String>,
    },
    /// Take one's seat back after a lost connection (e.g. its node died), on any node, without
    /// the waiting room: `resume_token` is the one the `joined` reply gave.
    Resume {
        meeting_id: Uuid,
        resume_token: String,
        /// The `seq` of the last event this client saw: the `joined` reply then carries every
        /// event after it (`missed`), so nothing is lost or repeated across the gap.
        #[serde(default)]
        last_seq: Option<u64>,
    },
    /// Leave the meeting (the connection stays open).
    Leave,
    /// Keeps presence alive; send every 10 s.
    Heartbeat,
    /// Moderator: let one waiting user in.
    Admit {
        user_id: Uuid,
    },
    /// Moderator: let everybody waiting in.
    AdmitAll,
    /// Moderator: refuse a waiting user.
    Deny {
        user_id: Uuid,
    },
    /// Mute or unmute oneself.
    Mute {
        muted: bool,
    },
    /// Moderator: mute one participant (never unmute: see `ask_unmute`).
    MuteParticipant {
        user_id: Uuid,
    },
    /// Moderator: mute everybody except moderators.
    MuteAll,
    /// Moderator: ask a participant to unmute themselves.
    AskUnmute {
        user_id: Uuid,
    },
    /// Turn one's camera on or off.
    Video {
        on: bool,
    },
    RaiseHand,
    /// Lower one's own hand, or (moderator) someone else's.
    LowerHand {
        #[serde(default)]
        user_id: Option<Uuid>,
    },
    /// Chat to everyone in one's room, or privately `to` one participant.
    Chat {
        text: String,
        #[serde(default)]
        to: Option<Uuid>,
    },
    /// Moderator: allow or disable participant chat.
    SetChat {
        enabled: bool,
    },
    ScreenShareStart,
    ScreenShareStop,
    /// Host: make someone co-host (or back to attendee/panelist).
    SetRole {
        user_id: Uuid,
        role: Role,
    },
    /// Moderator: remove a participant (they cannot rejoin this session).
    Remove {
        user_id: Uuid,
    },
    /// Moderator: lock (nobody new may join) or unlock.
    Lock {
        locked: bool,
    },
    /// Moderator: start or stop recording.
    Recording {
        on: bool,
    },
    /// Host: end the meeting for everybody.
    EndMeeting,
    /// Moderator: plan breakout rooms, `count` rooms filled round-robin or explicit assignments.
    BreakoutsCreate {
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        assignments: Option<BTreeMap<Uuid, u32>>,
    },
    /// Moderator: send everybody to their assigned rooms.
    BreakoutsOpen,
    /// Moderator: bring everybody back to the main room.
    BreakoutsClose,
    /// Move oneself to a room (while rooms are open).
    BreakoutJoin {
        room: u32,
    },
    /// Go back to the main room.
    BreakoutReturn,
    /// Moderator: a message to every room.
    BreakoutsBroadcast {
        text: String,
    },
    /// WebRTC: the client's SDP offer (first connection, or its own renegotiation: a track
    /// added or removed). `sources` names what each published track is, by its `msid` track id
    /// (the browser's `MediaStreamTrack.id`). Answered with `answer`.
    Offer {
        sdp: String,
        #[serde(default)]
        sources: BTreeMap<String, MediaSource>,
    },
    /// WebRTC: the client's answer to an `offer` event (server renegotiation).
    Answer {
        sdp: String,
    },
    /// WebRTC: one trickled ICE candidate of the client (after its first `offer`).
    IceCandidate {
        candidate: IceCandidate,
    },
    /// Which video this connection receives: `gallery` (one page of cameras) or `speaker` (the
    /// active speaker), plus the screen share in both; `audio`: only the loudest N (default:
    /// everyone).
    Subscribe {
        view: ViewKind,
        #[serde(default)]
        page: u32,
        #[serde(default = "default_page_size")]
        page_size: u32,
        #[serde(default)]
        audio: Option<u32>,
    },
    /// Moderator: turn one participant's camera off (never on: only they can). Last, as it
    /// came last (`REQUEST_TYPES` is in declaration order).
    StopVideo {
        user_id: Uuid,
    },
}

fn default_page_size() -> u32 {
    MAX_GALLERY_PAGE
}

/// Most video tiles on one gallery page.
pub const MAX_GALLERY_PAGE: u32 = 25;
/// Largest SDP accepted, in bytes (a browser offer with simulcast is 5–10 KiB).
pub const MAX_SDP_BYTES: usize = 32 * 1024;

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    Camera,
    Microphone,
    Screen,
}

impl MediaSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaSource::Camera => "camera",
            MediaSource::Microphone => "microphone",
            MediaSource::Screen => "screen",
        }
    }

    pub fn parse(s: &str) -> Option<MediaSource> {
        match s {
            "camera" => Some(MediaSource::Camera),
            "microphone" => Some(MediaSource::Microphone),
            "screen" => Some(MediaSource::Screen),
            _ => None,
        }
    }
}

/// The layout a `subscribe` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    Gallery,
    Speaker,
}

/// An ICE candidate in the browser's `RTCIceCandidateInit` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, rename = "usernameFragment", skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A STUN or TURN server for clients, in the browser's `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl Request {
    /// The request's `type` (what logs, traces and metrics call it).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Auth { .. } => REQUEST_TYPES[0],
            Request::Start { .. } => REQUEST_TYPES[1],
            Request::Join { .. } => REQUEST_TYPES[2],
            Request::Resume { .. } => REQUEST_TYPES[3],
            Request::Leave => REQUEST_TYPES[4],
            Request::Heartbeat => REQUEST_TYPES[5],
            Request::Admit { .. } => REQUEST_TYPES[6],
            Request::AdmitAll => REQUEST_TYPES[7],
            Request::Deny { .. } => REQUEST_TYPES[8],
            Request::Mute { .. } => REQUEST_TYPES[9],
            Request::MuteParticipant { .. } => REQUEST_TYPES[10],
            Request::MuteAll => REQUEST_TYPES[11],
            Request::AskUnmute { .. } => REQUEST_TYPES[12],
            Request::Video { .. } => REQUEST_TYPES[13],
            Request::RaiseHand => REQUEST_TYPES[14],
            Request::LowerHand { .. } => REQUEST_TYPES[15],
            Request::Chat { .. } => REQUEST_TYPES[16],
            Request::SetChat { .. } => REQUEST_TYPES[17],
            Request::ScreenShareStart => REQUEST_TYPES[18],
            Request::ScreenShareStop => REQUEST_TYPES[19],
            Request::SetRole { .. } => REQUEST_TYPES[20],
            Request::Remove { .. } => REQUEST_TYPES[21],
            Request::Lock { .. } => REQUEST_TYPES[22],
            Request::Recording { .. } => REQUEST_TYPES[23],
            Request::EndMeeting => REQUEST_TYPES[24],
            Request::BreakoutsCreate { .. } => REQUEST_TYPES[25],
            Request::BreakoutsOpen => REQUEST_TYPES[26],
            Request::BreakoutsClose => REQUEST_TYPES[27],
            Request::BreakoutJoin { .. } => REQUEST_TYPES[28],
            Request::BreakoutReturn => REQUEST_TYPES[29],
            Request::BreakoutsBroadcast { .. } => REQUEST_TYPES[30],
            Request::Offer { .. } => REQUEST_TYPES[31],
            Request::Answer { .. } => REQUEST_TYPES[32],
            Request::IceCandidate { .. } => REQUEST_TYPES[33],
            Request::Subscribe { .. } => REQUEST_TYPES[34],
            Request::StopVideo { .. } => REQUEST_TYPES[35],
        }
    }

    /// Whether the media router (not the meeting's state machine) handles this request.
    pub fn is_media(&self) -> bool {
        matches!(
            self,
            Request::Offer { .. } | Request::Answer { .. } | Request::IceCandidate { .. } | Request::Subscribe { .. }
        )
    }

    /// Whether carrying this request out twice is the same as once (so it may be sent again
    /// when the first attempt's fate is unknown). Messages are not: a second is a second.
    pub fn is_repeatable(&self) -> bool {
        !matches!(self, Request::Chat { .. } | Request::BreakoutsBroadcast { .. })
    }
}

/// Every request `type`, for telling an unknown type from a malformed known one.
pub const REQUEST_TYPES: &[&str] = &[
    "auth",
    "start",
    "join",
    "resume",
    "leave",
    "heartbeat",
    "admit",
    "admit_all",
    "deny",
    "mute",
    "mute_participant",
    "mute_all",
    "ask_unmute",
    "video",
    "raise_hand",
    "lower_hand",
    "chat",
    "set_chat",
    "screen_share_start",
    "screen_share_stop",
    "set_role",
    "remove",
    "lock",
    "recording",
    "end_meeting",
    "breakouts_create",
    "breakouts_open",
    "breakouts_close",
    "breakout_join",
    "breakout_return",
    "breakouts_broadcast",
    "offer",
    "answer",
    "ice_candidate",
    "subscribe",
    "stop_video",
];

/// Machine-readable error codes of replies (and of close reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON / MessagePack, or not a map.
    MalformedFrame,
    /// Over [`MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// No `id`, or not an unsigned integer.
    InvalidId,
    /// `type` missing or not one we know.
    UnknownType,
    /// A field is missing, mistyped or out of range.
    InvalidField,
    /// A text over [`MAX_TEXT_BYTES`].
    TextTooLong,
    /// Too many requests; slow down.
    RateLimited,
    /// The token is missing, invalid or expired.
    Unauthorized,
    /// Only a host/co-host (or the host alone) may do that.
    Forbidden,
    /// The request needs a joined meeting.
    NotInMeeting,
    /// Already in a meeting on this connection.
    AlreadyInMeeting,
    /// No such meeting.
    MeetingNotFound,
    /// The meeting is not live any more (a request to a meeting that has just ended).
    MeetingNotActive,
    /// Join: the meeting is scheduled and its host has not started it.
    MeetingNotStarted,
    /// Join: the meeting was cancelled, or ended and cannot be restarted.
    MeetingNotAvailable,
    /// Join: too many wrong passwords recently.
    TooManyAttempts,
    /// The meeting is locked.
    MeetingLocked,
    /// Wrong or missing meeting password.
    WrongPassword,
    /// Removed from this meeting earlier.
    RemovedFromMeeting,
    /// Chat is disabled by the host.
    ChatDisabled,
    /// Someone else is sharing.
    ScreenShareBusy,
    /// The meeting's policy does not allow that.
    NotAllowed,
    /// The user is not a participant / not waiting.
    UserNotFound,
    /// No breakout rooms planned / not open.
    NoBreakouts,
    /// The room does not exist.
    InvalidRoom,
    /// Recording is not allowed for this meeting.
    RecordingNotAllowed,
    /// The resume token is invalid, or the seat it names is gone (timed out, removed): join.
    ResumeFailed,
    /// The server cannot serve right now (storage unavailable).
    Unavailable,
    /// The SDP could not be parsed or applied (malformed, no usable media section).
    InvalidSdp,
    /// Not now in the WebRTC negotiation: an answer with no offer of ours pending, a candidate
    /// before the first offer, or an offer while ours awaits its answer (answer ours first).
    NegotiationState,
    /// No media connection could be set up (no UDP port free on the media node).
    MediaUnavailable,
    /// A bug; logged.
    Internal,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotInMeeting => "not_in_meeting",
            ErrorCode::AlreadyInMeeting => "already_in_meeting",
            ErrorCode::MeetingNotFound => "meeting_not_found",
            ErrorCode::MeetingNotActive => "meeting_not_active",
            ErrorCode::MeetingNotStarted => "meeting_not_started",
            ErrorCode::MeetingNotAvailable => "meeting_not_available",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::MeetingLocked => "meeting_locked",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::RemovedFromMeeting => "removed_from_meeting",
            ErrorCode::ChatDisabled => "chat_disabled",
            ErrorCode::ScreenShareBusy => "screen_share_busy",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::NoBreakouts => "no_breakouts",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::RecordingNotAllowed => "recording_not_allowed",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::NegotiationState => "negotiation_state",
            ErrorCode::MediaUnavailable => "media_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl From<crate::join::Refusal> for ErrorCode {
    fn from(r: crate::join::Refusal) -> ErrorCode {
        use crate::join::Refusal;
        match r {
            Refusal::MeetingNotStarted => ErrorCode::MeetingNotStarted,
            Refusal::MeetingNotAvailable => ErrorCode::MeetingNotAvailable,
            Refusal::WrongPassword => ErrorCode::WrongPassword,
            Refusal::TooManyAttempts => ErrorCode::TooManyAttempts,
            Refusal::NotAModerator => ErrorCode::Forbidden,
        }
    }
}

/// The `error` object of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// A request that could not be decoded: the id (if one was readable) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError { id, code, message: message.into() }
    }
}

/// Decodes one frame into `(id, request)`, validating limits.
pub fn decode_request(frame: &[u8], encoding: Encoding) -> Result<(u64, Request), DecodeError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::new(
            None,
            ErrorCode::FrameTooLarge,
            format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
        ));
    }
    let value: Value = match encoding {
        Encoding::Json => serde_json::from_slice(frame)
            .map_err(|e| DecodeError::new(None, ErrorCode::MalformedFrame, format!("not JSON: {e}")))?,
        Encoding::MessagePack => rmp_serde::from_slice(frame)
            .map_err(|e| DecodeError::new(None, ErrorCode::MalformedFrame, format!("not MessagePack: {e}")))?,
    };
    let Value::Object(mut map) = value else {
        return Err(DecodeError::new(None, ErrorCode::MalformedFrame, "a request is a map with `id` and `type`"));
    };
    let id = match map.remove("id") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| DecodeError::new(None, ErrorCode::InvalidId, "`id` must be an unsigned 64-bit integer"))?,
        Some(_) => return Err(DecodeError::new(None, ErrorCode::InvalidId, "`id` must be an unsigned 64-bit integer")),
        None => return Err(DecodeError::new(None, ErrorCode::InvalidId, "`id` is required")),
    };
    match map.get("type") {
        Some(Value::String(t)) if REQUEST_TYPES.contains(&t.as_str()) => {}
        Some(Value::String(t)) => {
            let shown: String = t.chars().take(64).collect();
            return Err(DecodeError::new(Some(id), ErrorCode::UnknownType, format!("unknown request type `{shown}`")));
        }
        _ => return Err(DecodeError::new(Some(id), ErrorCode::UnknownType, "`type` (a string) is required")),
    }
    if let Some(field) = field_with_nul(&map) {
        // PostgreSQL cannot store NUL in text; no field has a use for one.
        return Err(DecodeError::new(
            Some(id),
            ErrorCode::InvalidField,
            format!("`{field}` must not contain NUL characters"),
        ));
    }
    let fields = map.len();
    let request: Request = serde_json::from_value(Value::Object(map))
        .map_err(|e| DecodeError::new(Some(id), ErrorCode::InvalidField, e.to_string()))?;
    // serde's `deny_unknown_fields` does not apply to variants without fields (`heartbeat`,
    // `leave`, …): such a request must consist of its `type` alone.
    if fields > 1 && request.has_no_fields() {
        return Err(DecodeError::new(Some(id), ErrorCode::InvalidField, "this request takes no fields besides `type`"));
    }
    request.validate().map_err(|(code, message)| DecodeError::new(Some(id), code, message))?;
    Ok((id, request))
}

/// The name of the first field whose string value (at any depth) holds a NUL character.
fn field_with_nul(map: &serde_json::Map<String, Value>) -> Option<String> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    map.iter().find(|(k, v)| k.contains('\0') || has_nul(v)).map(|(k, _)| k.replace('\0', "\\0"))
}

impl Request {
    /// Whether this kind of request carries nothing but its `type` (the variants without
    /// fields; a match, not a serialisation, since every request is asked).
    fn has_no_fields(&self) -> bool {
        matches!(
            self,
            Request::Leave
                | Request::Heartbeat
                | Request::AdmitAll
                | Request::MuteAll
                | Request::RaiseHand
                | Request::ScreenShareStart
                | Request::ScreenShareStop
                | Request::EndMeeting
                | Request::BreakoutsOpen
                | Request::BreakoutsClose
                | Request::BreakoutReturn
        )
    }

    /// Limits that serde cannot express.
    fn validate(&self) -> Result<(), (ErrorCode, String)> {
        let text_limit = |t: &str| {
            if t.len() > MAX_TEXT_BYTES {
                Err((ErrorCode::TextTooLong, format!("text is limited to {MAX_TEXT_BYTES} bytes")))
            } else if t.trim().is_empty() {
                Err((ErrorCode::InvalidField, "text must not be empty".to_owned()))
            } else {
                Ok(())
            }
        };
        match self {
            Request::Chat { text, .. } | Request::BreakoutsBroadcast { text } => text_limit(text),
            Request::Join { display_name: Some(n), .. } | Request::Start { display_name: Some(n), .. }
                if n.trim().is_empty() || n.chars().count() > MAX_DISPLAY_NAME_CHARS =>
            {
                Err((ErrorCode::InvalidField, format!("display_name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters")))
            }
            Request::Join { password: Some(p), .. } if p.len() > 256 => {
                Err((ErrorCode::InvalidField, "password is too long".to_owned()))
            }
            Request::Offer { sdp, .. } | Request::Answer { sdp } if sdp.len() > MAX_SDP_BYTES => {
                Err((ErrorCode::InvalidSdp, format!("SDP is limited to {MAX_SDP_BYTES} bytes")))
            }
            Request::Offer { sdp, .. } | Request::Answer { sdp } if !sdp.trim_start().starts_with("v=0") => {
                Err((ErrorCode::InvalidSdp, "SDP must start with `v=0`".to_owned()))
            }
            Request::IceCandidate { candidate } if candidate.candidate.len() > 1024 => {
                Err((ErrorCode::InvalidField, "candidate is too long".to_owned()))
            }
            Request::Subscribe { page_size, .. } if !(1..=MAX_GALLERY_PAGE).contains(page_size) => {
                Err((ErrorCode::InvalidField, format!("page_size must be 1..={MAX_GALLERY_PAGE}")))
            }
            Request::Subscribe { audio: Some(0), .. } => {
                Err((ErrorCode::InvalidField, "audio (loudest N) must be at least 1".to_owned()))
            }
            Request::BreakoutsCreate { count, assignments } => match (count, assignments) {
                (Some(c), None) if (1..=MAX_BREAKOUT_ROOMS).contains(c) => Ok(()),
                (None, Some(a)) if !a.is_empty() && a.values().all(|r| (1..=MAX_BREAKOUT_ROOMS).contains(r)) => Ok(()),
                _ => Err((
                    ErrorCode::InvalidField,
                    format!(
                        "give either `count` (1..={MAX_BREAKOUT_ROOMS}) or non-empty `assignments` of rooms 1..={MAX_BREAKOUT_ROOMS}"
                    ),
                )),
            },
            _ => Ok(()),
        }
    }
}

/// Why someone is no longer in the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They sent `leave`.
    Left,
    /// Their connection closed.
    Disconnected,
    /// Their presence expired (no heartbeat within the TTL).
    Timeout,
    /// A moderator removed them.
    Removed,
    /// A moderator refused them in the waiting room.
    Denied,
    /// The meeting ended.
    MeetingEnded,
    /// They joined again from another connection.
    Replaced,
}

/// Why a meeting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The host sent `end_meeting`.
    HostEnded,
    /// Everybody left and the grace period passed.
    Empty,
}

/// A participant as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantView {
    pub user_id: Uuid,
    pub display_name: String,
    pub role: Role,
    pub audio_muted: bool,
    pub video_on: bool,
    pub hand_raised: bool,
    /// When the hand went up (Unix ms), while it is up: the order moderators take hands in.
    #[serde(default)]
    pub hand_raised_at: Option<i64>,
    pub screen_sharing: bool,
    /// Unix milliseconds.
    pub joined_at: i64,
    /// Breakout room, `None` in the main room.
    pub room: Option<u32>,
}

/// Someone in the waiting room (shown to moderators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingView {
    pub user_id: Uuid,
    pub display_name: String,
    /// Unix milliseconds.
    pub since: i64,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Order within the meeting, from 1.
    pub seq: u64,
    pub from: Uuid,
    pub from_name: String,
    /// A private message's recipient.
    pub to: Option<Uuid>,
    /// The breakout room it was sent in (`None`: main room).
    pub room: Option<u32>,
    pub text: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// Planned or open breakout rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakoutsView {
    pub rooms: u32,
    pub assignments: BTreeMap<Uuid, u32>,
    pub open: bool,
}

/// The live state of a meeting as one participant may see it (sent on join/admission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingSnapshot {
    pub meeting_id: Uuid,
    pub host_user_id: Uuid,
    pub locked: bool,
    pub chat_enabled: bool,
    pub recording: bool,
    pub screen_sharer: Option<Uuid>,
    pub participants: Vec<ParticipantView>,
    /// Only moderators see the waiting room.
    pub waiting: Vec<WaitingView>,
    pub breakouts: Option<BreakoutsView>,
    /// The recent messages this participant may see, oldest first.
    pub chat: Vec<ChatMessage>,
}

/// A server event (the `event` tag selects the variant); sent wrapped in an [`EventFrame`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ParticipantJoined {
        participant: ParticipantView,
    },
    ParticipantLeft {
        user_id: Uuid,
        reason: LeaveReason,
    },
    /// To moderators: someone is waiting.
    WaitingRoomUser {
        user_id: Uuid,
        display_name: String,
        position: usize,
    },
    /// To moderators: someone left the waiting room without being admitted.
    WaitingRoomLeft {
        user_id: Uuid,
        reason: LeaveReason,
    },
    /// To the admitted user (with the meeting and, filled in by the owner node, its media
    /// node) and to everybody (without).
    Admitted {
        user_id: Uuid,
        meeting: Option<Box<MeetingSnapshot>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaNode>,
        /// To the admitted user: proof of the seat for `resume`, as `joined` gives.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    /// To the refused user.
    Denied {
        user_id: Uuid,
    },
    Muted {
        user_id: Uuid,
        muted: bool,
        by: Option<Uuid>,
    },
    /// To one participant: a moderator asks them to unmute.
    AskedToUnmute {
        by: Uuid,
    },
    VideoChanged {
        user_id: Uuid,
        on: bool,
        /// The moderator who turned it off (`stop_video`); `None` when the participant did.
        by: Option<Uuid>,
    },
    HandRaised {
        user_id: Uuid,
        /// Unix ms (the participant's `hand_raised_at`).
        at: i64,
    },
    HandLowered {
        user_id: Uuid,
        by: Option<Uuid>,
    },
    Chat {
        message: ChatMessage,
    },
    ChatSettingChanged {
        enabled: bool,
    },
    ScreenShareStarted {
        user_id: Uuid,
    },
    ScreenShareStopped {
        user_id: Uuid,
    },
    RoleChanged {
        user_id: Uuid,
        role: Role,
    },
    /// To the removed user.
    Removed {
        user_id: Uuid,
        by: Uuid,
    },
    LockChanged {
        locked: bool,
    },
    RecordingStarted {
        by: Uuid,
    },
    RecordingStopped {
        by: Uuid,
    },
    /// To the hosts and co-hosts connected: a recording of this meeting was processed and can
    /// be watched (`GET /api/recordings/{recording_id}`).
    RecordingReady {
        recording_id: Uuid,
        duration_seconds: i64,
    },
    BreakoutsCreated {
        breakouts: BreakoutsView,
    },
    BreakoutsOpened {
        breakouts: BreakoutsView,
    },
    BreakoutMoved {
        user_id: Uuid,
        room: Option<u32>,
    },
    BreakoutsClosed,
    BreakoutsBroadcast {
        from: Uuid,
        text: String,
    },
    MeetingEnded {
        ended_by: Option<Uuid>,
        reason: EndReason,
    },
    /// WebRTC, to one participant: the server's offer (tracks to receive were added or
    /// removed); reply with an `answer` request.
    Offer {
        sdp: String,
    },
    /// WebRTC, to one participant: a trickled ICE candidate of the server.
    IceCandidate {
        candidate: IceCandidate,
    },
    /// The dominant speaker changed (from RTP audio levels).
    ActiveSpeaker {
        user_id: Uuid,
    },
    /// To one participant: the server closed its media connection (ICE failed, the media
    /// router restarted): send a new `offer` to connect again.
    MediaClosed {
        reason: String,
    },
}

/// Where a meeting's media flows: the owner node's name and its media (UDP) address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaNode {
    pub node: String,
    pub media_addr: String,
    /// STUN/TURN servers for the client's `RTCPeerConnection`.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
}

/// An event on the wire: `{"event": …, "meeting_id": …, "seq": …, …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFrame {
    pub meeting_id: Uuid,
    /// The event's place in the meeting (see [`EventSeq`]); absent on media-session events
    /// (tracks, speakers, layers), which are not replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub event: Event,
}

impl EventFrame {
    /// A media-session event: no sequence number, never replayed.
    pub fn unsequenced(meeting_id: Uuid, event: Event) -> EventFrame {
        EventFrame { meeting_id, seq: None, event }
    }
}

/// How a meeting numbers its events: increasing for as long as the meeting exists, across
/// restarts and failovers, never reused. Each activation of the meeting (its fencing epoch,
/// which the database raises on every start or takeover) numbers in its own block:
/// `epoch × 10⁹ + n`. So a new owner never repeats a number the old one sent, whatever it
/// could read back; numbers are not contiguous across activations (or across audiences:
/// a client sees only the events meant for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSeq {
    next: u64,
    limit: u64,
}

impl EventSeq {
    /// Events per activation (the block size).
    pub const BLOCK: u64 = 1_000_000_000;

    /// The numbering of the activation with fencing epoch `epoch` (≥ 0).
    pub fn for_epoch(epoch: i64) -> EventSeq {
        let base = u64::try_from(epoch.max(0)).unwrap_or(0).saturating_mul(Self::BLOCK);
        EventSeq { next: base.saturating_add(1), limit: base.saturating_add(Self::BLOCK) }
    }

    /// The number before any event of this activation: every earlier event is at most this.
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// The next number. Past the block's end (a billion events in one activation) numbers go
    /// on increasing into the next block; the next activation then starts above them only if
    /// its epoch is higher still, so this is logged by the caller, never expected.
    pub fn take(&mut self) -> (u64, bool) {
        let n = self.next;
        self.next = self.next.saturating_add(1);
        (n, n >= self.limit)
    }
}

/// What a successful reply carries besides `ok` (tagged by `result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReplyData {
    /// In the meeting: its state and one's own view.
    Joined {
        meeting: Box<MeetingSnapshot>,
        you: ParticipantView,
        /// The node carrying the meeting's media (filled in by the node that owns the meeting).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaNode>,
        /// Proof of this seat for `resume`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// The `seq` of the meeting's last event before this snapshot: resume from it.
        #[serde(default)]
        seq: u64,
        /// On `resume` with `last_seq`: the events meant for this participant after it, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missed: Vec<EventFrame>,
    },
    /// Held in the waiting room at `position` (1 = next).
    Waiting { meeting_id: Uuid, position: usize },
    /// The request was carried out.
    Done,
    /// A chat message was sent.
    ChatSent { message: ChatMessage },
    /// WebRTC: the server's answer to the client's `offer`.
    Answer { sdp: String },
}

/// A reply to request `reply_to` (`None` when the request's id was unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub reply_to: Option<u64>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ReplyData>,
}

impl Reply {
    pub fn ok(reply_to: u64, data: ReplyData) -> Reply {
        Reply { reply_to: Some(reply_to), ok: true, error: None, data: Some(data) }
    }

    pub fn err(reply_to: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply { reply_to, ok: false, error: Some(ErrorBody { code, message: message.into() }), data: None }
    }
}

/// Encodes any protocol value in `encoding`.
///
/// MessagePack is written as maps with field names and in serde's *human-readable* mode, so
/// that ids travel as the same strings as in JSON (not as 16-byte arrays): one schema, two
/// encodings.
pub fn encode<T: Serialize>(value: &T, encoding: Encoding) -> Vec<u8> {
    match encoding {
        // Serialising these plain data types cannot fail; an empty frame would be a bug.
        Encoding::Json => serde_json::to_vec(value).unwrap_or_default(),
        Encoding::MessagePack => {
            let mut buf = Vec::new();
            let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map().with_human_readable();
            match value.serialize(&mut ser) {
                Ok(()) => buf,
                Err(_) => Vec::new(),
            }
        }
    }
}

/// Decodes any protocol value (used by clients, tests and the cluster).
pub fn decode<T: DeserializeOwned>(frame: &[u8], encoding: Encoding) -> Result<T, String> {
    match encoding {
        Encoding::Json => serde_json::from_slice(frame).map_err(|e| e.to_string()),
        Encoding::MessagePack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(frame).with_human_readable();
            T::deserialize(&mut de).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_req(v: Value) -> Result<(u64, Request), DecodeError> {
        decode_request(&serde_json::to_vec(&v).unwrap(), Encoding::Json)
    }

    fn msgpack_req(v: Value) -> Result<(u64, Request), DecodeError> {
        decode_request(&rmp_serde::to_vec_named(&v).unwrap(), Encoding::MessagePack)
    }

    #[test]
    fn the_same_request_decodes_from_json_and_messagepack() {
        let m = Uuid::new_v4();
        let v = json!({"id": 7, "type": "join", "meeting_id": m, "password": "pw"});
        let expected = (7, Request::Join { meeting_id: m, password: Some("pw".into()), display_name: None });
        assert_eq!(json_req(v.clone()).unwrap(), expected);
        assert_eq!(msgpack_req(v).unwrap(), expected);
        assert_eq!(json_req(json!({"id": 1, "type": "admit_all"})).unwrap(), (1, Request::AdmitAll));
    }

    #[test]
    fn every_request_type_is_listed_and_round_trips() {
        let u = Uuid::new_v4();
        let all = vec![
            Request::Auth { token: "t".into() },
            Request::Start { meeting_id: u, display_name: None },
            Request::Join { meeting_id: u, password: None, display_name: Some("A".into()) },
            Request::Resume { meeting_id: u, resume_token: "r".into(), last_seq: Some(7) },
            Request::Leave,
            Request::Heartbeat,
            Request::Admit { user_id: u },
            Request::AdmitAll,
            Request::Deny { user_id: u },
            Request::Mute { muted: true },
            Request::MuteParticipant { user_id: u },
            Request::MuteAll,
            Request::AskUnmute { user_id: u },
            Request::Video { on: false },
            Request::RaiseHand,
            Request::LowerHand { user_id: None },
            Request::Chat { text: "hi".into(), to: Some(u) },
            Request::SetChat { enabled: false },
            Request::ScreenShareStart,
            Request::ScreenShareStop,
            Request::SetRole { user_id: u, role: Role::CoHost },
            Request::Remove { user_id: u },
            Request::Lock { locked: true },
            Request::Recording { on: true },
            Request::EndMeeting,
            Request::BreakoutsCreate { count: Some(2), assignments: None },
            Request::BreakoutsOpen,
            Request::BreakoutsClose,
            Request::BreakoutJoin { room: 1 },
            Request::BreakoutReturn,
            Request::BreakoutsBroadcast { text: "5 minutes left".into() },
            Request::Offer { sdp: "v=0\r\n".into(), sources: BTreeMap::from([("t1".to_owned(), MediaSource::Camera)]) },
            Request::Answer { sdp: "v=0\r\n".into() },
            Request::IceCandidate {
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                },
            },
            Request::Subscribe { view: ViewKind::Speaker, page: 0, page_size: 25, audio: Some(3) },
            Request::StopVideo { user_id: u },
        ];
        assert_eq!(all.len(), REQUEST_TYPES.len());
        for (i, r) in all.into_iter().enumerate() {
            let mut v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["type"], REQUEST_TYPES[i], "REQUEST_TYPES is in declaration order");
            assert_eq!(r.kind(), REQUEST_TYPES[i], "kind() names the `type`");
            v["id"] = json!(i);
            for enc in [Encoding::Json, Encoding::MessagePack] {
                let frame = match enc {
                    Encoding::Json => serde_json::to_vec(&v).unwrap(),
                    Encoding::MessagePack => rmp_serde::to_vec_named(&v).unwrap(),
                };
                assert_eq!(decode_request(&frame, enc).unwrap(), (i as u64, r.clone()));
            }
        }
    }

    #[test]
    fn each_kind_of_bad_frame_has_its_code() {
        let code = |r: Result<(u64, Request), DecodeError>| r.unwrap_err().code;
        assert_eq!(code(decode_request(b"{not json", Encoding::Json)), ErrorCode::MalformedFrame);
        assert_eq!(code(decode_request(&[0xc1, 0xff, 0x00], Encoding::MessagePack)), ErrorCode::MalformedFrame);
        assert_eq!(code(json_req(json!([1, 2]))), ErrorCode::MalformedFrame);
        assert_eq!(code(json_req(json!({"type": "leave"}))), ErrorCode::InvalidId);
        assert_eq!(code(json_req(json!({"id": -1, "type": "leave"}))), ErrorCode::InvalidId);
        assert_eq!(code(json_req(json!({"id": 1e300, "type": "leave"}))), ErrorCode::InvalidId);
        let e = json_req(json!({"id": 3, "type": "dance"})).unwrap_err();
        assert_eq!((e.id, e.code), (Some(3), ErrorCode::UnknownType));
        assert_eq!(code(json_req(json!({"id": 3}))), ErrorCode::UnknownType);
        assert_eq!(code(json_req(json!({"id": 3, "type": 5}))), ErrorCode::UnknownType);
        let e = json_req(json!({"id": 4, "type": "join"})).unwrap_err();
        assert_eq!((e.id, e.code), (Some(4), ErrorCode::InvalidField));
        assert!(e.message.contains("meeting_id"), "{}", e.message);
        assert_eq!(code(json_req(json!({"id": 4, "type": "mute", "muted": "yes"}))), ErrorCode::InvalidField);
        assert_eq!(
            code(json_req(json!({"id": 4, "type": "mute", "muted": true, "extra": 1}))),
            ErrorCode::InvalidField
        );
        assert_eq!(code(json_req(json!({"id": 4, "type": "breakout_join", "room": 1e20}))), ErrorCode::InvalidField);
        assert_eq!(
            code(json_req(json!({"id": 5, "type": "chat", "text": "x".repeat(MAX_TEXT_BYTES + 1)}))),
            ErrorCode::TextTooLong
        );
        assert_eq!(code(json_req(json!({"id": 5, "type": "chat", "text": "   "}))), ErrorCode::InvalidField);
        assert_eq!(code(json_req(json!({"id": 6, "type": "breakouts_create"}))), ErrorCode::InvalidField);
        assert_eq!(code(json_req(json!({"id": 6, "type": "breakouts_create", "count": 0}))), ErrorCode::InvalidField);
        let big = vec![b' '; MAX_FRAME_BYTES + 1];
        assert_eq!(code(decode_request(&big, Encoding::Json)), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn replies_and_events_round_trip_in_both_encodings() {
        let m = Uuid::new_v4();
        let u = Uuid::new_v4();
        let frames = vec![
            EventFrame::unsequenced(m, Event::Muted { user_id: u, muted: true, by: None }),
            EventFrame { meeting_id: m, seq: Some(4_000_000_002), event: Event::BreakoutsClosed },
            EventFrame::unsequenced(m, Event::ParticipantLeft { user_id: u, reason: LeaveReason::Timeout }),
        ];
        for f in &frames {
            for enc in [Encoding::Json, Encoding::MessagePack] {
                assert_eq!(&decode::<EventFrame>(&encode(f, enc), enc).unwrap(), f);
            }
        }
        let packed: Value = rmp_serde::from_slice(&encode(&frames[0], Encoding::MessagePack)).unwrap();
        assert_eq!(packed["user_id"], json!(u.to_string()), "ids are strings in MessagePack too");
        let v = serde_json::to_value(&frames[0]).unwrap();
        assert_eq!(v, json!({"event": "muted", "meeting_id": m, "user_id": u, "muted": true, "by": null}));

        let replies = vec![
            Reply::ok(1, ReplyData::Done),
            Reply::ok(2, ReplyData::Waiting { meeting_id: m, position: 3 }),
            Reply::err(Some(3), ErrorCode::Forbidden, "hosts only"),
            Reply::err(None, ErrorCode::MalformedFrame, "not JSON"),
        ];
        for r in &replies {
            for enc in [Encoding::Json, Encoding::MessagePack] {
                assert_eq!(&decode::<Reply>(&encode(r, enc), enc).unwrap(), r);
            }
        }
        assert_eq!(serde_json::to_value(&replies[0]).unwrap(), json!({"reply_to": 1, "ok": true, "result": "done"}));
        assert_eq!(
            serde_json::to_value(&replies[2]).unwrap(),
            json!({"reply_to": 3, "ok": false, "error": {"code": "forbidden", "message": "hosts only"}})
        );
    }

    #[test]
    fn error_codes_serialise_as_their_str() {
        for c in [
            ErrorCode::MalformedFrame,
            ErrorCode::ScreenShareBusy,
            ErrorCode::RecordingNotAllowed,
            ErrorCode::Internal,
            ErrorCode::InvalidSdp,
            ErrorCode::NegotiationState,
            ErrorCode::MediaUnavailable,
            ErrorCode::MeetingNotStarted,
            ErrorCode::MeetingNotAvailable,
            ErrorCode::TooManyAttempts,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        }
    }

    #[test]
    fn a_join_refusal_has_the_same_code_over_websocket_as_over_rest() {
        use crate::join::Refusal;
        for r in [
            Refusal::MeetingNotStarted,
            Refusal::MeetingNotAvailable,
            Refusal::WrongPassword,
            Refusal::TooManyAttempts,
            Refusal::NotAModerator,
        ] {
            assert_eq!(ErrorCode::from(r).as_str(), r.code());
        }
    }

    #[test]
    fn unknown_fields_are_refused_for_requests_with_and_without_fields() {
        for v in [
            json!({"id": 9, "type": "heartbeat", "x": 1}),
            json!({"id": 9, "type": "leave", "extra": null}),
            json!({"id": 9, "type": "chat", "text": "hi", "colour": "red"}),
            json!({"id": 9, "type": "mute", "muted": true, "loud": true}),
        ] {
            let e = json_req(v.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{v}: {e:?}");
            assert_eq!(e.id, Some(9));
        }
        for t in REQUEST_TYPES {
            // Every type that decodes from its `type` alone refuses an extra field, whether
            // serde does (fields all optional) or `has_no_fields` (no fields at all).
            if json_req(json!({"id": 1, "type": t})).is_ok() {
                let e = json_req(json!({"id": 1, "type": t, "x": 1})).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidField, "{t}");
            }
        }
        assert!(json_req(json!({"id": 9, "type": "heartbeat"})).is_ok());
        assert!(json_req(json!({"id": 9, "type": "chat", "text": "hi", "to": null})).is_ok());
    }

    #[test]
    fn nul_characters_are_refused_in_every_string() {
        let m = "00000000-0000-0000-0000-000000000001";
        for v in [
            json!({"id": 3, "type": "chat", "text": "a\u{0}b"}),
            json!({"id": 3, "type": "join", "meeting_id": m, "display_name": "Eve\u{0}"}),
            json!({"id": 3, "type": "join", "meeting_id": m, "password": "\u{0}"}),
            json!({"id": 3, "type": "breakouts_broadcast", "text": "\u{0}"}),
        ] {
            let e = json_req(v.clone()).unwrap_err();
            assert_eq!((e.code, e.id), (ErrorCode::InvalidField, Some(3)), "{v}: {e:?}");
            assert!(e.message.contains("NUL"), "{}", e.message);
        }
    }

    #[test]
    fn media_requests_are_checked_before_the_router_sees_them() {
        let code = |v: Value| json_req(v).unwrap_err().code;
        assert_eq!(code(json!({"id": 1, "type": "offer", "sdp": "hello"})), ErrorCode::InvalidSdp);
        assert_eq!(
            code(json!({"id": 1, "type": "offer", "sdp": format!("v=0\r\n{}", "a".repeat(MAX_SDP_BYTES))})),
            ErrorCode::InvalidSdp
        );
        assert_eq!(code(json!({"id": 1, "type": "answer"})), ErrorCode::InvalidField);
        assert_eq!(
            code(json!({"id": 1, "type": "offer", "sdp": "v=0", "sources": {"t": "hologram"}})),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(json!({"id": 1, "type": "subscribe", "view": "gallery", "page_size": 26})),
            ErrorCode::InvalidField
        );
        assert_eq!(code(json!({"id": 1, "type": "subscribe", "view": "mosaic"})), ErrorCode::InvalidField);
        assert_eq!(code(json!({"id": 1, "type": "subscribe", "view": "speaker", "audio": 0})), ErrorCode::InvalidField);
        assert_eq!(
            code(json!({"id": 1, "type": "ice_candidate", "candidate": {"sdpMid": "0"}})),
            ErrorCode::InvalidField
        );
        let (_, r) = json_req(json!({"id": 1, "type": "subscribe", "view": "gallery"})).unwrap();
        assert_eq!(
            r,
            Request::Subscribe { view: ViewKind::Gallery, page: 0, page_size: MAX_GALLERY_PAGE, audio: None }
        );
        // Browsers add `usernameFragment` to candidates: accepted.
        let (_, r) = json_req(json!({"id": 1, "type": "ice_candidate", "candidate":
            {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}))
        .unwrap();
        assert!(r.is_media());
    }

    #[test]
    fn event_numbers_grow_across_activations_and_never_repeat() {
        let mut first = EventSeq::for_epoch(1);
        let (a, _) = first.take();
        let (b, _) = first.take();
        assert!(a < b && first.last() == b);
        // A later activation starts above anything the earlier one could have numbered.
        let second = EventSeq::for_epoch(2);
        assert!(second.last() >= EventSeq::for_epoch(1).last() + EventSeq::BLOCK - 1);
        let mut end = EventSeq { next: 2 * EventSeq::BLOCK - 1, limit: 2 * EventSeq::BLOCK };
        assert_eq!(end.take(), (2 * EventSeq::BLOCK - 1, false));
        assert_eq!(end.take(), (2 * EventSeq::BLOCK, true), "running past the block is reported");
        assert_eq!(EventSeq::for_epoch(-5).last(), 0, "no negative blocks");
        // Numbers stay exact as JavaScript numbers for millions of activations.
        assert!(EventSeq::for_epoch(9_000_000).last() < (1u64 << 53));
    }

    #[test]
    fn sequenced_events_say_their_number_and_resume_takes_one() {
        let m = Uuid::nil();
        let f = EventFrame { meeting_id: m, seq: Some(3_000_000_017), event: Event::BreakoutsClosed };
        assert_eq!(serde_json::to_value(&f).unwrap()["seq"], json!(3_000_000_017u64));
        let media = EventFrame::unsequenced(m, Event::MediaClosed { reason: "x".into() });
        assert!(serde_json::to_value(&media).unwrap().get("seq").is_none());
        let frame = json!({"id": 1, "type": "resume", "meeting_id": m, "resume_token": "t", "last_seq": 42});
        let (_, r) = decode_request(frame.to_string().as_bytes(), Encoding::Json).unwrap();
        assert_eq!(r, Request::Resume { meeting_id: m, resume_token: "t".into(), last_seq: Some(42) });
        assert!(!Request::Chat { text: "hi".into(), to: None }.is_repeatable());
        assert!(Request::RaiseHand.is_repeatable());
    }
}
