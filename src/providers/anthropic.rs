//! Anthropic Messages, streamed.
//!
//! `POST {base}/v1/messages` with `stream: true`, `x-api-key` and `anthropic-version`.
//! Named events: `message_start`, per content block `content_block_start` /
//! `content_block_delta` (`text_delta` carries text) / `content_block_stop`,
//! `message_delta` (stop reason, cumulative output tokens), `message_stop`; `ping` may come
//! anywhere and `error` (e.g. `overloaded_error`) may end a stream that began with 200.
//! Unknown events and delta types (thinking, tool input, citations) are skipped.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::http::{self, Endpoint, EventParser};
use super::json::{self, Str};
use super::retry;
use super::upstream_sse::SseEvent;
use super::{Delta, DeltaStream, Prompt, Provider, ProviderError};
use crate::config::{AnthropicSettings, UpstreamSettings};
use crate::rag::prompt::{render_user_message, system_text};

const NAME: &str = "anthropic";
pub const API_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    endpoint: Arc<Endpoint>,
    model: String,
    max_tokens: u32,
}

impl AnthropicProvider {
    pub fn new(settings: &AnthropicSettings, upstream: &UpstreamSettings) -> Self {
        AnthropicProvider {
            endpoint: Arc::new(Endpoint {
                provider: NAME,
                url: format!("{}/v1/messages", settings.base_url),
                headers: vec![
                    Endpoint::secret_header("x-api-key", settings.api_key.expose()),
                    (
                        HeaderName::from_static("anthropic-version"),
                        HeaderValue::from_static(API_VERSION),
                    ),
                ],
                secret: settings.api_key.clone(),
                settings: upstream.clone(),
            }),
            model: settings.model.clone(),
            max_tokens: settings.max_tokens,
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    max_tokens: u32,
    system: &'a str,
    messages: Vec<Message<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// The system prompt as `system`; the conversation's earlier turns, then the user message
/// with this turn's passages and question. Anthropic requires roles to alternate starting
/// with `user`: the history is whole user/assistant exchanges (`rag::history`), so it does.
/// A client's sampling parameters go in Anthropic's names: its `max_tokens` replaces the
/// configured one, `stop` becomes `stop_sequences`, `user` `metadata.user_id`; temperature
/// is capped at Anthropic's 1.0 (OpenAI's scale goes to 2); `seed` has no counterpart.
pub fn request_body(model: &str, max_tokens: u32, prompt: &Prompt) -> Bytes {
    let user = render_user_message(prompt);
    let system = system_text(prompt);
    let sampling = &prompt.sampling;
    let mut messages = Vec::with_capacity(prompt.history.len() + 1);
    messages.extend(prompt.history.iter().map(|turn| Message {
        role: turn.role.as_str(),
        content: &turn.content,
    }));
    messages.push(Message {
        role: "user",
        content: &user,
    });
    let request = Request {
        model,
        max_tokens: sampling.max_tokens.unwrap_or(max_tokens),
        system: &system,
        messages,
        stream: true,
        temperature: sampling.temperature.map(|t| t.min(1.0)),
        top_p: sampling.top_p,
        stop_sequences: &sampling.stop,
        metadata: sampling.user.as_deref().map(|user_id| Metadata { user_id }),
    };
    // Plain strings and numbers: serialising cannot fail.
    Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self, prompt: Prompt) -> DeltaStream {
        let model = prompt.model.clone().unwrap_or_else(|| self.model.clone());
        let body = request_body(&model, self.max_tokens, &prompt);
        let endpoint = self.endpoint.clone();
        let settings = endpoint.settings.clone();
        retry::with_retries(NAME, settings, move || {
            http::attempt(endpoint.clone(), body.clone(), model.clone(), MessageParser)
        })
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(default, borrow)]
    delta: Option<EventDelta<'a>>,
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    /// `message_start` carries the input count in its message's usage.
    #[serde(default)]
    message: Option<StartedMessage>,
    #[serde(default, borrow)]
    error: Option<ApiError<'a>>,
}

#[derive(Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(default, borrow)]
    text: Option<Str<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(default, borrow)]
    text: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    /// Prompt-cache writes and reads are input too, counted apart from `input_tokens`.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Every input token, cached or not; `None` when the event reports no input.
    fn input(&self) -> Option<u64> {
        self.input_tokens.map(|n| {
            n + self.cache_creation_input_tokens.unwrap_or(0)
                + self.cache_read_input_tokens.unwrap_or(0)
        })
    }
}

