//! Configuration: `cluster.toml` (optional), overridden by `PARLEY_*` environment variables,
//! falling back to embedded defaults that need no external server.
//!
//! Resolution order for every setting: environment variable, then the node's own `[[nodes]]`
//! entry (for addresses), then the `[cluster]` section, then the default. The result is a
//! [`Settings`] value; nothing else in the program reads the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use parley_core::notice::WebhookKind;
use serde::Deserialize;

/// The file read when `--config` / `PARLEY_CONFIG` are not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "cluster.toml";
/// Where a standalone node listens by default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Where the embedded database and generated secret live by default.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{name} = `{value}` is not a valid socket address (host:port)")]
    BadAddr { name: &'static str, value: String },
    #[error("{name} = `{value}` is not a whole number")]
    BadNumber { name: &'static str, value: String },
    #[error("node `{0}` is not listed in [[nodes]] of the configuration")]
    UnknownNode(String),
    #[error("the token secret must be at least 16 bytes (got {0})")]
    WeakSecret(usize),
    #[error("cluster TLS needs ca, cert and key ([cluster.tls] or PARLEY_CLUSTER_TLS_*); missing: {0}")]
    IncompleteTls(&'static str),
    #[error("invalid media setting: {0}")]
    BadMedia(String),
    #[error("invalid recording setting: {0}")]
    BadRecording(String),
    #[error("invalid telemetry setting: {0}")]
    BadTelemetry(String),
    #[error("invalid notify setting: {0}")]
    BadNotify(String),
    #[error("cannot create or read the secret file {path}: {source}")]
    SecretFile { path: PathBuf, source: std::io::Error },
}

/// The `[cluster]` section: deployment-wide settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// A name for the deployment, shown in logs.
    pub name: Option<String>,
    /// Shared secret authenticating cluster peers to each other (used by the cluster layer).
    pub cookie: Option<String>,
    /// HS256 secret signing API/WebSocket tokens. At least 16 bytes.
    pub secret: Option<String>,
    /// `postgres://…` or `sqlite://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// `redis://…`; default: none (in-process presence, single node).
    pub redis_url: Option<String>,
    /// Directory for the embedded database, the generated secret and PID files.
    pub data_dir: Option<String>,
    /// Listen address of a standalone node (nodes listed in `[[nodes]]` use their own).
    pub http_addr: Option<String>,
    /// Base URL put in join links; default `http://<http_addr>`.
    pub public_url: Option<String>,
    /// A participant's presence lives this long after their last heartbeat (default 60 000).
    pub heartbeat_ttl_ms: Option<u64>,
    /// How often a meeting checks for expired presence (default 5 000).
    pub sweep_interval_ms: Option<u64>,
    /// How long an empty meeting waits before it ends (default 60 000).
    pub empty_grace_ms: Option<u64>,
    /// Enables `POST /api/admin/meetings/{id}/crash` (failure drills). Default false.
    pub fault_injection: Option<bool>,
    /// Requests a WebSocket connection may burst (default 60).
    pub rate_burst: Option<u32>,
    /// Requests per second a WebSocket connection may sustain (default 30).
    pub rate_per_sec: Option<u32>,
    /// Life of a node's Redis lease; refreshed every third of it. A dead node's meetings are
    /// taken over once its lease lapses.
    pub lease_ttl_ms: Option<u64>,
    /// Mutual TLS on the cluster port (`[cluster.tls]`); absent = plain TCP + cookie.
    pub tls: Option<TlsSection>,
}

/// `[cluster.tls]`: PEM files; `{node}` in a path is replaced by the node's name, so one file
/// serves every node (`cert = "certs/{node}.pem"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The CA that signs every member's certificate; peers must present one it signed.
    pub ca: Option<String>,
    /// This node's certificate chain; its subject alternative names must include its `host`.
    pub cert: Option<String>,
    /// This node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
}

/// Resolved cluster TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `[[nodes]]` entry: a member of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Unique node name, e.g. `node-a`.
    pub name: String,
    /// Interface the node binds and peers dial.
    pub host: String,
    /// HTTP/WebSocket port.
    pub http_port: u16,
    /// ractor_cluster port (used by the cluster layer).
    pub cluster_port: Option<u16>,
    /// This member's one WebRTC media UDP port, when `[media] port` (every node's) is not set.
    pub media_port: Option<u16>,
    /// Most live meetings this node takes.
    pub max_meetings: Option<u32>,
    /// Most connected participants this node takes.
    pub max_participants: Option<u32>,
}

/// The whole `cluster.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    #[serde(default)]
    pub media: MediaSection,
    #[serde(default)]
    pub recording: RecordingSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub notify: NotifySection,
}

/// The `[notify]` section: delivering the notification outbox (invitations, updates,
/// cancellations, recording notices).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// Deliver the outbox from this node at all (default true; every node may: they share it).
    pub enabled: Option<bool>,
    /// Concurrent deliveries on this node (default 2).
    pub workers: Option<usize>,
    /// How often an idle worker looks for due messages, in milliseconds (default 1000).
    pub poll_ms: Option<u64>,
    /// The first retry's wait after a failed delivery, in milliseconds (default 30000; each
    /// next one waits 4× longer, at most 10 minutes).
    pub retry_base_ms: Option<u64>,
    /// How often this node looks for reminders that are due, in milliseconds (default 30000).
    /// Every node looks; each reminder is queued once.
    pub reminder_scan_ms: Option<u64>,
    /// Email through an SMTP server (`[notify.smtp]`); absent: each message is written as an
    /// `.eml` file into `<data_dir>/outbox/`.
    pub smtp: Option<SmtpSection>,
    /// Endpoints that receive signed webhook events (`[[notify.webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
}

/// One `[[notify.webhooks]]` entry.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// `https://…` (or `http://…`) receiving the POSTs.
    pub url: String,
    /// The HMAC-SHA256 key the requests are signed with (at least 16 characters).
    pub secret: String,
    /// Which events, by name (`meeting.started`, `meeting.ended`, `participant.joined`,
    /// `participant.left`, `recording.ready`); absent: all of them.
    pub events: Option<Vec<String>>,
}

impl std::fmt::Debug for WebhookSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSection").field("url", &self.url).field("events", &self.events).finish_non_exhaustive()
    }
}

/// A resolved webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
    pub events: Vec<WebhookKind>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).field("events", &self.events).finish_non_exhaustive()
    }
}

/// The shortest webhook secret accepted.
pub const MIN_WEBHOOK_SECRET: usize = 16;

fn resolve_webhook(w: &WebhookSection, seen: &mut Vec<String>) -> Result<Webhook, String> {
    let url = w.url.trim();
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) || url.chars().any(char::is_whitespace) {
        return Err(format!("webhook url `{url}` must be http:// or https:// with a host"));
    }
    if seen.iter().any(|u| u == url) {
        return Err(format!("webhook url `{url}` is listed twice"));
    }
    seen.push(url.to_owned());
    if w.secret.chars().count() < MIN_WEBHOOK_SECRET {
        return Err(format!("the secret of webhook `{url}` must have at least {MIN_WEBHOOK_SECRET} characters"));
    }
    let events = match &w.events {
        None => WebhookKind::ALL.to_vec(),
        Some(list) if list.is_empty() => return Err(format!("webhook `{url}` lists no events")),
        Some(list) => list.iter().map(|e| e.parse::<WebhookKind>()).collect::<Result<Vec<_>, _>>()?,
    };
    Ok(Webhook { url: url.to_owned(), secret: w.secret.clone(), events })
}

