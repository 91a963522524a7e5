//! What crosses the cluster: one serialisable message type, [`NodeHostMsg`], whose payload is an
//! [`Envelope`] encoded with MessagePack (rmp-serde, named fields, human-readable ids, the same
//! codec as client frames). Every envelope carries the sender's node name, a wire version and
//! the trace context (W3C `traceparent`/`tracestate` keys) of the request it belongs to.
//!
//! Evolution rule: add variants and optional fields; never rename or reuse one. A peer that
//! sends something this build cannot decode gets its message dropped (logged), never a panic.

use std::collections::BTreeMap;

use crate::error::LiveResult;

use parley_core::meeting::Caller;
use parley_core::placement::NodeLoad;
use parley_core::protocol::{Encoding, EventFrame, LeaveReason, ReplyData, Request, decode, encode};
use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The wire version this build speaks.
pub const WIRE_VERSION: u16 = 1;

/// A connection (participant actor) anywhere in the cluster: its node and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnAddr {
    pub node: String,
    pub id: u64,
}

/// A meeting's answer to a request.
pub type Answer = LiveResult<ReplyData>;

/// One cluster message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u16,
    /// The sending node.
    pub from: String,
    /// Trace context of the operation this message is part of (empty when not traced).
    #[serde(default)]
    pub trace: BTreeMap<String, String>,
    pub body: Body,
}

impl Envelope {
    pub fn new(from: &str, body: Body) -> Envelope {
        Envelope { v: WIRE_VERSION, from: from.to_owned(), trace: BTreeMap::new(), body }
    }

    /// An envelope that carries the current span's trace context (see `trace_context`).
    pub fn traced(from: &str, body: Body) -> Envelope {
        Envelope { trace: crate::trace_context::current(), ..Envelope::new(from, body) }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self, Encoding::MessagePack)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, String> {
        decode(bytes, Encoding::MessagePack)
    }
}

/// What an envelope says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    // --- calls (answered) ---
    /// Start (or take over) a meeting on the receiving node. Answer: `activated`.
    Activate {
        meeting_id: Uuid,
        takeover_from: Option<String>,
    },
    /// A participant's request to a meeting the receiver owns. Answer: `answer`.
    Request {
        meeting_id: Uuid,
        caller: Caller,
        conn: ConnAddr,
        request: Request,
        /// The last event `seq` the connection has (see `MeetingMsg::Request`).
        #[serde(default)]
        seen: Option<u64>,
    },
    /// The receiver's current load. Answer: `load`.
    GetLoad,
    /// Operator: the receiver takes no new meetings and moves its meetings away. Answer:
    /// `drained`.
    Drain,
    /// Operators: the receiver's view of itself (meetings, media, actors, events). Answer:
    /// `inspected`.
    Inspect,
    // --- casts (one-way, at most once) ---
    /// Events for connections on the receiving node.
    Deliver {
        meeting_id: Uuid,
        conns: Vec<u64>,
        frame: EventFrame,
    },
    /// The meeting let go of a connection on the receiving node.
    Detached {
        meeting_id: Uuid,
        conn: u64,
        reason: LeaveReason,
    },
    /// A connection on the sender closed (`lost`: without a closing handshake).
    Disconnected {
        meeting_id: Uuid,
        user_id: Uuid,
        conn: ConnAddr,
        #[serde(default)]
        lost: bool,
    },
    /// A connection on the sender (re-)attaches to the meeting after it moved; with `after`,
    /// it first gets the events it missed since that `seq`.
    Attach {
        meeting_id: Uuid,
        user_id: Uuid,
        conn: ConnAddr,
        #[serde(default)]
        after: Option<u64>,
    },
    /// The meeting now lives on `owner`: connections on the receiver should re-attach.
    Moved {
        meeting_id: Uuid,
        owner: String,
        /// The new owner's fencing epoch: an older activation still running elsewhere stops.
        #[serde(default)]
        epoch: i64,
    },
    /// A recording of a meeting the receiver runs is ready (the pipeline ran on the sender).
    RecordingReady {
        meeting_id: Uuid,
        recording_id: Uuid,
        duration_seconds: i64,
    },
    // --- answers ---
    Answer {
        answer: Answer,
    },
    Activated {
        result: LiveResult<()>,
    },
    Load {
        load: NodeLoad,
    },
    Drained {
        moved: u32,
        remaining: u32,
    },
    Inspected {
        view: Box<crate::ops::NodeView>,
    },
}

