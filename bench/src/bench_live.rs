//! `make bench-live`: one real `parley node` (release build) on PostgreSQL + Redis, driven over
//! real WebSockets from this process:
//!
//! 1. join latency (request → `joined` reply) for `--joins` sequential joins into one meeting;
//! 2. chat fan-out latency to `--fanout` participants of one meeting (send → each receipt);
//! 3. heartbeat throughput (each heartbeat = one Redis pipeline SADD+HSET+PEXPIRE behind two
//!    actor hops) next to `redis-benchmark -t set` against the same Redis in the same run;
//! 4. `--connections` concurrent participants over `--meetings` meetings: node RSS per participant;
//! 5. telemetry overhead: the node's CPU seconds for one fixed workload (joins, heartbeats, chat
//!    fan-out) on a node with telemetry off and one with it on (traces exported over OTLP to a
//!    collector in this process, `/metrics` scraped every second), rounds alternating between
//!    them (`--overhead-rounds`), as a ratio. `--overhead-only 1` runs only this part.
//!
//! Needs PARLEY_BIN (release binary), PARLEY_TEST_PG_URL, PARLEY_TEST_REDIS_URL (scripts set them)
//! and a raised open-file limit (`ulimit -n`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use parley_bench::TelemetryOverhead;
use parley_integration::{Backend, NodeOptions, TestNode, otlp, redis_url};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Args {
    joins: usize,
    fanout: usize,
    chats: usize,
    connections: usize,
    meetings: usize,
    heartbeat_secs: u64,
    overhead_rounds: usize,
    overhead_people: usize,
    overhead_heartbeats: usize,
    overhead_only: bool,
    /// How often the node with telemetry on is scraped (ms; 0: never).
    overhead_scrape_ms: u64,
    /// Whether that node exports traces.
    overhead_traces: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        joins: 300,
        fanout: 1000,
        chats: 20,
        connections: 10_000,
        meetings: 100,
        heartbeat_secs: 5,
        overhead_rounds: 5,
        overhead_people: 200,
        overhead_heartbeats: 4_000,
        overhead_only: false,
        overhead_scrape_ms: 1000,
        overhead_traces: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: usize = it.next().with_context(|| format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--joins" => a.joins = v,
            "--fanout" => a.fanout = v,
            "--chats" => a.chats = v,
            "--connections" => a.connections = v,
            "--meetings" => a.meetings = v,
            "--heartbeat-secs" => a.heartbeat_secs = v as u64,
            "--overhead-rounds" => a.overhead_rounds = v.max(1),
            "--overhead-people" => a.overhead_people = v.max(1),
            "--overhead-heartbeats" => a.overhead_heartbeats = v,
            "--overhead-only" => a.overhead_only = v != 0,
            "--overhead-scrape-ms" => a.overhead_scrape_ms = v as u64,
            "--overhead-traces" => a.overhead_traces = v != 0,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.joins > a.fanout {
        bail!("--joins must not exceed --fanout");
    }
    Ok(a)
}

fn token(secret: &str, sub: Uuid) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = json!({"sub": sub.to_string(), "adm": false, "iat": now, "exp": now + 3600, "iss": "parley"});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Inserts `n` users straight into the node's database; returns their ids.
async fn users(node: &TestNode, n: usize, tag: &str) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| {
                format!(
                    "('{id}', '{tag}-{id}@bench.test', 'P {}', 'free', 'active', now(), now())",
                    &id.simple().to_string()[24..]
                )
            })
            .collect();
        node.exec(&format!(
            "INSERT INTO users (id, email, display_name, plan, status, created_at, updated_at) VALUES {}",
            values.join(",")
        ))
        .await;
    }
    ids
}

async fn connect(node: &TestNode, token: &str) -> anyhow::Result<Ws> {
    let url = format!("{}/ws?token={token}", node.base.replacen("http://", "ws://", 1));
    Ok(tokio_tungstenite::connect_async(url).await.context("WebSocket connect")?.0)
}

