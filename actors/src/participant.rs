//! `ParticipantActor`: one per WebSocket connection. Decodes frames (JSON or MessagePack),
//! rate-limits, authorises `start`/`join` against the database (status, role, password),
//! forwards requests to the meeting actor, and encodes replies and events in the encoding the
//! client last used. The socket itself belongs to the connection task (nodes/src/ws.rs); this
//! actor talks to it through a bounded channel of [`Outbound`] items.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_core::join::{JoinDecision, JoinMode};
use parley_core::meeting::Caller;
use parley_core::protocol::{DecodeError, Encoding, ErrorCode, Reply, ReplyData, Request, decode_request, encode};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::LiveServices;
use crate::admission::admit;
use crate::error::{LiveError, LiveResult, fail};
use crate::messages::{MeetingHandle, Outbound, ParticipantMsg, ParticipantRef, SupervisorRef, connections_group};
use crate::route::locate;

/// Consecutive rate-limited frames after which the connection is closed.
const MAX_RATE_VIOLATIONS: u32 = 500;

/// How long after its join a connection's media signalling is traced as part of the join.
const MEDIA_JOIN_TRACE_WINDOW: Duration = Duration::from_secs(60);

pub struct ParticipantArgs {
    pub user_id: Uuid,
    pub display_name: String,
    pub outbound: mpsc::Sender<Outbound>,
    pub supervisor: SupervisorRef,
    pub services: Arc<LiveServices>,
}

pub struct ParticipantActor;

pub struct ParticipantState {
    user_id: Uuid,
    display_name: String,
    outbound: mpsc::Sender<Outbound>,
    supervisor: SupervisorRef,
    services: Arc<LiveServices>,
    /// The meeting this connection is in (or waiting for), with the caller facts used.
    meeting: Option<(Uuid, MeetingHandle, Caller)>,
    encoding: Encoding,
    bucket: TokenBucket,
    violations: u32,
    /// The `seq` of the last meeting event sent to the client: an event at or below it is a
    /// repeat (a replay overlapping live delivery, an old owner's straggler) and is dropped.
    last_seq: u64,
    /// The trace of the join that seated this connection, and when: its media signalling in
    /// the next [`MEDIA_JOIN_TRACE_WINDOW`] belongs to it (one trace from `join` to media).
    join_trace: Option<(opentelemetry::Context, Instant)>,
}

/// A token bucket: `burst` tokens, refilled at `per_sec`.
struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, per_sec: u32) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl ParticipantState {
    fn send(&self, data: Vec<u8>, encoding: Encoding) {
        // A client that does not read fills its queue: it is closed rather than buffered forever.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbound.try_send(Outbound::Frame { data, encoding }) {
            let _ =
                self.outbound.try_send(Outbound::Close { code: 1008, reason: "too slow: outbound queue full".into() });
        }
    }

    fn reply(&self, reply: &Reply) {
        self.send(encode(reply, self.encoding), self.encoding);
    }
}

type Answer = LiveResult<ReplyData>;

