//! Agent chat and conversations (issue 6): turns over every transport, the history the
//! provider receives (and the budget that trims it), follow-ups retrieved with their
//! context, what is stored when an answer completes, fails, is cancelled or is cut by a
//! SIGKILL, the conversations API, and isolation between users and tenants.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ragstream::config::{AnthropicSettings, OpenAiSettings, ProviderKind, Secret};

use crate::helpers::{
    spawn_app, spawn_app_with, Options, SseFrame, SseReader, TestApp, BRIDGE, TOWER,
};
use crate::support::mock_upstream::{Ending, Flavor, MockUpstream, Reply};
use crate::support::test_db::{on_postgres, TestDb};

/// A document about building, to prove that "When was it built?" alone finds it and not
/// the tower: only the previous question can point retrieval at the tower.
const COLOSSEUM: &str = "# The Colosseum\n\nThe Colosseum in Rome was built of travertine, tuff and brick-faced concrete. It was built between 70 and 80 AD. Built for gladiator contests, it held about 50,000 spectators.\n";

const FIRST: &str = "Tell me about the Eiffel Tower";
const FOLLOW_UP: &str = "When was it built?";

// ---- helpers ------------------------------------------------------------------------

async fn chat(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post_json("/api/v1/agent/chat", key, body).await
}

