//! iCalendar (RFC 5545) rendering of a [`CalendarEvent`]: one `VCALENDAR` with the method of the
//! message (RFC 5546 `REQUEST` or `CANCEL`), a `VTIMEZONE` generated from chrono-tz, and one
//! `VEVENT`.
//!
//! Everything here is pure: the same event and join link always give the same text.
//!
//! Safety of the output: every TEXT value is escaped (`\\`, `\;`, `\,`, `\n`) with the other
//! control characters (CR included) removed, every `CN` parameter is quoted with `"` and control
//! characters removed, and URI-like values (addresses, the join link, the rule) lose control
//! characters too, so no user-supplied string can end a content line and start a property of its
//! own. Lines end with CRLF and are folded at 75 octets without splitting a UTF-8 character.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{OffsetComponents, OffsetName, Tz};
use parley_core::notice::{Attendee, CalendarEvent, CalendarMethod, Person};

/// Why an event could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcalError {
    /// The event's `timezone` is not an IANA zone chrono-tz knows.
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
}

/// The longest a content line may be, in octets, not counting its CRLF (RFC 5545 §3.1).
const FOLD_AT: usize = 75;

/// Renders `event` as a complete iCalendar object; `join_url` goes into `URL`, `LOCATION` and the
/// `DESCRIPTION`.
pub fn render(event: &CalendarEvent, join_url: &str) -> Result<String, IcalError> {
    let tz: Tz = event.timezone.parse().map_err(|_| IcalError::UnknownTimeZone(event.timezone.clone()))?;
    let tzid = tz.name();
    let join_url = strip_controls(join_url);

    let mut lines: Vec<String> = vec![
        "BEGIN:VCALENDAR".into(),
        "VERSION:2.0".into(),
        "PRODID:-//Parley//Parley//EN".into(),
        "CALSCALE:GREGORIAN".into(),
        format!("METHOD:{}", event.method.as_str()),
    ];

    let (from, to) = timezone_span(event);
    lines.extend(vtimezone(tz, from, to));

    lines.push("BEGIN:VEVENT".into());
    lines.push(format!("UID:{}", escape_text(&event.uid)));
    lines.push(format!("SEQUENCE:{}", event.sequence.max(0)));
    lines.push(format!("DTSTAMP:{}", utc_stamp(event.stamp)));
    lines.push(format!("DTSTART;TZID={tzid}:{}", local_stamp(tz, event.start)));
    let end = event.start + Duration::minutes(i64::from(event.duration_minutes.max(0)));
    lines.push(format!("DTEND;TZID={tzid}:{}", local_stamp(tz, end)));
    if let Some(rrule) = &event.rrule {
        let rrule = sanitise_rrule(rrule);
        if !rrule.is_empty() {
            lines.push(format!("RRULE:{rrule}"));
        }
    }
    if !event.exdates.is_empty() {
        let dates: Vec<String> = event.exdates.iter().map(|d| local_stamp(tz, *d)).collect();
        lines.push(format!("EXDATE;TZID={tzid}:{}", dates.join(",")));
    }
    if let Some(rid) = event.recurrence_id {
        lines.push(format!("RECURRENCE-ID;TZID={tzid}:{}", local_stamp(tz, rid)));
    }
    lines.push(format!("SUMMARY:{}", escape_text(&event.title)));
    let description = format!("{}\n\nJoin the meeting: {join_url}", event.title);
    lines.push(format!("DESCRIPTION:{}", escape_text(&description)));
    lines.push(format!("URL:{join_url}"));
    lines.push(format!("LOCATION:{}", escape_text(&join_url)));
    lines.push(format!("ORGANIZER{}:mailto:{}", cn_param(&event.organizer), address(&event.organizer)));
    for attendee in &event.attendees {
        lines.push(attendee_line(attendee));
    }
    let status = match event.method {
        CalendarMethod::Cancel => "CANCELLED",
        CalendarMethod::Request => "CONFIRMED",
    };
    lines.push(format!("STATUS:{status}"));
    lines.push("END:VEVENT".into());
    lines.push("END:VCALENDAR".into());

    let mut out = String::new();
    for line in &lines {
        out.push_str(&fold(line));
        out.push_str("\r\n");
    }
    Ok(out)
}

