//! The event log of one answer: every event numbered from 1, kept in memory (bounded in
//! bytes) while the answer runs and for the grace window after it ends, read by any number
//! of subscribers, each from its own cursor.
//!
//! The answer task appends without ever waiting: a slow or absent reader costs log memory
//! (bounded), never the provider's progress. Readers visit the events past their cursor in
//! place, under the log's lock, so a writer can encode (and merge) them straight into its
//! frame buffer without copying a token first.
//!
//! [`EventLog`] is the seam for a shared log (Redis Streams in a cluster); [`MemoryLog`] is
//! the in-process one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{AnswerEvent, DoneMetadata, StreamEvent};

/// Bytes an event costs beyond its text: the enum, its sequence number, the deque slot.
const EVENT_OVERHEAD: usize = 64;

/// What a read found past the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Events were visited; `last` is the sequence number of the last one, `ended` says
    /// whether it was the terminal event.
    Read { last: u64, ended: bool },
    /// The cursor is already past the terminal event: nothing more will come.
    Finished,
    /// Events after the cursor were dropped (the log's byte bound, or the log expired):
    /// this reader cannot continue without a hole.
    Gap,
}

/// One answer's events. Implementations are shared between the answer task and readers on
/// any worker thread.
pub trait EventLog: Send + Sync {
    /// Appends the next event and returns its sequence number (from 1). An event after the
    /// terminal one is ignored (and gets 0): an answer ends once.
    fn append(&self, event: StreamEvent, partial: Option<Box<DoneMetadata>>) -> u64;

    /// Visits up to `max` events after `after`, in order. With nothing new it registers the
    /// waker and returns `Pending`; the next append wakes it.
    fn poll_read(
        &self,
        cx: &mut Context<'_>,
        after: u64,
        max: usize,
        visit: &mut dyn FnMut(&AnswerEvent),
    ) -> Poll<ReadOutcome>;

    /// Whether the terminal event has been appended.
    fn is_ended(&self) -> bool;

    /// The sequence number of the last event appended (0 before the first).
    fn last_seq(&self) -> u64;

    /// Frees the events; readers still holding the log get [`ReadOutcome::Gap`].
    fn expire(&self);
}

struct Inner {
    events: VecDeque<AnswerEvent>,
    /// Sequence number the next append gets.
    next_seq: u64,
    bytes: usize,
    ended: bool,
    expired: bool,
    wakers: Vec<Waker>,
}

/// The in-process log.
pub struct MemoryLog {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl MemoryLog {
    pub fn new(max_bytes: usize) -> Arc<MemoryLog> {
        MemoryLog::resuming_after(0, max_bytes)
    }

