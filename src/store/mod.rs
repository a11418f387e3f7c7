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
mod tenants;
pub mod writer;

pub use conversations::{
    BegunTurn, Conversation, FinalWrite, MessageRecord, MessageStatus, NewTurn, PastMessage,
};
pub use documents::{DocumentSummary, Passage};
pub use keys::{ApiKeyRecord, Bootstrap, KeyOwner, NewKey, Role};
pub use sessions::{SessionInfo, SessionTimes};
pub use tenants::Tenant;
pub use writer::StoreWriter;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Cheap to clone: a handle to the connection pool.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
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
        Ok(Store { pool })
    }

    /// For `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
