//! A live-style Matroska/WebM muxer for one track, hand-written EBML into a `Vec<u8>`.
//!
//! ```text
//! EBML header          DocType "webm" (VP8, Opus) or "matroska" (H.264), version 4
//! Segment (unknown size: the file is written as it is recorded, never patched)
//! ├── Info             TimecodeScale 1 ms, MuxingApp / WritingApp "parley"
//! ├── Tracks           one TrackEntry: codec id, CodecPrivate, Video or Audio settings
//! └── Cluster…         unknown size; Timecode (ms), then SimpleBlocks with a 16-bit offset
//! ```
//!
//! Clusters are of unknown size, so every block is final the moment it is written: the bytes
//! [`WebmMuxer::take`] hands out end on an element boundary and any prefix of takes is a file a
//! player reads to its end (a crash loses only what was not taken yet). A video cluster starts
//! at each keyframe (what a player seeks to); audio starts one every [`AUDIO_CLUSTER_MS`]. A
//! cluster also ends before a block's offset from its timecode would leave the `i16` range
//! (a publisher may send keyframes minutes apart), then at a delta frame.
//!
//! No cues and no duration: a live file has neither until it is remuxed (the compose step's
//! `ffmpeg -c copy` writes both).

/// Matroska element ids (their marker bits included, written as they are).
mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// An audio track starts a new cluster this often (ms).
pub const AUDIO_CLUSTER_MS: u64 = 5_000;
/// The furthest a block's offset may be from its cluster's timecode (ms): `i16::MAX`, kept
/// clear of with a margin.
pub const MAX_BLOCK_OFFSET_MS: u64 = 30_000;
/// Opus pre-skip written in OpusHead (48 kHz samples): libopus' encoder lookahead (6.5 ms),
/// which every WebRTC Opus encoder adds at the start of its stream.
pub const OPUS_PRE_SKIP: u16 = 312;
/// Opus seek pre-roll (ns): 80 ms, as the Matroska Opus mapping recommends.
pub const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;
/// The one track of every file.
const TRACK_NUMBER: u64 = 1;
/// The "unknown size" marker: an 8-byte vint of all ones.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// What the one track of a file carries, with what its header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackInfo {
    /// VP8 (`V_VP8`), its frame size from the first keyframe.
    Vp8 { width: u16, height: u16 },
    /// H.264 (`V_MPEG4/ISO/AVC`): `avcc` is the CodecPrivate (an AVCDecoderConfigurationRecord
    /// built from the first SPS/PPS, see `frames::avc_decoder_config`); blocks are AVCC
    /// (4-byte lengths).
    H264 { width: u16, height: u16, avcc: Vec<u8> },
    /// Opus (`A_OPUS`), 48 kHz, 2 channels.
    Opus,
}

impl TrackInfo {
    fn is_video(&self) -> bool {
        !matches!(self, TrackInfo::Opus)
    }

    /// The file's DocType: WebM allows VP8 and Opus; H.264 makes it plain Matroska.
    fn doc_type(&self) -> &'static str {
        match self {
            TrackInfo::H264 { .. } => "matroska",
            _ => "webm",
        }
    }
}

/// The bytes of one track's file, appended as frames come (see the module docs).
#[derive(Debug)]
pub struct WebmMuxer {
    video: bool,
    /// Written and not yet taken.
    out: Vec<u8>,
    /// Timecode of the open cluster (ms), if any.
    cluster: Option<u64>,
    /// Timestamp of the last block (ms): blocks never go back in time.
    last: Option<u64>,
    /// Everything written so far, taken or not.
    written: u64,
}

impl WebmMuxer {
    /// A file for `track`: its header (EBML header, Segment start, Info, Tracks) is the first
    /// thing [`WebmMuxer::take`] returns.
    pub fn new(track: &TrackInfo) -> WebmMuxer {
        let mut out = Vec::with_capacity(4096);
        write_header(&mut out, track);
        let written = out.len() as u64;
        WebmMuxer { video: track.is_video(), out, cluster: None, last: None, written }
    }

