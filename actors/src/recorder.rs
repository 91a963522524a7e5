//! `RecorderActor`: the capture of one part of one recording, on the node whose media router
//! carries the meeting. A child of that router (started when recording turns on, or when a
//! router starts for a meeting that is being recorded: a failover continues the recording as
//! the next part).
//!
//! ```text
//! publisher's ingest ──RecordSink (try_send)──▶ pump task ──Packets (call: back-pressure)──▶ RecorderActor
//!   (the forwarder's receive path; a full                      one TrackWriter per track: RTP → frames → WebM
//!    queue drops the packet, counted)                          every FLUSH: finished clusters → numbered chunks
//!                                                                   │
//!                                                      uploader task ▼ (in order, retried until stored)
//!                                                  chunks, then the part's manifest → ObjectStore
//! ```
//!
//! Nothing is decoded: each track's packets become frames (depacketised) and frames become
//! WebM blocks (`parley_media::record`). Every few seconds the clusters finished so far go to
//! object storage as the track's next chunk, then the part's manifest (tracks, the speaker and
//! screen-share timeline) is rewritten, so a node killed mid-recording leaves every chunk
//! uploaded before it: a playable file up to a few seconds before the kill.
//!
//! Stopping hands the rest (last chunks, the final manifest, the database update) to a task of
//! its own, so the router and the meeting may stop at once without losing the tail.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_core::recording::{self as rec, PartManifest, TimelineEvent, TrackEntry, TrackKind};
use parley_media::codec::Codec;
use parley_media::forward::{RecordSink, RecordedPacket};
use parley_media::peer::MediaKind;
use parley_media::record::{TrackWriter, TrackWriterStats};
use parley_recording::object_store::ObjectStore;
use parley_store::Store;
use parley_store::recordings::Capture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How often finished clusters are uploaded (and so, at most, how much a killed node loses,
/// plus the writer's own cluster length).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Packets waiting between the receive path and the recorder; beyond it they are dropped.
const TAP_QUEUE: usize = 8192;
/// At most this many packets per batch from the pump to the actor.
const BATCH: usize = 512;
/// How long a stopped recorder keeps trying to store its tail before giving up on it.
const FINISH_DEADLINE: Duration = Duration::from_secs(120);
/// A recorded track asks its publisher for a keyframe at most this often.
const KEYFRAME_EVERY: Duration = Duration::from_secs(1);

pub type RecorderRef = ActorRef<RecorderMsg>;

/// What a recorder needs from its node.
#[derive(Clone)]
pub struct RecordingServices {
    pub objects: Arc<dyn ObjectStore>,
    pub store: Store,
    pub node: String,
    /// How this node composes the recordings it starts (`[recording] layout`).
    pub layout: parley_core::model::RecordingLayout,
}

/// Where a recorder asks for keyframes (its router).
pub trait KeyframeSource: Send + Sync + 'static {
    fn keyframe(&self, publisher: Uuid, track_id: Arc<str>);
}

pub struct RecorderArgs {
    pub meeting_id: Uuid,
    pub capture: Capture,
    pub services: RecordingServices,
    /// Display names of the participants, for tiles and transcript labels.
    pub labels: HashMap<Uuid, String>,
    pub keyframes: Arc<dyn KeyframeSource>,
    /// The receiving end of the tap the router attaches to tracks.
    pub packets: mpsc::Receiver<RecordedPacket>,
}

