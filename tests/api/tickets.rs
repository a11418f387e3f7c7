use serde_json::{json, Value};

use crate::helpers::{spawn_app, SseReader, TOWER};

async fn ticket(app: &crate::helpers::TestApp) -> String {
    let (status, body) = app
        .post_json("/api/v1/stream-tickets", &app.admin_key, json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expiresInSeconds"], 60);
    body["ticket"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_ticket_opens_one_sse_stream_and_only_one() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let t = ticket(&app).await;
    let url = app.url(&format!("/api/v1/ask/stream?question=tower&ticket={t}"));
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    assert_eq!(frames.last().unwrap().json()["done"], true);

    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401, "a ticket is single-use");
}

#[actix_web::test]
async fn a_ticket_opens_a_websocket() {
    let app = spawn_app().await;
    let t = ticket(&app).await;
    let url = format!("{}/api/v1/chat/ws?ticket={t}", app.ws_base);
    let (res, _framed) = app.client.ws(&url).connect().await.expect("connects");
    assert_eq!(res.status().as_u16(), 101);
}

#[actix_web::test]
async fn tickets_are_refused_outside_the_streaming_routes() {
    let app = spawn_app().await;
    let t = ticket(&app).await;
    let mut res = app
        .client
        .get(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", t.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    // Nor is a key or ticket read from the query on ordinary routes.
    let res = app
        .client
        .get(app.url(&format!("/api/v1/documents?access_token={}", app.admin_key)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

#[actix_web::test]
async fn a_long_lived_key_in_a_url_is_refused_on_every_streaming_route_and_a_ticket_is_not() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let key = app.admin_key.clone();
    for query in [format!("ticket={key}"), format!("access_token={key}")] {
        for (method, path) in [
            ("GET", "/api/v1/ask/stream?question=tower&"),
            ("GET", "/api/v1/agent/chat/stream?message=tower&"),
            ("GET", "/api/v1/admin/events?"),
            ("POST", "/api/v1/chat/ws/negotiate?negotiateVersion=1&"),
        ] {
            let url = app.url(&format!("{path}{query}"));
            let req = match method {
                "GET" => app.client.get(&url),
                _ => app.client.post(&url),
            };
            let mut res = req.send().await.unwrap();
            assert_eq!(res.status().as_u16(), 401, "{method} {path}{query}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
            assert!(!body.to_string().contains(&key), "the key is not echoed");
        }
        let res = app
            .client
            .ws(format!("{}/api/v1/chat/ws?{query}", app.ws_base))
            .connect()
            .await;
        match res {
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) => {
                assert_eq!(s.as_u16(), 401, "WebSocket {query}")
            }
            other => panic!("expected a 401, got {:?}", other.map(|(r, _)| r.status())),
        }
    }
    // A ticket goes in either parameter; the key itself in a header.
    let url = app.url(&format!(
        "/api/v1/ask/stream?question=tower&access_token={}",
        ticket(&app).await
    ));
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let res = app.open_sse(&key, "tower").await;
    assert_eq!(res.status().as_u16(), 200);
}
