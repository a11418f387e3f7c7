//! The SignalR JSON hub protocol over raw WebSocket frames (the official JS client is
//! exercised by the Node suite in tests/node).

use std::time::Duration;

use awc::ws;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, WsClient, TOWER};

const RS: char = '\u{1e}';

/// Reads records until `pred` matches one; answers nothing (pings are records too).
async fn records_until(ws: &mut WsClient, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        match ws.next_frame(Duration::from_secs(10)).await {
            Some(ws::Frame::Text(bytes)) => {
                let text = std::str::from_utf8(&bytes).unwrap().to_owned();
                assert!(text.ends_with(RS), "every message ends with 0x1E: {text:?}");
                for record in text.split(RS).filter(|r| !r.is_empty()) {
                    let v: Value = serde_json::from_str(record).unwrap();
                    let stop = pred(&v);
                    seen.push(v);
                    if stop {
                        return seen;
                    }
                }
            }
            Some(ws::Frame::Ping(_)) | Some(ws::Frame::Pong(_)) => {}
            other => panic!("unexpected {other:?} after {seen:?}"),
        }
    }
}

async fn handshake(ws: &mut WsClient) {
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    match ws.next_frame(Duration::from_secs(5)).await {
        Some(ws::Frame::Text(b)) => assert_eq!(&b[..], b"{}\x1e"),
        other => panic!("no handshake reply: {other:?}"),
    }
}

#[actix_web::test]
async fn send_message_streams_receive_token_then_stream_complete_then_a_completion() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    handshake(&mut ws).await;
    ws.send_text("{\"type\":6}\u{1e}{\"target\":\"SendMessage\",\"arguments\":[\"How tall is the tower?\",3],\"invocationId\":\"0\",\"type\":1}\u{1e}").await;
    let records = records_until(&mut ws, |v| v["type"] == 3).await;

    let mut text = String::new();
    let mut complete = None;
    for r in &records {
        match (r["type"].as_i64(), r["target"].as_str()) {
            (Some(1), Some("ReceiveToken")) => {
                assert!(complete.is_none(), "a token after StreamComplete");
                text.push_str(r["arguments"][0].as_str().unwrap());
            }
            (Some(1), Some("StreamComplete")) => complete = Some(r["arguments"][0].clone()),
            (Some(3), _) => assert_eq!(r, &json!({"type":3,"invocationId":"0","result":null})),
            (Some(6), _) => {}
            other => panic!("unexpected record {other:?}: {r}"),
        }
    }
    let meta = complete.expect("StreamComplete before the Completion");
    assert_eq!(meta["provider"], "offline");
    let (_, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "How tall is the tower?", "topK": 3}),
        )
        .await;
    assert_eq!(text, body["answer"].as_str().unwrap());
}

#[actix_web::test]
async fn ask_stream_items_end_with_a_completion_and_cancel_invocation_stops_the_answer() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    handshake(&mut ws).await;
    ws.send_text("{\"target\":\"AskStream\",\"arguments\":[\"How tall is the tower?\",3],\"invocationId\":\"1\",\"type\":4}\u{1e}").await;
    let first = records_until(&mut ws, |v| v["type"] == 2).await;
    assert_eq!(first.last().unwrap()["invocationId"], "1");
    assert!(first.last().unwrap()["item"].is_string());
    assert_eq!(app.stats().await.active_streams, 1);

    ws.send_text("{\"invocationId\":\"1\",\"type\":5}\u{1e}")
        .await;
    app.wait_for_active_streams(0, Duration::from_millis(100))
        .await;
    let end = records_until(&mut ws, |v| v["type"] == 3).await;
    assert_eq!(end.last().unwrap(), &json!({"type":3,"invocationId":"1"}));
}

#[actix_web::test]
async fn one_record_split_over_two_frames_is_reassembled() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    // The handshake itself arrives in two frames, glued to the first invocation's start.
    ws.send_text("{\"protocol\":\"json\",").await;
    ws.send_text("\"version\":1}\u{1e}{\"target\":\"AskStream\",\"argu")
        .await;
    ws.send_text("ments\":[\"tower height\"],\"invocationId\":\"7\",\"type\":4}\u{1e}")
        .await;
    let records = records_until(&mut ws, |v| v["type"] == 3).await;
    assert_eq!(
        records.last().unwrap(),
        &json!({"type":3,"invocationId":"7"})
    );
    assert!(records.iter().any(|r| r["type"] == 2));
}

