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
/// STUN USERNAME attribute type.
pub const ATTR_USERNAME: u16 = 0x0006;
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
    let value = stun_attribute(datagram, ATTR_USERNAME)?;
    if value.len() > MAX_USERNAME {
        return None;
    }
    let username = std::str::from_utf8(value).ok()?;
    let local = username.split(':').next()?;
    (!local.is_empty()).then_some(local)
}

/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// Binding request (RFC 5389 §6: method 0x001, class request).
const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response.
const BINDING_SUCCESS: u16 = 0x0101;
/// USE-CANDIDATE (RFC 8445 §7.1.2): the controlling agent nominates this pair.
const ATTR_USE_CANDIDATE: u16 = 0x0025;

/// The transaction id of a binding request that nominates its candidate pair (it carries
/// USE-CANDIDATE): the client has chosen, or switched to, the address it came from.
pub fn stun_nomination(datagram: &[u8]) -> Option<TransactionId> {
    let (kind, id) = stun_header(datagram)?;
    (kind == BINDING_REQUEST && stun_attribute(datagram, ATTR_USE_CANDIDATE).is_some()).then_some(id)
}

/// The transaction id of a binding success response (what an ICE agent answers a check whose
/// credentials it verified).
pub fn stun_success(datagram: &[u8]) -> Option<TransactionId> {
    let (kind, id) = stun_header(datagram)?;
    (kind == BINDING_SUCCESS).then_some(id)
}

/// Message type and transaction id of a well-formed STUN header.
fn stun_header(datagram: &[u8]) -> Option<(u16, TransactionId)> {
    stun_body(datagram)?;
    let kind = u16::from_be_bytes([datagram[0], datagram[1]]);
    Some((kind, datagram[8..HEADER_LEN].try_into().ok()?))
}

/// The attributes of a well-formed STUN message.
fn stun_body(datagram: &[u8]) -> Option<&[u8]> {
    if kind(datagram) != DatagramKind::Stun || datagram.len() < HEADER_LEN || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if body_len % 4 != 0 || HEADER_LEN + body_len > datagram.len() {
        return None;
    }
    Some(&datagram[HEADER_LEN..HEADER_LEN + body_len])
}

/// The value of the first attribute of type `wanted`; `None` if absent or malformed.
fn stun_attribute(datagram: &[u8], wanted: u16) -> Option<&[u8]> {
    let mut attrs = stun_body(datagram)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == wanted {
            return Some(value);
        }
        // Attributes are padded to a multiple of 4 bytes.
        let padded = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(padded..)?;
    }
    None
}

/// Which address a connection's media goes to: the pair its client nominated last.
///
/// A controlled ICE agent (the `rtc` stack's) keeps the first pair the client nominated and
/// ignores later nominations, but a browser nominates again when it switches pairs (Chromium
/// prefers a cheaper network once both work) and from then on sends from the new pair. This
/// follows the client: a nominating check is remembered, and once the stack answers it with a
/// success response (so its credentials were good), its address is where DTLS and SRTP go. STUN
/// keeps the stack's own addressing: checks and their answers belong to their pairs.
#[derive(Debug, Default)]
pub struct Nominations {
    /// Nominating checks received and not yet answered: (from, transaction id).
    pending: Vec<(std::net::SocketAddr, TransactionId)>,
    current: Option<std::net::SocketAddr>,
}

/// Nominating checks remembered until answered (a client sends a few at most).
const MAX_PENDING_NOMINATIONS: usize = 8;

impl Nominations {
    /// A datagram received from `from`.
    pub fn received(&mut self, from: std::net::SocketAddr, datagram: &[u8]) {
        if let Some(id) = stun_nomination(datagram) {
            if self.pending.len() == MAX_PENDING_NOMINATIONS {
                self.pending.remove(0);
            }
            self.pending.push((from, id));
        }
    }

    /// A datagram about to be sent to `to`: returns where it goes instead.
    pub fn route(&mut self, datagram: &[u8], to: std::net::SocketAddr) -> std::net::SocketAddr {
        if let Some(answered) = stun_success(datagram) {
            if let Some(at) = self.pending.iter().position(|(from, id)| *from == to && *id == answered) {
                self.current = Some(to);
                self.pending.remove(at);
            }
            return to;
        }
        match (kind(datagram), self.current) {
            (DatagramKind::Stun, _) | (_, None) => to,
            (_, Some(nominated)) => nominated,
        }
    }

    /// The address media goes to, once the client has nominated a pair the stack answered.
    pub fn current(&self) -> Option<std::net::SocketAddr> {
        self.current
    }
}

