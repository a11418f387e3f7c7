//! The SignalR JSON hub protocol's side of a WebSocket session: the handshake, hub method
//! invocations (`SendMessage`, `AskStream`, `ResumeAnswer`, `EnableAnswerStarted`),
//! cancels, pings, acks and the close message.

use std::rc::Rc;

use actix::Context;
use actix_ws::CloseCode;
use serde_json::Value;

use super::framing::Framing;
use super::outbox::Feed;
use super::stateful::Admit;
use super::{Mode, Question, WsSession, MAX_MESSAGE_BYTES};
use crate::answer::Answers;
use crate::protocol::signalr::{self, HubMessage};

/// The hub's methods, matched without regard to case as ASP.NET Core does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    SendMessage,
    AskStream,
    ResumeAnswer,
    EnableAnswerStarted,
}

impl Method {
    fn parse(target: &str) -> Option<Method> {
        [
            ("SendMessage", Method::SendMessage),
            ("AskStream", Method::AskStream),
            ("ResumeAnswer", Method::ResumeAnswer),
            ("EnableAnswerStarted", Method::EnableAnswerStarted),
        ]
        .into_iter()
        .find(|(name, _)| target.eq_ignore_ascii_case(name))
        .map(|(_, method)| method)
    }
}

const METHODS: &str = "SendMessage, ResumeAnswer and EnableAnswerStarted (invoke/send), \
                       AskStream and ResumeAnswer (stream)";

