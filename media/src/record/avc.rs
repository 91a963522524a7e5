//! What Matroska needs of an H.264 stream that RTP does not carry in its form: the access unit
//! as AVCC (each NAL unit behind its 4-byte length instead of a start code), and the track's
//! CodecPrivate, an AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3) built from the stream's
//! SPS and PPS, with the picture size read from the SPS (ITU-T H.264 §7.3.2.1.1).

/// NAL unit types this module looks at.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

/// The NAL units of an Annex-B byte stream (start codes `00 00 01` or `00 00 00 01`), without
/// their start codes; trailing zero bytes belong to the next start code.
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = find_start(stream, 0).map(|(_, body)| body);
    std::iter::from_fn(move || {
        let start = at?;
        let (end, next) = match find_start(stream, start) {
            Some((code, body)) => (code, Some(body)),
            None => (stream.len(), None),
        };
        at = next;
        let mut unit = stream.get(start..end)?;
        while let Some((&0, rest)) = unit.split_last() {
            unit = rest;
        }
        Some(unit)
    })
    .filter(|u| !u.is_empty())
}

/// The next `00 00 01` at or after `from`: (where it begins, where the unit after it begins).
fn find_start(stream: &[u8], from: usize) -> Option<(usize, usize)> {
    let rest = stream.get(from..)?;
    rest.windows(3).position(|w| w == [0, 0, 1]).map(|i| (from + i, from + i + 3))
}

/// An Annex-B access unit as AVCC: each NAL unit behind its 4-byte big-endian length.
pub fn to_avcc(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len() + 8);
    for unit in nal_units(stream) {
        let len = u32::try_from(unit.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(unit);
    }
    out
}

/// The last SPS and PPS of an access unit, if it has both.
pub fn parameter_sets(stream: &[u8]) -> Option<(&[u8], &[u8])> {
    let kind = |u: &&[u8]| u.first().map_or(0, |h| h & 0x1F);
    let sps = nal_units(stream).filter(|u| kind(u) == NAL_SPS).last()?;
    let pps = nal_units(stream).filter(|u| kind(u) == NAL_PPS).last()?;
    Some((sps, pps))
}

/// What the container needs of an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub width: u16,
    pub height: u16,
    pub chroma_format_idc: u32,
    pub bit_depth_luma_minus8: u32,
    pub bit_depth_chroma_minus8: u32,
}

/// The AVCDecoderConfigurationRecord of one SPS and PPS (NAL units with their headers):
/// 4-byte lengths, and for the High profiles the chroma and bit-depth fields. `None` when the
/// SPS cannot be read or a parameter set is too long for its 16-bit length.
pub fn decoder_config(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let info = parse_sps(sps)?;
    let profile = sps.get(1..4)?;
    let mut out = Vec::with_capacity(sps.len() + pps.len() + 16);
    out.extend_from_slice(&[1, *profile.first()?, *profile.get(1)?, *profile.get(2)?]);
    out.push(0xFC | 3); // lengthSizeMinusOne = 3
    out.push(0xE0 | 1); // one SPS
    out.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1); // one PPS
    out.extend_from_slice(&u16::try_from(pps.len()).ok()?.to_be_bytes());
    out.extend_from_slice(pps);
    if matches!(info.profile_idc, 100 | 110 | 122 | 144) {
        out.push(0xFC | (info.chroma_format_idc & 3) as u8);
        out.push(0xF8 | (info.bit_depth_luma_minus8 & 7) as u8);
        out.push(0xF8 | (info.bit_depth_chroma_minus8 & 7) as u8);
        out.push(0); // no SPS extensions
    }
    Some(out)
}

/// Reads an SPS NAL unit (header byte included) as far as the picture size.
pub fn parse_sps(sps: &[u8]) -> Option<SpsInfo> {
    if sps.first()? & 0x1F != NAL_SPS {
        return None;
    }
    let rbsp = unescape(sps.get(1..)?);
    let mut r = Bits { data: &rbsp, at: 0 };
    let profile_idc = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let (mut chroma_format_idc, mut separate_planes) = (1, false);
    let (mut luma8, mut chroma8) = (0, 0);
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_planes = r.bit()?;
        }
        luma8 = r.ue()?;
        chroma8 = r.ue()?;
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    r.skip_scaling_list(if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            for _ in 0..cycle.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let field = if frame_mbs_only { 1 } else { 2 };
        let (unit_x, unit_y) = match (chroma_format_idc, separate_planes) {
            (0, _) | (3, true) => (1, field),
            (1, _) => (2, 2 * field),
            (2, _) => (2, field),
            _ => (1, field),
        };
        crop_x = unit_x * left.checked_add(right)?;
        crop_y = unit_y * top.checked_add(bottom)?;
    }
    let height_mult = if frame_mbs_only { 1 } else { 2 };
    let width = (width_mbs.checked_mul(16)?).checked_sub(crop_x)?;
    let height = (height_units.checked_mul(16 * height_mult)?).checked_sub(crop_y)?;
    Some(SpsInfo {
        profile_idc,
        width: u16::try_from(width).ok()?,
        height: u16::try_from(height).ok()?,
        chroma_format_idc,
        bit_depth_luma_minus8: luma8,
        bit_depth_chroma_minus8: chroma8,
    })
}

