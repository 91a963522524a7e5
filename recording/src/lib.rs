//! The recording pipeline after capture.
//!
//! - `object_store`: the one [`object_store::ObjectStore`] trait every artifact goes through;
//!   the local filesystem (embedded default) and S3 (rusoto_s3) behind it.
//! - `compose`: per-track WebM files + the speaker/screen-share timeline → one MP4 (ffmpeg).
//! - `thumbnail`: a JPEG from ~10 % into the MP4 (ffmpeg), and `probe` (ffprobe).
//! - `transcript`: each participant's own audio → text (a small engine adapter), merged into
//!   WebVTT with speaker labels.
//! - `pipeline`: the job workers (claim, lease, gather → compose → thumbnail → transcript →
//!   upload, finish once).

pub mod compose;
pub mod media_error;
pub mod object_store;
pub mod pipeline;
pub mod thumbnail;
pub mod transcript;
