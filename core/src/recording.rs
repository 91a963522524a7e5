//! What a recording is made of, as capture writes it and the pipeline reads it: the object
//! keys, each capture part's manifest (tracks and the speaker / screen-share timeline), and
//! the pure plan that turns a recording's parts into one composition on one clock.
//!
//! Capture (the media node's recorder) writes each track as numbered WebM chunks; chunk 0
//! starts with the file's header and every chunk ends at a cluster boundary, so the chunks of a
//! track, concatenated in order, are a playable WebM — up to the last chunk uploaded, even when
//! the node died mid-recording. The part's manifest is rewritten with every batch of chunks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a captured track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Camera,
    Screen,
}

/// One captured track of one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEntry {
    /// Unique within the part; the chunks are under [`chunk_prefix`] of it.
    pub name: String,
    pub participant: Uuid,
    /// The participant's display name, for tiles and transcript labels.
    pub label: String,
    pub kind: TrackKind,
    /// `vp8`, `h264` or `opus`.
    pub codec: String,
    /// Where its first frame sits, in ms from the part's start.
    pub offset_ms: u64,
    /// How long it runs (first to last frame written), in ms.
    pub duration_ms: u64,
    /// How many chunks are uploaded (`000000` … `chunks - 1`).
    pub chunks: u32,
    pub bytes: u64,
    /// Frames written / dropped (loss, no keyframe yet, a full queue).
    pub frames: u64,
    pub dropped: u64,
}

/// A change the layout and the transcript labels follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineEvent {
    /// From `at_ms` on, `participant` is the active speaker.
    Speaker { at_ms: u64, participant: Uuid },
    /// `participant` started (`on`) or stopped sharing their screen.
    ScreenShare { at_ms: u64, participant: Uuid, on: bool },
}

impl TimelineEvent {
    pub fn at_ms(&self) -> u64 {
        match self {
            TimelineEvent::Speaker { at_ms, .. } | TimelineEvent::ScreenShare { at_ms, .. } => *at_ms,
        }
    }
}

/// One capture part, as its recorder last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartManifest {
    pub recording_id: Uuid,
    pub part: i32,
    pub node: String,
    /// The part's clock zero (wall clock).
    pub started_at: DateTime<Utc>,
    /// How far the part got, in ms from its start (the last chunk's end).
    pub length_ms: u64,
    pub tracks: Vec<TrackEntry>,
    /// In time order.
    pub timeline: Vec<TimelineEvent>,
    /// The recorder finished it (`false`: its node died, or it is still capturing).
    pub complete: bool,
}

/// Where everything of one recording is.
pub fn recording_prefix(recording: Uuid) -> String {
    format!("recordings/{recording}/")
}

/// The manifest of one part.
pub fn manifest_key(recording: Uuid, part: i32) -> String {
    format!("recordings/{recording}/part-{part}/manifest.json")
}

/// The chunks of one track of one part.
pub fn chunk_prefix(recording: Uuid, part: i32, track: &str) -> String {
    format!("recordings/{recording}/part-{part}/{track}/")
}

/// Chunk `n` of a track: zero-padded so listing order is chunk order.
pub fn chunk_key(recording: Uuid, part: i32, track: &str, n: u32) -> String {
    format!("{}{n:06}.webm", chunk_prefix(recording, part, track))
}

/// A finished artifact (`recording.mp4`, `thumbnail.jpg`, `transcript.vtt`, a joined track).
pub fn artifact_key(recording: Uuid, name: &str) -> String {
    format!("recordings/{recording}/{name}")
}

/// A track name that is safe in an object key and a file name: the kind, the participant and a
/// counter the recorder keeps per participant and kind.
pub fn track_name(kind: TrackKind, participant: Uuid, n: u32) -> String {
    let kind = match kind {
        TrackKind::Audio => "audio",
        TrackKind::Camera => "camera",
        TrackKind::Screen => "screen",
    };
    format!("{kind}-{participant}-{n}")
}

/// One track placed on the recording's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTrack {
    pub part: i32,
    pub track: TrackEntry,
    /// From the recording's start, in ms.
    pub offset_ms: u64,
}

/// A whole recording on one clock: what the compose, transcript and artifacts steps work from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingPlan {
    /// Tracks with at least one chunk, in (offset, part, name) order.
    pub tracks: Vec<PlacedTrack>,
    /// Active-speaker changes, in time order, deduplicated.
    pub speakers: Vec<(u64, Uuid)>,
    /// Screen-share intervals `(from, to, participant)` on the recording clock.
    pub screens: Vec<(u64, u64, Uuid)>,
    /// From the recording's start to the end of the last part.
    pub duration_ms: u64,
}

