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
    let history = reader.next().await.unwrap();
    assert_eq!(history.event.as_deref(), Some("history"));
    assert_eq!(history.json()["full"], true);
    let first = reader.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("stats"));
    assert_eq!(first.id.as_deref(), Some("1"));
    let view = first.json();
    for key in ["stats", "connections", "streams", "metrics"] {
        assert!(view.get(key).is_some(), "missing {key}: {view}");
    }
    assert_eq!(view["stats"]["activeStreams"], 0);
    let second = next_stats(&mut reader).await;
    assert_eq!(second.id.as_deref(), Some("2"));
}

/// The next `stats` frame, past any `history` frame of a new sample.
async fn next_stats<S>(reader: &mut SseReader<S>) -> crate::helpers::SseFrame
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    loop {
        let frame = reader.next().await.expect("a frame");
        if frame.event.as_deref() == Some("stats") {
            return frame;
        }
    }
}

/// A hub that takes a chart sample every second.
async fn spawn_sampling_app() -> crate::helpers::TestApp {
    spawn_app_with(Options {
        settings: Some(Box::new(|s| {
            s.admin_sample_interval = Duration::from_secs(1);
        })),
        ..Options::default()
    })
    .await
}

async fn ask(app: &crate::helpers::TestApp, key: &str) {
    let (status, body) = app
        .post_json("/api/v1/ask", key, json!({"question": "tower height"}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The sum of `field` over the samples of `GET /admin/history` (as `key` sees them).
fn total(history: &serde_json::Value, field: &str) -> u64 {
    history["samples"]
        .as_array()
        .map_or(0, |s| s.iter().filter_map(|s| s[field].as_u64()).sum())
}

/// Polls `GET /admin/history` until `done` holds; returns that answer.
async fn wait_for_history(
    app: &crate::helpers::TestApp,
    key: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, history) = app.get_json("/api/v1/admin/history", key).await;
        assert_eq!(status, 200, "{history}");
        if done(&history) {
            return history;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the history never got there: {history}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn the_charts_history_holds_the_answers_of_the_last_minutes() {
    let app = spawn_sampling_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    for _ in 0..3 {
        ask(&app, &app.admin_key).await;
    }
    let history = wait_for_history(&app, &app.admin_key, |h| total(h, "answers") == 3).await;
    assert_eq!(history["intervalMs"], 1000);
    let samples = history["samples"].as_array().unwrap();
    let busy: Vec<_> = samples.iter().filter(|s| s["answers"] != 0).collect();
    assert!(busy
        .iter()
        .all(|s| s["tokensPerSecond"].as_f64().unwrap() > 0.0));
    assert!(busy
        .iter()
        .all(|s| s["ttftMsP50"].is_u64() && s["ttftMsP95"].is_u64()));
    assert!(busy.iter().any(|s| s["streams"].as_u64().unwrap() >= 1));
    assert_eq!(total(&history, "errors"), 0);
    // Samples count up, one per interval, oldest first.
    let seqs: Vec<u64> = samples.iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let last = *seqs.last().unwrap();
    let (_, newer) = app
        .get_json(
            &format!("/api/v1/admin/history?after={last}"),
            &app.admin_key,
        )
        .await;
    assert!(newer["samples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["seq"].as_u64().unwrap() > last));
}

#[actix_web::test]
async fn a_tenant_admin_charts_its_own_tenant_only() {
    let app = spawn_sampling_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (tenant_id, user) = app.new_tenant("globex").await;
    let (status, admin) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": tenant_id, "name": "boss", "admin": true}),
        )
        .await;
    assert_eq!(status, 201, "{admin}");
    let admin = admin["key"].as_str().unwrap().to_owned();
    app.add_document(&user, "Tower", TOWER).await;
    ask(&app, &app.admin_key).await;
    ask(&app, &app.admin_key).await;
    ask(&app, &user).await;

    wait_for_history(&app, &app.admin_key, |h| total(h, "answers") == 3).await;
    let own = wait_for_history(&app, &admin, |h| total(h, "answers") == 1).await;
    // Still one once the operator's answers are surely sampled.
    assert_eq!(total(&own, "answers"), 1);
    let (status, _) = app.get_json("/api/v1/admin/history", &user).await;
    assert_eq!(status, 403);
    let (status, _) = app
        .get_json("/api/v1/admin/history?tenantId=default", &admin)
        .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn the_admin_feed_starts_with_the_history_then_sends_each_new_sample() {
    let app = spawn_sampling_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    ask(&app, &app.admin_key).await;
    ask(&app, &app.admin_key).await;
    wait_for_history(&app, &app.admin_key, |h| total(h, "answers") == 2).await;

    let res = app
        .client
        .get(app.url("/api/v1/admin/events"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut reader = SseReader::new(res);
    let first = reader.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("history"));
    let first = first.json();
    assert_eq!(first["full"], true);
    assert_eq!(
        total(&first, "answers"),
        2,
        "the page sees the past at once"
    );
    let last_seq = first["samples"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();

    // A sample a second: within a few stats frames comes a history frame of new samples.
    ask(&app, &app.admin_key).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut answers = 0;
    let mut seen = last_seq;
    while answers == 0 {
        assert!(std::time::Instant::now() < deadline, "no new sample");
        let frame = reader.next().await.expect("a frame");
        if frame.event.as_deref() != Some("history") {
            continue;
        }
        let update = frame.json();
        assert_eq!(update["full"], false);
        for sample in update["samples"].as_array().unwrap() {
            let seq = sample["seq"].as_u64().unwrap();
            assert!(seq > seen, "each sample is sent once, in order");
            seen = seq;
        }
        answers += total(&update, "answers");
    }
    assert_eq!(answers, 1);
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

#[actix_web::test]
async fn answers_that_fail_show_as_errors_per_minute_in_the_charts() {
    use crate::helpers::use_mock_openai;
    use crate::support::mock_upstream::{Flavor, MockUpstream, Reply};

    let mock = MockUpstream::start(Flavor::OpenAi).await;
    mock.set_default(Reply::status(400, "the model refuses"));
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            use_mock_openai(s, url);
            s.upstream.max_retries = 0;
            s.admin_sample_interval = Duration::from_secs(1);
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    for _ in 0..2 {
        let (status, body) = app
            .post_json(
                "/api/v1/ask",
                &app.admin_key,
                json!({"question": "tower height"}),
            )
            .await;
        assert!(status >= 400, "{status} {body}");
    }
    let history = wait_for_history(&app, &app.admin_key, |h| total(h, "errors") == 2).await;
    let samples = history["samples"].as_array().unwrap();
    // The minute's count: both errors, in the sample of the second one and after it.
    let last_error = samples.iter().rposition(|s| s["errors"] != 0).unwrap();
    assert_eq!(samples[last_error]["errorsPerMinute"], 2, "{history}");
    assert_eq!(total(&history, "answers"), 2);
}
