//! Running a meeting from the browser client (`nodes/static/index.html`): three Chromium pages
//! and a fourth that is turned away. The host admits a waiting guest from the alert, promotes
//! them to co-host, who admits the next; hands go up and the host sees their order; the host
//! mutes a participant (their page shows it, and their microphone stops reaching the others:
//! the node holds it), stops their video, removes them (their page says who), locks the meeting
//! (a fourth page is refused with the reason shown) and ends it for everyone. A participant
//! named like markup is shown as text. Screenshots of each state at 1280×800 and 390×844.

use std::sync::Arc;
use std::time::Duration;

use parley_integration::{Backend, NodeOptions, TestNode};
use serde_json::json;
use uuid::Uuid;

use crate::cdp::{Cdp, Chromium, Page, save_screenshots, tail};
use crate::{create_meeting, id_of};

/// A display name that would run script if a page inserted it as HTML.
const MARKUP_NAME: &str = "<img src=x onerror=alert(1)>";

struct Meeting {
    node: TestNode,
    cdp: Arc<Cdp>,
    chromium: Chromium,
    id: Uuid,
}

impl Meeting {
    /// A page joining as the holder of `token`, named `name`.
    async fn open(&self, token: &str, name: &str, label: &'static str) -> Page {
        let name: String = name
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
            .collect();
        let url = format!("{}/?meeting={}&token={token}&name={name}&autojoin=1", self.node.base, self.id);
        Page::open(&self.cdp, &url, label).await
    }

    async fn report(&self, pages: &[&Page]) -> String {
        let mut out = String::new();
        for p in pages {
            let state = p.eval("window.parley.state()").await.map(|v| v.to_string()).unwrap_or_else(|e| e);
            let status = p.eval("document.getElementById('status').textContent").await.unwrap_or_default();
            let toasts = p.eval("document.getElementById('toasts').textContent").await.unwrap_or_default();
            out += &format!(
                "--- {} ---\nstate: {state}\nstatus: {status}\ntoasts: {toasts}\nconsole:\n{}\n",
                p.label,
                self.cdp.console_of(&p.session).join("\n")
            );
        }
        let stderr = self.chromium.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
        out + &format!("--- chromium ---\n{}\n--- node ---\n{}", tail(&stderr, 20), tail(&self.node.log(), 80))
    }

    /// Waits (bounded) until `expression` holds on `page`; fails with every page's state.
    async fn expect(&self, page: &Page, expression: &str, what: &str, all: &[&Page]) {
        if !page.wait_for(expression, Duration::from_secs(15)).await {
            panic!("{what}: `{expression}` on the {} page\n{}", page.label, self.report(all).await);
        }
    }
}

/// Clicks the button whose accessible name is `label` (what a screen reader announces).
fn click(label: &str) -> String {
    format!(
        "(() => {{ const b = [...document.querySelectorAll('button')].find(b => b.getAttribute('aria-label') === {label:?}); \
         if (!b) throw new Error('no button labelled ' + {label:?}); b.click(); return true; }})()"
    )
}

