//! The SignalR JSON hub protocol over raw WebSocket frames (the official JS client is
//! exercised by the Node suite in tests/node).

use std::time::Duration;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, TestApp, WsClient, TOWER};

const RS: char = '\u{1e}';

/// Reads records until `pred` matches one; answers nothing (pings are records too).
pub(crate) async fn records_until(
    ws: &mut WsClient,
    mut pred: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
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

pub(crate) async fn handshake(ws: &mut WsClient) {
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

// ---- stateful reconnect (ASP.NET Core 8): Ack, Sequence, the connection token's reuse ----

/// Negotiate v1; `stateful` asks for stateful reconnect. Returns the token and the body.
async fn negotiate(app: &TestApp, stateful: bool) -> (String, Value) {
    let query = if stateful {
        "negotiateVersion=1&useStatefulReconnect=true"
    } else {
        "negotiateVersion=1"
    };
    let mut res = app
        .client
        .post(app.url(&format!("/api/v1/chat/ws/negotiate?{query}")))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    (body["connectionToken"].as_str().unwrap().to_owned(), body)
}

/// Opens the socket of a connection token; the HTTP status when the upgrade is refused.
async fn connect_token(app: &TestApp, token: &str) -> Result<WsClient, u16> {
    let url = format!("{}/api/v1/chat/ws?id={token}", app.ws_base);
    match app.client.ws(&url).connect().await {
        Ok((res, framed)) => {
            assert_eq!(res.status().as_u16(), 101);
            Ok(WsClient { framed })
        }
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => Err(s.as_u16()),
        Err(e) => panic!("the upgrade failed: {e}"),
    }
}

async fn handshake_version(ws: &mut WsClient, version: u8) {
    ws.send_text(&format!(
        "{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}"
    ))
    .await;
    match ws.next_frame(Duration::from_secs(5)).await {
        Some(ws::Frame::Text(b)) => assert_eq!(&b[..], b"{}\x1e"),
        other => panic!("no handshake reply: {other:?}"),
    }
}

/// Reads until the socket closes (close frame, end, or a broken connection); returns the
/// records seen on the way.
async fn records_until_closed(ws: &mut WsClient) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let next = actix_web::rt::time::timeout(Duration::from_secs(10), ws.framed.next())
            .await
            .expect("the socket closes within 10 s");
        match next {
            Some(Ok(ws::Frame::Text(bytes))) => {
                let text = std::str::from_utf8(&bytes).unwrap();
                for record in text.split(RS).filter(|r| !r.is_empty()) {
                    seen.push(serde_json::from_str(record).unwrap());
                }
            }
            Some(Ok(ws::Frame::Close(_))) | None | Some(Err(_)) => return seen,
            Some(Ok(_)) => {}
        }
    }
}

/// A hub message the stateful reconnect numbers (what the hub sends: types 1 to 3).
fn numbered(v: &Value) -> bool {
    matches!(v["type"].as_i64(), Some(1..=3))
}

fn stateful_options(pace_ms: u64) -> Options {
    Options {
        pace: Duration::from_millis(pace_ms),
        resume_grace: Duration::from_secs(5),
        ..Options::default()
    }
}

const ASK_STREAM_S1: &str = "{\"type\":4,\"invocationId\":\"s1\",\"target\":\"AskStream\",\"arguments\":[\"How tall is the tower?\",3]}\u{1e}";

