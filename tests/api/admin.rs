use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Options, SseReader, TOWER};

#[actix_web::test]
async fn the_admin_event_stream_sends_the_live_view_every_second_to_an_admin_ticket() {
    let app = spawn_app().await;
    let (_, t) = app
        .post_json("/api/v1/stream-tickets", &app.admin_key, json!({}))
        .await;
    let url = app.url(&format!(
        "/api/v1/admin/events?ticket={}",
        t["ticket"].as_str().unwrap()
    ));
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut reader = SseReader::new(res);
    let first = reader.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("stats"));
    let view = first.json();
    for key in ["stats", "connections", "streams", "metrics"] {
        assert!(view.get(key).is_some(), "missing {key}: {view}");
    }
    assert_eq!(view["stats"]["activeStreams"], 0);
    let second = reader.next().await.unwrap();
    assert_eq!(second.id.as_deref(), Some("2"));
}

#[actix_web::test]
async fn the_admin_event_stream_refuses_a_non_admin() {
    let app = spawn_app().await;
    let (_, key) = app.new_tenant("t").await;
    let (status, body) = app.get_json("/api/v1/admin/events", &key).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
}

#[actix_web::test]
async fn an_administrator_ends_a_running_stream_and_its_client_hears_why() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(2000),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let res = app.open_sse(&app.admin_key, "How tall is the tower?").await;
    let mut reader = SseReader::new(res);
    reader.next().await.unwrap(); // sources
    reader.next().await.unwrap(); // first token

    let (_, list) = app.get_json("/api/v1/admin/streams", &app.admin_key).await;
    let stream = &list["streams"][0];
    assert_eq!(stream["transport"], "sse");
    let id = stream["id"].as_u64().unwrap();
    assert_eq!(
        app.delete(&format!("/api/v1/admin/streams/{id}"), &app.admin_key)
            .await,
        204
    );

    let last = reader.collect().await.pop().expect("a final frame");
    let last = last.json();
    assert_eq!(last["done"], true);
    assert_eq!(last["error"]["code"], "ended_by_admin");
    app.wait_for_active_streams(0, Duration::from_millis(500))
        .await;

    assert_eq!(
        app.delete(&format!("/api/v1/admin/streams/{id}"), &app.admin_key)
            .await,
        404
    );
}

#[actix_web::test]
async fn finished_answers_feed_the_metrics() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    for _ in 0..3 {
        let (status, _) = app
            .post_json(
                "/api/v1/ask",
                &app.admin_key,
                json!({"question": "tower height"}),
            )
            .await;
        assert_eq!(status, 200);
    }
    app.wait_for_active_streams(0, Duration::from_secs(1)).await;
    let (_, list) = app.get_json("/api/v1/admin/streams", &app.admin_key).await;
    let metrics = &list["metrics"];
    assert_eq!(metrics["answersTotal"], 3);
    assert!(metrics["ttftMsP50"].is_u64(), "{metrics}");
    assert!(metrics["tokensPerSecond"].as_f64().unwrap() > 0.0);
}
