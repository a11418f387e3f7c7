use std::time::Duration;

use awc::ws;
use futures_util::SinkExt;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Options, BRIDGE, TOWER};

#[actix_web::test]
async fn two_answers_stream_at_once_on_one_socket_told_apart_by_id() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(5),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app.add_document(&app.admin_key, "Bridge", BRIDGE).await;
    let q1 = "How tall is the Eiffel Tower?";
    let q2 = "When did the Golden Gate Bridge open?";

    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": q1, "topK": 3, "id": "c1"}))
        .await;
    ws.send_json(json!({"message": q2, "topK": 3, "id": "c2"}))
        .await;

    let mut text = [String::new(), String::new()];
    let mut done = [false, false];
    let mut first_done_at = None;
    let mut frames = 0;
    while !(done[0] && done[1]) {
        let frame = ws.next_json().await;
        frames += 1;
        let slot = match frame["id"].as_str() {
            Some("c1") => 0,
            Some("c2") => 1,
            other => panic!("unexpected id {other:?} in {frame}"),
        };
        assert!(!done[slot], "a frame after done: {frame}");
        if let Some(t) = frame["token"].as_str() {
            text[slot].push_str(t);
        } else if frame["done"] == true {
            assert_eq!(frame["metadata"]["provider"], "offline");
            done[slot] = true;
            first_done_at.get_or_insert(frames);
        } else {
            assert!(
                frame["sources"].is_array() || frame["conversationId"].is_string(),
                "{frame}"
            );
        }
    }
    // Interleaved, not one after the other: the first answer ended after both had begun.
    assert!(first_done_at.unwrap() > text[0].split(' ').count().min(text[1].split(' ').count()));

    for (q, got) in [(q1, &text[0]), (q2, &text[1])] {
        let (_, body) = app
            .post_json(
                "/api/v1/ask",
                &app.admin_key,
                json!({"question": q, "topK": 3}),
            )
            .await;
        assert_eq!(got, body["answer"].as_str().unwrap());
    }
    assert!(text[1].contains("1937"));
}

#[actix_web::test]
async fn the_seeds_frame_without_id_gets_a_server_id_echoed_on_every_frame() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": "How tall is the tower?"}))
        .await;
    let first = ws.next_json().await;
    let id = first["id"].as_str().expect("server-made id").to_owned();
    let (text, end) = ws.answer(&id).await;
    assert_eq!(end["done"], true);
    assert!(text.contains("330"), "{text}");
}

#[actix_web::test]
async fn cancel_stops_one_answer_frees_its_slot_and_the_other_goes_on() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(60),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": "How tall is the tower?", "id": "slow"}))
        .await;
    ws.send_json(json!({"message": "When was the tower built?", "id": "keep"}))
        .await;

    // Wait until both answers are producing tokens.
    let mut started = [false, false];
    while !(started[0] && started[1]) {
        let f = ws.next_json().await;
        if f["token"].is_string() {
            started[(f["id"] == "keep") as usize] = true;
        }
    }
    assert_eq!(app.stats().await.active_streams, 2);
    ws.send_json(json!({"type": "cancel", "id": "slow"})).await;
    let freed = app
        .wait_for_active_streams(1, Duration::from_millis(100))
        .await;
    eprintln!("cancel freed the slot in {freed:?}");

    let mut cancelled = false;
    loop {
        let f = ws.next_json().await;
        if f["id"] == "slow" {
            if f["error"]["code"] == "cancelled" {
                cancelled = true;
                continue;
            }
            assert!(!cancelled, "a frame after the cancel: {f}");
        }
        if f["id"] == "keep" && f["done"] == true {
            break;
        }
    }
    assert!(cancelled);
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;

    ws.send_json(json!({"type": "cancel", "id": "slow"})).await;
    let f = ws.next_json().await;
    assert_eq!(f["error"]["code"], "unknown_id");
}

#[actix_web::test]
async fn closing_the_socket_mid_answer_stops_it_and_frees_the_slot() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(2000),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": "How tall is the tower?", "id": "a"}))
        .await;
    loop {
        if ws.next_json().await["token"].is_string() {
            break;
        }
    }
    assert_eq!(app.stats().await.active_streams, 1);
    assert_eq!(app.stats().await.ws_connections, 1);
    ws.framed.close().await.unwrap();
    drop(ws);
    // Without cancellation the slot would stay taken for the whole 2 s-per-token answer.
    let freed = app
        .wait_for_active_streams(0, Duration::from_millis(100))
        .await;
    eprintln!("closing the socket freed the slot in {freed:?}");
    let stats = app.stats().await;
    assert_eq!(stats.released_total, stats.admitted_total);
}

#[actix_web::test]
async fn an_application_ping_gets_a_pong() {
    let app = spawn_app().await;
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"type": "pong"}));
}

#[actix_web::test]
async fn the_server_pings_and_closes_a_silent_client() {
    let app = spawn_app_with(Options {
        heartbeat: Duration::from_millis(100),
        client_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let mut ws = app.open_ws(&app.admin_key).await;
    let mut pings = 0;
    loop {
        match ws.next_frame(Duration::from_secs(3)).await {
            Some(ws::Frame::Ping(_)) => pings += 1,
            Some(ws::Frame::Close(reason)) => {
                let reason = reason.expect("a close reason");
                assert_eq!(reason.code, ws::CloseCode::Away);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "pings: {pings}");
    assert_eq!(app.stats().await.ws_connections, 0);
}

#[actix_web::test]
async fn a_client_that_answers_pings_stays_connected() {
    let app = spawn_app_with(Options {
        heartbeat: Duration::from_millis(100),
        client_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let mut ws = app.open_ws(&app.admin_key).await;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        match ws.next_frame(Duration::from_secs(1)).await {
            Some(ws::Frame::Ping(p)) => ws.framed.send(ws::Message::Pong(p)).await.unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
}
