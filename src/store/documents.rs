use serde::Serialize;
use uuid::Uuid;

use super::Store;
use crate::rag::chunking::chunk_document;

/// Chunk size and overlap in characters: a few paragraphs, small enough that a handful of
/// passages fit a prompt, with enough overlap that a sentence cut at a boundary is kept whole.
const CHUNK_TARGET_CHARS: usize = 900;
const CHUNK_OVERLAP_CHARS: usize = 150;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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

impl Store {
    /// Stores a document and indexes its chunks in one transaction, so a search never sees
    /// half a document.
    pub async fn insert_document(
        &self,
        tenant_id: &str,
        title: &str,
        text: &str,
    ) -> Result<DocumentSummary, sqlx::Error> {
        let chunks = chunk_document(text, CHUNK_TARGET_CHARS, CHUNK_OVERLAP_CHARS);
        let id = Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await?;
        let summary = sqlx::query_as::<_, DocumentSummary>(
            "INSERT INTO documents (id, tenant_id, title, chars, chunk_count) VALUES (?, ?, ?, ?, ?) \
             RETURNING id, title, chars, chunk_count, created_at",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(title)
        .bind(text.chars().count() as i64)
        .bind(chunks.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        for chunk in &chunks {
            let (chunk_id,): (i64,) = sqlx::query_as(
                "INSERT INTO chunks (document_id, tenant_id, ordinal) VALUES (?, ?, ?) RETURNING id",
            )
            .bind(&id)
            .bind(tenant_id)
            .bind(chunk.ordinal as i64)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO chunks_fts (rowid, title, text) VALUES (?, ?, ?)")
                .bind(chunk_id)
                .bind(title)
                .bind(&chunk.text)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(summary)
    }

    pub async fn list_documents(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<DocumentSummary>, sqlx::Error> {
        sqlx::query_as::<_, DocumentSummary>(
            "SELECT id, title, chars, chunk_count, created_at FROM documents \
             WHERE tenant_id = ? ORDER BY created_at DESC, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Returns false when the tenant has no such document (another tenant's included).
    pub async fn delete_document(&self, tenant_id: &str, id: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM chunks_fts WHERE rowid IN \
             (SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id \
              WHERE d.id = ? AND d.tenant_id = ?)",
        )
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM documents WHERE id = ? AND tenant_id = ?")
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Top-`k` BM25 passages of one tenant for an FTS5 match expression built by
    /// `rag::fts_query` (never raw user text).
    pub async fn search(
        &self,
        tenant_id: &str,
        match_query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, sqlx::Error> {
        sqlx::query_as::<_, Passage>(
            "SELECT c.document_id AS document_id, d.title AS title, c.id AS chunk_id, \
                    chunks_fts.text AS text, -bm25(chunks_fts, 2.0, 1.0) AS score \
             FROM chunks_fts \
             JOIN chunks c ON c.id = chunks_fts.rowid \
             JOIN documents d ON d.id = c.document_id \
             WHERE chunks_fts MATCH ? AND c.tenant_id = ? \
             ORDER BY bm25(chunks_fts, 2.0, 1.0) LIMIT ?",
        )
        .bind(match_query)
        .bind(tenant_id)
        .bind(k as i64)
        .fetch_all(&self.pool)
        .await
    }
}
