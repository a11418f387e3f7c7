//! One actor per WebSocket connection. Its first text frame picks the protocol: a SignalR
//! handshake selects the SignalR JSON hub protocol, anything else the plain JSON protocol.
//!
//! The actor owns the socket's read side (added as its stream) and a clone of the write
//! side. Each admitted answer is forwarded by a future spawned in the actor's context:
//! answer events go straight from the answer task to the socket without crossing the
//! actor's mailbox, and cancelling that future (a cancel, a close, a timeout) drops the
//! answer, which stops the provider and releases the slot.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{
    fut::wrap_future, Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler,
    SpawnHandle, StreamHandler, WrapFuture,
};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use futures_util::StreamExt;
use serde_json::Value;

use super::chat_hub::ChatHub;
use super::connection_slots::ConnectionSlot;
use super::messages::{Admit, Connect, Disconnect, Identify, Terminate};
use crate::answer::{
    conversation_id, validate_choice, validate_question, validate_top_k, AnswerRequest,
    AnswerStream, ConversationRef, Pipeline, StreamEvent,
};
use crate::error::{ApiError, ErrorBody};
use crate::protocol::plain_ws::{self, ClientFrame};
use crate::protocol::signalr::{self, HubMessage, RecordBuffer};
use crate::store::KeyOwner;

/// Largest message either protocol accepts; bigger ones get an error and the socket stays
/// open where the protocol allows (the codec itself allows more so that an oversized
/// frame can be answered instead of torn down).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    pub max_question_chars: usize,
    /// Ping interval; half (or less) of `client_timeout`.
    pub heartbeat: Duration,
    /// Silence (no frame at all, pongs included) after which the socket is closed.
    pub client_timeout: Duration,
}

enum Mode {
    /// No text frame yet.
    Undecided,
    Plain,
    /// SignalR; `handshaken` once the handshake record has been accepted.
    SignalR {
        records: RecordBuffer,
        handshaken: bool,
    },
}

/// How an answer's events become frames.
#[derive(Clone)]
enum Framing {
    /// `{"token":…,"id":…}` frames.
    Plain,
    /// `SendMessage`: `ReceiveToken`/`StreamComplete`/`Error` calls, then a Completion when
    /// the caller gave an invocation id.
    SignalRInvoke { completes: bool },
    /// `AskStream`: StreamItems, then a Completion.
    SignalRStream,
}

/// A question as either protocol received it, before any check.
struct Question<'a> {
    message: &'a str,
    top_k: Option<i64>,
    /// The request's optional (provider, model).
    choice: (Option<&'a str>, Option<&'a str>),
    conversation: Option<ConversationRef>,
}

enum Slot {
    /// Waiting for the conversation check and the hub's admission; a cancel now means the
    /// lease is dropped on arrival. The number tells this request from a later one that
    /// reuses its id after a cancel.
    Admitting(u64),
    Running(SpawnHandle),
}

pub struct WsSession {
    id: u64,
    owner: KeyOwner,
    hub: Addr<ChatHub>,
    pipeline: Pipeline,
    settings: WsSettings,
    ws: actix_ws::Session,
    mode: Mode,
    answers: HashMap<Rc<str>, Slot>,
    last_heard: Instant,
    next_auto_id: u64,
    next_request: u64,
    /// This connection's place under the per-key cap, given back when the session ends.
    _slot: ConnectionSlot,
}

