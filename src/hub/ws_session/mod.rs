//! One actor per WebSocket connection. Its first text frame picks the protocol: a SignalR
//! handshake selects the SignalR JSON hub protocol, anything else the plain JSON protocol.
//!
//! The actor owns the socket's read side (added as its stream). It never writes: replies
//! and the answers it starts go to the connection's [`Outbox`], whose one writer task
//! ([`run_writer`]) owns the write side, so answer events go from the answer's log to the
//! socket without crossing the actor's mailbox.
//!
//! Each inbound frame costs constant work: replies are queued (bounded), never spawned as
//! futures; frames are rate-limited; a client that keeps sending what is refused is closed.
//!
//! An explicit stop (a cancel frame, a close frame, SignalR's CancelInvocation or Close)
//! stops the answers. A connection that is lost (reset, timeout, stalled writes) only
//! detaches them: they keep generating for the grace window, and a `resume` frame on a new
//! socket continues them. A SignalR connection with stateful reconnect goes further: the
//! session itself outlives a lost socket for the grace window, and the client's reconnect
//! continues every answer of it ([`stateful`]).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    SpawnHandle, StreamHandler, WrapFuture,
};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};

mod framing;
mod outbox;
mod plain;
mod resend;
mod signalr_calls;
mod stateful;

pub use stateful::{pump, LogicalConnections, Reattach, ReconnectGrant};

use super::chat_hub::ChatHub;
use super::connection_slots::ConnectionSlot;
use super::messages::{Admit, Connect, Disconnect, Identify, Terminate};
use crate::answer::{
    conversation_id, validate_choice, validate_question, validate_top_k, AnswerOwner,
    AnswerRequest, ConversationRef, Pipeline, Start,
};
use crate::error::{ApiError, ErrorBody};
use crate::protocol::plain_ws;
use crate::protocol::signalr::{self, RecordBuffer};
use crate::store::KeyOwner;
use framing::Framing;
use outbox::{run_writer, Feed, Outbox, Overflow, WriterEnd};
use stateful::Stateful;

/// Largest message either protocol accepts; bigger ones get an error and the socket stays
/// open where the protocol allows (the codec itself allows more so that an oversized
/// frame can be answered instead of torn down).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Inbound frames a connection may send in a burst, and per second after it. Far above
/// what a chat client sends (a question, a cancel, a ping every 15 s).
const FRAME_BURST: f64 = 200.0;
const FRAMES_PER_SECOND: f64 = 50.0;

/// Malformed frames and refused requests a connection may send before it is closed.
const MAX_STRIKES: u32 = 32;

#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    pub max_question_chars: usize,
    /// Ping interval; half (or less) of `client_timeout`.
    pub heartbeat: Duration,
    /// Silence (no frame at all, pongs included) after which the socket is closed.
    pub client_timeout: Duration,
    /// A write that makes no progress for this long closes the socket.
    pub write_timeout: Duration,
    /// SignalR stateful reconnect: bytes of sent hub messages kept until the client
    /// acknowledges them; a client that lets more pile up loses its connection.
    pub resend_max_bytes: usize,
}

enum Mode {
    /// No text frame yet.
    Undecided,
    Plain,
    /// SignalR; `handshaken` once the handshake record has been accepted; `announce` once
    /// the client asked for `AnswerStarted` calls.
    SignalR {
        records: RecordBuffer,
        handshaken: bool,
        announce: bool,
    },
}

/// A question as either protocol received it, before any check.
struct Question<'a> {
    message: &'a str,
    top_k: Option<i64>,
    /// The request's optional (provider, model).
    choice: (Option<&'a str>, Option<&'a str>),
    conversation: Option<ConversationRef>,
}

/// A token bucket over inbound frames.
struct FrameBudget {
    tokens: f64,
    at: Instant,
}

impl FrameBudget {
    fn new() -> Self {
        FrameBudget {
            tokens: FRAME_BURST,
            at: Instant::now(),
        }
    }

