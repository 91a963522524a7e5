//! Every error status the API promises, and no 5xx for anything a client can send.

use std::time::{SystemTime, UNIX_EPOCH};

use parley_integration::{Backend, TestNode};
use parley_migrations::MigratorTrait;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{assert_error, in_hours, meeting_body, node_with_host};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok_once_ready() {
    let node = TestNode::start(Backend::Postgres).await;
    let (status, v) = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let total = parley_migrations::Migrator::migrations().len();
    assert!(
        node.log().contains(&format!("migration [{total}/{total}]")),
        "the node migrated its fresh database and said so:\n{}",
        node.log()
    );
}

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_401() {
    let (node, host_id, _) = node_with_host(Backend::Postgres).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expired =
        hs256(&node.secret, json!({"sub": host_id.to_string(), "iat": now - 7200, "exp": now - 3600, "iss": "parley"}));
    let foreign = hs256(
        "somebody-else's-secret",
        json!({"sub": host_id.to_string(), "iat": now, "exp": now + 3600, "iss": "parley"}),
    );
    let wrong_iss =
        hs256(&node.secret, json!({"sub": host_id.to_string(), "iat": now, "exp": now + 3600, "iss": "zoom"}));
    for token in [expired.as_str(), foreign.as_str(), wrong_iss.as_str(), "garbage", ""] {
        let r = node.call(Method::GET, "/api/meetings/upcoming", Some(token), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_error(
        &node.call(Method::GET, "/api/meetings/upcoming", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let r = node.raw(Method::GET, "/api/meetings/upcoming", None, None, vec![]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    // An operator token is not a user.
    let r = node.call(Method::GET, "/api/meetings/upcoming", Some(&node.admin_token()), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_error_has_its_status_and_code() {
    let (node, _, host) = node_with_host(Backend::Postgres).await;
    let t = Some(host.as_str());
    assert_error(
        &node.raw(Method::POST, "/api/meetings", t, Some("application/json"), b"{\"title\": \"x\",".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        &node.raw(Method::POST, "/api/meetings", t, Some("application/json"), b"\xff\xfe".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        &node.raw(Method::POST, "/api/meetings", t, Some("text/plain"), b"{}".to_vec()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let mut body = meeting_body("x", in_hours(1));
    body["duration_minutes"] = json!("thirty");
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    let mut body = meeting_body("x", in_hours(1));
    body["scheduled_time"] = json!("tomorrow at ten");
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    let mut body = meeting_body("x", in_hours(1));
    body["duration_minutes"] = json!(99999999999999999999u128 as f64);
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    let mut body = meeting_body("x", in_hours(1));
    body["meeting_type"] = json!("party");
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    let mut body = meeting_body("x", in_hours(1));
    body["settings"] = json!({"waiting_room": "yes"});
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    let mut body = meeting_body(&"t".repeat(201), in_hours(1));
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body.clone())).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    body["title"] = json!("ok");
    body["password"] = json!("");
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    let mut body = meeting_body("x", in_hours(1));
    body.as_object_mut().unwrap().remove("scheduled_time");
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(meeting_body("x", in_hours(-2)))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
    );
    let mut body = meeting_body("x", in_hours(1));
    body["participants"] = json!((0..1001).map(|i| json!({"email": format!("u{i}@example.com")})).collect::<Vec<_>>());
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );

    // 413: a body over 1 MiB, whether it is valid JSON or not.
    let mut body = meeting_body("x", in_hours(1));
    body["title"] = json!("a".repeat(1024 * 1024 + 10));
    assert_error(
        &node.call(Method::POST, "/api/meetings", t, Some(body)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let r = node
        .raw(
            Method::POST,
            "/api/meetings/00000000-0000-0000-0000-000000000000/join-check",
            t,
            None,
            vec![b'x'; 2 << 20],
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    assert_error(&node.call(Method::GET, "/api/nothing-here", t, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &node.call(Method::PUT, "/api/meetings", t, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(node.count("meetings").await, 0, "no error wrote anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_gets_a_server_error() {
    let (node, _, host) = node_with_host(Backend::Sqlite).await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"\"string\"".to_vec(),
        b"{\"title\": null}".to_vec(),
        b"{\"title\": \"\\u0000\", \"duration_minutes\": 30, \"scheduled_time\": \"2999-01-01T00:00:00Z\"}".to_vec(),
        b"{\"title\": \"x\", \"duration_minutes\": 30, \"scheduled_time\": \"9999-12-31T23:59:59Z\", \"recurrence\": {\"frequency\": \"monthly\", \"count\": 50}}".to_vec(),
        b"{\"title\": \"x\", \"duration_minutes\": -5, \"scheduled_time\": \"2999-01-01T00:00:00Z\"}".to_vec(),
        b"{\"title\": \"x\", \"duration_minutes\": 30, \"scheduled_time\": \"2999-01-01T00:00:00Z\", \"timezone\": \"../../etc/passwd\"}".to_vec(),
        b"{\"title\": \"x\", \"duration_minutes\": 30, \"scheduled_time\": \"2999-01-01T00:00:00Z\", \"participants\": [{\"email\": \"'; DROP TABLE users; --@x.com\"}]}".to_vec(),
        "{\"title\": \"𝓤𝓷𝓲𝓬𝓸𝓭𝓮 ☃\", \"duration_minutes\": 30, \"scheduled_time\": \"2999-01-01T00:00:00+14:00\"}".as_bytes().to_vec(),
        vec![b'['; 10_000],
        vec![b'{'; 100_000],
    ];
    for (i, b) in bodies.into_iter().enumerate() {
        for path in ["/api/meetings", "/api/users", "/api/meetings/00000000-0000-0000-0000-000000000000/join-check"] {
            let (status, v) = node.raw(Method::POST, path, Some(&host), Some("application/json"), b.clone()).await;
            assert!(status.is_success() || status.is_client_error(), "body #{i} to {path}: {status} {v}");
            if status.is_client_error() {
                assert!(v["error"]["code"].is_string(), "body #{i} to {path}: JSON error expected, got {v}");
            }
        }
    }
    // The SQL-looking invitee was rejected as an email (no pending user), and the users table
    // still holds exactly the host: input is data, never SQL.
    assert_eq!(node.count("users").await, 1);
    let (status, _) = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}