/// `[notify.smtp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`, or `smtp://host:25` (plain).
    pub url: Option<String>,
    /// The sender, e.g. `Parley <meetings@example.com>`.
    pub from: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Where email goes.
#[derive(Clone, PartialEq, Eq)]
pub enum MailSetting {
    /// Through an SMTP server.
    Smtp { url: String, username: Option<String>, password: Option<String> },
    /// As `.eml` files into this directory.
    EmlDir(PathBuf),
}

impl std::fmt::Debug for MailSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailSetting::Smtp { url, username, .. } => f
                .debug_struct("Smtp")
                .field("url", &redact_url(url))
                .field("username", username)
                .finish_non_exhaustive(),
            MailSetting::EmlDir(d) => f.debug_tuple("EmlDir").field(d).finish(),
        }
    }
}

/// Resolved `[notify]`.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub enabled: bool,
    pub workers: usize,
    pub poll: std::time::Duration,
    pub retry_base: std::time::Duration,
    pub mail: MailSetting,
    pub from: String,
    pub reminder_scan: std::time::Duration,
    pub webhooks: Vec<Webhook>,
}

fn resolve_notify(file: &NotifySection, data_dir: &Path, env: &dyn Env) -> Result<NotifySettings, ConfigError> {
    let bad = |m: String| ConfigError::BadNotify(m);
    let enabled =
        env_or(env, "PARLEY_NOTIFY_ENABLED", "true or false", file.enabled).map_err(|e| bad(e.to_string()))?;
    let workers =
        env_or(env, "PARLEY_NOTIFY_WORKERS", "a whole number", file.workers).map_err(|e| bad(e.to_string()))?;
    let poll_ms =
        env_or(env, "PARLEY_NOTIFY_POLL_MS", "a whole number", file.poll_ms).map_err(|e| bad(e.to_string()))?;
    let retry_ms = env_or(env, "PARLEY_NOTIFY_RETRY_BASE_MS", "a whole number", file.retry_base_ms)
        .map_err(|e| bad(e.to_string()))?;
    let scan_ms = env_or(env, "PARLEY_NOTIFY_REMINDER_SCAN_MS", "a whole number", file.reminder_scan_ms)
        .map_err(|e| bad(e.to_string()))?;
    let mut seen = Vec::new();
    let webhooks =
        file.webhooks.iter().map(|w| resolve_webhook(w, &mut seen)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let smtp = file.smtp.clone().unwrap_or_default();
    let mail = match env.var("PARLEY_SMTP_URL").or(smtp.url) {
        Some(url) => MailSetting::Smtp {
            url,
            username: env.var("PARLEY_SMTP_USERNAME").or(smtp.username),
            password: env.var("PARLEY_SMTP_PASSWORD").or(smtp.password),
        },
        None => MailSetting::EmlDir(data_dir.join("outbox")),
    };
    Ok(NotifySettings {
        enabled: enabled.unwrap_or(true),
        workers: workers.unwrap_or(2),
        poll: std::time::Duration::from_millis(poll_ms.unwrap_or(1000).max(10)),
        retry_base: std::time::Duration::from_millis(retry_ms.unwrap_or(30_000).max(10)),
        mail,
        from: env.var("PARLEY_SMTP_FROM").or(smtp.from).unwrap_or_else(|| "Parley <parley@localhost>".into()),
        reminder_scan: std::time::Duration::from_millis(scan_ms.unwrap_or(30_000).max(50)),
        webhooks,
    })
}

/// The `[telemetry]` section: what the node tells operators.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// A token Prometheus presents (`Authorization: Bearer <token>`) to read `GET /metrics`
    /// without an operator token. Absent: only operator tokens may read it.
    pub scrape_token: Option<String>,
    /// Where traces go: an OpenTelemetry collector's OTLP/HTTP base URL (`http://host:4318`;
    /// spans are posted to `<url>/v1/traces` as protobuf). Absent: no traces.
    pub otlp_endpoint: Option<String>,
    /// Log lines as `text` (default) or `json` (one object per line).
    pub log_format: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Resolved `[telemetry]`.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// `[telemetry] scrape_token`, or `PARLEY_METRICS_TOKEN` (which wins).
    pub scrape_token: Option<String>,
    /// The OTLP/HTTP traces URL (`<otlp_endpoint>/v1/traces`), from `PARLEY_OTLP_ENDPOINT`
    /// over `[telemetry] otlp_endpoint`; `None`: traces off.
    pub otlp_traces_url: Option<String>,
    /// `PARLEY_LOG_FORMAT` over `[telemetry] log_format`.
    pub log_format: LogFormat,
}

/// The `[recording]` section: where recordings go and how they are processed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// Recording on this node at all (default true).
    pub enabled: Option<bool>,
    /// Concurrent processing jobs on this node (default 1; 0: this node processes none).
    pub workers: Option<usize>,
    /// `speaker` (default) or `gallery`: the composed MP4's layout.
    pub layout: Option<String>,
    /// Also keep each track as one WebM next to the MP4 (default true).
    pub keep_tracks: Option<bool>,
    /// `auto` (default: faster-whisper when its Python has it), `faster-whisper` or `off`.
    pub transcript: Option<String>,
    /// The Python interpreter with faster-whisper (default `python3`).
    pub whisper_python: Option<String>,
    /// A faster-whisper model directory or name (default: the bundled tiny.en).
    pub whisper_model: Option<String>,
    /// Seconds a claimed job's lease lasts without renewal (default 30).
    pub lease_secs: Option<u64>,
    /// S3 object storage (`[recording.s3]`); absent: the local filesystem under `data_dir`.
    pub s3: Option<S3Section>,
}

/// `[recording.s3]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// e.g. `http://127.0.0.1:8333`; absent: AWS's endpoint for `region`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

/// Resolved recording settings.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    pub enabled: bool,
    pub workers: usize,
    pub layout: parley_core::model::RecordingLayout,
    pub keep_tracks: bool,
    /// `None`: no transcript; `Some(python)`: faster-whisper through it (`auto` checks it works).
    pub transcript: TranscriptSetting,
    pub whisper_model: Option<String>,
    pub lease: std::time::Duration,
    pub s3: Option<S3Settings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptSetting {
    Off,
    /// Use it when `python` has faster-whisper.
    Auto {
        python: String,
    },
    FasterWhisper {
        python: String,
    },
}

