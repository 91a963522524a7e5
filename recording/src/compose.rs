//! Per-track WebM files + the speaker/screen-share timeline → one MP4 (H.264 `libx264` + AAC,
//! yuv420p, `+faststart`).
//!
//! Two halves:
//! - [`plan`] (pure, in `compose/plan.rs`): from the spec and each track's probed duration to
//!   the layout over time ([`LayoutSegment`]s: which tile shows what, where) and the ffmpeg
//!   filtergraph text. Unit-tested without ffmpeg.
//! - [`compose`]: probes the tracks, writes the graph to a file (`-filter_complex_script`, so a
//!   long meeting cannot hit the command-line limit), runs ffmpeg with `-progress pipe:1`, and
//!   renames the finished file onto `out` (a failed or cancelled run leaves no `out`).
//!
//! How the graph is built (linear in tracks and layout changes): one dark canvas; for each
//! participant and each tile size it is ever shown at (large, strip, gallery cell) one *tile
//! stream* — a dark tile with the name drawn on it, the participant's camera tracks overlaid
//! each over its own time window (so a camera that is off, or the gap between two tracks of a
//! republish/failover, shows the dark tile with the name); each tile stream is overlaid on the
//! canvas once, its position a piecewise expression of `t` (`x='X1*gte(t,a1)*lt(t,b1)+…'`) and
//! its visibility an `enable` expression over the same runs. The number of filters grows with
//! the number of tracks and participants only; layout changes only add expression terms.

mod plan;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

pub use crate::media_error::{MediaError, Tools};
use crate::media_error::{TempPath, run_tool, secs};
use crate::thumbnail::{StreamKind, probe_with};
pub use plan::{
    FONT_FILE, FilterPlan, LayoutSegment, PRESENCE_BRIDGE, Rect, Tile, TileClass, TileSource, TrackInfo,
    escape_filter_value, plan,
};

