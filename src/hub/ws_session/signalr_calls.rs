//! The SignalR JSON hub protocol's side of a WebSocket session: the handshake, hub method
//! invocations (`SendMessage`, `AskStream`), cancels, pings and the close message.

use std::rc::Rc;

use actix::Context;
use actix_ws::CloseCode;
use serde_json::Value;

use super::framing::Framing;
use super::{Mode, Question, WsSession, MAX_MESSAGE_BYTES};
use crate::protocol::signalr::{self, HubMessage};

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
                if self.cancel(&invocation_id) {
                    self.send(ctx, signalr::completion(&invocation_id, None, None));
                }
            }
            HubMessage::Ping | HubMessage::Other(_) => {}
            HubMessage::Close => {
                self.outbox.cancel_all();
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
}
