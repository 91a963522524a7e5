//! The supervisor dashboard: the page (`GET /dashboard`) and what it draws, the whole cluster
//! gathered through the node hosts (`GET /api/admin/overview`, and the same pushed once a second
//! as server-sent events at `GET /api/admin/overview/stream`).
//!
//! Every node answers for itself (`parley_actors::ops::inspect`, asked over the cluster with
//! `Body::Inspect`); this node adds what only it can say about the others (their status as it
//! sees them, lease age) and what the database says (every active meeting, its owner and epoch,
//! also those whose owner is gone).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json};
use futures_util::Stream;
use parley_actors::ops::{self, NodeView};
use parley_actors::wire::Body;
use serde_json::{Value, json};

use super::extract::Caller;
use super::{ApiError, AppState};

/// How long a peer gets to describe itself; a slower one is shown without its details.
const PEER_WAIT: Duration = Duration::from_millis(800);
/// How often the stream pushes the cluster's state.
pub const PUSH_EVERY: Duration = Duration::from_secs(1);
/// Events shown (newest of all nodes').
const EVENTS_SHOWN: usize = 150;

const PAGE: &str = include_str!("../../static/dashboard.html");

/// `GET /dashboard`: the page. It holds no data: it signs in with an operator token (kept in
/// the tab's session storage) and reads the stream below.
pub async fn page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Its own script and styles only: no injected markup can run or load anything.
            (
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
                ),
            ),
        ],
        PAGE,
    )
}

/// `GET /api/admin/overview`: the cluster now.
pub async fn overview(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(gather(&app).await))
}

/// `GET /api/admin/overview/stream`: the overview as a server-sent event (`overview`) once per
/// [`PUSH_EVERY`], until the client goes away.
pub async fn stream(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require_admin()?;
    tracing::info!(operator = %caller.subject, "dashboard stream opened");
    let ticks = futures_util::stream::unfold((app, true), |(app, first)| async move {
        if !first {
            tokio::time::sleep(PUSH_EVERY).await;
        }
        let data = gather(&app).await.to_string();
        Some((Ok(Event::default().event("overview").data(data)), (app, false)))
    });
    Ok(Sse::new(ticks).keep_alive(KeepAlive::default()))
}

