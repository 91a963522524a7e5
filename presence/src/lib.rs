//! The live presence mirror: who is in which meeting right now, in what state, who is waiting,
//! which node carries the meeting — so any node can find any meeting.
//!
//! Two implementations behind one [`Presence`] handle:
//! - [`Presence::redis`]: the seed's Redis schema (keys below), shared by every node.
//! - [`Presence::local`]: an in-process map with the same semantics (TTL expiry included), for
//!   a single node with no Redis (`make run`).
//!
//! Redis keys (the `{ID}` braces are a cluster hash tag: one meeting's keys share a slot, so
//! multi-key pipelines and transactions stay on one shard):
//!
//! | key | type | content |
//! |---|---|---|
//! | `meeting:{ID}:participants` | set | user ids of participants (not the waiting room) |
//! | `meeting:{ID}:user:{UID}` | hash, TTL | `connection_id`, `node`, `display_name`, `role`, `audio`, `video`, `screen_share`, `hand`, `room`, `joined_at`, `last_heartbeat`; expires `ttl` after the last heartbeat |
//! | `meeting:{ID}:waiting_room` | list | FIFO of JSON `{user_id, display_name, since}` |
//! | `meeting:{ID}:media_server` | string | the owner: `node/epoch` (see `parley_core::placement::Owner`), claimed by compare-and-set |
//! | `meeting:{ID}:events` | pub/sub channel | every event of the meeting, JSON |
//! | `meeting:{ID}:log` | stream, capped | the meeting's numbered events (entry id `SEQ-0`; fields `a`: audience JSON, `f`: event JSON), the last [`EVENT_LOG_LEN`] or so, for replay after a lost connection or a failover |
//! | `meeting:{ID}:state` | string | JSON of the meeting's durable flags (lock, chat, recording, breakouts, removed, roles) |
//! | `node:{NAME}` | string, TTL | a node's lease: JSON [`NodeLease`], refreshed well within its TTL |
//!
//! The meeting actor is the only writer of its meeting's keys. A participant whose hash expired
//! is reported by [`Presence::expired`]; the actor then removes them (`participant_left`,
//! reason `timeout`).

mod local;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use parley_core::meeting::Audience;
pub use parley_core::placement::Owner;
use parley_core::protocol::{ParticipantView, WaitingView};
use uuid::Uuid;

/// Default time a participant's hash lives after its last heartbeat.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Presence could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PresenceError {
    /// The store cannot be reached (Redis down); the caller may retry.
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
    /// Stored data is not what this code writes.
    #[error("corrupt presence data: {0}")]
    Corrupt(String),
}

/// A participant as mirrored: their view plus where they are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub view: ParticipantView,
    /// Identifies the WebSocket connection (unique per node).
    pub connection_id: String,
    /// The node the connection is on.
    pub node: String,
}

/// Key names, in one place.
pub mod keys {
    use uuid::Uuid;

    pub fn participants(meeting: Uuid) -> String {
        format!("meeting:{{{meeting}}}:participants")
    }
    pub fn user(meeting: Uuid, user: Uuid) -> String {
        format!("meeting:{{{meeting}}}:user:{user}")
    }
    pub fn waiting_room(meeting: Uuid) -> String {
        format!("meeting:{{{meeting}}}:waiting_room")
    }
    pub fn media_server(meeting: Uuid) -> String {
        format!("meeting:{{{meeting}}}:media_server")
    }
    pub fn events(meeting: Uuid) -> String {
        format!("meeting:{{{meeting}}}:events")
    }
    pub fn state(meeting: Uuid) -> String {
        format!("meeting:{{{meeting}}}:state")
    }
    pub fn log(meeting: Uuid) -> String {
        format!("meeting:{{{meeting}}}:log")
    }
    pub fn node_lease(node: &str) -> String {
        format!("node:{node}")
    }
}

/// About how many events a meeting's log keeps (Redis trims it approximately).
pub const EVENT_LOG_LEN: usize = 10_000;
/// The most events one replay returns.
pub const REPLAY_MAX: usize = EVENT_LOG_LEN;