async fn tower_answer(app: &TestApp) -> String {
    let (_, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "How tall is the tower?", "topK": 3}),
        )
        .await;
    body["answer"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_reconnected_socket_gets_sequence_then_what_was_not_acknowledged_then_the_rest() {
    let app = spawn_app_with(stateful_options(30)).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (token, body) = negotiate(&app, true).await;
    assert_eq!(body["useStatefulReconnect"], true);
    let mut ws = connect_token(&app, &token)
        .await
        .expect("the token opens a socket");
    handshake_version(&mut ws, 2).await;
    ws.send_text(ASK_STREAM_S1).await;
    let mut items = 0;
    let first = records_until(&mut ws, |v| {
        items += usize::from(v["type"] == 2);
        items == 3
    })
    .await;
    assert!(
        first.iter().all(|r| r["type"] == 2 || r["type"] == 8),
        "stream items (and perhaps the hub's ack): {first:?}"
    );
    let have: Vec<String> = first
        .iter()
        .filter(|r| r["type"] == 2)
        .take(2)
        .map(|r| r["item"].as_str().unwrap().to_owned())
        .collect();
    // Acknowledge the first two messages, then close the WebSocket without a SignalR Close:
    // the hub lets the socket go but keeps the connection.
    ws.send_text("{\"type\":8,\"sequenceId\":2}\u{1e}").await;
    ws.framed.send(ws::Message::Close(None)).await.unwrap();
    records_until_closed(&mut ws).await;
    drop(ws);

    let mut ws = connect_token(&app, &token)
        .await
        .expect("the token of a waiting connection opens its reconnect");
    let mut records = records_until(&mut ws, |v| v["type"] == 3).await;
    let sequence = records.remove(0);
    assert_eq!(sequence["type"], 9, "Sequence comes first: {sequence}");
    let first_id = sequence["sequenceId"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&first_id),
        "the replay starts at the first message not acknowledged, or at the start of its batch: {first_id}"
    );
    // Numbered from `first_id`; what the client has processed (1 and 2) is skipped, as the
    // protocol tells clients to.
    let mut text = have.concat();
    for (id, r) in (first_id..).zip(records.iter().filter(|r| numbered(r))) {
        if let (3.., Some(item)) = (id, r["item"].as_str()) {
            text.push_str(item);
        }
    }
    assert_eq!(
        records.last().unwrap(),
        &json!({"type":3,"invocationId":"s1"})
    );
    assert_eq!(text, tower_answer(&app).await, "no token lost or repeated");

    // The client's side of the sequence goes on too: its next invocation (its message 2)
    // is processed, not taken for a duplicate.
    ws.send_text("{\"type\":9,\"sequenceId\":2}\u{1e}").await;
    ws.send_text("{\"type\":4,\"invocationId\":\"s2\",\"target\":\"AskStream\",\"arguments\":[\"tower\",1]}\u{1e}").await;
    let more = records_until(&mut ws, |v| v["type"] == 3 && v["invocationId"] == "s2").await;
    assert!(more
        .iter()
        .any(|r| r["type"] == 2 && r["invocationId"] == "s2"));
}

#[actix_web::test]
async fn a_socket_with_the_token_of_a_live_stateful_connection_takes_it_over() {
    let app = spawn_app_with(stateful_options(2)).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (token, _) = negotiate(&app, true).await;
    let mut old = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut old, 2).await;

    // The client gave up on a socket the hub still thinks is fine (a half-open TCP).
    let mut new = connect_token(&app, &token)
        .await
        .expect("the live connection's token opens its reconnect");
    let first = records_until(&mut new, |_| true).await;
    assert_eq!(first, [json!({"type":9,"sequenceId":1})]);
    records_until_closed(&mut old).await;

    new.send_text("{\"type\":9,\"sequenceId\":1}\u{1e}").await;
    new.send_text(ASK_STREAM_S1).await;
    let records = records_until(&mut new, |v| v["type"] == 3).await;
    let text: String = records.iter().filter_map(|r| r["item"].as_str()).collect();
    assert_eq!(text, tower_answer(&app).await);
}

#[actix_web::test]
async fn a_connection_token_opens_a_new_connection_once_and_dies_with_its_connection() {
    let app = spawn_app_with(stateful_options(2)).await;

    // Stateful reconnect negotiated, but a version 1 handshake: as in ASP.NET Core, no
    // stateful reconnect, so the token stays single-use.
    let (token, _) = negotiate(&app, true).await;
    let mut ws = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut ws, 1).await;
    drop(ws);
    assert_eq!(connect_token(&app, &token).await.err(), Some(404));

    // Not negotiated: a version 2 handshake alone does not make the token reusable.
    let (token, body) = negotiate(&app, false).await;
    assert!(body.get("useStatefulReconnect").is_none());
    let mut ws = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut ws, 2).await;
    drop(ws);
    assert_eq!(connect_token(&app, &token).await.err(), Some(404));

    // A SignalR Close is the client leaving for good: the token dies with the connection.
    let (token, _) = negotiate(&app, true).await;
    let mut ws = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut ws, 2).await;
    ws.send_text("{\"type\":7}\u{1e}").await;
    records_until_closed(&mut ws).await;
    assert_eq!(connect_token(&app, &token).await.err(), Some(404));

    // So does a connection an administrator ends (its client is told to reconnect: anew).
    let (token, _) = negotiate(&app, true).await;
    let mut ws = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut ws, 2).await;
    let (_, list) = app
        .get_json("/api/v1/admin/connections", &app.admin_key)
        .await;
    let id = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["protocol"] == "signalr")
        .map(|c| c["id"].clone())
        .unwrap();
    let status = app
        .delete(&format!("/api/v1/admin/connections/{id}"), &app.admin_key)
        .await;
    assert_eq!(status, 204);
    let records = records_until_closed(&mut ws).await;
    assert_eq!(records.last().unwrap()["allowReconnect"], true);
    assert_eq!(connect_token(&app, &token).await.err(), Some(404));
}

#[actix_web::test]
async fn without_a_grace_window_negotiate_offers_no_stateful_reconnect() {
    let app = spawn_app().await; // resume grace 0
    let (_, body) = negotiate(&app, true).await;
    assert!(body.get("useStatefulReconnect").is_none(), "{body}");
}

