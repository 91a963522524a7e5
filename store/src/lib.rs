//! Parley's relational store: every SeaORM query the system runs, behind one [`Store`] handle.
//!
//! The store knows SQL and transactions, nothing about HTTP or tokens. Callers pass identities
//! and validated values; the store enforces what only the database can (uniqueness, foreign
//! keys, atomicity) and reports it as a [`StoreError`] that says what happened in domain terms.
//!
//! - [`users`]: registered and pending users.
//! - [`meetings`]: the transactional create (meeting + participants + series + occurrences),
//!   reads, updates and cancellation.
//! - [`queries`]: the seed's three queries — upcoming meetings, join check, per-day analytics.
//! - [`live`]: what live meetings write — start, chat, role changes, end with analytics.
//! - [`recordings`]: recordings, their capture parts and the durable processing queue.
//! - [`notifications`]: the outbox — messages written with the change that causes them, then
//!   claimed, delivered and closed by workers on any node.
//!
//! The same code runs on PostgreSQL and on SQLite (the embedded default). The one place where
//! SQL differs by engine (a timestamp's UTC date) is marked.

pub mod live;
pub mod meetings;
pub mod notifications;
pub mod queries;
pub mod recordings;
pub mod users;

use std::time::{Duration, Instant};

use parley_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, SqlErr};

pub use parley_core::validate::FieldError;

/// How many pooled connections a node keeps to PostgreSQL.
pub const PG_POOL_SIZE: u32 = 16;
/// How long a request waits for a pooled connection before failing as unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL advisory-lock key held while migrating, so nodes starting together migrate once.
const MIGRATION_LOCK_KEY: i64 = 0x7061_726c_6579; // "parley"

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not do this (e.g. change a meeting they do not host).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A uniqueness rule was broken (duplicate email, duplicate invitee).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A field turned out to be invalid while the transaction was running.
    #[error("invalid field {0}")]
    Invalid(#[from] FieldError),
    /// The request is well-formed but breaks a rule of the domain.
    #[error("{0}")]
    Rule(String),
    /// A live meeting's owner wrote with an epoch that is no longer current: another node took
    /// the meeting over. The writer must stop acting for it.
    #[error("fenced: the meeting moved to another node")]
    Fenced,
    /// The database could not be reached or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(DbErr),
    /// The database did not answer in time (a caller's deadline, not the driver's).
    #[error("database unavailable: no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Any other database error: a bug or a broken invariant.
    #[error("database error: {0}")]
    Db(DbErr),
}

impl StoreError {
    /// Whether trying the same thing again later may succeed: the database was unreachable or
    /// slow. Every other error (a rule, a conflict, data the database refuses) would recur.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(m)) => return StoreError::Conflict(m),
            Some(SqlErr::ForeignKeyConstraintViolation(m)) => {
                return StoreError::Rule(format!("reference to a missing row: {m}"));
            }
            _ => {}
        }
        // Inside a `db.*` span this marks the call failed for the node's call metrics.
        tracing::debug!(target: parley_core::CALL_FAILED, error = %e, "database call failed");
        match e {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StoreError::Unavailable(e),
            DbErr::Exec(ref r) | DbErr::Query(ref r) if is_connection_error(&r.to_string()) => {
                StoreError::Unavailable(e)
            }
            other => StoreError::Db(other),
        }
    }
}

