//! Operator endpoints (admin token).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Caller, bearer, parse_id};
use parley_actors::CrashTarget;

#[derive(Deserialize)]
pub struct CrashParams {
    /// Crash this user's connection actor instead of the meeting's.
    participant: Option<String>,
    /// `media_router`: crash the meeting's media router instead (`meeting`, the default: the
    /// meeting actor).
    actor: Option<String>,
}

/// `POST /api/admin/meetings/{id}/crash[?participant=USER_ID]`: makes a running meeting actor
/// (or one participant's connection actor) panic, to drill (and test) supervision and
/// rehydration. Only when the node runs with fault injection enabled
/// (`PARLEY_FAULT_INJECTION=1`); otherwise the route answers 404 like any unknown one.
pub async fn crash_meeting(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<CrashParams>,
) -> Result<Json<Value>, ApiError> {
    if !app.fault_injection {
        return Err(ApiError::not_found("no such route"));
    }
    caller.require_admin()?;
    let id = parse_id(&id, "meeting")?;
    let participant = p.participant.as_deref().map(|u| parse_id(u, "user")).transpose()?;
    let target = match (participant, p.actor.as_deref()) {
        (Some(user), None | Some("participant")) => CrashTarget::Participant(user),
        (None, None | Some("meeting")) => CrashTarget::Meeting,
        (None, Some("media_router")) => CrashTarget::MediaRouter,
        (_, Some(other)) => {
            return Err(ApiError::invalid_field(format!(
                "actor must be meeting, media_router or participant (with participant=USER_ID), not {other:?}"
            )));
        }
    };
    let running = ractor::call_t!(
        app.live.supervisor,
        |reply| parley_actors::SupervisorMsg::Crash { meeting_id: id, target, reply },
        5_000
    )
    .map_err(ApiError::internal)?;
    if !running {
        return Err(ApiError::not_found("that meeting is not running on this node"));
    }
    tracing::warn!(meeting_id = %id, ?target, operator = %caller.subject, "fault injection: actor crashed on purpose");
    Ok(Json(json!({"meeting_id": id, "participant": participant, "crashed": true})))
}

/// `GET /metrics`: Prometheus text for an operator token or the configured scrape token
/// (`[telemetry] scrape_token`): 401 without a token or with a wrong one, 403 for a user's.
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let scrape_ok = app.scrape_token.as_deref().is_some_and(|t| constant_time_eq(token.as_bytes(), t.as_bytes()));
    if !scrape_ok && !Caller::from_token(&app, token)?.admin {
        return Err(ApiError::forbidden("an operator (admin) token or the scrape token is required"));
    }
    let text = app.metrics.render(&app.live.services).map_err(ApiError::internal)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /api/admin/cluster`: every node (status, load, lease age, session) and the active
/// meetings per node with their owner epochs — what the supervisor dashboard draws.
pub async fn cluster(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let s = &app.live.services;
    let m = &s.membership;
    let me = m.me();
    let (meetings_here, participants_here) = s.meetings.load();
    let mut nodes = vec![json!({
        "name": me.name,
        "self": true,
        "status": parley_actors::ops::own_status(m).as_str(),
        "connected": true,
        "meetings": meetings_here,
        "participants": participants_here,
        "max_meetings": me.max_meetings,
        "max_participants": me.max_participants,
        "http": format!("{}:{}", me.host, me.http_port),
    })];
    for p in m.peers() {
        let st = m.peer(&p.name).unwrap_or_default();
        nodes.push(json!({
            "name": p.name,
            "self": false,
            "status": parley_actors::ops::peer_status(m, &p.name).as_str(),
            "connected": st.connected,
            "meetings": st.lease.as_ref().map(|l| l.load.meetings),
            "participants": st.lease.as_ref().map(|l| l.load.participants),
            "max_meetings": p.max_meetings,
            "max_participants": p.max_participants,
            "http": format!("{}:{}", p.host, p.http_port),
            "lease_age_ms": st.lease.as_ref().map(|l| (parley_actors::now_ms() - l.at_ms).max(0)),
        }));
    }
    let active = s.store.active_meetings(None).await?;
    let mut by_node = serde_json::Map::new();
    for a in active {
        let node = a.node.clone().unwrap_or_default();
        let entry = by_node.entry(node).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(
                json!({"meeting_id": a.meeting_id, "title": a.title, "epoch": a.epoch, "started_at": a.started_at}),
            );
        }
    }
    let running_here: Vec<Value> = s
        .meetings
        .list()
        .into_iter()
        .map(|(id, n, peers)| json!({"meeting_id": id, "participants": n, "media_peers": peers}))
        .collect();
    Ok(Json(json!({
        "node": me.name,
        "nodes": nodes,
        "meetings_by_node": by_node,
        "running_here": running_here,
        "media_transport": media_transport(&s.media),
    })))
}

/// How this node's media peers reach the network: one shared UDP port (with the socket
/// driver's counters) or a port per peer.
fn media_transport(media: &parley_media::peer::PeerConfig) -> Value {
    match &media.shared_socket {
        Some(socket) => {
            let st = socket.stats();
            json!({
                "mode": "shared_port",
                "port": socket.local_addr().port(),
                "advertised": socket.advertised_addr().to_string(),
                "threads": socket.threads(),
                "peers": st.peers,
                "peers_per_thread": st.peers_per_thread,
                "addresses": st.addresses,
                "datagrams_in": st.datagrams_in,
                "datagrams_out": st.datagrams_out,
                "send_calls": st.send_calls,
                "unclaimed": st.unclaimed,
                "refused": st.refused,
                "handed_over": st.handed_over,
                "forwarded_inline": st.forwarded_inline,
                "forwarded_across": st.forwarded_across,
                "dropped_across": st.dropped_across,
                // Cumulative counts by bucket (upper bounds in µs): subtract two readings for
                // the packets in between.
                "forward_latency": {
                    "bucket_upper_us": (0..parley_media::latency::BUCKETS)
                        .map(parley_media::latency::bucket_upper_us)
                        .map(|us| (us * 10.0).round() / 10.0)
                        .collect::<Vec<f64>>(),
                    "counts": st.forward_latency.counts,
                },
            })
        }
        None => json!({
            "mode": "port_per_peer",
            "port_range": media.port_range.map(|(a, b)| format!("{a}-{b}")),
        }),
    }
}

/// `POST /api/admin/nodes/{name}/drain`: that node takes no new meetings and moves its
/// meetings to others (asked through the cluster when it is not this node).
pub async fn drain(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let s = &app.live.services;
    let (moved, remaining) = if name == s.node {
        parley_actors::placement::drain(s, &app.live.supervisor).await
    } else {
        if !s.membership.peers().iter().any(|p| p.name == name) {
            return Err(ApiError::not_found(format!("no node named {name}")));
        }
        let timeout = std::time::Duration::from_secs(60);
        match parley_actors::transport::call_node(s, &name, parley_actors::wire::Body::Drain, timeout).await {
            Ok(parley_actors::wire::Body::Drained { moved, remaining }) => (moved, remaining),
            Ok(other) => return Err(ApiError::internal(format!("unexpected answer: {other:?}"))),
            Err(e) => return Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.message)),
        }
    };
    tracing::warn!(node = %name, moved, remaining, operator = %caller.subject, "node drained");
    Ok(Json(json!({"node": name, "draining": true, "moved": moved, "remaining": remaining})))
}