async fn packets_of(page: &Page, track: &str) -> f64 {
    page.eval(&format!("window.parley.packetsOf('{track}')")).await.ok().and_then(|v| v.as_f64()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runs_a_whole_meeting_from_the_page() {
    let chromium = Chromium::launch();
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite)).await;
    let (host_id, host_token) = node.user("host@example.com", "Hannah Host").await;
    let (gus, gus_token) = node.user("gus@example.com", "Gus Guest").await;
    let (ada, ada_token) = node.user("ada@example.com", "Ada").await;
    let (_, zed_token) = node.user("zed@example.com", "Zed Late").await;
    let id = id_of(
        &create_meeting(
            &node,
            &host_token,
            json!({"title": "Run from the page", "meeting_type": "instant", "duration_minutes": 30,
                   "settings": {"waiting_room": true}}),
        )
        .await,
        "meeting_id",
    );
    let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
    let m = Meeting { node, cdp, chromium, id };

    let host = m.open(&host_token, "Hannah Host", "host").await;
    m.expect(&host, "window.parley.state().joined", "the host's page joins", &[&host]).await;
    // The token is out of the address at once; the title and the time in the meeting show.
    assert_eq!(host.eval("location.href.includes('token')").await.unwrap(), json!(false));
    m.expect(
        &host,
        "document.getElementById('title').textContent === 'Run from the page' \
         && /^\\d\\d:\\d\\d$/.test(document.getElementById('elapsed').textContent)",
        "the title and the elapsed time",
        &[&host],
    )
    .await;

    // Gus waits on a waiting screen; the host is alerted (a toast and a chime) and admits him.
    let gus_page = m.open(&gus_token, "Gus Guest", "gus").await;
    let all = [&host, &gus_page];
    m.expect(&gus_page, "!document.getElementById('waiting-screen').hidden", "Gus sees the waiting screen", &all).await;
    m.expect(
        &host,
        "document.getElementById('toasts').textContent.includes('Gus Guest is waiting') && window.parley.state().chimes >= 1",
        "the host is alerted",
        &all,
    )
    .await;
    save_screenshots(&host, "host-waiting-alert").await;
    save_screenshots(&gus_page, "guest-waiting-screen").await;
    host.eval(&click("Admit Gus Guest")).await.expect("admit");
    m.expect(&gus_page, "window.parley.state().joined", "Gus is in", &all).await;

    // The host promotes Gus, who then admits Ada (named like markup) from his own alert.
    host.eval(&click("Make Gus Guest a co-host")).await.expect("promote");
    m.expect(&gus_page, "window.parley.state().moderator", "Gus is a co-host", &all).await;
    let ada_page = m.open(&ada_token, MARKUP_NAME, "ada").await;
    let all = [&host, &gus_page, &ada_page];
    m.expect(
        &gus_page,
        &format!("window.parley.state().waiting.includes('{ada}')"),
        "the co-host sees Ada waiting",
        &all,
    )
    .await;
    gus_page.eval(&click(&format!("Admit {MARKUP_NAME}"))).await.expect("the co-host admits");
    m.expect(&ada_page, "window.parley.state().joined", "Ada is in", &all).await;
    let ada_name = format!("document.querySelector('#people li[data-user=\"{ada}\"] .name').textContent");
    m.expect(&host, &format!("{ada_name} === {MARKUP_NAME:?}"), "Ada's name shows as text", &all).await;
    assert_eq!(
        host.eval("document.querySelectorAll('#people img').length").await.expect("img count"),
        json!(0),
        "no element made of a name"
    );

    // Hands: Ada first, then Gus; the host sees them in that order.
    ada_page.eval("document.getElementById('hand').click()").await.expect("Ada raises");
    m.expect(&host, &format!("window.parley.state().hands[0] === '{ada}'"), "Ada's hand", &all).await;
    gus_page.eval("document.getElementById('hand').click()").await.expect("Gus raises");
    m.expect(
        &host,
        &format!("JSON.stringify(window.parley.state().hands) === '[\"{ada}\",\"{gus}\"]'"),
        "the host sees Ada's hand before Gus's",
        &all,
    )
    .await;
    let flag = |user: Uuid| format!("document.querySelector('#people li[data-user=\"{user}\"]').dataset.hand");
    assert_eq!(host.eval(&flag(ada)).await.unwrap(), json!("1"));
    assert_eq!(host.eval(&flag(gus)).await.unwrap(), json!("2"));
    save_screenshots(&host, "host-hands-in-order").await;

    // Private chat: Gus writes to the host alone; the host's page counts it unread.
    gus_page
        .eval(&format!(
            "document.getElementById('chat-to').value = '{host_id}'; \
             document.getElementById('chat-text').value = 'psst, host only'; \
             document.getElementById('chat-form').requestSubmit()"
        ))
        .await
        .expect("private chat");
    m.expect(
        &host,
        "[...document.querySelectorAll('#chat .msg.private')].some(e => e.textContent.includes('psst, host only')) \
         && document.getElementById('unread').textContent === '1'",
        "the host gets it privately, unread",
        &all,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ada_chat = ada_page.eval("document.getElementById('chat').textContent").await.unwrap();
    assert!(!ada_chat.as_str().unwrap_or_default().contains("psst"), "Ada does not see it: {ada_chat}");

    // Mute: Ada's microphone reaches the host until the host mutes her, then stops (the node
    // holds a muted microphone, whatever her page does), and her page shows her muted.
    let mic = format!("{ada}:microphone");
    let mut before = 0.0;
    for _ in 0..100 {
        before = packets_of(&host, &mic).await;
        if before > 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(before > 20.0, "Ada's microphone reaches the host: {before} packets\n{}", m.report(&all).await);
    host.eval(&click(&format!("Mute {MARKUP_NAME}"))).await.expect("mute Ada");
    m.expect(&ada_page, "document.getElementById('mute').textContent === 'Unmute'", "Ada's page shows her muted", &all)
        .await;
    m.expect(
        &gus_page,
        &format!("document.querySelector('#people li[data-user=\"{ada}\"] .flags').textContent.includes('muted')"),
        "the others see her muted",
        &all,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muted_at = packets_of(&host, &mic).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = packets_of(&host, &mic).await;
    assert_eq!(later, muted_at, "no packet of a muted microphone reaches anyone\n{}", m.node.log());
    assert!(m.node.log().contains("track held by the meeting's state"), "{}", tail(&m.node.log(), 40));
    save_screenshots(&ada_page, "participant-muted-by-host").await;

    // Stop video: her camera goes off on her page too.
    host.eval(&click(&format!("Stop {MARKUP_NAME}'s video"))).await.expect("stop video");
    m.expect(&ada_page, "document.getElementById('video').textContent === 'Start video'", "Ada's camera is off", &all)
        .await;

    // Remove: her page says who removed her.
    host.eval(&click(&format!("Remove {MARKUP_NAME} from the meeting"))).await.expect("remove");
    m.expect(
        &ada_page,
        "document.getElementById('status').textContent === 'Hannah Host removed you from the meeting.' \
         && document.getElementById('toasts').textContent.includes('removed you')",
        "Ada's page says why",
        &all,
    )
    .await;
    save_screenshots(&ada_page, "participant-removed").await;

    // Lock: everyone sees it; a fourth page is refused with the reason on screen.
    host.eval("document.getElementById('lock').click()").await.expect("lock");
    m.expect(&gus_page, "!document.getElementById('locked').hidden", "Gus sees the meeting locked", &all).await;
    let zed = m.open(&zed_token, "Zed Late", "zed").await;
    let all = [&host, &gus_page, &ada_page, &zed];
    m.expect(
        &zed,
        "document.getElementById('toasts').textContent.toLowerCase().includes('locked') && !window.parley.state().joined",
        "the fourth page is refused, and says why",
        &all,
    )
    .await;
    save_screenshots(&zed, "late-joiner-refused-locked").await;
    save_screenshots(&host, "host-locked").await;

    // End for all (two clicks: no modal dialog).
    host.eval("document.getElementById('end').click()").await.expect("arm end");
    host.eval("document.getElementById('end').click()").await.expect("end");
    m.expect(
        &gus_page,
        "document.getElementById('status').textContent === 'The host ended the meeting for everyone.'",
        "Gus's page says the host ended it",
        &all,
    )
    .await;
    save_screenshots(&gus_page, "meeting-ended").await;

    // No page ever opened a dialog (the markup name ran nothing).
    for p in all {
        let dialogs: Vec<String> =
            m.cdp.console_of(&p.session).into_iter().filter(|l| l.starts_with("dialog")).collect();
        assert!(dialogs.is_empty(), "the {} page opened {dialogs:?}", p.label);
    }
}

/// A page whose connection to the node is cut for 5 s takes its seat back by itself (`resume`
/// with its resume token) and decodes video again on a new peer connection. The cut is a TCP
/// relay between the page and the node that drops every connection and refuses new ones:
/// DevTools' offline emulation (`Network.emulateNetworkConditions`) would leave an open
/// WebSocket and WebRTC untouched (crbug.com/563644), so it cannot cut a meeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cut_off_for_five_seconds_reconnects_and_decodes_video_again() {
    let chromium = Chromium::launch();
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite)).await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let (gus, gus_token) = node.user("gus@example.com", "Gus Guest").await;
    let id = id_of(
        &create_meeting(
            &node,
            &host_token,
            json!({"title": "Flaky network", "meeting_type": "instant", "duration_minutes": 30,
                   "settings": {"waiting_room": false}}),
        )
        .await,
        "meeting_id",
    );
    let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
    let link = parley_integration::CuttableLink::start(node.base.trim_start_matches("http://")).await;
    let m = Meeting { node, cdp, chromium, id };
    let host = m.open(&host_token, "Hannah Host", "host").await;
    m.expect(&host, "window.parley.state().joined", "the host's page joins", &[&host]).await;
    // Gus's page is served, and talks to the node, through the link.
    let url = format!("http://127.0.0.1:{}/?meeting={id}&token={gus_token}&name=Gus&autojoin=1", link.port);
    let gus_page = Page::open(&m.cdp, &url, "gus").await;
    let all = [&host, &gus_page];
    let decoding =
        "window.parley.state().connectionState === 'connected' && window.parley.framesDecoded().then(n => n > 10)";
    m.expect(&gus_page, decoding, "Gus decodes the host's video", &all).await;

    link.cut();
    m.expect(&gus_page, "window.parley.state().reconnecting", "Gus's page notices the cut", &all).await;
    save_screenshots(&gus_page, "reconnecting").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(gus_page.eval("window.parley.state().reconnecting").await.unwrap() == json!(true), "still cut off");
    link.heal();

    m.expect(
        &gus_page,
        "!window.parley.state().reconnecting && window.parley.state().joined && window.parley.state().reconnects === 1",
        "Gus's page takes its seat back",
        &all,
    )
    .await;
    m.expect(&gus_page, decoding, "and decodes video again on a new peer connection", &all).await;
    m.expect(
        &gus_page,
        "document.getElementById('quality').dataset.level === 'good'",
        "the connection shows good on loopback",
        &all,
    )
    .await;
    m.expect(
        &host,
        &format!("window.parley.framesDecodedOf('{gus}:camera').then(n => n > 0)"),
        "the host sees Gus again",
        &all,
    )
    .await;
    // The seat was kept: the host never saw Gus leave (a resume is not a new join).
    let counts = host.eval("window.parley.eventCounts()").await.unwrap();
    assert_eq!(counts["participant_left"], serde_json::Value::Null, "Gus never left: {counts}");
    assert_eq!(counts["participant_joined"], json!(1), "Gus joined once: {counts}");
    save_screenshots(&gus_page, "reconnected").await;
}

