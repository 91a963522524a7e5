//! The live meeting state machine: every rule of a running meeting, with no I/O.
//!
//! A [`LiveMeeting`] is owned by one meeting actor. The actor feeds it requests from
//! participants ([`LiveMeeting::handle`]) and lifecycle inputs (a closed connection, an expired
//! heartbeat, the grace period after the last person left); each call returns an [`Outcome`]:
//! the reply for the requester and the [`Effect`]s the actor must perform — events to deliver,
//! presence to mirror, rows to persist, connections to detach. Nothing here waits, sends or
//! stores; the same input always gives the same output, which is what the unit tests rely on.
//!
//! Rules in one place:
//! - Joining honours ended/locked/removed, the waiting room (moderators skip it), mute-on-entry
//!   (not for moderators) and video-on-entry. Joining again is idempotent.
//! - Host actions (`admit`, `mute_participant`, `remove`, `lock`, breakouts, …) need a host or
//!   co-host; nobody acts on the host but the host; `set_role` and `end_meeting` are the host's.
//! - Nobody can be forced unmuted: moderators mute, or *ask* to unmute.
//! - One screen sharer at a time, within the meeting's policy.
//! - Chat goes to the sender's room (main or breakout) or privately to one participant;
//!   the host can disable it for non-moderators.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{MeetingSettings, Role, ScreenSharePolicy};
use crate::protocol::{
    BreakoutsView, ChatMessage, EndReason, ErrorCode, Event, EventFrame, LeaveReason, MediaNode, MeetingSnapshot,
    ParticipantView, ReplyData, Request, WaitingView,
};

/// Chat messages kept in memory for join snapshots (older ones stay in the database).
pub const CHAT_HISTORY: usize = 200;

/// Fixed facts of one live meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingConfig {
    pub meeting_id: Uuid,
    pub host: Uuid,
    pub settings: MeetingSettings,
}

/// Who is asking, as the connection layer knows them (from the token and the database).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    pub user_id: Uuid,
    /// The name to show (the user's display name unless they chose another on join).
    pub display_name: String,
    /// The role the invitation gave them (`None`: not invited).
    pub invited_role: Option<Role>,
}

/// Who receives a broadcast event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every participant.
    Everyone,
    /// Every participant except one.
    EveryoneExcept(Uuid),
    /// Participants in one room (`None`: the main room).
    Room(Option<u32>),
    /// Hosts and co-hosts.
    Moderators,
}

/// Who an event was for, as kept with it in the meeting's event log: replaying the log to a
/// participant gives them the events meant for them ([`LiveMeeting::reaches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Audience {
    Everyone,
    EveryoneExcept { user_id: Uuid },
    Room { room: Option<u32> },
    Moderators,
    User { user_id: Uuid },
}

impl From<Scope> for Audience {
    fn from(scope: Scope) -> Audience {
        match scope {
            Scope::Everyone => Audience::Everyone,
            Scope::EveryoneExcept(user_id) => Audience::EveryoneExcept { user_id },
            Scope::Room(room) => Audience::Room { room },
            Scope::Moderators => Audience::Moderators,
        }
    }
}

/// What a step answers the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A complete reply.
    Reply(ReplyData),
    /// The caller has a seat: the node completes the `joined` reply with what only it knows
    /// ([`Entered::joined`], the one place a `joined` reply is built).
    Entered(Entered),
}

/// A seat taken (`join`, `resume`): the meeting as the new participant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub meeting: Box<MeetingSnapshot>,
    pub you: ParticipantView,
}

impl Entered {
    /// The `joined` reply: the snapshot, where the media goes, the seat's resume token, the
    /// snapshot's event position and (on a resume) the events missed since `last_seq`.
    pub fn joined(self, media: MediaNode, resume_token: String, seq: u64, missed: Vec<EventFrame>) -> ReplyData {
        ReplyData::Joined {
            meeting: self.meeting,
            you: self.you,
            media: Some(media),
            resume_token: Some(resume_token),
            seq,
            missed,
        }
    }
}

/// A participant's entry into or exit from a meeting, as webhooks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    pub user_id: Uuid,
    pub display_name: String,
    pub role: Role,
    /// `None`: joined; else why they left.
    pub left: Option<LeaveReason>,
}

/// Something the actor must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Deliver an event to one user (participant or waiting).
    Send { to: Uuid, event: Event },
    /// Deliver an event to a group of participants.
    Broadcast { scope: Scope, event: Event },
    /// Write this participant's presence (their view) to the presence store.
    PresenceUpsert(ParticipantView),
    /// Delete this participant's presence.
    PresenceRemove(Uuid),
    /// The waiting room changed; mirror it (in order).
    WaitingRoomChanged(Vec<WaitingView>),
    /// Keep a chat message.
    PersistChat(ChatMessage),
    /// Keep a role change so a restarted meeting keeps it.
    PersistRole { user_id: Uuid, role: Role },
    /// Someone entered or left the meeting (not its waiting room): the store tells the
    /// webhooks that subscribe, in this order.
    PersistAttendance(Attendance),
    /// This user is out of the meeting (removed, denied, ended…): detach their connection.
    Detach { user_id: Uuid, reason: LeaveReason },
    /// Capture of the meeting's recording starts (`on`, started by `by`) or stops: the meeting
    /// actor drives its media router's recorder and the recording's rows.
    Record { on: bool, by: Uuid },
    /// Nobody is left: start the grace period before ending.
    BecameEmpty,
    /// The meeting is over: persist the end and the analytics, clean presence, stop.
    Ended { reason: EndReason, analytics: Analytics },
}

