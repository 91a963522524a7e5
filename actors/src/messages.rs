//! The vocabulary of the live actors: every actor's message type and reference, the process
//! group of a meeting's connections, and the two handles that say where the other side is
//! ([`Conn`]: meeting → connection; [`MeetingHandle`]: connection → meeting). Actor files depend
//! on this module, not on each other: meeting.rs, participant.rs, route.rs, placement.rs and
//! supervisor.rs name each other's messages from here. (The handles' cluster I/O is in
//! transport.rs; the media router's messages stay with it in media_router.rs, which only the
//! meeting actor starts.)

use std::sync::Arc;

use parley_core::meeting::Caller;
use parley_core::protocol::{Encoding, EventFrame, LeaveReason, ReplyData, Request, encode};
use ractor::{ActorRef, RpcReplyPort};
use uuid::Uuid;

use crate::error::LiveResult;
use crate::wire::ConnAddr;

// ---- meeting ----

pub type MeetingRef = ActorRef<MeetingMsg>;

/// Messages to a meeting actor.
pub enum MeetingMsg {
    /// A participant's request; the reply goes back on `reply`. `seen`: the last event `seq`
    /// the connection has (a connection this actor does not know yet gets the events after it
    /// first, as with [`MeetingMsg::Attach`]).
    Request {
        caller: Caller,
        conn: Conn,
        request: Request,
        seen: Option<u64>,
        reply: RpcReplyPort<LiveResult<ReplyData>>,
        /// The caller's span: the meeting's handling is its child (one trace per request).
        span: tracing::Span,
    },
    /// A participant's connection closed (`lost`: without a closing handshake).
    Disconnected { user_id: Uuid, conn: ConnAddr, lost: bool },
    /// Time to look for expired presence.
    Sweep,
    /// The grace period that started at generation `generation` is over.
    GraceExpired { generation: u64 },
    /// A connection of a known user re-attaches after this actor restarted or moved; with
    /// `after`, it first gets the events it missed since that `seq`, then the live ones.
    Attach { user_id: Uuid, conn: Conn, after: Option<u64> },
    /// Another node activated this meeting with `epoch`: if that is newer than ours, stop here
    /// (this node was presumed dead, e.g. cut off from Redis, while it still ran).
    Superseded { epoch: i64 },
    /// Try the deferred database writes again.
    RetryWrites,
    /// Fault injection (operators' drills, tests): panic, as a bug would.
    Crash,
    /// Fault injection: make one participant's connection actor panic.
    CrashParticipant { user_id: Uuid },
    /// Fault injection: make the meeting's media router panic (if it runs).
    CrashMediaRouter,
    /// From the media router: an event for one participant (`to`) or for everyone.
    MediaEvent { to: Option<Uuid>, event: parley_core::protocol::Event },
    /// The meeting is being recorded but nothing here captures it (this actor took the meeting
    /// over, or its media router restarted): continue the recording as its next part.
    ContinueRecording,
    /// Capture could not start or continue: recording is off again.
    RecordingFailed { by: Uuid, reason: String },
    /// The pipeline (on any node) finished one of this meeting's recordings: tell the
    /// moderators connected.
    RecordingReady { recording_id: Uuid, duration_seconds: i64 },
    /// Operators: the meeting's state, and its media router to ask for the media part.
    Inspect { reply: RpcReplyPort<(crate::ops::MeetingView, Option<crate::media_router::RouterRef>)> },
}

impl ractor::Message for MeetingMsg {}

/// The process group of a meeting's connections: survives the meeting actor, so a restarted
/// actor can find them.
pub fn connections_group(meeting_id: Uuid) -> String {
    format!("meeting-connections:{meeting_id}")
}

// ---- participant (one per WebSocket connection) ----

pub type ParticipantRef = ActorRef<ParticipantMsg>;

/// What the connection task should write.
#[derive(Debug)]
pub enum Outbound {
    /// A frame: text (JSON) or binary (MessagePack).
    Frame { data: Vec<u8>, encoding: Encoding },
    /// Close the socket with a code and reason.
    Close { code: u16, reason: String },
}

