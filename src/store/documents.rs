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
use sqlx::{PgPool, SqliteConnection};
use uuid::Uuid;

use super::tenant_index::{self, FtsTable};
use super::{Db, Store, SQLITE};

/// Text indexed per write transaction. A batch takes milliseconds, so a writer that waits
/// behind it (a conversation turn, a key) waits that long, not for a whole document.
const BATCH_TEXT_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentSummary {
    pub id: String,
    pub title: String,
    pub chars: i64,
    pub chunk_count: i64,
    pub created_at: String,
}

/// A retrieved chunk, with a score where higher is better (BM25 on SQLite, `ts_rank` on
/// PostgreSQL: comparable within one search only).
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

/// A search of one tenant's documents, in each database's syntax, built by
/// `rag::fts_query` from the same terms (never raw user text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchQuery {
    /// An FTS5 `MATCH` expression (SQLite).
    pub fts5: String,
    /// A `to_tsquery` expression (PostgreSQL).
    pub tsquery: String,
}

/// A document row written `loading`: chunks may be added to it, then it is published.
#[derive(Debug, Clone)]
pub struct ReservedDocument {
    pub id: String,
    tenant_id: String,
    title: String,
    /// The tenant's FTS5 table (SQLite; PostgreSQL indexes the chunks themselves).
    table: Option<FtsTable>,
}

/// The tenant's documents and bytes, uploads in progress included.
const USAGE: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM documents \
                     WHERE tenant_id = $1 AND status <> 'deleting'";

const INSERT_DOCUMENT: &str =
    "INSERT INTO documents (id, tenant_id, title, chars, bytes, chunk_count, status, hub_id) \
     VALUES ($1, $2, $3, $4, $5, 0, 'loading', $6)";

