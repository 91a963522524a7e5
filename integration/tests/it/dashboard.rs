//! The supervisor dashboard (`GET /dashboard`, `nodes/static/dashboard.html`) in a real
//! headless Chromium, over a cluster of three real nodes: two meetings owned by two nodes, with
//! participants (sending real RTP) connected through the third. The page, opened on the third
//! node, must list every node and both meetings with their participants and media peers; show
//! a supervised actor's crash as a rising restart count; and, after `kill -9` of an owner, show
//! that node dead and its meeting on its new owner — all without a reload. Screenshots go to
//! `target/test-artifacts/`.
//!
//! Also here: who may read the overview (401 without or with a wrong token, 403 for a user),
//! and a meeting titled with markup renders as text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_integration::{TestCluster, eventually};
use parley_loadtest::{Api, Participant, Publish, Rates};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cdp::{Cdp, Chromium, Page, save_screenshot, tail};
use crate::{id_of, in_hours, meeting_body};

/// A title that would run script if the page put it in as markup.
const HOSTILE_TITLE: &str = "<img src=x onerror=alert(1)>";
/// How long the page gets to show a change.
const SHOW_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_whole_cluster_live_through_a_crash_and_a_kill() {
    let mut c = TestCluster::start(3, 0, &[("PARLEY_FAULT_INJECTION", "1"), ("PARLEY_LEASE_TTL_MS", "1500")]).await;
    let secret = c.secret();
    let api: Vec<Api> = c.nodes.iter().map(|n| Api::new(&n.base, secret.as_bytes())).collect();
    let (a, b, viewer) = (c.names[0].clone(), c.names[1].clone(), c.names[2].clone());

    // Who may read the overview and its stream.
    let (_, user_token) = c.nodes[0].user("nosy@example.com", "Nosy User").await;
    for path in ["/api/admin/overview", "/api/admin/overview/stream"] {
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("not-a-token"), StatusCode::UNAUTHORIZED),
            (Some(user_token.as_str()), StatusCode::FORBIDDEN),
        ] {
            let (status, body) = c.nodes[2].call(Method::GET, path, token, None).await;
            assert_eq!(status, want, "{path} with {token:?}: {body}");
        }
    }

    // Meeting one on a, meeting two (the hostile title) on b; guests of both connect through c.
    let mut users = Vec::new();
    for (i, name) in ["Hannah Host", "Bo Host", "Gus Guest", "Gia Guest"].iter().enumerate() {
        users.push(c.nodes[0].user(&format!("u{i}@example.com"), name).await);
    }
    let mut meetings = Vec::new();
    for (title, host) in [("Design review", 0), (HOSTILE_TITLE, 1)] {
        let mut body = meeting_body(title, in_hours(1));
        body["settings"] = json!({"waiting_room": false});
        let (status, created) = c.nodes[0].call(Method::POST, "/api/meetings", Some(&users[host].1), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        meetings.push(id_of(&created, "meeting_id"));
    }
    let (one, two) = (meetings[0], meetings[1]);
    let mut h1 = Participant::join(&api[0], one, users[0].0, true).await.expect("host one starts on a");
    let mut h2 = Participant::join(&api[1], two, users[1].0, true).await.expect("host two starts on b");
    let mut g1 = Participant::join(&api[2], one, users[2].0, false).await.expect("guest joins one through c");
    let mut g2 = Participant::join(&api[2], two, users[3].0, false).await.expect("guest joins two through c");
    for p in [&mut h1, &mut h2, &mut g1, &mut g2] {
        p.connect_media(Publish::CAMERA_AND_MIC).await.expect("media");
    }
    // Real RTP from all four, kept flowing until the end of the test.
    let media: Vec<_> = [&h1, &h2, &g1, &g2].iter().map(|p| p.publish(Rates::default())).collect();

    // The overview itself, from the viewer node: three nodes, both meetings with their people.
    let admin = c.nodes[2].admin_token();
    let seen = eventually(SHOW_WITHIN, || async {
        let (status, o) = c.nodes[2].call(Method::GET, "/api/admin/overview", Some(&admin), None).await;
        status == StatusCode::OK
            && o["nodes"].as_array().is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["status"] == "alive"))
            && [one, two]
                .iter()
                .all(|id| live_of(&o, *id).is_some_and(|m| m["participants"].as_array().map(Vec::len) == Some(2)))
    })
    .await;
    let (_, o) = c.nodes[2].call(Method::GET, "/api/admin/overview", Some(&admin), None).await;
    assert!(seen, "the overview lists 3 alive nodes and both meetings with 2 participants each: {o:#}");
    assert_eq!(meeting_of(&o, one)["owner"], json!(a));
    assert_eq!(meeting_of(&o, two)["owner"], json!(b));
    let conns = &live_of(&o, one).unwrap()["connections"];
    assert_eq!(conns[users[2].0.to_string()], json!(viewer), "the guest's connection is on c: {conns}");

    // The page, signed in through its form; the token never in the URL.
    let chromium = Chromium::launch();
    let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
    let page = Page::open(&cdp, &format!("{}/dashboard", c.nodes[2].base), "dashboard").await;
    let dash = Dash { page: &page, cdp: &cdp, chromium: &chromium };
    dash.expect("!document.getElementById('signin').hidden", "the page asks for a token").await;
    let token_js = serde_json::to_string(&admin).unwrap();
    page.eval(&format!(
        "document.getElementById('admin-token').value = {token_js}; document.getElementById('signin').requestSubmit()"
    ))
    .await
    .expect("sign in");
    dash.expect("window.dashboard.state().connected && window.dashboard.state().updates > 0", "the stream is live")
        .await;
    page.eval("window.__not_reloaded = true").await.expect("mark the page");
    let href = page.eval("location.href").await.unwrap_or_default();
    assert!(!href.to_string().contains(&admin), "the token is not in the URL: {href}");
    assert_eq!(page.eval("sessionStorage.getItem('parley.adminToken')").await.ok(), Some(json!(admin)));

    // Cluster: every node alive.
    for name in [&a, &b, &viewer] {
        dash.expect(&format!("{} === 'alive'", node_status(name)), &format!("{name} is shown alive")).await;
    }
    // Meetings: both, with their participants; the hostile title as text, nothing injected.
    for id in [one, two] {
        dash.expect(
            &format!("(document.querySelector('#meetings tr[data-meeting=\"{id}\"] .participants') || {{}}).textContent === '2'"),
            "each meeting shows its two participants",
        )
        .await;
    }
    let title_js = serde_json::to_string(HOSTILE_TITLE).unwrap();
    dash.expect(
        &format!("document.querySelector('#meetings tr[data-meeting=\"{two}\"] .title').textContent === {title_js}"),
        "the hostile title is shown as text",
    )
    .await;
    assert_eq!(page.eval("document.querySelectorAll('img').length").await.ok(), Some(json!(0)), "no element injected");
    // A meeting's page: participants with their connection node, media peers with traffic.
    page.eval(&format!("window.dashboard.select('{two}')")).await.expect("select meeting two");
    dash.expect(
        &format!(
            "(document.querySelector('#detail-participants tr[data-user=\"{}\"] .conn-node') || {{}}).textContent === '{viewer}'",
            users[3].0
        ),
        "the guest's connection node is shown",
    )
    .await;
    dash.expect(
        "[...document.querySelectorAll('#detail-media tbody tr')].filter(r => +r.dataset.packetsIn > 0 && +r.dataset.packetsOut > 0).length === 2",
        "both media peers show packets in and out",
    )
    .await;
    dash.expect(
        "[...document.querySelectorAll('#detail-media .bitrate-in')].every(td => td.textContent.includes('b/s') && td.textContent !== '0')",
        "both media peers show a bitrate in",
    )
    .await;
    save_screenshot(&page, "dashboard-cluster.png").await;

    // A supervised actor's crash: meeting one's actor on a; the page shows its restart count.
    let (status, body) = c.nodes[0]
        .call(Method::POST, &format!("/api/admin/meetings/{one}/crash"), Some(&c.nodes[0].admin_token()), None)
        .await;
    assert!(status.is_success(), "crash drill: {status} {body}");
    dash.expect(
        &format!(
            "(document.querySelector('#actors [data-tree=\"{a}\"] li[data-meeting=\"{one}\"] > .restarts') || {{}}).textContent === 'restarts: 1'"
        ),
        "the restarted meeting actor shows one restart",
    )
    .await;
    dash.expect(
        "[...document.querySelectorAll('#events li[data-kind=\"actor_restarted\"]')].length > 0",
        "the restart is in the events",
    )
    .await;
    save_screenshot(&page, "dashboard-restart.png").await;

    // kill -9 the owner of meeting two: the page shows it dead, and the meeting on a survivor.
    let killed_at = Instant::now();
    c.nodes[1].kill9();
    drop(h2);
    dash.expect_within(
        &format!("{} === 'dead'", node_status(&b)),
        &format!("{b} is shown dead"),
        Duration::from_secs(20),
    )
    .await;
    let dead_after = killed_at.elapsed();
    dash.expect_within(
        &format!(
            "(r => r && r.dataset.owner !== '' && r.dataset.owner !== '{b}' && r.querySelector('.participants').textContent !== '—')(document.querySelector('#meetings tr[data-meeting=\"{two}\"]'))"
        ),
        "meeting two is shown live on its new owner",
        Duration::from_secs(20),
    )
    .await;
    let moved_after = killed_at.elapsed();
    println!("the page showed {b} dead {dead_after:?} and its meeting moved {moved_after:?} after kill -9");
    assert_eq!(page.eval("window.__not_reloaded").await.ok(), Some(json!(true)), "no reload");
    dash.expect(
        "[...document.querySelectorAll('#events li[data-kind=\"node_status\"] .detail')].some(d => d.textContent.endsWith('is dead'))",
        "the death is in the events",
    )
    .await;
    save_screenshot(&page, "dashboard-after-kill.png").await;
    let console = cdp.console_of(&page.session);
    assert!(!console.iter().any(|l| l.starts_with("dialog")), "no dialog opened: {console:?}");
    assert!(!console.iter().any(|l| l.starts_with("uncaught")), "no uncaught exception: {console:?}");
    drop((h1, g1, g2, media));
}

