//! The real providers (OpenAI, Anthropic) against mock upstreams that speak their exact
//! wire formats: text reassembled over SSE, WebSocket and JSON, retries and failover
//! counted at the mock, timeouts, errors with their codes, cancellation seen by the
//! upstream, and the hub's slots released after every scenario.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ragstream::config::{
    AllowedModel, AnthropicSettings, OpenAiSettings, ProviderKind, Secret, UpstreamSettings,
};

use crate::helpers::{spawn_app_with, Options, SseFrame, SseReader, TestApp, TOWER};
use crate::support::mock_upstream::{Ending, Flavor, MockUpstream, Reply, StreamEnd, TOKENS};

const OPENAI_KEY: &str = "sk-test-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789";
const QUESTION: &str = "How tall is the Eiffel Tower?";
/// How long a client may take to stop its upstream after leaving.
const CANCEL_BUDGET: Duration = Duration::from_millis(100);

struct Harness {
    app: TestApp,
    openai: MockUpstream,
    anthropic: MockUpstream,
}

/// Fast retries and generous timeouts; tests shorten what they exercise.
fn upstream() -> UpstreamSettings {
    UpstreamSettings {
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_retries: 2,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        retry_after_max: Duration::from_secs(5),
        max_event_bytes: 64 * 1024,
    }
}

async fn spawn(
    chain: &[ProviderKind],
    edit: impl FnOnce(&mut UpstreamSettings, &mut Vec<AllowedModel>) + 'static,
) -> Harness {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let anthropic = MockUpstream::start(Flavor::Anthropic).await;
    let (openai_url, anthropic_url) = (openai.base_url.clone(), anthropic.base_url.clone());
    let chain = chain.to_vec();
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            s.providers = chain;
            s.openai = Some(OpenAiSettings {
                api_key: Secret::new(OPENAI_KEY),
                base_url: openai_url,
                model: "gpt-test".into(),
            });
            s.anthropic = Some(AnthropicSettings {
                api_key: Secret::new(ANTHROPIC_KEY),
                base_url: anthropic_url,
                model: "claude-test".into(),
                max_tokens: 256,
            });
            let mut up = upstream();
            let mut allowed = Vec::new();
            edit(&mut up, &mut allowed);
            s.upstream = up;
            s.allowed_models = allowed;
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    Harness {
        app,
        openai,
        anthropic,
    }
}

async fn spawn_one(kind: ProviderKind) -> Harness {
    spawn(&[kind], |_, _| {}).await
}

impl Harness {
    async fn open_sse(
        &self,
        params: &[(&str, &str)],
    ) -> SseReader<impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>
    {
        let res = self
            .app
            .client
            .get(self.app.url("/api/v1/ask/stream"))
            .query(&params)
            .expect("query")
            .insert_header(("X-API-Key", self.app.admin_key.as_str()))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status().as_u16(), 200);
        SseReader::new(res)
    }

    /// Every frame of one SSE answer.
    async fn sse(&self, params: &[(&str, &str)]) -> Vec<SseFrame> {
        self.open_sse(params).await.collect().await
    }

    async fn ask_json(&self, body: Value) -> (u16, Value) {
        self.app
            .post_json("/api/v1/ask", &self.app.admin_key, body)
            .await
    }

    async fn settled(&self) {
        self.app
            .wait_for_active_streams(0, Duration::from_secs(2))
            .await;
    }
}

/// The streamed text and the terminal frame's JSON.
fn text_and_end(frames: &[SseFrame]) -> (String, Value) {
    let mut text = String::new();
    for f in frames.iter().filter(|f| f.event.is_none()) {
        if let Some(t) = f.json()["token"].as_str() {
            text.push_str(t);
        }
    }
    let end = frames.last().expect("frames").json();
    assert_eq!(end["done"], true, "{end}");
    (text, end)
}

fn whole_text() -> String {
    TOKENS.concat()
}