impl Body {
    /// The body's `kind` tag (what traces and logs call it).
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Activate { .. } => "activate",
            Body::Request { .. } => "request",
            Body::GetLoad => "get_load",
            Body::Drain => "drain",
            Body::Inspect => "inspect",
            Body::Deliver { .. } => "deliver",
            Body::Detached { .. } => "detached",
            Body::Disconnected { .. } => "disconnected",
            Body::Attach { .. } => "attach",
            Body::Moved { .. } => "moved",
            Body::RecordingReady { .. } => "recording_ready",
            Body::Answer { .. } => "answer",
            Body::Activated { .. } => "activated",
            Body::Load { .. } => "load",
            Body::Drained { .. } => "drained",
            Body::Inspected { .. } => "inspected",
        }
    }
}

/// Messages to a node's `NodeHost`: the only actor advertised to peers.
#[derive(Debug)]
pub enum NodeHostMsg {
    Cast(Envelope),
    Call(Envelope, RpcReplyPort<Envelope>),
}

const CAST: &str = "cast";
const CALL: &str = "call";

impl ractor::Message for NodeHostMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            NodeHostMsg::Cast(env) => {
                Ok(SerializedMessage::Cast { variant: CAST.into(), args: env.to_bytes(), metadata: None })
            }
            NodeHostMsg::Call(env, port) => {
                // Bridge the typed reply port to the byte port the transport carries.
                let (tx, rx) = ractor::concurrency::oneshot::<Vec<u8>>();
                let timeout = port.get_timeout();
                tokio::spawn(async move {
                    let bytes = match timeout {
                        Some(t) => tokio::time::timeout(t, rx).await.ok().and_then(Result::ok),
                        None => rx.await.ok(),
                    };
                    match bytes.map(|b| Envelope::from_bytes(&b)) {
                        Some(Ok(reply)) => {
                            let _ = port.send(reply);
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "cluster: undecodable reply dropped"),
                        None => {}
                    }
                });
                let reply = match timeout {
                    Some(t) => RpcReplyPort::from((tx, t)),
                    None => RpcReplyPort::from(tx),
                };
                Ok(SerializedMessage::Call { variant: CALL.into(), args: env.to_bytes(), reply, metadata: None })
            }
        }
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let decode = |args: &[u8]| {
            Envelope::from_bytes(args).map_err(|e| {
                tracing::warn!(error = %e, "cluster: undecodable message dropped");
                BoxedDowncastErr
            })
        };
        match msg {
            SerializedMessage::Cast { variant, args, .. } if variant == CAST => Ok(NodeHostMsg::Cast(decode(&args)?)),
            SerializedMessage::Call { variant, args, reply, .. } if variant == CALL => {
                let env = decode(&args)?;
                let (tx, rx) = ractor::concurrency::oneshot::<Envelope>();
                let timeout = reply.get_timeout();
                tokio::spawn(async move {
                    if let Ok(answer) = rx.await {
                        let _ = reply.send(answer.to_bytes());
                    }
                });
                let port = match timeout {
                    Some(t) => RpcReplyPort::from((tx, t)),
                    None => RpcReplyPort::from(tx),
                };
                Ok(NodeHostMsg::Call(env, port))
            }
            other => {
                tracing::warn!(message = ?other, "cluster: unknown message variant dropped");
                Err(BoxedDowncastErr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_core::model::Role;
    use parley_core::protocol::Event;

    fn round_trip(body: Body) {
        let env = Envelope::new("node-a", body);
        assert_eq!(Envelope::from_bytes(&env.to_bytes()).unwrap(), env);
        let tagged = serde_json::to_value(&env.body).unwrap();
        assert_eq!(tagged["kind"], env.body.kind(), "kind() names the tag");
    }

    #[test]
    fn every_body_round_trips() {
        let m = Uuid::new_v4();
        let u = Uuid::new_v4();
        let conn = ConnAddr { node: "node-b".into(), id: 42 };
        let caller = Caller { user_id: u, display_name: "Ann".into(), invited_role: Some(Role::CoHost) };
        round_trip(Body::Activate { meeting_id: m, takeover_from: Some("node-c/3".into()) });
        round_trip(Body::Request {
            meeting_id: m,
            caller,
            conn: conn.clone(),
            request: Request::Chat { text: "hi".into(), to: None },
            seen: Some(7),
        });
        round_trip(Body::GetLoad);
        round_trip(Body::Drain);
        round_trip(Body::Drained { moved: 3, remaining: 0 });
        round_trip(Body::Inspect);
        let journal = crate::ops::Journal::new("node-a");
        journal.actor_failed(crate::metrics::ActorKind::Meeting, m, "boom");
        round_trip(Body::Inspected {
            view: Box::new(crate::ops::NodeView {
                node: "node-a".into(),
                version: "0.1.0".into(),
                started_at_ms: 1,
                now_ms: 2,
                draining: false,
                lease_held: true,
                max_meetings: 10,
                max_participants: 100,
                vitals: crate::ops::Vitals { cpu_percent: 12.5, memory_bytes: 1 << 20, ..Default::default() },
                history: vec![],
                meetings: vec![crate::ops::MeetingView {
                    meeting_id: m,
                    epoch: 3,
                    recording: true,
                    participants: vec![],
                    waiting: 1,
                    connections: [(u, "node-b".to_owned())].into(),
                    actor: journal.actor(crate::metrics::ActorKind::Meeting, m, "0.7".into()),
                    media_router: Some(crate::ops::RouterView {
                        actor: Default::default(),
                        recorder: false,
                        peers: vec![crate::ops::MediaPeerView {
                            user_id: u,
                            layers: vec![("k".into(), Some("high".into())), ("j".into(), None)],
                            rtt_ms: Some(3.5),
                            ..Default::default()
                        }],
                    }),
                }],
                events: journal.events(),
            }),
        });
        round_trip(Body::Deliver {
            meeting_id: m,
            conns: vec![1, 2, 3],
            frame: EventFrame {
                meeting_id: m,
                seq: Some(2_000_000_001),
                event: Event::ParticipantLeft { user_id: u, reason: LeaveReason::Left },
            },
        });
        round_trip(Body::Detached { meeting_id: m, conn: 7, reason: LeaveReason::Removed });
        round_trip(Body::Disconnected { meeting_id: m, user_id: u, conn: conn.clone(), lost: true });
        round_trip(Body::Attach { meeting_id: m, user_id: u, conn, after: Some(3_000_000_017) });
        round_trip(Body::Moved { meeting_id: m, owner: "node-c".into(), epoch: 7 });
        round_trip(Body::Answer { answer: Ok(ReplyData::Done) });
        round_trip(Body::Answer {
            answer: Err(crate::LiveError::new(parley_core::protocol::ErrorCode::Forbidden, "no")),
        });
        round_trip(Body::Activated { result: Ok(()) });
        round_trip(Body::Load {
            load: NodeLoad {
                node: "a".into(),
                meetings: 1,
                participants: 2,
                max_meetings: 3,
                max_participants: 4,
                draining: false,
            },
        });
    }

    #[test]
    fn ids_travel_as_strings_like_client_frames() {
        let m = Uuid::new_v4();
        let bytes = Envelope::new("a", Body::Moved { meeting_id: m, owner: "b".into(), epoch: 1 }).to_bytes();
        let v: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(v["body"]["meeting_id"], serde_json::Value::String(m.to_string()));
        assert_eq!(v["body"]["kind"], "moved");
    }

    #[test]
    fn garbage_and_unknown_variants_are_errors_not_panics() {
        use ractor::Message;
        for junk in [vec![], vec![0xc1], b"\x81\xa4kind\xa3zzz".to_vec(), vec![0xff; 64]] {
            let m = SerializedMessage::Cast { variant: CAST.into(), args: junk, metadata: None };
            assert!(NodeHostMsg::deserialize(m).is_err());
        }
        let ok = Envelope::new("a", Body::GetLoad).to_bytes();
        let m = SerializedMessage::Cast { variant: "launch_missiles".into(), args: ok, metadata: None };
        assert!(NodeHostMsg::deserialize(m).is_err());
        // A future peer's unknown body kind is refused, not misread.
        let mut v: serde_json::Value = rmp_serde::from_slice(&Envelope::new("a", Body::GetLoad).to_bytes()).unwrap();
        v["body"]["kind"] = "teleport".into();
        let m = SerializedMessage::Cast {
            variant: CAST.into(),
            args: rmp_serde::to_vec_named(&v).unwrap(),
            metadata: None,
        };
        assert!(NodeHostMsg::deserialize(m).is_err());
    }

    #[tokio::test]
    async fn calls_bridge_their_reply_ports_both_ways() {
        use ractor::Message;
        let (tx, rx) = ractor::concurrency::oneshot::<Envelope>();
        let msg = NodeHostMsg::Call(Envelope::new("a", Body::GetLoad), RpcReplyPort::from(tx));
        let SerializedMessage::Call { variant, args, reply, .. } = msg.serialize().unwrap() else {
            panic!("a call serialises as a call");
        };
        // The receiving side decodes it and answers on the typed port …
        let received =
            NodeHostMsg::deserialize(SerializedMessage::Call { variant, args, reply, metadata: None }).unwrap();
        let NodeHostMsg::Call(env, port) = received else { panic!("still a call") };
        assert_eq!(env.body, Body::GetLoad);
        port.send(Envelope::new("b", Body::Activated { result: Ok(()) })).unwrap();
        // … and the caller gets the typed answer.
        let answer = rx.await.unwrap();
        assert_eq!(answer.from, "b");
    }
}
