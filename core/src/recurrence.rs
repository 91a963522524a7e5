//! Recurring meetings: expand a rule into the instants of its occurrences.
//!
//! A recurring meeting is defined in *local* time: "every weekday at 10:00 in
//! America/Los_Angeles". The instants are therefore computed day by day in the meeting's IANA
//! zone and only then converted to UTC, so a DST change moves the UTC instant and keeps the
//! local wall-clock time. Two edge cases of local time are resolved the way calendar programs do:
//! a wall-clock time that does not exist (spring-forward gap) moves forward by the gap, a time
//! that exists twice (fall-back overlap) takes the earlier instant.
//!
//! Series are bounded: a rule must end (`until` or `count`) and may produce at most
//! [`MAX_OCCURRENCES`] occurrences, like production conferencing products do. Each occurrence is
//! stored as its own meeting row, so an unbounded series is not representable by design.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::model::Frequency;

/// The most occurrences one series may have.
pub const MAX_OCCURRENCES: usize = 50;
/// The largest `interval` (every N days/weeks/months) accepted.
pub const MAX_INTERVAL: u32 = 12;

/// How a series ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesEnd {
    /// The last local date an occurrence may fall on (inclusive).
    Until(NaiveDate),
    /// Exactly this many occurrences.
    Count(u32),
}

/// A validated recurrence rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceRule {
    /// Daily, weekly or monthly.
    pub frequency: Frequency,
    /// Every `interval` days/weeks/months (1 = every one).
    pub interval: u32,
    /// Weekdays an occurrence may fall on; empty means "any day" for daily and "the first
    /// occurrence's weekday" for weekly. Not allowed for monthly.
    pub days: Vec<Weekday>,
    /// When the series stops.
    pub end: SeriesEnd,
}

/// Why a rule cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    #[error("a recurrence needs exactly one of `until` or `count`")]
    EndMissingOrAmbiguous,
    #[error("`count` must be between 1 and {MAX_OCCURRENCES}")]
    CountOutOfRange,
    #[error("`interval` must be between 1 and {MAX_INTERVAL}")]
    IntervalOutOfRange,
    #[error("`until` ({until}) is before the first occurrence ({first})")]
    UntilBeforeStart { until: NaiveDate, first: NaiveDate },
    #[error("`days` is not allowed for a monthly recurrence")]
    DaysWithMonthly,
    #[error("`{0}` is not a weekday (use Mon, Tue, … or Monday, Tuesday, …)")]
    BadWeekday(String),
    #[error("the rule produces more than {MAX_OCCURRENCES} occurrences; shorten `until`")]
    TooManyOccurrences,
    #[error("the rule produces no occurrence")]
    NoOccurrences,
}

/// Parses `Mon`, `monday`, `MON`, … into a weekday.
pub fn parse_weekday(s: &str) -> Result<Weekday, RecurrenceError> {
    let lower = s.trim().to_ascii_lowercase();
    let day = match lower.as_str() {
        "mon" | "monday" => Weekday::Mon,
        "tue" | "tues" | "tuesday" => Weekday::Tue,
        "wed" | "wednesday" => Weekday::Wed,
        "thu" | "thur" | "thurs" | "thursday" => Weekday::Thu,
        "fri" | "friday" => Weekday::Fri,
        "sat" | "saturday" => Weekday::Sat,
        "sun" | "sunday" => Weekday::Sun,
        _ => return Err(RecurrenceError::BadWeekday(s.to_owned())),
    };
    Ok(day)
}