/// Presses `key` in the page as a keyboard would (a trusted event: it counts as a gesture).
async fn press(page: &Page, key: &str, code: &str, key_code: u32) {
    for kind in ["keyDown", "keyUp"] {
        let mut event = json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code});
        if kind == "keyDown" && key == "Enter" {
            event["text"] = json!("\r");
        }
        page.call("Input.dispatchKeyEvent", event).await.expect("key event");
    }
}

/// Tabs (at most 80 times) until the control `id` has the focus.
async fn tab_to(page: &Page, id: &str) -> bool {
    for _ in 0..80 {
        if page.eval("document.activeElement && document.activeElement.id").await.ok() == Some(json!(id)) {
            return true;
        }
        press(page, "Tab", "Tab", 9).await;
    }
    false
}

/// Keyboard alone: every control has an accessible name, and Tab + Enter reach and work mute,
/// share and leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_usable_by_keyboard_alone() {
    let chromium = Chromium::launch();
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite)).await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let (_, gus_token) = node.user("gus@example.com", "Gus Guest").await;
    let id = id_of(
        &create_meeting(
            &node,
            &host_token,
            json!({"title": "Keyboard", "meeting_type": "instant", "duration_minutes": 30,
                   "settings": {"waiting_room": false, "screen_share": "all"}}),
        )
        .await,
        "meeting_id",
    );
    let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
    let m = Meeting { node, cdp, chromium, id };
    let host = m.open(&host_token, "Hannah Host", "host").await;
    m.expect(&host, "window.parley.state().joined", "the host's page joins", &[&host]).await;
    let gus = m.open(&gus_token, "Gus Guest", "gus").await;
    let all = [&host, &gus];
    m.expect(&gus, "window.parley.state().connectionState === 'connected'", "Gus's media connects", &all).await;

    let unnamed = gus
        .eval(
            "[...document.querySelectorAll('button, select, input')].filter(e => e.offsetParent !== null \
             && !(e.getAttribute('aria-label') || e.textContent.trim() || (e.labels && e.labels.length) || e.title)) \
             .map(e => e.outerHTML)",
        )
        .await
        .unwrap();
    assert_eq!(unnamed, json!([]), "every visible control has a name");

    assert!(tab_to(&gus, "mute").await, "Tab reaches Mute\n{}", m.report(&all).await);
    press(&gus, "Enter", "Enter", 13).await;
    m.expect(&gus, "document.getElementById('mute').textContent === 'Unmute'", "Enter mutes", &all).await;
    m.expect(
        &host,
        "[...document.querySelectorAll('#people li .flags')].some(f => f.textContent.includes('muted'))",
        "the host sees Gus muted",
        &all,
    )
    .await;

    assert!(tab_to(&gus, "share").await, "Tab reaches Share screen\n{}", m.report(&all).await);
    press(&gus, "Enter", "Enter", 13).await;
    m.expect(&gus, "document.getElementById('share').textContent === 'Stop sharing'", "Enter shares the screen", &all)
        .await;
    save_screenshots(&gus, "keyboard-sharing").await;

    assert!(tab_to(&gus, "leave").await, "Tab reaches Leave\n{}", m.report(&all).await);
    press(&gus, "Enter", "Enter", 13).await;
    m.expect(&gus, "document.getElementById('status').textContent === 'You left the meeting.'", "Enter leaves", &all)
        .await;
}

