//! The plain JSON protocol's side of a WebSocket session: questions, cancels, pings and
//! resumes.

use std::rc::Rc;

use actix::Context;

use super::framing::Framing;
use super::outbox::Feed;
use super::{Question, WsSession, MAX_MESSAGE_BYTES};
use crate::answer::Answers;
use crate::error::ErrorBody;
use crate::protocol::plain_ws::{self, ClientFrame};

impl WsSession {
    pub(super) fn on_plain_text(&mut self, text: &str, ctx: &mut Context<Self>) {
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
                if self.cancel(&id) {
                    let body = ErrorBody {
                        code: "cancelled".to_owned(),
                        message: "the answer was cancelled".to_owned(),
                    };
                    self.send(ctx, plain_ws::encode_error(Some(&id), &body));
                } else {
                    let msg = "no running answer has this id";
                    self.reject(ctx, Some(&id), &Framing::Plain, "unknown_id", msg);
                }
            }
            Ok(ClientFrame::Ping) => self.send(ctx, plain_ws::PONG.to_owned()),
            Ok(ClientFrame::Resume {
                id,
                answer_id,
                after,
            }) => self.resume(id, &answer_id, after, ctx),
            Err(e) => self.reject(ctx, e.id.as_deref(), &Framing::Plain, e.code, &e.message),
        }
    }

    /// Continues an answer of this key on this socket, after event `after`. Its frames
    /// carry the id given here, else the one it was asked under.
    fn resume(&mut self, id: Option<String>, answer_id: &str, after: u64, ctx: &mut Context<Self>) {
        let answers = self.pipeline.answers();
        let Some(entry) = answers.get(answer_id, &self.owner.key_id) else {
            let message = "no such answer (unknown, ended longer ago than the resume grace window, or not this key's)";
            let id = id.as_deref().unwrap_or(answer_id);
            self.reject(ctx, Some(id), &Framing::Plain, "answer_not_found", message);
            return;
        };
        let id: Rc<str> = match id {
            Some(id) => id.into(),
            None => entry
                .label()
                .map(|l| Rc::from(&**l))
                .unwrap_or_else(|| Rc::from(answer_id)),
        };
        if self.admitting.contains_key(&id) || self.outbox.follows(&id) {
            let msg = "an answer with this id is already on this socket";
            self.reject(ctx, Some(&id), &Framing::Plain, "duplicate_id", msg);
            return;
        }
        match Answers::resume(entry, after) {
            Ok(answer) => self.outbox.follow(Feed::new(id, Framing::Plain, answer)),
            Err(e) => self.reject(
                ctx,
                Some(&id),
                &Framing::Plain,
                "invalid_cursor",
                &e.to_string(),
            ),
        }
    }
}