/// Messages to a participant actor.
pub enum ParticipantMsg {
    /// A frame from the client.
    Frame { data: Vec<u8>, encoding: Encoding },
    /// An event of the meeting (shared by every recipient; encoded once per encoding).
    Event(Arc<SharedEvent>),
    /// The meeting let go of this connection (removed, denied, ended, replaced, timed out).
    Detached { meeting_id: Uuid, reason: LeaveReason },
    /// The socket closed; `lost`: without a closing handshake (the network dropped, the
    /// client vanished), so its seat is kept for a `resume` until its presence times out.
    SocketClosed { lost: bool },
    /// The meeting's actor restarted or moved: here is the way to it now.
    Reattach { meeting_id: Uuid, meeting: MeetingHandle },
    /// Fault injection (drills, tests): panic, as a bug would.
    Crash,
}

impl ractor::Message for ParticipantMsg {}

/// One event on its way to many connections: each encoding is produced at most once, by the
/// first recipient that needs it, and reused by the others.
pub struct SharedEvent {
    pub frame: EventFrame,
    json: std::sync::OnceLock<Vec<u8>>,
    msgpack: std::sync::OnceLock<Vec<u8>>,
}

impl SharedEvent {
    pub fn new(frame: EventFrame) -> Arc<SharedEvent> {
        Arc::new(SharedEvent { frame, json: std::sync::OnceLock::new(), msgpack: std::sync::OnceLock::new() })
    }

    /// The event in `encoding`.
    pub fn bytes(&self, encoding: Encoding) -> &[u8] {
        let cell = match encoding {
            Encoding::Json => &self.json,
            Encoding::MessagePack => &self.msgpack,
        };
        cell.get_or_init(|| encode(&self.frame, encoding))
    }
}

// ---- supervisor ----

pub type SupervisorRef = ActorRef<SupervisorMsg>;

/// Requests to the supervisor.
pub enum SupervisorMsg {
    /// The running actor of a meeting, starting it if needed (the meeting must be startable).
    /// `takeover_from`: the owner value of a dead node this node may replace.
    Open { meeting_id: Uuid, takeover_from: Option<String>, reply: RpcReplyPort<LiveResult<MeetingRef>> },
    /// The running actor of a meeting, if any.
    Running { meeting_id: Uuid, reply: RpcReplyPort<Option<MeetingRef>> },
    /// How many meetings run here.
    Count { reply: RpcReplyPort<usize> },
    /// Stop a meeting's actor here without ending the meeting (it moved to another node).
    Release { meeting_id: Uuid },
    /// Fault injection: make an actor of a running meeting panic. Replies whether the meeting
    /// was running.
    Crash { meeting_id: Uuid, target: CrashTarget, reply: RpcReplyPort<bool> },
}

/// Which actor of a meeting a fault-injection drill crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTarget {
    /// The meeting actor itself (restarted by the supervisor, rehydrated).
    Meeting,
    /// One participant's connection actor.
    Participant(Uuid),
    /// The meeting's media router (its clients are told `media_closed` and offer again).
    MediaRouter,
}

impl ractor::Message for SupervisorMsg {}

// ---- where the other side is ----

/// A meeting's connection, as the meeting actor holds it.
#[derive(Clone, Debug)]
pub enum Conn {
    Local(ParticipantRef),
    Remote(ConnAddr),
}

impl Conn {
    /// The cluster-wide address of the connection.
    pub fn addr(&self, me: &str) -> ConnAddr {
        match self {
            Conn::Local(r) => ConnAddr { node: me.to_owned(), id: r.get_id().pid() },
            Conn::Remote(a) => a.clone(),
        }
    }

    /// Whether two handles name the same connection.
    pub fn same(&self, other: &Conn, me: &str) -> bool {
        self.addr(me) == other.addr(me)
    }
}

/// A participant's way to its meeting.
#[derive(Clone, Debug)]
pub enum MeetingHandle {
    Local(MeetingRef),
    Remote { node: String },
}

impl MeetingHandle {
    pub fn node<'a>(&'a self, me: &'a str) -> &'a str {
        match self {
            MeetingHandle::Local(_) => me,
            MeetingHandle::Remote { node } => node,
        }
    }
}