    /// Takes one frame's token; false when the client sends faster than allowed.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * FRAMES_PER_SECOND;
        self.tokens = (self.tokens + refill).min(FRAME_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Sent by a socket's writer task when it ends.
#[derive(Message)]
#[rtype(result = "()")]
struct WriterEnded {
    socket: u64,
    end: WriterEnd,
}

pub struct WsSession {
    id: u64,
    /// The upgrade request's id, for the log lines of the answers asked here.
    request_id: Option<Arc<str>>,
    owner: KeyOwner,
    hub: Addr<ChatHub>,
    pipeline: Pipeline,
    settings: WsSettings,
    outbox: Outbox,
    /// The write half, until the writer task takes it when the actor starts.
    session: Option<actix_ws::Session>,
    /// The first socket's read side; later sockets (stateful reconnect) are pumped in.
    first_stream: Option<SpawnHandle>,
    mode: Mode,
    /// Negotiate granted stateful reconnect; taken by a version 2 handshake.
    reconnect: Option<ReconnectGrant>,
    /// Stateful reconnect, in force.
    stateful: Option<Stateful>,
    /// Requests waiting for the conversation check and the hub's admission; a cancel now
    /// means the lease is dropped on arrival. The number tells a request from a later one
    /// that reuses its id after a cancel. Running answers are the outbox's.
    admitting: HashMap<Rc<str>, u64>,
    last_heard: Instant,
    budget: FrameBudget,
    strikes: u32,
    next_auto_id: u64,
    next_request: u64,
    /// This connection's place under the per-key cap, given back when the session ends.
    _slot: ConnectionSlot,
}

/// The two halves of an upgraded WebSocket.
pub struct Socket {
    pub session: actix_ws::Session,
    pub stream: AggregatedMessageStream,
}

impl WsSession {
    pub fn start(
        Socket {
            session: ws,
            stream,
        }: Socket,
        owner: KeyOwner,
        hub: Addr<ChatHub>,
        pipeline: Pipeline,
        settings: WsSettings,
        slot: ConnectionSlot,
        reconnect: Option<ReconnectGrant>,
    ) -> Addr<WsSession> {
        WsSession::create(|ctx| {
            let first_stream = ctx.add_stream(stream);
            let id = super::next_session_id();
            // Called by the upgrade's handler: this is the upgrade request's id, which the
            // answers of this connection carry in their log lines.
            let request_id = crate::logging::current().request_id;
            log::info!("websocket session {id} opened");
            WsSession {
                request_id,
                id,
                owner,
                hub,
                pipeline,
                settings,
                outbox: Outbox::default(),
                session: Some(ws),
                first_stream: Some(first_stream),
                mode: Mode::Undecided,
                reconnect,
                stateful: None,
                admitting: HashMap::new(),
                last_heard: Instant::now(),
                budget: FrameBudget::new(),
                strikes: 0,
                next_auto_id: 1,
                next_request: 1,
                _slot: slot,
            }
        })
    }

    /// Queues a reply. A client that lets replies pile up is not reading: it is closed.
    fn send(&mut self, ctx: &mut Context<Self>, text: String) {
        if self.outbox.text(text) == Err(Overflow) {
            self.not_reading(ctx);
        }
    }

    /// Queues SignalR hub messages (stateful reconnect numbers and keeps them).
    fn send_records(&mut self, ctx: &mut Context<Self>, text: String) {
        if self.outbox.records(text) == Err(Overflow) {
            self.not_reading(ctx);
        }
    }

    fn not_reading(&mut self, ctx: &mut Context<Self>) {
        log::info!("websocket session {} does not read its replies", self.id);
        self.close(ctx, None, CloseCode::Policy, "not reading replies");
    }

    /// Sends an optional last frame and the close frame (through the writer, which outlives
    /// the actor for that), then stops the actor. Answers still running are detached. A
    /// SignalR connection closed this way cannot be reconnected to.
    fn close(
        &mut self,
        ctx: &mut Context<Self>,
        last_frame: Option<String>,
        code: CloseCode,
        description: &str,
    ) {
        let reason = CloseReason {
            code,
            description: Some(description.to_owned()),
        };
        self.outbox.close(last_frame, Some(reason));
        self.end_stateful(ctx);
        ctx.stop();
    }

    /// Counts a malformed frame or refused request; false once the connection has had too
    /// many and is being closed.
    fn strike(&mut self, ctx: &mut Context<Self>) -> bool {
        self.strikes += 1;
        if self.strikes <= MAX_STRIKES {
            return true;
        }
        log::info!("websocket session {}: too many refused frames", self.id);
        let last = matches!(self.mode, Mode::SignalR { .. })
            .then(|| signalr::close(Some("Too many invalid or refused messages."), false));
        self.close(ctx, last, CloseCode::Policy, "too many refused messages");
        false
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
                    announce: false,
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

    /// A turn of this key's conversation `id`, or of a new one.
    fn conversation(&self, id: Option<&str>) -> ConversationRef {
        ConversationRef {
            user_id: self.owner.key_id.clone(),
            id: conversation_id(id),
        }
    }

    // ---- shared by both protocols ----

    /// Tags what a handler logs with the upgrade request's id.
    fn log_scope(&self) -> crate::logging::Entered {
        crate::logging::enter(crate::logging::LogContext {
            request_id: self.request_id.clone(),
            answer_id: None,
        })
    }

    /// Tells the client a request failed before its answer started.
    fn reject(
        &mut self,
        ctx: &mut Context<Self>,
        id: Option<&str>,
        framing: &Framing,
        code: &str,
        message: &str,
    ) {
        if !self.strike(ctx) {
            return;
        }
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
                self.send_records(ctx, frames);
            }
            Framing::SignalRStream => {
                if let Some(id) = id {
                    self.send_records(ctx, signalr::completion(id, None, Some(message)));
                }
            }
        }
    }

    fn reject_api(&mut self, ctx: &mut Context<Self>, id: &str, framing: &Framing, err: &ApiError) {
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
        if self.admitting.contains_key(&id) || self.outbox.follows(&id) {
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
                chat: None,
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
        self.admitting.insert(id.clone(), request_no);
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
        let store = self.pipeline.store().clone();
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
                        return Err(ApiError::from(e));
                    }
                }
            }
            // New answers wait for an unreachable database to come back (503 as an error
            // frame); answers already running go on.
            store.check_available()?;
            match hub.send(admit).await {
                Ok(Ok(lease)) => Ok(lease),
                Ok(Err(refused)) => Err(ApiError::from(refused)),
                Err(_) => Err(ApiError::Unavailable),
            }
        };
        ctx.spawn(admission.into_actor(self).map(move |reply, act, ctx| {
            if act.admitting.get(&id) != Some(&request_no) {
                // Cancelled while waiting: dropping the reply drops the lease.
                return;
            }
            act.admitting.remove(&id);
            let lease = match reply {
                Ok(lease) => lease,
                Err(e) => {
                    act.reject_api(ctx, &id, &framing, &e);
                    return;
                }
            };
            let context = crate::logging::LogContext {
                request_id: act.request_id.clone(),
                answer_id: None,
            };
            let pipeline = act.pipeline.clone();
            let answer = crate::logging::sync_scope(context, || {
                pipeline.start(Start {
                    request,
                    choice,
                    lease,
                    owner: AnswerOwner {
                        key_id: act.owner.key_id.clone(),
                        tenant_id: act.owner.tenant_id.clone(),
                    },
                    ticket: None,
                    label: Some(Arc::from(&*id)),
                    cancel_on_drop: false,
                })
            });
            act.announce(ctx, &id, framing, answer.answer_id());
            act.outbox.follow(Feed::new(id, framing, answer));
        }));
    }

    /// Stops an answer; false when no answer has that id.
    fn cancel(&mut self, id: &str) -> bool {
        self.admitting.remove(id).is_some() || self.outbox.cancel(id)
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.outbox.is_detached() {
            // No socket to ping or to time out; the grace window runs instead.
            return;
        }
        let signalr = matches!(
            self.mode,
            Mode::SignalR {
                handshaken: true,
                ..
            }
        );
        if self.last_heard.elapsed() > self.settings.client_timeout {
            let _scope = self.log_scope();
            log::info!("websocket session {} timed out", self.id);
            if self.stateful.is_some() && self.outbox.is_resumable() {
                // A silent client has lost its network more often than it has left: its
                // connection waits for a reconnect, without a Close that would end it.
                let reason = CloseReason {
                    code: CloseCode::Away,
                    description: Some("idle timeout".to_owned()),
                };
                self.detach(Some(reason), ctx);
                return;
            }
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
        let queued = if signalr {
            self.outbox.text(signalr::PING.to_owned())
        } else {
            self.outbox.ping()
        };
        if queued == Err(Overflow) {
            self.not_reading(ctx);
        }
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.hub.do_send(Connect {
            session_id: self.id,
            kind: "ws",
            user: self.owner.key_id.clone(),
            tenant: self.owner.tenant_id.clone(),
            browser_session: self.owner.session.clone(),
            terminate: ctx.address().recipient(),
        });
        ctx.run_interval(self.settings.heartbeat, |act, ctx| act.heartbeat(ctx));
        if let Some(session) = self.session.take() {
            self.spawn_writer(session, self.outbox.socket(), ctx);
        }
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        // Ends the writer if nothing else did (the client vanished): the answers it still
        // follows are detached with it.
        self.outbox.close(None, None);
        self.end_stateful(ctx);
        self.hub.do_send(Disconnect {
            session_id: self.id,
        });
    }
}

