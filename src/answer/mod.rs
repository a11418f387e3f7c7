//! The answer pipeline every transport shares: retrieve → prompt → provider → events.
//!
//! An answer runs as its own task on the caller's worker thread and hands its events over a
//! small bounded channel (so a slow client slows the provider instead of growing memory).
//! Dropping the [`AnswerStream`] aborts the task, which drops the provider's stream (and so
//! the upstream connection) and the admission lease (and so the slot) at once.

mod request;

pub use request::{validate_question, validate_top_k, AnswerRequest, DEFAULT_TOP_K, MAX_TOP_K};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::ErrorBody;
use crate::hub::Lease;
use crate::providers::{Delta, Prompt, Provider};
use crate::rag::fts_query;
use crate::store::{Passage, Store};

/// Events buffered between an answer task and its session. Small on purpose: it only has to
/// cover a write in flight; beyond it the provider waits for the client.
const EVENT_BUFFER: usize = 32;

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

#[derive(Debug, Clone, Serialize)]
pub struct DoneMetadata {
    pub answer_id: String,
    pub provider: String,
    pub model: String,
    /// Milliseconds from admission to the first token; absent when no token came.
    pub ttft_ms: Option<u64>,
    pub elapsed_ms: u64,
    pub tokens: u64,
    pub finish_reason: String,
    pub sources: Arc<[Source]>,
}

#[derive(Debug, Clone)]
pub enum StreamEvent {
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
}

/// What every answer needs; cheap to clone into each task.
#[derive(Clone)]
pub struct Pipeline {
    store: Store,
    provider: Arc<dyn Provider>,
}

impl Pipeline {
    pub fn new(store: Store, provider: Arc<dyn Provider>) -> Self {
        Pipeline { store, provider }
    }

    /// Spawns the answer on the current worker thread. The lease travels with the task, so
    /// the slot is released however the task ends: done, error, abort or panic.
    pub fn start(&self, request: AnswerRequest, lease: Lease) -> AnswerStream {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let task = actix_web::rt::spawn(run(self.clone(), request, lease, tx));
        AnswerStream {
            rx,
            task,
            seq: 0,
            ended: false,
        }
    }
}

/// The events of one answer, ending with exactly one `Done` or `Error`.
pub struct AnswerStream {
    rx: mpsc::Receiver<AnswerEvent>,
    task: tokio::task::JoinHandle<()>,
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
            // The task ended without a terminal event: it panicked. The client still gets
            // an ending, never a silent stop.
            Poll::Ready(None) => {
                self.ended = true;
                log::error!("an answer task ended without done or error");
                Poll::Ready(Some(AnswerEvent {
                    seq: self.seq + 1,
                    event: StreamEvent::Error(ErrorBody {
                        code: "internal".to_owned(),
                        message: "the answer stopped unexpectedly".to_owned(),
                    }),
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
        self.seq += 1;
        self.tx
            .send(AnswerEvent {
                seq: self.seq,
                event,
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

async fn run(p: Pipeline, req: AnswerRequest, lease: Lease, tx: mpsc::Sender<AnswerEvent>) {
    // Held until this function returns or the task is aborted.
    let _lease = lease;
    let started = Instant::now();
    let mut out = Emitter { tx, seq: 0 };

    let passages: Vec<Passage> = match fts_query::build_match_query(&req.question) {
        Some(query) => match p.store.search(&req.tenant_id, &query, req.top_k).await {
            Ok(found) => found,
            Err(e) => {
                log::error!("retrieval failed: {e}");
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
    };
    let mut deltas = p.provider.stream(prompt);
    let mut ttft_ms = None;
    let mut tokens = 0u64;
    let mut usage = None;
    let mut finish_reason = None;
    while let Some(delta) = deltas.next().await {
        match delta {
            Ok(Delta::Text(text)) if text.is_empty() => {}
            Ok(Delta::Text(text)) => {
                ttft_ms.get_or_insert_with(|| started.elapsed().as_millis() as u64);
                tokens += 1;
                if !out.emit(StreamEvent::Token(text)).await {
                    return;
                }
            }
            Ok(Delta::Usage { output_tokens }) => usage = Some(output_tokens),
            Ok(Delta::Finish(reason)) => finish_reason = Some(reason),
            Err(e) => {
                out.fail(e.code(), e.to_string()).await;
                return;
            }
        }
    }
    let done = DoneMetadata {
        answer_id: Uuid::new_v4().to_string(),
        provider: p.provider.name().to_owned(),
        model: p.provider.model().to_owned(),
        ttft_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
        tokens: usage.unwrap_or(tokens),
        finish_reason: finish_reason.unwrap_or_else(|| "stop".to_owned()),
        sources,
    };
    out.emit(StreamEvent::Done(Box::new(done))).await;
}
