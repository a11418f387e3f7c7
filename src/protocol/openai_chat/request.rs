//! Reading and checking a chat-completions request: the question, the history, the system
//! message and the sampling parameters; every refusal names its `param`.

use serde_json::{Map, Value};

use crate::providers::{ChatTurn, Role, Sampling};

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
