//! Persistence with sqlx: tenants, API keys, documents and chunks, conversations and their
//! messages.
//!
//! Every query is a runtime query with binds (no compile-time database needed), one
//! submodule per table family. Every read and write that touches tenant data takes the
//! tenant id, so scoping cannot be forgotten by a handler.

mod conversations;
mod documents;
mod keys;
mod sessions;
mod tenant_index;
mod tenants;
pub mod writer;

pub use conversations::{
    BegunTurn, Conversation, FinalWrite, MessageRecord, MessageStatus, NewTurn, PastMessage,
};
pub use documents::{
    DocumentCursor, DocumentSummary, NewDocument, Passage, Quota, QuotaExceeded, ReservedDocument,
    Usage,
};
pub use keys::{ApiKeyRecord, Bootstrap, KeyOwner, NewKey, Role};
pub use sessions::{SessionInfo, SessionTimes};
pub use tenants::Tenant;
pub use writer::StoreWriter;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Cheap to clone: a handle to the connection pool.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The queue in which bulk writes (uploads, deletes of documents) take turns, one batch
    /// at a time, so that they interleave with each other and leave room to other writers.
    bulk_writes: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (creating the file and its folder if needed) and migrates the database.
    /// Fails at start, not at the first request, when the URL is wrong.
    pub async fn connect(database_url: &str) -> Result<Store, sqlx::Error> {
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
        MIGRATOR.run(&pool).await?;
        tenant_index::split_legacy_index(&pool).await?;
        let store = Store {
            pool,
            bulk_writes: Arc::default(),
        };
        let unfinished = store.purge_unfinished_documents().await?;
        if unfinished > 0 {
            log::warn!(
                "{unfinished} document upload(s) or delete(s) cut short by the last run cleaned up"
            );
        }
        Ok(store)
    }

    /// For `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
