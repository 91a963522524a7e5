//! Webhook delivery: one signed JSON POST per event and endpoint.
//!
//! Every request carries:
//!
//! - `Content-Type: application/json`, the body exactly as the outbox stored it;
//! - `X-Parley-Event`: the event (`participant.joined`…), `X-Parley-Delivery`: the outbox's
//!   idempotency key (the same on every attempt), `X-Parley-Attempt`: 1, 2, … (above 1: a
//!   retry);
//! - `X-Parley-Timestamp`: Unix seconds when this attempt was signed;
//! - `X-Parley-Signature: v1=<hex>`: HMAC-SHA256, keyed with the endpoint's secret, of
//!   `<timestamp>.<body>`.
//!
//! A receiver recomputes the signature over the raw body, compares it in constant time, and
//! refuses a timestamp far from its clock (five minutes, say) so a captured request cannot be
//! replayed later; [`verify`] does all three. Any 2xx is success; 410 Gone means the endpoint
//! is gone for good (no more retries); anything else, or no answer within the timeout, is
//! retried with backoff.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::transport::SendError;

/// How long one attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The signature header's scheme prefix.
const SCHEME: &str = "v1=";

/// HMAC-SHA256 keyed with `secret` over `<timestamp>.<body>`, ready to finish or verify.
/// (HMAC takes keys of any length; the error exists only in the trait's signature.)
fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Result<Hmac<Sha256>, hmac::digest::InvalidLength> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The `X-Parley-Signature` value of `body` signed at `timestamp` with `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> Result<String, hmac::digest::InvalidLength> {
    Ok(format!("{SCHEME}{}", hex::encode(mac(secret, timestamp, body)?.finalize().into_bytes())))
}

/// Why a request's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the timestamp is not a number")]
    BadTimestamp,
    #[error("the timestamp is {0} s away from now")]
    Stale(i64),
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a request as a receiver should: the signature over `<timestamp>.<body>` with
/// `secret` (in constant time), and a timestamp within `tolerance` of `now` (Unix seconds).
pub fn verify(
    secret: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = (now - ts).abs();
    if skew > tolerance.as_secs() as i64 {
        return Err(VerifyError::Stale(skew));
    }
    let given = signature_header.trim().strip_prefix(SCHEME).ok_or(VerifyError::Mismatch)?;
    let given = hex::decode(given).map_err(|_| VerifyError::Mismatch)?;
    let mac = mac(secret, ts, body).map_err(|_| VerifyError::Mismatch)?;
    mac.verify_slice(&given).map_err(|_| VerifyError::Mismatch)
}

/// One webhook request to send.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub event: &'a str,
    pub key: &'a str,
    pub attempt: i32,
    pub body: &'a str,
}

/// Sends webhook requests (one shared connection pool).
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
}

impl WebhookClient {
    pub fn new() -> Result<WebhookClient, SendError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("parley-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError { permanent: true, reason: format!("HTTP client: {e}") })?;
        Ok(WebhookClient { http })
    }

    /// POSTs one event, signed now.
    pub async fn send(&self, d: Delivery<'_>) -> Result<(), SendError> {
        let timestamp = chrono::Utc::now().timestamp();
        let signed = signature(d.secret, timestamp, d.body.as_bytes())
            .map_err(|e| SendError { permanent: true, reason: format!("cannot sign: {e}") })?;
        let res = self
            .http
            .post(d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Parley-Event", d.event)
            .header("X-Parley-Delivery", d.key)
            .header("X-Parley-Attempt", d.attempt.to_string())
            .header("X-Parley-Timestamp", timestamp.to_string())
            .header("X-Parley-Signature", signed)
            .body(d.body.to_owned())
            .send()
            .await
            .map_err(|e| SendError { permanent: false, reason: format!("POST {}: {}", d.url, error_chain(&e)) })?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        Err(SendError {
            permanent: status == reqwest::StatusCode::GONE,
            reason: format!("POST {}: HTTP {}", d.url, status.as_u16()),
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"a":1}"#;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature("s3cret", NOW, BODY).unwrap(),
            "v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn verify_accepts_a_fresh_signature_and_refuses_the_rest() {
        let ok = signature("s3cret", NOW, BODY).unwrap();
        let five_min = Duration::from_secs(300);
        assert_eq!(verify("s3cret", "1700000000", &ok, BODY, NOW + 10, five_min), Ok(()));
        assert_eq!(verify("other", "1700000000", &ok, BODY, NOW, five_min), Err(VerifyError::Mismatch));
        assert_eq!(verify("s3cret", "1700000000", &ok, br#"{"a":2}"#, NOW, five_min), Err(VerifyError::Mismatch));
        assert_eq!(verify("s3cret", "1700000001", &ok, BODY, NOW, five_min), Err(VerifyError::Mismatch));
        assert_eq!(verify("s3cret", "1700000000", &ok, BODY, NOW + 301, five_min), Err(VerifyError::Stale(301)));
        assert_eq!(verify("s3cret", "soon", &ok, BODY, NOW, five_min), Err(VerifyError::BadTimestamp));
        assert_eq!(verify("s3cret", "1700000000", "v1=zz", BODY, NOW, five_min), Err(VerifyError::Mismatch));
        assert_eq!(verify("s3cret", "1700000000", &ok[3..], BODY, NOW, five_min), Err(VerifyError::Mismatch));
    }
}