/// The `live` part of a meeting in an overview.
fn live_of(o: &Value, id: Uuid) -> Option<&Value> {
    o["meetings"].as_array()?.iter().find(|m| m["meeting_id"] == json!(id)).map(|m| &m["live"]).filter(|l| !l.is_null())
}

fn meeting_of(o: &Value, id: Uuid) -> &Value {
    o["meetings"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["meeting_id"] == json!(id)))
        .expect("the meeting is listed")
}

/// A JavaScript expression: the status a node's row shows.
fn node_status(name: &str) -> String {
    format!("(document.querySelector('#nodes tr[data-node=\"{name}\"] .status') || {{}}).textContent")
}

struct Dash<'a> {
    page: &'a Page,
    cdp: &'a Cdp,
    chromium: &'a Chromium,
}

impl Dash<'_> {
    async fn expect(&self, expression: &str, what: &str) {
        self.expect_within(expression, what, SHOW_WITHIN).await
    }

    async fn expect_within(&self, expression: &str, what: &str, within: Duration) {
        if !self.page.wait_for(expression, within).await {
            let last = self.page.eval("JSON.stringify(window.dashboard && window.dashboard.last())").await;
            let console = self.cdp.console_of(&self.page.session).join("\n");
            let stderr = self.chromium.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
            panic!(
                "{what}: `{expression}` never held within {within:?}\nlast overview: {last:?}\nconsole:\n{console}\nchromium:\n{}",
                tail(&stderr, 20)
            );
        }
    }
}