#[actix_web::test]
async fn an_openai_stream_is_reassembled_exactly_over_sse_with_its_metadata() {
    let h = spawn_one(ProviderKind::OpenAi).await;

    let frames = h.sse(&[("question", QUESTION)]).await;
    let (text, end) = text_and_end(&frames);

    assert_eq!(text, whole_text());
    // Tokens that wait for the socket go out merged (fewer frames on a busy machine).
    assert!(
        (3..=1 + TOKENS.len() + 1).contains(&frames.len()),
        "sources, tokens, done: {frames:?}"
    );
    assert_eq!(frames[0].event.as_deref(), Some("sources"));
    let meta = &end["metadata"];
    assert_eq!(meta["provider"], "openai");
    assert_eq!(meta["model"], "gpt-test");
    assert_eq!(meta["finish_reason"], "stop");
    // The usage chunk's count, not the number of deltas.
    assert_eq!(meta["tokens"], 42);
    assert!(meta["ttft_ms"].is_u64());
    // The request the upstream saw.
    let requests = h.openai.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.authorization.as_deref(),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(req.body["model"], "gpt-test");
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"]["include_usage"], true);
    assert_eq!(req.body["messages"][0]["role"], "system");
    let user = req.body["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("[1] Tower") && user.ends_with(QUESTION),
        "{user}"
    );
    assert_eq!(
        h.openai.streams()[0].end.map(|e| e.1),
        Some(StreamEnd::Completed)
    );
    h.settled().await;
}

#[actix_web::test]
async fn an_anthropic_stream_is_reassembled_exactly_over_websocket() {
    let h = spawn_one(ProviderKind::Anthropic).await;

    let mut ws = h.app.open_ws(&h.app.admin_key).await;
    ws.send_json(json!({"message": QUESTION, "id": "c1"})).await;
    let (text, end) = ws.answer("c1").await;

    assert_eq!(text, whole_text());
    let meta = &end["metadata"];
    assert_eq!(meta["provider"], "anthropic");
    assert_eq!(meta["model"], "claude-test");
    // end_turn, in the vocabulary every provider shares.
    assert_eq!(meta["finish_reason"], "stop");
    assert_eq!(meta["tokens"], 42);
    let req = &h.anthropic.requests()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.api_key.as_deref(), Some(ANTHROPIC_KEY));
    assert_eq!(req.version.as_deref(), Some("2023-06-01"));
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["max_tokens"], 256);
    assert!(req.body["system"].as_str().unwrap().contains("Cite"));
    h.settled().await;
}

#[actix_web::test]
async fn a_json_ask_gets_the_whole_answer_from_either_provider() {
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        let h = spawn_one(kind).await;
        let (status, body) = h.ask_json(json!({"question": QUESTION})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["answer"], whole_text());
        assert_eq!(body["metadata"]["provider"], kind.name());
        assert_eq!(body["sources"][0]["title"], "Tower");
        h.settled().await;
    }
}

#[actix_web::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    h.openai.push(Reply::Status {
        status: 429,
        retry_after: Some("1"),
        message: "Rate limit reached".into(),
    });
    h.openai.push(Reply::status(500, "The server had an error"));

    let frames = h.sse(&[("question", QUESTION)]).await;
    let (text, end) = text_and_end(&frames);

    assert_eq!(text, whole_text());
    assert_eq!(end["metadata"]["provider"], "openai");
    let at: Vec<Instant> = h.openai.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3, "429, 500, then the answer");
    let after_429 = at[1] - at[0];
    let after_500 = at[2] - at[1];
    assert!(
        after_429 >= Duration::from_millis(950),
        "Retry-After: 1 waited {after_429:?}"
    );
    // Backoff for the second retry: 40 ms less up to a quarter of jitter.
    assert!(
        after_500 >= Duration::from_millis(30),
        "backoff {after_500:?}"
    );
    assert!(
        after_500 < Duration::from_millis(900),
        "backoff {after_500:?}"
    );
    h.settled().await;
}

#[actix_web::test]
async fn a_retry_after_longer_than_the_limit_is_not_waited_for() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    h.openai.push(Reply::Status {
        status: 429,
        retry_after: Some("3600"),
        message: "You exceeded your current quota".into(),
    });

    let (status, body) = h.ask_json(json!({"question": QUESTION})).await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("quota"));
    assert_eq!(h.openai.requests().len(), 1);
    h.settled().await;
}

#[actix_web::test]
async fn an_overloaded_anthropic_is_retried_then_openai_answers() {
    let h = spawn(&[ProviderKind::Anthropic, ProviderKind::OpenAi], |_, _| {}).await;
    h.anthropic.set_default(Reply::status(529, "Overloaded"));

    let frames = h.sse(&[("question", QUESTION)]).await;
    let (text, end) = text_and_end(&frames);

    assert_eq!(text, whole_text());
    assert_eq!(end["metadata"]["provider"], "openai");
    assert_eq!(end["metadata"]["model"], "gpt-test");
    // One attempt and two retries at Anthropic, then one request to OpenAI.
    assert_eq!(h.anthropic.requests().len(), 3);
    assert_eq!(h.openai.requests().len(), 1);
    h.settled().await;
}

