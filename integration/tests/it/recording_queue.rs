//! The recording rows and the processing queue, on real PostgreSQL and SQLite: a job is
//! claimed by one worker at a time, a dead worker's job goes to another once its lease lapses,
//! only the current lease may finish it (exactly once, with one outbox message), failures back
//! off and finally fail the recording with the reason, and a failover continues a recording as
//! its next part.

use std::time::Duration;

use chrono::Utc;
use parley_core::model::{MeetingSettings, MeetingType, Plan, ProcessingStatus, RecordingLayout};
use parley_integration::{Backend, TestDatabase, pg_admin_url};
use parley_store::Store;
use parley_store::meetings::NewMeeting;
use parley_store::recordings::{RecordingOutputs, RetryOutcome};
use uuid::Uuid;

use crate::on_both_backends;

struct Db {
    store: Store,
    _pg: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

async fn db(backend: Backend) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match backend {
        Backend::Postgres => {
            let pg = TestDatabase::create(&pg_admin_url()).await;
            (pg.url.clone(), Some(pg))
        }
        Backend::Sqlite => (format!("sqlite://{}", dir.path().join("q.db").display()), None),
    };
    let store = Store::connect(&url).await.unwrap();
    store.migrate(|_| {}).await.unwrap();
    Db { store, _pg: pg, _dir: dir }
}

async fn meeting(store: &Store) -> (Uuid, Uuid) {
    let host =
        store.create_user(&format!("h{}@example.com", Uuid::new_v4().simple()), "Host", Plan::Free).await.unwrap();
    let created = store
        .create_meeting(NewMeeting {
            host: host.user_id,
            title: "Recorded".into(),
            meeting_type: MeetingType::Instant,
            scheduled_time: Utc::now(),
            duration_minutes: 30,
            timezone: "UTC".into(),
            password_hash: None,
            settings: MeetingSettings::default(),
            invitees: Vec::new(),
            series: None,
        })
        .await
        .unwrap();
    (created.first.meeting.meeting_id, host.user_id)
}

fn outputs() -> RecordingOutputs {
    RecordingOutputs {
        duration_seconds: 10,
        file_size_bytes: 1000,
        storage_url: "file:///x/".into(),
        mp4_url: "file:///x/recording.mp4".into(),
        mp4_size_bytes: 500,
        thumbnail_url: Some("file:///x/thumbnail.jpg".into()),
        transcript_url: None,
        artifacts: "{\"artifacts\":[]}".into(),
    }
}

async fn jobs_claimed_once_and_finished_only_by_their_lease(backend: Backend) {
    let d = db(backend).await;
    let s = &d.store;
    let (m, host) = meeting(s).await;
    let cap = s.start_recording(m, host, RecordingLayout::Speaker, "node-a").await.unwrap();
    assert_eq!(cap.part, 1);
    assert!(
        s.start_recording(m, host, RecordingLayout::Speaker, "node-a").await.is_err(),
        "one recording captures at a time"
    );
    assert_eq!(s.recording(cap.recording_id).await.unwrap().status, ProcessingStatus::Recording);
    assert!(s.claim_job("w", Duration::from_secs(30)).await.unwrap().is_none(), "nothing queued while capturing");

    assert!(s.finish_capture(cap.recording_id, "file:///x/").await.unwrap());
    assert!(!s.finish_capture(cap.recording_id, "file:///x/").await.unwrap(), "finishing twice queues once");
    assert_eq!(s.recording(cap.recording_id).await.unwrap().status, ProcessingStatus::Queued);

    // Eight workers race for the one job: exactly one gets it.
    let claims = futures_util::future::join_all((0..8).map(|i| {
        let s = s.clone();
        async move { s.claim_job(&format!("w{i}"), Duration::from_millis(600)).await.unwrap() }
    }))
    .await;
    let won: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let first = won.into_iter().next().unwrap();
    assert_eq!((first.attempt, first.recording_id, first.meeting_id), (1, cap.recording_id, m));
    assert_eq!(s.recording(cap.recording_id).await.unwrap().status, ProcessingStatus::Processing);
    assert!(s.renew_lease(&first, Duration::from_millis(600)).await.unwrap());
    assert!(s.job_progress(&first, 40).await.unwrap());
    assert_eq!(s.recording(cap.recording_id).await.unwrap().progress, 40);

    // The worker stalls past its lease: another takes the job over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = s.claim_job("w-next", Duration::from_secs(30)).await.unwrap().expect("an expired lease is claimable");
    assert_eq!(second.attempt, 2);
    assert!(!s.renew_lease(&first, Duration::from_secs(30)).await.unwrap(), "the old lease is gone");
    assert!(!s.job_progress(&first, 90).await.unwrap());
    assert!(!s.complete_job(&first, &outputs()).await.unwrap(), "the old lease cannot finish it");
    assert_eq!(s.retry_job(&first, "late", false).await.unwrap(), RetryOutcome::NotOurs);
    assert!(s.complete_job(&second, &outputs()).await.unwrap());
    assert!(!s.complete_job(&second, &outputs()).await.unwrap(), "done once");

    let r = s.recording(cap.recording_id).await.unwrap();
    assert_eq!((r.status, r.progress, r.duration_seconds), (ProcessingStatus::Ready, 100, Some(10)));
    assert_eq!(r.mp4_url.as_deref(), Some("file:///x/recording.mp4"));
    let notes = s.recording_notifications(cap.recording_id).await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "recording_ready");
    assert!(s.claim_job("w", Duration::from_secs(30)).await.unwrap().is_none(), "a done job is not claimed again");
}