impl Store {
    /// What the tenant holds, for a check before an upload is read. The binding check is
    /// the one [`Store::reserve_documents`] makes while it writes.
    pub async fn document_usage(&self, tenant_id: &str) -> Result<Usage, sqlx::Error> {
        let (documents, bytes): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(USAGE).bind(tenant_id).fetch_one(pool).await?
        });
        Ok(Usage::from_counts(documents, bytes))
    }

    /// Inserts `docs` as `loading` rows of the tenant (invisible to searches and listings),
    /// all or none: none when they would take the tenant over `quota`. The quota is checked
    /// in the transaction that writes, which holds SQLite's write lock from its start, or
    /// on PostgreSQL the tenant's row lock, so concurrent uploads (on any hub) cannot both
    /// slip under it. On SQLite, creates the tenant's full-text table with its first
    /// document.
    pub async fn reserve_documents(
        &self,
        tenant_id: &str,
        docs: &[NewDocument<'_>],
        quota: &Quota,
    ) -> Result<Result<Vec<ReservedDocument>, QuotaExceeded>, sqlx::Error> {
        let bytes: u64 = docs.iter().map(|d| d.bytes as u64).sum();
        // The check and the inserts, the same on both databases, once the transaction
        // holds what serialises the tenant's uploads.
        macro_rules! check_and_insert {
            ($tx:ident, $table:expr) => {{
                let (documents, used): (i64, i64) = sqlx::query_as(USAGE)
                    .bind(tenant_id)
                    .fetch_one(&mut *$tx)
                    .await?;
                if let Some(over) =
                    Usage::from_counts(documents, used).exceeds(quota, docs.len() as u64, bytes)
                {
                    return Ok(Err(over));
                }
                let table = $table;
                let mut reserved = Vec::with_capacity(docs.len());
                for doc in docs {
                    let id = Uuid::new_v4().to_string();
                    sqlx::query(INSERT_DOCUMENT)
                        .bind(&id)
                        .bind(tenant_id)
                        .bind(doc.title)
                        .bind(doc.chars as i64)
                        .bind(doc.bytes as i64)
                        .bind(&*self.hub_id)
                        .execute(&mut *$tx)
                        .await?;
                    reserved.push(ReservedDocument {
                        id,
                        tenant_id: tenant_id.to_owned(),
                        title: doc.title.to_owned(),
                        table,
                    });
                }
                $tx.commit().await?;
                Ok(Ok(reserved))
            }};
        }
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with(SQLITE.begin_write).await?;
                check_and_insert!(tx, Some(tenant_index::ensure(&mut tx, tenant_id).await?))
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await?;
                check_and_insert!(tx, None)
            }
        }
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
            let held = Instant::now();
            match &self.db {
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_with(SQLITE.begin_write).await?;
                    insert_batch_sqlite(&mut tx, doc, start, &batch).await?;
                    tx.commit().await?;
                }
                Db::Postgres(pool) => insert_batch_postgres(pool, doc, start, &batch).await?,
            }
            turn.end(held, &self.db).await;
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
        on_pool!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            let sql = format!(
                "UPDATE documents SET status = 'ready', chunk_count = $1, created_at = {} \
                 WHERE id = $2 AND status = 'loading' \
                 RETURNING id, title, chars, chunk_count, created_at",
                d.now_text
            );
            let mut published = Vec::with_capacity(docs.len());
            for (doc, chunk_count) in docs {
                let summary = sqlx::query_as::<_, DocumentSummary>(&sql)
                    .bind(*chunk_count as i64)
                    .bind(&doc.id)
                    .fetch_one(&mut *tx)
                    .await?;
                published.push(summary);
            }
            tx.commit().await?;
            Ok(published)
        })
    }

    /// Removes a reserved document that will not be published, with whatever chunks it got.
    pub async fn discard_document(&self, doc: &ReservedDocument) -> Result<(), sqlx::Error> {
        self.purge_document(&doc.id, doc.table).await
    }

    /// One page of the tenant's ready documents, newest first: those after `after` (the
    /// last document of the previous page), at most `limit`.
    pub async fn list_documents(
        &self,
        tenant_id: &str,
        after: Option<&DocumentCursor>,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, DocumentSummary>(
                "SELECT id, title, chars, chunk_count, created_at FROM documents \
                 WHERE tenant_id = $1 AND status = 'ready' \
                   AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND id > $3)) \
                 ORDER BY created_at DESC, id LIMIT $4",
            )
            .bind(tenant_id)
            .bind(after.map(|c| c.created_at.as_str()))
            .bind(after.map_or("", |c| c.id.as_str()))
            .bind(limit as i64)
            .fetch_all(pool)
            .await
        })
    }

    /// How many ready documents the tenant has.
    pub async fn count_documents(&self, tenant_id: &str) -> Result<u64, sqlx::Error> {
        let (n,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*) FROM documents WHERE tenant_id = $1 AND status = 'ready'",
            )
            .bind(tenant_id)
            .fetch_one(pool)
            .await?
        });
        Ok(n as u64)
    }

    /// Returns false when the tenant has no such document (another tenant's included).
    /// The document is gone for readers, and from the tenant's quota, at once; its chunks
    /// are removed in batches by a task of their own, so neither the caller nor other
    /// writers wait for a large document (one cut short is finished by a live hub once
    /// this one is gone: the row is this hub's).
    pub async fn delete_document(&self, tenant_id: &str, id: &str) -> Result<bool, sqlx::Error> {
        let hidden = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE documents SET status = 'deleting', hub_id = $1 \
                 WHERE id = $2 AND tenant_id = $3 AND status = 'ready'",
            )
            .bind(&*self.hub_id)
            .bind(id)
            .bind(tenant_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if hidden == 0 {
            return Ok(false);
        }
        let table = self.fts_table(tenant_id).await?;
        let (store, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.purge_document(&id, table).await {
                log::error!("the chunks of deleted document {id} could not be removed: {e}");
            }
        });
        Ok(true)
    }

    /// Removes a document a dead hub left `loading` or `deleting` (it stopped in the
    /// middle of an upload or a delete). See [`Store::reap_dead_hubs`].
    pub(super) async fn purge_unfinished_document(
        &self,
        id: &str,
        tenant_id: &str,
    ) -> Result<(), sqlx::Error> {
        let table = self.fts_table(tenant_id).await?;
        self.purge_document(id, table).await
    }

    /// The tenant's FTS5 table on SQLite; `None` on PostgreSQL or before its first document.
    async fn fts_table(&self, tenant_id: &str) -> Result<Option<FtsTable>, sqlx::Error> {
        match &self.db {
            Db::Sqlite(pool) => tenant_index::find(pool, tenant_id).await,
            Db::Postgres(_) => Ok(None),
        }
    }

    /// Deletes a document's chunks in batches, then its row.
    async fn purge_document(&self, id: &str, table: Option<FtsTable>) -> Result<(), sqlx::Error> {
        loop {
            let turn = self.bulk_turn().await;
            let held = Instant::now();
            let removed = on_pool!(self, pool, d => {
                let mut tx = pool.begin_with(d.begin_write).await?;
                if let (Some(table), Db::Sqlite(_)) = (table, &self.db) {
                    // Only SQLite has FTS tables; the statement is plain SQL on either.
                    sqlx::query(&format!(
                        "DELETE FROM {} WHERE rowid IN \
                         (SELECT id FROM chunks WHERE document_id = $1 ORDER BY ordinal LIMIT $2)",
                        table.name()
                    ))
                    .bind(id)
                    .bind(DELETE_BATCH_CHUNKS)
                    .execute(&mut *tx)
                    .await?;
                }
                let done = sqlx::query(
                    "DELETE FROM chunks WHERE id IN \
                     (SELECT id FROM chunks WHERE document_id = $1 ORDER BY ordinal LIMIT $2)",
                )
                .bind(id)
                .bind(DELETE_BATCH_CHUNKS)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                done.rows_affected()
            });
            turn.end(held, &self.db).await;
            if removed == 0 {
                break;
            }
        }
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM documents WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
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

    /// Top-`k` passages of one tenant, best first, only `ready` documents. The search reads
    /// the tenant's own index only (SQLite: its FTS5 table, BM25 over its documents;
    /// PostgreSQL: the GIN index on (tenant_id, tsv), `ts_rank` of each chunk alone), so
    /// its scores and its cost depend on its own documents alone. Title matches weigh
    /// twice as much as text matches on both.
    pub async fn search(
        &self,
        tenant_id: &str,
        query: &MatchQuery,
        k: usize,
    ) -> Result<Vec<Passage>, sqlx::Error> {
        crate::telemetry::timed("search", async {
            match &self.db {
                Db::Sqlite(pool) => {
                    let Some(table) = tenant_index::find(pool, tenant_id).await? else {
                        return Ok(Vec::new());
                    };
                    let fts = table.name();
                    sqlx::query_as::<_, Passage>(&format!(
                        "SELECT c.document_id AS document_id, d.title AS title, c.id AS chunk_id, \
                            {fts}.text AS text, -bm25({fts}, 2.0, 1.0) AS score \
                     FROM {fts} \
                     JOIN chunks c ON c.id = {fts}.rowid \
                     JOIN documents d ON d.id = c.document_id \
                     WHERE {fts} MATCH $1 AND c.tenant_id = $2 AND d.status = 'ready' \
                     ORDER BY bm25({fts}, 2.0, 1.0), c.id LIMIT $3"
                    ))
                    .bind(&query.fts5)
                    .bind(tenant_id)
                    .bind(k as i64)
                    .fetch_all(pool)
                    .await
                }
                // Weights {D, C, B, A}: the title (A) twice the text (B). Normalisation 1
                // divides by 1 + log(length), as BM25 discounts long chunks.
                Db::Postgres(pool) => {
                    sqlx::query_as::<_, Passage>(
                        "SELECT c.document_id AS document_id, d.title AS title, c.id AS chunk_id, \
                            c.text AS text, \
                            CAST(ts_rank('{0, 0, 0.5, 1}', c.tsv, q, 1) AS DOUBLE PRECISION) \
                                AS score \
                     FROM chunks c \
                     CROSS JOIN to_tsquery('ragstream', $1) q \
                     JOIN documents d ON d.id = c.document_id \
                     WHERE c.tenant_id = $2 AND c.tsv @@ q AND d.status = 'ready' \
                     ORDER BY score DESC, c.id LIMIT $3",
                    )
                    .bind(&query.tsquery)
                    .bind(tenant_id)
                    .bind(k as i64)
                    .fetch_all(pool)
                    .await
                }
            }
        })
        .await
    }
}