/// Every node's view (asked in parallel), their status as this node sees them, the active
/// meetings from the database with their live state, and the latest events of all nodes.
pub async fn gather(app: &AppState) -> Value {
    let s = &app.live.services;
    let m = &s.membership;
    let me = m.me();
    let peers = m.peers();
    let asks = peers.iter().map(|p| {
        let status = ops::peer_status(m, &p.name);
        let reachable = status != ops::NodeStatus::Dead && m.peer(&p.name).is_some_and(|st| st.connected);
        async move {
            if !reachable {
                return (None, Some("not connected".to_owned()));
            }
            match parley_actors::transport::call_node(s, &p.name, Body::Inspect, PEER_WAIT).await {
                Ok(Body::Inspected { view }) => (Some(*view), None),
                Ok(other) => (None, Some(format!("unexpected answer: {}", kind_of(&other)))),
                Err(e) => (None, Some(e.message)),
            }
        }
    });
    let (local, answers) = futures_util::future::join(ops::inspect(s), futures_util::future::join_all(asks)).await;

    let mut views: Vec<NodeView> = vec![];
    let mut nodes = vec![node_entry(&me.name, ops::own_status(m), true, true, None, &local, None)];
    nodes[0]["http"] = json!(format!("{}:{}", me.host, me.http_port));
    views.push(local);
    for (p, (view, error)) in peers.iter().zip(answers) {
        let st = m.peer(&p.name).unwrap_or_default();
        let lease_age = st.lease.as_ref().map(|l| (parley_actors::now_ms() - l.at_ms).max(0));
        let mut entry = match &view {
            Some(v) => node_entry(&p.name, ops::peer_status(m, &p.name), false, st.connected, lease_age, v, None),
            None => json!({
                "name": p.name,
                "self": false,
                "status": ops::peer_status(m, &p.name).as_str(),
                "connected": st.connected,
                "lease_age_ms": lease_age,
                "max_meetings": p.max_meetings,
                "max_participants": p.max_participants,
                "meetings": st.lease.as_ref().map(|l| l.load.meetings),
                "participants": st.lease.as_ref().map(|l| l.load.participants),
                "error": error,
            }),
        };
        entry["http"] = json!(format!("{}:{}", p.host, p.http_port));
        nodes.push(entry);
        views.extend(view);
    }

    // The database knows every active meeting, also one whose owner died a moment ago.
    let (active, store_error) = match s.store.active_meetings(None).await {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let live =
        |id: uuid::Uuid| views.iter().find_map(|v| v.meetings.iter().find(|mv| mv.meeting_id == id).map(|mv| (v, mv)));
    let mut meetings: Vec<Value> = active
        .iter()
        .map(|a| {
            let running = live(a.meeting_id);
            json!({
                "meeting_id": a.meeting_id,
                "title": a.title,
                "owner": a.node,
                "epoch": a.epoch,
                "started_at": a.started_at,
                "running_on": running.map(|(v, _)| v.node.clone()),
                "live": running.map(|(_, mv)| mv),
            })
        })
        .collect();
    // Running but not (yet) listed as active: shown all the same.
    for v in &views {
        for mv in &v.meetings {
            if !active.iter().any(|a| a.meeting_id == mv.meeting_id) {
                meetings.push(json!({
                    "meeting_id": mv.meeting_id, "title": null, "owner": v.node, "epoch": mv.epoch,
                    "started_at": null, "running_on": v.node, "live": mv,
                }));
            }
        }
    }
    let mut events: Vec<&ops::OpsEvent> = views.iter().flat_map(|v| v.events.iter()).collect();
    events.sort_by_key(|e| e.at_ms);
    let events: Vec<&ops::OpsEvent> = events.into_iter().rev().take(EVENTS_SHOWN).collect();
    json!({
        "from": me.name,
        "now_ms": parley_actors::now_ms(),
        "nodes": nodes,
        "meetings": meetings,
        "events": events,
        "store_error": store_error,
    })
}

/// One node's row: its status as this node sees it and its own view.
fn node_entry(
    name: &str,
    status: ops::NodeStatus,
    is_self: bool,
    connected: bool,
    lease_age_ms: Option<i64>,
    v: &NodeView,
    error: Option<String>,
) -> Value {
    let participants: usize = v.meetings.iter().map(|m| m.participants.len()).sum();
    let media_peers: usize = v.meetings.iter().filter_map(|m| m.media_router.as_ref()).map(|r| r.peers.len()).sum();
    json!({
        "name": name,
        "self": is_self,
        "status": status.as_str(),
        "connected": connected,
        "lease_age_ms": lease_age_ms,
        "version": v.version,
        "uptime_ms": (v.now_ms - v.started_at_ms).max(0),
        "vitals": v.vitals,
        "meetings": v.meetings.len(),
        "participants": participants,
        "media_peers": media_peers,
        "max_meetings": v.max_meetings,
        "max_participants": v.max_participants,
        "history": v.history,
        "actors": actors_of(v),
        "error": error,
    })
}

/// The node's supervision tree: node host → meeting supervisor → meeting actors → media
/// router (→ recorder), with each meeting's connections on this node beside it.
fn actors_of(v: &NodeView) -> Value {
    let meetings: Vec<Value> = v
        .meetings
        .iter()
        .map(|m| {
            json!({
                "kind": "meeting",
                "meeting_id": m.meeting_id,
                "actor": m.actor,
                "media_router": m.media_router.as_ref().map(|r| json!({
                    "actor": r.actor,
                    "recorder": r.recorder,
                    "peers": r.peers.len(),
                })),
            })
        })
        .collect();
    json!({"node_host": format!("node-host@{}", v.node), "supervisor": format!("meetings@{}", v.node), "meetings": meetings})
}

fn kind_of(body: &Body) -> String {
    serde_json::to_value(body)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
