//! Meeting create (one transaction), read, host-only update and cancel.

use parley_integration::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{assert_error, create_meeting, id_of, in_hours, meeting_body, node_with_host, on_both_backends};

on_both_backends!(
    create_and_read_a_meeting,
    an_invalid_invitee_mid_list_rolls_back_everything,
    only_the_host_changes_a_meeting,
    cancel_is_host_only_and_idempotent,
    reading_is_for_host_invitees_and_operators,
);

async fn create_and_read_a_meeting(backend: Backend) {
    let (node, host_id, host) = node_with_host(backend).await;
    let at = in_hours(24);
    let mut body = meeting_body("Engineering Standup", at);
    body["password"] = json!("s3cret!");
    body["timezone"] = json!("America/Los_Angeles");
    body["settings"] = json!({"mute_on_entry": true, "screen_share": "all"});
    body["participants"] = json!([
        {"email": "alice@example.com", "role": "panelist"},
        {"email": "bob@example.com"}
    ]);
    let m = create_meeting(&node, &host, body).await;
    let id = id_of(&m, "meeting_id");
    assert_eq!(m["join_url"], format!("{}/j/{id}", node.base));
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["meeting_type"], "scheduled");
    assert_eq!(m["has_password"], true);
    assert!(m.get("password_hash").is_none() && !m.to_string().contains("s3cret"), "no secret in replies: {m}");
    assert_eq!(m["host_user_id"], host_id.to_string());
    assert_eq!(m["host_display_name"], "Hannah Host");
    assert_eq!(
        m["settings"],
        json!({"waiting_room": true, "recording_allowed": true, "mute_on_entry": true, "video_on_entry": true, "screen_share": "all", "share_recordings": false, "reminder_minutes": 10})
    );
    let roles: Vec<(&str, &str, &str)> = m["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["email"].as_str().unwrap(), p["role"].as_str().unwrap(), p["invite_status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("host@example.com", "host", "accepted"),
            ("alice@example.com", "panelist", "pending"),
            ("bob@example.com", "attendee", "pending")
        ]
    );

    // Stored as it should be: participants carry the meeting time, the password is argon2.
    assert_eq!(node.count("meeting_participants").await, 3);
    assert_eq!(node.count("users WHERE status = 'pending'").await, 2, "unknown invitees become pending users");
    let rows = node.sql(&format!("SELECT password_hash FROM meetings WHERE id = {}", node.id_lit(id))).await;
    let hash: String = rows[0].try_get("", "password_hash").unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let n = node.count(&format!("meeting_participants WHERE scheduled_time = {}", node.ts_lit(at))).await;
    assert_eq!(n, 3, "denormalised scheduled_time");

    let (status, got) = node.call(Method::GET, &format!("/api/meetings/{id}"), Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["title"], "Engineering Standup");
    assert_eq!(got["timezone"], "America/Los_Angeles");
    assert_eq!(got["participants"], m["participants"]);

    // An instant meeting needs no scheduled time.
    let inst =
        create_meeting(&node, &host, json!({"title": "Quick sync", "duration_minutes": 15, "meeting_type": "instant"}))
            .await;
    assert_eq!(inst["meeting_type"], "instant");
}

async fn an_invalid_invitee_mid_list_rolls_back_everything(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let before = (node.count("users").await, node.count("meetings").await, node.count("meeting_participants").await);

    // Two new invitees become pending users inside the transaction, then the third is invalid.
    let mut body = meeting_body("Doomed", in_hours(3));
    body["participants"] = json!([
        {"email": "first@example.com"},
        {"email": "second@example.com", "role": "co_host"},
        {"email": "not an email"},
    ]);
    let r = node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(r.1["error"]["message"].as_str().unwrap().contains("participants[2].email"), "{}", r.1);

    // A duplicate found half-way (after a pending user was created) is rolled back too.
    let mut body = meeting_body("Doomed again", in_hours(3));
    body["participants"] = json!([{"email": "third@example.com"}, {"email": "THIRD@example.com"}]);
    let r = node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    // And a whole recurring series with a bad invitee leaves no series, meetings or occurrences.
    let mut body = meeting_body("Doomed series", in_hours(3));
    body["recurrence"] = json!({"frequency": "daily", "count": 5});
    body["participants"] = json!([{"email": "fourth@example.com"}, {"email": "host@example.com"}]);
    let r = node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let after = (node.count("users").await, node.count("meetings").await, node.count("meeting_participants").await);
    assert_eq!(before, after, "nothing was left behind");
    assert_eq!(node.count("recurring_series").await, 0);
    assert_eq!(node.count("recurring_occurrences").await, 0);
    assert_eq!(node.count("users WHERE email IN ('first@example.com', 'second@example.com', 'third@example.com', 'fourth@example.com')").await, 0);

    // A token for a user that does not exist cannot host.
    let ghost = node.token(&uuid::Uuid::new_v4().to_string(), false);
    let r = node.call(Method::POST, "/api/meetings", Some(&ghost), Some(meeting_body("Ghost", in_hours(1)))).await;
    assert_error(&r, StatusCode::FORBIDDEN, "unknown_user");
    assert_eq!(node.count("meetings").await, 0);
}

