//! The HTTP API and WebSocket signalling, as a client sees them.
//!
//! - [`Api`] mints tokens with the node's secret (as `parley token` does), registers users and
//!   creates meetings over HTTP.
//! - [`Signal`] is one authenticated WebSocket: [`Signal::request`] sends a request and waits
//!   for its reply; events arrive in order on the receiver [`Signal::connect`] returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::LoadError;

/// How long a request waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The node's HTTP API.
#[derive(Clone)]
pub struct Api {
    base: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl Api {
    /// `base`: `http://host:port`; `secret`: the node's token secret.
    pub fn new(base: &str, secret: &[u8]) -> Api {
        Api { base: base.trim_end_matches('/').to_owned(), secret: secret.to_vec(), http: reqwest::Client::new() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A token for `sub`, signed with the node's secret (HS256, issuer `parley`, 12 h).
    pub fn token(&self, sub: &str, admin: bool) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = json!({"sub": sub, "adm": admin, "iat": now, "exp": now + 12 * 3600, "iss": "parley"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
        .unwrap_or_default()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Result<Value, LoadError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| LoadError::Http(format!("POST {path}: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(LoadError::Http(format!("POST {path}: {status}: {v}")));
        }
        Ok(v)
    }

    async fn get(&self, path: &str, token: &str) -> Result<Value, LoadError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| LoadError::Http(format!("GET {path}: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(LoadError::Http(format!("GET {path}: {status}: {v}")));
        }
        Ok(v)
    }

    /// A meeting's recordings as `user` sees them (`GET /api/meetings/{id}/recordings`): the
    /// reply's `recordings`, newest first.
    pub async fn recordings(&self, meeting: Uuid, user: Uuid) -> Result<Vec<Value>, LoadError> {
        let v = self.get(&format!("/api/meetings/{meeting}/recordings"), &self.token(&user.to_string(), false)).await?;
        Ok(v["recordings"].as_array().cloned().unwrap_or_default())
    }

    /// One recording as `user` sees it (`GET /api/recordings/{id}`): status, error, artifacts.
    pub async fn recording(&self, recording: &str, user: Uuid) -> Result<Value, LoadError> {
        self.get(&format!("/api/recordings/{recording}"), &self.token(&user.to_string(), false)).await
    }

    /// Registers a user; returns its id.
    pub async fn create_user(&self, name: &str) -> Result<Uuid, LoadError> {
        let email = format!("{}-{}@loadtest.invalid", name.to_lowercase().replace(' ', "-"), Uuid::new_v4().simple());
        let v = self
            .post("/api/users", &self.token("loadtest", true), json!({"email": email, "display_name": name}))
            .await?;
        v["user_id"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| LoadError::Http(format!("no user_id in {v}")))
    }

    /// Creates an instant meeting of `host` without a waiting room; returns its id.
    pub async fn create_meeting(&self, host: Uuid, title: &str) -> Result<Uuid, LoadError> {
        let body = json!({"title": title, "meeting_type": "instant", "duration_minutes": 60,
                          "settings": {"waiting_room": false}});
        let v = self.post("/api/meetings", &self.token(&host.to_string(), false), body).await?;
        v["meeting_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| LoadError::Http(format!("no meeting_id in {v}")))
    }

    /// The WebSocket URL of this node.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http", "ws", 1))
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One authenticated WebSocket connection.
#[derive(Clone)]
pub struct Signal {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl Signal {
    /// Connects with `token`; returns the connection and its events (each a JSON object with
    /// `event`), in the order the server sent them. The receiver ends when the socket closes.
    pub async fn connect(api: &Api, token: &str) -> Result<(Signal, mpsc::UnboundedReceiver<Value>), LoadError> {
        let url = format!("{}?token={token}", api.ws_url());
        let (ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| LoadError::Ws(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = v.get("reply_to").and_then(Value::as_u64) {
                    let waiter = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    if let Some(w) = waiter {
                        let _ = w.send(v);
                    } else if v["ok"] != true {
                        tracing::debug!(reply = %v, "error reply to a request nobody waits for");
                    }
                } else if v.get("event").is_some() && events_tx.send(v).is_err() {
                    // Nobody reads events any more: keep reading replies.
                }
            }
        });
        Ok((Signal { out, pending, next_id: Arc::new(AtomicU64::new(1)) }, events))
    }

    fn send(&self, id: u64, mut request: Value) -> Result<(), LoadError> {
        request["id"] = json!(id);
        self.out.send(Message::text(request.to_string())).map_err(|_| LoadError::Ws("socket closed".to_owned()))
    }

    /// Sends a request and returns its reply (`ok` true or false).
    pub async fn request(&self, request: Value) -> Result<Value, LoadError> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered before sending, so a fast reply is not missed.
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        if let Err(e) = self.send(id, request) {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                Err(LoadError::Ws(format!("no reply to request {id}")))
            }
        }
    }

    /// Sends a request and requires `ok: true`.
    pub async fn ok(&self, request: Value) -> Result<Value, LoadError> {
        let what = request["type"].as_str().unwrap_or("request").to_owned();
        let v = self.request(request).await?;
        if v["ok"] != true {
            return Err(LoadError::Refused { what, reply: v.to_string() });
        }
        Ok(v)
    }

    /// Sends a request without waiting for its reply (an error reply is logged at debug).
    pub fn cast(&self, request: Value) -> Result<(), LoadError> {
        self.send(self.next_id.fetch_add(1, Ordering::Relaxed), request)
    }

    /// Closes the socket.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}
