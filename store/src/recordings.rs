//! Recordings and their processing queue.
//!
//! A recording's life in rows: [`Store::start_recording`] writes it (`recording`) with its first
//! capture part; an owner that takes the meeting over continues it as the next part
//! ([`Store::continue_recording`]); [`Store::finish_capture`] ends capture and queues its job in
//! one transaction (`queued`). Workers on every node claim jobs ([`Store::claim_job`]: `FOR
//! UPDATE SKIP LOCKED` on PostgreSQL, and on both engines a compare-and-set on the job's state,
//! so two workers never hold one job), keep their lease alive ([`Store::renew_lease`]), report
//! progress, and finish with [`Store::complete_job`] — which, like every write of a worker,
//! names its lease token: a worker whose lease expired (it stalled, or was presumed dead and
//! the job went elsewhere) changes nothing, so a job's outcome is stored exactly once.
//! A failed attempt goes back to the queue with a backoff ([`Store::retry_job`]) until its
//! attempts run out; then the recording is `failed` with the reason.

use chrono::{DateTime, SubsecRound, Utc};
use parley_core::model::{ProcessingStatus, RecordingLayout};
use parley_core::notice::{NoticeKind, RecordingFacts, WebhookKind};
use parley_schema::{meeting, meeting_recording, notification, recording_job, recording_part};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use crate::notifications::{recording_notices, webhook_event, webhook_events};
use crate::users::corrupt;
use crate::{Claim, Store, StoreError};

/// One recording as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: Uuid,
    pub meeting_id: Uuid,
    pub started_by: Option<Uuid>,
    pub layout: RecordingLayout,
    pub status: ProcessingStatus,
    pub progress: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub file_size_bytes: Option<i64>,
    pub storage_url: Option<String>,
    pub mp4_url: Option<String>,
    pub mp4_size_bytes: Option<i64>,
    pub thumbnail_url: Option<String>,
    pub transcript_url: Option<String>,
    pub error: Option<String>,
    /// JSON written by the pipeline (artifacts with keys, sizes, durations; tracks).
    pub artifacts: Option<String>,
    pub parts: Vec<RecordingPart>,
}

/// One capture part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingPart {
    pub part: i32,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The capture a media router is to run: which recording, which part, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub recording_id: Uuid,
    pub part: i32,
    /// When the recording (its first part) started: the recording clock's zero.
    pub recording_started_at: DateTime<Utc>,
    pub part_started_at: DateTime<Utc>,
    pub layout: RecordingLayout,
}

/// A job a worker holds: do it, then finish it with its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job_id: Uuid,
    pub recording_id: Uuid,
    pub meeting_id: Uuid,
    /// This lease; every write about the job names it.
    pub token: Uuid,
    /// 1 for the first claim.
    pub attempt: i32,
    pub max_attempts: i32,
}

/// What the pipeline made of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingOutputs {
    pub duration_seconds: i64,
    pub file_size_bytes: i64,
    pub storage_url: String,
    pub mp4_url: String,
    pub mp4_size_bytes: i64,
    pub thumbnail_url: Option<String>,
    pub transcript_url: Option<String>,
    /// JSON for the API.
    pub artifacts: String,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Queued again, claimable from then on.
    Retrying(DateTime<Utc>),
    /// Out of attempts: the recording is `failed`.
    GaveUp,
    /// The lease was no longer ours: nothing changed.
    NotOurs,
}

/// How long a failed attempt waits before the next: 5 s, 20 s, 80 s, … capped at 10 minutes.
pub fn retry_backoff(attempt: i32) -> chrono::Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 8)).unwrap_or(0);
    let secs = Ord::min(5i64.saturating_mul(4i64.saturating_pow(exp)), 600);
    chrono::Duration::seconds(secs)
}

