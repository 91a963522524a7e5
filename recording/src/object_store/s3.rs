//! [`S3Store`]: an S3-compatible server through rusoto_s3 0.48.
//!
//! Path-style addressing (`<endpoint>/<bucket>/<key>`, which rusoto_s3 always uses), static
//! credentials, a timeout on every call (and between the chunks of a download), multipart upload
//! for files above [`MULTIPART_THRESHOLD`] (aborted when a part fails). Connection errors,
//! timeouts, 5xx and 429 answers are [`ObjectError::Unavailable`]; refused credentials are
//! [`ObjectError::Denied`].

use std::error::Error as StdError;
use std::fmt;
use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use rusoto_core::credential::StaticProvider;
use rusoto_core::request::{BufferedHttpResponse, HttpClient, HttpDispatchError};
use rusoto_core::{ByteStream, Region, RusotoError};
use rusoto_s3::{
    AbortMultipartUploadRequest, CompleteMultipartUploadRequest, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration, CreateBucketError, CreateBucketRequest, CreateMultipartUploadRequest, Delete,
    DeleteObjectsRequest, GetObjectError, GetObjectRequest, HeadBucketError, HeadBucketRequest, HeadObjectError,
    HeadObjectRequest, ListObjectsV2Error, ListObjectsV2Request, ObjectIdentifier, PutObjectRequest, S3, S3Client,
    UploadPartRequest,
};
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::local::write_atomic;
use super::{
    ByteRange, ObjectBody, ObjectError, ObjectMeta, ObjectStore, content_type_for, validate_key, validate_prefix,
};

/// Files larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The size of each part of a multipart upload (the last one may be smaller).
pub const MULTIPART_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Parts uploaded at the same time.
const PART_CONCURRENCY: usize = 4;
/// Keys per DeleteObjects request (the S3 maximum).
const DELETE_BATCH: usize = 1000;

/// Where and how to reach the S3 server.
#[derive(Clone)]
pub struct S3Config {
    /// A custom endpoint such as `http://127.0.0.1:8333` (SeaweedFS, MinIO…); `None` for AWS.
    pub endpoint: Option<String>,
    /// The signing region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Path-style addressing; must be `true` (rusoto_s3 0.48 has no virtual-hosted style).
    pub path_style: bool,
    /// The limit for each call to answer (and for each chunk of a download to arrive).
    pub timeout: Duration,
}

impl S3Config {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".to_owned(),
            bucket: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            path_style: true,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Objects in one bucket of an S3-compatible server.
#[derive(Clone)]
pub struct S3Store {
    client: S3Client,
    bucket: String,
    region: String,
    timeout: Duration,
    described: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("store", &self.described).field("timeout", &self.timeout).finish()
    }
}

