//! Three real `parley node` processes joined with ractor_cluster, sharing PostgreSQL and Redis:
//! cross-node meetings, placement by load, failover after `kill -9`, resume, drain, cookies.

use std::io::Write;
use std::time::{Duration, Instant};

use parley_integration::ws::WsClient;
use parley_integration::{TestCluster, TestNode, eventually, redis_client};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{create_meeting, id_of, in_hours, meeting_body};

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "expected success: {reply}");
    reply
}

/// A meeting without a waiting room, created through `node` by a new host.
async fn meeting(node: &TestNode, n: usize) -> (Uuid, String) {
    let (_, host) = node.user(&format!("host{n}@example.com"), &format!("Host {n}")).await;
    let mut body = meeting_body(&format!("Cluster {n}"), in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    (id_of(&create_meeting(node, &host, body).await, "meeting_id"), host)
}

/// `(node, epoch)` of an active meeting in PostgreSQL.
async fn owner_in_db(node: &TestNode, m: Uuid) -> (Option<String>, i64) {
    let rows = node.sql(&format!("SELECT assigned_node, owner_epoch FROM meetings WHERE id = '{m}'")).await;
    (rows[0].try_get("", "assigned_node").unwrap(), rows[0].try_get("", "owner_epoch").unwrap())
}

async fn owner_in_redis(m: Uuid) -> Option<String> {
    use fred::prelude::*;
    redis_client().await.get(format!("meeting:{{{m}}}:media_server")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_share_one_meeting() {
    let c = TestCluster::start(3, 0, &[]).await;
    let (m, host_token) = meeting(&c.nodes[0], 1).await;
    let (guest_id, guest_token) = c.nodes[0].user("guest@example.com", "Guest").await;
    // The host starts on node b (ties go to the local node, so the meeting lives there); the
    // guest joins through node c.
    let mut host = WsClient::connect(&c.nodes[1], &host_token).await;
    let started = host.request(json!({"type": "start", "meeting_id": m})).await;
    assert_eq!(ok(&started)["media"]["node"], c.names[1].as_str(), "{started}");
    let mut guest = WsClient::connect(&c.nodes[2], &guest_token).await;
    let joined = guest.request(json!({"type": "join", "meeting_id": m})).await;
    let data = &ok(&joined);
    assert_eq!(data["media"]["node"], c.names[1].as_str(), "the join reply names the media node: {joined}");
    assert!(data["resume_token"].as_str().is_some_and(|t| t.len() > 20), "{joined}");
    assert_eq!(data["meeting"]["participants"].as_array().map(Vec::len), Some(2), "{joined}");
    // Events cross nodes both ways.
    let ev = host.event("participant_joined").await;
    assert_eq!(ev["participant"]["user_id"], guest_id.to_string());
    ok(&guest.request(json!({"type": "chat", "text": "hello from node c"})).await);
    assert_eq!(host.event("chat").await["message"]["text"], "hello from node c");
    ok(&host.request(json!({"type": "mute_participant", "user_id": guest_id})).await);
    assert_eq!(guest.event("muted").await["user_id"], guest_id.to_string());
    // One owner, the same in Redis and PostgreSQL, with its epoch.
    let (node, epoch) = owner_in_db(&c.nodes[0], m).await;
    assert_eq!(node.as_deref(), Some(c.names[1].as_str()));
    assert!(epoch >= 1);
    assert_eq!(owner_in_redis(m).await, Some(format!("{}/{epoch}", c.names[1])));
    // The operators' view agrees.
    let view = c.view(0).await;
    let on_b = view["meetings_by_node"][&c.names[1]].as_array().cloned().unwrap_or_default();
    assert!(on_b.iter().any(|x| x["meeting_id"] == m.to_string() && x["epoch"] == epoch), "{view}");
    // Leaving through node c is seen on node b.
    ok(&guest.request(json!({"type": "leave"})).await);
    assert_eq!(host.event("participant_left").await["user_id"], guest_id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_spreads_meetings_across_nodes_by_load() {
    let c = TestCluster::start(3, 0, &[]).await;
    let mut sockets = Vec::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let (m, host) = meeting(&c.nodes[0], i).await;
        // Every start comes in through node a: placement, not the entry point, decides.
        let mut ws = WsClient::connect(&c.nodes[0], &host).await;
        ok(&ws.request(json!({"type": "start", "meeting_id": m})).await);
        sockets.push(ws);
        ids.push(m);
    }
    let rows = c.nodes[0]
        .sql("SELECT assigned_node, COUNT(*) AS n FROM meetings WHERE status = 'active' GROUP BY assigned_node")
        .await;
    let counts: Vec<(String, i64)> =
        rows.iter().map(|r| (r.try_get("", "assigned_node").unwrap(), r.try_get("", "n").unwrap())).collect();
    assert_eq!(counts.len(), 3, "all three nodes carry meetings: {counts:?}");
    assert!(counts.iter().all(|(_, n)| (9..=11).contains(n)), "spread evenly by load: {counts:?}");
    // Each node runs exactly the meetings the database says it owns.
    for (i, name) in c.names.iter().enumerate() {
        let view = c.view(i).await;
        let here = view["running_here"].as_array().map(Vec::len).unwrap_or(0) as i64;
        let expected = counts.iter().find(|(n, _)| n == name).map(|(_, n)| *n).unwrap_or(0);
        assert_eq!(here, expected, "{name}: {view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_never_joins_and_garbage_closes_only_its_connection() {
    let c = TestCluster::start(2, 1, &[]).await;
    // The third configured node starts with the wrong cookie.
    let intruder = c.start_member(2, &[("PARLEY_COOKIE", "not-the-cookie")]).await;
    // Garbage on node a's cluster port.
    let port: u16 = {
        let after = c.config.split(&format!("name = \"{}\"", c.names[0])).nth(1).unwrap();
        let line = after.lines().find(|l| l.starts_with("cluster_port")).unwrap();
        line.split('=').nth(1).unwrap().trim().parse().unwrap()
    };
    let mut junk = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = junk.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let _ = junk.write_all(&vec![0x42; 64 * 1024]);
    // Long enough for several dial attempts with the intruder's lease present.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..2 {
        let view = c.view(i).await;
        let node = view["nodes"].as_array().unwrap().iter().find(|n| n["name"] == c.names[2].as_str()).unwrap().clone();
        assert_eq!(node["connected"], false, "the wrong-cookie node never gets a session: {view}");
        assert_ne!(node["status"], "alive", "{view}");
    }
    // The two good nodes still see each other and still serve a cross-node meeting.
    c.wait_sees(0, 2).await;
    let (m, host_token) = meeting(&c.nodes[0], 1).await;
    let (_, guest_token) = c.nodes[0].user("guest@example.com", "Guest").await;
    let mut host = WsClient::connect(&c.nodes[0], &host_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    let mut guest = WsClient::connect(&c.nodes[1], &guest_token).await;
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);
    host.event("participant_joined").await;
    assert!(intruder.log().contains("cluster"), "the intruder ran its cluster side: {}", intruder.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_moves_its_meetings_and_clients_resume() {
    let mut c = TestCluster::start(3, 0, &[]).await;
    let (m, host_token) = meeting(&c.nodes[0], 1).await;
    let (guest_id, guest_token) = c.nodes[0].user("guest@example.com", "Guest").await;
    // The host is on node b, which carries the meeting; the guest is on node a.
    let mut host = WsClient::connect(&c.nodes[1], &host_token).await;
    let started = host.request(json!({"type": "start", "meeting_id": m})).await;
    let resume_token = ok(&started)["resume_token"].as_str().unwrap().to_owned();
    let mut guest = WsClient::connect(&c.nodes[0], &guest_token).await;
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);
    ok(&host.request(json!({"type": "raise_hand"})).await);
    ok(&guest.request(json!({"type": "chat", "text": "before"})).await);
    let (_, epoch_before) = owner_in_db(&c.nodes[0], m).await;

    let killed_at = Instant::now();
    c.nodes[1].kill9();
    let dead = c.names[1].clone();
    let moved = eventually(Duration::from_secs(10), || async {
        matches!(owner_in_db(&c.nodes[0], m).await, (Some(n), e) if n != dead && e > epoch_before)
    })
    .await;
    let failover = killed_at.elapsed();
    assert!(moved, "meeting never re-activated: {}\n{}", c.nodes[0].log(), c.nodes[2].log());
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    let (new_owner, epoch) = owner_in_db(&c.nodes[0], m).await;
    let new_owner = new_owner.unwrap();
    assert_eq!(owner_in_redis(m).await, Some(format!("{new_owner}/{epoch}")), "Redis and PostgreSQL agree");

    // The host's node died: the host resumes on node c, without the waiting room, as host.
    let mut host2 = WsClient::connect(&c.nodes[2], &host_token).await;
    let resumed = host2.request(json!({"type": "resume", "meeting_id": m, "resume_token": resume_token})).await;
    let data = &ok(&resumed);
    assert_eq!(data["you"]["role"], "host", "{resumed}");
    assert_eq!(data["you"]["hand_raised"], true, "state survived: {resumed}");
    assert_eq!(data["media"]["node"], new_owner.as_str());
    let chat: Vec<&Value> = data["meeting"]["chat"].as_array().map(|v| v.iter().collect()).unwrap_or_default();
    assert!(chat.iter().any(|x| x["text"] == "before"), "chat history survived: {resumed}");
    // The guest never reconnected and keeps receiving events.
    ok(&host2.request(json!({"type": "chat", "text": "after"})).await);
    // (Its own "before" comes first: it was sent to everyone, the guest included.)
    assert_eq!(guest.event("chat").await["message"]["text"], "before");
    assert_eq!(guest.event("chat").await["message"]["text"], "after");
    // Host powers still work across the move.
    ok(&host2.request(json!({"type": "mute_participant", "user_id": guest_id})).await);
    assert_eq!(guest.event("muted").await["user_id"], guest_id.to_string());
    // A forged or foreign token does not resume.
    let mut other = WsClient::connect(&c.nodes[2], &guest_token).await;
    let bad = other.request(json!({"type": "resume", "meeting_id": m, "resume_token": resume_token})).await;
    assert_eq!(bad["error"]["code"], "resume_failed", "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_ends_with_no_meetings_and_its_participants_follow() {
    let c = TestCluster::start(3, 0, &[]).await;
    let mut hosts = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (m, host) = meeting(&c.nodes[0], i).await;
        let mut ws = WsClient::connect(&c.nodes[0], &host).await;
        ok(&ws.request(json!({"type": "start", "meeting_id": m})).await);
        hosts.push(ws);
        ids.push(m);
    }
    let before = c.view(0).await["running_here"].as_array().map(Vec::len).unwrap_or(0);
    assert!(before >= 1, "node a carries some meetings");
    let (status, body) = c.nodes[1]
        .call(
            reqwest::Method::POST,
            &format!("/api/admin/nodes/{}/drain", c.names[0]),
            Some(&c.nodes[1].admin_token()),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["remaining"], 0, "{body}");
    assert_eq!(c.view(0).await["running_here"].as_array().map(Vec::len), Some(0));
    // Nothing is active on node a any more, and every host still talks to its meeting.
    let on_a =
        c.nodes[0].count(&format!("meetings WHERE status = 'active' AND assigned_node = '{}'", c.names[0])).await;
    assert_eq!(on_a, 0);
    for ws in &mut hosts {
        ok(&ws.request(json!({"type": "raise_hand"})).await);
    }
    // New meetings go elsewhere.
    let (m, host) = meeting(&c.nodes[0], 9).await;
    let mut ws = WsClient::connect(&c.nodes[0], &host).await;
    let r = ws.request(json!({"type": "start", "meeting_id": m})).await;
    assert_ne!(ok(&r)["media"]["node"], c.names[0].as_str());
}
