//! The one storage interface every recording artifact goes through (track chunks, the composed
//! MP4, thumbnails, transcripts), with two implementations:
//!
//! - [`LocalStore`]: files under a root directory (the embedded default). Writes are atomic
//!   (a temporary file, synced, then renamed); the content type is kept in a hidden sidecar file.
//! - [`S3Store`]: an S3-compatible server through rusoto_s3 (path-style addressing, static
//!   credentials, multipart upload for large files, a timeout on every call).
//!
//! Keys are `/`-separated relative paths such as
//! `recordings/<uuid>/part-1/<track>.webm/000007`; [`validate_key`] says which are accepted, and
//! both stores check every key (and prefix) they are given the same way.

mod local;
mod s3;

use std::fmt;
use std::ops::{RangeFrom, RangeInclusive};
use std::path::Path;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

pub use local::LocalStore;
pub use s3::{MULTIPART_PART_SIZE, MULTIPART_THRESHOLD, S3Config, S3Store};

/// The longest key accepted (S3's limit, in bytes of UTF-8).
pub const MAX_KEY_LEN: usize = 1024;

/// Errors of an [`ObjectStore`].
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No object under this key.
    #[error("no object under key {0:?}")]
    NotFound(String),
    /// The key (or prefix) is not acceptable: see [`validate_key`].
    #[error(
        "invalid object key {0:?}: keys are non-empty relative `/`-separated paths without empty, `.` or `..` segments, segments starting with `.`, NUL, control characters or `\\`"
    )]
    InvalidKey(String),
    /// The range starts at or after the end of the object (or ends before it starts).
    #[error("range not satisfiable: the object has {total} bytes")]
    RangeNotSatisfiable { total: u64 },
    /// The store refused the credentials or the request (wrong access or secret key, missing
    /// permission). Retrying does not help.
    #[error("access denied: {0}")]
    Denied(String),
    /// The store could not be reached or answered "try later" (connection refused or reset,
    /// timeout, HTTP 5xx, 429). The caller retries.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (local I/O errors, a missing bucket, malformed answers…).
    #[error("object store operation failed: {0}")]
    Failed(String),
}

impl ObjectError {
    /// Whether the same call may succeed later (only [`ObjectError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ObjectError::Unavailable(_))
    }
}

/// A byte range, HTTP-style: `start..=end` with `end` inclusive, or from `start` to the end of
/// the object when `end` is `None`. An `end` past the object is clamped to its last byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl ByteRange {
    /// From `start` to the end of the object.
    pub fn from_start(start: u64) -> Self {
        ByteRange { start, end: None }
    }

    /// `start..=end` (both inclusive).
    pub fn inclusive(start: u64, end: u64) -> Self {
        ByteRange { start, end: Some(end) }
    }

    /// Parses one HTTP `Range` header value of the forms `bytes=START-END` and `bytes=START-`.
    /// `None` for anything else (suffix ranges `bytes=-N`, several ranges, malformed values): an
    /// HTTP server then answers with the whole object.
    pub fn parse_header(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let start = start.trim().parse::<u64>().ok()?;
        let end = end.trim();
        if end.is_empty() {
            return Some(ByteRange::from_start(start));
        }
        let end = end.parse::<u64>().ok()?;
        (end >= start).then_some(ByteRange::inclusive(start, end))
    }

    /// The `Range` request header value: `bytes=START-END` or `bytes=START-`.
    pub fn to_header(&self) -> String {
        match self.end {
            Some(end) => format!("bytes={}-{end}", self.start),
            None => format!("bytes={}-", self.start),
        }
    }

    /// The inclusive `(start, end)` this range selects in an object of `total` bytes.
    pub fn resolve(&self, total: u64) -> Result<(u64, u64), ObjectError> {
        if self.start >= total || self.end.is_some_and(|end| end < self.start) {
            return Err(ObjectError::RangeNotSatisfiable { total });
        }
        let last = total - 1;
        Ok((self.start, self.end.map_or(last, |end| end.min(last))))
    }
}

impl From<RangeInclusive<u64>> for ByteRange {
    fn from(range: RangeInclusive<u64>) -> Self {
        ByteRange::inclusive(*range.start(), *range.end())
    }
}

impl From<RangeFrom<u64>> for ByteRange {
    fn from(range: RangeFrom<u64>) -> Self {
        ByteRange::from_start(range.start)
    }
}

/// An object (or a range of it) being read.
pub struct ObjectBody {
    /// The size of the whole object.
    pub total: u64,
    /// The first byte in `body`.
    pub start: u64,
    /// The last byte in `body` (inclusive). For an empty object `start == end == 0` and `body`
    /// is empty: use [`ObjectBody::len`].
    pub end: u64,
    pub content_type: String,
    pub body: BoxStream<'static, Result<Bytes, ObjectError>>,
}

