//! The pure half of compose: spec + probed track durations → layout over time + filtergraph.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use super::{ComposeSpec, Layout, TrackKind};
use crate::media_error::{MediaError, secs};

/// The font every name is drawn with (Debian `fonts-dejavu-core`).
pub const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Gaps in a participant's tracks shorter than this (a node failover, a republish) keep their
/// tile on screen (dark, with the name); a longer absence removes the tile until they return.
pub const PRESENCE_BRIDGE: Duration = Duration::from_secs(30);

const CANVAS_COLOR: &str = "0x111111";
const TILE_COLOR: &str = "0x2b2b2b";
const MAX_LABEL_CHARS: usize = 40;
const SAMPLE_RATE: u64 = 48_000;

/// What the planner needs to know about a track file (from ffprobe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    pub duration: Duration,
    pub has_video: bool,
    pub has_audio: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileClass {
    /// The main view (active speaker or screen share).
    Large,
    /// A thumbnail in the strip below the main view.
    Strip,
    /// A gallery grid cell.
    Cell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.x + other.w <= self.x + self.w
            && other.y + other.h <= self.y + self.h
    }
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileSource {
    Participant(Uuid),
    /// A screen share; `track` indexes `spec.tracks`.
    Screen {
        track: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub source: TileSource,
    pub class: TileClass,
    pub rect: Rect,
    /// The track (index into `spec.tracks`) whose picture fills the tile; `None` for a
    /// participant whose camera is off: a dark tile with the name.
    pub video: Option<usize>,
}

/// A stretch of the recording with one fixed arrangement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSegment {
    pub start: Duration,
    pub end: Duration,
    /// The active speaker during the segment (after falling back for absent speakers).
    pub speaker: Option<Uuid>,
    pub tiles: Vec<Tile>,
}

impl LayoutSegment {
    pub fn tile_of(&self, source: TileSource) -> Option<&Tile> {
        self.tiles.iter().find(|t| t.source == source)
    }
    pub fn large(&self) -> Option<&Tile> {
        self.tiles.iter().find(|t| t.class == TileClass::Large)
    }
}

/// Everything ffmpeg needs, and the layout it encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPlan {
    /// `-i` inputs in order (`[k:v:0]` / `[k:a:0]` in the graph refer to these).
    pub inputs: Vec<PathBuf>,
    /// The `-filter_complex_script` text.
    pub graph: String,
    /// Output pad labels (without brackets) to `-map`.
    pub video_out: String,
    pub audio_out: String,
    /// The layout over time: consecutive, covering `0..duration`.
    pub segments: Vec<LayoutSegment>,
    pub duration: Duration,
}

impl FilterPlan {
    /// The segment covering `t` (the last one for `t >= duration`).
    pub fn at(&self, t: Duration) -> Option<&LayoutSegment> {
        self.segments.iter().find(|s| t >= s.start && t < s.end).or_else(|| self.segments.last())
    }
}

