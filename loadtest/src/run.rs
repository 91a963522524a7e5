//! `parley loadtest`: one meeting with P publishers (synthetic camera + microphone) and S
//! receive-only subscribers on a running node; every participant receives everyone else.
//!
//! Phases: join everybody → connect media → warm up (publishers send; wait until every
//! participant receives every other publisher) → measure for the duration (packet indices
//! restart at 0, so loss is counted only over the measured window) → summary.
//!
//! With [`LoadTest::record`], publishers send real media ([`RealMedia`], so the recording
//! decodes), the host turns recording on as the measured window opens and off after the
//! recording time (publishers keep sending until then, if that is longer than the window),
//! then polls the recording until it is `ready` or `failed`. Real payloads carry no stamp:
//! latency is not measured, and loss comes from packet counts over the window (approximate at
//! its edges by the packets in flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::LoadError;
use crate::participant::{Participant, Publish, Rates};
use crate::real::RealMedia;
use crate::signal::Api;

/// How many participants join or connect at once.
const CONCURRENCY: usize = 16;
/// How long the warm-up may take to reach everyone.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped recording may take to be `ready` or `failed`, by default.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(300);
/// Distinct real-media sources generated for a recorded run (publishers share them in turn).
const REAL_VARIANTS: usize = 8;
/// One pass of a generated source, and its size.
const REAL_SECONDS: u32 = 10;
const REAL_SIZE: (u32, u32) = (640, 360);
/// How often the recording's status is polled.
const RECORD_POLL: Duration = Duration::from_secs(1);

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
    /// Record the meeting for this long (`--record SECS`); publishers then send real media.
    pub record: Option<Duration>,
    /// How long to wait, after recording stopped, for the recording to be `ready` or `failed`.
    pub record_timeout: Duration,
    /// Publishers send real media even without recording (a benchmark's unrecorded baseline
    /// for the same media).
    pub real_media: bool,
    /// Real media encoded beforehand (`encode_real_media`), used instead of encoding it for
    /// this run: many runs at once share one encoding instead of each running ffmpeg.
    pub real_sources: Option<Vec<Arc<RealMedia>>>,
}

impl Default for LoadTest {
    fn default() -> Self {
        LoadTest {
            url: "http://127.0.0.1:8080".to_owned(),
            secret: Vec::new(),
            publishers: 1,
            subscribers: 1,
            duration: Duration::from_secs(10),
            rates: Rates::default(),
            record: None,
            record_timeout: RECORD_TIMEOUT,
            real_media: false,
            real_sources: None,
        }
    }
}

