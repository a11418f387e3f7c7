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
//!
//! A SignalR connection with stateful reconnect outlives its sockets: the outbox numbers its
//! hub messages and keeps them until the client acknowledges them ([`ResendBuffer`]). When
//! the socket is lost the outbox is detached (its answers and what they still have to send
//! stay put), and a reconnected socket's writer starts with `Sequence` and the messages the
//! client has not acknowledged, then goes on with the answers where they were.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason};
use bytes::Bytes;
use bytestring::ByteString;

use super::framing::Framing;
use super::resend::{ResendBuffer, Unacknowledged};
use crate::answer::registry::gap_event;
use crate::answer::{AnswerEvent, ReadOutcome, StreamEvent, Subscription};
use crate::protocol::signalr;
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
    /// A frame sent once: a reply, a handshake answer, a plain protocol frame, an `Ack`.
    Text(String),
    /// SignalR hub messages (whole records): numbered and kept until acknowledged when the
    /// connection uses stateful reconnect, sent as they are otherwise.
    Records(String),
    /// Hub messages as the resend buffer keeps them.
    Kept(ByteString),
    Ping,
    Pong(Bytes),
}

/// An answer this socket follows, under the request id the client knows it by.
pub struct Feed {
    pub id: Rc<str>,
    pub framing: Framing,
    pub answer: Subscription,
    merger: TokenMerger,
    /// Text the client already has (UTF-16 code units), dropped from the front of the
    /// answer's tokens: a SignalR client resuming by id counts text, not events.
    skip: u64,
}

impl Feed {
    pub fn new(id: Rc<str>, framing: Framing, answer: Subscription) -> Feed {
        Feed {
            id,
            framing,
            answer,
            merger: TokenMerger::default(),
            skip: 0,
        }
    }

    /// A feed that leaves out the first `skip` UTF-16 code units of the answer's text.
    pub fn skipping(mut self, skip: u64) -> Feed {
        self.skip = skip;
        self
    }
}

/// What the writer of socket `n` is to do after writing what it collected.
enum Step {
    Write,
    /// Send the close frame and end the connection.
    Close(Option<CloseReason>),
    /// This socket is done (detached or replaced) but the connection lives on; the close
    /// frame, if any, is for this socket only.
    Leave(Option<CloseReason>),
}

