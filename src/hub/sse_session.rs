//! One actor per Server-Sent Events response: it owns the sending end of the response
//! body, forwards one answer's events as SSE frames, pings while idle, and stops the answer
//! the moment the client goes away (the body's receiver is dropped).

use std::convert::Infallible;
use std::time::Duration;

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler,
};
use bytes::{Bytes, BytesMut};
use futures_util::{stream, FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use super::chat_hub::ChatHub;
use super::messages::{Connect, Disconnect, Terminate};
use crate::answer::AnswerStream;
use crate::protocol::sse;
use crate::store::KeyOwner;

/// Frames buffered for the response body; beyond this the answer waits for the client.
const BODY_BUFFER: usize = 16;

pub struct SseSession {
    id: u64,
    owner: KeyOwner,
    hub: Addr<ChatHub>,
    tx: mpsc::Sender<Bytes>,
    answer: Option<AnswerStream>,
    heartbeat: Duration,
}

impl SseSession {
    /// Starts the session and returns the response body it feeds. `id` is the one the
    /// answer was admitted under.
    pub fn start(
        id: u64,
        answer: AnswerStream,
        owner: KeyOwner,
        hub: Addr<ChatHub>,
        heartbeat: Duration,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> {
        let (tx, rx) = mpsc::channel(BODY_BUFFER);
        SseSession {
            id,
            owner,
            hub,
            tx,
            answer: Some(answer),
            heartbeat,
        }
        .start();
        stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (Ok(frame), rx))
        })
    }
}

/// Most events folded into one body chunk.
const COALESCE_MAX: usize = 64;

async fn forward(mut answer: AnswerStream, tx: mpsc::Sender<Bytes>) {
    while let Some(ev) = answer.next().await {
        let mut chunk = sse::encode(&ev);
        // Events already waiting (the client or this worker lagged behind the upstream) go
        // out in the same body chunk: one wake-up of the response and one write for all of
        // them instead of one each. The frames are unchanged; only their packing is.
        let mut batch: Option<BytesMut> = None;
        for _ in 1..COALESCE_MAX {
            match answer.next().now_or_never() {
                Some(Some(ev)) => batch
                    .get_or_insert_with(|| BytesMut::from(&chunk[..]))
                    .extend_from_slice(&sse::encode(&ev)),
                _ => break,
            }
        }
        if let Some(batch) = batch {
            chunk = batch.freeze();
        }
        if tx.send(chunk).await.is_err() {
            return;
        }
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
        if let Some(answer) = self.answer.take() {
            let forwarding = wrap_future(forward(answer, self.tx.clone()));
            ctx.spawn(forwarding.map(|_, _, ctx: &mut Context<Self>| ctx.stop()));
        }
        // The body's receiver is dropped when the client disconnects; noticing that at once
        // (rather than at the next write) is what stops a silent upstream within 100 ms.
        let tx = self.tx.clone();
        let gone = wrap_future(async move { tx.closed().await });
        ctx.spawn(gone.map(|_, _, ctx: &mut Context<Self>| ctx.stop()));
        ctx.run_interval(self.heartbeat, |act, _| {
            // A full buffer means frames are flowing; no ping needed then.
            let _ = act.tx.try_send(Bytes::from_static(sse::PING));
        });
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