/// What became of the recording of a recorded run.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingSummary {
    /// The newest recording of the meeting (`None` if none appeared).
    pub id: Option<String>,
    /// `ready` or `failed`; the last status seen if neither came in time (`unknown`: none).
    pub status: String,
    /// From sending `recording` off to `ready`/`failed`; `None` if neither came in time.
    pub seconds_to_ready: Option<f64>,
    /// `duration_ms` of the `recording.mp4` artifact, in seconds.
    pub mp4_duration_s: Option<f64>,
    /// The recording's artifacts as the API lists them (`name`, `key`, `content_type`, `size`,
    /// `duration_ms`?).
    pub artifacts: Vec<Value>,
    /// The recording's `error`, or why its status is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Publishers sent real media (no stamps: `latency_ms` is 0, loss from packet counts).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub real_media: bool,
    /// With [`LoadTest::record`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingSummary>,
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
    let real = match (&t.real_sources, t.record.is_some() || t.real_media) {
        (Some(sources), _) if !sources.is_empty() => Some(sources.clone()),
        (_, true) => {
            progress("encoding real media with ffmpeg");
            Some(encode_real_media(t.publishers).await?)
        }
        _ => None,
    };
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
        let results = join_all(batch.into_iter().map(|(i, mut p)| {
            let publish = match (i < t.publishers, &real) {
                (false, _) => Publish::NOTHING,
                (true, None) => Publish::CAMERA_AND_MIC,
                (true, Some(m)) => Publish::CAMERA_AND_MIC.with_real_media(m[i % m.len()].clone()),
            };
            async move { p.connect_media(publish).await.map(|_| p) }
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
    let publisher_ids: Vec<Uuid> = people[..t.publishers].iter().map(|p| p.user_id).collect();
    let unstamped_before = unstamped(&people, &publisher_ids);
    for p in &publishers {
        p.measure();
    }
    let started = Instant::now();
    let host = &people[0];
    // When recording was turned on, and when off.
    let mut recording: Option<(Instant, Option<Instant>)> = None;
    if let Some(secs) = t.record {
        host.signal.ok(json!({"type": "recording", "on": true})).await?;
        progress(&format!("recording for {secs:?}"));
        recording = Some((Instant::now(), None));
    }
    let mut latencies: Vec<u32> = Vec::new();
    while started.elapsed() < t.duration {
        let mut nap = Duration::from_millis(500).min(t.duration.saturating_sub(started.elapsed()));
        if let (Some(secs), Some((on, None))) = (t.record, recording) {
            nap = nap.min(secs.saturating_sub(on.elapsed()));
        }
        tokio::time::sleep(nap).await;
        for p in &people {
            latencies.extend(p.take_latencies());
        }
        if let (Some(secs), Some((on, off @ None))) = (t.record, recording.as_mut())
            && on.elapsed() >= secs
        {
            host.signal.ok(json!({"type": "recording", "on": false})).await?;
            *off = Some(Instant::now());
        }
    }
    for p in &publishers {
        p.end_measure();
    }
    let elapsed = started.elapsed();
    window(false);
    let sent: Vec<(u64, u64)> = publishers.iter().map(|p| p.sent()).collect();
    // Real media: what arrived over the window, counted now (later arrivals are sent after it).
    let unstamped_after = unstamped(&people, &publisher_ids);
    // Let the packets in flight arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut expected, mut received) = (0u64, 0u64);
    for (k, p) in people.iter().enumerate() {
        latencies.extend(p.take_latencies());
        let r = p.received();
        for (i, publisher) in publisher_ids.iter().enumerate() {
            if *publisher == p.user_id {
                continue;
            }
            let (v, a) = sent[i];
            expected += v + a;
            if real.is_some() {
                received += unstamped_after[k][i].saturating_sub(unstamped_before[k][i]).min(v + a);
                continue;
            }
            for source in ["camera", "microphone"] {
                if let Some(s) = r.streams.get(&format!("{publisher}:{source}")) {
                    received += s.measured.distinct();
                }
            }
        }
    }
    let mut lat_ms: Vec<f64> = latencies.iter().map(|us| f64::from(*us) / 1000.0).collect();
    lat_ms.sort_by(f64::total_cmp);
    let recording = match (t.record, recording) {
        (Some(secs), Some((on, off))) => {
            let off = match off {
                Some(off) => off,
                None => {
                    tokio::time::sleep(secs.saturating_sub(on.elapsed())).await;
                    host.signal.ok(json!({"type": "recording", "on": false})).await?;
                    Instant::now()
                }
            };
            for p in &publishers {
                p.stop();
            }
            progress(&format!("recording stopped; waiting up to {:?} for it", t.record_timeout));
            Some(await_recording(&api, host.meeting_id, host.user_id, off, t.record_timeout).await)
        }
        _ => None,
    };
    for p in &publishers {
        p.stop();
    }
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
        real_media: real.is_some(),
        recording,
    })
}

/// Real-media sources for `publishers` publishers (at most a few distinct ones, reused in
/// turn), encoded concurrently with ffmpeg.
pub async fn encode_real_media(publishers: usize) -> Result<Vec<Arc<RealMedia>>, LoadError> {
    let jobs = (0..publishers.clamp(1, REAL_VARIANTS)).map(|i| {
        tokio::task::spawn_blocking(move || {
            RealMedia::generate(REAL_SECONDS, REAL_SIZE.0, REAL_SIZE.1, &format!("publisher {i}"))
        })
    });
    join_all(jobs)
        .await
        .into_iter()
        .map(|r| r.map_err(|e| LoadError::Media(format!("encoding real media: {e}")))?.map(Arc::new))
        .collect()
}