impl WsSession {
    /// Starts the writer of socket `socket`. It is a task of its own, not a future of this
    /// context: it must outlive the actor long enough to send the close frame.
    fn spawn_writer(&self, session: actix_ws::Session, socket: u64, ctx: &mut Context<Self>) {
        let outbox = self.outbox.clone();
        let addr = ctx.address();
        let timeout = self.settings.write_timeout;
        actix_web::rt::spawn(async move {
            let end = run_writer(outbox, session, socket, timeout).await;
            addr.do_send(WriterEnded { socket, end });
        });
    }
}

impl Handler<WriterEnded> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: WriterEnded, ctx: &mut Context<Self>) {
        let _scope = self.log_scope();
        match msg.end {
            WriterEnd::Closed => ctx.stop(),
            WriterEnd::Left => {}
            WriterEnd::Gone | WriterEnd::Stalled => {
                if msg.end == WriterEnd::Stalled && msg.socket == self.outbox.socket() {
                    log::info!(
                        "websocket session {}: a write made no progress for {:?}; closing",
                        self.id,
                        self.settings.write_timeout
                    );
                }
                self.socket_lost(msg.socket, ctx);
            }
        }
    }
}

impl Handler<Terminate> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        let _scope = self.log_scope();
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
        if msg.finish_answers && !self.outbox.is_detached() {
            // A drain: the answers end on their own (or are being ended); their last
            // frames go out before the close frame, and the actor stops when the writer
            // has sent it.
            let reason = CloseReason {
                code: msg.code,
                description: Some(msg.reason.to_owned()),
            };
            self.outbox.close_when_done(last, Some(reason));
            self.end_stateful(ctx);
            return;
        }
        // Ended from outside (an administrator, a revoked key): its answers end too.
        self.outbox.cancel_all();
        self.close(ctx, last, msg.code, msg.reason);
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        let _scope = self.log_scope();
        // The first socket is number 0; frames still in flight after it was let go are not
        // the session's any more.
        if self.is_current(0) {
            self.on_frame(item, ctx);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.socket_lost(0, ctx);
    }
}

