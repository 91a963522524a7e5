//! Helpers of the real-media tests: webrtc-rs peers on loopback, received RTP into IVF and
//! Ogg, ffmpeg as the judge.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use parley_loadtest::RealMedia;
use rtc::media::io::Writer;
use rtc::media::io::ivf_reader::IVFFileHeader;
use rtc::media::io::ivf_writer::IVFWriter;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry, register_default_interceptors,
};

/// Fails the test, saying why, unless `ffmpeg` runs.
pub fn require(tool: &str, arg: &str) {
    match Command::new(tool).arg(arg).output() {
        Ok(o) if o.status.success() => {}
        other => panic!("this test needs `{tool}` on PATH (Debian: apt-get install {tool}); running it gave {other:?}"),
    }
}

pub struct Handler {
    pub gathered: watch::Sender<bool>,
    pub connected: watch::Sender<bool>,
    /// Received RTP: (video?, packet).
    pub packets: Option<mpsc::UnboundedSender<(bool, rtp::Packet)>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, _event: RTCPeerConnectionIceEvent) {}

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.connected.send(state == RTCPeerConnectionState::Connected);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(tx) = self.packets.clone() else { return };
        tokio::spawn(async move {
            let video = track.kind().await == RtpCodecKind::Video;
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = event
                    && tx.send((video, p)).is_err()
                {
                    return;
                }
            }
        });
    }
}

pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub gathered: watch::Receiver<bool>,
    pub connected: watch::Receiver<bool>,
}

pub async fn peer(packets: Option<mpsc::UnboundedSender<(bool, rtp::Packet)>>) -> Peer {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let (gathered_tx, gathered) = watch::channel(false);
    let (connected_tx, connected) = watch::channel(false);
    let handler = Handler { gathered: gathered_tx, connected: connected_tx, packets };
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    Peer { pc: Arc::new(pc), gathered, connected }
}

/// Our local description once ICE gathering completed (candidates inside: no trickle).
pub async fn gathered_sdp(p: &mut Peer) -> String {
    tokio::time::timeout(Duration::from_secs(10), p.gathered.wait_for(|g| *g)).await.unwrap().unwrap();
    p.pc.local_description().await.unwrap().sdp
}

/// Sorts packets by (unwrapped) sequence number and drops duplicates (NACK resends).
pub fn in_order(packets: Vec<rtp::Packet>) -> Vec<rtp::Packet> {
    let mut ext = 0i64;
    let mut last: Option<u16> = None;
    let mut keyed: Vec<(i64, rtp::Packet)> = packets
        .into_iter()
        .map(|p| {
            let seq = p.header.sequence_number;
            if let Some(prev) = last {
                ext += i64::from(seq.wrapping_sub(prev) as i16);
            }
            last = Some(seq);
            (ext, p)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.dedup_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// `ffmpeg -v error -i <file> -f null -`: must exit 0 and print nothing.
pub fn decodes(path: &std::path::Path) {
    let out =
        Command::new("ffmpeg").args(["-nostdin", "-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]).output();
    let out = out.expect("ffmpeg runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{} does not decode cleanly ({}): {stderr}",
        path.display(),
        out.status
    );
}

/// VP8 RTP packets (in order) depacketized into an IVF file.
pub fn to_ivf(vp8: &[rtp::Packet], width: u16, height: u16) -> Vec<u8> {
    let header = IVFFileHeader {
        signature: *b"DKIF",
        version: 0,
        header_size: 32,
        four_cc: *b"VP80",
        width,
        height,
        timebase_denominator: 30,
        timebase_numerator: 1,
        num_frames: 0,
        unused: 0,
    };
    let mut buf = Cursor::new(Vec::new());
    {
        let mut ivf = IVFWriter::new(&mut buf, &header).unwrap();
        for p in vp8 {
            ivf.write_rtp(p).unwrap();
        }
        ivf.close().unwrap();
    }
    buf.into_inner()
}

/// Opus RTP packets (in order) into an Ogg Opus file.
pub fn to_ogg(opus: &[rtp::Packet]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut ogg = OggWriter::new(&mut bytes, 48_000, 2).unwrap();
        for p in opus {
            ogg.write_rtp(p).unwrap();
        }
        ogg.close().unwrap();
    }
    bytes
}

/// Writes the received media to files and has ffmpeg decode them; checks that every received
/// frame is a source frame byte for byte, each the one after the last or (`restarts`) frame 0.
/// Returns the frames received.
pub fn check_received(media: &RealMedia, vp8: &[rtp::Packet], opus: &[rtp::Packet], restarts: bool) -> usize {
    let (ivf, ogg) = (to_ivf(vp8, media.width, media.height), to_ogg(opus));
    let back = RealMedia::from_bytes(&ivf, &ogg).expect("what arrived parses as IVF and Ogg Opus");
    let dir = std::env::temp_dir().join(format!("parley-real-media-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ivf_path, ogg_path) = (dir.join("out.ivf"), dir.join("out.ogg"));
    std::fs::write(&ivf_path, &ivf).unwrap();
    std::fs::write(&ogg_path, &ogg).unwrap();
    decodes(&ivf_path);
    decodes(&ogg_path);
    let _ = std::fs::remove_dir_all(&dir);
    // ffmpeg's VP8 decoder is lenient (a keyframe short of a packet decodes without a word),
    // so also: every frame arrived byte for byte as encoded, in order.
    let index = |data: &bytes::Bytes| media.frames.iter().position(|f| f.data == *data);
    let mut at = index(&back.frames[0].data).expect("the first frame received is a source frame");
    for (k, f) in back.frames.iter().enumerate().skip(1) {
        let next = (at + 1) % media.frames.len();
        at = if f.data == media.frames[next].data {
            next
        } else if restarts && f.data == media.frames[0].data {
            0
        } else {
            panic!("received frame {k} is not source frame {next} (after {at}): {:?}", index(&f.data));
        };
    }
    back.frames.len()
}
