//! `make bench-sfu`: one real `parley node` (release build, embedded SQLite: media needs no
//! database server) and the load tester in this process, over loopback:
//!
//! - 1 publisher → {10, 50, 200} subscribers, and an N×N meeting (everyone publishes and
//!   receives everyone);
//! - per scenario: packets out per second (distinct measured packets delivered), the node's CPU
//!   use over the measured window (from /proc/<pid>/stat), packets out per second per core used,
//!   one-way latency p50/p95/p99 (send → receive in this process, through the SFU: the load
//!   tester's own WebRTC peers on the same cores included) and loss; on the shared port also the
//!   packets' time in the node itself (datagram read → forwarded copy sent, from the node's
//!   histogram: SFU-added latency apart from the clients);
//! - baseline, same run: a raw UDP forwarder (one socket in, `fan_out` sends per packet, no
//!   SRTP, no RTP handling) at full speed on one thread: packets out per second per core;
//! - telemetry overhead, same run: 1 → 50 on a node with telemetry off and one with it on,
//!   `BENCH_SFU_OVERHEAD_ROUNDS` (5) rounds alternating, node CPU per forwarded packet as a ratio.
//!
//! Needs PARLEY_BIN (release binary; the script sets it). The load tester shares the machine's
//! cores with the node: on a 2-core machine the numbers are a floor.

use std::net::UdpSocket;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use parley_bench::TelemetryOverhead;
use parley_integration::{Backend, NodeOptions, TestNode, cpu_seconds, otlp};
use parley_loadtest::{LoadTest, Rates, Summary};
use parley_media::latency::LatencySnapshot;
use reqwest::Method;

struct Row {
    name: String,
    summary: Summary,
    cores: f64,
    /// Time in the node of the packets forwarded during the scenario (shared port only).
    in_node: Option<LatencySnapshot>,
}

/// The shared media socket's forward-latency histogram, `None` with a port per peer.
async fn forward_latency(node: &TestNode) -> Option<LatencySnapshot> {
    let (_, v) = node.call(Method::GET, "/api/admin/cluster", Some(&node.admin_token()), None).await;
    let counts = v["media_transport"]["forward_latency"]["counts"].as_array()?;
    Some(LatencySnapshot { counts: counts.iter().map(|c| c.as_u64().unwrap_or(0)).collect() })
}

async fn scenario(
    node: &TestNode,
    name: &str,
    publishers: usize,
    subscribers: usize,
    secs: u64,
    rates: Rates,
) -> anyhow::Result<Row> {
    let pid = node.pid();
    let stat = format!("/proc/{pid}/stat");
    let marks: Mutex<Vec<(Instant, f64)>> = Mutex::new(Vec::new());
    let test = LoadTest {
        url: node.base.clone(),
        secret: node.secret.as_bytes().to_vec(),
        publishers,
        subscribers,
        duration: Duration::from_secs(secs),
        rates,
        ..Default::default()
    };
    eprintln!("bench-sfu: {name}");
    let latency_before = forward_latency(node).await;
    let summary = parley_loadtest::run::run_observed(
        &test,
        |line| eprintln!("  {line}"),
        |_| marks.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), cpu_seconds(&stat))),
    )
    .await
    .with_context(|| format!("scenario {name}"))?;
    let m = marks.into_inner().unwrap_or_default();
    let cores = match m.as_slice() {
        [(t0, c0), (t1, c1)] => (c1 - c0) / t1.duration_since(*t0).as_secs_f64(),
        _ => 0.0,
    };
    let in_node = match (latency_before, forward_latency(node).await) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    // Let the node close the meeting's peers before the next scenario.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Row { name: name.to_owned(), summary, cores, in_node })
}

