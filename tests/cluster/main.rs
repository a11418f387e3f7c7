//! The cluster: two hub processes on one database and one Redis, behind nginx
//! (deploy/nginx.conf), on loopback. Needs Redis at 127.0.0.1:6379 and `nginx` and
//! `redis-server` on the PATH. Each test uses a Redis database number of its own (1–15).

mod costs;
// Shared with the API tests; not every item is used here.
#[allow(dead_code)]
#[path = "../api/support/cut_proxy.rs"]
mod cut_proxy;
mod rig;
mod script;
mod shared_log;
mod storage_outage;
#[allow(dead_code)]
#[path = "../api/support/test_db.rs"]
mod test_db;

use std::time::{Duration, Instant};

use actix_web::rt::time::sleep;
use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use rig::{free_port, redis_server, Hub, Rig, ADMIN_KEY};

/// Opens an SSE answer at `base` (a hub's or nginx's URL up to the path) with a key.
async fn open_sse(
    rig: &Rig,
    url: String,
    key: &str,
) -> (
    u16,
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>>>,
) {
    let res = rig
        .client
        .get(url)
        .insert_header(("X-API-Key", key))
        .send()
        .await
        .expect("request sent");
    (res.status().as_u16(), res)
}

fn ask_path() -> &'static str {
    "/api/v1/ask/stream?question=lighthouse%20keepers&topK=3"
}

/// The whole SSE body, until the hub ends it.
async fn body_text(
    mut res: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> String {
    let mut text = String::new();
    while let Some(chunk) = res.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => break,
        }
    }
    text
}

/// The last SSE event name in a body (`done` when the last frame is the done data frame).
fn ended_with_done(text: &str) -> bool {
    text.contains("\"done\":true") || text.contains("event: done")
}

async fn error_code(
    res: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> String {
    let text = body_text(res).await;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_keys_sixth_stream_is_refused_whichever_hub_gets_it() {
    let rig = Rig::start(10, 15, 200).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("limits").await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let (status, res) = open_sse(&rig, rig.lb(ask_path()), &key).await;
        assert_eq!(status, 200);
        open.push(res);
    }
    let (a, b) = (rig.active_streams("a").await, rig.active_streams("b").await);
    assert_eq!(a + b, 5);
    assert!(a >= 1 && b >= 1, "round robin spread them: a {a}, b {b}");
    // Twice through nginx (round robin: one each), and once at each hub directly.
    for url in [
        rig.lb(ask_path()),
        rig.lb(ask_path()),
        rig.hub("a").url(ask_path()),
        rig.hub("b").url(ask_path()),
    ] {
        let (status, res) = open_sse(&rig, url, &key).await;
        assert_eq!(status, 429);
        assert_eq!(error_code(res).await, "too_many_streams");
    }
    for res in open {
        assert!(ended_with_done(&body_text(res).await));
    }
}

#[actix_web::test]
async fn a_ticket_from_one_hub_opens_a_stream_on_the_other_once() {
    let rig = Rig::start(11, 15, 5).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("tickets").await;
    let (status, body) = rig
        .post(&rig.hub("a").url("/api/v1/stream-tickets"), &key, json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    let on = |hub: &Hub| hub.url(&format!("{}&ticket={ticket}", ask_path()));
    let res = rig.client.get(on(rig.hub("b"))).send().await.expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    assert!(ended_with_done(&body_text(res).await));
    for hub in ["b", "a"] {
        let res = rig.client.get(on(rig.hub(hub))).send().await.expect("sent");
        assert_eq!(res.status().as_u16(), 401, "spent, on hub {hub}");
    }
}

#[actix_web::test]
async fn signalr_negotiates_on_one_hub_and_connects_on_the_other() {
    let rig = Rig::start(12, 15, 5).await;
    let (status, body) = rig
        .post(
            &rig.hub("a")
                .url("/api/v1/chat/ws/negotiate?negotiateVersion=1"),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["connectionToken"].as_str().expect("token").to_owned();
    let ws_url = |hub: &Hub| {
        hub.url(&format!("/api/v1/chat/ws?id={token}"))
            .replacen("http", "ws", 1)
    };
    let (res, mut framed) = rig
        .client
        .ws(ws_url(rig.hub("b")))
        .connect()
        .await
        .expect("upgraded on b");
    assert_eq!(res.status().as_u16(), 101);
    framed
        .send(ws::Message::Text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}".into(),
        ))
        .await
        .expect("handshake sent");
    match framed.next().await {
        Some(Ok(ws::Frame::Text(text))) => assert_eq!(&text[..], b"{}\x1e"),
        other => panic!("no handshake reply: {other:?}"),
    }
    match rig.client.ws(ws_url(rig.hub("a"))).connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
            assert_eq!(status.as_u16(), 404, "the token is spent")
        }
        other => panic!(
            "a spent token connected: {:?}",
            other.map(|(r, _)| r.status())
        ),
    }
}