/// Sends a request and waits for its reply, skipping events.
async fn request(ws: &mut Ws, id: u64, mut req: Value) -> anyhow::Result<Value> {
    req["id"] = json!(id);
    ws.send(Message::Text(req.to_string().into())).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["reply_to"] == json!(id) {
                    return Ok(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => bail!("no reply to {id}: {other:?}"),
        }
    }
}

/// Creates a meeting without waiting room and starts it; returns its id and the host socket.
async fn live_meeting(node: &TestNode, host: Uuid, secret: &str) -> anyhow::Result<(Uuid, Ws)> {
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, v) = node
        .call(
            reqwest::Method::POST,
            "/api/meetings",
            Some(&token(secret, host)),
            Some(json!({"title": "bench", "scheduled_time": at.to_rfc3339(), "duration_minutes": 60, "settings": {"waiting_room": false}})),
        )
        .await;
    anyhow::ensure!(status == reqwest::StatusCode::CREATED, "create meeting: {v}");
    let id: Uuid = v["meeting_id"].as_str().unwrap_or_default().parse()?;
    let mut ws = connect(node, &token(secret, host)).await?;
    let r = request(&mut ws, 1, json!({"type": "start", "meeting_id": id})).await?;
    anyhow::ensure!(r["ok"] == true, "start: {r}");
    Ok((id, ws))
}

/// Reads and discards everything a socket receives (so the node never sees a slow client).
fn drain(mut ws: futures_util::stream::SplitStream<Ws>) {
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[((v.len() as f64 - 1.0) * q).round() as usize] }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `redis-benchmark -t set` requests per second against the test Redis (the baseline).
fn redis_set_rate() -> anyhow::Result<f64> {
    let url = redis_url();
    let hostport = url.trim_start_matches("redis://").trim_end_matches('/');
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "6379"));
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-t", "set", "-n", "200000", "-c", "50", "-q"])
        .output()
        .context("redis-benchmark (Debian redis-tools) is needed for the baseline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 123456.79 requests per second, p50=…" (the line may carry carriage returns).
    let line = text
        .rsplit('\r')
        .find(|l| l.contains("SET:"))
        .or_else(|| text.lines().find(|l| l.contains("SET:")))
        .unwrap_or("");
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot parse redis-benchmark output: {text}"))
}

/// When a heartbeat loop stops.
#[derive(Debug, Clone, Copy)]
enum Until {
    Time(Instant),
    Count(u64),
}