#[actix_web::test]
async fn a_client_that_lets_unacknowledged_messages_pile_up_is_closed_for_good() {
    let app = spawn_app_with(Options {
        settings: Some(Box::new(|s| s.signalr_resend_max_bytes = 300)),
        ..stateful_options(2)
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (token, _) = negotiate(&app, true).await;
    let mut ws = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut ws, 2).await;
    ws.send_text(ASK_STREAM_S1).await;
    let records = records_until_closed(&mut ws).await;
    let close = records.last().unwrap();
    assert_eq!(close["type"], 7, "{records:?}");
    assert!(close.get("allowReconnect").is_none(), "{close}");
    assert!(close["error"]
        .as_str()
        .unwrap()
        .contains("not acknowledged"));
    let sent: usize = records
        .iter()
        .filter(|r| numbered(r))
        .map(|r| r.to_string().len() + 1)
        .sum();
    assert!(
        sent <= 300,
        "no more than the bound went out unacknowledged ({sent} bytes)"
    );
    assert_eq!(connect_token(&app, &token).await.err(), Some(404));
}

#[actix_web::test]
async fn a_sequence_ahead_of_what_the_hub_received_closes_the_connection() {
    let app = spawn_app_with(stateful_options(2)).await;
    let (token, _) = negotiate(&app, true).await;
    let mut ws = connect_token(&app, &token).await.unwrap();
    handshake_version(&mut ws, 2).await;
    drop(ws);
    let mut ws = connect_token(&app, &token).await.expect("reconnects");
    // The hub received nothing, so the client's next message can only be its first.
    ws.send_text("{\"type\":9,\"sequenceId\":5}\u{1e}").await;
    let records = records_until_closed(&mut ws).await;
    let close = records.last().unwrap();
    assert_eq!(close["type"], 7, "{records:?}");
    assert!(close["error"].as_str().unwrap().contains("Sequence ID 5"));
    assert!(close.get("allowReconnect").is_none());
}

#[actix_web::test]
async fn resume_answer_of_another_keys_answer_is_an_error_completion_as_for_an_unknown_id() {
    let app = spawn_app_with(Options {
        resume_grace: Duration::from_secs(10),
        ..Options::default()
    })
    .await;
    let (tenant, owner) = app.new_tenant("owner").await;
    app.add_document(&owner, "Tower", TOWER).await;
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream"))
        .query(&[("question", "How tall is the tower?"), ("topK", "3")])
        .expect("query")
        .insert_header(("X-API-Key", owner.as_str()))
        .send()
        .await
        .expect("asked");
    let answer_id = res
        .headers()
        .get("x-answer-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Answer-Id")
        .to_owned();
    let mut body = crate::helpers::SseReader::new(res);
    let frames = body.collect().await;
    assert!(frames.last().expect("frames").json()["done"] == true);

    let colleague = app.new_key(&tenant, "colleague").await;
    let not_found = "No such answer (unknown, ended longer ago than the resume grace window, or not this key's).";
    for key in [colleague.as_str(), app.admin_key.as_str()] {
        let mut ws = app.open_ws(key).await;
        handshake(&mut ws).await;
        let mut n = 0;
        for answer in [answer_id.as_str(), "no-such-answer"] {
            // As an invocation and as a stream invocation.
            for kind in [1, 4] {
                n += 1;
                let id = n.to_string();
                let record = json!({"type": kind, "invocationId": id, "target": "ResumeAnswer", "arguments": [answer, 0]});
                ws.send_text(&format!("{record}{RS}")).await;
                let records =
                    records_until(&mut ws, |v| v["type"] == 3 && v["invocationId"] == id).await;
                assert!(
                    records.iter().all(|r| r["type"] != 2
                        && r["target"] != "ReceiveToken"
                        && r["target"] != "StreamComplete"),
                    "nothing of the answer: {records:?}"
                );
                let completion = records.last().expect("a completion");
                assert_eq!(completion["error"], not_found, "{answer}: {completion}");
                assert!(completion.get("result").is_none(), "{completion}");
            }
        }
    }

    // The owner gets it by the same call: the id was a real one.
    let mut ws = app.open_ws(&owner).await;
    handshake(&mut ws).await;
    let record = json!({"type": 4, "invocationId": "mine", "target": "ResumeAnswer", "arguments": [answer_id, 0]});
    ws.send_text(&format!("{record}{RS}")).await;
    let records = records_until(&mut ws, |v| v["type"] == 3 && v["invocationId"] == "mine").await;
    assert!(
        records.last().unwrap().get("error").is_none(),
        "{records:?}"
    );
    assert!(records.iter().any(|r| r["type"] == 2), "{records:?}");
}
