//! The SFU through a running node: real WebRTC peers (the load tester's participants, webrtc-rs)
//! exchanging real RTP with the node's media router over loopback, signalled over the real
//! WebSocket.

use std::collections::BTreeMap;
use std::time::Duration;

use parley_integration::{Backend, NodeOptions, TestNode, eventually};
use parley_loadtest::{Api, Participant, Publish, Publisher, Rates};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

async fn media_node() -> (TestNode, Api) {
    media_node_with(NodeOptions::new(Backend::Sqlite)).await
}

async fn media_node_with(options: NodeOptions) -> (TestNode, Api) {
    let node = TestNode::start_with(options.env("PARLEY_LOG", "info,parley_actors=debug")).await;
    let api = Api::new(&node.base, node.secret.as_bytes());
    (node, api)
}

/// The node's `media_transport` (admin view).
async fn media_transport(node: &TestNode) -> Value {
    let (_, v) = node.call(Method::GET, "/api/admin/cluster", Some(&node.admin_token()), None).await;
    v["media_transport"].clone()
}

/// A meeting and `n` users, the first its host.
async fn meeting_with(api: &Api, n: usize) -> (Uuid, Vec<Uuid>) {
    let mut users = Vec::new();
    for i in 0..n {
        users.push(api.create_user(&format!("User {i}")).await.expect("user"));
    }
    let meeting = api.create_meeting(users[0], "media").await.expect("meeting");
    (meeting, users)
}

/// Joins (the host starts) and connects media.
async fn connected(api: &Api, meeting: Uuid, user: Uuid, host: bool, publish: Publish) -> Participant {
    let mut p = Participant::join(api, meeting, user, host).await.expect("join");
    p.connect_media(publish).await.expect("media connects");
    p
}

fn stream(user: Uuid, source: &str) -> String {
    format!("{user}:{source}")
}

/// Packets received per stream.
fn counts(p: &Participant) -> BTreeMap<String, u64> {
    p.received().streams.into_iter().map(|(k, s)| (k, s.packets)).collect()
}

/// What arrived per stream over `window`.
async fn deltas(p: &Participant, window: Duration) -> BTreeMap<String, u64> {
    let before = counts(p);
    tokio::time::sleep(window).await;
    counts(p).into_iter().map(|(k, n)| (k.clone(), n - before.get(&k).copied().unwrap_or(0))).collect()
}