#[actix_web::test]
async fn a_failure_after_the_first_token_neither_retries_nor_fails_over() {
    let h = spawn(&[ProviderKind::Anthropic, ProviderKind::OpenAi], |_, _| {}).await;
    h.anthropic
        .push(Reply::ending(&["Part", "ial"], Ending::ErrorEvent));

    let frames = h.sse(&[("question", QUESTION)]).await;

    let mut text = String::new();
    for f in &frames[1..frames.len() - 1] {
        text.push_str(f.json()["token"].as_str().unwrap());
    }
    assert_eq!(text, "Partial");
    let end = frames.last().unwrap().json();
    assert_eq!(end["done"], true);
    assert_eq!(end["error"]["code"], "upstream_overloaded");
    assert!(end["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Overloaded"));
    // The error keeps what was produced until then.
    let meta = &end["metadata"];
    assert_eq!(meta["provider"], "anthropic");
    assert_eq!(meta["tokens"], 2);
    assert_eq!(meta["finish_reason"], "error");
    assert!(meta["ttft_ms"].is_u64());
    assert_eq!(h.anthropic.requests().len(), 1);
    assert_eq!(h.openai.requests().len(), 0);
    h.settled().await;
}

#[actix_web::test]
async fn a_mid_stream_error_over_json_returns_the_partial_answer_with_502() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    h.openai
        .push(Reply::ending(&["Half", " an answer"], Ending::ErrorEvent));

    let (status, body) = h.ask_json(json!({"question": QUESTION})).await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(body["answer"], "Half an answer");
    assert_eq!(body["metadata"]["tokens"], 2);
    assert_eq!(body["metadata"]["finish_reason"], "error");
    h.settled().await;
}

#[actix_web::test]
async fn an_unauthorized_key_fails_at_once_with_the_upstream_message_but_never_the_key() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    // A careless upstream that echoes the key whole.
    h.openai.set_default(Reply::status(
        401,
        &format!("Incorrect API key provided: {OPENAI_KEY}."),
    ));

    let frames = h.sse(&[("question", QUESTION)]).await;
    let (_, end) = text_and_end(&frames);
    let (status, body) = h.ask_json(json!({"question": QUESTION})).await;

    assert_eq!(end["error"]["code"], "upstream_auth");
    let message = end["error"]["message"].as_str().unwrap();
    assert!(message.contains("Incorrect API key provided"), "{message}");
    assert!(message.contains("401"), "{message}");
    for shown in [end.to_string(), body.to_string()] {
        assert!(!shown.contains(OPENAI_KEY), "{shown}");
    }
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_auth");
    // Not retried: one request per answer.
    assert_eq!(h.openai.requests().len(), 2);
    h.settled().await;
}

#[actix_web::test]
async fn a_malformed_chunk_ends_the_answer_with_upstream_protocol() {
    for (kind, mock) in [(ProviderKind::OpenAi, 0), (ProviderKind::Anthropic, 1)] {
        let h = spawn_one(kind).await;
        let upstream = [&h.openai, &h.anthropic][mock];
        upstream.push(Reply::ending(&["One", " two"], Ending::Malformed));

        let frames = h.sse(&[("question", QUESTION)]).await;
        let end = frames.last().unwrap().json();

        assert_eq!(end["error"]["code"], "upstream_protocol", "{kind:?}: {end}");
        assert_eq!(end["metadata"]["tokens"], 2);
        h.settled().await;
    }
}

#[actix_web::test]
async fn a_reset_before_the_first_token_is_retried_and_after_it_is_reported() {
    let h = spawn_one(ProviderKind::Anthropic).await;
    h.anthropic.push(Reply::ending(&[], Ending::Reset));

    let (status, body) = h.ask_json(json!({"question": QUESTION})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["answer"], whole_text());
    assert_eq!(h.anthropic.requests().len(), 2);

    h.anthropic
        .push(Reply::ending(&["Cut", " off"], Ending::Reset));
    let frames = h.sse(&[("question", QUESTION)]).await;
    let end = frames.last().unwrap().json();
    assert_eq!(end["error"]["code"], "upstream_interrupted", "{end}");
    assert_eq!(end["metadata"]["tokens"], 2);
    assert_eq!(h.anthropic.requests().len(), 3);
    h.settled().await;
}

