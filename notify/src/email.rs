//! Composition of one email from one [`Notice`].
//!
//! The message is `multipart/mixed` holding a `multipart/alternative` (text/plain and text/html,
//! both UTF-8) and, for calendar notices, an `invite.ics` attachment
//! (`text/calendar; charset=UTF-8; method=REQUEST|CANCEL`); without an event it is the
//! `multipart/alternative` alone.
//!
//! Transfer encoding: every part (text, HTML and the calendar) is written **base64**. It is
//! always valid whatever the content (long lines, non-ASCII, stray control characters), and its
//! bytes cannot be read as MIME structure or headers.
//!
//! Injection: every value that ends up in a header (subject, display names, the idempotency key)
//! has CR, LF and every other control character replaced by a space before lettre sees it, and
//! every user-supplied string in the HTML part is HTML-escaped.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use lettre::Message;
use lettre::message::header::{ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use parley_core::notice::{CalendarMethod, Notice, NoticeKind, Person};

use crate::ical::{self, IcalError};
use crate::sanitise_key;

/// Why a notice could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// An address (the sender's or the recipient's) is not a valid mailbox.
    #[error("invalid address {0:?}")]
    Address(String),
    /// The calendar part could not be rendered.
    #[error("calendar: {0}")]
    Calendar(#[from] IcalError),
    /// The notice lacks something its kind needs (e.g. a recording notice without its facts).
    #[error("notice is missing {0}")]
    Incomplete(&'static str),
    /// lettre refused to build the message.
    #[error("building the message: {0}")]
    Build(String),
}

/// Turns notices into messages, from one sender, with links into one public URL.
#[derive(Debug, Clone)]
pub struct Composer {
    from: Mailbox,
    public_url: String,
}

/// The `X-Parley-Idempotency-Key` header: the outbox key of the notice a message was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKeyHeader(pub String);

impl Header for IdempotencyKeyHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Parley-Idempotency-Key")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.trim().to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), header_safe(&self.0))
    }
}

impl Composer {
    /// `from` is a mailbox (`noreply@example.com` or `Parley <noreply@example.com>`);
    /// `public_url` the base the links point into (a trailing slash is dropped).
    pub fn new(from: &str, public_url: &str) -> Result<Composer, ComposeError> {
        let from: Mailbox = from.trim().parse().map_err(|_| ComposeError::Address(from.to_owned()))?;
        let from = Mailbox::new(from.name.as_deref().map(header_safe), from.email);
        Ok(Composer { from, public_url: public_url.trim().trim_end_matches('/').to_owned() })
    }

    /// The link that joins a meeting.
    pub fn join_url(&self, meeting_id: uuid::Uuid) -> String {
        format!("{}/j/{meeting_id}", self.public_url)
    }

    /// The link that downloads a recording.
    pub fn recording_url(&self, recording_id: uuid::Uuid) -> String {
        format!("{}/api/recordings/{recording_id}", self.public_url)
    }

    /// The message for `notice`. `idempotency_key` (the outbox key) becomes the `Message-ID`
    /// (`<key@parley>`) and the `X-Parley-Idempotency-Key` header, after sanitising to
    /// `[A-Za-z0-9._-]`, so a resent notice is recognisably the same message.
    pub fn compose(&self, notice: &Notice, idempotency_key: &str) -> Result<Message, ComposeError> {
        let key = sanitise_key(idempotency_key);
        let to = mailbox(&notice.to)?;
        let content = self.content(notice)?;

        let text = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(base64_body(content.text())?);
        let html = SinglePart::builder().header(ContentType::TEXT_HTML).body(base64_body(content.html())?);
        let alternative = MultiPart::alternative().singlepart(text).singlepart(html);

        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(header_safe(&subject(notice)))
            .message_id(Some(format!("<{key}@parley>")))
            .header(IdempotencyKeyHeader(key));

        let body = match &notice.event {
            Some(event) => {
                let ics = ical::render(event, &self.join_url(notice.meeting_id))?;
                let content_type =
                    ContentType::parse(&format!("text/calendar; charset=UTF-8; method={}", event.method.as_str()))
                        .map_err(|e| ComposeError::Build(e.to_string()))?;
                let attachment = SinglePart::builder()
                    .header(lettre::message::header::ContentDisposition::attachment("invite.ics"))
                    .header(content_type)
                    .body(base64_body(ics)?);
                MultiPart::mixed().multipart(alternative).singlepart(attachment)
            }
            None => alternative,
        };
        builder.multipart(body).map_err(|e| ComposeError::Build(e.to_string()))
    }

