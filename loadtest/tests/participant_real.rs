//! A `Participant` publishing real media, as the integration tests and `parley loadtest
//! --record` use it, against a stand-in for the node: a WebSocket that answers `start` and
//! `offer` (with a plain webrtc-rs peer that keeps what it receives). Media flows from
//! `connect_media` on; `publish` takes the sending over without a gap or a doubled packet;
//! what arrived decodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{check_received, gathered_sdp, in_order, peer, require};
use futures_util::{SinkExt, StreamExt};
use parley_loadtest::{Api, Participant, Publish, Rates, RealMedia};
use rtc::rtp;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::RTCSessionDescription;

type Received = mpsc::UnboundedReceiver<(bool, rtp::Packet)>;

/// Serves one WebSocket at `127.0.0.1:<port>`: `start` → joined, `offer` → an answer from a
/// receiving peer, anything else → done.
async fn fake_node() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut server = peer(Some(tx)).await;
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let req: Value = serde_json::from_str(&text).unwrap();
            let mut reply = json!({"reply_to": req["id"], "ok": true, "result": "done"});
            match req["type"].as_str() {
                Some("start") => reply["result"] = json!("joined"),
                Some("offer") => {
                    let offer = req["sdp"].as_str().unwrap().to_owned();
                    server.pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap()).await.unwrap();
                    let answer = server.pc.create_answer(None).await.unwrap();
                    server.pc.set_local_description(answer).await.unwrap();
                    reply["result"] = json!("answer");
                    reply["sdp"] = json!(gathered_sdp(&mut server).await);
                }
                _ => {}
            }
            ws.send(Message::text(reply.to_string())).await.unwrap();
        }
        let _ = server.pc.close().await;
    });
    (base, rx)
}

/// What arrives over `d`: (VP8, Opus) packets.
async fn collect(rx: &mut Received, d: Duration) -> (Vec<rtp::Packet>, Vec<rtp::Packet>) {
    let deadline = tokio::time::Instant::now() + d;
    let (mut vp8, mut opus) = (Vec::new(), Vec::new());
    while let Ok(Some((video, p))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if video { vp8.push(p) } else { opus.push(p) }
    }
    (vp8, opus)
}

/// Sequence numbers run on by one, and the timestamps by `step` per frame (after a marker; for
/// audio, `every` packet).
fn contiguous(packets: &[rtp::Packet], step: u32, every: bool, what: &str) {
    for w in packets.windows(2) {
        assert_eq!(w[1].header.sequence_number, w[0].header.sequence_number.wrapping_add(1), "{what}: a gap");
        let dt = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
        let want = if every || w[0].header.marker { step } else { 0 };
        assert_eq!(dt, want, "{what}: timestamp step after seq {}", w[0].header.sequence_number);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_with_real_media_sends_from_connect_and_publish_takes_over_seamlessly() {
    require("ffmpeg", "-version");
    let media = Arc::new(RealMedia::generate(2, 320, 240, "participant").expect("ffmpeg encodes"));
    let (base, mut rx) = fake_node().await;
    let api = Api::new(&base, b"secret");
    let mut p = Participant::join(&api, uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), true).await.unwrap();
    assert!(
        p.connect_media(Publish::SIMULCAST_CAMERA_AND_MIC.with_real_media(media.clone())).await.is_err(),
        "real media is one layer"
    );
    p.connect_media(Publish::CAMERA_AND_MIC.with_real_media(media.clone())).await.unwrap();

    // Without `publish`: media flows once connected, as a browser's would.
    let (mut vp8, mut opus) = collect(&mut rx, Duration::from_millis(1200)).await;
    assert!(vp8.len() > 20 && opus.len() > 30, "sending since connect: {} VP8, {} Opus", vp8.len(), opus.len());

    // `publish` takes over (and counts); the streams carry on.
    let publisher = p.publish(Rates::default());
    publisher.measure();
    let (v, a) = collect(&mut rx, Duration::from_millis(1500)).await;
    vp8.extend(v);
    opus.extend(a);
    let (sent_video, sent_audio) = publisher.sent();
    assert!(sent_video > 40 && sent_audio > 60, "counted: {sent_video} VP8, {sent_audio} Opus");
    publisher.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while rx.try_recv().is_ok() {}
    let (after, _) = collect(&mut rx, Duration::from_millis(300)).await;
    assert!(after.is_empty(), "stop stops: {} packets after", after.len());
    p.leave().await;

    let (vp8, opus) = (in_order(vp8), in_order(opus));
    contiguous(&vp8, media.frame_ticks, false, "VP8");
    contiguous(&opus, 960, true, "Opus");
    let frames = check_received(&media, &vp8, &opus, true);
    assert!(frames >= 70, "≈ 80 frames arrived whole, got {frames}");
}
