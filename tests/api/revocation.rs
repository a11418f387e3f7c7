//! Revoking a key ends, within a second, everything it holds open: sockets (with a close
//! frame that says why), SSE streams, running answers, unused tickets and connection tokens,
//! and admin event feeds.

use std::time::{Duration, Instant};

use awc::ws;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Options, SseReader, TestApp, WsClient, TOWER};
use crate::roles::make_key;

const RS: char = '\u{1e}';
const WITHIN: Duration = Duration::from_secs(1);

fn slow() -> Options {
    Options {
        pace: Duration::from_millis(300),
        ..Options::default()
    }
}

/// What is left of the second that revocation has.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Frames until the close frame, which must come before the deadline.
pub(crate) async fn close_frame(
    ws: &mut WsClient,
    deadline: Instant,
) -> (Vec<String>, ws::CloseReason) {
    let mut texts = Vec::new();
    loop {
        let next = actix_web::rt::time::timeout(
            left(deadline),
            futures_util::StreamExt::next(&mut ws.framed),
        )
        .await
        .unwrap_or_else(|_| panic!("no close frame within {WITHIN:?}; got {texts:?}"));
        match next {
            Some(Ok(ws::Frame::Close(Some(reason)))) => return (texts, reason),
            Some(Ok(ws::Frame::Text(bytes))) => texts.push(String::from_utf8_lossy(&bytes).into()),
            Some(Ok(ws::Frame::Ping(_) | ws::Frame::Pong(_))) => {}
            other => panic!("expected a close frame with a reason, got {other:?} after {texts:?}"),
        }
    }
}

async fn signalr_socket(app: &TestApp, key: &str) -> WsClient {
    let mut ws = app.open_ws(key).await;
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    match ws.next_frame(Duration::from_secs(5)).await {
        Some(ws::Frame::Text(b)) => assert_eq!(&b[..], b"{}\x1e"),
        other => panic!("no handshake reply: {other:?}"),
    }
    ws
}

async fn revoke(app: &TestApp, key_id: &str) -> Instant {
    let path = format!("/api/v1/admin/keys/{key_id}");
    assert_eq!(app.delete(&path, &app.admin_key).await, 204);
    Instant::now() + WITHIN
}

