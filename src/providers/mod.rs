//! LLM providers behind one trait: each turns a prompt into a stream of deltas.
//!
//! A provider never sees a transport or a session: it yields text, usage and a finish
//! reason, or a typed error, and stops the moment its stream is dropped (which is how a
//! client that leaves stops the spend).

pub mod offline;
pub mod offline_answer;

use std::sync::Arc;

use futures_util::stream::LocalBoxStream;

use crate::store::Passage;

/// What a provider is asked.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub question: String,
    /// Retrieved passages in rank order; citation `[n]` refers to `passages[n - 1]`.
    pub passages: Arc<[Passage]>,
    /// The question's search terms, for providers that score text themselves.
    pub terms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Text(String),
    /// Output tokens as counted by the upstream.
    Usage {
        output_tokens: u64,
    },
    Finish(String),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("the provider failed: {message}")]
    Upstream { code: &'static str, message: String },
    #[error("the provider did not answer in time")]
    Timeout,
}

impl ProviderError {
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Upstream { code, .. } => code,
            ProviderError::Timeout => "upstream_timeout",
        }
    }
}

pub type DeltaStream = LocalBoxStream<'static, Result<Delta, ProviderError>>;

pub trait Provider: Send + Sync {
    /// Stable name reported in answer metadata (`offline`, `openai`, ...).
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// Starts answering. The stream is polled on the session's worker thread, so it need
    /// not be `Send` (awc clients are not).
    fn stream(&self, prompt: Prompt) -> DeltaStream;
}
