//! The notification outbox end to end: a real SMTP server (aiosmtpd), real nodes, the mails
//! parsed by Python's `email` and the `icalendar` package — what a calendar program would read.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc, Weekday};
use chrono_tz::America::New_York;
use parley_integration::smtp::{Mail, SmtpSink, ics_dump};
use parley_integration::{Backend, NodeOptions, TestNode, eventually, free_port};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{assert_error, create_meeting, id_of, in_hours, meeting_body};

const WAIT: Duration = Duration::from_secs(30);

fn smtp_node(backend: Backend, smtp_url: &str) -> NodeOptions {
    NodeOptions::new(backend)
        .env("PARLEY_SMTP_URL", smtp_url)
        .env("PARLEY_SMTP_FROM", "Parley <meetings@parley.test>")
        .env("PARLEY_NOTIFY_POLL_MS", "100")
        .env("PARLEY_NOTIFY_RETRY_BASE_MS", "200")
}

fn to_utc(iso: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(iso).unwrap_or_else(|e| panic!("{iso}: {e}")).with_timezone(&Utc)
}

/// The one event of a mail's calendar part.
fn event(m: &Mail) -> &parley_integration::smtp::IcsEvent {
    let ics = m.ics.as_ref().unwrap_or_else(|| panic!("no calendar part in {m:?}"));
    assert_eq!(ics.events.len(), 1, "{}", ics.raw);
    &ics.events[0]
}

fn mails_to<'a>(mails: &'a [Mail], who: &str) -> Vec<&'a Mail> {
    mails.iter().filter(|m| m.to.iter().any(|t| t.contains(who))).collect()
}

async fn outbox(node: &TestNode, token: &str, meeting: Uuid) -> (StatusCode, Value) {
    node.call(Method::GET, &format!("/api/notifications?meeting_id={meeting}"), Some(token), None).await
}