#[actix_web::test]
async fn an_upstream_that_never_sends_a_token_ends_with_upstream_timeout() {
    let h = spawn(&[ProviderKind::OpenAi], |up, _| {
        up.first_token_timeout = Duration::from_millis(300);
    })
    .await;
    h.openai.push(Reply::ending(&[], Ending::Stall));

    let started = Instant::now();
    let frames = h.sse(&[("question", QUESTION)]).await;
    let waited = started.elapsed();

    let end = frames.last().unwrap().json();
    assert_eq!(end["error"]["code"], "upstream_timeout", "{end}");
    assert!(end["metadata"]["ttft_ms"].is_null());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // A timeout is not retried, and the hub hung up on the stalled upstream.
    assert_eq!(h.openai.requests().len(), 1);
    let log = h.openai.wait_for_stream_end(Duration::from_secs(1)).await;
    assert_eq!(log.end.map(|e| e.1), Some(StreamEnd::Disconnected));
    h.settled().await;
}

#[actix_web::test]
async fn an_upstream_that_stalls_between_tokens_ends_with_upstream_timeout() {
    let h = spawn(&[ProviderKind::Anthropic], |up, _| {
        up.idle_timeout = Duration::from_millis(300);
    })
    .await;
    h.anthropic
        .push(Reply::ending(&["So", " far"], Ending::Stall));

    let (status, body) = h.ask_json(json!({"question": QUESTION})).await;

    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(body["answer"], "So far");
    assert_eq!(body["metadata"]["tokens"], 2);
    h.settled().await;
}

#[actix_web::test]
async fn an_unreachable_upstream_is_retried_then_reported() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            s.providers = vec![ProviderKind::OpenAi];
            s.openai = Some(OpenAiSettings {
                api_key: Secret::new(OPENAI_KEY),
                base_url: format!("http://127.0.0.1:{port}/v1"),
                model: "gpt-test".into(),
            });
            s.upstream = UpstreamSettings {
                max_retries: 1,
                ..upstream()
            };
        })),
        ..Options::default()
    })
    .await;

    let (status, body) = app
        .post_json("/api/v1/ask", &app.admin_key, json!({"question": QUESTION}))
        .await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(!body.to_string().contains(OPENAI_KEY));
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

/// Asserts the latest upstream stream saw its client leave within the budget of `left`.
async fn assert_upstream_closed(mock: &MockUpstream, left: Instant, what: &str) {
    let log = mock.wait_for_stream_end(Duration::from_secs(2)).await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(end, StreamEnd::Disconnected, "{what}");
    let latency = at.saturating_duration_since(left);
    eprintln!(
        "{what}: the upstream saw the disconnect {latency:?} after the client left, {} tokens in",
        log.tokens_sent
    );
    assert!(latency < CANCEL_BUDGET, "{what}: {latency:?}");
    assert!(log.tokens_sent < 50, "{what}: the upstream ran on");
}

#[actix_web::test]
async fn an_sse_client_that_leaves_closes_the_upstream_connection_within_100ms() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    h.openai.push(Reply::slow(100, Duration::from_millis(30)));

    let mut reader = h.open_sse(&[("question", QUESTION)]).await;
    assert_eq!(
        reader.next().await.unwrap().event.as_deref(),
        Some("sources")
    );
    assert_eq!(reader.next().await.unwrap().json()["token"], "t0 ");
    let left = Instant::now();
    drop(reader);

    assert_upstream_closed(&h.openai, left, "SSE").await;
    h.settled().await;
}

#[actix_web::test]
async fn a_websocket_close_closes_the_upstream_connection_within_100ms() {
    let h = spawn_one(ProviderKind::Anthropic).await;
    h.anthropic
        .push(Reply::slow(100, Duration::from_millis(30)));

    let mut ws = h.app.open_ws(&h.app.admin_key).await;
    ws.send_json(json!({"message": QUESTION, "id": "c1"})).await;
    loop {
        let frame = ws.next_json().await;
        if frame["token"].is_string() {
            break;
        }
    }
    let left = Instant::now();
    {
        use futures_util::SinkExt;
        let _ = ws.framed.send(awc::ws::Message::Close(None)).await;
    }
    drop(ws);

    assert_upstream_closed(&h.anthropic, left, "WebSocket").await;
    h.settled().await;
}

