//! Running and recently ended answers by id, and who is listening to each.
//!
//! An answer belongs to itself, not to the connection that asked: connections hold
//! [`Subscription`]s. When the last subscriber goes away without saying so (a lost
//! connection) the answer is detached: it keeps generating into its log for the grace
//! window, and a resume within it picks it up from any connection (of the same key).
//! Nobody back by then: the answer task's watchdog stops it. An explicit stop (a cancel,
//! `DELETE /answers/{id}`) ends it at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::AbortHandle;
use futures_util::Stream;
use tokio::sync::Notify;

use super::event_log::{EventLog, ReadOutcome};
use super::AnswerEvent;
use crate::error::ErrorBody;

/// Why an answer was stopped from outside (an administrator's end is told apart by its own
/// abort handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    Running = 0,
    /// The client asked: a cancel frame, a close, `DELETE /answers/{id}`.
    Cancelled = 1,
    /// Detached and nobody resumed it within the grace window.
    Abandoned = 2,
    /// The hub is shutting down and its grace for running answers is over.
    Shutdown = 3,
    /// The browser session that opened it was signed out.
    SignedOut = 4,
}

/// Who may see an answer: its key (and so its tenant).
#[derive(Debug, Clone)]
pub struct AnswerOwner {
    pub key_id: String,
    pub tenant_id: String,
}

/// One answer as the registry knows it.
pub struct AnswerEntry {
    id: Arc<str>,
    owner: AnswerOwner,
    log: Arc<dyn EventLog>,
    stop: AbortHandle,
    reason: AtomicU8,
    subscribers: AtomicUsize,
    /// Its last reader went away without saying so while it ran (usage accounting).
    detached: AtomicBool,
    /// A reader joined after it was detached (usage accounting).
    resumed: AtomicBool,
    /// Signalled whenever the subscriber count changes (the watchdog waits on it).
    presence: Notify,
    /// The stream ticket that opened it: an `EventSource` reconnecting with that (spent)
    /// ticket may resume this answer and no other.
    ticket: Option<String>,
    /// The client's name for the request that started it (a WebSocket request id).
    label: Option<Arc<str>>,
}

impl AnswerEntry {
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn owner(&self) -> &AnswerOwner {
        &self.owner
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn label(&self) -> Option<&Arc<str>> {
        self.label.as_ref()
    }

    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::Cancelled,
            2 => StopReason::Abandoned,
            3 => StopReason::Shutdown,
            4 => StopReason::SignedOut,
            _ => StopReason::Running,
        }
    }

    /// Ends the answer from outside; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::Running as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.stop.abort();
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// Whether its connection was lost while it ran.
    pub fn was_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    /// Whether a client came back for it after it was detached.
    pub fn was_resumed(&self) -> bool {
        self.resumed.load(Ordering::Acquire)
    }

    /// Waits until nobody has listened for `grace` (at once when `grace` is zero). The
    /// answer task races this against the answer itself.
    pub async fn abandoned(&self, grace: Duration) {
        loop {
            // Registered before the count is read, so a change in between is not missed.
            let changed = self.presence.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.subscribers() > 0 {
                changed.await;
                continue;
            }
            if grace.is_zero() {
                return;
            }
            tokio::select! {
                _ = changed => continue,
                _ = tokio::time::sleep(grace) => {
                    if self.subscribers() == 0 {
                        return;
                    }
                }
            }
        }
    }

    fn join(&self) {
        if self.was_detached() {
            self.resumed.store(true, Ordering::Release);
        }
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        self.presence.notify_waiters();
    }

    fn leave(&self) {
        // Saturating: a remote reader's leave may arrive for a join this run never saw.
        let before = self
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .unwrap_or(0);
        if before == 1 && !self.log.is_ended() && self.reason() == StopReason::Running {
            self.detached.store(true, Ordering::Release);
            crate::telemetry::answer_detached();
        }
        self.presence.notify_waiters();
    }
}

/// What a new answer is registered with.
pub struct NewAnswer {
    pub id: Arc<str>,
    pub owner: AnswerOwner,
    pub log: Arc<dyn EventLog>,
    pub stop: AbortHandle,
    pub ticket: Option<String>,
    pub label: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The answer's log no longer holds the events after the cursor.
    #[error("the events after this cursor are no longer kept; the answer cannot be resumed")]
    Gap,
    /// The cursor is past the last event.
    #[error("the cursor is ahead of the answer")]
    Ahead,
}

/// Every running answer, and every ended one still inside its grace window.
pub struct Answers {
    grace: Duration,
    map: Mutex<HashMap<Arc<str>, Arc<AnswerEntry>>>,
}

