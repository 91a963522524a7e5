//! The seed's three queries through the API: upcoming meetings, join check, per-day analytics.

use chrono::{Duration, Utc};
use parley_integration::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{assert_error, create_meeting, id_of, in_hours, meeting_body, node_with_host, on_both_backends};

on_both_backends!(upcoming_meetings_as_host_and_invitee, join_check_decisions, per_day_analytics);

fn titles(v: &Value) -> Vec<String> {
    v["meetings"].as_array().unwrap().iter().map(|m| m["title"].as_str().unwrap().to_owned()).collect()
}

async fn upcoming_meetings_as_host_and_invitee(backend: Backend) {
    let (node, host_id, host) = node_with_host(backend).await;
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let (_, bob) = node.user("bob@example.com", "Bob").await;

    let invite = |title: &str, hours: i64| {
        let mut b = meeting_body(title, in_hours(hours));
        b["participants"] = json!([{"email": "alice@example.com", "role": "co_host"}]);
        b
    };
    create_meeting(&node, &host, invite("Later", 48)).await;
    create_meeting(&node, &host, invite("Soon", 2)).await;
    create_meeting(&node, &host, invite("Middle", 20)).await;
    create_meeting(&node, &host, meeting_body("Host only", in_hours(5))).await;
    let past = id_of(&create_meeting(&node, &host, invite("Gone by", 1)).await, "meeting_id");
    let moved_to = Utc::now() - Duration::hours(3);
    node.exec(&format!(
        "UPDATE meetings SET scheduled_time = {t} WHERE id = {id}",
        t = node.ts_lit(moved_to),
        id = node.id_lit(past)
    ))
    .await;
    node.exec(&format!(
        "UPDATE meeting_participants SET scheduled_time = {t} WHERE meeting_id = {id}",
        t = node.ts_lit(moved_to),
        id = node.id_lit(past)
    ))
    .await;
    let started = id_of(&create_meeting(&node, &host, invite("Already live", 1)).await, "meeting_id");
    node.exec(&format!("UPDATE meetings SET status = 'active' WHERE id = {}", node.id_lit(started))).await;
    // Bob hosts his own meeting with Alice: Alice sees it, the first host does not.
    let mut b = meeting_body("Bob's", in_hours(30));
    b["participants"] = json!([{"email": "alice@example.com"}]);
    create_meeting(&node, &bob, b).await;

    let (status, mine) = node.call(Method::GET, "/api/meetings/upcoming", Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(titles(&mine), vec!["Soon", "Host only", "Middle", "Later"]);
    assert!(
        mine["meetings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] == "host" && m["host_display_name"] == "Hannah Host")
    );

    let (_, hers) = node.call(Method::GET, "/api/meetings/upcoming?limit=3", Some(&alice), None).await;
    assert_eq!(titles(&hers), vec!["Soon", "Middle", "Bob's"]);
    assert_eq!(hers["meetings"][0]["role"], "co_host");
    assert_eq!(hers["meetings"][0]["host_user_id"], host_id.to_string());
    assert_eq!(hers["meetings"][2]["role"], "attendee");
    assert_eq!(hers["meetings"][2]["host_display_name"], "Bob");

    for bad in ["limit=0", "limit=101", "limit=ten", "limit=-1", "since=yesterday"] {
        let r = node.call(Method::GET, &format!("/api/meetings/upcoming?{bad}"), Some(&alice), None).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{bad}: {}", r.1);
    }
}

async fn join_check_decisions(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let (_, carol) = node.user("carol@example.com", "Carol").await;
    let (_, eve) = node.user("eve@example.com", "Eve").await;
    let mut body = meeting_body("Board", in_hours(1));
    body["password"] = json!("open sesame");
    body["participants"] = json!([{"email": "alice@example.com"}, {"email": "carol@example.com", "role": "co_host"}]);
    let id = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let path = format!("/api/meetings/{id}/join-check");
    let check = |token: &str, pw: Option<&str>| {
        let body = pw.map(|p| json!({"password": p}));
        let (node, path, token) = (&node, path.clone(), token.to_owned());
        async move {
            let (status, v) = node.call(Method::POST, &path, Some(&token), body).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            v["status"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(check(&host, None).await, "allowed", "the host needs neither password nor admission (and starts it)");
    assert_eq!(check(&carol, None).await, "allowed", "co-hosts too");
    assert_eq!(check(&alice, Some("open sesame")).await, "meeting_not_started", "as WebSocket `join` says");
    node.exec(&format!("UPDATE meetings SET status = 'active' WHERE id = {}", node.id_lit(id))).await;
    assert_eq!(check(&alice, None).await, "wrong_password");
    assert_eq!(check(&alice, Some("open sesam")).await, "wrong_password");
    assert_eq!(check(&alice, Some("open sesame")).await, "waiting_room");
    assert_eq!(check(&eve, Some("open sesame")).await, "waiting_room", "uninvited people with the link wait too");

    let (status, _) = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{id}"),
            Some(&host),
            Some(json!({"settings": {"waiting_room": false}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(check(&alice, Some("open sesame")).await, "allowed", "a live meeting without waiting room");
    node.exec(&format!("UPDATE meetings SET status = 'ended' WHERE id = {}", node.id_lit(id))).await;
    assert_eq!(check(&alice, Some("open sesame")).await, "meeting_not_available");
    assert_eq!(check(&host, None).await, "allowed", "the host may restart it before its scheduled end");
    let past_end = node.ts_lit(chrono::Utc::now() - chrono::Duration::hours(2));
    node.exec(&format!("UPDATE meetings SET scheduled_time = {past_end} WHERE id = {}", node.id_lit(id))).await;
    assert_eq!(check(&host, None).await, "meeting_not_available", "not after it");

    let cancelled = id_of(&create_meeting(&node, &host, meeting_body("Off", in_hours(2))).await, "meeting_id");
    node.call(Method::DELETE, &format!("/api/meetings/{cancelled}"), Some(&host), None).await;
    let (_, v) = node.call(Method::POST, &format!("/api/meetings/{cancelled}/join-check"), Some(&alice), None).await;
    assert_eq!(v["status"], "meeting_not_available");

    let missing = format!("/api/meetings/{}/join-check", uuid::Uuid::new_v4());
    assert_error(&node.call(Method::POST, &missing, Some(&alice), None).await, StatusCode::NOT_FOUND, "not_found");
    let r = node.raw(Method::POST, &path, Some(&alice), Some("application/json"), b"{\"password\": ".to_vec()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed_json");
    let r = node.call(Method::POST, &path, Some(&alice), Some(json!({"password": 1234}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");

    // Guessing is throttled: after 5 wrong passwords the 6th attempt is refused outright.
    let mut body = meeting_body("Vault", in_hours(1));
    body["password"] = json!("correct horse");
    let vault = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let vpath = format!("/api/meetings/{vault}/join-check");
    node.exec(&format!("UPDATE meetings SET status = 'active' WHERE id = {}", node.id_lit(vault))).await;
    for i in 0..5 {
        let (status, v) =
            node.call(Method::POST, &vpath, Some(&eve), Some(json!({"password": format!("guess {i}")}))).await;
        assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("wrong_password")));
    }
    let r = node.call(Method::POST, &vpath, Some(&eve), Some(json!({"password": "correct horse"}))).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    let (_, v) = node.call(Method::POST, &vpath, Some(&alice), Some(json!({"password": "correct horse"}))).await;
    assert_eq!(v["status"], "waiting_room", "other users are not locked out");
}

async fn per_day_analytics(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let (_, bob) = node.user("bob@example.com", "Bob").await;
    let day = |d: i64, h: u32| (Utc::now() - Duration::days(d)).date_naive().and_hms_opt(h, 0, 0).unwrap().and_utc();
    // Create in the future through the API, then move into the past as time would.
    let mut ids = Vec::new();
    for (title, minutes) in [("a", 30), ("b", 60), ("c", 90), ("d", 45), ("old", 20)] {
        let mut b = meeting_body(title, in_hours(1));
        b["duration_minutes"] = json!(minutes);
        ids.push(id_of(&create_meeting(&node, &host, b).await, "meeting_id"));
    }
    create_meeting(&node, &bob, meeting_body("not mine", in_hours(1))).await;
    let place = |i: usize, t: chrono::DateTime<Utc>, status: &str, actual: Option<i64>| {
        format!(
            "UPDATE meetings SET scheduled_time = {}, status = '{status}', actual_duration_seconds = {} WHERE id = {}",
            node.ts_lit(t),
            actual.map(|a| a.to_string()).unwrap_or_else(|| "NULL".into()),
            node.id_lit(ids[i])
        )
    };
    node.exec(&place(0, day(2, 9), "ended", Some(1500))).await;
    node.exec(&place(1, day(2, 15), "ended", Some(3900))).await;
    node.exec(&place(2, day(2, 18), "cancelled", None)).await;
    node.exec(&place(3, day(5, 10), "ended", Some(2400))).await;
    node.exec(&place(4, day(40, 10), "ended", Some(600))).await;

    let (status, v) = node.call(Method::GET, "/api/analytics/meetings?days=30", Some(&host), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let rows = v["rows"].as_array().unwrap();
    let date = |d: i64| (Utc::now() - Duration::days(d)).date_naive().to_string();
    // Newest day first; the 40-day-old meeting and Bob's are outside this host's 30 days.
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(rows[0]["date"], date(2));
    assert_eq!(rows[0]["total_meetings"], 3);
    assert_eq!(rows[0]["completed_meetings"], 2);
    assert_eq!(rows[0]["avg_duration_minutes"].as_f64().unwrap(), 60.0);
    assert_eq!(rows[0]["avg_actual_duration_minutes"].as_f64().unwrap(), 45.0);
    assert_eq!(rows[1]["date"], date(5));
    assert_eq!(rows[1]["total_meetings"], 1);
    assert_eq!(rows[1]["avg_actual_duration_minutes"].as_f64().unwrap(), 40.0);

    let (_, wide) = node.call(Method::GET, "/api/analytics/meetings?days=60", Some(&host), None).await;
    assert_eq!(wide["rows"].as_array().unwrap().len(), 3, "the 40-day-old meeting is inside a 60-day window");
    for bad in ["days=0", "days=367", "days=abc"] {
        assert_eq!(
            node.call(Method::GET, &format!("/api/analytics/meetings?{bad}"), Some(&host), None).await.0,
            StatusCode::BAD_REQUEST
        );
    }
}
