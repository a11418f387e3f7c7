use std::time::Duration;

use awc::ws;
use futures_util::SinkExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, TOWER};

async fn post_raw(
    app: &crate::helpers::TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut res = app
        .client
        .post(app.url(path))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("Content-Type", content_type))
        .send_body(body)
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, crate::helpers::parse(&res.body().await.unwrap()))
}

#[actix_web::test]
async fn bad_questions_get_400_with_a_code_on_json_and_sse() {
    let app = spawn_app().await;
    let long = "x".repeat(4001);
    let cases = [
        (json!({"question": ""}), "empty_question"),
        (json!({"question": "   "}), "empty_question"),
        (json!({}), "empty_question"),
        (json!({"question": long}), "question_too_long"),
        (json!({"question": "q", "topK": 0}), "invalid_top_k"),
        (json!({"question": "q", "topK": 21}), "invalid_top_k"),
        (json!({"question": "q", "topK": "five"}), "invalid_request"),
        (json!({"question": 7}), "invalid_request"),
    ];
    for (body, code) in cases {
        for path in ["/api/v1/ask", "/api/v1/ask/stream"] {
            let (status, err) = app.post_json(path, &app.admin_key, body.clone()).await;
            assert_eq!(status, 400, "{path} {body}: {err}");
            assert_eq!(err["error"]["code"], code, "{path} {body}");
            assert!(err["error"]["message"].as_str().unwrap().len() > 5);
        }
    }
    for (query, code) in [
        ("question=", "empty_question"),
        ("topK=3", "empty_question"),
        ("question=q&topK=abc", "invalid_query"),
        ("question=q&topK=99", "invalid_top_k"),
    ] {
        let (status, err) = app
            .get_json(&format!("/api/v1/ask/stream?{query}"), &app.admin_key)
            .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(err["error"]["code"], code, "{query}");
    }
    assert_eq!(
        app.stats().await.admitted_total,
        0,
        "nothing bad was admitted"
    );
}

#[actix_web::test]
async fn invalid_json_non_json_and_non_utf8_bodies_get_clear_errors() {
    let app = spawn_app().await;
    let (status, err) = post_raw(
        &app,
        "/api/v1/ask",
        "application/json",
        b"{\"question\":".to_vec(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let (status, err) = post_raw(
        &app,
        "/api/v1/ask",
        "application/json",
        b"{\"question\":\"\xff\xfe\"}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let (status, err) = post_raw(&app, "/api/v1/ask", "text/plain", b"question".to_vec()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    let (status, err) = post_raw(
        &app,
        "/api/v1/documents",
        "text/plain",
        b"caf\xe9 au lait".to_vec(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_utf8"))
    );

    let (status, err) = post_raw(
        &app,
        "/api/v1/documents",
        "application/json",
        b"{\"title\":\"t\"}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let (status, err) = post_raw(
        &app,
        "/api/v1/documents",
        "application/json",
        b"{\"title\":\"t\",\"text\":\"  \"}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("empty_document"))
    );

    let (status, err) = post_raw(&app, "/api/v1/documents", "image/png", b"\x89PNG".to_vec()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    let big = vec![b'a'; 70 * 1024];
    let (status, err) = post_raw(&app, "/api/v1/ask", "application/json", big).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[actix_web::test]
async fn bad_websocket_frames_get_error_frames_and_other_answers_go_on() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(20),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": "How tall is the tower?", "id": "good"}))
        .await;

    let oversized = format!(r#"{{"message":"{}","id":"big"}}"#, "y".repeat(70 * 1024));
    let bad: Vec<(String, &str)> = vec![
        ("hello there".to_owned(), "invalid_json"),
        ("[]".to_owned(), "invalid_frame"),
        (
            json!({"type": "dance", "id": "d"}).to_string(),
            "unknown_type",
        ),
        (
            json!({"message": "", "id": "e"}).to_string(),
            "empty_question",
        ),
        (
            json!({"message": "x".repeat(4001), "id": "l"}).to_string(),
            "question_too_long",
        ),
        (
            json!({"message": "q", "topK": 50, "id": "k"}).to_string(),
            "invalid_top_k",
        ),
        (
            json!({"message": "q", "id": "good"}).to_string(),
            "duplicate_id",
        ),
        (
            json!({"message": "q", "id": "p", "provider": "nope"}).to_string(),
            "unknown_provider",
        ),
        (
            json!({"message": "q", "id": "m", "model": "gpt-9"}).to_string(),
            "unknown_model",
        ),
        (oversized, "message_too_large"),
    ];
    for (text, _) in &bad {
        ws.send_text(text).await;
    }
    ws.framed
        .send(ws::Message::Binary(bytes::Bytes::from_static(b"\x00\x01")))
        .await
        .unwrap();

    let mut want: Vec<&str> = bad.iter().map(|(_, code)| *code).collect();
    want.push("unsupported_frame");
    let mut got = Vec::new();
    let mut good_done = false;
    while !(good_done && got.len() == want.len()) {
        let f = ws.next_json().await;
        if f["id"] == "good" && f["error"]["code"] != "duplicate_id" {
            assert!(f.get("error").is_none(), "the good answer failed: {f}");
            good_done |= f["done"] == true;
        } else {
            got.push(
                f["error"]["code"]
                    .as_str()
                    .expect("an error frame")
                    .to_owned(),
            );
        }
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Still open and usable.
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
}

#[actix_web::test]
async fn a_frame_over_the_codec_cap_closes_the_socket_with_1009() {
    let app = spawn_app().await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_text(&"z".repeat(2 * 1024 * 1024)).await;
    let mut saw_error = false;
    loop {
        match ws.next_frame(Duration::from_secs(5)).await {
            Some(ws::Frame::Text(t)) => {
                let v: Value = serde_json::from_slice(&t).unwrap();
                assert_eq!(v["error"]["code"], "message_too_large");
                saw_error = true;
            }
            Some(ws::Frame::Close(Some(reason))) => {
                assert_eq!(reason.code, ws::CloseCode::Size);
                break;
            }
            Some(ws::Frame::Ping(_)) => {}
            None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_error);
}

#[actix_web::test]
async fn a_plain_http_request_to_the_websocket_route_gets_400() {
    let app = spawn_app().await;
    let (status, err) = app.get_json("/api/v1/chat/ws", &app.admin_key).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "websocket_required");
}
