//! The shapes of the OpenAI-compatible endpoint (`/v1`) for the OpenAPI description:
//! documentation types only; the codec (`protocol::openai_chat`) writes the real bodies.

use serde::Serialize;
use utoipa::ToSchema;

use crate::answer::Source;

/// A chat completions request. Only what the hub reads is listed; `n > 1`, `tools`,
/// `functions`, `tool_choice`, `logprobs`, `audio`, non-text `modalities` or
/// `response_format`, penalties, `logit_bias` and `prediction` are refused with 400 naming
/// the field in `param`.
#[derive(Serialize, ToSchema)]
pub struct V1ChatRequest {
    /// `ragstream` (the configured provider chain), or an allow-listed `provider:model`.
    pub model: String,
    /// The last user message is the question; earlier ones are the history; a `system`
    /// message is kept after the hub's grounding instructions.
    pub messages: Vec<V1Message>,
    pub stream: Option<bool>,
    pub stream_options: Option<V1StreamOptions>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    /// A string or an array of up to four strings.
    pub stop: Option<serde_json::Value>,
    pub seed: Option<i64>,
    pub user: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct V1Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, or an array of `{"type":"text","text":…}` parts.
    pub content: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct V1StreamOptions {
    /// A last chunk with `usage` before `data: [DONE]`.
    pub include_usage: Option<bool>,
}

/// A non-streaming answer (`"stream": false`).
#[derive(Serialize, ToSchema)]
pub struct V1ChatCompletion {
    /// `chatcmpl-<answerId>`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<V1Choice>,
    pub usage: V1Usage,
    /// The passages the answer cites as `[n]` (an extension; clients that do not know it
    /// ignore it).
    pub sources: Vec<Source>,
    /// Only when the request named a conversation with `X-Conversation-Id`.
    pub conversation_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct V1Choice {
    pub index: u32,
    pub message: V1AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct V1AssistantMessage {
    /// `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Serialize, ToSchema)]
pub struct V1Usage {
    /// The upstream's input count when it reported one, else the hub's estimate from the
    /// prompt (characters / 4).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One `data:` event of a streamed answer (`"stream": true`, `text/event-stream`); the
/// stream ends with `data: [DONE]`, or with `data: {"error":…}` (no `[DONE]`) when it fails
/// after its first chunk. Event ids are `<answerId>:<seq>`: a POST with `Last-Event-ID`
/// continues the same answer.
#[derive(Serialize, ToSchema)]
pub struct V1ChatChunk {
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<V1ChunkChoice>,
    /// With `stream_options.include_usage`: `null`, then set on the last chunk.
    pub usage: Option<V1Usage>,
    /// On the first chunk only.
    pub sources: Option<Vec<Source>>,
    pub conversation_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct V1ChunkChoice {
    pub index: u32,
    pub delta: V1Delta,
    pub finish_reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct V1Delta {
    pub role: Option<String>,
    pub content: Option<String>,
}

/// Errors in OpenAI's shape, with the statuses the SDKs map to their exception classes.
#[derive(Serialize, ToSchema)]
pub struct V1ErrorEnvelope {
    pub error: V1ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct V1ErrorBody {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct V1ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<V1Model>,
}

#[derive(Serialize, ToSchema)]
pub struct V1Model {
    pub id: String,
    /// `model`.
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}
