//! One Server-Sent Events response: a body stream that turns one answer's events into SSE
//! frames and pings while idle, and an actor that registers the connection with the hub and
//! lets an administrator end it.
//!
//! Tokens never cross the actor: the response body reads the answer's log itself, so a
//! wake-up costs one chunk however many tokens waited. The actor and the body are tied both
//! ways: when the body is dropped (the answer ended, or the client went away and actix
//! dropped the response) the actor stops and unregisters, and the answer loses a
//! subscriber (it is detached for the grace window when that was the last); when the actor
//! stops (an administrator ended the connection) the body ends and stops the answer.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler,
};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::oneshot;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use super::chat_hub::ChatHub;
use super::messages::{Connect, Disconnect, Terminate};
use crate::answer::registry::gap_event;
use crate::answer::{ReadOutcome, Subscription};
use crate::protocol::sse;
use crate::protocol::{FrameEncoder, Piece, TokenMerger};
use crate::store::KeyOwner;

/// Most events read into one body chunk.
const EVENTS_PER_CHUNK: usize = 256;

pub struct SseSession {
    id: u64,
    /// The request's id (the session starts in its handler), for the session's log lines.
    request_id: Option<std::sync::Arc<str>>,
    owner: KeyOwner,
    hub: Addr<ChatHub>,
    /// Held by a future of the actor's context: dropped when the actor stops, which ends
    /// the body; resolves `closed()` when the body is dropped, which stops the actor.
    link: Option<oneshot::Sender<()>>,
    /// Shared with the body, which is the only writer of the connection.
    reading: Rc<Reading>,
    write_timeout: Duration,
}

/// The body's subscription and when actix last asked it for bytes. actix polls a body only
/// when the connection can take more, so a body with events waiting that has not been
/// polled for the write timeout belongs to a client that stopped reading: the session then
/// takes the subscription away (the answer is detached, its log freed for this reader) and
/// unregisters. SSE cannot close a socket that takes no writes; this releases everything
/// the hub holds for it.
struct Reading {
    answer: RefCell<Option<Subscription>>,
    polled: Cell<Instant>,
}

impl Reading {
    fn stalled(&self, write_timeout: Duration) -> bool {
        if self.polled.get().elapsed() < write_timeout {
            return false;
        }
        self.answer
            .borrow()
            .as_ref()
            .is_some_and(|a| !a.is_finished() && a.entry().log().last_seq() > a.cursor())
    }
}

impl SseSession {
    /// Starts the session and returns the response body: the subscribed answer's events
    /// past the subscription's cursor, then live ones, as `encoder` writes them.
    pub fn start<E: FrameEncoder + Unpin + 'static>(
        id: u64,
        answer: Subscription,
        owner: KeyOwner,
        hub: Addr<ChatHub>,
        timing: SseTiming,
        encoder: E,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> {
        let SseTiming {
            heartbeat,
            write_timeout,
        } = timing;
        let (link, ended) = oneshot::channel();
        let answer_id = answer.answer_id().clone();
        let reading = Rc::new(Reading {
            answer: RefCell::new(Some(answer)),
            polled: Cell::new(Instant::now()),
        });
        SseSession {
            id,
            request_id: crate::logging::current().request_id,
            owner,
            hub,
            link: Some(link),
            reading: reading.clone(),
            write_timeout,
        }
        .start();
        let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Body {
            answer_id,
            reading,
            ended,
            ping,
            merger: TokenMerger::default(),
            encoder,
            done: false,
        }
    }
}

/// How often an idle stream pings, and how long a stalled one is kept.
#[derive(Debug, Clone, Copy)]
pub struct SseTiming {
    pub heartbeat: Duration,
    pub write_timeout: Duration,
}

/// The response body: the answer's frames, a `: ping` after each idle heartbeat interval.
/// It is the connection's one writer: on each wake-up everything past its cursor goes out
/// in one chunk, waiting tokens merged into one frame.
struct Body<E> {
    reading: Rc<Reading>,
    answer_id: Arc<str>,
    /// Resolves (closed) when the session actor stops.
    ended: oneshot::Receiver<()>,
    ping: Interval,
    merger: TokenMerger,
    encoder: E,
    done: bool,
}