/// Breakout rooms from the page: the host creates one room for the two participants, opens it
/// (their pages move, and their media follows: they see each other, not the host, who is
/// alone), broadcasts, and closes with the 10 s countdown: everyone is back, host included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakout_rooms_move_pages_and_their_media_and_bring_everyone_back() {
    let chromium = Chromium::launch();
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite)).await;
    let (host_id, host_token) = node.user("host@example.com", "Hannah Host").await;
    let (gus, gus_token) = node.user("gus@example.com", "Gus Guest").await;
    let (ada, ada_token) = node.user("ada@example.com", "Ada").await;
    let id = id_of(
        &create_meeting(
            &node,
            &host_token,
            json!({"title": "Breakouts", "meeting_type": "instant", "duration_minutes": 30,
                   "settings": {"waiting_room": false}}),
        )
        .await,
        "meeting_id",
    );
    let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
    let m = Meeting { node, cdp, chromium, id };
    let host = m.open(&host_token, "Hannah Host", "host").await;
    m.expect(&host, "window.parley.state().joined", "the host's page joins", &[&host]).await;
    let gus_page = m.open(&gus_token, "Gus Guest", "gus").await;
    let ada_page = m.open(&ada_token, "Ada", "ada").await;
    let all = [&host, &gus_page, &ada_page];
    let sees = |user: Uuid| format!("window.parley.state().remoteTiles.includes('{user}:camera')");
    for (page, other) in [(&host, gus), (&host, ada), (&gus_page, ada), (&gus_page, host_id)] {
        m.expect(page, &sees(other), "everyone sees everyone in the main room", &all).await;
    }

    host.eval("document.getElementById('bo-count').value = '1'; document.getElementById('bo-create').click()")
        .await
        .expect("create rooms");
    m.expect(&host, "!document.getElementById('bo-open').hidden", "rooms created", &all).await;
    save_screenshots(&host, "breakouts-created").await;
    host.eval("document.getElementById('bo-open').click()").await.expect("open rooms");
    for page in [&gus_page, &ada_page] {
        m.expect(
            page,
            "document.getElementById('room-name').textContent === 'Breakout room 1'",
            "moved to room 1",
            &all,
        )
        .await;
    }
    m.expect(&gus_page, &format!("{} && !{}", sees(ada), sees(host_id)), "Gus sees Ada, not the host", &all).await;
    m.expect(&host, "window.parley.state().remoteTiles.length === 0", "the host is alone in the main room", &all).await;
    m.expect(
        &gus_page,
        &format!("window.parley.framesDecodedOf('{ada}:camera').then(n => n > 0)"),
        "Gus decodes Ada in the room",
        &all,
    )
    .await;
    save_screenshots(&gus_page, "breakout-room").await;

    host.eval("document.getElementById('bo-text').value = 'two minutes left'; document.getElementById('bo-broadcast-form').requestSubmit()")
        .await
        .expect("broadcast");
    m.expect(
        &ada_page,
        "document.getElementById('toasts').textContent.includes('to every room: two minutes left')",
        "the broadcast reaches the room",
        &all,
    )
    .await;

    host.eval("document.getElementById('bo-close').click()").await.expect("close rooms");
    m.expect(
        &ada_page,
        "document.getElementById('toasts').textContent.includes('close in 10 seconds')",
        "the countdown",
        &all,
    )
    .await;
    if !gus_page.wait_for("document.getElementById('room-banner').hidden", Duration::from_secs(20)).await {
        panic!("Gus is back in the main room after the countdown\n{}", m.report(&all).await);
    }
    for (page, other) in [(&host, gus), (&host, ada), (&gus_page, host_id)] {
        m.expect(page, &sees(other), "everyone sees everyone again", &all).await;
    }
    save_screenshots(&host, "breakouts-closed").await;
}