/// Heartbeats on a joined participant's socket, 8 in flight, each reply answered with the next
/// one, until `until`; returns the socket and the heartbeats acknowledged.
async fn heartbeats(ws: Ws, until: Until) -> (Option<Ws>, u64) {
    let (mut sink, mut stream) = ws.split();
    let more = |sent: u64| match until {
        Until::Time(t) => Instant::now() < t,
        Until::Count(n) => sent < n,
    };
    let (mut sent, mut done) = (0u64, 0u64);
    while sent < 8 && more(sent) {
        sent += 1;
        let _ = sink.send(Message::Text(json!({"id": 10_000 + sent, "type": "heartbeat"}).to_string().into())).await;
    }
    // Replies still count after the last send: stop when the acknowledged ones reach the limit.
    while more(done) {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"reply_to\"") => {
                if !t.as_str().contains("\"ok\":true") {
                    eprintln!("heartbeat failed: {}", t.as_str());
                    break;
                }
                done += 1;
                if more(sent) {
                    sent += 1;
                    let _ = sink
                        .send(Message::Text(json!({"id": 10_000 + sent, "type": "heartbeat"}).to_string().into()))
                        .await;
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    (sink.reunite(stream).ok(), done)
}

/// A release node on PostgreSQL + Redis with rate limits out of the way.
fn live_node() -> NodeOptions {
    NodeOptions::new(Backend::Postgres)
        .with_redis()
        .env("PARLEY_RATE_BURST", "1000000")
        .env("PARLEY_RATE_PER_SEC", "1000000")
        .env("PARLEY_LOG", "warn")
}

/// One fixed workload on `node`: `people` join a new meeting one after another; 50 of them
/// send `heartbeats` heartbeats between them (8 in flight each); the host sends `chats` chats
/// that every participant receives. Returns the node's CPU seconds over it, counted until 1 s
/// after the last receipt so the traces of its end are exported inside the window too.
async fn overhead_round(node: &TestNode, people: usize, heartbeats_total: usize, chats: usize) -> anyhow::Result<f64> {
    let secret = node.secret.clone();
    let host = users(node, 1, "oh").await[0];
    let crowd = users(node, people, "oc").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = node.cpu_seconds();
    let (meeting, mut host_ws) = live_meeting(node, host, &secret).await?;
    let mut members = Vec::with_capacity(people);
    for u in &crowd {
        let mut ws = connect(node, &token(&secret, *u)).await?;
        let r = request(&mut ws, 1, json!({"type": "join", "meeting_id": meeting})).await?;
        anyhow::ensure!(r["ok"] == true, "join: {r}");
        members.push(ws);
    }
    let senders = members.len().min(50);
    let each = (heartbeats_total / senders) as u64;
    let tasks: Vec<_> = members.drain(..senders).map(|ws| tokio::spawn(heartbeats(ws, Until::Count(each)))).collect();
    let mut acknowledged = 0;
    for t in tasks {
        let (ws, done) = t.await?;
        acknowledged += done;
        members.extend(ws);
    }
    anyhow::ensure!(
        acknowledged == each * senders as u64,
        "{acknowledged} of {} heartbeats acknowledged",
        each * senders as u64
    );
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < chats {
                    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"event\":\"chat\"") => seen += 1,
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                (ws, seen)
            })
        })
        .collect();
    for i in 0..chats {
        let r = request(&mut host_ws, 100 + i as u64, json!({"type": "chat", "text": format!("overhead {i}")})).await?;
        anyhow::ensure!(r["ok"] == true, "chat: {r}");
    }
    let mut sockets = Vec::with_capacity(people);
    let mut received = 0;
    for r in readers {
        let (ws, seen) = r.await?;
        received += seen;
        sockets.push(ws);
    }
    anyhow::ensure!(received == chats * people, "{received} of {} chat deliveries", chats * people);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = node.cpu_seconds() - cpu_before;
    let r = request(&mut host_ws, 9_999, json!({"type": "end_meeting"})).await?;
    anyhow::ensure!(r["ok"] == true, "end_meeting: {r}");
    drop((sockets, host_ws));
    // The node lets everyone go before the next round is measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(cpu)
}

/// Part 5: the same workload on a node with telemetry off and one with it on, alternating.
async fn telemetry_overhead(a: &Args) -> anyhow::Result<()> {
    let (collector, spans) = otlp::counting_collector().await;
    let off = TestNode::start_with(live_node()).await;
    let on_opts =
        if a.overhead_traces { live_node().env("PARLEY_OTLP_ENDPOINT", collector.as_str()) } else { live_node() };
    let on = TestNode::start_with(on_opts).await;
    let scraper =
        (a.overhead_scrape_ms > 0).then(|| on.scrape_metrics_every(Duration::from_millis(a.overhead_scrape_ms)));
    let scrapes = || scraper.as_ref().map_or(0, |s| s.scrapes());
    let (people, hb, chats) = (a.overhead_people, a.overhead_heartbeats, a.chats);
    println!("telemetry overhead: warm-up round on each node");
    overhead_round(&off, people, hb, chats).await?;
    overhead_round(&on, people, hb, chats).await?;
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    for round in 1..=a.overhead_rounds {
        cpu_off.push(overhead_round(&off, people, hb, chats).await?);
        cpu_on.push(overhead_round(&on, people, hb, chats).await?);
        println!(
            "telemetry overhead round {round}/{}: off {:.2} CPU s, on {:.2} CPU s",
            a.overhead_rounds,
            cpu_off[round - 1],
            cpu_on[round - 1]
        );
    }
    let traced = spans.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(
        (traced > 0) == a.overhead_traces && (scrapes() > 0) == (a.overhead_scrape_ms > 0),
        "telemetry was not as asked: {traced} spans, {} scrapes",
        scrapes()
    );
    let overhead =
        TelemetryOverhead { unit: "node CPU s".into(), off: cpu_off, on: cpu_on, spans: traced, scrapes: scrapes() };
    println!("\n## bench-live — telemetry overhead (node CPU seconds for one fixed workload)");
    println!(
        "workload per round: {people} joins, {hb} heartbeats (50 connections × 8 in flight; heartbeats are not traced), {chats} chats to {people}"
    );
    let on_means = format!(
        "{}, {}",
        if a.overhead_traces { "every request traced to OTLP" } else { "no traces" },
        match a.overhead_scrape_ms {
            0 => "not scraped".to_owned(),
            ms => format!("/metrics scraped every {ms} ms"),
        }
    );
    println!("{}", overhead.table(&on_means));
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    if !a.overhead_only {
        load(&a).await?;
    }
    telemetry_overhead(&a).await
}