    /// A log whose first event is `after + 1`: a copy of another hub's answer, followed
    /// from a client's cursor (a read from before it is a gap).
    pub fn resuming_after(after: u64, max_bytes: usize) -> Arc<MemoryLog> {
        Arc::new(MemoryLog {
            max_bytes,
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: after + 1,
                bytes: 0,
                ended: false,
                expired: false,
                wakers: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent deque (every mutation is a
        // single push or pop), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn cost(event: &StreamEvent) -> usize {
    EVENT_OVERHEAD
        + match event {
            StreamEvent::Token(text) => text.len(),
            StreamEvent::Conversation(id) => id.len(),
            StreamEvent::Sources(sources) => sources
                .iter()
                .map(|s| s.text.len() + s.title.len() + EVENT_OVERHEAD)
                .sum(),
            StreamEvent::Done(_) | StreamEvent::Error(_) => EVENT_OVERHEAD,
        }
}

impl EventLog for MemoryLog {
    fn append(&self, event: StreamEvent, partial: Option<Box<DoneMetadata>>) -> u64 {
        let wakers = {
            let mut inner = self.lock();
            if inner.ended || inner.expired {
                return 0;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.ended = event.is_terminal();
            inner.bytes += cost(&event);
            inner.events.push_back(AnswerEvent {
                seq,
                event,
                partial,
            });
            // Over the bound, the oldest events go (never the last one): readers that far
            // behind get a gap, everyone else is unaffected.
            while inner.bytes > self.max_bytes && inner.events.len() > 1 {
                if let Some(old) = inner.events.pop_front() {
                    inner.bytes -= cost(&old.event);
                }
            }
            std::mem::take(&mut inner.wakers)
        };
        // Woken outside the lock, so a reader on another thread never waits for it.
        for waker in wakers {
            waker.wake();
        }
        self.last_seq()
    }

    fn poll_read(
        &self,
        cx: &mut Context<'_>,
        after: u64,
        max: usize,
        visit: &mut dyn FnMut(&AnswerEvent),
    ) -> Poll<ReadOutcome> {
        let mut inner = self.lock();
        if inner.expired {
            return Poll::Ready(ReadOutcome::Gap);
        }
        let last = inner.next_seq - 1;
        if after >= last {
            if inner.ended {
                return Poll::Ready(ReadOutcome::Finished);
            }
            if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                inner.wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let first = inner.events.front().map_or(inner.next_seq, |e| e.seq);
        if after + 1 < first {
            return Poll::Ready(ReadOutcome::Gap);
        }
        let start = (after + 1 - first) as usize;
        let mut last_read = after;
        for ev in inner.events.range(start..).take(max.max(1)) {
            visit(ev);
            last_read = ev.seq;
        }
        let ended = inner.ended && last_read == last;
        Poll::Ready(ReadOutcome::Read {
            last: last_read,
            ended,
        })
    }

    fn is_ended(&self) -> bool {
        self.lock().ended
    }

    fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    fn expire(&self) {
        let wakers = {
            let mut inner = self.lock();
            inner.expired = true;
            inner.events = VecDeque::new();
            inner.bytes = 0;
            std::mem::take(&mut inner.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorBody;
    use futures_util::task::noop_waker;

    fn read_all(log: &MemoryLog, after: u64) -> (Vec<u64>, Poll<ReadOutcome>) {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut seen = Vec::new();
        let outcome = log.poll_read(&mut cx, after, usize::MAX, &mut |ev| seen.push(ev.seq));
        (seen, outcome)
    }

    fn token(text: &str) -> StreamEvent {
        StreamEvent::Token(text.to_owned())
    }

    fn error() -> StreamEvent {
        StreamEvent::Error(ErrorBody {
            code: "x".into(),
            message: "y".into(),
        })
    }

    #[test]
    fn readers_get_what_came_after_their_cursor() {
        let log = MemoryLog::new(1 << 20);
        assert_eq!(log.append(token("a"), None), 1);
        assert_eq!(log.append(token("b"), None), 2);
        assert_eq!(log.append(token("c"), None), 3);
        let (seen, outcome) = read_all(&log, 1);
        assert_eq!(seen, vec![2, 3]);
        assert_eq!(
            outcome,
            Poll::Ready(ReadOutcome::Read {
                last: 3,
                ended: false
            })
        );
        let (seen, outcome) = read_all(&log, 3);
        assert!(seen.is_empty());
        assert_eq!(outcome, Poll::Pending);
    }

    #[test]
    fn the_terminal_event_ends_the_log_once() {
        let log = MemoryLog::new(1 << 20);
        log.append(token("a"), None);
        log.append(error(), None);
        assert!(log.is_ended());
        assert_eq!(log.append(token("late"), None), 0);
        let (seen, outcome) = read_all(&log, 0);
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(
            outcome,
            Poll::Ready(ReadOutcome::Read {
                last: 2,
                ended: true
            })
        );
        assert_eq!(read_all(&log, 2).1, Poll::Ready(ReadOutcome::Finished));
    }

    #[test]
    fn over_its_bound_the_log_drops_the_oldest_and_late_readers_see_a_gap() {
        let log = MemoryLog::new(3 * (EVENT_OVERHEAD + 10));
        for _ in 0..10 {
            log.append(token("0123456789"), None);
        }
        assert_eq!(read_all(&log, 0).1, Poll::Ready(ReadOutcome::Gap));
        let (seen, _) = read_all(&log, 7);
        assert_eq!(seen, vec![8, 9, 10]);
    }

    #[test]
    fn an_expired_log_is_a_gap_for_everyone() {
        let log = MemoryLog::new(1 << 20);
        log.append(token("a"), None);
        log.expire();
        assert_eq!(read_all(&log, 0).1, Poll::Ready(ReadOutcome::Gap));
    }

    #[test]
    fn an_append_wakes_a_waiting_reader() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Flag(AtomicBool);
        impl futures_util::task::ArcWake for Flag {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = futures_util::task::waker(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let log = MemoryLog::new(1 << 20);
        assert!(log.poll_read(&mut cx, 0, 8, &mut |_| {}).is_pending());
        log.append(token("a"), None);
        assert!(flag.0.load(Ordering::SeqCst));
    }
}
