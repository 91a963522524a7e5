//! Webhooks end to end: a real node, a live meeting over WebSocket, and a receiver in the
//! harness that checks every signature itself and refuses the first three requests.

use std::collections::HashSet;
use std::time::Duration;

use parley_integration::webhook::WebhookReceiver;
use parley_integration::ws::WsClient;
use parley_integration::{Backend, NodeOptions, TestNode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{create_meeting, id_of, in_hours, meeting_body};

const SECRET: &str = "it-webhook-secret-0123456789";

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], true, "expected success: {reply}");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_ordered_per_meeting_and_retried_until_received() {
    let receiver = WebhookReceiver::start(SECRET, 3).await;
    let events = ["meeting.started", "meeting.ended", "participant.joined", "participant.left", "recording.ready"];
    let node = TestNode::start_with(
        NodeOptions::new(Backend::Postgres)
            .with_redis()
            .config(receiver.config(&events))
            .env("PARLEY_NOTIFY_POLL_MS", "50")
            .env("PARLEY_NOTIFY_RETRY_BASE_MS", "100"),
    )
    .await;
    let (host_id, host_token) = node.user("host@example.com", "Hannah Host").await;
    let (guest_id, guest_token) = node.user("guest@example.com", "Gus <b>Guest</b>").await;
    let mut body = meeting_body("Webhooked", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");

    let mut host = WsClient::connect(&node, &host_token).await;
    let mut guest = WsClient::connect(&node, &guest_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    ok(&guest.request(json!({"type": "join", "meeting_id": m})).await);
    ok(&guest.request(json!({"type": "leave"})).await);
    ok(&host.request(json!({"type": "end_meeting"})).await);

    let got = receiver.wait_accepted(5, Duration::from_secs(30)).await;
    let all = receiver.received();
    assert!(all.iter().all(|r| r.signature_ok), "every request is signed with the secret: {all:#?}");
    let names: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    assert!(names.len() >= 5, "{names:?}\n{}", node.log());
    assert_eq!(names[..4], ["meeting.started", "participant.joined", "participant.joined", "participant.left"]);
    assert_eq!(names.last(), Some(&"meeting.ended"), "{names:?}");
    assert!(names[4..names.len() - 1].iter().all(|n| *n == "participant.left"), "{names:?}");

    // The first event was refused three times: the same delivery, attempts 1..=4, and nothing
    // after it was sent before it got through (order per meeting).
    assert_eq!(all.len(), got.len() + 3, "{all:#?}");
    for (i, r) in all[..4].iter().enumerate() {
        assert_eq!(
            (r.event.as_str(), r.delivery.as_str(), r.attempt),
            ("meeting.started", got[0].delivery.as_str(), i as i32 + 1)
        );
    }
    assert!(got[1..].iter().all(|r| r.attempt == 1), "{got:#?}");

    // Bodies: the meeting, who, why; one id per event; created in order.
    let ids: HashSet<&str> = got.iter().map(|r| r.body["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "each event delivered once");
    assert!(got.iter().all(|r| r.body["meeting"]["id"] == json!(m) && r.body["meeting"]["title"] == "Webhooked"));
    assert!(got.iter().all(|r| r.body["event"] == r.event.as_str()));
    let times: Vec<&str> = got.iter().map(|r| r.body["created_at"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(got[1].body["participant"]["user_id"], json!(host_id));
    assert_eq!(got[1].body["participant"]["role"], "host");
    assert_eq!(got[2].body["participant"]["user_id"], json!(guest_id));
    assert_eq!(got[2].body["participant"]["display_name"], "Gus <b>Guest</b>", "JSON carries names as they are");
    assert_eq!(got[3].body["participant"]["reason"], "left");
    assert!(got.last().unwrap().body["duration_seconds"].as_i64().is_some());

    // The outbox shows the webhook rows: sent, the first after four attempts.
    let (status, rows) =
        node.call(Method::GET, &format!("/api/notifications?meeting_id={m}"), Some(&host_token), None).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let hooks: Vec<&Value> =
        rows["notifications"].as_array().unwrap().iter().filter(|n| n["channel"] == "webhook").collect();
    assert_eq!(hooks.len(), got.len(), "{rows}");
    assert!(hooks.iter().all(|n| n["status"] == "sent" && n["recipient"] == receiver.url()), "{rows}");
    assert_eq!(hooks[0]["attempts"], 4, "{rows}");
    assert!(hooks[0]["last_error"].is_null(), "a success clears the last error: {rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_only_gets_the_events_it_lists_and_a_gone_endpoint_is_given_up() {
    let receiver = WebhookReceiver::start(SECRET, 0).await;
    // A second endpoint that answers 410 Gone: the node stops trying at once.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_url = format!("http://{}/hook", gone.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { StatusCode::GONE }));
    tokio::spawn(async move {
        let _ = axum::serve(gone, app).await;
    });
    let config = format!(
        "{}[[notify.webhooks]]\nurl = \"{gone_url}\"\nsecret = \"{SECRET}\"\nevents = [\"meeting.started\"]\n",
        receiver.config(&["meeting.ended"])
    );
    let node = TestNode::start_with(
        NodeOptions::new(Backend::Postgres).with_redis().config(config).env("PARLEY_NOTIFY_POLL_MS", "50"),
    )
    .await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let mut body = meeting_body("Filtered", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let m = id_of(&create_meeting(&node, &host_token, body).await, "meeting_id");
    let mut host = WsClient::connect(&node, &host_token).await;
    ok(&host.request(json!({"type": "start", "meeting_id": m})).await);
    ok(&host.request(json!({"type": "end_meeting"})).await);

    let got = receiver.wait_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].event, "meeting.ended");
    let ok_rows = parley_integration::eventually(Duration::from_secs(10), || async {
        let (_, rows) =
            node.call(Method::GET, &format!("/api/notifications?meeting_id={m}"), Some(&host_token), None).await;
        rows["notifications"].as_array().is_some_and(|a| {
            a.iter().any(|n| n["recipient"] == gone_url.as_str() && n["status"] == "failed" && n["attempts"] == 1)
        })
    })
    .await;
    assert!(ok_rows, "the 410 endpoint's event is failed after one attempt\n{}", node.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "no participant events: they were not subscribed");
}
