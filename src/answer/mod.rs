//! The answer pipeline every transport shares: retrieve → prompt → provider → events.
//!
//! An answer runs as its own task and appends its events to its own log ([`log`]); it never
//! waits for a reader. Connections subscribe to answers through the [`registry`], each from
//! its own cursor, so losing a connection loses a subscriber, not the answer: a detached
//! answer keeps generating for the grace window and any connection of its key may resume
//! it. Stopping the task (a client's stop, an administrator, nobody back in time) drops the
//! provider's stream (and so the upstream connection) and the admission lease (and so the
//! slot) at once.
//!
//! An agent-chat answer is also a turn of a conversation ([`turn`]): its rows are queued to
//! the store writer and the earlier turns read before the provider is called; it keeps the
//! answer's text in memory as it streams, and writes the row once at the end. An aborted
//! answer cannot await that write, so a [`TurnRecord`] guard hands it to the store writer
//! from its `Drop`: a cancelled answer keeps exactly the text generated so far.

pub mod event_log;
pub mod registry;
mod request;
pub mod shared_log;
mod turn;

pub use request::{
    conversation_id, validate_choice, validate_question, validate_top_k, AnswerRequest, ClientChat,
    ConversationRef, ProviderChoice, DEFAULT_TOP_K, MAX_TOP_K,
};

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{select, AbortHandle, Abortable, Either};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use event_log::{EventLog, MemoryLog, ReadOutcome};
use registry::NewAnswer;
pub use registry::{AnswerEntry, AnswerOwner, Answers, ResumeError, StopReason, Subscription};

use crate::cluster::Cluster;
use crate::error::ErrorBody;
use crate::hub::messages::Outcome;
use crate::hub::Lease;
use crate::providers::{Delta, Prompt, Providers};
use crate::rag::{fts_query, history};
use crate::store::{MessageStatus, Passage, Store, StoreWriter};
use turn::TurnRecord;

