//! The answer pipeline every transport shares: retrieve → prompt → provider → events.
//!
//! An answer runs as its own task on the caller's worker thread and hands its events over a
//! small bounded channel (so a slow client slows the provider instead of growing memory).
//! Dropping the [`AnswerStream`] aborts the task, which drops the provider's stream (and so
//! the upstream connection) and the admission lease (and so the slot) at once.
//!
//! An agent-chat answer is also a turn of a conversation: before the provider is called the
//! task stores the question and an empty assistant row (`streaming`) and reads the earlier
//! turns; it keeps the answer's text in memory as it streams, and writes the row once at the
//! end. An aborted answer cannot await that write, so a [`TurnRecord`] guard hands it to the
//! store writer from its `Drop`: a cancelled answer keeps exactly the text generated so far.

mod request;

pub use request::{
    conversation_id, validate_choice, validate_question, validate_top_k, AnswerRequest,
    ConversationRef, ProviderChoice, DEFAULT_TOP_K, MAX_TOP_K,
};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::ErrorBody;
use crate::hub::messages::Outcome;
use crate::hub::Lease;
use crate::providers::{Delta, Prompt, Providers};
use crate::rag::{fts_query, history};
use crate::store::writer::{Job, WriteSlot};
use crate::store::{FinalWrite, MessageStatus, NewTurn, Passage, Store, StoreWriter};

/// Events buffered between an answer task and its session. Small on purpose: it only has to
/// cover a write in flight; beyond it the provider waits for the client.
const EVENT_BUFFER: usize = 32;

/// Earlier messages read back for a turn: 100 exchanges, more than a budget usually lets
/// through, so the budget decides what is sent while the read stays bounded however long
/// a conversation grows.
const HISTORY_ROWS: usize = 200;

/// A retrieved passage as clients see it; `number` is its citation `[n]`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub number: usize,
    pub document_id: String,
    pub title: String,
    pub chunk_id: i64,
    pub score: f64,
    pub text: String,
}

/// What an answer produced. Sent with `done`; also with an `error` from the provider,
/// then with `finish_reason: "error"` and what had streamed until the failure.
#[derive(Debug, Clone, Serialize)]
pub struct DoneMetadata {
    pub answer_id: String,
    pub provider: String,
    pub model: String,
    /// Milliseconds from admission to the first token; absent when no token came.
    pub ttft_ms: Option<u64>,
    pub elapsed_ms: u64,
    /// Output tokens: the upstream's own count when it reported usage, else the number
    /// of text deltas streamed.
    pub tokens: u64,
    pub finish_reason: String,
    pub sources: Arc<[Source]>,
    /// The conversation this answer is a turn of (agent chat only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
}

#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// The conversation this answer is a turn of: the first event of an agent-chat answer,
    /// so a client that started a new conversation learns its id before anything else.
    Conversation(String),
    Sources(Arc<[Source]>),
    Token(String),
    Done(Box<DoneMetadata>),
    Error(ErrorBody),
}

impl StreamEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::Done(_) | StreamEvent::Error(_))
    }
}

/// An event with its sequence number within the answer (from 1): the cursor a resuming
/// client will send back.
#[derive(Debug, Clone)]
pub struct AnswerEvent {
    pub seq: u64,
    pub event: StreamEvent,
    /// On an `Error` from the provider: what the answer had produced until then. Kept
    /// beside the event, not inside `StreamEvent::Error`, so that variant's shape (which
    /// every codec matches on) stays as it was.
    pub partial: Option<Box<DoneMetadata>>,
}

/// What every answer needs; cheap to clone into each task.
#[derive(Clone)]
pub struct Pipeline {
    store: Store,
    providers: Arc<Providers>,
    writer: StoreWriter,
    /// Characters of earlier turns a conversation answer sends (`rag::history`).
    history_budget_chars: usize,
}

impl Pipeline {
    pub fn new(
        store: Store,
        providers: Arc<Providers>,
        writer: StoreWriter,
        history_budget_chars: usize,
    ) -> Self {
        Pipeline {
            store,
            providers,
            writer,
            history_budget_chars,
        }
    }

    /// For checking a conversation before an answer is admitted.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// For draining the final writes of aborted answers at shutdown.
    pub fn writer(&self) -> &StoreWriter {
        &self.writer
    }

