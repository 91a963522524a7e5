//! The bad-input suite: generated tables of hostile input against every REST route, every
//! WebSocket request type of PROTOCOL.md (JSON and MessagePack) and the WebRTC signalling, one
//! node per test.
//!
//! Each case states the exact answer it must get. On top of that, whatever the case: the node
//! never answers 5xx, every REST error is `{"error": {"code", "message"}}` as JSON, every
//! WebSocket error is a reply `{"reply_to", "ok": false, "error": {"code", "message"}}`, nothing
//! hangs or panics, and the node goes on serving a bystander. Failures are collected and listed
//! together at the end, so one run names every defect; case counts are asserted, so the tables
//! cannot shrink unnoticed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parley_integration::ws::WsClient;
use parley_integration::{Backend, NodeOptions, TestNode};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{create_meeting, id_of, in_hours, meeting_body};

const REST_MIN: usize = 130;
const WS_MIN: usize = 120;
const SDP_MIN: usize = 60;
/// How long a case may take before it counts as a hang.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unpadded base64url, for a hand-made `alg: none` token.
fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn jwt(secret: &str, alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

/// Claims as `parley token` writes them, valid for an hour.
fn claims(sub: &str, adm: bool) -> Value {
    let now = now_secs();
    json!({"sub": sub, "adm": adm, "iat": now, "exp": now + 3600, "iss": "parley"})
}

/// A deterministic pseudo-random byte string (xorshift), for fuzz bytes that reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// [`noise`] as text (lossy UTF-8), without NUL characters (which are refused before any SDP
/// check).
fn text_noise(seed: u64, len: usize) -> String {
    String::from_utf8_lossy(&noise(seed, len).into_iter().map(|b| b.max(1)).collect::<Vec<u8>>()).into_owned()
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(300).collect();
    if out.len() < s.len() {
        let _ = write!(out, "… ({} bytes)", s.len());
    }
    out
}

/// The code of an error body of exactly the documented shape, or what is wrong with it.
fn rest_error_code(text: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(text).map_err(|_| "not JSON".to_owned())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let err = obj.get("error").and_then(Value::as_object).ok_or("no `error` object")?;
    if obj.len() != 1 {
        return Err("keys besides `error`".into());
    }
    let code = err.get("code").and_then(Value::as_str).filter(|c| !c.is_empty()).ok_or("no `error.code` string")?;
    err.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()).ok_or("no `error.message` string")?;
    if err.len() != 2 {
        return Err("`error` has fields besides `code` and `message`".into());
    }
    Ok(code.to_owned())
}

