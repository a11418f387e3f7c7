//! Documents and their chunks, and the full-text search over them.
//!
//! A document is written in short transactions so that a large one never holds SQLite's
//! single write lock for long: [`Store::reserve_documents`] inserts the rows `loading`
//! (checking the tenant's quota in the same statement), [`Store::insert_chunks`] adds the
//! chunks in batches, and [`Store::publish_documents`] turns them `ready` at once. Searches
//! and listings see only `ready` documents, so a document still appears whole or not at
//! all. Deleting works the other way round: the row turns `deleting` (gone for readers),
//! then its chunks go in batches, then the row.

use std::time::Instant;

use serde::Serialize;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::tenant_index::{self, FtsTable};
use super::Store;

/// Text indexed per write transaction. A batch takes milliseconds, so a writer that waits
/// behind it (a conversation turn, a key) waits that long, not for a whole document.
const BATCH_TEXT_BYTES: usize = 32 * 1024;

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentSummary {
    pub id: String,
    pub title: String,
    pub chars: i64,
    pub chunk_count: i64,
    pub created_at: String,
}

/// A retrieved chunk, with a BM25 score where higher is better.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Passage {
    pub document_id: String,
    pub title: String,
    pub chunk_id: i64,
    pub text: String,
    pub score: f64,
}

/// A document about to be written.
#[derive(Debug, Clone, Copy)]
pub struct NewDocument<'a> {
    pub title: &'a str,
    pub chars: usize,
    pub bytes: usize,
}

/// What one tenant may hold.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_documents: u64,
    pub max_bytes: u64,
}

/// What a tenant holds now, documents being written included (deleted ones not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub documents: u64,
    pub bytes: u64,
}

impl Usage {
    /// The first limit that `documents` more documents of `bytes` more bytes would break.
    pub fn exceeds(&self, quota: &Quota, documents: u64, bytes: u64) -> Option<QuotaExceeded> {
        if self.documents.saturating_add(documents) > quota.max_documents {
            Some(QuotaExceeded::Documents {
                limit: quota.max_documents,
                used: self.documents,
            })
        } else if self.bytes.saturating_add(bytes) > quota.max_bytes {
            Some(QuotaExceeded::Bytes {
                limit: quota.max_bytes,
                used: self.bytes,
            })
        } else {
            None
        }
    }
}

/// Which of the tenant's limits an upload would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    Documents { limit: u64, used: u64 },
    Bytes { limit: u64, used: u64 },
}

/// A document row written `loading`: chunks may be added to it, then it is published.
#[derive(Debug, Clone)]
pub struct ReservedDocument {
    pub id: String,
    tenant_id: String,
    title: String,
    table: FtsTable,
}

impl Store {
    /// What the tenant holds, for a check before an upload is read. The binding check is
    /// the one [`Store::reserve_documents`] makes while it writes.
    pub async fn document_usage(&self, tenant_id: &str) -> Result<Usage, sqlx::Error> {
        usage(&self.pool, tenant_id).await
    }

    /// Inserts `docs` as `loading` rows of the tenant (invisible to searches and listings),
    /// all or none: none when they would take the tenant over `quota`. The quota is checked
    /// in the transaction that writes, which holds the write lock from its start, so
    /// concurrent uploads cannot both slip under it. Creates the tenant's full-text table
    /// with its first document.
    pub async fn reserve_documents(
        &self,
        tenant_id: &str,
        docs: &[NewDocument<'_>],
        quota: &Quota,
    ) -> Result<Result<Vec<ReservedDocument>, QuotaExceeded>, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let bytes: u64 = docs.iter().map(|d| d.bytes as u64).sum();
        if let Some(over) =
            usage(&mut *tx, tenant_id)
                .await?
                .exceeds(quota, docs.len() as u64, bytes)
        {
            return Ok(Err(over));
        }
        let table = tenant_index::ensure(&mut tx, tenant_id).await?;
        let mut reserved = Vec::with_capacity(docs.len());
        for doc in docs {
            let id = Uuid::new_v4().to_string();
            sqlx::query(
                "INSERT INTO documents (id, tenant_id, title, chars, bytes, chunk_count, status) \
                 VALUES (?, ?, ?, ?, ?, 0, 'loading')",
            )
            .bind(&id)
            .bind(tenant_id)
            .bind(doc.title)
            .bind(doc.chars as i64)
            .bind(doc.bytes as i64)
            .execute(&mut *tx)
            .await?;
            reserved.push(ReservedDocument {
                id,
                tenant_id: tenant_id.to_owned(),
                title: doc.title.to_owned(),
                table,
            });
        }
        tx.commit().await?;
        Ok(Ok(reserved))
    }