pub const DEFAULT_WIDTH: u32 = 1280;
pub const DEFAULT_HEIGHT: u32 = 720;
pub const DEFAULT_FPS: u32 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Audio,
    Camera,
    Screen,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComposeTrack {
    pub path: PathBuf,
    pub participant: Uuid,
    /// Display name drawn on the participant's tile (any characters; escaped for the graph).
    pub label: String,
    pub kind: TrackKind,
    /// Where the track starts on the recording clock.
    pub offset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The active speaker large, the other participants in a strip below; a screen share,
    /// while one is on, takes the large view (every participant, speaker included, in the strip).
    Speaker,
    /// A grid with a stable cell per participant; while a screen share is on, the same
    /// arrangement as `Speaker` with the screen large (a screen in a grid cell is unreadable).
    Gallery,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComposeSpec {
    pub tracks: Vec<ComposeTrack>,
    /// The recording's length: the MP4 is exactly this long (audio padded/trimmed).
    pub duration: Duration,
    pub layout: Layout,
    /// Active speaker from that moment on (any order; sorted by time here).
    pub speakers: Vec<(Duration, Uuid)>,
    /// Even, at least 160x90.
    pub width: u32,
    pub height: u32,
    /// 1..=60.
    pub fps: u32,
}

impl ComposeSpec {
    /// A spec with the defaults: 1280x720 at 25 fps.
    pub fn new(tracks: Vec<ComposeTrack>, duration: Duration, layout: Layout, speakers: Vec<(Duration, Uuid)>) -> Self {
        ComposeSpec {
            tracks,
            duration,
            layout,
            speakers,
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            fps: DEFAULT_FPS,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComposeReport {
    /// The MP4's duration as ffprobe reads it back.
    pub duration: Duration,
    pub size_bytes: u64,
}

/// Composes `spec` into `out` with the default [`Tools`]. `progress` gets 0.0‥1.0 (from
/// ffmpeg's `out_time_us` over the recording's duration), 1.0 once the file is complete.
pub async fn compose(
    spec: &ComposeSpec,
    out: &Path,
    progress: &(dyn Fn(f32) + Send + Sync),
) -> Result<ComposeReport, MediaError> {
    compose_with(&Tools::default(), spec, out, progress).await
}

/// How many ffprobe processes run at once while the tracks are probed.
const PROBE_CONCURRENCY: usize = 4;

pub async fn compose_with(
    tools: &Tools,
    spec: &ComposeSpec,
    out: &Path,
    progress: &(dyn Fn(f32) + Send + Sync),
) -> Result<ComposeReport, MediaError> {
    if spec.tracks.is_empty() {
        return Err(MediaError::NoInput);
    }
    // In small batches (not a stream combinator over a borrowing closure: that future would
    // not be `Send` for all lifetimes, and the job worker spawns it).
    let mut infos: Vec<TrackInfo> = Vec::with_capacity(spec.tracks.len());
    for batch in spec.tracks.chunks(PROBE_CONCURRENCY) {
        infos.extend(futures_util::future::try_join_all(batch.iter().map(|t| probe_track(tools, &t.path))).await?);
    }
    let plan = plan(spec, &infos)?;
    tracing::info!(
        out = %out.display(),
        inputs = plan.inputs.len(),
        segments = plan.segments.len(),
        graph_bytes = plan.graph.len(),
        "composing recording"
    );

    let script = TempPath::beside(out, "filtergraph");
    tokio::fs::write(script.path(), plan.graph.as_bytes()).await?;
    let tmp_out = TempPath::beside(out, "mp4.part");
    let args = ffmpeg_args(spec, &plan, script.path(), tmp_out.path());

    let total_us = spec.duration.as_micros().max(1) as f64;
    let last = Mutex::new(-1.0f32);
    let on_line = |line: &str| {
        if let Some(v) = line.strip_prefix("out_time_us=")
            && let Ok(us) = v.trim().parse::<i64>()
        {
            let p = ((us.max(0) as f64) / total_us).clamp(0.0, 1.0) as f32;
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            // ffmpeg prints a block every ~0.5 s; report only forward movement.
            if p > *last {
                *last = p;
                progress(p.min(0.999));
            }
        }
    };
    run_tool(&tools.ffmpeg, &args, &[], Some(&on_line)).await?;
    drop(script);

    let made = probe_with(tools, tmp_out.path()).await?;
    if made.count(StreamKind::Video) != 1 || made.count(StreamKind::Audio) != 1 {
        return Err(MediaError::BadOutput {
            program: "ffmpeg".into(),
            detail: format!("expected one video and one audio stream, got {:?}", made.streams),
        });
    }
    let size_bytes = tokio::fs::metadata(tmp_out.path()).await?.len();
    tmp_out.persist(out).await?;
    progress(1.0);
    Ok(ComposeReport { duration: made.duration, size_bytes })
}

async fn probe_track(tools: &Tools, path: &Path) -> Result<TrackInfo, MediaError> {
    let p = probe_with(tools, path).await?;
    Ok(TrackInfo {
        duration: p.duration,
        has_video: p.first(StreamKind::Video).is_some(),
        has_audio: p.first(StreamKind::Audio).is_some(),
    })
}

/// The ffmpeg command line for a plan (inputs, the graph script, the encoders).
fn ffmpeg_args(spec: &ComposeSpec, plan: &FilterPlan, script: &Path, out: &Path) -> Vec<OsString> {
    fn strs(a: &mut Vec<OsString>, items: &[&str]) {
        a.extend(items.iter().map(OsString::from));
    }
    let mut a: Vec<OsString> = Vec::new();
    strs(&mut a, &["-hide_banner", "-nostdin", "-y", "-loglevel", "warning", "-nostats", "-progress", "pipe:1"]);
    for input in &plan.inputs {
        // A WebRTC track changes resolution with bandwidth; do not rebuild the whole graph
        // (which would restart the canvas clock): the scale filters follow the frame size.
        strs(&mut a, &["-reinit_filter", "0", "-i"]);
        a.push(input.as_os_str().to_owned());
    }
    strs(&mut a, &["-filter_complex_script"]);
    a.push(script.as_os_str().to_owned());
    let gop = (spec.fps * 2).to_string();
    let dur = secs(spec.duration);
    let vmap = format!("[{}]", plan.video_out);
    let amap = format!("[{}]", plan.audio_out);
    strs(
        &mut a,
        &[
            "-map",
            &vmap,
            "-map",
            &amap,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &gop,
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-movflags",
            "+faststart",
            "-t",
            &dur,
            "-f",
            "mp4",
        ],
    );
    a.push(out.as_os_str().to_owned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps run inside spawned job workers: their futures must be `Send` for any
    /// borrowed lifetimes (compile-time check; a `'static` spawn of a borrowing wrapper).
    #[tokio::test]
    async fn futures_are_spawnable() {
        let spec = ComposeSpec::new(vec![], Duration::from_secs(1), Layout::Speaker, vec![]);
        let out = PathBuf::from("/nonexistent/out.mp4");
        let task = tokio::spawn(async move {
            let progress = |_: f32| {};
            let composed = compose(&spec, &out, &progress).await;
            let thumb = crate::thumbnail::thumbnail(&out, &out).await;
            let engine: Box<dyn crate::transcript::Transcriber> = Box::new(crate::transcript::FasterWhisper {
                script: Some("/nonexistent/transcribe.py".into()),
                ..Default::default()
            });
            let words = engine.transcribe(&out).await;
            (composed.is_err(), thumb.is_err(), words.is_err())
        });
        assert_eq!(task.await.ok(), Some((true, true, true)));
    }
}