#[actix_web::test]
async fn an_unsupported_or_malformed_handshake_gets_an_error_and_a_close() {
    let app = spawn_app().await;
    for (handshake, error) in [
        (
            "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}",
            "Requested protocol 'messagepack' is not available.",
        ),
        (
            "{\"protocol\":\"json\"}\u{1e}",
            "Handshake request is invalid: missing \"version\"",
        ),
    ] {
        let mut ws = app.open_ws(&app.admin_key).await;
        ws.send_text(handshake).await;
        match ws.next_frame(Duration::from_secs(5)).await {
            Some(ws::Frame::Text(b)) => {
                let text = std::str::from_utf8(&b).unwrap();
                assert_eq!(text, format!("{}\u{1e}", json!({"error": error})));
            }
            other => panic!("expected a handshake error, got {other:?}"),
        }
        assert!(matches!(
            ws.next_frame(Duration::from_secs(5)).await,
            Some(ws::Frame::Close(_)) | None
        ));
    }
}

#[actix_web::test]
async fn a_refused_invocation_gets_an_error_completion_and_the_connection_stays() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(2000),
        per_user: 1,
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    handshake(&mut ws).await;
    ws.send_text("{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"tower\",2],\"invocationId\":\"0\"}\u{1e}").await;
    records_until(&mut ws, |v| v["target"] == "ReceiveToken").await;
    ws.send_text("{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"tower\",2],\"invocationId\":\"1\"}\u{1e}").await;
    let records = records_until(&mut ws, |v| v["type"] == 3 && v["invocationId"] == "1").await;
    let completion = records.last().unwrap();
    assert!(
        completion["error"]
            .as_str()
            .unwrap()
            .contains("answers streaming"),
        "{completion}"
    );
    assert!(completion.get("result").is_none());
    assert!(records.iter().any(|r| r["target"] == "Error"));

    // Unknown methods and bad arguments are error completions too, on the same connection.
    ws.send_text("{\"type\":1,\"target\":\"Nope\",\"arguments\":[],\"invocationId\":\"2\"}\u{1e}")
        .await;
    let r = records_until(&mut ws, |v| v["type"] == 3 && v["invocationId"] == "2").await;
    assert!(r.last().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("Unknown hub method 'Nope'"));
    ws.send_text(
        "{\"type\":4,\"target\":\"AskStream\",\"arguments\":[42],\"invocationId\":\"3\"}\u{1e}",
    )
    .await;
    let r = records_until(&mut ws, |v| v["type"] == 3 && v["invocationId"] == "3").await;
    assert!(r.last().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("question"));
}

#[actix_web::test]
async fn an_idle_signalr_connection_gets_ping_messages() {
    let app = spawn_app_with(Options {
        heartbeat: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let mut ws = app.open_ws(&app.admin_key).await;
    handshake(&mut ws).await;
    let records = records_until(&mut ws, |v| v["type"] == 6).await;
    assert_eq!(records, [json!({"type": 6})]);
}

#[actix_web::test]
async fn an_administrator_ending_a_connection_sends_a_close_that_allows_reconnect() {
    let app = spawn_app().await;
    let mut ws = app.open_ws(&app.admin_key).await;
    handshake(&mut ws).await;
    let (_, list) = app
        .get_json("/api/v1/admin/connections", &app.admin_key)
        .await;
    let conn = &list["connections"][0];
    assert_eq!(conn["protocol"], "signalr");
    assert_eq!(
        app.delete(
            &format!("/api/v1/admin/connections/{}", conn["id"]),
            &app.admin_key
        )
        .await,
        204
    );
    let records = records_until(&mut ws, |v| v["type"] == 7).await;
    assert_eq!(records.last().unwrap()["allowReconnect"], true);
}

#[actix_web::test]
async fn negotiate_answers_versions_0_and_1_and_the_token_opens_the_socket_once() {
    let app = spawn_app().await;
    for version in [0, 1] {
        let mut res = app
            .client
            .post(app.url(&format!(
                "/api/v1/chat/ws/negotiate?negotiateVersion={version}"
            )))
            .insert_header(("Authorization", format!("Bearer {}", app.admin_key)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["negotiateVersion"], version);
        assert_eq!(
            body["availableTransports"],
            json!([{"transport": "WebSockets", "transferFormats": ["Text"]}])
        );
        let token = if version == 1 {
            assert!(body["connectionId"].is_string());
            body["connectionToken"].as_str().unwrap().to_owned()
        } else {
            assert!(body.get("connectionToken").is_none());
            body["connectionId"].as_str().unwrap().to_owned()
        };
        // No key on the socket: the token stands for the negotiated credentials, once.
        let url = format!("{}/api/v1/chat/ws?id={token}", app.ws_base);
        let (res, _framed) = app.client.ws(&url).connect().await.expect("connects");
        assert_eq!(res.status().as_u16(), 101);
        match app.client.ws(&url).connect().await {
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 404),
            other => panic!(
                "a token is single-use, got {:?}",
                other.map(|(r, _)| r.status())
            ),
        }
    }
    let res = app
        .client
        .post(app.url("/api/v1/chat/ws/negotiate"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}
