//! One actor per WebSocket connection speaking the plain JSON protocol.
//!
//! The actor owns the socket's read side (added as its stream) and a clone of the write
//! side. Each admitted answer is forwarded by a future spawned in the actor's context:
//! answer events go straight from the answer task to the socket without crossing the
//! actor's mailbox, and cancelling that future (a `cancel` frame, a close, a timeout)
//! drops the answer, which stops the provider and releases the slot.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context,
    SpawnHandle, StreamHandler, WrapFuture,
};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use futures_util::StreamExt;

use super::chat_hub::ChatHub;
use super::messages::{Admit, Connect, Disconnect};
use crate::answer::{validate_question, validate_top_k, AnswerRequest, AnswerStream, Pipeline};
use crate::error::{ApiError, ErrorBody};
use crate::protocol::plain_ws::{self, ClientFrame};
use crate::store::KeyOwner;

/// Largest text frame the protocol accepts; bigger ones get an error frame and the socket
/// stays open (the codec itself allows more so that it can be told apart from garbage).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    pub max_question_chars: usize,
    /// Ping interval; half (or less) of `client_timeout`.
    pub heartbeat: Duration,
    /// Silence (no frame at all, pongs included) after which the socket is closed.
    pub client_timeout: Duration,
}

enum Slot {
    /// Waiting for the hub's admission; a cancel now means the lease is dropped on arrival.
    Admitting,
    Running(SpawnHandle),
}

pub struct WsSession {
    id: u64,
    owner: KeyOwner,
    hub: Addr<ChatHub>,
    pipeline: Pipeline,
    settings: WsSettings,
    ws: actix_ws::Session,
    answers: HashMap<Rc<str>, Slot>,
    last_heard: Instant,
    next_auto_id: u64,
}

impl WsSession {
    pub fn start(
        ws: actix_ws::Session,
        stream: AggregatedMessageStream,
        owner: KeyOwner,
        hub: Addr<ChatHub>,
        pipeline: Pipeline,
        settings: WsSettings,
    ) -> Addr<WsSession> {
        WsSession::create(|ctx| {
            ctx.add_stream(stream);
            WsSession {
                id: super::next_session_id(),
                owner,
                hub,
                pipeline,
                settings,
                ws,
                answers: HashMap::new(),
                last_heard: Instant::now(),
                next_auto_id: 1,
            }
        })
    }

    /// Queues a frame without waiting; the write side is bounded by actix-ws itself.
    fn send(&self, ctx: &mut Context<Self>, text: String) {
        let mut ws = self.ws.clone();
        ctx.spawn(wrap_future(async move {
            let _ = ws.text(text).await;
        }));
    }

    fn send_error(&self, ctx: &mut Context<Self>, id: Option<&str>, code: &str, message: &str) {
        let body = ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        self.send(ctx, plain_ws::encode_error(id, &body));
    }

    fn send_api_error(&self, ctx: &mut Context<Self>, id: Option<&str>, err: &ApiError) {
        self.send(ctx, plain_ws::encode_error(id, &err.body()));
    }

    /// Sends an optional last frame and the close frame, then stops the actor. The writes
    /// run as a task of their own because a stopping actor drops its context's futures.
    fn close(
        &self,
        ctx: &mut Context<Self>,
        last_frame: Option<String>,
        code: CloseCode,
        description: &str,
    ) {
        let ws = self.ws.clone();
        let reason = CloseReason {
            code,
            description: Some(description.to_owned()),
        };
        actix_web::rt::spawn(async move {
            let mut ws = ws;
            if let Some(frame) = last_frame {
                let _ = ws.text(frame).await;
            }
            let _ = ws.close(Some(reason)).await;
        });
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if text.len() > MAX_MESSAGE_BYTES {
            let message = format!(
                "the frame has {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                text.len()
            );
            self.send_error(ctx, None, "message_too_large", &message);
            return;
        }
        match plain_ws::decode(text) {
            Ok(ClientFrame::Ask { id, message, top_k }) => self.ask(id, &message, top_k, ctx),
            Ok(ClientFrame::Cancel { id }) => self.cancel(&id, ctx),
            Ok(ClientFrame::Ping) => self.send(ctx, plain_ws::PONG.to_owned()),
            Err(e) => self.send_error(ctx, e.id.as_deref(), e.code, &e.message),
        }
    }