/// Media peers of the node's routers (admin view).
async fn media_peers(node: &TestNode) -> u64 {
    let (_, v) = node.call(Method::GET, "/api/admin/cluster", Some(&node.admin_token()), None).await;
    v["running_here"].as_array().map_or(0, |a| a.iter().filter_map(|m| m["media_peers"].as_u64()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_reaches_every_subscriber_without_loss_and_leaving_mid_stream_is_clean() {
    // The default: one shared port the system picked, a driver thread per core.
    let (node, api) = media_node().await;
    let transport = media_transport(&node).await;
    assert_eq!(transport["mode"], "shared_port", "{transport}");
    assert_ne!(transport["port"].as_u64().unwrap_or(0), 0, "{transport}");
    assert!(transport["threads"].as_u64().unwrap_or(0) >= 1, "{transport}");
    one_publisher_reaches_everyone(&node, &api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_shared_media_port_every_subscriber_gets_every_packet_the_same() {
    let (node, api) = media_node_with(NodeOptions::new(Backend::Sqlite).env("PARLEY_MEDIA_PORT", "0")).await;
    let before = media_transport(&node).await;
    assert_eq!(before["mode"], "shared_port", "{before}");
    let port = before["port"].as_u64().expect("the bound port");
    assert_ne!(port, 0);
    one_publisher_reaches_everyone(&node, &api).await;
    let after = media_transport(&node).await;
    assert_eq!(after["port"].as_u64(), Some(port), "one port throughout");
    let out = after["datagrams_out"].as_u64().unwrap_or(0);
    assert!(out > 1000, "the media went out through the shared socket: {after}");
    assert!(after["send_calls"].as_u64().unwrap_or(0) <= out, "{after}");
    // Forwarded inside the socket driver's turn (received, routed and written to each
    // subscriber's connection with no queue between), not through a per-packet queue.
    let inline = after["forwarded_inline"].as_u64().unwrap_or(0);
    assert!(inline > 1000, "{after}");
    // They had their time in the node measured (recorded once their datagrams are sent, so a
    // reading while media flows may lag the count by a turn).
    let timed: u64 =
        after["forward_latency"]["counts"].as_array().map_or(0, |c| c.iter().filter_map(Value::as_u64).sum());
    assert!(timed > 1000 && timed <= inline, "{timed} timed of {inline}: {after}");
    assert!(
        node.log().contains("one UDP port for every peer"),
        "the node says which transport is in place:\n{}",
        node.log()
    );
}

/// A fan-out wider than the socket driver's early-send batch (each video frame's burst of 4
/// packets becomes 48 copies, sent as they are encrypted, 32 at a time): nothing is lost and
/// each forwarded copy is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_fan_out_on_the_shared_port_reaches_every_subscriber_whole() {
    let (node, api) = media_node_with(NodeOptions::new(Backend::Sqlite).env("PARLEY_MEDIA_PORT", "0")).await;
    const SUBSCRIBERS: usize = 12;
    let (users, _host, subs, media) = one_to(&node, &api, SUBSCRIBERS).await;
    let before = media_transport(&node).await;
    let (video, audio) = every_packet_once(&media, users[0], &subs).await;
    let after = media_transport(&node).await;
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let copies = (video + audio) * SUBSCRIBERS as u64;
    assert!(delta("forwarded_inline") >= copies, "{} inline of {copies} copies: {after}", delta("forwarded_inline"));
    // More datagrams than system calls: sends are still batched, only earlier.
    assert!(delta("datagrams_out") > 2 * delta("send_calls"), "{before}\n{after}");
}

/// A meeting large enough to be spread over the shared port's driver threads (the threshold
/// lowered to 2 here): each thread encrypts its own subscribers' copies, the publisher's driver
/// hands the other thread one batch per packet, and nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_spread_over_the_driver_threads_reaches_every_subscriber_whole() {
    let options = NodeOptions::new(Backend::Sqlite)
        .env("PARLEY_MEDIA_PORT", "0")
        .env("PARLEY_MEDIA_THREADS", "2")
        .env("PARLEY_MEDIA_SPREAD_AT", "2");
    let (node, api) = media_node_with(options).await;
    const SUBSCRIBERS: usize = 8;
    let (users, _host, subs, media) = one_to(&node, &api, SUBSCRIBERS).await;
    let before = media_transport(&node).await;
    assert_eq!(before["threads"], 2, "{before}");
    let per_thread: Vec<u64> =
        before["peers_per_thread"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    assert_eq!(per_thread.iter().sum::<u64>(), SUBSCRIBERS as u64 + 1, "{before}");
    assert!(per_thread.iter().all(|n| *n >= 4), "the meeting is spread evenly: {before}");
    let (video, audio) = every_packet_once(&media, users[0], &subs).await;
    let after = media_transport(&node).await;
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let copies = (video + audio) * SUBSCRIBERS as u64;
    let (inline, across) = (delta("forwarded_inline"), delta("forwarded_across"));
    assert!(inline + across >= copies, "{inline} inline + {across} across of {copies} copies: {after}");
    assert!(across >= copies / 3 && inline >= copies / 3, "both threads forwarded: {before}\n{after}");
    assert_eq!(delta("dropped_across"), 0, "{after}");
    let timed = |v: &Value| {
        v["forward_latency"]["counts"].as_array().map_or(0, |c| c.iter().filter_map(Value::as_u64).sum::<u64>())
    };
    assert!(timed(&after) - timed(&before) >= copies, "every copy timed, whichever thread sent it: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_port_range_each_peer_gets_its_own_port_and_media_flows_the_same() {
    let from = 42_000 + (std::process::id() % 400) as u16 * 50;
    let range = format!("{from}-{}", from + 49);
    let (node, api) = media_node_with(NodeOptions::new(Backend::Sqlite).env("PARLEY_MEDIA_PORTS", range.clone())).await;
    let transport = media_transport(&node).await;
    assert_eq!(transport["mode"], "port_per_peer", "{transport}");
    assert_eq!(transport["port_range"], range.as_str());
    one_publisher_reaches_everyone(&node, &api).await;
}

/// A meeting of one publisher (camera and microphone) and `subscribers` who publish nothing,
/// once every subscriber receives both streams: (users, publisher, subscribers, its media).
async fn one_to(
    node: &TestNode,
    api: &Api,
    subscribers: usize,
) -> (Vec<Uuid>, Participant, Vec<Participant>, Publisher) {
    let (meeting, users) = meeting_with(api, subscribers + 1).await;
    let host = connected(api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let mut subs = Vec::new();
    for u in &users[1..] {
        subs.push(connected(api, meeting, *u, false, Publish::NOTHING).await);
    }
    let media = host.publish(Rates::default());
    let want = [stream(users[0], "camera"), stream(users[0], "microphone")];
    for s in &subs {
        assert!(s.wait_received(WAIT, |r| want.iter().all(|k| r.streams.contains_key(k))).await, "{}", node.log());
    }
    (users, host, subs, media)
}

/// Measures `media` (published by `publisher`) for 2 s, stops it, and checks that each of
/// `subs` received every measured packet once (zero loss on loopback). Returns what was sent:
/// (video, audio).
async fn every_packet_once(media: &Publisher, publisher: Uuid, subs: &[Participant]) -> (u64, u64) {
    media.measure();
    tokio::time::sleep(Duration::from_secs(2)).await;
    media.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (video, audio) = media.sent();
    assert!(video > 150 && audio > 60, "the publisher sent {video} video and {audio} audio packets");
    for s in subs {
        let r = s.received();
        let got = |source: &str| r.streams.get(&stream(publisher, source)).map_or(0, |st| st.measured.distinct());
        assert_eq!(
            (got("camera"), got("microphone")),
            (video, audio),
            "zero loss on loopback, every packet once, for subscriber {}",
            s.user_id
        );
    }
    (video, audio)
}

/// Five participants, two publishing: every subscriber gets every packet; a publisher leaving
/// mid-stream takes its tracks with it and the rest flows on.
async fn one_publisher_reaches_everyone(node: &TestNode, api: &Api) {
    let (node, api) = (node, api.clone());
    let (meeting, users) = meeting_with(&api, 5).await;
    let host = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let second = connected(&api, meeting, users[1], false, Publish::CAMERA_AND_MIC).await;
    let mut subs = Vec::new();
    for u in &users[2..] {
        subs.push(connected(&api, meeting, *u, false, Publish::NOTHING).await);
    }
    assert_eq!(media_peers(node).await, 5);

    let host_media = host.publish(Rates::default());
    let second_media = second.publish(Rates::default());
    let want = [stream(users[0], "camera"), stream(users[0], "microphone"), stream(users[1], "camera")];
    for s in &subs {
        assert!(
            s.wait_received(WAIT, |r| want.iter().all(|k| r.streams.contains_key(k))).await,
            "every subscriber receives both publishers: {:?}\n{}",
            counts(s),
            node.log()
        );
    }
    // Nobody receives themselves.
    assert!(!counts(&host).contains_key(&stream(users[0], "camera")));
    assert!(host.wait_received(WAIT, |r| r.streams.contains_key(&stream(users[1], "camera"))).await);

    every_packet_once(&host_media, users[0], &subs).await;
    for s in &subs {
        let r = s.received();
        assert!(!r.latencies_us.is_empty());
    }

    // The second publisher leaves mid-stream: its tracks go, the others' media goes on.
    let offers_before = subs[0].offers_answered();
    second.leave().await;
    assert!(eventually(WAIT, || async { media_peers(node).await == 4 }).await, "the router closed the leaver's peer");
    assert!(
        eventually(WAIT, || async { subs[0].offers_answered() > offers_before }).await,
        "the server renegotiated the leaver's tracks away"
    );
    drop(second_media);
    let host_media = host.publish(Rates::default());
    let d = deltas(&subs[0], Duration::from_millis(1500)).await;
    assert!(d.get(&stream(users[0], "camera")).copied().unwrap_or(0) > 20, "the host still arrives: {d:?}");
    assert_eq!(d.get(&stream(users[1], "camera")).copied().unwrap_or(0), 0, "nothing of the leaver: {d:?}");
    drop(host_media);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gallery_and_speaker_views_follow_the_audio_levels() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 4).await;
    let quiet = Rates { audio_level: Some(127), ..Rates::default() };
    let loud = Rates { audio_level: Some(5), ..Rates::default() };
    let a = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let b = connected(&api, meeting, users[1], false, Publish::CAMERA_AND_MIC).await;
    let c = connected(&api, meeting, users[2], false, Publish::CAMERA_AND_MIC).await;
    let viewer = connected(&api, meeting, users[3], false, Publish::NOTHING).await;
    // B, second in meeting order, is the one speaking: a speaker view that ignored the levels
    // would show A.
    let _media = [a.publish(quiet), b.publish(loud), c.publish(quiet)];
    let cameras: Vec<String> = users[..3].iter().map(|u| stream(*u, "camera")).collect();
    assert!(
        viewer.wait_received(WAIT, |r| cameras.iter().all(|k| r.streams.contains_key(k))).await,
        "gallery (the default) shows every camera: {:?}",
        counts(&viewer)
    );
    let speaker_event = |p: &Participant| {
        p.events().iter().rev().find(|e| e["event"] == "active_speaker").map(|e| e["user_id"].clone())
    };
    assert!(
        eventually(WAIT, || async { speaker_event(&viewer) == Some(json!(users[1])) }).await,
        "active_speaker names B from the RTP audio levels; events: {:?}",
        viewer.events().iter().filter(|e| e["event"] != "ice_candidate").collect::<Vec<_>>()
    );
    assert_eq!(speaker_event(&a), Some(json!(users[1])), "everyone hears who speaks");

    viewer.subscribe("speaker", None).await.expect("subscribe speaker");
    // Let the renegotiation settle, then look at what flows.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = deltas(&viewer, Duration::from_millis(1500)).await;
    let got = |d: &BTreeMap<String, u64>, u: Uuid, source: &str| d.get(&stream(u, source)).copied().unwrap_or(0);
    assert!(got(&d, users[1], "camera") > 20, "speaker view: B's camera: {d:?}");
    assert_eq!(got(&d, users[0], "camera") + got(&d, users[2], "camera"), 0, "speaker view: only B's camera: {d:?}");
    assert!(users[..3].iter().all(|u| got(&d, *u, "microphone") > 20), "audio from everyone: {d:?}");

    viewer.subscribe("gallery", None).await.expect("subscribe gallery");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = deltas(&viewer, Duration::from_millis(1500)).await;
    assert!(users[..3].iter().all(|u| got(&d, *u, "camera") > 20), "gallery again: every camera: {d:?}");

    // Only the loudest one's audio.
    viewer.subscribe("gallery", Some(1)).await.expect("subscribe loudest 1");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = deltas(&viewer, Duration::from_millis(1500)).await;
    assert!(got(&d, users[1], "microphone") > 20, "the loudest is heard: {d:?}");
    assert_eq!(got(&d, users[0], "microphone") + got(&d, users[2], "microphone"), 0, "only the loudest: {d:?}");
    drop(node);
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("(ok)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signalling_gets_clear_errors_and_vanished_peers_are_released() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 3).await;
    let host = Participant::join(&api, meeting, users[0], true).await.expect("start");
    let s = &host.signal;

    // Out of order: nothing to answer, no connection for candidates or views yet.
    let cand = json!({"type": "ice_candidate", "candidate": {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}});
    assert_eq!(code(&s.request(cand.clone()).await.unwrap()), "negotiation_state");
    assert_eq!(code(&s.request(json!({"type": "answer", "sdp": "v=0\r\n"})).await.unwrap()), "negotiation_state");
    assert_eq!(code(&s.request(json!({"type": "subscribe", "view": "speaker"})).await.unwrap()), "negotiation_state");
    // Malformed SDP: refused before the router, and by the router; no peer is kept.
    assert_eq!(code(&s.request(json!({"type": "offer", "sdp": "hello"})).await.unwrap()), "invalid_sdp");
    let no_media = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let r = s.request(json!({"type": "offer", "sdp": no_media})).await.unwrap();
    assert_eq!(code(&r), "invalid_sdp", "{r}");
    let cut = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    let r = s.request(json!({"type": "offer", "sdp": cut})).await.unwrap();
    assert_eq!(code(&r), "invalid_sdp", "{r}");
    assert_eq!(code(&s.request(json!({"type": "subscribe", "view": "mosaic"})).await.unwrap()), "invalid_field");
    assert_eq!(media_peers(&node).await, 0, "refused offers leave no peer behind");

    // Not in a meeting at all.
    let (outsider, _) = parley_loadtest::Signal::connect(&api, &api.token(&users[2].to_string(), false)).await.unwrap();
    let r = outsider.request(json!({"type": "offer", "sdp": no_media})).await.unwrap();
    assert_eq!(code(&r), "not_in_meeting", "{r}");

    // A good offer after the bad ones works.
    let mut host = host;
    host.connect_media(Publish::CAMERA_AND_MIC).await.expect("media after refused offers");
    let guest = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    let _media = host.publish(Rates::default());
    assert!(guest.wait_received(WAIT, |r| r.streams.len() == 2).await, "{:?}", counts(&guest));
    assert_eq!(media_peers(&node).await, 2);
    // A second offer while the server's offer is unanswered is a glare: refused, not applied.
    // (Not provoked here: the loader answers server offers at once.)

    // The guest vanishes: its socket drops without `leave`, its peer connection is never
    // closed. The router lets go of its peer anyway.
    guest.signal.close();
    assert!(
        eventually(WAIT, || async { media_peers(&node).await == 1 }).await,
        "the vanished guest's peer is released: {}",
        media_peers(&node).await
    );
    host.leave().await;
    assert!(eventually(WAIT, || async { media_peers(&node).await == 0 }).await, "no peer left");
    drop(guest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_share_start_and_stop_renegotiate_both_ways() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 2).await;
    let mut sharer = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let viewer = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    let _camera = sharer.publish(Rates::default());
    let screen = stream(users[0], "screen");
    assert!(viewer.wait_received(WAIT, |r| r.streams.contains_key(&stream(users[0], "camera"))).await);

    // Start: the client offers a third track named `screen`; the server answers, then offers
    // the viewer a new track.
    let offers_before = viewer.offers_answered();
    sharer.share_screen().await.expect("share screen");
    let _screen_media = sharer.publish_sources(&["screen"], Rates::default());
    assert!(
        viewer.wait_received(WAIT, |r| r.streams.contains_key(&screen)).await,
        "the viewer receives the screen: {:?}\n{}",
        counts(&viewer),
        node.log()
    );
    assert!(viewer.offers_answered() > offers_before, "the server renegotiated to add it");
    assert!(eventually(WAIT, || async { viewer.events().iter().any(|e| e["event"] == "screen_share_started") }).await);

    // Stop: the client renegotiates the track away; the viewer's track goes, the camera stays.
    let offers_before = viewer.offers_answered();
    sharer.stop_screen().await.expect("stop screen");
    assert!(
        eventually(WAIT, || async { viewer.offers_answered() > offers_before }).await,
        "the server renegotiated the screen away"
    );
    let d = deltas(&viewer, Duration::from_millis(1500)).await;
    assert_eq!(d.get(&screen).copied().unwrap_or(0), 0, "no more screen: {d:?}");
    assert!(d.get(&stream(users[0], "camera")).copied().unwrap_or(0) > 20, "the camera goes on: {d:?}");
    assert!(viewer.events().iter().any(|e| e["event"] == "screen_share_stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_repair_injected_loss_and_a_new_subscriber_makes_a_pli_reach_the_publisher() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 3).await;
    // One keyframe at the start, then only on request: any later keyframe was asked for.
    let rates = Rates { keyframe_every: u32::MAX, ..Rates::default() };
    let publisher = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let media = publisher.publish(rates);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let camera = stream(users[0], "camera");

    // A subscriber arriving mid-stream (the start keyframe is long gone): once its answer has
    // negotiated the track, the router asks the publisher for a keyframe (PLI). Not asserted:
    // that the newcomer counts the keyframe that answers it. In runs where it was the first
    // packet to reach the newcomer it was not counted (the stack may keep the packet that opens
    // a remote track); with periodic keyframes the newcomer does count them.
    let asked_before = publisher.keyframe_requests();
    let newcomer = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    assert!(
        eventually(WAIT, || async { publisher.keyframe_requests() > asked_before }).await,
        "a PLI reached the publisher\n{}",
        node.log()
    );
    assert!(newcomer.wait_received(WAIT, |r| r.streams.contains_key(&camera)).await);

    // Every 10th video packet this subscriber receives is dropped before its NACK generator;
    // the router resends each from the publisher's packet cache: nothing is missing in the end.
    let lossy = Participant::join(&api, meeting, users[2], false).await.expect("join");
    lossy.inject_receive_loss(10);
    let mut lossy = lossy;
    lossy.connect_media(Publish::NOTHING).await.expect("media");
    assert!(lossy.wait_received(WAIT, |r| r.streams.contains_key(&camera)).await);
    media.measure();
    tokio::time::sleep(Duration::from_secs(2)).await;
    media.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (video, _) = media.sent();
    let got = lossy.received().streams.get(&camera).map_or(0, |s| s.measured.distinct());
    let dropped = lossy.injected_drops();
    assert!(dropped >= video / 12, "loss was injected: {dropped} of {video}");
    assert_eq!(got, video, "every dropped packet was repaired by a NACK retransmission ({dropped} dropped)");
    assert!(
        node.log().contains("NACK answered from the publisher's cache"),
        "the router answered, not the stack (it has no NACK responder)"
    );
    let clean = newcomer.received().streams.get(&camera).map_or(0, |s| s.measured.distinct());
    assert_eq!(clean, video);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_for_packets_never_sent_or_long_gone_is_counted_and_the_stream_goes_on() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 2).await;
    let publisher = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let media = publisher.publish(Rates::default());
    let camera = stream(users[0], "camera");
    let subscriber = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    let camera_packets = |p: &Participant| p.received().streams.get(&camera).map_or(0, |s| s.packets);
    assert!(subscriber.wait_received(WAIT, |r| r.streams.get(&camera).is_some_and(|s| s.packets >= 30)).await);
    let last = subscriber.received().streams[&camera].last_sequence_number;

    // Numbers the router never sent (ahead of the newest) and ones too far behind for its
    // cache: nothing to resend, counted, and nothing else happens.
    let lost = [last.wrapping_add(400), last.wrapping_sub(2_000), last.wrapping_sub(30_000)];
    subscriber.send_nack(&lost).await.expect("nack");
    assert!(
        eventually(WAIT, || async { node.log().contains("NACK not answered: packets no longer cached or never sent") })
            .await,
        "the router counted the NACK it could not answer\n{}",
        node.log()
    );
    let before = camera_packets(&subscriber);
    assert!(
        subscriber.wait_received(WAIT, |r| r.streams.get(&camera).is_some_and(|s| s.packets >= before + 30)).await,
        "video goes on after the NACK"
    );
    assert_eq!(media_peers(&node).await, 2, "no connection was dropped for it");

    // A packet just sent is still cached: the same subscriber's NACK for it is answered.
    let last = subscriber.received().streams[&camera].last_sequence_number;
    subscriber.send_nack(&[last.wrapping_sub(1)]).await.expect("nack");
    assert!(
        eventually(WAIT, || async { node.log().contains("NACK answered from the publisher's cache") }).await,
        "a NACK for a cached packet is answered\n{}",
        node.log()
    );
    media.stop();
}

/// The layer (0 none, 1 `q`, 2 `h`, 3 `f`) of the latest packet of `key` `p` received.
fn last_layer(p: &Participant, key: &str) -> u8 {
    p.received().streams.get(key).map_or(0, |s| s.last_layer)
}

/// Packets of `key` per layer received over `window`.
async fn layer_deltas(p: &Participant, key: &str, window: Duration) -> [u64; 4] {
    let of = |p: &Participant| p.received().streams.get(key).map_or([0; 4], |s| s.by_layer);
    let before = of(p);
    tokio::time::sleep(window).await;
    let after = of(p);
    std::array::from_fn(|i| after[i] - before[i])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bigger_tile_switches_the_simulcast_layer_after_a_pli_and_only_one_layer_flows() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 3).await;
    // Keyframes only at the start and on request: a keyframe of a layer after that was asked for.
    let quiet = Rates { audio_level: Some(127), keyframe_every: u32::MAX, ..Rates::default() };
    let loud = Rates { audio_level: Some(5), ..quiet };
    let host = connected(&api, meeting, users[0], true, Publish::SIMULCAST_CAMERA_AND_MIC).await;
    let other = connected(&api, meeting, users[1], false, Publish::CAMERA_AND_MIC).await;
    let viewer = connected(&api, meeting, users[2], false, Publish::NOTHING).await;
    let _media = [host.publish(loud), other.publish(quiet)];
    let camera = stream(users[0], "camera");

    // Gallery of two cameras: medium tiles (360 px), so the `h` layer.
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 2 }).await,
        "gallery of two: the h layer; received {:?}\n{}",
        viewer.received().streams.get(&camera),
        node.log()
    );
    let d = layer_deltas(&viewer, &camera, Duration::from_secs(1)).await;
    assert!(d[2] > 40 && d[1] + d[3] == 0, "only h flows (q, h, f: {:?})", &d[1..]);

    // Speaker view: the host (the one speaking) in a large tile, so `f`, which starts at a
    // keyframe the router asks the publisher for.
    let asked_f = host.keyframe_requests_for("f");
    viewer.subscribe("speaker", None).await.expect("subscribe speaker");
    assert!(
        eventually(WAIT, || async { host.keyframe_requests_for("f") > asked_f }).await,
        "a PLI for the f layer reached the publisher\n{}",
        node.log()
    );
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 3 }).await,
        "speaker view: the f layer; received {:?}",
        viewer.received().streams.get(&camera)
    );
    let d = layer_deltas(&viewer, &camera, Duration::from_secs(1)).await;
    assert!(d[3] > 80 && d[1] + d[2] == 0, "only f flows after the switch (q, h, f: {:?})", &d[1..]);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_bandwidth_estimate_lowers_the_layer_at_once_and_a_high_one_raises_it_after_a_hold() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 2).await;
    let host = connected(&api, meeting, users[0], true, Publish::SIMULCAST_CAMERA_AND_MIC).await;
    let viewer = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    let _media = host.publish(Rates { keyframe_every: u32::MAX, ..Rates::default() });
    let camera = stream(users[0], "camera");
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 3 }).await,
        "one camera, large tile, no estimate: f; received {:?}\n{}",
        viewer.received().streams.get(&camera),
        node.log()
    );

    // 250 kbit/s: audio (~40) leaves room for q (~120) only, not h (~380).
    let asked_q = host.keyframe_requests_for("q");
    viewer.send_remb(250_000).await.expect("remb");
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 1 }).await,
        "REMB 250 kbit/s: down to q; received {:?}\n{}",
        viewer.received().streams.get(&camera),
        node.log()
    );
    assert!(host.keyframe_requests_for("q") > asked_q, "the switch down asked for a keyframe of q");
    let d = layer_deltas(&viewer, &camera, Duration::from_secs(1)).await;
    assert!(d[1] > 20 && d[2] + d[3] == 0, "only q flows (q, h, f: {:?})", &d[1..]);

    // Plenty again: back up, but only once the estimate has held for the upgrade hold (3 s).
    let raised = std::time::Instant::now();
    viewer.send_remb(10_000_000).await.expect("remb");
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 3 }).await,
        "REMB 10 Mbit/s: back to f; received {:?}",
        viewer.received().streams.get(&camera)
    );
    let took = raised.elapsed();
    assert!(took >= Duration::from_millis(2500), "going up waits for the hold, took {took:?}");
    drop(node);
}