/// Parts 1–4 on one node.
async fn load(a: &Args) -> anyhow::Result<()> {
    let node = TestNode::start_with(live_node()).await;
    let secret = node.secret.clone();
    println!("node up at {} (pid {}), RSS {} MiB", node.base, node.pid(), rss_kib(node.pid()) / 1024);

    // 1. Join latency, then the rest of the fan-out room.
    let host = users(&node, 1, "host").await[0];
    let people = users(&node, a.fanout, "fan").await;
    let (meeting, mut host_ws) = live_meeting(&node, host, &secret).await?;
    let mut joined: Vec<Ws> = Vec::with_capacity(a.fanout);
    let mut join_ms = Vec::with_capacity(a.joins);
    for (i, u) in people.iter().enumerate() {
        let mut ws = connect(&node, &token(&secret, *u)).await?;
        let t = Instant::now();
        let r = request(&mut ws, 1, json!({"type": "join", "meeting_id": meeting})).await?;
        if i < a.joins {
            join_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(r["ok"] == true, "join: {r}");
        joined.push(ws);
        if (i + 1) % 250 == 0 {
            println!("joined {}/{}", i + 1, a.fanout);
        }
    }

    // 2. Chat fan-out: every receiver timestamps each chat on arrival. The sockets were not read
    // while people joined, so each first drains its backlog of `participant_joined` events; a
    // warm-up chat that everybody must receive marks the point where measuring starts.
    let origin = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let warmed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for ws in joined.drain(..) {
        let (sink, mut stream) = ws.split();
        let samples = samples.clone();
        let warmed = warmed.clone();
        let chats = a.chats;
        readers.push((
            sink,
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < chats {
                    let Ok(Some(Ok(Message::Text(t)))) =
                        tokio::time::timeout(Duration::from_secs(60), stream.next()).await
                    else {
                        break;
                    };
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["event"] == "chat" && v["message"]["text"] == "warm-up" {
                        warmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else if v["event"] == "chat" {
                        let sent: f64 =
                            v["message"]["text"].as_str().and_then(|s| s.strip_prefix("t="))?.parse().ok()?;
                        let now = origin.elapsed().as_secs_f64() * 1000.0;
                        samples.lock().await.push(now - sent);
                        seen += 1;
                    }
                }
                Some(stream)
            }),
        ));
    }
    let r = request(&mut host_ws, 99, json!({"type": "chat", "text": "warm-up"})).await?;
    anyhow::ensure!(r["ok"] == true, "warm-up chat: {r}");
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    while warmed.load(std::sync::atomic::Ordering::Relaxed) < a.fanout && Instant::now() < warm_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "backlogs drained: {}/{} receivers got the warm-up chat",
        warmed.load(std::sync::atomic::Ordering::Relaxed),
        a.fanout
    );
    for i in 0..a.chats {
        let sent = origin.elapsed().as_secs_f64() * 1000.0;
        let r = request(&mut host_ws, 100 + i as u64, json!({"type": "chat", "text": format!("t={sent}")})).await?;
        anyhow::ensure!(r["ok"] == true, "chat: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut streams = Vec::new();
    for (sink, h) in readers {
        if let Ok(Some(stream)) = h.await {
            streams.push(sink.reunite(stream).map_err(|_| anyhow::anyhow!("reunite"))?);
        }
    }
    let mut fan = samples.lock().await.clone();
    let expected = a.chats * a.fanout;
    println!("chat deliveries {}/{expected}", fan.len());

    // 3. Heartbeat throughput: 50 connections, each with 8 heartbeats in flight.
    let hb_conns: Vec<Ws> = streams.into_iter().take(50).collect();
    let until = Until::Time(Instant::now() + Duration::from_secs(a.heartbeat_secs));
    let tasks: Vec<_> = hb_conns.into_iter().map(|ws| tokio::spawn(heartbeats(ws, until))).collect();
    let mut heartbeats = 0u64;
    for t in tasks {
        heartbeats += t.await.map(|(_, done)| done).unwrap_or(0);
    }
    let hb_rate = heartbeats as f64 / a.heartbeat_secs as f64;
    let set_rate = redis_set_rate()?;
    drop(host_ws);

    // 4. Many connections: node RSS per participant.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(node.pid());
    let hosts = users(&node, a.meetings, "h").await;
    let crowd = users(&node, a.connections, "c").await;
    let mut sockets = Vec::with_capacity(a.connections + a.meetings);
    let mut meeting_ids = Vec::new();
    for h in &hosts {
        let (m, ws) = live_meeting(&node, *h, &secret).await?;
        meeting_ids.push(m);
        let (sink, stream) = ws.split();
        drain(stream);
        sockets.push(sink);
    }
    let started = Instant::now();
    for (i, chunk) in crowd.chunks(100).enumerate() {
        let mut handles = Vec::new();
        for (j, u) in chunk.iter().enumerate() {
            let m = meeting_ids[(i * 100 + j) % meeting_ids.len()];
            let t = token(&secret, *u);
            let url = format!("{}/ws?token={t}", node.base.replacen("http://", "ws://", 1));
            handles.push(tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
                let r = request(&mut ws, 1, json!({"type": "join", "meeting_id": m})).await.ok()?;
                (r["ok"] == true).then_some(ws)
            }));
        }
        for h in handles {
            if let Ok(Some(ws)) = h.await {
                let (sink, stream) = ws.split();
                drain(stream);
                sockets.push(sink);
            }
        }
        if (i + 1) % 20 == 0 {
            println!(
                "connected {} participants ({:.1} s)",
                sockets.len() - a.meetings,
                started.elapsed().as_secs_f64()
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected = sockets.len() - a.meetings;
    let rss_after = rss_kib(node.pid());
    let per_participant = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / connected.max(1) as f64;

    let mut join_sorted = join_ms.clone();
    println!(
        "\n## bench-live — one node, PostgreSQL + Redis on loopback, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("| measure | value | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| join latency, {} sequential joins into one meeting (p50 / p99) | {:.2} / {:.2} ms | — | — |",
        join_ms.len(),
        percentile(&mut join_sorted, 0.5),
        percentile(&mut join_sorted, 0.99)
    );
    let (p50, p99) = (percentile(&mut fan, 0.5), percentile(&mut fan, 0.99));
    println!(
        "| chat fan-out to {} participants, {} messages (p50 / p99, send → receipt) | {:.2} / {:.2} ms | goal p99 < 50 ms | {} |",
        a.fanout,
        a.chats,
        p50,
        p99,
        if p99 < 50.0 { "met" } else { "NOT met" }
    );
    println!(
        "| heartbeats/s (50 connections × 8 in flight, {} s) | {:.0} | redis-benchmark SET {:.0}/s (50 clients) | {:.2} |",
        a.heartbeat_secs,
        hb_rate,
        set_rate,
        hb_rate / set_rate
    );
    println!(
        "| node RSS per participant ({connected} connected over {} meetings) | {:.1} KiB | RSS {} → {} MiB | — |",
        a.meetings,
        per_participant / 1024.0,
        rss_before / 1024,
        rss_after / 1024
    );
    println!("chat deliveries counted: {}/{expected}", fan.len());
    Ok(())
}
