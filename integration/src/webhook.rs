//! A webhook receiver for tests: an HTTP server that checks every request's signature the way
//! the README tells receivers to (HMAC-SHA256 of `<timestamp>.<body>` with the shared secret,
//! computed here independently of the node's code), records it, and fails the first
//! `fail_first` requests with 503 so the sender has to retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: String,
    pub delivery: String,
    pub attempt: i32,
    pub timestamp: i64,
    /// The signature matched the body and the timestamp was within five minutes.
    pub signature_ok: bool,
    /// Answered 2xx (not one of the first failures, and correctly signed).
    pub accepted: bool,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    fail_first: usize,
    received: Vec<Received>,
}

pub struct WebhookReceiver {
    url: String,
    secret: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start(secret: &str, fail_first: usize) -> WebhookReceiver {
        let inner = Arc::new(Mutex::new(Inner { fail_first, received: Vec::new() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind webhook receiver");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/hook", post(receive)).with_state((inner.clone(), Arc::<str>::from(secret)));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { url: format!("http://{addr}/hook"), secret: secret.to_owned(), inner, server }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A `[[notify.webhooks]]` entry for this receiver.
    pub fn config(&self, events: &[&str]) -> String {
        let list: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
        format!(
            "[[notify.webhooks]]\nurl = \"{}\"\nsecret = \"{}\"\nevents = [{}]\n",
            self.url,
            self.secret,
            list.join(", ")
        )
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver lock").received.clone()
    }

    /// The accepted requests, once at least `n` have arrived (or whatever came by `timeout`).
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got: Vec<Received> = self.received().into_iter().filter(|r| r.accepted).collect();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn signed_correctly(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else { return false };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let Some(given) = signature.strip_prefix("v1=").and_then(|h| hex::decode(h).ok()) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn receive(
    State((inner, secret)): State<(Arc<Mutex<Inner>>, Arc<str>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let timestamp = header(&headers, "x-parley-timestamp");
    let signature_ok = signed_correctly(&secret, &timestamp, &header(&headers, "x-parley-signature"), &body);
    let mut inner = inner.lock().expect("receiver lock");
    let failing = inner.received.len() < inner.fail_first;
    let accepted = signature_ok && !failing;
    inner.received.push(Received {
        event: header(&headers, "x-parley-event"),
        delivery: header(&headers, "x-parley-delivery"),
        attempt: header(&headers, "x-parley-attempt").parse().unwrap_or(0),
        timestamp: timestamp.parse().unwrap_or(0),
        signature_ok,
        accepted,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    match (signature_ok, failing) {
        (false, _) => StatusCode::UNAUTHORIZED,
        (true, true) => StatusCode::SERVICE_UNAVAILABLE,
        (true, false) => StatusCode::OK,
    }
}