/// Totals written to `meeting_analytics` when the meeting ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analytics {
    pub total_participants: u32,
    pub peak_participants: u32,
    /// Time-weighted mean number of people present.
    pub avg_participants: f64,
    pub duration_ms: i64,
}

impl Eq for Analytics {}

/// The reply and effects of one step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `None` for inputs that are not requests.
    pub reply: Option<Result<Answer, (ErrorCode, String)>>,
    pub effects: Vec<Effect>,
}

impl Outcome {
    fn reply(data: ReplyData, effects: Vec<Effect>) -> Outcome {
        Outcome { reply: Some(Ok(Answer::Reply(data))), effects }
    }

    fn error(code: ErrorCode, message: impl Into<String>) -> Outcome {
        Outcome { reply: Some(Err((code, message.into()))), effects: Vec::new() }
    }
}

/// The meeting-wide state that must survive a restart of the meeting actor, besides the
/// participants and the waiting room (mirrored on their own) and chat (in the database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableFlags {
    pub locked: bool,
    pub chat_enabled: bool,
    pub recording: bool,
    /// Who turned the recording on (it stops when they leave and no host or co-host remains).
    #[serde(default)]
    pub recording_by: Option<Uuid>,
    pub breakouts: Option<BreakoutsView>,
    /// Removed users (they may not rejoin this session).
    pub removed: Vec<Uuid>,
    /// Roles given during the meeting and invited roles of waiting users.
    pub roles: BTreeMap<Uuid, Role>,
}

/// What a restarted meeting actor restores from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub participants: Vec<ParticipantView>,
    pub waiting: Vec<WaitingView>,
    pub flags: Option<DurableFlags>,
    pub chat: Vec<ChatMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Breakouts {
    rooms: u32,
    assignments: BTreeMap<Uuid, u32>,
    open: bool,
}

impl Breakouts {
    fn view(&self) -> BreakoutsView {
        BreakoutsView { rooms: self.rooms, assignments: self.assignments.clone(), open: self.open }
    }
}

/// Running totals for the analytics row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stats {
    started_at: i64,
    distinct: BTreeSet<Uuid>,
    peak: u32,
    /// ∫ participants dt, in participant·milliseconds.
    presence_ms: i128,
    last_change: i64,
}

/// One running meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMeeting {
    cfg: MeetingConfig,
    participants: BTreeMap<Uuid, ParticipantView>,
    waiting: VecDeque<WaitingView>,
    /// Role overrides made during the meeting (`set_role`), and invited roles of waiting users.
    roles: BTreeMap<Uuid, Role>,
    removed: BTreeSet<Uuid>,
    locked: bool,
    chat_enabled: bool,
    recording: bool,
    /// Who turned the recording on.
    recording_by: Option<Uuid>,
    sharer: Option<Uuid>,
    breakouts: Option<Breakouts>,
    chat: VecDeque<ChatMessage>,
    chat_seq: u64,
    ended: bool,
    stats: Stats,
}

impl LiveMeeting {
    /// A meeting that starts now (`now` in Unix milliseconds).
    pub fn new(cfg: MeetingConfig, now: i64) -> LiveMeeting {
        LiveMeeting {
            cfg,
            participants: BTreeMap::new(),
            waiting: VecDeque::new(),
            roles: BTreeMap::new(),
            removed: BTreeSet::new(),
            locked: false,
            chat_enabled: true,
            recording: false,
            recording_by: None,
            sharer: None,
            breakouts: None,
            chat: VecDeque::new(),
            chat_seq: 0,
            ended: false,
            stats: Stats { started_at: now, distinct: BTreeSet::new(), peak: 0, presence_ms: 0, last_change: now },
        }
    }

    /// Rebuilds a running meeting after its actor restarted: participants (with their mute,
    /// hand, share and room), waiting-room order, flags and chat history come back as they were.
    pub fn restore(cfg: MeetingConfig, started_at: i64, now: i64, saved: Snapshot) -> LiveMeeting {
        let mut m = LiveMeeting::new(cfg, started_at);
        if let Some(f) = saved.flags {
            m.locked = f.locked;
            m.chat_enabled = f.chat_enabled;
            m.recording = f.recording;
            m.recording_by = f.recording_by;
            m.breakouts = f.breakouts.map(|b| Breakouts { rooms: b.rooms, assignments: b.assignments, open: b.open });
            m.removed = f.removed.into_iter().collect();
            m.roles = f.roles;
        }
        m.sharer = saved.participants.iter().find(|p| p.screen_sharing).map(|p| p.user_id);
        m.stats.distinct = saved.participants.iter().map(|p| p.user_id).collect();
        m.stats.peak = saved.participants.len() as u32;
        m.stats.last_change = now;
        m.participants = saved.participants.into_iter().map(|p| (p.user_id, p)).collect();
        m.waiting = saved.waiting.into();
        m.chat_seq = saved.chat.iter().map(|c| c.seq).max().unwrap_or(0);
        let skip = saved.chat.len().saturating_sub(CHAT_HISTORY);
        m.chat = saved.chat.into_iter().skip(skip).collect();
        m
    }