/// One numbered event of a meeting, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub seq: u64,
    pub audience: Audience,
    /// The event frame, JSON.
    pub frame: String,
}

/// What a node's lease says: its load and capacity, for placement and the operators' view.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeLease {
    #[serde(flatten)]
    pub load: parley_core::placement::NodeLoad,
    /// `host:port` of its HTTP/WebSocket listener.
    pub http: String,
    /// Its media (UDP) address.
    pub media: String,
    /// When it wrote this lease (Unix ms).
    pub at_ms: i64,
}

/// After a failed Redis command, how long calls fail at once instead of waiting on Redis.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// The presence store of one node. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Inner,
    ttl: Duration,
    /// Circuit breaker: while Redis is failing, callers (meeting actors) must not stall on
    /// timeouts. Unix ms until which calls fail fast; 0 when closed.
    open_until_ms: Arc<std::sync::atomic::AtomicI64>,
}

#[derive(Clone)]
enum Inner {
    Local(Arc<local::LocalPresence>),
    Redis(redis::RedisPresence),
}

impl Presence {
    /// An in-process store for a single node.
    pub fn local(ttl: Duration) -> Presence {
        Presence { inner: Inner::Local(Arc::new(local::LocalPresence::default())), ttl, open_until_ms: Arc::default() }
    }

    /// Connects to Redis at `url` (reconnecting by itself when the connection drops).
    pub async fn redis(url: &str, ttl: Duration) -> Result<Presence, PresenceError> {
        Ok(Presence {
            inner: Inner::Redis(redis::RedisPresence::connect(url).await?),
            ttl,
            open_until_ms: Arc::default(),
        })
    }