    /// The configured providers, for checking a request's choice with [`validate_choice`].
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Spawns the answer with the default provider; see [`Pipeline::start_with`].
    pub fn start(&self, request: AnswerRequest, lease: Lease) -> AnswerStream {
        self.start_with(request, ProviderChoice::default(), lease)
    }

    /// Spawns the answer on the current worker thread. The lease travels with the task, so
    /// the slot is released however the task ends: done, error, abort or panic.
    pub fn start_with(
        &self,
        request: AnswerRequest,
        choice: ProviderChoice,
        lease: Lease,
    ) -> AnswerStream {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        // The hub holds the abort handle so an administrator can end this answer.
        let (admin_abort, registration) = AbortHandle::new_pair();
        lease.attach(admin_abort.clone());
        let answer = Abortable::new(
            run(
                self.clone(),
                request,
                choice,
                lease,
                tx,
                admin_abort.clone(),
            ),
            registration,
        );
        let task = actix_web::rt::spawn(async move {
            let _ = answer.await;
        });
        AnswerStream {
            rx,
            task,
            admin_abort,
            seq: 0,
            ended: false,
        }
    }
}

/// The events of one answer, ending with exactly one `Done` or `Error`.
pub struct AnswerStream {
    rx: mpsc::Receiver<AnswerEvent>,
    task: tokio::task::JoinHandle<()>,
    admin_abort: AbortHandle,
    seq: u64,
    ended: bool,
}