/// A turn over JSON that must succeed; returns (conversation id, answer body).
async fn turn(app: &TestApp, message: &str, conversation: Option<&str>) -> (String, Value) {
    let mut body = json!({"message": message, "topK": 3});
    if let Some(id) = conversation {
        body["conversationId"] = json!(id);
    }
    let (status, answer) = chat(app, &app.admin_key, body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["conversationId"]
        .as_str()
        .expect("the answer names its conversation")
        .to_owned();
    (id, answer)
}

async fn conversation(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    app.get_json(&format!("/api/v1/conversations/{id}"), key)
        .await
}

async fn messages(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = conversation(app, &app.admin_key, id).await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().expect("messages").clone()
}

/// Polls until the conversation's last assistant message is no longer `streaming` (an
/// aborted answer's writes go through the store writer, just after the abort: even the
/// turn's rows may still be queued when its error event goes out).
async fn settled_answer(app: &TestApp, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = conversation(app, &app.admin_key, id).await;
        let last = match status {
            404 => Value::Null,
            200 => body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .expect("a message"),
            _ => panic!("{status} {body}"),
        };
        if last != Value::Null {
            assert_eq!(last["role"], "assistant", "{last}");
        }
        if last != Value::Null && last["status"] != "streaming" {
            return last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the answer stayed streaming: {last}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sse_get(
    app: &TestApp,
    key: &str,
    params: &[(&str, &str)],
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
> {
    app.client
        .get(app.url("/api/v1/agent/chat/stream"))
        .query(&params)
        .expect("query")
        .insert_header(("X-API-Key", key))
        .send()
        .await
        .expect("request sent")
}

/// (conversation frame's id, streamed text, terminal frame) of an SSE answer.
fn read_sse(frames: &[SseFrame]) -> (String, String, Value) {
    assert_eq!(
        frames[0].event.as_deref(),
        Some("conversation"),
        "{frames:?}"
    );
    assert!(frames[0].id.as_deref().is_some_and(|id| id.ends_with(":1")));
    let conversation = frames[0].json()["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    assert_eq!(frames[1].event.as_deref(), Some("sources"));
    let mut text = String::new();
    for f in frames.iter().filter(|f| f.event.is_none()) {
        if let Some(t) = f.json()["token"].as_str() {
            text.push_str(t);
        }
    }
    let end = frames.last().expect("frames").json();
    (conversation, text, end)
}

fn roles_and_statuses(all: &[Value]) -> Vec<(String, Value)> {
    all.iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_owned(),
                m["status"].clone(),
            )
        })
        .collect()
}

/// The hub with an LLM provider answering from a mock upstream.
async fn spawn_with_upstream(flavor: Flavor, budget: usize) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start(flavor).await;
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            s.history_budget_chars = budget;
            s.upstream.max_retries = 0;
            match flavor {
                Flavor::OpenAi => {
                    s.providers = vec![ProviderKind::OpenAi];
                    s.openai = Some(OpenAiSettings {
                        api_key: Secret::new("sk-test-conversations"),
                        base_url: url,
                        model: "gpt-test".into(),
                    });
                }
                Flavor::Anthropic => {
                    s.providers = vec![ProviderKind::Anthropic];
                    s.anthropic = Some(AnthropicSettings {
                        api_key: Secret::new("sk-ant-test-conversations"),
                        base_url: url,
                        model: "claude-test".into(),
                        max_tokens: 256,
                    });
                }
            }
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    (app, mock)
}

/// The messages an upstream request carried, as (role, content); Anthropic's `system`
/// first, as OpenAI sends it.
fn upstream_messages(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(system) = body["system"].as_str() {
        out.push(("system".to_owned(), system.to_owned()));
    }
    for m in body["messages"].as_array().expect("messages") {
        out.push((
            m["role"].as_str().expect("role").to_owned(),
            m["content"].as_str().expect("content").to_owned(),
        ));
    }
    out
}

// ---- multi-turn history --------------------------------------------------------------

#[actix_web::test]
async fn earlier_turns_reach_the_provider_as_messages_and_the_budget_drops_the_oldest() {
    for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
        // The first exchange is 30 + 11 characters, the second 18 + 11: a 50-character
        // budget holds either, not both.
        let (app, mock) = spawn_with_upstream(flavor, 50).await;
        mock.push(Reply::tokens(&["Answer", " one."]));
        mock.push(Reply::tokens(&["Answer", " two."]));
        mock.push(Reply::tokens(&["Answer", " three."]));

        let (id, first) = turn(&app, FIRST, None).await;
        assert_eq!(first["answer"], "Answer one.");
        assert_eq!(first["metadata"]["conversation_id"], id.as_str());
        let (same, second) = turn(&app, FOLLOW_UP, Some(&id)).await;
        assert_eq!(same, id);
        assert_eq!(second["answer"], "Answer two.");
        turn(&app, "And how tall is it?", Some(&id)).await;

        let requests = mock.requests();
        assert_eq!(requests.len(), 3, "{flavor:?}");
        let sent: Vec<Vec<(String, String)>> = requests
            .iter()
            .map(|r| upstream_messages(&r.body))
            .collect();
        let roles = |i: usize| sent[i].iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>();

        // Turn 1: no history.
        assert_eq!(roles(0), ["system", "user"], "{flavor:?}");
        // Turn 2: the first exchange, as said, between the system prompt and the question.
        assert_eq!(
            roles(1),
            ["system", "user", "assistant", "user"],
            "{flavor:?}"
        );
        assert_eq!(sent[1][1].1, FIRST);
        assert_eq!(sent[1][2].1, "Answer one.");
        // Turn 3: both exchanges are over the budget, so the oldest is gone; the system
        // prompt and the retrieved passages are still there.
        assert_eq!(
            roles(2),
            ["system", "user", "assistant", "user"],
            "{flavor:?}"
        );
        assert_eq!(sent[2][1].1, FOLLOW_UP);
        assert_eq!(sent[2][2].1, "Answer two.");
        assert!(sent[2].iter().all(|(_, c)| c != FIRST), "{:?}", sent[2]);
        assert_eq!(sent[2][0].1, sent[0][0].1, "the system prompt is kept");
        let last = &sent[2][3].1;
        assert!(
            last.contains("[1] Tower") && last.contains("330 metres"),
            "the passages are kept: {last}"
        );
        assert!(last.ends_with("Question: And how tall is it?"), "{last}");

        // Stored: three complete exchanges, with who answered and the usage.
        let all = messages(&app, &id).await;
        assert_eq!(all.len(), 6);
        let answer = &all[5];
        assert_eq!(answer["status"], "complete");
        assert_eq!(answer["content"], "Answer three.");
        assert_eq!(answer["tokens"], 42);
        assert!(answer["ttftMs"].is_u64(), "{answer}");
        let (provider, model) = match flavor {
            Flavor::OpenAi => ("openai", "gpt-test"),
            Flavor::Anthropic => ("anthropic", "claude-test"),
        };
        assert_eq!(
            (answer["provider"].as_str(), answer["model"].as_str()),
            (Some(provider), Some(model))
        );
        assert_eq!(all[4]["content"], "And how tall is it?");
        assert_eq!(all[4]["status"], Value::Null);
    }
}