#[actix_web::test]
async fn an_admin_on_one_hub_ends_a_stream_and_revokes_a_key_on_the_other() {
    let rig = Rig::start(13, 15, 200).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("ended").await;
    let (status, res) = open_sse(&rig, rig.hub("b").url(ask_path()), &key).await;
    assert_eq!(status, 200);
    // Listed by a: every hub publishes its streams, each with its hub.
    let mut id = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while id.is_none() && Instant::now() < deadline {
        let (_, listed) = rig
            .get(&rig.hub("a").url("/api/v1/admin/streams"), ADMIN_KEY)
            .await;
        id = listed["streams"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["hub"] == "b"))
            .and_then(|s| s["id"].as_u64());
        if id.is_none() {
            sleep(Duration::from_millis(50)).await;
        }
    }
    let id = id.expect("b's stream listed on a within 20 s");
    let path = format!("/api/v1/admin/streams/{id}?hub=b");
    assert_eq!(rig.delete(&rig.hub("a").url(&path), ADMIN_KEY).await, 202);
    let text = body_text(res).await;
    assert!(text.contains("ended_by_admin"), "{text}");

    let (key_id, key) = rig.new_key("revoked").await;
    let (status, sse) = open_sse(&rig, rig.hub("b").url(ask_path()), &key).await;
    assert_eq!(status, 200);
    let (res, mut socket) = rig
        .client
        .ws(rig
            .hub("b")
            .url("/api/v1/chat/ws")
            .replacen("http", "ws", 1))
        .header("X-API-Key", key.as_str())
        .connect()
        .await
        .expect("websocket on b");
    assert_eq!(res.status().as_u16(), 101);
    let path = format!("/api/v1/admin/keys/{key_id}");
    assert_eq!(rig.delete(&rig.hub("a").url(&path), ADMIN_KEY).await, 204);
    let text = body_text(sse).await;
    assert!(text.contains(r#""error":{"code""#), "{text}");
    // b verified the key moments ago (its cache holds it); a's word reached b with the
    // revocation that just ended the stream, so b refuses the key now.
    let (status, _) = rig.get(&rig.hub("b").url("/api/v1/documents"), &key).await;
    assert_eq!(status, 401, "b refuses the revoked key");
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = socket.next().await {
            if let Ok(ws::Frame::Close(reason)) = frame {
                return reason.map(|r| r.code);
            }
        }
        None
    })
    .await
    .expect("the socket on b closes");
    assert_eq!(closed, Some(ws::CloseCode::Policy));
}

#[actix_web::test]
async fn signing_out_on_one_hub_closes_what_the_session_opened_on_the_other() {
    let rig = Rig::start(5, 15, 200).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("browser").await;
    let (a, b) = (rig.hub("a"), rig.hub("b"));
    let origin = |hub: &Hub| hub.url("").trim_end_matches('/').to_owned();
    let res = rig
        .client
        .post(a.url("/api/v1/session"))
        .insert_header(("X-API-Key", key.as_str()))
        .insert_header(("Origin", origin(a)))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 201);
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();

    // On b, with the cookie a set: a socket and an answer.
    let (res, mut socket) = rig
        .client
        .ws(b.url("/api/v1/chat/ws").replacen("http", "ws", 1))
        .origin(origin(b).as_str())
        .header("Cookie", cookie.as_str())
        .connect()
        .await
        .expect("websocket on b");
    assert_eq!(res.status().as_u16(), 101);
    let sse = rig
        .client
        .get(b.url(ask_path()))
        .insert_header(("Cookie", cookie.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(sse.status().as_u16(), 200);

    let res = rig
        .client
        .delete(a.url("/api/v1/session"))
        .insert_header(("Cookie", cookie.as_str()))
        .insert_header(("Origin", origin(a)))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 204);

    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = socket.next().await {
            if let Ok(ws::Frame::Close(reason)) = frame {
                return reason;
            }
        }
        None
    })
    .await
    .expect("the socket on b closes");
    let reason = closed.expect("a close reason");
    assert_eq!(reason.code, ws::CloseCode::Policy);
    assert_eq!(reason.description.as_deref(), Some("signed out"));
    let text = tokio::time::timeout(Duration::from_secs(20), body_text(sse))
        .await
        .expect("the answer on b ends");
    assert!(text.contains("signed_out"), "{text}");
}