/// S3 settings (the secret is not printed by `Debug`).
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn resolve_recording(file: &RecordingSection, env: &dyn Env) -> Result<RecordingSettings, ConfigError> {
    let bad = |m: String| ConfigError::BadRecording(m);
    let enabled = env_or(env, "PARLEY_RECORDING_ENABLED", "true or false", file.enabled)
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or(true);
    let workers = env_or(env, "PARLEY_RECORDING_WORKERS", "a whole number", file.workers)
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or(1);
    let layout_raw =
        env.var("PARLEY_RECORDING_LAYOUT").or_else(|| file.layout.clone()).unwrap_or_else(|| "speaker".into());
    let layout = layout_raw.parse().map_err(|_| bad(format!("layout = `{layout_raw}`: speaker or gallery")))?;
    let keep_tracks = file.keep_tracks.unwrap_or(true);
    let python =
        env.var("PARLEY_WHISPER_PYTHON").or_else(|| file.whisper_python.clone()).unwrap_or_else(|| "python3".into());
    let transcript = match env.var("PARLEY_RECORDING_TRANSCRIPT").or_else(|| file.transcript.clone()).as_deref() {
        None | Some("auto") => TranscriptSetting::Auto { python },
        Some("faster-whisper") => TranscriptSetting::FasterWhisper { python },
        Some("off") => TranscriptSetting::Off,
        Some(other) => return Err(bad(format!("transcript = `{other}`: auto, faster-whisper or off"))),
    };
    let lease_secs = env_or(env, "PARLEY_RECORDING_LEASE_SECS", "a whole number", file.lease_secs)
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or(30)
        .max(2);
    let f = file.s3.clone().unwrap_or_default();
    let bucket = env.var("PARLEY_S3_BUCKET").or(f.bucket);
    let s3 = match bucket {
        None => None,
        Some(bucket) => Some(S3Settings {
            endpoint: env.var("PARLEY_S3_ENDPOINT").or(f.endpoint),
            region: env.var("PARLEY_S3_REGION").or(f.region).unwrap_or_else(|| "us-east-1".into()),
            bucket,
            access_key: env
                .var("PARLEY_S3_ACCESS_KEY")
                .or(f.access_key)
                .ok_or_else(|| bad("[recording.s3] needs access_key (or PARLEY_S3_ACCESS_KEY)".into()))?,
            secret_key: env
                .var("PARLEY_S3_SECRET_KEY")
                .or(f.secret_key)
                .ok_or_else(|| bad("[recording.s3] needs secret_key (or PARLEY_S3_SECRET_KEY)".into()))?,
        }),
    };
    Ok(RecordingSettings {
        enabled,
        workers,
        layout,
        keep_tracks,
        transcript,
        whisper_model: env.var("PARLEY_WHISPER_MODEL").or_else(|| file.whisper_model.clone()),
        lease: std::time::Duration::from_secs(lease_secs),
        s3,
    })
}

/// The `[media]` section: WebRTC networking of every node's media router.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// Address the media UDP sockets bind to (default: the node's host, else 127.0.0.1). Must
    /// be a concrete address: `0.0.0.0` would advertise every interface but loopback.
    pub bind_ip: Option<String>,
    /// Public address behind a 1:1 NAT (a cloud VM), advertised in ICE candidates instead.
    pub public_ip: Option<String>,
    /// The one UDP port every media peer of the node shares (0, the default: one the system
    /// picks).
    pub port: Option<u16>,
    /// Threads driving the shared port (default: one per core).
    pub threads: Option<usize>,
    /// Meeting size from which its connections are spread over those threads (default 24).
    pub spread_at: Option<usize>,
    /// Instead of one shared port: an inclusive UDP port range, one port per media peer.
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    /// ICE-lite: the server only answers connectivity checks (fit for a public address).
    pub ice_lite: Option<bool>,
    /// STUN/TURN servers handed to clients (`[[media.ice_servers]] urls = [...]`).
    #[serde(default)]
    pub ice_servers: Vec<parley_media::peer::IceServer>,
    /// Seconds a media peer may go silent (no ICE consent) before it is closed and its client
    /// told `media_closed` (default 30).
    pub dead_peer_secs: Option<f64>,
}

impl ConfigFile {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }
}

