//! Numbered meeting events and their replay: a client that lost events (its connection, or its
//! meeting's node, went away) gets every one of them back exactly once and in order — from
//! `resume` with `last_seq`, or, for a connection whose node survived, from the node itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parley_integration::ws::WsClient;
use parley_integration::{Backend, TestCluster, TestNode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{create_meeting, id_of, in_hours, meeting_body};

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "expected success: {reply}");
    reply
}

fn seq_of(frame: &Value) -> u64 {
    frame["seq"].as_u64().unwrap_or_else(|| panic!("no seq on {frame}"))
}

/// A meeting without a waiting room, its host's token and the host's user id.
async fn open_meeting(node: &TestNode, title: &str) -> (Uuid, String, Uuid) {
    let (host_id, host) = node.user(&format!("{title}-host@example.com"), "Host").await;
    let mut body = meeting_body(title, in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    (id_of(&create_meeting(node, &host, body).await, "meeting_id"), host, host_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_numbered_and_resume_replays_exactly_what_was_missed() {
    let node = TestNode::start(Backend::Sqlite).await;
    let (m, host_token, _) = open_meeting(&node, "numbered").await;
    let (guest_id, guest_token) = node.user("guest@example.com", "Guest").await;
    let (other_id, other_token) = node.user("other@example.com", "Other").await;
    let mut host = WsClient::connect(&node, &host_token).await;
    let started = host.request(json!({"type": "start", "meeting_id": m})).await;
    let start_seq = ok(&started)["seq"].as_u64().expect("joined carries the snapshot's seq");
    let mut guest = WsClient::connect(&node, &guest_token).await;
    let joined = guest.request(json!({"type": "join", "meeting_id": m})).await;
    let token = ok(&joined)["resume_token"].as_str().unwrap().to_owned();
    let mut other = WsClient::connect(&node, &other_token).await;
    ok(&other.request(json!({"type": "join", "meeting_id": m})).await);
    let joined_seq = seq_of(&host.event("participant_joined").await);
    assert!(joined_seq > start_seq, "numbers increase: {joined_seq} after {start_seq}");

    ok(&host.request(json!({"type": "chat", "text": "seen"})).await);
    let seen = seq_of(&guest.event("chat").await);
    // Everything after `seen`: two chats to all, one private to the guest, one private to the
    // other participant (not the guest's), a hand raised.
    ok(&host.request(json!({"type": "chat", "text": "missed 1"})).await);
    ok(&host.request(json!({"type": "chat", "text": "for you", "to": guest_id})).await);
    ok(&host.request(json!({"type": "chat", "text": "not for you", "to": other_id})).await);
    ok(&other.request(json!({"type": "raise_hand"})).await);
    ok(&host.request(json!({"type": "chat", "text": "missed 2"})).await);

    // The guest comes back on a new connection (as after a lost one) from `seen`.
    let mut back = WsClient::connect(&node, &guest_token).await;
    let resumed =
        back.request(json!({"type": "resume", "meeting_id": m, "resume_token": token, "last_seq": seen})).await;
    let data = ok(&resumed);
    let missed = data["missed"].as_array().cloned().unwrap_or_default();
    let described: Vec<String> = missed
        .iter()
        .map(|e| match e["event"].as_str() {
            Some("chat") => format!("chat:{}", e["message"]["text"].as_str().unwrap_or("?")),
            Some(other) => other.to_owned(),
            None => panic!("not an event: {e}"),
        })
        .collect();
    assert_eq!(
        described,
        ["chat:missed 1", "chat:for you", "hand_raised", "chat:missed 2"],
        "exactly the guest's events after {seen}, in order: {resumed}"
    );
    let seqs: Vec<u64> = missed.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > seen, "in order, after {seen}: {seqs:?}");
    assert!(seq_of(&resumed) >= *seqs.last().unwrap(), "the snapshot is at or after the last missed event");
    // The new connection replaces the old one and gets the next event, once.
    ok(&host.request(json!({"type": "chat", "text": "live"})).await);
    let live = back.event("chat").await;
    assert_eq!(live["message"]["text"], "live");
    assert!(seq_of(&live) > seq_of(&resumed));
    assert!(back.try_event("chat", Duration::from_millis(300)).await.is_none(), "no repeat");
    let mut old = Vec::new();
    while let Some(f) = guest.next_frame(Duration::from_millis(200)).await {
        old.push(f);
    }
    assert!(!old.iter().any(|f| f["message"]["text"] == "live"), "the replaced connection hears no more: {old:?}");
    // Resuming from the present replays nothing.
    let now = seq_of(&live);
    let mut again = WsClient::connect(&node, &guest_token).await;
    let token = resumed["resume_token"].as_str().unwrap();
    let r = again.request(json!({"type": "resume", "meeting_id": m, "resume_token": token, "last_seq": now})).await;
    assert!(ok(&r).get("missed").is_none(), "nothing missed: {r}");
}

/// One storm participant's record.
#[derive(Default)]
struct Seen {
    /// Chat messages received, in arrival order: (event seq, text).
    chats: Vec<(u64, String)>,
    /// Every sequenced event's number, in arrival order.
    seqs: Vec<u64>,
    acked: Vec<String>,
    refused: usize,
    resumes: usize,
    resume_log: Vec<Resumed>,
}

/// One resume of a storm client, for the failure report.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
struct Resumed {
    node: usize,
    last_seq: u64,
    joined_seq: u64,
    first_missed: Option<u64>,
    last_missed: Option<u64>,
    missed: usize,
}

struct StormClient {
    k: usize,
    token: String,
    resume_token: String,
    meeting: Uuid,
    ws: WsClient,
    node: usize,
    seen: Seen,
}

impl StormClient {
    fn record(&mut self, frame: &Value) {
        if let Some(seq) = frame["seq"].as_u64() {
            self.seen.seqs.push(seq);
            if frame["event"] == "chat" {
                self.seen.chats.push((seq, frame["message"]["text"].as_str().unwrap_or_default().to_owned()));
            }
        }
    }

    fn last_seq(&self) -> u64 {
        self.seen.seqs.last().copied().unwrap_or(0)
    }

    /// Resumes on the first reachable node from `start` (skipping `dead`).
    async fn resume(&mut self, bases: &[String], start: usize, dead: &std::sync::Mutex<Option<usize>>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = start;
        while Instant::now() < deadline {
            let n = i % bases.len();
            i += 1;
            if *dead.lock().unwrap() == Some(n) {
                continue;
            }
            let Some(mut ws) = WsClient::try_connect(&bases[n], &self.token).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let req = json!({"type": "resume", "meeting_id": self.meeting, "resume_token": self.resume_token,
                             "last_seq": self.last_seq()});
            let Some(id) = ws.try_send(req).await else { continue };
            let Some(reply) = wait_reply(&mut ws, id, |_| {}).await else { continue };
            if reply["ok"] != true {
                // The meeting is moving (`unavailable`): try again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let missed = reply["missed"].as_array().cloned().unwrap_or_default();
            let seqs: Vec<u64> = missed.iter().filter_map(|e| e["seq"].as_u64()).collect();
            let sent = self.last_seq();
            let joined = reply["seq"].as_u64().unwrap_or(0);
            self.seen.resume_log.push(Resumed {
                node: n,
                last_seq: sent,
                joined_seq: joined,
                first_missed: seqs.first().copied(),
                last_missed: seqs.last().copied(),
                missed: seqs.len(),
            });
            for e in &missed {
                self.record(e);
            }
            self.resume_token = reply["resume_token"].as_str().unwrap_or_default().to_owned();
            self.ws = ws;
            self.node = n;
            self.seen.resumes += 1;
            return;
        }
        panic!("client {} could not resume anywhere", self.k);
    }

    /// Sends `count` chat messages one after the other (the `nul_at`-th one with a NUL in it),
    /// resuming whenever the connection is lost.
    async fn storm(&mut self, round: usize, count: usize, nul_at: Option<usize>, ctx: &StormContext) {
        for i in 0..count {
            let text = if nul_at == Some(i) {
                format!("c{}-r{round}-m{i} with a \u{0} inside", self.k)
            } else {
                format!("c{}-r{round}-m{i}", self.k)
            };
            let id = self.ws.try_send(json!({"type": "chat", "text": text})).await;
            let reply = match id {
                Some(id) => {
                    let mut frames = Vec::new();
                    let r = wait_reply(&mut self.ws, id, |f| frames.push(f.clone())).await;
                    for f in &frames {
                        self.record(f);
                    }
                    r
                }
                None => None,
            };
            match reply {
                Some(r) if r["ok"] == true => {
                    self.seen.acked.push(text);
                    ctx.acked.fetch_add(1, Ordering::Relaxed);
                }
                Some(r) if r["error"]["code"] == "invalid_field" && nul_at == Some(i) => self.seen.refused += 1,
                Some(r) => {
                    // Not acknowledged (`unavailable` while the meeting moves): go on shortly.
                    assert_eq!(r["error"]["code"], "unavailable", "client {}: {r}", self.k);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => {
                    let from = self.node + 1;
                    self.resume(&ctx.bases, from, &ctx.dead).await;
                }
            }
        }
    }

    /// Reads until the meeting has been quiet for a while.
    async fn drain(&mut self) {
        while let Some(f) = self.ws.next_frame(Duration::from_millis(1500)).await {
            self.record(&f);
        }
    }
}

/// Waits for the reply to `id`, handing every other frame to `on_event`; `None` if the socket
/// closes (or nothing comes for 15 s).
async fn wait_reply(ws: &mut WsClient, id: u64, mut on_event: impl FnMut(&Value)) -> Option<Value> {
    while let Some(frame) = ws.next_frame(Duration::from_secs(15)).await {
        if frame.get("reply_to") == Some(&json!(id)) {
            return Some(frame);
        }
        on_event(&frame);
    }
    None
}

struct StormContext {
    bases: Vec<String>,
    dead: std::sync::Mutex<Option<usize>>,
    acked: AtomicUsize,
}

/// Which node index owns the meeting now (from the database).
async fn owner_index(c: &TestCluster, m: Uuid) -> usize {
    let rows = c.nodes[0].sql(&format!("SELECT assigned_node FROM meetings WHERE id = '{m}'")).await;
    let owner: Option<String> = rows[0].try_get("", "assigned_node").unwrap();
    let owner = owner.expect("the meeting is active");
    c.names.iter().position(|n| *n == owner).expect("a member owns it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_gets_every_acknowledged_message_once_and_in_order_across_owner_kills() {
    const CLIENTS: usize = 10;
    const ROUNDS: usize = 3;
    const PER_ROUND: usize = 150;
    // A presence TTL shorter than the test: participants who only chat (no heartbeats) must stay
    // restorable at every takeover.
    let env = [
        ("PARLEY_LEASE_TTL_MS", "1500"),
        ("PARLEY_HEARTBEAT_TTL_MS", "20000"),
        ("PARLEY_RATE_PER_SEC", "100000"),
        ("PARLEY_RATE_BURST", "100000"),
    ];
    let mut c = TestCluster::start(3, 0, &env).await;
    let (m, host_token, _) = open_meeting(&c.nodes[0], "storm").await;
    let ctx = Arc::new(StormContext {
        bases: c.nodes.iter().map(|n| n.base.clone()).collect(),
        dead: std::sync::Mutex::new(None),
        acked: AtomicUsize::new(0),
    });
    // Ten participants over the three nodes (the host on node a).
    let mut clients = Vec::new();
    for k in 0..CLIENTS {
        let token = if k == 0 {
            host_token.clone()
        } else {
            c.nodes[0].user(&format!("storm{k}@example.com"), &format!("Storm {k}")).await.1
        };
        let node = k % 3;
        let mut ws = WsClient::connect(&c.nodes[node], &token).await;
        let kind = if k == 0 { "start" } else { "join" };
        let joined = ws.request(json!({"type": kind, "meeting_id": m})).await;
        let resume_token = ok(&joined)["resume_token"].as_str().unwrap().to_owned();
        let mut client = StormClient { k, token, resume_token, meeting: m, ws, node, seen: Seen::default() };
        client.seen.seqs.push(seq_of(&joined));
        clients.push(client);
    }
    let mut kills = Vec::new();
    let mut logs = Vec::new();
    for round in 0..ROUNDS {
        // Everyone starts the round on their home node (those moved by the last kill go back).
        for cl in clients.iter_mut() {
            let home = cl.k % 3;
            if cl.node != home {
                let none = std::sync::Mutex::new(None);
                cl.resume(&ctx.bases, home, &none).await;
            }
        }
        let owner = owner_index(&c, m).await;
        let before = ctx.acked.load(Ordering::Relaxed);
        let mut tasks = Vec::new();
        for mut cl in clients.drain(..) {
            let ctx = ctx.clone();
            // Round 2: one message with a NUL in it, refused; the rest unaffected.
            let nul_at = (round == 1 && cl.k == 3).then_some(PER_ROUND / 2);
            tasks.push(tokio::spawn(async move {
                cl.storm(round, PER_ROUND, nul_at, &ctx).await;
                cl
            }));
        }
        // Kill the owner a third of the way into the round.
        let third = before + CLIENTS * PER_ROUND / 3;
        let waited = Instant::now();
        while ctx.acked.load(Ordering::Relaxed) < third && waited.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        *ctx.dead.lock().unwrap() = Some(owner);
        let killed_at = Instant::now();
        c.nodes[owner].kill9();
        for t in tasks {
            clients.push(t.await.expect("storm client"));
        }
        let round_took = killed_at.elapsed();
        let drains: Vec<_> = clients
            .drain(..)
            .map(|mut cl| {
                tokio::spawn(async move {
                    cl.drain().await;
                    cl
                })
            })
            .collect();
        for d in drains {
            clients.push(d.await.expect("drain"));
        }
        clients.sort_by_key(|cl| cl.k);
        let new_owner = owner_index(&c, m).await;
        assert_ne!(new_owner, owner, "the meeting moved off the killed node");
        kills.push((round, c.names[owner].clone(), round_took));
        logs.push(c.nodes[owner].log());
        // The killed node comes back (empty) for the next round.
        c.nodes[owner] = c.start_member(owner, &env).await;
        *ctx.dead.lock().unwrap() = None;
        for i in 0..3 {
            c.wait_sees(i, 3).await;
        }
    }

    logs.extend(c.nodes.iter().map(|n| n.log()));
    let notes: Vec<&str> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("not logged") || l.contains("unreadable") || l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let notes = notes.join("\n");
    // Every acknowledged message, from anyone, reached every client exactly once, in order.
    let acked: BTreeSet<String> = clients.iter().flat_map(|cl| cl.seen.acked.iter().cloned()).collect();
    let total_acked: usize = clients.iter().map(|cl| cl.seen.acked.len()).sum();
    assert_eq!(acked.len(), total_acked, "no message acknowledged twice");
    assert!(total_acked >= ROUNDS * CLIENTS * PER_ROUND * 8 / 10, "most messages acknowledged: {total_acked}");
    let mut report = Vec::new();
    for cl in &clients {
        let s = &cl.seen;
        assert!(s.seqs.windows(2).all(|w| w[0] < w[1]), "client {}: events out of order or repeated", cl.k);
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, t) in &s.chats {
            *count.entry(t.as_str()).or_default() += 1;
        }
        let repeated: Vec<&&str> = count.iter().filter(|(_, n)| **n > 1).map(|(t, _)| t).collect();
        assert!(repeated.is_empty(), "client {} got messages twice: {repeated:?}", cl.k);
        let missing: Vec<&String> = acked.iter().filter(|t| !count.contains_key(t.as_str())).collect();
        if let Some(first) = missing.first() {
            // Where the others saw it, and what this client asked for and got at each resume.
            let seen_as: Vec<u64> = clients
                .iter()
                .flat_map(|o| o.seen.chats.iter().filter(|(_, t)| t == *first).map(|(q, _)| *q))
                .collect();
            let around: Vec<u64> =
                s.seqs.iter().copied().filter(|q| seen_as.first().is_some_and(|f| q.abs_diff(*f) < 50)).collect();
            eprintln!(
                "client {} missing {first:?}: others saw it as {seen_as:?}; resumes: {:?}; its seqs near it: {around:?}",
                cl.k, s.resume_log
            );
        }
        assert!(
            missing.is_empty(),
            "client {} missed {} acknowledged messages (first: {:?}); resumed {} times; warnings:\n{notes}",
            cl.k,
            missing.len(),
            missing.first(),
            s.resumes
        );
        // Per sender, messages arrive in the order they were sent.
        let mut last_index: BTreeMap<String, usize> = BTreeMap::new();
        for (_, t) in &s.chats {
            let mut parts = t.split('-');
            let (sender, round, index) = (parts.next(), parts.next(), parts.next());
            let index: usize = index.and_then(|i| i.trim_start_matches('m').split(' ').next()?.parse().ok()).unwrap();
            let key = format!("{}-{}", sender.unwrap(), round.unwrap());
            if let Some(prev) = last_index.insert(key.clone(), index) {
                assert!(prev < index, "client {}: {key} message {index} after {prev}", cl.k);
            }
        }
        report.push(format!("client {}: {} chats, {} resumes", cl.k, s.chats.len(), s.resumes));
    }
    let refused: usize = clients.iter().map(|cl| cl.seen.refused).sum();
    assert_eq!(refused, 1, "the NUL-bearing message was refused");
    eprintln!("storm: {total_acked} acknowledged over {ROUNDS} kills {kills:?}\n{}", report.join("\n"));

    // Storage agrees: every acknowledged message stored once; none with a NUL; the end stored.
    let node = &c.nodes[0];
    let rows = node.sql(&format!("SELECT body FROM meeting_chat_messages WHERE meeting_id = '{m}'")).await;
    let stored: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "body").unwrap()).collect();
    let distinct: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "no message stored twice");
    assert!(acked.iter().all(|t| distinct.contains(t)), "every acknowledged message stored");
    assert!(stored.iter().all(|t| !t.contains('\u{0}')));
    let host = clients.iter_mut().find(|cl| cl.k == 0).unwrap();
    let id = host.ws.try_send(json!({"type": "end_meeting"})).await.unwrap();
    let ended = wait_reply(&mut host.ws, id, |_| {}).await.expect("end reply");
    ok(&ended);
    let ended_stored = parley_integration::eventually(Duration::from_secs(10), || async {
        node.count(&format!("meetings WHERE id = '{m}' AND status = 'ended'")).await == 1
    })
    .await;
    assert!(ended_stored, "the meeting's end is stored");
}