    /// What the text and HTML parts say, as plain (unescaped) strings.
    fn content(&self, notice: &Notice) -> Result<Content, ComposeError> {
        let title = single_line(&notice.title);
        let host = display_name(&notice.host);
        let when = format_local(notice.start, &notice.timezone);
        let occurrence = notice.event.as_ref().and_then(|e| e.recurrence_id).map(|t| format_local(t, &notice.timezone));
        let series = notice.event.as_ref().is_some_and(|e| e.rrule.is_some());

        let mut c = Content { greeting: display_name(&notice.to), ..Content::default() };
        match notice.kind {
            NoticeKind::Invitation => {
                c.paragraphs.push(format!("{host} invited you to \u{201c}{title}\u{201d}."));
                if series {
                    c.paragraphs
                        .push("This is a recurring meeting; the attached invitation holds the whole series.".into());
                }
            }
            NoticeKind::Update => match &occurrence {
                Some(at) => {
                    c.paragraphs.push(format!("{host} changed the occurrence of \u{201c}{title}\u{201d} on {at}."))
                }
                None => c.paragraphs.push(format!("{host} updated \u{201c}{title}\u{201d}.")),
            },
            NoticeKind::Cancellation => {
                let whole = notice.event.as_ref().is_some_and(|e| e.method == CalendarMethod::Cancel && series);
                match &occurrence {
                    Some(at) => c
                        .paragraphs
                        .push(format!("{host} cancelled the occurrence of \u{201c}{title}\u{201d} on {at}.")),
                    None if whole => c.paragraphs.push(format!("{host} cancelled the series \u{201c}{title}\u{201d}.")),
                    None => c.paragraphs.push(format!("{host} cancelled \u{201c}{title}\u{201d}.")),
                }
            }
            NoticeKind::Reminder => c.paragraphs.push(format!("\u{201c}{title}\u{201d} starts at {when}.")),
            NoticeKind::RecordingReady => {
                c.paragraphs.push(format!("The recording of \u{201c}{title}\u{201d} is ready."));
            }
            NoticeKind::RecordingFailed => {
                c.paragraphs.push(format!("The recording of \u{201c}{title}\u{201d} could not be processed."));
            }
        }

        c.facts.push(("When", when));
        c.facts.push(("Duration", format_minutes(i64::from(notice.duration_minutes))));
        c.facts.push(("Host", host));

        match notice.kind {
            NoticeKind::Invitation | NoticeKind::Update | NoticeKind::Reminder => {
                c.links.push(("Join", self.join_url(notice.meeting_id)));
            }
            NoticeKind::Cancellation => {}
            NoticeKind::RecordingReady | NoticeKind::RecordingFailed => {
                let facts = notice.recording.as_ref().ok_or(ComposeError::Incomplete("recording facts"))?;
                c.facts.push(("Recording", facts.recording_id.to_string()));
                if let Some(secs) = facts.duration_seconds {
                    c.facts.push(("Length", format_seconds(secs)));
                }
                if notice.kind == NoticeKind::RecordingFailed {
                    let error = facts.error.as_deref().map(single_line).unwrap_or_else(|| "unknown error".into());
                    c.facts.push(("Error", error));
                }
                c.links.push(("Recording", self.recording_url(facts.recording_id)));
            }
        }
        Ok(c)
    }
}