    /// Adds a reserved document's chunks (in order, `texts[i]` is chunk `i`) in
    /// transactions of about [`BATCH_TEXT_BYTES`] each.
    pub async fn insert_chunks(
        &self,
        doc: &ReservedDocument,
        texts: &[String],
    ) -> Result<(), sqlx::Error> {
        let mut start = 0;
        while start < texts.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < texts.len() && (end == start || bytes < BATCH_TEXT_BYTES) {
                bytes += texts[end].len();
                end += 1;
            }
            let batch = serde_json::to_string(&texts[start..end])
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let turn = self.bulk_turn().await;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let held = Instant::now();
            insert_batch(&mut tx, doc, start, &batch).await?;
            tx.commit().await?;
            turn.end(held).await;
            start = end;
        }
        Ok(())
    }

    /// Turns reserved documents `ready` together, with their chunk counts, and returns
    /// them. They take the time of this moment as their creation time: the moment they
    /// appeared.
    pub async fn publish_documents(
        &self,
        docs: &[(&ReservedDocument, usize)],
    ) -> Result<Vec<DocumentSummary>, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut published = Vec::with_capacity(docs.len());
        for (doc, chunk_count) in docs {
            let summary = sqlx::query_as::<_, DocumentSummary>(&format!(
                "UPDATE documents SET status = 'ready', chunk_count = ?, created_at = {NOW} \
                 WHERE id = ? AND status = 'loading' \
                 RETURNING id, title, chars, chunk_count, created_at"
            ))
            .bind(*chunk_count as i64)
            .bind(&doc.id)
            .fetch_one(&mut *tx)
            .await?;
            published.push(summary);
        }
        tx.commit().await?;
        Ok(published)
    }

    /// Removes a reserved document that will not be published, with whatever chunks it got.
    pub async fn discard_document(&self, doc: &ReservedDocument) -> Result<(), sqlx::Error> {
        self.purge_document(&doc.id, Some(doc.table)).await
    }

    /// One page of the tenant's ready documents, newest first: those after `after` (the
    /// last document of the previous page), at most `limit`.
    pub async fn list_documents(
        &self,
        tenant_id: &str,
        after: Option<&DocumentCursor>,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, sqlx::Error> {
        sqlx::query_as::<_, DocumentSummary>(
            "SELECT id, title, chars, chunk_count, created_at FROM documents \
             WHERE tenant_id = ?1 AND status = 'ready' \
               AND (?2 IS NULL OR created_at < ?2 OR (created_at = ?2 AND id > ?3)) \
             ORDER BY created_at DESC, id LIMIT ?4",
        )
        .bind(tenant_id)
        .bind(after.map(|c| c.created_at.as_str()))
        .bind(after.map_or("", |c| c.id.as_str()))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
    }

    /// How many ready documents the tenant has.
    pub async fn count_documents(&self, tenant_id: &str) -> Result<u64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM documents WHERE tenant_id = ? AND status = 'ready'",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Returns false when the tenant has no such document (another tenant's included).
    /// The document is gone for readers, and from the tenant's quota, at once; its chunks
    /// are removed in batches by a task of their own, so neither the caller nor other
    /// writers wait for a large document (one cut short is finished at the next start).
    pub async fn delete_document(&self, tenant_id: &str, id: &str) -> Result<bool, sqlx::Error> {
        let hidden = sqlx::query(
            "UPDATE documents SET status = 'deleting' \
             WHERE id = ? AND tenant_id = ? AND status = 'ready'",
        )
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if hidden.rows_affected() == 0 {
            return Ok(false);
        }
        let table = tenant_index::find(&self.pool, tenant_id).await?;
        let (store, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.purge_document(&id, table).await {
                log::error!("the chunks of deleted document {id} could not be removed: {e}");
            }
        });
        Ok(true)
    }

    /// Removes the documents a previous run left `loading` or `deleting` (it stopped in the
    /// middle of an upload or a delete). Only at start, before any upload of this run: with
    /// one process per SQLite file, no other is writing them.
    pub(super) async fn purge_unfinished_documents(&self) -> Result<u64, sqlx::Error> {
        let left: Vec<(String, String)> =
            sqlx::query_as("SELECT id, tenant_id FROM documents WHERE status <> 'ready'")
                .fetch_all(&self.pool)
                .await?;
        for (id, tenant_id) in &left {
            let table = tenant_index::find(&self.pool, tenant_id).await?;
            self.purge_document(id, table).await?;
        }
        Ok(left.len() as u64)
    }

    /// Deletes a document's chunks in batches, then its row.
    async fn purge_document(&self, id: &str, table: Option<FtsTable>) -> Result<(), sqlx::Error> {
        loop {
            let turn = self.bulk_turn().await;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let held = Instant::now();
            let removed = delete_batch(&mut tx, id, table).await?;
            tx.commit().await?;
            turn.end(held).await;
            if removed == 0 {
                break;
            }
        }
        sqlx::query("DELETE FROM documents WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Waits for this bulk job's turn to write one batch (an upload's, a delete's).
    ///
    /// Bulk jobs take turns in a fair queue, and after each batch [`BulkTurn::end`] leaves
    /// the database to other writers for as long as the batch held it: SQLite's busy
    /// handler polls rather than queues, so without the pause a waiting conversation turn
    /// could miss every short gap between back-to-back batches until its busy timeout.
    async fn bulk_turn(&self) -> BulkTurn<'_> {
        BulkTurn {
            _queue: self.bulk_writes.lock().await,
        }
    }

    /// Top-`k` BM25 passages of one tenant for an FTS5 match expression built by
    /// `rag::fts_query` (never raw user text). Only the tenant's own index is read, so its
    /// scores depend on its own documents alone.
    pub async fn search(
        &self,
        tenant_id: &str,
        match_query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, sqlx::Error> {
        crate::telemetry::timed("search", async {
            let Some(table) = tenant_index::find(&self.pool, tenant_id).await? else {
                return Ok(Vec::new());
            };
            let fts = table.name();
            sqlx::query_as::<_, Passage>(&format!(
                "SELECT c.document_id AS document_id, d.title AS title, c.id AS chunk_id, \
                    {fts}.text AS text, -bm25({fts}, 2.0, 1.0) AS score \
             FROM {fts} \
             JOIN chunks c ON c.id = {fts}.rowid \
             JOIN documents d ON d.id = c.document_id \
             WHERE {fts} MATCH ? AND c.tenant_id = ? AND d.status = 'ready' \
             ORDER BY bm25({fts}, 2.0, 1.0), c.id LIMIT ?"
            ))
            .bind(match_query)
            .bind(tenant_id)
            .bind(k as i64)
            .fetch_all(&self.pool)
            .await
        })
        .await
    }
}

/// A bulk job's turn to write; see [`Store::bulk_turn`].
struct BulkTurn<'a> {
    _queue: tokio::sync::MutexGuard<'a, ()>,
}