impl WsSession {
    pub(super) fn on_signalr_text(&mut self, text: &str, ctx: &mut Context<Self>) {
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
                Ok(version) => {
                    *handshaken = true;
                    self.send(ctx, signalr::HANDSHAKE_OK.to_owned());
                    // As in ASP.NET Core: a version 1 client cannot speak Ack and Sequence,
                    // so negotiate's grant only counts with version 2.
                    if let (2.., Some(grant)) = (version, self.reconnect.take()) {
                        self.begin_stateful(grant, ctx);
                    }
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
        match self.admit_inbound(&message, ctx) {
            Admit::Process => {}
            Admit::Skip => return true,
            Admit::Closed => return false,
        }
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
                match Method::parse(&target) {
                    Some(Method::SendMessage) => {
                        self.signalr_ask(id, framing, "SendMessage", &arguments, ctx)
                    }
                    Some(Method::ResumeAnswer) => self.resume_answer(id, framing, &arguments, ctx),
                    Some(Method::EnableAnswerStarted) => {
                        self.enable_answer_started(&id, completes, &arguments, ctx)
                    }
                    Some(Method::AskStream) | None => {
                        self.unknown_method(id, framing, &target, ctx)
                    }
                }
            }
            HubMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
            } => {
                let id: Rc<str> = invocation_id.into();
                let framing = Framing::SignalRStream;
                match Method::parse(&target) {
                    Some(Method::AskStream) => {
                        self.signalr_ask(id, framing, "AskStream", &arguments, ctx)
                    }
                    Some(Method::ResumeAnswer) => self.resume_answer(id, framing, &arguments, ctx),
                    _ => self.unknown_method(id, framing, &target, ctx),
                }
            }
            HubMessage::CancelInvocation { invocation_id } => {
                // The caller already stopped listening; the Completion is sent all the
                // same, as the protocol asks.
                if self.cancel(&invocation_id) {
                    self.send_records(ctx, signalr::completion(&invocation_id, None, None));
                }
            }
            HubMessage::Ack { sequence_id } => self.outbox.ack(sequence_id),
            // Handled by `admit_inbound`.
            HubMessage::Sequence { .. } => {}
            HubMessage::Ping | HubMessage::Other(_) => {}
            HubMessage::Close => {
                self.outbox.cancel_all();
                self.close(ctx, None, CloseCode::Normal, "closed by the client");
                return false;
            }
        }
        true
    }

    fn unknown_method(
        &mut self,
        id: Rc<str>,
        framing: Framing,
        target: &str,
        ctx: &mut Context<Self>,
    ) {
        let kind = match framing {
            Framing::SignalRStream => "a streaming",
            _ => "a non-streaming",
        };
        let message =
            format!("Unknown hub method '{target}' for {kind} call; this hub has {METHODS}.");
        self.reject(ctx, Some(&id), &framing, "unknown_method", &message);
    }

    /// Dispatches `SendMessage` (invoke) or `AskStream` (stream): arguments are (question,
    /// topK?, conversationId?). `SendMessage` is a conversation turn (a new conversation
    /// when the id is missing or null; the id comes back in `StreamComplete`'s metadata);
    /// `AskStream` stays a one-off question and ignores it.
    fn signalr_ask(
        &mut self,
        id: Rc<str>,
        framing: Framing,
        method: &str,
        arguments: &[Value],
        ctx: &mut Context<Self>,
    ) {
        let question = match arguments.first() {
            Some(Value::String(q)) => q.as_str(),
            _ => {
                let message = format!(
                    "Failed to invoke '{method}': the first argument must be the question (a string)."
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
                        format!("Failed to invoke '{method}': topK must be a whole number.");
                    self.reject(ctx, Some(&id), &framing, "invalid_top_k", &message);
                    return;
                }
            },
        };
        if arguments.len() > 3 {
            let message = format!(
                "Failed to invoke '{method}': it takes (question, topK, conversationId?), got {} arguments.",
                arguments.len()
            );
            self.reject(ctx, Some(&id), &framing, "invalid_arguments", &message);
            return;
        }
        let conversation = if method == "SendMessage" {
            match arguments.get(2) {
                None | Some(Value::Null) => Some(self.conversation(None)),
                Some(Value::String(c)) => Some(self.conversation(Some(c))),
                Some(_) => {
                    let message =
                        format!("Failed to invoke '{method}': conversationId must be a string.");
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

    /// `ResumeAnswer(answerId, after?)`: an answer of this key, running or ended within the
    /// grace window, from the start or past the `after` UTF-16 code units of text the client
    /// already has (JavaScript's `text.length`): SignalR clients see text, not event
    /// numbers. Invoked, it streams `ReceiveToken`/`StreamComplete` as `SendMessage` does;
    /// as a stream, items then a Completion.
    fn resume_answer(
        &mut self,
        id: Rc<str>,
        framing: Framing,
        arguments: &[Value],
        ctx: &mut Context<Self>,
    ) {
        let usage = "Failed to invoke 'ResumeAnswer': it takes (answerId, after?), after being the length of the text already received.";
        let (answer_id, after) = match arguments {
            [Value::String(answer_id)] => (answer_id, 0),
            [Value::String(answer_id), Value::Null] => (answer_id, 0),
            [Value::String(answer_id), after] => match after.as_u64() {
                Some(after) => (answer_id, after),
                None => {
                    self.reject(ctx, Some(&id), &framing, "invalid_arguments", usage);
                    return;
                }
            },
            _ => {
                self.reject(ctx, Some(&id), &framing, "invalid_arguments", usage);
                return;
            }
        };
        if self.admitting.contains_key(&id) || self.outbox.follows(&id) {
            let message = "an answer with this invocation id is still running; use a new id";
            self.reject(ctx, Some(&id), &framing, "duplicate_id", message);
            return;
        }
        let Some(entry) = self.pipeline.answers().get(answer_id, &self.owner.key_id) else {
            let message = "No such answer (unknown, ended longer ago than the resume grace window, or not this key's).";
            self.reject(ctx, Some(&id), &framing, "answer_not_found", message);
            return;
        };
        match Answers::resume(entry, 0) {
            Ok(answer) => self
                .outbox
                .follow(Feed::new(id, framing, answer).skipping(after)),
            Err(e) => {
                let message = e.to_string();
                self.reject(ctx, Some(&id), &framing, "invalid_cursor", &message);
            }
        }
    }

    /// `EnableAnswerStarted()`: from now on every answer this connection asks for is
    /// announced with `AnswerStarted(answerId, invocationId)` before its first token, so the
    /// client can resume it by id after losing the connection. Opt-in, because the JS
    /// client warns about pushed methods it has no handler for.
    fn enable_answer_started(
        &mut self,
        id: &str,
        completes: bool,
        arguments: &[Value],
        ctx: &mut Context<Self>,
    ) {
        let framing = Framing::SignalRInvoke { completes };
        let on = match arguments {
            [] | [Value::Null] => true,
            [Value::Bool(on)] => *on,
            _ => {
                let message =
                    "Failed to invoke 'EnableAnswerStarted': it takes no argument, or true/false.";
                self.reject(ctx, Some(id), &framing, "invalid_arguments", message);
                return;
            }
        };
        if let Mode::SignalR { announce, .. } = &mut self.mode {
            *announce = on;
        }
        if completes {
            self.send_records(ctx, signalr::completion(id, Some(&Value::Null), None));
        }
    }

    /// Announces a new answer to a client that asked for it (`EnableAnswerStarted`).
    pub(super) fn announce(
        &mut self,
        ctx: &mut Context<Self>,
        id: &str,
        framing: Framing,
        answer_id: &str,
    ) {
        if !matches!(self.mode, Mode::SignalR { announce: true, .. }) {
            return;
        }
        let invocation = match framing {
            Framing::Plain => return,
            // A non-blocking send has no invocation id (the one here is made up).
            Framing::SignalRInvoke { completes: false } => None,
            Framing::SignalRInvoke { completes: true } | Framing::SignalRStream => Some(id),
        };
        self.send_records(ctx, signalr::answer_started(answer_id, invocation));
    }
}
