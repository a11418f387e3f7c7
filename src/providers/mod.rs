//! LLM providers behind one trait: each turns a prompt into a stream of deltas.
//!
//! A provider never sees a transport or a session: it yields text, usage and a finish
//! reason, or a typed error, and stops the moment its stream is dropped (which is how a
//! client that leaves stops the spend).
//!
//! # Layout
//! - [`upstream_sse`]: the one incremental `text/event-stream` decoder both upstreams use.
//! - [`http`]: the per-thread awc client, sending a request, HTTP errors, reading a stream
//!   with first-token and idle timeouts.
//! - [`retry`]: backoff with jitter, retries and failover, all only before the first token.
//! - [`openai`], [`anthropic`]: request bodies and chunk parsers for each wire format.
//! - [`chain`]: a provider list that fails over before the first token.
//! - [`registry`]: the configured providers and the models requests may choose.
//! - [`offline`]: the built-in extractive answerer.

pub mod anthropic;
pub mod chain;
mod chunk_scan;
pub mod http;
mod json;
pub mod offline;
pub mod offline_answer;
pub mod openai;
pub mod registry;
pub mod retry;
pub mod upstream_sse;

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::LocalBoxStream;

use crate::store::Passage;

pub use registry::Providers;

/// Who said an earlier turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    /// The name both upstream formats use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One earlier message of a conversation, sent as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTurn {
    pub role: Role,
    pub content: String,
}

/// What a provider is asked.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub question: String,
    /// Retrieved passages in rank order; citation `[n]` refers to `passages[n - 1]`.
    pub passages: Arc<[Passage]>,
    /// The question's search terms, for providers that score text themselves.
    pub terms: Vec<String>,
    /// The model this request chose; `None` means the provider's configured model.
    pub model: Option<String>,
    /// Earlier turns of the conversation, oldest first: whole user/assistant pairs that
    /// fit the history budget (see `rag::history`). Empty for one-off questions.
    pub history: Vec<ChatTurn>,
    /// A client's own system instructions (the OpenAI-compatible route): sent after the
    /// hub's grounding instructions, never instead of them.
    pub system: Option<String>,
    /// Sampling parameters the client asked for; providers that take them pass them on.
    pub sampling: Sampling,
}

/// Sampling parameters a client asked for; `None` (empty) leaves the provider's default.
/// Validated by the route that accepted them (ranges as OpenAI documents them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Output token bound (OpenAI `max_tokens` / `max_completion_tokens`).
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    /// The end user, for the upstream's abuse monitoring.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Who answers, sent once before any text. A failover chain only knows which member
    /// answered once one does, so it is a delta rather than a property of the provider.
    Start {
        provider: &'static str,
        model: String,
    },
    Text(String),
    /// Output tokens as counted by the upstream (a running total: the last one wins).
    Usage {
        output_tokens: u64,
    },
    /// Input (prompt) tokens as counted by the upstream; the last one wins. Without it the
    /// hub estimates the count from the prompt (`rag::prompt::estimate_input_tokens`).
    InputTokens(u64),
    Finish(String),
}

/// Why a provider failed. Messages carry the upstream's own words (bounded, with the API
/// key scrubbed out) so an operator can act on them; they never carry the key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// An HTTP error status before any streaming.
    #[error("{provider} answered HTTP {status}: {message}")]
    Status {
        provider: &'static str,
        status: u16,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    #[error("{provider} could not be reached: {message}")]
    Connect {
        provider: &'static str,
        message: String,
    },
    #[error("{provider} did not {what} within {after_ms} ms")]
    Timeout {
        provider: &'static str,
        what: &'static str,
        after_ms: u64,
    },
    /// An error the upstream reported inside a stream it had started.
    #[error("{provider} failed mid-stream: {message}")]
    Upstream {
        provider: &'static str,
        code: &'static str,
        message: String,
        retryable: bool,
    },
    #[error("{provider} sent a stream that could not be read: {message}")]
    Protocol {
        provider: &'static str,
        message: String,
    },
    #[error("{provider} closed the stream before it finished")]
    Interrupted { provider: &'static str },
}

impl ProviderError {
    /// The stable code clients see in the stream's `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Status { status, .. } => match status {
                401 | 403 => "upstream_auth",
                429 => "upstream_rate_limited",
                529 => "upstream_overloaded",
                500..=599 => "upstream_unavailable",
                _ => "upstream_rejected",
            },
            ProviderError::Connect { .. } => "upstream_unreachable",
            ProviderError::Timeout { .. } => "upstream_timeout",
            ProviderError::Upstream { code, .. } => code,
            ProviderError::Protocol { .. } => "upstream_protocol",
            ProviderError::Interrupted { .. } => "upstream_interrupted",
        }
    }

    /// Whether the same request may succeed if sent again (before any token went out).
    /// A timeout is not retried: the wait already spent is the client's.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Status { retryable, .. } | ProviderError::Upstream { retryable, .. } => {
                *retryable
            }
            ProviderError::Connect { .. } | ProviderError::Interrupted { .. } => true,
            ProviderError::Timeout { .. } | ProviderError::Protocol { .. } => false,
        }
    }

    /// The delay the upstream asked for, already bounded by the settings.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub type DeltaStream = LocalBoxStream<'static, Result<Delta, ProviderError>>;

pub trait Provider: Send + Sync {
    /// Stable name reported in answer metadata (`offline`, `openai`, ...).
    fn name(&self) -> &'static str;
    fn model(&self) -> &str;
    /// Starts answering. The stream is polled on the session's worker thread, so it need
    /// not be `Send` (awc clients are not).
    fn stream(&self, prompt: Prompt) -> DeltaStream;
}
