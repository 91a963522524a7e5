//! What a track carries: [`MediaKind`] and the [`Codec`]s Parley forwards, with what the stack
//! needs of them (MIME type, the codec registered for an outgoing track, the payload type a
//! negotiation gave it). Used by the connection types ([`crate::track`]), the peer adapter, the
//! shared socket's driver and the forwarder alike.

use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use serde::{Deserialize, Serialize};

use crate::sdp::H264_FMTP;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub(crate) fn from_rtc(kind: RtpCodecKind) -> Self {
        match kind {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }
}

/// Codecs an outgoing track can carry (the ones Parley forwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    Vp8,
    /// Forwarded when a publisher offers only H.264 (VP8 is preferred when it offers both).
    H264,
    Opus,
}

/// Sentinel for "no payload type negotiated yet".
pub(crate) const NO_PAYLOAD_TYPE: u16 = u16::MAX;

impl Codec {
    /// Audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Vp8 | Codec::H264 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }

    /// RTP clock rate in Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Vp8 | Codec::H264 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// The codec of a MIME type (case-insensitive); `None` for codecs Parley does not forward.
    pub fn from_mime(mime: &str) -> Option<Codec> {
        [Codec::Vp8, Codec::H264, Codec::Opus].into_iter().find(|c| c.mime_type().eq_ignore_ascii_case(mime))
    }

    /// Whether this RTP payload starts a frame a decoder can begin with (always false for audio).
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => crate::vp8::is_keyframe(payload),
            Codec::H264 => crate::h264::is_keyframe(payload),
            Codec::Opus => false,
        }
    }

    pub(crate) fn mime_type(self) -> &'static str {
        match self {
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => MIME_TYPE_H264,
            Codec::Opus => MIME_TYPE_OPUS,
        }
    }

    /// The payload type negotiated for this codec among `codecs` (an RTP sender's parameters):
    /// the first of its MIME type, for H.264 the first non-interleaved one (our packets are
    /// FU-A/STAP-A, which packetization-mode 0 does not allow).
    pub(crate) fn payload_type_in(self, codecs: &[RTCRtpCodecParameters]) -> u16 {
        let same = |c: &&RTCRtpCodecParameters| c.rtp_codec.mime_type.eq_ignore_ascii_case(self.mime_type());
        let fits = |c: &&RTCRtpCodecParameters| {
            self != Codec::H264 || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
        };
        codecs
            .iter()
            .filter(same)
            .find(fits)
            .or_else(|| codecs.iter().find(same))
            .map_or(NO_PAYLOAD_TYPE, |c| u16::from(c.payload_type))
    }

    /// The codec as `register_forwarded_codecs` registers it, so the sender finds it.
    pub(crate) fn rtc_codec(self) -> RTCRtpCodec {
        match self {
            Codec::Vp8 => RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            Codec::H264 => RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: H264_FMTP.to_owned(),
                rtcp_feedback: vec![],
            },
            Codec::Opus => RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_known_by_mime_type_whatever_the_case() {
        assert_eq!(Codec::from_mime("video/VP8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("video/h264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime("AUDIO/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/VP9"), None, "not forwarded");
        for c in [Codec::Vp8, Codec::H264, Codec::Opus] {
            assert_eq!(Codec::from_mime(c.mime_type()), Some(c));
            assert_eq!(Codec::from_mime(&c.rtc_codec().mime_type), Some(c), "registered as itself");
            assert_eq!(c.rtc_codec().clock_rate, c.clock_rate());
        }
        assert_eq!(
            (Codec::Vp8.kind(), Codec::H264.kind(), Codec::Opus.kind()),
            (MediaKind::Video, MediaKind::Video, MediaKind::Audio)
        );
        assert_eq!((Codec::Vp8.clock_rate(), Codec::Opus.clock_rate()), (90_000, 48_000));
        assert_eq!(Codec::H264.rtc_codec().sdp_fmtp_line, H264_FMTP);
        assert!(!Codec::Opus.is_keyframe(&[0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]), "audio has no keyframes");
    }

    #[test]
    fn the_payload_type_is_the_first_of_the_codec_and_for_h264_a_non_interleaved_one() {
        let param = |mime: &str, fmtp: &str, pt: u8| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec { mime_type: mime.into(), sdp_fmtp_line: fmtp.into(), ..Default::default() },
            payload_type: pt,
        };
        let codecs = [
            param("video/rtx", "apt=96", 97),
            param("video/VP8", "", 96),
            param("video/vp8", "", 98),
            param("video/H264", "packetization-mode=0;profile-level-id=42e01f", 100),
            param("video/H264", "packetization-mode=1;profile-level-id=42e01f", 102),
        ];
        assert_eq!(Codec::Vp8.payload_type_in(&codecs), 96);
        assert_eq!(Codec::H264.payload_type_in(&codecs), 102);
        assert_eq!(Codec::H264.payload_type_in(&codecs[..4]), 100, "mode 0 if that is all there is");
        assert_eq!(Codec::Opus.payload_type_in(&codecs), NO_PAYLOAD_TYPE, "not negotiated");
        assert_eq!(Codec::Vp8.payload_type_in(&[]), NO_PAYLOAD_TYPE);
    }
}