/// The subject line of a notice (not yet made header-safe).
fn subject(notice: &Notice) -> String {
    let title = &notice.title;
    match notice.kind {
        NoticeKind::Invitation => format!("Invitation: {title}"),
        NoticeKind::Update => format!("Updated: {title}"),
        NoticeKind::Cancellation => format!("Cancelled: {title}"),
        NoticeKind::Reminder => {
            format!("Reminder: {title} starts at {}", format_local(notice.start, &notice.timezone))
        }
        NoticeKind::RecordingReady => format!("Your recording is ready: {title}"),
        NoticeKind::RecordingFailed => format!("Recording failed: {title}"),
    }
}

/// The parts of a message body, rendered twice (text and HTML).
#[derive(Debug, Default)]
struct Content {
    greeting: String,
    paragraphs: Vec<String>,
    facts: Vec<(&'static str, String)>,
    links: Vec<(&'static str, String)>,
}

impl Content {
    fn text(&self) -> String {
        let mut out = format!("Hello {},\n\n", self.greeting);
        for p in &self.paragraphs {
            out.push_str(p);
            out.push_str("\n\n");
        }
        for (label, value) in &self.facts {
            out.push_str(&format!("{label}: {value}\n"));
        }
        for (label, url) in &self.links {
            out.push_str(&format!("{label}: {url}\n"));
        }
        out.push_str("\n-- \nSent by Parley.\n");
        out
    }

    fn html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n",
        );
        out.push_str(&format!("<p>Hello {},</p>\n", escape_html(&self.greeting)));
        for p in &self.paragraphs {
            out.push_str(&format!("<p>{}</p>\n", escape_html(p)));
        }
        out.push_str("<table>\n");
        for (label, value) in &self.facts {
            out.push_str(&format!("<tr><th align=\"left\">{label}</th><td>{}</td></tr>\n", escape_html(value)));
        }
        out.push_str("</table>\n");
        for (label, url) in &self.links {
            let url = escape_html(url);
            out.push_str(&format!("<p><a href=\"{url}\">{label}</a>: {url}</p>\n"));
        }
        out.push_str("<p style=\"color: #666\">Sent by Parley.</p>\n</body></html>\n");
        out
    }
}

fn base64_body(s: String) -> Result<Body, ComposeError> {
    Body::new_with_encoding(s, ContentTransferEncoding::Base64)
        .map_err(|_| ComposeError::Build("base64 encoding refused".into()))
}

fn mailbox(person: &Person) -> Result<Mailbox, ComposeError> {
    let email = person.email.trim();
    let address = email.parse().map_err(|_| ComposeError::Address(person.email.clone()))?;
    let name = header_safe(&person.name);
    let name = name.trim();
    Ok(Mailbox::new(if name.is_empty() { None } else { Some(name.to_owned()) }, address))
}

/// A person's name for the body, or their address when they have none.
fn display_name(person: &Person) -> String {
    let name = single_line(&person.name);
    let name = name.trim();
    if name.is_empty() { single_line(&person.email) } else { name.to_owned() }
}