impl Stream for AnswerStream {
    type Item = AnswerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AnswerEvent>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(ev)) => {
                self.seq = ev.seq;
                self.ended = ev.event.is_terminal();
                Poll::Ready(Some(ev))
            }
            // The task ended without a terminal event: an administrator ended it, or it
            // panicked. The client still gets an ending, never a silent stop.
            Poll::Ready(None) => {
                self.ended = true;
                let error = if self.admin_abort.is_aborted() {
                    ErrorBody {
                        code: "ended_by_admin".to_owned(),
                        message: "an administrator ended this answer".to_owned(),
                    }
                } else {
                    log::error!("an answer task ended without done or error");
                    ErrorBody {
                        code: "internal".to_owned(),
                        message: "the answer stopped unexpectedly".to_owned(),
                    }
                };
                Poll::Ready(Some(AnswerEvent {
                    seq: self.seq + 1,
                    event: StreamEvent::Error(error),
                    partial: None,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for AnswerStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Numbers events and notices a receiver that went away.
struct Emitter {
    tx: mpsc::Sender<AnswerEvent>,
    seq: u64,
}

impl Emitter {
    /// False when the client is gone and the answer should stop.
    async fn emit(&mut self, event: StreamEvent) -> bool {
        self.emit_with(event, None).await
    }

    async fn emit_with(&mut self, event: StreamEvent, partial: Option<Box<DoneMetadata>>) -> bool {
        self.seq += 1;
        self.tx
            .send(AnswerEvent {
                seq: self.seq,
                event,
                partial,
            })
            .await
            .is_ok()
    }

    async fn fail(&mut self, code: &str, message: impl Into<String>) {
        let body = ErrorBody {
            code: code.to_owned(),
            message: message.into(),
        };
        self.emit(StreamEvent::Error(body)).await;
    }
}

fn to_sources(passages: &[Passage]) -> Arc<[Source]> {
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| Source {
            number: i + 1,
            document_id: p.document_id.clone(),
            title: p.title.clone(),
            chunk_id: p.chunk_id,
            score: p.score,
            text: p.text.clone(),
        })
        .collect()
}

/// The assistant row of a conversation turn, and its one final write.
///
/// The answer task updates it as text streams (a `String` push per token). When the answer
/// ends on its own, [`TurnRecord::finish`] writes the row before the last event goes out,
/// so a client that reads the conversation after `done` finds it. When the task is aborted
/// instead (the client cancelled or left, an administrator ended the answer, the worker
/// stopped, a panic) nothing can be awaited any more: `Drop` then hands the write to the
/// store writer through the slot reserved when the turn began, which never waits and never
/// fails. The row then keeps exactly the text generated until the abort.
struct TurnRecord {
    write: FinalWrite,
    /// `None` once the row is written (or was never stored).
    slot: Option<WriteSlot>,
    /// Tells an administrator's end from a client's cancel.
    admin_abort: AbortHandle,
}

impl TurnRecord {
    fn text(&mut self, text: &str, ttft_ms: Option<u64>, tokens: u64) {
        self.write.content.push_str(text);
        self.write.ttft_ms = ttft_ms;
        self.write.tokens = tokens;
    }

    /// Nothing to write: the turn was never stored.
    fn disarm(&mut self) {
        self.slot = None;
    }

    /// Writes the row's final state. On a database error the slot is kept, so `Drop` tries
    /// once more through the store writer.
    async fn finish(
        &mut self,
        store: &Store,
        status: MessageStatus,
        error_code: Option<&str>,
        meta: Option<&DoneMetadata>,
    ) {
        self.write.status = status;
        self.write.error_code = error_code.map(str::to_owned);
        if let Some(meta) = meta {
            self.write.provider.clone_from(&meta.provider);
            self.write.model.clone_from(&meta.model);
            self.write.ttft_ms = meta.ttft_ms;
            self.write.tokens = meta.tokens;
        }
        match store.finish_message(&self.write).await {
            Ok(()) => self.slot = None,
            Err(e) => log::error!(
                "the final write of message {} failed: {e}",
                self.write.message_id
            ),
        }
    }
}

impl Drop for TurnRecord {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if self.write.status == MessageStatus::Streaming {
            let (status, code) = if std::thread::panicking() {
                (MessageStatus::Error, Some("internal"))
            } else if self.admin_abort.is_aborted() {
                (MessageStatus::Cancelled, Some("ended_by_admin"))
            } else {
                (MessageStatus::Cancelled, None)
            };
            self.write.status = status;
            self.write.error_code = code.map(str::to_owned);
        }
        slot.send(Job::Write(std::mem::take(&mut self.write)));
    }
}

async fn run(
    p: Pipeline,
    req: AnswerRequest,
    choice: ProviderChoice,
    lease: Lease,
    tx: mpsc::Sender<AnswerEvent>,
    admin_abort: AbortHandle,
) {
    // Held until this function returns or the task is aborted; what it records goes to
    // the hub's metrics with the release.
    let mut lease = lease;
    let started = Instant::now();
    let mut out = Emitter { tx, seq: 0 };

    let provider = match choice.provider.and_then(|k| p.providers.member(k)) {
        Some(member) => member.provider.clone(),
        None => p.providers.default_provider().clone(),
    };
    let model = choice
        .model
        .clone()
        .unwrap_or_else(|| provider.model().to_owned());

    // A conversation turn: store it and read the turns before it.
    let mut record: Option<TurnRecord> = None;
    let mut conversation_id = None;
    let mut earlier = Vec::new();
    if let Some(conversation) = &req.conversation {
        // Reserved before the rows exist, so an abort from here on still finishes them.
        let Some(slot) = p.writer.reserve().await else {
            lease.record(Outcome::failed("unavailable", started));
            out.fail("unavailable", "the service is shutting down")
                .await;
            return;
        };
        let message_id = Uuid::new_v4().to_string();
        let turn = record.insert(TurnRecord {
            write: FinalWrite {
                message_id: message_id.clone(),
                status: MessageStatus::Streaming,
                provider: provider.name().to_owned(),
                model: model.clone(),
                ..FinalWrite::default()
            },
            slot: Some(slot),
            admin_abort,
        });
        let begun = p
            .store
            .begin_turn(&NewTurn {
                tenant_id: &req.tenant_id,
                user_id: &conversation.user_id,
                conversation_id: conversation.id.as_deref(),
                question: &req.question,
                provider: provider.name(),
                model: &model,
                assistant_message_id: &message_id,
                history_rows: HISTORY_ROWS,
            })
            .await;
        let begun = match begun {
            Ok(Some(begun)) => begun,
            // Deleted since the route checked it.
            Ok(None) => {
                turn.disarm();
                lease.record(Outcome::failed("conversation_not_found", started));
                out.fail("conversation_not_found", "no such conversation")
                    .await;
                return;
            }
            Err(e) => {
                log::error!("a conversation turn could not be stored: {e}");
                turn.disarm();
                lease.record(Outcome::failed("storage_failed", started));
                out.fail("storage_failed", "the conversation could not be stored")
                    .await;
                return;
            }
        };
        if !out
            .emit(StreamEvent::Conversation(begun.conversation_id.clone()))
            .await
        {
            return;
        }
        conversation_id = Some(begun.conversation_id);
        earlier = begun.earlier;
    }

    // A follow-up ("when was it built?") is searched with the question before it.
    let search_text = history::retrieval_text(&req.question, &earlier);
    let passages: Vec<Passage> = match fts_query::build_match_query(&search_text) {
        Some(query) => match p.store.search(&req.tenant_id, &query, req.top_k).await {
            Ok(found) => found,
            Err(e) => {
                log::error!("retrieval failed: {e}");
                if let Some(turn) = record.as_mut() {
                    let code = Some("retrieval_failed");
                    turn.finish(&p.store, MessageStatus::Error, code, None)
                        .await;
                }
                lease.record(Outcome::failed("retrieval_failed", started));
                out.fail("retrieval_failed", "the documents could not be searched")
                    .await;
                return;
            }
        },
        None => Vec::new(),
    };
    let sources = to_sources(&passages);
    if !out.emit(StreamEvent::Sources(sources.clone())).await {
        return;
    }

    let prompt = Prompt {
        terms: fts_query::query_terms(&req.question),
        question: req.question,
        passages: passages.into(),
        model: choice.model,
        history: history::select_history(&earlier, p.history_budget_chars),
    };
    drop(earlier);
    let mut meta = DoneMetadata {
        answer_id: Uuid::new_v4().to_string(),
        provider: provider.name().to_owned(),
        model,
        ttft_ms: None,
        elapsed_ms: 0,
        tokens: 0,
        finish_reason: String::new(),
        sources,
        conversation_id,
    };
    // Dropping this stream (when the task is aborted) drops the upstream response.
    let mut deltas = provider.stream(prompt);
    let mut counted = 0u64;
    let mut usage = None;
    let mut finish_reason = None;
    while let Some(delta) = deltas.next().await {
        match delta {
            Ok(Delta::Text(text)) if text.is_empty() => {}
            Ok(Delta::Text(text)) => {
                meta.ttft_ms
                    .get_or_insert_with(|| started.elapsed().as_millis() as u64);
                counted += 1;
                // Kept before it is sent: what the row holds if the answer stops now.
                if let Some(turn) = record.as_mut() {
                    turn.text(&text, meta.ttft_ms, usage.unwrap_or(counted));
                }
                if !out.emit(StreamEvent::Token(text)).await {
                    return;
                }
            }
            Ok(Delta::Start { provider, model }) => {
                meta.provider = provider.to_owned();
                meta.model = model;
                if let Some(turn) = record.as_mut() {
                    turn.write.provider.clone_from(&meta.provider);
                    turn.write.model.clone_from(&meta.model);
                }
            }
            Ok(Delta::Usage { output_tokens }) => {
                usage = Some(output_tokens);
                if let Some(turn) = record.as_mut() {
                    turn.write.tokens = output_tokens;
                }
            }
            Ok(Delta::Finish(reason)) => finish_reason = Some(reason),
            Err(e) => {
                log::warn!("answer {} failed: {e}", meta.answer_id);
                meta.elapsed_ms = started.elapsed().as_millis() as u64;
                meta.tokens = usage.unwrap_or(counted);
                meta.finish_reason = "error".to_owned();
                let body = ErrorBody {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                };
                if let Some(turn) = record.as_mut() {
                    let code = Some(body.code.as_str());
                    turn.finish(&p.store, MessageStatus::Error, code, Some(&meta))
                        .await;
                }
                lease.record(Outcome {
                    ttft_ms: meta.ttft_ms,
                    tokens: meta.tokens,
                    elapsed_ms: meta.elapsed_ms,
                    error_code: Some(body.code.clone()),
                });
                out.emit_with(StreamEvent::Error(body), Some(Box::new(meta)))
                    .await;
                return;
            }
        }
    }
    meta.elapsed_ms = started.elapsed().as_millis() as u64;
    meta.tokens = usage.unwrap_or(counted);
    meta.finish_reason = finish_reason.unwrap_or_else(|| "stop".to_owned());
    if let Some(turn) = record.as_mut() {
        turn.finish(&p.store, MessageStatus::Complete, None, Some(&meta))
            .await;
    }
    lease.record(Outcome {
        ttft_ms: meta.ttft_ms,
        tokens: meta.tokens,
        elapsed_ms: meta.elapsed_ms,
        error_code: None,
    });
    out.emit(StreamEvent::Done(Box::new(meta))).await;
}
