use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::answer::{AnswerEvent, DoneMetadata, Source, StreamEvent};
use crate::error::ErrorBody;
use crate::protocol::{FrameEncoder, Piece};
use crate::providers::{Role, Sampling};

fn parse(body: Value) -> Result<ChatRequest, RequestError> {
    parse_request(body.to_string().as_bytes())
}

fn refused(body: Value) -> (String, Option<String>) {
    let e = parse(body).expect_err("refused");
    (e.code.to_owned(), e.param)
}

fn ask(extra: Value) -> Value {
    let mut body = json!({"model": "ragstream", "messages": [{"role": "user", "content": "Hi?"}]});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

#[test]
fn the_last_user_message_is_the_question_and_the_rest_is_history_and_system() {
    let req = parse(json!({
        "model": "ragstream",
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Tell me about the tower"},
            {"role": "assistant", "content": "It is in Paris [1]."},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "When"}, {"type": "text", "text": "was it built?"}]}
        ]
    }))
    .expect("valid");
    assert_eq!(req.question, "When\nwas it built?");
    assert_eq!(
        req.system.as_deref(),
        Some("Answer in French.\n\nBe brief.")
    );
    let earlier: Vec<_> = req
        .earlier
        .iter()
        .map(|t| (t.role, t.content.as_str()))
        .collect();
    assert_eq!(
        earlier,
        [
            (Role::User, "Tell me about the tower"),
            (Role::Assistant, "It is in Paris [1].")
        ]
    );
    assert!(!req.stream && !req.include_usage);
    assert_eq!(req.sampling, Sampling::default());
}

#[test]
fn sampling_parameters_are_read_and_checked() {
    let req = parse(ask(json!({
        "temperature": 0.5, "top_p": 1, "max_tokens": 100, "max_completion_tokens": 50,
        "stop": "END", "seed": -3, "user": "u1", "stream": true,
        "stream_options": {"include_usage": true}
    })))
    .expect("valid");
    assert_eq!(
        req.sampling,
        Sampling {
            temperature: Some(0.5),
            top_p: Some(1.0),
            max_tokens: Some(50),
            stop: vec!["END".into()],
            seed: Some(-3),
            user: Some("u1".into()),
        }
    );
    assert!(req.stream && req.include_usage);
    assert_eq!(
        refused(ask(json!({"temperature": 2.5}))),
        ("invalid_value".into(), Some("temperature".into()))
    );
    assert_eq!(
        refused(ask(json!({"top_p": "x"}))),
        ("invalid_type".into(), Some("top_p".into()))
    );
    assert_eq!(
        refused(ask(json!({"max_tokens": 0}))),
        ("invalid_value".into(), Some("max_tokens".into()))
    );
    assert_eq!(
        refused(ask(json!({"stop": ["a", "b", "c", "d", "e"]}))).1,
        Some("stop".into())
    );
    assert_eq!(refused(ask(json!({"seed": 1.5}))).1, Some("seed".into()));
    assert_eq!(
        refused(ask(json!({"stream_options": {"include_usage": true}}))).1,
        Some("stream_options".into())
    );
}

#[test]
fn features_the_hub_cannot_honour_are_refused_by_name() {
    for (extra, param) in [
        (json!({"n": 2}), "n"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (json!({"tool_choice": "auto"}), "tool_choice"),
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
            "audio",
        ),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
    ] {
        let (code, p) = refused(ask(extra.clone()));
        assert_eq!(code, "unsupported_parameter", "{extra}");
        assert_eq!(p.as_deref(), Some(param), "{extra}");
    }
    // Their neutral values are fine, as are fields the hub does not know.
    parse(ask(json!({
        "n": 1, "tools": [], "tool_choice": "none", "logprobs": false, "modalities": ["text"],
        "response_format": {"type": "text"}, "presence_penalty": 0, "logit_bias": {},
        "metadata": {"a": "b"}, "store": false, "parallel_tool_calls": true
    })))
    .expect("neutral values");
}