impl S3Store {
    /// A client for `config` (no request is made: see [`S3Store::ensure_bucket`]).
    pub fn new(config: S3Config) -> Result<Self, ObjectError> {
        if config.bucket.is_empty() {
            return Err(ObjectError::Failed("S3 configuration: the bucket is empty".to_owned()));
        }
        if !config.path_style {
            return Err(ObjectError::Failed(
                "S3 configuration: only path-style addressing is supported (rusoto_s3 0.48)".to_owned(),
            ));
        }
        let (region, host) = match &config.endpoint {
            Some(endpoint) => {
                let endpoint = endpoint.trim_end_matches('/').to_owned();
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(ObjectError::Failed(format!(
                        "S3 configuration: the endpoint {endpoint:?} must start with http:// or https://"
                    )));
                }
                (Region::Custom { name: config.region.clone(), endpoint: endpoint.clone() }, endpoint)
            }
            None => {
                let region = config
                    .region
                    .parse::<Region>()
                    .map_err(|e| ObjectError::Failed(format!("S3 configuration: region {:?}: {e}", config.region)))?;
                let host = format!("s3.{}.amazonaws.com", region.name());
                (region, host)
            }
        };
        let http = HttpClient::new().map_err(|e| ObjectError::Failed(format!("S3 HTTP client: {e}")))?;
        let credentials = StaticProvider::new_minimal(config.access_key.clone(), config.secret_key.clone());
        Ok(S3Store {
            client: S3Client::new_with(http, credentials, region),
            described: format!("s3://{}@{host}", config.bucket),
            bucket: config.bucket,
            region: config.region,
            timeout: config.timeout,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether the bucket exists (and these credentials may use it).
    pub async fn bucket_exists(&self) -> Result<bool, ObjectError> {
        let request = HeadBucketRequest { bucket: self.bucket.clone(), ..Default::default() };
        match self.timed(self.client.head_bucket(request)).await {
            Ok(()) => Ok(true),
            Err(RusotoError::Service(HeadBucketError::NoSuchBucket(_))) => Ok(false),
            Err(RusotoError::Unknown(response)) if response.status.as_u16() == 404 => Ok(false),
            Err(e) => Err(self.error("checking the bucket", "", e)),
        }
    }

    /// Creates the bucket if it does not exist (idempotent, safe to race with another creator).
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        if self.bucket_exists().await? {
            return Ok(());
        }
        // us-east-1 is the default location and must not be named (S3 rejects it).
        let create_bucket_configuration = (self.region != "us-east-1")
            .then(|| CreateBucketConfiguration { location_constraint: Some(self.region.clone()) });
        let request =
            CreateBucketRequest { bucket: self.bucket.clone(), create_bucket_configuration, ..Default::default() };
        match self.timed(self.client.create_bucket(request)).await {
            Ok(_) => {
                tracing::info!(store = %self.described, "created the bucket");
                Ok(())
            }
            Err(RusotoError::Service(CreateBucketError::BucketAlreadyOwnedByYou(_))) => Ok(()),
            // Someone else created it meanwhile (or it is not ours): it is usable if we can see it.
            Err(e) => match self.bucket_exists().await {
                Ok(true) => Ok(()),
                _ => Err(self.error("creating the bucket", "", e)),
            },
        }
    }

    /// Runs one call with the configured timeout; running out of time is a dispatch error (so
    /// `Unavailable`).
    async fn timed<T, E>(&self, call: impl Future<Output = Result<T, RusotoError<E>>>) -> Result<T, RusotoError<E>> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                Err(RusotoError::HttpDispatch(HttpDispatchError::new(format!("no answer within {:?}", self.timeout))))
            }
        }
    }

    /// Maps a rusoto error (service-specific variants the caller did not handle included).
    fn error<E: StdError + 'static>(&self, op: &str, key: &str, error: RusotoError<E>) -> ObjectError {
        let what = if key.is_empty() {
            format!("{} {op}", self.described)
        } else {
            format!("{} {op} {key:?}", self.described)
        };
        match error {
            RusotoError::HttpDispatch(e) => ObjectError::Unavailable(format!("{what}: {e}")),
            RusotoError::Unknown(response) => self.http_error(&what, key, &response),
            RusotoError::Credentials(e) => ObjectError::Denied(format!("{what}: credentials: {e}")),
            RusotoError::Service(e) => ObjectError::Failed(format!("{what}: {e}")),
            RusotoError::Validation(e) => ObjectError::Failed(format!("{what}: invalid request: {e}")),
            RusotoError::ParseError(e) => ObjectError::Failed(format!("{what}: unreadable answer: {e}")),
            RusotoError::Blocking => ObjectError::Failed(format!("{what}: blocking call failed")),
        }
    }

    fn http_error(&self, what: &str, key: &str, response: &BufferedHttpResponse) -> ObjectError {
        let status = response.status.as_u16();
        let body = response.body_as_str();
        let code = xml_field(body, "Code");
        let message = xml_field(body, "Message");
        let detail = match (&code, &message) {
            (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
            (Some(code), None) => format!("HTTP {status} {code}"),
            _ => format!("HTTP {status}"),
        };
        match status {
            404 if code.as_deref() == Some("NoSuchBucket") => ObjectError::Failed(format!(
                "{what}: the bucket {:?} does not exist (S3Store::ensure_bucket creates it): {detail}",
                self.bucket
            )),
            404 if !key.is_empty() => ObjectError::NotFound(key.to_owned()),
            401 | 403 => ObjectError::Denied(format!(
                "{what}: {detail} (check the S3 access key, secret key and the bucket's permissions)"
            )),
            408 | 429 | 500..=599 => ObjectError::Unavailable(format!("{what}: {detail}")),
            _ => ObjectError::Failed(format!("{what}: {detail}")),
        }
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        op: &'static str,
    ) -> Result<(), ObjectError> {
        let size = body.len();
        let request = PutObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            content_length: Some(size as i64),
            content_type: Some(effective_content_type(key, content_type).to_owned()),
            body: Some(ByteStream::new_with_size(futures_util::stream::once(async move { Ok(body) }), size)),
            ..Default::default()
        };
        self.timed(self.client.put_object(request)).await.map_err(|e| self.error(op, key, e))?;
        tracing::debug!(store = %self.described, key, size, "stored object");
        Ok(())
    }

    async fn multipart_upload(&self, key: &str, path: &Path, size: u64, content_type: &str) -> Result<(), ObjectError> {
        let request = CreateMultipartUploadRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            content_type: Some(effective_content_type(key, content_type).to_owned()),
            ..Default::default()
        };
        let upload = self
            .timed(self.client.create_multipart_upload(request))
            .await
            .map_err(|e| self.error("starting a multipart upload of", key, e))?;
        let Some(upload_id) = upload.upload_id else {
            return Err(ObjectError::Failed(format!("{}: no upload id for {key:?}", self.described)));
        };
        let result = self.upload_parts(key, path, size, &upload_id).await;
        if result.is_err() {
            let abort = AbortMultipartUploadRequest {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                upload_id: upload_id.clone(),
                ..Default::default()
            };
            if let Err(e) = self.timed(self.client.abort_multipart_upload(abort)).await {
                tracing::warn!(store = %self.described, key, upload_id, error = %e, "could not abort a failed multipart upload");
            }
        }
        result
    }

    async fn upload_parts(&self, key: &str, path: &Path, size: u64, upload_id: &str) -> Result<(), ObjectError> {
        let count = size.div_ceil(MULTIPART_PART_SIZE);
        let parts: Vec<CompletedPart> = futures_util::stream::iter(1..=count)
            .map(|number| self.upload_part(key, path, size, upload_id, number))
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        let request = CompleteMultipartUploadRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            multipart_upload: Some(CompletedMultipartUpload { parts: Some(parts) }),
            ..Default::default()
        };
        self.timed(self.client.complete_multipart_upload(request))
            .await
            .map_err(|e| self.error("completing the multipart upload of", key, e))?;
        tracing::debug!(store = %self.described, key, size, parts = count, "stored object (multipart)");
        Ok(())
    }

    async fn upload_part(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
        number: u64,
    ) -> Result<CompletedPart, ObjectError> {
        let offset = (number - 1) * MULTIPART_PART_SIZE;
        let len = MULTIPART_PART_SIZE.min(size - offset);
        let read_error = |e: std::io::Error| ObjectError::Failed(format!("reading {}: {e}", path.display()));
        let mut file = File::open(path).await.map_err(read_error)?;
        file.seek(SeekFrom::Start(offset)).await.map_err(read_error)?;
        let mut buf = vec![0; usize::try_from(len).map_err(|e| ObjectError::Failed(e.to_string()))?];
        file.read_exact(&mut buf).await.map_err(read_error)?;
        let request = UploadPartRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            part_number: number as i64,
            content_length: Some(len as i64),
            body: Some(ByteStream::from(buf)),
            ..Default::default()
        };
        let output = self
            .timed(self.client.upload_part(request))
            .await
            .map_err(|e| self.error(&format!("uploading part {number} of"), key, e))?;
        Ok(CompletedPart { e_tag: output.e_tag, part_number: Some(number as i64) })
    }

    async fn total_for_range_error(&self, key: &str) -> Result<ObjectError, ObjectError> {
        match self.head(key).await? {
            Some(meta) => Ok(ObjectError::RangeNotSatisfiable { total: meta.size }),
            None => Ok(ObjectError::NotFound(key.to_owned())),
        }
    }
}

