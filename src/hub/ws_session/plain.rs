//! The plain JSON protocol's side of a WebSocket session: questions, cancels, pings and
//! resumes.

use std::rc::Rc;
use std::sync::Arc;

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{AsyncContext, Context};

use super::framing::Framing;
use super::outbox::Feed;
use super::{Question, WsSession, MAX_MESSAGE_BYTES};
use crate::answer::shared_log::{self, FindError};
use crate::answer::{AnswerEntry, Answers, ResumeError};
use crate::cluster::AnswerInfo;
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
        if let Some(entry) = answers.get(answer_id, &self.owner.key_id) {
            return self.resume_entry(id, answer_id, entry, after, ctx);
        }
        let Some(cluster) = self.pipeline.cluster().cloned() else {
            return self.answer_not_found(id.as_deref().unwrap_or(answer_id), ctx);
        };
        // In a cluster it may run on another hub: looked up off this actor's turn.
        let key_id = self.owner.key_id.clone();
        let answer = answer_id.to_owned();
        let max_bytes = self.pipeline.log_max_bytes();
        let lookup = async move {
            let owns_it = |info: &AnswerInfo| info.key_id == key_id;
            shared_log::find(cluster, &answer, after, max_bytes, owns_it).await
        };
        let answer_id = answer_id.to_owned();
        ctx.spawn(lookup.into_actor(self).map(move |found, act, ctx| {
            let label = id.clone().unwrap_or_else(|| answer_id.clone());
            match found {
                Ok(Some(entry)) => act.resume_entry(id, &answer_id, entry, after, ctx),
                Ok(None) => act.answer_not_found(&label, ctx),
                Err(FindError::Ahead) => {
                    let message = ResumeError::Ahead.to_string();
                    act.reject(
                        ctx,
                        Some(&label),
                        &Framing::Plain,
                        "invalid_cursor",
                        &message,
                    )
                }
                Err(FindError::Unavailable(e)) => {
                    log::warn!("resume: {e}");
                    let message =
                        "the cluster's shared state (Redis) is unavailable; retry shortly";
                    act.reject(
                        ctx,
                        Some(&label),
                        &Framing::Plain,
                        "cluster_unavailable",
                        message,
                    )
                }
            }
        }));
    }

    fn answer_not_found(&mut self, id: &str, ctx: &mut Context<Self>) {
        let message = "no such answer (unknown, ended longer ago than the resume grace window, or not this key's)";
        self.reject(ctx, Some(id), &Framing::Plain, "answer_not_found", message);
    }

    fn resume_entry(
        &mut self,
        id: Option<String>,
        answer_id: &str,
        entry: Arc<AnswerEntry>,
        after: u64,
        ctx: &mut Context<Self>,
    ) {
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