    /// Appends one frame at `ms` (recording time): a new cluster first if this frame starts
    /// one. `ms` before the previous frame's is moved up to it (blocks stay in order).
    /// `keyframe`: a video frame a decoder can start from (every audio frame is one).
    pub fn write_frame(&mut self, ms: u64, keyframe: bool, data: &[u8]) {
        let ms = self.last.map_or(ms, |last| ms.max(last));
        self.last = Some(ms);
        let new_cluster = match self.cluster {
            None => true,
            Some(start) => {
                let age = ms - start.min(ms);
                age > MAX_BLOCK_OFFSET_MS || if self.video { keyframe } else { age >= AUDIO_CLUSTER_MS }
            }
        };
        let before = self.out.len();
        if new_cluster {
            write_id(&mut self.out, id::CLUSTER);
            self.out.extend_from_slice(&UNKNOWN_SIZE);
            write_uint(&mut self.out, id::TIMECODE, ms);
            self.cluster = Some(ms);
        }
        let offset = ms - self.cluster.unwrap_or(ms).min(ms);
        let offset = i16::try_from(offset).unwrap_or(i16::MAX);
        let flags = if keyframe || !self.video { 0x80 } else { 0x00 };
        write_id(&mut self.out, id::SIMPLE_BLOCK);
        write_size(&mut self.out, 4 + data.len() as u64);
        write_size(&mut self.out, TRACK_NUMBER);
        self.out.extend_from_slice(&offset.to_be_bytes());
        self.out.push(flags);
        self.out.extend_from_slice(data);
        self.written += (self.out.len() - before) as u64;
    }

    /// The bytes written since the last take: append them to the file.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes written in all, taken or not.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Timestamp of the last frame written (ms).
    pub fn last_ms(&self) -> Option<u64> {
        self.last
    }
}

/// EBML header, the Segment's start (unknown size), Info and Tracks.
fn write_header(out: &mut Vec<u8>, track: &TrackInfo) {
    master(out, id::EBML, |b| {
        write_uint(b, id::EBML_VERSION, 1);
        write_uint(b, id::EBML_READ_VERSION, 1);
        write_uint(b, id::EBML_MAX_ID_LENGTH, 4);
        write_uint(b, id::EBML_MAX_SIZE_LENGTH, 8);
        write_bytes(b, id::DOC_TYPE, track.doc_type().as_bytes());
        // CodecDelay and SeekPreRoll are version 4 elements.
        write_uint(b, id::DOC_TYPE_VERSION, 4);
        write_uint(b, id::DOC_TYPE_READ_VERSION, 2);
    });
    write_id(out, id::SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    master(out, id::INFO, |b| {
        write_uint(b, id::TIMECODE_SCALE, 1_000_000);
        write_bytes(b, id::MUXING_APP, b"parley");
        write_bytes(b, id::WRITING_APP, b"parley");
    });
    master(out, id::TRACKS, |b| {
        master(b, id::TRACK_ENTRY, |t| {
            write_uint(t, id::TRACK_NUMBER, TRACK_NUMBER);
            write_uint(t, id::TRACK_UID, TRACK_NUMBER);
            write_uint(t, id::FLAG_LACING, 0);
            match track {
                TrackInfo::Vp8 { width, height } => {
                    write_uint(t, id::TRACK_TYPE, 1);
                    write_bytes(t, id::CODEC_ID, b"V_VP8");
                    video(t, *width, *height);
                }
                TrackInfo::H264 { width, height, avcc } => {
                    write_uint(t, id::TRACK_TYPE, 1);
                    write_bytes(t, id::CODEC_ID, b"V_MPEG4/ISO/AVC");
                    write_bytes(t, id::CODEC_PRIVATE, avcc);
                    video(t, *width, *height);
                }
                TrackInfo::Opus => {
                    write_uint(t, id::TRACK_TYPE, 2);
                    write_bytes(t, id::CODEC_ID, b"A_OPUS");
                    write_bytes(t, id::CODEC_PRIVATE, &opus_head(2, OPUS_PRE_SKIP));
                    write_uint(t, id::CODEC_DELAY, u64::from(OPUS_PRE_SKIP) * 1_000_000_000 / 48_000);
                    write_uint(t, id::SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NS);
                    master(t, id::AUDIO, |a| {
                        write_float(a, id::SAMPLING_FREQUENCY, 48_000.0);
                        write_uint(a, id::CHANNELS, 2);
                    });
                }
            }
        });
    });
}

fn video(out: &mut Vec<u8>, width: u16, height: u16) {
    master(out, id::VIDEO, |v| {
        write_uint(v, id::PIXEL_WIDTH, u64::from(width.max(1)));
        write_uint(v, id::PIXEL_HEIGHT, u64::from(height.max(1)));
    });
}

/// The Opus identification header (RFC 7845 §5.1) that is an Opus track's CodecPrivate:
/// magic, version 1, channels, pre-skip, input rate 48 kHz, gain 0, mapping family 0.
pub fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// An element id: its bytes as they are (1 to 4, leading zero bytes left out).
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    out.extend_from_slice(bytes.get(skip..).unwrap_or(&bytes));
}