#[derive(Default)]
struct State {
    queued: VecDeque<Outgoing>,
    queued_bytes: usize,
    feeds: Vec<Feed>,
    /// Set once: the writer sends what is queued, then this close frame, and ends.
    closing: Option<Option<CloseReason>>,
    /// A drain's close: once every followed answer has been written to its end, the last
    /// frame (if any) and this close frame.
    closing_when_done: Option<(Option<String>, Option<CloseReason>)>,
    /// Set by the writer when it has ended (the socket is gone or stalled).
    ended: bool,
    waker: Option<Waker>,
    /// Stateful reconnect: the hub messages the client has not acknowledged.
    resend: Option<ResendBuffer>,
    /// The socket whose writer may collect; a new number when the socket is detached or
    /// replaced, so an older writer leaves.
    socket: u64,
    /// No socket: a stateful connection waiting for its client to reconnect.
    detached: bool,
    /// The next collect starts with `Sequence` and the unacknowledged messages.
    replay: bool,
    /// The close frame for a socket that was detached while still open.
    farewell: Option<(u64, CloseReason)>,
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
        if state.detached && !matches!(item, Outgoing::Records(_)) {
            // Pings and acks are for a socket; hub messages wait for the next one.
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

    /// Queues SignalR hub messages (whole records) that a reconnect must not lose.
    pub fn records(&self, text: String) -> Result<(), Overflow> {
        let bytes = text.len();
        self.queue(Outgoing::Records(text), bytes)
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

    /// Takes every answer off the connection (its client is not coming back).
    pub fn take_feeds(&self) -> Vec<Feed> {
        std::mem::take(&mut self.0.borrow_mut().feeds)
    }

    /// From now on hub messages are numbered and kept until acknowledged (stateful
    /// reconnect), at most `max_bytes` of them.
    pub fn make_resumable(&self, max_bytes: usize) {
        self.0.borrow_mut().resend = Some(ResendBuffer::new(max_bytes));
    }

    /// Whether a lost socket leaves the connection waiting for a reconnect.
    pub fn is_resumable(&self) -> bool {
        let state = self.0.borrow();
        state.resend.is_some() && state.closing.is_none() && !state.ended
    }

    /// The client has processed our hub messages up to `sequence_id`.
    pub fn ack(&self, sequence_id: u64) {
        if let Some(resend) = &mut self.0.borrow_mut().resend {
            resend.ack(sequence_id);
        }
    }

    /// The number of the socket attached now (items of older sockets are stale).
    pub fn socket(&self) -> u64 {
        self.0.borrow().socket
    }

    pub fn is_detached(&self) -> bool {
        self.0.borrow().detached
    }

    /// The socket is gone (or is let go, with `farewell` as its close frame): the
    /// connection keeps its answers and unacknowledged messages for a reconnect. Replies
    /// that only made sense on that socket are dropped.
    pub fn detach(&self, farewell: Option<CloseReason>) {
        let mut state = self.0.borrow_mut();
        let state = &mut *state;
        if state.detached {
            return;
        }
        state.farewell = farewell.map(|reason| (state.socket, reason));
        state.socket += 1;
        state.detached = true;
        state
            .queued
            .retain(|item| matches!(item, Outgoing::Records(_)));
        state.queued_bytes = state
            .queued
            .iter()
            .map(|item| match item {
                Outgoing::Records(text) => text.len(),
                _ => 0,
            })
            .sum();
        Self::wake(state);
    }

    /// Attaches a new socket (replacing the current one, if any) and returns its number;
    /// its writer starts with the replay. `None` when the connection is ending.
    pub fn reattach(&self) -> Option<u64> {
        let mut state = self.0.borrow_mut();
        if state.resend.is_none() || state.closing.is_some() || state.ended {
            return None;
        }
        state.socket += 1;
        state.detached = false;
        state.replay = true;
        // A writer still on the replaced socket leaves at its next collect.
        Self::wake(&mut state);
        Some(state.socket)
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

    /// Like [`Outbox::close`], but only once every answer followed has been written to its
    /// end (its terminal event included).
    pub fn close_when_done(&self, last: Option<String>, reason: Option<CloseReason>) {
        let mut state = self.0.borrow_mut();
        if state.closing.is_some() {
            return;
        }
        state.closing_when_done = Some((last, reason));
        Self::wake(&mut state);
    }

    /// Everything ready to go out now on socket `socket`; `Pending` when nothing is.
    fn collect(&self, cx: &mut Context<'_>, socket: u64, out: &mut Vec<Outgoing>) -> Poll<Step> {
        let mut state = self.0.borrow_mut();
        let state = &mut *state;
        if state.socket != socket {
            let farewell = match state.farewell.take() {
                Some((s, reason)) if s == socket => Some(reason),
                other => {
                    state.farewell = other;
                    None
                }
            };
            return Poll::Ready(Step::Leave(farewell));
        }
        if std::mem::take(&mut state.replay) {
            if let Some(resend) = &state.resend {
                // The client ignores everything after a reconnect until this `Sequence`.
                let (first, kept) = resend.replay();
                out.push(Outgoing::Text(signalr::sequence(first)));
                out.extend(kept.map(Outgoing::Kept));
            }
        }
        out.extend(state.queued.drain(..));
        state.queued_bytes = 0;
        if let Some(reason) = &state.closing {
            return Poll::Ready(Step::Close(reason.clone()));
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
                skip,
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
                    answer.poll_read(cx, EVENTS_PER_TURN, &mut |ev| match (&ev.event, *skip) {
                        (StreamEvent::Token(text), 1..) => {
                            let rest = signalr::skip_utf16(text, skip);
                            if !rest.is_empty() {
                                let rest = AnswerEvent {
                                    seq: ev.seq,
                                    event: StreamEvent::Token(rest.to_owned()),
                                    partial: None,
                                };
                                merger.push(&rest, &mut emit);
                            }
                        }
                        _ => merger.push(ev, &mut emit),
                    });
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
                out.push(Outgoing::Records(records));
            }
            keep
        });
        if let Some(resend) = &mut state.resend {
            if let Err(Unacknowledged) = number(resend, out) {
                // The client is not acknowledging what it gets: it could not resume without a
                // hole, so the connection ends here (its answers stay resumable by id).
                state.resend = None;
                let reason = CloseReason {
                    code: CloseCode::Policy,
                    description: Some("unacknowledged messages over the limit".to_owned()),
                };
                let error =
                    "Too many messages were not acknowledged; the connection cannot be resumed.";
                out.push(Outgoing::Text(signalr::close(Some(error), false)));
                state.closing = Some(Some(reason.clone()));
                return Poll::Ready(Step::Close(Some(reason)));
            }
        }
        if state.feeds.is_empty() {
            if let Some((last, reason)) = state.closing_when_done.take() {
                out.extend(last.map(Outgoing::Text));
                state.closing = Some(reason.clone());
                return Poll::Ready(Step::Close(reason));
            }
        }
        if out.is_empty() {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Step::Write)
    }
}

/// Numbers and keeps the hub messages among `out`. Past the bound the rest is dropped.
fn number(resend: &mut ResendBuffer, out: &mut Vec<Outgoing>) -> Result<(), Unacknowledged> {
    for at in 0..out.len() {
        if let Outgoing::Records(text) = &mut out[at] {
            match resend.keep(std::mem::take(text)) {
                Ok(kept) => out[at] = Outgoing::Kept(kept),
                Err(e) => {
                    out.truncate(at);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// The close frame went out: the connection is over.
    Closed,
    /// A write failed: the socket is gone.
    Gone,
    /// A write made no progress for the write timeout.
    Stalled,
    /// Its socket was detached or replaced; the connection goes on without it.
    Left,
}

/// A socket's only writer: runs until the outbox is closed, the socket goes away, a write
/// stalls, or (stateful reconnect) the socket is detached or replaced.
pub async fn run_writer(
    outbox: Outbox,
    mut session: actix_ws::Session,
    socket: u64,
    write_timeout: Duration,
) -> WriterEnd {
    let mut batch = Vec::new();
    loop {
        let step = poll_fn(|cx| outbox.collect(cx, socket, &mut batch)).await;
        for item in batch.drain(..) {
            let write = async {
                match item {
                    Outgoing::Text(text) | Outgoing::Records(text) => session.text(text).await,
                    Outgoing::Kept(text) => session.text(text).await,
                    Outgoing::Ping => session.ping(b"").await,
                    Outgoing::Pong(payload) => session.pong(&payload).await,
                }
            };
            match tokio::time::timeout(write_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => return lost(&outbox, socket, WriterEnd::Gone),
                Err(_elapsed) => return lost(&outbox, socket, WriterEnd::Stalled),
            }
        }
        match step {
            Step::Write => {}
            Step::Close(reason) => {
                let _ = tokio::time::timeout(write_timeout, session.close(reason)).await;
                return finish(&outbox, WriterEnd::Closed);
            }
            Step::Leave(farewell) => {
                if let Some(reason) = farewell {
                    let _ = tokio::time::timeout(write_timeout, session.close(Some(reason))).await;
                }
                return WriterEnd::Left;
            }
        }
    }
}

/// The socket failed under the writer: the end of the connection, unless it can wait for a
/// reconnect (the session decides that) or a newer socket already took over.
fn lost(outbox: &Outbox, socket: u64, end: WriterEnd) -> WriterEnd {
    if outbox.socket() != socket || outbox.is_resumable() {
        return end;
    }
    finish(outbox, end)
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    /// What one writer wake-up would take from the outbox.
    fn collect(outbox: &Outbox) -> Vec<Outgoing> {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        let _ = outbox.collect(&mut cx, outbox.socket(), &mut out);
        out
    }

    #[test]
    fn replies_past_the_byte_bound_are_refused_until_the_writer_takes_them() {
        let outbox = Outbox::default();
        // The largest pong a client can make us owe (a 125-byte ping payload).
        let payload = Bytes::from(vec![b'p'; 125]);
        let per_pong = payload.len() + 16;
        let fit = MAX_QUEUED_BYTES / per_pong;
        for n in 0..fit {
            assert_eq!(outbox.pong(payload.clone()), Ok(()), "pong {n}");
        }
        assert_eq!(outbox.pong(payload.clone()), Err(Overflow));
        // Every kind of reply counts against the same bound.
        assert_eq!(outbox.text("x".repeat(per_pong)), Err(Overflow));
        assert_eq!(outbox.records("x".repeat(per_pong)), Err(Overflow));
        let left = MAX_QUEUED_BYTES - fit * per_pong;
        assert_eq!(outbox.text("x".repeat(left)), Ok(()), "up to the byte");
        assert_eq!(outbox.ping(), Err(Overflow));

        // A writer that gets to write takes everything, and the bound is free again.
        assert_eq!(collect(&outbox).len(), fit + 1);
        assert_eq!(outbox.pong(payload), Ok(()));
        assert_eq!(outbox.text("x".repeat(MAX_QUEUED_BYTES - per_pong)), Ok(()));
        assert_eq!(outbox.ping(), Err(Overflow));
    }

    #[test]
    fn a_closing_outbox_drops_replies_instead_of_refusing_them() {
        let outbox = Outbox::default();
        assert_eq!(outbox.text("x".repeat(MAX_QUEUED_BYTES)), Ok(()));
        assert_eq!(outbox.ping(), Err(Overflow));
        outbox.close(None, None);
        // The connection is already going: an overflow now would close it a second time.
        assert_eq!(outbox.ping(), Ok(()));
        assert_eq!(outbox.text("late".to_owned()), Ok(()));
        let out = collect(&outbox);
        assert_eq!(
            out.len(),
            1,
            "only what was queued before the close goes out"
        );
    }
}