/// A retrieved passage as clients see it; `number` is its citation `[n]`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Input (prompt) tokens: the upstream's own count when it reported one, else the hub's
    /// estimate from the prompt (`input_tokens_estimated`; characters / 4).
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub input_tokens_estimated: bool,
    pub finish_reason: String,
    #[schema(value_type = Vec<Source>)]
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
    answers: Arc<Answers>,
    /// Bound of each answer's event log.
    log_max_bytes: usize,
    /// In a cluster, every answer's log is also shared through Redis.
    cluster: Option<Arc<Cluster>>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        providers: Arc<Providers>,
        writer: StoreWriter,
        history_budget_chars: usize,
        answers: Arc<Answers>,
        log_max_bytes: usize,
    ) -> Self {
        Pipeline {
            store,
            providers,
            writer,
            history_budget_chars,
            answers,
            log_max_bytes,
            cluster: None,
        }
    }

    /// Shares every answer's log through Redis, so any hub can resume it.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn log_max_bytes(&self) -> usize {
        self.log_max_bytes
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

    /// The registry of running answers, for resuming and stopping them by id.
    pub fn answers(&self) -> &Arc<Answers> {
        &self.answers
    }

    /// Starts an answer (see [`Start`]) and returns its asker's subscription. The answer
    /// runs as a task of its own on the current worker thread and holds the lease, so the
    /// slot is released however it ends: done, error, stop, abandonment or panic.
    pub fn start(&self, start: Start) -> Subscription {
        let Start {
            request,
            choice,
            lease,
            owner,
            ticket,
            label,
            cancel_on_drop,
        } = start;
        let id: Arc<str> = Uuid::new_v4().to_string().into();
        let memory = MemoryLog::new(self.log_max_bytes);
        if let Some(cluster) = &self.cluster {
            let mirrored = shared_log::Mirrored {
                id: id.clone(),
                owner: owner.clone(),
                ticket: ticket.clone(),
                label: label.clone(),
                grace: self.answers.grace(),
            };
            shared_log::mirror(cluster.clone(), memory.clone(), mirrored);
        }
        let log: Arc<dyn EventLog> = memory;
        // Two stops: the hub's (an administrator, a revocation) and the client's (a cancel,
        // or nobody back within the grace window). Kept apart so the ending says which.
        let (admin_abort, admin_registration) = AbortHandle::new_pair();
        let (stop, stop_registration) = AbortHandle::new_pair();
        let subscription = self.answers.insert(
            NewAnswer {
                id: id.clone(),
                owner,
                log: log.clone(),
                stop,
                ticket,
                label,
            },
            cancel_on_drop,
        );
        let entry = subscription.entry().clone();
        lease.attach(admin_abort.clone(), entry.clone());
        let answers = self.answers.clone();
        // The answer's log lines carry its id and the id of the request that asked.
        let log_context = crate::logging::LogContext {
            request_id: crate::logging::current().request_id,
            answer_id: Some(id.clone()),
        };
        // Boxed: the answer's state machine is several KiB, and the task's spawn and
        // stage changes would otherwise copy it whole each time (callgrind: ~77,000
        // instructions of memcpy per answer in `Pipeline::start`).
        let answer = Box::pin(run(
            self.clone(),
            request,
            choice,
            lease,
            Emitter { log: log.clone() },
            id.clone(),
            Stops {
                admin: admin_abort.clone(),
                entry: entry.clone(),
            },
        ));
        let answer = Abortable::new(
            Abortable::new(answer, admin_registration),
            stop_registration,
        );
        actix_web::rt::spawn(crate::logging::scope(log_context, async move {
            let ending = Ending {
                log,
                entry: entry.clone(),
                admin_abort,
            };
            let grace = answers.grace();
            {
                let watchdog = std::pin::pin!(entry.abandoned(grace));
                let answer = std::pin::pin!(answer);
                if let Either::Right(_) = select(answer, watchdog).await {
                    entry.stop(StopReason::Abandoned);
                }
            }
            // The answer future (with its upstream and lease) is gone here; the log is
            // kept for late readers through the grace window.
            drop(ending);
            if !grace.is_zero() {
                actix_web::rt::time::sleep(grace).await;
            }
            answers.remove(&id);
        }));
        subscription
    }
}

/// What [`Pipeline::start`] needs besides the pipeline.
pub struct Start {
    pub request: AnswerRequest,
    pub choice: ProviderChoice,
    pub lease: Lease,
    /// The key that may resume or stop it.
    pub owner: AnswerOwner,
    /// The stream ticket that opened it (SSE), which may then resume it.
    pub ticket: Option<String>,
    /// The client's request id (WebSocket), echoed when the answer is resumed.
    pub label: Option<Arc<str>>,
    /// The asker cannot come back for it (a plain JSON request): stop it when the asker
    /// leaves instead of detaching it.
    pub cancel_on_drop: bool,
}

/// Appends the terminal event of an answer that did not end on its own, whatever stopped
/// it (a stop, an abandonment, a panic, the worker going away), so every reader sees an
/// ending and never a silent stop.
struct Ending {
    log: Arc<dyn EventLog>,
    entry: Arc<AnswerEntry>,
    admin_abort: AbortHandle,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if self.log.is_ended() {
            return;
        }
        let (code, message) = match stop_cause(&self.admin_abort, &self.entry) {
            Some(cause) => cause,
            None => {
                log::error!(
                    "answer {}: its task ended without done or error",
                    self.entry.id()
                );
                ("internal", "the answer stopped unexpectedly")
            }
        };
        log::info!("answer ended: {code}");
        let error = ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        self.log.append(StreamEvent::Error(error), None);
    }
}

