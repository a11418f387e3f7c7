//! The OpenAI-compatible endpoint (`/v1/chat/completions`, `/v1/models`): chunk shapes,
//! the non-streaming body, errors in OpenAI's shape with the statuses SDKs map, limits,
//! resume with the SSE id, cancel on leave, history and system messages, sampling
//! parameters passed on, and the hub's own OpenAI provider reading another hub.

use std::time::{Duration, Instant};

use awc::error::PayloadError;
use bytes::Bytes;
use ragstream::config::{AllowedModel, OpenAiSettings, ProviderKind, Secret};
use serde_json::{json, Value};

use crate::helpers::{
    parse, spawn_app_with, use_mock_openai, Options, SseFrame, SseReader, TestApp, BRIDGE, TOWER,
};
use crate::support::mock_upstream::{Ending, Flavor, MockUpstream, Reply, StreamEnd};

const QUESTION: &str = "How tall is the Eiffel Tower and who built it?";
const CANCEL_BUDGET: Duration = Duration::from_millis(100);

async fn offline_app(options: Options) -> TestApp {
    let app = spawn_app_with(options).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app.add_document(&app.admin_key, "Bridge", BRIDGE).await;
    app
}

async fn mock_app(
    grace: Duration,
    edit: impl FnOnce(&mut ragstream::config::Settings) + 'static,
) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        resume_grace: grace,
        settings: Some(Box::new(move |s| {
            use_mock_openai(s, url);
            edit(s);
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    (app, mock)
}

fn ask(question: &str) -> Value {
    json!({"model": "ragstream", "messages": [{"role": "user", "content": question}]})
}

fn streaming(question: &str) -> Value {
    let mut body = ask(question);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

async fn post(
    app: &TestApp,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &Value,
) -> awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, PayloadError>> + Unpin> {
    let mut req = app.client.post(app.url("/v1/chat/completions"));
    if let Some(key) = key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    req.send_json(body).await.expect("request sent")
}

async fn json_reply(app: &TestApp, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut res = post(app, key, &[], body).await;
    let status = res.status().as_u16();
    let bytes = res.body().limit(1 << 20).await.expect("body");
    (status, parse(&bytes))
}

/// The `data:` frames of a stream until it ends.
async fn frames<S>(res: S) -> Vec<SseFrame>
where
    S: futures_util::Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    SseReader::new(res).collect().await
}

fn content(frames: &[SseFrame]) -> String {
    frames
        .iter()
        .filter(|f| f.data != "[DONE]")
        .filter_map(|f| {
            f.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn assert_openai_error(body: &Value, kind: &str, code: &str) {
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error.get("param").is_some(),
        "param is always present: {body}"
    );
}

#[actix_web::test]
async fn a_stream_is_chunks_with_sources_first_then_text_usage_and_done() {
    let app = offline_app(Options::default()).await;
    let res = post(&app, Some(&app.admin_key), &[], &streaming(QUESTION)).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let frames = frames(res).await;
    let last = frames.last().expect("frames");
    assert_eq!(last.data, "[DONE]");

    let first = frames[0].json();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "ragstream");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let sources = first["sources"]
        .as_array()
        .expect("sources on the first chunk");
    assert!(sources.iter().any(|s| s["title"] == "Tower"), "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"));

    let text = content(&frames);
    assert!(text.contains("[1]") || text.contains("330"), "{text}");
    let json: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(SseFrame::json)
        .collect();
    assert!(
        json.iter().all(|c| c["id"] == id.as_str()),
        "one id for the whole stream"
    );
    // Every frame has the hub's resume cursor as its SSE id.
    let answer_id = id.trim_start_matches("chatcmpl-");
    assert!(frames[..frames.len() - 1].iter().all(|f| f
        .id
        .as_deref()
        .is_some_and(|i| i.starts_with(&format!("{answer_id}:")))));
    let finish = &json[json.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &json[json.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert!(json[1]["usage"].is_null() && json[1].get("usage").is_some());
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn without_stream_the_answer_is_one_chat_completion_with_sources() {
    let app = offline_app(Options::default()).await;
    // X-API-Key works as well as Bearer.
    let res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send_json(&ask(QUESTION))
        .await;
    let mut res = res.expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let body = parse(&res.body().await.unwrap());
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(!body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(
        body["sources"].as_array().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(body.get("conversation_id").is_none());
}

#[actix_web::test]
async fn errors_come_in_openai_shape_with_the_statuses_sdks_map() {
    let app = offline_app(Options::default()).await;
    let (status, body) = json_reply(&app, None, &ask(QUESTION)).await;
    assert_eq!(status, 401);
    assert_openai_error(&body, "authentication_error", "invalid_api_key");
    let (status, body) = json_reply(&app, Some("wrong-key"), &ask(QUESTION)).await;
    assert_eq!(status, 401, "{body}");

    let key = app.admin_key.clone();
    let mut unknown = ask(QUESTION);
    unknown["model"] = json!("gpt-5-turbo");
    let (status, body) = json_reply(&app, Some(&key), &unknown).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request_error", "model_not_found");
    assert_eq!(body["error"]["param"], "model");

    let (status, body) = json_reply(
        &app,
        Some(&key),
        &json!({"model": "ragstream", "messages": []}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "messages", "{body}");

    for (field, value) in [
        ("n", json!(3)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("logprobs", json!(true)),
        ("audio", json!({"voice": "alloy", "format": "mp3"})),
    ] {
        let mut body = ask(QUESTION);
        body[field] = value;
        let (status, reply) = json_reply(&app, Some(&key), &body).await;
        assert_eq!(status, 400, "{field}: {reply}");
        assert_openai_error(&reply, "invalid_request_error", "unsupported_parameter");
        assert_eq!(reply["error"]["param"], field);
    }

    for (method, path, body, status, code) in [
        ("GET", "/v1/nothing-here", "", 404, "not_found"),
        ("GET", "/v1/chat/completions", "", 405, "method_not_allowed"),
        (
            "POST",
            "/v1/chat/completions",
            "{not json",
            400,
            "invalid_json",
        ),
    ] {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut res = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&key)
            .content_type("application/json")
            .send_body(body)
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        let reply = parse(&res.body().await.unwrap());
        assert_openai_error(&reply, "invalid_request_error", code);
    }
    let huge = json!({"model": "ragstream", "messages": [{"role": "user", "content": "x".repeat(1 << 20)}]});
    let (status, reply) = json_reply(&app, Some(&key), &huge).await;
    assert_eq!(status, 413);
    assert_openai_error(&reply, "invalid_request_error", "payload_too_large");
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn the_per_user_limit_is_a_429_with_retry_after() {
    let (app, mock) = mock_app(Duration::ZERO, |s| s.max_streams_per_user = 1).await;
    mock.push(Reply::slow(300, Duration::from_millis(10)));
    let mut first =
        SseReader::new(post(&app, Some(&app.admin_key), &[], &streaming(QUESTION)).await);
    assert!(first.next().await.is_some());
    let res = post(&app, Some(&app.admin_key), &[], &streaming(QUESTION)).await;
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    let (status, body) = json_reply(&app, Some(&app.admin_key), &ask(QUESTION)).await;
    assert_eq!(status, 429);
    assert_openai_error(&body, "rate_limit_error", "too_many_streams");
    drop(first);
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn the_request_rate_limit_is_a_429_rate_limit_error_with_its_own_retry_after() {
    let app = offline_app(Options {
        settings: Some(Box::new(|s| s.rate_per_minute = 1)),
        ..Options::default()
    })
    .await;
    let (status, _) = json_reply(&app, Some(&app.admin_key), &ask(QUESTION)).await;
    assert_eq!(status, 200);
    let res = post(&app, Some(&app.admin_key), &[], &streaming(QUESTION)).await;
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One answer a minute: the next one is most of a minute away, not the streams' "1".
    assert!((2..=60).contains(&retry), "Retry-After {retry}");
    let (status, body) = json_reply(&app, Some(&app.admin_key), &ask(QUESTION)).await;
    assert_eq!(status, 429);
    assert_openai_error(&body, "rate_limit_error", "rate_limited");
}

#[actix_web::test]
async fn an_upstream_failure_mid_stream_ends_with_an_error_chunk_not_done() {
    let (app, mock) = mock_app(Duration::ZERO, |_| {}).await;
    mock.push(Reply::ending(&["Hel", "lo"], Ending::ErrorEvent));
    let frames = frames(post(&app, Some(&app.admin_key), &[], &streaming(QUESTION)).await).await;
    assert!(frames.iter().all(|f| f.data != "[DONE]"), "{frames:?}");
    assert_eq!(content(&frames), "Hello");
    let last = frames.last().unwrap().json();
    assert!(last["error"]["message"].is_string(), "{last}");
    assert_eq!(last["error"]["type"], "server_error", "{last}");

    // Not streaming: an error status in the same shape.
    mock.push(Reply::ending(&["Hel"], Ending::ErrorEvent));
    let (status, body) = json_reply(&app, Some(&app.admin_key), &ask(QUESTION)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn history_system_message_and_sampling_parameters_reach_the_provider() {
    let (app, mock) = mock_app(Duration::ZERO, |s| s.history_budget_chars = 60).await;
    let body = json!({
        "model": "ragstream",
        "messages": [
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": "An old question that the budget leaves out, being long"},
            {"role": "assistant", "content": "An old answer."},
            {"role": "user", "content": "Tell me about the tower"},
            {"role": "assistant", "content": "It is in Paris [1]."},
            {"role": "user", "content": "When was it built?"}
        ],
        "temperature": 0.3, "top_p": 0.8, "max_completion_tokens": 77, "stop": ["END"],
        "seed": 11, "user": "end-user-7"
    });
    let (status, reply) = json_reply(&app, Some(&app.admin_key), &body).await;
    assert_eq!(status, 200, "{reply}");
    let requests = mock.requests();
    let sent = &requests.last().expect("the upstream was called").body;
    let messages = sent["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(
        system.starts_with(ragstream::rag::prompt::SYSTEM_PROMPT),
        "{system}"
    );
    assert!(system.ends_with("Answer like a pirate."), "{system}");
    let rest: Vec<(&str, &str)> = messages[1..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rest.len(),
        3,
        "the budget keeps the latest exchange only: {rest:?}"
    );
    assert_eq!(rest[0], ("user", "Tell me about the tower"));
    assert_eq!(rest[1], ("assistant", "It is in Paris [1]."));
    assert!(
        rest[2].1.ends_with("Question: When was it built?"),
        "{}",
        rest[2].1
    );
    // The follow-up is searched with the question before it, so the tower is found.
    assert!(rest[2].1.contains("[1] Tower"), "{}", rest[2].1);
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["top_p"], 0.8);
    assert_eq!(sent["max_tokens"], 77);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["seed"], 11);
    assert_eq!(sent["user"], "end-user-7");
}

#[actix_web::test]
async fn models_lists_ragstream_and_the_allowed_choices_and_a_choice_is_used() {
    let (app, mock) = mock_app(Duration::ZERO, |s| {
        s.allowed_models = vec![
            AllowedModel {
                provider: ProviderKind::OpenAi,
                model: Some("gpt-4o".into()),
            },
            AllowedModel {
                provider: ProviderKind::OpenAi,
                model: None,
            },
        ];
    })
    .await;
    let mut res = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body = parse(&res.body().await.unwrap());
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ragstream", "openai:gpt-test", "openai:gpt-4o"]);
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));

    let res = app.client.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // One model: a listed one, one a wildcard allows, and an unknown one (404).
    for (id, status) in [
        ("ragstream", 200),
        ("openai:gpt-4o", 200),
        ("openai:any-model-the-wildcard-allows", 200),
        ("anthropic:claude", 404),
    ] {
        let mut res = app
            .client
            .get(app.url(&format!("/v1/models/{id}")))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{id}");
        let body = parse(&res.body().await.unwrap());
        if status == 200 {
            assert_eq!(body["id"], id);
            assert_eq!(body["object"], "model");
        } else {
            assert_openai_error(&body, "invalid_request_error", "model_not_found");
        }
    }

    let mut body = ask(QUESTION);
    body["model"] = json!("openai:gpt-4o");
    let (status, reply) = json_reply(&app, Some(&app.admin_key), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["model"], "openai:gpt-4o");
    assert_eq!(mock.requests().last().unwrap().body["model"], "gpt-4o");
}

#[actix_web::test]
async fn a_conversation_is_stored_only_when_the_request_names_one() {
    let app = offline_app(Options::default()).await;
    let key = app.admin_key.clone();
    let (status, _) = json_reply(&app, Some(&key), &ask(QUESTION)).await;
    assert_eq!(status, 200);
    let (_, list) = app.get_json("/api/v1/conversations", &key).await;
    let listed = |list: &Value| {
        list.as_array()
            .or_else(|| list["conversations"].as_array())
            .map_or(0, Vec::len)
    };
    assert_eq!(listed(&list), 0, "{list}");

    let mut res = post(
        &app,
        Some(&key),
        &[("X-Conversation-Id", "new")],
        &ask(QUESTION),
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    let body = parse(&res.body().await.unwrap());
    let id = body["conversation_id"]
        .as_str()
        .expect("conversation_id")
        .to_owned();
    let (_, list) = app.get_json("/api/v1/conversations", &key).await;
    assert_eq!(listed(&list), 1, "{list}");

    // Streaming, the id rides on the first chunk, and the turn joins that conversation.
    let frames = frames(
        post(
            &app,
            Some(&key),
            &[("X-Conversation-Id", &id)],
            &streaming("And its height?"),
        )
        .await,
    )
    .await;
    assert_eq!(frames[0].json()["conversation_id"], id.as_str());
    let (_, list) = app.get_json("/api/v1/conversations", &key).await;
    assert_eq!(listed(&list), 1, "{list}");

    let mut res = post(
        &app,
        Some(&key),
        &[("X-Conversation-Id", "no-such-conversation")],
        &ask(QUESTION),
    )
    .await;
    assert_eq!(res.status().as_u16(), 404);
    assert_openai_error(
        &parse(&res.body().await.unwrap()),
        "invalid_request_error",
        "conversation_not_found",
    );
}

#[actix_web::test]
async fn a_lost_stream_resumes_with_its_last_event_id_without_loss_or_repeat() {
    let app = offline_app(Options {
        pace: Duration::from_millis(3),
        resume_grace: Duration::from_secs(10),
        ..Options::default()
    })
    .await;
    let key = app.admin_key.clone();
    let (_, whole) = json_reply(&app, Some(&key), &ask(QUESTION)).await;
    let whole = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut reader = SseReader::new(post(&app, Some(&key), &[], &streaming(QUESTION)).await);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = reader.next().await.expect("frame");
        if !frame.comment {
            seen.push(frame);
        }
    }
    drop(reader);
    let last_id = seen.last().unwrap().id.clone().expect("an id");
    let rest = frames(
        post(
            &app,
            Some(&key),
            &[("Last-Event-ID", &last_id)],
            &streaming(QUESTION),
        )
        .await,
    )
    .await;
    assert_eq!(rest.last().unwrap().data, "[DONE]");
    let text = content(&seen) + &content(&rest);
    assert_eq!(text, whole);
    // Another key cannot resume it.
    let (tenant, _) = app.new_tenant("other").await;
    let other = app.new_key(&tenant, "other").await;
    let res = post(
        &app,
        Some(&other),
        &[("Last-Event-ID", &last_id)],
        &streaming(QUESTION),
    )
    .await;
    assert_eq!(res.status().as_u16(), 404);
}

#[actix_web::test]
async fn a_client_that_leaves_closes_the_upstream_within_100_ms() {
    let (app, mock) = mock_app(Duration::ZERO, |_| {}).await;
    mock.push(Reply::slow(400, Duration::from_millis(20)));
    let mut reader =
        SseReader::new(post(&app, Some(&app.admin_key), &[], &streaming(QUESTION)).await);
    let mut texts = 0;
    while texts < 2 {
        let frame = reader.next().await.expect("frame");
        if !frame.comment
            && frame.json()["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        {
            texts += 1;
        }
    }
    drop(reader);
    let left = Instant::now();
    let log = mock.wait_for_stream_end(Duration::from_secs(2)).await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(end, StreamEnd::Disconnected);
    let after = at.saturating_duration_since(left);
    assert!(after < CANCEL_BUDGET, "the upstream stayed open {after:?}");
    app.wait_for_active_streams(0, Duration::from_millis(500))
        .await;
}

/// A hub whose only provider is the OpenAI one with hub `a` as its upstream: `a`'s `/v1`
/// base URL, `a`'s admin key, model `ragstream`.
async fn hub_over(a: &TestApp) -> TestApp {
    let a_key = a.admin_key.clone();
    let a_base = format!("{}/v1", a.base);
    spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            s.providers = vec![ProviderKind::OpenAi];
            s.openai = Some(OpenAiSettings {
                api_key: Secret::new(&a_key),
                base_url: a_base,
                model: "ragstream".into(),
            });
        })),
        ..Options::default()
    })
    .await
}

#[actix_web::test]
async fn the_hubs_own_openai_provider_streams_from_another_hub() {
    // Hub A answers from its documents; hub B's upstream is A's /v1 with a key of A's.
    let a = offline_app(Options::default()).await;
    let b = hub_over(&a).await;

    let frames = frames(post(&b, Some(&b.admin_key), &[], &streaming(QUESTION)).await).await;
    assert_eq!(frames.last().unwrap().data, "[DONE]", "{frames:?}");
    let text = content(&frames);
    assert!(
        text.contains("330") || text.contains("Eiffel"),
        "B relayed A's answer: {text}"
    );
    let usage = frames[frames.len() - 2].json();
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );

    let (status, body) = json_reply(&b, Some(&b.admin_key), &ask(QUESTION)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    a.wait_for_active_streams(0, Duration::from_secs(2)).await;
    b.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn a_non_streaming_client_that_drops_closes_the_upstream_within_100_ms() {
    let (app, mock) = mock_app(Duration::from_secs(10), |_| {}).await;
    mock.push(Reply::slow(400, Duration::from_millis(20)));
    let request = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.admin_key)
        .send_json(&ask(QUESTION));
    let pending = actix_web::rt::spawn(async move {
        let _ = request.await;
    });
    mock.wait_for_tokens_sent(2, Duration::from_secs(5)).await;
    let left = Instant::now();
    pending.abort();
    // Even with a grace window: a non-streaming client cannot come back for its answer.
    let log = mock.wait_for_stream_end(Duration::from_secs(2)).await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(end, StreamEnd::Disconnected);
    let after = at.saturating_duration_since(left);
    assert!(after < CANCEL_BUDGET, "the upstream stayed open {after:?}");
    app.wait_for_active_streams(0, Duration::from_millis(500))
        .await;
}

#[actix_web::test]
async fn an_upstream_hubs_mid_stream_error_reaches_the_downstream_hubs_client() {
    // A's provider fails after two tokens; A's error chunk is what B's OpenAI parser reads.
    let (a, mock) = mock_app(Duration::ZERO, |_| {}).await;
    mock.set_default(Reply::ending(&["Hel", "lo"], Ending::ErrorEvent));
    let b = hub_over(&a).await;
    let frames = frames(post(&b, Some(&b.admin_key), &[], &streaming(QUESTION)).await).await;
    assert_eq!(content(&frames), "Hello");
    assert!(frames.iter().all(|f| f.data != "[DONE]"), "{frames:?}");
    let last = frames.last().unwrap().json();
    assert_eq!(last["error"]["code"], "upstream_error", "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("openai failed mid-stream"), "{message}");
    a.wait_for_active_streams(0, Duration::from_secs(2)).await;
    b.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn an_anthropic_provider_gets_the_system_message_and_sampling_in_its_own_names() {
    let mock = MockUpstream::start(Flavor::Anthropic).await;
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            s.providers = vec![ProviderKind::Anthropic];
            s.anthropic = Some(ragstream::config::AnthropicSettings {
                api_key: Secret::new("sk-ant-test-openai-compat"),
                base_url: url,
                model: "claude-test".into(),
                max_tokens: 256,
            });
        })),
        ..Options::default()
    })
    .await;
    let body = json!({
        "model": "anthropic",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION}
        ],
        "stream": true,
        "temperature": 1.8, "top_p": 0.5, "max_tokens": 40, "stop": "END", "user": "u-9"
    });
    let frames = frames(post(&app, Some(&app.admin_key), &[], &body).await).await;
    assert_eq!(frames.last().unwrap().data, "[DONE]");
    assert!(!content(&frames).is_empty());
    let requests = mock.requests();
    let sent = &requests.last().expect("the upstream was called").body;
    let system = sent["system"].as_str().unwrap();
    assert!(
        system.starts_with(ragstream::rag::prompt::SYSTEM_PROMPT) && system.ends_with("Be brief.")
    );
    assert_eq!(sent["max_tokens"], 40);
    assert_eq!(sent["temperature"], 1.0, "capped at Anthropic's maximum");
    assert_eq!(sent["top_p"], 0.5);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"]["user_id"], "u-9");
    assert_eq!(sent["model"], "claude-test");
}