#[actix_web::test]
async fn a_failed_answer_keeps_its_partial_text_and_is_left_out_of_the_next_history() {
    let (app, mock) = spawn_with_upstream(Flavor::OpenAi, 12_000).await;
    mock.push(Reply::ending(
        &["Half", " an", " answer"],
        Ending::ErrorEvent,
    ));
    mock.push(Reply::status(401, "Incorrect API key provided"));

    let (status, failed) = chat(&app, &app.admin_key, json!({"message": FIRST})).await;
    assert_eq!(status, 502, "{failed}");
    let id = failed["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    assert_eq!(failed["answer"], "Half an answer");
    let stored = settled_answer(&app, &id).await;
    assert_eq!(stored["status"], "error");
    assert_eq!(stored["errorCode"], "upstream_error");
    assert_eq!(stored["content"], "Half an answer");
    assert_eq!(stored["tokens"], 3);

    // A failure before any text stores an empty answer with its code.
    let (status, _) = chat(
        &app,
        &app.admin_key,
        json!({"message": FOLLOW_UP, "conversationId": id}),
    )
    .await;
    assert_eq!(status, 502);
    let stored = settled_answer(&app, &id).await;
    assert_eq!(stored["status"], "error");
    assert_eq!(stored["errorCode"], "upstream_auth");
    assert_eq!(stored["content"], "");

    // The next turn sends the exchange that has text, and not the unanswered question.
    turn(&app, "Third question", Some(&id)).await;
    let sent = upstream_messages(&mock.requests()[2].body);
    let roles: Vec<&str> = sent.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent[2].1, "Half an answer");
}

// ---- retrieval with context ----------------------------------------------------------

#[actix_web::test]
async fn a_follow_up_is_searched_with_the_question_before_it() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app.add_document(&app.admin_key, "Bridge", BRIDGE).await;
    app.add_document(&app.admin_key, "Colosseum", COLOSSEUM)
        .await;

    // Alone, the follow-up is about whatever was built: the Colosseum wins.
    let (_, alone) = turn(&app, FOLLOW_UP, None).await;
    assert_eq!(alone["sources"][0]["title"], "Colosseum", "{alone}");

    let (id, first) = turn(&app, FIRST, None).await;
    assert_eq!(first["sources"][0]["title"], "Tower");
    let (_, follow_up) = turn(&app, FOLLOW_UP, Some(&id)).await;
    assert_eq!(follow_up["sources"][0]["title"], "Tower", "{follow_up}");
    let answer = follow_up["answer"].as_str().unwrap();
    assert!(answer.contains("1889"), "{answer}");
}

// ---- what is kept when an answer stops early ------------------------------------------

const LONG_QUESTION: &str =
    "Tell me about the Eiffel Tower: its engineer, its construction, the World's Fair and its height";

#[actix_web::test]
async fn a_cancelled_answer_keeps_exactly_the_text_generated_until_the_cancel() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(40),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    // A first turn answers like /ask: the whole answer the cancelled one is a prefix of.
    let (_, whole) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": LONG_QUESTION, "topK": 3}),
        )
        .await;
    let whole = whole["answer"].as_str().expect("answer").to_owned();
    assert!(whole.split(' ').count() > 20, "a long answer: {whole}");

    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": LONG_QUESTION, "topK": 3, "id": "c1"}))
        .await;
    let first = ws.next_json().await;
    assert_eq!(first["id"], "c1");
    let id = first["conversationId"]
        .as_str()
        .expect("the first frame names the new conversation")
        .to_owned();
    let mut received = String::new();
    let mut tokens = 0;
    while tokens < 4 {
        let frame = ws.next_json().await;
        if let Some(t) = frame["token"].as_str() {
            received.push_str(t);
            tokens += 1;
        }
    }
    ws.send_json(json!({"type": "cancel", "id": "c1"})).await;
    loop {
        let frame = ws.next_json().await;
        if let Some(t) = frame["token"].as_str() {
            received.push_str(t);
        } else if frame["error"]["code"] == "cancelled" {
            break;
        }
    }

    let stored = settled_answer(&app, &id).await;
    assert_eq!(stored["status"], "cancelled", "{stored}");
    assert_eq!(stored["errorCode"], Value::Null);
    let content = stored["content"].as_str().unwrap();
    assert!(
        content.starts_with(&received),
        "stored {content:?} does not start with what the client got, {received:?}"
    );
    assert!(
        !content.is_empty() && content.len() < whole.len() && whole.starts_with(content),
        "stored {content:?} is not a proper prefix of {whole:?}"
    );
    assert!(stored["ttftMs"].is_u64(), "{stored}");
    assert!(stored["tokens"].as_u64().unwrap() >= 4, "{stored}");
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;

    // Leaving an SSE answer is a cancel too.
    let res = sse_get(
        &app,
        &app.admin_key,
        &[("message", LONG_QUESTION), ("conversationId", &id)],
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    let mut reader = SseReader::new(res);
    let mut received = String::new();
    let mut tokens = 0;
    while tokens < 3 {
        let frame = reader.next().await.expect("a frame");
        if frame.event.is_none() && !frame.comment {
            if let Some(t) = frame.json()["token"].as_str() {
                received.push_str(t);
                tokens += 1;
            }
        }
    }
    drop(reader);
    let stored = settled_answer(&app, &id).await;
    assert_eq!(stored["status"], "cancelled");
    let content = stored["content"].as_str().unwrap();
    assert!(
        content.starts_with(&received) && whole.starts_with(content) && content.len() < whole.len()
    );
    assert_eq!(messages(&app, &id).await.len(), 4);
}

