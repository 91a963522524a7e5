//! Three real `parley node` processes joined with ractor_cluster, sharing PostgreSQL and Redis:
//! cross-node meetings, placement by load, failover after `kill -9`, resume, drain, cookies.

use std::io::Write;
use std::time::{Duration, Instant};

use parley_integration::ws::WsClient;
use parley_integration::{
    CuttableLink, TestCluster, TestNode, TestPki, ThrowawayPostgres, ThrowawayRedis, eventually, pg_admin_url,
    redis_client, redis_url,
};
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

/// `n` meetings created and started through `node` by new hosts, whose sockets are returned
/// (they keep the meetings live).
async fn start_through(node: &TestNode, n: usize) -> Vec<WsClient> {
    let mut hosts = Vec::new();
    for i in 0..n {
        let (m, host) = meeting(node, i).await;
        let mut ws = WsClient::connect(node, &host).await;
        ok(&ws.request(json!({"type": "start", "meeting_id": m})).await);
        hosts.push(ws);
    }
    hosts
}

/// `(node, epoch)` of an active meeting in PostgreSQL.
async fn owner_in_db(node: &TestNode, m: Uuid) -> (Option<String>, i64) {
    let rows = node.sql(&format!("SELECT assigned_node, owner_epoch FROM meetings WHERE id = '{m}'")).await;
    (rows[0].try_get("", "assigned_node").unwrap(), rows[0].try_get("", "owner_epoch").unwrap())
}

async fn owner_in_redis(m: Uuid) -> Option<String> {
    owner_in(&redis_client().await, m).await
}

async fn owner_in(redis: &fred::prelude::Client, m: Uuid) -> Option<String> {
    use fred::prelude::*;
    redis.get(format!("meeting:{{{m}}}:media_server")).await.unwrap()
}

/// A client of the Redis at `url` (a fresh connection each time: the server may have restarted).
async fn redis_at(url: &str) -> fred::prelude::Client {
    use fred::prelude::*;
    let c = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    c.init().await.unwrap();
    c
}

/// A short lease TTL so that failure detection fits in a test.
const FAST_LEASES: (&str, &str) = ("PARLEY_LEASE_TTL_MS", "1500");

/// A meeting started on node `owner` by its host, with a guest on `guest_node` and a third
/// participant on the remaining node. Returns the meeting and the three sockets.
async fn three_node_meeting(c: &TestCluster, owner: usize, guest_node: usize) -> (Uuid, Uuid, [WsClient; 3]) {
    let (m, host_token) = meeting(&c.nodes[0], 1).await;
    let (guest_id, guest_token) = c.nodes[0].user("guest@example.com", "Guest").await;
    let (_, third_token) = c.nodes[0].user("third@example.com", "Third").await;
    let third_node = (0..3).find(|i| *i != owner && *i != guest_node).unwrap();
    let mut host = WsClient::connect(&c.nodes[owner], &host_token).await;
    let started = host.request(json!({"type": "start", "meeting_id": m})).await;
    assert_eq!(ok(&started)["media"]["node"], c.names[owner].as_str(), "{started}");
    let mut guest = WsClient::connect(&c.nodes[guest_node], &guest_token).await;
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);
    let mut third = WsClient::connect(&c.nodes[third_node], &third_token).await;
    ok(&third.request(json!({"type": "join", "meeting_id": m})).await);
    host.event("participant_joined").await;
    host.event("participant_joined").await;
    guest.event("participant_joined").await;
    (m, guest_id, [host, guest, third])
}