impl Store {
    /// A new recording of `meeting_id`, started by `by`, captured first on `node`. Refused
    /// (`Conflict`) while another recording of the meeting is capturing.
    pub async fn start_recording(
        &self,
        meeting_id: Uuid,
        by: Uuid,
        layout: RecordingLayout,
        node: &str,
    ) -> Result<Capture, StoreError> {
        // As stored: PostgreSQL keeps microseconds.
        let now = Utc::now().trunc_subsecs(6);
        let txn = self.db.begin().await?;
        let capturing = meeting_recording::Entity::find()
            .filter(meeting_recording::Column::MeetingId.eq(meeting_id))
            .filter(meeting_recording::Column::ProcessingStatus.eq(ProcessingStatus::Recording.as_str()))
            .one(&txn)
            .await?;
        if capturing.is_some() {
            return Err(StoreError::Conflict("the meeting is already being recorded".into()));
        }
        let id = Uuid::now_v7();
        meeting_recording::ActiveModel {
            id: Set(id),
            meeting_id: Set(meeting_id),
            started_at: Set(now),
            ended_at: Set(None),
            started_by: Set(Some(by)),
            layout: Set(layout.as_str().to_owned()),
            duration_seconds: Set(None),
            file_size_bytes: Set(None),
            storage_url: Set(None),
            mp4_url: Set(None),
            mp4_size_bytes: Set(None),
            thumbnail_url: Set(None),
            transcript_url: Set(None),
            processing_status: Set(ProcessingStatus::Recording.as_str().to_owned()),
            progress: Set(0),
            error: Set(None),
            artifacts: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        recording_part::ActiveModel {
            recording_id: Set(id),
            part: Set(1),
            node: Set(node.to_owned()),
            started_at: Set(now),
            ended_at: Set(None),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(Capture { recording_id: id, part: 1, recording_started_at: now, part_started_at: now, layout })
    }

    /// The meeting's recording that is still capturing (its owner died, or the meeting actor
    /// restarted), continued on `node` as its next part. `None`: nothing to continue.
    pub async fn continue_recording(&self, meeting_id: Uuid, node: &str) -> Result<Option<Capture>, StoreError> {
        let now = Utc::now().trunc_subsecs(6);
        let txn = self.db.begin().await?;
        let Some(rec) = meeting_recording::Entity::find()
            .filter(meeting_recording::Column::MeetingId.eq(meeting_id))
            .filter(meeting_recording::Column::ProcessingStatus.eq(ProcessingStatus::Recording.as_str()))
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        let last = recording_part::Entity::find()
            .filter(recording_part::Column::RecordingId.eq(rec.id))
            .order_by_desc(recording_part::Column::Part)
            .one(&txn)
            .await?;
        // The part before ends now if its node could not say so.
        recording_part::Entity::update_many()
            .col_expr(recording_part::Column::EndedAt, Expr::value(now))
            .filter(recording_part::Column::RecordingId.eq(rec.id))
            .filter(recording_part::Column::EndedAt.is_null())
            .exec(&txn)
            .await?;
        let part = last.map_or(1, |p| p.part + 1);
        recording_part::ActiveModel {
            recording_id: Set(rec.id),
            part: Set(part),
            node: Set(node.to_owned()),
            started_at: Set(now),
            ended_at: Set(None),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        let layout = rec.layout.parse().map_err(corrupt)?;
        Ok(Some(Capture {
            recording_id: rec.id,
            part,
            recording_started_at: rec.started_at,
            part_started_at: now,
            layout,
        }))
    }

    /// Ends capture of `recording_id` (its open part too) and queues its processing job, in
    /// one transaction. `storage_url`: where the captured tracks are. Idempotent: a recording
    /// no longer capturing is left alone (`false`).
    pub async fn finish_capture(&self, recording_id: Uuid, storage_url: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let res = meeting_recording::Entity::update_many()
            .col_expr(meeting_recording::Column::ProcessingStatus, Expr::value(ProcessingStatus::Queued.as_str()))
            .col_expr(meeting_recording::Column::EndedAt, Expr::value(now))
            .col_expr(meeting_recording::Column::StorageUrl, Expr::value(storage_url))
            .col_expr(meeting_recording::Column::UpdatedAt, Expr::value(now))
            .filter(meeting_recording::Column::Id.eq(recording_id))
            .filter(meeting_recording::Column::ProcessingStatus.eq(ProcessingStatus::Recording.as_str()))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            return Ok(false);
        }
        recording_part::Entity::update_many()
            .col_expr(recording_part::Column::EndedAt, Expr::value(now))
            .filter(recording_part::Column::RecordingId.eq(recording_id))
            .filter(recording_part::Column::EndedAt.is_null())
            .exec(&txn)
            .await?;
        recording_job::ActiveModel {
            id: Set(Uuid::now_v7()),
            recording_id: Set(recording_id),
            status: Set("queued".into()),
            attempts: Set(0),
            max_attempts: Set(5),
            run_after: Set(now),
            lease_owner: Set(None),
            lease_token: Set(None),
            lease_until: Set(None),
            last_error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Ends one capture part (its node hands the meeting to another, which continues the
    /// recording as the next part).
    pub async fn end_part(&self, recording_id: Uuid, part: i32) -> Result<(), StoreError> {
        recording_part::Entity::update_many()
            .col_expr(recording_part::Column::EndedAt, Expr::value(Utc::now()))
            .filter(recording_part::Column::RecordingId.eq(recording_id))
            .filter(recording_part::Column::Part.eq(part))
            .filter(recording_part::Column::EndedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Claims the oldest claimable job for `owner` under a lease of `lease`: a queued job whose
    /// backoff is over, or a running one whose lease expired (its worker died). `None`: no work.
    pub async fn claim_job(&self, owner: &str, lease: std::time::Duration) -> Result<Option<ClaimedJob>, StoreError> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        self.retry_claim(|| self.try_claim(owner, lease)).await
    }

    async fn try_claim(&self, owner: &str, lease: chrono::Duration) -> Result<Claim<ClaimedJob>, StoreError> {
        {
            let now = Utc::now();
            let claimable = Condition::any()
                .add(
                    Condition::all()
                        .add(recording_job::Column::Status.eq("queued"))
                        .add(recording_job::Column::RunAfter.lte(now)),
                )
                .add(
                    Condition::all()
                        .add(recording_job::Column::Status.eq("running"))
                        .add(recording_job::Column::LeaseUntil.lt(now)),
                );
            let txn = self.db.begin().await?;
            let Some(job) = recording_job::Entity::find()
                .filter(claimable.clone())
                .order_by_asc(recording_job::Column::RunAfter)
                .limit(1)
                // PostgreSQL: rows other workers are claiming are skipped, not waited for.
                // SQLite ignores the clause; the compare-and-set below decides there.
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .one(&txn)
                .await?
            else {
                return Ok(Claim::Nothing);
            };
            let token = Uuid::new_v4();
            let res = recording_job::Entity::update_many()
                .col_expr(recording_job::Column::Status, Expr::value("running"))
                .col_expr(recording_job::Column::LeaseOwner, Expr::value(owner))
                .col_expr(recording_job::Column::LeaseToken, Expr::value(token))
                .col_expr(recording_job::Column::LeaseUntil, Expr::value(now + lease))
                .col_expr(recording_job::Column::Attempts, Expr::value(job.attempts + 1))
                .col_expr(recording_job::Column::UpdatedAt, Expr::value(now))
                .filter(recording_job::Column::Id.eq(job.id))
                .filter(recording_job::Column::Attempts.eq(job.attempts))
                .filter(claimable)
                .exec(&txn)
                .await?;
            if res.rows_affected == 0 {
                txn.rollback().await?;
                return Ok(Claim::Lost);
            }
            let meeting_id = meeting_recording::Entity::find_by_id(job.recording_id)
                .one(&txn)
                .await?
                .map(|r| r.meeting_id)
                .ok_or(StoreError::NotFound("recording"))?;
            meeting_recording::Entity::update_many()
                .col_expr(
                    meeting_recording::Column::ProcessingStatus,
                    Expr::value(ProcessingStatus::Processing.as_str()),
                )
                .col_expr(meeting_recording::Column::UpdatedAt, Expr::value(now))
                .filter(meeting_recording::Column::Id.eq(job.recording_id))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            Ok(Claim::Got(ClaimedJob {
                job_id: job.id,
                recording_id: job.recording_id,
                meeting_id,
                token,
                attempt: job.attempts + 1,
                max_attempts: job.max_attempts,
            }))
        }
    }

    /// Extends the lease of `job` to `lease` from now. `false`: the lease is no longer ours
    /// (it expired and another worker claimed the job): stop working on it.
    pub async fn renew_lease(&self, job: &ClaimedJob, lease: std::time::Duration) -> Result<bool, StoreError> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        let now = Utc::now();
        let res = recording_job::Entity::update_many()
            .col_expr(recording_job::Column::LeaseUntil, Expr::value(now + lease))
            .col_expr(recording_job::Column::UpdatedAt, Expr::value(now))
            .filter(recording_job::Column::Id.eq(job.job_id))
            .filter(recording_job::Column::LeaseToken.eq(job.token))
            .filter(recording_job::Column::Status.eq("running"))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// The job's progress, 0‥100, on its recording (only while the lease is ours).
    pub async fn job_progress(&self, job: &ClaimedJob, percent: i32) -> Result<bool, StoreError> {
        let held = recording_job::Entity::find_by_id(job.job_id)
            .filter(recording_job::Column::LeaseToken.eq(job.token))
            .filter(recording_job::Column::Status.eq("running"))
            .one(&self.db)
            .await?
            .is_some();
        if !held {
            return Ok(false);
        }
        meeting_recording::Entity::update_many()
            .col_expr(meeting_recording::Column::Progress, Expr::value(percent.clamp(0, 100)))
            .col_expr(meeting_recording::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(meeting_recording::Column::Id.eq(job.recording_id))
            .exec(&self.db)
            .await?;
        Ok(true)
    }

    /// Stores what the job made, marks the recording `ready` and leaves a `recording_ready`
    /// message in the outbox — one transaction, and only while the lease is ours (`false`
    /// otherwise: another worker owns the job now and nothing was written).
    pub async fn complete_job(&self, job: &ClaimedJob, out: &RecordingOutputs) -> Result<bool, StoreError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let res = recording_job::Entity::update_many()
            .col_expr(recording_job::Column::Status, Expr::value("done"))
            .col_expr(recording_job::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(recording_job::Column::LastError, Expr::value(Option::<String>::None))
            .col_expr(recording_job::Column::UpdatedAt, Expr::value(now))
            .filter(recording_job::Column::Id.eq(job.job_id))
            .filter(recording_job::Column::LeaseToken.eq(job.token))
            .filter(recording_job::Column::Status.eq("running"))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        meeting_recording::Entity::update_many()
            .col_expr(meeting_recording::Column::ProcessingStatus, Expr::value(ProcessingStatus::Ready.as_str()))
            .col_expr(meeting_recording::Column::Progress, Expr::value(100))
            .col_expr(meeting_recording::Column::DurationSeconds, Expr::value(out.duration_seconds))
            .col_expr(meeting_recording::Column::FileSizeBytes, Expr::value(out.file_size_bytes))
            .col_expr(meeting_recording::Column::StorageUrl, Expr::value(out.storage_url.clone()))
            .col_expr(meeting_recording::Column::Mp4Url, Expr::value(out.mp4_url.clone()))
            .col_expr(meeting_recording::Column::Mp4SizeBytes, Expr::value(out.mp4_size_bytes))
            .col_expr(meeting_recording::Column::ThumbnailUrl, Expr::value(out.thumbnail_url.clone()))
            .col_expr(meeting_recording::Column::TranscriptUrl, Expr::value(out.transcript_url.clone()))
            .col_expr(meeting_recording::Column::Artifacts, Expr::value(out.artifacts.clone()))
            .col_expr(meeting_recording::Column::Error, Expr::value(Option::<String>::None))
            .col_expr(meeting_recording::Column::UpdatedAt, Expr::value(now))
            .filter(meeting_recording::Column::Id.eq(job.recording_id))
            .exec(&txn)
            .await?;
        let facts = RecordingFacts {
            recording_id: job.recording_id,
            duration_seconds: Some(out.duration_seconds),
            error: None,
        };
        recording_notices(&txn, NoticeKind::RecordingReady, job.meeting_id, facts.clone(), now).await?;
        if let Some(m) = meeting::Entity::find_by_id(job.meeting_id).one(&txn).await? {
            let mut event = webhook_event(WebhookKind::RecordingReady, Uuid::now_v7(), &m, now);
            event.recording = Some(facts);
            webhook_events(&txn, &self.webhooks, &event, Some(job.recording_id)).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// A failed attempt: queued again after a backoff, or — when `permanent`, or out of
    /// attempts — the recording is `failed` with `reason` (and a `recording_failed` message
    /// goes to the outbox).
    pub async fn retry_job(&self, job: &ClaimedJob, reason: &str, permanent: bool) -> Result<RetryOutcome, StoreError> {
        let now = Utc::now();
        let give_up = permanent || job.attempt >= job.max_attempts;
        let txn = self.db.begin().await?;
        let run_after = now + retry_backoff(job.attempt);
        let mut update = recording_job::Entity::update_many()
            .col_expr(recording_job::Column::Status, Expr::value(if give_up { "failed" } else { "queued" }))
            .col_expr(recording_job::Column::LeaseToken, Expr::value(Option::<Uuid>::None))
            .col_expr(recording_job::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(recording_job::Column::LastError, Expr::value(reason))
            .col_expr(recording_job::Column::UpdatedAt, Expr::value(now));
        if !give_up {
            update = update.col_expr(recording_job::Column::RunAfter, Expr::value(run_after));
        }
        let res = update
            .filter(recording_job::Column::Id.eq(job.job_id))
            .filter(recording_job::Column::LeaseToken.eq(job.token))
            .filter(recording_job::Column::Status.eq("running"))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(RetryOutcome::NotOurs);
        }
        let status = if give_up { ProcessingStatus::Failed } else { ProcessingStatus::Queued };
        meeting_recording::Entity::update_many()
            .col_expr(meeting_recording::Column::ProcessingStatus, Expr::value(status.as_str()))
            .col_expr(meeting_recording::Column::Error, Expr::value(reason))
            .col_expr(meeting_recording::Column::UpdatedAt, Expr::value(now))
            .filter(meeting_recording::Column::Id.eq(job.recording_id))
            .exec(&txn)
            .await?;
        if give_up {
            let facts = RecordingFacts {
                recording_id: job.recording_id,
                duration_seconds: None,
                error: Some(reason.to_owned()),
            };
            recording_notices(&txn, NoticeKind::RecordingFailed, job.meeting_id, facts, now).await?;
        }
        txn.commit().await?;
        Ok(if give_up { RetryOutcome::GaveUp } else { RetryOutcome::Retrying(run_after) })
    }

    /// A job whose lease expired more often than it may be attempted (its workers keep dying):
    /// failed, so it stops being claimed. Returns how many were given up.
    pub async fn give_up_exhausted_jobs(&self) -> Result<u64, StoreError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let exhausted = recording_job::Entity::find()
            .filter(recording_job::Column::Status.eq("running"))
            .filter(recording_job::Column::LeaseUntil.lt(now))
            .filter(Expr::col(recording_job::Column::Attempts).gte(Expr::col(recording_job::Column::MaxAttempts)))
            .all(&txn)
            .await?;
        for job in &exhausted {
            let reason = "its workers stopped answering on every attempt";
            recording_job::Entity::update_many()
                .col_expr(recording_job::Column::Status, Expr::value("failed"))
                .col_expr(recording_job::Column::LastError, Expr::value(reason))
                .col_expr(recording_job::Column::UpdatedAt, Expr::value(now))
                .filter(recording_job::Column::Id.eq(job.id))
                .exec(&txn)
                .await?;
            meeting_recording::Entity::update_many()
                .col_expr(meeting_recording::Column::ProcessingStatus, Expr::value(ProcessingStatus::Failed.as_str()))
                .col_expr(meeting_recording::Column::Error, Expr::value(reason))
                .col_expr(meeting_recording::Column::UpdatedAt, Expr::value(now))
                .filter(meeting_recording::Column::Id.eq(job.recording_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(exhausted.len() as u64)
    }

    /// One recording with its parts.
    pub async fn recording(&self, id: Uuid) -> Result<Recording, StoreError> {
        let row =
            meeting_recording::Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound("recording"))?;
        let parts = recording_part::Entity::find()
            .filter(recording_part::Column::RecordingId.eq(id))
            .order_by_asc(recording_part::Column::Part)
            .all(&self.db)
            .await?;
        to_recording(row, parts)
    }

    /// A meeting's recordings, newest first (without parts).
    pub async fn recordings_of_meeting(&self, meeting_id: Uuid) -> Result<Vec<Recording>, StoreError> {
        meeting_recording::Entity::find()
            .filter(meeting_recording::Column::MeetingId.eq(meeting_id))
            .order_by_desc(meeting_recording::Column::StartedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| to_recording(r, Vec::new()))
            .collect()
    }

    /// Deletes a recording's rows (its job and parts with it). The objects are the caller's.
    pub async fn delete_recording(&self, id: Uuid) -> Result<(), StoreError> {
        let res = meeting_recording::Entity::delete_by_id(id).exec(&self.db).await?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound("recording"));
        }
        Ok(())
    }

    /// The outbox messages about a recording, oldest first: `(kind, payload)`.
    pub async fn recording_notifications(&self, recording_id: Uuid) -> Result<Vec<(String, String)>, StoreError> {
        Ok(notification::Entity::find()
            .filter(notification::Column::RecordingId.eq(recording_id))
            .order_by_asc(notification::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|n| (n.kind, n.payload))
            .collect())
    }
}

fn to_recording(r: meeting_recording::Model, parts: Vec<recording_part::Model>) -> Result<Recording, StoreError> {
    Ok(Recording {
        id: r.id,
        meeting_id: r.meeting_id,
        started_by: r.started_by,
        layout: r.layout.parse().map_err(corrupt)?,
        status: r.processing_status.parse().map_err(corrupt)?,
        progress: r.progress,
        started_at: r.started_at,
        ended_at: r.ended_at,
        duration_seconds: r.duration_seconds,
        file_size_bytes: r.file_size_bytes,
        storage_url: r.storage_url,
        mp4_url: r.mp4_url,
        mp4_size_bytes: r.mp4_size_bytes,
        thumbnail_url: r.thumbnail_url,
        transcript_url: r.transcript_url,
        error: r.error,
        artifacts: r.artifacts,
        parts: parts
            .into_iter()
            .map(|p| RecordingPart { part: p.part, node: p.node, started_at: p.started_at, ended_at: p.ended_at })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::retry_backoff;

    #[test]
    fn backoff_grows_and_is_capped() {
        let secs: Vec<i64> = (1..=7).map(|a| retry_backoff(a).num_seconds()).collect();
        assert_eq!(secs, vec![5, 20, 80, 320, 600, 600, 600]);
        assert_eq!(retry_backoff(0).num_seconds(), 5);
        assert_eq!(retry_backoff(i32::MAX).num_seconds(), 600);
    }
}
