use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app_with, Options, SseReader, WsClient, TOWER};

fn slow(per_user: usize, global: usize) -> Options {
    Options {
        pace: Duration::from_millis(2000),
        per_user,
        global,
        ..Options::default()
    }
}

#[actix_web::test]
async fn over_the_per_user_limit_sse_and_json_get_429_and_websocket_an_error_frame() {
    let app = spawn_app_with(slow(2, 100)).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let a = app.open_sse(&app.admin_key, "tower").await;
    let b = app.open_sse(&app.admin_key, "tower").await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(app.stats().await.active_streams, 2);

    let mut third = app.open_sse(&app.admin_key, "tower").await;
    assert_eq!(third.status().as_u16(), 429);
    assert_eq!(third.headers().get("retry-after").unwrap(), "1");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert!(body["error"]["message"].as_str().unwrap().contains('2'));

    let (status, body) = app
        .post_json("/api/v1/ask", &app.admin_key, json!({"question": "tower"}))
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_streams");

    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": "tower", "id": "w1"})).await;
    let frame = ws.next_json().await;
    assert_eq!(frame["id"], "w1");
    assert_eq!(frame["error"]["code"], "too_many_streams");

    // Another user is not affected by this user's limit.
    let (tenant, _) = app.new_tenant("other").await;
    let other = app.new_key(&tenant, "second").await;
    let res = app.open_sse(&other, "tower").await;
    assert_eq!(res.status().as_u16(), 200);
    drop(res);

    // Freeing one slot lets the same socket ask again: it stayed open.
    drop(a);
    app.wait_for_active_streams(1, Duration::from_secs(2)).await;
    ws.send_json(json!({"message": "tower", "id": "w2"})).await;
    let frame = ws.next_json().await;
    assert_eq!(frame["id"], "w2");
    // Admitted: a WebSocket question is a conversation turn, whose first frame names it.
    assert!(frame["conversationId"].is_string(), "{frame}");
    drop(b);
}

#[actix_web::test]
async fn over_the_global_limit_any_user_gets_429_server_busy() {
    let app = spawn_app_with(slow(5, 1)).await;
    let (tenant, key) = app.new_tenant("t2").await;
    let _ = tenant;
    let first = app.open_sse(&app.admin_key, "anything").await;
    assert_eq!(first.status().as_u16(), 200);
    let mut second = app.open_sse(&key, "anything").await;
    assert_eq!(second.status().as_u16(), 429);
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_busy");
    assert_eq!(app.stats().await.refused_total, 1);
}

#[actix_web::test]
async fn an_sse_client_that_disconnects_stops_its_answer_and_frees_its_slot() {
    let app = spawn_app_with(slow(5, 100)).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let res = app.open_sse(&app.admin_key, "How tall is the tower?").await;
    let mut reader = SseReader::new(res);
    // Sources, then the first token; the next one is 2 s away.
    let sources = reader.next().await.unwrap();
    assert_eq!(sources.event.as_deref(), Some("sources"));
    let token = reader.next().await.unwrap();
    assert_eq!(token.json()["done"], false);
    assert_eq!(app.stats().await.active_streams, 1);
    assert_eq!(app.stats().await.sse_connections, 1);

    drop(reader);
    // Measured here in single-digit milliseconds; without cancellation the slot would stay
    // taken for the many seconds the answer still had to run.
    let freed = app
        .wait_for_active_streams(0, Duration::from_millis(100))
        .await;
    eprintln!("disconnect freed the slot in {freed:?}");
    let stats = app.stats().await;
    assert_eq!(stats.released_total, 1);
    assert_eq!(stats.sse_connections, 0);
}

