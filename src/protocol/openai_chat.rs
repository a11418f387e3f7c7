//! OpenAI chat completions as the hub serves them (`POST /v1/chat/completions`): the
//! request read and checked, `chat.completion.chunk` frames for a stream, the one
//! `chat.completion` body otherwise, `/v1/models`, and errors in OpenAI's shape.
//!
//! Extensions, which clients that ignore unknown fields never notice: the first chunk of a
//! stream and the non-streaming body carry `sources` (the retrieved passages; the answer's
//! `[n]` markers point into it) and, for a turn of a stored conversation, `conversation_id`.
//! Every stream frame has an SSE `id:` of `<answerId>:<seq>`, the hub's resume cursor.
//!
//! A stream that fails after it started ends with `data: {"error":{…}}` and no `[DONE]`:
//! both official SDKs raise on an `error` key in a chunk, and a client that does not
//! still sees an unfinished stream rather than a clean end.

use std::fmt;
use std::io::Write;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::{FrameEncoder, Piece};
use crate::answer::{AnswerEvent, Source, StreamEvent};
use crate::error::stream_error_status;
use crate::providers::{ChatTurn, Role, Sampling};

/// The model id that means "the hub's configured provider chain".
pub const DEFAULT_MODEL: &str = "ragstream";

/// Most stop sequences a request may send (OpenAI's own bound).
const MAX_STOP: usize = 4;
/// Longest `user` string passed on to a provider.
const MAX_USER_CHARS: usize = 256;

/// A checked chat-completions request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    /// The last message, a user's: the question.
    pub question: String,
    /// The user and assistant messages before it, oldest first.
    pub earlier: Vec<ChatTurn>,
    /// The client's system (and developer) messages, joined.
    pub system: Option<String>,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
}

/// Why a request was refused: OpenAI's `param` names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

fn refuse(code: &'static str, param: &str, message: impl Into<String>) -> RequestError {
    RequestError {
        code,
        message: message.into(),
        param: Some(param.to_owned()),
    }
}

fn wrong_type(param: &str, want: &str) -> RequestError {
    refuse("invalid_type", param, format!("`{param}` must be {want}"))
}

fn unsupported(param: &str, why: &str) -> RequestError {
    refuse(
        "unsupported_parameter",
        param,
        format!("`{param}` is not supported by this server: {why}"),
    )
}

/// Reads a request body. Unknown fields are ignored, as clients send many; parameters the
/// hub cannot honour are refused by name rather than silently dropped.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError {
        code: "invalid_json",
        message: format!("the body is not valid JSON: {e}"),
        param: None,
    })?;
    let Value::Object(fields) = value else {
        return Err(RequestError {
            code: "invalid_type",
            message: "the body must be a JSON object".to_owned(),
            param: None,
        });
    };
    refuse_unsupported(&fields)?;
    let model = match fields.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_owned(),
        None | Some(Value::Null) => {
            return Err(refuse(
                "missing_required_parameter",
                "model",
                "`model` is required (`ragstream`, or one listed by GET /v1/models)",
            ))
        }
        Some(_) => return Err(wrong_type("model", "a non-empty string")),
    };
    let stream = optional_bool(&fields, "stream")?.unwrap_or(false);
    let include_usage = match fields.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => {
            if !stream {
                return Err(refuse(
                    "invalid_value",
                    "stream_options",
                    "`stream_options` is only allowed when `stream` is true",
                ));
            }
            optional_bool(options, "include_usage")
                .map_err(|_| wrong_type("stream_options.include_usage", "a boolean"))?
                .unwrap_or(false)
        }
        Some(_) => return Err(wrong_type("stream_options", "an object")),
    };
    let (question, earlier, system) = read_messages(fields.get("messages"))?;
    Ok(ChatRequest {
        model,
        question,
        earlier,
        system,
        sampling: read_sampling(&fields)?,
        stream,
        include_usage,
    })
}

