//! PostgreSQL cut and restored under a running hub (through a TCP proxy in front of the
//! server of RAGSTREAM_TEST_PG, default 127.0.0.1:5432): `/readyz` turns false and new
//! answers get 503 `storage_unavailable`, answers already streaming finish (a conversation's
//! final write waits for the database), and the hub recovers by itself.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Options, SseReader, TestApp, TOWER};
use crate::support::cut_proxy::CutProxy;
use crate::support::test_db::{pg_server, TestDb};

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .status()
        .as_u16()
}

async fn wait_for_ready(app: &TestApp, want: u16) {
    let start = Instant::now();
    loop {
        if readyz(app).await == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "/readyz never answered {want}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ask(app: &TestApp) -> (u16, Value) {
    app.post_json(
        "/api/v1/ask",
        &app.admin_key,
        json!({"question": "How tall is the Eiffel Tower?"}),
    )
    .await
}

#[actix_web::test]
async fn postgres_down_means_not_ready_and_503_and_the_hub_recovers_when_it_is_back() {
    let db = TestDb::postgres().await;
    // RAGSTREAM_TEST_PG is postgres://user@host:port: the proxy stands in for host:port.
    let server = pg_server();
    let (user, address) = server
        .split("//")
        .nth(1)
        .and_then(|rest| rest.split_once('@'))
        .expect("RAGSTREAM_TEST_PG of the form postgres://user@host:port");
    let target = tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut found| found.next())
        .expect("the PostgreSQL address resolves");
    let proxy = CutProxy::start(target).await;
    let name = db.url.rsplit('/').next().expect("a database name");
    let through_proxy = format!("postgres://{user}@{}/{name}", proxy.addr);
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(20),
        database_url: Some(through_proxy),
        settings: Some(Box::new(|s| s.lease_ttl = Duration::from_millis(600))),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    assert_eq!(readyz(&app).await, 200);
    assert_eq!(ask(&app).await.0, 200);

    // An answer that has begun (retrieval done, tokens flowing) when the database goes.
    let res = app
        .open_sse(&app.admin_key, "How tall is the Eiffel Tower?")
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let mut streaming = SseReader::new(res);
    let sources = streaming.next().await.expect("the sources frame");
    assert_eq!(sources.event.as_deref(), Some("sources"));

    // A conversation's answer too, whose final write must wait for the database.
    let res = app
        .client
        .get(app.url("/api/v1/agent/chat/stream"))
        .query(&[("message", "How tall is the Eiffel Tower?")])
        .expect("query")
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(res.status().as_u16(), 200);
    let mut conversation = SseReader::new(res);
    let first = conversation.next().await.expect("the conversation frame");
    let conversation_id = first.json()["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    loop {
        let frame = conversation.next().await.expect("a frame");
        if frame.event.is_none() && !frame.comment && frame.json()["token"].is_string() {
            break;
        }
    }

    // A WebSocket open before the outage.
    let mut ws = app.open_ws(&app.admin_key).await;

    proxy.set_down(true);
    let rest = streaming.collect().await;
    let last = rest.last().expect("the answer's last frame");
    assert_eq!(last.event, None, "{}", last.data);
    assert_eq!(last.json()["done"], true, "{}", last.data);
    let rest = conversation.collect().await;
    let last = rest.last().expect("the conversation answer's last frame");
    assert_eq!(last.json()["done"], true, "{}", last.data);

    wait_for_ready(&app, 503).await;
    let (_, body) = app.get_json("/readyz", "").await;
    assert_eq!(body["error"]["code"], "storage_unavailable");
    let (status, body) = ask(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("database"));
    ws.send_json(json!({"message": "How tall is the tower?", "id": "down"}))
        .await;
    let frame = ws.next_json().await;
    assert_eq!(frame["id"], "down", "{frame}");
    assert_eq!(frame["error"]["code"], "storage_unavailable", "{frame}");

    proxy.set_down(false);
    wait_for_ready(&app, 200).await;
    let (status, body) = ask(&app).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["sources"].as_array().unwrap().is_empty(), "{body}");
    // The conversation answer that ended during the outage was written once it was back.
    let path = format!("/api/v1/conversations/{conversation_id}");
    let start = Instant::now();
    loop {
        let (status, body) = app.get_json(&path, &app.admin_key).await;
        assert_eq!(status, 200, "{body}");
        let answer = body["messages"][1].clone();
        if answer["status"] == "complete" {
            assert!(!answer["content"].as_str().unwrap().is_empty(), "{answer}");
            break;
        }
        assert_eq!(answer["status"], "streaming", "{answer}");
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the final write never came: {answer}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}