/// The baseline: one thread receives datagrams on one socket and sends each to `fan_out`
/// sinks, as fast as a sender thread feeds it, for `secs`. Returns packets out per second, and
/// packets out per second per core the forwarding thread used.
fn raw_udp_forwarder(fan_out: usize, secs: u64) -> anyhow::Result<(f64, f64)> {
    let input = UdpSocket::bind("127.0.0.1:0")?;
    input.set_read_timeout(Some(Duration::from_millis(100)))?;
    let input_addr = input.local_addr()?;
    let sinks: Vec<UdpSocket> = (0..fan_out).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let sink_addrs: Vec<_> = sinks.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        let out = UdpSocket::bind("127.0.0.1:0")?;
        let packet = [0xABu8; 1100];
        while Instant::now() < deadline {
            for _ in 0..64 {
                let _ = out.send_to(&packet, input_addr);
            }
            // Paced so the forwarder, not the kernel's drop path, sets the rate.
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    });
    // Sinks are drained by a thread so their buffers never fill.
    let drain = std::thread::spawn(move || {
        for s in &sinks {
            let _ = s.set_nonblocking(true);
        }
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline + Duration::from_millis(200) {
            for s in &sinks {
                while s.recv(&mut buf).is_ok() {}
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    let forwarder = std::thread::spawn(move || -> std::io::Result<(u64, f64, f64)> {
        let cpu0 = cpu_seconds("/proc/thread-self/stat");
        let t0 = Instant::now();
        let mut buf = [0u8; 2048];
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let Ok(n) = input.recv(&mut buf) else { continue };
            for a in &sink_addrs {
                if input.send_to(&buf[..n], a).is_ok() {
                    sent += 1;
                }
            }
        }
        Ok((sent, t0.elapsed().as_secs_f64(), cpu_seconds("/proc/thread-self/stat") - cpu0))
    });
    let (sent, wall, cpu) = forwarder.join().map_err(|_| anyhow::anyhow!("forwarder panicked"))??;
    feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    drain.join().map_err(|_| anyhow::anyhow!("drain panicked"))?;
    let per_s = sent as f64 / wall;
    // Cores the forwarding thread used: CPU seconds per wall second.
    let cores = (cpu / wall).max(0.001);
    Ok((per_s, per_s / cores))
}

/// A release node on SQLite with rate limits out of the way and the given media settings.
async fn sfu_node(media: &[(&str, &str)]) -> TestNode {
    let mut options = NodeOptions::new(Backend::Sqlite)
        .env("PARLEY_RATE_BURST", "100000")
        .env("PARLEY_RATE_PER_SEC", "100000")
        .env("PARLEY_LOG", "warn");
    for (key, value) in media {
        options = options.env(key, *value);
    }
    TestNode::start_with(options).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BENCH_SFU_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    // Every peer on one shared UDP port (port 0: any), one driver thread per core.
    let node = sfu_node(&[("PARLEY_MEDIA_PORT", "0")]).await;
    let mut rows = Vec::new();
    for subs in [10, 50, 200] {
        rows.push(scenario(&node, &format!("1 → {subs}"), 1, subs, secs, Rates::default()).await?);
    }
    rows.push(scenario(&node, "8 × 8 (everyone publishes)", 8, 0, secs, Rates::default()).await?);
    // The widest fan-out again with the publisher's frames paced as a browser paces them: the
    // rows above send each frame's packets in one burst, so a burst's last copies wait for all
    // its copies before them.
    let paced = Rates { paced: true, ..Rates::default() };
    rows.push(scenario(&node, "1 → 200, frames paced (packets spread over 33 ms)", 1, 200, secs, paced).await?);
    drop(node);

    // The widest fan-out on a single driver thread (the shared port before it had one per
    // core): what spreading a large meeting over the cores buys, measured in the same run.
    let one_thread = sfu_node(&[("PARLEY_MEDIA_PORT", "0"), ("PARLEY_MEDIA_THREADS", "1")]).await;
    rows.push(scenario(&one_thread, "1 → 200, one driver thread", 1, 200, secs, Rates::default()).await?);
    drop(one_thread);

    // The same fan-out with a port (and a webrtc-rs driver) per peer: what the shared port
    // replaced, measured in the same run.
    let per_peer = sfu_node(&[("PARLEY_MEDIA_PORTS", "45000-45999")]).await;
    rows.push(
        scenario(&per_peer, "1 → 50, a port per peer (webrtc-rs driver per peer)", 1, 50, secs, Rates::default())
            .await?,
    );
    drop(per_peer);

    // Telemetry overhead: the same 1 → 50 on a node with telemetry off and one with it on
    // (traces to an OTLP collector in this process, `/metrics` scraped every second), rounds
    // alternating between them.
    let (collector, spans) = otlp::counting_collector().await;
    let off = sfu_node(&[("PARLEY_MEDIA_PORT", "0")]).await;
    let on = sfu_node(&[("PARLEY_MEDIA_PORT", "0"), ("PARLEY_OTLP_ENDPOINT", collector.as_str())]).await;
    let scraper = on.scrape_metrics_every(Duration::from_secs(1));
    let rounds: usize = std::env::var("BENCH_SFU_OVERHEAD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let (mut cost_off, mut cost_on) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        for (node, costs, label) in [(&off, &mut cost_off, "off"), (&on, &mut cost_on, "on")] {
            let row =
                scenario(node, &format!("1 → 50, telemetry {label}, round {round}"), 1, 50, secs, Rates::default())
                    .await?;
            costs.push(row.cores / row.summary.packets_out_per_s.max(1.0) * 1e6);
        }
    }
    anyhow::ensure!(spans.load(Ordering::Relaxed) > 0 && scraper.scrapes() > 0, "telemetry was not on");
    let overhead = TelemetryOverhead {
        unit: "node CPU µs per packet out".into(),
        off: cost_off,
        on: cost_on,
        spans: spans.load(Ordering::Relaxed),
        scrapes: scraper.scrapes(),
    };
    drop((off, on, scraper));

    eprintln!("bench-sfu: raw UDP forwarder baseline");
    let (raw_per_s, raw_per_core) = raw_udp_forwarder(50, 5)?;

    println!();
    println!(
        "SFU: one release node on loopback, {secs} s measured per scenario; synthetic VP8 ~1 Mbit/s (30 fps × 4 packets) + Opus 50 pps per publisher"
    );
    println!();
    println!(
        "| scenario | packets out/s | node CPU (cores) | packets out/s per core | vs raw UDP | latency p50 / p95 / p99 (ms) | in the node p50 / p95 / p99 (ms) | loss | join → first packet p50 / p95 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let s = &r.summary;
        let per_core = if r.cores > 0.0 { s.packets_out_per_s / r.cores } else { 0.0 };
        let in_node = match &r.in_node {
            Some(h) if h.count() > 0 => {
                let ms = |q: f64| h.quantile_us(q).unwrap_or(0.0) / 1000.0;
                format!("{:.2} / {:.2} / {:.2}", ms(0.5), ms(0.95), ms(0.99))
            }
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.3}× | {:.2} / {:.2} / {:.2} | {} | {:.3} % | {:.0} / {:.0} |",
            r.name,
            s.packets_out_per_s,
            r.cores,
            per_core,
            per_core / raw_per_core,
            s.latency_ms.p50,
            s.latency_ms.p95,
            s.latency_ms.p99.unwrap_or(0.0),
            in_node,
            s.loss_pct,
            s.join_to_first_packet_ms.p50,
            s.join_to_first_packet_ms.p95,
        );
    }
    println!(
        "| baseline: raw UDP forwarder, 1 → 50, one thread | {raw_per_s:.0} | 1 thread | {raw_per_core:.0} | 1× | — | — | — | — |"
    );
    println!();
    println!(
        "Telemetry overhead: 1 → 50, {secs} s per round; node CPU µs per forwarded packet (CPU seconds over the window / packets out)"
    );
    println!();
    println!("{}", overhead.table("traces to OTLP, /metrics scraped every 1 s"));
    for r in &rows {
        println!("{}: {}", r.name, serde_json::to_string(&r.summary)?);
    }
    Ok(())
}