/// Fully resolved settings of one process.
#[derive(Clone)]
pub struct Settings {
    /// The deployment's name (`[cluster] name`), for logs.
    pub cluster_name: String,
    /// Shared cluster cookie, when configured (used by the cluster layer).
    pub cookie: Option<String>,
    /// This node's `[[nodes]]` entry, when it is a listed member.
    pub member: Option<NodeEntry>,
    /// Every member of the cluster (`[[nodes]]`).
    pub nodes: Vec<NodeEntry>,
    pub lease_ttl: std::time::Duration,
    /// Mutual TLS on the cluster port, when configured.
    pub cluster_tls: Option<ClusterTls>,
    /// This node's name (`standalone` when not a listed cluster member).
    pub node_name: String,
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub data_dir: PathBuf,
    pub public_url: String,
    /// Token signing secret.
    pub secret: Vec<u8>,
    /// Presence TTL after the last heartbeat.
    pub heartbeat_ttl: std::time::Duration,
    /// Presence expiry check interval.
    pub sweep_interval: std::time::Duration,
    /// Grace period of an empty meeting.
    pub empty_grace: std::time::Duration,
    /// Whether the fault-injection admin endpoint is enabled.
    pub fault_injection: bool,
    /// Per-connection request burst.
    pub rate_burst: u32,
    /// Per-connection sustained requests per second.
    pub rate_per_sec: u32,
    /// Where the secret came from, for the startup log (never the secret itself).
    pub secret_source: &'static str,
    /// WebRTC settings of the media router.
    pub media: parley_media::peer::PeerConfig,
    /// Recording storage and processing.
    pub recording: RecordingSettings,
    pub telemetry: TelemetrySettings,
    /// Delivering the notification outbox.
    pub notify: NotifySettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("cluster_name", &self.cluster_name)
            .field("cookie", &self.cookie.as_ref().map(|_| "***"))
            .field("member", &self.member)
            .field("node_name", &self.node_name)
            .field("http_addr", &self.http_addr)
            .field("database", &redact_url(&self.database_url))
            .field("redis", &self.redis_url.as_deref().map(redact_url))
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .field("secret_source", &self.secret_source)
            .finish()
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The environment's `name` parsed (it wins), else the file's value; `what` the value must be.
fn env_or<T: std::str::FromStr>(
    env: &dyn Env,
    name: &str,
    what: &str,
    file: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match env.var(name) {
        Some(raw) => {
            raw.trim().parse().map(Some).map_err(|_| ConfigError::BadMedia(format!("{name} = `{raw}` is not {what}")))
        }
        None => Ok(file),
    }
}

/// `[media]` with `PARLEY_MEDIA_BIND_IP`, `PARLEY_MEDIA_PUBLIC_IP`, `PARLEY_MEDIA_PORT` (one shared
/// port), `PARLEY_MEDIA_THREADS`, `PARLEY_MEDIA_SPREAD_AT`, `PARLEY_MEDIA_PORTS` (`40000-40999`),
/// `PARLEY_ICE_SERVERS` (comma-separated URLs) and `PARLEY_MEDIA_DEAD_PEER_SECS` over it, and
/// the environment-only fault injection `PARLEY_MEDIA_DROP_FORWARDED_EVERY`.
fn resolve_media(
    m: &MediaSection,
    member: Option<&NodeEntry>,
    http_addr: SocketAddr,
    env: &dyn Env,
) -> Result<parley_media::peer::PeerConfig, ConfigError> {
    use std::net::IpAddr;
    let ip = |name: &str, raw: String| -> Result<IpAddr, ConfigError> {
        raw.parse().map_err(|_| ConfigError::BadMedia(format!("{name} = `{raw}` is not an IP address")))
    };
    let bind_ip = match env.var("PARLEY_MEDIA_BIND_IP").or_else(|| m.bind_ip.clone()) {
        Some(raw) => ip("bind_ip", raw)?,
        None => member
            .and_then(|e| e.host.parse::<IpAddr>().ok())
            .or(Some(http_addr.ip()))
            .filter(|a| !a.is_unspecified())
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    if bind_ip.is_unspecified() {
        return Err(ConfigError::BadMedia(format!("bind_ip = {bind_ip}: give a concrete address")));
    }
    let public_ip =
        env.var("PARLEY_MEDIA_PUBLIC_IP").or_else(|| m.public_ip.clone()).map(|r| ip("public_ip", r)).transpose()?;
    let port_range = match env.var("PARLEY_MEDIA_PORTS") {
        Some(raw) => {
            let parsed = raw.split_once('-').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            Some(parsed.ok_or_else(|| ConfigError::BadMedia(format!("PARLEY_MEDIA_PORTS = `{raw}`: want FROM-TO")))?)
        }
        None => match (m.port_min, m.port_max) {
            (Some(a), Some(b)) => Some((a, b)),
            (None, None) => None,
            _ => return Err(ConfigError::BadMedia("give both port_min and port_max, or neither".to_owned())),
        },
    };
    if let Some((a, b)) = port_range
        && (a == 0 || a > b)
    {
        return Err(ConfigError::BadMedia(format!("port range {a}-{b} is empty")));
    }
    let shared_port = env_or(env, "PARLEY_MEDIA_PORT", "a port", m.port)?;
    let shared_port = match (shared_port, port_range) {
        (Some(p), Some((a, b))) => {
            return Err(ConfigError::BadMedia(format!(
                "port = {p} (one shared port) and a port range {a}-{b} (a port per peer): choose one"
            )));
        }
        (Some(p), None) => Some(p),
        (None, Some(_)) => None,
        // The default: every peer on one port: the member's own `[[nodes]] media_port` (nodes
        // sharing a host need ports of their own), else one the system picks.
        (None, None) => Some(member.and_then(|e| e.media_port).unwrap_or(0)),
    };
    let socket_threads = env_or(env, "PARLEY_MEDIA_THREADS", "a number", m.threads)?;
    if let Some(n) = socket_threads
        && !(1..=parley_media::placement::MAX_THREADS).contains(&n)
    {
        return Err(ConfigError::BadMedia(format!(
            "media threads = {n}: want 1 to {}",
            parley_media::placement::MAX_THREADS
        )));
    }
    let spread_at = env_or(env, "PARLEY_MEDIA_SPREAD_AT", "a number", m.spread_at)?;
    if spread_at == Some(0) {
        return Err(ConfigError::BadMedia("spread_at = 0: want a size from 1".to_owned()));
    }
    let ice_servers = match env.var("PARLEY_ICE_SERVERS") {
        Some(raw) => raw
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| parley_media::peer::IceServer { urls: vec![u.to_owned()], username: None, credential: None })
            .collect(),
        None => m.ice_servers.clone(),
    };
    let dead_peer_timeout = env_or(env, "PARLEY_MEDIA_DEAD_PEER_SECS", "a number", m.dead_peer_secs)?
        .unwrap_or(parley_media::peer::DEFAULT_DEAD_PEER_TIMEOUT.as_secs_f64());
    if !(1.0..=3600.0).contains(&dead_peer_timeout) {
        return Err(ConfigError::BadMedia(format!("dead_peer_secs = {dead_peer_timeout}: want 1 to 3600")));
    }
    Ok(parley_media::peer::PeerConfig {
        bind_ip,
        port_range,
        shared_port,
        socket_threads,
        spread_at,
        shared_socket: None,
        public_ip,
        ice_servers,
        ice_lite: m.ice_lite.unwrap_or(false),
        rtp_queue_packets: parley_media::peer::DEFAULT_RTP_QUEUE_PACKETS,
        dead_peer_timeout: std::time::Duration::from_secs_f64(dead_peer_timeout),
        drop_forwarded_every: env_or(env, "PARLEY_MEDIA_DROP_FORWARDED_EVERY", "a number", None)?.unwrap_or(0),
    })
}

/// Where to read the environment from: the process, or a map in tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| v.to_string())
    }
}

/// Finds and loads the configuration file: `explicit`, else `PARLEY_CONFIG`, else
/// `./cluster.toml` if present, else none (all defaults).
pub fn load_file(explicit: Option<&Path>, env: &dyn Env) -> Result<(Option<PathBuf>, ConfigFile), ConfigError> {
    let path = explicit.map(Path::to_path_buf).or_else(|| env.var("PARLEY_CONFIG").map(PathBuf::from));
    match path {
        Some(p) => Ok((Some(p.clone()), ConfigFile::load(&p)?)),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            Ok((Some(p.clone()), ConfigFile::load(&p)?))
        }
        None => Ok((None, ConfigFile::default())),
    }
}

