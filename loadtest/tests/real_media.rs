//! What a real-media publisher sends decodes: two webrtc-rs peers back to back in this process
//! (no node) — one sending `RealMedia` as the load tester does, one plain receiving peer
//! connection — then the received RTP, depacketized into IVF and Ogg, goes through ffmpeg.

// Test helpers may unwrap too (clippy.toml allows it in `#[test]` functions only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{check_received, gathered_sdp, in_order, peer, require};
use parley_loadtest::real::{self, RealMedia};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCSessionDescription;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_real_media_publisher_sends_decodes() {
    require("ffmpeg", "-version");
    let media = Arc::new(RealMedia::generate(2, 320, 240, "back to back").expect("ffmpeg encodes"));
    // What ffmpeg made: 60 frames at 30 fps, a keyframe every 30 (the loop point is one).
    assert_eq!(media.frames.len(), 60);
    let keys: Vec<usize> = media.frames.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
    assert_eq!(keys, [0, 30]);
    assert_eq!((media.width, media.height, media.frame_ticks), (320, 240, 3000));
    assert!(media.audio.iter().all(|p| p.samples == 960), "20 ms Opus packets");
    let audio_ms = media.audio_duration().as_millis();
    assert!((1900..=2100).contains(&audio_ms), "≈ 2 s of audio, got {audio_ms} ms");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sender = peer(None).await;
    let mut receiver = peer(Some(tx)).await;
    let (video, video_ssrc) = real::local_track("pub", "pub-camera", RtpCodecKind::Video);
    let (audio, audio_ssrc) = real::local_track("pub", "pub-microphone", RtpCodecKind::Audio);
    sender.pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.unwrap();
    sender.pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await.unwrap();

    let offer = sender.pc.create_offer(None).await.unwrap();
    sender.pc.set_local_description(offer).await.unwrap();
    let offer = gathered_sdp(&mut sender).await;
    receiver.pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap()).await.unwrap();
    let answer = receiver.pc.create_answer(None).await.unwrap();
    receiver.pc.set_local_description(answer).await.unwrap();
    let answer = gathered_sdp(&mut receiver).await;
    sender.pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
    for p in [&mut sender, &mut receiver] {
        tokio::time::timeout(Duration::from_secs(10), p.connected.wait_for(|c| *c))
            .await
            .expect("the peers connect")
            .unwrap();
    }

    let _video = real::send(video, video_ssrc, RtpCodecKind::Video, media.clone());
    let _audio = real::send(audio, audio_ssrc, RtpCodecKind::Audio, media.clone());
    // 2.5 s from the first packet: past the 2 s loop point, so the loop is decoded too.
    let (mut vp8, mut opus) = (Vec::new(), Vec::new());
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("media arrives").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut next = Some(first);
    while let Some((is_video, p)) = next {
        if is_video {
            vp8.push(p)
        } else {
            opus.push(p)
        }
        next = tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten();
    }
    let _ = sender.pc.close().await;
    let _ = receiver.pc.close().await;

    let vp8 = in_order(vp8);
    let opus = in_order(opus);
    assert!(vp8.len() > 60, "≈ 75 frames of video, got {} packets", vp8.len());
    assert!(opus.len() > 100, "≈ 125 Opus packets, got {}", opus.len());
    // One RTP timestamp per frame, 3000 apart; the marker ends each frame.
    let mut stamps: Vec<u32> = vp8.iter().filter(|p| p.header.marker).map(|p| p.header.timestamp).collect();
    stamps.dedup();
    assert!(stamps.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 3000), "video timestamps step by 3000");
    assert!(opus.windows(2).all(|w| w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) == 960));

    let frames = check_received(&media, &vp8, &opus, false);
    assert!(frames >= 60, "≥ 60 whole frames arrived, got {frames}");
}

#[test]
fn speech_from_files_is_read_with_multi_packet_pages() {
    require("ffmpeg", "-version");
    if Command::new("espeak-ng").arg("--version").output().is_err() {
        eprintln!("espeak-ng not installed: skipping the speech half of this test");
        return;
    }
    let dir = std::env::temp_dir().join(format!("parley-real-speech-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (wav, ogg, ivf) = (dir.join("s.wav"), dir.join("s.ogg"), dir.join("v.ivf"));
    let ok = Command::new("espeak-ng").arg("-w").arg(&wav).arg("Parley records this meeting.").status().unwrap();
    assert!(ok.success());
    // ffmpeg's default Ogg pages hold many packets (up to 1 s).
    let ok = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(&wav)
        .args(["-ar", "48000", "-c:a", "libopus", "-f", "ogg"])
        .arg(&ogg)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-t", "1"])
        .args(["-c:v", "libvpx", "-g", "30", "-f", "ivf"])
        .arg(&ivf)
        .status()
        .unwrap();
    assert!(ok.success());
    let m = RealMedia::from_files(&ivf, &ogg).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&wav)
        .output()
        .unwrap();
    let wav_s: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap();
    let got = m.audio_duration().as_secs_f64();
    assert!((got - wav_s).abs() < 0.1, "the Opus packets last as long as the speech: {got} s vs {wav_s} s");
    assert_eq!(m.frames.len(), 30);
    let _ = std::fs::remove_dir_all(&dir);
}