#[actix_web::test]
async fn an_administrator_ending_an_sse_connection_ends_its_body_and_frees_its_slot() {
    let app = spawn_app_with(slow(5, 100)).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let res = app.open_sse(&app.admin_key, "How tall is the tower?").await;
    let mut reader = SseReader::new(res);
    assert_eq!(
        reader.next().await.unwrap().event.as_deref(),
        Some("sources")
    );
    assert_eq!(reader.next().await.unwrap().json()["done"], false);
    let (_, list) = app
        .get_json("/api/v1/admin/connections", &app.admin_key)
        .await;
    let conn = &list["connections"][0];
    assert_eq!(conn["kind"], "sse");

    assert_eq!(
        app.delete(
            &format!("/api/v1/admin/connections/{}", conn["id"]),
            &app.admin_key
        )
        .await,
        204
    );
    // The body ends (the next token was seconds away) and the slot is free at once.
    let rest = tokio::time::timeout(Duration::from_secs(1), reader.collect())
        .await
        .expect("the body ends");
    assert!(
        rest.iter()
            .filter(|f| !f.comment)
            .all(|f| f.json()["done"] != true),
        "{rest:?}"
    );
    app.wait_for_active_streams(0, Duration::from_millis(200))
        .await;
    assert_eq!(app.stats().await.sse_connections, 0);
}

#[actix_web::test]
async fn every_finished_answer_releases_its_slot() {
    let app = spawn_app_with(Options::default()).await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    for _ in 0..12 {
        let (status, _) = app
            .post_json("/api/v1/ask", &app.admin_key, json!({"question": "tower"}))
            .await;
        assert_eq!(status, 200);
        let res = app.open_sse(&app.admin_key, "tower").await;
        SseReader::new(res).collect().await;
    }
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
    let stats = app.stats().await;
    assert_eq!(stats.admitted_total, 24);
    assert_eq!(stats.released_total, 24);
}

fn capped(connections: usize) -> Options {
    Options {
        settings: Some(Box::new(move |s| s.max_connections_per_user = connections)),
        ..Options::default()
    }
}

/// Opens a WebSocket with the key: the open socket, or the refusal's status.
async fn try_ws(app: &crate::helpers::TestApp, key: &str) -> Result<WsClient, u16> {
    match app
        .client
        .ws(format!("{}/api/v1/chat/ws", app.ws_base))
        .header("X-API-Key", key)
        .connect()
        .await
    {
        Ok((_, framed)) => Ok(WsClient { framed }),
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => Err(s.as_u16()),
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

#[actix_web::test]
async fn over_the_per_key_connection_cap_the_upgrade_gets_429_until_a_connection_closes() {
    let app = spawn_app_with(capped(2)).await;
    let first = app.open_ws(&app.admin_key).await;
    let _second = app.open_ws(&app.admin_key).await;
    assert_eq!(try_ws(&app, &app.admin_key).await.err(), Some(429));

    // The refusal is a JSON error, given before any upgrade is attempted.
    let mut res = app
        .client
        .get(app.url("/api/v1/chat/ws"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert!(body["error"]["message"].as_str().unwrap().contains('2'));

    // Another key has its own connections.
    let (tenant, _) = app.new_tenant("other").await;
    let other = app.new_key(&tenant, "second").await;
    let _third = app.open_ws(&other).await;

    // A closed connection gives its slot back once its session ends.
    drop(first);
    let started = std::time::Instant::now();
    loop {
        let mut res = app
            .client
            .get(app.url("/api/v1/chat/ws"))
            .insert_header(("X-API-Key", app.admin_key.as_str()))
            .send()
            .await
            .unwrap();
        // Under the cap, the slot is taken and the non-upgrade request refused after it.
        if res.status().as_u16() == 400 {
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "websocket_required");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the slot never came back"
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let _again = app.open_ws(&app.admin_key).await;
}

#[actix_web::test]
async fn concurrent_upgrades_of_one_key_never_exceed_the_cap() {
    let app = spawn_app_with(capped(3)).await;
    let attempts = (0..12).map(|_| try_ws(&app, &app.admin_key));
    let results = futures_util::future::join_all(attempts).await;
    let opened = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| r.as_ref().err() == Some(&429))
        .count();
    assert_eq!((opened, refused), (3, 9));
}