async fn only_the_host_changes_a_meeting(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let (_, stranger) = node.user("eve@example.com", "Eve").await;
    let mut body = meeting_body("Review", in_hours(10));
    body["participants"] = json!([{"email": "alice@example.com", "role": "co_host"}]);
    let m = create_meeting(&node, &host, body).await;
    let id = id_of(&m, "meeting_id");
    let path = format!("/api/meetings/{id}");

    for who in [&alice, &stranger] {
        let r = node.call(Method::PATCH, &path, Some(who), Some(json!({"title": "Hijacked"}))).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    }

    let new_time = in_hours(30);
    let (status, got) = node
        .call(
            Method::PATCH,
            &path,
            Some(&host),
            Some(json!({"title": "Design review", "scheduled_time": new_time.to_rfc3339(), "duration_minutes": 45, "settings": {"waiting_room": false}, "password": "pw"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["title"], "Design review");
    assert_eq!(got["duration_minutes"], 45);
    assert_eq!(got["settings"]["waiting_room"], false);
    assert_eq!(got["settings"]["mute_on_entry"], false, "untouched settings stay");
    assert_eq!(got["has_password"], true);
    let moved = node.count(&format!("meeting_participants WHERE scheduled_time = {}", node.ts_lit(new_time))).await;
    assert_eq!(moved, 2, "participants' scheduled_time moved with the meeting");

    let (_, got) = node.call(Method::PATCH, &path, Some(&host), Some(json!({"password": null}))).await;
    assert_eq!(got["has_password"], false, "null removes the password");

    let r =
        node.call(Method::PATCH, &path, Some(&host), Some(json!({"scheduled_time": in_hours(-48).to_rfc3339()}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let r = node.call(Method::PATCH, &path, Some(&host), Some(json!({"status": "active"}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    let r = node.call(Method::PATCH, &path, Some(&host), Some(json!({"duration_minutes": 0}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    let r = node.call(Method::PATCH, &path, Some(&host), Some(json!({"timezone": "Mars/Olympus"}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    let r = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{}", uuid::Uuid::new_v4()),
            Some(&host),
            Some(json!({"title": "x"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // A live meeting keeps its time; an ended one cannot change at all.
    node.exec(&format!("UPDATE meetings SET status = 'active' WHERE id = {}", node.id_lit(id))).await;
    let r =
        node.call(Method::PATCH, &path, Some(&host), Some(json!({"scheduled_time": in_hours(40).to_rfc3339()}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let (status, _) =
        node.call(Method::PATCH, &path, Some(&host), Some(json!({"settings": {"mute_on_entry": true}}))).await;
    assert_eq!(status, StatusCode::OK, "settings of a live meeting may change");
    node.exec(&format!("UPDATE meetings SET status = 'ended' WHERE id = {}", node.id_lit(id))).await;
    let r = node.call(Method::PATCH, &path, Some(&host), Some(json!({"title": "late"}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
}

async fn cancel_is_host_only_and_idempotent(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let mut body = meeting_body("Retro", in_hours(4));
    body["participants"] = json!([{"email": "alice@example.com"}]);
    let id = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let path = format!("/api/meetings/{id}");

    let r = node.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let (status, got) = node.call(Method::DELETE, &path, Some(&host), None).await;
    assert_eq!((status, got["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (status, got) = node.call(Method::DELETE, &path, Some(&host), None).await;
    assert_eq!((status, got["status"].as_str()), (StatusCode::OK, Some("cancelled")), "idempotent");
    assert_eq!(node.count("meetings WHERE status = 'cancelled'").await, 1);
    let (_, up) = node.call(Method::GET, "/api/meetings/upcoming", Some(&alice), None).await;
    assert_eq!(up["meetings"], json!([]), "cancelled meetings are not upcoming");
    let r = node.call(Method::PATCH, &path, Some(&host), Some(json!({"title": "again"}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let live = id_of(&create_meeting(&node, &host, meeting_body("Live", in_hours(1))).await, "meeting_id");
    node.exec(&format!("UPDATE meetings SET status = 'active' WHERE id = {}", node.id_lit(live))).await;
    let r = node.call(Method::DELETE, &format!("/api/meetings/{live}"), Some(&host), None).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
}

async fn reading_is_for_host_invitees_and_operators(backend: Backend) {
    let (node, _, host) = node_with_host(backend).await;
    let (_, alice) = node.user("alice@example.com", "Alice").await;
    let (_, eve) = node.user("eve@example.com", "Eve").await;
    let mut body = meeting_body("Private", in_hours(2));
    body["participants"] = json!([{"email": "alice@example.com"}]);
    let id = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let path = format!("/api/meetings/{id}");
    for (who, expected) in [
        (&host, StatusCode::OK),
        (&alice, StatusCode::OK),
        (&node.admin_token(), StatusCode::OK),
        (&eve, StatusCode::FORBIDDEN),
    ] {
        assert_eq!(node.call(Method::GET, &path, Some(who), None).await.0, expected);
    }
    assert_error(
        &node.call(Method::GET, "/api/meetings/not-a-uuid", Some(&host), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    let missing = format!("/api/meetings/{}", uuid::Uuid::new_v4());
    assert_error(&node.call(Method::GET, &missing, Some(&host), None).await, StatusCode::NOT_FOUND, "not_found");
}
