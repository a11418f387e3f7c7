use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Options, SseReader, BRIDGE, TOWER};

#[actix_web::test]
async fn ask_returns_a_cited_answer_with_sources_and_metadata() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app.add_document(&app.admin_key, "Bridge", BRIDGE).await;

    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "When did the Golden Gate Bridge open?", "topK": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = body["answer"].as_str().unwrap();
    assert!(answer.contains("1937"), "{answer}");
    assert!(answer.contains("[1]"), "{answer}");
    let sources = body["sources"].as_array().unwrap();
    assert!(!sources.is_empty() && sources.len() <= 2);
    assert_eq!(sources[0]["title"], "Bridge");
    assert_eq!(sources[0]["number"], 1);
    assert!(sources[0]["score"].as_f64().unwrap() > 0.0);
    assert!(sources[0]["documentId"].is_string());
    let meta = &body["metadata"];
    assert_eq!(meta["provider"], "offline");
    assert_eq!(meta["model"], "extractive-v1");
    assert_eq!(meta["finish_reason"], "stop");
    assert!(meta["tokens"].as_u64().unwrap() > 3);
    assert!(meta["ttft_ms"].is_u64());
}

#[actix_web::test]
async fn a_question_nothing_matches_is_answered_plainly() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "quantum chromodynamics?"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["sources"].as_array().unwrap().len(), 0);
    assert!(body["answer"]
        .as_str()
        .unwrap()
        .contains("could not find anything relevant"));
}

#[actix_web::test]
async fn questions_with_full_text_syntax_never_break_retrieval() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    for q in [
        "\"tower",
        "tower*",
        "tower OR",
        "NEAR(tower",
        "AND NOT tower:",
        "^tower -height (",
        "'; DROP TABLE chunks; --",
        "???",
    ] {
        let (status, body) = app
            .post_json("/api/v1/ask", &app.admin_key, json!({"question": q}))
            .await;
        assert_eq!(status, 200, "{q}: {body}");
        assert!(body["answer"].is_string(), "{q}");
    }
}

#[actix_web::test]
async fn top_k_bounds_the_number_of_sources() {
    let app = spawn_app().await;
    // Each copy of BRIDGE is one chunk, so 8 copies give 8 matching passages.
    for i in 0..8 {
        app.add_document(&app.admin_key, &format!("Bridge {i}"), BRIDGE)
            .await;
    }
    for (k, want) in [(1, 1), (3, 3), (20, 8)] {
        let (_, body) = app
            .post_json(
                "/api/v1/ask",
                &app.admin_key,
                json!({"question": "bridge span", "topK": k}),
            )
            .await;
        assert_eq!(body["sources"].as_array().unwrap().len(), want, "topK {k}");
    }
    let (_, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "bridge span"}),
        )
        .await;
    assert_eq!(body["sources"].as_array().unwrap().len(), 5, "default topK");
}

#[actix_web::test]
async fn sse_streams_numbered_frames_in_the_seed_shape_and_matches_the_json_answer() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let question = "How tall is the Eiffel Tower?";

    let res = app.open_sse(&app.admin_key, question).await;
    assert_eq!(res.status().as_u16(), 200);
    let headers = res.headers();
    assert_eq!(headers.get("content-type").unwrap(), "text/event-stream");
    assert_eq!(headers.get("cache-control").unwrap(), "no-cache");
    assert_eq!(headers.get("x-accel-buffering").unwrap(), "no");
    let answer_id = headers
        .get("x-answer-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Answer-Id")
        .to_owned();
    let frames = SseReader::new(res).collect().await;

    // Ids are `<answerId>:<seq>`: the answer, then the event's sequence number, from 1 and
    // increasing (tokens that waited for the client share one frame, numbered as the last).
    let mut previous = 0;
    for f in &frames {
        let id = f.id.as_deref().expect("every frame has an id");
        let (answer, seq) = id.rsplit_once(':').expect("answer:seq");
        assert_eq!(answer, answer_id);
        let seq: u64 = seq.parse().expect("a number");
        assert!(seq > previous, "{seq} after {previous}");
        previous = seq;
    }
    assert!(frames[0].id.as_deref().unwrap().ends_with(":1"));
    assert_eq!(frames[0].event.as_deref(), Some("sources"));
    assert_eq!(frames[0].json()["sources"][0]["title"], "Tower");

    let tokens = &frames[1..frames.len() - 1];
    assert!(tokens.len() > 3);
    let mut streamed = String::new();
    for f in tokens {
        let v = f.json();
        assert_eq!(v["done"], false);
        assert_eq!(v.as_object().unwrap().len(), 2, "only token and done: {v}");
        streamed.push_str(v["token"].as_str().unwrap());
    }
    let last = frames.last().unwrap().json();
    assert_eq!(last["done"], true);
    assert_eq!(last["token"], "");
    let meta = &last["metadata"];
    assert_eq!(meta["answer_id"], answer_id.as_str());
    assert_eq!(meta["provider"], "offline");
    assert_eq!(meta["model"], "extractive-v1");
    assert_eq!(meta["tokens"].as_u64().unwrap() as usize, tokens.len());
    assert!(meta["ttft_ms"].is_u64());
    assert_eq!(meta["sources"][0]["title"], "Tower");

    let (_, json_answer) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": question, "topK": 3}),
        )
        .await;
    assert_eq!(streamed, json_answer["answer"].as_str().unwrap());
    assert!(streamed.contains("330 metres"), "{streamed}");
}

#[actix_web::test]
async fn sse_also_answers_a_post_with_a_json_body() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Bridge", BRIDGE).await;
    let res = app
        .client
        .post(app.url("/api/v1/ask/stream"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send_json(&json!({"question": "What colour is the bridge?", "topK": 1}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    let text: String = frames
        .iter()
        .filter(|f| f.event.is_none())
        .filter_map(|f| f.json()["token"].as_str().map(str::to_owned))
        .collect();
    assert!(text.contains("International Orange"), "{text}");
    assert_eq!(frames.last().unwrap().json()["done"], true);
}

#[actix_web::test]
async fn a_quiet_sse_stream_gets_ping_comments() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(400),
        heartbeat: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let res = app.open_sse(&app.admin_key, "How tall is the tower?").await;
    let mut reader = SseReader::new(res);
    let mut pings = 0;
    while let Some(frame) = reader.next().await {
        if frame.comment {
            assert_eq!(frame.data, "");
            pings += 1;
            if pings == 2 {
                break;
            }
        }
    }
    assert_eq!(pings, 2);
}