/// Replaces CR, LF and every other control character with a space: what a header value may hold.
pub fn header_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The same for a value shown on one line of the body.
fn single_line(s: &str) -> String {
    header_safe(s)
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `Tue 2 Mar 2027, 10:00 (America/New_York)`; an unknown zone falls back to UTC.
pub fn format_local(t: DateTime<Utc>, timezone: &str) -> String {
    match timezone.parse::<Tz>() {
        Ok(tz) => format!("{} ({})", t.with_timezone(&tz).format("%a %-d %b %Y, %H:%M"), tz.name()),
        Err(_) => {
            tracing::warn!(timezone = %header_safe(timezone), "unknown time zone in a notice; showing UTC");
            format!("{} (UTC)", t.format("%a %-d %b %Y, %H:%M"))
        }
    }
}

fn format_minutes(minutes: i64) -> String {
    let minutes = minutes.max(0);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

fn format_seconds(seconds: i64) -> String {
    let s = seconds.max(0);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m}:{s:02}") }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use chrono::TimeZone;
    use parley_core::notice::{Attendee, CalendarEvent, RecordingFacts};
    use uuid::Uuid;

    use super::*;

    const MEETING: &str = "0191e0f2-aaaa-7bbb-8ccc-123456789abc";

    fn person(name: &str, email: &str) -> Person {
        Person { name: name.into(), email: email.into() }
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, 2, 15, 0, 0).single().unwrap()
    }

    fn notice(kind: NoticeKind, title: &str) -> Notice {
        let event = CalendarEvent {
            method: if kind == NoticeKind::Cancellation { CalendarMethod::Cancel } else { CalendarMethod::Request },
            uid: format!("{MEETING}@parley"),
            sequence: 0,
            title: title.into(),
            start: start(),
            duration_minutes: 90,
            timezone: "America/New_York".into(),
            rrule: None,
            exdates: vec![],
            recurrence_id: None,
            organizer: person("Hilda Host", "host@example.com"),
            attendees: vec![
                Attendee { person: person("Hilda Host", "host@example.com"), chair: true },
                Attendee { person: person("Gus Guest", "guest@example.com"), chair: false },
            ],
            stamp: start() - chrono::Duration::days(10),
        };
        let calendar = matches!(kind, NoticeKind::Invitation | NoticeKind::Update | NoticeKind::Cancellation);
        let recording = matches!(kind, NoticeKind::RecordingReady | NoticeKind::RecordingFailed);
        Notice {
            kind,
            meeting_id: MEETING.parse().unwrap(),
            title: title.into(),
            start: start(),
            timezone: "America/New_York".into(),
            duration_minutes: 90,
            to: person("Gus Guest", "guest@example.com"),
            host: person("Hilda Host", "host@example.com"),
            event: calendar.then_some(event),
            recording: recording.then(|| RecordingFacts {
                recording_id: Uuid::nil(),
                duration_seconds: Some(3723),
                error: (kind == NoticeKind::RecordingFailed).then(|| "ffmpeg exited with 1".into()),
            }),
        }
    }

    fn composer() -> Composer {
        Composer::new("Parley <noreply@parley.example>", "https://meet.example.com/").unwrap()
    }

    fn formatted(msg: &Message) -> String {
        String::from_utf8(msg.formatted()).unwrap()
    }

    /// The top-level header block, unfolded.
    fn top_headers(raw: &str) -> Vec<String> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n").map(str::to_owned).collect()
    }

    /// The decoded body of the first part whose Content-Type starts with `content_type`.
    fn part(raw: &str, content_type: &str) -> Option<(String, String)> {
        let at = raw.find(&format!("Content-Type: {content_type}"))?;
        // Back up to the start of this part's header block.
        let head_start = raw[..at].rfind("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
        let head_start = raw[head_start..at].find("--").map(|i| head_start + i).unwrap_or(head_start);
        let body_start = at + raw[at..].find("\r\n\r\n")? + 4;
        let headers = raw[head_start..body_start].to_owned();
        assert!(headers.contains("Content-Transfer-Encoding: base64"), "{headers}");
        let body_end = body_start + raw[body_start..].find("\r\n--")?;
        let b64: String = raw[body_start..body_end].split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        Some((headers, String::from_utf8(bytes).unwrap()))
    }

    #[test]
    fn composes_an_invitation() {
        let msg = composer().compose(&notice(NoticeKind::Invitation, "Weekly sync"), "outbox-42").unwrap();
        let raw = formatted(&msg);
        let headers = top_headers(&raw);
        assert!(headers.contains(&"Subject: Invitation: Weekly sync".to_owned()), "{headers:#?}");
        assert!(headers.contains(&"To: \"Gus Guest\" <guest@example.com>".to_owned()), "{headers:#?}");
        assert!(headers.contains(&"From: Parley <noreply@parley.example>".to_owned()), "{headers:#?}");
        assert!(headers.contains(&"Message-ID: <outbox-42@parley>".to_owned()), "{headers:#?}");
        assert!(headers.contains(&"X-Parley-Idempotency-Key: outbox-42".to_owned()), "{headers:#?}");
        assert!(headers.iter().any(|h| h.starts_with("Content-Type: multipart/mixed")));

        let (_, text) = part(&raw, "text/plain").unwrap();
        assert!(text.starts_with("Hello Gus Guest,"));
        assert!(text.contains("Hilda Host invited you to \u{201c}Weekly sync\u{201d}."));
        assert!(text.contains("When: Tue 2 Mar 2027, 10:00 (America/New_York)"), "{text}");
        assert!(text.contains("Duration: 1 h 30 min"));
        assert!(text.contains("Host: Hilda Host"));
        assert!(text.contains(&format!("Join: https://meet.example.com/j/{MEETING}")));

        let (_, html) = part(&raw, "text/html").unwrap();
        assert!(html.contains(&format!("href=\"https://meet.example.com/j/{MEETING}\"")));

        let (ics_headers, ics) = part(&raw, "text/calendar").unwrap();
        assert!(ics_headers.contains("method=REQUEST"), "{ics_headers}");
        assert!(ics_headers.contains("invite.ics"), "{ics_headers}");
        assert!(ics.contains("METHOD:REQUEST\r\n"));
        assert!(ics.contains("SUMMARY:Weekly sync\r\n"));
        assert!(ics.replace("\r\n ", "").contains(&format!("URL:https://meet.example.com/j/{MEETING}\r\n")));
    }

    #[test]
    fn injection_through_the_title_is_neutralised() {
        let title = "Hi\r\nBcc: evil@x.com <script>alert(1)</script>";
        let mut n = notice(NoticeKind::Invitation, title);
        n.to.name = "Gus\r\nBcc: evil2@x.com".into();
        n.host.name = "<b>Host</b> & 'co'".into();
        let msg = composer().compose(&n, "k\r\nBcc: evil3@x.com").unwrap();
        let raw = formatted(&msg);
        for line in raw.split("\r\n") {
            assert!(!line.to_ascii_lowercase().starts_with("bcc:"), "injected header line {line:?}");
        }
        assert!(msg.envelope().to().iter().all(|a| a.to_string() == "guest@example.com"));
        let headers = top_headers(&raw);
        assert!(headers.iter().any(|h| h.starts_with("Message-ID: <k__Bcc__evil3_x.com@parley>")), "{headers:#?}");

        let (_, html) = part(&raw, "text/html").unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;Host&lt;/b&gt; &amp; &#39;co&#39;"), "{html}");
        let (_, text) = part(&raw, "text/plain").unwrap();
        assert!(text.contains("Hi  Bcc: evil@x.com <script>"), "plain text is not HTML: {text}");
    }

    #[test]
    fn subjects_per_kind() {
        let cases = [
            (NoticeKind::Invitation, "Invitation: T"),
            (NoticeKind::Update, "Updated: T"),
            (NoticeKind::Cancellation, "Cancelled: T"),
            (NoticeKind::Reminder, "Reminder: T starts at Tue 2 Mar 2027, 10:00 (America/New_York)"),
            (NoticeKind::RecordingReady, "Your recording is ready: T"),
            (NoticeKind::RecordingFailed, "Recording failed: T"),
        ];
        for (kind, expected) in cases {
            assert_eq!(subject(&notice(kind, "T")), expected);
            let raw = formatted(&composer().compose(&notice(kind, "T"), "k").unwrap());
            assert!(top_headers(&raw).contains(&format!("Subject: {expected}")), "{kind}");
        }
    }

    #[test]
    fn cancellations_carry_cancel_and_no_join_link() {
        let raw = formatted(&composer().compose(&notice(NoticeKind::Cancellation, "Standup"), "c1").unwrap());
        let (headers, ics) = part(&raw, "text/calendar").unwrap();
        assert!(headers.contains("method=CANCEL"));
        assert!(ics.contains("STATUS:CANCELLED"));
        let (_, text) = part(&raw, "text/plain").unwrap();
        assert!(text.contains("Hilda Host cancelled \u{201c}Standup\u{201d}."));
        assert!(!text.contains("Join:"));
    }

    #[test]
    fn notices_without_an_event_are_just_the_alternative() {
        let raw = formatted(&composer().compose(&notice(NoticeKind::Reminder, "Standup"), "r1").unwrap());
        assert!(top_headers(&raw).iter().any(|h| h.starts_with("Content-Type: multipart/alternative")));
        assert!(!raw.contains("multipart/mixed"));
        assert!(part(&raw, "text/calendar").is_none());
        let (_, text) = part(&raw, "text/plain").unwrap();
        assert!(text.contains("Join: https://meet.example.com/j/"));
    }

    #[test]
    fn recording_notices_link_the_recording() {
        let raw = formatted(&composer().compose(&notice(NoticeKind::RecordingReady, "Demo"), "rec1").unwrap());
        let (_, text) = part(&raw, "text/plain").unwrap();
        let id = Uuid::nil();
        assert!(text.contains(&format!("Recording: {id}")));
        assert!(text.contains(&format!("Recording: https://meet.example.com/api/recordings/{id}")));
        assert!(text.contains("Length: 1:02:03"));
        assert!(!text.contains("Join:"));

        let raw = formatted(&composer().compose(&notice(NoticeKind::RecordingFailed, "Demo"), "rec2").unwrap());
        let (_, text) = part(&raw, "text/plain").unwrap();
        assert!(text.contains("Error: ffmpeg exited with 1"));
        assert!(text.contains("could not be processed"));

        let mut n = notice(NoticeKind::RecordingReady, "Demo");
        n.recording = None;
        assert!(matches!(composer().compose(&n, "k"), Err(ComposeError::Incomplete(_))));
    }

    #[test]
    fn addresses_are_checked_and_names_fall_back_to_emails() {
        let mut n = notice(NoticeKind::Reminder, "x");
        n.to = person("", "pending@example.com");
        let raw = formatted(&composer().compose(&n, "k").unwrap());
        assert!(top_headers(&raw).contains(&"To: pending@example.com".to_owned()));
        assert!(part(&raw, "text/plain").unwrap().1.starts_with("Hello pending@example.com,"));

        n.to = person("Bad", "not an address");
        assert!(matches!(composer().compose(&n, "k"), Err(ComposeError::Address(_))));
        assert!(matches!(Composer::new("nope", "https://x"), Err(ComposeError::Address(_))));
    }

    #[test]
    fn unicode_titles_survive() {
        let raw = formatted(&composer().compose(&notice(NoticeKind::Invitation, "Réunion — 会议"), "u").unwrap());
        assert!(part(&raw, "text/plain").unwrap().1.contains("Réunion — 会议"));
        // Encoded in the header (RFC 2047), never raw 8-bit.
        let subject = top_headers(&raw).into_iter().find(|h| h.starts_with("Subject:")).unwrap();
        assert!(subject.is_ascii());
    }

    #[test]
    fn helpers() {
        assert_eq!(escape_html("a&<>\"'"), "a&amp;&lt;&gt;&quot;&#39;");
        assert_eq!(header_safe("a\r\nb\tc\u{7f}"), "a  b c ");
        assert_eq!(format_local(start(), "Nowhere/Land"), "Tue 2 Mar 2027, 15:00 (UTC)");
        assert_eq!(format_minutes(45), "45 min");
        assert_eq!(format_minutes(60), "1 h");
        assert_eq!(format_seconds(75), "1:15");
    }
}