#[test]
fn bad_messages_are_named() {
    let model = |messages: Value| json!({"model": "ragstream", "messages": messages});
    assert_eq!(
        refused(json!({"messages": [{"role": "user", "content": "q"}]})),
        ("missing_required_parameter".into(), Some("model".into()))
    );
    assert_eq!(refused(model(json!([]))).1.as_deref(), Some("messages"));
    assert_eq!(
        refused(json!({"model": "ragstream"})).0,
        "missing_required_parameter"
    );
    assert_eq!(
        refused(model(json!([{"role": "assistant", "content": "a"}])))
            .1
            .as_deref(),
        Some("messages")
    );
    assert_eq!(
        refused(model(json!([{"role": "user", "content": "  "}])))
            .1
            .as_deref(),
        Some("messages")
    );
    assert_eq!(
        refused(model(
            json!([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}])
        ))
        .1
        .as_deref(),
        Some("messages")
    );
    assert_eq!(
        refused(model(
            json!([{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}])
        ))
        .1
        .as_deref(),
        Some("messages[0].role")
    );
    assert_eq!(
        refused(model(json!([{"role": "robot", "content": "x"}])))
            .1
            .as_deref(),
        Some("messages[0].role")
    );
    assert_eq!(
        refused(model(
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
        ))
        .1
        .as_deref(),
        Some("messages[0].content[0]")
    );
    assert_eq!(
        refused(model(json!([{"role": "user", "content": 5}])))
            .1
            .as_deref(),
        Some("messages[0].content")
    );
    assert_eq!(
        parse_request(b"{not json").unwrap_err().code,
        "invalid_json"
    );
    assert_eq!(parse_request(b"[]").unwrap_err().code, "invalid_type");
}

#[test]
fn model_names_split_into_provider_and_model() {
    assert_eq!(split_model("ragstream"), (None, None));
    assert_eq!(
        split_model("openai:gpt-4o"),
        (Some("openai"), Some("gpt-4o"))
    );
    assert_eq!(
        split_model("openai:llama3:8b"),
        (Some("openai"), Some("llama3:8b"))
    );
    assert_eq!(split_model("offline:"), (Some("offline"), None));
    assert_eq!(split_model("gpt-4o"), (None, Some("gpt-4o")));
}

fn source() -> Source {
    Source {
        number: 1,
        document_id: "d1".into(),
        title: "Tower".into(),
        chunk_id: 7,
        score: 1.5,
        text: "Built in 1889.".into(),
    }
}

fn event(seq: u64, event: StreamEvent) -> AnswerEvent {
    AnswerEvent {
        seq,
        event,
        partial: None,
    }
}

fn done(tokens: u64, reason: &str) -> StreamEvent {
    StreamEvent::Done(Box::new(DoneMetadata {
        answer_id: "a1".into(),
        provider: "offline".into(),
        model: "m".into(),
        ttft_ms: Some(1),
        elapsed_ms: 2,
        tokens,
        input_tokens: 9,
        input_tokens_estimated: true,
        finish_reason: reason.into(),
        sources: Arc::from(vec![source()]),
        conversation_id: None,
    }))
}

fn encode_all(encoder: &mut ChunkEncoder, events: &[AnswerEvent]) -> String {
    let mut buf = Vec::new();
    for ev in events {
        encoder.encode(&mut buf, "a1", &Piece::Event(ev));
    }
    String::from_utf8(buf).expect("utf-8")
}

/// The `data:` payloads of an encoded stream, `[DONE]` as a string.
fn data(stream: &str) -> Vec<Value> {
    stream
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let line = f
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data line");
            serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()))
        })
        .collect()
}