async fn failures_back_off_then_fail_with_the_reason(backend: Backend) {
    let d = db(backend).await;
    let s = &d.store;
    let (m, host) = meeting(s).await;
    let cap = s.start_recording(m, host, RecordingLayout::Gallery, "node-a").await.unwrap();
    s.finish_capture(cap.recording_id, "file:///x/").await.unwrap();
    let job = s.claim_job("w", Duration::from_secs(30)).await.unwrap().unwrap();
    let RetryOutcome::Retrying(at) = s.retry_job(&job, "object storage: unreachable", false).await.unwrap() else {
        panic!("a first failure is retried")
    };
    assert!(at > Utc::now() + chrono::Duration::seconds(3), "after a backoff: {at}");
    let r = s.recording(cap.recording_id).await.unwrap();
    assert_eq!((r.status, r.error.as_deref()), (ProcessingStatus::Queued, Some("object storage: unreachable")));
    assert!(s.claim_job("w", Duration::from_secs(30)).await.unwrap().is_none(), "not before the backoff is over");

    // A failure that will not pass ends it at once.
    let permanent = s.start_recording(m, host, RecordingLayout::Speaker, "node-a").await.unwrap();
    s.finish_capture(permanent.recording_id, "file:///y/").await.unwrap();
    let job2 = s.claim_job("w", Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!(job2.recording_id, permanent.recording_id);
    assert_eq!(s.retry_job(&job2, "ffmpeg failed: invalid data", true).await.unwrap(), RetryOutcome::GaveUp);
    let r = s.recording(permanent.recording_id).await.unwrap();
    assert_eq!((r.status, r.error.as_deref()), (ProcessingStatus::Failed, Some("ffmpeg failed: invalid data")));
    let notes = s.recording_notifications(permanent.recording_id).await.unwrap();
    assert_eq!(notes.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), vec!["recording_failed"]);
    let list = s.recordings_of_meeting(m).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].layout, RecordingLayout::Speaker, "newest first");
}

async fn a_failover_continues_the_recording_as_its_next_part(backend: Backend) {
    let d = db(backend).await;
    let s = &d.store;
    let (m, host) = meeting(s).await;
    assert!(s.continue_recording(m, "node-b").await.unwrap().is_none(), "nothing to continue");
    let cap = s.start_recording(m, host, RecordingLayout::Speaker, "node-a").await.unwrap();
    let next = s.continue_recording(m, "node-b").await.unwrap().expect("continued");
    assert_eq!((next.recording_id, next.part), (cap.recording_id, 2));
    assert_eq!(next.recording_started_at, cap.recording_started_at, "one clock for every part");
    s.end_part(cap.recording_id, 2).await.unwrap();
    let third = s.continue_recording(m, "node-c").await.unwrap().unwrap();
    assert_eq!(third.part, 3);
    s.finish_capture(cap.recording_id, "file:///z/").await.unwrap();
    let r = s.recording(cap.recording_id).await.unwrap();
    let parts: Vec<(i32, &str, bool)> =
        r.parts.iter().map(|p| (p.part, p.node.as_str(), p.ended_at.is_some())).collect();
    assert_eq!(parts, vec![(1, "node-a", true), (2, "node-b", true), (3, "node-c", true)]);
    assert!(s.continue_recording(m, "node-d").await.unwrap().is_none(), "a finished recording is not continued");
}

on_both_backends!(
    jobs_claimed_once_and_finished_only_by_their_lease,
    failures_back_off_then_fail_with_the_reason,
    a_failover_continues_the_recording_as_its_next_part,
);
