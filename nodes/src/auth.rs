//! Identity: HS256 bearer tokens.
//!
//! A token's `sub` is the caller's identity; nothing in a request body can change it. `adm`
//! marks an operator token (user administration, later the admin cluster API). Tokens are
//! verified with a 30-second leeway for clock skew between nodes.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Issuer written into and required from every token.
pub const ISSUER: &str = "parley";
/// Default token lifetime: 12 hours.
pub const DEFAULT_TTL_SECS: u64 = 12 * 3600;
/// Longest lifetime `parley token` will mint: 30 days.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// The claims Parley puts in a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller: a user id (UUID), or any name for an operator token.
    pub sub: String,
    /// Operator rights.
    #[serde(default)]
    pub adm: bool,
    /// A guest token (`POST /api/meetings/{id}/guest`): it joins meetings over the WebSocket;
    /// the REST API refuses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gst: bool,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 30;
        TokenKeys { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// Mints a token for `sub` valid for `ttl_secs`.
    pub fn mint(&self, sub: &str, admin: bool, ttl_secs: u64) -> String {
        self.sign(sub, admin, false, ttl_secs)
    }

    /// Mints a guest token for `sub` (see [`Claims::gst`]) valid for `ttl_secs`.
    pub fn mint_guest(&self, sub: &str, ttl_secs: u64) -> String {
        self.sign(sub, false, true, ttl_secs)
    }

    fn sign(&self, sub: &str, admin: bool, guest: bool, ttl_secs: u64) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims {
            sub: sub.to_owned(),
            adm: admin,
            gst: guest,
            iat: now,
            exp: now + ttl_secs,
            iss: ISSUER.to_owned(),
        };
        // Encoding HS256 claims of plain strings and integers cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Verifies signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            }
        })
    }
}

/// Issuer of resume tokens: distinct, so a resume token is never accepted as an access token.
pub const RESUME_ISSUER: &str = "parley-resume";
/// How long a seat can be resumed with one token (the meeting's own expiry decides sooner).
const RESUME_TTL_SECS: u64 = 24 * 3600;

#[derive(Serialize, Deserialize)]
struct ResumeClaims {
    sub: String,
    mtg: String,
    exp: u64,
    iss: String,
}

/// Signs and checks `resume` tokens with the cluster's secret (any node checks any node's).
pub struct ResumeKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl ResumeKeys {
    pub fn new(secret: &[u8]) -> ResumeKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[RESUME_ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        ResumeKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }
}

impl parley_actors::ResumeTokens for ResumeKeys {
    fn issue(&self, meeting_id: uuid::Uuid, user_id: uuid::Uuid) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = ResumeClaims {
            sub: user_id.to_string(),
            mtg: meeting_id.to_string(),
            exp: now + RESUME_TTL_SECS,
            iss: RESUME_ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    fn verify(&self, token: &str) -> Option<(uuid::Uuid, uuid::Uuid)> {
        let c = jsonwebtoken::decode::<ResumeClaims>(token, &self.decoding, &self.validation).ok()?.claims;
        Some((c.mtg.parse().ok()?, c.sub.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_tokens_name_their_seat_and_are_not_access_tokens() {
        use parley_actors::ResumeTokens;
        let secret = b"0123456789abcdef-test";
        let r = ResumeKeys::new(secret);
        let (m, u) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let t = r.issue(m, u);
        assert_eq!(r.verify(&t), Some((m, u)));
        assert!(TokenKeys::new(secret).verify(&t).is_err(), "not an access token");
        assert_eq!(r.verify(&TokenKeys::new(secret).mint(&u.to_string(), false, 60)), None, "nor the reverse");
        assert_eq!(ResumeKeys::new(b"another-secret-of-16+").verify(&t), None);
        assert_eq!(r.verify("garbage"), None);
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let k = TokenKeys::new(b"0123456789abcdef-test");
        let t = k.mint("user-1", true, 60);
        let c = k.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.adm, c.iss.as_str()), ("user-1", true, ISSUER));
        let other = TokenKeys::new(b"another-secret-of-16+");
        assert!(matches!(other.verify(&t), Err(TokenError::Invalid(_))));
        let mut bad = t.clone();
        bad.push('x');
        assert!(k.verify(&bad).is_err());
        assert!(k.verify("not.a.token").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let k = TokenKeys::new(b"0123456789abcdef-test");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims =
            Claims { sub: "u".into(), adm: false, gst: false, iat: now - 3600, exp: now - 600, iss: ISSUER.into() };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef-test"),
        )
        .unwrap();
        assert!(matches!(k.verify(&t), Err(TokenError::Expired)));
    }
}
