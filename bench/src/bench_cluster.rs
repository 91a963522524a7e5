//! `make bench-cluster`: three real `parley node` processes (release build) joined with
//! ractor_cluster on PostgreSQL + Redis, driven over real WebSockets from this process.
//!
//! 1. Event latency, one meeting owned by node b, measured in the same run three ways: sender
//!    and receiver on b (same node, the baseline); sender on b, receiver on a (one cluster hop
//!    for the event); sender and receiver on a (the request crosses to b and the event comes
//!    back: the seed's "client on node A, meeting on node B"). Latency = chat sent → chat event
//!    received, `--samples` sequential messages per path.
//! 2. Failover: `--kills` rounds of kill -9 of the node that owns `--meetings-per-kill` live
//!    meetings; the time from the kill until PostgreSQL shows every one of them owned by a
//!    survivor with a higher epoch. The killed node is restarted between rounds.
//!
//! Needs PARLEY_BIN (release binary), PARLEY_TEST_PG_URL and PARLEY_TEST_REDIS_URL (the script
//! sets them).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parley_integration::ws::WsClient;
use parley_integration::{TestCluster, TestNode};
use serde_json::{Value, json};
use uuid::Uuid;

struct Args {
    samples: usize,
    kills: usize,
    meetings_per_kill: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { samples: 500, kills: 10, meetings_per_kill: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: usize = it.next().with_context(|| format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--samples" => a.samples = v,
            "--kills" => a.kills = v,
            "--meetings-per-kill" => a.meetings_per_kill = v,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[((v.len() as f64 - 1.0) * q).round() as usize] }
}

/// A meeting without a waiting room, created through `node`; returns it and its host's token.
async fn new_meeting(node: &TestNode, n: usize) -> anyhow::Result<(Uuid, String)> {
    let (_, host) = node.user(&format!("bench-host-{n}-{}@bench.test", Uuid::new_v4().simple()), "Host").await;
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let body = json!({"title": format!("bench {n}"), "scheduled_time": at.to_rfc3339(), "duration_minutes": 60,
                      "settings": {"waiting_room": false}});
    let (status, v) = node.call(reqwest::Method::POST, "/api/meetings", Some(&host), Some(body)).await;
    anyhow::ensure!(status == reqwest::StatusCode::CREATED, "create meeting: {v}");
    Ok((v["meeting_id"].as_str().unwrap_or_default().parse()?, host))
}

fn ensure_ok(reply: &Value, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(reply["ok"] == true, "{what}: {reply}");
    Ok(())
}

/// `samples` chat messages from `sender`, each timed until `receiver` has it.
async fn chat_latency(
    sender: &mut WsClient,
    receiver: &mut WsClient,
    samples: usize,
    label: &str,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let text = format!("{label} {i}");
        let t0 = Instant::now();
        let send = sender.request(json!({"type": "chat", "text": text}));
        let recv = async {
            loop {
                let ev = receiver.event("chat").await;
                if ev["message"]["text"] == text.as_str() {
                    return t0.elapsed();
                }
            }
        };
        let (reply, took) = tokio::join!(send, recv);
        ensure_ok(&reply, "chat")?;
        if i >= samples / 10 {
            // The first tenth warms up connections and caches.
            out.push(took.as_secs_f64() * 1000.0);
        }
    }
    Ok(out)
}

/// Reads every socket until it has been quiet for 200 ms.
async fn settle(socks: &mut [&mut WsClient]) {
    for ws in socks.iter_mut() {
        while ws.try_event("never-sent", Duration::from_millis(200)).await.is_some() {}
        ws.buffered.clear();
    }
}

