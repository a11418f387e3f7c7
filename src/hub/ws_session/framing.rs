//! How an answer's events become WebSocket frames, for each way a client can ask.

use serde_json::Value;

use crate::answer::StreamEvent;
use crate::protocol::signalr;
use crate::protocol::{plain_ws, Piece};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `{"token":…,"id":…,"answerId":…,"seq":…}` frames.
    Plain,
    /// `SendMessage`: `ReceiveToken`/`StreamComplete`/`Error` calls, then a Completion when
    /// the caller gave an invocation id.
    SignalRInvoke { completes: bool },
    /// `AskStream`: StreamItems, then a Completion.
    SignalRStream,
}

impl Framing {
    /// SignalR records can share one WebSocket message; plain frames cannot.
    pub fn batches_records(self) -> bool {
        !matches!(self, Framing::Plain)
    }

    /// The frame of one piece of answer `answer_id` asked for under request `id`; `None`
    /// when the framing has no use for it.
    pub fn encode(self, id: &str, answer_id: &str, piece: &Piece<'_>) -> Option<String> {
        let event = match (self, piece) {
            (Framing::Plain, piece) => return Some(plain_ws::encode_piece(id, answer_id, piece)),
            (Framing::SignalRInvoke { .. }, Piece::Tokens { text, .. }) => {
                return Some(signalr::receive_token(text))
            }
            (Framing::SignalRStream, Piece::Tokens { text, .. }) => {
                return Some(signalr::stream_item(id, text))
            }
            (_, Piece::Event(ev)) => &ev.event,
        };
        match self {
            Framing::Plain => None,
            Framing::SignalRInvoke { completes } => match event {
                // No client method exists for them; the conversation id is also in
                // `StreamComplete`'s metadata.
                StreamEvent::Conversation(_) | StreamEvent::Sources(_) => None,
                StreamEvent::Token(t) => Some(signalr::receive_token(t)),
                StreamEvent::Done(meta) => {
                    let mut frames = signalr::stream_complete(meta);
                    if completes {
                        frames.push_str(&signalr::completion(id, Some(&Value::Null), None));
                    }
                    Some(frames)
                }
                // As the seed's hub does: the failure goes to `Error`, the method returns.
                StreamEvent::Error(e) => {
                    let mut frames = signalr::error(&e.message);
                    if completes {
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
}