impl RecurrenceRule {
    /// Builds a rule from its raw parts, checking everything that does not need a start time.
    pub fn new(
        frequency: Frequency,
        interval: Option<u32>,
        days: &[String],
        until: Option<NaiveDate>,
        count: Option<u32>,
    ) -> Result<Self, RecurrenceError> {
        let interval = interval.unwrap_or(1);
        if !(1..=MAX_INTERVAL).contains(&interval) {
            return Err(RecurrenceError::IntervalOutOfRange);
        }
        let end = match (until, count) {
            (Some(u), None) => SeriesEnd::Until(u),
            (None, Some(c)) if (1..=MAX_OCCURRENCES as u32).contains(&c) => SeriesEnd::Count(c),
            (None, Some(_)) => return Err(RecurrenceError::CountOutOfRange),
            _ => return Err(RecurrenceError::EndMissingOrAmbiguous),
        };
        let mut parsed = days.iter().map(|d| parse_weekday(d)).collect::<Result<Vec<_>, _>>()?;
        parsed.sort_by_key(|d| d.num_days_from_monday());
        parsed.dedup();
        if frequency == Frequency::Monthly && !parsed.is_empty() {
            return Err(RecurrenceError::DaysWithMonthly);
        }
        Ok(RecurrenceRule { frequency, interval, days: parsed, end })
    }

    /// The rule's weekdays as short names (`Mon,Wed`), the form stored in the database.
    pub fn days_csv(&self) -> String {
        self.days.iter().map(|d| format!("{d}")).collect::<Vec<_>>().join(",")
    }

    /// The UTC instants of every occurrence, the first at (or after) `first`'s local date and
    /// all at `first`'s local wall-clock time in `tz`.
    pub fn expand(&self, first: DateTime<Utc>, tz: Tz) -> Result<Vec<DateTime<Utc>>, RecurrenceError> {
        let local = first.with_timezone(&tz).naive_local();
        let (start_date, time) = (local.date(), local.time());
        if let SeriesEnd::Until(until) = self.end
            && until < start_date
        {
            return Err(RecurrenceError::UntilBeforeStart { until, first: start_date });
        }
        let dates = self.local_dates(start_date)?;
        if dates.is_empty() {
            return Err(RecurrenceError::NoOccurrences);
        }
        Ok(dates.into_iter().map(|d| resolve_local(tz, d.and_time(time))).collect())
    }

    /// The local dates of the occurrences, in order.
    fn local_dates(&self, start: NaiveDate) -> Result<Vec<NaiveDate>, RecurrenceError> {
        let wanted = match self.end {
            SeriesEnd::Count(c) => c as usize,
            SeriesEnd::Until(_) => MAX_OCCURRENCES,
        };
        let in_range = |d: NaiveDate| match self.end {
            SeriesEnd::Until(u) => d <= u,
            SeriesEnd::Count(_) => true,
        };
        let mut out = Vec::new();
        let mut push = |d: NaiveDate| -> Result<bool, RecurrenceError> {
            if !in_range(d) {
                return Ok(false);
            }
            if out.len() == wanted {
                return match self.end {
                    SeriesEnd::Until(_) => Err(RecurrenceError::TooManyOccurrences),
                    SeriesEnd::Count(_) => Ok(false),
                };
            }
            out.push(d);
            Ok(true)
        };
        let interval = i64::from(self.interval);
        match self.frequency {
            Frequency::Daily | Frequency::Weekly => {
                let days: Vec<Weekday> = match (self.frequency, self.days.is_empty()) {
                    (Frequency::Weekly, true) => vec![start.weekday()],
                    (_, _) => self.days.clone(),
                };
                let week0 = start - Duration::days(i64::from(start.weekday().num_days_from_monday()));
                // Walk day by day; a bounded series of ≤ 50 occurrences at interval ≤ 12 weeks
                // spans at most ~12 years of days, so this loop is bounded and cheap.
                let mut d = start;
                loop {
                    let matches_day = days.is_empty() || days.contains(&d.weekday());
                    let matches_interval = match self.frequency {
                        Frequency::Daily => (d - start).num_days() % interval == 0,
                        _ => ((d - week0).num_days() / 7) % interval == 0,
                    };
                    if matches_day && matches_interval && !push(d)? {
                        break;
                    }
                    d = d.succ_opt().ok_or(RecurrenceError::NoOccurrences)?;
                    if (d - start).num_days() > 366 * 13 {
                        break;
                    }
                }
            }
            Frequency::Monthly => {
                let mut k: i64 = 0;
                // Months lacking the start's day (e.g. the 31st) are skipped, not clamped.
                while k < 12 * 13 {
                    let months = start.month0() as i64 + k;
                    let year = start.year() + (months / 12) as i32;
                    let month = (months % 12) as u32 + 1;
                    if let Some(d) = NaiveDate::from_ymd_opt(year, month, start.day())
                        && !push(d)?
                    {
                        break;
                    }
                    k += interval;
                }
            }
        }
        Ok(out)
    }
}

