//! Subscription plan: which video tracks a subscriber receives, at which tile size, and which
//! audio tracks — from the meeting's publishers, who is sharing a screen, who is speaking, and
//! the view the subscriber asked for.
//!
//! - Nobody receives their own tracks.
//! - Breakout rooms: a subscriber receives only the participants in its own room (the main
//!   room is a room too), screen shares and active speakers included.
//! - A screen share (FLOW 4) takes the stage in every view, full size; cameras shrink to a strip
//!   of thumbnails (gallery) or to the speaker's thumbnail (speaker view).
//! - Gallery: one page of the other participants' cameras in meeting order; the tile shrinks as
//!   the page fills (1 → large, 2–4 → medium, 5+ → thumbnail). A page past the end shows the last
//!   page.
//! - Speaker: the active speaker large; if that is the subscriber, the previous speaker (the
//!   next in the loudness order), else the first other camera.
//! - Audio: everyone else's, or only the loudest N (large meetings), in loudness order.
//!
//! Pure; the router diffs successive plans into `add_track`/`remove_track` + layer targets.

use serde::{Deserialize, Serialize};

/// Largest gallery page (5 × 5).
pub const MAX_PAGE_SIZE: u32 = 25;

/// What the meeting's media looks like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeetingMedia {
    /// Publishers in meeting (join) order.
    pub publishers: Vec<Publisher>,
    /// Participant sharing their screen, if any.
    pub screen_sharer: Option<String>,
    /// Participants by recent loudness, loudest first (from `speaker`); the first is the
    /// active speaker.
    pub speakers: Vec<String>,
}

/// One participant's published tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    pub participant: String,
    /// Its breakout room (`None`: the main room).
    pub room: Option<u32>,
    pub camera: Option<String>,
    pub microphone: Option<String>,
    pub screen: Option<String>,
}

/// The layout a subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "view", rename_all = "snake_case")]
pub enum View {
    Gallery { page: u32, page_size: u32 },
    Speaker,
}

/// Which audio a subscriber gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioPolicy {
    Everyone,
    Loudest(usize),
}

/// How large a track is shown; drives the simulcast layer (`layers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TileSize {
    Thumbnail,
    Medium,
    Large,
    Full,
}

impl TileSize {
    /// Nominal tile height in pixels (the `tile_height` of `layers::LayerSelector::update`).
    pub fn height(self) -> u32 {
        match self {
            TileSize::Thumbnail => 180,
            TileSize::Medium => 360,
            TileSize::Large => 720,
            TileSize::Full => 1080,
        }
    }
}

/// A subscriber's subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Video tracks with their tile size, in display order.
    pub video: Vec<(String, TileSize)>,
    /// Audio tracks, loudest first where known.
    pub audio: Vec<String>,
}

/// A view the plan cannot be made for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("gallery page size must be 1..={MAX_PAGE_SIZE}, got {0}")]
    PageSize(u32),
}

