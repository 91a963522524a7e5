//! What Parley reads from SDP text itself, and the SDP names it registers (pure: strings in,
//! values out). The negotiation proper is the WebRTC stack's ([`crate::peer`]); these are the
//! few facts the node takes from an offer or a description without it.
//!
//! - [`extmap_id`]: the id a description gives a header extension (the audio level's, read
//!   after every negotiation).
//! - [`sending_track_ids`]: the tracks a client's offer still sends (the router unpublishes
//!   the others at once).
//! - [`dtls_fingerprint`]: which certificate, hence which client connection, an offer is from.
//! - [`ice_ufrags`]: the local ICE username fragments of a description (how the shared socket
//!   knows a connection's datagrams).
//! - [`simulcast_layer`]: the simulcast layer a stream's RID (`a=rid`) names.

use std::collections::HashSet;

use rtc::sdp::SessionDescription;

use crate::layers::Layer;

/// Audio level header extension (RFC 6464), registered so browsers send it; read into
/// [`IncomingRtp::audio_level`](crate::track::IncomingRtp::audio_level).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Header extensions that tell a track's simulcast layers apart (their SSRCs are not signalled):
/// the m-section's mid and the layer's RID.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub(crate) const REPAIRED_RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// The H.264 format our outgoing H.264 tracks announce: constrained baseline, non-interleaved
/// (FU-A/STAP-A allowed). Forwarded streams keep whatever profile the publisher encoded;
/// receivers decode by the stream's own SPS.
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// The one-byte extension id (1..=14) mapped to `uri` in an SDP (`a=extmap:<id>[/dir] <uri>`).
pub fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().filter_map(|l| l.trim().strip_prefix("a=extmap:")).find_map(|rest| {
        let mut parts = rest.split_whitespace();
        let id = parts.next()?.split('/').next()?.parse::<u8>().ok()?;
        (parts.next()? == uri && (1..=14).contains(&id)).then_some(id)
    })
}

/// The msid track ids an SDP offers to send (media sections that are `sendrecv`/`sendonly`
/// and not rejected).
pub fn sending_track_ids(sdp: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for section in sdp.split("\nm=").skip(1) {
        let rejected = section.split_whitespace().nth(1) == Some("0");
        let mut sends = true;
        let mut tracks = Vec::new();
        for line in section.lines().map(str::trim) {
            match line {
                "a=recvonly" | "a=inactive" => sends = false,
                _ => {
                    if let Some(msid) = line.strip_prefix("a=msid:")
                        && let Some(track) = msid.split_whitespace().nth(1)
                    {
                        tracks.push(track.to_owned());
                    }
                }
            }
        }
        if sends && !rejected {
            out.extend(tracks);
        }
    }
    out
}

/// A `mid` that names two media sections of one description (`None`: every mid is unique).
/// Sections without a mid are not compared.
pub fn repeated_mid(desc: &SessionDescription) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    desc.media_descriptions
        .iter()
        .filter_map(|m| m.attribute("mid").flatten())
        .find(|mid| !seen.insert(mid.to_owned()))
        .map(str::to_owned)
}

/// Whether the answer takes up nothing the offer asked for: every section the offer did not
/// stop (port 0) is rejected in the answer (port 0: no codec this server forwards). A partly
/// usable offer is answered, its unusable sections rejected one by one (JSEP), so the client
/// keeps what works.
pub fn nothing_usable(offer: &SessionDescription, answer: &SessionDescription) -> bool {
    let mut asked = offer
        .media_descriptions
        .iter()
        .zip(&answer.media_descriptions)
        .filter(|(o, _)| o.media_name.port.value != 0)
        .peekable();
    asked.peek().is_some() && asked.all(|(_, a)| a.media_name.port.value == 0)
}

/// The first `a=fingerprint:` value of an SDP (session or media level): which certificate,
/// hence which client connection, the SDP belongs to.
pub fn dtls_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=fingerprint:")).map(str::to_owned)
}

/// Every `a=ice-ufrag:` value of an SDP, in order, trimmed (repeated ones as often as they
/// appear: one per media section is usual).
pub fn ice_ufrags(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines().filter_map(|line| line.strip_prefix("a=ice-ufrag:")).map(str::trim)
}

