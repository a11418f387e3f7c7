//! The answer pipeline every transport shares: retrieve → prompt → provider → events.
//!
//! An answer runs as its own task on the caller's worker thread and hands its events over a
//! small bounded channel (so a slow client slows the provider instead of growing memory).
//! Dropping the [`AnswerStream`] aborts the task, which drops the provider's stream (and so
//! the upstream connection) and the admission lease (and so the slot) at once.

mod request;

pub use request::{
    validate_choice, validate_question, validate_top_k, AnswerRequest, ProviderChoice,
    DEFAULT_TOP_K, MAX_TOP_K,
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
}

impl Pipeline {
    pub fn new(store: Store, providers: Arc<Providers>) -> Self {
        Pipeline { store, providers }
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
        let answer = Abortable::new(run(self.clone(), request, choice, lease, tx), registration);
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

async fn run(
    p: Pipeline,
    req: AnswerRequest,
    choice: ProviderChoice,
    lease: Lease,
    tx: mpsc::Sender<AnswerEvent>,
) {
    // Held until this function returns or the task is aborted; what it records goes to
    // the hub's metrics with the release.
    let mut lease = lease;
    let started = Instant::now();
    let mut out = Emitter { tx, seq: 0 };

    let passages: Vec<Passage> = match fts_query::build_match_query(&req.question) {
        Some(query) => match p.store.search(&req.tenant_id, &query, req.top_k).await {
            Ok(found) => found,
            Err(e) => {
                log::error!("retrieval failed: {e}");
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

    let provider = match choice.provider.and_then(|k| p.providers.member(k)) {
        Some(member) => member.provider.clone(),
        None => p.providers.default_provider().clone(),
    };
    let prompt = Prompt {
        terms: fts_query::query_terms(&req.question),
        question: req.question,
        passages: passages.into(),
        model: choice.model,
    };
    let mut meta = DoneMetadata {
        answer_id: Uuid::new_v4().to_string(),
        provider: provider.name().to_owned(),
        model: prompt
            .model
            .clone()
            .unwrap_or_else(|| provider.model().to_owned()),
        ttft_ms: None,
        elapsed_ms: 0,
        tokens: 0,
        finish_reason: String::new(),
        sources,
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
                if !out.emit(StreamEvent::Token(text)).await {
                    return;
                }
            }
            Ok(Delta::Start { provider, model }) => {
                meta.provider = provider.to_owned();
                meta.model = model;
            }
            Ok(Delta::Usage { output_tokens }) => usage = Some(output_tokens),
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
    lease.record(Outcome {
        ttft_ms: meta.ttft_ms,
        tokens: meta.tokens,
        elapsed_ms: meta.elapsed_ms,
        error_code: None,
    });
    out.emit(StreamEvent::Done(Box::new(meta))).await;
}