/// The plan of `subscriber` in `meeting` for `view`.
pub fn plan(meeting: &MeetingMedia, subscriber: &str, view: View, audio: AudioPolicy) -> Result<Plan, ViewError> {
    let room = meeting.publishers.iter().find(|p| p.participant == subscriber).and_then(|p| p.room);
    let others: Vec<&Publisher> =
        meeting.publishers.iter().filter(|p| p.participant != subscriber && p.room == room).collect();
    let screen = meeting
        .screen_sharer
        .as_deref()
        .filter(|s| *s != subscriber)
        .and_then(|s| others.iter().find(|p| p.participant == s))
        .and_then(|p| p.screen.clone());

    let mut video = Vec::new();
    if let Some(screen) = &screen {
        video.push((screen.clone(), TileSize::Full));
    }
    match view {
        View::Gallery { page, page_size } => {
            if page_size == 0 || page_size > MAX_PAGE_SIZE {
                return Err(ViewError::PageSize(page_size));
            }
            let cameras: Vec<&String> = others.iter().filter_map(|p| p.camera.as_ref()).collect();
            let per_page = page_size as usize;
            let pages = cameras.len().div_ceil(per_page).max(1);
            let page = (page as usize).min(pages - 1);
            let shown: Vec<&String> = cameras.iter().skip(page * per_page).take(per_page).copied().collect();
            let size = match (screen.is_some(), shown.len()) {
                (true, _) => TileSize::Thumbnail,
                (false, 1) => TileSize::Large,
                (false, 2..=4) => TileSize::Medium,
                _ => TileSize::Thumbnail,
            };
            video.extend(shown.into_iter().map(|c| (c.clone(), size)));
        }
        View::Speaker => {
            let camera_of = |who: &str| others.iter().find(|p| p.participant == who).and_then(|p| p.camera.clone());
            let speaker_camera = meeting
                .speakers
                .iter()
                .filter(|s| s.as_str() != subscriber)
                .find_map(|s| camera_of(s))
                .or_else(|| others.iter().find_map(|p| p.camera.clone()));
            if let Some(camera) = speaker_camera {
                let size = if screen.is_some() { TileSize::Thumbnail } else { TileSize::Large };
                video.push((camera, size));
            }
        }
    }

    let microphone_of = |who: &str| others.iter().find(|p| p.participant == who).and_then(|p| p.microphone.clone());
    let mut audio_tracks: Vec<String> =
        meeting.speakers.iter().filter(|s| s.as_str() != subscriber).filter_map(|s| microphone_of(s)).collect();
    let audio_tracks = match audio {
        AudioPolicy::Everyone => {
            for p in &others {
                if let Some(m) = &p.microphone
                    && !audio_tracks.contains(m)
                {
                    audio_tracks.push(m.clone());
                }
            }
            audio_tracks
        }
        AudioPolicy::Loudest(n) => {
            audio_tracks.truncate(n);
            audio_tracks
        }
    };
    Ok(Plan { video, audio: audio_tracks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(name: &str) -> Publisher {
        Publisher {
            participant: name.to_owned(),
            room: None,
            camera: Some(format!("{name}/cam")),
            microphone: Some(format!("{name}/mic")),
            screen: None,
        }
    }

    fn meeting(n: usize) -> MeetingMedia {
        MeetingMedia { publishers: (0..n).map(|i| publisher(&format!("p{i}"))).collect(), ..Default::default() }
    }

    fn cams(plan: &Plan) -> Vec<&str> {
        plan.video.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn gallery_pages_exclude_self_and_shrink_tiles_as_they_fill() {
        let m = meeting(31);
        let p = plan(&m, "p0", View::Gallery { page: 0, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(p.video.len(), 25);
        assert_eq!(p.video[0], ("p1/cam".to_owned(), TileSize::Thumbnail));
        assert!(!cams(&p).contains(&"p0/cam"));
        let p2 = plan(&m, "p0", View::Gallery { page: 1, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(cams(&p2), (26..31).map(|i| format!("p{i}/cam")).collect::<Vec<_>>());
        let past = plan(&m, "p0", View::Gallery { page: 9, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(past, p2, "a page past the end shows the last page");

        let small = meeting(3);
        let p = plan(&small, "p0", View::Gallery { page: 0, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert!(p.video.iter().all(|(_, s)| *s == TileSize::Medium));
        let two = meeting(2);
        let p = plan(&two, "p0", View::Gallery { page: 0, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(p.video, vec![("p1/cam".to_owned(), TileSize::Large)]);
    }

    #[test]
    fn page_size_is_validated() {
        let m = meeting(3);
        for bad in [0, 26, u32::MAX] {
            let r = plan(&m, "p0", View::Gallery { page: 0, page_size: bad }, AudioPolicy::Everyone);
            assert_eq!(r, Err(ViewError::PageSize(bad)));
        }
        let alone = plan(&meeting(1), "p0", View::Gallery { page: 3, page_size: 1 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(alone, Plan::default(), "alone in the meeting: nothing to receive");
    }

    #[test]
    fn speaker_view_shows_the_active_speaker_or_the_previous_one_to_the_speaker() {
        let mut m = meeting(4);
        m.speakers = vec!["p2".into(), "p3".into()];
        let p = plan(&m, "p0", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(p.video, vec![("p2/cam".to_owned(), TileSize::Large)]);
        let p = plan(&m, "p2", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(p.video, vec![("p3/cam".to_owned(), TileSize::Large)], "the speaker sees the previous speaker");
        m.speakers.clear();
        let p = plan(&m, "p0", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(cams(&p), vec!["p1/cam"], "nobody spoke yet: first other camera");
        m.publishers[2].camera = None;
        m.speakers = vec!["p2".into()];
        let p = plan(&m, "p0", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(cams(&p), vec!["p1/cam"], "speaker without camera: first other camera");
    }

    #[test]
    fn a_screen_share_takes_the_stage_except_for_the_sharer() {
        let mut m = meeting(4);
        m.publishers[1].screen = Some("p1/screen".into());
        m.screen_sharer = Some("p1".into());
        m.speakers = vec!["p3".into()];
        let g = plan(&m, "p0", View::Gallery { page: 0, page_size: 4 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(g.video[0], ("p1/screen".to_owned(), TileSize::Full));
        assert!(g.video[1..].iter().all(|(_, s)| *s == TileSize::Thumbnail));
        assert_eq!(g.video.len(), 4);
        let s = plan(&m, "p0", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(s.video, vec![("p1/screen".to_owned(), TileSize::Full), ("p3/cam".to_owned(), TileSize::Thumbnail)]);
        let sharer = plan(&m, "p1", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(sharer.video, vec![("p3/cam".to_owned(), TileSize::Large)], "no echo of one's own screen");
        m.publishers[1].screen = None;
        let gone = plan(&m, "p0", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(gone.video, vec![("p3/cam".to_owned(), TileSize::Large)], "sharer without a screen track");
    }

    #[test]
    fn audio_is_everyone_else_or_the_loudest_n() {
        let mut m = meeting(5);
        m.speakers = vec!["p3".into(), "p0".into(), "p4".into()];
        m.publishers[1].microphone = None;
        let all = plan(&m, "p0", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(all.audio, vec!["p3/mic", "p4/mic", "p2/mic"], "loudest first, then the rest, no self");
        let two = plan(&m, "p0", View::Speaker, AudioPolicy::Loudest(2)).unwrap();
        assert_eq!(two.audio, vec!["p3/mic", "p4/mic"]);
        let none = plan(&m, "p0", View::Speaker, AudioPolicy::Loudest(0)).unwrap();
        assert!(none.audio.is_empty());
    }

    #[test]
    fn a_breakout_room_sees_and_hears_only_its_own_members() {
        let mut m = meeting(5);
        for (i, room) in [None, Some(1), Some(1), Some(2), None].into_iter().enumerate() {
            m.publishers[i].room = room;
        }
        m.speakers = vec!["p3".into(), "p1".into(), "p4".into()];
        m.screen_sharer = Some("p2".into());
        m.publishers[2].screen = Some("p2/screen".into());
        let main = plan(&m, "p0", View::Gallery { page: 0, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(cams(&main), ["p4/cam"], "the main room: p4 only; p2's screen is in room 1");
        assert_eq!(main.audio, ["p4/mic"]);
        let room1 = plan(&m, "p1", View::Speaker, AudioPolicy::Everyone).unwrap();
        assert_eq!(
            room1.video,
            vec![("p2/screen".to_owned(), TileSize::Full), ("p2/cam".to_owned(), TileSize::Thumbnail)],
            "room 1's share; the loudest (p3, in room 2) is not room 1's speaker"
        );
        assert_eq!(room1.audio, ["p2/mic"]);
        let alone = plan(&m, "p3", View::Gallery { page: 0, page_size: 25 }, AudioPolicy::Everyone).unwrap();
        assert_eq!(alone, Plan::default(), "alone in room 2");
    }

    #[test]
    fn tile_heights_grow_with_size() {
        let sizes = [TileSize::Thumbnail, TileSize::Medium, TileSize::Large, TileSize::Full];
        assert!(sizes.windows(2).all(|w| w[0].height() < w[1].height() && w[0] < w[1]));
    }
}
