//! The processing workers: every node runs `[recording] workers` of them. Each claims a job
//! from the PostgreSQL queue (`parley_store::recordings`), holds its lease while it works
//! (renewed in the background; a worker that loses it stops and stores nothing), and runs the
//! steps:
//!
//! 1. **gather**: each capture part's manifest, joined into one plan on one clock
//!    (`parley_core::recording::plan`); each track's chunks downloaded and concatenated into
//!    one WebM;
//! 2. **compose**: the MP4 (`compose`), progress reported as the job's;
//! 3. **thumbnail**: a JPEG from ~10 % in;
//! 4. **transcript**: every participant's own audio transcribed (exact speaker labels),
//!    merged into WebVTT — when an engine is configured; a transcript that fails does not fail
//!    the recording (the reason is kept in its artifacts);
//! 5. **upload**: every artifact (and the joined per-track WebMs, unless `keep_tracks` is off)
//!    through the one [`ObjectStore`]; the raw chunks are deleted once the job is stored.
//!
//! Finishing is one transaction (the row `ready` with every URL and size, the outbox message),
//! then the [`ReadyListener`] hears of it (the node tells the meeting's hosts, if it still
//! runs), and only for the lease's holder: a job is done exactly once even when a worker was presumed
//! dead while it still ran. A failure retries with backoff when it may pass (object storage or
//! the database unreachable), and fails the recording with the reason when it will not (ffmpeg
//! refusing the input, nothing captured).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use parley_core::model::RecordingLayout;
use parley_core::recording::{self as rec, PartManifest, PlacedTrack, RecordingPlan, TrackKind};
use parley_store::recordings::{ClaimedJob, RecordingOutputs, RetryOutcome};
use parley_store::{Store, StoreError};
use serde::Serialize;
use uuid::Uuid;

use crate::compose::{self, ComposeSpec, ComposeTrack, Layout};
use crate::media_error::MediaError;
use crate::object_store::{ObjectError, ObjectStore};
use crate::thumbnail;
use crate::transcript::{Segment, SpeakerAudio, Transcriber, webvtt};

/// How the workers run.
#[derive(Clone)]
pub struct PipelineConfig {
    /// Names the lease holder in the queue.
    pub node: String,
    /// Concurrent jobs on this node.
    pub workers: usize,
    /// How long a claim holds without renewal (renewed every third of it).
    pub lease: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// Scratch space; each job works in a directory of its own, removed afterwards.
    pub work_dir: PathBuf,
    /// Also store each track as one joined WebM (otherwise only the composed outputs stay).
    pub keep_tracks: bool,
    /// Speech to text (`None`: no transcript).
    pub transcriber: Option<Arc<dyn Transcriber>>,
}

/// Hears that a recording is ready, once it is stored (the node tells the meeting's
/// moderators connected). Called on the worker's task: it must not wait.
pub trait ReadyListener: Send + Sync {
    fn ready(&self, meeting_id: Uuid, recording_id: Uuid, duration_seconds: i64);
}

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// May pass when tried again (storage or the database unreachable, a full disk).
    #[error("{0}")]
    Retry(String),
    /// Will not pass (the input is unusable).
    #[error("{0}")]
    Permanent(String),
    /// The lease went to another worker: stop, write nothing.
    #[error("the lease was lost")]
    LeaseLost,
}

impl From<ObjectError> for JobError {
    fn from(e: ObjectError) -> Self {
        if e.is_retryable() {
            JobError::Retry(format!("object storage: {e}"))
        } else {
            JobError::Permanent(format!("object storage: {e}"))
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            JobError::Retry(format!("database: {e}"))
        } else {
            JobError::Permanent(format!("database: {e}"))
        }
    }
}

impl From<MediaError> for JobError {
    fn from(e: MediaError) -> Self {
        match e {
            // A full disk or a vanished scratch directory may clear up; a tool that refuses
            // the input will refuse it again.
            MediaError::Io(io) => JobError::Retry(format!("i/o: {io}")),
            other => JobError::Permanent(other.to_string()),
        }
    }
}