#[actix_web::test]
async fn a_killed_hubs_slots_free_themselves_and_the_other_hubs_answers_go_on() {
    let ttl = 3;
    let mut rig = Rig::start(14, ttl, 250).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("killed").await;
    let mut on_b = Vec::new();
    for hub in ["a", "a", "b", "b", "b"] {
        let (status, res) = open_sse(&rig, rig.hub(hub).url(ask_path()), &key).await;
        assert_eq!(status, 200);
        if hub == "b" {
            on_b.push(res);
        }
    }
    let (status, _) = open_sse(&rig, rig.hub("b").url(ask_path()), &key).await;
    assert_eq!(status, 429);
    rig.hub_mut("a").process.kill();
    let waited = wait_until(
        "a slot of the killed hub",
        Duration::from_secs(ttl + 5),
        || async { open_sse(&rig, rig.hub("b").url(ask_path()), &key).await.0 == 200 },
    )
    .await;
    assert!(
        waited <= Duration::from_secs(ttl + 2),
        "freed after {waited:?}"
    );
    for res in on_b {
        assert!(
            ended_with_done(&body_text(res).await),
            "b's answers are untouched"
        );
    }
}

#[actix_web::test]
async fn without_redis_a_hub_is_not_ready_refuses_new_answers_and_recovers_on_its_own() {
    let mut rig = Rig::empty(15, 150).await;
    let port = free_port();
    let hub = rig.spawn_hub("lonely", &format!("redis://127.0.0.1:{port}/0"), 15);
    rig.hubs.push(hub);
    // Checked before the hub listens too: a refused connection is "not yet".
    let not_ready = || async {
        let Ok(mut res) = rig.client.get(rig.lb("/readyz")).send().await else {
            return false;
        };
        let body: Value = res.json().await.unwrap_or(Value::Null);
        res.status().as_u16() == 503 && body["error"]["code"] == "cluster_unavailable"
    };
    wait_until(
        "not ready without Redis",
        Duration::from_secs(30),
        not_ready,
    )
    .await;
    rig.add_document().await;
    let (status, body) = rig
        .post(
            &rig.lb("/api/v1/ask"),
            ADMIN_KEY,
            json!({"question": "lighthouse"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "cluster_unavailable");

    let mut redis = redis_server(port);
    let ready = || async { rig.get(&rig.lb("/readyz"), ADMIN_KEY).await.0 == 200 };
    wait_until("ready once Redis is back", Duration::from_secs(15), ready).await;
    let (status, res) = open_sse(&rig, rig.lb(ask_path()), ADMIN_KEY).await;
    assert_eq!(status, 200, "admitted without a restart");
    // Redis goes away mid-answer: the answer finishes all the same.
    redis.kill();
    assert!(ended_with_done(&body_text(res).await));
    wait_until("not ready again", Duration::from_secs(15), not_ready).await;
}

/// SSE frames `(seq, data)` of an answer, as they come; stops after `until` frames or at
/// the end of the body.
async fn frames(
    res: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    >,
    until: usize,
) -> (String, Vec<(u64, Value)>) {
    let mut buffer = String::new();
    let mut answer = String::new();
    let mut out = Vec::new();
    while out.len() < until {
        let Some(Ok(chunk)) = res.next().await else {
            break;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let id = frame.lines().find_map(|l| l.strip_prefix("id: "));
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                let (a, seq) = id.rsplit_once(':').expect("<answer>:<seq>");
                answer = a.to_owned();
                out.push((
                    seq.parse().expect("seq"),
                    serde_json::from_str(data).expect("json"),
                ));
            }
        }
    }
    (answer, out)
}

fn tokens(frames: &[(u64, Value)]) -> String {
    frames
        .iter()
        .filter_map(|(_, data)| data["token"].as_str())
        .collect()
}

#[actix_web::test]
async fn an_answer_cut_off_on_one_hub_resumes_on_the_other_with_nothing_lost_or_repeated() {
    let rig = Rig::start(9, 15, 60).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("resume").await;
    let (status, mut first) = open_sse(&rig, rig.hub("a").url(ask_path()), &key).await;
    assert_eq!(status, 200);
    let (answer, before) = frames(&mut first, 4).await;
    drop(first); // the connection drops without a word
    let cut = before.last().expect("some events").0;
    let path = format!("/api/v1/answers/{answer}/stream?after={cut}");
    let (status, mut rest) = open_sse(&rig, rig.hub("b").url(&path), &key).await;
    assert_eq!(status, 200, "b resumes a's answer");
    let (_, after) = frames(&mut rest, usize::MAX).await;
    let seqs: Vec<u64> = before.iter().chain(&after).map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every event once, in order");
    assert_eq!(after.last().expect("the end").1["done"], true);
    assert!(after.last().expect("the end").1.get("error").is_none());

    // The whole answer, read again from a's own log: the two halves make it up exactly.
    let path = format!("/api/v1/answers/{answer}/stream?after=0");
    let (status, mut whole) = open_sse(&rig, rig.hub("a").url(&path), &key).await;
    assert_eq!(status, 200);
    let (_, whole) = frames(&mut whole, usize::MAX).await;
    let halves = format!("{}{}", tokens(&before), tokens(&after));
    assert_eq!(halves, tokens(&whole));
    assert!(!halves.is_empty());
}

#[actix_web::test]
async fn an_answer_running_on_one_hub_is_stopped_through_the_other() {
    let rig = Rig::start(8, 15, 200).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("stop").await;
    let (_, other) = rig.new_key("other").await;
    let (status, mut res) = open_sse(&rig, rig.hub("a").url(ask_path()), &key).await;
    assert_eq!(status, 200);
    let (answer, _) = frames(&mut res, 2).await;
    let path = format!("/api/v1/answers/{answer}");
    assert_eq!(
        rig.delete(&rig.hub("b").url(&path), &other).await,
        404,
        "not its key's"
    );
    assert_eq!(rig.delete(&rig.hub("b").url(&path), &key).await, 204);
    let (_, rest) = frames(&mut res, usize::MAX).await;
    let last = &rest.last().expect("an ending").1;
    assert_eq!(last["error"]["code"], "cancelled", "{last}");
}

/// Text frames of a plain WebSocket as JSON, until `stop` accepts one (or the socket ends).
async fn ws_frames(
    framed: &mut actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    mut stop: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), framed.next()).await {
            Ok(Some(Ok(ws::Frame::Text(bytes)))) => {
                let frame: Value = serde_json::from_slice(&bytes).expect("JSON");
                let done = stop(&frame);
                frames.push(frame);
                if done {
                    return frames;
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return frames,
            Err(_) => panic!("no frame for 20 s"),
        }
    }
}