    fn ask(
        &mut self,
        id: Option<String>,
        message: &str,
        top_k: Option<i64>,
        ctx: &mut Context<Self>,
    ) {
        let id: Rc<str> = match id {
            Some(id) => id.into(),
            None => {
                // Server-made ids cannot collide with each other; a client mixing its own
                // ids with id-less frames gets `duplicate_id` if it picks the same form.
                let id = format!("a{}", self.next_auto_id);
                self.next_auto_id += 1;
                id.into()
            }
        };
        if self.answers.contains_key(&id) {
            let msg = "an answer with this id is still running; use a new id";
            self.send_error(ctx, Some(&id), "duplicate_id", msg);
            return;
        }
        let request = match validate_question(message, self.settings.max_question_chars)
            .and_then(|q| Ok((q, validate_top_k(top_k)?)))
        {
            Ok((question, top_k)) => AnswerRequest {
                tenant_id: self.owner.tenant_id.clone(),
                question,
                top_k,
            },
            Err(e) => {
                self.send_api_error(ctx, Some(&id), &e);
                return;
            }
        };

        self.answers.insert(id.clone(), Slot::Admitting);
        let admit = self.hub.send(Admit {
            user: self.owner.key_id.clone(),
            tenant: self.owner.tenant_id.clone(),
        });
        ctx.spawn(admit.into_actor(self).map(move |reply, act, ctx| {
            if !matches!(act.answers.get(&id), Some(Slot::Admitting)) {
                // Cancelled while waiting: dropping the reply drops the lease.
                return;
            }
            let lease = match reply {
                Ok(Ok(lease)) => lease,
                Ok(Err(refused)) => {
                    act.answers.remove(&id);
                    act.send_api_error(ctx, Some(&id), &ApiError::from(refused));
                    return;
                }
                Err(_) => {
                    act.answers.remove(&id);
                    act.send_api_error(ctx, Some(&id), &ApiError::Unavailable);
                    return;
                }
            };
            let answer = act.pipeline.start(request, lease);
            let forward = forward(answer, id.clone(), act.ws.clone());
            let done_id = id.clone();
            let handle = ctx.spawn(forward.into_actor(act).map(move |socket_closed, act, ctx| {
                act.answers.remove(&done_id);
                if socket_closed {
                    ctx.stop();
                }
            }));
            act.answers.insert(id, Slot::Running(handle));
        }));
    }

    fn cancel(&mut self, id: &str, ctx: &mut Context<Self>) {
        match self.answers.remove(id) {
            Some(slot) => {
                if let Slot::Running(handle) = slot {
                    ctx.cancel_future(handle);
                }
                self.send_error(ctx, Some(id), "cancelled", "the answer was cancelled");
            }
            None => self.send_error(ctx, Some(id), "unknown_id", "no running answer has this id"),
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.settings.client_timeout {
            log::info!("websocket session {} timed out", self.id);
            self.close(ctx, None, CloseCode::Away, "idle timeout");
            return;
        }
        let mut ws = self.ws.clone();
        ctx.spawn(wrap_future(async move {
            let _ = ws.ping(b"").await;
        }));
    }
}

/// Writes one answer's frames in order. Returns true when the socket is gone.
async fn forward(mut answer: AnswerStream, id: Rc<str>, mut ws: actix_ws::Session) -> bool {
    while let Some(ev) = answer.next().await {
        if ws
            .text(plain_ws::encode_event(&id, &ev.event))
            .await
            .is_err()
        {
            return true;
        }
    }
    false
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.hub.do_send(Connect {
            session_id: self.id,
            kind: "ws",
            tenant: self.owner.tenant_id.clone(),
        });
        ctx.run_interval(self.settings.heartbeat, |act, ctx| act.heartbeat(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // The context drops its futures after this, and with them every running answer.
        self.hub.do_send(Disconnect {
            session_id: self.id,
        });
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => self.send_error(
                ctx,
                None,
                "unsupported_frame",
                "binary frames are not supported; send JSON text frames",
            ),
            Ok(AggregatedMessage::Ping(payload)) => {
                let mut ws = self.ws.clone();
                ctx.spawn(wrap_future(async move {
                    let _ = ws.pong(&payload).await;
                }));
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => self.close(ctx, None, CloseCode::Normal, "bye"),
            Err(ProtocolError::Overflow) => {
                let body = ErrorBody {
                    code: "message_too_large".to_owned(),
                    message: "the frame is far over the 64 KiB limit; closing".to_owned(),
                };
                let frame = plain_ws::encode_error(None, &body);
                self.close(ctx, Some(frame), CloseCode::Size, "frame too large");
            }
            Err(e) => {
                log::debug!("websocket session {} protocol error: {e}", self.id);
                self.close(ctx, None, CloseCode::Protocol, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