    /// Everyone present's display name (the recording's tile and transcript labels).
    pub fn display_names(&self) -> BTreeMap<Uuid, String> {
        self.participants.values().map(|p| (p.user_id, p.display_name.clone())).collect()
    }

    /// Whether the meeting is being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Capture could not start (or continue): the recording is off again, and everyone is told.
    pub fn capture_failed(&mut self, by: Uuid) -> Outcome {
        if !self.recording {
            return Outcome::default();
        }
        self.recording = false;
        self.recording_by = None;
        Outcome {
            reply: None,
            effects: vec![Effect::Broadcast { scope: Scope::Everyone, event: Event::RecordingStopped { by } }],
        }
    }

    /// The pipeline finished a recording of this meeting: its hosts and co-hosts in the meeting
    /// are told; nobody is once it has ended.
    pub fn recording_ready(&self, recording_id: Uuid, duration_seconds: i64) -> Outcome {
        if self.ended {
            return Outcome::default();
        }
        Outcome {
            reply: None,
            effects: vec![Effect::Broadcast {
                scope: Scope::Moderators,
                event: Event::RecordingReady { recording_id, duration_seconds },
            }],
        }
    }

    /// The flags to mirror so a restart can restore them.
    pub fn flags(&self) -> DurableFlags {
        DurableFlags {
            locked: self.locked,
            chat_enabled: self.chat_enabled,
            recording: self.recording,
            recording_by: self.recording_by,
            breakouts: self.breakouts.as_ref().map(Breakouts::view),
            removed: self.removed.iter().copied().collect(),
            roles: self.roles.clone(),
        }
    }

    pub fn meeting_id(&self) -> Uuid {
        self.cfg.meeting_id
    }

    pub fn host(&self) -> Uuid {
        self.cfg.host
    }