impl Actor for ParticipantActor {
    type Msg = ParticipantMsg;
    type State = ParticipantState;
    type Arguments = ParticipantArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ParticipantMsg>,
        a: ParticipantArgs,
    ) -> Result<ParticipantState, ActorProcessingErr> {
        let bucket = TokenBucket::new(a.services.config.rate_burst, a.services.config.rate_per_sec);
        Ok(ParticipantState {
            user_id: a.user_id,
            display_name: a.display_name,
            outbound: a.outbound,
            supervisor: a.supervisor,
            services: a.services,
            meeting: None,
            encoding: Encoding::Json,
            bucket,
            violations: 0,
            last_seq: 0,
            join_trace: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ParticipantMsg>,
        msg: ParticipantMsg,
        state: &mut ParticipantState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ParticipantMsg::Frame { data, encoding } => {
                state.encoding = encoding;
                if !state.bucket.take() {
                    state.violations += 1;
                    if state.violations >= MAX_RATE_VIOLATIONS {
                        let _ = state
                            .outbound
                            .try_send(Outbound::Close { code: 1008, reason: "rate limit exceeded".into() });
                        return Ok(());
                    }
                    let id = decode_request(&data, encoding).ok().map(|(id, _)| id);
                    state.reply(&Reply::err(id, ErrorCode::RateLimited, "too many requests; slow down"));
                    return Ok(());
                }
                state.violations = 0;
                let (id, request) = match decode_request(&data, encoding) {
                    Ok(ok) => ok,
                    Err(DecodeError { id, code, message }) => {
                        state.reply(&Reply::err(id, code, message));
                        return Ok(());
                    }
                };
                let span = request_span(state, &request);
                let enters = matches!(request, Request::Join { .. } | Request::Start { .. } | Request::Resume { .. });
                let answer = handle_request(&myself, state, request).instrument(span.clone()).await;
                if enters && matches!(answer, Ok(ReplyData::Joined { .. })) {
                    state.join_trace = crate::trace_context::trace_id(&span).map(|_| (span.context(), Instant::now()));
                }
                let reply = match answer {
                    Ok(data) => Reply::ok(id, data),
                    Err(LiveError { code, message }) => Reply::err(Some(id), code, message),
                };
                state.reply(&reply);
            }
            ParticipantMsg::Event(shared) => {
                if state.meeting.as_ref().is_none_or(|(m, _, _)| *m != shared.frame.meeting_id) {
                    // Not (or no longer) in that meeting: a join that was refused, or a leave.
                    return Ok(());
                }
                if let Some(seq) = shared.frame.seq {
                    if seq <= state.last_seq {
                        return Ok(());
                    }
                    state.last_seq = seq;
                }
                state.send(shared.bytes(state.encoding).to_vec(), state.encoding);
            }
            ParticipantMsg::Crash => panic!("fault injection: connection of {} crashed on purpose", state.user_id),
            ParticipantMsg::Reattach { meeting_id, meeting } => {
                if let Some((m, r, _)) = state.meeting.as_mut()
                    && *m == meeting_id
                {
                    *r = meeting.clone();
                    meeting.attach(&state.services, meeting_id, state.user_id, &myself, Some(state.last_seq));
                }
            }
            ParticipantMsg::Detached { meeting_id, reason } => {
                if state.meeting.as_ref().is_some_and(|(m, _, _)| *m == meeting_id) {
                    leave_group(&myself, state);
                    tracing::debug!(user = %state.user_id, %meeting_id, ?reason, "detached from meeting");
                }
            }
            ParticipantMsg::SocketClosed { lost } => {
                if let Some((meeting_id, meeting, _)) = state.meeting.take() {
                    meeting.disconnected(&state.services, meeting_id, state.user_id, &myself, lost);
                }
                myself.stop(Some("socket closed".to_owned()));
            }
        }
        Ok(())
    }
}

/// The span of one request from the client: a trace of its own (`trace_id` recorded for the
/// log lines under it), except media signalling soon after a join, which continues the join's.
/// Heartbeats are not traced.
fn request_span(state: &ParticipantState, request: &Request) -> tracing::Span {
    if matches!(request, Request::Heartbeat) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "ws.request",
        kind = request.kind(),
        user = %state.user_id,
        trace_id = tracing::field::Empty
    );
    if request.is_media()
        && let Some((join, at)) = &state.join_trace
        && at.elapsed() < MEDIA_JOIN_TRACE_WINDOW
    {
        let _ = span.set_parent(join.clone());
    }
    crate::trace_context::record_trace_id(&span);
    span
}