/// The RBSP of a NAL unit body: emulation prevention bytes (`00 00 03` → `00 00`) removed.
fn unescape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut zeros = 0;
    for &b in body {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// A big-endian bit reader; every read is `None` past the end.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = self.data.get(self.at / 8)?;
        let bit = byte >> (7 - self.at % 8) & 1;
        self.at += 1;
        Some(bit == 1)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some(v << 1 | u32::from(self.bit()?)))
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                next = (last + self.se()? + 256).rem_euclid(256);
            }
            if next != 0 {
                last = next;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPS x264 writes for 640x360 Constrained Baseline (coded 640x368, cropped).
    const SPS_640X360: [u8; 25] = [
        0x67, 0x42, 0xC0, 0x1E, 0xD9, 0x00, 0xA0, 0x2F, 0xF9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
        0x03, 0x00, 0x3C, 0x0F, 0x16, 0x2E, 0x48,
    ];
    /// The SPS x264 writes for 320x180 High.
    const SPS_320X180_HIGH: [u8; 26] = [
        0x67, 0x64, 0x00, 0x0D, 0xAC, 0xD9, 0x41, 0x41, 0x9F, 0x9F, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
        0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0x99, 0x60,
    ];

    #[test]
    fn annex_b_splits_on_both_start_code_lengths() {
        let stream = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0];
        let units: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        assert_eq!(to_avcc(&stream), [0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 3, 0x65, 4, 5]);
        assert_eq!(parameter_sets(&stream), Some((&[0x67, 1, 2][..], &[0x68, 3][..])));
        assert_eq!(parameter_sets(&stream[10..]), None, "no SPS");
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0, "no start code: nothing");
    }

    #[test]
    fn the_sps_gives_the_cropped_picture_size() {
        let info = parse_sps(&SPS_640X360).unwrap();
        assert_eq!((info.profile_idc, info.width, info.height), (66, 640, 360));
        let config = decoder_config(&SPS_640X360, &[0x68, 0xCE, 0x38, 0x80]).unwrap();
        assert_eq!(&config[..8], &[1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 25]);
        assert_eq!(&config[8..33], &SPS_640X360);
        assert_eq!(&config[33..], &[1, 0, 4, 0x68, 0xCE, 0x38, 0x80], "baseline: no high-profile tail");
        let high = parse_sps(&SPS_320X180_HIGH).unwrap();
        assert_eq!((high.profile_idc, high.width, high.height, high.chroma_format_idc), (100, 320, 180, 1));
        let config = decoder_config(&SPS_320X180_HIGH, &[0x68, 0xEB]).unwrap();
        assert_eq!(&config[config.len() - 4..], &[0xFD, 0xF8, 0xF8, 0], "4:2:0, 8 bits, no extensions");
    }

    #[test]
    fn exp_golomb_and_unescaping() {
        // 1 → 0, 010 → 1, 011 → 2, 00100 → 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = Bits { data: &data, at: 0 };
        assert_eq!((r.ue(), r.ue(), r.ue(), r.ue()), (Some(0), Some(1), Some(2), Some(3)));
        let mut r = Bits { data: &[0b0100_1100], at: 0 };
        assert_eq!((r.se(), r.se()), (Some(1), Some(-1)));
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3, 0]), [0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn garbage_sps_is_none_not_a_panic() {
        assert_eq!(parse_sps(&[]), None);
        assert_eq!(parse_sps(&[0x68, 1, 2]), None, "not an SPS");
        for len in 1..SPS_640X360.len() {
            let _ = parse_sps(&SPS_640X360[..len]);
        }
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..24).map(|i| (seed.wrapping_mul(31).wrapping_add(i * 17) % 251) as u8).collect();
            let mut sps = vec![0x67];
            sps.extend_from_slice(&junk);
            let _ = parse_sps(&sps);
            let _ = decoder_config(&sps, &[0x68]);
        }
        assert_eq!(parse_sps(&[0x67, 0x42, 0, 0x1E, 0, 0, 0, 0, 0]), None, "an Exp-Golomb that never ends");
    }
}
