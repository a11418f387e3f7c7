//! Conversations and their messages.
//!
//! Every query that a client can reach takes the tenant and the user (the API key id), so a
//! conversation of another user or tenant is indistinguishable from one that does not exist.
//! An answer writes its assistant row twice: once when the turn begins (`streaming`) and
//! once when it ends ([`Store::finish_message`]); never per token.

use serde::Serialize;
use uuid::Uuid;

use super::Store;

/// The stored state of an assistant message. User messages have none (`NULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageStatus {
    /// The answer is being generated (or a crash left it so: see `interrupted`).
    #[default]
    Streaming,
    Complete,
    /// The client or an administrator stopped it; the text is what was generated until then.
    Cancelled,
    /// The provider (or retrieval) failed; `error_code` says why.
    Error,
    /// The hub stopped (crash, kill) while the answer was streaming.
    Interrupted,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Error => "error",
            MessageStatus::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub title: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    pub id: String,
    pub role: String,
    pub content: String,
    pub status: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub ttft_ms: Option<i64>,
    pub tokens: Option<i64>,
    pub error_code: Option<String>,
    pub created_at: String,
}

/// An earlier message of a conversation, as the next turn's prompt needs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PastMessage {
    pub role: String,
    pub content: String,
    pub status: Option<String>,
}

/// A turn's two rows, as the store writer stores them (in its queue, so owned).
#[derive(Debug, Clone)]
pub struct TurnRows {
    pub tenant_id: String,
    pub user_id: String,
    /// Minted by the answer when the conversation is new, so its id goes to the client
    /// before any row is written.
    pub conversation_id: String,
    /// The conversation is created with the turn, titled after the question.
    pub new_conversation: bool,
    pub question: String,
    /// Who is expected to answer; the final write records who did.
    pub provider: String,
    pub model: String,
    /// Chosen by the answer, so that it can arrange the row's final write before the row
    /// exists (an answer may be aborted while the turn waits to be stored).
    pub assistant_message_id: String,
}

/// The one write at the end of an answer.
#[derive(Debug, Clone, Default)]
pub struct FinalWrite {
    pub message_id: String,
    pub content: String,
    pub status: MessageStatus,
    pub provider: String,
    pub model: String,
    pub ttft_ms: Option<u64>,
    pub tokens: u64,
    pub error_code: Option<String>,
}