impl WsSession {
    pub fn start(
        ws: actix_ws::Session,
        stream: AggregatedMessageStream,
        owner: KeyOwner,
        hub: Addr<ChatHub>,
        pipeline: Pipeline,
        settings: WsSettings,
        slot: ConnectionSlot,
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
                mode: Mode::Undecided,
                answers: HashMap::new(),
                last_heard: Instant::now(),
                next_auto_id: 1,
                next_request: 1,
                _slot: slot,
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

    fn auto_id(&mut self) -> Rc<str> {
        let id = format!("a{}", self.next_auto_id);
        self.next_auto_id += 1;
        id.into()
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if matches!(self.mode, Mode::Undecided) {
            let signalr = signalr::looks_like_handshake(text);
            self.mode = if signalr {
                Mode::SignalR {
                    records: RecordBuffer::default(),
                    handshaken: false,
                }
            } else {
                Mode::Plain
            };
            self.hub.do_send(Identify {
                session_id: self.id,
                protocol: if signalr { "signalr" } else { "plain" },
            });
        }
        match self.mode {
            Mode::SignalR { .. } => self.on_signalr_text(text, ctx),
            _ => self.on_plain_text(text, ctx),
        }
    }

    // ---- plain protocol ----

    fn on_plain_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if text.len() > MAX_MESSAGE_BYTES {
            let message = format!(
                "the frame has {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                text.len()
            );
            self.reject(ctx, None, &Framing::Plain, "message_too_large", &message);
            return;
        }
        match plain_ws::decode(text) {
            Ok(ClientFrame::Ask {
                id,
                message,
                top_k,
                provider,
                model,
                conversation_id: conversation,
            }) => {
                let id = match id {
                    Some(id) => id.into(),
                    None => self.auto_id(),
                };
                let question = Question {
                    message: &message,
                    top_k,
                    choice: (provider.as_deref(), model.as_deref()),
                    // Every question on this protocol is a conversation turn.
                    conversation: Some(self.conversation(conversation.as_deref())),
                };
                self.ask(id, Framing::Plain, question, ctx);
            }
            Ok(ClientFrame::Cancel { id }) => {
                if self.cancel(&id, ctx) {
                    self.reject(
                        ctx,
                        Some(&id),
                        &Framing::Plain,
                        "cancelled",
                        "the answer was cancelled",
                    );
                } else {
                    let msg = "no running answer has this id";
                    self.reject(ctx, Some(&id), &Framing::Plain, "unknown_id", msg);
                }
            }
            Ok(ClientFrame::Ping) => self.send(ctx, plain_ws::PONG.to_owned()),
            Err(e) => self.reject(ctx, e.id.as_deref(), &Framing::Plain, e.code, &e.message),
        }
    }

    // ---- SignalR ----