#[actix_web::test]
async fn an_answer_ended_by_an_administrator_keeps_its_text_and_says_so() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let res = sse_get(&app, &app.admin_key, &[("message", LONG_QUESTION)]).await;
    let mut reader = SseReader::new(res);
    let id = reader.next().await.expect("conversation").json()["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    reader.next().await.expect("sources");
    let token = reader.next().await.expect("first token").json()["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let (_, list) = app.get_json("/api/v1/admin/streams", &app.admin_key).await;
    let stream = list["streams"][0]["id"].as_u64().expect("a running stream");
    let path = format!("/api/v1/admin/streams/{stream}");
    assert_eq!(app.delete(&path, &app.admin_key).await, 204);
    let last = reader.collect().await.pop().expect("a final frame").json();
    assert_eq!(last["error"]["code"], "ended_by_admin");

    let stored = settled_answer(&app, &id).await;
    assert_eq!(stored["status"], "cancelled");
    assert_eq!(stored["errorCode"], "ended_by_admin");
    assert!(
        stored["content"].as_str().unwrap().starts_with(&token),
        "{stored}"
    );
}

/// The real binary, killed with SIGKILL when dropped.
struct Hub {
    child: Child,
    base: String,
}

impl Hub {
    fn start(dir: &std::path::Path, database_url: &str, pace_ms: u64) -> Hub {
        // Free now; a race with another process for it is unlikely on loopback.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_ragstream"))
            // Not the checkout: a developer's .env must not reach the test.
            .current_dir(dir)
            .env_clear()
            .env("RAGSTREAM_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            // The killed hub's answer is cleaned up once its lease lapsed: short here.
            .env("RAGSTREAM_LEASE_TTL_SECS", "3")
            .env("RAGSTREAM_ADMIN_KEY", crate::helpers::ADMIN_KEY)
            .env("RAGSTREAM_OFFLINE_PACE_MS", pace_ms.to_string())
            .env("RAGSTREAM_WORKERS", "1")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the hub starts");
        Hub {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn ready(&self, client: &awc::Client) {
        let start = Instant::now();
        loop {
            if let Ok(res) = client.get(format!("{}/healthz", self.base)).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the hub never became ready"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // SIGKILL on Unix: no shutdown, no final writes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn an_answer_cut_by_sigkill_is_marked_interrupted_once_its_hubs_lease_lapsed() {
    let db = crate::support::test_db::TestDb::create().await;
    let dir = db.dir.path();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let key = crate::helpers::ADMIN_KEY;

    let hub = Hub::start(dir, &db.url, 200);
    hub.ready(&client).await;
    let res = client
        .post(format!("{}/api/v1/documents", hub.base))
        .insert_header(("X-API-Key", key))
        .send_json(&json!({"title": "Tower", "text": TOWER}))
        .await
        .expect("document sent");
    assert_eq!(res.status().as_u16(), 201);
    let res = client
        .get(format!("{}/api/v1/agent/chat/stream", hub.base))
        .query(&[("message", LONG_QUESTION)])
        .expect("query")
        .insert_header(("X-API-Key", key))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(res.status().as_u16(), 200);
    let mut reader = SseReader::new(res);
    let first = reader.next().await.expect("the conversation frame");
    let id = first.json()["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    // Mid-answer: the first tokens are out, more are coming every 200 ms.
    let mut tokens = 0;
    while tokens < 2 {
        let frame = reader.next().await.expect("a frame");
        if frame.event.is_none() && !frame.comment && frame.json()["token"].is_string() {
            tokens += 1;
        }
    }
    drop(hub);
    drop(reader);

    let hub = Hub::start(dir, &db.url, 0);
    hub.ready(&client).await;
    // The new hub marks the row once the dead hub's heartbeat is older than the TTL: at
    // most TTL + TTL/3 after the kill.
    let start = Instant::now();
    let all = loop {
        let mut res = client
            .get(format!("{}/api/v1/conversations/{id}", hub.base))
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status().as_u16(), 200);
        let body: Value = res.json().await.expect("JSON");
        let all = body["messages"].as_array().expect("messages").clone();
        if all.last().is_some_and(|m| m["status"] != "streaming") {
            break all;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the killed hub's answer stayed streaming"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        roles_and_statuses(&all),
        [
            ("user".to_owned(), Value::Null),
            ("assistant".to_owned(), json!("interrupted"))
        ]
    );
    assert_eq!(all[0]["content"], LONG_QUESTION);
}

// ---- every transport -----------------------------------------------------------------

#[actix_web::test]
async fn one_conversation_continues_over_json_sse_get_and_post_and_websocket() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app.add_document(&app.admin_key, "Bridge", BRIDGE).await;
    let key = app.admin_key.as_str();
    let mut answers = Vec::new();

    // JSON starts it.
    let (id, first) = turn(&app, FIRST, None).await;
    answers.push(first["answer"].as_str().unwrap().to_owned());

    // SSE GET continues it: the conversation is the first event.
    let res = sse_get(
        &app,
        key,
        &[
            ("message", FOLLOW_UP),
            ("conversationId", &id),
            ("topK", "2"),
        ],
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let frames = SseReader::new(res).collect().await;
    let (conversation, text, end) = read_sse(&frames);
    assert_eq!(conversation, id);
    assert_eq!(end["done"], true, "{end}");
    assert_eq!(end["metadata"]["conversation_id"], id.as_str());
    answers.push(text);

    // SSE POST.
    let res = app
        .client
        .post(app.url("/api/v1/agent/chat/stream"))
        .insert_header(("X-API-Key", key))
        .send_json(&json!({"message": "How tall is it?", "conversationId": id}))
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    let (conversation, text, _) = read_sse(&frames);
    assert_eq!(conversation, id);
    answers.push(text);

    // Plain WebSocket.
    let mut ws = app.open_ws(key).await;
    ws.send_json(json!({"message": "When did the Golden Gate Bridge open?", "id": "w1", "conversationId": id}))
        .await;
    let frame = ws.next_json().await;
    let answer_id = frame["answerId"].as_str().expect("answerId").to_owned();
    assert_eq!(
        frame,
        json!({"conversationId": id, "id": "w1", "answerId": answer_id, "seq": 1})
    );
    let (text, end) = ws.answer("w1").await;
    assert_eq!(end["answerId"], answer_id.as_str());
    assert_eq!(end["metadata"]["conversation_id"], id.as_str());
    answers.push(text);

    let all = messages(&app, &id).await;
    assert_eq!(all.len(), 8);
    for (i, answer) in answers.iter().enumerate() {
        let stored = &all[2 * i + 1];
        assert_eq!(stored["status"], "complete", "{stored}");
        assert_eq!(
            stored["content"].as_str(),
            Some(answer.as_str()),
            "turn {i}"
        );
        assert_eq!(stored["provider"], "offline");
        assert_eq!(stored["model"], "extractive-v1");
    }
    assert!(answers[3].contains("1937"), "{}", answers[3]);
    assert_eq!(all[6]["content"], "When did the Golden Gate Bridge open?");

    // Without an id, each transport starts a new conversation.
    let res = sse_get(&app, key, &[("message", FIRST)]).await;
    let (sse_new, _, _) = read_sse(&SseReader::new(res).collect().await);
    ws.send_json(json!({"message": FIRST, "id": "w2"})).await;
    let ws_new = ws.next_json().await["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    ws.answer("w2").await;
    let (json_new, _) = turn(&app, FIRST, None).await;
    let mut ids = vec![id.clone(), sse_new, ws_new, json_new];
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let (_, list) = app.get_json("/api/v1/conversations", key).await;
    assert_eq!(list["total"], 4);

    // /ask stays one-off: no conversation event, nothing stored.
    let frames = SseReader::new(app.open_sse(key, FIRST).await)
        .collect()
        .await;
    assert_eq!(frames[0].event.as_deref(), Some("sources"));
    assert!(frames.last().unwrap().json()["metadata"]
        .get("conversation_id")
        .is_none());
    let (_, ask) = app
        .post_json("/api/v1/ask", key, json!({"question": FIRST}))
        .await;
    assert!(ask.get("conversationId").is_none(), "{ask}");
    let (_, list) = app.get_json("/api/v1/conversations", key).await;
    assert_eq!(list["total"], 4);
}

#[actix_web::test]
async fn bad_agent_chat_requests_are_plain_http_errors() {
    let app = spawn_app().await;
    let key = app.admin_key.as_str();
    let (status, body) = chat(&app, key, json!({"message": " "})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("empty_question"))
    );
    let (status, body) = chat(&app, key, json!({"message": "x", "topK": 99})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_top_k"))
    );
    let (status, body) = chat(&app, key, json!({"message": "x", "conversationId": "nope"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("conversation_not_found"))
    );
    let res = sse_get(&app, key, &[("message", "x"), ("conversationId", "nope")]).await;
    assert_eq!(res.status().as_u16(), 404);
    // Refused requests took no slot and stored nothing.
    assert_eq!(app.stats().await.admitted_total, 0);
    let (_, list) = app.get_json("/api/v1/conversations", key).await;
    assert_eq!(list["total"], 0);
    // A blank id is no id: a new conversation.
    let res = sse_get(&app, key, &[("message", "x"), ("conversationId", "")]).await;
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    assert_eq!(frames[0].event.as_deref(), Some("conversation"));
    // Without a key: 401.
    let res = app
        .client
        .post(app.url("/api/v1/agent/chat"))
        .send_json(&json!({"message": "x"}))
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 401);
}

// ---- isolation -----------------------------------------------------------------------

#[actix_web::test]
async fn a_conversation_is_private_to_its_user_and_tenant() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (id, _) = turn(&app, FIRST, None).await;
    let colleague = app.new_key("default", "colleague").await;
    let (tenant, stranger) = app.new_tenant("elsewhere").await;
    app.add_document(&stranger, "Tower", TOWER).await;
    let _ = tenant;

    for other in [&colleague, &stranger] {
        let (status, body) = conversation(&app, other, &id).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "conversation_not_found");
        let path = format!("/api/v1/conversations/{id}");
        let res = app
            .client
            .patch(app.url(&path))
            .insert_header(("X-API-Key", other.as_str()))
            .send_json(&json!({"title": "mine now"}))
            .await
            .expect("request sent");
        assert_eq!(res.status().as_u16(), 404);
        assert_eq!(app.delete(&path, other).await, 404);
        let (_, list) = app.get_json("/api/v1/conversations", other).await;
        assert_eq!(list["total"], 0, "{list}");

        // Continuing it is refused on every transport, before any stream starts.
        let (status, body) = chat(
            &app,
            other,
            json!({"message": FOLLOW_UP, "conversationId": id}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("conversation_not_found"))
        );
        let res = sse_get(
            &app,
            other,
            &[("message", FOLLOW_UP), ("conversationId", &id)],
        )
        .await;
        assert_eq!(res.status().as_u16(), 404);
        let mut ws = app.open_ws(other).await;
        ws.send_json(json!({"message": FOLLOW_UP, "conversationId": id, "id": "x1"}))
            .await;
        let frame = ws.next_json().await;
        assert_eq!(frame["id"], "x1");
        assert_eq!(frame["error"]["code"], "conversation_not_found", "{frame}");
        // The socket stays open.
        ws.send_json(json!({"message": FOLLOW_UP, "id": "x2"}))
            .await;
        let (_, end) = ws.answer("x2").await;
        assert_eq!(end["done"], true);
    }
    // Untouched.
    let all = messages(&app, &id).await;
    assert_eq!(all.len(), 2);
    let (_, mine) = conversation(&app, &app.admin_key, &id).await;
    assert_eq!(mine["title"], FIRST);
}

// ---- the conversations API -----------------------------------------------------------

#[actix_web::test]
async fn conversations_are_listed_newest_first_in_pages_renamed_and_deleted() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let key = app.admin_key.as_str();

    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, created) = app
            .post_json(
                "/api/v1/conversations",
                key,
                json!({"title": format!("c{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["title"], format!("c{i}"));
        assert!(created["createdAt"].is_string() && created["updatedAt"].is_string());
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let titles = |page: &Value| -> Vec<String> {
        page["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["title"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (_, page) = app.get_json("/api/v1/conversations?limit=2", key).await;
    assert_eq!(titles(&page), ["c4", "c3"]);
    assert_eq!(
        (
            page["total"].as_i64(),
            page["limit"].as_i64(),
            page["offset"].as_i64()
        ),
        (Some(5), Some(2), Some(0))
    );
    let (_, page) = app
        .get_json("/api/v1/conversations?limit=2&offset=2", key)
        .await;
    assert_eq!(titles(&page), ["c2", "c1"]);
    let (_, page) = app
        .get_json("/api/v1/conversations?limit=2&offset=4", key)
        .await;
    assert_eq!(titles(&page), ["c0"]);
    let (_, page) = app.get_json("/api/v1/conversations?offset=9", key).await;
    assert_eq!(titles(&page), Vec::<String>::new());
    assert_eq!(page["total"], 5);

    // A turn makes a conversation the most recent; its title is kept.
    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    turn(&app, FIRST, Some(&ids[0])).await;
    let (_, page) = app.get_json("/api/v1/conversations?limit=1", key).await;
    assert_eq!(titles(&page), ["c0"]);

    // Rename.
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/conversations/{}", ids[2])))
        .insert_header(("X-API-Key", key))
        .send_json(&json!({"title": "  Paris trip  "}))
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let (_, renamed) = conversation(&app, key, &ids[2]).await;
    assert_eq!(renamed["title"], "Paris trip");
    assert_eq!(renamed["messages"], json!([]));
    for bad in [
        json!({"title": " "}),
        json!({}),
        json!({"title": "x".repeat(201)}),
    ] {
        let mut res = app
            .client
            .patch(app.url(&format!("/api/v1/conversations/{}", ids[2])))
            .insert_header(("X-API-Key", key))
            .send_json(&bad)
            .await
            .expect("request sent");
        assert_eq!(res.status().as_u16(), 400, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_title");
    }

    // Delete: 204, then gone with its messages.
    let path = format!("/api/v1/conversations/{}", ids[0]);
    assert_eq!(app.delete(&path, key).await, 204);
    assert_eq!(conversation(&app, key, &ids[0]).await.0, 404);
    let (status, body) = chat(
        &app,
        key,
        json!({"message": FOLLOW_UP, "conversationId": ids[0]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("conversation_not_found"))
    );
    let (_, page) = app.get_json("/api/v1/conversations", key).await;
    assert_eq!(page["total"], 4);

    // Without a body: untitled until its first question names it.
    let res = app
        .client
        .post(app.url("/api/v1/conversations"))
        .insert_header(("X-API-Key", key))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 201);
    let (_, page) = app.get_json("/api/v1/conversations?limit=1", key).await;
    let untitled = page["conversations"][0].clone();
    assert_eq!(untitled["title"], Value::Null);
    let untitled = untitled["id"].as_str().unwrap().to_owned();
    turn(&app, FIRST, Some(&untitled)).await;
    assert_eq!(conversation(&app, key, &untitled).await.1["title"], FIRST);

    // Bad pages and bodies.
    for query in ["limit=0", "limit=101", "offset=-1", "limit=abc"] {
        let (status, body) = app
            .get_json(&format!("/api/v1/conversations?{query}"), key)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, body) = app
        .post_json("/api/v1/conversations", key, json!({"title": 5}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = app.get_json("/api/v1/conversations", "rsk_wrong").await;
    assert_eq!(status, 401);
}

// ---- group commit: the store writer ------------------------------------------------------

/// Another connection holding what a turn's rows need: SQLite's write lock, or on
/// PostgreSQL a lock on `messages` that keeps inserts out (reads go on, as with SQLite's WAL).
/// Held until [`WriteLock::release`]; SQLite's busy timeout (5 s) bounds how long a test
/// may hold it.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(url: &str) -> WriteLock {
        use sqlx::Connection;
        if on_postgres() {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query("BEGIN")
                .execute(&mut conn)
                .await
                .expect("begin");
            sqlx::query("LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("lock");
            WriteLock::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("lock");
            WriteLock::Sqlite(conn)
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Sqlite(mut conn) => {
                sqlx::query("COMMIT")
                    .execute(&mut conn)
                    .await
                    .expect("commit");
            }
            WriteLock::Postgres(mut conn) => {
                sqlx::query("COMMIT")
                    .execute(&mut conn)
                    .await
                    .expect("commit");
            }
        }
    }
}

/// An app on a database the test can reach from outside (to lock it).
async fn app_on_own_db(opts: Options) -> (TestApp, TestDb) {
    let db = TestDb::create().await;
    let app = spawn_app_with(Options {
        database_url: Some(db.url.clone()),
        ..opts
    })
    .await;
    (app, db)
}

/// No write sits between a turn and its first token: with the database locked the answer
/// streams, its rows waiting in the store writer's queue; its `done` waits for them, so a
/// client that reads the conversation after `done` finds the whole turn.
#[actix_web::test]
async fn a_turn_streams_while_the_database_is_locked_and_its_done_follows_its_rows() {
    let (app, db) = app_on_own_db(Options {
        pace: Duration::from_millis(20),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let lock = WriteLock::take(&db.url).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": FIRST, "id": "w1"})).await;
    let mut conversation_id = None;
    let mut text = String::new();
    let mut tokens = 0;
    while tokens < 3 {
        let frame = ws.next_json().await;
        if let Some(id) = frame["conversationId"].as_str() {
            conversation_id = Some(id.to_owned());
        }
        assert!(frame.get("error").is_none(), "{frame}");
        if let Some(t) = frame["token"].as_str() {
            text.push_str(t);
            tokens += 1;
        }
    }
    let id = conversation_id.expect("the conversation's id comes before the tokens");
    // Not stored yet: the rows wait for the lock. A read of the conversation waits for them
    // too (it would answer 404 at once otherwise), and finds the turn once they are in.
    let read = conversation(&app, &app.admin_key, &id);
    futures_util::pin_mut!(read);
    let early = futures_util::future::select(
        read.as_mut(),
        Box::pin(actix_web::rt::time::sleep(Duration::from_millis(500))),
    )
    .await;
    if let futures_util::future::Either::Left(((status, body), _)) = early {
        panic!("answered before the turn's rows could be stored: {status} {body}");
    }
    lock.release().await;
    let (status, body) = read.await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["content"], FIRST, "{body}");
    let (rest, end) = ws.answer("w1").await;
    text.push_str(&rest);
    assert_eq!(end["done"], true, "{end}");
    let all = messages(&app, &id).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0]["content"], FIRST);
    assert_eq!(all[1]["status"], "complete", "{:?}", all[1]);
    assert_eq!(all[1]["content"].as_str(), Some(text.as_str()));
}

/// Turns that queue while the database is busy go in together: far fewer transactions than
/// writes, and every turn stored whole.
#[actix_web::test]
async fn turns_queued_behind_a_busy_database_are_stored_together() {
    const TURNS: usize = 20;
    let (app, db) = app_on_own_db(Options {
        per_user: TURNS,
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let before = app.state.pipeline.writer().counts();
    let lock = WriteLock::take(&db.url).await;
    let asks = (0..TURNS).map(|i| {
        let app = &app;
        async move {
            let body = json!({"message": format!("{FIRST} ({i})"), "topK": 3});
            chat(app, &app.admin_key, body).await
        }
    });
    let all = futures_util::future::join_all(asks);
    let release = async {
        // Every answer has streamed once its rows and final write are queued; hold the
        // lock until then.
        let deadline = Instant::now() + Duration::from_secs(3);
        while app.state.pipeline.writer().counts().queued < before.queued + 2 * TURNS as u64 {
            assert!(Instant::now() < deadline, "writes queued within 3 s");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        lock.release().await;
    };
    let (answers, ()) = futures_util::join!(all, release);
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        let id = answer["conversationId"].as_str().expect("conversation id");
        let stored = messages(&app, id).await;
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert_eq!(stored[1]["status"], "complete");
        assert_eq!(stored[1]["content"], answer["answer"], "{answer}");
    }
    let after = app.state.pipeline.writer().counts();
    let (transactions, writes) = (
        after.transactions - before.transactions,
        after.writes - before.writes,
    );
    assert_eq!(
        writes,
        2 * TURNS as u64,
        "rows and final write of each turn"
    );
    assert!(
        transactions * 4 <= writes,
        "{writes} writes in {transactions} transactions"
    );
}