fn effective_content_type<'a>(key: &str, content_type: &'a str) -> &'a str {
    if content_type.is_empty() { content_type_for(key) } else { content_type }
}

/// The text of the first `<name>…</name>` in an S3 XML error body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_owned()).filter(|s| !s.is_empty())
}

/// `bytes START-END/TOTAL` → (start, end, total).
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.trim().strip_prefix("bytes")?.trim().split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.put_object(key, body, content_type, "storing").await
    }

    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<u64, ObjectError> {
        validate_key(key)?;
        let read_error = |e: std::io::Error| ObjectError::Failed(format!("uploading {}: {e}", path.display()));
        let meta = fs::metadata(path).await.map_err(read_error)?;
        if !meta.is_file() {
            return Err(ObjectError::Failed(format!("uploading {}: not a file", path.display())));
        }
        let size = meta.len();
        if size > MULTIPART_THRESHOLD {
            self.multipart_upload(key, path, size, content_type).await?;
        } else {
            let body = fs::read(path).await.map_err(read_error)?;
            if body.len() as u64 != size {
                return Err(ObjectError::Failed(format!("uploading {}: it changed while read", path.display())));
            }
            self.put_object(key, Bytes::from(body), content_type, "uploading").await?;
        }
        Ok(size)
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, ObjectError> {
        let mut object = self.get(key, None).await?;
        let expected = object.len();
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| ObjectError::Failed(format!("creating {}: {e}", parent.display())))?;
        }
        let mut failure = None;
        let mut written = 0u64;
        write_atomic(path, async |file: &mut File| {
            while let Some(chunk) = object.body.next().await {
                match chunk {
                    Ok(chunk) => {
                        file.write_all(&chunk).await?;
                        written += chunk.len() as u64;
                    }
                    Err(e) => {
                        failure = Some(e);
                        return Err(std::io::Error::other("download failed"));
                    }
                }
            }
            if written != expected {
                return Err(std::io::Error::other(format!("got {written} of {expected} bytes")));
            }
            Ok(())
        })
        .await
        .map_err(|e| match failure.take() {
            Some(failure) => failure,
            None => ObjectError::Failed(format!("downloading {key:?} to {}: {e}", path.display())),
        })?;
        Ok(written)
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectBody, ObjectError> {
        validate_key(key)?;
        if let Some(ByteRange { start, end: Some(end) }) = range
            && end < start
        {
            return Err(self.total_for_range_error(key).await?);
        }
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            range: range.map(|r| r.to_header()),
            ..Default::default()
        };
        let output = match self.timed(self.client.get_object(request)).await {
            Ok(output) => output,
            Err(RusotoError::Service(GetObjectError::NoSuchKey(_))) => {
                return Err(ObjectError::NotFound(key.to_owned()));
            }
            Err(RusotoError::Unknown(response)) if response.status.as_u16() == 416 => {
                return Err(self.total_for_range_error(key).await?);
            }
            Err(e) => return Err(self.error("reading", key, e)),
        };
        let length = output.content_length.and_then(|l| u64::try_from(l).ok());
        let (start, end, total) = match output.content_range.as_deref().and_then(parse_content_range) {
            Some(parsed) => parsed,
            None => {
                let total = length.ok_or_else(|| {
                    ObjectError::Failed(format!("{} reading {key:?}: no Content-Length", self.described))
                })?;
                let whole = (0, total.saturating_sub(1));
                // A server that ignores Range sends everything: fine only if that is what was asked.
                if let Some(range) = range
                    && range.resolve(total)? != whole
                {
                    return Err(ObjectError::Failed(format!(
                        "{} reading {key:?}: the server ignored the Range header",
                        self.described
                    )));
                }
                (whole.0, whole.1, total)
            }
        };
        let content_type = output.content_type.unwrap_or_else(|| content_type_for(key).to_owned());
        let Some(stream) = output.body else {
            return Err(ObjectError::Failed(format!("{} reading {key:?}: no body", self.described)));
        };
        let timeout = self.timeout;
        let what = format!("{} reading {key:?}", self.described);
        let body = futures_util::stream::unfold(Some(stream), move |state| {
            let what = what.clone();
            async move {
                let mut stream = state?;
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                    Ok(Some(Err(e))) => Some((Err(ObjectError::Unavailable(format!("{what}: {e}"))), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(ObjectError::Unavailable(format!("{what}: no data for {timeout:?}"))), None)),
                }
            }
        })
        .boxed();
        Ok(ObjectBody { total, start, end, content_type, body })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        validate_key(key)?;
        let request = HeadObjectRequest { bucket: self.bucket.clone(), key: key.to_owned(), ..Default::default() };
        match self.timed(self.client.head_object(request)).await {
            Ok(output) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: output.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
                content_type: output.content_type,
            })),
            Err(RusotoError::Service(HeadObjectError::NoSuchKey(_))) => Ok(None),
            Err(e) => match self.error("checking", key, e) {
                ObjectError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        validate_prefix(prefix, true)?;
        let mut found = Vec::new();
        let mut continuation_token = None;
        loop {
            let request = ListObjectsV2Request {
                bucket: self.bucket.clone(),
                prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
                continuation_token: continuation_token.take(),
                ..Default::default()
            };
            let output = match self.timed(self.client.list_objects_v2(request)).await {
                Ok(output) => output,
                Err(RusotoError::Service(ListObjectsV2Error::NoSuchBucket(_))) => {
                    return Err(ObjectError::Failed(format!(
                        "{} listing {prefix:?}: the bucket {:?} does not exist (S3Store::ensure_bucket creates it)",
                        self.described, self.bucket
                    )));
                }
                Err(e) => return Err(self.error("listing", "", e)),
            };
            for object in output.contents.unwrap_or_default() {
                if let Some(key) = object.key {
                    let size = object.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                    found.push(ObjectMeta { key, size, content_type: None });
                }
            }
            match output.next_continuation_token {
                Some(token) if output.is_truncated == Some(true) => continuation_token = Some(token),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectError> {
        validate_prefix(prefix, false)?;
        let objects = self.list(prefix).await?;
        let mut deleted = 0u64;
        for batch in objects.chunks(DELETE_BATCH) {
            let request = DeleteObjectsRequest {
                bucket: self.bucket.clone(),
                delete: Delete {
                    objects: batch
                        .iter()
                        .map(|o| ObjectIdentifier { key: o.key.clone(), ..Default::default() })
                        .collect(),
                    quiet: Some(true),
                },
                ..Default::default()
            };
            let output = self
                .timed(self.client.delete_objects(request))
                .await
                .map_err(|e| self.error("deleting objects under", prefix, e))?;
            let errors = output.errors.unwrap_or_default();
            if let Some(first) = errors.first() {
                return Err(ObjectError::Failed(format!(
                    "{} deleting under {prefix:?}: {} of {} objects not deleted, e.g. {:?}: {} {}",
                    self.described,
                    errors.len(),
                    batch.len(),
                    first.key.as_deref().unwrap_or(""),
                    first.code.as_deref().unwrap_or(""),
                    first.message.as_deref().unwrap_or(""),
                )));
            }
            deleted += batch.len() as u64;
        }
        tracing::debug!(store = %self.described, prefix, deleted, "deleted objects");
        Ok(deleted)
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        let body = "<Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("bad"));
        assert_eq!(xml_field(body, "Resource"), None);
    }

    #[test]
    fn config() {
        let base = S3Config { bucket: "b".into(), endpoint: Some("http://127.0.0.1:9/".into()), ..Default::default() };
        assert_eq!(S3Store::new(base.clone()).unwrap().describe(), "s3://b@http://127.0.0.1:9");
        assert!(S3Store::new(S3Config { path_style: false, ..base.clone() }).is_err());
        assert!(S3Store::new(S3Config { bucket: String::new(), ..base.clone() }).is_err());
        assert!(S3Store::new(S3Config { endpoint: Some("127.0.0.1:9".into()), ..base }).is_err());
        assert!(!format!("{:?}", S3Config { secret_key: "hush".into(), ..Default::default() }).contains("hush"));
    }
}
