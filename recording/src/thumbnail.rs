//! `probe` (ffprobe JSON → duration and streams) and `thumbnail` (one JPEG from ~10 % into a
//! recording).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::media_error::{MediaError, Tools};
use crate::media_error::{TempPath, run_tool, secs};

/// Width and height of [`thumbnail`]'s JPEG (the picture is letterboxed into it).
pub const THUMBNAIL_SIZE: (u32, u32) = (320, 180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStream {
    pub index: u32,
    pub kind: StreamKind,
    /// ffprobe's `codec_name`: `vp8`, `h264`, `opus`, `aac`, `mjpeg`, ...
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The container's duration; when the container does not record one (a WebM written live
    /// to a pipe has none), the longest stream's, and failing that the end of the last packet.
    pub duration: Duration,
    /// ffprobe's `format_name`, e.g. `matroska,webm` or `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format: String,
    pub streams: Vec<ProbeStream>,
}

impl Probe {
    pub fn first(&self, kind: StreamKind) -> Option<&ProbeStream> {
        self.streams.iter().find(|s| s.kind == kind)
    }
    pub fn count(&self, kind: StreamKind) -> usize {
        self.streams.iter().filter(|s| s.kind == kind).count()
    }
}

/// ffprobe a media file with the default [`Tools`].
pub async fn probe(path: &Path) -> Result<Probe, MediaError> {
    probe_with(&Tools::default(), path).await
}

#[derive(Deserialize)]
struct RawProbe {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

fn parse_secs(s: Option<&str>) -> Option<Duration> {
    let v: f64 = s?.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v))
}

pub async fn probe_with(tools: &Tools, path: &Path) -> Result<Probe, MediaError> {
    let args: Vec<OsString> = vec![
        "-v".into(),
        "error".into(),
        "-print_format".into(),
        "json".into(),
        "-show_format".into(),
        "-show_streams".into(),
        path.into(),
    ];
    let out = run_tool(&tools.ffprobe, &args, &[], None).await?;
    let raw: RawProbe = serde_json::from_slice(&out.stdout)
        .map_err(|e| MediaError::BadOutput { program: "ffprobe".into(), detail: e.to_string() })?;
    let streams: Vec<ProbeStream> = raw
        .streams
        .into_iter()
        .map(|s| ProbeStream {
            index: s.index,
            kind: match s.codec_type.as_deref() {
                Some("video") => StreamKind::Video,
                Some("audio") => StreamKind::Audio,
                Some("subtitle") => StreamKind::Subtitle,
                _ => StreamKind::Other,
            },
            codec: s.codec_name.unwrap_or_default(),
            width: s.width,
            height: s.height,
            duration: parse_secs(s.duration.as_deref()),
        })
        .collect();
    let format = raw.format.as_ref().and_then(|f| f.format_name.clone()).unwrap_or_default();
    let duration = match raw.format.as_ref().and_then(|f| parse_secs(f.duration.as_deref())) {
        Some(d) => d,
        None => match streams.iter().filter_map(|s| s.duration).max() {
            Some(d) => d,
            None => last_packet_end(tools, path).await?,
        },
    };
    Ok(Probe { duration, format, streams })
}

/// The end of the last packet (pts + duration) over all streams: the duration of a file whose
/// header has none. Reads packets only (no decoding).
async fn last_packet_end(tools: &Tools, path: &Path) -> Result<Duration, MediaError> {
    let args: Vec<OsString> = vec![
        "-v".into(),
        "error".into(),
        "-show_entries".into(),
        "packet=pts_time,duration_time".into(),
        "-of".into(),
        "csv=p=0".into(),
        path.into(),
    ];
    let out = run_tool(&tools.ffprobe, &args, &[], None).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut end = 0.0f64;
    for line in text.lines() {
        let mut parts = line.split(',');
        let pts: f64 = parts.next().and_then(|p| p.trim().parse().ok()).unwrap_or(f64::NAN);
        let dur: f64 = parts.next().and_then(|p| p.trim().parse().ok()).unwrap_or(0.0);
        if pts.is_finite() && pts + dur > end {
            end = pts + dur;
        }
    }
    Ok(Duration::from_secs_f64(end.max(0.0)))
}

/// A JPEG of [`THUMBNAIL_SIZE`] from ~10 % into `mp4` (letterboxed, never stretched), written
/// atomically to `out`. Uses the default [`Tools`].
pub async fn thumbnail(mp4: &Path, out: &Path) -> Result<(), MediaError> {
    thumbnail_with(&Tools::default(), mp4, out).await
}

pub async fn thumbnail_with(tools: &Tools, mp4: &Path, out: &Path) -> Result<(), MediaError> {
    let info = probe_with(tools, mp4).await?;
    if info.first(StreamKind::Video).is_none() {
        return Err(MediaError::Invalid(format!("{} has no video stream", mp4.display())));
    }
    let at = info.duration.mul_f64(0.1);
    let tmp = TempPath::beside(out, "jpg");
    // A seek at or past the last frame encodes nothing (ffmpeg still exits 0): retry at 0.
    for seek in [at, Duration::ZERO] {
        let (w, h) = THUMBNAIL_SIZE;
        let args: Vec<OsString> = vec![
            "-hide_banner".into(),
            "-nostdin".into(),
            "-loglevel".into(),
            "error".into(),
            "-y".into(),
            "-ss".into(),
            secs(seek).into(),
            "-i".into(),
            mp4.into(),
            "-frames:v".into(),
            "1".into(),
            "-an".into(),
            "-vf".into(),
            format!(
                "scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,\
                 pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,format=yuvj420p"
            )
            .into(),
            "-c:v".into(),
            "mjpeg".into(),
            "-q:v".into(),
            "4".into(),
            "-f".into(),
            "image2".into(),
            tmp.path().into(),
        ];
        run_tool(&tools.ffmpeg, &args, &[], None).await?;
        let written = tokio::fs::metadata(tmp.path()).await.map(|m| m.len()).unwrap_or(0);
        if written > 0 {
            return tmp.persist(out).await;
        }
        if seek.is_zero() {
            break;
        }
    }
    Err(MediaError::BadOutput { program: "ffmpeg".into(), detail: format!("no frame decoded from {}", mp4.display()) })
}
