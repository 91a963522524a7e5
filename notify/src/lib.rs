//! Notices to email, and events to webhooks.
//!
//! The store writes a [`parley_core::notice::Notice`] into the notification outbox in the same
//! transaction as the change that causes it. This crate turns one notice into one email and
//! hands it to a transport:
//!
//! - [`email`]: [`Composer`] builds the message (plain text + HTML, and for invitations,
//!   updates and cancellations an `invite.ics` attachment), with the outbox's idempotency key as
//!   its `Message-ID` and `X-Parley-Idempotency-Key`.
//! - [`ical`]: the RFC 5545 `VCALENDAR` of a calendar event, with a `VTIMEZONE` generated from
//!   chrono-tz.
//! - [`transport`]: [`Transport`] sends over SMTP (plain, STARTTLS or implicit TLS) or writes
//!   `.eml` files into a directory (development and tests); [`SendError`] says whether a failure
//!   is permanent (an SMTP 5xx) or worth retrying.
//!
//! - [`webhook`]: [`WebhookClient`] POSTs an event, signed with HMAC-SHA256 over
//!   `<timestamp>.<body>`; [`webhook::verify`] is what a receiver runs.
//!
//! Nothing here reads the database or loops: the delivery loop (claiming outbox rows, retrying
//! with back-off, marking rows sent or failed) lives in the node.

pub mod email;
pub mod ical;
pub mod transport;
pub mod webhook;

pub use email::{ComposeError, Composer, IdempotencyKeyHeader};
pub use ical::{IcalError, render as render_ical};
pub use transport::{SendError, Transport};
pub use webhook::WebhookClient;

/// The longest sanitised key kept, so a `Message-ID` stays a reasonable header and a file name
/// stays within file-system limits.
const MAX_KEY_LEN: usize = 128;

/// An idempotency key reduced to `[A-Za-z0-9._-]` (anything else becomes `_`), at most 128
/// characters, never empty (`notice` then): safe in a `Message-ID`, a header and a file name.
/// Distinct keys that differ only in replaced characters map to the same result.
pub fn sanitise_key(key: &str) -> String {
    let out: String = key
        .chars()
        .take(MAX_KEY_LEN)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if out.is_empty() { "notice".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sanitised() {
        assert_eq!(sanitise_key("outbox-42.v1_x"), "outbox-42.v1_x");
        assert_eq!(sanitise_key("a/b\r\n<c>@d é"), "a_b___c__d__");
        assert_eq!(sanitise_key(""), "notice");
        assert_eq!(sanitise_key(&"x".repeat(500)).len(), 128);
    }
}