#[actix_web::test]
async fn a_json_client_that_drops_closes_the_upstream_connection_within_100ms() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    h.openai.push(Reply::slow(100, Duration::from_millis(30)));

    let request = h
        .app
        .client
        .post(h.app.url("/api/v1/ask"))
        .insert_header(("X-API-Key", h.app.admin_key.as_str()))
        .send_json(&json!({"question": QUESTION}));
    let pending = actix_web::rt::spawn(async move {
        let _ = request.await;
    });
    h.openai
        .wait_for_tokens_sent(2, Duration::from_secs(5))
        .await;
    let left = Instant::now();
    pending.abort();

    assert_upstream_closed(&h.openai, left, "JSON").await;
    h.settled().await;
}

#[actix_web::test]
async fn a_client_leaving_while_the_upstream_is_silent_still_closes_it_within_100ms() {
    let h = spawn_one(ProviderKind::Anthropic).await;
    h.anthropic.push(Reply::ending(&["Waiting"], Ending::Stall));

    let mut reader = h.open_sse(&[("question", QUESTION)]).await;
    reader.next().await.unwrap();
    assert_eq!(reader.next().await.unwrap().json()["token"], "Waiting");
    // Nothing flows now in either direction.
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    let left = Instant::now();
    drop(reader);

    assert_upstream_closed(&h.anthropic, left, "SSE, silent upstream").await;
    h.settled().await;
}

#[actix_web::test]
async fn requests_may_choose_an_allowed_provider_and_model() {
    let h = spawn(
        &[ProviderKind::Anthropic, ProviderKind::OpenAi],
        |_, allowed| {
            allowed.push(AllowedModel {
                provider: ProviderKind::OpenAi,
                model: Some("gpt-4o".into()),
            });
        },
    )
    .await;

    // SSE, query string: provider and model.
    let frames = h
        .sse(&[
            ("question", QUESTION),
            ("provider", "openai"),
            ("model", "gpt-4o"),
        ])
        .await;
    let (text, end) = text_and_end(&frames);
    assert_eq!(text, whole_text());
    assert_eq!(end["metadata"]["provider"], "openai");
    assert_eq!(end["metadata"]["model"], "gpt-4o");
    assert_eq!(h.openai.requests()[0].body["model"], "gpt-4o");
    assert_eq!(
        h.anthropic.requests().len(),
        0,
        "the chain's first was skipped"
    );

    // JSON: a model alone finds its provider.
    let (status, body) = h
        .ask_json(json!({"question": QUESTION, "model": "gpt-4o"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["provider"], "openai");

    // JSON: a provider alone answers with its configured model, and alone: no failover.
    h.anthropic.push(Reply::status(400, "bad request"));
    let (status, body) = h
        .ask_json(json!({"question": QUESTION, "provider": "anthropic"}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_rejected");
    assert_eq!(h.anthropic.requests()[0].body["model"], "claude-test");
    assert_eq!(h.openai.requests().len(), 2);
    h.settled().await;
}

#[actix_web::test]
async fn an_unknown_provider_or_model_is_refused_with_400_before_any_upstream_call() {
    let h = spawn(&[ProviderKind::OpenAi], |_, _| {}).await;

    for (body, code) in [
        (
            json!({"question": QUESTION, "provider": "gemini"}),
            "unknown_provider",
        ),
        (
            json!({"question": QUESTION, "provider": "anthropic"}),
            "unknown_provider",
        ),
        (
            json!({"question": QUESTION, "model": "gpt-5"}),
            "unknown_model",
        ),
        (
            json!({"question": QUESTION, "provider": "openai", "model": "o1"}),
            "unknown_model",
        ),
    ] {
        let (status, got) = h.ask_json(body.clone()).await;
        assert_eq!(
            (status, got["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let mut res = h
        .app
        .client
        .get(h.app.url("/api/v1/ask/stream"))
        .query(&[("question", QUESTION), ("provider", "nope")])
        .unwrap()
        .insert_header(("X-API-Key", h.app.admin_key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_provider");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("openai"));
    assert_eq!(h.openai.requests().len(), 0);
    assert_eq!(h.app.stats().await.admitted_total, 0);
}

#[actix_web::test]
async fn upstream_connections_are_pooled_across_answers() {
    let h = spawn_one(ProviderKind::OpenAi).await;
    for _ in 0..6 {
        let (status, _) = h.ask_json(json!({"question": QUESTION})).await;
        assert_eq!(status, 200);
    }
    let mut ports: Vec<u16> = h.openai.requests().iter().map(|r| r.peer_port).collect();
    ports.sort_unstable();
    ports.dedup();
    // At most one connection per hub worker thread (the test app runs two).
    assert!(
        ports.len() <= 2,
        "{} connections for 6 answers",
        ports.len()
    );
    h.settled().await;
}
