//! SignalR stateful reconnect (ASP.NET Core 8): a connection that outlives its sockets.
//!
//! Negotiate grants it (`useStatefulReconnect`), a version 2 handshake turns it on. From then
//! on both sides number their hub messages: the outbox keeps ours until the client acks
//! them ([`super::resend`]), and [`InboundSequence`] numbers the client's, acks them and
//! drops the duplicates a reconnect replays.
//!
//! When the socket is lost without a SignalR `Close`, the session actor stays, detached:
//! its answers keep running (they were never tied to the socket) and the connection token
//! stays valid, for this connection only, for the resume grace window. A WebSocket that
//! comes back with `?id=<token>` in that window is handed to the actor ([`Reattach`]): it
//! gets `Sequence` and the unacknowledged messages, then the answers where they were. The
//! actor may live on another worker thread than the new socket, so the new socket's frames
//! are pumped to it as messages ([`pump`]) and its writer writes through the socket's
//! (thread-safe) session handle. Nobody back in time: the answers are stopped and the token
//! dies with the actor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{ActorContext, Addr, AsyncContext, Context, Handler, Message};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use futures_util::StreamExt;

use super::WsSession;
use crate::answer::StopReason;
use crate::protocol::signalr::{self, HubMessage};

/// The client acks our messages this long after it receives them; we do the same, so a
/// burst of messages costs one ack.
const ACK_DELAY: Duration = Duration::from_secs(1);

/// Connections with stateful reconnect, by connection token: the ones a `?id=` may come
/// back to.
#[derive(Default)]
pub struct LogicalConnections {
    map: Mutex<HashMap<String, Addr<WsSession>>>,
}

impl LogicalConnections {
    pub fn new() -> Arc<LogicalConnections> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Addr<WsSession>>> {
        // Every mutation is one insert or remove: a poisoned map is still a valid map.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, token: &str, session: Addr<WsSession>) {
        self.lock().insert(token.to_owned(), session);
    }

    /// Forgets `token` if it still names `session`.
    fn remove(&self, token: &str, session: &Addr<WsSession>) {
        let mut map = self.lock();
        if map.get(token) == Some(session) {
            map.remove(token);
        }
    }