    /// Fails fast while the breaker is open; opens it when a call reports Redis unavailable.
    /// (Called with the finished result: the breaker only skips calls made while it is open.)
    fn guard<T>(&self, result: Result<T, PresenceError>) -> Result<T, PresenceError> {
        if let Err(e) = &result {
            // Inside a `presence.*` span this marks the call failed for the node's call metrics.
            tracing::debug!(target: parley_core::CALL_FAILED, error = %e, "presence call failed");
        }
        if let Err(PresenceError::Unavailable(_)) = &result {
            let until = unix_ms() + BREAKER_OPEN.as_millis() as i64;
            self.open_until_ms.store(until, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Whether calls should fail at once (Redis failed within the last [`BREAKER_OPEN`]).
    fn tripped(&self) -> bool {
        matches!(self.inner, Inner::Redis(_))
            && self.open_until_ms.load(std::sync::atomic::Ordering::Relaxed) > unix_ms()
    }

    fn fail_fast(&self) -> Result<(), PresenceError> {
        if self.tripped() {
            tracing::debug!(target: parley_core::CALL_FAILED, "presence call refused: Redis failed moments ago");
            return Err(PresenceError::Unavailable("Redis failed moments ago; not retried yet".into()));
        }
        Ok(())
    }

    /// `redis` or `in-process`, for logs.
    pub fn kind(&self) -> &'static str {
        match self.inner {
            Inner::Local(_) => "in-process",
            Inner::Redis(_) => "redis",
        }
    }

    /// How long a participant's hash lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Adds or refreshes a participant (also their heartbeat: the TTL starts again).
    #[tracing::instrument(name = "presence.upsert", skip_all, fields(backend = self.kind()))]
    pub async fn upsert(&self, meeting: Uuid, rec: &PresenceRecord, now_ms: i64) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => {
                l.upsert(meeting, rec, now_ms, self.ttl);
                Ok(())
            }
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.upsert(meeting, rec, now_ms, self.ttl).await)
            }
        }
    }

    /// Removes a participant.
    #[tracing::instrument(name = "presence.remove", skip_all, fields(backend = self.kind()))]
    pub async fn remove(&self, meeting: Uuid, user: Uuid) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => {
                l.remove(meeting, user);
                Ok(())
            }
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.remove(meeting, user).await)
            }
        }
    }

    /// Replaces the waiting room with `list` (in order).
    #[tracing::instrument(name = "presence.set_waiting", skip_all, fields(backend = self.kind()))]
    pub async fn set_waiting(&self, meeting: Uuid, list: &[WaitingView]) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => {
                l.set_waiting(meeting, list);
                Ok(())
            }
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.set_waiting(meeting, list).await)
            }
        }
    }

    /// The waiting room, in order.
    pub async fn waiting(&self, meeting: Uuid) -> Result<Vec<WaitingView>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.waiting(meeting)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.waiting(meeting).await)
            }
        }
    }

    /// Records the node carrying the meeting.
    pub async fn set_media_server(&self, meeting: Uuid, node: &str) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => {
                l.set_media_server(meeting, node);
                Ok(())
            }
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.set_media_server(meeting, node).await)
            }
        }
    }

    /// Claims the meeting for `owner` (compare-and-set): succeeds when the key holds `expected`
    /// (`None`: absent) or already names `owner.node` (a restarted actor re-claiming its own
    /// meeting). Returns whether the claim took.
    #[tracing::instrument(name = "presence.claim_owner", skip_all, fields(backend = self.kind()))]
    pub async fn claim_owner(
        &self,
        meeting: Uuid,
        owner: &Owner,
        expected: Option<&str>,
    ) -> Result<bool, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.claim_owner(meeting, owner, expected)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.claim_owner(meeting, owner, expected).await)
            }
        }
    }

    /// The meeting's owner, if claimed (an unreadable value counts as none).
    #[tracing::instrument(name = "presence.owner", skip_all, fields(backend = self.kind()))]
    pub async fn owner(&self, meeting: Uuid) -> Result<Option<Owner>, PresenceError> {
        Ok(self.media_server(meeting).await?.as_deref().and_then(Owner::parse))
    }

    /// Writes this node's lease, living `ttl`.
    pub async fn put_lease(&self, lease: &NodeLease, ttl: Duration) -> Result<(), PresenceError> {
        let json = serde_json::to_string(lease).map_err(|e| PresenceError::Corrupt(e.to_string()))?;
        match &self.inner {
            Inner::Local(l) => {
                l.put_lease(&lease.load.node, json, ttl);
                Ok(())
            }
            Inner::Redis(r) => self.guard(r.put_lease(&lease.load.node, &json, ttl).await),
        }
    }

    /// The live leases of `nodes` (`None` where a lease lapsed or is unreadable), in order.
    /// Not behind the circuit breaker: membership must see Redis come back at once.
    pub async fn leases(&self, nodes: &[String]) -> Result<Vec<Option<NodeLease>>, PresenceError> {
        let raw = match &self.inner {
            Inner::Local(l) => nodes.iter().map(|n| l.lease(n)).collect(),
            Inner::Redis(r) => r.leases(nodes).await?,
        };
        Ok(raw.into_iter().map(|j| j.and_then(|j| serde_json::from_str(&j).ok())).collect())
    }

    /// The node carrying the meeting, if live.
    #[tracing::instrument(name = "presence.media_server", skip_all, fields(backend = self.kind()))]
    pub async fn media_server(&self, meeting: Uuid) -> Result<Option<String>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.media_server(meeting)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.media_server(meeting).await)
            }
        }
    }

    /// Participant ids in the meeting's set.
    pub async fn participants(&self, meeting: Uuid) -> Result<Vec<Uuid>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.participants(meeting)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.participants(meeting).await)
            }
        }
    }

    /// Of `users`, those whose hash no longer exists (heartbeat missed for a whole TTL).
    pub async fn expired(&self, meeting: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.expired(meeting, users)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.expired(meeting, users).await)
            }
        }
    }

    /// Gives the hashes of `users` (alive as far as the meeting's owner knows: any request
    /// counts, not only heartbeats) a full TTL again, and returns those whose hash is gone.
    pub async fn keep_alive(&self, meeting: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.keep_alive(meeting, users, self.ttl)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.keep_alive(meeting, users, self.ttl).await)
            }
        }
    }

    /// Every participant record still alive (their hash exists), for rehydration.
    #[tracing::instrument(name = "presence.records", skip_all, fields(backend = self.kind()))]
    pub async fn records(&self, meeting: Uuid) -> Result<Vec<PresenceRecord>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.records(meeting)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.records(meeting).await)
            }
        }
    }

    /// Stores the meeting's durable flags (opaque JSON).
    #[tracing::instrument(name = "presence.set_flags", skip_all, fields(backend = self.kind()))]
    pub async fn set_flags(&self, meeting: Uuid, json: &str) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => {
                l.set_flags(meeting, json);
                Ok(())
            }
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.set_flags(meeting, json).await)
            }
        }
    }

    /// The meeting's durable flags, if stored.
    #[tracing::instrument(name = "presence.flags", skip_all, fields(backend = self.kind()))]
    pub async fn flags(&self, meeting: Uuid) -> Result<Option<String>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.flags(meeting)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.flags(meeting).await)
            }
        }
    }

    /// Publishes an encoded event on the meeting's channel.
    pub async fn publish(&self, meeting: Uuid, payload: &str) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(_) => Ok(()),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.publish(meeting, payload).await)
            }
        }
    }

    /// Appends a numbered event to the meeting's log and publishes it on its channel (one
    /// round trip). `seq` must be above every number logged before: a number at or below the
    /// log's top is refused ([`PresenceError::Corrupt`]), which is how an old owner that has
    /// not noticed its takeover is kept out of the new owner's log.
    #[tracing::instrument(name = "presence.log_event", skip_all, fields(backend = self.kind()))]
    pub async fn log_event(&self, meeting: Uuid, event: &LoggedEvent) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => l.log_event(meeting, event),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.log_event(meeting, event).await)
            }
        }
    }

    /// The logged events numbered above `after`, oldest first (at most [`REPLAY_MAX`]).
    #[tracing::instrument(name = "presence.events_after", skip_all, fields(backend = self.kind()))]
    pub async fn events_after(&self, meeting: Uuid, after: u64) -> Result<Vec<LoggedEvent>, PresenceError> {
        match &self.inner {
            Inner::Local(l) => Ok(l.events_after(meeting, after)),
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.events_after(meeting, after).await)
            }
        }
    }

    /// Deletes every key of the meeting (it ended).
    #[tracing::instrument(name = "presence.clear", skip_all, fields(backend = self.kind()))]
    pub async fn clear(&self, meeting: Uuid, users: &[Uuid]) -> Result<(), PresenceError> {
        match &self.inner {
            Inner::Local(l) => {
                l.clear(meeting);
                Ok(())
            }
            Inner::Redis(r) => {
                self.fail_fast()?;
                self.guard(r.clear(meeting, users).await)
            }
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The hash fields of a record (shared by both implementations and by tests).
pub fn record_fields(rec: &PresenceRecord, now_ms: i64) -> Vec<(&'static str, String)> {
    let v = &rec.view;
    vec![
        ("connection_id", rec.connection_id.clone()),
        ("node", rec.node.clone()),
        ("display_name", v.display_name.clone()),
        ("role", v.role.as_str().to_owned()),
        ("audio", (!v.audio_muted).to_string()),
        ("video", v.video_on.to_string()),
        ("screen_share", v.screen_sharing.to_string()),
        ("hand", v.hand_raised.to_string()),
        ("hand_at", v.hand_raised_at.map(|t| t.to_string()).unwrap_or_default()),
        ("room", v.room.map(|r| r.to_string()).unwrap_or_default()),
        ("joined_at", v.joined_at.to_string()),
        ("last_heartbeat", now_ms.to_string()),
    ]
}

/// Reads a record back from its hash fields (inverse of [`record_fields`]).
pub fn record_from_fields(
    user_id: Uuid,
    f: &std::collections::HashMap<String, String>,
) -> Result<PresenceRecord, PresenceError> {
    let get = |k: &str| f.get(k).cloned().ok_or_else(|| PresenceError::Corrupt(format!("field {k} missing")));
    let flag = |k: &str| get(k).map(|v| v == "true");
    let role = get("role")?.parse().map_err(|e| PresenceError::Corrupt(format!("{e}")))?;
    let room = get("room")?;
    Ok(PresenceRecord {
        view: ParticipantView {
            user_id,
            display_name: get("display_name")?,
            role,
            audio_muted: !flag("audio")?,
            video_on: flag("video")?,
            hand_raised: flag("hand")?,
            // Absent in records written before it existed.
            hand_raised_at: f.get("hand_at").and_then(|t| t.parse().ok()),
            screen_sharing: flag("screen_share")?,
            joined_at: get("joined_at")?.parse().map_err(|_| PresenceError::Corrupt("joined_at".into()))?,
            room: if room.is_empty() {
                None
            } else {
                Some(room.parse().map_err(|_| PresenceError::Corrupt("room".into()))?)
            },
        },
        connection_id: get("connection_id")?,
        node: get("node")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_core::model::Role;

    fn rec(user: Uuid) -> PresenceRecord {
        PresenceRecord {
            view: ParticipantView {
                user_id: user,
                display_name: "A".into(),
                role: Role::Attendee,
                audio_muted: true,
                video_on: false,
                hand_raised: true,
                hand_raised_at: Some(4),
                screen_sharing: false,
                joined_at: 5,
                room: Some(2),
            },
            connection_id: "c1".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn keys_share_a_hash_tag() {
        let m = Uuid::nil();
        for k in [
            keys::participants(m),
            keys::user(m, Uuid::nil()),
            keys::waiting_room(m),
            keys::media_server(m),
            keys::events(m),
        ] {
            assert!(k.starts_with(&format!("meeting:{{{m}}}:")), "{k}");
        }
    }

    #[test]
    fn records_round_trip_through_hash_fields() {
        let r = rec(Uuid::new_v4());
        let f = record_fields(&r, 7).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(record_from_fields(r.view.user_id, &f).unwrap(), r);
    }

    #[test]
    fn record_fields_say_audio_enabled_not_muted() {
        let f: std::collections::HashMap<_, _> = record_fields(&rec(Uuid::nil()), 99).into_iter().collect();
        assert_eq!(f["audio"], "false");
        assert_eq!(f["hand"], "true");
        assert_eq!(f["room"], "2");
        assert_eq!(f["last_heartbeat"], "99");
    }

    #[tokio::test]
    async fn local_presence_expires_without_heartbeat() {
        let p = Presence::local(Duration::from_millis(50));
        let (m, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        p.upsert(m, &rec(a), 1).await.unwrap();
        p.upsert(m, &rec(b), 1).await.unwrap();
        assert_eq!(p.participants(m).await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(30)).await;
        p.upsert(m, &rec(b), 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(p.expired(m, &[a, b]).await.unwrap(), vec![a], "b's heartbeat kept it alive");
        p.remove(m, a).await.unwrap();
        assert_eq!(p.participants(m).await.unwrap(), vec![b]);
        let w = vec![WaitingView { user_id: a, display_name: "A".into(), since: 3 }];
        p.set_waiting(m, &w).await.unwrap();
        assert_eq!(p.waiting(m).await.unwrap(), w);
        p.set_media_server(m, "node-a").await.unwrap();
        assert_eq!(p.media_server(m).await.unwrap().as_deref(), Some("node-a"));
        p.clear(m, &[b]).await.unwrap();
        assert!(p.participants(m).await.unwrap().is_empty());
        assert!(p.media_server(m).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn local_log_replays_after_a_number_and_refuses_stale_ones() {
        let p = Presence::local(Duration::from_secs(5));
        let m = Uuid::new_v4();
        let ev = |seq| LoggedEvent { seq, audience: Audience::Everyone, frame: format!("{{\"n\":{seq}}}") };
        for seq in [5, 7, 9] {
            p.log_event(m, &ev(seq)).await.unwrap();
        }
        let after: Vec<u64> = p.events_after(m, 5).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(after, vec![7, 9]);
        assert!(matches!(p.log_event(m, &ev(9)).await, Err(PresenceError::Corrupt(_))), "not above the top");
        p.clear(m, &[]).await.unwrap();
        assert!(p.events_after(m, 0).await.unwrap().is_empty());
    }
}