/// ~900-character chunks: about BATCH_TEXT_BYTES of text per delete batch.
const DELETE_BATCH_CHUNKS: i64 = 32;

/// A bulk job's turn to write; see [`Store::bulk_turn`].
struct BulkTurn<'a> {
    _queue: tokio::sync::MutexGuard<'a, ()>,
}

impl BulkTurn<'_> {
    /// Ends the turn after a pause as long as the batch held the write lock (since `held`).
    /// PostgreSQL has no database-wide write lock, so no pause there.
    async fn end(self, held: Instant, db: &Db) {
        if matches!(db, Db::Sqlite(_)) {
            tokio::time::sleep(held.elapsed()).await;
        }
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

impl Usage {
    fn from_counts(documents: i64, bytes: i64) -> Usage {
        Usage {
            documents: documents.max(0) as u64,
            bytes: bytes.max(0) as u64,
        }
    }
}

/// Chunks `first..first + n` of a document, their texts a JSON array: two statements
/// whatever the batch's size. The CROSS JOIN keeps `json_each` the outer loop, one index
/// lookup per chunk; the planner would otherwise scan the document's chunks so far for
/// every element, which grows with each batch.
async fn insert_batch_sqlite(
    conn: &mut SqliteConnection,
    doc: &ReservedDocument,
    first: usize,
    texts_json: &str,
) -> Result<(), sqlx::Error> {
    let table = doc
        .table
        .ok_or_else(|| sqlx::Error::Protocol("a SQLite document without its index".into()))?;
    sqlx::query(
        "INSERT INTO chunks (document_id, tenant_id, ordinal) \
         SELECT $1, $2, $3 + j.key FROM json_each($4) j",
    )
    .bind(&doc.id)
    .bind(&doc.tenant_id)
    .bind(first as i64)
    .bind(texts_json)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {} (rowid, title, text) \
         SELECT c.id, $1, j.value FROM json_each($2) j \
         CROSS JOIN chunks c ON c.document_id = $3 AND c.ordinal = $4 + j.key",
        table.name()
    ))
    .bind(&doc.title)
    .bind(texts_json)
    .bind(&doc.id)
    .bind(first as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The same batch on PostgreSQL: one statement (the chunk's `tsvector` is a generated
/// column), ordinals from the array's positions.
async fn insert_batch_postgres(
    pool: &PgPool,
    doc: &ReservedDocument,
    first: usize,
    texts_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chunks (document_id, tenant_id, ordinal, title, text) \
         SELECT $1, $2, $3 + j.n - 1, $4, j.text \
         FROM jsonb_array_elements_text(CAST($5 AS TEXT)::jsonb) WITH ORDINALITY AS j(text, n)",
    )
    .bind(&doc.id)
    .bind(&doc.tenant_id)
    .bind(first as i64)
    .bind(&doc.title)
    .bind(texts_json)
    .execute(pool)
    .await?;
    Ok(())
}
