//! The one writer of a WebSocket connection.
//!
//! The session actor never writes to its socket: it puts replies (pongs, errors, handshake
//! answers) into the connection's [`Outbox`] and hands it the answers the socket follows.
//! A single task, [`run_writer`], owns the socket's write half. On every wake-up it takes
//! the queued replies and everything each answer has past its cursor, merges an answer's
//! waiting tokens into one frame, and writes. So a lagging client costs fewer frames, not
//! more, and a client that stops reading costs a bounded outbox, then its connection:
//!
//! - replies queued beyond [`MAX_QUEUED_BYTES`] are refused ([`Overflow`]); the session
//!   then closes the socket (1008);
//! - a write that makes no progress for the write timeout ends the writer, and with it the
//!   connection. Its answers are detached, not cancelled: a lost client may resume them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_ws::CloseReason;
use bytes::Bytes;

use super::framing::Framing;
use crate::answer::registry::gap_event;
use crate::answer::{ReadOutcome, Subscription};
use crate::protocol::{Piece, TokenMerger};

/// Replies a connection may have waiting for its client. A client that reads keeps this
/// near zero; one that floods requests without reading reaches it quickly.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// Events read from one answer per wake-up; the rest wait for the next turn, so one fast
/// answer cannot starve the others on the socket.
const EVENTS_PER_TURN: usize = 256;
/// Reads of one answer per wake-up before the writer yields to the rest of the thread.
const TURNS_PER_WAKE: usize = 4;

/// The outbox is full: the client is not reading its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

pub enum Outgoing {
    Text(String),
    Ping,
    Pong(Bytes),
}

/// An answer this socket follows, under the request id the client knows it by.
pub struct Feed {
    pub id: Rc<str>,
    pub framing: Framing,
    pub answer: Subscription,
    merger: TokenMerger,
}

impl Feed {
    pub fn new(id: Rc<str>, framing: Framing, answer: Subscription) -> Feed {
        Feed {
            id,
            framing,
            answer,
            merger: TokenMerger::default(),
        }
    }
}

#[derive(Default)]
struct State {
    queued: VecDeque<Outgoing>,
    queued_bytes: usize,
    feeds: Vec<Feed>,
    /// Set once: the writer sends what is queued, then this close frame, and ends.
    closing: Option<Option<CloseReason>>,
    /// Set by the writer when it has ended (the socket is gone or stalled).
    ended: bool,
    waker: Option<Waker>,
}

/// Shared by the session actor and its writer task (both on the connection's worker
/// thread).
#[derive(Clone, Default)]
pub struct Outbox(Rc<RefCell<State>>);