/// Whether 50 more packets of `key` arrive (after a reconnect: the server's offer, the answer
/// and the first packets take their time on a loaded machine).
async fn flows_again(p: &Participant, key: &str) -> bool {
    let before = p.received().streams.get(key).map_or(0, |s| s.packets);
    p.wait_received(WAIT, |r| r.streams.get(key).is_some_and(|s| s.packets >= before + 50)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_or_replaced_while_the_socket_stays_is_released_and_media_resumes() {
    let node = TestNode::start_with(
        NodeOptions::new(Backend::Sqlite)
            .env("PARLEY_LOG", "info,parley_actors=debug")
            .env("PARLEY_MEDIA_DEAD_PEER_SECS", "3"),
    )
    .await;
    let api = Api::new(&node.base, node.secret.as_bytes());
    let (meeting, users) = meeting_with(&api, 3).await;
    let host = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let _media = host.publish(Rates::default());
    let camera = stream(users[0], "camera");
    let mut guest = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    assert!(guest.wait_received(WAIT, |r| r.streams.contains_key(&camera)).await);
    assert_eq!(media_peers(&node).await, 2);

    // The guest's connection goes away, its WebSocket stays. (A webrtc-rs client closing sends
    // the server nothing, so this is the silent-peer path: ICE consent stops, the peer fails
    // after `PARLEY_MEDIA_DEAD_PEER_SECS`.) The router lets the peer go and tells the guest
    // (`media_closed`); the guest is still in the meeting and connects again.
    guest.close_media().await;
    assert!(
        eventually(WAIT, || async { media_peers(&node).await == 1 }).await,
        "the closed peer is released\n{}",
        node.log()
    );
    assert!(
        eventually(WAIT, || async { guest.events().iter().any(|e| e["event"] == "media_closed") }).await,
        "the guest is told its media closed"
    );
    guest.connect_media(Publish::NOTHING).await.expect("media again on the same socket");
    assert!(flows_again(&guest, &camera).await, "media resumes\n{}", node.log());

    // A client that starts a new connection without closing the old one (a page reload that
    // kept its socket): the new one replaces the old, no second peer is kept.
    let mut reloader = connected(&api, meeting, users[2], false, Publish::NOTHING).await;
    assert_eq!(media_peers(&node).await, 3);
    reloader.connect_media(Publish::NOTHING).await.expect("a second connection");
    assert!(flows_again(&reloader, &camera).await, "the new connection gets media\n{}", node.log());
    assert_eq!(media_peers(&node).await, 3, "the old connection's peer was replaced, not kept");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_the_publisher_stops_sending_gives_way_to_the_next_one_down() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 2).await;
    let host = connected(&api, meeting, users[0], true, Publish::SIMULCAST_CAMERA_AND_MIC).await;
    let viewer = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    let media = host.publish(Rates { keyframe_every: u32::MAX, ..Rates::default() });
    let camera = stream(users[0], "camera");
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 3 }).await,
        "a large tile: f; received {:?}\n{}",
        viewer.received().streams.get(&camera),
        node.log()
    );

    // The publisher's f goes quiet (a browser whose uplink shrank): the viewer is moved to h,
    // at a keyframe of h the router asks for, instead of waiting for f forever.
    let asked_h = host.keyframe_requests_for("h");
    media.pause_layer("f", true);
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 2 }).await,
        "f stopped: down to h; received {:?}\n{}",
        viewer.received().streams.get(&camera),
        node.log()
    );
    assert!(host.keyframe_requests_for("h") > asked_h, "the switch asked the publisher for a keyframe of h");
    let d = layer_deltas(&viewer, &camera, Duration::from_secs(1)).await;
    assert!(d[2] > 40, "h flows (q, h, f: {:?})", &d[1..]);

    // f comes back: the viewer returns to it.
    media.pause_layer("f", false);
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 3 }).await,
        "f is back: f again; received {:?}",
        viewer.received().streams.get(&camera)
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_media_router_tells_its_clients_releases_every_peer_and_media_comes_back() {
    let (node, api) = media_node_with(
        NodeOptions::new(Backend::Sqlite).env("PARLEY_MEDIA_PORT", "0").env("PARLEY_FAULT_INJECTION", "1"),
    )
    .await;
    let (meeting, users) = meeting_with(&api, 2).await;
    let mut host = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let media = host.publish(Rates::default());
    let camera = stream(users[0], "camera");
    let mut guest = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    assert!(guest.wait_received(WAIT, |r| r.streams.contains_key(&camera)).await);
    assert_eq!(media_transport(&node).await["peers"], 2);

    let admin = node.admin_token();
    let crash = |actor: &str| format!("/api/admin/meetings/{meeting}/crash?actor={actor}");
    let (status, body) = node.call(Method::POST, &crash("router"), Some(&admin), None).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "an unknown actor is refused: {body}");
    assert_eq!(media_transport(&node).await["peers"], 2, "and nothing happened");
    let (status, body) = node.call(Method::POST, &crash("media_router"), Some(&admin), None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    // Both clients are told, and the crashed router's connections are gone from the shared
    // socket (a router that panics never runs its `post_stop`: its dropped state releases them).
    for p in [&host, &guest] {
        let told = eventually(WAIT, || async {
            p.events().iter().any(|e| e["event"] == "media_closed" && e.to_string().contains("media router restarted"))
        })
        .await;
        assert!(told, "media_closed reaches each client: {:?}\n{}", p.events(), node.log());
    }
    let released =
        eventually(WAIT, || async { media_transport(&node).await["peers"] == 0 && media_peers(&node).await == 0 })
            .await;
    assert!(released, "every connection released: {}\n{}", media_transport(&node).await, node.log());
    assert!(node.log().contains("media router failed"), "the node logs it:\n{}", node.log());

    // The meeting itself went on: the clients offer again, a new router starts, media flows.
    media.stop();
    host.close_media().await;
    guest.close_media().await;
    host.connect_media(Publish::CAMERA_AND_MIC).await.expect("the host connects again");
    let _media = host.publish(Rates::default());
    guest.connect_media(Publish::NOTHING).await.expect("the guest connects again");
    assert!(flows_again(&guest, &camera).await, "media flows through the new router\n{}", node.log());
    assert_eq!(media_transport(&node).await["peers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_offering_only_h264_is_forwarded_as_h264_and_its_layers_switch_at_h264_keyframes() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 2).await;
    // Simulcast H.264 with keyframes only at the start and on request: the viewer gets video
    // only if the router finds an H.264 keyframe of the layer it chose (a VP8 parser finds none).
    let h264_simulcast = Publish { simulcast: true, ..Publish::H264_CAMERA_AND_MIC };
    let host = connected(&api, meeting, users[0], true, h264_simulcast).await;
    let viewer = connected(&api, meeting, users[1], false, Publish::NOTHING).await;
    let asked_f = host.keyframe_requests_for("f");
    let _media = host.publish(Rates { keyframe_every: u32::MAX, ..Rates::default() });
    let camera = stream(users[0], "camera");
    assert!(
        eventually(WAIT, || async { last_layer(&viewer, &camera) == 3 }).await,
        "one camera, large tile: f; received {:?}\n{}",
        viewer.received().streams.get(&camera),
        node.log()
    );
    assert!(host.keyframe_requests_for("f") > asked_f, "the router asked for the f keyframe it started on");
    let got = viewer.received().streams.get(&camera).cloned().expect("the camera");
    assert_eq!(got.codec, "video/H264", "forwarded as what it is");
    // (Not asserted: that the viewer counts that keyframe. webrtc-rs can drop a new remote
    // track's first packet, see `nacks_repair…`; that packets flow at all is the proof.)
    let d = layer_deltas(&viewer, &camera, Duration::from_secs(1)).await;
    assert!(d[3] > 40 && d[1] + d[2] == 0, "only f flows (q, h, f: {:?})", &d[1..]);
    let mic = viewer.received().streams.get(&stream(users[0], "microphone")).map(|s| s.codec.clone());
    assert_eq!(mic.as_deref(), Some("audio/opus"));
    assert!(node.log().contains("codec=H264"), "the node logs the codec it forwards:\n{}", node.log());
}

/// The meeting's state is enforced on the media, whatever the clients send: a muted
/// microphone and a camera a moderator stopped reach nobody (the publishers here keep sending
/// regardless), and breakout rooms see and hear only their own members until they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_stopped_video_and_breakout_rooms_are_enforced_on_the_media() {
    let (node, api) = media_node().await;
    let (meeting, users) = meeting_with(&api, 3).await;
    let host = connected(&api, meeting, users[0], true, Publish::CAMERA_AND_MIC).await;
    let a = connected(&api, meeting, users[1], false, Publish::CAMERA_AND_MIC).await;
    let b = connected(&api, meeting, users[2], false, Publish::CAMERA_AND_MIC).await;
    let media = [host.publish(Rates::default()), a.publish(Rates::default()), b.publish(Rates::default())];
    let all: Vec<String> = users.iter().flat_map(|u| [stream(*u, "camera"), stream(*u, "microphone")]).collect();
    let everyone_else = |me: Uuid| all.iter().filter(move |k| !k.starts_with(&me.to_string())).cloned();
    for (p, me) in [(&host, users[0]), (&a, users[1]), (&b, users[2])] {
        let want: Vec<String> = everyone_else(me).collect();
        assert!(
            p.wait_received(WAIT, |r| want.iter().all(|k| r.streams.contains_key(k))).await,
            "everyone gets everyone else: {:?}",
            counts(p)
        );
    }
    let got = |d: &BTreeMap<String, u64>, u: Uuid, source: &str| d.get(&stream(u, source)).copied().unwrap_or(0);

    // The host mutes A and stops A's camera; A's client goes on sending both.
    host.signal.ok(json!({"type": "mute_participant", "user_id": users[1]})).await.expect("mute A");
    host.signal.ok(json!({"type": "stop_video", "user_id": users[1]})).await.expect("stop A's video");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deltas(&b, Duration::from_millis(1500)).await;
    assert_eq!(got(&d, users[1], "microphone") + got(&d, users[1], "camera"), 0, "A's media is held: {d:?}");
    assert!(got(&d, users[0], "microphone") > 20 && got(&d, users[0], "camera") > 20, "the host's is not: {d:?}");
    media[1].measure();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (video, audio) = media[1].sent();
    assert!(video > 0 && audio > 0, "A kept sending all along: {video} video, {audio} audio packets");
    // A unmutes and turns the camera on again: both flow once more.
    a.signal.ok(json!({"type": "mute", "muted": false})).await.expect("A unmutes");
    a.signal.ok(json!({"type": "video", "on": true})).await.expect("A's camera on");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deltas(&b, Duration::from_millis(1500)).await;
    assert!(got(&d, users[1], "microphone") > 20 && got(&d, users[1], "camera") > 20, "released: {d:?}");

    // Breakout rooms: A and B in room 1, the host stays in the main room.
    let assignments = json!({users[1].to_string(): 1, users[2].to_string(): 1});
    host.signal.ok(json!({"type": "breakouts_create", "assignments": assignments})).await.expect("create");
    // Opening moves everyone assigned into their room.
    host.signal.ok(json!({"type": "breakouts_open"})).await.expect("open");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let da = deltas(&a, Duration::from_millis(1500)).await;
    assert!(got(&da, users[2], "microphone") > 20 && got(&da, users[2], "camera") > 20, "A gets B in room 1: {da:?}");
    assert_eq!(got(&da, users[0], "microphone") + got(&da, users[0], "camera"), 0, "not the main room: {da:?}");
    let dh = deltas(&host, Duration::from_millis(1500)).await;
    assert_eq!(dh.values().sum::<u64>(), 0, "the main room is alone: {dh:?}");
    assert!(node.log().contains("media follows to another room"), "{}", node.log());

    // Closing brings everyone back: the host gets A and B again.
    host.signal.ok(json!({"type": "breakouts_close"})).await.expect("close");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let dh = deltas(&host, Duration::from_millis(1500)).await;
    for u in &users[1..] {
        assert!(got(&dh, *u, "microphone") > 20 && got(&dh, *u, "camera") > 20, "back in the main room: {dh:?}");
    }
}
