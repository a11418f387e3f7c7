//! Each tenant's full-text index: an FTS5 table of its own, so BM25's statistics and the
//! cost of a search come from that tenant's documents only. With one shared table, another
//! tenant's uploads moved a tenant's scores (telling it which terms others have) and made
//! its searches slower.
//!
//! A table is named `chunks_fts_<n>` after the tenant's row in `tenant_fts`: the name is
//! made from an integer the database handed out, never from text a client sent.

use sqlx::{Sqlite, SqliteConnection, SqlitePool};

/// The shared index of versions before per-tenant tables.
const LEGACY_TABLE: &str = "chunks_fts";

/// The full-text table of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FtsTable(i64);

impl FtsTable {
    /// The table's name, safe to put into SQL: digits after a fixed prefix.
    pub(super) fn name(self) -> String {
        format!("chunks_fts_{}", self.0)
    }
}

/// The tenant's table, `None` before its first document.
pub(super) async fn find<'e, E>(
    executor: E,
    tenant_id: &str,
) -> Result<Option<FtsTable>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM tenant_fts WHERE tenant_id = ?")
        .bind(tenant_id)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|(id,)| FtsTable(id)))
}

/// The tenant's table, created if it has none yet. Call inside a transaction that already
/// holds the write lock, so two first uploads of one tenant cannot race.
pub(super) async fn ensure(
    conn: &mut SqliteConnection,
    tenant_id: &str,
) -> Result<FtsTable, sqlx::Error> {
    sqlx::query("INSERT INTO tenant_fts (tenant_id) VALUES (?) ON CONFLICT (tenant_id) DO NOTHING")
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    let table = find(&mut *conn, tenant_id)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("the tenant's index row vanished".to_owned()))?;
    create_table(conn, table).await?;
    Ok(table)
}

async fn create_table(conn: &mut SqliteConnection, table: FtsTable) -> Result<(), sqlx::Error> {
    // The title is indexed with each chunk so a question naming a document finds it.
    sqlx::query(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING fts5(title, text, tokenize = 'porter unicode61')",
        table.name()
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the chunks of the shared index of earlier versions into per-tenant tables, then
/// drops it. One transaction: a start cut short leaves the shared table whole, and the next
/// start does the move again. Nothing to do once it is gone.
pub(super) async fn split_legacy_index(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let legacy: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(LEGACY_TABLE)
            .fetch_optional(&mut *tx)
            .await?;
    if legacy.is_none() {
        return Ok(());
    }
    let tenants: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT tenant_id FROM chunks")
        .fetch_all(&mut *tx)
        .await?;
    for (tenant_id,) in &tenants {
        let table = ensure(&mut tx, tenant_id).await?;
        sqlx::query(&format!(
            "INSERT INTO {} (rowid, title, text) \
             SELECT f.rowid, f.title, f.text FROM {LEGACY_TABLE} f \
             JOIN chunks c ON c.id = f.rowid WHERE c.tenant_id = ?",
            table.name()
        ))
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("DROP TABLE {LEGACY_TABLE}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if !tenants.is_empty() {
        log::info!(
            "the full-text index was split into one table per tenant ({} tenant(s))",
            tenants.len()
        );
    }
    Ok(())
}
