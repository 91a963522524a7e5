//! Traces over OTLP, read by a receiver in this test that decodes the real OTLP/HTTP protobuf
//! the nodes post: two real nodes; a meeting owned by node b; a guest whose WebSocket is on
//! node a joins it and sets up media. Its join is ONE trace: spans from both nodes, the span
//! on b a child of a's across the cluster hop (the envelope's W3C context), and the media join
//! on b through the first packet forwarded to the guest.

use std::collections::HashMap;
use std::time::Duration;

use parley_integration::otlp::{self, ReceivedSpan};
use parley_integration::{TestCluster, eventually};
use parley_loadtest::{Api, Participant, Publish, Rates};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{id_of, in_hours, meeting_body};

/// The spans of the trace whose root is the `join` request of `user` on `node`.
fn join_trace(spans: &[ReceivedSpan], node: &str, user: &str) -> Vec<ReceivedSpan> {
    let Some(root) = spans.iter().find(|s| {
        s.name == "ws.request"
            && s.node == node
            && s.parent.is_empty()
            && s.attributes.get("kind").map(String::as_str) == Some("join")
            && s.attributes.get("user").map(String::as_str) == Some(user)
    }) else {
        return Vec::new();
    };
    spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_cross_node_join_is_one_trace_from_the_websocket_frame_to_the_first_forwarded_packet() {
    let (url, spans) = otlp::collector().await;
    // The nodes log only warnings: what is traced does not depend on the log filter.
    let c = TestCluster::start(2, 0, &[("PARLEY_OTLP_ENDPOINT", url.as_str()), ("PARLEY_LOG", "warn")]).await;
    let (a, b) = (c.names[0].clone(), c.names[1].clone());
    let secret = c.secret();
    let api: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.base, secret.as_bytes())).collect();
    let host = c.nodes[0].user("traced-host@example.com", "Traced Host").await;
    let guest = c.nodes[0].user("traced-guest@example.com", "Traced Guest").await;
    let mut body = meeting_body("Traced", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let (status, created) = c.nodes[0].call(Method::POST, "/api/meetings", Some(&host.1), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let meeting = id_of(&created, "meeting_id");

    // The host starts it through b (the meeting's owner and media node), and publishes.
    let mut h = Participant::join(&api[1], meeting, host.0, true).await.expect("host starts on b");
    h.connect_media(Publish::CAMERA_AND_MIC).await.expect("host media");
    let _sending = h.publish(Rates::default());
    let owner = c.nodes[0].sql(&format!("SELECT assigned_node FROM meetings WHERE id = '{meeting}'")).await;
    let owner: String = owner[0].try_get("", "assigned_node").unwrap();
    assert_eq!(owner, b, "the meeting is owned by b");

    // The guest's socket is on a: its join crosses to b, its media goes to b.
    let mut g = Participant::join(&api[0], meeting, guest.0, false).await.expect("guest joins through a");
    g.connect_media(Publish::NOTHING).await.expect("guest media");
    assert!(g.wait_received(Duration::from_secs(20), |r| r.first_packet.is_some()).await, "the guest receives media");

    let user = guest.0.to_string();
    let complete = eventually(Duration::from_secs(20), || async {
        let trace = join_trace(&spans.lock().unwrap(), &a, &user);
        trace.iter().any(|s| s.name == "media.first_packet")
    })
    .await;
    // Each node sends its finished spans every 500 ms, on its own: a child on b may arrive
    // before its parent on a. Wait until every parent has come (or the time is up).
    let settled = || async {
        let trace = join_trace(&spans.lock().unwrap(), &a, &user);
        let ids: std::collections::HashSet<&[u8]> = trace.iter().map(|s| s.span_id.as_slice()).collect();
        trace.iter().all(|s| s.parent.is_empty() || ids.contains(s.parent.as_slice()))
    };
    eventually(Duration::from_secs(10), settled).await;
    let all = spans.lock().unwrap().clone();
    let trace = join_trace(&all, &a, &user);
    let names: Vec<(String, String)> = trace.iter().map(|s| (s.node.clone(), s.name.clone())).collect();
    assert!(
        complete,
        "the join's trace reaches the first forwarded packet; it has {names:?}\n(all: {} spans)",
        all.len()
    );

    // Spans from both nodes, one trace.
    let on = |node: &str, name: &str| trace.iter().filter(|s| s.node == node && s.name == name).count();
    assert!(on(&a, "ws.request") >= 2, "the join and the guest's offer, on a: {names:?}");
    assert!(on(&a, "db.join_facts") >= 1, "the join's database read, on a: {names:?}");
    assert!(on(&b, "cluster.receive") >= 1 && on(&b, "meeting.request") >= 1, "handled on b: {names:?}");
    for phase in ["media.request", "media.join", "media.ice", "media.dtls", "media.first_packet"] {
        assert_eq!(on(&b, phase).min(1), 1, "{phase} on b: {names:?}");
    }
    // Parent-linked across the hop: a span on b whose parent is a span on a.
    let by_id: HashMap<&[u8], &ReceivedSpan> = trace.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let crossing = trace
        .iter()
        .filter(|s| s.node == b && s.name == "cluster.receive")
        .filter_map(|s| by_id.get(s.parent.as_slice()))
        .filter(|p| p.node == a)
        .count();
    assert!(crossing >= 1, "a cluster hop's span on b is the child of a span on a: {names:?}");
    // Every span but the root has its parent in the trace: nothing dangles.
    for s in trace.iter().filter(|s| !s.parent.is_empty()) {
        assert!(by_id.contains_key(s.parent.as_slice()), "{} on {} has a parent outside the trace", s.name, s.node);
    }
    // The media join ends at the first packet: its phases are the join's children, in order.
    let join = trace.iter().find(|s| s.name == "media.join").unwrap();
    for phase in ["media.ice", "media.dtls", "media.first_packet"] {
        let p = trace.iter().find(|s| s.name == phase).unwrap();
        assert_eq!(p.parent, join.span_id, "{phase} is a phase of media.join");
    }
    // Background work (leases, sweeps) sends no traces of its own: every root is an entry span.
    let roots: Vec<&str> = all.iter().filter(|s| s.parent.is_empty()).map(|s| s.name.as_str()).collect();
    assert!(roots.iter().all(|n| ["ws.request", "http.request", "cluster.receive"].contains(n)), "roots: {roots:?}");
    drop(h);
    drop(g);
}