async fn handle_request(myself: &ParticipantRef, state: &mut ParticipantState, request: Request) -> Answer {
    match request {
        Request::Auth { .. } => fail(ErrorCode::InvalidField, "this connection is already authenticated"),
        Request::Start { meeting_id, ref display_name } => {
            if state.meeting.is_some() {
                return fail(ErrorCode::AlreadyInMeeting, "leave your current meeting first");
            }
            let metrics = state.services.metrics.clone();
            timed_join(metrics, join_or_start(myself, state, meeting_id, None, display_name.clone(), JoinMode::Start))
                .await
        }
        Request::Join { meeting_id, ref password, ref display_name } => {
            if let Some((current, _, _)) = &state.meeting
                && *current != meeting_id
            {
                return fail(ErrorCode::AlreadyInMeeting, "leave your current meeting first");
            }
            let metrics = state.services.metrics.clone();
            let join =
                join_or_start(myself, state, meeting_id, password.as_deref(), display_name.clone(), JoinMode::Join);
            timed_join(metrics, join).await
        }
        Request::Resume { meeting_id, ref resume_token, last_seq } => {
            if state.meeting.as_ref().is_some_and(|(current, _, _)| *current != meeting_id) {
                return fail(ErrorCode::AlreadyInMeeting, "leave your current meeting first");
            }
            if state.services.resume.verify(resume_token) != Some((meeting_id, state.user_id)) {
                return fail(ErrorCode::ResumeFailed, "that resume token is not valid for you and this meeting");
            }
            // The token stands for the seat: no password, no waiting room. The role comes
            // back from the meeting's saved state.
            let caller =
                Caller { user_id: state.user_id, display_name: state.display_name.clone(), invited_role: None };
            let request = Request::Resume { meeting_id, resume_token: resume_token.clone(), last_seq };
            enter_with(myself, state, meeting_id, caller, request).await
        }
        other => {
            let Some((meeting_id, meeting, caller)) = state.meeting.clone() else {
                return fail(ErrorCode::NotInMeeting, "join a meeting first");
            };
            let leaving = matches!(other, Request::Leave);
            let (meeting, answer) = ask(myself, state, meeting_id, meeting, &caller, other).await?;
            if let Some((_, r, _)) = state.meeting.as_mut() {
                *r = meeting;
            }
            if leaving && answer.is_ok() {
                leave_group(myself, state);
            }
            answer
        }
    }
}

/// Asks the meeting; if its actor is gone (crashed, moved, its node died), finds it again,
/// re-attaches this connection there (the events missed meanwhile come first) and asks once
/// more — unless the request is one that must not be carried out twice (a chat message the
/// lost actor may already have sent): that is answered `unavailable`, for the client to check
/// and resend. Returns the handle that answered, with the answer; `Err` only when the meeting
/// cannot be found again.
async fn ask(
    myself: &ParticipantRef,
    state: &ParticipantState,
    meeting_id: Uuid,
    meeting: MeetingHandle,
    caller: &Caller,
    request: Request,
) -> LiveResult<(MeetingHandle, Answer)> {
    let s = &state.services;
    // A seated connection says what it has seen: a meeting that does not know it yet (it
    // moved, and the re-attach has not arrived) sends it what it missed before anything new.
    let seated = state.meeting.as_ref().is_some_and(|(m, _, _)| *m == meeting_id);
    let seen = seated.then_some(state.last_seq);
    match meeting.call(s, meeting_id, caller, myself, request.clone(), seen).await {
        Err(LiveError { code: ErrorCode::Unavailable, .. }) => {
            let meeting = locate(s, &state.supervisor, meeting_id).await?;
            if seated {
                meeting.attach(s, meeting_id, state.user_id, myself, Some(state.last_seq));
                if !request.is_repeatable() {
                    let why =
                        "the meeting moved while this was on its way and may have carried it out: check, then resend";
                    return Ok((meeting, fail(ErrorCode::Unavailable, why)));
                }
            }
            let answer = meeting.call(s, meeting_id, caller, myself, request, seen).await;
            Ok((meeting, answer))
        }
        answer => Ok((meeting, answer)),
    }
}

/// Joins the running meeting (started or re-activated by the supervisor as needed) and, once
/// in (or waiting), records it and joins its connections group.
async fn enter(
    myself: &ParticipantRef,
    state: &mut ParticipantState,
    meeting_id: Uuid,
    caller: Caller,
    display_name: Option<String>,
) -> Answer {
    enter_with(myself, state, meeting_id, caller, Request::Join { meeting_id, password: None, display_name }).await
}