impl BulkTurn<'_> {
    /// Ends the turn after a pause as long as the batch held the write lock (since `held`).
    async fn end(self, held: Instant) {
        tokio::time::sleep(held.elapsed()).await;
    }
}

/// Where a page of documents ends: the last document's creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentCursor {
    pub created_at: String,
    pub id: String,
}

impl DocumentCursor {
    pub fn after(doc: &DocumentSummary) -> DocumentCursor {
        DocumentCursor {
            created_at: doc.created_at.clone(),
            id: doc.id.clone(),
        }
    }
}

async fn usage<'e, E>(executor: E, tenant_id: &str) -> Result<Usage, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let (documents, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM documents \
         WHERE tenant_id = ? AND status <> 'deleting'",
    )
    .bind(tenant_id)
    .fetch_one(executor)
    .await?;
    Ok(Usage {
        documents: documents.max(0) as u64,
        bytes: bytes.max(0) as u64,
    })
}

/// Chunks `first..first + n` of a document, their texts a JSON array: two statements
/// whatever the batch's size. The CROSS JOIN keeps `json_each` the outer loop, one index
/// lookup per chunk; the planner would otherwise scan the document's chunks so far for
/// every element, which grows with each batch.
async fn insert_batch(
    conn: &mut SqliteConnection,
    doc: &ReservedDocument,
    first: usize,
    texts_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chunks (document_id, tenant_id, ordinal) \
         SELECT ?1, ?2, ?3 + j.key FROM json_each(?4) j",
    )
    .bind(&doc.id)
    .bind(&doc.tenant_id)
    .bind(first as i64)
    .bind(texts_json)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {} (rowid, title, text) \
         SELECT c.id, ?1, j.value FROM json_each(?2) j \
         CROSS JOIN chunks c ON c.document_id = ?3 AND c.ordinal = ?4 + j.key",
        doc.table.name()
    ))
    .bind(&doc.title)
    .bind(texts_json)
    .bind(&doc.id)
    .bind(first as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes up to one batch of a document's chunks; returns how many went.
async fn delete_batch(
    conn: &mut SqliteConnection,
    document_id: &str,
    table: Option<FtsTable>,
) -> Result<u64, sqlx::Error> {
    // ~900-character chunks: about BATCH_TEXT_BYTES of text.
    const CHUNKS: i64 = 32;
    if let Some(table) = table {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE rowid IN \
             (SELECT id FROM chunks WHERE document_id = ? ORDER BY ordinal LIMIT ?)",
            table.name()
        ))
        .bind(document_id)
        .bind(CHUNKS)
        .execute(&mut *conn)
        .await?;
    }
    let done = sqlx::query(
        "DELETE FROM chunks WHERE id IN \
         (SELECT id FROM chunks WHERE document_id = ? ORDER BY ordinal LIMIT ?)",
    )
    .bind(document_id)
    .bind(CHUNKS)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
