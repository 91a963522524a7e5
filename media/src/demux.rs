//! Which peer connection a datagram on the node's one media port belongs to, from its bytes
//! alone (pure; the socket driver in [`crate::socket`] keeps the maps).
//!
//! Every peer shares one UDP port, so the first datagram from a new remote address must say
//! whose it is. It always can: ICE (RFC 8445) makes the client's first packet a STUN binding
//! request whose USERNAME is `<our ufrag>:<their ufrag>`, and every peer gets its own ufrag. From
//! then on the remote address names the peer; DTLS, SRTP and SRTCP carry no such field, so a
//! datagram of those from an unknown address is not ours to guess (RFC 7983 tells the kinds
//! apart by the first byte).

/// STUN magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// STUN header length: type, length, cookie, transaction id.
const HEADER_LEN: usize = 20;
/// The USERNAME attribute.
const ATTR_USERNAME: u16 = 0x0006;
/// Longest USERNAME STUN allows (RFC 5389 §15.3: < 513 bytes).
const MAX_USERNAME: usize = 512;

/// What a datagram on a media port is (RFC 7983 §7, by its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// 0–3: STUN (ICE connectivity checks and consent).
    Stun,
    /// 20–63: DTLS (the handshake that keys SRTP).
    Dtls,
    /// 128–191: RTP or RTCP (SRTP/SRTCP).
    Rtp,
    /// Anything else (TURN channel data, ZRTP, garbage).
    Other,
}

/// Classifies a datagram by its first byte.
pub fn kind(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
        _ => DatagramKind::Other,
    }
}

/// The local (our) ufrag named by a STUN message's USERNAME attribute (`<local>:<remote>`), if
/// `datagram` is a well-formed STUN message that has one. Anything malformed is `None`.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if kind(datagram) != DatagramKind::Stun || datagram.len() < HEADER_LEN || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if body_len % 4 != 0 || HEADER_LEN + body_len > datagram.len() {
        return None;
    }
    let mut attrs = &datagram[HEADER_LEN..HEADER_LEN + body_len];
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            if len > MAX_USERNAME {
                return None;
            }
            let username = std::str::from_utf8(value).ok()?;
            let local = username.split(':').next()?;
            return (!local.is_empty()).then_some(local);
        }
        // Attributes are padded to a multiple of 4 bytes.
        let padded = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with the given attributes (type, value), padded as STUN pads.
    fn stun(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn the_local_ufrag_is_read_from_username_after_other_attributes() {
        // PRIORITY (0x0024) first, then USERNAME with a length that needs padding.
        let msg = stun(&[(0x0024, &[0, 0, 0, 1]), (ATTR_USERNAME, b"abcdefgh:xyz"), (0x0008, &[0; 20])]);
        assert_eq!(stun_local_ufrag(&msg), Some("abcdefgh"));
        let odd = stun(&[(0x8029, &[1; 8]), (ATTR_USERNAME, b"ufrag1:remote5")]);
        assert_eq!(stun_local_ufrag(&odd), Some("ufrag1"));
    }

    #[test]
    fn malformed_or_foreign_datagrams_name_no_peer() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&stun(&[(0x0024, &[0, 0, 0, 1])])), None, "no USERNAME");
        assert_eq!(stun_local_ufrag(&stun(&[(ATTR_USERNAME, b":remote")])), None, "empty local part");
        assert_eq!(stun_local_ufrag(&stun(&[(ATTR_USERNAME, &[0xff, 0xfe])])), None, "not UTF-8");
        let mut bad_cookie = stun(&[(ATTR_USERNAME, b"a:b")]);
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
        let mut truncated = stun(&[(ATTR_USERNAME, b"abcd:efgh")]);
        truncated.truncate(truncated.len() - 4);
        assert_eq!(stun_local_ufrag(&truncated), None, "declared length beyond the datagram");
        let mut overlong_attr = stun(&[(ATTR_USERNAME, b"abcd:efgh")]);
        overlong_attr[HEADER_LEN + 3] = 200;
        assert_eq!(stun_local_ufrag(&overlong_attr), None, "attribute longer than the message");
        let mut rtp = stun(&[(ATTR_USERNAME, b"a:b")]);
        rtp[0] = 0x80;
        assert_eq!(stun_local_ufrag(&rtp), None, "RTP is never STUN");
    }

    #[test]
    fn kinds_follow_rfc_7983() {
        assert_eq!(kind(&[0x00, 0x01]), DatagramKind::Stun);
        assert_eq!(kind(&[22, 254, 253]), DatagramKind::Dtls);
        assert_eq!(kind(&[0x80, 96]), DatagramKind::Rtp);
        assert_eq!(kind(&[0xbf]), DatagramKind::Rtp);
        assert_eq!(kind(&[0x40]), DatagramKind::Other);
        assert_eq!(kind(&[]), DatagramKind::Other);
    }
}