/// An element data size as the shortest EBML vint that holds it (1 to 8 bytes). A length
/// whose value bits would all be ones is one byte longer (all ones means "unknown").
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8u32).find(|n| size < (1u64 << (7 * n)) - 1).unwrap_or(8);
    let marked = size | (1u64 << (7 * len));
    let bytes = marked.to_be_bytes();
    out.extend_from_slice(bytes.get(8 - len as usize..).unwrap_or(&bytes));
}

/// An unsigned integer element, in the fewest bytes (at least one).
pub fn write_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let data = bytes.get(skip..).unwrap_or(&bytes);
    write_id(out, id);
    write_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A float element, 8 bytes.
pub fn write_float(out: &mut Vec<u8>, id: u32, value: f64) {
    write_id(out, id);
    write_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

/// A string or binary element.
pub fn write_bytes(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    write_id(out, id);
    write_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A master element of known size: its children are written by `children`.
pub fn master(out: &mut Vec<u8>, id: u32, children: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    children(&mut body);
    write_id(out, id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        write_size(&mut v, n);
        v
    }

    /// Reads one vint back: (value, length).
    fn read_vint(b: &[u8]) -> (u64, usize) {
        let len = b[0].leading_zeros() as usize + 1;
        let mut v = u64::from(b[0]) & (0xFF >> len);
        for x in &b[1..len] {
            v = (v << 8) | u64::from(*x);
        }
        (v, len)
    }

    #[test]
    fn sizes_are_the_shortest_vint_and_never_all_ones() {
        assert_eq!(size(0), [0x80]);
        assert_eq!(size(1), [0x81]);
        assert_eq!(size(126), [0xFE]);
        assert_eq!(size(127), [0x40, 0x7F], "0xFF would mean unknown");
        assert_eq!(size(128), [0x40, 0x80]);
        assert_eq!(size(16_382), [0x7F, 0xFE]);
        assert_eq!(size(16_383), [0x20, 0x3F, 0xFF]);
        assert_eq!(size((1 << 21) - 2), [0x3F, 0xFF, 0xFE]);
        assert_eq!(size((1 << 56) - 2).len(), 8);
        for n in [0, 1, 100, 127, 128, 300, 16_383, 70_000, 1 << 30, (1 << 56) - 2] {
            let v = size(n);
            assert_eq!(read_vint(&v), (n, v.len()), "{n} reads back");
        }
        assert_eq!(read_vint(&UNKNOWN_SIZE), ((1 << 56) - 1, 8), "unknown: all value bits set");
    }

    #[test]
    fn ids_keep_their_bytes_and_uints_are_minimal() {
        let mut v = Vec::new();
        write_id(&mut v, id::SIMPLE_BLOCK);
        write_id(&mut v, id::TIMECODE_SCALE);
        write_id(&mut v, id::EBML);
        assert_eq!(v, [0xA3, 0x2A, 0xD7, 0xB1, 0x1A, 0x45, 0xDF, 0xA3]);
        let uint = |x| {
            let mut v = Vec::new();
            write_uint(&mut v, id::TIMECODE, x);
            v
        };
        assert_eq!(uint(0), [0xE7, 0x81, 0x00], "zero still has one byte");
        assert_eq!(uint(255), [0xE7, 0x81, 0xFF]);
        assert_eq!(uint(256), [0xE7, 0x82, 0x01, 0x00]);
        assert_eq!(uint(1_000_000), [0xE7, 0x83, 0x0F, 0x42, 0x40]);
        assert_eq!(uint(u64::MAX).len(), 2 + 8);
        let mut f = Vec::new();
        write_float(&mut f, id::SAMPLING_FREQUENCY, 48_000.0);
        assert_eq!(f, [0xB5, 0x88, 0x40, 0xE7, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00]);
        let mut m = Vec::new();
        master(&mut m, id::VIDEO, |b| write_uint(b, id::PIXEL_WIDTH, 640));
        assert_eq!(m, [0xE0, 0x84, 0xB0, 0x82, 0x02, 0x80]);
    }

    #[test]
    fn opus_head_is_rfc_7845() {
        let h = opus_head(2, 312);
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h[8..12], [1, 2, 0x38, 0x01]);
        assert_eq!(h[12..16], 48_000u32.to_le_bytes());
        assert_eq!(h[16..], [0, 0, 0]);
    }

    #[test]
    fn header_then_clusters_at_keyframes_and_blocks_with_offsets() {
        let mut m = WebmMuxer::new(&TrackInfo::Vp8 { width: 640, height: 360 });
        let header = m.take();
        let mut total = header.len();
        assert!(header.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]));
        assert!(header.windows(4).any(|w| w == b"webm"));
        assert!(header.windows(5).any(|w| w == b"V_VP8"));
        assert!(header.windows(6).filter(|w| *w == b"parley").count() == 2, "muxing and writing app");
        m.write_frame(1_000, true, &[1, 2, 3]);
        let first = m.take();
        total += first.len();
        // Cluster, unknown size, Timecode 1000, SimpleBlock (track 1, offset 0, keyframe).
        assert_eq!(&first[..4], [0x1F, 0x43, 0xB6, 0x75]);
        assert_eq!(&first[4..12], UNKNOWN_SIZE);
        assert_eq!(&first[12..16], [0xE7, 0x82, 0x03, 0xE8]);
        assert_eq!(&first[16..], [0xA3, 0x87, 0x81, 0x00, 0x00, 0x80, 1, 2, 3]);
        m.write_frame(1_033, false, &[4]);
        assert_eq!(m.take(), [0xA3, 0x85, 0x81, 0x00, 0x21, 0x00, 4], "same cluster, offset 33, delta");
        m.write_frame(1_020, false, &[5]);
        assert_eq!(m.take(), [0xA3, 0x85, 0x81, 0x00, 0x21, 0x00, 5], "never back in time");
        total += 14;
        m.write_frame(2_000, true, &[6]);
        let second = m.take();
        total += second.len();
        assert!(second.starts_with(&[0x1F, 0x43, 0xB6, 0x75]), "a keyframe opens a cluster");
        m.write_frame(2_000 + MAX_BLOCK_OFFSET_MS + 1, false, &[7]);
        let late = m.take();
        total += late.len();
        assert!(late.starts_with(&[0x1F, 0x43, 0xB6, 0x75]), "offset would not fit i16: new cluster");
        assert!(late.ends_with(&[0xA3, 0x85, 0x81, 0x00, 0x00, 0x00, 7]), "a delta frame may start it");
        assert_eq!(m.last_ms(), Some(32_001));
        assert_eq!(m.bytes_written(), total as u64, "every byte, taken or not");
    }

    #[test]
    fn audio_clusters_every_five_seconds_every_block_a_keyframe() {
        let mut m = WebmMuxer::new(&TrackInfo::Opus);
        let header = m.take();
        assert!(header.windows(6).any(|w| w == b"A_OPUS"));
        assert!(header.windows(8).any(|w| w == b"OpusHead"));
        let mut clusters = 0;
        for i in 0..500u64 {
            m.write_frame(i * 20, false, &[0xFC]);
            let b = m.take();
            if b.starts_with(&[0x1F, 0x43, 0xB6, 0x75]) {
                clusters += 1;
            }
            assert_eq!(b[b.len() - 2], 0x80, "audio blocks are keyframes");
        }
        assert_eq!(clusters, 2, "10 s of audio: clusters at 0 and 5 s");
    }

    #[test]
    fn h264_files_are_matroska_with_the_avcc_record() {
        let avcc = vec![1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1, 0, 1, 0x67, 1, 0, 1, 0x68];
        let mut m = WebmMuxer::new(&TrackInfo::H264 { width: 320, height: 180, avcc: avcc.clone() });
        let h = m.take();
        assert!(h.windows(8).any(|w| w == b"matroska"));
        assert!(h.windows(15).any(|w| w == b"V_MPEG4/ISO/AVC"));
        let mut private = vec![0x63, 0xA2, 0x80 | avcc.len() as u8];
        private.extend_from_slice(&avcc);
        assert!(h.windows(private.len()).any(|w| w == private.as_slice()));
    }
}