    /// The waiting room, in order.
    pub fn waiting(&self) -> Vec<WaitingView> {
        self.waiting.iter().cloned().collect()
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    pub fn participant(&self, user: Uuid) -> Option<&ParticipantView> {
        self.participants.get(&user)
    }

    /// Everyone in the meeting, by user id.
    pub fn participants(&self) -> impl Iterator<Item = &ParticipantView> {
        self.participants.values()
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    pub fn is_waiting(&self, user: Uuid) -> bool {
        self.waiting.iter().any(|w| w.user_id == user)
    }

    /// Everybody connected: participants, then the waiting room.
    pub fn connected_users(&self) -> Vec<Uuid> {
        self.participants.keys().copied().chain(self.waiting.iter().map(|w| w.user_id)).collect()
    }

    /// The users a broadcast to `scope` reaches.
    pub fn audience(&self, scope: Scope) -> Vec<Uuid> {
        let audience = Audience::from(scope);
        self.participants.keys().copied().filter(|u| self.reaches(audience, *u)).collect()
    }

    /// Whether an event for `audience` is for `user`, as the meeting stands now (replaying the
    /// event log: a participant's room and role are the current ones).
    pub fn reaches(&self, audience: Audience, user: Uuid) -> bool {
        if let Audience::User { user_id } = audience {
            return user_id == user;
        }
        let Some(p) = self.participants.get(&user) else {
            return false;
        };
        match audience {
            Audience::Everyone => true,
            Audience::EveryoneExcept { user_id } => user_id != user,
            Audience::Room { room } => p.room == room,
            Audience::Moderators => p.role.is_moderator(),
            Audience::User { .. } => false,
        }
    }

    /// The meeting as `viewer` may see it.
    pub fn snapshot(&self, viewer: Uuid) -> MeetingSnapshot {
        let me = self.participants.get(&viewer);
        let moderator = me.is_some_and(|p| p.role.is_moderator());
        let my_room = me.and_then(|p| p.room);
        MeetingSnapshot {
            meeting_id: self.cfg.meeting_id,
            host_user_id: self.cfg.host,
            locked: self.locked,
            chat_enabled: self.chat_enabled,
            recording: self.recording,
            screen_sharer: self.sharer,
            participants: self.participants.values().cloned().collect(),
            waiting: if moderator { self.waiting.iter().cloned().collect() } else { Vec::new() },
            breakouts: self.breakouts.as_ref().map(Breakouts::view),
            chat: self
                .chat
                .iter()
                .filter(|m| match m.to {
                    Some(to) => to == viewer || m.from == viewer,
                    None => m.room == my_room,
                })
                .cloned()
                .collect(),
        }
    }

    fn role_of(&self, caller: &Caller) -> Role {
        if caller.user_id == self.cfg.host {
            return Role::Host;
        }
        self.roles.get(&caller.user_id).copied().or(caller.invited_role).unwrap_or(Role::Attendee)
    }

    /// Call BEFORE the participant count changes: the current count was in force since the
    /// last change.
    fn count_changed(&mut self, now: i64) {
        let dt = i128::from((now - self.stats.last_change).max(0));
        self.stats.presence_ms += dt * self.participants.len() as i128;
        self.stats.last_change = now;
    }

    fn add_participant(&mut self, now: i64, p: ParticipantView) -> Vec<Effect> {
        self.count_changed(now);
        self.stats.distinct.insert(p.user_id);
        self.participants.insert(p.user_id, p.clone());
        self.stats.peak = self.stats.peak.max(self.participants.len() as u32);
        let attendance =
            Attendance { user_id: p.user_id, display_name: p.display_name.clone(), role: p.role, left: None };
        vec![
            Effect::PresenceUpsert(p.clone()),
            Effect::PersistAttendance(attendance),
            Effect::Broadcast {
                scope: Scope::EveryoneExcept(p.user_id),
                event: Event::ParticipantJoined { participant: p },
            },
        ]
    }

    fn new_participant(&self, now: i64, user_id: Uuid, display_name: String, role: Role) -> ParticipantView {
        ParticipantView {
            user_id,
            display_name,
            role,
            audio_muted: self.cfg.settings.mute_on_entry && !role.is_moderator(),
            video_on: self.cfg.settings.video_on_entry,
            hand_raised: false,
            hand_raised_at: None,
            screen_sharing: false,
            joined_at: now,
            room: None,
        }
    }

    fn waiting_changed(&self) -> Effect {
        Effect::WaitingRoomChanged(self.waiting.iter().cloned().collect())
    }

    /// Removes a participant or waiting user; the caller adds reason-specific effects.
    fn drop_user(&mut self, now: i64, user: Uuid, reason: LeaveReason) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(pos) = self.waiting.iter().position(|w| w.user_id == user) {
            self.waiting.remove(pos);
            fx.push(self.waiting_changed());
            fx.push(Effect::Broadcast {
                scope: Scope::Moderators,
                event: Event::WaitingRoomLeft { user_id: user, reason },
            });
            return fx;
        }
        let Some(gone) = self.participants.get(&user).cloned() else { return fx };
        self.count_changed(now);
        self.participants.remove(&user);
        fx.push(Effect::PresenceRemove(user));
        fx.push(Effect::PersistAttendance(Attendance {
            user_id: user,
            display_name: gone.display_name,
            role: gone.role,
            left: Some(reason),
        }));
        if self.sharer == Some(user) {
            self.sharer = None;
            fx.push(Effect::Broadcast { scope: Scope::Everyone, event: Event::ScreenShareStopped { user_id: user } });
        }
        fx.push(Effect::Broadcast { scope: Scope::Everyone, event: Event::ParticipantLeft { user_id: user, reason } });
        // The recording's host left and nobody is left who could stop it: it stops.
        if self.recording
            && self.recording_by == Some(user)
            && !self.participants.values().any(|p| p.role.is_moderator())
        {
            self.recording = false;
            self.recording_by = None;
            fx.push(Effect::Broadcast { scope: Scope::Everyone, event: Event::RecordingStopped { by: user } });
            fx.push(Effect::Record { on: false, by: user });
        }
        if self.participants.is_empty() && !self.ended {
            fx.push(Effect::BecameEmpty);
        }
        fx
    }

    /// A participant's connection closed, or their presence expired.
    pub fn disconnected(&mut self, now: i64, user: Uuid, reason: LeaveReason) -> Outcome {
        Outcome { reply: None, effects: self.drop_user(now, user, reason) }
    }

    /// The grace period after the meeting became empty passed: end it if still empty.
    pub fn grace_expired(&mut self, now: i64) -> Outcome {
        if !self.participants.is_empty() || self.ended {
            return Outcome::default();
        }
        Outcome { reply: None, effects: self.end(now, None, EndReason::Empty) }
    }

    fn end(&mut self, now: i64, by: Option<Uuid>, reason: EndReason) -> Vec<Effect> {
        self.count_changed(now);
        self.ended = true;
        let duration_ms = (now - self.stats.started_at).max(0);
        let avg = if duration_ms > 0 {
            self.stats.presence_ms as f64 / duration_ms as f64
        } else {
            self.participants.len() as f64
        };
        let analytics = Analytics {
            total_participants: self.stats.distinct.len() as u32,
            peak_participants: self.stats.peak,
            avg_participants: (avg * 100.0).round() / 100.0,
            duration_ms,
        };
        // Addressed one by one: the participant list is emptied below, within this same step.
        let mut fx: Vec<Effect> = self
            .participants
            .keys()
            .map(|u| Effect::Send { to: *u, event: Event::MeetingEnded { ended_by: by, reason } })
            .collect();
        for w in self.waiting.drain(..) {
            fx.push(Effect::Send { to: w.user_id, event: Event::MeetingEnded { ended_by: by, reason } });
            fx.push(Effect::Detach { user_id: w.user_id, reason: LeaveReason::MeetingEnded });
        }
        for u in self.participants.keys() {
            fx.push(Effect::Detach { user_id: *u, reason: LeaveReason::MeetingEnded });
        }
        self.participants.clear();
        self.sharer = None;
        if self.recording {
            self.recording = false;
            fx.push(Effect::Record { on: false, by: self.recording_by.or(by).unwrap_or(self.cfg.host) });
            self.recording_by = None;
        }
        fx.push(Effect::Ended { reason, analytics });
        fx
    }

    /// Handles one request from `caller` at `now` (Unix milliseconds).
    pub fn handle(&mut self, now: i64, caller: &Caller, req: &Request) -> Outcome {
        if self.ended {
            return Outcome::error(ErrorCode::MeetingNotActive, "the meeting has ended");
        }
        let user = caller.user_id;
        if let Request::Join { display_name, .. } = req {
            return self.join(now, caller, display_name.clone());
        }
        if let Request::Resume { .. } = req {
            // The connection layer checked the token; the seat must still be here.
            if !self.participants.contains_key(&user) && !self.is_waiting(user) {
                return Outcome::error(ErrorCode::ResumeFailed, "that seat is gone (timed out or removed); join again");
            }
            return self.join(now, caller, None);
        }
        if self.is_waiting(user) {
            return match req {
                Request::Leave => Outcome::reply(ReplyData::Done, self.drop_user(now, user, LeaveReason::Left)),
                Request::Heartbeat => Outcome::reply(ReplyData::Done, Vec::new()),
                _ => Outcome::error(ErrorCode::NotInMeeting, "you are in the waiting room"),
            };
        }
        let Some(me) = self.participants.get(&user).cloned() else {
            return Outcome::error(ErrorCode::NotInMeeting, "join the meeting first");
        };
        let moderator = me.role.is_moderator();
        let is_host = me.role == Role::Host;
        let need_moderator = || Outcome::error(ErrorCode::Forbidden, "only the host or a co-host may do that");
        match req {
            Request::Join { .. } | Request::Resume { .. } | Request::Start { .. } | Request::Auth { .. } => {
                Outcome::error(ErrorCode::AlreadyInMeeting, "already in this meeting")
            }
            Request::Leave => Outcome::reply(ReplyData::Done, self.drop_user(now, user, LeaveReason::Left)),
            Request::Heartbeat => Outcome::reply(ReplyData::Done, vec![Effect::PresenceUpsert(me)]),
            Request::Admit { user_id } => {
                if !moderator {
                    return need_moderator();
                }
                match self.admit(now, *user_id) {
                    Some(fx) => Outcome::reply(ReplyData::Done, fx),
                    None => Outcome::error(ErrorCode::UserNotFound, "that user is not in the waiting room"),
                }
            }
            Request::AdmitAll => {
                if !moderator {
                    return need_moderator();
                }
                let ids: Vec<Uuid> = self.waiting.iter().map(|w| w.user_id).collect();
                let fx = ids.into_iter().filter_map(|id| self.admit(now, id)).flatten().collect();
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::Deny { user_id } => {
                if !moderator {
                    return need_moderator();
                }
                if !self.is_waiting(*user_id) {
                    return Outcome::error(ErrorCode::UserNotFound, "that user is not in the waiting room");
                }
                let mut fx = self.drop_user(now, *user_id, LeaveReason::Denied);
                fx.push(Effect::Send { to: *user_id, event: Event::Denied { user_id: *user_id } });
                fx.push(Effect::Detach { user_id: *user_id, reason: LeaveReason::Denied });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::Mute { muted } => {
                let fx = self.set_muted(user, *muted, None);
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::MuteParticipant { user_id } => {
                if !moderator {
                    return need_moderator();
                }
                if let Err((code, why)) = self.target_check(&me, *user_id) {
                    return Outcome::error(code, why);
                }
                let fx = self.set_muted(*user_id, true, Some(user));
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::MuteAll => {
                if !moderator {
                    return need_moderator();
                }
                let targets: Vec<Uuid> = self
                    .participants
                    .values()
                    .filter(|p| !p.role.is_moderator() && !p.audio_muted)
                    .map(|p| p.user_id)
                    .collect();
                let fx = targets.into_iter().flat_map(|t| self.set_muted(t, true, Some(user))).collect();
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::AskUnmute { user_id } => {
                if !moderator {
                    return need_moderator();
                }
                if let Err((code, why)) = self.target_check(&me, *user_id) {
                    return Outcome::error(code, why);
                }
                Outcome::reply(
                    ReplyData::Done,
                    vec![Effect::Send { to: *user_id, event: Event::AskedToUnmute { by: user } }],
                )
            }
            Request::Video { on } => {
                let on = *on;
                let fx = self.update(user, Event::VideoChanged { user_id: user, on, by: None }, |p| {
                    p.video_on = on;
                    true
                });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::StopVideo { user_id } => {
                if !moderator {
                    return need_moderator();
                }
                if let Err((code, why)) = self.target_check(&me, *user_id) {
                    return Outcome::error(code, why);
                }
                let target = *user_id;
                let fx = self.update(target, Event::VideoChanged { user_id: target, on: false, by: Some(user) }, |p| {
                    std::mem::replace(&mut p.video_on, false)
                });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::RaiseHand => {
                let fx = self.update(user, Event::HandRaised { user_id: user, at: now }, |p| {
                    let was = std::mem::replace(&mut p.hand_raised, true);
                    if !was {
                        p.hand_raised_at = Some(now);
                    }
                    !was
                });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::LowerHand { user_id } => {
                let target = user_id.unwrap_or(user);
                if target != user && !moderator {
                    return need_moderator();
                }
                if !self.participants.contains_key(&target) {
                    return Outcome::error(ErrorCode::UserNotFound, "that user is not in the meeting");
                }
                let by = (target != user).then_some(user);
                let fx = self.update(target, Event::HandLowered { user_id: target, by }, |p| {
                    p.hand_raised_at = None;
                    std::mem::replace(&mut p.hand_raised, false)
                });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::Chat { text, to } => self.chat(now, &me, text, *to),
            Request::SetChat { enabled } => {
                if !moderator {
                    return need_moderator();
                }
                self.chat_enabled = *enabled;
                Outcome::reply(
                    ReplyData::Done,
                    vec![Effect::Broadcast {
                        scope: Scope::Everyone,
                        event: Event::ChatSettingChanged { enabled: *enabled },
                    }],
                )
            }
            Request::ScreenShareStart => {
                if self.cfg.settings.screen_share == ScreenSharePolicy::HostOnly && !moderator {
                    return Outcome::error(
                        ErrorCode::NotAllowed,
                        "only the host and co-hosts may share in this meeting",
                    );
                }
                match self.sharer {
                    Some(s) if s == user => return Outcome::reply(ReplyData::Done, Vec::new()),
                    Some(_) => return Outcome::error(ErrorCode::ScreenShareBusy, "someone else is sharing"),
                    None => {}
                }
                self.sharer = Some(user);
                let fx = self.update(user, Event::ScreenShareStarted { user_id: user }, |p| {
                    p.screen_sharing = true;
                    true
                });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::ScreenShareStop => {
                let Some(sharer) = self.sharer else {
                    return Outcome::reply(ReplyData::Done, Vec::new());
                };
                if sharer != user && !moderator {
                    return Outcome::error(ErrorCode::Forbidden, "only the sharer or a moderator may stop the share");
                }
                self.sharer = None;
                let mut fx = Vec::new();
                if let Some(p) = self.participants.get_mut(&sharer) {
                    p.screen_sharing = false;
                    fx.push(Effect::PresenceUpsert(p.clone()));
                }
                fx.push(Effect::Broadcast {
                    scope: Scope::Everyone,
                    event: Event::ScreenShareStopped { user_id: sharer },
                });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::SetRole { user_id, role } => {
                if !is_host {
                    return Outcome::error(ErrorCode::Forbidden, "only the host may change roles");
                }
                if *role == Role::Host || *user_id == self.cfg.host {
                    return Outcome::error(ErrorCode::NotAllowed, "the host role cannot be given or taken");
                }
                if !self.participants.contains_key(user_id) {
                    return Outcome::error(ErrorCode::UserNotFound, "that user is not in the meeting");
                }
                let (target, role) = (*user_id, *role);
                self.roles.insert(target, role);
                let mut fx = vec![Effect::PersistRole { user_id: target, role }];
                fx.extend(self.update(target, Event::RoleChanged { user_id: target, role }, |p| {
                    p.role = role;
                    true
                }));
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::Remove { user_id } => {
                if !moderator {
                    return need_moderator();
                }
                if *user_id == user {
                    return Outcome::error(ErrorCode::NotAllowed, "use `leave` to leave");
                }
                if !self.is_waiting(*user_id)
                    && let Err((code, why)) = self.target_check(&me, *user_id)
                {
                    return Outcome::error(code, why);
                }
                self.removed.insert(*user_id);
                let mut fx = vec![Effect::Send { to: *user_id, event: Event::Removed { user_id: *user_id, by: user } }];
                fx.extend(self.drop_user(now, *user_id, LeaveReason::Removed));
                fx.push(Effect::Detach { user_id: *user_id, reason: LeaveReason::Removed });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::Lock { locked } => {
                if !moderator {
                    return need_moderator();
                }
                self.locked = *locked;
                Outcome::reply(
                    ReplyData::Done,
                    vec![Effect::Broadcast { scope: Scope::Everyone, event: Event::LockChanged { locked: *locked } }],
                )
            }
            Request::Recording { on } => {
                if !moderator {
                    return need_moderator();
                }
                if !self.cfg.settings.recording_allowed {
                    return Outcome::error(ErrorCode::RecordingNotAllowed, "recording is not allowed in this meeting");
                }
                if self.recording == *on {
                    return Outcome::reply(ReplyData::Done, Vec::new());
                }
                self.recording = *on;
                self.recording_by = on.then_some(user);
                let event =
                    if *on { Event::RecordingStarted { by: user } } else { Event::RecordingStopped { by: user } };
                Outcome::reply(
                    ReplyData::Done,
                    vec![Effect::Broadcast { scope: Scope::Everyone, event }, Effect::Record { on: *on, by: user }],
                )
            }
            Request::EndMeeting => {
                if !is_host {
                    return Outcome::error(ErrorCode::Forbidden, "only the host may end the meeting for everyone");
                }
                Outcome::reply(ReplyData::Done, self.end(now, Some(user), EndReason::HostEnded))
            }
            Request::BreakoutsCreate { count, assignments } => {
                if !moderator {
                    return need_moderator();
                }
                if self.breakouts.as_ref().is_some_and(|b| b.open) {
                    return Outcome::error(ErrorCode::NotAllowed, "close the open breakout rooms first");
                }
                let plan = match (count, assignments) {
                    (Some(n), _) => {
                        let people: Vec<Uuid> =
                            self.participants.values().filter(|p| !p.role.is_moderator()).map(|p| p.user_id).collect();
                        let assignments = people.iter().enumerate().map(|(i, u)| (*u, (i as u32 % n) + 1)).collect();
                        Breakouts { rooms: *n, assignments, open: false }
                    }
                    (None, Some(a)) => {
                        if let Some(u) = a.keys().find(|u| !self.participants.contains_key(u)) {
                            return Outcome::error(ErrorCode::UserNotFound, format!("{u} is not in the meeting"));
                        }
                        let rooms = a.values().copied().max().unwrap_or(1);
                        Breakouts { rooms, assignments: a.clone(), open: false }
                    }
                    (None, None) => return Outcome::error(ErrorCode::InvalidField, "give `count` or `assignments`"),
                };
                let view = plan.view();
                self.breakouts = Some(plan);
                Outcome::reply(
                    ReplyData::Done,
                    vec![Effect::Broadcast {
                        scope: Scope::Moderators,
                        event: Event::BreakoutsCreated { breakouts: view },
                    }],
                )
            }
            Request::BreakoutsOpen => {
                if !moderator {
                    return need_moderator();
                }
                let Some(b) = self.breakouts.as_mut() else {
                    return Outcome::error(ErrorCode::NoBreakouts, "create breakout rooms first");
                };
                b.open = true;
                let view = b.view();
                let moves: Vec<(Uuid, u32)> = b.assignments.iter().map(|(u, r)| (*u, *r)).collect();
                let mut fx = vec![Effect::Broadcast {
                    scope: Scope::Everyone,
                    event: Event::BreakoutsOpened { breakouts: view },
                }];
                for (u, r) in moves {
                    fx.extend(self.move_to(u, Some(r)));
                }
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::BreakoutsClose => {
                if !moderator {
                    return need_moderator();
                }
                let Some(b) = self.breakouts.as_mut().filter(|b| b.open) else {
                    return Outcome::error(ErrorCode::NoBreakouts, "no breakout rooms are open");
                };
                b.open = false;
                let in_rooms: Vec<Uuid> =
                    self.participants.values().filter(|p| p.room.is_some()).map(|p| p.user_id).collect();
                let mut fx = Vec::new();
                for u in in_rooms {
                    fx.extend(self.move_to(u, None));
                }
                fx.push(Effect::Broadcast { scope: Scope::Everyone, event: Event::BreakoutsClosed });
                Outcome::reply(ReplyData::Done, fx)
            }
            Request::BreakoutJoin { room } => {
                let Some(b) = self.breakouts.as_ref().filter(|b| b.open) else {
                    return Outcome::error(ErrorCode::NoBreakouts, "no breakout rooms are open");
                };
                if !(1..=b.rooms).contains(room) {
                    return Outcome::error(ErrorCode::InvalidRoom, format!("rooms are 1 to {}", b.rooms));
                }
                Outcome::reply(ReplyData::Done, self.move_to(user, Some(*room)))
            }
            Request::BreakoutReturn => Outcome::reply(ReplyData::Done, self.move_to(user, None)),
            // The meeting actor hands these to its media router before this state machine.
            Request::Offer { .. }
            | Request::Answer { .. }
            | Request::IceCandidate { .. }
            | Request::Subscribe { .. } => Outcome::error(ErrorCode::Internal, "media requests are the media router's"),
            Request::BreakoutsBroadcast { text } => {
                if !moderator {
                    return need_moderator();
                }
                if !self.breakouts.as_ref().is_some_and(|b| b.open) {
                    return Outcome::error(ErrorCode::NoBreakouts, "no breakout rooms are open");
                }
                Outcome::reply(
                    ReplyData::Done,
                    vec![Effect::Broadcast {
                        scope: Scope::Everyone,
                        event: Event::BreakoutsBroadcast { from: user, text: text.clone() },
                    }],
                )
            }
        }
    }

    /// A co-host may act on anyone but the host; the target must be a participant.
    fn target_check(&self, me: &ParticipantView, target: Uuid) -> Result<(), (ErrorCode, &'static str)> {
        if !self.participants.contains_key(&target) {
            return Err((ErrorCode::UserNotFound, "that user is not in the meeting"));
        }
        if target == self.cfg.host && me.role != Role::Host {
            return Err((ErrorCode::Forbidden, "nobody but the host acts on the host"));
        }
        Ok(())
    }

    fn join(&mut self, now: i64, caller: &Caller, display_name: Option<String>) -> Outcome {
        let user = caller.user_id;
        if self.removed.contains(&user) {
            return Outcome::error(ErrorCode::RemovedFromMeeting, "you were removed from this meeting");
        }
        if let Some(p) = self.participants.get(&user) {
            // Joining again (e.g. from a new connection) is idempotent.
            let entered = Entered { meeting: Box::new(self.snapshot(user)), you: p.clone() };
            return Outcome { reply: Some(Ok(Answer::Entered(entered))), effects: Vec::new() };
        }
        if let Some(pos) = self.waiting.iter().position(|w| w.user_id == user) {
            return Outcome::reply(
                ReplyData::Waiting { meeting_id: self.cfg.meeting_id, position: pos + 1 },
                Vec::new(),
            );
        }
        let role = self.role_of(caller);
        if self.locked && !role.is_moderator() {
            return Outcome::error(ErrorCode::MeetingLocked, "the meeting is locked");
        }
        let name = display_name.map(|n| n.trim().to_owned()).unwrap_or_else(|| caller.display_name.clone());
        if crate::join::must_wait(self.cfg.settings.waiting_room, role) {
            if let Some(r) = caller.invited_role {
                self.roles.entry(user).or_insert(r);
            }
            self.waiting.push_back(WaitingView { user_id: user, display_name: name.clone(), since: now });
            let position = self.waiting.len();
            let fx = vec![
                self.waiting_changed(),
                Effect::Broadcast {
                    scope: Scope::Moderators,
                    event: Event::WaitingRoomUser { user_id: user, display_name: name, position },
                },
            ];
            return Outcome::reply(ReplyData::Waiting { meeting_id: self.cfg.meeting_id, position }, fx);
        }
        let p = self.new_participant(now, user, name, role);
        let effects = self.add_participant(now, p.clone());
        let entered = Entered { meeting: Box::new(self.snapshot(user)), you: p };
        Outcome { reply: Some(Ok(Answer::Entered(entered))), effects }
    }

    fn admit(&mut self, now: i64, user: Uuid) -> Option<Vec<Effect>> {
        let pos = self.waiting.iter().position(|w| w.user_id == user)?;
        let w = self.waiting.remove(pos)?;
        let role = self.roles.get(&user).copied().unwrap_or(Role::Attendee);
        let p = self.new_participant(now, user, w.display_name, role);
        let mut fx = vec![self.waiting_changed()];
        fx.extend(self.add_participant(now, p));
        fx.push(Effect::Send {
            to: user,
            event: Event::Admitted {
                user_id: user,
                meeting: Some(Box::new(self.snapshot(user))),
                media: None,
                resume_token: None,
            },
        });
        fx.push(Effect::Broadcast {
            scope: Scope::EveryoneExcept(user),
            event: Event::Admitted { user_id: user, meeting: None, media: None, resume_token: None },
        });
        Some(fx)
    }

    /// Applies `change` to a participant; when it reports a change, mirrors the participant and
    /// tells everyone `event`. Nothing happens for someone not in the meeting.
    fn update(&mut self, user: Uuid, event: Event, change: impl FnOnce(&mut ParticipantView) -> bool) -> Vec<Effect> {
        let Some(p) = self.participants.get_mut(&user) else {
            return Vec::new();
        };
        if !change(p) {
            return Vec::new();
        }
        vec![Effect::PresenceUpsert(p.clone()), Effect::Broadcast { scope: Scope::Everyone, event }]
    }

    fn set_muted(&mut self, user: Uuid, muted: bool, by: Option<Uuid>) -> Vec<Effect> {
        self.update(user, Event::Muted { user_id: user, muted, by }, |p| {
            std::mem::replace(&mut p.audio_muted, muted) != muted
        })
    }

    fn move_to(&mut self, user: Uuid, room: Option<u32>) -> Vec<Effect> {
        self.update(user, Event::BreakoutMoved { user_id: user, room }, |p| {
            std::mem::replace(&mut p.room, room) != room
        })
    }

    fn chat(&mut self, now: i64, me: &ParticipantView, text: &str, to: Option<Uuid>) -> Outcome {
        if !self.chat_enabled && !me.role.is_moderator() {
            return Outcome::error(ErrorCode::ChatDisabled, "the host has disabled chat");
        }
        if let Some(t) = to
            && !self.participants.contains_key(&t)
        {
            return Outcome::error(ErrorCode::UserNotFound, "the recipient is not in the meeting");
        }
        self.chat_seq += 1;
        let message = ChatMessage {
            seq: self.chat_seq,
            from: me.user_id,
            from_name: me.display_name.clone(),
            to,
            room: me.room,
            text: text.to_owned(),
            at: now,
        };
        if self.chat.len() == CHAT_HISTORY {
            self.chat.pop_front();
        }
        self.chat.push_back(message.clone());
        let delivery = match to {
            Some(t) => Effect::Send { to: t, event: Event::Chat { message: message.clone() } },
            None => Effect::Broadcast { scope: Scope::Room(me.room), event: Event::Chat { message: message.clone() } },
        };
        Outcome::reply(ReplyData::ChatSent { message: message.clone() }, vec![Effect::PersistChat(message), delivery])
    }
}

#[cfg(test)]
mod tests;
