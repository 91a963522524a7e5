//! Field validation of user input. Each check returns the normalised value or a
//! [`FieldError`] naming the field, which the HTTP layer turns into a 400.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

/// A field of a request that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The JSON field name, e.g. `participants[2].email`.
    pub field: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl FieldError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Longest meeting title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Longest meeting, in minutes (24 hours).
pub const MAX_DURATION_MINUTES: i32 = 24 * 60;
/// Longest meeting password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 64;
/// Most invitees in one meeting.
pub const MAX_INVITEES: usize = 1000;

/// Trims and lower-cases an email address and checks its shape (`local@domain.tld`, ≤ 254
/// characters, no whitespace). Delivery is not checked.
pub fn email(field: &str, raw: &str) -> Result<String, FieldError> {
    let e = raw.trim().to_ascii_lowercase();
    let bad = || FieldError::new(field, format!("`{raw}` is not an email address"));
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(e)
}

/// A non-empty, trimmed text of at most `max` characters.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters")));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(t.to_owned())
}

/// A meeting duration in minutes, 1 ..= 24 h.
pub fn duration_minutes(field: &str, minutes: i64) -> Result<i32, FieldError> {
    if !(1..=i64::from(MAX_DURATION_MINUTES)).contains(&minutes) {
        return Err(FieldError::new(field, format!("must be between 1 and {MAX_DURATION_MINUTES} minutes")));
    }
    Ok(minutes as i32)
}

/// A reminder's lead time in minutes, 0 (none) ..= one week.
pub fn reminder_minutes(field: &str, minutes: u16) -> Result<u16, FieldError> {
    if minutes > crate::model::MAX_REMINDER_MINUTES {
        let max = crate::model::MAX_REMINDER_MINUTES;
        return Err(FieldError::new(field, format!("must be between 0 (no reminder) and {max} minutes")));
    }
    Ok(minutes)
}

/// An IANA time zone name such as `America/Los_Angeles`.
pub fn timezone(field: &str, raw: &str) -> Result<Tz, FieldError> {
    raw.parse::<Tz>().map_err(|_| FieldError::new(field, format!("`{raw}` is not an IANA time zone")))
}

/// A meeting password: 1 ..= 64 characters, no surrounding whitespace trimmed (it is a secret).
pub fn password(field: &str, raw: &str) -> Result<String, FieldError> {
    let n = raw.chars().count();
    if n == 0 || n > MAX_PASSWORD_CHARS {
        return Err(FieldError::new(field, format!("must be 1 to {MAX_PASSWORD_CHARS} characters")));
    }
    if raw.contains('\0') {
        // Nobody could type it: the WebSocket refuses NUL in every field.
        return Err(FieldError::new(field, "must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}

/// Latest instant the API accepts: RFC 3339 has four-digit years, so nothing later can be
/// written back out as it came in.
pub const LATEST_YEAR: i32 = 9999;

/// A point in time the API can store and give back unchanged: no leap second (`23:59:60`,
/// which chrono keeps as a 60th second the databases cannot hold) and a year from 1 to
/// [`LATEST_YEAR`].
pub fn instant(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if t.nanosecond() >= 1_000_000_000 {
        return Err(FieldError::new(field, "a leap second (:60) cannot be stored; use :59 or the next minute"));
    }
    if !(1..=LATEST_YEAR).contains(&t.year()) {
        return Err(FieldError::new(field, format!("must be between the years 1 and {LATEST_YEAR}")));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_shape_checked() {
        assert_eq!(email("e", "  Alice@Example.COM ").unwrap(), "alice@example.com");
        for bad in ["", "alice", "@x.com", "a@b", "a b@c.com", "a@@b.com", "a@.com", "a@com."] {
            assert!(email("e", bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(email("participants[1].email", "x").unwrap_err().field, "participants[1].email");
    }

    #[test]
    fn text_and_numbers() {
        assert_eq!(text("t", "  Standup ", 10).unwrap(), "Standup");
        assert!(text("t", "   ", 10).is_err());
        assert!(text("t", "12345678901", 10).is_err());
        assert!(text("t", "a\u{0}b", 10).is_err());
        assert!(duration_minutes("d", 0).is_err());
        assert!(duration_minutes("d", 1441).is_err());
        assert_eq!(duration_minutes("d", 30).unwrap(), 30);
        assert_eq!(reminder_minutes("r", 0).unwrap(), 0);
        assert_eq!(reminder_minutes("r", 10_080).unwrap(), 10_080);
        assert!(reminder_minutes("r", 10_081).is_err());
        assert!(timezone("tz", "Mars/Olympus").is_err());
        assert!(timezone("tz", "America/Los_Angeles").is_ok());
        assert!(password("p", "").is_err());
        assert_eq!(password("p", " s3cret ").unwrap(), " s3cret ");
        assert!(password("p", "pw\u{0}").is_err());
    }

    #[test]
    fn instants_the_api_cannot_give_back_are_refused() {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap();
        let leap = parse("2031-06-30T23:59:60Z");
        assert_eq!(leap.nanosecond(), 1_000_000_000, "chrono keeps the leap second");
        assert!(instant("t", leap).unwrap_err().message.contains("leap second"));
        let late = parse("9999-12-31T23:00:00Z") + chrono::Duration::days(1);
        assert!(instant("t", late).is_err(), "year 10000");
        let fine = parse("9999-12-31T23:59:59Z");
        assert_eq!(instant("t", fine).unwrap(), fine);
        assert!(instant("t", parse("2031-06-30T23:59:59.999Z")).is_ok());
    }
}