impl<E: FrameEncoder + Unpin> Stream for Body<E> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.reading.polled.set(Instant::now());
        let reading = this.reading.clone();
        let mut answer = reading.answer.borrow_mut();
        let Some(answer) = answer.as_mut() else {
            // Taken away: the client had stopped reading.
            this.done = true;
            return Poll::Ready(None);
        };
        if Pin::new(&mut this.ended).poll(cx).is_ready() {
            // An administrator ended the connection (or revoked its key): that ends the
            // answer too, rather than leaving it for a resume.
            answer.cancel();
            this.done = true;
            return Poll::Ready(None);
        }
        let mut chunk = Vec::new();
        let Body {
            answer_id,
            merger,
            encoder,
            ..
        } = this;
        let outcome = answer.poll_read(cx, EVENTS_PER_CHUNK, &mut |ev| {
            merger.push(ev, &mut |piece| {
                encoder.encode(&mut chunk, answer_id, &piece)
            });
        });
        match outcome {
            Poll::Ready(ReadOutcome::Read { .. }) => {
                merger.flush(&mut |piece| encoder.encode(&mut chunk, answer_id, &piece));
                // Frames are flowing: the next ping is due a whole interval from now.
                this.ping.reset();
                return Poll::Ready(Some(Ok(Bytes::from(chunk))));
            }
            Poll::Ready(ReadOutcome::Finished) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(ReadOutcome::Gap) => {
                this.done = true;
                let gap = gap_event(answer.cursor() + 1);
                encoder.encode(&mut chunk, answer_id, &Piece::Event(&gap));
                return Poll::Ready(Some(Ok(Bytes::from(chunk))));
            }
            Poll::Pending => {}
        }
        if this.ping.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Bytes::from_static(sse::PING))));
        }
        Poll::Pending
    }
}

impl Actor for SseSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.hub.do_send(Connect {
            session_id: self.id,
            kind: "sse",
            user: self.owner.key_id.clone(),
            tenant: self.owner.tenant_id.clone(),
            browser_session: self.owner.session.clone(),
            terminate: ctx.address().recipient(),
        });
        // The body is dropped when the answer ends or the client disconnects (actix drops
        // a response whose connection closed); noticing that at once is what unregisters
        // the connection. The answer itself is dropped with the body, which stops a silent
        // upstream within 100 ms.
        if let Some(mut link) = self.link.take() {
            let gone = wrap_future(async move { link.closed().await });
            ctx.spawn(gone.map(|_, _, ctx: &mut Context<Self>| ctx.stop()));
        }
        let check = (self.write_timeout / 4).max(Duration::from_millis(100));
        ctx.run_interval(check, |act, ctx| {
            if act.reading.stalled(act.write_timeout) {
                let _scope = act.log_scope();
                log::info!(
                    "sse session {}: no write for {:?}; its answer is detached",
                    act.id,
                    act.write_timeout
                );
                act.reading.answer.borrow_mut().take();
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.hub.do_send(Disconnect {
            session_id: self.id,
        });
    }
}

impl SseSession {
    fn log_scope(&self) -> crate::logging::Entered {
        crate::logging::enter(crate::logging::LogContext {
            request_id: self.request_id.clone(),
            answer_id: None,
        })
    }
}

impl Handler<Terminate> for SseSession {
    type Result = ();

    /// Ending the body is all SSE can say, unless the answer is stopped with a reason: its
    /// error event then ends the body (which stops the actor), and the client hears why.
    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        let _scope = self.log_scope();
        log::info!("sse session {} ended: {}", self.id, msg.reason);
        if let Some(reason) = msg.end_answer_as {
            if let Some(answer) = self.reading.answer.borrow().as_ref() {
                if !answer.entry().log().is_ended() {
                    answer.entry().stop(reason);
                    return;
                }
            }
        }
        ctx.stop();
    }
}