/// Converts a local wall-clock time to UTC: a time inside a spring-forward gap moves forward by
/// the gap's length, an ambiguous fall-back time takes the earlier instant.
pub fn resolve_local(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Inside a spring-forward gap: interpret the wall-clock time with the offset in force
            // just before the gap (RFC 5545 §3.3.5), so 02:30 becomes 03:30 after a 1-hour jump.
            let before = tz
                .from_local_datetime(&(naive - Duration::hours(3)))
                .earliest()
                .map(|t| t.offset().fix().local_minus_utc())
                .unwrap_or(0);
            Utc.from_utc_datetime(&(naive - Duration::seconds(i64::from(before))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rule(f: Frequency, days: &[&str], until: Option<&str>, count: Option<u32>) -> RecurrenceRule {
        let days: Vec<String> = days.iter().map(|s| s.to_string()).collect();
        let until = until.map(|u| NaiveDate::parse_from_str(u, "%Y-%m-%d").unwrap());
        RecurrenceRule::new(f, None, &days, until, count).unwrap()
    }

    #[test]
    fn daily_series_keeps_local_time_across_spring_forward() {
        // 2026-03-08 is the US spring-forward day: PST (UTC-8) becomes PDT (UTC-7).
        let tz: Tz = "America/Los_Angeles".parse().unwrap();
        let r = rule(Frequency::Daily, &[], None, Some(4));
        let got = r.expand(utc("2026-03-06T18:00:00Z"), tz).unwrap();
        let utc_hours: Vec<u32> = got.iter().map(|t| t.hour()).collect();
        assert_eq!(utc_hours, vec![18, 18, 17, 17], "UTC moves by an hour");
        for t in &got {
            assert_eq!(t.with_timezone(&tz).hour(), 10, "local time stays 10:00: {t}");
        }
    }

    #[test]
    fn daily_series_keeps_local_time_across_fall_back() {
        // 2026-11-01: PDT (UTC-7) becomes PST (UTC-8).
        let tz: Tz = "America/Los_Angeles".parse().unwrap();
        let r = rule(Frequency::Daily, &[], Some("2026-11-02"), None);
        let got = r.expand(utc("2026-10-31T17:00:00Z"), tz).unwrap();
        assert_eq!(got, vec![utc("2026-10-31T17:00:00Z"), utc("2026-11-01T18:00:00Z"), utc("2026-11-02T18:00:00Z")]);
    }

    #[test]
    fn daily_with_days_skips_weekends() {
        let tz: Tz = "UTC".parse().unwrap();
        // 2026-11-20 is a Friday.
        let r = rule(Frequency::Daily, &["Mon", "Tue", "Wed", "Thu", "Fri"], None, Some(3));
        let got = r.expand(utc("2026-11-20T09:00:00Z"), tz).unwrap();
        assert_eq!(got, vec![utc("2026-11-20T09:00:00Z"), utc("2026-11-23T09:00:00Z"), utc("2026-11-24T09:00:00Z")]);
    }

    #[test]
    fn weekly_defaults_to_start_weekday_and_honours_interval() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let r = RecurrenceRule::new(Frequency::Weekly, Some(2), &[], None, Some(3)).unwrap();
        let got = r.expand(utc("2026-11-24T08:00:00Z"), tz).unwrap();
        assert_eq!(got, vec![utc("2026-11-24T08:00:00Z"), utc("2026-12-08T08:00:00Z"), utc("2026-12-22T08:00:00Z")]);
    }

    #[test]
    fn weekly_on_several_days_starts_on_the_first_matching_day() {
        let tz: Tz = "UTC".parse().unwrap();
        // Start on Tuesday 2026-11-24 with days Mon/Wed: first occurrence is Wednesday.
        let r = rule(Frequency::Weekly, &["monday", "WED"], None, Some(3));
        let got = r.expand(utc("2026-11-24T12:00:00Z"), tz).unwrap();
        assert_eq!(got, vec![utc("2026-11-25T12:00:00Z"), utc("2026-11-30T12:00:00Z"), utc("2026-12-02T12:00:00Z")]);
    }

    #[test]
    fn monthly_skips_months_without_the_day() {
        let tz: Tz = "UTC".parse().unwrap();
        let r = rule(Frequency::Monthly, &[], None, Some(3));
        let got = r.expand(utc("2027-01-31T12:00:00Z"), tz).unwrap();
        assert_eq!(got, vec![utc("2027-01-31T12:00:00Z"), utc("2027-03-31T12:00:00Z"), utc("2027-05-31T12:00:00Z")]);
    }

    #[test]
    fn nonexistent_local_time_moves_forward() {
        let tz: Tz = "America/Los_Angeles".parse().unwrap();
        let naive = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap().and_hms_opt(2, 30, 0).unwrap();
        let t = resolve_local(tz, naive);
        assert_eq!(t.with_timezone(&tz).hour(), 3);
        assert_eq!(t.with_timezone(&tz).minute(), 30);
    }

    #[test]
    fn rule_validation() {
        use RecurrenceError::*;
        let none: &[String] = &[];
        assert_eq!(RecurrenceRule::new(Frequency::Daily, None, none, None, None), Err(EndMissingOrAmbiguous));
        let d = NaiveDate::from_ymd_opt(2027, 1, 1);
        assert_eq!(RecurrenceRule::new(Frequency::Daily, None, none, d, Some(2)), Err(EndMissingOrAmbiguous));
        assert_eq!(RecurrenceRule::new(Frequency::Daily, None, none, None, Some(0)), Err(CountOutOfRange));
        assert_eq!(RecurrenceRule::new(Frequency::Daily, None, none, None, Some(51)), Err(CountOutOfRange));
        assert_eq!(RecurrenceRule::new(Frequency::Daily, Some(0), none, None, Some(2)), Err(IntervalOutOfRange));
        let days = vec!["Mon".to_string()];
        assert_eq!(RecurrenceRule::new(Frequency::Monthly, None, &days, None, Some(2)), Err(DaysWithMonthly));
        let bad = vec!["Someday".to_string()];
        assert!(matches!(RecurrenceRule::new(Frequency::Weekly, None, &bad, None, Some(2)), Err(BadWeekday(_))));
    }

    #[test]
    fn until_too_far_or_before_start_is_rejected() {
        let tz: Tz = "UTC".parse().unwrap();
        let r = rule(Frequency::Daily, &[], Some("2027-06-01"), None);
        assert_eq!(r.expand(utc("2026-11-24T12:00:00Z"), tz), Err(RecurrenceError::TooManyOccurrences));
        let r = rule(Frequency::Daily, &[], Some("2026-11-01"), None);
        assert!(matches!(r.expand(utc("2026-11-24T12:00:00Z"), tz), Err(RecurrenceError::UntilBeforeStart { .. })));
    }

    #[test]
    fn exactly_fifty_occurrences_is_allowed() {
        let tz: Tz = "UTC".parse().unwrap();
        let r = rule(Frequency::Daily, &[], Some("2027-01-12"), None);
        assert_eq!(r.expand(utc("2026-11-24T12:00:00Z"), tz).unwrap().len(), 50);
        assert_eq!(r.days_csv(), "");
        let r = rule(Frequency::Weekly, &["Wed", "Mon"], None, Some(2));
        assert_eq!(r.days_csv(), "Mon,Wed");
    }
}
