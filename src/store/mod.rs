//! Persistence with sqlx: tenants, API keys, documents and chunks, conversations and their
//! messages, on SQLite (embedded, the default) or PostgreSQL (shared by several hubs).
//!
//! Every query is a runtime query with binds (no compile-time database needed), one
//! submodule per table family. Every read and write that touches tenant data takes the
//! tenant id, so scoping cannot be forgotten by a handler.
//!
//! One statement serves both databases wherever their SQL agrees (placeholders are `$N`,
//! which SQLite accepts too): [`on_pool!`] compiles the same code once per pool type, so
//! each database runs through its own driver with no `Any` conversion layer. Where the
//! dialects differ (full-text search, JSON batches, the clock, `BEGIN IMMEDIATE`) the two
//! statements stand side by side, or the difference is one [`Dialect`] fragment.

/// Runs `$body` with `$pool` bound to the store's pool (and `$d` to its [`Dialect`]): the
/// same tokens are compiled for each database, so one SQL text serves both.
macro_rules! on_pool {
    ($store:expr, $pool:ident, $d:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite($pool) => {
                let $d = &$crate::store::SQLITE;
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                let $d = &$crate::store::POSTGRES;
                $body
            }
        }
    };
    ($store:expr, $pool:ident => $body:expr) => {
        on_pool!($store, $pool, _dialect => $body)
    };
}

mod conversations;
mod documents;
mod hubs;
mod keys;
pub mod presence;
mod sessions;
mod tenant_index;
mod tenants;
pub mod usage;
pub mod writer;

pub use conversations::{
    BatchWrite, Conversation, FinalWrite, MessageRecord, MessageStatus, PastMessage, TurnRows,
};
pub use documents::{
    DocumentCursor, DocumentSummary, MatchQuery, NewDocument, Passage, Quota, QuotaExceeded,
    ReservedDocument, Usage,
};
pub use hubs::Reaped;
pub(crate) use keys::digest as key_digest;
pub use keys::{ApiKeyRecord, Bootstrap, KeyOwner, NewKey, Role};
pub use presence::HubPresence;
pub use sessions::{session_name, SessionInfo, SessionTimes};
pub use tenants::Tenant;
pub use writer::StoreWriter;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::is_postgres_url;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a request waits for a PostgreSQL connection before it fails with
/// `storage_unavailable`: short, so an unreachable database is an answer, not a hang.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The two pools; see [`on_pool!`].
#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The SQL fragments in which the two databases differ.
pub(crate) struct Dialect {
    /// The time now as ISO 8601 text with milliseconds, the form every `*_at` text column has.
    pub now_text: &'static str,
    /// The time now in Unix milliseconds, from the database's clock.
    pub now_ms: &'static str,
    /// Starts a transaction that writes: SQLite takes its write lock at once (a read then a
    /// write could otherwise fail with SQLITE_BUSY); PostgreSQL locks rows as it goes.
    pub begin_write: &'static str,
    /// A session's `expires_at` (Unix milliseconds) as ISO 8601 text.
    pub session_expiry_text: &'static str,
}

pub(crate) static SQLITE: Dialect = Dialect {
    now_text: "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    begin_write: "BEGIN IMMEDIATE",
    session_expiry_text: "strftime('%Y-%m-%dT%H:%M:%fZ', s.expires_at / 1000.0, 'unixepoch')",
};

pub(crate) static POSTGRES: Dialect = Dialect {
    now_text: "now_text()",
    now_ms: "now_ms()",
    begin_write: "BEGIN",
    session_expiry_text: "to_char(to_timestamp(s.expires_at / 1000.0) AT TIME ZONE 'UTC', \
                          'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
};

/// Cheap to clone: a handle to the connection pool.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// This process's id in the `hubs` table: the owner of the rows it writes.
    hub_id: Arc<str>,
    /// False once the database stopped answering, true again when it answers; kept by the
    /// hub's heartbeat and by `/readyz`, read before a new answer is admitted.
    available: Arc<AtomicBool>,
    /// The queue in which bulk writes (uploads, deletes of documents) take turns, one batch
    /// at a time, so that they interleave with each other and leave room to other writers.
    bulk_writes: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens and migrates the database (`sqlite:` creates the file and its folder if
    /// needed; `postgres:` needs the database to exist), then registers this process as a
    /// hub with a new random id. Fails at start, not at the first request, when the URL is
    /// wrong.
    pub async fn connect(database_url: &str) -> Result<Store, sqlx::Error> {
        let db = if is_postgres_url(database_url) {
            Db::Postgres(connect_postgres(database_url).await?)
        } else {
            Db::Sqlite(connect_sqlite(database_url).await?)
        };
        let store = Store {
            db,
            hub_id: uuid::Uuid::new_v4().simple().to_string().into(),
            available: Arc::new(AtomicBool::new(true)),
            bulk_writes: Arc::default(),
        };
        store.heartbeat().await?;
        Ok(store)
    }

    /// Which database this is, for logs: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// This process's hub id.
    pub fn hub_id(&self) -> &str {
        &self.hub_id
    }

    /// For `/readyz`. Records the outcome, which [`Store::is_available`] reports.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let done = on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
        });
        self.record_outcome(&done);
        done
    }

    /// Whether the database answered the last time it was asked (heartbeat, `/readyz`, or
    /// a request that failed to reach it). New answers are refused while it is false.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// `Err(PoolTimedOut)` (which the API maps to 503 `storage_unavailable`) while the
    /// database is known to be unreachable: checked before a new answer is admitted.
    pub fn check_available(&self) -> Result<(), sqlx::Error> {
        if self.is_available() {
            Ok(())
        } else {
            Err(sqlx::Error::PoolTimedOut)
        }
    }

    /// Notes whether the database was reachable, from the outcome of a query.
    pub(crate) fn record_outcome<T>(&self, outcome: &Result<T, sqlx::Error>) {
        match outcome {
            Ok(_) => self.available.store(true, Ordering::Relaxed),
            Err(e) if is_unreachable(e) => self.available.store(false, Ordering::Relaxed),
            Err(_) => {}
        }
    }

    /// Closes the pool: no new connection is opened, idle ones are closed.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Errors that mean the database cannot be reached (as opposed to a query it refused).
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
}

async fn connect_sqlite(database_url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(database_url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // SQLite has one writer at a time; a writer that finds the lock taken retries
        // for this long before failing with `database is locked`. No transaction holds
        // the lock for more than a batch (uploads write in short batches), so this
        // bound is only reached when the disk itself stalls.
        .busy_timeout(Duration::from_secs(5));
    if let Some(dir) = std::path::Path::new(options.get_filename()).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    SQLITE_MIGRATOR.run(&pool).await?;
    tenant_index::split_legacy_index(&pool).await?;
    Ok(pool)
}

async fn connect_postgres(database_url: &str) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(database_url)?.application_name("ragstream");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        // A connection cut by a database restart is found out before a request gets it.
        .test_before_acquire(true)
        .connect_with(options)
        .await?;
    POSTGRES_MIGRATOR.run(&pool).await?;
    Ok(pool)
}