/// One write of a [`Store::write_batch`].
pub enum BatchWrite<'a> {
    Turn(&'a TurnRows),
    Final(&'a FinalWrite),
}

/// The final write's statement, the same for both databases but for the clock.
fn final_write_sql(now_text: &str) -> String {
    format!(
        "UPDATE messages SET content = $1, status = $2, provider = $3, model = $4, \
                ttft_ms = $5, tokens = $6, error_code = $7, updated_at = {now_text} \
         WHERE id = $8 AND status = 'streaming'"
    )
}

/// The final write's statement with its values bound (a macro: the query's type differs
/// per database). Only a `streaming` row is written, so sending the same write twice (an
/// end whose first write was cut short) changes nothing, and a row another hub marked
/// `interrupted` (this hub was taken for dead) stays so.
macro_rules! final_write_query {
    ($sql:expr, $write:expr) => {
        sqlx::query($sql)
            .bind(&$write.content)
            .bind($write.status.as_str())
            .bind(&$write.provider)
            .bind(&$write.model)
            .bind($write.ttft_ms.map(|t| t as i64))
            .bind($write.tokens as i64)
            .bind($write.error_code.as_deref())
            .bind(&$write.message_id)
    };
}

/// Titles made from a first question are cut here, on a character boundary.
const AUTO_TITLE_CHARS: usize = 80;

fn auto_title(question: &str) -> String {
    let question = question.trim();
    match question.char_indices().nth(AUTO_TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", question[..cut].trim_end()),
        None => question.to_owned(),
    }
}

impl Store {
    pub async fn create_conversation(
        &self,
        tenant_id: &str,
        user_id: &str,
        title: Option<&str>,
    ) -> Result<Conversation, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Conversation>(
                "INSERT INTO conversations (id, tenant_id, user_id, title) VALUES ($1, $2, $3, $4) \
                 RETURNING id, title, created_at, updated_at",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(tenant_id)
            .bind(user_id)
            .bind(title)
            .fetch_one(pool)
            .await
        })
    }

    /// One page of a user's conversations, most recently active first, and how many there
    /// are in all.
    pub async fn list_conversations(
        &self,
        tenant_id: &str,
        user_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Conversation>, i64), sqlx::Error> {
        on_pool!(self, pool => {
            let page = sqlx::query_as::<_, Conversation>(
                "SELECT id, title, created_at, updated_at FROM conversations \
                 WHERE tenant_id = $1 AND user_id = $2 \
                 ORDER BY updated_at DESC, rowid DESC LIMIT $3 OFFSET $4",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(pool)
            .await?;
            let (total,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM conversations WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(tenant_id)
            .bind(user_id)
            .fetch_one(pool)
            .await?;
            Ok((page, total))
        })
    }

    pub async fn get_conversation(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
    ) -> Result<Option<Conversation>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Conversation>(
                "SELECT id, title, created_at, updated_at FROM conversations \
                 WHERE id = $1 AND tenant_id = $2 AND user_id = $3",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
    }

    /// Whether the user has this conversation: checked before an answer is admitted, so
    /// an unknown id is a plain error rather than a stream that fails.
    pub async fn conversation_exists(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
    ) -> Result<bool, sqlx::Error> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT CAST(1 AS BIGINT) FROM conversations \
                 WHERE id = $1 AND tenant_id = $2 AND user_id = $3",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.is_some())
    }

    /// A conversation's messages in order. The caller has checked the conversation is the
    /// user's ([`Store::get_conversation`]).
    pub async fn conversation_messages(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<MessageRecord>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, MessageRecord>(
                "SELECT id, role, content, status, provider, model, ttft_ms, tokens, error_code, \
                        created_at \
                 FROM messages WHERE conversation_id = $1 ORDER BY seq",
            )
            .bind(conversation_id)
            .fetch_all(pool)
            .await
        })
    }

    /// Returns `None` when the user has no such conversation.
    pub async fn rename_conversation(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        title: &str,
    ) -> Result<Option<Conversation>, sqlx::Error> {
        on_pool!(self, pool, d => {
            sqlx::query_as::<_, Conversation>(&format!(
                "UPDATE conversations SET title = $1, updated_at = {} \
                 WHERE id = $2 AND tenant_id = $3 AND user_id = $4 \
                 RETURNING id, title, created_at, updated_at",
                d.now_text
            ))
            .bind(title)
            .bind(id)
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
    }

    /// Deletes a conversation and (by cascade) its messages. False when the user has no
    /// such conversation.
    pub async fn delete_conversation(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM conversations WHERE id = $1 AND tenant_id = $2 AND user_id = $3",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(user_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// The latest `rows` messages of a user's conversation, oldest first; `None` when the
    /// user has no such conversation (another user's included). A read, outside any write
    /// transaction: the turn's rows are written later by the store writer.
    pub async fn turn_history(
        &self,
        tenant_id: &str,
        user_id: &str,
        conversation_id: &str,
        rows: usize,
    ) -> Result<Option<Vec<PastMessage>>, sqlx::Error> {
        crate::telemetry::timed("conversation_history", async {
            on_pool!(self, pool => {
                let found: Option<(String,)> = sqlx::query_as(
                    "SELECT id FROM conversations WHERE id = $1 AND tenant_id = $2 AND user_id = $3",
                )
                .bind(conversation_id)
                .bind(tenant_id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?;
                if found.is_none() {
                    return Ok(None);
                }
                let mut earlier = sqlx::query_as::<_, PastMessage>(
                    "SELECT role, content, status FROM messages WHERE conversation_id = $1 \
                     ORDER BY seq DESC LIMIT $2",
                )
                .bind(conversation_id)
                .bind(rows as i64)
                .fetch_all(pool)
                .await?;
                earlier.reverse();
                Ok(Some(earlier))
            })
        })
        .await
    }

    /// Stores many writes in one transaction (group commit: one lock and one sync for a
    /// burst of turns instead of one each), each under a savepoint of its own so one that
    /// fails leaves the others in. Returns each write's result in order; `Err` when the
    /// transaction itself failed, and then none of them is stored.
    ///
    /// On SQLite the transaction takes the write lock at `BEGIN IMMEDIATE`; a deferred one
    /// that read first could fail with `SQLITE_BUSY` when another writer commits in between,
    /// which the busy timeout does not cover. On PostgreSQL a turn locks its conversation's
    /// row first, so two turns of one conversation on two hubs take their `seq` in turn.
    pub async fn write_batch(
        &self,
        writes: &[BatchWrite<'_>],
    ) -> Result<Vec<Result<bool, sqlx::Error>>, sqlx::Error> {
        crate::telemetry::timed("conversation_batch", async {
            on_pool!(self, pool, d => {
                let mut tx = pool.begin_with(d.begin_write).await?;
                let mut results = Vec::with_capacity(writes.len());
                for write in writes {
                    sqlx::query("SAVEPOINT batch_write").execute(&mut *tx).await?;
                    let done: Result<bool, sqlx::Error> = async {
                        match write {
                            BatchWrite::Turn(turn) => {
                                if turn.new_conversation {
                                    sqlx::query(
                                        "INSERT INTO conversations (id, tenant_id, user_id, title) \
                                         VALUES ($1, $2, $3, $4)",
                                    )
                                    .bind(&turn.conversation_id)
                                    .bind(&turn.tenant_id)
                                    .bind(&turn.user_id)
                                    .bind(auto_title(&turn.question))
                                    .execute(&mut *tx)
                                    .await?;
                                } else {
                                    // Untitled conversations (created empty) take their first
                                    // question's title.
                                    let done = sqlx::query(&format!(
                                        "UPDATE conversations SET updated_at = {}, \
                                            title = COALESCE(title, $1) \
                                         WHERE id = $2 AND tenant_id = $3 AND user_id = $4",
                                        d.now_text
                                    ))
                                    .bind(auto_title(&turn.question))
                                    .bind(&turn.conversation_id)
                                    .bind(&turn.tenant_id)
                                    .bind(&turn.user_id)
                                    .execute(&mut *tx)
                                    .await?;
                                    if done.rows_affected() == 0 {
                                        // Deleted since the answer read its history.
                                        return Ok(false);
                                    }
                                }
                                let (last_seq,): (i64,) = sqlx::query_as(
                                    "SELECT COALESCE(MAX(seq), 0) FROM messages \
                                     WHERE conversation_id = $1",
                                )
                                .bind(&turn.conversation_id)
                                .fetch_one(&mut *tx)
                                .await?;
                                sqlx::query(
                                    "INSERT INTO messages (id, conversation_id, seq, role, content) \
                                     VALUES ($1, $2, $3, 'user', $4)",
                                )
                                .bind(Uuid::new_v4().to_string())
                                .bind(&turn.conversation_id)
                                .bind(last_seq + 1)
                                .bind(&turn.question)
                                .execute(&mut *tx)
                                .await?;
                                sqlx::query(
                                    "INSERT INTO messages \
                                        (id, conversation_id, seq, role, status, provider, model, \
                                         hub_id) \
                                     VALUES ($1, $2, $3, 'assistant', 'streaming', $4, $5, $6)",
                                )
                                .bind(&turn.assistant_message_id)
                                .bind(&turn.conversation_id)
                                .bind(last_seq + 2)
                                .bind(&turn.provider)
                                .bind(&turn.model)
                                .bind(&*self.hub_id)
                                .execute(&mut *tx)
                                .await?;
                                Ok(true)
                            }
                            BatchWrite::Final(write) => {
                                let sql = final_write_sql(d.now_text);
                                let done =
                                    final_write_query!(&sql, write).execute(&mut *tx).await?;
                                Ok(done.rows_affected() > 0)
                            }
                        }
                    }
                    .await;
                    match done {
                        Ok(stored) => {
                            sqlx::query("RELEASE SAVEPOINT batch_write").execute(&mut *tx).await?;
                            results.push(Ok(stored));
                        }
                        // The connection is gone: so is the whole transaction.
                        Err(e) if super::is_unreachable(&e) => return Err(e),
                        Err(e) => {
                            sqlx::query("ROLLBACK TO SAVEPOINT batch_write")
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query("RELEASE SAVEPOINT batch_write").execute(&mut *tx).await?;
                            results.push(Err(e));
                        }
                    }
                }
                tx.commit().await?;
                Ok(results)
            })
        })
        .await
    }

    /// The one write at an answer's end. Only a `streaming` row is written, so sending
    /// the same write twice (an end whose first write was cut short) changes nothing, and
    /// a row another hub marked `interrupted` (this hub was taken for dead) stays so.
    pub async fn finish_message(&self, write: &FinalWrite) -> Result<(), sqlx::Error> {
        crate::telemetry::timed("conversation_finish", async {
            on_pool!(self, pool, d => {
                let sql = final_write_sql(d.now_text);
                final_write_query!(&sql, write).execute(pool).await.map(|_| ())
            })
        })
        .await
    }

    /// The status of one message (`None`: no such message, or a user's). For tests and
    /// tools: clients read messages through their conversation.
    pub async fn message_status(&self, id: &str) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(Option<String>,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT status FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.and_then(|(status,)| status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_titles_are_the_question_cut_on_a_character_boundary() {
        assert_eq!(auto_title("  When was it built? "), "When was it built?");
        let long = "é".repeat(100);
        let title = auto_title(&long);
        assert_eq!(title.chars().count(), AUTO_TITLE_CHARS + 1);
        assert!(title.ends_with('…'));
    }
}
