use std::sync::Arc;

use actix::Addr;
use futures_util::future::AbortHandle;

use super::chat_hub::ChatHub;
use super::messages::{Attach, Outcome, Progress, Release};
use crate::answer::AnswerEntry;

/// An admitted stream's slot. Dropping it releases the slot, so every way an answer can
/// end (done, error, cancel, disconnect, panic, an admission reply nobody received)
/// releases exactly once. The release carries the answer's outcome when the pipeline
/// recorded one; none means the answer was cut short.
#[derive(Debug)]
pub struct Lease {
    pub(super) id: u64,
    pub(super) hub: Addr<ChatHub>,
    pub(super) outcome: Option<Outcome>,
    pub(super) progress: Progress,
}

impl Lease {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Lets the hub end this answer (the admin's "end stream") and show it.
    pub fn attach(&self, abort: AbortHandle, answer: Arc<AnswerEntry>) {
        self.hub.do_send(Attach {
            lease_id: self.id,
            abort,
            answer,
        });
    }

    /// What the answer came to; reported to the hub with the release, for its metrics.
    pub fn record(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    /// The provider and model that answer (the metrics' label, the usage record's).
    pub fn served_by(&mut self, provider: &'static str, model: &str) {
        self.progress.provider = Some(provider);
        if self.progress.model.as_deref() != Some(model) {
            self.progress.model = Some(model.into());
        }
    }

    /// The prompt's input tokens: the upstream's count (`reported`) or the hub's estimate.
    pub fn input_tokens(&mut self, tokens: u64, reported: bool) {
        self.progress.input_tokens = tokens;
        self.progress.input_reported = reported;
    }

    /// The output tokens the upstream reported (a running total).
    pub fn reported_output(&mut self, tokens: u64) {
        self.progress.reported_output = Some(tokens);
    }

    /// Two stores per token, no message: the hub hears it with the release.
    pub fn relayed(&mut self, ttft_ms: Option<u64>, tokens: u64) {
        self.progress.ttft_ms = ttft_ms;
        self.progress.tokens = tokens;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // do_send ignores the mailbox bound, which is what a release needs: it must never be
        // dropped, and releases are few (one per answer, never per token).
        self.hub.do_send(Release {
            lease_id: self.id,
            outcome: self.outcome.take(),
            progress: std::mem::take(&mut self.progress),
        });
    }
}
