//! A live meeting's database writes (chat messages, role changes, who joined and left — for
//! the webhooks), stored in the order they
//! happened. Normally a write is stored before the meeting replies; while the database is away
//! the writes wait here, oldest first, and are retried after a backoff, so an outage costs the
//! meeting at most one [`WRITE_TIMEOUT`] per retry, not one per write.
//!
//! A write the database refuses for good (not a lost connection: a broken rule, data it cannot
//! hold) leaves the queue at once — logged with its error and counted — so it can never hold up
//! the writes behind it, nor the meeting's end. Retrying it would fail forever.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use parley_core::meeting::Attendance;
use parley_core::model::Role;
use parley_core::protocol::ChatMessage;
use parley_store::StoreError;
use uuid::Uuid;

/// At most this many unsaved writes are kept while the database is away; beyond it the oldest
/// are dropped (and logged) so that a long outage cannot exhaust memory.
pub const MAX_UNSAVED: usize = 10_000;
/// A live write normally takes milliseconds; one that takes longer than this is deferred.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How soon deferred writes are tried again at first, and at most.
pub const RETRY_WRITES_AFTER: Duration = Duration::from_secs(1);
pub const RETRY_WRITES_MAX: Duration = Duration::from_secs(8);

/// A database write of a live meeting.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Chat(ChatMessage),
    Role {
        user_id: Uuid,
        role: Role,
    },
    /// `id` names the webhook event, so a repeated write (after a timeout that did commit)
    /// queues it once.
    Attendance {
        id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
        attendance: Attendance,
    },
}

/// How a [`WriteQueue::flush`] ended.
#[derive(Debug)]
pub enum Flushed {
    /// Nothing is left: every write was stored, or dropped as one that can never be stored.
    Done {
        /// Writes stored by this flush.
        stored: usize,
    },
    /// The database is away (or too slow): the rest waits, in order. `retry_in`: schedule a
    /// retry after this long (`None`: one is scheduled already).
    Deferred { error: StoreError, retry_in: Option<Duration> },
    /// Another node owns the meeting now: the queue was emptied, the rest is the new owner's.
    Fenced,
}

/// The unsaved writes of one meeting and their retry schedule.
#[derive(Debug)]
pub struct WriteQueue {
    unsaved: VecDeque<Write>,
    /// A retry is scheduled (the owner was told `retry_in`, and has not called
    /// [`retry_due`](Self::retry_due) since).
    retry_armed: bool,
    /// The wait before the next retry: doubles after each failed retry up to
    /// [`RETRY_WRITES_MAX`], so a database that hangs (rather than refusing) costs the meeting at
    /// most one timeout per backoff period.
    retry_after: Duration,
    /// How long one write may take before it counts as failed ([`WRITE_TIMEOUT`]).
    timeout: Duration,
    /// Writes dropped because the database refused them for good.
    refused: u64,
    /// Writes dropped because the queue was full.
    overflowed: u64,
}

impl Default for WriteQueue {
    fn default() -> Self {
        WriteQueue::with_timeout(WRITE_TIMEOUT)
    }
}

impl WriteQueue {
    /// An empty queue whose writes may each take up to `timeout`.
    pub fn with_timeout(timeout: Duration) -> WriteQueue {
        WriteQueue {
            unsaved: VecDeque::new(),
            retry_armed: false,
            retry_after: RETRY_WRITES_AFTER,
            timeout,
            refused: 0,
            overflowed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.unsaved.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unsaved.is_empty()
    }

    /// Whether a retry is scheduled.
    pub fn retry_armed(&self) -> bool {
        self.retry_armed
    }

    /// Writes dropped so far: refused for good by the database, and lost to a full queue.
    pub fn dropped(&self) -> (u64, u64) {
        (self.refused, self.overflowed)
    }

    /// Adds a write behind the unsaved ones; past [`MAX_UNSAVED`] the oldest is dropped, logged
    /// and returned.
    pub fn push(&mut self, meeting_id: Uuid, w: Write) -> Option<Write> {
        let lost = if self.unsaved.len() >= MAX_UNSAVED { self.unsaved.pop_front() } else { None };
        if let Some(lost) = &lost {
            self.overflowed += 1;
            tracing::error!(%meeting_id, write = ?lost, "database away too long: write dropped");
        }
        self.unsaved.push_back(w);
        lost
    }

    /// The scheduled retry is due: the next failure schedules another.
    pub fn retry_due(&mut self) {
        self.retry_armed = false;
    }

    /// Stores the unsaved writes oldest first with `store`, removing each once stored. A write
    /// the database refuses for good is dropped (logged, counted) and the next one is tried; a
    /// lost connection or a write slower than the timeout stops the flush ([`Flushed::Deferred`]).
    pub async fn flush<F, Fut>(&mut self, meeting_id: Uuid, mut store: F) -> Flushed
    where
        F: FnMut(Write) -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        let mut stored = 0;
        while let Some(w) = self.unsaved.front().cloned() {
            let outcome = tokio::time::timeout(self.timeout, store(w)).await;
            match outcome {
                Ok(Ok(())) => stored += 1,
                Ok(Err(StoreError::Fenced)) => {
                    self.unsaved.clear();
                    return Flushed::Fenced;
                }
                Ok(Err(e)) if !e.is_transient() => {
                    self.refused += 1;
                    tracing::error!(
                        %meeting_id,
                        error = %e,
                        write = ?self.unsaved.front(),
                        refused = self.refused,
                        "database refused a write for good: dropped so the writes behind it go on"
                    );
                }
                Ok(Err(error)) => return self.defer(error),
                Err(_) => return self.defer(StoreError::Timeout(self.timeout)),
            }
            self.unsaved.pop_front();
        }
        self.retry_after = RETRY_WRITES_AFTER;
        Flushed::Done { stored }
    }

