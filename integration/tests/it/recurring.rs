//! Recurring series: DST-stable local times, one occurrence cancelled or moved on its own,
//! the whole series cancelled, rule validation.

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::America::Los_Angeles;
use parley_integration::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{assert_error, create_meeting, id_of, in_hours, meeting_body, node_with_host, on_both_backends};

on_both_backends!(
    daily_series_keeps_local_time_across_dst,
    one_occurrence_changes_alone,
    recurrence_rules_are_validated
);

/// The next US spring-forward day (second Sunday of March) at least three days away.
fn next_spring_forward() -> NaiveDate {
    let today = Utc::now().date_naive();
    (today.year()..today.year() + 2)
        .filter_map(|y| NaiveDate::from_weekday_of_month_opt(y, 3, Weekday::Sun, 2))
        .find(|d| *d > today + Duration::days(3))
        .expect("a March within two years")
}

async fn daily_series_keeps_local_time_across_dst(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let dst = next_spring_forward();
    let first_local = (dst - Duration::days(2)).and_hms_opt(10, 0, 0).unwrap();
    let first = Los_Angeles.from_local_datetime(&first_local).single().unwrap().with_timezone(&Utc);
    let mut body = meeting_body("Standup", first);
    body["timezone"] = json!("America/Los_Angeles");
    body["recurrence"] = json!({"frequency": "daily", "count": 5});
    body["participants"] = json!([{"email": "alice@example.com"}]);
    let m = create_meeting(&node, &host, body).await;
    assert_eq!(m["meeting_type"], "recurring");
    let occ = m["occurrences"].as_array().unwrap();
    assert_eq!(occ.len(), 5);
    let utc_hours: Vec<u32> = occ
        .iter()
        .map(|o| o["scheduled_time"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap())
        .map(|t| {
            assert_eq!(t.with_timezone(&Los_Angeles).hour(), 10, "10:00 local every day: {t}");
            t.hour()
        })
        .collect();
    assert_eq!(utc_hours, vec![18, 18, 17, 17, 17], "PST (UTC-8) then PDT (UTC-7)");

    // Each occurrence is a meeting with its own participants and an occurrence row.
    assert_eq!(node.count("meetings").await, 5);
    assert_eq!(node.count("meeting_participants").await, 10);
    assert_eq!(node.count("recurring_occurrences WHERE is_exception = false").await, 5);
    let series = id_of(&m, "series_id");
    let (status, s) = node.call(Method::GET, &format!("/api/series/{series}"), Some(&host), None).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["frequency"], "daily");
    assert_eq!(s["local_start_time"], "10:00:00");
    assert_eq!(s["timezone"], "America/Los_Angeles");
    assert_eq!(s["occurrences"].as_array().unwrap().len(), 5);

    // The invitee sees every occurrence as upcoming.
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let (_, up) = node.call(Method::GET, "/api/meetings/upcoming?limit=10", Some(&alice), None).await;
    assert_eq!(up["meetings"].as_array().unwrap().len(), 5);
}

fn occurrences(s: &Value) -> Vec<(String, String, bool, String)> {
    s["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["meeting_id"].as_str().unwrap().to_owned(),
                o["status"].as_str().unwrap().to_owned(),
                o["is_exception"].as_bool().unwrap(),
                o["scheduled_time"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn one_occurrence_changes_alone(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let (_, eve) = node.user("eve@example.com", "Eve").await;
    let mut body = meeting_body("Weekly sync", in_hours(24));
    body["recurrence"] = json!({"frequency": "weekly", "count": 4});
    let m = create_meeting(&node, &host, body).await;
    let series = id_of(&m, "series_id");
    let spath = format!("/api/series/{series}");
    let (_, before) = node.call(Method::GET, &spath, Some(&host), None).await;
    let before = occurrences(&before);
    assert_eq!(before.len(), 4);

    // Cancel the second occurrence.
    let (status, _) = node.call(Method::DELETE, &format!("/api/meetings/{}", before[1].0), Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    // Move the third by two hours.
    let moved_to = before[2].3.parse::<chrono::DateTime<Utc>>().unwrap() + Duration::hours(2);
    let (status, got) = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{}", before[2].0),
            Some(&host),
            Some(json!({"scheduled_time": moved_to.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["is_exception"], true);

    let (_, after) = node.call(Method::GET, &spath, Some(&host), None).await;
    let rows = after["occurrences"].as_array().unwrap().clone();
    let after = occurrences(&after);
    assert_eq!(after[0], before[0], "untouched");
    assert_eq!(after[3], before[3], "untouched");
    assert_eq!((after[1].1.as_str(), after[1].2), ("cancelled", true));
    assert_eq!((after[2].1.as_str(), after[2].2), ("scheduled", true));
    assert_eq!(after[2].3.parse::<chrono::DateTime<Utc>>().unwrap(), moved_to);
    assert_eq!(rows[2]["occurrence_time"].as_str().unwrap(), before[2].3, "the rule's slot is remembered");
    assert_eq!(node.count("recurring_occurrences WHERE is_exception = true").await, 2);
    let (_, up) = node.call(Method::GET, "/api/meetings/upcoming", Some(&host), None).await;
    assert_eq!(up["meetings"].as_array().unwrap().len(), 3, "the cancelled occurrence is not upcoming");

    assert_error(&node.call(Method::GET, &spath, Some(&eve), None).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&node.call(Method::DELETE, &spath, Some(&eve), None).await, StatusCode::FORBIDDEN, "forbidden");
    let (status, v) = node.call(Method::DELETE, &spath, Some(&host), None).await;
    assert_eq!((status, v["cancelled_occurrences"].as_u64()), (StatusCode::OK, Some(3)));
    assert_eq!(node.count("meetings WHERE status = 'cancelled'").await, 4);
    let missing = format!("/api/series/{}", uuid::Uuid::new_v4());
    assert_error(&node.call(Method::GET, &missing, Some(&host), None).await, StatusCode::NOT_FOUND, "not_found");
}

async fn recurrence_rules_are_validated(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let start = in_hours(24);
    let until_before = (start - Duration::days(2)).date_naive().to_string();
    let too_far = (start + Duration::days(200)).date_naive().to_string();
    for (recurrence, meeting_type) in [
        (json!({"frequency": "daily"}), None),
        (json!({"frequency": "daily", "count": 51}), None),
        (json!({"frequency": "daily", "count": 3, "until": too_far}), None),
        (json!({"frequency": "daily", "until": until_before}), None),
        (json!({"frequency": "daily", "until": too_far}), None),
        (json!({"frequency": "monthly", "count": 3, "days": ["Mon"]}), None),
        (json!({"frequency": "weekly", "count": 3, "days": ["Someday"]}), None),
        (json!({"frequency": "daily", "count": 3, "interval": 0}), None),
        (json!({"frequency": "daily", "count": 3}), Some("scheduled")),
    ] {
        let mut body = meeting_body("Bad series", start);
        body["recurrence"] = recurrence.clone();
        if let Some(t) = meeting_type {
            body["meeting_type"] = json!(t);
        }
        let r = node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let mut body = meeting_body("No rule", start);
    body["meeting_type"] = json!("recurring");
    assert_error(
        &node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    );
    let mut body = meeting_body("Wrong type", start);
    body["recurrence"] = json!({"frequency": "hourly", "count": 2});
    assert_error(
        &node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    assert_eq!(node.count("meetings").await, 0);
    assert_eq!(node.count("recurring_series").await, 0);
}