/// Asserts the node never logged a panic or an internal error, and that no case failed.
#[track_caller]
fn finish(what: &str, node: &TestNode, failures: &mut Vec<String>) {
    let log = node.log();
    assert!(
        !log.contains("panicked"),
        "{what}: the node panicked:\n{log}\n--- failed cases ---\n{}",
        failures.join("\n")
    );
    failures.extend(log.lines().filter(|l| l.contains("internal error")).map(|l| format!("logged: {l}")));
    assert!(
        failures.is_empty(),
        "{what}: {} case(s) failed:\n  {}\n--- node log (tail) ---\n{}",
        failures.len(),
        failures.join("\n  "),
        log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// Waits for the chat event carrying `text` (others may come first).
async fn saw_chat(c: &mut WsClient, text: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while let Some(e) = c.try_event("chat", deadline.saturating_duration_since(Instant::now())).await {
        if e["message"]["text"] == text {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

/// What a REST case must get back.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This success status with a JSON body.
    Ok(u16),
    /// This success status with `body[key] == value`.
    OkWith(u16, &'static str, &'static str),
    /// This error status and code.
    Err(u16, &'static str),
    /// One of these error statuses and codes.
    OneOf(&'static [(u16, &'static str)]),
    /// The browser page (200, HTML).
    Page,
}

enum Body {
    None,
    Json(Value),
    /// Bytes with this content type (or none).
    Raw(Option<&'static str>, Vec<u8>),
}

fn raw_json(text: impl Into<Vec<u8>>) -> Body {
    Body::Raw(Some("application/json"), text.into())
}

struct RestCase {
    name: String,
    method: Method,
    path: String,
    /// The whole `Authorization` header value.
    auth: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    body: Body,
    want: Want,
}

#[derive(Default)]
struct RestTable(Vec<RestCase>);

impl RestTable {
    fn add(
        &mut self,
        name: impl Into<String>,
        method: Method,
        path: impl Into<String>,
        token: Option<&str>,
        body: Body,
        want: Want,
    ) -> &mut RestCase {
        self.0.push(RestCase {
            name: name.into(),
            method,
            path: path.into(),
            auth: token.map(|t| format!("Bearer {t}").into_bytes()),
            headers: Vec::new(),
            body,
            want,
        });
        self.0.last_mut().expect("just pushed")
    }
}

/// Sends one case; `Err` says how the answer is wrong.
async fn run_rest(http: &reqwest::Client, base: &str, case: &RestCase) -> Result<(), String> {
    let mut req = http.request(case.method.clone(), format!("{base}{}", case.path));
    if let Some(a) = &case.auth {
        req = req.header(AUTHORIZATION, HeaderValue::from_bytes(a).map_err(|e| format!("test bug: {e}"))?);
    }
    for (k, v) in &case.headers {
        req = req.header(*k, v.as_str());
    }
    match &case.body {
        Body::None => {}
        Body::Json(v) => req = req.header(CONTENT_TYPE, "application/json").body(v.to_string()),
        Body::Raw(ct, bytes) => {
            if let Some(ct) = ct {
                req = req.header(CONTENT_TYPE, *ct);
            }
            req = req.body(bytes.clone());
        }
    }
    // A server that refuses an over-limit body (413) before reading it all may close the
    // connection while the client still writes: the client can then miss the answer. Such a
    // case is tried again (up to 5 times), never skipped.
    let oversized = matches!(case.want, Want::Err(413, _));
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        let Some(this) = req.try_clone() else { return Err("test bug: unclonable request".into()) };
        match tokio::time::timeout(Duration::from_secs(30), this.send()).await {
            Err(_) => return Err("no answer within 30 s (hang)".into()),
            Ok(Err(e)) if oversized && attempt < 5 => {
                eprintln!("bad_input: over-limit body cut off while sending ({e}); again");
            }
            Ok(Err(e)) => return Err(format!("request failed: {e}")),
            Ok(Ok(r)) => break r,
        }
    };
    let status = resp.status().as_u16();
    let ctype = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = resp.text().await.unwrap_or_default();
    let shown = shorten(&text);
    if status >= 500 {
        return Err(format!("{status} (server error): {shown}"));
    }
    let code = if status >= 400 {
        let code = rest_error_code(&text)
            .map_err(|why| format!("{status} with a non-JSON error ({why}; content-type {ctype:?}): {shown:?}"))?;
        if !ctype.starts_with("application/json") {
            return Err(format!("{status} {code} with content-type {ctype:?}"));
        }
        code
    } else {
        String::new()
    };
    let got = format!("{status} {code} {shown}");
    let ok = match case.want {
        Want::Err(s, c) => status == s && code == c,
        Want::OneOf(alternatives) => alternatives.iter().any(|(s, c)| status == *s && code == *c),
        Want::Ok(s) => status == s && serde_json::from_str::<Value>(&text).is_ok(),
        Want::OkWith(s, k, v) => status == s && serde_json::from_str::<Value>(&text).is_ok_and(|b| b[k] == v),
        Want::Page => status == 200 && ctype.starts_with("text/html"),
    };
    if ok { Ok(()) } else { Err(format!("expected {:?}, got {got}", case.want)) }
}

/// Tokens of every kind a client can send.
struct Tokens {
    admin: String,
    host: String,
    other: String,
    invitee: String,
    /// Correctly signed, for a user that does not exist.
    ghost: String,
    expired: String,
    foreign: String,
    wrong_iss: String,
    no_iss: String,
    no_exp: String,
    hs512: String,
    alg_none: String,
    sub_not_uuid: String,
    sub_empty: String,
    adm_not_bool: String,
    far_future: String,
    /// A `resume` token: signed with the same secret, another issuer.
    resume: String,
}

/// The bad tokens every authenticated route refuses with 401.
fn unauthorised(t: &Tokens) -> Vec<(&'static str, Option<Vec<u8>>)> {
    let bearer = |s: &str| Some(format!("Bearer {s}").into_bytes());
    vec![
        ("no Authorization", None),
        ("garbage token", bearer("garbage")),
        ("empty bearer", bearer("")),
        ("expired token", bearer(&t.expired)),
        ("token of another secret", bearer(&t.foreign)),
        ("alg none token", bearer(&t.alg_none)),
        ("resume token as access token", bearer(&t.resume)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bad_input_is_refused_with_json_errors_and_never_a_server_error() {
    let started = Instant::now();
    let node = TestNode::start_with(NodeOptions::new(Backend::Postgres).env("PARLEY_HEARTBEAT_TTL_MS", "600000")).await;
    let secret = node.secret.clone();
    let (host_id, host) = node.user("host@example.com", "Hannah Host").await;
    let (_, other) = node.user("other@example.com", "Oscar Other").await;
    let (_, invitee) = node.user("invitee@example.com", "Ines Invitee").await;
    let (_, bystander) = node.user("bystander@example.com", "Bea Bystander").await;
    let now = now_secs();
    let sub = host_id.to_string();
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let t = Tokens {
        admin: node.admin_token(),
        host: host.clone(),
        other: other.clone(),
        invitee: invitee.clone(),
        ghost: jwt(&secret, jsonwebtoken::Algorithm::HS256, &claims(&Uuid::new_v4().to_string(), false)),
        expired: jwt(
            &secret,
            jsonwebtoken::Algorithm::HS256,
            &json!({"sub": sub, "iat": now - 7200, "exp": now - 3600, "iss": "parley"}),
        ),
        foreign: jwt("another-secret", jsonwebtoken::Algorithm::HS256, &claims(&sub, false)),
        wrong_iss: jwt(
            &secret,
            jsonwebtoken::Algorithm::HS256,
            &json!({"sub": sub, "iat": now, "exp": now + 3600, "iss": "zoom"}),
        ),
        no_iss: jwt(&secret, jsonwebtoken::Algorithm::HS256, &json!({"sub": sub, "iat": now, "exp": now + 3600})),
        no_exp: jwt(&secret, jsonwebtoken::Algorithm::HS256, &json!({"sub": sub, "iat": now, "iss": "parley"})),
        hs512: jwt(&secret, jsonwebtoken::Algorithm::HS512, &claims(&sub, false)),
        alg_none: format!("{none_header}.{}.", b64url(claims(&sub, true).to_string().as_bytes())),
        sub_not_uuid: jwt(&secret, jsonwebtoken::Algorithm::HS256, &claims("bob", false)),
        sub_empty: jwt(&secret, jsonwebtoken::Algorithm::HS256, &claims("", false)),
        adm_not_bool: jwt(
            &secret,
            jsonwebtoken::Algorithm::HS256,
            &json!({"sub": sub, "adm": "yes", "iat": now, "exp": now + 3600, "iss": "parley"}),
        ),
        far_future: jwt(
            &secret,
            jsonwebtoken::Algorithm::HS256,
            &json!({"sub": sub, "iat": now, "exp": 32_503_680_000u64, "iss": "parley"}),
        ),
        resume: String::new(),
    };

    // The meetings the cases act on.
    let mut body = meeting_body("Main", in_hours(3));
    body["settings"] = json!({"waiting_room": false});
    body["participants"] = json!([{"email": "invitee@example.com"}]);
    let main = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let mut body = meeting_body("Live", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    body["password"] = json!("pw");
    let live = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let patch = id_of(&create_meeting(&node, &host, meeting_body("Patch me", in_hours(4))).await, "meeting_id");
    let cancel = id_of(&create_meeting(&node, &host, meeting_body("Cancel me", in_hours(5))).await, "meeting_id");
    let mut body = meeting_body("Weekly", in_hours(6));
    body["recurrence"] = json!({"frequency": "weekly", "count": 3});
    let created = create_meeting(&node, &host, body).await;
    let series = id_of(&created, "series_id");
    let occurrence = id_of(&created["occurrences"][1], "meeting_id");

    // The live meeting: started over the WebSocket, a bystander in it (for the final check).
    let mut host_ws = WsClient::connect(&node, &host).await;
    let r = host_ws.request(json!({"type": "start", "meeting_id": live})).await;
    assert_eq!(r["ok"], true, "start: {r}");
    let t = Tokens { resume: r["resume_token"].as_str().expect("resume token").to_owned(), ..t };
    let mut bystander_ws = WsClient::connect(&node, &bystander).await;
    let r = bystander_ws.request(json!({"type": "join", "meeting_id": live, "password": "pw"})).await;
    assert_eq!(r["ok"], true, "bystander joins: {r}");

    let ids = RestIds { main, live, patch, cancel, series, occurrence };
    let table = rest_table(&t, &ids);
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for case in &table.0 {
        if let Err(why) = run_rest(&http, &node.base, case).await {
            failures.push(format!("REST {} {} [{}]: {why}", case.method, shorten(&case.path), case.name));
        }
    }
    let mut cases = table.0.len();

    // Races: the same new email registered eight times at once is one user and seven conflicts;
    // eight meetings inviting the same new email at once all succeed.
    let racers = (0..8).map(|_| {
        node.call(
            Method::POST,
            "/api/users",
            Some(&t.admin),
            Some(json!({"email": "racer@example.com", "display_name": "Racer"})),
        )
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(racers).await.into_iter().map(|r| r.0).collect();
    cases += statuses.len();
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    if (created, conflicts) != (1, 7) {
        failures.push(format!("REST race: 8 concurrent POST /api/users of one email: {statuses:?}"));
    }
    let invites = (0..8).map(|i| {
        let mut body = meeting_body(&format!("Race {i}"), in_hours(7));
        body["participants"] = json!([{"email": "newcomer@example.com"}]);
        node.call(Method::POST, "/api/meetings", Some(&t.host), Some(body))
    });
    let replies = futures_util::future::join_all(invites).await;
    cases += replies.len();
    if let Some((status, v)) = replies.iter().find(|(s, _)| *s != StatusCode::CREATED) {
        let all: Vec<StatusCode> = replies.iter().map(|r| r.0).collect();
        failures.push(format!(
            "REST race: 8 concurrent meetings inviting one new email: {all:?}; first refusal {status}: {v}"
        ));
    }

    // Still serving: health, and the bystander chats to the host.
    let (status, v) = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "healthz after the cases: {v}");
    let r = bystander_ws.request(json!({"type": "chat", "text": "after the REST cases"})).await;
    assert_eq!(r["ok"], true, "the bystander still chats: {r}");
    assert!(saw_chat(&mut host_ws, "after the REST cases").await, "the host still hears the bystander");
    eprintln!(
        "bad_input REST: {cases} cases ({} table + 16 races), {} failed, {:.1} s",
        table.0.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(cases >= REST_MIN, "at least {REST_MIN} REST cases, {cases} generated");
    finish("REST", &node, &mut failures);
}

struct RestIds {
    main: Uuid,
    live: Uuid,
    patch: Uuid,
    cancel: Uuid,
    series: Uuid,
    occurrence: Uuid,
}

fn rest_table(t: &Tokens, ids: &RestIds) -> RestTable {
    let mut tb = RestTable::default();
    let (main, live, patch, cancel, series, occurrence) =
        (ids.main, ids.live, ids.patch, ids.cancel, ids.series, ids.occurrence);
    let unknown = Uuid::new_v4();
    let valid_meeting = meeting_body("Bad input", in_hours(2));
    let valid_user = json!({"email": "new-user@example.com", "display_name": "New User"});

    // Every authenticated route × every bad token: 401.
    type Route = (Method, String, fn() -> Body);
    let routes: Vec<Route> = vec![
        (Method::POST, "/api/users".into(), || Body::Json(json!({"email": "a@b.co", "display_name": "A"}))),
        (Method::POST, "/api/meetings".into(), || Body::Json(meeting_body("x", in_hours(2)))),
        (Method::GET, "/api/meetings/upcoming".into(), || Body::None),
        (Method::GET, format!("/api/meetings/{main}"), || Body::None),
        (Method::PATCH, format!("/api/meetings/{patch}"), || Body::Json(json!({"title": "x"}))),
        (Method::DELETE, format!("/api/meetings/{main}"), || Body::None),
        (Method::POST, format!("/api/meetings/{main}/join-check"), || Body::None),
        (Method::GET, format!("/api/series/{series}"), || Body::None),
        (Method::DELETE, format!("/api/series/{series}"), || Body::None),
        (Method::GET, "/api/analytics/meetings".into(), || Body::None),
        (Method::POST, format!("/api/admin/meetings/{live}/crash"), || Body::None),
        (Method::GET, "/api/admin/cluster".into(), || Body::None),
        (Method::POST, "/api/admin/nodes/nobody/drain".into(), || Body::None),
    ];
    for (method, path, body) in &routes {
        for (label, auth) in unauthorised(t) {
            tb.add(label, method.clone(), path.clone(), None, body(), Want::Err(401, "unauthorized")).auth = auth;
        }
    }
    // More kinds of bad credentials, on one route.
    let upcoming = "/api/meetings/upcoming";
    for (label, auth) in [
        ("Basic scheme", b"Basic aG9zdDpwYXNz".to_vec()),
        ("Bearer without a token", b"Bearer".to_vec()),
        ("non-ASCII header bytes", b"Bearer \xff\xfe\xfd".to_vec()),
        ("8 KiB of garbage", format!("Bearer {}", "x".repeat(8192)).into_bytes()),
        ("wrong issuer", format!("Bearer {}", t.wrong_iss).into_bytes()),
        ("no issuer", format!("Bearer {}", t.no_iss).into_bytes()),
        ("no expiry", format!("Bearer {}", t.no_exp).into_bytes()),
        ("HS512 instead of HS256", format!("Bearer {}", t.hs512).into_bytes()),
        ("sub is not a user id", format!("Bearer {}", t.sub_not_uuid).into_bytes()),
        ("empty sub", format!("Bearer {}", t.sub_empty).into_bytes()),
        ("adm is a string", format!("Bearer {}", t.adm_not_bool).into_bytes()),
        ("a token with a trailing non-ASCII byte", [format!("Bearer {}", t.host).into_bytes(), vec![0x80]].concat()),
        ("operator token on a user route", format!("Bearer {}", t.admin).into_bytes()),
    ] {
        let case = tb.add(label, Method::GET, upcoming, None, Body::None, Want::Err(401, "unauthorized"));
        case.auth = Some(auth);
    }
    for (label, auth) in [
        ("lower-case bearer", format!("bearer {}", t.host)),
        ("padded token", format!("Bearer   {}  ", t.host)),
        ("token valid until the year 3000", format!("Bearer {}", t.far_future)),
    ] {
        tb.add(label, Method::GET, upcoming, None, Body::None, Want::Ok(200)).auth = Some(auth.into_bytes());
    }

    // Signed in, but not allowed.
    let h = Some(t.host.as_str());
    let o = Some(t.other.as_str());
    let i = Some(t.invitee.as_str());
    let a = Some(t.admin.as_str());
    let g = Some(t.ghost.as_str());
    let forbidden = Want::Err(403, "forbidden");
    tb.add("a user registering users", Method::POST, "/api/users", h, Body::Json(valid_user.clone()), forbidden);
    tb.add("a user's cluster view", Method::GET, "/api/admin/cluster", h, Body::None, forbidden);
    tb.add("a user draining a node", Method::POST, "/api/admin/nodes/standalone/drain", h, Body::None, forbidden);
    tb.add("another user's meeting", Method::GET, format!("/api/meetings/{main}"), o, Body::None, forbidden);
    let hijack = || Body::Json(json!({"title": "hijacked"}));
    tb.add("changing another's meeting", Method::PATCH, format!("/api/meetings/{main}"), o, hijack(), forbidden);
    tb.add("an invitee changing it", Method::PATCH, format!("/api/meetings/{main}"), i, hijack(), forbidden);
    tb.add("cancelling another's meeting", Method::DELETE, format!("/api/meetings/{main}"), o, Body::None, forbidden);
    tb.add("an invitee cancelling it", Method::DELETE, format!("/api/meetings/{main}"), i, Body::None, forbidden);
    tb.add("another's series", Method::GET, format!("/api/series/{series}"), o, Body::None, forbidden);
    tb.add("an invitee's view of a series", Method::GET, format!("/api/series/{series}"), i, Body::None, forbidden);
    tb.add("cancelling another's series", Method::DELETE, format!("/api/series/{series}"), o, Body::None, forbidden);
    let occ = format!("/api/meetings/{occurrence}");
    tb.add("moving another's occurrence", Method::PATCH, occ.clone(), o, hijack(), forbidden);
    tb.add("a ghost's view of a meeting", Method::GET, format!("/api/meetings/{main}"), g, Body::None, forbidden);
    tb.add("a ghost changing a meeting", Method::PATCH, format!("/api/meetings/{main}"), g, hijack(), forbidden);
    tb.add("a ghost's view of a series", Method::GET, format!("/api/series/{series}"), g, Body::None, forbidden);
    tb.add(
        "a ghost creating a meeting",
        Method::POST,
        "/api/meetings",
        g,
        Body::Json(valid_meeting.clone()),
        Want::Err(403, "unknown_user"),
    );
    tb.add("a ghost's upcoming meetings", Method::GET, upcoming, g, Body::None, Want::Ok(200));
    tb.add("a ghost's analytics", Method::GET, "/api/analytics/meetings", g, Body::None, Want::Ok(200));
    tb.add("an invitee's view", Method::GET, format!("/api/meetings/{main}"), i, Body::None, Want::Ok(200));
    tb.add("an operator's view", Method::GET, format!("/api/meetings/{main}"), a, Body::None, Want::Ok(200));
    let unauthorized = Want::Err(401, "unauthorized");
    tb.add(
        "an operator creating a meeting",
        Method::POST,
        "/api/meetings",
        a,
        Body::Json(valid_meeting.clone()),
        unauthorized,
    );
    tb.add(
        "an operator's join-check",
        Method::POST,
        format!("/api/meetings/{main}/join-check"),
        a,
        Body::None,
        unauthorized,
    );
    tb.add("an operator's series", Method::GET, format!("/api/series/{series}"), a, Body::None, unauthorized);
    tb.add(
        "crash with fault injection off",
        Method::POST,
        format!("/api/admin/meetings/{live}/crash"),
        a,
        Body::None,
        Want::Err(404, "not_found"),
    );
    tb.add(
        "crash by a user",
        Method::POST,
        format!("/api/admin/meetings/{live}/crash"),
        h,
        Body::None,
        Want::Err(404, "not_found"),
    );

    // Ids in paths: malformed, unknown, odd but valid spellings, traversal.
    let bad_ids: Vec<(&str, String)> = vec![
        ("not a uuid", "not-a-uuid".into()),
        ("35 characters", "00000000-0000-0000-0000-00000000000".into()),
        ("37 characters", "00000000-0000-0000-0000-0000000000000".into()),
        ("non-hex", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz".into()),
        ("NUL", "%00".into()),
        ("invalid UTF-8", "%FF".into()),
        ("an overlong UTF-8 slash", "%C0%AF".into()),
        ("an emoji", "%F0%9F%92%A9".into()),
        ("encoded traversal", "..%2F..%2Fetc%2Fpasswd".into()),
        ("SQL", "1%27%20OR%20%271%27%3D%271".into()),
        ("negative number", "-1".into()),
        ("4000 characters", "a".repeat(4000)),
    ];
    let invalid_id = Want::Err(400, "invalid_id");
    for (label, id) in &bad_ids {
        tb.add(
            format!("GET meeting, id {label}"),
            Method::GET,
            format!("/api/meetings/{id}"),
            h,
            Body::None,
            invalid_id,
        );
        tb.add(
            format!("DELETE meeting, id {label}"),
            Method::DELETE,
            format!("/api/meetings/{id}"),
            h,
            Body::None,
            invalid_id,
        );
        tb.add(format!("series, id {label}"), Method::GET, format!("/api/series/{id}"), h, Body::None, invalid_id);
    }
    for (label, id) in bad_ids.iter().take(6) {
        let path = format!("/api/meetings/{id}");
        tb.add(format!("PATCH meeting, id {label}"), Method::PATCH, path, h, Body::Json(json!({})), invalid_id);
        let path = format!("/api/meetings/{id}/join-check");
        tb.add(format!("join-check, id {label}"), Method::POST, path, h, Body::None, invalid_id);
        let path = format!("/api/series/{id}");
        tb.add(format!("DELETE series, id {label}"), Method::DELETE, path, h, Body::None, invalid_id);
        // A segment that is not UTF-8 once decoded is refused before the route looks it up.
        let unknown = if *label == "invalid UTF-8" { invalid_id } else { Want::Err(404, "not_found") };
        let path = format!("/api/admin/nodes/{id}/drain");
        tb.add(format!("drain, node {label}"), Method::POST, path, a, Body::None, unknown);
        let path = format!("/api/admin/meetings/{id}/crash");
        tb.add(format!("crash, id {label}"), Method::POST, path, a, Body::None, unknown);
    }
    let not_found = Want::Err(404, "not_found");
    let m = |id: &dyn std::fmt::Display| format!("/api/meetings/{id}");
    tb.add("unknown meeting", Method::GET, m(&unknown), h, Body::None, not_found);
    tb.add("nil uuid", Method::GET, m(&Uuid::nil()), h, Body::None, not_found);
    tb.add("max uuid", Method::GET, m(&"ffffffff-ffff-ffff-ffff-ffffffffffff"), h, Body::None, not_found);
    tb.add("braced uuid", Method::GET, m(&format!("%7B{unknown}%7D")), h, Body::None, not_found);
    tb.add("urn uuid", Method::GET, m(&format!("urn:uuid:{unknown}")), h, Body::None, not_found);
    tb.add("simple uuid", Method::GET, m(&unknown.simple()), h, Body::None, not_found);
    tb.add("upper-case uuid", Method::GET, m(&main.to_string().to_uppercase()), h, Body::None, Want::Ok(200));
    tb.add("a series id as meeting", Method::GET, m(&series), h, Body::None, not_found);
    tb.add("a meeting id as series", Method::GET, format!("/api/series/{main}"), h, Body::None, not_found);
    tb.add("unknown series", Method::DELETE, format!("/api/series/{unknown}"), h, Body::None, not_found);
    tb.add("PATCH unknown", Method::PATCH, m(&unknown), h, Body::Json(json!({"title": "x"})), not_found);
    tb.add("DELETE unknown", Method::DELETE, m(&unknown), h, Body::None, not_found);
    tb.add("join-check unknown", Method::POST, format!("/api/meetings/{unknown}/join-check"), h, Body::None, not_found);
    tb.add("drain unknown node", Method::POST, "/api/admin/nodes/no-such-node/drain", a, Body::None, not_found);
    let long_node = format!("/api/admin/nodes/{}/drain", "n".repeat(3000));
    tb.add("drain a 3000-character name", Method::POST, long_node, a, Body::None, not_found);
    tb.add("query on a path route", Method::GET, format!("/api/meetings/{main}?x=1&y"), h, Body::None, Want::Ok(200));
    tb.add("trailing slash", Method::GET, format!("/api/meetings/{main}/"), h, Body::None, not_found);
    tb.add("double slash", Method::GET, "/api//meetings/upcoming", h, Body::None, not_found);
    tb.add("route case", Method::GET, "/api/Meetings/upcoming", h, Body::None, not_found);
    tb.add("unknown route", Method::GET, "/api/recordings", h, Body::None, not_found);
    tb.add("unknown sub-route", Method::GET, format!("/api/meetings/{main}/occurrences"), h, Body::None, not_found);
    tb.add("api root", Method::GET, "/api", h, Body::None, not_found);
    tb.add(
        "dot segments (normalised by the client)",
        Method::GET,
        "/api/meetings/../users",
        h,
        Body::None,
        Want::Err(405, "method_not_allowed"),
    );
    tb.add("encoded slash in an id", Method::GET, "/api/meetings/%2F", h, Body::None, invalid_id);
    tb.add("encoded traversal to a file", Method::GET, "/..%2F..%2F..%2Fetc%2Fpasswd", None, Body::None, not_found);

    // Query strings: unknown parameters, bad pagination, duplicates.
    let invalid_query = Want::Err(400, "invalid_query");
    let invalid_field = Want::Err(400, "invalid_field");
    for (q, want) in [
        ("limit=0", invalid_field),
        ("limit=101", invalid_field),
        ("limit=18446744073709551615", invalid_field),
        ("limit=-1", invalid_query),
        ("limit=abc", invalid_query),
        ("limit=18446744073709551616", invalid_query),
        ("limit=1e2", invalid_query),
        ("limit=1.0", invalid_query),
        ("limit=", invalid_query),
        ("limit", invalid_query),
        ("limit=1&limit=2", invalid_query),
        ("limit=%00", invalid_query),
        ("limit=5%00", invalid_query),
        ("limit=%205", invalid_query),
        ("foo=bar", invalid_query),
        ("page=2", invalid_query),
        ("offset=-1", invalid_query),
        ("limit=10&token=x", invalid_query),
        ("limit=1", Want::Ok(200)),
        ("limit=100", Want::Ok(200)),
        ("", Want::Ok(200)),
        ("&&&", Want::Ok(200)),
    ] {
        tb.add(format!("upcoming ?{q}"), Method::GET, format!("{upcoming}?{q}"), h, Body::None, want);
    }
    for (q, want) in [
        ("days=0", invalid_field),
        ("days=367", invalid_field),
        ("days=4294967295", invalid_field),
        ("days=-1", invalid_query),
        ("days=4294967296", invalid_query),
        ("days=abc", invalid_query),
        ("days=1.5", invalid_query),
        ("days=30&days=31", invalid_query),
        ("days=%FF", invalid_query),
        ("since=2020-01-01", invalid_query),
        ("days=1", Want::Ok(200)),
        ("days=366", Want::Ok(200)),
    ] {
        let path = format!("/api/analytics/meetings?{q}");
        tb.add(format!("analytics ?{q}"), Method::GET, path, h, Body::None, want);
    }
    tb.add("cluster with a query", Method::GET, "/api/admin/cluster?verbose=1&x", a, Body::None, Want::Ok(200));
    for q in ["participant=a&participant=b", "actor=meeting&actor=meeting"] {
        let path = format!("/api/admin/meetings/{live}/crash?{q}");
        // A JSON error either way: the query refused, or the route hidden (no fault injection).
        let want = Want::OneOf(&[(400, "invalid_query"), (404, "not_found")]);
        tb.add(format!("crash ?{q}"), Method::POST, path, a, Body::None, want);
    }
    tb.add(
        "/ws?token twice",
        Method::GET,
        "/ws?token=a&token=b",
        None,
        Body::None,
        Want::OneOf(&[(400, "upgrade_required"), (400, "invalid_query")]),
    );

    // Bodies of POST /api/meetings: not JSON, not an object, too deep, too big, wrong content type.
    let create = "/api/meetings";
    let malformed = Want::Err(400, "malformed_json");
    let valid_text = valid_meeting.to_string();
    let at = valid_meeting["scheduled_time"].as_str().unwrap_or_default().to_owned();
    // The valid body as text with `title` and `duration` spliced in raw.
    let text_with = |title: &str, duration: &str| {
        format!(r#"{{"title": {title}, "scheduled_time": "{at}", "duration_minutes": {duration}, "timezone": "UTC"}}"#)
    };
    let overlong = {
        let text = text_with("\"@@\"", "30");
        let (before, after) = text.split_once("@@").expect("marker");
        [before.as_bytes(), b"\xc0\xaf", after.as_bytes()].concat()
    };
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for (label, body, want) in [
        ("empty body", raw_json(""), malformed),
        ("null", raw_json("null"), invalid_field),
        ("an array", raw_json("[]"), invalid_field),
        ("an empty object", raw_json("{}"), invalid_field),
        ("a string", raw_json("\"meeting\""), invalid_field),
        ("a number", raw_json("42"), invalid_field),
        ("true", raw_json("true"), invalid_field),
        ("truncated", raw_json("{\"title\": \"x\","), malformed),
        ("invalid UTF-8", raw_json(b"\xff\xfe".to_vec()), malformed),
        ("a BOM first", raw_json(format!("\u{feff}{valid_text}")), malformed),
        ("trailing garbage", raw_json(format!("{valid_text} x")), malformed),
        ("two objects", raw_json(format!("{valid_text}{valid_text}")), malformed),
        // Syntax is checked first: past the parser's depth limit (128) a body is not JSON we read.
        ("10,000 open brackets", raw_json("[".repeat(10_000)), malformed),
        ("50,000 open objects", raw_json("{\"a\":".repeat(50_000)), malformed),
        ("title nested 200 deep", raw_json(format!("{{\"title\": {}}}", nested(200))), malformed),
        ("a string never closed", raw_json(format!("{{\"title\": \"{}", "x".repeat(10_000))), malformed),
        ("title nested 50 deep", raw_json(format!("{{\"title\": {}}}", nested(50))), invalid_field),
        ("single quotes", raw_json("{'title': 'x'}"), malformed),
        ("NaN", raw_json(text_with("\"x\"", "NaN")), malformed),
        ("a comment", raw_json(format!("/* hi */{valid_text}")), malformed),
        ("a lone surrogate", raw_json(text_with("\"\\ud800\"", "30")), malformed),
        ("overlong UTF-8 in a string", raw_json(overlong), malformed),
        ("duration 1e400", raw_json(text_with("\"x\"", "1e400")), malformed),
        ("duration 1e308", raw_json(text_with("\"x\"", "1e308")), invalid_field),
        ("duration -0", raw_json(text_with("\"x\"", "-0")), invalid_field),
        ("duration beyond u64", raw_json(text_with("\"x\"", "99999999999999999999")), invalid_field),
        ("duplicate keys", raw_json(valid_text.replacen('{', "{\"title\": \"a\", ", 1)), invalid_field),
        (
            "over 1 MiB of JSON",
            raw_json(json!({"title": "a".repeat(1024 * 1024 + 10)}).to_string()),
            Want::Err(413, "payload_too_large"),
        ),
        ("over 1 MiB of garbage", raw_json(vec![b'x'; 2 << 20]), Want::Err(413, "payload_too_large")),
        (
            "a title just under 1 MiB",
            Body::Json(
                json!({"title": "a".repeat(1024 * 1000), "duration_minutes": 30, "scheduled_time": in_hours(2)}),
            ),
            invalid_field,
        ),
        (
            "text/plain",
            Body::Raw(Some("text/plain"), valid_text.clone().into_bytes()),
            Want::Err(415, "unsupported_media_type"),
        ),
        ("no content type", Body::Raw(None, valid_text.clone().into_bytes()), Want::Err(415, "unsupported_media_type")),
        (
            "form encoded",
            Body::Raw(Some("application/x-www-form-urlencoded"), b"title=x".to_vec()),
            Want::Err(415, "unsupported_media_type"),
        ),
        (
            "multipart",
            Body::Raw(Some("multipart/form-data; boundary=x"), b"--x--".to_vec()),
            Want::Err(415, "unsupported_media_type"),
        ),
        (
            "application/jsonx",
            Body::Raw(Some("application/jsonx"), valid_text.clone().into_bytes()),
            Want::Err(415, "unsupported_media_type"),
        ),
        (
            "content type garbage",
            Body::Raw(Some(";;;"), valid_text.clone().into_bytes()),
            Want::Err(415, "unsupported_media_type"),
        ),
        (
            "JSON with a charset",
            Body::Raw(Some("application/json; charset=utf-8"), valid_text.clone().into_bytes()),
            Want::Ok(201),
        ),
        (
            "a +json type",
            Body::Raw(Some("application/vnd.parley+json"), valid_text.clone().into_bytes()),
            Want::Ok(201),
        ),
    ] {
        tb.add(format!("create: {label}"), Method::POST, create, h, body, want);
    }

    // Fields of POST /api/meetings: wrong types, NUL, extremes, edge timestamps.
    let unprocessable = Want::Err(422, "unprocessable");
    let created = Want::Ok(201);
    let field_cases: Vec<(&str, &str, Value, Want)> = vec![
        ("title", "a number", json!(5), invalid_field),
        ("title", "null", Value::Null, invalid_field),
        ("title", "an array", json!(["x"]), invalid_field),
        ("title", "an object", json!({"x": 1}), invalid_field),
        ("title", "empty", json!(""), invalid_field),
        ("title", "blank", json!("   "), invalid_field),
        ("title", "201 characters", json!("t".repeat(201)), invalid_field),
        ("title", "200 characters", json!("t".repeat(200)), created),
        ("title", "NUL", json!("a\u{0}b"), invalid_field),
        ("title", "a bell", json!("\u{7}ding"), invalid_field),
        ("title", "a C1 control", json!("next\u{85}line"), invalid_field),
        ("title", "right-to-left override", json!("\u{202e}txet"), created),
        ("title", "200 emoji", json!("😀".repeat(200)), created),
        ("duration_minutes", "a string", json!("30"), invalid_field),
        ("duration_minutes", "a fraction", json!(30.5), invalid_field),
        ("duration_minutes", "a float", json!(30.0), invalid_field),
        ("duration_minutes", "negative", json!(-5), invalid_field),
        ("duration_minutes", "zero", json!(0), invalid_field),
        ("duration_minutes", "a day and a minute", json!(1441), invalid_field),
        ("duration_minutes", "a day", json!(1440), created),
        ("duration_minutes", "i64::MAX", json!(i64::MAX), invalid_field),
        ("duration_minutes", "i64::MIN", json!(i64::MIN), invalid_field),
        ("duration_minutes", "u64::MAX", json!(u64::MAX), invalid_field),
        ("duration_minutes", "null", Value::Null, invalid_field),
        ("scheduled_time", "a leap second", json!("2031-06-30T23:59:60Z"), unprocessable),
        ("scheduled_time", "ending after 9999", json!("9999-12-31T23:59:59Z"), unprocessable),
        ("scheduled_time", "year 10000 with a sign", json!("+10000-01-01T00:00:00Z"), unprocessable),
        ("scheduled_time", "year 10000", json!("10000-01-01T00:00:00Z"), invalid_field),
        ("scheduled_time", "no zone", json!("2031-01-01T10:00:00"), invalid_field),
        ("scheduled_time", "a date only", json!("2031-01-01"), invalid_field),
        ("scheduled_time", "month 13", json!("2031-13-01T10:00:00Z"), invalid_field),
        ("scheduled_time", "February 30", json!("2031-02-30T10:00:00Z"), invalid_field),
        ("scheduled_time", "hour 24", json!("2031-01-01T24:00:00Z"), invalid_field),
        ("scheduled_time", "offset +25:00", json!("2031-01-01T10:00:00+25:00"), invalid_field),
        ("scheduled_time", "the epoch", json!("1970-01-01T00:00:00Z"), unprocessable),
        ("scheduled_time", "year 1", json!("0001-01-01T00:00:00Z"), unprocessable),
        ("scheduled_time", "year 1 east of UTC", json!("0001-01-01T00:00:00+14:00"), unprocessable),
        ("scheduled_time", "a negative year", json!("-0001-01-01T00:00:00Z"), unprocessable),
        ("scheduled_time", "a Unix number", json!(1_900_000_000), invalid_field),
        ("scheduled_time", "empty", json!(""), invalid_field),
        ("scheduled_time", "words", json!("tomorrow at ten"), invalid_field),
        ("scheduled_time", "a trailing NUL", json!("2031-01-01T10:00:00Z\u{0}"), invalid_field),
        ("scheduled_time", "null", Value::Null, invalid_field),
        ("timezone", "a path", json!("../../etc/passwd"), invalid_field),
        ("timezone", "empty", json!(""), invalid_field),
        ("timezone", "NUL", json!("UTC\u{0}"), invalid_field),
        ("timezone", "a number", json!(5), invalid_field),
        ("timezone", "not a zone", json!("Mars/Olympus"), invalid_field),
        ("timezone", "10,000 characters", json!("Z".repeat(10_000)), invalid_field),
        ("timezone", "null (UTC)", Value::Null, created),
        ("meeting_type", "unknown", json!("party"), invalid_field),
        ("meeting_type", "upper case", json!("SCHEDULED"), invalid_field),
        ("meeting_type", "a number", json!(1), invalid_field),
        ("meeting_type", "recurring without a rule", json!("recurring"), unprocessable),
        ("meeting_type", "webinar", json!("webinar"), created),
        ("password", "empty", json!(""), invalid_field),
        ("password", "65 characters", json!("p".repeat(65)), invalid_field),
        ("password", "a number", json!(1234), invalid_field),
        ("password", "NUL (WebSocket join refuses NUL, so nobody could enter it)", json!("pw\u{0}"), invalid_field),
        ("settings", "a string flag", json!({"waiting_room": "yes"}), invalid_field),
        ("settings", "an unknown flag", json!({"bogus": true}), invalid_field),
        ("settings", "an unknown policy", json!({"screen_share": "everyone"}), invalid_field),
        // serde reads a struct from an array too (fields by position): `[]` is all defaults.
        ("settings", "an empty array", json!([]), created),
        ("settings", "an array too long", json!([false, true, false, true, "all", 1]), invalid_field),
        ("settings", "null (defaults)", Value::Null, created),
        ("participants", "a string", json!("a@b.co"), invalid_field),
        (
            "participants",
            "1001 invitees",
            json!((0..1001).map(|i| json!({"email": format!("u{i}@example.com")})).collect::<Vec<_>>()),
            invalid_field,
        ),
        ("participants", "not an email", json!([{"email": "not-an-email"}]), invalid_field),
        ("participants", "a numeric email", json!([{"email": 5}]), invalid_field),
        ("participants", "an unknown field", json!([{"email": "a@x.co", "extra": 1}]), invalid_field),
        ("participants", "an unknown role", json!([{"email": "a@x.co", "role": "boss"}]), invalid_field),
        ("participants", "a second host", json!([{"email": "a@x.co", "role": "host"}]), unprocessable),
        ("participants", "the host invited", json!([{"email": "HOST@example.com"}]), unprocessable),
        ("participants", "the same twice", json!([{"email": "d@x.co"}, {"email": "D@x.co"}]), unprocessable),
        ("participants", "NUL in an email", json!([{"email": "a\u{0}@x.co"}]), invalid_field),
        ("participants", "null invitee", json!([null]), invalid_field),
        ("participants", "an empty invitee", json!([{}]), invalid_field),
        (
            "participants",
            "a 300-character email",
            json!([{"email": format!("{}@x.co", "e".repeat(300))}]),
            invalid_field,
        ),
        ("recurrence", "unknown frequency", json!({"frequency": "hourly", "count": 2}), invalid_field),
        ("recurrence", "no end", json!({"frequency": "weekly"}), unprocessable),
        ("recurrence", "count 0", json!({"frequency": "weekly", "count": 0}), unprocessable),
        ("recurrence", "count 51", json!({"frequency": "weekly", "count": 51}), unprocessable),
        ("recurrence", "count 2^32", json!({"frequency": "weekly", "count": 4_294_967_296u64}), invalid_field),
        ("recurrence", "count -1", json!({"frequency": "weekly", "count": -1}), invalid_field),
        ("recurrence", "interval 0", json!({"frequency": "daily", "interval": 0, "count": 2}), unprocessable),
        ("recurrence", "interval 13", json!({"frequency": "daily", "interval": 13, "count": 2}), unprocessable),
        ("recurrence", "an unknown day", json!({"frequency": "weekly", "days": ["Funday"], "count": 2}), unprocessable),
        (
            "recurrence",
            "days with monthly",
            json!({"frequency": "monthly", "days": ["Mon"], "count": 2}),
            unprocessable,
        ),
        ("recurrence", "until before the start", json!({"frequency": "daily", "until": "2020-01-01"}), unprocessable),
        ("recurrence", "until not a date", json!({"frequency": "daily", "until": "soon"}), invalid_field),
        (
            "recurrence",
            "until and count",
            json!({"frequency": "daily", "until": "2099-01-01", "count": 2}),
            unprocessable,
        ),
        ("recurrence", "a string", json!("weekly"), invalid_field),
        ("recurrence", "an unknown field", json!({"frequency": "daily", "count": 2, "bogus": 1}), invalid_field),
        ("recurrence", "NUL in a day", json!({"frequency": "weekly", "days": ["Mon\u{0}"], "count": 2}), unprocessable),
        ("recurrence", "daily until 9999", json!({"frequency": "daily", "until": "9999-12-31"}), unprocessable),
        ("recurrence", "until year +262143", json!({"frequency": "daily", "until": "+262143-12-31"}), invalid_field),
        ("recurrence", "until year 262144", json!({"frequency": "daily", "until": "+262144-01-01"}), invalid_field),
        (
            "recurrence",
            "interval u32::MAX",
            json!({"frequency": "monthly", "interval": u32::MAX, "count": 2}),
            unprocessable,
        ),
        ("bogus", "an unknown field", json!(1), invalid_field),
        ("__proto__", "a prototype key", json!({}), invalid_field),
        ("Title", "a field in the wrong case", json!("x"), invalid_field),
    ];
    for (field, label, value, want) in field_cases {
        let mut body = valid_meeting.clone();
        body[field] = value;
        tb.add(format!("create: {field} {label}"), Method::POST, create, h, Body::Json(body), want);
    }
    for field in ["title", "duration_minutes", "scheduled_time"] {
        let mut body = valid_meeting.clone();
        body.as_object_mut().expect("object").remove(field);
        tb.add(format!("create: without {field}"), Method::POST, create, h, Body::Json(body), invalid_field);
    }
    for (label, at, tz, rule) in [
        (
            "a weekly series crossing into year 10000",
            "9999-12-25T10:00:00Z",
            "UTC",
            json!({"frequency": "weekly", "count": 2}),
        ),
        (
            "a daily series from 9999-12-31 in UTC+14",
            "9999-12-31T09:00:00Z",
            "Pacific/Kiritimati",
            json!({"frequency": "daily", "count": 2}),
        ),
        (
            "a monthly series on the 31st of December 9999",
            "9999-12-31T10:00:00Z",
            "UTC",
            json!({"frequency": "monthly", "count": 3}),
        ),
    ] {
        let mut body = valid_meeting.clone();
        body["scheduled_time"] = json!(at);
        body["timezone"] = json!(tz);
        body["recurrence"] = rule;
        tb.add(format!("create: {label}"), Method::POST, create, h, Body::Json(body), unprocessable);
    }
    let instant = json!({"title": "Now", "duration_minutes": 15, "meeting_type": "instant"});
    tb.add("create: instant without a time", Method::POST, create, h, Body::Json(instant), created);
    let mut body = valid_meeting.clone();
    body["meeting_type"] = json!("scheduled");
    body["recurrence"] = json!({"frequency": "daily", "count": 2});
    tb.add("create: a rule on a scheduled meeting", Method::POST, create, h, Body::Json(body), unprocessable);

    // POST /api/users (operator).
    let users = "/api/users";
    for (label, body, want) in [
        ("empty object", json!({}), invalid_field),
        ("not an email", json!({"email": "x", "display_name": "X"}), invalid_field),
        ("a numeric email", json!({"email": 5, "display_name": "X"}), invalid_field),
        ("NUL in the email", json!({"email": "a\u{0}@x.co", "display_name": "X"}), invalid_field),
        ("a blank email", json!({"email": " ", "display_name": "X"}), invalid_field),
        (
            "a 255-character email",
            json!({"email": format!("{}@x.co", "e".repeat(250)), "display_name": "X"}),
            invalid_field,
        ),
        ("an empty name", json!({"email": "e1@x.co", "display_name": ""}), invalid_field),
        ("NUL in the name", json!({"email": "e2@x.co", "display_name": "Eve\u{0}"}), invalid_field),
        ("a 101-character name", json!({"email": "e3@x.co", "display_name": "n".repeat(101)}), invalid_field),
        ("a numeric name", json!({"email": "e4@x.co", "display_name": 5}), invalid_field),
        ("an unknown plan", json!({"email": "e5@x.co", "display_name": "E", "plan": "platinum"}), invalid_field),
        ("an unknown field", json!({"email": "e6@x.co", "display_name": "E", "admin": true}), invalid_field),
        ("a new user", valid_user.clone(), created),
        ("the same email again", valid_user.clone(), Want::Err(409, "conflict")),
        (
            "an existing email in upper case",
            json!({"email": "HOST@EXAMPLE.COM", "display_name": "H"}),
            Want::Err(409, "conflict"),
        ),
    ] {
        tb.add(format!("users: {label}"), Method::POST, users, a, Body::Json(body), want);
    }
    tb.add("users: empty body", Method::POST, users, a, raw_json(""), malformed);
    tb.add("users: null", Method::POST, users, a, raw_json("null"), invalid_field);
    tb.add(
        "users: text/plain",
        Method::POST,
        users,
        a,
        Body::Raw(Some("text/plain"), valid_user.to_string().into_bytes()),
        Want::Err(415, "unsupported_media_type"),
    );
    tb.add(
        "users: over 1 MiB",
        Method::POST,
        users,
        a,
        raw_json(vec![b' '; 2 << 20]),
        Want::Err(413, "payload_too_large"),
    );

    // PATCH /api/meetings/{id} (the host).
    let p = format!("/api/meetings/{patch}");
    for (label, body, want) in [
        ("nothing", json!({}), Want::Ok(200)),
        ("a numeric title", json!({"title": 5}), invalid_field),
        ("a NUL title", json!({"title": "\u{0}"}), invalid_field),
        ("an empty title", json!({"title": ""}), invalid_field),
        ("a leap second", json!({"scheduled_time": "2031-06-30T23:59:60Z"}), unprocessable),
        ("the past", json!({"scheduled_time": "1999-01-01T00:00:00Z"}), unprocessable),
        ("words for a time", json!({"scheduled_time": "soon"}), invalid_field),
        ("a time ending after 9999", json!({"scheduled_time": "9999-12-31T23:59:00Z"}), unprocessable),
        ("a null time", json!({"scheduled_time": null}), Want::Ok(200)),
        ("a negative duration", json!({"duration_minutes": -1}), invalid_field),
        ("a u64::MAX duration", json!({"duration_minutes": u64::MAX}), invalid_field),
        ("a null password (remove)", json!({"password": null}), Want::Ok(200)),
        ("an empty password", json!({"password": ""}), invalid_field),
        ("a numeric password", json!({"password": 5}), invalid_field),
        ("an unknown setting", json!({"settings": {"bogus": true}}), invalid_field),
        ("an unknown policy", json!({"settings": {"screen_share": "everyone"}}), invalid_field),
        ("null settings", json!({"settings": null}), invalid_field),
        ("not a zone", json!({"timezone": "Nowhere/Land"}), invalid_field),
        ("a zone", json!({"timezone": "Europe/Paris"}), Want::Ok(200)),
        ("an unknown field", json!({"host_user_id": Uuid::new_v4()}), invalid_field),
        ("a NUL key", json!({"\u{0}": 1}), invalid_field),
    ] {
        tb.add(format!("patch: {label}"), Method::PATCH, p.clone(), h, Body::Json(body), want);
    }
    tb.add("patch: empty body", Method::PATCH, p.clone(), h, raw_json(""), malformed);
    tb.add("patch: an array", Method::PATCH, p.clone(), h, raw_json("[]"), invalid_field);
    tb.add("patch: duration 1e400", Method::PATCH, p.clone(), h, raw_json("{\"duration_minutes\": 1e400}"), malformed);
    tb.add(
        "patch: text/plain",
        Method::PATCH,
        p.clone(),
        h,
        Body::Raw(Some("text/plain"), b"{}".to_vec()),
        Want::Err(415, "unsupported_media_type"),
    );
    let live_path = format!("/api/meetings/{live}");
    let later = json!({"scheduled_time": in_hours(9)});
    tb.add("patch: moving a live meeting", Method::PATCH, live_path.clone(), h, Body::Json(later), unprocessable);
    tb.add(
        "patch: renaming a live meeting",
        Method::PATCH,
        live_path.clone(),
        h,
        Body::Json(json!({"title": "Still live"})),
        Want::Ok(200),
    );
    tb.add(
        "patch: moving an occurrence (an exception)",
        Method::PATCH,
        occ.clone(),
        h,
        Body::Json(json!({"scheduled_time": in_hours(30)})),
        Want::Ok(200),
    );
    tb.add(
        "patch: an occurrence to a leap second",
        Method::PATCH,
        occ.clone(),
        h,
        Body::Json(json!({"scheduled_time": "2031-06-30T23:59:60Z"})),
        unprocessable,
    );

    // DELETE /api/meetings/{id}.
    let c = format!("/api/meetings/{cancel}");
    tb.add("cancel: a live meeting", Method::DELETE, live_path, h, Body::None, unprocessable);
    tb.add(
        "cancel: with a garbage body",
        Method::DELETE,
        c.clone(),
        h,
        Body::Raw(Some("application/json"), b"{".to_vec()),
        Want::Ok(200),
    );
    tb.add("cancel: again", Method::DELETE, c.clone(), h, Body::None, Want::Ok(200));
    tb.add("patch: a cancelled meeting", Method::PATCH, c, h, Body::Json(json!({"title": "back"})), unprocessable);

    // POST /api/meetings/{id}/join-check: the body is optional JSON of any content type.
    let jc = format!("/api/meetings/{main}/join-check");
    let allowed = Want::OkWith(200, "status", "allowed");
    for (label, body, want) in [
        ("no body", Body::None, allowed),
        ("whitespace", raw_json("  \n\t "), allowed),
        ("an empty object", raw_json("{}"), allowed),
        ("a null password", raw_json("{\"password\": null}"), allowed),
        ("text/plain JSON", Body::Raw(Some("text/plain"), b"{}".to_vec()), allowed),
        ("null", raw_json("null"), invalid_field),
        ("an empty array", raw_json("[]"), invalid_field),
        ("a numeric password", raw_json("{\"password\": 5}"), invalid_field),
        ("an unknown field", raw_json("{\"role\": \"host\"}"), invalid_field),
        ("truncated", raw_json("{"), malformed),
        ("invalid UTF-8", raw_json(b"\xff".to_vec()), malformed),
        ("10,000 open brackets", raw_json("[".repeat(10_000)), malformed),
        ("over 1 MiB", raw_json(vec![b'x'; 2 << 20]), Want::Err(413, "payload_too_large")),
    ] {
        tb.add(format!("join-check: {label}"), Method::POST, jc.clone(), h, body, want);
    }
    let not_started = Want::OkWith(200, "status", "meeting_not_started");
    tb.add("join-check: another user, not started", Method::POST, jc.clone(), o, Body::None, not_started);
    tb.add("join-check: a ghost, not started", Method::POST, jc, g, Body::None, not_started);
    // The live meeting has a password: wrong ones are answers, not errors, until the throttle.
    let jl = format!("/api/meetings/{live}/join-check");
    let wrong = Want::OkWith(200, "status", "wrong_password");
    let pw = |p: &str| Body::Json(json!({ "password": p }));
    tb.add("join-check: no password", Method::POST, jl.clone(), o, Body::None, wrong);
    tb.add("join-check: a wrong password", Method::POST, jl.clone(), o, pw("nope"), wrong);
    tb.add("join-check: the password", Method::POST, jl.clone(), o, pw("pw"), allowed);
    tb.add("join-check: a NUL password", Method::POST, jl.clone(), o, pw("\u{0}"), wrong);
    tb.add("join-check: a 100,000-character password", Method::POST, jl.clone(), o, pw(&"p".repeat(100_000)), wrong);
    tb.add(
        "join-check: the password as text/plain",
        Method::POST,
        jl.clone(),
        o,
        Body::Raw(Some("text/plain"), b"{\"password\":\"pw\"}".to_vec()),
        allowed,
    );
    tb.add("join-check: the host needs none", Method::POST, jl.clone(), h, Body::None, allowed);
    for n in 1..=5 {
        tb.add(format!("join-check: guess {n}"), Method::POST, jl.clone(), i, pw(&format!("guess{n}")), wrong);
    }
    tb.add("join-check: a sixth guess", Method::POST, jl.clone(), i, pw("guess6"), Want::Err(429, "too_many_attempts"));
    tb.add("join-check: then the right one", Method::POST, jl, i, pw("pw"), Want::Err(429, "too_many_attempts"));

    // Series and admin routes.
    tb.add("series: the host's", Method::GET, format!("/api/series/{series}"), h, Body::None, Want::Ok(200));
    tb.add("cluster: an operator's", Method::GET, "/api/admin/cluster", a, Body::None, Want::Ok(200));

    // Wrong methods.
    let mna = Want::Err(405, "method_not_allowed");
    let brew = Method::from_bytes(b"BREW").expect("method");
    for (method, path) in [
        (Method::GET, "/api/users".to_owned()),
        (Method::PUT, "/api/users".into()),
        (Method::DELETE, "/api/users".into()),
        (Method::PATCH, "/api/users".into()),
        (Method::OPTIONS, "/api/users".into()),
        (Method::TRACE, "/api/users".into()),
        (brew, "/api/users".into()),
        (Method::GET, "/api/meetings".into()),
        (Method::PUT, "/api/meetings".into()),
        (Method::DELETE, "/api/meetings".into()),
        (Method::POST, "/api/meetings/upcoming".into()),
        (Method::DELETE, "/api/meetings/upcoming".into()),
        (Method::POST, format!("/api/meetings/{main}")),
        (Method::PUT, format!("/api/meetings/{main}")),
        (Method::GET, format!("/api/meetings/{main}/join-check")),
        (Method::PUT, format!("/api/meetings/{main}/join-check")),
        (Method::POST, format!("/api/series/{series}")),
        (Method::PATCH, format!("/api/series/{series}")),
        (Method::POST, "/api/analytics/meetings".into()),
        (Method::GET, format!("/api/admin/meetings/{live}/crash")),
        (Method::POST, "/api/admin/cluster".into()),
        (Method::GET, "/api/admin/nodes/standalone/drain".into()),
        (Method::POST, "/healthz".into()),
        (Method::DELETE, "/".into()),
        (Method::POST, "/ws".into()),
    ] {
        tb.add(format!("{method} not allowed"), method, path, h, Body::None, mna);
    }

    // The pages, the health check and the WebSocket endpoint as plain HTTP.
    tb.add("health", Method::GET, "/healthz", None, Body::None, Want::Ok(200));
    tb.add("health with junk", Method::GET, "/healthz?x=%FF", Some("garbage"), Body::None, Want::Ok(200));
    tb.add("client page", Method::GET, "/", None, Body::None, Want::Page);
    tb.add("join link", Method::GET, format!("/j/{main}"), None, Body::None, Want::Page);
    tb.add("join link with a garbage id", Method::GET, "/j/%FF%00..", None, Body::None, Want::Page);
    tb.add("unknown top-level route", Method::GET, "/admin", None, Body::None, not_found);
    tb.add(
        "websocket without an upgrade",
        Method::GET,
        "/ws",
        Some(&t.host),
        Body::None,
        Want::Err(400, "upgrade_required"),
    );
    let upgrade = |key: bool, version: &str| {
        let mut hs = vec![
            ("connection", "Upgrade".to_owned()),
            ("upgrade", "websocket".to_owned()),
            ("sec-websocket-version", version.to_owned()),
        ];
        if key {
            hs.push(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()));
        }
        hs
    };
    for (label, path, want) in [
        ("garbage token", "/ws?token=garbage".to_owned(), unauthorized),
        ("expired token", format!("/ws?token={}", t.expired), unauthorized),
        ("resume token", format!("/ws?token={}", t.resume), unauthorized),
        ("operator token", format!("/ws?token={}", t.admin), unauthorized),
        ("a ghost's token", format!("/ws?token={}", t.ghost), forbidden),
        ("NUL token", "/ws?token=%00".to_owned(), unauthorized),
    ] {
        tb.add(format!("websocket upgrade, {label}"), Method::GET, path, None, Body::None, want).headers =
            upgrade(true, "13");
    }
    tb.add(
        "websocket upgrade without a key",
        Method::GET,
        "/ws",
        Some(&t.host),
        Body::None,
        Want::Err(400, "upgrade_required"),
    )
    .headers = upgrade(false, "13");
    tb.add(
        "websocket upgrade, version 12",
        Method::GET,
        "/ws",
        Some(&t.host),
        Body::None,
        Want::Err(400, "upgrade_required"),
    )
    .headers = upgrade(true, "12");
    tb
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Json,
    Pack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// An attendee in the meeting (not a moderator).
    Guest,
    /// Connected, in no meeting.
    Outsider,
    /// The meeting's host.
    Host,
    /// The participant doing WebRTC signalling.
    Media,
}

/// The reply a WebSocket case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `ok: true` with this `result`.
    Ok(&'static str),
    /// `ok: false` with this code.
    Err(&'static str),
}

#[derive(Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

struct WsCase {
    name: String,
    who: Who,
    frame: Frame,
    reply_to: Value,
    want: Answer,
    /// Sent as a first offer: the connection leaves and rejoins before it (so it holds no
    /// media peer), and when refused the router keeps none.
    fresh: bool,
}

fn frame_of(v: &Value, enc: Enc) -> Frame {
    match enc {
        Enc::Json => Frame::Text(v.to_string()),
        Enc::Pack => Frame::Binary(rmp_serde::to_vec_named(v).expect("encode MessagePack")),
    }
}

/// `v` with `"id": id`.
fn id_set(mut v: Value, id: Value) -> Value {
    v["id"] = id;
    v
}

/// MessagePack str header for `len` bytes.
fn pack_str(bytes: &[u8]) -> Vec<u8> {
    let mut out = match bytes.len() {
        n if n < 32 => vec![0xa0 | n as u8],
        n if n < 256 => vec![0xd9, n as u8],
        n => vec![0xda, (n >> 8) as u8, n as u8],
    };
    out.extend_from_slice(bytes);
    out
}

/// Generates cases with unique ids.
struct Gen {
    next: u64,
    cases: Vec<WsCase>,
}

impl Gen {
    fn new(first_id: u64) -> Gen {
        Gen { next: first_id, cases: Vec::new() }
    }

    /// Makes the last case a first offer (see [`WsCase::fresh`]).
    fn fresh(&mut self) {
        if let Some(c) = self.cases.last_mut() {
            c.fresh = true;
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// `{"id", "type": ty, …fields}` in `enc`, answered under its id.
    fn req(&mut self, who: Who, enc: Enc, name: impl AsRef<str>, ty: &str, fields: &Value, want: Answer) {
        let id = self.id();
        let mut v = fields.clone();
        v["type"] = json!(ty);
        v["id"] = json!(id);
        self.push(who, enc, name, frame_of(&v, enc), json!(id), want);
    }

    /// A request whose `id` is `id` (or absent): answered under `reply_to`.
    fn with_id(&mut self, who: Who, enc: Enc, name: impl AsRef<str>, v: Value, reply_to: Value, want: Answer) {
        self.push(who, enc, name, frame_of(&v, enc), reply_to, want);
    }

    fn push(&mut self, who: Who, enc: Enc, name: impl AsRef<str>, frame: Frame, reply_to: Value, want: Answer) {
        let tag = match enc {
            Enc::Json => "json",
            Enc::Pack => "msgpack",
        };
        self.cases.push(WsCase {
            name: format!("[{tag} {who:?}] {}", name.as_ref()),
            who,
            frame,
            reply_to,
            want,
            fresh: false,
        });
    }
}

/// Every request type PROTOCOL.md documents (the first column of its request tables).
fn documented_types() -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../PROTOCOL.md");
    let text = std::fs::read_to_string(&path).expect("read PROTOCOL.md");
    let mut types = BTreeSet::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| type |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if in_table {
            let first = line.split('|').nth(1).unwrap_or("");
            types.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    types
}

/// A valid request of each type (as far as decoding goes) for meeting `m` and user `u`.
fn template(ty: &str, m: Uuid, u: Uuid) -> Option<Value> {
    let candidate = json!({"candidate": HOST_CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0});
    Some(match ty {
        "auth" => json!({"token": "t"}),
        "start" | "join" => json!({ "meeting_id": m }),
        "resume" => json!({"meeting_id": m, "resume_token": "r"}),
        "leave" | "heartbeat" | "admit_all" | "mute_all" | "raise_hand" | "lower_hand" | "screen_share_start"
        | "screen_share_stop" | "end_meeting" | "breakouts_open" | "breakouts_close" | "breakout_return" => json!({}),
        "admit" | "deny" | "mute_participant" | "stop_video" | "ask_unmute" | "remove" => json!({ "user_id": u }),
        "mute" => json!({"muted": true}),
        "video" => json!({"on": true}),
        "chat" | "breakouts_broadcast" => json!({"text": "hi"}),
        "set_chat" => json!({"enabled": true}),
        "set_role" => json!({"user_id": u, "role": "co_host"}),
        "lock" => json!({"locked": false}),
        "recording" => json!({"on": false}),
        "breakouts_create" => json!({"count": 2}),
        "breakout_join" => json!({"room": 1}),
        "offer" | "answer" => json!({"sdp": "v=0\r\n"}),
        "ice_candidate" => json!({ "candidate": candidate }),
        "subscribe" => json!({"view": "gallery"}),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Uuid,
    Bool,
    /// Chat or broadcast text (4 KiB).
    Text,
    /// A display name (100 characters).
    Name,
    /// A join password (256 bytes).
    Password,
    /// Any other string (a token): no limit.
    Str,
    Sdp,
    U32,
    U64,
    Role,
    View,
    Candidate,
    Sources,
    Assignments,
}

/// The fields of each type: name, kind, required.
fn fields(ty: &str) -> &'static [(&'static str, Kind, bool)] {
    match ty {
        "auth" => &[("token", Kind::Str, true)],
        "start" => &[("meeting_id", Kind::Uuid, true), ("display_name", Kind::Name, false)],
        "join" => &[
            ("meeting_id", Kind::Uuid, true),
            ("password", Kind::Password, false),
            ("display_name", Kind::Name, false),
        ],
        "resume" => {
            &[("meeting_id", Kind::Uuid, true), ("resume_token", Kind::Str, true), ("last_seq", Kind::U64, false)]
        }
        "admit" | "deny" | "mute_participant" | "stop_video" | "ask_unmute" | "remove" => {
            &[("user_id", Kind::Uuid, true)]
        }
        "mute" => &[("muted", Kind::Bool, true)],
        "video" | "recording" => &[("on", Kind::Bool, true)],
        "set_chat" => &[("enabled", Kind::Bool, true)],
        "lock" => &[("locked", Kind::Bool, true)],
        "lower_hand" => &[("user_id", Kind::Uuid, false)],
        "chat" => &[("text", Kind::Text, true), ("to", Kind::Uuid, false)],
        "breakouts_broadcast" => &[("text", Kind::Text, true)],
        "set_role" => &[("user_id", Kind::Uuid, true), ("role", Kind::Role, true)],
        "breakouts_create" => &[("count", Kind::U32, false), ("assignments", Kind::Assignments, false)],
        "breakout_join" => &[("room", Kind::U32, true)],
        "offer" => &[("sdp", Kind::Sdp, true), ("sources", Kind::Sources, false)],
        "answer" => &[("sdp", Kind::Sdp, true)],
        "ice_candidate" => &[("candidate", Kind::Candidate, true)],
        "subscribe" => &[
            ("view", Kind::View, true),
            ("page", Kind::U32, false),
            ("page_size", Kind::U32, false),
            ("audio", Kind::U32, false),
        ],
        _ => &[],
    }
}

/// Values of `kind` that never decode, with the code each gets.
fn bad_values(kind: Kind) -> Vec<(String, Value, &'static str)> {
    let f = "invalid_field";
    let not_a_string = || {
        vec![
            ("a number".to_owned(), json!(5), f),
            ("an array".to_owned(), json!(["x"]), f),
            ("an object".to_owned(), json!({"s": "x"}), f),
            ("a bool".to_owned(), json!(false), f),
            ("NUL".to_owned(), json!("a\u{0}b"), f),
        ]
    };
    let candidate = |extra: Value| {
        let mut c = json!({"candidate": HOST_CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    };
    let u = Uuid::new_v4();
    match kind {
        Kind::Uuid => vec![
            ("a number".into(), json!(5), f),
            ("not a uuid".into(), json!("not-a-uuid"), f),
            ("empty".into(), json!(""), f),
            ("an array".into(), json!([u]), f),
            ("an object".into(), json!({ "id": u }), f),
            ("10,000 characters".into(), json!("a".repeat(10_000)), f),
            ("NUL".into(), json!(format!("{u}\u{0}")), f),
        ],
        Kind::Bool => vec![
            ("a string".into(), json!("true"), f),
            ("a number".into(), json!(1), f),
            ("an array".into(), json!([true]), f),
        ],
        Kind::Text => {
            let mut v = not_a_string();
            v.push(("4097 bytes".into(), json!("x".repeat(4097)), "text_too_long"));
            v.push(("2049 two-byte characters".into(), json!("é".repeat(2049)), "text_too_long"));
            v.push(("blank".into(), json!(" \t\n "), f));
            v
        }
        Kind::Name => {
            let mut v = not_a_string();
            v.push(("101 characters".into(), json!("n".repeat(101)), f));
            v.push(("blank".into(), json!("  "), f));
            v
        }
        Kind::Password => {
            let mut v = not_a_string();
            v.push(("257 bytes".into(), json!("p".repeat(257)), f));
            v
        }
        Kind::Str => not_a_string(),
        Kind::Sdp => {
            let mut v = not_a_string();
            v.push(("empty".into(), json!(""), "invalid_sdp"));
            v.push(("not SDP".into(), json!("hello"), "invalid_sdp"));
            v.push(("over 32 KiB".into(), json!(format!("v=0\r\n{}", "a".repeat(32 * 1024))), "invalid_sdp"));
            v
        }
        Kind::U32 => vec![
            ("negative".into(), json!(-1), f),
            ("2^32".into(), json!(4_294_967_296u64), f),
            ("a fraction".into(), json!(1.5), f),
            ("a string".into(), json!("1"), f),
            ("a bool".into(), json!(true), f),
            ("u64::MAX".into(), json!(u64::MAX), f),
        ],
        Kind::U64 => vec![
            ("negative".into(), json!(-1), f),
            ("2^64".into(), json!(18_446_744_073_709_551_616.0f64), f),
            ("a fraction".into(), json!(0.5), f),
            ("a string".into(), json!("7"), f),
        ],
        Kind::Role => vec![
            ("unknown".into(), json!("boss"), f),
            ("upper case".into(), json!("CO_HOST"), f),
            ("a number".into(), json!(2), f),
        ],
        Kind::View => vec![
            ("unknown".into(), json!("mosaic"), f),
            ("upper case".into(), json!("GALLERY"), f),
            ("a number".into(), json!(1), f),
        ],
        Kind::Candidate => vec![
            ("a string".into(), json!("candidate:1 1 udp 1 127.0.0.1 9 typ host"), f),
            ("an empty object".into(), json!({}), f),
            ("a numeric candidate".into(), candidate(json!({"candidate": 5})), f),
            ("a numeric sdpMid".into(), candidate(json!({"sdpMid": 0})), f),
            ("sdpMLineIndex -1".into(), candidate(json!({"sdpMLineIndex": -1})), f),
            ("sdpMLineIndex 65536".into(), candidate(json!({"sdpMLineIndex": 65536})), f),
            ("a string sdpMLineIndex".into(), candidate(json!({"sdpMLineIndex": "0"})), f),
            ("a numeric usernameFragment".into(), candidate(json!({"usernameFragment": 5})), f),
            ("1025 characters".into(), candidate(json!({"candidate": format!("candidate:{}", "1".repeat(1015))})), f),
            ("NUL".into(), candidate(json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host\u{0}"})), f),
        ],
        Kind::Sources => vec![
            ("a string".into(), json!("camera"), f),
            ("an array".into(), json!(["camera"]), f),
            ("an unknown source".into(), json!({"t": "hologram"}), f),
            ("a numeric source".into(), json!({"t": 1}), f),
            ("a NUL track id".into(), json!({"t\u{0}": "camera"}), f),
        ],
        Kind::Assignments => vec![
            ("a key that is not a uuid".into(), json!({"bob": 1}), f),
            ("room 0".into(), json!({ u.to_string(): 0 }), f),
            ("room 51".into(), json!({ u.to_string(): 51 }), f),
            ("room -1".into(), json!({ u.to_string(): -1 }), f),
            ("empty".into(), json!({}), f),
            ("an array".into(), json!([1]), f),
        ],
    }
}

/// The WebSocket cases: per documented type the generic malformations, the field-level
/// ones, then who may do what, then whole-frame garbage.
fn ws_cases(g: &mut Gen, types: &BTreeSet<String>, m: Uuid, other_meeting: Uuid, host_id: Uuid) {
    let u = Uuid::new_v4();
    for ty in types {
        let t = template(ty, m, u).unwrap_or_else(|| panic!("no template for documented type `{ty}`"));
        for enc in [Enc::Json, Enc::Pack] {
            let with = |k: &str, v: Value| {
                let mut x = t.clone();
                x[k] = v;
                x
            };
            g.req(
                Who::Guest,
                enc,
                format!("{ty}: an unknown field"),
                ty,
                &with("x", json!(1)),
                Answer::Err("invalid_field"),
            );
            g.req(
                Who::Guest,
                enc,
                format!("{ty}: an unknown NUL field"),
                ty,
                &with("x", json!("\u{0}")),
                Answer::Err("invalid_field"),
            );
            g.req(
                Who::Guest,
                enc,
                format!("{ty}: a NUL key"),
                ty,
                &with("\u{0}", json!(1)),
                Answer::Err("invalid_field"),
            );
            g.req(
                Who::Guest,
                enc,
                format!("{ty}: a null unknown field"),
                ty,
                &with("extra", Value::Null),
                Answer::Err("invalid_field"),
            );
            let mut base = t.clone();
            base["type"] = json!(ty);
            for (label, id) in [
                ("a string id", Some(json!("7"))),
                ("a negative id", Some(json!(-1))),
                ("a fractional id", Some(json!(1.5))),
                ("a null id", Some(Value::Null)),
                ("an array id", Some(json!([1]))),
                ("no id", None),
            ] {
                let v = id.map_or_else(|| base.clone(), |id| id_set(base.clone(), id));
                g.with_id(Who::Guest, enc, format!("{ty}: {label}"), v, Value::Null, Answer::Err("invalid_id"));
            }
            let id = g.id();
            let mut upper = base.clone();
            upper["type"] = json!(ty.to_uppercase());
            g.with_id(
                Who::Guest,
                enc,
                format!("{ty}: upper-case type"),
                id_set(upper, json!(id)),
                json!(id),
                Answer::Err("unknown_type"),
            );
            let id = g.id();
            let mut spaced = base.clone();
            spaced["type"] = json!(format!(" {ty}"));
            g.with_id(
                Who::Guest,
                enc,
                format!("{ty}: a padded type"),
                id_set(spaced, json!(id)),
                json!(id),
                Answer::Err("unknown_type"),
            );
            // Field by field.
            for (field, kind, required) in fields(ty) {
                let field: &str = field;
                if *required {
                    let mut missing = t.clone();
                    missing.as_object_mut().expect("object").remove(field);
                    g.req(
                        Who::Guest,
                        enc,
                        format!("{ty}: without {field}"),
                        ty,
                        &missing,
                        Answer::Err("invalid_field"),
                    );
                    g.req(
                        Who::Guest,
                        enc,
                        format!("{ty}: {field} null"),
                        ty,
                        &with(field, Value::Null),
                        Answer::Err("invalid_field"),
                    );
                }
                for (label, value, code) in bad_values(*kind) {
                    let mut x = with(field, value);
                    if field == "assignments" {
                        x.as_object_mut().expect("object").remove("count");
                    }
                    g.req(Who::Guest, enc, format!("{ty}: {field} {label}"), ty, &x, Answer::Err(code));
                }
            }
        }
    }
    for enc in [Enc::Json, Enc::Pack] {
        // Limits only some fields have.
        g.req(
            Who::Guest,
            enc,
            "breakouts_create: neither count nor assignments",
            "breakouts_create",
            &json!({}),
            Answer::Err("invalid_field"),
        );
        g.req(
            Who::Guest,
            enc,
            "breakouts_create: both",
            "breakouts_create",
            &json!({"count": 2, "assignments": {u.to_string(): 1}}),
            Answer::Err("invalid_field"),
        );
        for n in [0, 51] {
            g.req(
                Who::Guest,
                enc,
                format!("breakouts_create: count {n}"),
                "breakouts_create",
                &json!({ "count": n }),
                Answer::Err("invalid_field"),
            );
        }
        for (label, v) in [
            ("page_size 0", json!({"view": "gallery", "page_size": 0})),
            ("page_size 26", json!({"view": "gallery", "page_size": 26})),
            ("audio 0", json!({"view": "speaker", "audio": 0})),
        ] {
            g.req(Who::Guest, enc, format!("subscribe: {label}"), "subscribe", &v, Answer::Err("invalid_field"));
        }
        g.req(
            Who::Guest,
            enc,
            "auth: on an authenticated connection",
            "auth",
            &json!({"token": "t"}),
            Answer::Err("invalid_field"),
        );
        g.req(
            Who::Guest,
            enc,
            "auth: a 50,000-character token",
            "auth",
            &json!({"token": "t".repeat(50_000)}),
            Answer::Err("invalid_field"),
        );
        g.req(
            Who::Guest,
            enc,
            "resume: a forged token",
            "resume",
            &json!({"meeting_id": m, "resume_token": "forged"}),
            Answer::Err("resume_failed"),
        );
        g.req(
            Who::Guest,
            enc,
            "resume: a 50,000-character token",
            "resume",
            &json!({"meeting_id": m, "resume_token": "r".repeat(50_000), "last_seq": u64::MAX}),
            Answer::Err("resume_failed"),
        );

        // Before joining: everything but the ways in is `not_in_meeting`.
        for ty in types {
            let t = template(ty, m, u).expect("template");
            let want = match ty.as_str() {
                "auth" => Answer::Err("invalid_field"),
                "start" => Answer::Err("forbidden"),
                "join" | "resume" => continue,
                _ => Answer::Err("not_in_meeting"),
            };
            g.req(Who::Outsider, enc, format!("{ty} before joining"), ty, &t, want);
        }
        g.req(
            Who::Outsider,
            enc,
            "start an unknown meeting",
            "start",
            &json!({"meeting_id": Uuid::new_v4()}),
            Answer::Err("meeting_not_found"),
        );
        g.req(
            Who::Outsider,
            enc,
            "join an unknown meeting",
            "join",
            &json!({"meeting_id": Uuid::new_v4()}),
            Answer::Err("meeting_not_found"),
        );
        g.req(
            Who::Outsider,
            enc,
            "join the nil meeting",
            "join",
            &json!({"meeting_id": Uuid::nil()}),
            Answer::Err("meeting_not_found"),
        );
        g.req(
            Who::Outsider,
            enc,
            "resume with a forged token",
            "resume",
            &json!({"meeting_id": m, "resume_token": "forged"}),
            Answer::Err("resume_failed"),
        );
        g.req(
            Who::Outsider,
            enc,
            "join a meeting not started",
            "join",
            &json!({"meeting_id": other_meeting}),
            Answer::Err("meeting_not_started"),
        );

        // An attendee trying what only moderators (or the host) may.
        let h = host_id;
        for (ty, v) in [
            ("admit", json!({ "user_id": u })),
            ("admit_all", json!({})),
            ("deny", json!({ "user_id": u })),
            ("mute_participant", json!({ "user_id": h })),
            ("stop_video", json!({ "user_id": h })),
            ("mute_all", json!({})),
            ("ask_unmute", json!({ "user_id": h })),
            ("lower_hand", json!({ "user_id": h })),
            ("set_chat", json!({"enabled": false})),
            ("set_role", json!({"user_id": h, "role": "attendee"})),
            ("remove", json!({ "user_id": h })),
            ("lock", json!({"locked": true})),
            ("recording", json!({"on": true})),
            ("end_meeting", json!({})),
            ("breakouts_create", json!({"count": 2})),
            ("breakouts_open", json!({})),
            ("breakouts_close", json!({})),
            ("breakouts_broadcast", json!({"text": "go"})),
        ] {
            g.req(Who::Guest, enc, format!("{ty} by an attendee"), ty, &v, Answer::Err("forbidden"));
        }
        for (name, ty, v, want) in [
            ("share when only hosts may", "screen_share_start", json!({}), Answer::Err("not_allowed")),
            ("start while in the meeting", "start", json!({ "meeting_id": m }), Answer::Err("already_in_meeting")),
            ("join another meeting", "join", json!({ "meeting_id": other_meeting }), Answer::Err("already_in_meeting")),
            (
                "resume another meeting",
                "resume",
                json!({"meeting_id": other_meeting, "resume_token": "r"}),
                Answer::Err("already_in_meeting"),
            ),
            (
                "join to a breakout room that is not open",
                "breakout_join",
                json!({"room": 1}),
                Answer::Err("no_breakouts"),
            ),
            ("chat to a stranger", "chat", json!({"text": "psst", "to": u}), Answer::Err("user_not_found")),
            ("heartbeat", "heartbeat", json!({}), Answer::Ok("done")),
            ("mute oneself", "mute", json!({"muted": true}), Answer::Ok("done")),
            ("camera off", "video", json!({"on": false}), Answer::Ok("done")),
            ("raise a hand", "raise_hand", json!({}), Answer::Ok("done")),
            ("lower it", "lower_hand", json!({}), Answer::Ok("done")),
            ("return from no room", "breakout_return", json!({}), Answer::Ok("done")),
            ("stop nobody's share", "screen_share_stop", json!({}), Answer::Ok("done")),
            ("chat exactly 4 KiB", "chat", json!({"text": "x".repeat(4096)}), Answer::Ok("chat_sent")),
            ("chat with unicode", "chat", json!({"text": "\u{202e}𝓤𝓷𝓲𝓬𝓸𝓭𝓮 \u{fffd}"}), Answer::Ok("chat_sent")),
        ] {
            g.req(Who::Guest, enc, name, ty, &v, want);
        }

        // The host acting on people who are not there, or on itself.
        for (name, ty, v, want) in [
            ("admit a stranger", "admit", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("deny a stranger", "deny", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("mute a stranger", "mute_participant", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("stop a stranger's video", "stop_video", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("ask a stranger to unmute", "ask_unmute", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("lower a stranger's hand", "lower_hand", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("remove a stranger", "remove", json!({ "user_id": u }), Answer::Err("user_not_found")),
            ("remove oneself", "remove", json!({ "user_id": h }), Answer::Err("not_allowed")),
            ("give away the host role", "set_role", json!({"user_id": u, "role": "host"}), Answer::Err("not_allowed")),
            ("demote oneself", "set_role", json!({"user_id": h, "role": "attendee"}), Answer::Err("not_allowed")),
            ("promote a stranger", "set_role", json!({"user_id": u, "role": "co_host"}), Answer::Err("user_not_found")),
            (
                "assign a stranger to a room",
                "breakouts_create",
                json!({"assignments": {u.to_string(): 1}}),
                Answer::Err("user_not_found"),
            ),
            ("open no rooms", "breakouts_open", json!({}), Answer::Err("no_breakouts")),
            ("close no rooms", "breakouts_close", json!({}), Answer::Err("no_breakouts")),
            ("broadcast to no rooms", "breakouts_broadcast", json!({"text": "hi"}), Answer::Err("no_breakouts")),
            ("join no room", "breakout_join", json!({"room": 1}), Answer::Err("no_breakouts")),
            ("chat to a stranger", "chat", json!({"text": "hi", "to": u}), Answer::Err("user_not_found")),
            ("start again", "start", json!({ "meeting_id": m }), Answer::Err("already_in_meeting")),
            ("admit nobody", "admit_all", json!({}), Answer::Ok("done")),
            ("chat stays on", "set_chat", json!({"enabled": true}), Answer::Ok("done")),
            ("recording stays off", "recording", json!({"on": false}), Answer::Ok("done")),
            ("unlock an unlocked meeting", "lock", json!({"locked": false}), Answer::Ok("done")),
        ] {
            g.req(Who::Host, enc, name, ty, &v, want);
        }
    }

    // Whole frames: not JSON, not a map, too big, odd ids and types.
    let mf = Answer::Err("malformed_frame");
    for (label, text) in [
        ("an empty text frame", String::new()),
        ("an open brace", "{".to_owned()),
        ("an array", "[]".to_owned()),
        ("null", "null".to_owned()),
        ("a number", "42".to_owned()),
        ("a string", "\"heartbeat\"".to_owned()),
        ("10,000 open brackets", "[".repeat(10_000)),
        ("200 nested objects", format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200))),
        ("truncated", "{\"id\": 1, \"type\": \"heartbeat\"".to_owned()),
        ("id 1e400", "{\"id\": 1e400, \"type\": \"heartbeat\"}".to_owned()),
        ("a BOM", "\u{feff}{\"id\": 1, \"type\": \"heartbeat\"}".to_owned()),
        ("trailing garbage", "{\"id\": 1, \"type\": \"heartbeat\"} x".to_owned()),
        ("single quotes", "{'id': 1, 'type': 'heartbeat'}".to_owned()),
        ("NaN", "{\"id\": NaN, \"type\": \"heartbeat\"}".to_owned()),
        ("a lone surrogate", "{\"id\": 1, \"type\": \"chat\", \"text\": \"\\ud800\"}".to_owned()),
        ("random text", String::from_utf8_lossy(&noise(7, 300)).into_owned()),
    ] {
        g.push(Who::Guest, Enc::Json, label, Frame::Text(text), Value::Null, mf);
    }
    let id = g.id();
    let big = json!({"id": id, "type": "chat", "text": "x".repeat(70 * 1024)});
    g.push(
        Who::Guest,
        Enc::Json,
        "a 70 KiB text frame",
        Frame::Text(big.to_string()),
        Value::Null,
        Answer::Err("frame_too_large"),
    );
    g.push(
        Who::Guest,
        Enc::Pack,
        "a 70 KiB binary frame",
        frame_of(&big, Enc::Pack),
        Value::Null,
        Answer::Err("frame_too_large"),
    );
    let id = g.id();
    let near = json!({"id": id, "type": "chat", "text": "x".repeat(60 * 1024)});
    g.push(
        Who::Guest,
        Enc::Json,
        "a 60 KiB chat",
        Frame::Text(near.to_string()),
        json!(id),
        Answer::Err("text_too_long"),
    );
    for (label, ty) in [
        ("a numeric type", json!(5)),
        ("a null type", Value::Null),
        ("an empty type", json!("")),
        ("a 10,000-character type", json!("t".repeat(10_000))),
        ("a NUL type", json!("heart\u{0}beat")),
        ("an array type", json!(["heartbeat"])),
    ] {
        for enc in [Enc::Json, Enc::Pack] {
            let id = g.id();
            g.with_id(
                Who::Guest,
                enc,
                label,
                id_set(json!({ "type": ty }), json!(id)),
                json!(id),
                Answer::Err("unknown_type"),
            );
        }
    }
    for enc in [Enc::Json, Enc::Pack] {
        let id = g.id();
        g.with_id(Who::Guest, enc, "no type", id_set(json!({}), json!(id)), json!(id), Answer::Err("unknown_type"));
        g.with_id(
            Who::Guest,
            enc,
            "id u64::MAX",
            id_set(json!({"type": "heartbeat"}), json!(u64::MAX)),
            json!(u64::MAX),
            Answer::Ok("done"),
        );
        g.with_id(
            Who::Guest,
            enc,
            "id 0",
            id_set(json!({"type": "heartbeat"}), json!(0)),
            json!(0),
            Answer::Ok("done"),
        );
        g.with_id(
            Who::Guest,
            enc,
            "id 2^64 (a float)",
            id_set(json!({"type": "heartbeat"}), json!(18_446_744_073_709_551_616.0f64)),
            Value::Null,
            Answer::Err("invalid_id"),
        );
    }
    let id = g.id();
    let text = format!("{{\"id\": 99999999999999999999999, \"type\": \"heartbeat\", \"n\": {id}}}");
    g.push(Who::Guest, Enc::Json, "a 23-digit id", Frame::Text(text), Value::Null, Answer::Err("invalid_id"));
    let (a, b) = (g.id(), g.id());
    let text = format!("{{\"id\": {a}, \"id\": {b}, \"type\": \"heartbeat\"}}");
    g.push(Who::Guest, Enc::Json, "a repeated id (the last counts)", Frame::Text(text), json!(b), Answer::Ok("done"));
    // MessagePack that is not a request.
    let pack = |v: &Value| rmp_serde::to_vec_named(v).expect("encode");
    let int_keys = vec![0x82, 0x01, 0x02, 0x03, 0x04];
    let mut bin_value = vec![0x82];
    bin_value.extend(pack_str(b"id"));
    bin_value.push(0x05);
    bin_value.extend(pack_str(b"type"));
    bin_value.extend([0xc4, 0x09]);
    bin_value.extend(b"heartbeat");
    let mut bad_utf8 = vec![0x83];
    bad_utf8.extend(pack_str(b"id"));
    bad_utf8.push(0x06);
    bad_utf8.extend(pack_str(b"type"));
    bad_utf8.extend(pack_str(b"chat"));
    bad_utf8.extend(pack_str(b"text"));
    bad_utf8.extend(pack_str(b"\xff\xfe\xc0\xaf"));
    let truncated = {
        let full = pack(&json!({"id": 1, "type": "chat", "text": "hello"}));
        full[..full.len() - 3].to_vec()
    };
    for (label, bytes) in [
        ("an empty binary frame", Vec::new()),
        ("a reserved byte", vec![0xc1]),
        ("an array", pack(&json!([1, "heartbeat"]))),
        ("an integer", pack(&json!(7))),
        ("nil", vec![0xc0]),
        ("a string", pack(&json!("heartbeat"))),
        ("integer keys", int_keys),
        ("a binary value", bin_value),
        ("invalid UTF-8 in a string", bad_utf8),
        ("truncated", truncated),
        ("an extension type", vec![0xd4, 0x01, 0x02]),
        ("JSON in a binary frame", b"{\"id\": 1, \"type\": \"heartbeat\"}".to_vec()),
        ("a reserved byte, then random bytes", [vec![0xc1], noise(11, 200)].concat()),
    ] {
        g.push(Who::Guest, Enc::Pack, label, Frame::Binary(bytes), Value::Null, mf);
    }
}

/// One connection of a WebSocket test, able to come back (and rejoin) if the server drops it.
struct Conn {
    who: Who,
    client: WsClient,
    token: String,
    meeting: Option<(Uuid, bool)>,
}

impl Conn {
    async fn open(node: &TestNode, who: Who, token: &str, meeting: Option<(Uuid, bool)>) -> Conn {
        let mut c = Conn { who, client: WsClient::connect(node, token).await, token: token.to_owned(), meeting };
        c.enter().await;
        c
    }

    async fn enter(&mut self) {
        if let Some((m, start)) = self.meeting {
            let ty = if start { "start" } else { "join" };
            let r = self.client.request(json!({"type": ty, "meeting_id": m})).await;
            assert_eq!(r["ok"], true, "{:?} {ty}: {r}", self.who);
        }
    }

    /// Sends a frame and returns its reply: the next frame with `reply_to` (events met on the
    /// way are dropped). `Err` if none comes (a hang) or the socket closes.
    async fn exchange(&mut self, node: &TestNode, frame: &Frame) -> Result<Value, String> {
        match frame {
            Frame::Text(s) => self.client.send_text(s.clone()).await,
            Frame::Binary(b) => self.client.send_binary(b.clone()).await,
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.next_frame(deadline.saturating_duration_since(Instant::now())).await {
                Some(f) if f.get("reply_to").is_some() => return Ok(f),
                Some(_) => continue,
                None => {
                    let why = match self.client.closed.take() {
                        Some((code, reason)) => format!("connection closed ({code} {reason:?}) instead of a reply"),
                        None => format!("no reply within {WAIT:?} (hang)"),
                    };
                    // Carry on with a fresh connection, in the same seat.
                    self.client = WsClient::connect(node, &self.token).await;
                    self.enter().await;
                    return Err(why);
                }
            }
        }
    }
}

/// Checks a reply's shape and its expected answer.
fn check_reply(reply: &Value, reply_to: &Value, want: Answer) -> Result<(), String> {
    let obj = reply.as_object().ok_or("the reply is not a map")?;
    if obj.get("reply_to") != Some(reply_to) {
        return Err(format!(
            "reply_to {:?}, expected {reply_to}: {}",
            obj.get("reply_to"),
            shorten(&reply.to_string())
        ));
    }
    let shown = shorten(&reply.to_string());
    match (obj.get("ok"), want) {
        (Some(Value::Bool(false)), _) => {
            let err = obj.get("error").and_then(Value::as_object).ok_or_else(|| format!("no `error`: {shown}"))?;
            let code = err.get("code").and_then(Value::as_str).filter(|c| !c.is_empty());
            let message = err.get("message").and_then(Value::as_str).filter(|m| !m.is_empty());
            let (Some(code), Some(_)) = (code, message) else {
                return Err(format!("an error without code and message: {shown}"));
            };
            if obj.len() != 3 || err.len() != 2 {
                return Err(format!("an error reply with extra fields: {shown}"));
            }
            match want {
                Answer::Err(c) if c == code => Ok(()),
                _ => Err(format!("expected {want:?}, got error {code}: {shown}")),
            }
        }
        (Some(Value::Bool(true)), Answer::Ok(result)) if obj.get("result") == Some(&json!(result)) => Ok(()),
        _ => Err(format!("expected {want:?}, got {shown}")),
    }
}

/// The answer of a connection opened without a token to its first frame: `unauthorized`, then
/// a close with 4401 and a reason.
async fn first_frame_refused(node: &TestNode, frame: &Frame, reply_to: &Value) -> Result<(), String> {
    let mut c = WsClient::connect_anonymous(node).await;
    match frame {
        Frame::Text(s) => c.send_text(s.clone()).await,
        Frame::Binary(b) => c.send_binary(b.clone()).await,
    }
    let reply = c.next_frame(WAIT).await.ok_or_else(|| format!("no reply (closed: {:?})", c.closed))?;
    check_reply(&reply, reply_to, Answer::Err("unauthorized"))?;
    if c.next_frame(WAIT).await.is_some() {
        return Err("a second frame instead of the close".into());
    }
    match c.closed {
        Some((4401, reason)) if !reason.is_empty() => Ok(()),
        other => Err(format!("expected a close 4401 with a reason, got {other:?}")),
    }
}

/// A message over the 1 MiB WebSocket limit closes the connection with 1009 and a reason.
async fn oversized_closes(node: &TestNode, token: &str, frame: Frame) -> Result<(), String> {
    let mut c = WsClient::connect(node, token).await;
    match frame {
        Frame::Text(s) => c.send_text(s).await,
        Frame::Binary(b) => c.send_binary(b).await,
    }
    while c.next_frame(WAIT).await.is_some() {}
    match c.closed {
        Some((1009, reason)) if !reason.is_empty() => Ok(()),
        other => Err(format!("expected a close 1009 with a reason, got {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sdp_bad_input_get_exact_error_replies_and_the_node_keeps_serving() {
    let started = Instant::now();
    let opts = NodeOptions::new(Backend::Postgres)
        .env("PARLEY_RATE_PER_SEC", "100000")
        .env("PARLEY_RATE_BURST", "100000")
        .env("PARLEY_HEARTBEAT_TTL_MS", "600000");
    let node = TestNode::start_with(opts).await;
    let (host_id, host) = node.user("host@example.com", "Hannah Host").await;
    let (_, guest) = node.user("guest@example.com", "Gus Guest").await;
    let (_, outsider) = node.user("outsider@example.com", "Olive Outsider").await;
    let (_, media) = node.user("media@example.com", "Mia Media").await;
    let (_, bystander) = node.user("bystander@example.com", "Bea Bystander").await;
    let mut body = meeting_body("Bad input", in_hours(1));
    body["settings"] = json!({"waiting_room": false});
    let m = id_of(&create_meeting(&node, &host, body).await, "meeting_id");
    let other_meeting = id_of(&create_meeting(&node, &host, meeting_body("Later", in_hours(5))).await, "meeting_id");

    let types = documented_types();
    assert!(types.len() >= 35, "PROTOCOL.md's request tables were read: {types:?}");
    let mut g = Gen::new(1_000_000);
    ws_cases(&mut g, &types, m, other_meeting, host_id);

    let mut host_c = Conn::open(&node, Who::Host, &host, Some((m, true))).await;
    let mut guest_c = Conn::open(&node, Who::Guest, &guest, Some((m, false))).await;
    let mut outsider_c = Conn::open(&node, Who::Outsider, &outsider, None).await;
    let mut bystander_ws = WsClient::connect(&node, &bystander).await;
    let r = bystander_ws.request(json!({"type": "join", "meeting_id": m})).await;
    assert_eq!(r["ok"], true, "bystander joins: {r}");

    let mut failures = Vec::new();
    let mut types_seen = BTreeSet::new();
    for case in &g.cases {
        let conn = match case.who {
            Who::Guest => &mut guest_c,
            Who::Outsider => &mut outsider_c,
            Who::Host => &mut host_c,
            Who::Media => unreachable!("SDP cases run on their own"),
        };
        let outcome = match conn.exchange(&node, &case.frame).await {
            Ok(reply) => check_reply(&reply, &case.reply_to, case.want),
            Err(why) => Err(why),
        };
        if let Err(why) = outcome {
            failures.push(format!("WS {}: {why}", case.name));
        }
        if let Some(ty) = types.iter().find(|t| case.name.contains(&format!("] {t}:"))) {
            types_seen.insert(ty.clone());
        }
    }
    let mut ws_count = g.cases.len();
    assert_eq!(types_seen, types, "every documented request type has cases");

    // Unauthenticated connections: whatever the first frame, `unauthorized` and 4401.
    let forged = json!({"id": 1, "type": "auth", "token": "forged"});
    let now = now_secs();
    let expired = jwt(
        &node.secret,
        jsonwebtoken::Algorithm::HS256,
        &json!({"sub": host_id.to_string(), "iat": now - 7200, "exp": now - 3600, "iss": "parley"}),
    );
    let ghost = jwt(&node.secret, jsonwebtoken::Algorithm::HS256, &claims(&Uuid::new_v4().to_string(), false));
    let first_frames: Vec<(&str, Frame, Value)> = vec![
        ("heartbeat first", Frame::Text(json!({"id": 1, "type": "heartbeat"}).to_string()), json!(1)),
        ("a forged token", Frame::Text(forged.to_string()), json!(1)),
        ("a forged token in MessagePack", frame_of(&forged, Enc::Pack), json!(1)),
        ("an expired token", Frame::Text(json!({"id": 2, "type": "auth", "token": expired}).to_string()), json!(2)),
        ("a ghost's token", Frame::Text(json!({"id": 3, "type": "auth", "token": ghost}).to_string()), json!(3)),
        (
            "an operator token",
            Frame::Text(json!({"id": 4, "type": "auth", "token": node.admin_token()}).to_string()),
            json!(4),
        ),
        ("a NUL token", Frame::Text(json!({"id": 5, "type": "auth", "token": "\u{0}"}).to_string()), json!(5)),
        ("a numeric token", Frame::Text(json!({"id": 6, "type": "auth", "token": 6}).to_string()), json!(6)),
        ("not JSON", Frame::Text("{".into()), Value::Null),
        ("binary garbage", Frame::Binary(vec![0xc1, 0x00]), Value::Null),
    ];
    for (label, frame, reply_to) in &first_frames {
        if let Err(why) = first_frame_refused(&node, frame, reply_to).await {
            failures.push(format!("WS [anonymous] {label}: {why}"));
        }
    }
    ws_count += first_frames.len();
    for (label, frame) in [
        (
            "a 1.1 MiB text message",
            Frame::Text(json!({"id": 1, "type": "chat", "text": "x".repeat(1_150_000)}).to_string()),
        ),
        ("a 1.1 MiB binary message", Frame::Binary(vec![0x90; 1_150_000])),
    ] {
        if let Err(why) = oversized_closes(&node, &guest, frame).await {
            failures.push(format!("WS [limit] {label}: {why}"));
        }
        ws_count += 1;
    }

    // WebRTC signalling, in order: before any offer, bad offers, a good one, then the rest.
    let mut media_c = Conn::open(&node, Who::Media, &media, Some((m, false))).await;
    let mut sdp = Gen::new(5_000_000);
    sdp_cases(&mut sdp);
    let mut sdp_count = 0;
    for (i, case) in sdp.cases.iter().enumerate() {
        if case.fresh {
            for req in [json!({"type": "leave"}), json!({"type": "join", "meeting_id": m})] {
                let r = media_c.client.request(req.clone()).await;
                assert_eq!(r["ok"], true, "{req} before {}: {r}", case.name);
            }
        }
        let outcome = match media_c.exchange(&node, &case.frame).await {
            Ok(reply) => check_reply(&reply, &case.reply_to, case.want),
            Err(why) => Err(why),
        };
        if let Err(why) = outcome {
            failures.push(format!("SDP {}: {why}", case.name));
        }
        // After every case the connection still answers.
        let hb = sdp.next + 1_000_000 + i as u64;
        let frame = Frame::Text(json!({"id": hb, "type": "heartbeat"}).to_string());
        let outcome = match media_c.exchange(&node, &frame).await {
            Ok(reply) => check_reply(&reply, &json!(hb), Answer::Ok("done")),
            Err(why) => Err(why),
        };
        if let Err(why) = outcome {
            failures.push(format!("SDP heartbeat after {}: {why}", case.name));
        }
        sdp_count += 1;
        if case.fresh && case.want == Answer::Err("invalid_sdp") {
            let peers = media_peers(&node).await;
            if peers != 0 {
                failures.push(format!("SDP {}: refused, yet {peers} media peer(s) kept", case.name));
            }
        }
    }

    // Still serving: health, and the bystander chats to the host.
    let (status, v) = node.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "healthz after the cases: {v}");
    let r = bystander_ws.request(json!({"type": "chat", "text": "after the WebSocket cases"})).await;
    assert_eq!(r["ok"], true, "the bystander still chats: {r}");
    assert!(saw_chat(&mut host_c.client, "after the WebSocket cases").await, "the host still hears the bystander");
    eprintln!(
        "bad_input WebSocket: {ws_count} cases over {} request types, SDP: {sdp_count} cases, {} failed, {:.1} s",
        types.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(ws_count >= WS_MIN, "at least {WS_MIN} WebSocket cases, {ws_count} generated");
    assert!(sdp_count >= SDP_MIN, "at least {SDP_MIN} SDP cases, {sdp_count} generated");
    finish("WebSocket and SDP", &node, &mut failures);
}

/// Media peers of the node's routers (admin view).
async fn media_peers(node: &TestNode) -> u64 {
    let (_, v) = node.call(Method::GET, "/api/admin/cluster", Some(&node.admin_token()), None).await;
    v["running_here"].as_array().map_or(0, |a| a.iter().filter_map(|m| m["media_peers"].as_u64()).sum())
}

// ---------------------------------------------------------------------------------------------
// SDP
// ---------------------------------------------------------------------------------------------

const FINGERPRINT: &str =
    "sha-256 3A:96:6D:57:B2:C2:C7:61:A0:46:3E:1C:97:39:D3:F7:0A:88:A0:B1:EC:03:FB:10:A5:5D:3A:37:AB:DD:02:AA";
/// The ICE credentials of every offer here.
const ICE: &str = "a=ice-ufrag:Pq7u\r\na=ice-pwd:m2PfIoQ7R2w0bXbSrXdaTt3E\r\n";
const HOST_CANDIDATE: &str = "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host";
const OTHER_FINGERPRINT: &str =
    "sha-256 11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00";

/// An offer as a browser writes it: Opus audio and VP8 video, bundled, trickle ICE.
struct Sdp {
    session: Vec<String>,
    media: Vec<Vec<String>>,
}

impl Sdp {
    fn browser() -> Sdp {
        let transport = |mid: &str| {
            vec![
                "c=IN IP4 0.0.0.0".to_owned(),
                "a=rtcp:9 IN IP4 0.0.0.0".to_owned(),
                "a=ice-ufrag:Pq7u".to_owned(),
                "a=ice-pwd:m2PfIoQ7R2w0bXbSrXdaTt3E".to_owned(),
                "a=ice-options:trickle".to_owned(),
                format!("a=fingerprint:{FINGERPRINT}"),
                "a=setup:actpass".to_owned(),
                format!("a=mid:{mid}"),
            ]
        };
        let mut audio = vec!["m=audio 9 UDP/TLS/RTP/SAVPF 111".to_owned()];
        audio.extend(transport("0"));
        audio.extend(
            [
                "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
                "a=sendrecv",
                "a=msid:parley mic-1",
                "a=rtcp-mux",
                "a=rtpmap:111 opus/48000/2",
                "a=fmtp:111 minptime=10;useinbandfec=1",
                "a=ssrc:11111111 cname:parley",
                "a=ssrc:11111111 msid:parley mic-1",
            ]
            .map(str::to_owned),
        );
        let mut video = vec!["m=video 9 UDP/TLS/RTP/SAVPF 96 97".to_owned()];
        video.extend(transport("1"));
        video.extend(
            [
                "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
                "a=sendrecv",
                "a=msid:parley cam-1",
                "a=rtcp-mux",
                "a=rtcp-rsize",
                "a=rtpmap:96 VP8/90000",
                "a=rtcp-fb:96 goog-remb",
                "a=rtcp-fb:96 nack",
                "a=rtcp-fb:96 nack pli",
                "a=rtpmap:97 rtx/90000",
                "a=fmtp:97 apt=96",
                "a=ssrc-group:FID 22222222 33333333",
                "a=ssrc:22222222 cname:parley",
                "a=ssrc:22222222 msid:parley cam-1",
                "a=ssrc:33333333 cname:parley",
                "a=ssrc:33333333 msid:parley cam-1",
            ]
            .map(str::to_owned),
        );
        let session = [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            "a=msid-semantic: WMS parley",
        ]
        .map(str::to_owned)
        .to_vec();
        Sdp { session, media: vec![audio, video] }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for l in self.session.iter().chain(self.media.iter().flatten()) {
            out.push_str(l);
            out.push_str("\r\n");
        }
        out
    }

    /// Without the lines starting with `prefix`.
    fn without(mut self, prefix: &str) -> Sdp {
        self.session.retain(|l| !l.starts_with(prefix));
        for m in &mut self.media {
            m.retain(|l| !l.starts_with(prefix));
        }
        self
    }

    /// Each line starting with `prefix` replaced by `line`.
    fn replace(mut self, prefix: &str, line: &str) -> Sdp {
        for l in self.session.iter_mut().chain(self.media.iter_mut().flatten()) {
            if l.starts_with(prefix) {
                *l = line.to_owned();
            }
        }
        self
    }

    /// With `line` added to every media section.
    fn with_media_line(mut self, line: &str) -> Sdp {
        for m in &mut self.media {
            m.push(line.to_owned());
        }
        self
    }
}

fn offer(sdp: &str) -> Value {
    json!({"type": "offer", "sdp": sdp, "sources": {"mic-1": "microphone", "cam-1": "camera"}})
}

/// The signalling cases, in the order they must run.
fn sdp_cases(g: &mut Gen) {
    let w = Who::Media;
    let good = Sdp::browser().render();
    let (invalid_sdp, invalid_field) = (Answer::Err("invalid_sdp"), Answer::Err("invalid_field"));
    let negotiation = Answer::Err("negotiation_state");
    let cand = |c: &str| json!({"candidate": {"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0}});

    // Before any offer: nothing to answer, no connection for candidates or views.
    for enc in [Enc::Json, Enc::Pack] {
        for (name, ty, v) in [
            ("answer without an offer", "answer", json!({ "sdp": good })),
            ("a bare answer without an offer", "answer", json!({"sdp": "v=0"})),
            ("a candidate before any offer", "ice_candidate", cand(HOST_CANDIDATE)),
            ("end of candidates before any offer", "ice_candidate", cand("")),
            ("a gallery view before any offer", "subscribe", json!({"view": "gallery"})),
            ("a speaker view before any offer", "subscribe", json!({"view": "speaker", "audio": 3})),
        ] {
            g.req(w, enc, name, ty, &v, negotiation);
        }
    }

    // Offers the protocol layer refuses.
    let mut decode_level: Vec<(String, Value, Answer)> = vec![
        ("empty SDP".into(), offer(""), invalid_sdp),
        ("blank SDP".into(), offer(" \r\n "), invalid_sdp),
        ("not SDP".into(), offer("hello"), invalid_sdp),
        ("upper-case V=0".into(), offer(&good.replacen("v=0", "V=0", 1)), invalid_sdp),
        ("a BOM first".into(), offer(&format!("\u{feff}{good}")), invalid_sdp),
        ("32 KiB + 1".into(), offer(&format!("{good}{}", "a=x\r\n".repeat(32 * 1024 / 5))), invalid_sdp),
        ("60 KiB".into(), offer(&format!("{good}{}", "a".repeat(60 * 1024))), invalid_sdp),
        (
            "1000 full m-lines (over 32 KiB)".into(),
            offer(&format!("{good}{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:x\r\n".repeat(1000))),
            invalid_sdp,
        ),
        ("a NUL".into(), offer(&good.replacen("s=-", "s=\u{0}", 1)), invalid_field),
        ("numeric SDP".into(), json!({"type": "offer", "sdp": 0}), invalid_field),
        ("null SDP".into(), json!({"type": "offer", "sdp": null}), invalid_field),
        ("SDP as lines".into(), json!({"type": "offer", "sdp": good.split("\r\n").collect::<Vec<_>>()}), invalid_field),
        ("no SDP".into(), json!({"type": "offer", "sources": {}}), invalid_field),
        ("sources a string".into(), json!({"type": "offer", "sdp": good, "sources": "camera"}), invalid_field),
        (
            "an unknown source".into(),
            json!({"type": "offer", "sdp": good, "sources": {"cam-1": "hologram"}}),
            invalid_field,
        ),
        (
            "a track id with NUL".into(),
            json!({"type": "offer", "sdp": good, "sources": {"cam\u{0}": "camera"}}),
            invalid_field,
        ),
        ("an unknown field".into(), json!({"type": "offer", "sdp": good, "simulcast": true}), invalid_field),
        ("an answer with no SDP".into(), json!({"type": "answer"}), invalid_field),
        ("an answer of garbage".into(), json!({"type": "answer", "sdp": "garbage"}), invalid_sdp),
    ];
    for seed in 0..5 {
        let junk = text_noise(100 + seed, 400);
        decode_level.push((format!("random bytes #{seed}"), offer(&junk), invalid_sdp));
    }
    for enc in [Enc::Json, Enc::Pack] {
        for (name, v, want) in &decode_level {
            let ty = v["type"].as_str().unwrap_or("offer").to_owned();
            g.req(w, enc, name, &ty, v, *want);
        }
    }
    // MessagePack whose SDP is not text.
    for (label, sdp_bytes) in [
        ("invalid UTF-8 SDP", pack_str(b"v=0\r\n\xff\xfe\r\n")),
        ("SDP as bytes", [vec![0xc4, 5], b"v=0\r\n".to_vec()].concat()),
    ] {
        let id = g.id();
        let mut frame = vec![0x83];
        frame.extend(pack_str(b"id"));
        frame.extend([0xce]);
        frame.extend((id as u32).to_be_bytes());
        frame.extend(pack_str(b"type"));
        frame.extend(pack_str(b"offer"));
        frame.extend(pack_str(b"sdp"));
        frame.extend(sdp_bytes);
        g.push(w, Enc::Pack, label, Frame::Binary(frame), Value::Null, Answer::Err("malformed_frame"));
    }

    // Offers that parse as far as `v=0` and that the media router refuses.
    let cut = |s: &str, at: usize| s[..at.min(s.len())].to_owned();
    let first_m = good.find("m=audio").unwrap_or(0);
    let after = |needle: &str| good.find(needle).map_or(good.len(), |i| i + good[i..].find("\r\n").unwrap_or(0) + 2);
    let session_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned();
    let many_compact =
        format!("{session_only}{ICE}a=fingerprint:{FINGERPRINT}\r\n{}", "m=audio 9 RTP/AVP 0\r\n".repeat(1000));
    let duplicated = {
        let mut s = Sdp::browser();
        let audio = s.media[0].clone();
        s.media.push(audio);
        s.render()
    };
    let wrong_codecs = Sdp::browser()
        .replace("m=audio", "m=audio 9 UDP/TLS/RTP/SAVPF 9")
        .replace("a=rtpmap:111", "a=rtpmap:9 G722/8000")
        .without("a=fmtp:111")
        .replace("m=video", "m=video 9 UDP/TLS/RTP/SAVPF 34")
        .replace("a=rtpmap:96", "a=rtpmap:34 H263/90000")
        .without("a=rtcp-fb:96")
        .without("a=rtpmap:97")
        .without("a=fmtp:97")
        .render();
    let data_only = format!(
        "{session_only}a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
         c=IN IP4 0.0.0.0\r\n{ICE}a=fingerprint:{FINGERPRINT}\r\na=setup:actpass\r\na=mid:0\r\n\
         a=sctp-port:5000\r\n"
    );
    let router_level: Vec<(String, String)> = vec![
        ("just v=0".into(), "v=0".into()),
        ("v=0 and a line end".into(), "v=0\r\n".into()),
        ("no media section".into(), session_only.clone()),
        ("garbage lines".into(), format!("v=0\r\n{}", "x=y\r\n".repeat(20))),
        ("random bytes after v=0".into(), format!("v=0\r\n{}", text_noise(5, 600))),
        ("control characters".into(), "v=0\r\n\u{1}\u{2}\u{7f}\u{1b}[31m\r\nm=\u{7}\r\n".to_owned()),
        ("truncated before the first m-line".into(), cut(&good, first_m)),
        ("truncated after the first m-line".into(), cut(&good, after("m=audio"))),
        ("truncated after the ice-ufrag".into(), cut(&good, after("a=ice-ufrag"))),
        ("truncated after the ice-pwd".into(), cut(&good, after("a=ice-pwd"))),
        ("truncated after the fingerprint".into(), cut(&good, after("a=fingerprint"))),
        ("truncated in the middle of a line".into(), cut(&good, after("a=setup") + 4)),
        ("without ice-ufrag".into(), Sdp::browser().without("a=ice-ufrag").render()),
        ("without ice-pwd".into(), Sdp::browser().without("a=ice-pwd").render()),
        ("without a fingerprint".into(), Sdp::browser().without("a=fingerprint").render()),
        // PROTOCOL.md: `invalid_sdp` for "no usable media section". An answer that rejects
        // every section (port 0) leaves the client with nothing.
        ("only unsupported codecs (G722, H263)".into(), wrong_codecs.clone()),
        // A BUNDLE group of mids the offer does not have: the stack rejects its sections.
        ("a bundle of unknown mids".into(), Sdp::browser().replace("a=group:BUNDLE", "a=group:BUNDLE 7 8").render()),
        // JSEP/BUNDLE: a mid names one section; two sections with one mid are not an offer.
        ("duplicated m-lines (one mid twice)".into(), duplicated.clone()),
        ("1000 compact m-lines".into(), many_compact),
        (
            "a port that is not a number".into(),
            Sdp::browser().replace("m=video", "m=video abc UDP/TLS/RTP/SAVPF 96 97").render(),
        ),
        ("an m-line of one word".into(), format!("{session_only}m=audio\r\n")),
        ("an m-line without formats".into(), Sdp::browser().replace("m=video", "m=video 9 UDP/TLS/RTP/SAVPF").render()),
    ];
    for (name, s) in &router_level {
        g.req(w, Enc::Json, format!("a first offer with {name}"), "offer", &offer(s), invalid_sdp);
        g.fresh();
    }
    // First offers that are answered though the client will not get far with them: the
    // certificate's hash is only checked by DTLS, and a data channel is negotiated (the SFU
    // carries no data, but the offer is well-formed).
    for (name, s) in [
        (
            "a fingerprint of an unknown hash",
            Sdp::browser().replace("a=fingerprint", "a=fingerprint:md7 00:11").render(),
        ),
        ("only a data channel", data_only),
    ] {
        g.req(w, Enc::Json, format!("a first offer with {name}"), "offer", &offer(&s), Answer::Ok("answer"));
        g.fresh();
    }

    // A good offer, and what may follow it.
    let sdp_answer = Answer::Ok("answer");
    let done = Answer::Ok("done");
    g.req(w, Enc::Json, "a browser's offer", "offer", &offer(&good), sdp_answer);
    g.req(w, Enc::Json, "an answer to no server offer", "answer", &json!({ "sdp": good }), negotiation);
    g.req(w, Enc::Pack, "an answer to no server offer", "answer", &json!({"sdp": "v=0\r\n"}), negotiation);
    let candidates: Vec<(&str, Value, Answer)> = vec![
        ("a host candidate", cand(HOST_CANDIDATE), done),
        ("an IPv6 candidate", cand("candidate:2 1 udp 2130706431 ::1 9 typ host"), done),
        ("a TCP candidate", cand("candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"), done),
        ("garbage", cand("candidate:garbage"), invalid_field),
        ("not a candidate line", cand("hello world"), invalid_field),
        ("an address that is not one", cand("candidate:1 1 udp 2130706431 999.1.1.1 9 typ host"), invalid_field),
        ("port 99999", cand("candidate:1 1 udp 2130706431 127.0.0.1 99999 typ host"), invalid_field),
        ("a negative priority", cand("candidate:1 1 udp -1 127.0.0.1 9 typ host"), invalid_field),
        ("an unknown type", cand("candidate:1 1 udp 2130706431 127.0.0.1 9 typ bogus"), invalid_field),
        ("an unknown transport", cand("candidate:1 1 sctp 2130706431 127.0.0.1 9 typ host"), invalid_field),
        ("no type", cand("candidate:1 1 udp 2130706431 127.0.0.1 9"), invalid_field),
        ("1024 characters", cand(&format!("candidate:{}", "9".repeat(1014))), invalid_field),
        (
            "an unknown sdpMid",
            json!({"candidate": {"candidate": HOST_CANDIDATE, "sdpMid": "99", "sdpMLineIndex": 0}}),
            done,
        ),
        (
            "sdpMLineIndex 65535",
            json!({"candidate": {"candidate": HOST_CANDIDATE, "sdpMid": null, "sdpMLineIndex": 65535}}),
            done,
        ),
        ("neither sdpMid nor index", json!({"candidate": {"candidate": HOST_CANDIDATE}}), done),
        (
            "a 10,000-character sdpMid",
            json!({"candidate": {"candidate": HOST_CANDIDATE, "sdpMid": "0".repeat(10_000)}}),
            done,
        ),
        (
            "a wrong usernameFragment",
            json!({"candidate": {"candidate": HOST_CANDIDATE, "sdpMid": "0", "usernameFragment": "nope"}}),
            done,
        ),
        (
            "an unknown field in the candidate",
            json!({"candidate": {"candidate": HOST_CANDIDATE, "sdpMid": "0", "foo": 1}}),
            done,
        ),
        ("end of candidates", cand(""), done),
    ];
    for enc in [Enc::Json, Enc::Pack] {
        for (name, v, want) in &candidates {
            g.req(w, enc, format!("ice_candidate: {name}"), "ice_candidate", v, *want);
        }
    }
    let views: Vec<(&str, Value, Answer)> = vec![
        ("the gallery", json!({"view": "gallery"}), done),
        ("the speaker", json!({"view": "speaker"}), done),
        ("a far page", json!({"view": "gallery", "page": u32::MAX, "page_size": 1}), done),
        ("the loudest one", json!({"view": "gallery", "audio": 1}), done),
        ("the loudest u32::MAX", json!({"view": "speaker", "audio": u32::MAX}), done),
        ("a mosaic", json!({"view": "mosaic"}), invalid_field),
        ("no view", json!({"page": 1}), invalid_field),
        ("a layer", json!({"view": "gallery", "layer": "f"}), invalid_field),
        ("page_size 0", json!({"view": "gallery", "page_size": 0}), invalid_field),
        ("page_size 26", json!({"view": "gallery", "page_size": 26}), invalid_field),
        ("page -1", json!({"view": "gallery", "page": -1}), invalid_field),
        ("audio 0", json!({"view": "speaker", "audio": 0}), invalid_field),
        ("audio 2^32", json!({"view": "speaker", "audio": 4_294_967_296u64}), invalid_field),
    ];
    for enc in [Enc::Json, Enc::Pack] {
        for (name, v, want) in &views {
            g.req(w, enc, format!("subscribe: {name}"), "subscribe", v, *want);
        }
    }
    // Bad renegotiations keep the connection as it was; a good one after them is answered.
    let mut renegotiations: Vec<(String, String)> =
        router_level.iter().filter(|(n, _)| !n.contains("1000")).take(12).cloned().collect();
    renegotiations.extend([
        ("one mid twice".to_owned(), duplicated),
        ("extmap id 0".to_owned(), Sdp::browser().with_media_line("a=extmap:0 urn:x").render()),
    ]);
    for (name, s) in &renegotiations {
        g.req(w, Enc::Json, format!("a renegotiation with {name}"), "offer", &offer(s), invalid_sdp);
    }
    // A known limit (README): a renegotiation that swaps the codecs of sections already
    // negotiated for unsupported ones is answered (the stack keeps its existing transceivers),
    // not refused; the connection goes on as it was.
    g.req(w, Enc::Json, "a renegotiation with only unsupported codecs", "offer", &offer(&wrong_codecs), sdp_answer);
    g.req(w, Enc::Json, "a renegotiation after the bad ones", "offer", &offer(&good), Answer::Ok("answer"));
    // Odd, but parseable and with usable media sections: all PROTOCOL.md asks of an offer.
    let odd_but_usable: Vec<(&str, String)> = vec![
        ("the same offer again", good.clone()),
        ("LF line endings", good.replace("\r\n", "\n")),
        ("odd characters in the session name", good.replacen("s=-", "s=\u{202e}\u{fffd}𝓤 ☃", 1)),
        ("an unknown attribute", Sdp::browser().with_media_line("a=x-parley-nonsense:\u{7f}").render()),
        ("a payload type out of range", Sdp::browser().with_media_line("a=rtpmap:999999 opus/48000/2").render()),
        ("a clock rate that is not a number", Sdp::browser().with_media_line("a=rtpmap:112 opus/abc/2").render()),
        ("extmap id 15", Sdp::browser().with_media_line("a=extmap:15 urn:x").render()),
        ("an ssrc that is not a number", Sdp::browser().with_media_line("a=ssrc:abc cname:x").render()),
        ("a simulcast group without its ssrcs", Sdp::browser().with_media_line("a=ssrc-group:SIM 1 2 3").render()),
        ("simulcast without rids", Sdp::browser().with_media_line("a=simulcast:send q;h;f").render()),
        ("an empty msid", Sdp::browser().replace("a=msid:parley", "a=msid:").render()),
        ("setup holdconn", Sdp::browser().replace("a=setup", "a=setup:holdconn").render()),
        ("both sendrecv and recvonly", Sdp::browser().with_media_line("a=recvonly").render()),
        ("a connection address that is not one", Sdp::browser().replace("c=IN", "c=IN IP4 999.999.999.999").render()),
        (
            "a new DTLS certificate (a reload)",
            Sdp::browser().replace("a=fingerprint", &format!("a=fingerprint:{OTHER_FINGERPRINT}")).render(),
        ),
        ("the first certificate again", good.clone()),
    ];
    for (name, s) in &odd_but_usable {
        g.req(w, Enc::Json, format!("an offer with {name}"), "offer", &offer(s), sdp_answer);
    }
}