#[actix_web::test]
async fn a_websocket_answer_resumes_on_a_socket_to_the_other_hub() {
    let rig = Rig::start(7, 15, 60).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("ws-resume").await;
    let socket = |hub: &str| {
        rig.client
            .ws(rig
                .hub(hub)
                .url("/api/v1/chat/ws")
                .replacen("http", "ws", 1))
            .header("X-API-Key", key.as_str())
            .connect()
    };
    let (_, mut on_a) = socket("a").await.expect("a socket on a");
    let ask = json!({"message": "lighthouse keepers", "topK": 3, "id": "q1"}).to_string();
    on_a.send(ws::Message::Text(ask.into()))
        .await
        .expect("sent");
    let mut tokens_seen = 0;
    let before = ws_frames(&mut on_a, |f| {
        tokens_seen += usize::from(f.get("token").is_some());
        tokens_seen == 3
    })
    .await;
    drop(on_a);
    let answer_id = before[0]["answerId"].as_str().expect("answerId").to_owned();
    let seq = before.last().expect("frames")["seq"].as_u64().expect("seq");

    let (_, mut on_b) = socket("b").await.expect("a socket on b");
    let resume = json!({"type": "resume", "answerId": answer_id, "after": seq}).to_string();
    on_b.send(ws::Message::Text(resume.into()))
        .await
        .expect("sent");
    let after = ws_frames(&mut on_b, |f| f.get("done") == Some(&Value::Bool(true))).await;
    let end = after.last().expect("an ending");
    assert_eq!(end["done"], true, "{end}");
    assert!(end.get("error").is_none(), "{end}");
    let seqs: Vec<u64> = before
        .iter()
        .chain(&after)
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    let expected: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every event once, in order");
    assert!(
        after.iter().all(|f| f["id"] == "q1"),
        "frames keep the request id"
    );
}

