//! The error type of the media steps (compose, probe/thumbnail, transcript) and the one place
//! that runs their external tools (ffmpeg, ffprobe, python): `kill_on_drop`, stdout collected
//! or streamed line by line, the last lines of stderr kept for the error.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

/// How many lines of a failed tool's stderr an error carries.
pub const STDERR_TAIL_LINES: usize = 20;

/// Everything a media step can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The program could not be started because it is not installed (or not on `PATH`).
    /// Carries the program as it was named, e.g. `"ffmpeg"`.
    #[error("{0} is not installed (or not on PATH)")]
    ToolMissing(String),
    /// Nothing to work on: a compose with no tracks.
    #[error("no input tracks")]
    NoInput,
    /// The request itself is unusable (odd frame size, zero duration, a file without the
    /// stream it must have, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The tool ran and failed. `stderr_tail` holds its last ~20 stderr lines.
    #[error("{program} failed ({status}):\n{stderr_tail}")]
    Tool { program: String, status: ExitStatus, stderr_tail: String },
    /// The tool exited 0 but its output could not be understood (or it wrote no file).
    #[error("{program} produced unusable output: {detail}")]
    BadOutput { program: String, detail: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the media binaries are. [`Tools::default`] reads `PARLEY_FFMPEG` / `PARLEY_FFPROBE`
/// and falls back to `ffmpeg` / `ffprobe` on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        let pick = |var: &str, fallback: &str| {
            std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| fallback.into())
        };
        Tools { ffmpeg: pick("PARLEY_FFMPEG", "ffmpeg"), ffprobe: pick("PARLEY_FFPROBE", "ffprobe") }
    }
}

/// What a successful run left behind.
pub(crate) struct ToolOutput {
    /// All of stdout (empty when a line callback consumed it).
    pub stdout: Vec<u8>,
    /// The last stderr lines (warnings of a successful run; kept for logging).
    #[allow(dead_code)] // read in tests and available to callers that want to log warnings
    pub stderr_tail: String,
}

/// Runs `program args…`, stdin closed. With `on_line`, stdout is handed over line by line
/// (ffmpeg `-progress pipe:1`); otherwise it is collected. A non-zero exit is
/// [`MediaError::Tool`] with the stderr tail; a program that cannot be found is
/// [`MediaError::ToolMissing`].
pub(crate) async fn run_tool(
    program: &Path,
    args: &[OsString],
    envs: &[(&str, &str)],
    on_line: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<ToolOutput, MediaError> {
    let name = program.display().to_string();
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tracing::debug!(program = %name, args = ?args, "running media tool");
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MediaError::ToolMissing(name)),
        Err(e) => return Err(MediaError::Io(e)),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_fut = async {
        let mut buf = Vec::new();
        if let Some(mut s) = stdout {
            match on_line {
                Some(cb) => {
                    let mut lines = BufReader::new(s).lines();
                    while let Some(line) = lines.next_line().await? {
                        cb(&line);
                    }
                }
                None => {
                    s.read_to_end(&mut buf).await?;
                }
            }
        }
        Ok::<_, std::io::Error>(buf)
    };
    let (stdout, tail) = tokio::join!(out_fut, read_tail(stderr));
    let status = child.wait().await?;
    let stdout = stdout?;
    let stderr_tail = tail?;
    if !status.success() {
        tracing::warn!(program = %name, %status, stderr = %stderr_tail, "media tool failed");
        return Err(MediaError::Tool { program: name, status, stderr_tail });
    }
    Ok(ToolOutput { stdout, stderr_tail })
}

/// Keeps the last [`STDERR_TAIL_LINES`] lines of a stream (lossy UTF-8: ffmpeg prints file
/// names and metadata verbatim).
async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>) -> Result<String, std::io::Error> {
    let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL_LINES + 1);
    if let Some(s) = stream {
        let mut reader = BufReader::new(s);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).await?;
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if text.is_empty() {
                continue;
            }
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    }
    Ok(Vec::from(tail).join("\n"))
}

/// A file that is removed when dropped unless [`TempPath::keep`] was called: partial outputs,
/// filtergraph scripts, intermediate WAVs. Removal on drop also covers a cancelled future.
pub(crate) struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// A fresh name next to `target` (same directory, so the final rename is atomic):
    /// `.<file name>.<uuid>.<suffix>`.
    pub fn beside(target: &Path, suffix: &str) -> TempPath {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = dir.join(format!(".{name}.{}.{suffix}", uuid::Uuid::new_v4().simple()));
        TempPath { path, armed: true }
    }

    /// A fresh name in the system temp directory.
    pub fn in_temp_dir(stem: &str, suffix: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!("{stem}-{}.{suffix}", uuid::Uuid::new_v4().simple()));
        TempPath { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `dest` (replacing it) and disarms the guard.
    pub async fn persist(mut self, dest: &Path) -> Result<(), MediaError> {
        tokio::fs::rename(&self.path, dest).await?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the file may never have been created.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Seconds with millisecond precision and always a leading digit (`0.500`, never `.5`), the
/// form every ffmpeg time option and filter expression here is written in.
pub(crate) fn secs(d: std::time::Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seconds_have_a_leading_zero() {
        assert_eq!(secs(Duration::from_millis(500)), "0.500");
        assert_eq!(secs(Duration::from_millis(61_042)), "61.042");
        assert_eq!(secs(Duration::ZERO), "0.000");
    }

    #[tokio::test]
    async fn missing_program_is_tool_missing() {
        let err = run_tool(Path::new("/nonexistent/parley-no-such-tool"), &[], &[], None).await.err();
        assert!(matches!(err, Some(MediaError::ToolMissing(p)) if p.contains("parley-no-such-tool")));
    }

    #[tokio::test]
    async fn failure_keeps_the_last_stderr_lines() {
        let script = "for i in $(seq 1 50); do echo line$i >&2; done; exit 3";
        let err = run_tool(Path::new("sh"), &["-c".into(), script.into()], &[], None).await.err();
        match err {
            Some(MediaError::Tool { stderr_tail, status, .. }) => {
                assert_eq!(status.code(), Some(3));
                let lines: Vec<&str> = stderr_tail.lines().collect();
                assert_eq!(lines.len(), STDERR_TAIL_LINES);
                assert_eq!(lines.last(), Some(&"line50"));
                assert_eq!(lines.first(), Some(&"line31"));
            }
            other => panic!("expected Tool error, got {other:?}"),
        }
    }
}