#[test]
fn a_stream_is_role_and_sources_then_content_then_finish_usage_and_done() {
    let mut encoder = ChunkEncoder::new("ragstream", 1_700_000_000, true);
    let out = encode_all(
        &mut encoder,
        &[
            event(1, StreamEvent::Conversation("c9".into())),
            event(2, StreamEvent::Sources(Arc::from(vec![source()]))),
            event(3, StreamEvent::Token("Built in 1889 [1].".into())),
            event(4, done(5, "max_tokens")),
        ],
    );
    assert!(out.starts_with("id: a1:2\ndata: {\"id\":\"chatcmpl-a1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ragstream\",\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"sources\":[{\"number\":1,"), "{out}");
    assert!(out.ends_with("\n\ndata: [DONE]\n\n"), "{out}");
    let frames = data(&out);
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[0]["sources"][0]["documentId"], "d1");
    assert_eq!(frames[0]["conversation_id"], "c9");
    assert_eq!(
        frames[1]["choices"][0]["delta"],
        json!({"content": "Built in 1889 [1]."})
    );
    assert_eq!(frames[1]["usage"], Value::Null);
    assert!(frames[1].get("sources").is_none());
    assert_eq!(frames[2]["choices"][0]["delta"], json!({}));
    assert_eq!(frames[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(frames[3]["choices"], json!([]));
    assert_eq!(
        frames[3]["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14})
    );
    assert_eq!(frames[4], "[DONE]");
}

#[test]
fn without_include_usage_no_chunk_has_a_usage_key() {
    let mut encoder = ChunkEncoder::new("m", 1, false);
    let out = encode_all(
        &mut encoder,
        &[
            event(1, StreamEvent::Sources(Arc::from(vec![]))),
            event(2, done(1, "stop")),
        ],
    );
    let frames = data(&out);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.get("usage").is_none()));
    assert_eq!(frames[1]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn merged_tokens_are_one_chunk_with_the_last_id_and_a_resumed_stream_still_says_the_role() {
    let mut encoder = ChunkEncoder::new("m", 1, false);
    let mut buf = Vec::new();
    encoder.encode(
        &mut buf,
        "a1",
        &Piece::Tokens {
            text: "Hello world",
            last_seq: 9,
        },
    );
    let out = String::from_utf8(buf).unwrap();
    assert!(out.starts_with("id: a1:9\n"), "{out}");
    assert_eq!(
        data(&out)[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "Hello world"})
    );
}

#[test]
fn a_failure_after_the_start_is_an_error_chunk_without_done() {
    let mut encoder = ChunkEncoder::new("m", 1, true);
    let error = ErrorBody {
        code: "upstream_timeout".into(),
        message: "too slow".into(),
    };
    let out = encode_all(
        &mut encoder,
        &[
            event(1, StreamEvent::Token("a".into())),
            event(2, StreamEvent::Error(error)),
        ],
    );
    assert!(!out.contains("[DONE]"), "{out}");
    let frames = data(&out);
    assert_eq!(
        frames[1],
        json!({"error": {"message": "too slow", "type": "timeout_error", "code": "upstream_timeout", "param": null}})
    );
}

#[test]
fn a_non_streaming_completion_carries_message_usage_and_sources() {
    let sources = [source()];
    let body: Value = serde_json::from_slice(&completion_body(&Completion {
        answer_id: "a1",
        created: 5,
        model: "ragstream",
        text: "Built in 1889 [1].",
        finish_reason: "stop",
        tokens: 4,
        input_tokens: 12,
        sources: &sources,
        conversation_id: None,
    }))
    .unwrap();
    assert_eq!(body["id"], "chatcmpl-a1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "Built in 1889 [1].", "refusal": null})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16})
    );
    assert_eq!(body["sources"][0]["title"], "Tower");
    assert!(body.get("conversation_id").is_none());
}

#[test]
fn errors_have_openai_shape_and_types_by_status() {
    let body: Value =
        serde_json::from_slice(&error_body(400, "unsupported_parameter", "no", Some("n"))).unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "no", "type": "invalid_request_error", "code": "unsupported_parameter", "param": "n"}})
    );
    assert_eq!(error_type(401), "authentication_error");
    assert_eq!(error_type(429), "rate_limit_error");
    assert_eq!(error_type(502), "server_error");
    let models: Value = serde_json::from_slice(&models_body(&["ragstream".into()], 3)).unwrap();
    assert_eq!(
        models,
        json!({"object": "list", "data": [{"id": "ragstream", "object": "model", "created": 3, "owned_by": "ragstream"}]})
    );
}

/// What this encoder writes, the hub's own OpenAI provider reads back: the text, the
/// finish reason and the usage; and an error chunk as an upstream failure.
#[test]
fn the_hubs_own_openai_parser_reads_what_the_encoder_writes() {
    use crate::providers::http::parse_body;
    use crate::providers::openai::ChunkParser;
    use crate::providers::Delta;

    let tokens = ["Hé", "llo, 日本", " 🦀 \"quoted\"\n", "end [1]."];
    let mut events = vec![event(1, StreamEvent::Sources(Arc::from(vec![source()])))];
    for (i, t) in tokens.iter().enumerate() {
        events.push(event(2 + i as u64, StreamEvent::Token((*t).into())));
    }
    events.push(event(9, done(7, "stop")));
    let body = encode_all(&mut ChunkEncoder::new("ragstream", 1, true), &events);
    let (deltas, end) = parse_body(ChunkParser::default(), &body);
    assert_eq!(end, Ok(()));
    let text: String = deltas
        .iter()
        .filter_map(|d| match d {
            Delta::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, tokens.concat());
    assert!(deltas.contains(&Delta::Finish("stop".into())), "{deltas:?}");
    assert!(
        deltas.contains(&Delta::Usage { output_tokens: 7 }),
        "{deltas:?}"
    );

    let error = ErrorBody {
        code: "upstream_timeout".into(),
        message: "too slow".into(),
    };
    let body = encode_all(
        &mut ChunkEncoder::new("ragstream", 1, false),
        &[
            event(1, StreamEvent::Token("a".into())),
            event(2, StreamEvent::Error(error)),
        ],
    );
    let (deltas, end) = parse_body(ChunkParser::default(), &body);
    assert_eq!(deltas, [Delta::Text("a".into())]);
    let e = end.expect_err("an upstream failure");
    assert!(e.to_string().contains("too slow"), "{e}");
}