impl ObjectBody {
    /// How many bytes `body` yields.
    pub fn len(&self) -> u64 {
        if self.total == 0 { 0 } else { self.end - self.start + 1 }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `Content-Range` response header value: `bytes START-END/TOTAL`.
    pub fn content_range(&self) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, self.total)
    }

    /// Reads the whole body into memory.
    pub async fn bytes(mut self) -> Result<Bytes, ObjectError> {
        let mut buf = BytesMut::with_capacity(usize::try_from(self.len()).unwrap_or(0).min(64 << 20));
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

impl fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBody")
            .field("total", &self.total)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// What a store knows about an object. `content_type` is `None` in [`ObjectStore::list`]
/// results (S3 listings do not carry it; [`ObjectStore::head`] does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub content_type: Option<String>,
}

/// Where recording artifacts are stored.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key` (keys are `/`-separated, e.g.
    /// `recordings/<uuid>/part-1/<track>.webm/000007`), replacing any object there.
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError>;
    /// Uploads a local file; S3 uses multipart upload above [`MULTIPART_THRESHOLD`] (parts of
    /// [`MULTIPART_PART_SIZE`]); returns the size.
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<u64, ObjectError>;
    /// Downloads an object into a local file (written atomically, parent directories created);
    /// returns the size.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, ObjectError>;
    /// A byte range or the whole object, as a stream, with its total size and content type (for
    /// HTTP Range responses).
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectBody, ObjectError>;
    /// The object's size and content type, `None` if there is none under `key`.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError>;
    /// Every object whose key starts with `prefix` (a plain string prefix, as in S3; `""` lists
    /// everything), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;
    /// Deletes every object whose key starts with `prefix` (which must not be empty); returns
    /// how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectError>;
    /// For logs and status: `file:///…` or `s3://bucket@endpoint`.
    fn describe(&self) -> String;
}

/// Checks a key: non-empty, at most [`MAX_KEY_LEN`] bytes, relative (no leading `/`), `/`-separated
/// segments that are non-empty, not `.` or `..` and do not start with `.` (such names are the
/// local store's own temporary and sidecar files), no NUL or other control characters, no `\`.
pub fn validate_key(key: &str) -> Result<(), ObjectError> {
    check_path(key)
}

/// Checks a listing/deletion prefix: the rules of [`validate_key`], except that it may end with
/// `/` (and, when `allow_empty`, be empty).
pub(crate) fn validate_prefix(prefix: &str, allow_empty: bool) -> Result<(), ObjectError> {
    if prefix.is_empty() {
        return if allow_empty { Ok(()) } else { Err(ObjectError::InvalidKey(prefix.to_owned())) };
    }
    check_path(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|_| ObjectError::InvalidKey(prefix.to_owned()))
}

fn check_path(key: &str) -> Result<(), ObjectError> {
    let invalid = || ObjectError::InvalidKey(key.to_owned());
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.starts_with('/') {
        return Err(invalid());
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return Err(invalid());
    }
    // (A prefix's last segment may be partial; it still may not start with `.`.)
    if key.split('/').any(|segment| segment.is_empty() || segment.starts_with('.')) {
        return Err(invalid());
    }
    Ok(())
}

/// A content type for a key from its extension, when none was recorded.
pub(crate) fn content_type_for(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    let ext = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "webm" => "video/webm",
        "mp4" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "ogg" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "vtt" => "text/vtt",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "recordings/0b7c/part-1/cam.webm/000007", "a b/c+d=e@f,g", "ünï/cödé"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a//b", "a/", "..", "a/../b", "./a", "a/.", "a/.hidden", "a\0b", "a\\b", "a\nb"] {
            assert!(matches!(validate_key(bad), Err(ObjectError::InvalidKey(_))), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(validate_prefix("", true).is_ok());
        assert!(validate_prefix("", false).is_err());
        assert!(validate_prefix("recordings/", false).is_ok());
        assert!(validate_prefix("recordings/ab", false).is_ok());
        assert!(validate_prefix("recordings/../", false).is_err());
        assert!(validate_prefix("/", false).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(ByteRange::from(0..=9).resolve(100).unwrap(), (0, 9));
        assert_eq!(ByteRange::from(90..).resolve(100).unwrap(), (90, 99));
        assert_eq!(ByteRange::from(90..=1000).resolve(100).unwrap(), (90, 99));
        assert!(matches!(ByteRange::from(100..).resolve(100), Err(ObjectError::RangeNotSatisfiable { total: 100 })));
        assert!(matches!(ByteRange::inclusive(5, 4).resolve(100), Err(ObjectError::RangeNotSatisfiable { .. })));
        assert!(ByteRange::from(0..).resolve(0).is_err());
        assert_eq!(ByteRange::parse_header("bytes=0-1"), Some(ByteRange::inclusive(0, 1)));
        assert_eq!(ByteRange::parse_header("bytes=7-"), Some(ByteRange::from_start(7)));
        assert_eq!(ByteRange::parse_header("bytes=-7"), None);
        assert_eq!(ByteRange::parse_header("bytes=0-1,5-6"), None);
        assert_eq!(ByteRange::parse_header("bytes=5-4"), None);
        assert_eq!(ByteRange::inclusive(3, 8).to_header(), "bytes=3-8");
        assert_eq!(ByteRange::from_start(3).to_header(), "bytes=3-");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for("a/b/rec.MP4"), "video/mp4");
        assert_eq!(content_type_for("a/b.webm/000007"), "application/octet-stream");
        assert_eq!(content_type_for("t.vtt"), "text/vtt");
    }
}