    /// The connection waiting for (or still holding) this token's socket.
    pub fn get(&self, token: &str) -> Option<Addr<WsSession>> {
        self.lock().get(token).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Negotiate agreed to stateful reconnect for this connection token.
pub struct ReconnectGrant {
    pub token: String,
    pub connections: Arc<LogicalConnections>,
}

/// The client broke the sequence rules: it cannot be followed any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Sequence ID {got} is greater than the next one expected ({expected}).")]
pub struct SequenceError {
    got: u64,
    expected: u64,
}

/// The client's hub messages as stateful reconnect numbers them (from 1, across sockets).
#[derive(Debug)]
pub struct InboundSequence {
    /// The id the client's next hub message has.
    next: u64,
    /// The highest id processed; anything at or below it is a replayed duplicate.
    latest: u64,
    /// The highest id we have acked.
    acked: u64,
    /// After a reconnect the client's first message is `Sequence`; until it comes nothing
    /// is processed (as ASP.NET Core does).
    awaiting_sequence: bool,
}

impl Default for InboundSequence {
    fn default() -> Self {
        InboundSequence::new()
    }
}

impl InboundSequence {
    pub fn new() -> InboundSequence {
        InboundSequence {
            next: 1,
            latest: 0,
            acked: 0,
            awaiting_sequence: false,
        }
    }

    /// Whether `message` is to be processed: not a duplicate, not a message before the
    /// client's `Sequence` after a reconnect.
    pub fn admit(&mut self, message: &HubMessage) -> Result<bool, SequenceError> {
        if let HubMessage::Sequence { sequence_id } = *message {
            if sequence_id > self.next {
                return Err(SequenceError {
                    got: sequence_id,
                    expected: self.next,
                });
            }
            self.next = sequence_id;
            self.awaiting_sequence = false;
            return Ok(false);
        }
        if self.awaiting_sequence {
            return Ok(false);
        }
        if !message.is_trackable() {
            return Ok(true);
        }
        let id = self.next;
        self.next += 1;
        if id <= self.latest {
            return Ok(false);
        }
        self.latest = id;
        Ok(true)
    }

    pub fn reconnected(&mut self) {
        self.awaiting_sequence = true;
    }

    /// The id to ack, when something new has been processed since the last ack.
    pub fn take_ack(&mut self) -> Option<u64> {
        (self.latest > self.acked).then(|| {
            self.acked = self.latest;
            self.latest
        })
    }

    pub fn has_unacked(&self) -> bool {
        self.latest > self.acked
    }
}

/// What to do with an incoming hub message.
pub(super) enum Admit {
    Process,
    Skip,
    Closed,
}

/// A session's stateful-reconnect state, once the handshake turned it on.
pub(super) struct Stateful {
    grant: ReconnectGrant,
    pub(super) inbound: InboundSequence,
    /// An ack is scheduled.
    ack_scheduled: bool,
}

/// A socket came back with the token of this session: it becomes the session's socket.
/// Answers the new socket's number, or `None` when the session is ending.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct Reattach {
    pub session: actix_ws::Session,
}

/// A frame of a reattached socket (which may live on another worker thread). Answers
/// whether the socket is still the session's, so a replaced one stops being read.
#[derive(Message)]
#[rtype(result = "bool")]
struct Inbound {
    socket: u64,
    item: Result<AggregatedMessage, ProtocolError>,
}

/// A reattached socket's read side ended.
#[derive(Message)]
#[rtype(result = "()")]
struct InboundEnded {
    socket: u64,
}

/// Reads a reattached socket on this worker thread and hands its frames to the session,
/// one at a time (each waits for the session, so a flood is held back at the socket).
pub fn pump(session: Addr<WsSession>, socket: u64, mut stream: AggregatedMessageStream) {
    actix_web::rt::spawn(async move {
        while let Some(item) = stream.next().await {
            match session.send(Inbound { socket, item }).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
        session.do_send(InboundEnded { socket });
    });
}

impl WsSession {
    /// The handshake asked for version 2 on a token granted stateful reconnect.
    pub(super) fn begin_stateful(&mut self, grant: ReconnectGrant, ctx: &mut Context<Self>) {
        self.outbox.make_resumable(self.settings.resend_max_bytes);
        grant.connections.register(&grant.token, ctx.address());
        self.stateful = Some(Stateful {
            grant,
            inbound: InboundSequence::new(),
            ack_scheduled: false,
        });
    }

    /// Forgets the connection token: no socket can come back to this session any more.
    pub(super) fn end_stateful(&mut self, ctx: &mut Context<Self>) {
        if let Some(stateful) = self.stateful.take() {
            let grant = stateful.grant;
            grant.connections.remove(&grant.token, &ctx.address());
        }
    }

    /// Numbers an incoming hub message: whether to process it (a duplicate, or anything
    /// before the client's `Sequence`, is skipped), or the connection was closed for it.
    pub(super) fn admit_inbound(&mut self, message: &HubMessage, ctx: &mut Context<Self>) -> Admit {
        let Some(stateful) = &mut self.stateful else {
            return Admit::Process;
        };
        match stateful.inbound.admit(message) {
            Ok(true) => {
                if message.is_trackable() {
                    self.schedule_ack(ctx);
                }
                Admit::Process
            }
            Ok(false) => Admit::Skip,
            Err(e) => {
                let error = format!("Connection closed with an error. {e}");
                let frame = signalr::close(Some(&error), false);
                self.close(ctx, Some(frame), CloseCode::Protocol, "invalid sequence");
                Admit::Closed
            }
        }
    }

    fn schedule_ack(&mut self, ctx: &mut Context<Self>) {
        let Some(stateful) = &mut self.stateful else {
            return;
        };
        if stateful.ack_scheduled || !stateful.inbound.has_unacked() {
            return;
        }
        stateful.ack_scheduled = true;
        ctx.run_later(ACK_DELAY, |act, ctx| {
            let Some(stateful) = &mut act.stateful else {
                return;
            };
            stateful.ack_scheduled = false;
            // A detached connection acks once a socket is back.
            if act.outbox.is_detached() {
                return;
            }
            if let Some(id) = stateful.inbound.take_ack() {
                act.send(ctx, signalr::ack(id));
            }
        });
    }

    /// Whether frames of socket `socket` are still this session's.
    pub(super) fn is_current(&self, socket: u64) -> bool {
        socket == self.outbox.socket() && !self.outbox.is_detached()
    }

    /// Socket `socket` is gone (its read side ended, or its writer failed). A stateful
    /// connection waits for a reconnect; any other ends.
    pub(super) fn socket_lost(&mut self, socket: u64, ctx: &mut Context<Self>) {
        if socket != self.outbox.socket() || self.outbox.is_detached() {
            return;
        }
        if self.stateful.is_some() && self.outbox.is_resumable() {
            self.detach(None, ctx);
        } else {
            ctx.stop();
        }
    }

    /// Lets the socket go (with `farewell` as its close frame, if it is still open) and
    /// waits the grace window for the client to come back.
    pub(super) fn detach(&mut self, farewell: Option<CloseReason>, ctx: &mut Context<Self>) {
        if self.stateful.is_none() || self.outbox.is_detached() || !self.outbox.is_resumable() {
            return;
        }
        if let Some(first) = self.first_stream.take() {
            ctx.cancel_future(first);
        }
        self.outbox.detach(farewell);
        let waiting = self.outbox.socket();
        let grace = self.pipeline.answers().grace();
        log::info!(
            "websocket session {} lost its socket; its SignalR connection waits {grace:?} for a reconnect",
            self.id
        );
        ctx.run_later(grace, move |act, ctx| {
            if act.outbox.socket() == waiting && act.outbox.is_detached() {
                act.abandon(ctx);
            }
        });
    }

    /// Nobody came back within the grace window: the answers end as a lost client's do.
    fn abandon(&mut self, ctx: &mut Context<Self>) {
        log::info!(
            "websocket session {}: no reconnect within the grace window; its answers stop",
            self.id
        );
        for feed in self.outbox.take_feeds() {
            let entry = feed.answer.entry();
            // An answer another connection resumed goes on there.
            if entry.subscribers() == 1 && !entry.log().is_ended() {
                entry.stop(StopReason::Abandoned);
            }
        }
        // Requests still waiting for admission drop their lease on arrival.
        self.admitting.clear();
        self.end_stateful(ctx);
        ctx.stop();
    }
}

impl Handler<Reattach> for WsSession {
    type Result = Option<u64>;

    fn handle(&mut self, msg: Reattach, ctx: &mut Context<Self>) -> Option<u64> {
        if self.stateful.is_none() || ctx.state() != actix::ActorState::Running {
            return None;
        }
        let socket = self.outbox.reattach()?;
        // A socket still attached is replaced (the client gave up on it first).
        if let Some(first) = self.first_stream.take() {
            ctx.cancel_future(first);
        }
        if let Some(stateful) = &mut self.stateful {
            stateful.inbound.reconnected();
        }
        self.last_heard = std::time::Instant::now();
        self.spawn_writer(msg.session, socket, ctx);
        self.schedule_ack(ctx);
        log::info!(
            "websocket session {}: the SignalR client reconnected",
            self.id
        );
        Some(socket)
    }
}

impl Handler<Inbound> for WsSession {
    type Result = bool;

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) -> bool {
        if !self.is_current(msg.socket) {
            return false;
        }
        self.on_frame(msg.item, ctx);
        self.is_current(msg.socket)
    }
}

impl Handler<InboundEnded> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: InboundEnded, ctx: &mut Context<Self>) {
        self.socket_lost(msg.socket, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation() -> HubMessage {
        signalr::parse_message(
            r#"{"type":1,"target":"SendMessage","arguments":["q"],"invocationId":"0"}"#,
        )
        .unwrap()
    }

    fn sequence(id: u64) -> HubMessage {
        HubMessage::Sequence { sequence_id: id }
    }

    #[test]
    fn hub_messages_are_numbered_and_acked_once() {
        let mut seq = InboundSequence::new();
        assert_eq!(seq.take_ack(), None, "nothing received, nothing to ack");
        assert_eq!(seq.admit(&HubMessage::Ping), Ok(true));
        assert_eq!(seq.take_ack(), None, "pings are not numbered");
        assert_eq!(seq.admit(&invocation()), Ok(true));
        assert_eq!(
            seq.admit(&HubMessage::CancelInvocation {
                invocation_id: "0".into()
            }),
            Ok(true)
        );
        assert_eq!(seq.take_ack(), Some(2));
        assert_eq!(seq.take_ack(), None);
    }

    #[test]
    fn after_a_reconnect_only_the_sequence_message_counts_then_duplicates_are_dropped() {
        let mut seq = InboundSequence::new();
        for _ in 0..3 {
            assert_eq!(seq.admit(&invocation()), Ok(true));
        }
        seq.reconnected();
        assert_eq!(
            seq.admit(&invocation()),
            Ok(false),
            "before the client's Sequence"
        );
        assert_eq!(seq.admit(&HubMessage::Ping), Ok(false));
        // The client had ids 2 and 3 unacked: it replays them, then sends id 4.
        assert_eq!(seq.admit(&sequence(2)), Ok(false));
        assert_eq!(seq.admit(&invocation()), Ok(false), "2 again");
        assert_eq!(seq.admit(&invocation()), Ok(false), "3 again");
        assert_eq!(seq.admit(&invocation()), Ok(true), "4 is new");
        assert_eq!(seq.take_ack(), Some(4));
    }

    #[test]
    fn a_sequence_ahead_of_what_was_received_is_an_error() {
        let mut seq = InboundSequence::new();
        assert_eq!(seq.admit(&invocation()), Ok(true));
        seq.reconnected();
        assert_eq!(
            seq.admit(&sequence(3)),
            Err(SequenceError {
                got: 3,
                expected: 2
            })
        );
        assert_eq!(seq.admit(&sequence(2)), Ok(false), "the next id is fine");
    }
}