/// Escapes `s` for use as one option value inside a filtergraph description: first the
/// option level (`\`, `'`, `:` and `=`), then the graph level (`\`, `'`, `[`, `]`, `,`, `;`),
/// each with a backslash, as ffmpeg's two-level quoting rules require. Use with
/// `drawtext=expansion=none` so `%` is literal too.
pub fn escape_filter_value(s: &str) -> String {
    fn level(s: &str, special: &[char]) -> String {
        let mut out = String::with_capacity(s.len() * 2);
        for c in s.chars() {
            if special.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }
    let opt = level(s, &['\\', '\'', ':', '=']);
    level(&opt, &['\\', '\'', '[', ']', ',', ';'])
}

/// A display name made safe to draw: control characters (newlines would break the script
/// file) become spaces, outer whitespace is trimmed (ffmpeg would strip it), long names are
/// cut, an empty one becomes "Guest".
fn clean_label(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let s = s.trim();
    if s.is_empty() {
        return "Guest".into();
    }
    if s.chars().count() > MAX_LABEL_CHARS {
        let mut cut: String = s.chars().take(MAX_LABEL_CHARS - 1).collect();
        cut.truncate(cut.trim_end().len());
        cut.push('…');
        cut
    } else {
        s.to_string()
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

/// The largest 16:9 box (even sides) inside `w x h`.
fn fit_16_9(w: u32, h: u32) -> (u32, u32) {
    let bw = w.min(h * 16 / 9);
    (even(bw).max(2), even(bw * 9 / 16).max(2))
}

/// Tile geometry of one spec.
struct Geometry {
    width: u32,
    margin: u32,
    large: Rect,
    strip_w: u32,
    strip_h: u32,
    strip_y: u32,
    cell_w: u32,
    cell_h: u32,
    cols: u32,
    cell_box: (u32, u32),
}

impl Geometry {
    fn new(width: u32, height: u32, max_strip: u32, gallery_slots: u32) -> Geometry {
        let margin = even(height / 90).max(2);
        let band = even(height / 5);
        let (lw, lh) = fit_16_9(width - 2 * margin, height - band - margin);
        let large = Rect { x: even((width - lw) / 2), y: margin, w: lw, h: lh };
        let n = max_strip.max(1);
        let (mut sw, mut sh) = fit_16_9(width, band - 2 * margin);
        let avail = width - 2 * margin;
        if n * sw + (n - 1) * margin > avail {
            sw = even((avail.saturating_sub((n - 1) * margin)) / n).max(16);
            sh = even(sw * 9 / 16).max(10);
        }
        let strip_y = even(height - band + (band - sh) / 2);
        let slots = gallery_slots.max(1);
        let cols = (1..=slots).find(|c| c * c >= slots).unwrap_or(1);
        let rows = slots.div_ceil(cols);
        let (box_w, box_h) = (width / cols, height / rows);
        let (cell_w, cell_h) = fit_16_9(box_w.saturating_sub(margin).max(2), box_h.saturating_sub(margin).max(2));
        Geometry {
            width,
            margin,
            large,
            strip_w: sw,
            strip_h: sh,
            strip_y,
            cell_w,
            cell_h,
            cols,
            cell_box: (box_w, box_h),
        }
    }

    fn size(&self, class: TileClass) -> (u32, u32) {
        match class {
            TileClass::Large => (self.large.w, self.large.h),
            TileClass::Strip => (self.strip_w, self.strip_h),
            TileClass::Cell => (self.cell_w, self.cell_h),
        }
    }

    /// Position `i` of a strip holding `n` tiles (centred).
    fn strip(&self, i: u32, n: u32) -> Rect {
        let total = n * self.strip_w + n.saturating_sub(1) * self.margin;
        let x0 = self.width.saturating_sub(total) / 2;
        Rect { x: even(x0 + i * (self.strip_w + self.margin)), y: self.strip_y, w: self.strip_w, h: self.strip_h }
    }

    fn cell(&self, slot: u32) -> Rect {
        let (bw, bh) = self.cell_box;
        let (col, row) = (slot % self.cols, slot / self.cols);
        Rect {
            x: even(col * bw + (bw - self.cell_w) / 2),
            y: even(row * bh + (bh - self.cell_h) / 2),
            w: self.cell_w,
            h: self.cell_h,
        }
    }

    fn font_size(&self, class: TileClass) -> u32 {
        let (_, h) = self.size(class);
        match class {
            TileClass::Large => (h / 20).clamp(14, 32),
            TileClass::Strip => (h / 7).clamp(10, 22),
            TileClass::Cell => (h / 14).clamp(12, 28),
        }
    }
}

/// A half-open interval on the recording clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: Duration,
    end: Duration,
}

impl Span {
    fn contains(&self, t: Duration) -> bool {
        t >= self.start && t < self.end
    }
}

struct Participant {
    id: Uuid,
    label: String,
    /// Merged presence (gaps under [`PRESENCE_BRIDGE`] bridged).
    presence: Vec<Span>,
    /// Camera tracks (indexes into `spec.tracks`), by start time.
    cameras: Vec<usize>,
}

impl Participant {
    fn present(&self, t: Duration) -> bool {
        self.presence.iter().any(|s| s.contains(t))
    }
}

/// What a segment shows before geometry is applied.
#[derive(Clone, PartialEq, Eq)]
enum Arrangement {
    Speaker { large: usize, strip: Vec<usize> },
    Screen { track: usize, strip: Vec<usize> },
    Gallery { members: Vec<usize> },
    Empty,
}

/// The layout over time and the filtergraph for `spec`; `infos[i]` describes `spec.tracks[i]`.
pub fn plan(spec: &ComposeSpec, infos: &[TrackInfo]) -> Result<FilterPlan, MediaError> {
    validate(spec, infos)?;
    let dur = spec.duration;

    // Each track's window on the recording clock, clamped to the recording.
    let windows: Vec<Option<Span>> = spec
        .tracks
        .iter()
        .zip(infos)
        .map(|(t, i)| {
            let end = (t.offset + i.duration).min(dur);
            (t.offset < end).then_some(Span { start: t.offset, end })
        })
        .collect();
    let has_picture = |i: usize| infos[i].has_video && windows[i].is_some();

    // Participants in order of first appearance.
    let mut order: Vec<usize> = (0..spec.tracks.len()).filter(|&i| windows[i].is_some()).collect();
    order.sort_by_key(|&i| (spec.tracks[i].offset, i));
    let mut people: Vec<Participant> = Vec::new();
    let mut index_of: BTreeMap<Uuid, usize> = BTreeMap::new();
    for &i in &order {
        let t = &spec.tracks[i];
        let p = *index_of.entry(t.participant).or_insert_with(|| {
            people.push(Participant { id: t.participant, label: String::new(), presence: vec![], cameras: vec![] });
            people.len() - 1
        });
        let person = &mut people[p];
        if person.label.trim().is_empty() && t.kind != TrackKind::Screen {
            person.label = t.label.clone();
        }
        if let Some(w) = windows[i] {
            person.presence.push(w);
        }
        if t.kind == TrackKind::Camera && has_picture(i) {
            person.cameras.push(i);
        }
    }
    for person in &mut people {
        person.presence.sort_by_key(|s| s.start);
        let mut merged: Vec<Span> = Vec::new();
        for s in person.presence.drain(..) {
            match merged.last_mut() {
                Some(last) if s.start <= last.end + PRESENCE_BRIDGE => {
                    last.end = last.end.max(s.end);
                }
                _ => merged.push(s),
            }
        }
        person.presence = merged;
        person.label = clean_label(&person.label);
    }
    let screens: Vec<usize> =
        order.iter().copied().filter(|&i| spec.tracks[i].kind == TrackKind::Screen && has_picture(i)).collect();

    // Segment boundaries: every track edge, every presence edge, every speaker change.
    let mut cuts: BTreeSet<Duration> = BTreeSet::from([Duration::ZERO, dur]);
    for w in windows.iter().flatten() {
        cuts.insert(w.start);
        cuts.insert(w.end);
    }
    for p in &people {
        for s in &p.presence {
            cuts.insert(s.start);
            cuts.insert(s.end.min(dur));
        }
    }
    let mut speakers: Vec<(Duration, Uuid)> = spec.speakers.iter().copied().filter(|(t, _)| *t < dur).collect();
    speakers.sort_by_key(|(t, _)| *t);
    for (t, _) in &speakers {
        cuts.insert(*t);
    }
    let cuts: Vec<Duration> = cuts.into_iter().collect();

    // Gallery slots: a participant keeps one cell from first arrival to last departure; the
    // lowest free cell is taken (greedy interval colouring: as few cells as ever overlap).
    let mut slot_of: Vec<u32> = vec![0; people.len()];
    let mut slot_free_at: Vec<Duration> = Vec::new();
    for (p, person) in people.iter().enumerate() {
        let (Some(first), Some(last)) = (person.presence.first(), person.presence.last()) else { continue };
        match slot_free_at.iter().position(|free| *free <= first.start) {
            Some(s) => {
                slot_free_at[s] = last.end;
                slot_of[p] = s as u32;
            }
            None => {
                slot_of[p] = slot_free_at.len() as u32;
                slot_free_at.push(last.end);
            }
        }
    }

    // Pass 1: what each segment shows.
    let mut raw: Vec<(Span, Option<Uuid>, Arrangement)> = Vec::new();
    let mut next_speaker = 0usize;
    let mut named: Option<Uuid> = None;
    let mut prev_large: Option<usize> = None;
    for w in cuts.windows(2) {
        let span = Span { start: w[0], end: w[1] };
        let t = span.start;
        while next_speaker < speakers.len() && speakers[next_speaker].0 <= t {
            named = Some(speakers[next_speaker].1);
            next_speaker += 1;
        }
        let present: Vec<usize> = (0..people.len()).filter(|&p| people[p].present(t)).collect();
        let screen = screens
            .iter()
            .copied()
            .filter(|&i| windows[i].is_some_and(|w| w.contains(t)))
            .max_by_key(|&i| (spec.tracks[i].offset, i));
        let speaker = named
            .and_then(|id| index_of.get(&id).copied())
            .filter(|p| present.contains(p))
            .or(prev_large.filter(|p| present.contains(p)))
            .or(present.first().copied());
        let arrangement = if let Some(track) = screen {
            Arrangement::Screen { track, strip: present.clone() }
        } else if present.is_empty() {
            Arrangement::Empty
        } else if spec.layout == Layout::Gallery {
            Arrangement::Gallery { members: present.clone() }
        } else {
            match speaker {
                Some(large) => {
                    Arrangement::Speaker { large, strip: present.iter().copied().filter(|&p| p != large).collect() }
                }
                None => Arrangement::Empty,
            }
        };
        if let Arrangement::Speaker { large, .. } = arrangement {
            prev_large = Some(large);
        }
        raw.push((span, speaker.map(|p| people[p].id), arrangement));
    }

    let max_strip = raw
        .iter()
        .map(|(_, _, a)| match a {
            Arrangement::Speaker { strip, .. } | Arrangement::Screen { strip, .. } => strip.len() as u32,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let geo = Geometry::new(spec.width, spec.height, max_strip, slot_free_at.len() as u32);

    // Pass 2: geometry and pictures.
    let camera_at = |p: usize, t: Duration| -> Option<usize> {
        people[p]
            .cameras
            .iter()
            .copied()
            .filter(|&i| windows[i].is_some_and(|w| w.contains(t)))
            .max_by_key(|&i| (spec.tracks[i].offset, i))
    };
    let person_tile = |p: usize, class: TileClass, rect: Rect, t: Duration| Tile {
        source: TileSource::Participant(people[p].id),
        class,
        rect,
        video: camera_at(p, t),
    };
    let strip_tiles = |strip: &[usize], t: Duration| -> Vec<Tile> {
        let n = strip.len() as u32;
        strip.iter().enumerate().map(|(k, &p)| person_tile(p, TileClass::Strip, geo.strip(k as u32, n), t)).collect()
    };
    let mut segments: Vec<LayoutSegment> = Vec::new();
    for (span, speaker, arrangement) in &raw {
        let t = span.start;
        let tiles: Vec<Tile> = match arrangement {
            Arrangement::Empty => vec![],
            Arrangement::Speaker { large, strip } => {
                let mut v = vec![person_tile(*large, TileClass::Large, geo.large, t)];
                v.extend(strip_tiles(strip, t));
                v
            }
            Arrangement::Screen { track, strip } => {
                let mut v = vec![Tile {
                    source: TileSource::Screen { track: *track },
                    class: TileClass::Large,
                    rect: geo.large,
                    video: Some(*track),
                }];
                v.extend(strip_tiles(strip, t));
                v
            }
            Arrangement::Gallery { members } => {
                members.iter().map(|&p| person_tile(p, TileClass::Cell, geo.cell(slot_of[p]), t)).collect()
            }
        };
        match segments.last_mut() {
            Some(last) if last.end == span.start && last.tiles == tiles && last.speaker == *speaker => {
                last.end = span.end
            }
            _ => segments.push(LayoutSegment { start: span.start, end: span.end, speaker: *speaker, tiles }),
        }
    }

    Ok(build_graph(spec, infos, &windows, &people, &index_of, &geo, segments))
}

fn validate(spec: &ComposeSpec, infos: &[TrackInfo]) -> Result<(), MediaError> {
    if spec.tracks.is_empty() {
        return Err(MediaError::NoInput);
    }
    if infos.len() != spec.tracks.len() {
        return Err(MediaError::Invalid(format!("{} track infos for {} tracks", infos.len(), spec.tracks.len())));
    }
    if !spec.width.is_multiple_of(2) || !spec.height.is_multiple_of(2) || spec.width < 160 || spec.height < 90 {
        return Err(MediaError::Invalid(format!(
            "frame size {}x{} must be even and at least 160x90",
            spec.width, spec.height
        )));
    }
    if spec.width > 7680 || spec.height > 4320 {
        return Err(MediaError::Invalid(format!("frame size {}x{} is larger than 7680x4320", spec.width, spec.height)));
    }
    if !(1..=60).contains(&spec.fps) {
        return Err(MediaError::Invalid(format!("fps {} is not in 1..=60", spec.fps)));
    }
    if spec.duration < Duration::from_millis(100) {
        return Err(MediaError::Invalid(format!("duration {:?} is too short", spec.duration)));
    }
    Ok(())
}

/// One placement of a tile stream on the canvas.
struct Run {
    start: Duration,
    end: Duration,
    x: u32,
    y: u32,
}

fn push_run(runs: &mut Vec<Run>, seg: &LayoutSegment, rect: Rect) {
    match runs.last_mut() {
        Some(r) if r.end == seg.start && r.x == rect.x && r.y == rect.y => r.end = seg.end,
        _ => runs.push(Run { start: seg.start, end: seg.end, x: rect.x, y: rect.y }),
    }
}

fn window_expr(start: Duration, end: Duration) -> String {
    format!("gte(t,{})*lt(t,{})", secs(start), secs(end))
}

/// `enable` over runs; `None` when the runs cover the whole recording.
fn enable_expr(runs: &[Run], dur: Duration) -> Option<String> {
    if runs.len() == 1 && runs[0].start.is_zero() && runs[0].end >= dur {
        return None;
    }
    Some(runs.iter().map(|r| window_expr(r.start, r.end)).collect::<Vec<_>>().join("+"))
}

/// A coordinate as a piecewise expression of `t` (a constant when it never changes).
fn coord_expr(runs: &[Run], pick: impl Fn(&Run) -> u32) -> String {
    let first = runs.first().map(&pick).unwrap_or(0);
    if runs.iter().all(|r| pick(r) == first) {
        return first.to_string();
    }
    let terms: Vec<String> =
        runs.iter().filter(|r| pick(r) != 0).map(|r| format!("{}*{}", pick(r), window_expr(r.start, r.end))).collect();
    if terms.is_empty() { "0".into() } else { terms.join("+") }
}

fn build_graph(
    spec: &ComposeSpec,
    infos: &[TrackInfo],
    windows: &[Option<Span>],
    people: &[Participant],
    index_of: &BTreeMap<Uuid, usize>,
    geo: &Geometry,
    segments: Vec<LayoutSegment>,
) -> FilterPlan {
    let dur = spec.duration;
    let d = secs(dur);
    let fps = spec.fps;

    // Tile streams: (participant, class) → runs on the canvas and the camera tracks it shows;
    // screen tracks → runs.
    let mut tile_runs: BTreeMap<(usize, TileClass), Vec<Run>> = BTreeMap::new();
    let mut tile_cams: BTreeMap<(usize, TileClass), BTreeSet<usize>> = BTreeMap::new();
    let mut screen_runs: BTreeMap<usize, Vec<Run>> = BTreeMap::new();
    for seg in &segments {
        for tile in &seg.tiles {
            match tile.source {
                TileSource::Participant(id) => {
                    let Some(&p) = index_of.get(&id) else { continue };
                    push_run(tile_runs.entry((p, tile.class)).or_default(), seg, tile.rect);
                    let cams = tile_cams.entry((p, tile.class)).or_default();
                    if let Some(v) = tile.video {
                        cams.insert(v);
                    }
                }
                TileSource::Screen { track } => push_run(screen_runs.entry(track).or_default(), seg, tile.rect),
            }
        }
    }

    // Inputs: every audio track with sound inside the recording, every video track shown.
    let mut video_uses: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (&(p, class), cams) in &tile_cams {
        for &c in cams {
            video_uses.entry(c).or_default().push(format!("v{c}_{}_{}", p, class_tag(class)));
        }
    }
    for &track in screen_runs.keys() {
        video_uses.entry(track).or_default().push(format!("v{track}_screen"));
    }
    let audio_tracks: Vec<usize> = (0..spec.tracks.len())
        .filter(|&i| spec.tracks[i].kind == TrackKind::Audio && infos[i].has_audio && windows[i].is_some())
        .collect();
    let mut input_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut inputs: Vec<PathBuf> = Vec::new();
    for &i in video_uses.keys().chain(audio_tracks.iter()) {
        input_of.entry(i).or_insert_with(|| {
            inputs.push(spec.tracks[i].path.clone());
            inputs.len() - 1
        });
    }

    let mut g = String::new();
    // Video sources: shifted onto the recording clock, split once per tile stream using them.
    for (&track, uses) in &video_uses {
        let k = input_of[&track];
        let off = secs(spec.tracks[track].offset);
        let outs: String = uses.iter().map(|u| format!("[{u}]")).collect();
        if uses.len() == 1 {
            let _ = writeln!(g, "[{k}:v:0]setpts=PTS-STARTPTS+{off}/TB{outs};");
        } else {
            let _ = writeln!(g, "[{k}:v:0]setpts=PTS-STARTPTS+{off}/TB,split={}{outs};", uses.len());
        }
    }

    let font = escape_filter_value(FONT_FILE);
    let label_filter = |text: &str, class: TileClass| {
        let fs = geo.font_size(class);
        let pad = (fs / 2).max(4);
        format!(
            "drawtext=fontfile={font}:expansion=none:text={}:fontsize={fs}:fontcolor=white:box=1:\
             boxcolor=black@0.55:boxborderw={}:x={pad}:y=h-th-{pad}",
            escape_filter_value(text),
            (fs / 4).max(2)
        )
    };
    // One tile stream per (participant, class): dark tile, cameras over their windows, name.
    let mut canvas_layers: Vec<(String, String, String, Option<String>)> = Vec::new();
    for (&(p, class), runs) in &tile_runs {
        let tag = format!("t{p}_{}", class_tag(class));
        let (tw, th) = geo.size(class);
        let mut cur = format!("{tag}_bg");
        let _ = writeln!(g, "color=c={TILE_COLOR}:s={tw}x{th}:r={fps}:d={d},format=yuv420p[{cur}];");
        let cams = tile_cams.get(&(p, class)).cloned().unwrap_or_default();
        let mut cams: Vec<usize> = cams.into_iter().collect();
        // Later tracks on top: where a republish overlaps the old track, the new one shows.
        cams.sort_by_key(|&c| (spec.tracks[c].offset, c));
        for (n, &c) in cams.iter().enumerate() {
            let Some(w) = windows[c] else { continue };
            let src = format!("v{c}_{}_{}", p, class_tag(class));
            let next = format!("{tag}_{n}");
            let _ = writeln!(
                g,
                "[{src}]scale={tw}:{th}:force_original_aspect_ratio=decrease:force_divisible_by=2:flags=bilinear[{src}s];"
            );
            let _ = writeln!(
                g,
                "[{cur}][{src}s]overlay=x=(W-w)/2:y=(H-h)/2:eof_action=pass:enable='{}'[{next}];",
                window_expr(w.start, w.end)
            );
            cur = next;
        }
        let _ = writeln!(g, "[{cur}]{}[{tag}];", label_filter(&people[p].label, class));
        canvas_layers.push((tag, coord_expr(runs, |r| r.x), coord_expr(runs, |r| r.y), enable_expr(runs, dur)));
    }
    // Screen shares: letterboxed into the large view, presenter named.
    for (&track, runs) in &screen_runs {
        let tag = format!("s{track}");
        let (tw, th) = geo.size(TileClass::Large);
        let Some(w) = windows[track] else { continue };
        let _ = writeln!(g, "color=c=black:s={tw}x{th}:r={fps}:d={d},format=yuv420p[{tag}_bg];");
        let _ = writeln!(
            g,
            "[v{track}_screen]scale={tw}:{th}:force_original_aspect_ratio=decrease:force_divisible_by=2:flags=bilinear[{tag}_sc];"
        );
        let _ = writeln!(
            g,
            "[{tag}_bg][{tag}_sc]overlay=x=(W-w)/2:y=(H-h)/2:eof_action=pass:enable='{}'[{tag}_0];",
            window_expr(w.start, w.end)
        );
        let label = clean_label(&format!("{} (screen)", clean_label(&spec.tracks[track].label)));
        let _ = writeln!(g, "[{tag}_0]{}[{tag}];", label_filter(&label, TileClass::Strip));
        canvas_layers.push((tag, coord_expr(runs, |r| r.x), coord_expr(runs, |r| r.y), enable_expr(runs, dur)));
    }

    // The canvas with every layer on it.
    let (cw, ch) = (spec.width, spec.height);
    let mut cur = "cv".to_string();
    let _ = writeln!(g, "color=c={CANVAS_COLOR}:s={cw}x{ch}:r={fps}:d={d},format=yuv420p[{cur}];");
    for (n, (tag, x, y, enable)) in canvas_layers.iter().enumerate() {
        let next = format!("cv{n}");
        let en = enable.as_ref().map(|e| format!(":enable='{e}'")).unwrap_or_default();
        let _ = writeln!(g, "[{cur}][{tag}]overlay=x='{x}':y='{y}':eof_action=pass{en}[{next}];");
        cur = next;
    }
    let video_out = "vout".to_string();
    let _ = writeln!(g, "[{cur}]format=yuv420p[{video_out}];");

    // Audio: each track resampled (gaps filled from timestamps), to mono (a voice track is
    // mono; ffmpeg's mono→stereo upmix would cost 3 dB), delayed to its offset, mixed without
    // level normalisation, out as stereo, padded/trimmed to the recording.
    let audio_out = "aout".to_string();
    if audio_tracks.is_empty() {
        let _ = writeln!(g, "anullsrc=r={SAMPLE_RATE}:cl=stereo,atrim=end={d}[{audio_out}]");
    } else {
        let mut mix = String::new();
        for &i in &audio_tracks {
            let k = input_of[&i];
            let delay = (spec.tracks[i].offset.as_micros() as u64 * SAMPLE_RATE) / 1_000_000;
            let _ = writeln!(
                g,
                "[{k}:a:0]asetpts=PTS-STARTPTS,aresample={SAMPLE_RATE}:async=1,\
                 aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=mono,\
                 adelay=delays={delay}S:all=1[a{i}];"
            );
            let _ = write!(mix, "[a{i}]");
        }
        let _ = writeln!(
            g,
            "{mix}amix=inputs={}:duration=longest:dropout_transition=0:normalize=0,pan=stereo|c0=c0|c1=c0,\
             apad=whole_dur={d},atrim=end={d}[{audio_out}]",
            audio_tracks.len()
        );
    }

    FilterPlan { inputs, graph: g, video_out, audio_out, segments, duration: dur }
}

fn class_tag(c: TileClass) -> &'static str {
    match c {
        TileClass::Large => "l",
        TileClass::Strip => "s",
        TileClass::Cell => "c",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::ComposeTrack;

    fn s(v: f64) -> Duration {
        Duration::from_secs_f64(v)
    }

    fn track(p: Uuid, label: &str, kind: TrackKind, offset: f64) -> ComposeTrack {
        ComposeTrack {
            path: format!("/in/{label}-{kind:?}-{offset}.webm").into(),
            participant: p,
            label: label.into(),
            kind,
            offset: s(offset),
        }
    }

    fn info(duration: f64, video: bool) -> TrackInfo {
        TrackInfo { duration: s(duration), has_video: video, has_audio: !video }
    }

    /// Alice: cameras 0–4 s and 6–12 s (a failover), audio throughout; Bob joins at 3 s; Alice
    /// shares her screen 5–9 s; Alice speaks, Bob from 7 s.
    fn meeting(layout: Layout) -> (ComposeSpec, Vec<TrackInfo>, Uuid, Uuid) {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let tracks = vec![
            track(a, "Alice", TrackKind::Camera, 0.0),
            track(a, "Alice", TrackKind::Audio, 0.0),
            track(a, "Alice", TrackKind::Camera, 6.0),
            track(b, "Bob", TrackKind::Camera, 3.0),
            track(b, "Bob", TrackKind::Audio, 3.0),
            track(a, "Alice", TrackKind::Screen, 5.0),
        ];
        let infos = vec![
            info(4.0, true),
            info(12.0, false),
            info(6.0, true),
            info(9.0, true),
            info(9.0, false),
            info(4.0, true),
        ];
        let spec = ComposeSpec::new(tracks, s(12.0), layout, vec![(s(0.0), a), (s(7.0), b)]);
        (spec, infos, a, b)
    }

    #[test]
    fn speaker_layout_over_time() {
        let (spec, infos, a, b) = meeting(Layout::Speaker);
        let plan = plan(&spec, &infos).unwrap();
        let pa = TileSource::Participant(a);
        let pb = TileSource::Participant(b);
        let bounds: Vec<(f64, f64)> =
            plan.segments.iter().map(|g| (g.start.as_secs_f64(), g.end.as_secs_f64())).collect();
        assert_eq!(bounds, vec![(0.0, 3.0), (3.0, 4.0), (4.0, 5.0), (5.0, 6.0), (6.0, 7.0), (7.0, 9.0), (9.0, 12.0)]);

        let g = plan.at(s(1.0)).unwrap();
        assert_eq!(g.tiles.len(), 1, "Bob has not joined yet");
        assert_eq!(g.large().map(|t| (t.source, t.video)), Some((pa, Some(0))));

        let g = plan.at(s(3.5)).unwrap();
        assert_eq!(g.large().map(|t| (t.source, t.video)), Some((pa, Some(0))));
        let bob = g.tile_of(pb).unwrap();
        assert_eq!((bob.class, bob.video), (TileClass::Strip, Some(3)));

        let g = plan.at(s(4.5)).unwrap();
        assert_eq!(g.large().map(|t| (t.source, t.video)), Some((pa, None)), "camera gap: dark tile with the name");

        for t in [5.5, 6.5, 8.0] {
            let g = plan.at(s(t)).unwrap();
            assert_eq!(g.large().map(|t| t.source), Some(TileSource::Screen { track: 5 }), "screen is large at {t}");
            assert_eq!(g.tile_of(pa).map(|t| t.class), Some(TileClass::Strip));
            assert_eq!(g.tile_of(pb).map(|t| t.class), Some(TileClass::Strip));
        }
        assert_eq!(plan.at(s(5.5)).unwrap().tile_of(pa).unwrap().video, None);
        assert_eq!(plan.at(s(6.5)).unwrap().tile_of(pa).unwrap().video, Some(2), "second camera track after the gap");
        assert_eq!(plan.at(s(8.0)).unwrap().speaker, Some(b));

        let g = plan.at(s(10.0)).unwrap();
        assert_eq!(g.large().map(|t| (t.source, t.video)), Some((pb, Some(3))));
        assert_eq!(g.tile_of(pa).map(|t| (t.class, t.video)), Some((TileClass::Strip, Some(2))));
    }

    #[test]
    fn tiles_stay_inside_the_frame_and_never_overlap() {
        for layout in [Layout::Speaker, Layout::Gallery] {
            let (spec, infos, _, _) = meeting(layout);
            let plan = plan(&spec, &infos).unwrap();
            let frame = Rect { x: 0, y: 0, w: spec.width, h: spec.height };
            for g in &plan.segments {
                for (i, t) in g.tiles.iter().enumerate() {
                    assert!(frame.contains(&t.rect), "{t:?} outside the frame");
                    assert!(t.rect.x % 2 == 0 && t.rect.y % 2 == 0 && t.rect.w % 2 == 0 && t.rect.h % 2 == 0);
                    for u in &g.tiles[i + 1..] {
                        assert!(!t.rect.overlaps(&u.rect), "{t:?} overlaps {u:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn gallery_cells_are_stable_and_the_screen_takes_the_large_view() {
        let (spec, infos, a, b) = meeting(Layout::Gallery);
        let plan = plan(&spec, &infos).unwrap();
        let pa = TileSource::Participant(a);
        let cell_a = plan.at(s(1.0)).unwrap().tile_of(pa).unwrap().clone();
        assert_eq!(cell_a.class, TileClass::Cell);
        let later = plan.at(s(10.0)).unwrap();
        assert_eq!(later.tile_of(pa).unwrap().rect, cell_a.rect, "Alice keeps her cell when Bob joins");
        assert_eq!(later.tile_of(TileSource::Participant(b)).unwrap().class, TileClass::Cell);
        assert_eq!(plan.at(s(6.0)).unwrap().large().map(|t| t.source), Some(TileSource::Screen { track: 5 }));
    }

    #[test]
    fn absent_or_unknown_speaker_falls_back_to_someone_present() {
        let (mut spec, infos, a, b) = meeting(Layout::Speaker);
        spec.speakers = vec![(s(0.0), b), (s(9.5), Uuid::from_u128(99))];
        let plan = plan(&spec, &infos).unwrap();
        // Bob is named speaker before he joins: Alice (the only one present) is large.
        assert_eq!(plan.at(s(1.0)).unwrap().large().unwrap().source, TileSource::Participant(a));
        assert_eq!(plan.at(s(3.5)).unwrap().large().unwrap().source, TileSource::Participant(b));
        // An unknown speaker keeps the previous large tile.
        assert_eq!(plan.at(s(10.0)).unwrap().large().unwrap().source, TileSource::Participant(b));
    }

    #[test]
    fn audio_is_delayed_by_offset_and_mixed_without_normalisation() {
        let (spec, infos, _, _) = meeting(Layout::Speaker);
        let plan = plan(&spec, &infos).unwrap();
        assert!(plan.graph.contains("adelay=delays=0S:all=1[a1]"), "{}", plan.graph);
        assert!(plan.graph.contains("adelay=delays=144000S:all=1[a4]"), "Bob's audio 3 s late");
        assert!(plan.graph.contains("amix=inputs=2:duration=longest:dropout_transition=0:normalize=0"));
        assert!(plan.graph.contains("apad=whole_dur=12.000,atrim=end=12.000[aout]"), "{}", plan.graph);
        // 3 camera tracks + 1 screen + 2 audio, each opened once.
        assert_eq!(plan.inputs.len(), 6);
    }

    #[test]
    fn audio_only_and_silent_meetings() {
        let a = Uuid::from_u128(7);
        let spec = ComposeSpec::new(vec![track(a, "Solo", TrackKind::Audio, 0.0)], s(5.0), Layout::Speaker, vec![]);
        let plan = plan(&spec, &[info(5.0, false)]).unwrap();
        let g = plan.at(s(1.0)).unwrap();
        assert_eq!(g.large().map(|t| t.video), Some(None), "no camera: dark tile with the name");
        assert!(plan.graph.contains("text=Solo"));

        let spec = ComposeSpec::new(vec![track(a, "Cam", TrackKind::Camera, 0.0)], s(5.0), Layout::Speaker, vec![]);
        let plan = super::plan(&spec, &[info(5.0, true)]).unwrap();
        assert!(plan.graph.contains("anullsrc=r=48000:cl=stereo,atrim=end=5.000[aout]"));
    }

    #[test]
    fn rejects_bad_specs() {
        let a = Uuid::from_u128(7);
        let mut spec = ComposeSpec::new(vec![], s(5.0), Layout::Speaker, vec![]);
        assert!(matches!(plan(&spec, &[]), Err(MediaError::NoInput)));
        spec.tracks.push(track(a, "x", TrackKind::Audio, 0.0));
        spec.width = 1281;
        assert!(matches!(plan(&spec, &[info(1.0, false)]), Err(MediaError::Invalid(_))));
        spec.width = 1280;
        spec.fps = 0;
        assert!(matches!(plan(&spec, &[info(1.0, false)]), Err(MediaError::Invalid(_))));
    }

    /// ffmpeg's `av_get_token` unquoting, applied once per level, must give back the text.
    fn unescape_level(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        let mut quoted = false;
        while let Some(c) = it.next() {
            match c {
                '\\' if !quoted => out.extend(it.next()),
                '\'' => quoted = !quoted,
                _ => out.push(c),
            }
        }
        out
    }

    #[test]
    fn escaping_round_trips_through_both_levels() {
        let nasty = r"O'Brien: 100% \ [cam], x; y=z 'q'";
        let e = escape_filter_value(nasty);
        assert_eq!(unescape_level(&unescape_level(&e)), nasty);
        // Nothing the graph parser (then the option parser) splits on is left bare.
        fn assert_no_bare(s: &str, special: &str) {
            let mut escaped = false;
            for c in s.chars() {
                assert!(escaped || !special.contains(c), "bare {c:?} in {s}");
                escaped = !escaped && c == '\\';
            }
        }
        assert_no_bare(&e, "[],;'");
        assert_no_bare(&unescape_level(&e), ":'");
    }

    #[test]
    fn labels_are_escaped_in_the_graph() {
        let a = Uuid::from_u128(3);
        let name = "Ann: 'the\\boss' 50%, [a];b";
        let spec = ComposeSpec::new(vec![track(a, name, TrackKind::Camera, 0.0)], s(3.0), Layout::Speaker, vec![]);
        let plan = plan(&spec, &[info(3.0, true)]).unwrap();
        let expected = format!("text={}:", escape_filter_value(name));
        assert!(plan.graph.contains(&expected), "{}", plan.graph);
        assert!(!plan.graph.contains(name));
        assert!(plan.graph.contains("expansion=none"));
    }

    #[test]
    fn labels_are_cleaned() {
        assert_eq!(clean_label("  Bob\nSmith\t"), "Bob Smith");
        assert_eq!(clean_label(""), "Guest");
        let long = "x".repeat(100);
        assert_eq!(clean_label(&long).chars().count(), MAX_LABEL_CHARS);
    }

    /// The graph's filter count depends on tracks and participants, not on how often the
    /// speaker changes; changes only add expression terms, linearly.
    #[test]
    fn graph_is_linear_in_layout_changes() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let make = |changes: usize| {
            let len = 2.0 * changes as f64 + 10.0;
            let tracks = vec![track(a, "A", TrackKind::Camera, 0.0), track(b, "B", TrackKind::Camera, 0.0)];
            let speakers = (0..changes).map(|k| (s(k as f64 * 2.0), if k % 2 == 0 { a } else { b })).collect();
            let spec = ComposeSpec::new(tracks, s(len), Layout::Speaker, speakers);
            plan(&spec, &[info(len, true), info(len, true)]).unwrap()
        };
        let (small, big) = (make(10), make(1000));
        let filters = |p: &FilterPlan| p.graph.matches(';').count();
        assert_eq!(filters(&small), filters(&big));
        assert_eq!(big.segments.len(), 1000);
        let per_change = (big.graph.len() - small.graph.len()) as f64 / 990.0;
        assert!(per_change < 300.0, "{per_change} bytes per layout change");
    }

    #[test]
    fn tracks_beyond_the_end_are_ignored() {
        let a = Uuid::from_u128(1);
        let tracks = vec![track(a, "A", TrackKind::Camera, 0.0), track(a, "A", TrackKind::Camera, 20.0)];
        let spec = ComposeSpec::new(tracks, s(10.0), Layout::Speaker, vec![]);
        let plan = plan(&spec, &[info(30.0, true), info(5.0, true)]).unwrap();
        assert_eq!(plan.inputs.len(), 1);
        assert_eq!(plan.segments.len(), 1);
        assert_eq!(plan.segments[0].end, s(10.0));
    }
}
