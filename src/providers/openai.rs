//! OpenAI chat completions, streamed; also Ollama, vLLM, llama.cpp's server and other
//! servers that speak the same shape under their own base URL.
//!
//! `POST {base}/chat/completions` with `stream: true` and `stream_options.include_usage`;
//! each SSE `data:` is a chunk whose `choices[0].delta.content` is text, the last choice
//! carries `finish_reason`, an extra chunk with `choices: []` carries `usage`, and
//! `data: [DONE]` ends the stream. Errors inside a 200 stream come as `{"error":{…}}`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::chunk_scan;
use super::http::{self, Endpoint, EventParser};
use super::json::{self, Str};
use super::retry;
use super::upstream_sse::SseEvent;
use super::{Delta, DeltaStream, Prompt, Provider, ProviderError};
use crate::config::{OpenAiSettings, UpstreamSettings};
use crate::rag::prompt::{render_user_message, system_text};

const NAME: &str = "openai";

pub struct OpenAiProvider {
    endpoint: Arc<Endpoint>,
    model: String,
}

impl OpenAiProvider {
    pub fn new(settings: &OpenAiSettings, upstream: &UpstreamSettings) -> Self {
        let auth = format!("Bearer {}", settings.api_key.expose());
        OpenAiProvider {
            endpoint: Arc::new(Endpoint {
                provider: NAME,
                url: format!("{}/chat/completions", settings.base_url),
                headers: vec![Endpoint::secret_header("authorization", &auth)],
                secret: settings.api_key.clone(),
                settings: upstream.clone(),
            }),
            model: settings.model.clone(),
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    /// `max_tokens`, not `max_completion_tokens`: the one Ollama, vLLM and llama.cpp read
    /// as well (OpenAI still accepts it for non-reasoning models).
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The system prompt (with the client's own after it), the conversation's earlier turns as
/// they were said, then the user message with this turn's passages and question; the
/// client's sampling parameters as they were given.
pub fn request_body(model: &str, prompt: &Prompt) -> Bytes {
    let user = render_user_message(prompt);
    let system = system_text(prompt);
    let mut messages = Vec::with_capacity(prompt.history.len() + 2);
    messages.push(Message {
        role: "system",
        content: &system,
    });
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
        messages,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        temperature: prompt.sampling.temperature,
        top_p: prompt.sampling.top_p,
        max_tokens: prompt.sampling.max_tokens,
        stop: &prompt.sampling.stop,
        seed: prompt.sampling.seed,
        user: prompt.sampling.user.as_deref(),
    };
    // Plain strings and bools: serialising cannot fail.
    Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self, prompt: Prompt) -> DeltaStream {
        let model = prompt.model.clone().unwrap_or_else(|| self.model.clone());
        let body = request_body(&model, &prompt);
        let endpoint = self.endpoint.clone();
        let settings = endpoint.settings.clone();
        retry::with_retries(NAME, settings, move || {
            http::attempt(
                endpoint.clone(),
                body.clone(),
                model.clone(),
                ChunkParser::default(),
            )
        })
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow, deserialize_with = "json::first")]
    choices: Option<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, borrow)]
    error: Option<ErrorField<'a>>,
    /// Older vLLM sends errors as `{"object":"error","message":…}`.
    #[serde(default, borrow)]
    object: Option<Str<'a>>,
    #[serde(default, borrow)]
    message: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChoiceDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ChoiceDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Str<'a>>,
    #[serde(default, borrow)]
    refusal: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField<'a> {
    Object {
        #[serde(default, borrow)]
        message: Option<Str<'a>>,
        #[serde(default, rename = "type", borrow)]
        kind: Option<Str<'a>>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    },
    Text(#[serde(borrow)] Str<'a>),
}

/// Parses OpenAI-shaped chunks into deltas.
#[derive(Default)]
pub struct ChunkParser {
    finished: bool,
    chunks: chunk_scan::OpenAiChunks,
}

fn stream_error(message: String, retryable: bool) -> ProviderError {
    ProviderError::Upstream {
        provider: NAME,
        code: "upstream_error",
        message: json::bounded(&message),
        retryable,
    }
}

impl ChunkParser {
    /// Every chunk the fast path leaves: finish reasons, usage, errors, anything unusual.
    fn parse_with_serde(
        &mut self,
        data: &str,
        out: &mut VecDeque<Delta>,
    ) -> Result<bool, ProviderError> {
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| ProviderError::Protocol {
            provider: NAME,
            message: format!("a chunk is not valid JSON: {e}"),
        })?;
        if let Some(error) = chunk.error {
            return Err(Self::error(error));
        }
        if chunk.object.as_ref().is_some_and(|o| o.as_str() == "error") {
            let message = chunk.message.map_or_else(String::new, Str::into_string);
            return Err(stream_error(message, false));
        }
        if let Some(choice) = chunk.choices {
            if let Some(delta) = choice.delta {
                // A refusal is the model's answer too; the client should see it.
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.as_str().is_empty() {
                        out.push_back(Delta::Text(text.into_string()));
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finished = true;
                out.push_back(Delta::Finish(reason.into_string()));
            }
        }
        if let Some(usage) = chunk.usage {
            if let Some(tokens) = usage.prompt_tokens {
                out.push_back(Delta::InputTokens(tokens));
            }
            if let Some(tokens) = usage.completion_tokens {
                out.push_back(Delta::Usage {
                    output_tokens: tokens,
                });
            }
        }
        Ok(false)
    }

    fn error(field: ErrorField<'_>) -> ProviderError {
        match field {
            ErrorField::Object {
                message,
                kind,
                code,
            } => {
                let kind = kind.as_ref().map_or("", |k| k.as_str());
                // vLLM puts the HTTP status in `code`; OpenAI uses names like server_error.
                let server_side = kind.contains("server")
                    || kind.contains("overload")
                    || kind.contains("api_error")
                    || code.and_then(|c| c.as_u64()).is_some_and(|c| c >= 500);
                let message = message.map_or_else(
                    || "an error occurred during streaming".to_owned(),
                    Str::into_string,
                );
                stream_error(message, server_side)
            }
            ErrorField::Text(text) => stream_error(text.into_string(), false),
        }
    }
}

impl EventParser for ChunkParser {
    fn event(
        &mut self,
        event: &SseEvent<'_>,
        out: &mut VecDeque<Delta>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim_start();
        if data.starts_with("[DONE]") {
            return Ok(true);
        }
        // Nearly every chunk is one piece of text: read it without serde when sure.
        if let Some(text) = self.chunks.content(data) {
            if !text.is_empty() {
                out.push_back(Delta::Text(text.into_owned()));
            }
            return Ok(false);
        }
        self.parse_with_serde(data, out)
    }

    fn end(
        &mut self,
        unterminated: Option<SseEvent<'_>>,
        out: &mut VecDeque<Delta>,
    ) -> Result<(), ProviderError> {
        if let Some(event) = unterminated {
            // Some compatible servers end with `data: [DONE]` and no blank line.
            if self.event(&event, out)? {
                return Ok(());
            }
        }
        // Without [DONE] but with a finish reason the answer is whole; lenient on purpose.
        if self.finished {
            return Ok(());
        }
        Err(ProviderError::Interrupted { provider: NAME })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::prompt::SYSTEM_PROMPT;

    /// Runs a whole body through the decoder and the parser.
    fn parse(body: &str) -> (Vec<Delta>, Result<(), ProviderError>) {
        crate::providers::http::parse_body(ChunkParser::default(), body)
    }

    fn text(t: &str) -> Delta {
        Delta::Text(t.into())
    }

    const RECORDED: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1727346168,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_5050236cbd\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"I'm\"},\"logprobs\":null,\"finish_reason\":null}],\"obfuscation\":\"xyz\"}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" fine\\n\\\"ok\\\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":30,\"total_tokens\":44,\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_recorded_stream_gives_text_finish_and_usage() {
        let (deltas, end) = parse(RECORDED);
        assert_eq!(end, Ok(()));
        assert_eq!(
            deltas,
            vec![
                text("I'm"),
                text(" fine\n\"ok\""),
                Delta::Finish("stop".into()),
                Delta::InputTokens(14),
                Delta::Usage { output_tokens: 30 },
            ]
        );
    }

    #[test]
    fn null_content_and_role_only_chunks_add_nothing() {
        let body = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
                    data: [DONE]\n\n";
        let (deltas, end) = parse(body);
        assert_eq!((deltas, end), (vec![text("Hi")], Ok(())));
    }

    #[test]
    fn an_error_chunk_after_200_is_a_failure_even_if_done_follows() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                    data: {\"error\":{\"message\":\"boom\",\"type\":\"InternalServerError\",\"code\":500}}\n\n\
                    data: [DONE]\n\n";
        let (deltas, end) = parse(body);
        assert_eq!(deltas, vec![text("Hi")]);
        let err = end.unwrap_err();
        assert_eq!(err.code(), "upstream_error");
        assert!(err.retryable());
        assert!(err.to_string().contains("boom"));
        let (_, end) = parse("data: {\"object\":\"error\",\"message\":\"old vllm\"}\n\n");
        assert!(end.unwrap_err().to_string().contains("old vllm"));
        let (_, end) = parse("data: {\"error\":\"plain\"}\n\n");
        assert!(end.unwrap_err().to_string().contains("plain"));
    }

    #[test]
    fn a_malformed_chunk_is_a_protocol_error() {
        let (_, end) = parse("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}\n\n");
        assert_eq!(end.unwrap_err().code(), "upstream_protocol");
    }

    #[test]
    fn a_stream_cut_before_its_end_is_interrupted() {
        let (deltas, end) = parse("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n");
        assert_eq!(deltas, vec![text("Hi")]);
        assert_eq!(end.unwrap_err().code(), "upstream_interrupted");
    }

    #[test]
    fn an_unterminated_done_or_a_finish_reason_completes_the_stream() {
        let (_, end) =
            parse("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]");
        assert_eq!(end, Ok(()));
        let (_, end) =
            parse("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n");
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn usage_on_every_chunk_keeps_the_running_total() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"completion_tokens\":1}}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"completion_tokens\":2}}\n\n\
                    data: [DONE]\n\n";
        let (deltas, _) = parse(body);
        assert_eq!(deltas.last(), Some(&Delta::Usage { output_tokens: 2 }));
    }

    #[test]
    fn the_request_asks_for_a_stream_with_usage_and_the_rag_prompt() {
        let prompt = Prompt {
            question: "Why?".into(),
            passages: Vec::new().into(),
            terms: vec![],
            model: None,
            history: vec![],
            ..Prompt::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("gpt-4o-mini", &prompt)).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], SYSTEM_PROMPT);
        assert_eq!(body["messages"][1]["role"], "user");
        assert!(body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .ends_with("Question: Why?"));
        // Nothing the client did not ask for.
        for absent in ["temperature", "top_p", "max_tokens", "stop", "seed", "user"] {
            assert!(body.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn a_client_system_message_and_sampling_parameters_are_passed_on() {
        use crate::providers::Sampling;
        let prompt = Prompt {
            question: "Why?".into(),
            system: Some("Answer in French.".into()),
            sampling: Sampling {
                temperature: Some(0.2),
                top_p: Some(0.9),
                max_tokens: Some(64),
                stop: vec!["END".into()],
                seed: Some(7),
                user: Some("u-1".into()),
            },
            ..Prompt::default()
        };
        let body: serde_json::Value = serde_json::from_slice(&request_body("m", &prompt)).unwrap();
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with(crate::rag::prompt::SYSTEM_PROMPT));
        assert!(system.ends_with("Answer in French."));
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["top_p"], 0.9);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["stop"], serde_json::json!(["END"]));
        assert_eq!(body["seed"], 7);
        assert_eq!(body["user"], "u-1");
    }

    #[test]
    fn history_goes_between_the_system_prompt_and_the_question() {
        use crate::providers::{ChatTurn, Role};
        let turn = |role, content: &str| ChatTurn {
            role,
            content: content.into(),
        };
        let prompt = Prompt {
            question: "When was it built?".into(),
            history: vec![
                turn(Role::User, "Tell me about the tower"),
                turn(Role::Assistant, "It is in Paris [1]."),
            ],
            ..Prompt::default()
        };
        let body: serde_json::Value = serde_json::from_slice(&request_body("m", &prompt)).unwrap();
        let messages: Vec<(&str, &str)> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0], ("system", SYSTEM_PROMPT));
        assert_eq!(messages[1], ("user", "Tell me about the tower"));
        assert_eq!(messages[2], ("assistant", "It is in Paris [1]."));
        assert_eq!(messages[3].0, "user");
        assert!(messages[3].1.ends_with("Question: When was it built?"));
    }

    /// The scanner's fast path agrees with serde on every chunk it reads: generated chunks
    /// of every shape (errors, finish reasons, usage, refusals, duplicate and escaped keys,
    /// escapes of every kind, lone surrogates), and the same chunks with a byte inserted or
    /// removed anywhere.
    mod fast_path_agrees_with_serde {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::Index;

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-zA-Z0-9 .,!?'éü€😀\\[\\]{}:]{0,6}",
                1 => prop_oneof![
                    Just("\\n"), Just("\\\""), Just("\\\\"), Just("\\/"), Just("\\t"),
                    Just("\\u00e9"), Just("\\ud83d\\ude00"), Just("\\ud800"), Just("\\udc00x"),
                    Just("\\x"), Just("\\u12"), Just("\t"), Just("\u{1}"),
                ].prop_map(str::to_owned),
            ]
        }

        fn string() -> impl Strategy<Value = String> {
            vec(piece(), 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                string(),
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("-12.5e3".to_owned()),
                Just("0".to_owned()),
                Just("[1,{\"a\":[]},\"x\"]".to_owned()),
                Just("{}".to_owned()),
            ]
        }

        fn fields(
            names: &'static [&'static str],
            special: impl Strategy<Value = String> + Clone,
        ) -> impl Strategy<Value = String> {
            vec(
                (
                    proptest::sample::select(names),
                    prop_oneof![2 => special, 1 => value()],
                ),
                0..5,
            )
            .prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            })
        }

        fn chunk() -> impl Strategy<Value = String> {
            let delta = fields(
                &["content", "refusal", "role", "c\\u006fntent"],
                prop_oneof![string(), Just("null".to_owned())],
            );
            let choice = fields(
                &["delta", "finish_reason", "index", "logprobs"],
                prop_oneof![delta, Just("null".to_owned()), Just("\"stop\"".to_owned())],
            );
            let choices = vec(choice, 0..3).prop_map(|c| format!("[{}]", c.join(",")));
            fields(
                &[
                    "choices",
                    "usage",
                    "object",
                    "error",
                    "message",
                    "id",
                    "created",
                    "obfuscation",
                ],
                prop_oneof![
                    3 => choices,
                    1 => Just("{\"completion_tokens\":7}".to_owned()),
                    1 => Just("\"error\"".to_owned()),
                    1 => Just("\"chat.completion.chunk\"".to_owned()),
                ],
            )
        }

        /// Two chunks of one shape with different texts, as one stream sends them.
        fn likely_pair() -> impl Strategy<Value = (String, String)> {
            let extra = proptest::sample::select(
                &[
                    "",
                    ",\"usage\":null",
                    ",\"usage\":{}",
                    ",\"object\":\"error\"",
                    ",\"choices\":[]",
                    ",\"x\":[[{\"y\":-0.5E+2}]]",
                    ",\"error\":null",
                    " ",
                ][..],
            );
            let inner_extra = proptest::sample::select(
                &[
                    "",
                    ",\"role\":\"assistant\"",
                    ",\"refusal\":null",
                    ",\"refusal\":\"no\"",
                    ",\"content\":\"b\"",
                    ",\"tool_calls\":[]",
                ][..],
            );
            let finish = proptest::sample::select(&["null", "null", "null", "\"stop\""][..]);
            (string(), string(), extra, inner_extra, finish, any::<bool>()).prop_map(|(a, b, extra, inner, finish, swap)| {
                let shape = |content: &str| {
                let choice = format!("{{\"index\":0,\"delta\":{{\"content\":{content}{inner}}},\"logprobs\":null,\"finish_reason\":{finish}}}");
                if swap {
                    format!("{{\"choices\":[{choice}]{extra},\"id\":\"c1\",\"object\":\"chat.completion.chunk\"}}")
                } else {
                    format!("{{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1727346168{extra},\"choices\":[{choice}]}}")
                }
                };
                (shape(&a), shape(&b))
            })
        }

        /// Chunks of the common shape, fields shuffled, with an extra field now and then.
        fn likely() -> impl Strategy<Value = String> {
            likely_pair().prop_map(|(a, _)| a)
        }

        fn any_chunk() -> impl Strategy<Value = String> {
            prop_oneof![1 => chunk(), 2 => likely()]
        }

        fn serde_deltas(data: &str) -> Result<Vec<Delta>, String> {
            let mut out = VecDeque::new();
            ChunkParser::default()
                .parse_with_serde(data, &mut out)
                .map_err(|e| e.to_string())?;
            Ok(out.into_iter().collect())
        }

        fn agree(data: &str) -> Result<(), TestCaseError> {
            agree_after(&mut chunk_scan::OpenAiChunks::default(), data)
        }

        /// What `chunks` (with whatever template it learned before) reads agrees with serde.
        fn agree_after(
            chunks: &mut chunk_scan::OpenAiChunks,
            data: &str,
        ) -> Result<(), TestCaseError> {
            if let Some(text) = chunks.content(data) {
                let expected: Vec<Delta> = if text.is_empty() {
                    vec![]
                } else {
                    vec![Delta::Text(text.into_owned())]
                };
                prop_assert_eq!(serde_deltas(data), Ok(expected), "{}", data);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn on_generated_chunks(data in any_chunk()) {
                agree(&data)?;
            }

            #[test]
            fn on_a_stream_read_by_its_template(
                (first, second) in likely_pair(),
                damaged in any_chunk(),
                at in any::<Index>(),
                insert in "[\"\\\\,:{}\\[\\] a0-]",
            ) {
                let mut chunks = chunk_scan::OpenAiChunks::default();
                agree_after(&mut chunks, &first)?;
                agree_after(&mut chunks, &second)?;
                // The template's own bytes around a damaged text, and other chunks after it.
                let mut bytes = second.clone().into_bytes();
                let i = at.index(bytes.len() + 1);
                bytes.splice(i..i, insert.bytes());
                if let Ok(data) = String::from_utf8(bytes) {
                    agree_after(&mut chunks, &data)?;
                }
                agree_after(&mut chunks, &damaged)?;
                agree_after(&mut chunks, &second)?;
            }

            #[test]
            fn on_damaged_chunks(data in any_chunk(), at in any::<Index>(), insert in proptest::option::of("[\"\\\\,:{}\\[\\] a0-]")) {
                let mut bytes = data.into_bytes();
                let i = at.index(bytes.len() + 1);
                match insert {
                    Some(c) => { bytes.splice(i..i, c.bytes()); }
                    None if i < bytes.len() => { bytes.remove(i); }
                    None => {}
                }
                if let Ok(data) = String::from_utf8(bytes) {
                    agree(&data)?;
                }
            }
        }

        #[test]
        fn the_generator_reaches_the_fast_path() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let fast = (0..2000)
                .filter(|_| {
                    let (a, b) = likely_pair().new_tree(&mut runner).unwrap().current();
                    let mut chunks = chunk_scan::OpenAiChunks::default();
                    chunks.content(&a).is_some()
                        && chunks.by_template(&b).is_some_and(|t| !t.is_empty())
                })
                .count();
            assert!(
                fast > 50,
                "only {fast} of 2000 generated pairs read their second chunk by the template"
            );
        }
    }
}