/// A STUN binding request carrying `attrs` (type, value; padded as STUN pads) and no message
/// integrity: enough to claim an address on the shared port, not to pass an ICE check. For
/// probes and tests.
pub fn binding_request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_ufrag_is_read_from_username_after_other_attributes() {
        // PRIORITY (0x0024) first, then USERNAME with a length that needs padding.
        let msg = binding_request(&[(0x0024, &[0, 0, 0, 1]), (ATTR_USERNAME, b"abcdefgh:xyz"), (0x0008, &[0; 20])]);
        assert_eq!(stun_local_ufrag(&msg), Some("abcdefgh"));
        let odd = binding_request(&[(0x8029, &[1; 8]), (ATTR_USERNAME, b"ufrag1:remote5")]);
        assert_eq!(stun_local_ufrag(&odd), Some("ufrag1"));
    }

    #[test]
    fn malformed_or_foreign_datagrams_name_no_peer() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&binding_request(&[(0x0024, &[0, 0, 0, 1])])), None, "no USERNAME");
        assert_eq!(stun_local_ufrag(&binding_request(&[(ATTR_USERNAME, b":remote")])), None, "empty local part");
        assert_eq!(stun_local_ufrag(&binding_request(&[(ATTR_USERNAME, &[0xff, 0xfe])])), None, "not UTF-8");
        let mut bad_cookie = binding_request(&[(ATTR_USERNAME, b"a:b")]);
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
        let mut truncated = binding_request(&[(ATTR_USERNAME, b"abcd:efgh")]);
        truncated.truncate(truncated.len() - 4);
        assert_eq!(stun_local_ufrag(&truncated), None, "declared length beyond the datagram");
        let mut overlong_attr = binding_request(&[(ATTR_USERNAME, b"abcd:efgh")]);
        overlong_attr[HEADER_LEN + 3] = 200;
        assert_eq!(stun_local_ufrag(&overlong_attr), None, "attribute longer than the message");
        let mut rtp = binding_request(&[(ATTR_USERNAME, b"a:b")]);
        rtp[0] = 0x80;
        assert_eq!(stun_local_ufrag(&rtp), None, "RTP is never STUN");
    }

    #[test]
    fn a_nominating_check_and_a_success_response_give_their_transaction_ids() {
        let nominating = binding_request(&[(ATTR_USERNAME, b"a:b"), (ATTR_USE_CANDIDATE, &[]), (0x0008, &[0; 20])]);
        assert_eq!(stun_nomination(&nominating), Some([7; 12]));
        assert_eq!(
            stun_nomination(&binding_request(&[(ATTR_USERNAME, b"a:b")])),
            None,
            "a check that nominates nothing"
        );
        assert_eq!(stun_success(&nominating), None, "a request is not a response");
        let mut success = binding_request(&[(0x0020, &[0; 8])]);
        success[0] = 0x01; // 0x0101
        assert_eq!(stun_success(&success), Some([7; 12]));
        assert_eq!(stun_nomination(&success), None);
        let mut error = success.clone();
        error[0] = 0x01;
        error[1] = 0x11;
        assert_eq!(stun_success(&error), None, "an error response");
        let mut truncated = nominating.clone();
        truncated.truncate(HEADER_LEN + 2);
        assert_eq!(stun_nomination(&truncated), None);
        assert_eq!(stun_success(&[0x80, 0x01, 0, 0]), None, "RTP");
    }

    fn addr(port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn with_id(mut msg: Vec<u8>, id: u8) -> Vec<u8> {
        msg[8..HEADER_LEN].copy_from_slice(&[id; 12]);
        msg
    }

    fn success(id: u8) -> Vec<u8> {
        let mut msg = with_id(binding_request(&[(0x0020, &[0; 8])]), id);
        msg[0] = 0x01;
        msg
    }

    #[test]
    fn media_follows_the_clients_latest_answered_nomination() {
        let (first, second, stranger) = (addr(1000), addr(2000), addr(3000));
        let (stack_pick, srtp, dtls, check) = (first, [0x80u8, 96, 0, 1], [22u8, 254, 253], binding_request(&[]));
        let mut n = Nominations::default();
        assert_eq!(n.route(&srtp, stack_pick), stack_pick, "nothing nominated yet: the stack's pick");

        let nominate = |id| with_id(binding_request(&[(ATTR_USERNAME, b"a:b"), (ATTR_USE_CANDIDATE, &[])]), id);
        n.received(first, &nominate(1));
        assert_eq!(n.route(&srtp, stack_pick), stack_pick, "not answered yet");
        assert_eq!(n.route(&success(1), first), first);
        assert_eq!(n.current(), Some(first));

        // The client switches pairs: media follows once the stack answers the new check.
        n.received(second, &nominate(2));
        assert_eq!(n.route(&srtp, stack_pick), first);
        assert_eq!(n.route(&success(2), second), second);
        assert_eq!(n.route(&srtp, stack_pick), second, "SRTP to the new pair");
        assert_eq!(n.route(&dtls, stack_pick), second, "DTLS too");
        assert_eq!(n.route(&check, first), first, "STUN keeps its own pair");

        // An answer that matches no nominating check from that address changes nothing: not a
        // check that only names the ufrag, not another address's transaction.
        n.received(stranger, &with_id(binding_request(&[(ATTR_USERNAME, b"a:b")]), 3));
        assert_eq!(n.route(&success(3), stranger), stranger);
        n.received(stranger, &nominate(4));
        assert_eq!(n.route(&success(4), first), first, "the answer went elsewhere");
        assert_eq!(n.current(), Some(second));
        // An unanswered nomination (bad credentials: the stack sends an error) never moves it.
        assert_eq!(n.route(&srtp, stack_pick), second);
    }

    #[test]
    fn pending_nominations_are_bounded() {
        let mut n = Nominations::default();
        for i in 0..100u8 {
            n.received(addr(u16::from(i)), &with_id(binding_request(&[(ATTR_USE_CANDIDATE, &[])]), i));
        }
        assert_eq!(n.pending.len(), MAX_PENDING_NOMINATIONS);
        assert_eq!(n.route(&success(99), addr(99)), addr(99));
        assert_eq!(n.current(), Some(addr(99)));
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
