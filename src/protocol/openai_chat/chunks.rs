//! The bodies of answers: `chat.completion.chunk` frames for a stream (a [`FrameEncoder`]
//! over the answer's log, so the SSE body merges and pings as for the hub's own shape) and
//! the one `chat.completion` of a non-streaming request.

use std::fmt;
use std::io::Write;

use serde::{Serialize, Serializer};

use super::{error_body, finish_reason};
use crate::answer::{AnswerEvent, Source, StreamEvent};
use crate::error::stream_error_status;
use crate::protocol::{FrameEncoder, Piece};

/// The `chatcmpl-<answerId>` id, written without an intermediate string.
struct CompletionId<'a>(&'a str);

impl Serialize for CompletionId<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for CompletionId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chatcmpl-{}", self.0)
    }
}

#[derive(Serialize, Default)]
struct ChunkDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: ChunkDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionUsage {
    /// The upstream's input count when it reported one, else the hub's estimate.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl CompletionUsage {
    pub fn new(input: u64, output: u64) -> Self {
        CompletionUsage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: input.saturating_add(output),
        }
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: CompletionId<'a>,
    object: &'static str,
    created: i64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: &'a [ChunkChoice<'a>],
    /// Present (as `null` until the last chunk) only when the client asked for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<CompletionUsage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<&'a [Source]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
}

/// Writes an answer's events as `chat.completion.chunk` frames (one encoder per response).
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    model: String,
    created: i64,
    include_usage: bool,
    /// The first chunk carries `role: "assistant"`; later ones do not.
    role_sent: bool,
    /// A conversation id waits for the sources chunk, the first one a client reads.
    conversation: Option<String>,
}

impl ChunkEncoder {
    pub fn new(model: &str, created: i64, include_usage: bool) -> Self {
        ChunkEncoder {
            model: model.to_owned(),
            created,
            include_usage,
            role_sent: false,
            conversation: None,
        }
    }

    fn chunk<'a>(&'a self, answer_id: &'a str, choices: &'a [ChunkChoice<'a>]) -> Chunk<'a> {
        Chunk {
            id: CompletionId(answer_id),
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage: self.include_usage.then_some(None),
            sources: None,
            conversation_id: None,
        }
    }

    fn role(&mut self) -> Option<&'static str> {
        (!std::mem::replace(&mut self.role_sent, true)).then_some("assistant")
    }

    fn frame(buf: &mut Vec<u8>, answer_id: &str, seq: u64, data: &impl Serialize) {
        // Writing to a Vec cannot fail; nor can serialising these borrowed structs.
        let _ = writeln!(buf, "id: {answer_id}:{seq}");
        buf.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *buf, data);
        buf.extend_from_slice(b"\n\n");
    }

    fn text(&mut self, buf: &mut Vec<u8>, answer_id: &str, seq: u64, text: &str) {
        let choices = [ChunkChoice {
            index: 0,
            delta: ChunkDelta {
                role: self.role(),
                content: Some(text),
            },
            logprobs: None,
            finish_reason: None,
        }];
        Self::frame(buf, answer_id, seq, &self.chunk(answer_id, &choices));
    }

    fn event(&mut self, buf: &mut Vec<u8>, answer_id: &str, ev: &AnswerEvent) {
        match &ev.event {
            StreamEvent::Conversation(id) => self.conversation = Some(id.clone()),
            StreamEvent::Sources(sources) => {
                let choices = [ChunkChoice {
                    index: 0,
                    delta: ChunkDelta {
                        role: self.role(),
                        content: Some(""),
                    },
                    logprobs: None,
                    finish_reason: None,
                }];
                let conversation = self.conversation.take();
                let mut chunk = self.chunk(answer_id, &choices);
                chunk.sources = Some(sources);
                chunk.conversation_id = conversation.as_deref();
                Self::frame(buf, answer_id, ev.seq, &chunk);
            }
            StreamEvent::Token(text) => self.text(buf, answer_id, ev.seq, text),
            StreamEvent::Done(meta) => {
                let choices = [ChunkChoice {
                    index: 0,
                    delta: ChunkDelta::default(),
                    logprobs: None,
                    finish_reason: Some(finish_reason(&meta.finish_reason)),
                }];
                Self::frame(buf, answer_id, ev.seq, &self.chunk(answer_id, &choices));
                if self.include_usage {
                    let mut chunk = self.chunk(answer_id, &[]);
                    chunk.usage = Some(Some(CompletionUsage::new(meta.input_tokens, meta.tokens)));
                    Self::frame(buf, answer_id, ev.seq, &chunk);
                }
                buf.extend_from_slice(b"data: [DONE]\n\n");
            }
            StreamEvent::Error(error) => {
                let status = stream_error_status(&error.code).as_u16();
                let _ = writeln!(buf, "id: {answer_id}:{}", ev.seq);
                buf.extend_from_slice(b"data: ");
                buf.extend_from_slice(&error_body(status, &error.code, &error.message, None));
                buf.extend_from_slice(b"\n\n");
            }
        }
    }
}

impl FrameEncoder for ChunkEncoder {
    fn encode(&mut self, buf: &mut Vec<u8>, answer_id: &str, piece: &Piece<'_>) {
        match piece {
            Piece::Tokens { text, last_seq } => self.text(buf, answer_id, *last_seq, text),
            Piece::Event(ev) => self.event(buf, answer_id, ev),
        }
    }
}

/// What a finished answer gives a non-streaming request.
pub struct Completion<'a> {
    pub answer_id: &'a str,
    pub created: i64,
    pub model: &'a str,
    pub text: &'a str,
    pub finish_reason: &'a str,
    pub tokens: u64,
    pub input_tokens: u64,
    pub sources: &'a [Source],
    pub conversation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionBody<'a> {
    id: CompletionId<'a>,
    object: &'static str,
    created: i64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: [CompletionChoice<'a>; 1],
    usage: CompletionUsage,
    sources: &'a [Source],
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
}

/// The `chat.completion` body of a non-streaming request.
pub fn completion_body(c: &Completion<'_>) -> Vec<u8> {
    let body = CompletionBody {
        id: CompletionId(c.answer_id),
        object: "chat.completion",
        created: c.created,
        model: c.model,
        system_fingerprint: None,
        choices: [CompletionChoice {
            index: 0,
            message: CompletionMessage {
                role: "assistant",
                content: c.text,
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_reason(c.finish_reason),
        }],
        usage: CompletionUsage::new(c.input_tokens, c.tokens),
        sources: c.sources,
        conversation_id: c.conversation_id,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}