#[actix_web::test]
async fn a_revoked_keys_sockets_streams_answers_tickets_and_tokens_are_all_dead_within_a_second() {
    let app = spawn_app_with(slow()).await;
    let (tenant, _) = app.new_tenant("t").await;
    let (key_id, key) = make_key(&app, &tenant, "doomed", false).await;
    let (bystander_id, bystander) = make_key(&app, &tenant, "bystander", false).await;
    app.add_document(&key, "Tower", TOWER).await;

    // A plain WebSocket with an answer running.
    let mut plain = app.open_ws(&key).await;
    plain
        .send_json(json!({"message": "How tall is the tower?", "id": "q1"}))
        .await;
    loop {
        if plain.next_json().await["token"].is_string() {
            break;
        }
    }
    // A SignalR socket, idle.
    let mut signalr = signalr_socket(&app, &key).await;
    // An SSE answer, running.
    let res = app.open_sse(&key, "How tall is the tower?").await;
    assert_eq!(res.status().as_u16(), 200);
    let mut sse = SseReader::new(res);
    sse.next().await.expect("sources");
    // A ticket and a SignalR connection token, unused.
    let (_, body) = app
        .post_json("/api/v1/stream-tickets", &key, json!({}))
        .await;
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post_json(
            "/api/v1/chat/ws/negotiate?negotiateVersion=1",
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    // Another key of the same tenant, which must not be touched.
    let mut other = app.open_ws(&bystander).await;
    app.wait_for_active_streams(2, Duration::from_secs(2)).await;

    // The key was verified moments ago, so the hub holds it in its cache of verified keys.
    assert_eq!(app.get_json("/api/v1/documents", &key).await.0, 200);
    let deadline = revoke(&app, &key_id).await;
    assert_eq!(
        app.get_json("/api/v1/documents", &key).await.0,
        401,
        "refused at once, cached or not"
    );

    let (_, reason) = close_frame(&mut plain, deadline).await;
    assert_eq!(reason.code, ws::CloseCode::Policy);
    assert_eq!(reason.description.as_deref(), Some("api key revoked"));

    let (texts, reason) = close_frame(&mut signalr, deadline).await;
    let records: Vec<Value> = texts
        .iter()
        .flat_map(|t| {
            t.split(RS)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|r| serde_json::from_str(&r).unwrap())
        .collect();
    let close = records
        .iter()
        .find(|r| r["type"] == 7)
        .expect("a Close message before the close frame");
    assert_eq!(close["error"], "api key revoked", "{close}");
    assert!(
        close.get("allowReconnect").is_none() || close["allowReconnect"] == false,
        "reconnecting cannot help: {close}"
    );
    assert_eq!(reason.code, ws::CloseCode::Policy);

    let frames = actix_web::rt::time::timeout(left(deadline), sse.collect())
        .await
        .expect("the SSE stream ends within a second");
    let last = frames.last().expect("a final frame").json();
    assert_eq!(last["done"], true, "{last}");
    assert!(
        last["error"]["code"].is_string(),
        "it ends with an error: {last}"
    );

    app.wait_for_active_streams(0, left(deadline)).await;
    assert!(Instant::now() <= deadline, "slots freed within a second");

    let res = app
        .client
        .get(app.url(&format!(
            "/api/v1/ask/stream?question=tower&ticket={ticket}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "the unused ticket is dead");
    let res = app
        .client
        .ws(format!("{}/api/v1/chat/ws?id={token}", app.ws_base))
        .connect()
        .await;
    match res {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => {
            assert_eq!(s.as_u16(), 404, "the unused connection token is dead")
        }
        other => panic!("expected a 404, got {:?}", other.map(|(r, _)| r.status())),
    }

    // The registry forgets the closed connections; the bystander's stays and works.
    let started = Instant::now();
    loop {
        let (_, list) = app
            .get_json("/api/v1/admin/connections", &app.admin_key)
            .await;
        let users: Vec<&str> = list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["user"].as_str())
            .collect();
        if users == [bystander_id.as_str()] {
            break;
        }
        assert!(started.elapsed() < WITHIN, "still listed: {list}");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    other.send_json(json!({"type": "ping"})).await;
    assert_eq!(other.next_json().await["type"], "pong");
}

#[actix_web::test]
async fn a_revoked_admin_keys_event_feed_ends_within_a_second() {
    let app = spawn_app_with(slow()).await;
    let (key_id, key) = make_key(&app, "default", "watcher", true).await;
    let (_, body) = app
        .post_json("/api/v1/stream-tickets", &key, json!({}))
        .await;
    let url = app.url(&format!(
        "/api/v1/admin/events?ticket={}",
        body["ticket"].as_str().unwrap()
    ));
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut feed = SseReader::new(res);
    feed.next().await.expect("a first view");

    let deadline = revoke(&app, &key_id).await;
    let rest = actix_web::rt::time::timeout(left(deadline), feed.collect())
        .await
        .expect("the feed ends within a second");
    assert!(rest.len() <= 1, "{rest:?}");
}

#[actix_web::test]
async fn a_running_json_answer_of_a_revoked_key_ends_with_an_error() {
    let app = spawn_app_with(slow()).await;
    let (key_id, key) = make_key(&app, "default", "json", false).await;
    app.add_document(&key, "Tower", TOWER).await;
    let client = app.client.clone();
    let url = app.url("/api/v1/ask");
    let asking = actix_web::rt::spawn({
        let key = key.clone();
        async move {
            let mut res = client
                .post(url)
                .insert_header(("X-API-Key", key.as_str()))
                .send_json(&json!({"question": "How tall is the tower?"}))
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            (res.status().as_u16(), body)
        }
    });
    app.wait_for_active_streams(1, Duration::from_secs(2)).await;
    let deadline = revoke(&app, &key_id).await;
    let (status, body) = actix_web::rt::time::timeout(left(deadline), asking)
        .await
        .expect("the answer ends within a second")
        .unwrap();
    assert!(status >= 400, "{status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
}