impl Answers {
    pub fn new(grace: Duration) -> Arc<Answers> {
        Arc::new(Answers {
            grace,
            map: Mutex::new(HashMap::new()),
        })
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<AnswerEntry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An entry for an answer, not registered here: [`Answers::insert`] registers the ones
    /// this hub runs; one another hub runs lives as long as its readers.
    pub fn remote(new: NewAnswer) -> Arc<AnswerEntry> {
        Arc::new(AnswerEntry {
            id: new.id,
            owner: new.owner,
            log: new.log,
            stop: new.stop,
            reason: AtomicU8::new(StopReason::Running as u8),
            subscribers: AtomicUsize::new(0),
            detached: AtomicBool::new(false),
            resumed: AtomicBool::new(false),
            presence: Notify::new(),
            ticket: new.ticket,
            label: new.label,
        })
    }

    /// A reader on another hub joined or left answer `id` (which runs here).
    pub fn remote_presence(&self, id: &str, joined: bool) {
        let entry = self.lock().get(id).cloned();
        match entry {
            Some(entry) if joined => entry.join(),
            Some(entry) => entry.leave(),
            None => {}
        }
    }

    /// Registers an answer and returns its first subscription (its asker's).
    pub fn insert(&self, new: NewAnswer, cancel_on_drop: bool) -> Subscription {
        let id = new.id.clone();
        let entry = Self::remote(new);
        self.lock().insert(id, entry.clone());
        Subscription::new(entry, 0, cancel_on_drop)
    }

    /// Forgets an ended answer: nobody can resume it any more. Readers still on it finish
    /// reading (the log goes with the last of them); with none, the log is freed now.
    pub fn remove(&self, id: &str) {
        let entry = self.lock().remove(id);
        if let Some(entry) = entry.filter(|e| e.subscribers() == 0) {
            entry.log.expire();
        }
    }

    /// The answer `id` if `key_id` owns it.
    pub fn get(&self, id: &str, key_id: &str) -> Option<Arc<AnswerEntry>> {
        self.lock()
            .get(id)
            .filter(|e| e.owner.key_id == key_id)
            .cloned()
    }

    /// The answer `id` if it was opened with `ticket`.
    pub fn get_by_ticket(&self, id: &str, ticket: &str) -> Option<Arc<AnswerEntry>> {
        self.lock()
            .get(id)
            .filter(|e| e.ticket.as_deref() == Some(ticket))
            .cloned()
    }

    /// A subscription to `entry` that continues after event `after`.
    pub fn resume(entry: Arc<AnswerEntry>, after: u64) -> Result<Subscription, ResumeError> {
        if after > entry.log.last_seq() {
            return Err(ResumeError::Ahead);
        }
        crate::telemetry::answer_resumed();
        Ok(Subscription::new(entry, after, false))
    }

    /// Ends every answer still running (a shutdown whose grace is over); returns how many.
    pub fn stop_all(&self, reason: StopReason) -> usize {
        let running: Vec<Arc<AnswerEntry>> = self
            .lock()
            .values()
            .filter(|e| !e.log.is_ended())
            .cloned()
            .collect();
        for entry in &running {
            entry.stop(reason);
        }
        running.len()
    }

    /// Forgets every answer of a revoked key, so none can be resumed (the hub ends the
    /// ones still running). Their readers finish what they are reading.
    pub fn forget_key(&self, key_id: &str) {
        let forgotten: Vec<Arc<str>> = self
            .lock()
            .values()
            .filter(|e| e.owner.key_id == key_id)
            .map(|e| e.id.clone())
            .collect();
        for id in forgotten {
            self.remove(&id);
        }
    }
}

/// A reader of one answer with its own cursor. Dropping it leaves the answer; when it was
/// the last reader the answer is detached (or stopped, for a subscription made with
/// `cancel_on_drop`, whose client cannot come back for it).
pub struct Subscription {
    entry: Arc<AnswerEntry>,
    cursor: u64,
    cancel_on_drop: bool,
    finished: bool,
}

impl Subscription {
    fn new(entry: Arc<AnswerEntry>, cursor: u64, cancel_on_drop: bool) -> Subscription {
        entry.join();
        Subscription {
            entry,
            cursor,
            cancel_on_drop,
            finished: false,
        }
    }

    pub fn answer_id(&self) -> &Arc<str> {
        &self.entry.id
    }

    pub fn entry(&self) -> &Arc<AnswerEntry> {
        &self.entry
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// True once the terminal event has been read (or the log is gone).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the answer now, at the client's request.
    pub fn cancel(&self) {
        if !self.entry.log.is_ended() {
            self.entry.stop(StopReason::Cancelled);
        }
    }

    /// Visits up to `max` events past the cursor and moves the cursor past them.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        visit: &mut dyn FnMut(&AnswerEvent),
    ) -> Poll<ReadOutcome> {
        if self.finished {
            return Poll::Ready(ReadOutcome::Finished);
        }
        let outcome = self.entry.log.poll_read(cx, self.cursor, max, visit);
        match outcome {
            Poll::Ready(ReadOutcome::Read { last, ended }) => {
                self.cursor = last;
                self.finished = ended;
            }
            Poll::Ready(ReadOutcome::Finished | ReadOutcome::Gap) => self.finished = true,
            Poll::Pending => {}
        }
        outcome
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.cancel_on_drop && !self.finished {
            self.cancel();
        }
        self.entry.leave();
    }
}

/// Events one at a time, owned: for consumers that keep them (the JSON answer, tests).
/// A gap ends the stream with an error event.
impl Stream for Subscription {
    type Item = AnswerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AnswerEvent>> {
        let mut item = None;
        match self.poll_read(cx, 1, &mut |ev| item = Some(ev.clone())) {
            Poll::Ready(ReadOutcome::Read { .. }) => Poll::Ready(item),
            Poll::Ready(ReadOutcome::Finished) => Poll::Ready(None),
            Poll::Ready(ReadOutcome::Gap) => Poll::Ready(Some(gap_event(self.cursor + 1))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error a reader gets when the events it needs are gone.
pub fn gap_event(seq: u64) -> AnswerEvent {
    AnswerEvent {
        seq,
        event: super::StreamEvent::Error(ErrorBody {
            code: "resume_gap".to_owned(),
            message: ResumeError::Gap.to_string(),
        }),
        partial: None,
    }
}
