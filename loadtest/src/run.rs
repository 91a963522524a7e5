//! `parley loadtest`: one meeting with P publishers (synthetic camera + microphone) and S
//! receive-only subscribers on a running node; every participant receives everyone else.
//!
//! Phases: join everybody → connect media → warm up (publishers send; wait until every
//! participant receives every other publisher) → measure for the duration (packet indices
//! restart at 0, so loss is counted only over the measured window) → summary.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;

use crate::LoadError;
use crate::participant::{Participant, Publish, Rates};
use crate::signal::Api;

/// How many participants join or connect at once.
const CONCURRENCY: usize = 16;
/// How long the warm-up may take to reach everyone.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A load test's parameters.
#[derive(Debug, Clone)]
pub struct LoadTest {
    /// `http://host:port` of a node.
    pub url: String,
    /// The node's token secret.
    pub secret: Vec<u8>,
    pub publishers: usize,
    pub subscribers: usize,
    pub duration: Duration,
    pub rates: Rates,
}

/// Milliseconds at percentiles.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

/// The JSON `parley loadtest` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub publishers: usize,
    pub subscribers: usize,
    /// Measured packets delivered to all receivers per second (what the SFU sent out).
    pub packets_out_per_s: f64,
    pub latency_ms: Percentiles,
    pub loss_pct: f64,
    pub join_to_first_packet_ms: Percentiles,
    /// Measured packets: expected by all receivers, and received (distinct).
    pub packets_expected: u64,
    pub packets_received: u64,
    pub duration_s: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn in_batches<T, F, Fut>(items: Vec<T>, f: F) -> Vec<Fut::Output>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future,
{
    let mut out = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<Fut> = items.by_ref().take(CONCURRENCY).map(&f).collect();
        out.extend(join_all(batch).await);
    }
    out
}

/// Runs the test; `progress` gets one line per phase.
pub async fn run(t: &LoadTest, progress: impl Fn(&str)) -> Result<Summary, LoadError> {
    run_observed(t, progress, |_| {}).await
}

/// [`run`], calling `window(true)` as the measured window opens and `window(false)` as it
/// closes (a benchmark samples the node's CPU time there).
pub async fn run_observed(t: &LoadTest, progress: impl Fn(&str), window: impl Fn(bool)) -> Result<Summary, LoadError> {
    let api = Api::new(&t.url, &t.secret);
    let total = t.publishers + t.subscribers;
    if total < 2 || t.publishers == 0 {
        return Err(LoadError::Media("need at least one publisher and two participants".to_owned()));
    }
    progress(&format!("creating {total} users and a meeting on {}", t.url));
    let users = in_batches((0..total).collect(), |i| {
        let api = api.clone();
        async move { api.create_user(&format!("Load {i}")).await }
    })
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let meeting = api.create_meeting(users[0], "loadtest").await?;
    let host = Participant::join(&api, meeting, users[0], true).await?;
    let others = in_batches(users[1..].to_vec(), |u| {
        let api = api.clone();
        async move { Participant::join(&api, meeting, u, false).await }
    })
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let mut people: Vec<Participant> = std::iter::once(host).chain(others).collect();

    progress(&format!("connecting media: {} publishers, {} subscribers", t.publishers, t.subscribers));
    let mut connected = Vec::with_capacity(total);
    let mut rest = people.drain(..).enumerate().collect::<Vec<_>>();
    while !rest.is_empty() {
        let batch: Vec<_> = rest.drain(..rest.len().min(CONCURRENCY)).collect();
        let results = join_all(batch.into_iter().map(|(i, mut p)| async move {
            let publish = if i < t.publishers { Publish::CAMERA_AND_MIC } else { Publish::NOTHING };
            p.connect_media(publish).await.map(|_| p)
        }))
        .await;
        for r in results {
            connected.push(r?);
        }
    }
    let people = connected;

    progress("warming up");
    let publishers: Vec<_> = people[..t.publishers].iter().map(|p| p.publish(t.rates)).collect();
    let streams_of = |me: &Participant| {
        people[..t.publishers]
            .iter()
            .filter(|p| p.user_id != me.user_id)
            .flat_map(|p| [format!("{}:camera", p.user_id), format!("{}:microphone", p.user_id)])
            .collect::<Vec<_>>()
    };
    let warm = join_all(people.iter().map(|p| {
        let want = streams_of(p);
        async move { p.wait_received(WARM_UP_TIMEOUT, |r| want.iter().all(|s| r.streams.contains_key(s))).await }
    }))
    .await;
    let cold: Vec<String> = people
        .iter()
        .zip(&warm)
        .filter(|(_, ok)| !**ok)
        .map(|(p, _)| {
            let r = p.received();
            format!(
                "{} (server offers answered: {}, streams: {:?})",
                p.user_id,
                p.offers_answered(),
                r.streams.iter().map(|(k, s)| format!("{k}={}", s.packets)).collect::<Vec<_>>()
            )
        })
        .collect();
    if !cold.is_empty() {
        return Err(LoadError::Media(format!(
            "{} of {total} participants did not receive every publisher: {}",
            cold.len(),
            cold.join("; ")
        )));
    }
    let mut join_ms: Vec<f64> = people
        .iter()
        .filter_map(|p| p.received().first_packet.map(|f| f.duration_since(p.joined_at).as_secs_f64() * 1000.0))
        .collect();
    join_ms.sort_by(f64::total_cmp);

    progress(&format!("measuring for {:?}", t.duration));
    window(true);
    for p in &publishers {
        p.measure();
    }
    let started = Instant::now();
    let mut latencies: Vec<u32> = Vec::new();
    while started.elapsed() < t.duration {
        tokio::time::sleep(Duration::from_millis(500).min(t.duration.saturating_sub(started.elapsed()))).await;
        for p in &people {
            latencies.extend(p.take_latencies());
        }
    }
    for p in &publishers {
        p.stop();
    }
    let elapsed = started.elapsed();
    window(false);
    // Let the packets in flight arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<(u64, u64)> = publishers.iter().map(|p| p.sent()).collect();
    let (mut expected, mut received) = (0u64, 0u64);
    for p in &people {
        latencies.extend(p.take_latencies());
        let r = p.received();
        for (i, publisher) in people[..t.publishers].iter().enumerate() {
            if publisher.user_id == p.user_id {
                continue;
            }
            let (v, a) = sent[i];
            expected += v + a;
            for (source, _) in [("camera", v), ("microphone", a)] {
                if let Some(s) = r.streams.get(&format!("{}:{source}", publisher.user_id)) {
                    received += s.measured.distinct();
                }
            }
        }
    }
    let mut lat_ms: Vec<f64> = latencies.iter().map(|us| f64::from(*us) / 1000.0).collect();
    lat_ms.sort_by(f64::total_cmp);
    for p in people {
        p.leave().await;
    }
    let loss = if expected == 0 { 0.0 } else { expected.saturating_sub(received) as f64 * 100.0 / expected as f64 };
    Ok(Summary {
        publishers: t.publishers,
        subscribers: t.subscribers,
        packets_out_per_s: received as f64 / elapsed.as_secs_f64(),
        latency_ms: Percentiles {
            p50: percentile(&lat_ms, 0.50),
            p95: percentile(&lat_ms, 0.95),
            p99: Some(percentile(&lat_ms, 0.99)),
        },
        loss_pct: loss,
        join_to_first_packet_ms: Percentiles {
            p50: percentile(&join_ms, 0.50),
            p95: percentile(&join_ms, 0.95),
            p99: None,
        },
        packets_expected: expected,
        packets_received: received,
        duration_s: elapsed.as_secs_f64(),
    })
}