#[actix_web::test]
async fn an_event_source_reconnecting_with_its_spent_ticket_resumes_through_the_other_hub() {
    let rig = Rig::start(6, 15, 60).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("event-source").await;
    let (status, body) = rig
        .post(&rig.hub("a").url("/api/v1/stream-tickets"), &key, json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    let path = format!("{}&ticket={ticket}", ask_path());
    let mut first = rig
        .client
        .get(rig.hub("a").url(&path))
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status().as_u16(), 200);
    let (answer, before) = frames(&mut first, 4).await;
    drop(first);
    let seq = before.last().expect("frames").0;
    // What a browser's EventSource does: the same URL, with the last id it saw.
    let mut rest = rig
        .client
        .get(rig.hub("b").url(&path))
        .insert_header(("Last-Event-ID", format!("{answer}:{seq}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(rest.status().as_u16(), 200);
    let (resumed, after) = frames(&mut rest, usize::MAX).await;
    assert_eq!(resumed, answer);
    assert_eq!(after.first().expect("more").0, seq + 1);
    assert_eq!(after.last().expect("the end").1["done"], true);
}

#[actix_web::test]
async fn a_cancel_on_the_hub_that_resumed_an_answer_stops_it_on_the_hub_that_runs_it() {
    let rig = Rig::start(2, 15, 250).await;
    rig.add_document().await;
    let (_, key) = rig.new_key("ws-cancel").await;
    let socket = |hub: &str| {
        rig.client
            .ws(rig
                .hub(hub)
                .url("/api/v1/chat/ws")
                .replacen("http", "ws", 1))
            .header("X-API-Key", key.as_str())
            .connect()
    };
    let (_, mut on_a) = socket("a").await.expect("a socket on a");
    let ask = json!({"message": "lighthouse keepers", "topK": 3, "id": "q1"}).to_string();
    on_a.send(ws::Message::Text(ask.into()))
        .await
        .expect("sent");
    let before = ws_frames(&mut on_a, |f| f.get("token").is_some()).await;
    drop(on_a);
    let answer_id = before[0]["answerId"].as_str().expect("answerId").to_owned();
    let seq = before.last().expect("frames")["seq"].as_u64().expect("seq");

    let (_, mut on_b) = socket("b").await.expect("a socket on b");
    let resume = json!({"type": "resume", "answerId": answer_id, "after": seq}).to_string();
    on_b.send(ws::Message::Text(resume.into()))
        .await
        .expect("sent");
    let resumed = ws_frames(&mut on_b, |f| {
        f.get("token").is_some() || f.get("done").is_some()
    })
    .await;
    assert!(
        resumed.last().is_some_and(|f| f.get("token").is_some()),
        "the answer ended before it could be cancelled (a machine this slow needs a slower pace): {resumed:?}"
    );
    let cancel = json!({"type": "cancel", "id": "q1"}).to_string();
    on_b.send(ws::Message::Text(cancel.into()))
        .await
        .expect("sent");
    let rest = ws_frames(&mut on_b, |f| f.get("error").is_some()).await;
    let end = rest.last().expect("an ending");
    assert_eq!(end["error"]["code"], "cancelled", "{end}");
    wait_until("a's slot released", Duration::from_secs(20), || async {
        rig.active_streams("a").await == 0
    })
    .await;
    // On a, where it ran, the answer ended as cancelled.
    let path = format!("/api/v1/answers/{answer_id}/stream?after=0");
    let (status, mut log) = open_sse(&rig, rig.hub("a").url(&path), &key).await;
    assert_eq!(status, 200);
    let (_, events) = frames(&mut log, usize::MAX).await;
    let last = &events.last().expect("events").1;
    assert_eq!(last["error"]["code"], "cancelled", "{last}");
}

#[actix_web::test]
async fn a_hub_that_missed_a_revocation_while_cut_off_catches_up_when_it_subscribes_again() {
    let rig = Rig::start(1, 15, 5).await;
    let (key_id, key) = rig.new_key("missed").await;
    let (res, mut socket) = rig
        .client
        .ws(rig
            .hub("b")
            .url("/api/v1/chat/ws")
            .replacen("http", "ws", 1))
        .header("X-API-Key", key.as_str())
        .connect()
        .await
        .expect("websocket on b");
    assert_eq!(res.status().as_u16(), 101);
    // The revocation lands in Redis while nobody hears of it (no message published)...
    let client = redis::Client::open(rig.redis_url()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("SADD")
        .arg("{ragstream}:revoked")
        .arg(&key_id)
        .query_async(&mut c)
        .await
        .expect("SADD");
    // ...then b's control subscription breaks (only the subscribers on this test's
    // database number): b subscribes again and finds it.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut c)
        .await
        .expect("CLIENT LIST");
    let db = format!(" db={} ", rig.redis_db);
    let mut killed = 0;
    for line in clients.lines().filter(|l| l.contains(&db)) {
        let id = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("id="))
            .expect("id");
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut c)
            .await
            .expect("CLIENT KILL");
        killed += 1;
    }
    assert_eq!(killed, 2, "one subscriber per hub");
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = socket.next().await {
            if let Ok(ws::Frame::Close(reason)) = frame {
                return reason.map(|r| r.code);
            }
        }
        None
    })
    .await
    .expect("the socket on b closes");
    assert_eq!(closed, Some(ws::CloseCode::Policy));
}
