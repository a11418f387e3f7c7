//! An agent-chat answer as a turn of a conversation: its rows in the store.
//!
//! The turn's question and an empty assistant row (`streaming`) are queued to the store
//! writer when the answer begins, and the answer goes on without waiting for them: its
//! first token never waits for a write. The answer keeps its text in memory as it streams
//! and queues its final write at its end, then awaits both (they usually share one
//! transaction), so a client that reads the conversation after `done` finds the turn.
//!
//! When the answer's task is aborted instead (the client cancelled or left, an
//! administrator ended the answer, the worker stopped, a panic) nothing can be awaited any
//! more: `Drop` then hands the write to the store writer through the slot reserved when the
//! turn began, which never waits and never fails. The row then keeps exactly the text
//! generated until the abort. The writer's queue keeps order, so that write follows the
//! turn's rows even when they are still queued.

use std::sync::Arc;

use futures_util::future::AbortHandle;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{stop_cause, AnswerEntry, ConversationRef, DoneMetadata, Pipeline};
use crate::store::writer::{TurnStored, WriteSlot};
use crate::store::{FinalWrite, MessageStatus, PastMessage, StoreWriter, TurnRows};

/// Earlier messages read back for a turn: 100 exchanges, more than a budget usually lets
/// through, so the budget decides what is sent while the read stays bounded however long
/// a conversation grows.
const HISTORY_ROWS: usize = 200;

/// Why a turn could not begin, as the answer's error code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotBegun {
    /// The store writer has stopped: the hub is shutting down.
    Unavailable,
    /// Deleted since the route checked it (or never the user's).
    NotFound,
    /// The history could not be read.
    Storage,
}

impl NotBegun {
    pub(super) fn code_and_message(self) -> (&'static str, &'static str) {
        match self {
            NotBegun::Unavailable => ("unavailable", "the service is shutting down"),
            NotBegun::NotFound => ("conversation_not_found", "no such conversation"),
            NotBegun::Storage => ("storage_failed", "the conversation could not be stored"),
        }
    }
}

/// The turn's rows could not be stored (logged by the store writer): the answer says so
/// instead of `done`, since its conversation will not show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NotStored;

/// A turn that has begun: its record and the conversation's earlier messages.
pub(super) struct Begun {
    pub record: TurnRecord,
    pub conversation_id: String,
    pub earlier: Vec<PastMessage>,
}

/// What a turn's rows say about who answers.
pub(super) struct Answerer<'a> {
    pub provider: &'a str,
    pub model: &'a str,
}

/// Begins a turn: reserves its final write, reads an existing conversation's history, and
/// queues the rows (a new conversation's id is minted here).
pub(super) async fn begin(
    p: &Pipeline,
    tenant_id: &str,
    conversation: &ConversationRef,
    question: &str,
    answerer: Answerer<'_>,
    stops: (AbortHandle, Arc<AnswerEntry>),
) -> Result<Begun, NotBegun> {
    // Reserved before the rows are queued, so an abort from here on still finishes them.
    let slot = p.writer.reserve().await.ok_or(NotBegun::Unavailable)?;
    let (conversation_id, earlier) = match &conversation.id {
        None => (Uuid::new_v4().to_string(), Vec::new()),
        Some(id) => {
            let earlier = p
                .store
                .turn_history(tenant_id, &conversation.user_id, id, HISTORY_ROWS)
                .await
                .map_err(|e| {
                    log::error!("a conversation's history could not be read: {e}");
                    NotBegun::Storage
                })?
                .ok_or(NotBegun::NotFound)?;
            (id.clone(), earlier)
        }
    };
    let message_id = Uuid::new_v4().to_string();
    let rows = p
        .writer
        .store_turn(TurnRows {
            tenant_id: tenant_id.to_owned(),
            user_id: conversation.user_id.clone(),
            conversation_id: conversation_id.clone(),
            new_conversation: conversation.id.is_none(),
            question: question.to_owned(),
            provider: answerer.provider.to_owned(),
            model: answerer.model.to_owned(),
            assistant_message_id: message_id.clone(),
        })
        .await;
    let (admin_abort, entry) = stops;
    Ok(Begun {
        record: TurnRecord {
            write: FinalWrite {
                message_id,
                status: MessageStatus::Streaming,
                provider: answerer.provider.to_owned(),
                model: answerer.model.to_owned(),
                ..FinalWrite::default()
            },
            slot: Some(slot),
            rows: Some(rows),
            writer: p.writer.clone(),
            admin_abort,
            entry,
        },
        conversation_id,
        earlier,
    })
}

/// The assistant row of a conversation turn, and its one final write.
pub(super) struct TurnRecord {
    write: FinalWrite,
    /// `None` once the final write is queued (or the rows were never stored).
    slot: Option<WriteSlot>,
    /// The turn's rows, queued when it began; `None` once they are known stored.
    rows: Option<oneshot::Receiver<TurnStored>>,
    writer: StoreWriter,
    /// Tells an administrator's end and a shutdown from a client's cancel.
    admin_abort: AbortHandle,
    entry: Arc<AnswerEntry>,
}

impl TurnRecord {
    /// Kept before the text is sent: what the row holds if the answer stops now.
    pub(super) fn text(&mut self, text: &str, ttft_ms: Option<u64>, tokens: u64) {
        self.write.content.push_str(text);
        self.write.ttft_ms = ttft_ms;
        self.write.tokens = tokens;
    }

    pub(super) fn served_by(&mut self, provider: &str, model: &str) {
        provider.clone_into(&mut self.write.provider);
        model.clone_into(&mut self.write.model);
    }

    pub(super) fn output_tokens(&mut self, tokens: u64) {
        self.write.tokens = tokens;
    }

    /// Queues the row's final write and waits for it and for the turn's rows (the queue
    /// keeps order, so the write follows them; when they were not stored it changes
    /// nothing). `Err` when the rows could not be stored; a final write the database cannot
    /// take now is retried by the store writer, so the answer is not told.
    pub(super) async fn finish(
        &mut self,
        status: MessageStatus,
        error_code: Option<&str>,
        meta: Option<&DoneMetadata>,
    ) -> Result<(), NotStored> {
        let Some(slot) = self.slot.take() else {
            return Ok(());
        };
        self.write.status = status;
        self.write.error_code = error_code.map(str::to_owned);
        if let Some(meta) = meta {
            self.served_by(&meta.provider, &meta.model);
            self.write.ttft_ms = meta.ttft_ms;
            self.write.tokens = meta.tokens;
        }
        let (reply, written) = oneshot::channel();
        let write = std::mem::take(&mut self.write);
        self.writer.queue_final(slot, write, Some(reply));
        let rows = match self.rows.take() {
            Some(rows) => rows.await,
            None => Ok(Ok(true)),
        };
        // Whatever it says, the final write is the writer's now (retried there if it can be).
        let _ = written.await;
        match rows {
            // `false`: the conversation was deleted meanwhile, nothing to keep.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(NotStored),
        }
    }
}

impl Drop for TurnRecord {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let (status, code) = if std::thread::panicking() {
            (MessageStatus::Error, Some("internal"))
        } else {
            // A client's own cancel needs no code; an administrator's end and a shutdown
            // say which.
            let code = stop_cause(&self.admin_abort, &self.entry)
                .map(|(code, _)| code)
                .filter(|code| *code != "cancelled");
            (MessageStatus::Cancelled, code)
        };
        self.write.status = status;
        self.write.error_code = code.map(str::to_owned);
        let write = std::mem::take(&mut self.write);
        self.writer.queue_final(slot, write, None);
    }
}