/// The next Monday at least two weeks away, 10:00 in New York.
fn a_monday_morning() -> DateTime<Utc> {
    let mut d = (Utc::now() + chrono::Duration::days(14)).date_naive();
    while d.weekday() != Weekday::Mon {
        d = d.succ_opt().unwrap();
    }
    New_York.from_local_datetime(&d.and_hms_opt(10, 0, 0).unwrap()).single().unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_invites_updates_and_cancels() {
    let sink = SmtpSink::start().await;
    let node = TestNode::start_with(smtp_node(Backend::Postgres, &sink.url())).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    let (_, bob) = node.user("bob@example.com", "Bob Builder").await;
    let first = a_monday_morning();
    let mut body = meeting_body("Design review", first);
    body["timezone"] = json!("America/New_York");
    body["recurrence"] = json!({"frequency": "weekly", "days": ["Mon", "Wed"], "count": 4});
    body["participants"] = json!([{"email": "alice@example.com"}, {"email": "bob@example.com", "role": "co_host"}]);
    let m = create_meeting(&node, &host, body).await;
    let occ: Vec<Uuid> = m["occurrences"].as_array().unwrap().iter().map(|o| id_of(o, "meeting_id")).collect();
    let times: Vec<DateTime<Utc>> =
        m["occurrences"].as_array().unwrap().iter().map(|o| to_utc(o["scheduled_time"].as_str().unwrap())).collect();
    assert_eq!(occ.len(), 4);

    // Two invitations, one per invitee, for the whole series.
    let mails = sink.wait_for(2, WAIT).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let mut uids = HashSet::new();
    for who in ["alice@example.com", "bob@example.com"] {
        let got = mails_to(&mails, who);
        assert_eq!(got.len(), 1, "{who}: {mails:#?}");
        let mail = got[0];
        assert_eq!(mail.subject.as_deref(), Some("Invitation: Design review"));
        let ics = mail.ics.as_ref().unwrap();
        assert_eq!(ics.method.as_deref(), Some("REQUEST"));
        assert_eq!(ics.timezones, vec!["America/New_York".to_owned()], "{}", ics.raw);
        let e = event(mail);
        assert_eq!(e.rrule.as_deref(), Some("FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE;WKST=MO"), "{}", ics.raw);
        assert_eq!(e.tzid.as_deref(), Some("America/New_York"));
        assert_eq!(to_utc(e.dtstart.as_deref().unwrap()), first);
        assert!(
            e.dtstart
                .as_deref()
                .unwrap()
                .starts_with(&format!("{}T10:00:00", first.with_timezone(&New_York).date_naive()))
        );
        assert_eq!(to_utc(e.dtend.as_deref().unwrap()), first + chrono::Duration::minutes(30));
        assert_eq!(e.sequence, Some(0));
        assert_eq!(e.recurrence_id, None);
        let mut attendees = e.attendees.clone();
        attendees.sort();
        assert_eq!(attendees, vec!["alice@example.com", "bob@example.com", "host@example.com"]);
        assert_eq!(e.organizer.as_deref().map(str::to_lowercase), Some("mailto:host@example.com".into()));
        let join = format!("{}/j/{}", node.base, occ[0]);
        assert_eq!(e.url.as_deref(), Some(join.as_str()));
        assert!(mail.text.as_deref().unwrap_or_default().contains(&join), "{mail:?}");
        uids.insert(e.uid.clone().unwrap());
    }
    assert_eq!(uids.len(), 1, "one calendar event for the series");
    let uid = uids.into_iter().next().unwrap();

    // Moving the second occurrence: an update of that instance, superseding the invitation.
    let moved_to = times[1] + chrono::Duration::hours(2);
    let (status, _) = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{}", occ[1]),
            Some(&host),
            Some(json!({"scheduled_time": moved_to.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mails = sink.wait_for(4, WAIT).await;
    let updates: Vec<&Mail> = mails[2..].iter().collect();
    assert_eq!(updates.len(), 2, "{mails:#?}");
    for mail in &updates {
        assert_eq!(mail.subject.as_deref(), Some("Updated: Design review"));
        assert_eq!(mail.ics.as_ref().unwrap().method.as_deref(), Some("REQUEST"));
        let e = event(mail);
        assert_eq!(e.uid.as_deref(), Some(uid.as_str()));
        assert_eq!(e.sequence, Some(1), "higher than the invitation's");
        assert_eq!(e.recurrence_id.as_deref().map(to_utc), Some(times[1]), "the instance the rule put there");
        assert_eq!(e.dtstart.as_deref().map(to_utc), Some(moved_to));
        assert_eq!(e.rrule, None);
    }

    // Cancelling the third occurrence, then the whole series.
    let (status, _) = node.call(Method::DELETE, &format!("/api/meetings/{}", occ[2]), Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    let mails = sink.wait_for(6, WAIT).await;
    for mail in &mails[4..] {
        assert_eq!(mail.subject.as_deref(), Some("Cancelled: Design review"));
        assert_eq!(mail.ics.as_ref().unwrap().method.as_deref(), Some("CANCEL"));
        let e = event(mail);
        assert_eq!((e.uid.as_deref(), e.sequence), (Some(uid.as_str()), Some(2)));
        assert_eq!(e.recurrence_id.as_deref().map(to_utc), Some(times[2]));
        assert_eq!(e.status.as_deref(), Some("CANCELLED"));
    }
    let series = id_of(&m, "series_id");
    let (status, _) = node.call(Method::DELETE, &format!("/api/series/{series}"), Some(&host), None).await;
    assert!(status.is_success(), "{status}");
    let mails = sink.wait_for(8, WAIT).await;
    assert_eq!(mails.len(), 8);
    for mail in &mails[6..] {
        assert_eq!(mail.ics.as_ref().unwrap().method.as_deref(), Some("CANCEL"));
        let e = event(mail);
        assert_eq!((e.uid.as_deref(), e.sequence, e.recurrence_id.as_deref()), (Some(uid.as_str()), Some(3), None));
    }
    let keys: HashSet<_> = mails.iter().map(|m| m.idempotency_key.clone().unwrap()).collect();
    assert_eq!(keys.len(), 8, "every message has its own key");

    // What was sent, as the host sees it; an invitee may not look, a stranger sees nothing.
    let (status, list) = outbox(&node, &host, occ[0]).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let rows = list["notifications"].as_array().unwrap();
    let invitations: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "invitation").collect();
    assert_eq!(invitations.len(), 2, "{list}");
    for r in &invitations {
        assert_eq!((r["status"].as_str(), r["attempts"].as_i64()), (Some("sent"), Some(1)), "{r}");
        assert!(r["sent_at"].is_string() && r["last_error"].is_null(), "{r}");
    }
    assert_error(&outbox(&node, &bob, occ[0]).await, StatusCode::FORBIDDEN, "forbidden");
    let (_, stranger) = node.user("stranger@example.com", "Stranger").await;
    assert_error(&outbox(&node, &stranger, occ[0]).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &node.call(Method::GET, "/api/notifications?meeting_id=nope", Some(&host), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    let (status, all) = outbox(&node, &node.admin_token(), occ[1]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["notifications"].as_array().unwrap().len(), 2, "the move's updates are the moved occurrence's");
}

/// SMTP is down while meetings are created on two nodes sharing one database: every message
/// waits, is retried, and arrives exactly once when the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_wait_for_smtp_and_arrive_once() {
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let a = TestNode::start_with(smtp_node(Backend::Postgres, &url)).await;
    let b = TestNode::start_with(NodeOptions {
        database_url: Some(a.database_url.clone()),
        ..smtp_node(Backend::Postgres, &url)
    })
    .await;
    let (host_id, host) = a.user("host@example.com", "Hannah Host").await;
    let host_on_b = b.token(&host_id.to_string(), false);
    let mut meetings = Vec::new();
    for i in 0..3 {
        let mut body = meeting_body(&format!("Sync {i}"), in_hours(24 + i));
        body["participants"] =
            json!([{"email": format!("p{i}a@example.com")}, {"email": format!("p{i}b@example.com")}]);
        let (node, token) = if i % 2 == 0 { (&a, &host) } else { (&b, &host_on_b) };
        meetings.push(id_of(&create_meeting(node, token, body).await, "meeting_id"));
    }
    // Every message was tried and deferred with the reason.
    let deferred = eventually(WAIT, || async {
        let mut all = Vec::new();
        for m in &meetings {
            all.extend(outbox(&a, &host, *m).await.1["notifications"].as_array().cloned().unwrap_or_default());
        }
        all.len() == 6
            && all.iter().all(|r| {
                r["status"] == "pending" && r["attempts"].as_i64() >= Some(1) && r["last_error"].as_str().is_some()
            })
    })
    .await;
    assert!(deferred, "{:?}", outbox(&a, &host, meetings[0]).await);

    let sink = SmtpSink::start_on(port, std::env::temp_dir().join(format!("parley-smtp-{}", Uuid::new_v4()))).await;
    let mails = sink.wait_for(6, Duration::from_secs(60)).await;
    assert_eq!(mails.len(), 6, "{mails:#?}");
    // Nothing else trickles in afterwards.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 6, "none twice: {mails:#?}");
    let keys: HashSet<String> = mails.iter().map(|m| m.idempotency_key.clone().unwrap()).collect();
    assert_eq!(keys.len(), 6);
    let ids: HashSet<String> = mails.iter().map(|m| m.message_id.clone().unwrap()).collect();
    assert_eq!(ids.len(), 6, "the Message-ID follows the key: {ids:?}");
    assert!(ids.iter().all(|id| id.ends_with("@parley>")), "{ids:?}");
    let recipients: HashSet<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(recipients.len(), 6, "{recipients:?}");
    let sent = a.count("notifications WHERE status = 'sent' AND sent_at IS NOT NULL").await;
    assert_eq!(sent, 6);
    let log = format!("{}{}", a.log(), b.log());
    assert!(log.contains("notification deferred: invitation"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_fails_with_its_reason_and_a_deferral_is_retried() {
    let sink = SmtpSink::start().await;
    let node =
        TestNode::start_with(smtp_node(Backend::Postgres, &sink.url()).env("PARLEY_NOTIFY_RETRY_BASE_MS", "50")).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    let mut body = meeting_body("Retro", in_hours(30));
    body["participants"] = json!([{"email": "bounce@example.com"}, {"email": "flaky@example.com"}]);
    let m = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let settled = eventually(WAIT, || async {
        let rows = outbox(&node, &host, m).await.1["notifications"].as_array().cloned().unwrap_or_default();
        rows.len() == 2 && rows.iter().all(|r| r["status"] != "pending")
    })
    .await;
    let rows = outbox(&node, &host, m).await.1["notifications"].as_array().cloned().unwrap();
    assert!(settled, "{rows:#?}");
    let by = |who: &str| rows.iter().find(|r| r["recipient"] == who).cloned().unwrap();
    let bounce = by("bounce@example.com");
    assert_eq!((bounce["status"].as_str(), bounce["attempts"].as_i64()), (Some("failed"), Some(1)), "{bounce}");
    assert!(bounce["last_error"].as_str().unwrap().contains("550"), "{bounce}");
    let flaky = by("flaky@example.com");
    assert_eq!((flaky["status"].as_str(), flaky["attempts"].as_i64()), (Some("sent"), Some(4)), "{flaky}");
    assert!(flaky["last_error"].is_null());
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].to, vec!["flaky@example.com".to_owned()]);
    assert!(node.log().contains("notification failed: invitation to bounce@example.com"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_text_cannot_inject_headers_or_markup() {
    let sink = SmtpSink::start().await;
    let node = TestNode::start_with(smtp_node(Backend::Postgres, &sink.url())).await;
    let (_, host) = node.user("host@example.com", "Hannah <b>Host</b>").await;
    // The API refuses a line break in user text outright…
    let r = node
        .call(
            Method::POST,
            "/api/meetings",
            Some(&host),
            Some(meeting_body("Hi\r\nBcc: evil@example.com", in_hours(5))),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field");
    // …and a name that got one anyway (written straight into the database) cannot add a header.
    node.user("carol@example.com", "Carol").await;
    node.exec("UPDATE users SET display_name = 'Carol' || chr(13) || chr(10) || 'Bcc: victim@example.com' WHERE email = 'carol@example.com'").await;
    let title = "Q3 <script>alert(1)</script> & \"plans\" Bcc: evil@example.com";
    let mut body = meeting_body(title, in_hours(5));
    body["participants"] = json!([{"email": "carol@example.com"}]);
    create_meeting(&node, &host, body).await;
    let mails = sink.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["carol@example.com".to_owned()], "only the invitee receives it");
    let lower: Vec<String> = mail.headers.iter().map(|h| h.to_lowercase()).collect();
    assert!(!lower.contains(&"bcc".to_owned()), "{:?}", mail.headers);
    assert_eq!(mail.subject.as_deref(), Some(format!("Invitation: {title}").as_str()), "the subject is one header");
    let html = mail.html.as_deref().unwrap();
    assert!(!html.contains("<script>") && !html.contains("<b>Host"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && html.contains("Hannah &lt;b&gt;Host"), "{html}");
    let e = event(mail);
    assert_eq!(e.summary.as_deref(), Some(title), "one SUMMARY, intact");
    assert_eq!(e.attendees.len(), 2, "no attendee injected: {:?}", e.attendees);
}

/// The outbox write is part of the creation: when it fails, nothing of the meeting is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_outbox_write_rolls_the_meeting_back() {
    let node = TestNode::start(Backend::Postgres).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    node.exec(
        "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'outbox refused by the test'; END $$",
    )
    .await;
    node.exec(
        "CREATE TRIGGER refuse_outbox BEFORE INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION refuse_outbox()",
    )
    .await;
    let mut body = meeting_body("Doomed", in_hours(3));
    body["participants"] = json!([{"email": "new.person@example.com"}, {"email": "other@example.com"}]);
    let (status, reply) = node.call(Method::POST, "/api/meetings", Some(&host), Some(body.clone())).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{reply}");
    assert_eq!(node.count("meetings").await, 0);
    assert_eq!(node.count("meeting_participants").await, 0);
    assert_eq!(node.count("users WHERE email = 'new.person@example.com'").await, 0, "the pending user too");
    assert_eq!(node.count("notifications").await, 0);

    node.exec("DROP TRIGGER refuse_outbox ON notifications").await;
    create_meeting(&node, &host, body).await;
    assert_eq!(node.count("meetings").await, 1);
    assert_eq!(node.count("notifications WHERE kind = 'invitation'").await, 2);
}

/// Without an SMTP server (the embedded default), each message is an `.eml` file in the data
/// directory, with the same calendar part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_messages_are_eml_files() {
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite).env("PARLEY_NOTIFY_POLL_MS", "100")).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    let mut body = meeting_body("Local", in_hours(2));
    body["participants"] = json!([{"email": "dana@example.com"}]);
    let m = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let dir = node.data_dir.path().join("outbox");
    let eml = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(eventually(WAIT, || async { eml().len() == 1 }).await, "{:?}", eml());
    let mails = ics_dump(&eml());
    assert_eq!(mails[0].to, vec!["dana@example.com".to_owned()]);
    let e = event(&mails[0]);
    assert_eq!((e.tzid.as_deref(), e.sequence), (Some("UTC"), Some(0)));
    assert_eq!(e.url.as_deref(), Some(format!("{}/j/{m}", node.base).as_str()));
    let (_, list) = outbox(&node, &host, m).await;
    assert_eq!(list["notifications"][0]["status"], "sent", "{list}");
}

/// Reminders with a short lead time on three nodes, each scanning every 200 ms: one reminder
/// per person per meeting, none for a cancelled meeting, and a moved meeting reminded of its
/// new time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_go_out_once_across_a_three_node_cluster() {
    let sink = SmtpSink::start().await;
    let env = [
        ("PARLEY_SMTP_URL", sink.url()),
        ("PARLEY_SMTP_FROM", "Parley <meetings@parley.test>".to_owned()),
        ("PARLEY_NOTIFY_POLL_MS", "100".to_owned()),
        ("PARLEY_NOTIFY_RETRY_BASE_MS", "200".to_owned()),
        ("PARLEY_NOTIFY_REMINDER_SCAN_MS", "200".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = parley_integration::TestCluster::start(3, 0, &env).await;
    let node = &c.nodes[0];
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    // Whole seconds: the lead time is one minute, so each is due within seconds.
    let soon = |secs: i64| DateTime::from_timestamp(Utc::now().timestamp() + secs, 0).unwrap();
    let invitees = json!([{"email": "alice@example.com"}, {"email": "bob@example.com"}]);
    let with_reminder = |title: &str, at: DateTime<Utc>| {
        let mut b = meeting_body(title, at);
        b["participants"] = invitees.clone();
        b["settings"] = json!({"reminder_minutes": 1});
        b
    };
    let due = id_of(&create_meeting(node, &host, with_reminder("Due soon", soon(64))).await, "meeting_id");
    let cancelled = id_of(&create_meeting(node, &host, with_reminder("Called off", soon(64))).await, "meeting_id");
    let (status, _) = node.call(Method::DELETE, &format!("/api/meetings/{cancelled}"), Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    let later = id_of(&create_meeting(node, &host, with_reminder("Moved up", in_hours(3))).await, "meeting_id");
    let new_start = soon(66);
    let (status, _) = node
        .call(
            Method::PATCH,
            &format!("/api/meetings/{later}"),
            Some(&host),
            Some(json!({"scheduled_time": new_start.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A meeting without reminders, due as soon as the others.
    let mut quiet = with_reminder("No reminder", soon(64));
    quiet["settings"] = json!({"reminder_minutes": 0});
    let quiet = id_of(&create_meeting(node, &host, quiet).await, "meeting_id");

    let reminders = |mails: Vec<Mail>| -> Vec<Mail> {
        mails.into_iter().filter(|m| m.subject.as_deref().is_some_and(|s| s.starts_with("Reminder:"))).collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while reminders(sink.mails()).len() < 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node keeps scanning: nothing more may come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = reminders(sink.mails());
    assert_eq!(got.len(), 6, "{got:#?}\n{}", c.nodes[1].log());
    for (title, people) in [("Due soon", 3), ("Moved up", 3)] {
        let of: Vec<&Mail> = got.iter().filter(|m| m.subject.as_deref().is_some_and(|s| s.contains(title))).collect();
        assert_eq!(of.len(), people, "{title}: {got:#?}");
        for who in ["host@example.com", "alice@example.com", "bob@example.com"] {
            assert_eq!(mails_to(&of.iter().map(|m| (*m).clone()).collect::<Vec<_>>(), who).len(), 1, "{title} → {who}");
        }
    }
    let (_, list) = outbox(node, &host, later).await;
    let keys: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "reminder")
        .map(|n| n["idempotency_key"].as_str().unwrap())
        .collect();
    let stamp = new_start.format("%Y%m%dT%H%M%SZ").to_string();
    assert_eq!(keys.len(), 3, "{list}");
    assert!(keys.iter().all(|k| k.contains(&stamp)), "reminded of the new start {stamp}: {keys:?}");
    for m in [cancelled, quiet] {
        let (_, list) = outbox(node, &host, m).await;
        let n = list["notifications"].as_array().unwrap().iter().filter(|n| n["kind"] == "reminder").count();
        assert_eq!(n, 0, "{list}");
    }
    let (_, list) = outbox(node, &host, due).await;
    let sent =
        list["notifications"].as_array().unwrap().iter().filter(|n| n["kind"] == "reminder" && n["status"] == "sent");
    assert_eq!(sent.count(), 3, "{list}");
}

/// A row nobody can read (a payload that is not a notice, a channel nobody knows) is failed at
/// once with the reason, and the messages behind it are still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_fail_with_the_reason_and_hold_nothing_up() {
    let sink = SmtpSink::start().await;
    let node = TestNode::start_with(smtp_node(Backend::Postgres, &sink.url()).env("PARLEY_NOTIFY_WORKERS", "0")).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    let mut body = meeting_body("Sturdy", in_hours(5));
    body["participants"] = json!([{"email": "alice@example.com"}]);
    let m = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    // Written before the invitation would be claimed: the oldest rows come first.
    for (key, payload) in [("it-bad-json", "not json at all"), ("it-bad-shape", r#"{"kind": "invitation"}"#)] {
        node.exec(&format!(
            "INSERT INTO notifications (id, channel, kind, meeting_id, payload, status, created_at, recipient, \
             idempotency_key, attempts) VALUES (gen_random_uuid(), 'email', 'invitation', '{m}', '{payload}', \
             'pending', now() - interval '1 hour', 'x@example.com', '{key}', 0)"
        ))
        .await;
    }
    // Now a node that delivers.
    let mut opts = smtp_node(Backend::Postgres, &sink.url());
    opts.database_url = Some(node.database_url.clone());
    let deliverer = TestNode::start_with(opts).await;
    let mails = sink.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].subject.as_deref(), Some("Invitation: Sturdy"));
    let (_, list) = outbox(&node, &host, m).await;
    let rows = list["notifications"].as_array().unwrap();
    for key in ["it-bad-json", "it-bad-shape"] {
        let r = rows.iter().find(|r| r["idempotency_key"] == key).unwrap_or_else(|| panic!("{key}: {list}"));
        assert_eq!((r["status"].as_str(), r["attempts"].as_i64()), (Some("failed"), Some(1)), "{r}");
        assert!(r["last_error"].as_str().unwrap_or_default().contains("unreadable payload"), "{r}");
    }
    drop(deliverer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_lead_time_out_of_range_is_refused() {
    let sink = SmtpSink::start().await;
    let node = TestNode::start_with(smtp_node(Backend::Sqlite, &sink.url())).await;
    let (_, host) = node.user("host@example.com", "Hannah Host").await;
    let mut body = meeting_body("Too early", in_hours(5));
    body["settings"] = json!({"reminder_minutes": 10_081});
    let got = node.call(Method::POST, "/api/meetings", Some(&host), Some(body)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("reminder_minutes"), "{}", got.1);
    let mut body = meeting_body("Fine", in_hours(5));
    body["settings"] = json!({"reminder_minutes": 30});
    let created = create_meeting(&node, &host, body).await;
    assert_eq!(created["settings"]["reminder_minutes"], 30, "{created}");
    let m = id_of(&created, "meeting_id");
    let path = format!("/api/meetings/{m}");
    let got =
        node.call(Method::PATCH, &path, Some(&host), Some(json!({"settings": {"reminder_minutes": 99_999}}))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let (status, after) = node.call(Method::GET, &path, Some(&host), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["settings"]["reminder_minutes"], 30, "the refused change lost nothing: {after}");
}