/// The join link alone: a guest opens `/j/{id}`, gives a name and is in (the page asks the
/// node for a guest token; nobody minted one by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_joins_from_the_link_with_a_name_only() {
    let chromium = Chromium::launch();
    let node = TestNode::start_with(NodeOptions::new(Backend::Sqlite)).await;
    let (_, host_token) = node.user("host@example.com", "Hannah Host").await;
    let id = id_of(
        &create_meeting(
            &node,
            &host_token,
            json!({"title": "Link only", "meeting_type": "instant", "duration_minutes": 30,
                   "settings": {"waiting_room": false}}),
        )
        .await,
        "meeting_id",
    );
    let cdp = Arc::new(Cdp::connect(&chromium.ws_url).await);
    let m = Meeting { node, cdp, chromium, id };
    let host = m.open(&host_token, "Hannah Host", "host").await;
    m.expect(&host, "window.parley.state().joined", "the host's page joins", &[&host]).await;
    let link = format!("{}/j/{id}", m.node.base);
    let guest = Page::open(&m.cdp, &link, "guest").await;
    let all = [&host, &guest];
    m.expect(
        &guest,
        &format!("document.getElementById('meeting-id').value === '{id}'"),
        "the link fills the meeting",
        &all,
    )
    .await;
    // Before joining: a preview of the camera, and the devices to choose from.
    guest.gesture("document.getElementById('preview-start').click()").await.expect("preview");
    m.expect(
        &guest,
        "document.getElementById('preview').videoWidth > 0 && document.getElementById('cam-select').options.length >= 1 \
         && document.getElementById('mic-select').options.length >= 1",
        "the preview shows the camera and lists the devices",
        &all,
    )
    .await;
    save_screenshots(&guest, "pre-join-preview").await;
    // No name: the page says what it needs and asks nothing of the node.
    guest.eval("document.getElementById('join-button').click()").await.expect("join without a name");
    m.expect(
        &guest,
        "document.getElementById('toasts').textContent.includes('give your name')",
        "asks for a name",
        &all,
    )
    .await;
    guest
        .eval("document.getElementById('display-name').value = 'Gwen Guest'; document.getElementById('join-button').click()")
        .await
        .expect("join as a guest");
    m.expect(&guest, "window.parley.state().joined", "the guest is in", &all).await;
    m.expect(
        &guest,
        "document.getElementById('preview').hidden && document.querySelector('.tile.local video').videoWidth > 0",
        "the previewed camera is the one in the meeting",
        &all,
    )
    .await;
    m.expect(
        &host,
        "[...document.querySelectorAll('#people .name')].some(n => n.textContent === 'Gwen Guest')",
        "the host sees the guest by name",
        &all,
    )
    .await;
    save_screenshots(&guest, "guest-from-the-link").await;
}