/// sqlx reports a dropped server as an I/O or protocol error inside Exec/Query.
fn is_connection_error(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "connection refused",
        "broken pipe",
        "connection reset",
        "pool timed out",
        "io error",
        "terminating connection",
        "closed",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// One applied migration, reported while `migrate` runs.
#[derive(Debug, Clone)]
pub struct MigrationStep {
    /// 1-based position among the pending migrations.
    pub index: usize,
    /// How many were pending.
    pub total: usize,
    /// The migration's name.
    pub name: String,
    /// How long it took.
    pub elapsed: Duration,
}

/// What one attempt to claim a queued row (a recording job, a notification) found.
pub(crate) enum Claim<T> {
    Got(T),
    /// Nothing is due.
    Nothing,
    /// Another worker took the row first.
    Lost,
}

/// A handle to the relational store. Cheap to clone (a pool inside). Not `Debug`: the URL may
/// carry a password.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The URL connected to; the migration lock opens one more connection with it.
    url: String,
    /// Where webhook events are queued for (none: no event is written).
    webhooks: std::sync::Arc<[notifications::WebhookRoute]>,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`). For SQLite the file is created if it
    /// does not exist (`?mode=rwc` is added when no mode is given).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let mut opts = ConnectOptions::new(url.clone());
        opts.acquire_timeout(ACQUIRE_TIMEOUT).connect_timeout(ACQUIRE_TIMEOUT).sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // One writer at a time is what SQLite allows anyway; a small pool avoids busy errors.
            opts.max_connections(4);
        } else {
            opts.max_connections(PG_POOL_SIZE);
        }
        let db = Database::connect(opts).await.map_err(StoreError::Unavailable)?;
        if db.get_database_backend() == DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
                .await?;
        }
        Ok(Store { db, url, webhooks: std::sync::Arc::from(Vec::new()) })
    }

    /// This store, queueing webhook events for `routes` (the nodes' `[[notify.webhooks]]`).
    pub fn with_webhooks(mut self, routes: Vec<notifications::WebhookRoute>) -> Store {
        self.webhooks = std::sync::Arc::from(routes);
        self
    }

    /// The underlying connection, for adapters that build their own queries.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs one claim `attempt` until it claims a row or finds none due. On SQLite (no row
    /// locks) another worker may win the compare-and-set, or commit between our read and our
    /// write (then SQLite refuses the write as "locked"): a few tries, then `None` until the
    /// caller's next poll. PostgreSQL's `SKIP LOCKED` makes a lost race rare there.
    pub(crate) async fn retry_claim<T, F, Fut>(&self, mut attempt: F) -> Result<Option<T>, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Claim<T>, StoreError>>,
    {
        for n in 0..8u64 {
            match attempt().await {
                Ok(Claim::Got(row)) => return Ok(Some(row)),
                Ok(Claim::Nothing) => return Ok(None),
                Ok(Claim::Lost) => {}
                Err(e) if self.backend() == DbBackend::Sqlite && e.to_string().contains("locked") => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(5 + n * 10)).await;
        }
        Ok(None)
    }

    /// Which engine this store talks to.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Round-trips a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    /// Names of the migrations not applied yet.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        Ok(Migrator::get_pending_migrations(&self.db).await?.iter().map(|m| m.name().to_owned()).collect())
    }

    /// Applies every pending migration, one at a time, calling `progress` after each. On
    /// PostgreSQL a session advisory lock makes concurrent callers (nodes starting together)
    /// wait for each other instead of racing.
    pub async fn migrate(&self, mut progress: impl FnMut(&MigrationStep)) -> Result<usize, StoreError> {
        let locked = self.backend() == DbBackend::Postgres;
        // One dedicated connection: the lock is per session on PostgreSQL; on SQLite a step's
        // statements must all see the schema as the step leaves it (a pooled connection with
        // an older read snapshot would not: a table rebuilt in one step would still look old).
        let mut opts = ConnectOptions::new(self.url.clone());
        opts.max_connections(1).sqlx_logging(false).acquire_timeout(ACQUIRE_TIMEOUT);
        let conn = Database::connect(opts).await.map_err(StoreError::Unavailable)?;
        if locked {
            conn.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).await?;
        } else {
            conn.execute_unprepared("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;").await?;
        }
        let result = async {
            let pending = Migrator::get_pending_migrations(&conn).await?;
            let total = pending.len();
            for (i, m) in pending.iter().enumerate() {
                let started = Instant::now();
                Migrator::up(&conn, Some(1)).await?;
                progress(&MigrationStep { index: i + 1, total, name: m.name().to_owned(), elapsed: started.elapsed() });
            }
            Ok::<usize, StoreError>(total)
        }
        .await;
        if locked {
            let _ = conn.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).await;
        }
        let _ = conn.close().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_classified_as_unavailable() {
        assert!(is_connection_error("error communicating with database: Connection refused (os error 111)"));
        assert!(is_connection_error("pool timed out while waiting for an open connection"));
        assert!(!is_connection_error("syntax error at or near \"SELEC\""));
    }
}
