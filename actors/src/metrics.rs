//! What the live actors count, as OpenTelemetry instruments made from the node's meter (the
//! node layer exports them; see `nodes/src/telemetry`). Gauges of what is running now
//! (meetings, participants, media peers) are read from [`crate::MeetingTable`] when scraped and
//! need nothing here; this holds what happens: joins, restarts, failovers, cluster messages.
//!
//! Names follow OpenTelemetry (dotted, with a unit); the Prometheus exporter turns
//! `parley.join.duration` (unit `s`) into `parley_join_duration_seconds` and a counter
//! `parley.actor.restarts` into `parley_actor_restarts_total`.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};

/// Join latency buckets (seconds): a join is a database check, maybe a placement across the
/// cluster, then the meeting actor's answer.
const JOIN_BOUNDARIES: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Which actor a supervisor restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    Meeting,
    MediaRouter,
}

impl ActorKind {
    pub fn label(self) -> &'static str {
        match self {
            ActorKind::Meeting => "meeting",
            ActorKind::MediaRouter => "media_router",
        }
    }
}

/// How a `join`/`start` request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    Waiting,
    Refused,
}

impl JoinOutcome {
    fn label(self) -> &'static str {
        match self {
            JoinOutcome::Joined => "joined",
            JoinOutcome::Waiting => "waiting",
            JoinOutcome::Refused => "refused",
        }
    }
}

/// The live layer's instruments. Cheap to record into (no allocation for the fixed label sets).
pub struct LiveMetrics {
    join_duration: Histogram<f64>,
    actor_restarts: Counter<u64>,
    failovers: Counter<u64>,
    cluster_messages: Counter<u64>,
    websocket_connections: UpDownCounter<i64>,
    websockets_open: std::sync::atomic::AtomicI64,
}

impl LiveMetrics {
    pub fn new(meter: &Meter) -> Self {
        let m = LiveMetrics {
            join_duration: meter
                .f64_histogram("parley.join.duration")
                .with_unit("s")
                .with_description("Time from a join or start request to its answer, by outcome")
                .with_boundaries(JOIN_BOUNDARIES.to_vec())
                .build(),
            actor_restarts: meter
                .u64_counter("parley.actor.restarts")
                .with_description("Actors restarted by their supervisor after a failure, by kind")
                .build(),
            failovers: meter
                .u64_counter("parley.meeting.failovers")
                .with_description("Meetings this node took over from a node that died or drained")
                .build(),
            cluster_messages: meter
                .u64_counter("parley.cluster.messages")
                .with_description("Envelopes exchanged with other nodes' hosts, by direction and kind")
                .build(),
            websocket_connections: meter
                .i64_up_down_counter("parley.websocket.connections")
                .with_description("Open client WebSocket connections")
                .build(),
            websockets_open: Default::default(),
        };
        // Every fixed series exists from the start (at 0), so a rate or an alert over it works
        // before the first event.
        for kind in [ActorKind::Meeting, ActorKind::MediaRouter] {
            m.actor_restarts.add(0, &[KeyValue::new("actor", kind.label())]);
        }
        m.failovers.add(0, &[]);
        m.websocket_connections.add(0, &[]);
        m
    }

    /// A join or start answered after `seconds`.
    pub fn join(&self, seconds: f64, outcome: JoinOutcome) {
        self.join_duration.record(seconds, &[KeyValue::new("outcome", outcome.label())]);
    }

    pub fn actor_restarted(&self, kind: ActorKind) {
        self.actor_restarts.add(1, &[KeyValue::new("actor", kind.label())]);
    }

    pub fn failover(&self) {
        self.failovers.add(1, &[]);
    }

    /// One envelope sent (`out`) or received (`in`): `call` waits for an answer, `cast` not.
    pub fn cluster_message(&self, outgoing: bool, call: bool) {
        let direction = if outgoing { "out" } else { "in" };
        let kind = if call { "call" } else { "cast" };
        self.cluster_messages.add(1, &[KeyValue::new("direction", direction), KeyValue::new("kind", kind)]);
    }

    /// A client WebSocket opened (`+1`) or closed (`-1`).
    pub fn websocket(&self, delta: i64) {
        self.websocket_connections.add(delta, &[]);
        self.websockets_open.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    /// WebSocket connections open now (the operators' view reads it).
    pub fn websockets_open(&self) -> i64 {
        self.websockets_open.load(std::sync::atomic::Ordering::Relaxed)
    }
}
