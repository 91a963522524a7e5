//! VP8 keyframe detection from an RTP payload (RFC 7741 payload descriptor + RFC 6386 frame
//! header), so a layer switch can wait for a frame the subscriber's decoder can start from.
//!
//! ```text
//! descriptor  |X|R|N|S|R|PID  |   S = start of partition, PID = partition index
//! if X        |I|L|T|K| RSV   |
//! if I        |M| PictureID   |   M = 15-bit picture id: one more byte
//! if L        |  TL0PICIDX    |
//! if T or K   |TID|Y| KEYIDX  |
//! frame tag   |size0|H|VER|P  |   P = 0: keyframe (bit 0 of the first byte)
//!             | size1 | size2 |
//! keyframe    | 9d | 01 | 2a  |   start code, then 14-bit width and height
//! ```

/// VP8 keyframe start code, right after the 3-byte frame tag.
const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// Whether this RTP payload begins a VP8 keyframe: first packet of partition 0 whose frame tag
/// says keyframe and whose start code is present. Any truncated or malformed payload is `false`.
pub fn is_keyframe(payload: &[u8]) -> bool {
    frame_header(payload)
        .is_some_and(|h| h.first().is_some_and(|tag| tag & 0x01 == 0) && h.get(3..6) == Some(&START_CODE))
}

/// The VP8 payload (frame header onwards) of the first packet of a frame; `None` for other
/// packets and malformed descriptors.
fn frame_header(rtp_payload: &[u8]) -> Option<&[u8]> {
    payload(rtp_payload).and_then(|(start, body)| start.then_some(body))
}

/// The VP8 payload after its descriptor, and whether it starts partition 0 (S=1, PID=0).
/// `None` for a malformed descriptor or an empty payload. The recorder's depacketizer joins
/// these into frames.
pub fn payload(payload: &[u8]) -> Option<(bool, &[u8])> {
    let first = *payload.first()?;
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            let picture_id = *payload.get(at)?;
            at += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    let body = payload.get(at..)?;
    (!body.is_empty()).then_some((start, body))
}

/// Width and height of a keyframe (the 14-bit fields after the start code), for logging and
/// layer sanity checks.
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    if !is_keyframe(payload) {
        return None;
    }
    let h = frame_header(payload)?;
    let w = u16::from_le_bytes([*h.get(6)?, *h.get(7)?]) & 0x3fff;
    let ht = u16::from_le_bytes([*h.get(8)?, *h.get(9)?]) & 0x3fff;
    Some((w, ht))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyframe frame header: tag (P=0, show_frame), start code, 640x360.
    const KEY: [u8; 10] = [0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
    /// Interframe tag (P=1) and some data.
    const DELTA: [u8; 6] = [0x31, 0x0c, 0x00, 0x12, 0x34, 0x56];

    fn with(descriptor: &[u8], header: &[u8]) -> Vec<u8> {
        [descriptor, header].concat()
    }

    #[test]
    fn minimal_descriptor_keyframe() {
        // libvpx / webrtc-rs packetizer without extensions: S=1, PID=0.
        let p = with(&[0x10], &KEY);
        assert!(is_keyframe(&p));
        assert_eq!(keyframe_size(&p), Some((640, 360)));
        assert!(!is_keyframe(&with(&[0x10], &DELTA)));
    }

    #[test]
    fn chrome_style_descriptor_with_15_bit_picture_id_tl0_and_tid() {
        // X=1 S=1 | I=1 L=1 T=1 | M=1 picture id 0x0123 | TL0PICIDX | TID/Y/KEYIDX
        let d = [0x90, 0xe0, 0x81, 0x23, 0x07, 0x20];
        assert!(is_keyframe(&with(&d, &KEY)));
        assert!(!is_keyframe(&with(&d, &DELTA)));
        // 7-bit picture id only.
        assert!(is_keyframe(&with(&[0x90, 0x80, 0x05], &KEY)));
        // K without T still takes a byte.
        assert!(is_keyframe(&with(&[0x90, 0x10, 0x00], &KEY)));
    }

    #[test]
    fn continuation_packets_and_other_partitions_are_not_keyframes() {
        assert!(!is_keyframe(&with(&[0x00], &KEY)), "S=0: middle of the frame");
        assert!(!is_keyframe(&with(&[0x11], &KEY)), "partition 1");
        assert!(!is_keyframe(&with(&[0x90, 0x80, 0x05], &[])), "descriptor only");
    }

    #[test]
    fn truncated_or_garbage_is_false_not_a_panic() {
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0x90]), "X set but no extension byte");
        assert!(!is_keyframe(&[0x90, 0x80]), "I set but no picture id");
        assert!(!is_keyframe(&[0x90, 0x80, 0x81]), "M set but one picture id byte");
        assert!(!is_keyframe(&[0x10, 0x50, 0x2d, 0x01, 0x9d]), "start code cut");
        assert!(!is_keyframe(&[0x10, 0x50, 0x2d, 0x01, 0x00, 0x00, 0x00]), "wrong start code");
        assert_eq!(keyframe_size(&[0x10, 0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80]), None, "size cut");
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = is_keyframe(&junk);
            let _ = keyframe_size(&junk);
        }
    }
}
