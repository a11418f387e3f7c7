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

mod chunks;
mod request;

pub use chunks::{completion_body, ChunkEncoder, Completion, CompletionUsage};
pub use request::{parse_request, ChatRequest, RequestError};

use serde::Serialize;

/// The model id that means "the hub's configured provider chain".
pub const DEFAULT_MODEL: &str = "ragstream";

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