/// Messages to a recorder.
pub enum RecorderMsg {
    /// The router attached the tap to this published track.
    TrackStarted { publisher: Uuid, track_id: Arc<str>, kind: TrackKind, codec: Codec },
    /// The track ended (unpublished).
    TrackEnded { publisher: Uuid, track_id: Arc<str> },
    /// Every track of this publisher ended (they left, or their peer closed).
    PublisherGone { publisher: Uuid },
    /// The tap's senders are all gone (the router stopped without stopping us).
    TapClosed,
    /// A batch from the tap (the pump waits for the reply: back-pressure).
    Packets(Vec<RecordedPacket>, RpcReplyPort<()>),
    /// The active speaker changed.
    Speaker(Uuid),
    /// A screen share started or stopped.
    ScreenShare { participant: Uuid, on: bool },
    /// Display names changed (somebody joined).
    Labels(HashMap<Uuid, String>),
    /// Time to upload what is finished.
    Flush,
    /// Stop capturing. `finish`: the recording is over (queue its processing); otherwise only
    /// this part is (the meeting moves to another node, which continues it). Replies once the
    /// tail is handed over (not stored yet).
    Stop { finish: bool, reply: RpcReplyPort<()> },
}

impl ractor::Message for RecorderMsg {}

/// The receive path's side of the tap: never waits.
pub struct Tap {
    tx: mpsc::Sender<RecordedPacket>,
    dropped: AtomicU64,
}

impl Tap {
    /// A tap and the receiver to give the recorder.
    pub fn new() -> (Arc<Tap>, mpsc::Receiver<RecordedPacket>) {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        (Arc::new(Tap { tx, dropped: AtomicU64::new(0) }), rx)
    }