fn io(what: &str, e: std::io::Error) -> JobError {
    JobError::Retry(format!("{what}: {e}"))
}

/// One artifact as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// `recording.mp4`, `thumbnail.jpg`, `transcript.vtt`, or `tracks/<name>.webm`.
    pub name: String,
    pub key: String,
    pub content_type: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// For a track: whose it is and what it carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TrackKind>,
}

/// What the artifacts column holds.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactList {
    pub artifacts: Vec<Artifact>,
    pub parts: usize,
    /// Why there is no transcript, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript_error: Option<String>,
    /// Seconds the job took, by step.
    pub timings: Vec<(String, f64)>,
}

/// The workers of one node.
pub struct Pipeline {
    store: Store,
    objects: Arc<dyn ObjectStore>,
    cfg: PipelineConfig,
    listener: Option<Arc<dyn ReadyListener>>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        objects: Arc<dyn ObjectStore>,
        cfg: PipelineConfig,
        listener: Option<Arc<dyn ReadyListener>>,
    ) -> Arc<Pipeline> {
        Arc::new(Pipeline { store, objects, cfg, listener })
    }

    /// Starts the workers; they run until the process ends.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        tracing::info!(
            node = %self.cfg.node,
            workers = self.cfg.workers,
            store = %self.objects.describe(),
            transcript = self.cfg.transcriber.as_ref().map_or("off", |t| t.name()),
            "recording pipeline ready"
        );
        (0..self.cfg.workers.max(1))
            .map(|n| {
                let me = self.clone();
                tokio::spawn(async move { me.worker(n).await })
            })
            .collect()
    }

    async fn worker(self: Arc<Self>, n: usize) {
        loop {
            match self.run_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(worker = n, error = %e, "recording queue unreadable"),
            }
            // Spread the workers' polls a little so they do not all ask at once.
            let jitter = Duration::from_millis((n as u64 * 137) % 500);
            tokio::time::sleep(self.cfg.poll + jitter).await;
        }
    }

    /// Claims and runs one job. `false`: there was none.
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        if let Err(e) = self.store.give_up_exhausted_jobs().await {
            tracing::warn!(error = %e, "exhausted jobs not checked");
        }
        let Some(job) = self.store.claim_job(&self.cfg.node, self.cfg.lease).await? else { return Ok(false) };
        tracing::info!(recording_id = %job.recording_id, attempt = job.attempt, node = %self.cfg.node, "recording processing started");
        let started = Instant::now();
        let outcome = self.run_leased(&job).await;
        match outcome {
            Ok(out) => match self.store.complete_job(&job, &out).await {
                Ok(true) => {
                    tracing::info!(
                        recording_id = %job.recording_id,
                        seconds = started.elapsed().as_secs_f64(),
                        duration_s = out.duration_seconds,
                        mp4_bytes = out.mp4_size_bytes,
                        "recording ready (outbox: recording_ready)"
                    );
                    if let Some(l) = &self.listener {
                        l.ready(job.meeting_id, job.recording_id, out.duration_seconds);
                    }
                    // The raw chunks are replaced by what was just stored.
                    if let Ok(r) = self.store.recording(job.recording_id).await {
                        let parts: Vec<i32> = r.parts.iter().map(|p| p.part).collect();
                        if let Err(e) = self.cleanup_chunks(job.recording_id, &parts).await {
                            tracing::warn!(recording_id = %job.recording_id, error = %e, "raw chunks not deleted");
                        }
                    }
                }
                Ok(false) => {
                    tracing::warn!(recording_id = %job.recording_id, "recording done here but its lease had passed on: result dropped")
                }
                Err(e) => {
                    tracing::warn!(recording_id = %job.recording_id, error = %e, "recording done but not stored; retried");
                    let _ = self.store.retry_job(&job, &format!("result not stored: {e}"), false).await;
                }
            },
            Err(JobError::LeaseLost) => {
                tracing::warn!(recording_id = %job.recording_id, "recording job lease lost: stopped, another worker has it");
            }
            Err(e) => {
                let permanent = matches!(e, JobError::Permanent(_));
                let reason = e.to_string();
                match self.store.retry_job(&job, &reason, permanent).await {
                    Ok(RetryOutcome::Retrying(at)) => tracing::warn!(
                        recording_id = %job.recording_id, attempt = job.attempt, retry_at = %at, error = %reason,
                        "recording processing failed; will retry"
                    ),
                    Ok(RetryOutcome::GaveUp) => tracing::error!(
                        recording_id = %job.recording_id, attempt = job.attempt, error = %reason, "recording failed"
                    ),
                    Ok(RetryOutcome::NotOurs) => {}
                    Err(e) => tracing::warn!(recording_id = %job.recording_id, error = %e, "job failure not stored"),
                }
            }
        }
        let _ = tokio::fs::remove_dir_all(self.job_dir(&job)).await;
        Ok(true)
    }

    fn job_dir(&self, job: &ClaimedJob) -> PathBuf {
        self.cfg.work_dir.join(format!("job-{}-{}", job.recording_id, job.token))
    }

    /// Runs the job while a side task renews its lease; losing the lease stops the work.
    async fn run_leased(&self, job: &ClaimedJob) -> Result<RecordingOutputs, JobError> {
        let renew_every = self.cfg.lease / 3;
        let progress = Arc::new(AtomicI32::new(0));
        let keeper = async {
            let mut reported = -1;
            loop {
                tokio::time::sleep(renew_every.min(Duration::from_secs(1))).await;
                let p = progress.load(Ordering::Relaxed);
                if p != reported {
                    match self.store.job_progress(job, p).await {
                        Ok(false) => return JobError::LeaseLost,
                        Ok(true) => reported = p,
                        Err(e) => tracing::debug!(error = %e, "progress not stored"),
                    }
                }
                match self.store.renew_lease(job, self.cfg.lease).await {
                    Ok(true) => {}
                    Ok(false) => return JobError::LeaseLost,
                    Err(e) => {
                        tracing::warn!(recording_id = %job.recording_id, error = %e, "lease not renewed (database)")
                    }
                }
            }
        };
        tokio::select! {
            r = self.process(job, progress.clone()) => r,
            e = keeper => Err(e),
        }
    }

    async fn process(&self, job: &ClaimedJob, progress: Arc<AtomicI32>) -> Result<RecordingOutputs, JobError> {
        let mut timings = Vec::new();
        let dir = self.job_dir(job);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| io("scratch directory", e))?;
        let recording = self.store.recording(job.recording_id).await?;

        // 1. gather
        let t = Instant::now();
        let mut manifests = Vec::new();
        for p in &recording.parts {
            let key = rec::manifest_key(job.recording_id, p.part);
            let path = dir.join(format!("manifest-{}.json", p.part));
            match self.objects.get_to_file(&key, &path).await {
                Ok(_) => {
                    let bytes = tokio::fs::read(&path).await.map_err(|e| io("manifest", e))?;
                    let m: PartManifest = serde_json::from_slice(&bytes)
                        .map_err(|e| JobError::Permanent(format!("manifest of part {} unreadable: {e}", p.part)))?;
                    manifests.push(m);
                }
                // A part whose node died before its first flush left nothing.
                Err(ObjectError::NotFound(_)) => {
                    tracing::warn!(recording_id = %job.recording_id, part = p.part, "part has no manifest: nothing captured")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let plan = rec::plan(recording.started_at, &manifests);
        if plan.tracks.is_empty() || plan.duration_ms == 0 {
            return Err(JobError::Permanent("nothing was captured (no track sent media while recording)".into()));
        }
        let files = self.gather(job, &plan, &dir).await?;
        timings.push(("gather".to_owned(), t.elapsed().as_secs_f64()));
        progress.store(10, Ordering::Relaxed);

        // 2. compose
        let t = Instant::now();
        let spec = compose_spec(&plan, &files, recording.layout);
        let mp4 = dir.join("recording.mp4");
        let report = {
            let progress = progress.clone();
            let on_progress = move |f: f32| {
                let p = 10 + (f.clamp(0.0, 1.0) * 70.0) as i32;
                progress.store(p, Ordering::Relaxed);
            };
            compose::compose(&spec, &mp4, &on_progress).await?
        };
        timings.push(("compose".to_owned(), t.elapsed().as_secs_f64()));
        progress.store(80, Ordering::Relaxed);

        // 3. thumbnail
        let t = Instant::now();
        let jpg = dir.join("thumbnail.jpg");
        thumbnail::thumbnail(&mp4, &jpg).await?;
        timings.push(("thumbnail".to_owned(), t.elapsed().as_secs_f64()));
        progress.store(85, Ordering::Relaxed);

        // 4. transcript
        let t = Instant::now();
        let (vtt, transcript_error) = match &self.cfg.transcriber {
            Some(engine) => match transcribe(engine.as_ref(), &plan, &files).await {
                Ok(text) => {
                    let path = dir.join("transcript.vtt");
                    tokio::fs::write(&path, text).await.map_err(|e| io("transcript", e))?;
                    (Some(path), None)
                }
                Err(e) => {
                    tracing::warn!(recording_id = %job.recording_id, error = %e, "transcript failed; the recording goes on without it");
                    (None, Some(e.to_string()))
                }
            },
            None => (None, Some("no speech-to-text engine is configured".to_owned())),
        };
        timings.push(("transcript".to_owned(), t.elapsed().as_secs_f64()));
        progress.store(92, Ordering::Relaxed);

        // 5. upload
        let t = Instant::now();
        let mut artifacts = Vec::new();
        let mp4_size = self.upload(job, "recording.mp4", &mp4, "video/mp4", &mut artifacts).await?;
        if let Some(a) = artifacts.last_mut() {
            a.duration_ms = Some(u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX));
        }
        self.upload(job, "thumbnail.jpg", &jpg, "image/jpeg", &mut artifacts).await?;
        if let Some(vtt) = &vtt {
            self.upload(job, "transcript.vtt", vtt, "text/vtt", &mut artifacts).await?;
        }
        let mut track_bytes = 0u64;
        for (placed, path) in plan.tracks.iter().zip(&files) {
            track_bytes += placed.track.bytes;
            if self.cfg.keep_tracks {
                let name = format!("tracks/part-{}-{}.webm", placed.part, placed.track.name);
                let ct = if placed.track.kind == TrackKind::Audio { "audio/webm" } else { "video/webm" };
                self.upload(job, &name, path, ct, &mut artifacts).await?;
                if let Some(a) = artifacts.last_mut() {
                    a.duration_ms = Some(placed.track.duration_ms);
                    a.participant = Some(placed.track.participant);
                    a.label = Some(placed.track.label.clone());
                    a.kind = Some(placed.track.kind);
                }
            }
        }
        timings.push(("upload".to_owned(), t.elapsed().as_secs_f64()));

        let store = self.objects.describe();
        let url = |name: &str| format!("{store}/{}", rec::artifact_key(job.recording_id, name));
        let list = ArtifactList { artifacts, parts: manifests.len(), transcript_error, timings };
        let out = RecordingOutputs {
            duration_seconds: i64::try_from(report.duration.as_secs()).unwrap_or(i64::MAX),
            file_size_bytes: i64::try_from(track_bytes).unwrap_or(i64::MAX),
            storage_url: format!("{store}/{}", rec::recording_prefix(job.recording_id)),
            mp4_url: url("recording.mp4"),
            mp4_size_bytes: i64::try_from(mp4_size).unwrap_or(i64::MAX),
            thumbnail_url: Some(url("thumbnail.jpg")),
            transcript_url: vtt.as_ref().map(|_| url("transcript.vtt")),
            artifacts: serde_json::to_string(&list).map_err(|e| JobError::Permanent(e.to_string()))?,
        };
        Ok(out)
    }

    /// Downloads each placed track's chunks, in order, into one file per track.
    async fn gather(&self, job: &ClaimedJob, plan: &RecordingPlan, dir: &Path) -> Result<Vec<PathBuf>, JobError> {
        let mut files = Vec::with_capacity(plan.tracks.len());
        for placed in &plan.tracks {
            let path = dir.join(format!("part-{}-{}.webm", placed.part, placed.track.name));
            let chunk = dir.join("chunk.tmp");
            let mut out = tokio::fs::File::create(&path).await.map_err(|e| io("track file", e))?;
            for n in 0..placed.track.chunks {
                let key = rec::chunk_key(job.recording_id, placed.part, &placed.track.name, n);
                self.objects.get_to_file(&key, &chunk).await?;
                let mut input = tokio::fs::File::open(&chunk).await.map_err(|e| io("chunk", e))?;
                tokio::io::copy(&mut input, &mut out).await.map_err(|e| io("track file", e))?;
            }
            tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(|e| io("track file", e))?;
            files.push(path);
        }
        Ok(files)
    }

    async fn upload(
        &self,
        job: &ClaimedJob,
        name: &str,
        path: &Path,
        content_type: &str,
        artifacts: &mut Vec<Artifact>,
    ) -> Result<u64, JobError> {
        let key = rec::artifact_key(job.recording_id, name);
        let size = self.objects.put_file(&key, path, content_type).await?;
        artifacts.push(Artifact {
            name: name.to_owned(),
            key,
            content_type: content_type.to_owned(),
            size,
            duration_ms: None,
            participant: None,
            label: None,
            kind: None,
        });
        Ok(size)
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The compose step's input from the plan and the joined track files (same order).
pub fn compose_spec(plan: &RecordingPlan, files: &[PathBuf], layout: RecordingLayout) -> ComposeSpec {
    let tracks = plan
        .tracks
        .iter()
        .zip(files)
        .map(|(t, path): (&PlacedTrack, &PathBuf)| ComposeTrack {
            path: path.clone(),
            participant: t.track.participant,
            label: t.track.label.clone(),
            kind: match t.track.kind {
                TrackKind::Audio => compose::TrackKind::Audio,
                TrackKind::Camera => compose::TrackKind::Camera,
                TrackKind::Screen => compose::TrackKind::Screen,
            },
            offset: ms(t.offset_ms),
        })
        .collect();
    let layout = match layout {
        RecordingLayout::Speaker => Layout::Speaker,
        RecordingLayout::Gallery => Layout::Gallery,
    };
    ComposeSpec::new(tracks, ms(plan.duration_ms), layout, plan.speakers.iter().map(|(at, u)| (ms(*at), *u)).collect())
}

/// Each audio track transcribed on its own, merged into one WebVTT under its speaker's name.
async fn transcribe(engine: &dyn Transcriber, plan: &RecordingPlan, files: &[PathBuf]) -> Result<String, MediaError> {
    let mut per_track: Vec<(String, Duration, Vec<Segment>)> = Vec::new();
    for (t, path) in plan.tracks.iter().zip(files) {
        if t.track.kind != TrackKind::Audio {
            continue;
        }
        let segments = engine.transcribe(path).await?;
        per_track.push((t.track.label.clone(), ms(t.offset_ms), segments));
    }
    let speakers: Vec<SpeakerAudio> =
        per_track.iter().map(|(label, offset, segments)| SpeakerAudio { label, offset: *offset, segments }).collect();
    Ok(webvtt(&speakers))
}

impl Pipeline {
    /// Deletes the raw chunks of a recording that is ready (its joined tracks and outputs are
    /// stored). Called after the job is stored.
    pub async fn cleanup_chunks(&self, recording_id: Uuid, parts: &[i32]) -> Result<u64, ObjectError> {
        let mut n = 0;
        for p in parts {
            n += self.objects.delete_prefix(&format!("{}part-{p}/", rec::recording_prefix(recording_id))).await?;
        }
        Ok(n)
    }
}
