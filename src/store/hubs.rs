//! The `hubs` table: which hub processes are alive, so that the rows a dead hub left
//! unfinished (answers `streaming`, uploads `loading`, deletes `deleting`) are cleaned up by
//! the hubs still alive, and a live hub's never are.
//!
//! Heartbeats and the lapse test both use the database's clock, so hubs whose clocks
//! disagree still agree on who is dead.

use std::time::Duration;

use super::Store;

/// What one [`Store::reap_dead_hubs`] cleaned up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Answers marked `interrupted`.
    pub answers: u64,
    /// Uploads and deletes removed.
    pub documents: u64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Registers this hub, or renews its heartbeat. A hub that was taken for dead (its
    /// heartbeat lapsed while it was paused) comes back; the rows cleaned up meanwhile stay
    /// cleaned up (a final write only ever changes a `streaming` row).
    pub async fn heartbeat(&self) -> Result<(), sqlx::Error> {
        let done = on_pool!(self, pool, d => {
            sqlx::query(&format!(
                "INSERT INTO hubs (id, started_at, heartbeat_at) VALUES ($1, {now}, {now}) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                now = d.now_ms
            ))
            .bind(&*self.hub_id)
            .execute(pool)
            .await
            .map(|_| ())
        });
        self.record_outcome(&done);
        done.map(|_| ())
    }

    /// Forgets the hubs whose heartbeat is older than `ttl`, then marks `interrupted` the
    /// answers and removes the uploads and deletes of every hub no longer registered (rows
    /// of versions before hubs have none). This hub's own rows are never touched: it just
    /// renewed its heartbeat, or it is the one taken for dead.
    pub async fn reap_dead_hubs(&self, ttl: Duration) -> Result<Reaped, sqlx::Error> {
        let answers = on_pool!(self, pool, d => {
            sqlx::query(&format!(
                "DELETE FROM hubs WHERE heartbeat_at < {} - $1 AND id <> $2",
                d.now_ms
            ))
            .bind(millis(ttl))
            .bind(&*self.hub_id)
            .execute(pool)
            .await?;
            sqlx::query(&format!(
                "UPDATE messages SET status = 'interrupted', updated_at = {} \
                 WHERE status = 'streaming' AND (hub_id IS NULL OR hub_id <> $1) \
                   AND NOT EXISTS (SELECT 1 FROM hubs h WHERE h.id = messages.hub_id)",
                d.now_text
            ))
            .bind(&*self.hub_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        let left: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, tenant_id FROM documents \
                 WHERE status <> 'ready' AND (hub_id IS NULL OR hub_id <> $1) \
                   AND NOT EXISTS (SELECT 1 FROM hubs h WHERE h.id = documents.hub_id)",
            )
            .bind(&*self.hub_id)
            .fetch_all(pool)
            .await?
        });
        for (id, tenant_id) in &left {
            self.purge_unfinished_document(id, tenant_id).await?;
        }
        Ok(Reaped {
            answers,
            documents: left.len() as u64,
        })
    }

    /// This hub leaves the `hubs` table (at a clean stop): its rows left `streaming` are
    /// cleaned up by the next reaper without waiting for the lapse.
    pub async fn deregister(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM hubs WHERE id = $1")
                .bind(&*self.hub_id)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