/// Joins the parts of a recording that started at `started_at` into one plan: each part's
/// clock is shifted by where it started (wall clock; the time between a dead owner's last chunk
/// and the next part is a gap, kept, so the recording's length is the meeting's), empty tracks
/// are left out, a screen share still on when its part ended ends there.
pub fn plan(started_at: DateTime<Utc>, parts: &[PartManifest]) -> RecordingPlan {
    let mut parts: Vec<&PartManifest> = parts.iter().collect();
    parts.sort_by_key(|p| p.part);
    let mut out = RecordingPlan::default();
    for p in parts {
        let shift = u64::try_from((p.started_at - started_at).num_milliseconds()).unwrap_or(0);
        let part_end = shift + p.length_ms;
        out.duration_ms = out.duration_ms.max(part_end);
        for t in p.tracks.iter().filter(|t| t.chunks > 0 && t.duration_ms > 0) {
            out.tracks.push(PlacedTrack { part: p.part, track: t.clone(), offset_ms: shift + t.offset_ms });
        }
        let mut open: Vec<(u64, Uuid)> = Vec::new();
        let mut events: Vec<&TimelineEvent> = p.timeline.iter().collect();
        events.sort_by_key(|e| e.at_ms());
        for e in events {
            match e {
                TimelineEvent::Speaker { at_ms, participant } => {
                    if out.speakers.last().map(|(_, u)| u) != Some(participant) {
                        out.speakers.push((shift + at_ms.min(&p.length_ms), *participant));
                    }
                }
                TimelineEvent::ScreenShare { at_ms, participant, on: true } => {
                    if !open.iter().any(|(_, u)| u == participant) {
                        open.push((shift + at_ms, *participant));
                    }
                }
                TimelineEvent::ScreenShare { at_ms, participant, on: false } => {
                    if let Some(i) = open.iter().position(|(_, u)| u == participant) {
                        let (from, who) = open.remove(i);
                        out.screens.push((from, (shift + at_ms).min(part_end), who));
                    }
                }
            }
        }
        for (from, who) in open {
            out.screens.push((from, part_end, who));
        }
    }
    out.tracks.sort_by(|a, b| (a.offset_ms, a.part, &a.track.name).cmp(&(b.offset_ms, b.part, &b.track.name)));
    out.screens.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(name: &str, who: Uuid, kind: TrackKind, offset_ms: u64, duration_ms: u64, chunks: u32) -> TrackEntry {
        TrackEntry {
            name: name.into(),
            participant: who,
            label: "x".into(),
            kind,
            codec: "vp8".into(),
            offset_ms,
            duration_ms,
            chunks,
            bytes: 1,
            frames: 1,
            dropped: 0,
        }
    }

    fn part(
        n: i32,
        start: DateTime<Utc>,
        length_ms: u64,
        tracks: Vec<TrackEntry>,
        timeline: Vec<TimelineEvent>,
    ) -> PartManifest {
        PartManifest {
            recording_id: Uuid::nil(),
            part: n,
            node: "a".into(),
            started_at: start,
            length_ms,
            tracks,
            timeline,
            complete: true,
        }
    }

    #[test]
    fn parts_are_shifted_onto_one_clock_and_the_gap_between_them_is_kept() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let p1 = part(
            1,
            t0,
            10_000,
            vec![track("cam-a", a, TrackKind::Camera, 200, 9_800, 3)],
            vec![
                TimelineEvent::Speaker { at_ms: 0, participant: a },
                TimelineEvent::ScreenShare { at_ms: 5_000, participant: b, on: true },
            ],
        );
        let p2 = part(
            2,
            t0 + chrono::Duration::milliseconds(13_000),
            4_000,
            vec![track("cam-a", a, TrackKind::Camera, 100, 3_900, 1), track("empty", b, TrackKind::Audio, 0, 0, 0)],
            vec![
                TimelineEvent::Speaker { at_ms: 0, participant: a },
                TimelineEvent::Speaker { at_ms: 1_000, participant: b },
            ],
        );
        // Given out of order: the plan sorts parts.
        let plan = plan(t0, &[p2, p1]);
        assert_eq!(plan.duration_ms, 17_000);
        let placed: Vec<(i32, u64)> = plan.tracks.iter().map(|t| (t.part, t.offset_ms)).collect();
        assert_eq!(placed, vec![(1, 200), (2, 13_100)], "the empty track is left out");
        assert_eq!(plan.speakers, vec![(0, a), (14_000, b)], "a repeated speaker is one change");
        assert_eq!(plan.screens, vec![(5_000, 10_000, b)], "a share open when its part ended ends there");
    }

    #[test]
    fn keys_sort_chunks_in_order_and_stay_inside_the_recording() {
        let r = Uuid::nil();
        let k9 = chunk_key(r, 1, "audio-x-0", 9);
        let k10 = chunk_key(r, 1, "audio-x-0", 10);
        assert!(k9 < k10);
        assert!(k9.starts_with(&recording_prefix(r)) && manifest_key(r, 2).starts_with(&recording_prefix(r)));
        assert_eq!(track_name(TrackKind::Screen, r, 2), format!("screen-{r}-2"));
    }

    #[test]
    fn manifests_read_back_as_written() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let who = Uuid::new_v4();
        let p = part(
            1,
            t0,
            1_000,
            vec![track("a", who, TrackKind::Audio, 0, 1_000, 1)],
            vec![TimelineEvent::ScreenShare { at_ms: 3, participant: who, on: false }],
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"type\":\"screen_share\""));
        assert_eq!(serde_json::from_str::<PartManifest>(&json).unwrap(), p);
    }
}