/// The simulcast layer of a stream: `None` without simulcast (no RID), so that such a stream
/// is forwarded whole instead of going through layer selection.
pub fn simulcast_layer(rid: Option<&str>) -> Option<Layer> {
    rid.and_then(|r| Layer::from_rid(Some(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sending_tracks_are_read_from_the_offer() {
        let sdp = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=msid:s cam\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendrecv\r\na=msid:s mic\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\na=msid:s screen\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\na=msid:s old\r\n";
        let got = sending_track_ids(sdp);
        assert_eq!(dtls_fingerprint(sdp), None);
        assert_eq!(
            dtls_fingerprint("v=0\r\na=fingerprint:sha-256 AB:CD\r\nm=audio 9 UDP 111\r\na=fingerprint:sha-256 EF\r\n")
                .as_deref(),
            Some("sha-256 AB:CD")
        );
        assert_eq!(got, ["cam", "mic"].into_iter().map(str::to_owned).collect::<HashSet<_>>());
    }

    #[test]
    fn a_section_without_msid_or_recvonly_sends_nothing_and_no_section_is_no_track() {
        assert!(sending_track_ids("").is_empty());
        assert!(sending_track_ids("v=0\r\ns=-\r\na=msid:s session-level\r\n").is_empty(), "no media section");
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\na=msid:s mic\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:only-a-stream\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s a\r\na=msid:s b\r\n";
        let got = sending_track_ids(sdp);
        // No direction attribute: sendrecv, the default; every msid of the section counts.
        assert_eq!(got, ["a", "b"].into_iter().map(str::to_owned).collect::<HashSet<_>>());
        // Plain `\n` line ends read the same.
        assert_eq!(sending_track_ids("v=0\nm=video 9 RTP 96\na=msid:s cam\n").len(), 1);
    }

    #[test]
    fn a_fingerprint_keeps_its_algorithm_and_loses_trailing_space() {
        assert_eq!(dtls_fingerprint("a=fingerprint:sha-256 01:02  \r\n").as_deref(), Some("sha-256 01:02"));
        assert_eq!(dtls_fingerprint("a=fingerprint-not:x\r\n"), None);
        assert_eq!(dtls_fingerprint(""), None);
    }

    #[test]
    fn extmap_id_finds_the_uri() {
        let sdp = "v=0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:1/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(extmap_id(sdp, AUDIO_LEVEL_URI), Some(1));
        assert_eq!(extmap_id(sdp, MID_URI), Some(3));
        assert_eq!(extmap_id(sdp, "urn:x"), None);
        assert_eq!(extmap_id("a=extmap:99 urn:ietf:params:rtp-hdrext:ssrc-audio-level", AUDIO_LEVEL_URI), None);
        assert_eq!(extmap_id("a=extmap:x urn:ietf:params:rtp-hdrext:ssrc-audio-level", AUDIO_LEVEL_URI), None);
        assert_eq!(extmap_id("a=extmap:", AUDIO_LEVEL_URI), None);
    }

    #[test]
    fn ice_ufrags_are_every_ufrag_line_trimmed() {
        let sdp = "v=0\r\na=ice-ufrag:abcd \r\nm=audio 9 UDP 111\r\na=ice-ufrag:abcd\r\na=ice-pwd:x\r\n\
                   m=video 9 UDP 96\r\na=ice-ufrag:efgh\r\n";
        assert_eq!(ice_ufrags(sdp).collect::<Vec<_>>(), ["abcd", "abcd", "efgh"]);
        assert_eq!(ice_ufrags("v=0\r\n a=ice-ufrag:indented\r\n").count(), 0, "only at a line's start");
    }

    #[test]
    fn a_stream_without_rid_is_no_simulcast_layer() {
        assert_eq!(simulcast_layer(None), None);
        assert_eq!(simulcast_layer(Some("q")), Some(Layer::Low));
        assert_eq!(simulcast_layer(Some("h")), Some(Layer::Mid));
        assert_eq!(simulcast_layer(Some("f")), Some(Layer::High));
        assert_eq!(simulcast_layer(Some("x")), None, "an unknown RID is ignored");
    }

    fn parsed(sdp: &str) -> SessionDescription {
        SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes())).unwrap()
    }

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    #[test]
    fn a_mid_naming_two_sections_is_found() {
        let twice = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
        );
        assert_eq!(repeated_mid(&parsed(&twice)).as_deref(), Some("0"));
        let once = twice.replacen("a=mid:0\r\nm=video", "a=mid:1\r\nm=video", 1);
        assert_eq!(repeated_mid(&parsed(&once)), None);
    }

    #[test]
    fn an_answer_that_rejects_every_asked_section_takes_up_nothing() {
        let offer = parsed(&format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 9\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 34\r\na=mid:1\r\n\
             m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n"
        ));
        let section = |port: u16, mid: u8| format!("m=video {port} UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\n");
        let answer = |a: u16, v: u16| {
            parsed(&format!("{HEAD}m=audio {a} UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{}{}", section(v, 1), section(0, 2)))
        };
        assert!(nothing_usable(&offer, &answer(0, 0)), "both asked sections rejected (the stopped one does not count)");
        assert!(!nothing_usable(&offer, &answer(0, 9)), "video taken up: answered, audio rejected alone");
        assert!(!nothing_usable(&offer, &answer(9, 9)));
    }
}
