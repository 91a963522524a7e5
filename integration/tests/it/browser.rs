//! The browser client (`nodes/static/index.html`, served at `GET /`) in a real headless
//! Chromium: two pages — the host and a guest — join one meeting through the page's own
//! `?autojoin=1` path, publish Chromium's fake camera and microphone, and each must decode the
//! other's video through the node's SFU.
//!
//! Chromium and the DevTools client are in cdp.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_integration::{Backend, NodeOptions, TestNode};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::json;
use uuid::Uuid;

use crate::cdp::{Cdp, Chromium, Page, save_screenshot, tail, target_dir};
use crate::{create_meeting, id_of};

/// How long both pages get to decode each other's video once the guest's page is open.
const MEDIA_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_at_the_root() {
    let node = TestNode::start(Backend::Sqlite).await;
    for path in ["/", "/j/0190a6c5-0000-7000-8000-000000000000"] {
        let resp = reqwest::get(format!("{}{path}", node.base)).await.expect("GET the page");
        assert_eq!(resp.status(), 200, "{path}");
        let header = |h| resp.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header(CONTENT_TYPE).starts_with("text/html"), "{path}: {}", header(CONTENT_TYPE));
        assert_eq!(header(CACHE_CONTROL), "no-cache", "{path}");
        let body = resp.text().await.expect("body");
        for needle in [r#"<form id="join-form""#, r#"id="meeting-id""#, r#"id="token""#, "window.parley"] {
            assert!(body.contains(needle), "{path}: the page has {needle}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_see_each_other_through_the_sfu() {
    let call = Call::start().await;
    let (host, guest) = (&call.host, &call.guest);

    // Each page shows the other's camera tile, labelled with the name given on joining.
    assert!(call.tiles(host).await.contains(&format!("{}:camera", call.guest_id)));
    assert!(call.tiles(guest).await.contains(&format!("{}:camera", call.host_id)));
    let label = format!(r#"document.querySelector('.tile[data-user="{}"] .label').textContent"#, call.guest_id);
    assert_eq!(host.eval(&label).await.expect("label"), json!("Gus"));

    // Let a few more frames arrive so the screenshot shows moving video, not the first frame.
    tokio::time::sleep(Duration::from_millis(500)).await;
    save_screenshot(host, "browser-two-peers.png").await;

    // The page publishes its camera in simulcast layers, and the router chose one for each
    // viewer (its debug log names the choice).
    let layers = host.eval("window.parley.sendingLayers()").await.expect("stats");
    assert!(layers.as_u64().unwrap_or(0) >= 2, "the host sends simulcast layers: {layers}");
    let log = call.node.log();
    for id in [call.host_id, call.guest_id] {
        assert!(
            log.contains(&format!("simulcast layer track=\"{id}:camera\"")),
            "the router chose a simulcast layer of {id}'s camera\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_controls_chat_mute_screen_share_speaker_view_and_leave() {
    let call = Call::start().await;
    let (host, guest) = (&call.host, &call.guest);
    let (host_id, guest_id) = (call.host_id, call.guest_id);

    // Chat: sent from the host's form, shown on the guest's page (as text, not markup).
    host.eval("document.getElementById('chat-text').value = '<b>hello</b> from the host'; document.getElementById('chat-form').requestSubmit()")
        .await
        .expect("send chat");
    call.expect(
        guest,
        "[...document.querySelectorAll('#chat .text')].some(e => e.textContent === '<b>hello</b> from the host')",
        "the guest sees the chat message",
    )
    .await;

    // Mute: the guest's participant list shows the host muted; the host's mic track is off.
    host.eval("document.getElementById('mute').click()").await.expect("mute");
    call.expect(
        guest,
        &format!("document.querySelector('#people li[data-user=\"{host_id}\"] .flags').textContent.includes('muted')"),
        "the guest sees the host muted",
    )
    .await;

    // Screen share (a user gesture for getDisplayMedia; the fake UI picks a screen): the
    // page's own offer renegotiates while the server's offers come and go.
    host.gesture("document.getElementById('share').click()").await.expect("share");
    let screen = format!("{host_id}:screen");
    call.expect(
        guest,
        &format!("window.parley.state().remoteTiles.includes('{screen}')"),
        "the guest gets the host's screen",
    )
    .await;
    call.expect(
        guest,
        "(document.querySelector('.tile[data-source=\"screen\"] video') || {}).videoWidth > 0",
        "the guest shows frames of the host's screen",
    )
    .await;
    call.expect(
        guest,
        &format!(
            "document.querySelector('#people li[data-user=\"{host_id}\"] .flags').textContent.includes('sharing')"
        ),
        "the guest sees the host sharing",
    )
    .await;
    save_screenshot(guest, "browser-screen-share.png").await;
    host.eval("document.getElementById('share').click()").await.expect("stop sharing");
    call.expect(
        guest,
        &format!("!window.parley.state().remoteTiles.includes('{screen}')"),
        "the screen tile goes when sharing stops",
    )
    .await;
    call.expect(
        guest,
        &format!(
            "!document.querySelector('#people li[data-user=\"{host_id}\"] .flags').textContent.includes('sharing')"
        ),
        "the guest sees the share stopped",
    )
    .await;

    // Speaker view: a `subscribe`, no error on the status line; the host's camera stays.
    guest
        .eval("const v = document.getElementById('view'); v.value = 'speaker'; v.dispatchEvent(new Event('change'))")
        .await
        .expect("speaker view");
    tokio::time::sleep(Duration::from_millis(500)).await;
    call.expect(
        guest,
        "!document.getElementById('status').classList.contains('error')",
        "no error after switching views",
    )
    .await;
    call.expect(
        guest,
        &format!("window.parley.state().remoteTiles.includes('{host_id}:camera')"),
        "the speaker view still shows the host",
    )
    .await;

    // Leave: the host's page loses the guest's tiles and list entry.
    guest.eval("document.getElementById('leave').click()").await.expect("leave");
    call.expect(
        guest,
        "!window.parley.state().joined && !document.getElementById('join-form').hidden",
        "the guest's page is back at the join form",
    )
    .await;
    call.expect(
        host,
        &format!("!window.parley.state().remoteTiles.some(t => t.startsWith('{guest_id}:'))"),
        "the guest's tiles go",
    )
    .await;
    call.expect(
        host,
        &format!("!document.querySelector('#people li[data-user=\"{guest_id}\"]')"),
        "the guest leaves the list",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_keep_flowing_when_the_publishers_connections_are_renegotiated() {
    // Chromium stops tagging a simulcast layer's packets with its RID once a receiver report
    // for that layer came back (about a second in). A renegotiation of a publisher's
    // connection after that — the server offering it a newcomer's tracks, the publisher
    // offering its screen — must not cost the server the layers' SSRCs, or that camera stops
    // reaching everyone.
    let call = Call::start().await;
    let (host, guest) = (&call.host, &call.guest);
    let (host_camera, guest_camera) = (format!("{}:camera", call.host_id), format!("{}:camera", call.guest_id));
    // Both pages decode at least 10 more frames of the other's camera (within 15 s: a loaded
    // machine slows decoding; a camera the server lost stops it for good).
    let flowing = |what: &'static str| {
        let (host_camera, guest_camera) = (host_camera.clone(), guest_camera.clone());
        let call = &call;
        async move {
            let frames =
                || async { (guest.frames_decoded_of(&host_camera).await, host.frames_decoded_of(&guest_camera).await) };
            let before = frames().await;
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut now = before;
            while !(now.0 >= before.0 + 10.0 && now.1 >= before.1 + 10.0) {
                assert!(
                    Instant::now() < deadline,
                    "{what}: each page goes on decoding the other's camera (frames decoded, guest then host: \
                     {before:?}, 15 s later {now:?})\n{}",
                    call.report().await
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
                now = frames().await;
            }
        }
    };
    // Past the first receiver reports (sent every second): from here Chromium's packets no
    // longer carry their RID unless the node withholds reports about those layers.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A third participant: the server offers its tracks to both publishers.
    let (third_id, third_token) = call.node.user("third@example.com", "Tess Third").await;
    let third = Page::open(&call.cdp, &call.url(&third_token, "Tess"), "third").await;
    let third_camera = format!("{third_id}:camera");
    for page in [host, guest] {
        call.expect(
            page,
            &format!("window.parley.state().remoteTiles.includes('{third_camera}')"),
            "the page gets the third participant's camera",
        )
        .await;
    }
    flowing("after the server's offers").await;

    // The host's own offer: its screen.
    host.gesture("document.getElementById('share').click()").await.expect("share");
    call.expect(
        guest,
        &format!("window.parley.state().remoteTiles.includes('{}:screen')", call.host_id),
        "the guest gets the host's screen",
    )
    .await;
    flowing("after the host's offer").await;
    drop(third);
}

/// The node withholds every 15th video packet it forwards to each page (fault injection): the
/// page's NACK is answered from the publisher's cache on the RTX stream, Chromium counts the
/// packets received again, and both cameras keep being decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_repair_lost_video_with_the_nodes_retransmissions() {
    let call = Call::start_with(false, &[("PARLEY_MEDIA_DROP_FORWARDED_EVERY", "15")]).await;
    for page in [&call.host, &call.guest] {
        let repaired = "window.parley.repairs().then(r => r.nacks > 0 && r.retransmitted > 0)";
        if !page.wait_for(repaired, Duration::from_secs(15)).await {
            let repairs = page.eval("window.parley.repairs()").await;
            panic!("the {} page repairs its losses: {repairs:?}\n{}", page.label, call.report().await);
        }
        let repairs = page.eval("window.parley.repairs()").await.unwrap_or_default();
        println!("the {} page: {repairs}", page.label);
        let before = page.frames_decoded().await;
        let more = format!("window.parley.framesDecoded().then(n => n >= {before} + 10)");
        call.expect(page, &more, "video keeps being decoded").await;
    }
    let log = call.node.log();
    assert!(log.contains("NACK answered from the publisher's cache"), "the router answered\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_admitted_from_the_waiting_room_gets_media() {
    // `Call` waits for both pages to decode video: the admitted guest's page (which joined
    // through the `admitted` event, not a `joined` reply) connected its media too.
    let call = Call::start_with(true, &[]).await;
    assert!(call.tiles(&call.guest).await.contains(&format!("{}:camera", call.host_id)));
    let me = "document.getElementById('people').textContent";
    assert!(call.guest.eval(me).await.expect("people").as_str().is_some_and(|t| t.contains("Gus (you)")));
}

/// A node, a host and a guest, and an instant meeting (no waiting room) that both joined from
/// their own page in one Chromium, each decoding the other's camera.
struct Call {
    host: Page,
    guest: Page,
    host_id: Uuid,
    guest_id: Uuid,
    cdp: Arc<Cdp>,
    node: TestNode,
    chromium: Chromium,
    meeting: Uuid,
}

impl Call {
    async fn start() -> Call {
        Call::start_with(false, &[]).await
    }

    /// With `waiting_room`, the guest's page waits until the host admits it from its page.
    /// `env`: more settings of the node.
    async fn start_with(waiting_room: bool, env: &[(&str, &str)]) -> Call {
        let chromium = Chromium::launch();
        let mut options = NodeOptions::new(Backend::Postgres)
            .with_redis()
            .env("PARLEY_LOG", "info,parley_actors::media_router=debug,parley_media::socket=debug");
        for (key, value) in env {
            options = options.env(key, *value);
        }
        let node = TestNode::start_with(options).await;
        let (host_id, host_token) = node.user("host@example.com", "Hannah Host").await;
        let (guest_id, guest_token) = node.user("guest@example.com", "Gus Guest").await;
        let meeting = id_of(
            &create_meeting(
                &node,
                &host_token,
                json!({"title": "Browser", "meeting_type": "instant", "duration_minutes": 30,
                       "settings": {"waiting_room": waiting_room, "screen_share": "all"}}),
            )
            .await,
            "meeting_id",
        );
        let url =
            |token: &str, name: &str| format!("{}/?meeting={meeting}&token={token}&name={name}&autojoin=1", node.base);

        let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
        let started = Instant::now();
        // The host first: its page's `join` starts the meeting, which the guest's `join` needs.
        let host = Page::open(&cdp, &url(&host_token, "Hannah"), "host").await;
        let joined = host.wait_for("window.parley.state().joined", Duration::from_secs(15)).await;
        assert!(joined, "the host's page joins\n{}", report(&cdp, &chromium, &node, &[&host]).await);
        let guest = Page::open(&cdp, &url(&guest_token, "Gus"), "guest").await;
        let call = Call { host, guest, host_id, guest_id, cdp, node, chromium, meeting };
        if waiting_room {
            let (host, guest) = (&call.host, &call.guest);
            call.expect(
                guest,
                "document.getElementById('status').textContent.includes('waiting room')",
                "the guest waits",
            )
            .await;
            let admit = "!document.getElementById('waiting-box').hidden \
                         && [...document.querySelectorAll('#waiting li')].some(li => li.textContent.includes('Gus'))";
            call.expect(host, admit, "the host's page lists the guest as waiting").await;
            host.eval("document.querySelector('#waiting button').click()").await.expect("admit");
            call.expect(host, "document.getElementById('waiting-box').hidden", "the waiting list empties").await;
        }

        let deadline = Instant::now() + MEDIA_WAIT;
        let mut frames = (0.0, 0.0);
        while Instant::now() < deadline {
            frames = (call.host.frames_decoded().await, call.guest.frames_decoded().await);
            if frames.0 > 0.0 && frames.1 > 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if frames.0 == 0.0 || frames.1 == 0.0 {
            let why = call.report().await;
            assert!(frames.0 > 0.0, "the host decodes the guest's camera: {frames:?}\n{why}");
            assert!(frames.1 > 0.0, "the guest decodes the host's camera: {frames:?}\n{why}");
        }
        println!("both pages decode video {:.1} s after the host's page opened", started.elapsed().as_secs_f64());
        call
    }

    async fn report(&self) -> String {
        report(&self.cdp, &self.chromium, &self.node, &[&self.host, &self.guest]).await
    }

    /// The page that joins this call as the holder of `token`.
    fn url(&self, token: &str, name: &str) -> String {
        format!("{}/?meeting={}&token={token}&name={name}&autojoin=1", self.node.base, self.meeting)
    }

    /// A page's remote tiles (stream ids).
    async fn tiles(&self, page: &Page) -> Vec<String> {
        let v = page.eval("window.parley.state().remoteTiles").await.expect("remote tiles");
        serde_json::from_value(v).expect("a list of stream ids")
    }

    /// Waits (bounded) until `expression` holds on `page`; fails with the report otherwise.
    async fn expect(&self, page: &Page, expression: &str, what: &str) {
        if !page.wait_for(expression, Duration::from_secs(10)).await {
            panic!("{what}: `{expression}` on the {} page\n{}", page.label, self.report().await);
        }
    }
}

/// What a failure report shows: each page's state and WebRTC stats, its console, Chromium's
/// and the node's logs.
async fn report(cdp: &Cdp, chromium: &Chromium, node: &TestNode, pages: &[&Page]) -> String {
    // First what a failure usually turns on, compact (a CI log shows its head and tail): each
    // page's state and inbound streams, the node's media decisions.
    let mut out = String::from("--- summary ---\n");
    for p in pages {
        let state = p.eval("window.parley.state()").await.map(|v| v.to_string()).unwrap_or_else(|e| e.to_string());
        let stats = p.eval("window.parley.stats()").await.unwrap_or_default();
        let pick = |field: &str| stats.get(field).map(|v| v.to_string()).unwrap_or_default();
        out += &format!("{}: {state}\n  ice {} inbound {}\n", p.label, pick("ice"), pick("inbound"));
        let ssrcs = stats.get("remoteSdp").and_then(|v| v.as_array()).map_or_else(Vec::new, |lines| {
            lines.iter().filter_map(|l| l.as_str()).filter(|l| l.starts_with("a=ssrc:")).collect::<Vec<_>>()
        });
        out += &format!("  remote ssrcs {ssrcs:?}\n");
    }
    let media = node
        .log()
        .lines()
        .filter(|l| MEDIA_LOG.iter().any(|m| l.contains(m)))
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .join("\n");
    out += &format!("node media lines (last 60):\n{}\n--- details ---\n", tail(&media, 60));
    for p in pages {
        let state = p.eval("window.parley.state()").await;
        let stats = p.eval("window.parley.stats()").await;
        let status = p.eval("document.getElementById('status').textContent").await;
        out += &format!("--- {} page ---\nstatus: {status:?}\nstate: {state:?}\n", p.label);
        match stats {
            Ok(s) => out += &format!("stats: {}\n", serde_json::to_string_pretty(&s).unwrap_or_default()),
            Err(e) => out += &format!("stats: {e}\n"),
        }
        out += &format!("console:\n{}\n", cdp.console_of(&p.session).join("\n"));
    }
    let stderr = chromium.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
    out += &format!("--- chromium stderr (last lines) ---\n{}\n", tail(&stderr, 40));
    out += &format!("--- node log (last lines) ---\n{}", tail(&node.log(), 80));
    // The whole node log beside the screenshots, for what the last lines do not show.
    let dir = target_dir().join("test-artifacts");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let path = dir.join(format!("browser-failure-node-{stamp}.log"));
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, node.log())).is_ok() {
        out += &format!("\n(the whole node log: {})", path.display());
    }
    out
}

/// Node log lines about media decisions: tracks, layers, keyframes, refused writes, failures.
const MEDIA_LOG: &[&str] = &[
    "outgoing track",
    "simulcast layer",
    "keyframe request",
    "rtp write refused",
    "packet not sent",
    "packets forwarded",
    "publishing",
    "media peer",
    "WARN",
    "ERROR",
];
