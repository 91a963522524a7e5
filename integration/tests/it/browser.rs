//! The browser client (`nodes/static/index.html`, served at `GET /`) in a real headless
//! Chromium: two pages — the host and a guest — join one meeting through the page's own
//! `?autojoin=1` path, publish Chromium's fake camera and microphone, and each must decode the
//! other's video through the node's SFU.
//!
//! Chromium is Debian's `chromium` (`make test` installs it; `PARLEY_CHROMIUM` overrides the
//! path). Without it the test fails: it does not skip. It is driven over the Chrome DevTools
//! Protocol with the small client below (`Target.createTarget`, `Target.attachToTarget` with
//! `flatten`, `Runtime.evaluate`, `Page.captureScreenshot`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley_integration::{Backend, NodeOptions, TestNode};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use uuid::Uuid;

use crate::{create_meeting, id_of};

/// How long both pages get to decode each other's video once the guest's page is open.
const MEDIA_WAIT: Duration = Duration::from_secs(30);
/// Any single DevTools call.
const CDP_WAIT: Duration = Duration::from_secs(30);

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

/// Saves a page's screenshot as `target/test-artifacts/<name>` and prints where.
async fn save_screenshot(page: &Page, name: &str) {
    let png = page.screenshot().await;
    let dir = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    println!("screenshot of the {} page: {}", page.label, path.display());
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where build output goes: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The Chromium binary: `PARLEY_CHROMIUM`, else `chromium` on the `PATH`.
fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PARLEY_CHROMIUM") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "Chromium not found: the browser test needs Debian's `chromium` package \
                 (`make test` installs it: apt-get install chromium) or PARLEY_CHROMIUM=<path>"
            )
        })
}

/// Chromium's command line (besides the profile directory and the first page).
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--window-size=1280,800",
    // A fake camera (a moving test pattern) and microphone (a beep), granted
    // without a permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    // WebRTC over loopback. The node's media peers listen on 127.0.0.1 only. Chrome leaves
    // loopback interfaces out of ICE gathering unless told otherwise; here it still connects
    // without this flag, from its eth0 address to the server's 127.0.0.1 candidate (a
    // peer-reflexive candidate for the server), but on a machine with no other interface it
    // would have nothing to connect from. With it, Chrome also gathers 127.0.0.1 and a
    // loopback pair is nominated too.
    "--allow-loopback-in-peer-connection",
    // Host candidates as IP addresses, not mDNS names the server cannot resolve. A page with
    // camera/microphone permission gets plain IPs anyway; this matters for a page without.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Two pages at once: neither may be throttled as a background tab.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// A headless Chromium with its own throwaway profile, killed on drop.
struct Chromium {
    child: Child,
    ws_url: String,
    /// Everything it wrote to stderr (for failure reports).
    stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch() -> Chromium {
        let path = chromium_path();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(&path)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Chromium ({}): {e}", path.display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("chromium stderr");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = url_tx.send(url.trim().to_owned());
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let ws_url = match url_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let said = stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("Chromium ({}) printed no DevTools address within 30 s:\n{said}", path.display());
            }
        };
        Chromium { child, ws_url, stderr, _profile: profile }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A Chrome DevTools Protocol client over the browser's WebSocket: numbered calls (optionally
/// to one attached page's session), answered by a reader task that also keeps the pages'
/// console output.
struct Cdp {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    /// (session id, line) for console messages and uncaught exceptions.
    console: Arc<Mutex<Vec<(String, String)>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect to Chromium's DevTools");
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let console: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (p, c) = (pending.clone(), console.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(id) = v["id"].as_u64() {
                    let waiter = p.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(w) = waiter {
                        let result = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = w.send(result);
                    }
                    continue;
                }
                let session = v["sessionId"].as_str().unwrap_or_default().to_owned();
                let line = match v["method"].as_str() {
                    Some("Runtime.consoleAPICalled") => {
                        let args: Vec<String> = v["params"]["args"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|x| match (&x["value"], x["description"].as_str()) {
                                        (Value::String(s), _) => s.clone(),
                                        (Value::Null, Some(d)) => d.to_owned(),
                                        (other, _) => other.to_string(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        format!("console.{}: {}", v["params"]["type"].as_str().unwrap_or("log"), args.join(" "))
                    }
                    Some("Runtime.exceptionThrown") => {
                        let d = &v["params"]["exceptionDetails"];
                        format!("uncaught: {} {}", d["text"], d["exception"]["description"])
                    }
                    _ => continue,
                };
                if let Ok(mut c) = c.lock() {
                    c.push((session, line));
                }
            }
        });
        Cdp { out, pending, next_id: AtomicU64::new(1), console, reader }
    }

    /// Calls `method`, on a page's session if given; its `result`, or the error.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|e| e.to_string())?.insert(id, tx);
        self.out.send(Message::Text(msg.to_string().into())).map_err(|_| "DevTools connection gone".to_owned())?;
        match tokio::time::timeout(CDP_WAIT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("{method}: DevTools connection closed")),
            Err(_) => Err(format!("{method}: no answer within {CDP_WAIT:?}")),
        }
    }

    fn console_of(&self, session: &str) -> Vec<String> {
        let lines = self.console.lock().map(|c| c.clone()).unwrap_or_default();
        lines.into_iter().filter(|(s, _)| s == session).map(|(_, l)| l).collect()
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One tab, attached with a flat session.
struct Page {
    cdp: Arc<Cdp>,
    session: String,
    label: &'static str,
}

impl Page {
    async fn open(cdp: &Arc<Cdp>, url: &str, label: &'static str) -> Page {
        // A window of its own: a visible page, never a throttled background tab.
        let target = cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank", "newWindow": true}))
            .await
            .expect("Target.createTarget");
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = cdp
            .call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))
            .await
            .expect("Target.attachToTarget");
        let session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        let page = Page { cdp: cdp.clone(), session, label };
        // Console capture from the first line of the page on.
        page.call("Runtime.enable", json!({})).await.expect("Runtime.enable");
        page.call("Page.enable", json!({})).await.expect("Page.enable");
        page.call("Page.navigate", json!({"url": url})).await.expect("Page.navigate");
        page
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value as JSON.
    async fn eval(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true}))
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {}", e["exception"]["description"].as_str().unwrap_or(&e.to_string())));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` as if the user had clicked (APIs that need a gesture allow it).
    async fn gesture(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
            )
            .await?;
        match r.get("exceptionDetails") {
            Some(e) => Err(format!("{expression}: {e}")),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Polls `expression` until it is `true` (errors — the page still loading — count as not yet).
    async fn wait_for(&self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(expression).await == Ok(json!(true)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Video frames this page decoded so far (0 while the page is not ready).
    async fn frames_decoded(&self) -> f64 {
        self.eval("window.parley ? window.parley.framesDecoded() : 0")
            .await
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }

    /// Frames decoded of one received track (`<user>:<source>`).
    async fn frames_decoded_of(&self, track: &str) -> f64 {
        self.eval(&format!("window.parley.framesDecodedOf('{track}')"))
            .await
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }

    async fn screenshot(&self) -> Vec<u8> {
        let _ = self.call("Page.bringToFront", json!({})).await;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await.expect("Page.captureScreenshot");
        base64_decode(shot["data"].as_str().expect("screenshot data"))
    }
}

/// Standard base64 (the screenshot's encoding), without pulling in a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut value = [255u8; 256];
    for (i, c) in ALPHABET.iter().enumerate() {
        value[*c as usize] = i as u8;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| value[*c as usize] != 255) {
        acc = ((acc << 6) | u32::from(value[c as usize])) & 0xFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}