    fn defer(&mut self, error: StoreError) -> Flushed {
        let retry_in = (!self.retry_armed).then_some(self.retry_after);
        if retry_in.is_some() {
            self.retry_armed = true;
            self.retry_after = (self.retry_after * 2).min(RETRY_WRITES_MAX);
        }
        Flushed::Deferred { error, retry_in }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn chat(seq: u64) -> Write {
        Write::Chat(ChatMessage {
            seq,
            from: Uuid::nil(),
            from_name: "A".into(),
            to: None,
            room: None,
            text: format!("m{seq}"),
            at: 0,
        })
    }

    fn seq(w: &Write) -> u64 {
        match w {
            Write::Chat(m) => m.seq,
            Write::Role { .. } | Write::Attendance { .. } => 0,
        }
    }

    type Stored = Arc<Mutex<Vec<u64>>>;
    type Answer = std::future::Ready<Result<(), StoreError>>;

    /// A store that answers each write by `answer(seq)` and records the stored ones.
    fn fake(answer: impl Fn(u64) -> Result<(), StoreError> + Clone) -> (Stored, impl FnMut(Write) -> Answer) {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&stored);
        let f = move |w: Write| {
            let r = answer(seq(&w));
            if r.is_ok() {
                log.lock().unwrap_or_else(|p| p.into_inner()).push(seq(&w));
            }
            std::future::ready(r)
        };
        (stored, f)
    }

    fn away() -> StoreError {
        StoreError::Unavailable(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal("connection refused".into())))
    }

    #[tokio::test]
    async fn a_write_refused_for_good_leaves_the_queue_and_the_rest_are_stored_in_order() {
        let m = Uuid::new_v4();
        let mut q = WriteQueue::default();
        for s in 1..=4 {
            q.push(m, chat(s));
        }
        let (stored, f) =
            fake(|s| if s == 2 { Err(StoreError::Db(sea_orm::DbErr::Custom("0x00".into()))) } else { Ok(()) });
        assert!(matches!(q.flush(m, f).await, Flushed::Done { stored: 3 }));
        assert_eq!(*stored.lock().unwrap(), vec![1, 3, 4]);
        assert!(q.is_empty());
        assert_eq!(q.dropped(), (1, 0));
    }

    #[tokio::test]
    async fn an_unreachable_database_keeps_the_write_and_backs_off_until_it_is_back() {
        let m = Uuid::new_v4();
        let mut q = WriteQueue::default();
        q.push(m, chat(1));
        q.push(m, chat(2));
        let (_, f) = fake(|_| Err(away()));
        match q.flush(m, f).await {
            Flushed::Deferred { retry_in, .. } => assert_eq!(retry_in, Some(RETRY_WRITES_AFTER)),
            other => panic!("{other:?}"),
        }
        let (_, f) = fake(|_| Err(away()));
        assert!(matches!(q.flush(m, f).await, Flushed::Deferred { retry_in: None, .. }), "one retry at a time");
        let mut waits = Vec::new();
        for _ in 0..5 {
            q.retry_due();
            let (_, f) = fake(|_| Err(away()));
            if let Flushed::Deferred { retry_in: Some(d), .. } = q.flush(m, f).await {
                waits.push(d.as_secs());
            }
        }
        assert_eq!(waits, vec![2, 4, 8, 8, 8], "doubling up to the cap");
        assert_eq!(q.len(), 2, "nothing lost while away");
        q.retry_due();
        let (stored, f) = fake(|_| Ok(()));
        assert!(matches!(q.flush(m, f).await, Flushed::Done { stored: 2 }));
        assert_eq!(*stored.lock().unwrap(), vec![1, 2]);
        q.push(m, chat(3));
        let (_, f) = fake(|_| Err(away()));
        assert!(
            matches!(q.flush(m, f).await, Flushed::Deferred { retry_in: Some(RETRY_WRITES_AFTER), .. }),
            "backoff reset"
        );
    }

    #[tokio::test]
    async fn a_write_slower_than_the_timeout_is_deferred_not_dropped() {
        let m = Uuid::new_v4();
        let mut q = WriteQueue::with_timeout(Duration::from_millis(20));
        q.push(m, chat(1));
        let slow = |_w: Write| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        };
        match q.flush(m, slow).await {
            Flushed::Deferred { error: StoreError::Timeout(_), .. } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn a_fenced_write_empties_the_queue() {
        let m = Uuid::new_v4();
        let mut q = WriteQueue::default();
        q.push(m, chat(1));
        q.push(m, chat(2));
        let (_, f) = fake(|_| Err(StoreError::Fenced));
        assert!(matches!(q.flush(m, f).await, Flushed::Fenced));
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_drops_its_oldest() {
        let m = Uuid::new_v4();
        let mut q = WriteQueue::default();
        for s in 0..MAX_UNSAVED as u64 {
            assert_eq!(q.push(m, chat(s)), None);
        }
        assert_eq!(q.push(m, chat(99_999)).map(|w| seq(&w)), Some(0));
        assert_eq!((q.len(), q.dropped()), (MAX_UNSAVED, (0, 1)));
    }
}