/// Sends a chat from `from` and checks that every socket (the sender included) receives it.
async fn chat_reaches_everyone(socks: &mut [WsClient; 3], from: usize, text: &str) {
    ok(&socks[from].request(json!({"type": "chat", "text": text})).await);
    for (i, ws) in socks.iter_mut().enumerate() {
        let got = ws.event("chat").await;
        assert_eq!(got["message"]["text"], text, "socket {i}: {got}");
    }
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
    // Every start comes in through node a: placement, not the entry point, decides.
    let _hosts = start_through(&c.nodes[0], 30).await;
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
    let port = cluster_port(&c, 0);
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
    let mut hosts = start_through(&c.nodes[0], 3).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_meeting_loses_nothing() {
    let redis = ThrowawayRedis::start_new();
    let c = TestCluster::start_on(3, 0, &[FAST_LEASES], &pg_admin_url(), &redis.url()).await;
    let (m, guest_id, mut socks) = three_node_meeting(&c, 1, 2).await;
    ok(&socks[1].request(json!({"type": "raise_hand"})).await);
    let (owner_before, epoch_before) = owner_in_db(&c.nodes[0], m).await;

    // Redis goes away for longer than two lease TTLs: every node loses it at once, nobody is
    // presumed dead, the meeting goes on across the three nodes.
    redis.stop();
    chat_reaches_everyone(&mut socks, 1, "while Redis is down").await;
    ok(&socks[0].request(json!({"type": "mute_participant", "user_id": guest_id})).await);
    assert_eq!(socks[1].event("muted").await["user_id"], guest_id.to_string());
    // Down for more than two lease TTLs (1.5 s each): long enough for a false failover.
    tokio::time::sleep(Duration::from_secs(4)).await;
    chat_reaches_everyone(&mut socks, 2, "still down").await;

    // Redis comes back empty: leases, ownership and presence are rewritten; nothing moved.
    redis.start();
    let expected_owner = format!("{}/{epoch_before}", owner_before.clone().unwrap());
    let repaired = eventually(Duration::from_secs(15), || async {
        use fred::prelude::*;
        let r = redis_at(&redis.url()).await;
        let members: Vec<String> = r.smembers(format!("meeting:{{{m}}}:participants")).await.unwrap_or_default();
        let leases: i64 = r.exists(c.names.iter().map(|n| format!("node:{n}")).collect::<Vec<_>>()).await.unwrap_or(0);
        owner_in(&r, m).await.as_deref() == Some(expected_owner.as_str()) && members.len() == 3 && leases == 3
    })
    .await;
    assert!(repaired, "presence not repaired after the restart:\n{}", c.nodes[1].log());
    assert_eq!(owner_in_db(&c.nodes[0], m).await, (owner_before, epoch_before), "no failover happened");
    for i in 0..3 {
        c.wait_sees(i, 3).await;
    }
    chat_reaches_everyone(&mut socks, 0, "Redis is back").await;
    let chats = c.nodes[0].count(&format!("meeting_chat_messages WHERE meeting_id = '{m}'")).await;
    assert_eq!(chats, 3, "every chat message stored");
    // Hands and mutes survived in the meeting's memory, and new meetings can start again.
    let r = socks[2].request(json!({"type": "lower_hand", "user_id": guest_id})).await;
    assert_eq!(r["error"]["code"], "forbidden", "only moderators lower others' hands: {r}");
    ok(&socks[0].request(json!({"type": "lower_hand", "user_id": guest_id})).await);
    let (m2, host2) = meeting(&c.nodes[2], 2).await;
    let mut ws = WsClient::connect(&c.nodes[2], &host2).await;
    ok(&ws.request(json!({"type": "start", "meeting_id": m2})).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_meeting_loses_nothing() {
    let pg = ThrowawayPostgres::start_new();
    let c = TestCluster::start_on(3, 0, &[FAST_LEASES], &pg.url("postgres"), &redis_url()).await;
    let (m, guest_id, mut socks) = three_node_meeting(&c, 1, 2).await;
    chat_reaches_everyone(&mut socks, 1, "before").await;
    let (owner_before, epoch_before) = owner_in_db(&c.nodes[0], m).await;

    // PostgreSQL goes away: chat and a role change still reach everyone; their writes wait.
    pg.stop();
    chat_reaches_everyone(&mut socks, 1, "during 1").await;
    chat_reaches_everyone(&mut socks, 2, "during 2").await;
    ok(&socks[0].request(json!({"type": "set_role", "user_id": guest_id, "role": "co_host"})).await);
    assert_eq!(socks[1].event("role_changed").await["role"], "co_host");
    // Down across several write retries and lease ticks: long enough for a false failover.
    tokio::time::sleep(Duration::from_secs(4)).await;
    chat_reaches_everyone(&mut socks, 0, "during 3").await;

    // PostgreSQL comes back: the deferred writes land, in order; nothing moved.
    pg.start();
    let stored = eventually(Duration::from_secs(30), || async {
        let rows = c.nodes[0]
            .sql(&format!("SELECT body FROM meeting_chat_messages WHERE meeting_id = '{m}' ORDER BY seq"))
            .await;
        rows.len() == 4
    })
    .await;
    assert!(stored, "deferred chat never stored:\n{}", c.nodes[1].log());
    let rows =
        c.nodes[0].sql(&format!("SELECT body FROM meeting_chat_messages WHERE meeting_id = '{m}' ORDER BY seq")).await;
    let bodies: Vec<String> = rows.iter().map(|r| r.try_get("", "body").unwrap()).collect();
    assert_eq!(bodies, ["before", "during 1", "during 2", "during 3"]);
    let role = c.nodes[0]
        .sql(&format!("SELECT role FROM meeting_participants WHERE meeting_id = '{m}' AND user_id = '{guest_id}'"))
        .await;
    assert_eq!(role[0].try_get::<String>("", "role").unwrap(), "co_host", "the role change was stored");
    assert_eq!(owner_in_db(&c.nodes[0], m).await, (owner_before, epoch_before), "no failover happened");
    // The meeting still works and ends properly.
    chat_reaches_everyone(&mut socks, 2, "after").await;
    ok(&socks[0].request(json!({"type": "end_meeting"})).await);
    let ended = eventually(Duration::from_secs(10), || async {
        c.nodes[0].count(&format!("meetings WHERE id = '{m}' AND status = 'ended'")).await == 1
    })
    .await;
    assert!(ended, "the end was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_hands_its_meetings_over() {
    let mut c = TestCluster::start(2, 1, &[FAST_LEASES]).await;
    // Node c reaches Redis through a link the test can cut; its cluster sessions stay up.
    let link = CuttableLink::start(redis_url().trim_start_matches("redis://")).await;
    let via_link = format!("redis://127.0.0.1:{}", link.port);
    let node_c = c.start_member(2, &[FAST_LEASES, ("PARLEY_REDIS_URL", via_link.as_str())]).await;
    c.nodes.push(node_c);
    for i in 0..3 {
        c.wait_sees(i, 3).await;
    }
    let (m, _, mut socks) = three_node_meeting(&c, 2, 0).await;
    let (_, epoch_before) = owner_in_db(&c.nodes[0], m).await;

    let cut_at = Instant::now();
    link.cut();
    let isolated = c.names[2].clone();
    let moved = eventually(Duration::from_secs(15), || async {
        matches!(owner_in_db(&c.nodes[0], m).await, (Some(n), e) if n != isolated && e > epoch_before)
    })
    .await;
    assert!(moved, "the isolated node's meeting never moved:\n{}", c.nodes[2].log());
    let took = cut_at.elapsed();
    // The isolated node stops running it (it heard of the newer epoch) …
    let stopped = eventually(Duration::from_secs(5), || async {
        c.view(2).await["running_here"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    assert!(stopped, "still running on the isolated node: {}\n{}", c.view(2).await, c.nodes[2].log());
    // … and its clients follow the meeting without reconnecting, as do the others.
    chat_reaches_everyone(&mut socks, 0, "host on the isolated node").await;
    chat_reaches_everyone(&mut socks, 1, "guest elsewhere").await;
    // It takes no new meetings while it cannot hold its lease.
    let (m2, host2) = meeting(&c.nodes[0], 2).await;
    let mut ws = WsClient::connect(&c.nodes[2], &host2).await;
    let r = ws.request(json!({"type": "start", "meeting_id": m2})).await;
    assert_ne!(ok(&r)["media"]["node"], isolated.as_str(), "{r}");
    // Healed, it is a full member again.
    link.heal();
    c.wait_sees(0, 3).await;
    eprintln!("isolated node's meeting moved after {took:?}");
}

/// The cluster port of member `i`, from the generated configuration.
fn cluster_port(c: &TestCluster, i: usize) -> u16 {
    let after = c.config.split(&format!("name = \"{}\"", c.names[i])).nth(1).unwrap();
    let line = after.lines().find(|l| l.starts_with("cluster_port")).unwrap();
    line.split('=').nth(1).unwrap().trim().parse().unwrap()
}

/// Whether node `i` of the cluster has a session with the configured member `name`.
async fn connected_to(c: &TestCluster, i: usize, name: &str) -> bool {
    let view = c.view(i).await;
    view["nodes"].as_array().into_iter().flatten().any(|n| n["name"] == name && n["connected"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_members_with_the_cas_certificate_join() {
    let pki = TestPki::create();
    let tls_env = pki.env();
    let env: Vec<(&str, &str)> = tls_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = TestCluster::start(2, 1, &env).await;
    let third = c.names[2].clone();
    // Garbage on a TLS cluster port closes that connection only.
    let port = cluster_port(&c, 0);
    let mut junk = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5]);
    let _ = junk.write_all(&vec![0x42; 16 * 1024]);

    // A node with the right cookie but a certificate from another CA never gets a session …
    let rogue_pki = TestPki::create();
    let rogue_env = rogue_pki.env();
    let rogue_env: Vec<(&str, &str)> = rogue_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rogue = c.start_member(2, &rogue_env).await;
    // Long enough for several dial attempts (backoff starts at 200 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..2 {
        assert!(!connected_to(&c, i, &third).await, "a foreign certificate joined: {}", c.view(i).await);
    }
    rogue.kill9();
    // … nor does one without TLS at all.
    let mut plain = c.start_member(2, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..2 {
        assert!(!connected_to(&c, i, &third).await, "a plain-TCP node joined: {}", c.view(i).await);
    }
    plain.kill9();
    // A member with the CA's certificate joins, and meetings work across the TLS sessions.
    let mut nodes = vec![c.start_member(2, &env).await];
    for i in 0..2 {
        c.wait_sees(i, 3).await;
    }
    let (m, host_token) = meeting(&c.nodes[0], 1).await;
    let (_, guest_token) = c.nodes[0].user("guest@example.com", "Guest").await;
    let mut host = WsClient::connect(&c.nodes[0], &host_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    let mut guest = WsClient::connect(&nodes[0], &guest_token).await;
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);
    ok(&guest.request(json!({"type": "chat", "text": "over TLS"})).await);
    assert_eq!(host.event("chat").await["message"]["text"], "over TLS");
    assert!(nodes[0].log().contains("tls=true"), "{}", nodes[0].log());
    nodes.clear();
}
