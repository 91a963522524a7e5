//! H.264 keyframe detection from an RTP payload (RFC 6184), so a subscriber starts, and a
//! simulcast switch happens, on a frame a decoder can begin with.
//!
//! ```text
//! NAL header  |F|NRI|  Type   |   Type 1–23: one NAL unit in the packet
//!                                 Type 24 (STAP-A): 16-bit size + NAL unit, repeated
//!                                 Type 28 (FU-A): FU header |S|E|R| Type | follows
//! ```
//!
//! A keyframe starts with an IDR slice (type 5), usually preceded by SPS (7) and PPS (8) in the
//! same access unit: a packet that carries an SPS or the start of an IDR slice begins one.

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const IDR: u8 = 5;
const SPS: u8 = 7;

/// Whether this RTP payload begins an H.264 keyframe: a single NAL unit or an aggregate that
/// holds an SPS or an IDR slice, or the first fragment of an IDR slice. Any truncated or
/// malformed payload is `false`.
pub fn is_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else { return false };
    match header & 0x1f {
        IDR | SPS => true,
        STAP_A => aggregated_types(&payload[1..]).any(|t| t == IDR || t == SPS),
        FU_A => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

/// The NAL unit types inside a STAP-A body (after its own header); stops at the first size
/// that runs past the end.
fn aggregated_types(mut body: &[u8]) -> impl Iterator<Item = u8> + '_ {
    std::iter::from_fn(move || {
        let size = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let unit = body.get(2..2 + size).filter(|u| !u.is_empty())?;
        body = &body[2 + size..];
        Some(unit[0] & 0x1f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_nal_units() {
        assert!(is_keyframe(&[0x65, 0x88, 0x84]), "IDR slice");
        assert!(is_keyframe(&[0x67, 0x42, 0xe0, 0x1f]), "SPS");
        assert!(!is_keyframe(&[0x41, 0x9a]), "non-IDR slice");
        assert!(!is_keyframe(&[0x68, 0xce]), "PPS alone");
        assert!(!is_keyframe(&[]));
    }

    #[test]
    fn aggregates_hold_the_sps_or_the_idr() {
        // STAP-A: SPS (4 bytes) + PPS (2 bytes).
        assert!(is_keyframe(&[0x78, 0x00, 0x04, 0x67, 0x42, 0xe0, 0x1f, 0x00, 0x02, 0x68, 0xce]));
        // STAP-A of two non-IDR slices.
        assert!(!is_keyframe(&[0x78, 0x00, 0x02, 0x41, 0x9a, 0x00, 0x02, 0x41, 0x9b]));
        // A size that runs past the end, and an empty unit, end the walk without a panic.
        assert!(!is_keyframe(&[0x78, 0x00, 0x09, 0x65]));
        assert!(!is_keyframe(&[0x78, 0x00, 0x00, 0x00, 0x01, 0x65]));
        assert!(!is_keyframe(&[0x78, 0x00]));
    }

    #[test]
    fn only_the_first_fragment_of_an_idr_slice() {
        assert!(is_keyframe(&[0x7c, 0x85, 0x88]), "FU-A start, IDR");
        assert!(!is_keyframe(&[0x7c, 0x05, 0x88]), "FU-A middle of an IDR");
        assert!(!is_keyframe(&[0x7c, 0x45, 0x88]), "FU-A end of an IDR");
        assert!(!is_keyframe(&[0x7c, 0x81, 0x88]), "FU-A start, non-IDR");
        assert!(!is_keyframe(&[0x7c]), "truncated");
    }
}