/// Unstamped packets each participant received so far of each publisher (camera and
/// microphone together): `[participant][publisher]`.
fn unstamped(people: &[Participant], publishers: &[Uuid]) -> Vec<Vec<u64>> {
    people
        .iter()
        .map(|p| {
            let r = p.received();
            publishers
                .iter()
                .map(|u| {
                    ["camera", "microphone"]
                        .iter()
                        .filter_map(|source| r.streams.get(&format!("{u}:{source}")))
                        .map(|s| s.unstamped)
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Polls the meeting's newest recording until it is `ready` or `failed` (or `timeout` passes
/// since `stopped`), then reads its artifacts.
pub async fn await_recording(
    api: &Api,
    meeting: Uuid,
    user: Uuid,
    stopped: Instant,
    timeout: Duration,
) -> RecordingSummary {
    let mut summary = RecordingSummary {
        id: None,
        status: "unknown".to_owned(),
        seconds_to_ready: None,
        mp4_duration_s: None,
        artifacts: Vec::new(),
        error: None,
    };
    loop {
        match api.recordings(meeting, user).await {
            Ok(list) => {
                if let Some(newest) = list.first() {
                    summary.id = newest["recording_id"].as_str().map(str::to_owned);
                    summary.status = newest["status"].as_str().unwrap_or("unknown").to_owned();
                }
                summary.error = None;
            }
            Err(e) => summary.error = Some(e.to_string()),
        }
        if matches!(summary.status.as_str(), "ready" | "failed") {
            summary.seconds_to_ready = Some(stopped.elapsed().as_secs_f64());
            break;
        }
        if stopped.elapsed() >= timeout {
            let last = summary.error.take().map(|e| format!(" (last error: {e})")).unwrap_or_default();
            summary.error = Some(format!("neither ready nor failed within {timeout:?}{last}"));
            return summary;
        }
        tokio::time::sleep(RECORD_POLL).await;
    }
    let Some(id) = summary.id.clone() else { return summary };
    match api.recording(&id, user).await {
        Ok(detail) => apply_detail(&mut summary, &detail),
        Err(e) => summary.error = Some(e.to_string()),
    }
    summary
}

/// Takes a recording's detail reply (`{"recording_id", "status", "error", "artifacts": […]}`)
/// into the summary: its artifacts, the MP4's duration, its error.
fn apply_detail(summary: &mut RecordingSummary, detail: &Value) {
    summary.artifacts = detail["artifacts"].as_array().cloned().unwrap_or_default();
    summary.mp4_duration_s = summary
        .artifacts
        .iter()
        .find(|a| a["name"] == "recording.mp4")
        .and_then(|a| a["duration_ms"].as_f64())
        .map(|ms| ms / 1000.0);
    if let Some(status) = detail["status"].as_str() {
        summary.status = status.to_owned();
    }
    summary.error = detail["error"].as_str().filter(|e| !e.is_empty()).map(str::to_owned);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_detail_gives_the_mp4_duration_and_the_artifacts() {
        let mut s = RecordingSummary {
            id: Some("r1".to_owned()),
            status: "ready".to_owned(),
            seconds_to_ready: Some(4.5),
            mp4_duration_s: None,
            artifacts: Vec::new(),
            error: None,
        };
        let detail = json!({"recording_id": "r1", "status": "ready", "error": null, "artifacts": [
            {"name": "u1-camera.webm", "key": "k1", "content_type": "video/webm", "size": 10, "duration_ms": 30010},
            {"name": "recording.mp4", "key": "k2", "content_type": "video/mp4", "size": 20, "duration_ms": 29980},
            {"name": "manifest.json", "key": "k3", "content_type": "application/json", "size": 1},
        ]});
        apply_detail(&mut s, &detail);
        assert_eq!(s.mp4_duration_s, Some(29.98));
        assert_eq!(s.artifacts.len(), 3);
        assert_eq!(s.error, None);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["seconds_to_ready"], 4.5);
        assert!(v.get("error").is_none());
        apply_detail(&mut s, &json!({"status": "failed", "error": "ffmpeg exited 1", "artifacts": []}));
        assert_eq!(
            (s.status.as_str(), s.error.as_deref(), s.mp4_duration_s),
            ("failed", Some("ffmpeg exited 1"), None)
        );
    }
}