    /// Packets the queue had no room for.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl RecordSink for Tap {
    fn on_packet(&self, p: &RecordedPacket) {
        if self.tx.try_send(p.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Track {
    publisher: Uuid,
    entry: TrackEntry,
    writer: Option<TrackWriter>,
    kind: MediaKind,
    codec: Codec,
    next_chunk: u32,
    /// When its first packet came (a writer that could not start stays `None`).
    first: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// The ended writer's last bytes, for the next flush.
    tail: Option<Vec<u8>>,
    ended: bool,
}

pub struct RecorderState {
    meeting_id: Uuid,
    capture: Capture,
    services: RecordingServices,
    labels: HashMap<Uuid, String>,
    keyframes: Arc<dyn KeyframeSource>,
    /// The part's clock zero.
    started: Instant,
    tracks: HashMap<(Uuid, Arc<str>), Track>,
    /// How many tracks of each (participant, kind) were opened, for unique names.
    counts: HashMap<(Uuid, TrackKind), u32>,
    timeline: Vec<TimelineEvent>,
    uploads: mpsc::UnboundedSender<Batch>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    pump: Option<tokio::task::AbortHandle>,
    stopped: bool,
}

/// One flush: chunks first, then the manifest that names them.
struct Batch {
    chunks: Vec<(String, Bytes)>,
    manifest: PartManifest,
}

pub struct RecorderActor;

impl Actor for RecorderActor {
    type Msg = RecorderMsg;
    type State = RecorderState;
    type Arguments = RecorderArgs;

    async fn pre_start(&self, myself: RecorderRef, args: RecorderArgs) -> Result<RecorderState, ActorProcessingErr> {
        let (uploads, queue) = mpsc::unbounded_channel();
        let uploader = tokio::spawn(upload_loop(args.services.objects.clone(), queue, args.capture.recording_id));
        let pump = tokio::spawn(pump(args.packets, myself.clone())).abort_handle();
        myself.send_interval(FLUSH_INTERVAL, || RecorderMsg::Flush);
        tracing::info!(
            meeting_id = %args.meeting_id,
            recording_id = %args.capture.recording_id,
            part = args.capture.part,
            store = %args.services.objects.describe(),
            "recording started"
        );
        Ok(RecorderState {
            meeting_id: args.meeting_id,
            capture: args.capture,
            services: args.services,
            labels: args.labels,
            keyframes: args.keyframes,
            started: Instant::now(),
            tracks: HashMap::new(),
            counts: HashMap::new(),
            timeline: Vec::new(),
            uploads,
            uploader: Some(uploader),
            pump: Some(pump),
            stopped: false,
        })
    }

    async fn post_stop(&self, _myself: RecorderRef, state: &mut RecorderState) -> Result<(), ActorProcessingErr> {
        // Stopped without a Stop (the router stopped or crashed): this part ends here; the
        // recording goes on with the next owner.
        if !state.stopped {
            hand_over(state, false);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: RecorderRef,
        msg: RecorderMsg,
        state: &mut RecorderState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RecorderMsg::TrackStarted { publisher, track_id, kind, codec } => {
                track_started(state, publisher, track_id, kind, codec);
            }
            RecorderMsg::TrackEnded { publisher, track_id } => {
                let at_ms = state.elapsed_ms();
                if let Some(t) = state.tracks.get_mut(&(publisher, track_id))
                    && end_track(t)
                    && t.entry.kind == TrackKind::Screen
                {
                    state.timeline.push(TimelineEvent::ScreenShare { at_ms, participant: publisher, on: false });
                }
            }
            RecorderMsg::PublisherGone { publisher } => {
                let at_ms = state.elapsed_ms();
                let mut screen = false;
                for t in state.tracks.values_mut().filter(|t| t.publisher == publisher) {
                    screen |= end_track(t) && t.entry.kind == TrackKind::Screen;
                }
                if screen {
                    state.timeline.push(TimelineEvent::ScreenShare { at_ms, participant: publisher, on: false });
                }
            }
            RecorderMsg::TapClosed => {
                if !state.stopped {
                    hand_over(state, false);
                    myself.stop(Some("tap closed".into()));
                }
            }
            RecorderMsg::Packets(batch, reply) => {
                for p in batch {
                    packet(state, p);
                }
                let _ = reply.send(());
            }
            RecorderMsg::Speaker(participant) => {
                let at_ms = state.elapsed_ms();
                state.timeline.push(TimelineEvent::Speaker { at_ms, participant });
            }
            RecorderMsg::ScreenShare { participant, on } => {
                let at_ms = state.elapsed_ms();
                state.timeline.push(TimelineEvent::ScreenShare { at_ms, participant, on });
            }
            RecorderMsg::Labels(labels) => {
                for t in state.tracks.values_mut() {
                    if let Some(l) = labels.get(&t.publisher) {
                        t.entry.label = l.clone();
                    }
                }
                state.labels = labels;
            }
            RecorderMsg::Flush => flush(state, false),
            RecorderMsg::Stop { finish, reply } => {
                hand_over(state, finish);
                let _ = reply.send(());
                myself.stop(Some("recording stopped".into()));
            }
        }
        Ok(())
    }
}

impl RecorderState {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Drains the tap into the actor in batches, waiting for each to be taken.
async fn pump(mut rx: mpsc::Receiver<RecordedPacket>, actor: RecorderRef) {
    let mut buf = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut buf, BATCH).await > 0 {
        let batch = std::mem::take(&mut buf);
        if ractor::call!(actor, RecorderMsg::Packets, batch).is_err() {
            return;
        }
    }
    let _ = actor.cast(RecorderMsg::TapClosed);
}

fn track_started(state: &mut RecorderState, publisher: Uuid, track_id: Arc<str>, kind: TrackKind, codec: Codec) {
    let key = (publisher, track_id.clone());
    if state.tracks.get(&key).is_some_and(|t| !t.ended) {
        return;
    }
    let n = state.counts.entry((publisher, kind)).or_insert(0);
    let name = rec::track_name(kind, publisher, *n);
    *n += 1;
    let media_kind = if kind == TrackKind::Audio { MediaKind::Audio } else { MediaKind::Video };
    let entry = TrackEntry {
        name,
        participant: publisher,
        label: state.labels.get(&publisher).cloned().unwrap_or_else(|| "Guest".into()),
        kind,
        codec: codec_name(codec).into(),
        offset_ms: 0,
        duration_ms: 0,
        chunks: 0,
        bytes: 0,
        frames: 0,
        dropped: 0,
    };
    tracing::info!(meeting_id = %state.meeting_id, %publisher, track = %track_id, name = %entry.name, "recording a track");
    // An ended track of the same id (republished) keeps its entry under its old name; the new
    // one is a new file.
    if let Some(old) = state.tracks.remove(&key) {
        state.tracks.insert((publisher, Arc::from(format!("{}#ended", old.entry.name))), old);
    }
    state.tracks.insert(
        key,
        Track {
            publisher,
            entry,
            writer: None,
            kind: media_kind,
            codec,
            next_chunk: 0,
            first: None,
            last_keyframe_request: None,
            tail: None,
            ended: false,
        },
    );
    if kind == TrackKind::Screen {
        let at_ms = state.elapsed_ms();
        state.timeline.push(TimelineEvent::ScreenShare { at_ms, participant: publisher, on: true });
    }
    state.keyframes.keyframe(publisher, track_id);
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Opus => "opus",
        Codec::Vp8 => "vp8",
        Codec::H264 => "h264",
    }
}

fn packet(state: &mut RecorderState, p: RecordedPacket) {
    let Some(t) = state.tracks.get_mut(&(p.publisher, p.track_id.clone())) else { return };
    if t.ended {
        return;
    }
    if t.writer.is_none() {
        if t.first.is_some() {
            return; // not recordable
        }
        // On the part's clock: the file's first frame sits where it happened in the part.
        match TrackWriter::new(t.kind, t.codec, state.started) {
            Ok(w) => {
                t.first = Some(p.arrival);
                t.writer = Some(w);
            }
            Err(e) => {
                tracing::warn!(track = %t.entry.name, error = %e, "track not recordable");
                t.first = Some(p.arrival);
                return;
            }
        }
    }
    let Some(w) = t.writer.as_mut() else { return };
    let out = w.push(&p.packet, p.arrival);
    if out.keyframe_needed {
        let now = Instant::now();
        if t.last_keyframe_request.is_none_or(|at| now.duration_since(at) >= KEYFRAME_EVERY) {
            t.last_keyframe_request = Some(now);
            state.keyframes.keyframe(p.publisher, p.track_id);
        }
    }
}

/// Ends a track's file: its writer's tail becomes its last chunk at the next flush. `false`:
/// it had ended already.
fn end_track(t: &mut Track) -> bool {
    if t.ended {
        return false;
    }
    t.ended = true;
    if let Some(mut w) = t.writer.take() {
        let tail = w.finish();
        note_stats(t, w.stats());
        t.pending_tail(tail);
    }
    true
}

impl Track {
    fn pending_tail(&mut self, tail: Vec<u8>) {
        if !tail.is_empty() {
            self.tail = Some(tail);
        }
    }
}

fn note_stats(t: &mut Track, s: TrackWriterStats) {
    t.entry.frames = s.frames_written;
    t.entry.dropped = s.frames_dropped;
    t.entry.duration_ms = match (s.first_ms, s.last_ms) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => 0,
    };
    if let Some(first) = s.first_ms {
        t.entry.offset_ms = first;
    }
}

/// Takes what every writer has finished (everything, when `last`) and queues it for upload
/// with the manifest that names it.
fn flush(state: &mut RecorderState, last: bool) {
    let mut chunks = Vec::new();
    let rid = state.capture.recording_id;
    let part = state.capture.part;
    for t in state.tracks.values_mut() {
        if last && t.writer.is_some() {
            end_track(t);
        }
        let bytes = match (t.tail.take(), t.writer.as_mut()) {
            (Some(tail), _) => tail,
            (None, Some(w)) => w.take_ready(),
            (None, None) => Vec::new(),
        };
        if let Some(s) = t.writer.as_ref().map(TrackWriter::stats) {
            note_stats(t, s);
        }
        if bytes.is_empty() {
            continue;
        }
        t.entry.bytes += bytes.len() as u64;
        chunks.push((rec::chunk_key(rid, part, &t.entry.name, t.next_chunk), Bytes::from(bytes)));
        t.next_chunk += 1;
        t.entry.chunks = t.next_chunk;
    }
    if chunks.is_empty() && !last {
        return;
    }
    let mut tracks: Vec<TrackEntry> = state.tracks.values().map(|t| t.entry.clone()).collect();
    tracks.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = PartManifest {
        recording_id: rid,
        part,
        node: state.services.node.clone(),
        started_at: state.capture.part_started_at,
        length_ms: state.elapsed_ms(),
        tracks,
        timeline: state.timeline.clone(),
        complete: last,
    };
    if state.uploads.send(Batch { chunks, manifest }).is_err() {
        tracing::error!(recording_id = %rid, "recording uploader gone: chunks lost");
    }
}

/// Stops capture and hands the tail to a task that stores it, then ends the part (and, when
/// `finish`, the recording: its processing is queued).
fn hand_over(state: &mut RecorderState, finish: bool) {
    state.stopped = true;
    if let Some(p) = state.pump.take() {
        p.abort();
    }
    flush(state, true);
    let (closed, _) = mpsc::unbounded_channel();
    // Dropping our sender lets the uploader finish once its queue is empty.
    drop(std::mem::replace(&mut state.uploads, closed));
    let uploader = state.uploader.take();
    let services = state.services.clone();
    let capture = state.capture.clone();
    let meeting_id = state.meeting_id;
    tokio::spawn(async move {
        let drained = match uploader {
            Some(u) => tokio::time::timeout(FINISH_DEADLINE, u).await.is_ok(),
            None => true,
        };
        if !drained {
            tracing::error!(%meeting_id, recording_id = %capture.recording_id, "recording tail not stored in time");
        }
        let storage = format!("{}/{}", services.objects.describe(), rec::recording_prefix(capture.recording_id));
        let res = if finish {
            retry_store(|| services.store.finish_capture(capture.recording_id, &storage)).await.map(|_| ())
        } else {
            retry_store(|| services.store.end_part(capture.recording_id, capture.part)).await
        };
        match res {
            Ok(()) if finish => tracing::info!(
                %meeting_id, recording_id = %capture.recording_id, parts = capture.part, "recording stopped; processing queued"
            ),
            Ok(()) => tracing::info!(
                %meeting_id, recording_id = %capture.recording_id, part = capture.part, "recording part ended here"
            ),
            Err(e) => {
                tracing::error!(%meeting_id, recording_id = %capture.recording_id, error = %e, "recording end not stored")
            }
        }
    });
}

async fn retry_store<F, Fut, T>(mut f: F) -> Result<T, parley_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, parley_store::StoreError>>,
{
    let deadline = Instant::now() + FINISH_DEADLINE;
    let mut wait = Duration::from_millis(200);
    loop {
        match f().await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Stores batches in order: every chunk of a batch, then its manifest. An object store that
/// fails is retried (backing off up to 5 s) until it answers; batches wait meanwhile.
async fn upload_loop(objects: Arc<dyn ObjectStore>, mut queue: mpsc::UnboundedReceiver<Batch>, recording: Uuid) {
    while let Some(batch) = queue.recv().await {
        for (key, body) in batch.chunks {
            put_retrying(objects.as_ref(), &key, body, "video/webm", recording).await;
        }
        match serde_json::to_vec(&batch.manifest) {
            Ok(json) => {
                let key = rec::manifest_key(recording, batch.manifest.part);
                put_retrying(objects.as_ref(), &key, Bytes::from(json), "application/json", recording).await;
            }
            Err(e) => tracing::error!(%recording, error = %e, "manifest not encodable"),
        }
    }
}

async fn put_retrying(objects: &dyn ObjectStore, key: &str, body: Bytes, content_type: &str, recording: Uuid) {
    let mut wait = Duration::from_millis(100);
    let mut warned = false;
    loop {
        match objects.put(key, body.clone(), content_type).await {
            Ok(()) => {
                if warned {
                    tracing::info!(%recording, key, "object store answers again; upload caught up");
                }
                return;
            }
            Err(e) if e.is_retryable() => {
                if !warned {
                    tracing::warn!(%recording, key, error = %e, "object store unavailable; retrying");
                    warned = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(%recording, key, error = %e, "chunk refused by the object store; lost");
                return;
            }
        }
    }
}