fn attendee_line(attendee: &Attendee) -> String {
    let (role, partstat, rsvp) =
        if attendee.chair { ("CHAIR", "ACCEPTED", "") } else { ("REQ-PARTICIPANT", "NEEDS-ACTION", ";RSVP=TRUE") };
    format!(
        "ATTENDEE{};ROLE={role};PARTSTAT={partstat}{rsvp}:mailto:{}",
        cn_param(&attendee.person),
        address(&attendee.person)
    )
}

/// `;CN="name"`, or nothing for a person without a (usable) name.
fn cn_param(person: &Person) -> String {
    let name: String = person.name.chars().filter(|c| *c != '"' && !c.is_control()).collect();
    let name = name.trim();
    if name.is_empty() { String::new() } else { format!(";CN=\"{name}\"") }
}

/// An email address as it may stand after `mailto:`: no control characters, no white space.
fn address(person: &Person) -> String {
    person.email.chars().filter(|c| !c.is_control() && !c.is_whitespace()).collect()
}

/// Keeps only what a RECUR value is made of, so a stored rule cannot smuggle in anything else.
fn sanitise_rrule(rule: &str) -> String {
    rule.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | ';' | ',' | '+' | '-')).collect()
}

fn strip_controls(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Escapes a TEXT value (RFC 5545 §3.3.11): backslash, semicolon, comma and newline; any other
/// control character (CR included) is dropped.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Folds one content line (without its CRLF) so no physical line exceeds 75 octets; continuation
/// lines start with a single space, and a UTF-8 character is never split.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / FOLD_AT * 3);
    let mut used = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if used + len > FOLD_AT {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += len;
    }
    out
}

fn utc_stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn local_stamp(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%Y%m%dT%H%M%S").to_string()
}

// ---- VTIMEZONE ---------------------------------------------------------------------------------

/// The longest a series is assumed to run when its rule gives no (usable) end.
const MAX_SERIES_DAYS: i64 = 13 * 366;

/// The span the `VTIMEZONE` must describe: a year before the earliest instant the event names to
/// a year after the last it can reach (at least two years after the start).
fn timezone_span(event: &CalendarEvent) -> (DateTime<Utc>, DateTime<Utc>) {
    let mut earliest = event.start;
    let mut latest = event.start + Duration::minutes(i64::from(event.duration_minutes.max(0)));
    for t in event.exdates.iter().chain(event.recurrence_id.iter()) {
        earliest = earliest.min(*t);
        latest = latest.max(*t);
    }
    if let Some(rule) = &event.rrule {
        let series_end = series_end(rule, event.start).min(event.start + Duration::days(MAX_SERIES_DAYS));
        latest = latest.max(series_end);
    }
    let from = earliest - Duration::days(366);
    let to = (latest + Duration::days(366)).max(event.start + Duration::days(2 * 366));
    (from, to)
}

/// A loose upper bound of the last occurrence of a rule: its `UNTIL`, an estimate from its
/// `COUNT` (every occurrence a full period apart), or "far away" for an endless rule.
fn series_end(rule: &str, start: DateTime<Utc>) -> DateTime<Utc> {
    let far = start + Duration::days(MAX_SERIES_DAYS);
    let mut freq_days = 1i64;
    let mut interval = 1i64;
    let mut count: Option<i64> = None;
    let mut until: Option<DateTime<Utc>> = None;
    for part in rule.split(';') {
        let Some((key, value)) = part.split_once('=') else { continue };
        match key.trim().to_ascii_uppercase().as_str() {
            "FREQ" => {
                freq_days = match value.trim().to_ascii_uppercase().as_str() {
                    "YEARLY" => 366,
                    "MONTHLY" => 31,
                    "WEEKLY" => 7,
                    _ => 1,
                }
            }
            "INTERVAL" => interval = value.trim().parse().unwrap_or(1i64).clamp(1, 10_000),
            "COUNT" => count = value.trim().parse().ok(),
            "UNTIL" => {
                until = value
                    .get(..8)
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
                    .and_then(|d| d.and_hms_opt(23, 59, 59))
                    .map(|d| d.and_utc())
            }
            _ => {}
        }
    }
    match (until, count) {
        (Some(u), _) => u,
        (None, Some(n)) => {
            let days = n.clamp(0, MAX_SERIES_DAYS).saturating_mul(interval).saturating_mul(freq_days);
            start + Duration::days(days.min(MAX_SERIES_DAYS))
        }
        (None, None) => far,
    }
}