    fn on_signalr_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let Mode::SignalR { records, .. } = &mut self.mode else {
            return;
        };
        let records = match records.push(text, MAX_MESSAGE_BYTES) {
            Ok(records) => records,
            Err(e) => {
                let frame = signalr::close(
                    Some(&format!("Connection closed with an error. {e}")),
                    false,
                );
                self.close(ctx, Some(frame), CloseCode::Size, "message too large");
                return;
            }
        };
        for record in records {
            if !self.on_signalr_record(&record, ctx) {
                return;
            }
        }
    }

    /// Handles one record; false once the connection is being closed.
    fn on_signalr_record(&mut self, record: &str, ctx: &mut Context<Self>) -> bool {
        let Mode::SignalR { handshaken, .. } = &mut self.mode else {
            return false;
        };
        if !*handshaken {
            return match signalr::parse_handshake(record) {
                Ok(()) => {
                    *handshaken = true;
                    self.send(ctx, signalr::HANDSHAKE_OK.to_owned());
                    true
                }
                Err(e) => {
                    let reply = signalr::handshake_error(&e);
                    self.close(ctx, Some(reply), CloseCode::Policy, "handshake failed");
                    false
                }
            };
        }
        let message = match signalr::parse_message(record) {
            Ok(message) => message,
            Err(e) => {
                let error = format!("Connection closed with an error. {e}");
                let frame = signalr::close(Some(&error), false);
                self.close(ctx, Some(frame), CloseCode::Protocol, "invalid message");
                return false;
            }
        };
        match message {
            HubMessage::Invocation {
                invocation_id,
                target,
                arguments,
            } => {
                let completes = invocation_id.is_some();
                let id: Rc<str> = match invocation_id {
                    Some(id) => id.into(),
                    None => self.auto_id(),
                };
                let framing = Framing::SignalRInvoke { completes };
                self.signalr_call(id, framing, &target, "SendMessage", &arguments, ctx);
            }
            HubMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
            } => {
                let id: Rc<str> = invocation_id.into();
                self.signalr_call(
                    id,
                    Framing::SignalRStream,
                    &target,
                    "AskStream",
                    &arguments,
                    ctx,
                );
            }
            HubMessage::CancelInvocation { invocation_id } => {
                // The caller already stopped listening; the Completion is sent all the
                // same, as the protocol asks.
                if self.cancel(&invocation_id, ctx) {
                    self.send(ctx, signalr::completion(&invocation_id, None, None));
                }
            }
            HubMessage::Ping | HubMessage::Other(_) => {}
            HubMessage::Close => {
                self.close(ctx, None, CloseCode::Normal, "closed by the client");
                return false;
            }
        }
        true
    }

    /// Dispatches an invocation of `SendMessage` (type 1) or `AskStream` (type 4):
    /// arguments are (question, topK?, conversationId?). `SendMessage` is a conversation
    /// turn (a new conversation when the id is missing or null; the id comes back in
    /// `StreamComplete`'s metadata); `AskStream` stays a one-off question and ignores it.
    fn signalr_call(
        &mut self,
        id: Rc<str>,
        framing: Framing,
        target: &str,
        expected: &str,
        arguments: &[Value],
        ctx: &mut Context<Self>,
    ) {
        if !target.eq_ignore_ascii_case(expected) {
            let known = if expected == "SendMessage" {
                "SendMessage (invoke/send) or AskStream (stream)"
            } else {
                "AskStream (stream) or SendMessage (invoke/send)"
            };
            let message = format!("Unknown hub method '{target}'; this hub has {known}.");
            self.reject(ctx, Some(&id), &framing, "unknown_method", &message);
            return;
        }
        let question = match arguments.first() {
            Some(Value::String(q)) => q.as_str(),
            _ => {
                let message = format!(
                    "Failed to invoke '{expected}': the first argument must be the question (a string)."
                );
                self.reject(ctx, Some(&id), &framing, "invalid_arguments", &message);
                return;
            }
        };
        let top_k = match arguments.get(1) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(k) => Some(k),
                None => {
                    let message =
                        format!("Failed to invoke '{expected}': topK must be a whole number.");
                    self.reject(ctx, Some(&id), &framing, "invalid_top_k", &message);
                    return;
                }
            },
        };
        if arguments.len() > 3 {
            let message = format!(
                "Failed to invoke '{expected}': it takes (question, topK, conversationId?), got {} arguments.",
                arguments.len()
            );
            self.reject(ctx, Some(&id), &framing, "invalid_arguments", &message);
            return;
        }
        let conversation = if expected == "SendMessage" {
            match arguments.get(2) {
                None | Some(Value::Null) => Some(self.conversation(None)),
                Some(Value::String(c)) => Some(self.conversation(Some(c))),
                Some(_) => {
                    let message =
                        format!("Failed to invoke '{expected}': conversationId must be a string.");
                    self.reject(ctx, Some(&id), &framing, "invalid_arguments", &message);
                    return;
                }
            }
        } else {
            None
        };
        let question = question.to_owned();
        let question = Question {
            message: &question,
            top_k,
            choice: (None, None),
            conversation,
        };
        self.ask(id, framing, question, ctx);
    }

    /// A turn of this key's conversation `id`, or of a new one.
    fn conversation(&self, id: Option<&str>) -> ConversationRef {
        ConversationRef {
            user_id: self.owner.key_id.clone(),
            id: conversation_id(id),
        }
    }

    // ---- shared by both protocols ----

    /// Tells the client a request failed before its answer started.
    fn reject(
        &self,
        ctx: &mut Context<Self>,
        id: Option<&str>,
        framing: &Framing,
        code: &str,
        message: &str,
    ) {
        let body = ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        match framing {
            Framing::Plain => self.send(ctx, plain_ws::encode_error(id, &body)),
            Framing::SignalRInvoke { completes } => {
                let mut frames = signalr::error(message);
                if let (true, Some(id)) = (completes, id) {
                    frames.push_str(&signalr::completion(id, None, Some(message)));
                }
                self.send(ctx, frames);
            }
            Framing::SignalRStream => {
                if let Some(id) = id {
                    self.send(ctx, signalr::completion(id, None, Some(message)));
                }
            }
        }
    }

    fn reject_api(&self, ctx: &mut Context<Self>, id: &str, framing: &Framing, err: &ApiError) {
        let body = err.body();
        self.reject(ctx, Some(id), framing, &body.code, &body.message);
    }

    /// Validates, checks the conversation (when continuing one), asks the hub for a slot,
    /// then starts the answer.
    fn ask(&mut self, id: Rc<str>, framing: Framing, q: Question<'_>, ctx: &mut Context<Self>) {
        let Question {
            message,
            top_k,
            choice,
            conversation,
        } = q;
        if self.answers.contains_key(&id) {
            let msg = "an answer with this id is still running; use a new id";
            self.reject(ctx, Some(&id), &framing, "duplicate_id", msg);
            return;
        }
        let request = match validate_question(message, self.settings.max_question_chars)
            .and_then(|q| Ok((q, validate_top_k(top_k)?)))
        {
            Ok((question, top_k)) => AnswerRequest {
                tenant_id: self.owner.tenant_id.clone(),
                question,
                top_k,
                conversation,
            },
            Err(e) => {
                self.reject_api(ctx, &id, &framing, &e);
                return;
            }
        };
        let choice = match validate_choice(choice.0, choice.1, self.pipeline.providers()) {
            Ok(choice) => choice,
            Err(e) => {
                self.reject_api(ctx, &id, &framing, &e);
                return;
            }
        };

        let request_no = self.next_request;
        self.next_request += 1;
        self.answers.insert(id.clone(), Slot::Admitting(request_no));
        // A conversation to continue must be this key's: checked here, on this worker
        // thread, before a slot is taken, so an unknown id is an error frame and not an
        // answer that fails.
        let check = request
            .conversation
            .as_ref()
            .and_then(|c| c.id.clone())
            .map(|conversation| (self.pipeline.store().clone(), conversation));
        let owner = self.owner.clone();
        let hub = self.hub.clone();
        let admit = Admit {
            user: self.owner.key_id.clone(),
            tenant: self.owner.tenant_id.clone(),
            session_id: Some(self.id),
            transport: match self.mode {
                Mode::SignalR { .. } => "signalr",
                _ => "ws",
            },
        };
        let admission = async move {
            if let Some((store, conversation)) = check {
                match store
                    .conversation_exists(&owner.tenant_id, &owner.key_id, &conversation)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Err(ApiError::ConversationNotFound),
                    Err(e) => {
                        log::error!("a conversation could not be looked up: {e}");
                        return Err(ApiError::Database(e));
                    }
                }
            }
            match hub.send(admit).await {
                Ok(Ok(lease)) => Ok(lease),
                Ok(Err(refused)) => Err(ApiError::from(refused)),
                Err(_) => Err(ApiError::Unavailable),
            }
        };
        ctx.spawn(admission.into_actor(self).map(move |reply, act, ctx| {
            if !matches!(act.answers.get(&id), Some(Slot::Admitting(n)) if *n == request_no) {
                // Cancelled while waiting: dropping the reply drops the lease.
                return;
            }
            let lease = match reply {
                Ok(lease) => lease,
                Err(e) => {
                    act.answers.remove(&id);
                    act.reject_api(ctx, &id, &framing, &e);
                    return;
                }
            };
            let answer = act.pipeline.start_with(request, choice, lease);
            let forward = forward(answer, id.clone(), framing, act.ws.clone());
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

    /// Stops an answer; false when no answer has that id.
    fn cancel(&mut self, id: &str, ctx: &mut Context<Self>) -> bool {
        match self.answers.remove(id) {
            Some(slot) => {
                if let Slot::Running(handle) = slot {
                    ctx.cancel_future(handle);
                }
                true
            }
            None => false,
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let signalr = matches!(
            self.mode,
            Mode::SignalR {
                handshaken: true,
                ..
            }
        );
        if self.last_heard.elapsed() > self.settings.client_timeout {
            log::info!("websocket session {} timed out", self.id);
            let last = signalr.then(|| {
                signalr::close(
                    Some("Server timeout elapsed without receiving a message from the client."),
                    true,
                )
            });
            self.close(ctx, last, CloseCode::Away, "idle timeout");
            return;
        }
        // SignalR clients only count messages (a WebSocket ping is invisible to them).
        let mut ws = self.ws.clone();
        ctx.spawn(wrap_future(async move {
            let _ = if signalr {
                ws.text(signalr::PING).await
            } else {
                ws.ping(b"").await
            };
        }));
    }
}

/// Encodes one event for its framing; `None` when the framing has no use for it.
fn encode(id: &str, framing: &Framing, event: &StreamEvent) -> Option<String> {
    match framing {
        Framing::Plain => Some(plain_ws::encode_event(id, event)),
        Framing::SignalRInvoke { completes } => match event {
            // No client method exists for them; the conversation id is also in
            // `StreamComplete`'s metadata.
            StreamEvent::Conversation(_) | StreamEvent::Sources(_) => None,
            StreamEvent::Token(t) => Some(signalr::receive_token(t)),
            StreamEvent::Done(meta) => {
                let mut frames = signalr::stream_complete(meta);
                if *completes {
                    frames.push_str(&signalr::completion(id, Some(&Value::Null), None));
                }
                Some(frames)
            }
            // As the seed's hub does: the failure goes to `Error`, the method returns.
            StreamEvent::Error(e) => {
                let mut frames = signalr::error(&e.message);
                if *completes {
                    frames.push_str(&signalr::completion(id, Some(&Value::Null), None));
                }
                Some(frames)
            }
        },
        Framing::SignalRStream => match event {
            StreamEvent::Conversation(_) | StreamEvent::Sources(_) => None,
            StreamEvent::Token(t) => Some(signalr::stream_item(id, t)),
            StreamEvent::Done(_) => Some(signalr::completion(id, None, None)),
            StreamEvent::Error(e) => Some(signalr::completion(id, None, Some(&e.message))),
        },
    }
}

/// Writes one answer's frames in order. Returns true when the socket is gone.
async fn forward(
    mut answer: AnswerStream,
    id: Rc<str>,
    framing: Framing,
    mut ws: actix_ws::Session,
) -> bool {
    while let Some(ev) = answer.next().await {
        if let Some(frame) = encode(&id, &framing, &ev.event) {
            if ws.text(frame).await.is_err() {
                return true;
            }
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
            user: self.owner.key_id.clone(),
            tenant: self.owner.tenant_id.clone(),
            terminate: ctx.address().recipient(),
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

impl Handler<Terminate> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        log::info!("websocket session {} ended: {}", self.id, msg.reason);
        // SignalR clients reconnect on a Close that allows it; plain clients see the code.
        let last = matches!(
            self.mode,
            Mode::SignalR {
                handshaken: true,
                ..
            }
        )
        .then(|| signalr::close(Some(msg.reason), msg.allow_reconnect));
        self.close(ctx, last, msg.code, msg.reason);
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => self.reject(
                ctx,
                None,
                &Framing::Plain,
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
                let frame = match self.mode {
                    Mode::SignalR { .. } => signalr::close(Some(&body.message), false),
                    _ => plain_ws::encode_error(None, &body),
                };
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