#[derive(Deserialize)]
struct ApiError<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(default, borrow)]
    message: Option<Str<'a>>,
}

/// Anthropic's stop reasons in the OpenAI vocabulary the offline provider and the seed
/// use, so clients check one set; unknown ones pass through unchanged.
pub fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "refusal" => "content_filter",
        "tool_use" => "tool_calls",
        other => other,
    }
    .to_owned()
}

/// Parses Anthropic message events into deltas.
pub struct MessageParser;

impl MessageParser {
    fn parse<'a>(data: &'a str) -> Result<Event<'a>, ProviderError> {
        serde_json::from_str(data).map_err(|e| ProviderError::Protocol {
            provider: NAME,
            message: format!("an event is not valid JSON: {e}"),
        })
    }
}

impl EventParser for MessageParser {
    fn event(
        &mut self,
        event: &SseEvent<'_>,
        out: &mut VecDeque<Delta>,
    ) -> Result<bool, ProviderError> {
        // Events that carry nothing we use are not even parsed.
        match event.event {
            "ping" | "content_block_stop" => return Ok(false),
            "message_stop" => return Ok(true),
            _ => {}
        }
        let parsed = Self::parse(event.data)?;
        // The data's `type` names the event too; it decides when the `event:` line is absent.
        let name = match event.event {
            "" => parsed.kind.as_ref().map_or("", |k| k.as_str()),
            name => name,
        };
        match name {
            "content_block_delta" => {
                if let Some(delta) = parsed.delta {
                    let is_text = delta
                        .kind
                        .as_ref()
                        .is_some_and(|k| k.as_str() == "text_delta");
                    if let (true, Some(text)) = (is_text, delta.text) {
                        if !text.as_str().is_empty() {
                            out.push_back(Delta::Text(text.into_string()));
                        }
                    }
                }
            }
            "content_block_start" => {
                if let Some(block) = parsed.content_block {
                    let is_text = block.kind.as_ref().is_some_and(|k| k.as_str() == "text");
                    if let (true, Some(text)) = (is_text, block.text) {
                        if !text.as_str().is_empty() {
                            out.push_back(Delta::Text(text.into_string()));
                        }
                    }
                }
            }
            "message_start" => {
                let usage = parsed.message.and_then(|m| m.usage);
                if let Some(tokens) = usage.and_then(|u| u.input()) {
                    out.push_back(Delta::InputTokens(tokens));
                }
            }
            "message_delta" => {
                if let Some(reason) = parsed.delta.and_then(|d| d.stop_reason) {
                    out.push_back(Delta::Finish(finish_reason(reason.as_str())));
                }
                // Newer API versions repeat the (cumulative) input count here.
                if let Some(tokens) = parsed.usage.as_ref().and_then(Usage::input) {
                    out.push_back(Delta::InputTokens(tokens));
                }
                if let Some(tokens) = parsed.usage.and_then(|u| u.output_tokens) {
                    out.push_back(Delta::Usage {
                        output_tokens: tokens,
                    });
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let (kind, message) = match parsed.error {
                    Some(e) => (
                        e.kind.map_or_else(String::new, Str::into_string),
                        e.message.map_or_else(String::new, Str::into_string),
                    ),
                    None => (String::new(), String::new()),
                };
                let overloaded = kind == "overloaded_error";
                return Err(ProviderError::Upstream {
                    provider: NAME,
                    code: if overloaded {
                        "upstream_overloaded"
                    } else {
                        "upstream_error"
                    },
                    message: json::bounded(&format!("{kind}: {message}")),
                    retryable: overloaded || kind == "api_error",
                });
            }
            _ => {}
        }
        Ok(false)
    }

    fn end(
        &mut self,
        _unterminated: Option<SseEvent<'_>>,
        _out: &mut VecDeque<Delta>,
    ) -> Result<(), ProviderError> {
        // Only `message_stop` ends a message; an unterminated event is discarded, per spec.
        Err(ProviderError::Interrupted { provider: NAME })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::prompt::SYSTEM_PROMPT;

    fn parse(body: &str) -> (Vec<Delta>, Result<(), ProviderError>) {
        crate::providers::http::parse_body(MessageParser, body)
    }

    fn text(t: &str) -> Delta {
        Delta::Text(t.into())
    }

    const FIXTURE: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_4Qp\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-opus-latest\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" wörld\\n\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":6}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn the_sdk_fixture_gives_text_stop_reason_and_usage() {
        let (deltas, end) = parse(FIXTURE);
        assert_eq!(end, Ok(()));
        assert_eq!(
            deltas,
            vec![
                Delta::InputTokens(11),
                text("Hello"),
                text(" wörld\n"),
                Delta::Finish("stop".into()),
                Delta::Usage { output_tokens: 6 },
            ]
        );
    }

    #[test]
    fn non_text_blocks_and_unknown_events_are_skipped() {
        let body = concat!(
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"s\"}}\n\n",
            "event: brand_new_event\n",
            "data: {\"type\":\"brand_new_event\",\"x\":[1,2]}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let (deltas, end) = parse(body);
        assert_eq!(end, Ok(()));
        assert_eq!(
            deltas,
            vec![
                text("ok"),
                Delta::Finish("length".into()),
                Delta::Usage { output_tokens: 9 }
            ]
        );
    }

    #[test]
    fn an_error_event_mid_stream_is_an_overloaded_failure() {
        let body = concat!(
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: error\n",
            "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        let (deltas, end) = parse(body);
        assert_eq!(deltas, vec![text("Hi")]);
        let err = end.unwrap_err();
        assert_eq!(err.code(), "upstream_overloaded");
        assert!(err.retryable());
        assert!(err.to_string().contains("Overloaded"));
    }

    #[test]
    fn events_without_an_event_line_are_read_by_their_type() {
        let body = "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n\
                    data: {\"type\":\"message_stop\"}\n\n";
        let (deltas, end) = parse(body);
        assert_eq!((deltas, end), (vec![text("x")], Ok(())));
    }

    #[test]
    fn a_stream_without_message_stop_is_interrupted_and_bad_json_is_a_protocol_error() {
        let (_, end) = parse(&FIXTURE[..FIXTURE.find("event: message_stop").unwrap()]);
        assert_eq!(end.unwrap_err().code(), "upstream_interrupted");
        let (_, end) = parse("event: content_block_delta\ndata: {\"type\":\n\n");
        assert_eq!(end.unwrap_err().code(), "upstream_protocol");
    }

    #[test]
    fn the_request_has_the_system_prompt_max_tokens_and_stream() {
        let prompt = Prompt {
            question: "Why?".into(),
            passages: Vec::new().into(),
            terms: vec![],
            model: None,
            history: vec![],
            ..Prompt::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("claude-x", 512, &prompt)).unwrap();
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["max_tokens"], 512);
        assert_eq!(body["stream"], true);
        assert_eq!(body["system"], SYSTEM_PROMPT);
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        for absent in ["temperature", "top_p", "stop_sequences", "metadata"] {
            assert!(body.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn a_client_system_message_and_sampling_parameters_go_in_anthropic_names() {
        use crate::providers::Sampling;
        let prompt = Prompt {
            question: "Why?".into(),
            system: Some("Be brief.".into()),
            sampling: Sampling {
                temperature: Some(1.5),
                top_p: Some(0.5),
                max_tokens: Some(32),
                stop: vec!["END".into()],
                seed: Some(1),
                user: Some("u-1".into()),
            },
            ..Prompt::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("claude-x", 512, &prompt)).unwrap();
        let system = body["system"].as_str().unwrap();
        assert!(system.starts_with(SYSTEM_PROMPT) && system.ends_with("Be brief."));
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["top_p"], 0.5);
        assert_eq!(body["stop_sequences"], serde_json::json!(["END"]));
        assert_eq!(body["metadata"]["user_id"], "u-1");
        assert!(body.get("seed").is_none());
    }

    #[test]
    fn history_is_sent_as_alternating_messages_before_the_question() {
        use crate::providers::{ChatTurn, Role};
        let turn = |role, content: &str| ChatTurn {
            role,
            content: content.into(),
        };
        let prompt = Prompt {
            question: "And its height?".into(),
            history: vec![
                turn(Role::User, "q1"),
                turn(Role::Assistant, "a1"),
                turn(Role::User, "q2"),
                turn(Role::Assistant, "a2"),
            ],
            ..Prompt::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("claude-x", 512, &prompt)).unwrap();
        assert_eq!(body["system"], SYSTEM_PROMPT);
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
        assert_eq!(messages[0]["content"], "q1");
        assert_eq!(messages[3]["content"], "a2");
        assert!(messages[4]["content"]
            .as_str()
            .unwrap()
            .ends_with("Question: And its height?"));
    }
}