impl Settings {
    /// Resolves settings for node `node` (from `--name` or `PARLEY_NODE`; `None` = standalone).
    pub fn resolve(file: &ConfigFile, node: Option<&str>, env: &dyn Env) -> Result<Settings, ConfigError> {
        let c = &file.cluster;
        let node_name = node.map(str::to_owned).or_else(|| env.var("PARLEY_NODE"));
        let entry = match &node_name {
            Some(n) => {
                Some(file.nodes.iter().find(|e| &e.name == n).ok_or_else(|| ConfigError::UnknownNode(n.clone()))?)
            }
            None => None,
        };
        let http_raw = env
            .var("PARLEY_HTTP_ADDR")
            .or_else(|| entry.map(|e| format!("{}:{}", e.host, e.http_port)))
            .or_else(|| c.http_addr.clone())
            .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
        let http_addr: SocketAddr =
            http_raw.parse().map_err(|_| ConfigError::BadAddr { name: "http_addr", value: http_raw.clone() })?;
        let data_dir = PathBuf::from(
            env.var("PARLEY_DATA_DIR").or_else(|| c.data_dir.clone()).unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()),
        );
        let database_url = env.var("PARLEY_DATABASE_URL").or_else(|| c.database_url.clone()).unwrap_or_else(|| {
            let file = match &node_name {
                Some(n) => format!("parley-{n}.db"),
                None => "parley.db".to_owned(),
            };
            format!("sqlite://{}", data_dir.join(file).display())
        });
        let redis_url = env.var("PARLEY_REDIS_URL").or_else(|| c.redis_url.clone());
        let public_url = env
            .var("PARLEY_PUBLIC_URL")
            .or_else(|| c.public_url.clone())
            .unwrap_or_else(|| format!("http://{http_addr}"))
            .trim_end_matches('/')
            .to_owned();
        let (secret, secret_source) = match (env.var("PARLEY_SECRET"), &c.secret) {
            (Some(s), _) => (s.into_bytes(), "PARLEY_SECRET"),
            (None, Some(s)) => (s.clone().into_bytes(), "configuration file"),
            (None, None) => (load_or_create_secret(&data_dir)?, "generated secret file in data_dir"),
        };
        if secret.len() < 16 {
            return Err(ConfigError::WeakSecret(secret.len()));
        }
        // A positive whole number: the env variable, else the file's value, else the default.
        let number = |name: &'static str, file: Option<u64>, default: u64| -> Result<u64, ConfigError> {
            let v = match env.var(name) {
                Some(raw) => raw.parse::<u64>().map_err(|_| ConfigError::BadNumber { name, value: raw })?,
                None => file.unwrap_or(default),
            };
            Ok(v.max(1))
        };
        let millis = |name, file, default| number(name, file, default).map(std::time::Duration::from_millis);
        let heartbeat_ttl = millis("PARLEY_HEARTBEAT_TTL_MS", c.heartbeat_ttl_ms, 60_000)?;
        let sweep_interval = millis("PARLEY_SWEEP_INTERVAL_MS", c.sweep_interval_ms, 5_000)?;
        let empty_grace = millis("PARLEY_EMPTY_GRACE_MS", c.empty_grace_ms, 60_000)?;
        let rate_burst = number("PARLEY_RATE_BURST", c.rate_burst.map(u64::from), 60)?.min(u64::from(u32::MAX)) as u32;
        let rate_per_sec =
            number("PARLEY_RATE_PER_SEC", c.rate_per_sec.map(u64::from), 30)?.min(u64::from(u32::MAX)) as u32;
        let lease_ttl = millis("PARLEY_LEASE_TTL_MS", c.lease_ttl_ms, 3_000)?;
        let cluster_tls = resolve_tls(c.tls.as_ref(), node_name.as_deref().unwrap_or("standalone"), env)?;
        let media = resolve_media(&file.media, entry, http_addr, env)?;
        let recording = resolve_recording(&file.recording, env)?;
        let notify = resolve_notify(&file.notify, &data_dir, env)?;
        Ok(Settings {
            cluster_name: c.name.clone().unwrap_or_else(|| "parley".to_owned()),
            cookie: env.var("PARLEY_COOKIE").or_else(|| c.cookie.clone()),
            member: entry.cloned(),
            nodes: file.nodes.clone(),
            lease_ttl,
            cluster_tls,
            node_name: node_name.unwrap_or_else(|| "standalone".to_owned()),
            http_addr,
            database_url,
            redis_url,
            data_dir,
            public_url,
            secret,
            secret_source,
            heartbeat_ttl,
            sweep_interval,
            empty_grace,
            rate_burst,
            rate_per_sec,
            fault_injection: env
                .var("PARLEY_FAULT_INJECTION")
                .map(|v| v == "1" || v == "true")
                .or(c.fault_injection)
                .unwrap_or(false),
            media,
            recording,
            notify,
            telemetry: resolve_telemetry(&file.telemetry, env)?,
        })
    }
}

/// `[telemetry]` with `PARLEY_METRICS_TOKEN` over its `scrape_token`.
fn resolve_telemetry(t: &TelemetrySection, env: &dyn Env) -> Result<TelemetrySettings, ConfigError> {
    let scrape_token = env.var("PARLEY_METRICS_TOKEN").or_else(|| t.scrape_token.clone()).filter(|s| !s.is_empty());
    if let Some(token) = &scrape_token
        && token.len() < 16
    {
        return Err(ConfigError::BadTelemetry(format!(
            "scrape_token is {} characters: want at least 16 (it guards node internals)",
            token.len()
        )));
    }
    let endpoint = env.var("PARLEY_OTLP_ENDPOINT").or_else(|| t.otlp_endpoint.clone()).filter(|s| !s.trim().is_empty());
    let otlp_traces_url = endpoint.map(|e| otlp_traces_url(e.trim())).transpose()?;
    let log_format = match env.var("PARLEY_LOG_FORMAT").or_else(|| t.log_format.clone()).as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::BadTelemetry(format!("log_format `{other}`: want `text` or `json`")));
        }
    };
    Ok(TelemetrySettings { scrape_token, otlp_traces_url, log_format })
}

/// The traces URL of an OTLP/HTTP collector at `endpoint` (its base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` means it): `<endpoint>/v1/traces`.
fn otlp_traces_url(endpoint: &str) -> Result<String, ConfigError> {
    let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !endpoint.contains(char::is_whitespace) => {
            Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        }
        _ => Err(ConfigError::BadTelemetry(format!(
            "otlp_endpoint `{endpoint}`: want the collector's http:// or https:// base URL, e.g. http://127.0.0.1:4318"
        ))),
    }
}

/// The cluster TLS files: each from `PARLEY_CLUSTER_TLS_{CA,CERT,KEY}`, else `[cluster.tls]`;
/// all three or none.
fn resolve_tls(file: Option<&TlsSection>, node: &str, env: &dyn Env) -> Result<Option<ClusterTls>, ConfigError> {
    let pick = |var: &str, f: Option<&String>| {
        env.var(var).or_else(|| f.cloned()).map(|p| PathBuf::from(p.replace("{node}", node)))
    };
    let ca = pick("PARLEY_CLUSTER_TLS_CA", file.and_then(|t| t.ca.as_ref()));
    let cert = pick("PARLEY_CLUSTER_TLS_CERT", file.and_then(|t| t.cert.as_ref()));
    let key = pick("PARLEY_CLUSTER_TLS_KEY", file.and_then(|t| t.key.as_ref()));
    match (ca, cert, key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some(ClusterTls { ca, cert, key })),
        (None, _, _) => Err(ConfigError::IncompleteTls("ca")),
        (_, None, _) => Err(ConfigError::IncompleteTls("cert")),
        (_, _, None) => Err(ConfigError::IncompleteTls("key")),
    }
}

