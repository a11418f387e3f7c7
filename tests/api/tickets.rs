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