impl WsSession {
    /// A frame of the session's current socket.
    fn on_frame(
        &mut self,
        item: Result<AggregatedMessage, ProtocolError>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        self.last_heard = now;
        if !self.budget.take(now) {
            log::info!("websocket session {} sends frames too fast", self.id);
            let last = matches!(self.mode, Mode::SignalR { .. })
                .then(|| signalr::close(Some("Too many messages."), false));
            self.close(ctx, last, CloseCode::Policy, "too many messages");
            return;
        }
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
                if self.outbox.pong(payload) == Err(Overflow) {
                    self.not_reading(ctx);
                }
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_))
                if self.stateful.is_some() && self.outbox.is_resumable() =>
            {
                // A SignalR client says goodbye with a Close message; a WebSocket closed
                // without one (a proxy restarting, say) is a lost socket, and the client's
                // stateful reconnect comes back.
                let reason = CloseReason {
                    code: CloseCode::Normal,
                    description: None,
                };
                self.detach(Some(reason), ctx);
            }
            Ok(AggregatedMessage::Close(_)) => {
                // Saying goodbye is an explicit stop: nobody will resume these answers.
                self.outbox.cancel_all();
                self.close(ctx, None, CloseCode::Normal, "bye");
            }
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
            Err(ProtocolError::Io(e)) if self.stateful.is_some() && self.outbox.is_resumable() => {
                // The connection broke under the frame (a reset, an unfinished frame): a lost
                // socket, which the client's stateful reconnect comes back from.
                log::debug!("websocket session {} lost its socket: {e}", self.id);
                self.detach(None, ctx);
            }
            Err(e) => {
                log::debug!("websocket session {} protocol error: {e}", self.id);
                self.close(ctx, None, CloseCode::Protocol, "protocol error");
            }
        }
    }
}