/// With no secret configured, a random one is created once in `data_dir/secret` (mode 0600)
/// and reused, so `parley token` and `parley node` on one machine agree without setup.
fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    let path = data_dir.join("secret");
    let err = |source| ConfigError::SecretFile { path: path.clone(), source };
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    std::fs::write(&path, &secret).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ConfigFile {
        toml::from_str(
            r#"
            [cluster]
            name = "t"
            secret = "0123456789abcdef0123"
            database_url = "postgres://parley:pw@db/parley"
            [[nodes]]
            name = "node-a"
            host = "127.0.0.1"
            http_port = 8081
            "#,
        )
        .unwrap()
    }

    #[test]
    fn node_entry_gives_the_address_and_env_overrides_everything() {
        let env: HashMap<&str, &str> = HashMap::new();
        let s = Settings::resolve(&file(), Some("node-a"), &env).unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(s.database_url, "postgres://parley:pw@db/parley");
        assert_eq!(s.public_url, "http://127.0.0.1:8081");
        assert_eq!(s.secret_source, "configuration file");

        let env: HashMap<&str, &str> = HashMap::from([
            ("PARLEY_HTTP_ADDR", "127.0.0.1:9999"),
            ("PARLEY_DATABASE_URL", "sqlite://x.db"),
            ("PARLEY_SECRET", "a-much-longer-secret-from-env"),
            ("PARLEY_REDIS_URL", "redis://127.0.0.1:6379"),
        ]);
        let s = Settings::resolve(&file(), Some("node-a"), &env).unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:9999");
        assert_eq!(s.database_url, "sqlite://x.db");
        assert_eq!(s.secret, b"a-much-longer-secret-from-env");
        assert_eq!(s.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert!(!format!("{s:?}").contains("pw@"), "debug output redacts passwords");
    }

    #[test]
    fn the_scrape_token_comes_from_the_file_or_the_environment_and_must_not_be_guessable() {
        let none: HashMap<&str, &str> = HashMap::new();
        assert_eq!(Settings::resolve(&file(), None, &none).unwrap().telemetry.scrape_token, None);
        let mut f = file();
        f.telemetry.scrape_token = Some("prometheus-reads-this".to_owned());
        assert_eq!(
            Settings::resolve(&f, None, &none).unwrap().telemetry.scrape_token.as_deref(),
            Some("prometheus-reads-this")
        );
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_METRICS_TOKEN", "from-the-environment-wins")]);
        assert_eq!(
            Settings::resolve(&f, None, &env).unwrap().telemetry.scrape_token.as_deref(),
            Some("from-the-environment-wins")
        );
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_METRICS_TOKEN", "short")]);
        assert!(matches!(Settings::resolve(&f, None, &env), Err(ConfigError::BadTelemetry(_))));
    }

    #[test]
    fn traces_are_off_unless_an_otlp_endpoint_is_given_and_the_environment_wins() {
        let none: HashMap<&str, &str> = HashMap::new();
        let t = Settings::resolve(&file(), None, &none).unwrap().telemetry;
        assert_eq!((t.otlp_traces_url, t.log_format), (None, LogFormat::Text));
        let mut f = file();
        f.telemetry.otlp_endpoint = Some("http://collector:4318/".to_owned());
        f.telemetry.log_format = Some("json".to_owned());
        let t = Settings::resolve(&f, None, &none).unwrap().telemetry;
        assert_eq!(t.otlp_traces_url.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(t.log_format, LogFormat::Json);
        let env = HashMap::<&str, &str>::from([
            ("PARLEY_OTLP_ENDPOINT", "https://otel.example:4318"),
            ("PARLEY_LOG_FORMAT", "text"),
        ]);
        let t = Settings::resolve(&f, None, &env).unwrap().telemetry;
        assert_eq!(t.otlp_traces_url.as_deref(), Some("https://otel.example:4318/v1/traces"));
        assert_eq!(t.log_format, LogFormat::Text);
        for bad in ["collector:4318", "http://", "ftp://x", "http://a b"] {
            let env = HashMap::<&str, &str>::from([("PARLEY_OTLP_ENDPOINT", bad)]);
            assert!(matches!(Settings::resolve(&f, None, &env), Err(ConfigError::BadTelemetry(_))), "{bad}");
        }
        let env = HashMap::<&str, &str>::from([("PARLEY_LOG_FORMAT", "xml")]);
        assert!(matches!(Settings::resolve(&f, None, &env), Err(ConfigError::BadTelemetry(_))));
    }

    #[test]
    fn unknown_node_and_weak_secret_and_bad_addr_are_errors() {
        let env: HashMap<&str, &str> = HashMap::new();
        assert!(matches!(Settings::resolve(&file(), Some("nope"), &env), Err(ConfigError::UnknownNode(_))));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_SECRET", "short")]);
        assert!(matches!(Settings::resolve(&file(), None, &env), Err(ConfigError::WeakSecret(5))));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_HTTP_ADDR", "localhost")]);
        assert!(matches!(Settings::resolve(&file(), None, &env), Err(ConfigError::BadAddr { .. })));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_HEARTBEAT_TTL_MS", "soon")]);
        assert!(matches!(
            Settings::resolve(&file(), None, &env),
            Err(ConfigError::BadNumber { name: "PARLEY_HEARTBEAT_TTL_MS", .. })
        ));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_RATE_PER_SEC", "5"), ("PARLEY_EMPTY_GRACE_MS", "250")]);
        let s = Settings::resolve(&file(), None, &env).unwrap();
        assert_eq!((s.rate_per_sec, s.rate_burst, s.empty_grace.as_millis()), (5, 60, 250));
    }

    #[test]
    fn defaults_need_no_server_and_generate_a_stable_secret() {
        let dir = std::env::temp_dir().join(format!("parley-cfg-{}", std::process::id()));
        let d = dir.to_str().unwrap();
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_DATA_DIR", d)]);
        let s = Settings::resolve(&ConfigFile::default(), None, &env).unwrap();
        assert_eq!(s.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert!(s.database_url.starts_with("sqlite://") && s.database_url.ends_with("parley.db"));
        assert!(s.redis_url.is_none());
        assert_eq!(s.notify.mail, MailSetting::EmlDir(dir.join("outbox")), "no mail server: .eml files");
        let again = Settings::resolve(&ConfigFile::default(), None, &env).unwrap();
        assert_eq!(s.secret, again.secret, "the generated secret is reused");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn smtp_comes_from_the_file_or_the_environment_and_its_password_is_not_printed() {
        let file: ConfigFile = toml::from_str(
            r#"
            [cluster]
            secret = "0123456789abcdef0123"
            [notify]
            workers = 3
            retry_base_ms = 500
            [notify.smtp]
            url = "smtp://mail.example.com:587?tls=required"
            from = "Meetings <m@example.com>"
            username = "parley"
            password = "hunter22"
            "#,
        )
        .unwrap();
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_NOTIFY_POLL_MS", "250")]);
        let n = Settings::resolve(&file, None, &env).unwrap().notify;
        assert_eq!((n.workers, n.poll.as_millis(), n.retry_base.as_millis()), (3, 250, 500));
        assert_eq!(n.from, "Meetings <m@example.com>");
        let MailSetting::Smtp { url, username, password } = &n.mail else { panic!("{:?}", n.mail) };
        assert_eq!((url.as_str(), username.as_deref()), ("smtp://mail.example.com:587?tls=required", Some("parley")));
        assert_eq!(password.as_deref(), Some("hunter22"));
        assert!(!format!("{n:?}").contains("hunter22"));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_SMTP_URL", "smtp://127.0.0.1:2525")]);
        let n = Settings::resolve(&file, None, &env).unwrap().notify;
        assert!(matches!(&n.mail, MailSetting::Smtp { url, .. } if url == "smtp://127.0.0.1:2525"));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_NOTIFY_WORKERS", "many")]);
        assert!(matches!(Settings::resolve(&file, None, &env), Err(ConfigError::BadNotify(_))));
    }

    fn webhooks_of(toml_text: &str) -> Result<Vec<Webhook>, ConfigError> {
        let text = format!("[cluster]\nsecret = \"0123456789abcdef0123\"\n{toml_text}");
        let file: ConfigFile = toml::from_str(&text).unwrap();
        Settings::resolve(&file, None, &HashMap::<&str, &str>::new()).map(|s| s.notify.webhooks)
    }

    #[test]
    fn webhooks_list_their_events_or_get_all_and_their_secrets_are_not_printed() {
        let hooks = webhooks_of(
            r#"
            [[notify.webhooks]]
            url = "https://hooks.example.com/parley"
            secret = "a-long-enough-secret"
            events = ["participant.joined", "recording.ready"]
            [[notify.webhooks]]
            url = "http://127.0.0.1:9000/in"
            secret = "another-long-secret"
            "#,
        )
        .unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].events, vec![WebhookKind::ParticipantJoined, WebhookKind::RecordingReady]);
        assert_eq!(hooks[1].events, WebhookKind::ALL.to_vec());
        assert!(!format!("{hooks:?}").contains("a-long-enough-secret"));
        assert_eq!(webhooks_of("").unwrap(), Vec::new());
        for bad in [
            "url = \"ftp://x/y\"\nsecret = \"a-long-enough-secret\"",
            "url = \"https://\"\nsecret = \"a-long-enough-secret\"",
            "url = \"https://x/y\"\nsecret = \"short\"",
            "url = \"https://x/y\"\nsecret = \"a-long-enough-secret\"\nevents = [\"meeting.exploded\"]",
            "url = \"https://x/y\"\nsecret = \"a-long-enough-secret\"\nevents = []",
        ] {
            let r = webhooks_of(&format!("[[notify.webhooks]]\n{bad}"));
            assert!(matches!(r, Err(ConfigError::BadNotify(_))), "{bad}: {r:?}");
        }
        let twice = "[[notify.webhooks]]\nurl = \"https://x/y\"\nsecret = \"a-long-enough-secret\"\n";
        let r = webhooks_of(&format!("{twice}{twice}"));
        assert!(matches!(&r, Err(ConfigError::BadNotify(m)) if m.contains("twice")), "{r:?}");
    }

    #[test]
    fn cluster_tls_needs_all_three_files_and_names_each_node() {
        let mut f = file();
        f.cluster.tls = Some(TlsSection {
            ca: Some("certs/ca.pem".into()),
            cert: Some("certs/{node}.pem".into()),
            key: Some("certs/{node}.key".into()),
        });
        let env: HashMap<&str, &str> = HashMap::new();
        let tls = Settings::resolve(&f, Some("node-a"), &env).unwrap().cluster_tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("certs/node-a.pem"));
        assert_eq!(tls.key, PathBuf::from("certs/node-a.key"));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_CLUSTER_TLS_KEY", "/secure/{node}.key")]);
        let tls = Settings::resolve(&f, Some("node-a"), &env).unwrap().cluster_tls.unwrap();
        assert_eq!(tls.key, PathBuf::from("/secure/node-a.key"), "env overrides the file");
        f.cluster.tls.as_mut().unwrap().ca = None;
        let env: HashMap<&str, &str> = HashMap::new();
        assert!(matches!(Settings::resolve(&f, Some("node-a"), &env), Err(ConfigError::IncompleteTls("ca"))));
        assert!(Settings::resolve(&file(), Some("node-a"), &env).unwrap().cluster_tls.is_none());
    }

    #[test]
    fn media_network_from_file_and_env() {
        let env: HashMap<&str, &str> = HashMap::new();
        let s = Settings::resolve(&file(), Some("node-a"), &env).unwrap();
        assert_eq!(s.media.bind_ip.to_string(), "127.0.0.1", "the node's host by default");
        assert_eq!(s.media.port_range, None);
        assert_eq!(s.media.shared_port, Some(0), "one shared port by default, the system's pick");
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_PORT", "10080")]);
        assert_eq!(Settings::resolve(&file(), Some("node-a"), &env).unwrap().media.shared_port, Some(10080));
        let mut f = file();
        f.nodes[0].media_port = Some(10081);
        let member = Settings::resolve(&f, Some("node-a"), &HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(member.media.shared_port, Some(10081), "a member's own media_port is its shared port");
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_PORTS", "40000-40010")]);
        let ranged = Settings::resolve(&f, Some("node-a"), &env).unwrap();
        assert_eq!((ranged.media.shared_port, ranged.media.port_range), (None, Some((40000, 40010))));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_PORT", "x")]);
        assert!(matches!(Settings::resolve(&file(), Some("node-a"), &env), Err(ConfigError::BadMedia(_))));
        assert_eq!(s.media.socket_threads, None, "one driver thread per core by default");
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_THREADS", "3")]);
        assert_eq!(Settings::resolve(&file(), Some("node-a"), &env).unwrap().media.socket_threads, Some(3));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_SPREAD_AT", "2")]);
        assert_eq!(Settings::resolve(&file(), Some("node-a"), &env).unwrap().media.spread_at, Some(2));
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_SPREAD_AT", "0")]);
        assert!(matches!(Settings::resolve(&file(), Some("node-a"), &env), Err(ConfigError::BadMedia(_))));
        for bad in ["0", "65", "two"] {
            let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_THREADS", bad)]);
            let refused = Settings::resolve(&file(), Some("node-a"), &env);
            assert!(
                matches!(&refused, Err(ConfigError::BadMedia(m)) if m.contains("THREADS") || m.contains("threads"))
            );
        }
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_PORT", "10080"), ("PARLEY_MEDIA_PORTS", "1-2")]);
        let both = Settings::resolve(&file(), Some("node-a"), &env);
        assert!(
            matches!(&both, Err(ConfigError::BadMedia(m)) if m.contains("choose one")),
            "a shared port and a range at once is refused: {:?}",
            both.err()
        );
        let env: HashMap<&str, &str> = HashMap::new();
        let with_media: ConfigFile = toml::from_str(
            r#"
            [cluster]
            secret = "0123456789abcdef0123"
            [media]
            bind_ip = "10.0.0.5"
            public_ip = "203.0.113.7"
            port_min = 40000
            port_max = 40099
            [[media.ice_servers]]
            urls = ["stun:stun.example.org:3478"]
            "#,
        )
        .unwrap();
        let s = Settings::resolve(&with_media, None, &env).unwrap();
        assert_eq!(s.media.bind_ip.to_string(), "10.0.0.5");
        assert_eq!(s.media.public_ip.map(|i| i.to_string()).as_deref(), Some("203.0.113.7"));
        assert_eq!(s.media.port_range, Some((40000, 40099)));
        assert_eq!(s.media.shared_port, None, "a range means a port per peer");
        assert_eq!(s.media.ice_servers[0].urls, vec!["stun:stun.example.org:3478".to_owned()]);
        let env: HashMap<&str, &str> =
            HashMap::from([("PARLEY_MEDIA_PORTS", "50000-50010"), ("PARLEY_ICE_SERVERS", "stun:a:1, turn:b:2")]);
        let s = Settings::resolve(&with_media, None, &env).unwrap();
        assert_eq!(s.media.port_range, Some((50000, 50010)));
        assert_eq!(s.media.ice_servers.len(), 2);
        assert_eq!(s.media.dead_peer_timeout, std::time::Duration::from_secs(30), "webrtc-rs's default");
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_DEAD_PEER_SECS", "2.5")]);
        let s = Settings::resolve(&with_media, None, &env).unwrap();
        assert_eq!(s.media.dead_peer_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(s.media.drop_forwarded_every, 0, "no fault injected unless asked");
        let env: HashMap<&str, &str> = HashMap::from([("PARLEY_MEDIA_DROP_FORWARDED_EVERY", "15")]);
        assert_eq!(Settings::resolve(&with_media, None, &env).unwrap().media.drop_forwarded_every, 15);
        for bad in [
            ("PARLEY_MEDIA_DROP_FORWARDED_EVERY", "some"),
            ("PARLEY_MEDIA_PORTS", "50010-50000"),
            ("PARLEY_MEDIA_PORTS", "lots"),
            ("PARLEY_MEDIA_BIND_IP", "0.0.0.0"),
            ("PARLEY_MEDIA_DEAD_PEER_SECS", "soon"),
            ("PARLEY_MEDIA_DEAD_PEER_SECS", "0"),
        ] {
            let env: HashMap<&str, &str> = HashMap::from([bad]);
            assert!(matches!(Settings::resolve(&file(), None, &env), Err(ConfigError::BadMedia(_))), "{bad:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<ConfigFile>("[cluster]\ndatabse_url = \"x\"").is_err());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/d"), "postgres://u:***@h:5432/d");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    /// README's configuration table names every key `cluster.toml` accepts, and only those.
    /// The accepted keys are not listed here: they are read from the structs themselves, by
    /// deserializing a `ConfigFile` from a deserializer that records the field names serde's
    /// derive asks for at every path (`cluster`, `cluster.tls`, `nodes`, `media`, …), so a field
    /// added to any section fails this test until README lists it.
    #[test]
    fn readme_configuration_table_lists_every_key() {
        use std::cell::RefCell;
        use std::collections::{BTreeMap, BTreeSet};

        use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

        type E = de::value::Error;
        /// Path of a (sub)table ("" for the file itself) → the field names its struct accepts.
        type Found = RefCell<BTreeMap<String, Vec<&'static str>>>;

        /// Answers every value serde asks for with a placeholder of the requested type, and
        /// records the fields of every struct on the way.
        struct Walk<'a> {
            path: String,
            found: &'a Found,
        }
        struct Fields<'a> {
            path: String,
            fields: std::slice::Iter<'static, &'static str>,
            current: Option<&'static str>,
            found: &'a Found,
        }
        struct One<'a>(Option<Walk<'a>>);

        impl<'de> Deserializer<'de> for Walk<'_> {
            type Error = E;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, E> {
                Err(de::Error::custom(format!("`{}`: a type this test cannot walk yet; teach it", self.path)))
            }
            fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_bool(false)
            }
            fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_u8(0)
            }
            fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_u16(0)
            }
            fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_u32(0)
            }
            fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_u64(0)
            }
            fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_i64(0)
            }
            fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_f64(1.0)
            }
            fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_str("x")
            }
            fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_str("x")
            }
            fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_some(self)
            }
            fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
                v.visit_seq(One(Some(self)))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                v: V,
            ) -> Result<V::Value, E> {
                self.found.borrow_mut().insert(self.path.clone(), fields.to_vec());
                v.visit_map(Fields { path: self.path, fields: fields.iter(), current: None, found: self.found })
            }
            serde::forward_to_deserialize_any! {
                i8 i16 i32 i128 u128 f32 char bytes byte_buf unit unit_struct newtype_struct tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        impl<'de> MapAccess<'de> for Fields<'_> {
            type Error = E;
            fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, E> {
                let Some(&f) = self.fields.next() else { return Ok(None) };
                self.current = Some(f);
                seed.deserialize(IntoDeserializer::<E>::into_deserializer(f)).map(Some)
            }
            fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, E> {
                let f = self.current.take().expect("a key before its value");
                let path = if self.path.is_empty() { f.to_owned() } else { format!("{}.{f}", self.path) };
                seed.deserialize(Walk { path, found: self.found })
            }
        }
        impl<'de> SeqAccess<'de> for One<'_> {
            type Error = E;
            fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, E> {
                self.0.take().map(|w| seed.deserialize(w)).transpose()
            }
        }

        let found: Found = RefCell::default();
        <ConfigFile as serde::Deserialize>::deserialize(Walk { path: String::new(), found: &found })
            .expect("every configuration type can be walked");
        let found = found.into_inner();
        for section in ["", "cluster", "cluster.tls", "nodes", "media", "media.ice_servers"] {
            assert!(found.contains_key(section), "the walk reached `{section}`: {found:?}");
        }

        // What the table's first column names: a cell opening with a code span `[section] key`
        // (or `[[section]] key`), optionally followed by ` / `other_key`` spans, names those keys
        // of that section; whatever follows them in the cell is description.
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let table = readme.split("\n## Configuration\n").nth(1).expect("README has a `## Configuration` section");
        let table = table.split("\n## ").next().unwrap_or(table);
        let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut sections: BTreeSet<String> = BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with('|')) {
            let mut parts = row.split('|').nth(1).unwrap_or("").split('`');
            if !parts.next().is_some_and(|before| before.trim().is_empty()) {
                continue;
            }
            let Some(rest) = parts.next().and_then(|span| span.trim().strip_prefix('[')) else { continue };
            let Some(close) = rest.find(']') else { continue };
            let section = rest[..close].trim_start_matches('[').to_owned();
            let mut keys = vec![rest[close..].trim_start_matches(']')];
            while parts.next().is_some_and(|gap| gap.trim() == "/") {
                let Some(span) = parts.next() else { break };
                keys.push(span);
            }
            for key in keys.iter().flat_map(|k| k.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))) {
                if !key.is_empty() {
                    listed.insert((section.clone(), key.to_owned()));
                }
            }
            sections.insert(section);
        }

        let mut missing = Vec::new();
        for (path, fields) in &found {
            for &f in fields {
                let child = if path.is_empty() { f.to_owned() } else { format!("{path}.{f}") };
                let documented = if found.contains_key(&child) {
                    sections.contains(&child)
                } else {
                    listed.contains(&(path.clone(), f.to_owned()))
                };
                if !documented {
                    missing.push(child);
                }
            }
        }
        assert!(missing.is_empty(), "README's configuration table does not list: {missing:?}");
        let unknown: Vec<_> = listed
            .iter()
            .filter(|(s, k)| !found.get(s).is_some_and(|fields| fields.contains(&k.as_str())))
            .map(|(s, k)| format!("[{s}] {k}"))
            .collect();
        assert!(unknown.is_empty(), "README's configuration table lists keys the code does not accept: {unknown:?}");
    }
}