/// [`enter`] with the request that takes the seat (`join` or `resume`). Events numbered up
/// to the `joined` reply's `seq` are in its snapshot (or its `missed` list): only later ones
/// are sent.
async fn enter_with(
    myself: &ParticipantRef,
    state: &mut ParticipantState,
    meeting_id: Uuid,
    caller: Caller,
    request: Request,
) -> Answer {
    // In the meeting's connections group before asking: an event the meeting sends right after
    // its reply can overtake that reply between nodes, and must still find this connection
    // (it waits in the mailbox until the reply is out, then the `seq` check sorts it).
    let group = connections_group(meeting_id);
    let was_in = state.meeting.as_ref().is_some_and(|(m, _, _)| *m == meeting_id);
    ractor::pg::join(group.clone(), vec![myself.get_cell()]);
    let entered = async {
        let meeting = locate(&state.services, &state.supervisor, meeting_id).await?;
        let (meeting, answer) = ask(myself, state, meeting_id, meeting, &caller, request).await?;
        Ok((meeting, answer?))
    }
    .await;
    let (meeting, answer) = match entered {
        Ok(ok) => ok,
        Err(e) => {
            if !was_in {
                ractor::pg::leave(group, vec![myself.get_cell()]);
            }
            return Err(e);
        }
    };
    if let ReplyData::Joined { seq, .. } = &answer {
        state.last_seq = *seq;
    }
    state.meeting = Some((meeting_id, meeting, caller));
    Ok(answer)
}

/// Forgets the meeting and leaves its connections group.
fn leave_group(myself: &ParticipantRef, state: &mut ParticipantState) {
    if let Some((meeting_id, _, _)) = state.meeting.take() {
        ractor::pg::leave(connections_group(meeting_id), vec![myself.get_cell()]);
    }
}

/// Runs a `join`/`start` and counts how long it took and how it ended (`parley_join_duration_seconds`).
async fn timed_join(
    metrics: Arc<crate::metrics::LiveMetrics>,
    join: impl std::future::Future<Output = Answer>,
) -> Answer {
    let started = Instant::now();
    let answer = join.await;
    let outcome = match &answer {
        Ok(ReplyData::Joined { .. }) => crate::metrics::JoinOutcome::Joined,
        Ok(ReplyData::Waiting { .. }) => crate::metrics::JoinOutcome::Waiting,
        _ => crate::metrics::JoinOutcome::Refused,
    };
    metrics.join(started.elapsed().as_secs_f64(), outcome);
    answer
}

/// `join` or `start`: the one join decision (`crate::admission`, `parley_core::join`), then in.
/// A moderator's entry into a meeting that is not live starts it (and restarts an ended one
/// before its scheduled end).
async fn join_or_start(
    myself: &ParticipantRef,
    state: &mut ParticipantState,
    meeting_id: Uuid,
    password: Option<&str>,
    display_name: Option<String>,
    mode: JoinMode,
) -> Answer {
    let s = &state.services;
    let admission = admit(&s.store, &s.join_guard, meeting_id, state.user_id, password, mode)
        .await?
        .ok_or((ErrorCode::MeetingNotFound, "no such meeting".to_owned()))?;
    match admission.decision {
        JoinDecision::Refused(r) => return fail(ErrorCode::from(r), r.message()),
        JoinDecision::Enter { reopens: true, .. } => {
            s.store.reopen_meeting(meeting_id).await?;
            tracing::info!(%meeting_id, user = %state.user_id, "ended meeting restarted before its scheduled end");
        }
        JoinDecision::Enter { .. } | JoinDecision::WaitingRoom => {}
    }
    let caller =
        Caller { user_id: state.user_id, display_name: state.display_name.clone(), invited_role: admission.role };
    enter(myself, state, meeting_id, caller, display_name).await
}