/// `n > 1`, tools, log probabilities, audio and other features the hub has no way to
/// honour, each named in the error.
fn refuse_unsupported(fields: &Map<String, Value>) -> Result<(), RequestError> {
    let set = |name: &str| fields.get(name).filter(|v| !v.is_null());
    match set("n") {
        None => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(n) if n.is_u64() => {
            return Err(unsupported("n", "only one choice (n = 1) is produced"))
        }
        Some(_) => return Err(wrong_type("n", "a positive integer")),
    }
    for name in ["tools", "functions"] {
        if set(name).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(unsupported(name, "the hub does not call tools"));
        }
    }
    for name in ["tool_choice", "function_call"] {
        if set(name).is_some_and(|v| v.as_str() != Some("none")) {
            return Err(unsupported(name, "the hub does not call tools"));
        }
    }
    if set("logprobs").is_some_and(|v| v.as_bool() != Some(false)) {
        return Err(unsupported(
            "logprobs",
            "log probabilities are not available",
        ));
    }
    if set("top_logprobs").is_some() {
        return Err(unsupported(
            "top_logprobs",
            "log probabilities are not available",
        ));
    }
    if set("audio").is_some() {
        return Err(unsupported("audio", "answers are text only"));
    }
    if let Some(modalities) = set("modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            return Err(unsupported("modalities", "answers are text only"));
        }
    }
    if set("response_format").is_some_and(|f| f.get("type").and_then(Value::as_str) != Some("text"))
    {
        return Err(unsupported(
            "response_format",
            "answers are cited text; only {\"type\":\"text\"} is accepted",
        ));
    }
    for name in ["frequency_penalty", "presence_penalty"] {
        if set(name).is_some_and(|v| v.as_f64() != Some(0.0)) {
            return Err(unsupported(name, "penalties are not passed to providers"));
        }
    }
    if set("logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(unsupported(
            "logit_bias",
            "logit bias is not passed to providers",
        ));
    }
    if set("prediction").is_some() {
        return Err(unsupported(
            "prediction",
            "predicted outputs are not available",
        ));
    }
    Ok(())
}

fn optional_bool(fields: &Map<String, Value>, name: &str) -> Result<Option<bool>, RequestError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(name, "a boolean")),
    }
}

fn optional_number(
    fields: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f64>, RequestError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if range.contains(&x) => Ok(Some(x)),
            Some(x) => Err(refuse(
                "invalid_value",
                name,
                format!(
                    "`{name}` must be between {} and {}, got {x}",
                    range.start(),
                    range.end()
                ),
            )),
            None => Err(wrong_type(name, "a number")),
        },
    }
}

fn optional_max_tokens(
    fields: &Map<String, Value>,
    name: &str,
) -> Result<Option<u32>, RequestError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            _ => Err(refuse(
                "invalid_value",
                name,
                format!("`{name}` must be a positive integer"),
            )),
        },
    }
}

fn read_sampling(fields: &Map<String, Value>) -> Result<Sampling, RequestError> {
    // Both bounds given: the tighter one holds.
    let max_tokens = match (
        optional_max_tokens(fields, "max_completion_tokens")?,
        optional_max_tokens(fields, "max_tokens")?,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let stop = match fields.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(refuse(
                    "invalid_value",
                    "stop",
                    format!(
                        "`stop` has {} sequences; the limit is {MAX_STOP}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| wrong_type("stop", "a string or an array of strings"))?
        }
        Some(_) => return Err(wrong_type("stop", "a string or an array of strings")),
    };
    let seed = match fields.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| wrong_type("seed", "an integer"))?),
    };
    let user = match fields.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.chars().count() <= MAX_USER_CHARS => {
            Some(u.clone()).filter(|u| !u.is_empty())
        }
        Some(Value::String(_)) => {
            return Err(refuse(
                "invalid_value",
                "user",
                format!("`user` is longer than {MAX_USER_CHARS} characters"),
            ))
        }
        Some(_) => return Err(wrong_type("user", "a string")),
    };
    Ok(Sampling {
        temperature: optional_number(fields, "temperature", 0.0..=2.0)?,
        top_p: optional_number(fields, "top_p", 0.0..=1.0)?,
        max_tokens,
        stop,
        seed,
        user,
    })
}

type Messages = (String, Vec<ChatTurn>, Option<String>);