/// `(owner node, epoch)` of a meeting in PostgreSQL.
async fn owner(node: &TestNode, m: Uuid) -> (Option<String>, i64) {
    let rows = node.sql(&format!("SELECT assigned_node, owner_epoch FROM meetings WHERE id = '{m}'")).await;
    match rows.first() {
        Some(r) => (r.try_get("", "assigned_node").ok().flatten(), r.try_get("", "owner_epoch").unwrap_or(0)),
        None => (None, 0),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let mut c = TestCluster::start(3, 0, &[]).await;
    println!("three nodes up: {} (lease TTL: node default)", c.names.join(", "));

    // --- 1. event latency ---
    let (m, host) = new_meeting(&c.nodes[0], 0).await?;
    let mut b_sender = WsClient::connect(&c.nodes[1], &host).await;
    let started = b_sender.request(json!({"type": "start", "meeting_id": m})).await;
    ensure_ok(&started, "start")?;
    anyhow::ensure!(started["media"]["node"] == c.names[1].as_str(), "meeting not on node b: {started}");
    let mut socks = Vec::new();
    for (i, node) in [1usize, 0, 0].into_iter().enumerate() {
        let (_, t) = c.nodes[0].user(&format!("bench-p{i}-{}@bench.test", Uuid::new_v4().simple()), "P").await;
        let mut ws = WsClient::connect(&c.nodes[node], &t).await;
        ensure_ok(&ws.request(json!({"type": "join", "meeting_id": m})).await, "join")?;
        socks.push(ws);
    }
    let [mut b_receiver, mut a_receiver, mut a_sender]: [WsClient; 3] =
        socks.try_into().map_err(|_| anyhow::anyhow!("sockets"))?;
    // Every message reaches all four sockets; between runs the idle ones are read empty so no
    // backlog carries over into the next measurement.
    let mut same = chat_latency(&mut b_sender, &mut b_receiver, a.samples, "same").await?;
    settle(&mut [&mut b_sender, &mut b_receiver, &mut a_receiver, &mut a_sender]).await;
    let mut one_hop = chat_latency(&mut b_sender, &mut a_receiver, a.samples, "hop").await?;
    settle(&mut [&mut b_sender, &mut b_receiver, &mut a_receiver, &mut a_sender]).await;
    let mut round_trip = chat_latency(&mut a_sender, &mut a_receiver, a.samples, "cross").await?;
    println!("latency samples: {} per path", same.len());

    // --- 2. failover ---
    let mut failovers = Vec::new();
    for round in 0..a.kills {
        // Meetings started through the node that will be killed stay there (ties go local;
        // its load is at most the others').
        let victim = round % 3;
        let mut hosts = Vec::new();
        let mut ids = Vec::new();
        for k in 0..a.meetings_per_kill {
            let (m, host) = new_meeting(&c.nodes[(victim + 1) % 3], 100 + round * 10 + k).await?;
            let mut ws = WsClient::connect(&c.nodes[victim], &host).await;
            let r = ws.request(json!({"type": "start", "meeting_id": m})).await;
            ensure_ok(&r, "start")?;
            if r["media"]["node"] == c.names[victim].as_str() {
                ids.push(m);
            }
            hosts.push(ws);
        }
        anyhow::ensure!(!ids.is_empty(), "round {round}: no meeting landed on the victim");
        let mut before = Vec::new();
        for m in &ids {
            before.push(owner(&c.nodes[(victim + 1) % 3], *m).await.1);
        }
        let dead = c.names[victim].clone();
        let killed_at = Instant::now();
        c.nodes[victim].kill9();
        let survivor = &c.nodes[(victim + 1) % 3];
        loop {
            let mut all = true;
            for (m, e0) in ids.iter().zip(&before) {
                let (n, e) = owner(survivor, *m).await;
                all &= n.is_some_and(|n| n != dead) && e > *e0;
            }
            if all {
                break;
            }
            if killed_at.elapsed() > Duration::from_secs(30) {
                bail!("round {round}: meetings of {dead} not re-activated after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed_at.elapsed().as_secs_f64() * 1000.0;
        println!("kill {}/{}: {} meeting(s) of {dead} active again after {took:.0} ms", round + 1, a.kills, ids.len());
        failovers.push(took);
        drop(hosts);
        c.nodes[victim] = c.start_member(victim, &[]).await;
        for i in 0..3 {
            c.wait_sees(i, 3).await;
        }
    }

    let p = |v: &mut Vec<f64>, q| percentile(v, q);
    let (s50, s99) = (p(&mut same, 0.5), p(&mut same, 0.99));
    let (h50, h99) = (p(&mut one_hop, 0.5), p(&mut one_hop, 0.99));
    let (r50, r99) = (p(&mut round_trip, 0.5), p(&mut round_trip, 0.99));
    let (f50, fmax) = (p(&mut failovers, 0.5), p(&mut failovers, 1.0));
    println!();
    println!("| measure | p50 | p99 / max | ratio to same-node p50 / p99 |");
    println!("|---|---|---|---|");
    println!(
        "| chat event, sender and receiver on the owner node b (baseline) | {s50:.2} ms | {s99:.2} ms | 1.00 / 1.00 |"
    );
    println!(
        "| chat event, sender on b, receiver on node a (event crosses once) | {h50:.2} ms | {h99:.2} ms | {:.2} / {:.2} |",
        h50 / s50,
        h99 / s99
    );
    println!(
        "| chat event, sender and receiver on node a, meeting on b (request and event cross) | {r50:.2} ms | {r99:.2} ms | {:.2} / {:.2} |",
        r50 / s50,
        r99 / s99
    );
    println!(
        "| failover after kill -9 ({} kills, {} meeting(s) each; until PostgreSQL shows a survivor with a newer epoch) | {f50:.0} ms | {fmax:.0} ms (max) | — |",
        failovers.len(),
        a.meetings_per_kill
    );
    Ok(())
}