/// Why an answer was stopped from outside, as the error code and message its readers get;
/// `None` when nothing stopped it.
fn stop_cause(
    admin_abort: &AbortHandle,
    entry: &AnswerEntry,
) -> Option<(&'static str, &'static str)> {
    if admin_abort.is_aborted() {
        return Some(("ended_by_admin", "an administrator ended this answer"));
    }
    match entry.reason() {
        StopReason::Cancelled => Some(("cancelled", "the answer was cancelled")),
        StopReason::Abandoned => Some((
            "cancelled",
            "nobody resumed the answer within the grace window",
        )),
        StopReason::Shutdown => Some((
            "server_shutdown",
            "the server shut down before the answer was finished; ask again",
        )),
        StopReason::SignedOut => Some((
            "signed_out",
            "the browser session was signed out; sign in again",
        )),
        StopReason::Running => None,
    }
}

/// What tells an answer's task why it was stopped, for its stored row.
struct Stops {
    admin: AbortHandle,
    entry: Arc<AnswerEntry>,
}

/// Appends an answer's events to its log; never waits for a reader.
struct Emitter {
    log: Arc<dyn EventLog>,
}

impl Emitter {
    fn emit(&self, event: StreamEvent) {
        self.log.append(event, None);
    }

    fn emit_with(&self, event: StreamEvent, partial: Option<Box<DoneMetadata>>) {
        self.log.append(event, partial);
    }

