//! One Server-Sent Events response: a body stream that turns one answer's events into SSE
//! frames and pings while idle, and an actor that registers the connection with the hub and
//! lets an administrator end it.
//!
//! Tokens never cross the actor: the response body polls the answer itself, so each token
//! costs one wake-up of the response and nothing else. The actor and the body are tied both
//! ways: when the body is dropped (the answer ended, or the client went away and actix
//! dropped the response) the actor stops and unregisters; when the actor stops (an
//! administrator ended the connection) the body ends, which drops the answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler,
};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use super::chat_hub::ChatHub;
use super::messages::{Connect, Disconnect, Terminate};
use crate::answer::AnswerStream;
use crate::protocol::sse;
use crate::store::KeyOwner;

/// Most events folded into one body chunk.
const COALESCE_MAX: usize = 64;

pub struct SseSession {
    id: u64,
    owner: KeyOwner,
    hub: Addr<ChatHub>,
    /// Held by a future of the actor's context: dropped when the actor stops, which ends
    /// the body; resolves `closed()` when the body is dropped, which stops the actor.
    link: Option<oneshot::Sender<()>>,
}

impl SseSession {
    /// Starts the session and returns the response body. `id` is the one the answer was
    /// admitted under.
    pub fn start(
        id: u64,
        answer: AnswerStream,
        owner: KeyOwner,
        hub: Addr<ChatHub>,
        heartbeat: Duration,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> {
        let (link, ended) = oneshot::channel();
        SseSession {
            id,
            owner,
            hub,
            link: Some(link),
        }
        .start();
        let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Body {
            answer,
            ended,
            ping,
            done: false,
        }
    }
}

/// The response body: the answer's frames, a `: ping` after each idle heartbeat interval.
struct Body {
    answer: AnswerStream,
    /// Resolves (closed) when the session actor stops.
    ended: oneshot::Receiver<()>,
    ping: Interval,
    done: bool,
}

impl Stream for Body {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if Pin::new(&mut this.ended).poll(cx).is_ready() {
            // An administrator ended the connection; dropping the body drops the answer.
            this.done = true;
            return Poll::Ready(None);
        }
        match this.answer.poll_next_unpin(cx) {
            Poll::Ready(Some(ev)) => {
                let mut chunk = sse::encode(&ev);
                // Events already waiting (the client or this worker lagged behind the
                // upstream) go out in the same body chunk: one wake-up of the response and
                // one write for all of them. The frames are unchanged; only their packing.
                let mut batch: Option<BytesMut> = None;
                for _ in 1..COALESCE_MAX {
                    match this.answer.poll_next_unpin(cx) {
                        Poll::Ready(Some(ev)) => batch
                            .get_or_insert_with(|| BytesMut::from(&chunk[..]))
                            .extend_from_slice(&sse::encode(&ev)),
                        _ => break,
                    }
                }
                if let Some(batch) = batch {
                    chunk = batch.freeze();
                }
                // Frames are flowing: the next ping is due a whole interval from now.
                this.ping.reset();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
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
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.hub.do_send(Disconnect {
            session_id: self.id,
        });
    }
}

impl Handler<Terminate> for SseSession {
    type Result = ();

    /// Ending the body is all SSE can say; the client sees the stream close.
    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        log::info!("sse session {} ended: {}", self.id, msg.reason);
        ctx.stop();
    }
}
