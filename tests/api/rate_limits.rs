//! Request-rate limits per API key, on every transport, apart from the concurrent-stream
//! limit.

use std::time::Duration;

use awc::ws;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Options, TestApp, TOWER};

/// Two answers a minute (one more every 30 s), one upload a minute.
async fn limited_app() -> TestApp {
    let app = spawn_app_with(Options {
        settings: Some(Box::new(|s| {
            s.rate_per_minute = 2;
            s.upload_rate_per_minute = 1;
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app
}

/// The retry hint of a refusal: within one 30 s replenishment.
fn assert_retry_hint(secs: u64) {
    assert!((1..=30).contains(&secs), "Retry-After {secs}");
}

/// Seconds named by "retry in N s" in an error message.
fn hint_in(message: &str) -> u64 {
    message
        .split("retry in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry hint in {message:?}"))
}

/// A 429 `rate_limited` response: its `Retry-After`, in seconds.
async fn refused<S>(mut res: awc::ClientResponse<S>) -> u64
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    assert_eq!(res.status().as_u16(), 429);
    let retry = res.headers().get("retry-after").expect("Retry-After");
    let retry: u64 = retry.to_str().unwrap().parse().expect("whole seconds");
    let body = crate::helpers::parse(&res.body().await.unwrap());
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    retry
}

async fn ask(app: &TestApp, key: &str) -> (u16, Option<String>, Value) {
    let mut res = app
        .client
        .post(app.url("/api/v1/ask"))
        .insert_header(("X-API-Key", key))
        .send_json(&json!({"question": "How tall is the tower?"}))
        .await
        .expect("ask");
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = crate::helpers::parse(&res.body().await.expect("body"));
    (res.status().as_u16(), retry, body)
}

#[actix_web::test]
async fn json_answers_over_the_rate_get_429_rate_limited_with_retry_after_per_key() {
    let app = limited_app().await;
    assert_eq!(ask(&app, &app.admin_key).await.0, 200);
    assert_eq!(ask(&app, &app.admin_key).await.0, 200);
    let (status, retry, body) = ask(&app, &app.admin_key).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = retry.expect("Retry-After").parse().expect("whole seconds");
    assert_retry_hint(retry);
    assert_eq!(hint_in(body["error"]["message"].as_str().unwrap()), retry);

    // Another key of the same tenant has its own budget.
    let (tenant, _) = app.new_tenant("other").await;
    let other = app.new_key(&tenant, "second").await;
    app.add_document(&other, "Tower", TOWER).await;
    assert_eq!(ask(&app, &other).await.0, 200);
}

#[actix_web::test]
async fn sse_answers_over_the_rate_get_429_before_the_stream_starts() {
    let app = limited_app().await;
    for _ in 0..2 {
        let mut res = app.open_sse(&app.admin_key, "How tall is the tower?").await;
        assert_eq!(res.status().as_u16(), 200);
        res.body().limit(1 << 20).await.expect("the stream ends");
    }
    let res = app.open_sse(&app.admin_key, "How tall is the tower?").await;
    assert_retry_hint(refused(res).await);
}

#[actix_web::test]
async fn plain_websocket_questions_over_the_rate_get_an_error_frame_and_the_socket_stays() {
    let app = limited_app().await;
    let mut ws = app.open_ws(&app.admin_key).await;
    for id in ["a", "b"] {
        ws.send_json(json!({"message": "How tall is the tower?", "id": id}))
            .await;
        let (_, end) = ws.answer(id).await;
        assert_eq!(end["done"], true, "{end}");
    }
    ws.send_json(json!({"message": "How tall is the tower?", "id": "c"}))
        .await;
    let (_, end) = ws.answer("c").await;
    assert_eq!(end["error"]["code"], "rate_limited", "{end}");
    assert_retry_hint(hint_in(end["error"]["message"].as_str().unwrap()));
    // Still open: a ping is answered.
    ws.send_json(json!({"type": "ping"})).await;
    assert!(matches!(
        ws.next_frame(Duration::from_secs(5)).await,
        Some(ws::Frame::Text(_))
    ));
}

#[actix_web::test]
async fn signalr_invocations_over_the_rate_get_an_error_and_an_error_completion() {
    let app = limited_app().await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    let mut completions = Vec::new();
    let mut errors = Vec::new();
    for n in 0..3 {
        ws.send_text(&format!(
            "{{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"How tall is the tower?\",3],\"invocationId\":\"{n}\"}}\u{1e}"
        ))
        .await;
        'answer: loop {
            let Some(ws::Frame::Text(bytes)) = ws.next_frame(Duration::from_secs(10)).await else {
                continue;
            };
            let text = std::str::from_utf8(&bytes).unwrap();
            for record in text.split('\u{1e}').filter(|r| !r.is_empty() && *r != "{}") {
                let v: Value = serde_json::from_str(record).unwrap();
                if v["target"] == "Error" {
                    errors.push(v["arguments"][0].as_str().unwrap().to_owned());
                }
                if v["type"] == 3 {
                    completions.push(v);
                    break 'answer;
                }
            }
        }
    }
    assert_eq!(completions[0]["result"], Value::Null);
    assert_eq!(completions[1]["result"], Value::Null);
    let refused = completions[2]["error"]
        .as_str()
        .expect("an error completion");
    assert_retry_hint(hint_in(refused));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0], refused);
}

#[actix_web::test]
async fn uploads_have_their_own_rate() {
    let app = limited_app().await; // its one upload a minute is spent
    let res = app
        .client
        .post(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send_json(&json!({"title": "Again", "text": TOWER}))
        .await
        .expect("upload");
    let retry = refused(res).await;
    assert!((1..=60).contains(&retry), "{retry}");
    // Answers are counted apart.
    assert_eq!(ask(&app, &app.admin_key).await.0, 200);
}