/// What distinguishes one observance from the next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observance {
    /// Total offset from UTC, in seconds.
    offset: i32,
    daylight: bool,
    name: String,
}

fn observance(tz: Tz, t: DateTime<Utc>) -> Observance {
    let off = tz.offset_from_utc_datetime(&t.naive_utc());
    let offset = off.fix().local_minus_utc();
    let name = off.abbreviation().map(str::to_owned).unwrap_or_else(|| format_offset(offset));
    Observance { offset, daylight: !off.dst_offset().is_zero(), name }
}

/// One change of observance: the first instant of `to`.
struct Transition {
    at: DateTime<Utc>,
    from: Observance,
    to: Observance,
}

/// The transitions of `tz` in `[from, to]`, found by stepping a day at a time and bisecting each
/// change down to the second (chrono-tz does not list them). Two changes within one day would be
/// missed; no zone has those in its modern rules.
fn transitions(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Transition> {
    let mut out = Vec::new();
    let step = Duration::days(1);
    let mut t = from;
    let mut current = observance(tz, t);
    while t < to {
        let next = t + step;
        let seen = observance(tz, next);
        if seen != current {
            // Invariant: observance(lo) == current, observance(hi) != current.
            let (mut lo, mut hi) = (t.timestamp(), next.timestamp());
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let at = DateTime::from_timestamp(mid, 0).unwrap_or(t);
                if observance(tz, at) == current {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let at = DateTime::from_timestamp(hi, 0).unwrap_or(next);
            let to_obs = observance(tz, at);
            out.push(Transition { at, from: current, to: to_obs.clone() });
            current = to_obs;
        }
        t = next;
    }
    out
}

/// The `VTIMEZONE` of `tz` over `[from, to]`: an observance in force at `from`, then one
/// `STANDARD`/`DAYLIGHT` per transition; a zone without transitions gets a single `STANDARD`.
fn vtimezone(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    let mut lines = vec!["BEGIN:VTIMEZONE".to_owned(), format!("TZID:{}", tz.name())];
    let found = transitions(tz, from, to);
    let initial = observance(tz, from);
    if found.is_empty() {
        lines.extend(subcomponent("STANDARD", "19700101T000000".into(), &initial, &initial));
    } else {
        let kind = if initial.daylight { "DAYLIGHT" } else { "STANDARD" };
        let start = wall_time(from, initial.offset);
        lines.extend(subcomponent(kind, start, &initial, &initial));
        for tr in &found {
            let kind = if tr.to.daylight { "DAYLIGHT" } else { "STANDARD" };
            // DTSTART is the local wall time of the onset, reckoned in the offset before it.
            lines.extend(subcomponent(kind, wall_time(tr.at, tr.from.offset), &tr.from, &tr.to));
        }
    }
    lines.push("END:VTIMEZONE".into());
    lines
}

fn wall_time(at: DateTime<Utc>, offset_seconds: i32) -> String {
    let local: NaiveDateTime = at.naive_utc() + Duration::seconds(i64::from(offset_seconds));
    local.format("%Y%m%dT%H%M%S").to_string()
}

fn subcomponent(kind: &str, dtstart: String, from: &Observance, to: &Observance) -> Vec<String> {
    vec![
        format!("BEGIN:{kind}"),
        format!("DTSTART:{dtstart}"),
        format!("TZOFFSETFROM:{}", format_offset(from.offset)),
        format!("TZOFFSETTO:{}", format_offset(to.offset)),
        format!("TZNAME:{}", escape_text(&to.name)),
        format!("END:{kind}"),
    ]
}

/// `+HHMM`, or `+HHMMSS` for an offset with seconds (RFC 5545 UTC-OFFSET).
fn format_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if sec == 0 { format!("{sign}{h:02}{m:02}") } else { format!("{sign}{h:02}{m:02}{sec:02}") }
}

#[cfg(test)]
mod tests {
    use parley_core::notice::{Attendee, Person};

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap()
    }

    fn person(name: &str, email: &str) -> Person {
        Person { name: name.into(), email: email.into() }
    }

    fn event() -> CalendarEvent {
        CalendarEvent {
            method: CalendarMethod::Request,
            uid: "0191e0f2-aaaa-7bbb-8ccc-123456789abc@parley".into(),
            sequence: 0,
            title: "Weekly sync".into(),
            // 10:00 in New York (EST, before the 14 March switch).
            start: utc(2027, 3, 2, 15, 0),
            duration_minutes: 45,
            timezone: "America/New_York".into(),
            rrule: None,
            exdates: vec![],
            recurrence_id: None,
            organizer: person("Hilda Host", "host@example.com"),
            attendees: vec![
                Attendee { person: person("Hilda Host", "host@example.com"), chair: true },
                Attendee { person: person("Gus Guest", "guest@example.com"), chair: false },
            ],
            stamp: utc(2027, 2, 20, 8, 30),
        }
    }

    /// The content lines of an iCalendar text, unfolded.
    fn unfold(ics: &str) -> Vec<String> {
        ics.replace("\r\n ", "").split("\r\n").filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    fn vevent(lines: &[String]) -> Vec<String> {
        lines.iter().skip_while(|l| *l != "BEGIN:VEVENT").cloned().collect()
    }

    const URL: &str = "https://meet.example.com/j/0191e0f2-aaaa-7bbb-8ccc-123456789abc";

    #[test]
    fn escapes_text_values() {
        assert_eq!(escape_text("a\\b;c,d\ne"), "a\\\\b\\;c\\,d\\ne");
        assert_eq!(escape_text("x\r\ny\u{7}z\tw"), "x\\nyzw");
    }

    #[test]
    fn folds_at_75_octets_without_splitting_characters() {
        let line = format!("SUMMARY:{}", "é".repeat(100));
        let folded = fold(&line);
        for (i, physical) in folded.split("\r\n").enumerate() {
            assert!(physical.len() <= 75, "line {i} is {} octets", physical.len());
            if i > 0 {
                assert!(physical.starts_with(' ') && !physical.starts_with("  "));
            }
        }
        assert_eq!(folded.replace("\r\n ", ""), line);
        assert_eq!(fold("SHORT:x"), "SHORT:x");
        let exact = "X".repeat(75);
        assert_eq!(fold(&exact), exact);
        assert_eq!(fold(&"X".repeat(76)), format!("{}\r\n X", "X".repeat(75)));
    }

    #[test]
    fn every_line_ends_with_crlf_and_is_short() {
        let mut ev = event();
        ev.title = "A very long meeting title that certainly goes beyond seventy-five octets, with ünïcödé".into();
        let ics = render(&ev, URL).unwrap();
        assert!(ics.ends_with("END:VCALENDAR\r\n"));
        assert!(!ics.replace("\r\n", "").contains('\n'));
        for physical in ics.split("\r\n") {
            assert!(physical.len() <= 75);
        }
    }

    #[test]
    fn renders_a_single_invitation() {
        let lines = unfold(&render(&event(), URL).unwrap());
        for expected in [
            "VERSION:2.0",
            "PRODID:-//Parley//Parley//EN",
            "CALSCALE:GREGORIAN",
            "METHOD:REQUEST",
            "UID:0191e0f2-aaaa-7bbb-8ccc-123456789abc@parley",
            "SEQUENCE:0",
            "DTSTAMP:20270220T083000Z",
            "DTSTART;TZID=America/New_York:20270302T100000",
            "DTEND;TZID=America/New_York:20270302T104500",
            "SUMMARY:Weekly sync",
            &format!("URL:{URL}"),
            &format!("LOCATION:{URL}"),
            "ORGANIZER;CN=\"Hilda Host\":mailto:host@example.com",
            "ATTENDEE;CN=\"Hilda Host\";ROLE=CHAIR;PARTSTAT=ACCEPTED:mailto:host@example.com",
            "ATTENDEE;CN=\"Gus Guest\";ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:guest@example.com",
            "STATUS:CONFIRMED",
        ] {
            assert!(lines.iter().any(|l| l == expected), "missing {expected:?} in {lines:#?}");
        }
        let description = lines.iter().find(|l| l.starts_with("DESCRIPTION:")).unwrap();
        assert!(description.contains(URL));
        assert!(
            !lines.iter().any(|l| l.starts_with("RRULE") || l.starts_with("EXDATE") || l.starts_with("RECURRENCE-ID"))
        );
        assert_eq!(lines.iter().filter(|l| *l == "BEGIN:VEVENT").count(), 1);
    }

    #[test]
    fn renders_a_series_with_rrule_and_exdates() {
        let mut ev = event();
        ev.rrule = Some("FREQ=WEEKLY;BYDAY=TU;COUNT=10;WKST=MO".into());
        // The 16 March occurrence is after the DST switch: 10:00 EDT is 14:00 UTC.
        ev.exdates = vec![utc(2027, 3, 9, 15, 0), utc(2027, 3, 16, 14, 0)];
        let lines = vevent(&unfold(&render(&ev, URL).unwrap()));
        assert!(lines.contains(&"RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=10;WKST=MO".to_owned()));
        assert!(lines.contains(&"EXDATE;TZID=America/New_York:20270309T100000,20270316T100000".to_owned()));
    }

    #[test]
    fn a_rule_cannot_inject_lines() {
        let mut ev = event();
        ev.rrule = Some("FREQ=DAILY\r\nATTENDEE:mailto:evil@x".into());
        let lines = unfold(&render(&ev, URL).unwrap());
        assert!(lines.contains(&"RRULE:FREQ=DAILYATTENDEEmailtoevilx".to_owned()));
        assert!(!lines.iter().any(|l| l.starts_with("ATTENDEE:")));
        assert_eq!(lines.iter().filter(|l| l.starts_with("ATTENDEE")).count(), 2);
    }

    #[test]
    fn renders_a_moved_occurrence_with_recurrence_id() {
        let mut ev = event();
        ev.sequence = 3;
        ev.recurrence_id = Some(utc(2027, 3, 9, 15, 0));
        ev.start = utc(2027, 3, 10, 16, 30);
        let lines = vevent(&unfold(&render(&ev, URL).unwrap()));
        assert!(lines.contains(&"RECURRENCE-ID;TZID=America/New_York:20270309T100000".to_owned()));
        assert!(lines.contains(&"DTSTART;TZID=America/New_York:20270310T113000".to_owned()));
        assert!(lines.contains(&"SEQUENCE:3".to_owned()));
    }

    #[test]
    fn renders_a_cancellation() {
        let mut ev = event();
        ev.method = CalendarMethod::Cancel;
        ev.sequence = 1;
        let lines = unfold(&render(&ev, URL).unwrap());
        assert!(lines.contains(&"METHOD:CANCEL".to_owned()));
        assert!(lines.contains(&"STATUS:CANCELLED".to_owned()));
        assert!(!lines.contains(&"STATUS:CONFIRMED".to_owned()));
    }

    /// The (kind, DTSTART, TZOFFSETFROM, TZOFFSETTO, TZNAME) of every VTIMEZONE subcomponent.
    fn observances(lines: &[String]) -> Vec<(String, String, String, String, String)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if lines[i] == "BEGIN:STANDARD" || lines[i] == "BEGIN:DAYLIGHT" {
                let kind = lines[i]["BEGIN:".len()..].to_owned();
                let get = |p: &str| lines[i..].iter().find_map(|l| l.strip_prefix(p)).unwrap().to_owned();
                out.push((kind, get("DTSTART:"), get("TZOFFSETFROM:"), get("TZOFFSETTO:"), get("TZNAME:")));
            }
            i += 1;
        }
        out
    }

    #[test]
    fn new_york_has_daylight_and_standard_for_2027() {
        let lines = unfold(&render(&event(), URL).unwrap());
        assert!(lines.contains(&"TZID:America/New_York".to_owned()));
        let obs = observances(&lines);
        assert!(obs.contains(&(
            "DAYLIGHT".into(),
            "20270314T020000".into(),
            "-0500".into(),
            "-0400".into(),
            "EDT".into()
        )));
        assert!(obs.contains(&(
            "STANDARD".into(),
            "20271107T020000".into(),
            "-0400".into(),
            "-0500".into(),
            "EST".into()
        )));
        // The span reaches a year before the start and two after it.
        assert!(obs.iter().any(|o| o.1 == "20260308T020000"));
        assert!(obs.iter().any(|o| o.1 == "20281105T020000"));
        assert!(!obs.iter().any(|o| o.1.as_str() >= "20290301"), "nothing past the span: {obs:?}");
        // The VTIMEZONE comes before the event that uses it.
        let tz_at = lines.iter().position(|l| l == "BEGIN:VTIMEZONE").unwrap();
        assert!(tz_at < lines.iter().position(|l| l == "BEGIN:VEVENT").unwrap());
    }

    #[test]
    fn a_long_series_extends_the_timezone_span() {
        let mut ev = event();
        ev.rrule = Some("FREQ=WEEKLY;UNTIL=20320401T150000Z".into());
        let obs = observances(&unfold(&render(&ev, URL).unwrap()));
        // A year past UNTIL: the March 2033 switch, not the November one.
        assert!(obs.iter().any(|o| o.1 == "20321107T020000" && o.0 == "STANDARD"));
        assert!(obs.iter().any(|o| o.1 == "20330313T020000" && o.0 == "DAYLIGHT"));
        assert!(!obs.iter().any(|o| o.1.starts_with("203311")));
    }

    #[test]
    fn fixed_zones_get_one_standard() {
        for (zone, offset, name, local) in
            [("UTC", "+0000", "UTC", "20270302T150000"), ("Asia/Kolkata", "+0530", "IST", "20270302T203000")]
        {
            let mut ev = event();
            ev.timezone = zone.into();
            let lines = unfold(&render(&ev, URL).unwrap());
            let obs = observances(&lines);
            assert_eq!(
                obs,
                vec![("STANDARD".into(), "19700101T000000".into(), offset.into(), offset.into(), name.into())],
                "{zone}"
            );
            assert!(lines.contains(&format!("DTSTART;TZID={zone}:{local}")));
        }
    }

    #[test]
    fn unknown_zones_are_an_error() {
        let mut ev = event();
        ev.timezone = "Mars/Olympus_Mons".into();
        assert_eq!(render(&ev, URL), Err(IcalError::UnknownTimeZone("Mars/Olympus_Mons".into())));
    }

    #[test]
    fn injection_in_the_title_stays_in_one_summary_line() {
        let mut ev = event();
        ev.title = "x\r\nATTENDEE:mailto:evil@x".into();
        ev.organizer.name = "Eve \"CN\"\r\nX:y".into();
        let ics = render(&ev, URL).unwrap();
        let lines = unfold(&ics);
        assert!(lines.contains(&"SUMMARY:x\\nATTENDEE:mailto:evil@x".to_owned()));
        assert!(!lines.iter().any(|l| l.starts_with("ATTENDEE:")));
        assert_eq!(lines.iter().filter(|l| l.starts_with("ATTENDEE")).count(), 2);
        assert!(lines.contains(&"ORGANIZER;CN=\"Eve CNX:y\":mailto:host@example.com".to_owned()));
        assert!(!ics.replace("\r\n", "").contains('\r'));
    }

    #[test]
    fn offsets_are_formatted_per_rfc() {
        assert_eq!(format_offset(-5 * 3600), "-0500");
        assert_eq!(format_offset(5 * 3600 + 45 * 60), "+0545");
        assert_eq!(format_offset(0), "+0000");
        assert_eq!(format_offset(-(3600 + 30)), "-010030");
    }
}