/// The question (the last message, a user's), the user and assistant messages before it,
/// and the system messages joined.
fn read_messages(messages: Option<&Value>) -> Result<Messages, RequestError> {
    let messages = match messages {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(refuse(
                "invalid_value",
                "messages",
                "`messages` is empty; the last message must be the user's question",
            ))
        }
        None | Some(Value::Null) => {
            return Err(refuse(
                "missing_required_parameter",
                "messages",
                "`messages` is required",
            ))
        }
        Some(_) => return Err(wrong_type("messages", "an array of messages")),
    };
    let mut system: Vec<String> = Vec::new();
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| wrong_type(&format!("{param}.role"), "a string"))?;
        if message.get("tool_calls").is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                &format!("{param}.tool_calls"),
                "the hub does not call tools",
            ));
        }
        let content = message_text(message.get("content"), &param)?;
        match role {
            "system" | "developer" => system.push(content),
            "user" => turns.push(ChatTurn {
                role: Role::User,
                content,
            }),
            "assistant" => turns.push(ChatTurn {
                role: Role::Assistant,
                content,
            }),
            "tool" | "function" => {
                return Err(unsupported(
                    &format!("{param}.role"),
                    "the hub does not call tools",
                ))
            }
            other => {
                return Err(refuse(
                    "invalid_value",
                    &format!("{param}.role"),
                    format!(
                        "unknown role `{}`; expected system, developer, user or assistant",
                        other.chars().take(32).collect::<String>()
                    ),
                ))
            }
        }
    }
    let question = match turns.pop() {
        Some(last) if last.role == Role::User && !last.content.trim().is_empty() => last.content,
        _ => {
            return Err(refuse(
                "invalid_value",
                "messages",
                "the last message must be the user's question (role `user`, with text)",
            ))
        }
    };
    if messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        != Some("user")
    {
        return Err(refuse(
            "invalid_value",
            "messages",
            "the last message must be the user's question (role `user`, with text)",
        ));
    }
    let system = system
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>();
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((question, turns, system))
}

/// A message's text: a string, `null` (an assistant message without text), or text parts.
fn message_text(content: Option<&Value>, param: &str) -> Result<String, RequestError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                            wrong_type(&format!("{param}.content[{j}].text"), "a string")
                        })?;
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    _ => {
                        return Err(unsupported(
                            &format!("{param}.content[{j}]"),
                            "only text content parts are accepted",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(wrong_type(
            &format!("{param}.content"),
            "a string or an array of text parts",
        )),
    }
}

/// OpenAI's `finish_reason` for the hub's.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "length" | "max_tokens" => "length",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

/// The error `type` the SDKs expect for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ => "server_error",
    }
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    param: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

/// `{"error":{"message","type","code","param"}}` for an HTTP status.
pub fn error_body(status: u16, code: &str, message: &str, param: Option<&str>) -> Vec<u8> {
    let envelope = ErrorEnvelope {
        error: ErrorObject {
            message,
            kind: error_type(status),
            code,
            param,
        },
    };
    // Strings only: serialising cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

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
    /// The hub does not count prompt tokens (providers report output tokens only): 0.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl CompletionUsage {
    pub fn output(tokens: u64) -> Self {
        CompletionUsage {
            prompt_tokens: 0,
            completion_tokens: tokens,
            total_tokens: tokens,
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
                    chunk.usage = Some(Some(CompletionUsage::output(meta.tokens)));
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
        usage: CompletionUsage::output(c.tokens),
        sources: c.sources,
        conversation_id: c.conversation_id,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

/// The `GET /v1/models` body.
pub fn models_body(ids: &[String], created: i64) -> Vec<u8> {
    let list = ModelList {
        object: "list",
        data: ids
            .iter()
            .map(|id| ModelObject {
                id,
                object: "model",
                created,
                owned_by: "ragstream",
            })
            .collect(),
    };
    serde_json::to_vec(&list).unwrap_or_default()
}

/// The `GET /v1/models/{id}` body.
pub fn model_body(id: &str, created: i64) -> Vec<u8> {
    let model = ModelObject {
        id,
        object: "model",
        created,
        owned_by: "ragstream",
    };
    serde_json::to_vec(&model).unwrap_or_default()
}

/// What a request's `model` names: `ragstream` (the configured chain), `provider:model`, a
/// provider alone or a model alone (the allow-list decides, as on the hub's own routes).
pub fn split_model(model: &str) -> (Option<&str>, Option<&str>) {
    if model == DEFAULT_MODEL {
        return (None, None);
    }
    match model.split_once(':') {
        Some((provider, model)) => (Some(provider), Some(model).filter(|m| !m.is_empty())),
        None => (None, Some(model)),
    }
}

#[cfg(test)]
mod tests;