    fn fail(&self, code: &str, message: impl Into<String>) {
        let body = ErrorBody {
            code: code.to_owned(),
            message: message.into(),
        };
        self.emit(StreamEvent::Error(body));
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
    mut req: AnswerRequest,
    choice: ProviderChoice,
    lease: Lease,
    out: Emitter,
    answer_id: Arc<str>,
    stops: Stops,
) {
    // Held until this function returns or the task is aborted; what it records goes to
    // the hub's metrics with the release.
    let mut lease = lease;
    let started = Instant::now();

    let provider = match choice.provider.and_then(|k| p.providers.member(k)) {
        Some(member) => member.provider.clone(),
        None => p.providers.default_provider().clone(),
    };
    let model = choice
        .model
        .clone()
        .unwrap_or_else(|| provider.model().to_owned());
    lease.served_by(provider.name(), &model);
    log::info!("answer started: {} {model}", provider.name());

    // A conversation turn: its rows are queued, the turns before it read.
    let mut record: Option<TurnRecord> = None;
    let mut conversation_id = None;
    let mut earlier = Vec::new();
    if let Some(conversation) = &req.conversation {
        let answerer = turn::Answerer {
            provider: provider.name(),
            model: &model,
        };
        let stops = (stops.admin.clone(), stops.entry.clone());
        match turn::begin(
            &p,
            &req.tenant_id,
            conversation,
            &req.question,
            answerer,
            stops,
        )
        .await
        {
            Ok(begun) => {
                record = Some(begun.record);
                out.emit(StreamEvent::Conversation(begun.conversation_id.clone()));
                conversation_id = Some(begun.conversation_id);
                earlier = begun.earlier;
            }
            Err(not_begun) => {
                let (code, message) = not_begun.code_and_message();
                lease.record(Outcome::failed(code, started));
                out.fail(code, message);
                return;
            }
        }
    }

    let chat = req.chat.take().unwrap_or_default();
    if !chat.earlier.is_empty() || req.conversation.is_none() {
        earlier = chat.earlier;
    }

    // A follow-up ("when was it built?") is searched with the question before it.
    let search_text = history::retrieval_text(&req.question, &earlier);
    let passages: Vec<Passage> = match fts_query::build_search_query(&search_text) {
        Some(query) => match p.store.search(&req.tenant_id, &query, req.top_k).await {
            Ok(found) => found,
            Err(e) => {
                log::error!("retrieval failed: {e}");
                if let Some(turn) = record.as_mut() {
                    let code = Some("retrieval_failed");
                    let _ = turn.finish(MessageStatus::Error, code, None).await;
                }
                lease.record(Outcome::failed("retrieval_failed", started));
                out.fail("retrieval_failed", "the documents could not be searched");
                return;
            }
        },
        None => Vec::new(),
    };
    let sources = to_sources(&passages);
    out.emit(StreamEvent::Sources(sources.clone()));

    let prompt = Prompt {
        terms: fts_query::query_terms(&req.question),
        question: req.question,
        passages: passages.into(),
        model: choice.model,
        history: history::select_history(&earlier, p.history_budget_chars),
        system: chat.system,
        sampling: chat.sampling,
    };
    drop(earlier);
    let input_estimate = crate::rag::prompt::estimate_input_tokens(&prompt);
    lease.input_tokens(input_estimate, false);
    let mut meta = DoneMetadata {
        answer_id: answer_id.to_string(),
        provider: provider.name().to_owned(),
        model,
        ttft_ms: None,
        elapsed_ms: 0,
        tokens: 0,
        input_tokens: input_estimate,
        input_tokens_estimated: true,
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
                lease.relayed(meta.ttft_ms, counted);
                // Kept before it is sent: what the row holds if the answer stops now.
                if let Some(turn) = record.as_mut() {
                    turn.text(&text, meta.ttft_ms, usage.unwrap_or(counted));
                }
                out.emit(StreamEvent::Token(text));
            }
            Ok(Delta::Start { provider, model }) => {
                lease.served_by(provider, &model);
                meta.provider = provider.to_owned();
                meta.model = model;
                if let Some(turn) = record.as_mut() {
                    turn.served_by(&meta.provider, &meta.model);
                }
            }
            Ok(Delta::Usage { output_tokens }) => {
                usage = Some(output_tokens);
                lease.reported_output(output_tokens);
                if let Some(turn) = record.as_mut() {
                    turn.output_tokens(output_tokens);
                }
            }
            Ok(Delta::InputTokens(tokens)) => {
                meta.input_tokens = tokens;
                meta.input_tokens_estimated = false;
                lease.input_tokens(tokens, true);
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
                    let _ = turn.finish(MessageStatus::Error, code, Some(&meta)).await;
                }
                lease.record(Outcome {
                    ttft_ms: meta.ttft_ms,
                    tokens: meta.tokens,
                    elapsed_ms: meta.elapsed_ms,
                    error_code: Some(body.code.clone()),
                });
                out.emit_with(StreamEvent::Error(body), Some(Box::new(meta)));
                return;
            }
        }
    }
    meta.elapsed_ms = started.elapsed().as_millis() as u64;
    meta.tokens = usage.unwrap_or(counted);
    meta.finish_reason = finish_reason.unwrap_or_else(|| "stop".to_owned());
    match meta.ttft_ms {
        Some(ttft) => log::info!(
            "answer done: {} tokens, the first after {ttft} ms, {} ms in all",
            meta.tokens,
            meta.elapsed_ms
        ),
        None => log::info!("answer done: no tokens, {} ms", meta.elapsed_ms),
    }
    if let Some(turn) = record.as_mut() {
        if turn
            .finish(MessageStatus::Complete, None, Some(&meta))
            .await
            .is_err()
        {
            let (code, message) = turn::NotBegun::Storage.code_and_message();
            lease.record(Outcome {
                ttft_ms: meta.ttft_ms,
                tokens: meta.tokens,
                elapsed_ms: meta.elapsed_ms,
                error_code: Some(code.to_owned()),
            });
            let body = ErrorBody {
                code: code.to_owned(),
                message: message.to_owned(),
            };
            out.emit_with(StreamEvent::Error(body), Some(Box::new(meta)));
            return;
        }
    }
    lease.record(Outcome {
        ttft_ms: meta.ttft_ms,
        tokens: meta.tokens,
        elapsed_ms: meta.elapsed_ms,
        error_code: None,
    });
    out.emit(StreamEvent::Done(Box::new(meta)));
}
