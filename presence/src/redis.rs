//! Redis presence (fred 10): the seed's keys, written in pipelines/transactions so one
//! meeting's update is one round trip.

use std::time::Duration;

use fred::prelude::*;
use parley_core::protocol::WaitingView;
use uuid::Uuid;

use crate::{
    EVENT_LOG_LEN, LoggedEvent, Owner, PresenceError, PresenceRecord, REPLAY_MAX, keys, record_fields,
    record_from_fields,
};

/// How long a command may wait (including while reconnecting) before failing as unavailable.
/// Healthy commands take well under a millisecond on a LAN; a meeting actor must not stall long.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(750);
/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub(crate) struct RedisPresence {
    client: Client,
}

fn unavailable(e: Error) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

impl RedisPresence {
    pub(crate) async fn connect(url: &str) -> Result<RedisPresence, PresenceError> {
        let config = Config::from_url(url).map_err(unavailable)?;
        let client = Builder::from_config(config)
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
            })
            // Reconnect forever with capped exponential backoff: Redis coming back must heal us.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(unavailable)?;
        client.init().await.map_err(unavailable)?;
        Ok(RedisPresence { client })
    }

    pub(crate) async fn upsert(
        &self,
        meeting: Uuid,
        rec: &PresenceRecord,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let key = keys::user(meeting, rec.view.user_id);
        let fields: Vec<(String, String)> =
            record_fields(rec, now_ms).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let p = self.client.pipeline();
        let _: () = p.sadd(keys::participants(meeting), rec.view.user_id.to_string()).await.map_err(unavailable)?;
        let _: () = p.hset(&key, fields).await.map_err(unavailable)?;
        let _: () = p.pexpire(&key, ttl.as_millis() as i64, None).await.map_err(unavailable)?;
        let _: Vec<Value> = p.all().await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn remove(&self, meeting: Uuid, user: Uuid) -> Result<(), PresenceError> {
        let p = self.client.pipeline();
        let _: () = p.srem(keys::participants(meeting), user.to_string()).await.map_err(unavailable)?;
        let _: () = p.del(keys::user(meeting, user)).await.map_err(unavailable)?;
        let _: Vec<Value> = p.all().await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn set_waiting(&self, meeting: Uuid, list: &[WaitingView]) -> Result<(), PresenceError> {
        let key = keys::waiting_room(meeting);
        let tx = self.client.multi();
        let _: () = tx.del(&key).await.map_err(unavailable)?;
        if !list.is_empty() {
            let items: Vec<String> = list.iter().map(|w| serde_json::to_string(w).unwrap_or_default()).collect();
            let _: () = tx.rpush(&key, items).await.map_err(unavailable)?;
        }
        let _: Value = tx.exec(true).await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn waiting(&self, meeting: Uuid) -> Result<Vec<WaitingView>, PresenceError> {
        let items: Vec<String> = self.client.lrange(keys::waiting_room(meeting), 0, -1).await.map_err(unavailable)?;
        items.iter().map(|s| serde_json::from_str(s).map_err(|e| PresenceError::Corrupt(e.to_string()))).collect()
    }

    pub(crate) async fn set_media_server(&self, meeting: Uuid, node: &str) -> Result<(), PresenceError> {
        let _: () = self.client.set(keys::media_server(meeting), node, None, None, false).await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn claim_owner(
        &self,
        meeting: Uuid,
        owner: &Owner,
        expected: Option<&str>,
    ) -> Result<bool, PresenceError> {
        // One script, so the read and the write cannot interleave with another claimant.
        const CLAIM: &str = r#"
            local cur = redis.call('GET', KEYS[1])
            local mine = cur and (cur == ARGV[3] or string.sub(cur, 1, string.len(ARGV[3]) + 1) == ARGV[3] .. '/')
            if (not cur and ARGV[2] == '') or cur == ARGV[2] or mine then
                redis.call('SET', KEYS[1], ARGV[1])
                return 1
            end
            return 0"#;
        let args = vec![owner.encode(), expected.unwrap_or_default().to_owned(), owner.node.clone()];
        let took: i64 = self.client.eval(CLAIM, vec![keys::media_server(meeting)], args).await.map_err(unavailable)?;
        Ok(took == 1)
    }

    pub(crate) async fn put_lease(&self, node: &str, json: &str, ttl: Duration) -> Result<(), PresenceError> {
        let expire = Some(Expiration::PX(ttl.as_millis() as i64));
        let _: () = self.client.set(keys::node_lease(node), json, expire, None, false).await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn leases(&self, nodes: &[String]) -> Result<Vec<Option<String>>, PresenceError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes.iter().map(|n| keys::node_lease(n)).collect();
        self.client.mget(keys).await.map_err(unavailable)
    }

    pub(crate) async fn media_server(&self, meeting: Uuid) -> Result<Option<String>, PresenceError> {
        self.client.get(keys::media_server(meeting)).await.map_err(unavailable)
    }

    pub(crate) async fn participants(&self, meeting: Uuid) -> Result<Vec<Uuid>, PresenceError> {
        let ids: Vec<String> = self.client.smembers(keys::participants(meeting)).await.map_err(unavailable)?;
        let mut v: Vec<Uuid> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        v.sort();
        Ok(v)
    }

    pub(crate) async fn expired(&self, meeting: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.client.pipeline();
        for u in users {
            let _: () = p.exists(keys::user(meeting, *u)).await.map_err(unavailable)?;
        }
        let found: Vec<i64> = p.all().await.map_err(unavailable)?;
        Ok(users.iter().zip(found).filter(|(_, n)| *n == 0).map(|(u, _)| *u).collect())
    }

    pub(crate) async fn keep_alive(
        &self,
        meeting: Uuid,
        users: &[Uuid],
        ttl: Duration,
    ) -> Result<Vec<Uuid>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.client.pipeline();
        for u in users {
            let _: () = p.pexpire(keys::user(meeting, *u), ttl.as_millis() as i64, None).await.map_err(unavailable)?;
        }
        // PEXPIRE answers 0 for a key that does not exist.
        let found: Vec<i64> = p.all().await.map_err(unavailable)?;
        Ok(users.iter().zip(found).filter(|(_, n)| *n == 0).map(|(u, _)| *u).collect())
    }

    pub(crate) async fn records(&self, meeting: Uuid) -> Result<Vec<PresenceRecord>, PresenceError> {
        let users = self.participants(meeting).await?;
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.client.pipeline();
        for u in &users {
            let _: () = p.hgetall(keys::user(meeting, *u)).await.map_err(unavailable)?;
        }
        let hashes: Vec<std::collections::HashMap<String, String>> = p.all().await.map_err(unavailable)?;
        // An empty hash is an expired participant: skip it.
        users.into_iter().zip(hashes).filter(|(_, h)| !h.is_empty()).map(|(u, h)| record_from_fields(u, &h)).collect()
    }

    pub(crate) async fn set_flags(&self, meeting: Uuid, json: &str) -> Result<(), PresenceError> {
        let _: () = self.client.set(keys::state(meeting), json, None, None, false).await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn flags(&self, meeting: Uuid) -> Result<Option<String>, PresenceError> {
        self.client.get(keys::state(meeting)).await.map_err(unavailable)
    }

    pub(crate) async fn publish(&self, meeting: Uuid, payload: &str) -> Result<(), PresenceError> {
        let _: i64 = self.client.publish(keys::events(meeting), payload).await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn log_event(&self, meeting: Uuid, event: &LoggedEvent) -> Result<(), PresenceError> {
        let audience = serde_json::to_string(&event.audience).map_err(|e| PresenceError::Corrupt(e.to_string()))?;
        let fields = vec![("a", audience), ("f", event.frame.clone())];
        let cap = ("MAXLEN", "~", EVENT_LOG_LEN as i64);
        let p = self.client.pipeline();
        let _: () =
            p.xadd(keys::log(meeting), false, cap, format!("{}-0", event.seq), fields).await.map_err(unavailable)?;
        let _: () = p.publish(keys::events(meeting), event.frame.as_str()).await.map_err(unavailable)?;
        let results: Vec<Result<Value, Error>> = p.try_all().await;
        match results.into_iter().next() {
            Some(Err(e)) if e.details().contains("equal or smaller") => {
                Err(PresenceError::Corrupt(format!("event {} not logged: {}", event.seq, e.details())))
            }
            Some(Err(e)) => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    pub(crate) async fn events_after(&self, meeting: Uuid, after: u64) -> Result<Vec<LoggedEvent>, PresenceError> {
        let start = format!("{}-0", after.saturating_add(1));
        let entries: Vec<(String, std::collections::HashMap<String, String>)> = self
            .client
            .xrange_values(keys::log(meeting), start, "+", Some(REPLAY_MAX as u64))
            .await
            .map_err(unavailable)?;
        entries
            .into_iter()
            .map(|(id, mut f)| {
                let seq = id.split('-').next().and_then(|n| n.parse().ok());
                let audience = f.get("a").and_then(|a| serde_json::from_str(a).ok());
                match (seq, audience, f.remove("f")) {
                    (Some(seq), Some(audience), Some(frame)) => Ok(LoggedEvent { seq, audience, frame }),
                    _ => Err(PresenceError::Corrupt(format!("log entry {id} unreadable"))),
                }
            })
            .collect()
    }

    pub(crate) async fn clear(&self, meeting: Uuid, users: &[Uuid]) -> Result<(), PresenceError> {
        let mut all = vec![
            keys::log(meeting),
            keys::participants(meeting),
            keys::waiting_room(meeting),
            keys::media_server(meeting),
            keys::state(meeting),
        ];
        let members = self.participants(meeting).await.unwrap_or_default();
        all.extend(users.iter().chain(members.iter()).map(|u| keys::user(meeting, *u)));
        let _: i64 = self.client.del(all).await.map_err(unavailable)?;
        Ok(())
    }
}