impl Outbox {
    fn wake(state: &mut State) {
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn queue(&self, item: Outgoing, bytes: usize) -> Result<(), Overflow> {
        let mut state = self.0.borrow_mut();
        if state.closing.is_some() || state.ended {
            // Nothing more goes out; dropping the reply is the only thing left to do.
            return Ok(());
        }
        if state.queued_bytes + bytes > MAX_QUEUED_BYTES {
            return Err(Overflow);
        }
        state.queued_bytes += bytes;
        state.queued.push_back(item);
        Self::wake(&mut state);
        Ok(())
    }

    /// Queues a text frame (a reply, not an answer's event).
    pub fn text(&self, text: String) -> Result<(), Overflow> {
        let bytes = text.len();
        self.queue(Outgoing::Text(text), bytes)
    }

    pub fn ping(&self) -> Result<(), Overflow> {
        self.queue(Outgoing::Ping, 16)
    }

    pub fn pong(&self, payload: Bytes) -> Result<(), Overflow> {
        let bytes = payload.len() + 16;
        self.queue(Outgoing::Pong(payload), bytes)
    }

    /// Follows an answer on this socket.
    pub fn follow(&self, feed: Feed) {
        let mut state = self.0.borrow_mut();
        state.feeds.push(feed);
        Self::wake(&mut state);
    }

    /// Whether an answer runs under this request id.
    pub fn follows(&self, id: &str) -> bool {
        self.0.borrow().feeds.iter().any(|f| &*f.id == id)
    }

    /// Stops the answer under `id` (the client cancelled it); false when none runs.
    pub fn cancel(&self, id: &str) -> bool {
        let feed = {
            let mut state = self.0.borrow_mut();
            let Some(at) = state.feeds.iter().position(|f| &*f.id == id) else {
                return false;
            };
            state.feeds.remove(at)
        };
        feed.answer.cancel();
        true
    }

    /// Stops every answer of the socket (the client closed it, or an administrator did).
    pub fn cancel_all(&self) {
        let feeds = std::mem::take(&mut self.0.borrow_mut().feeds);
        for feed in &feeds {
            feed.answer.cancel();
        }
    }

    /// Sends `last` (if any) after what is queued, then the close frame, and ends the
    /// writer. The answers still followed are detached, not stopped.
    pub fn close(&self, last: Option<String>, reason: Option<CloseReason>) {
        let mut state = self.0.borrow_mut();
        if state.closing.is_some() {
            return;
        }
        if let Some(text) = last {
            state.queued_bytes += text.len();
            state.queued.push_back(Outgoing::Text(text));
        }
        state.closing = Some(reason);
        Self::wake(&mut state);
    }

    /// Everything ready to go out now; `Pending` when nothing is.
    fn collect(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Outgoing>,
    ) -> Poll<Option<Option<CloseReason>>> {
        let mut state = self.0.borrow_mut();
        let state = &mut *state;
        out.extend(state.queued.drain(..));
        state.queued_bytes = 0;
        if let Some(reason) = &state.closing {
            return Poll::Ready(Some(reason.clone()));
        }
        state.feeds.retain_mut(|feed| {
            // SignalR records of one answer share a WebSocket message; plain frames are
            // one JSON object per message.
            let mut records = String::new();
            let Feed {
                id,
                framing,
                answer,
                merger,
            } = feed;
            let answer_id = answer.answer_id().clone();
            let batches = framing.batches_records();
            let mut emit = |piece: Piece<'_>| {
                if let Some(frame) = framing.encode(id, &answer_id, &piece) {
                    if batches {
                        records.push_str(&frame);
                    } else {
                        out.push(Outgoing::Text(frame));
                    }
                }
            };
            // Read until the log has nothing more (which registers this task's waker with
            // it) or this turn's share is used up (then the task wakes itself for another
            // turn): stopping after a read that produced no frame, with neither, would never
            // be woken again.
            let mut reads = 0;
            let keep = loop {
                let outcome =
                    answer.poll_read(cx, EVENTS_PER_TURN, &mut |ev| merger.push(ev, &mut emit));
                match outcome {
                    Poll::Ready(ReadOutcome::Read { ended: true, .. })
                    | Poll::Ready(ReadOutcome::Finished) => break false,
                    Poll::Ready(ReadOutcome::Read { .. }) => {
                        reads += 1;
                        if reads == TURNS_PER_WAKE {
                            cx.waker().wake_by_ref();
                            break true;
                        }
                    }
                    Poll::Ready(ReadOutcome::Gap) => {
                        merger.flush(&mut emit);
                        let gap = gap_event(answer.cursor() + 1);
                        emit(Piece::Event(&gap));
                        break false;
                    }
                    Poll::Pending => break true,
                }
            };
            merger.flush(&mut emit);
            if !records.is_empty() {
                out.push(Outgoing::Text(records));
            }
            keep
        });
        if out.is_empty() {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(None)
    }
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// The close frame went out (or the socket was already closed).
    Closed,
    /// A write made no progress for the write timeout.
    Stalled,
}

/// The connection's only writer: runs until the outbox is closed, the socket goes away or
/// a write stalls.
pub async fn run_writer(
    outbox: Outbox,
    mut session: actix_ws::Session,
    write_timeout: Duration,
) -> WriterEnd {
    let mut batch = Vec::new();
    let end = loop {
        let closing = poll_fn(|cx| outbox.collect(cx, &mut batch)).await;
        let mut gone = false;
        for item in batch.drain(..) {
            let write = async {
                match item {
                    Outgoing::Text(text) => session.text(text).await,
                    Outgoing::Ping => session.ping(b"").await,
                    Outgoing::Pong(payload) => session.pong(&payload).await,
                }
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => {
                    gone = true;
                    break;
                }
                Err(_elapsed) => return finish(&outbox, WriterEnd::Stalled),
            }
        }
        if gone {
            break WriterEnd::Closed;
        }
        if let Some(reason) = closing {
            let _ = tokio::time::timeout(write_timeout, session.close(reason)).await;
            return finish(&outbox, WriterEnd::Closed);
        }
    };
    finish(&outbox, end)
}

fn finish(outbox: &Outbox, end: WriterEnd) -> WriterEnd {
    let feeds = {
        let mut state = outbox.0.borrow_mut();
        state.ended = true;
        state.queued.clear();
        std::mem::take(&mut state.feeds)
    };
    // Dropped outside the borrow: each drop may wake an answer's watchdog.
    drop(feeds);
    end
}
