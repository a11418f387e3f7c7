//! Graceful drain: the real binary, a real SIGTERM, 20 answers on each transport (SSE,
//! plain WebSocket, SignalR, JSON) in the middle of streaming.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::SinkExt;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{parse, SseReader, WsClient, TOWER};
use crate::support::hub_process::HubProcess;

const PER_TRANSPORT: usize = 20;
const QUESTION: &str = "How tall is the tower and when was it built?";
const RS: char = '\u{1e}';

/// How one answer ended, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Done(String),
    /// `server_shutdown`, with the text received before it.
    Shutdown(String),
    Other(String),
}

impl End {
    fn text(&self) -> &str {
        match self {
            End::Done(t) | End::Shutdown(t) => t,
            End::Other(_) => "",
        }
    }
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(120))
        .connector(awc::Connector::new().limit(400))
        .finish()
}

async fn open_ws(hub: &HubProcess, client: &awc::Client) -> WsClient {
    let (res, framed) = client
        .ws(format!("{}/api/v1/chat/ws", hub.ws_base))
        .header("X-API-Key", hub.admin_key.as_str())
        .max_frame_size(1 << 20)
        .connect()
        .await
        .expect("websocket connects");
    assert_eq!(res.status().as_u16(), 101);
    WsClient { framed }
}

/// Next frame, pings answered; `None` when the socket ends.
async fn next_ws_frame(ws: &mut WsClient) -> Option<ws::Frame> {
    loop {
        match ws.next_frame(Duration::from_secs(60)).await {
            Some(ws::Frame::Ping(p)) => {
                let _ = ws.framed.send(ws::Message::Pong(p)).await;
            }
            other => return other,
        }
    }
}

fn close_code(frame: Option<ws::Frame>) -> Option<u16> {
    match frame {
        Some(ws::Frame::Close(reason)) => reason.map(|r| u16::from(r.code)),
        _ => None,
    }
}

/// An SSE agent-chat answer (a stored turn): its ending.
async fn sse_answer(hub: &HubProcess, client: awc::Client, started: Rc<Cell<usize>>) -> End {
    let res = client
        .get(hub.url("/api/v1/agent/chat/stream"))
        .query(&[("message", QUESTION)])
        .expect("query")
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let mut reader = SseReader::new(res);
    let mut text = String::new();
    while let Some(frame) = reader.next().await {
        if frame.comment || frame.data.is_empty() {
            continue;
        }
        let v = frame.json();
        if let Some(error) = v.get("error") {
            return ending(error, text);
        }
        if v["done"] == true {
            return End::Done(text);
        }
        if let Some(t) = v["token"].as_str().filter(|t| !t.is_empty()) {
            if text.is_empty() {
                started.set(started.get() + 1);
            }
            text.push_str(t);
        }
    }
    End::Other(format!(
        "the SSE body ended without a final frame after {text:?}"
    ))
}

fn ending(error: &Value, text: String) -> End {
    if error["code"] == "server_shutdown" {
        End::Shutdown(text)
    } else {
        End::Other(error.to_string())
    }
}

/// A plain WebSocket answer: its ending and the close code that followed it.
async fn ws_answer(mut ws: WsClient, started: Rc<Cell<usize>>) -> (End, Option<u16>) {
    ws.send_json(json!({"message": QUESTION, "id": "q"})).await;
    let mut text = String::new();
    let end = loop {
        let Some(ws::Frame::Text(bytes)) = next_ws_frame(&mut ws).await else {
            break End::Other(format!("the socket ended before a final frame: {text:?}"));
        };
        let v = parse(&bytes);
        if let Some(error) = v.get("error") {
            break ending(error, text);
        }
        if v["done"] == true {
            break End::Done(text);
        }
        if let Some(t) = v["token"].as_str() {
            if text.is_empty() {
                started.set(started.get() + 1);
            }
            text.push_str(t);
        }
    };
    (end, close_code(next_ws_frame(&mut ws).await))
}

/// A SignalR `SendMessage` answer: its ending, whether a Close allowing reconnect came,
/// and the close code.
async fn signalr_answer(mut ws: WsClient, started: Rc<Cell<usize>>) -> (End, bool, Option<u16>) {
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    ws.send_text(&format!(
        "{{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"{QUESTION}\",3],\"invocationId\":\"0\"}}{RS}"
    ))
    .await;
    signalr_ending(&mut ws, Some(&started)).await
}

/// Reads a SignalR connection to its end: how the answer ended (`Error` calls other than a
/// shutdown's are `Other` with their message), whether a Close allowing reconnect came, and
/// the close code.
async fn signalr_ending(
    ws: &mut WsClient,
    started: Option<&Cell<usize>>,
) -> (End, bool, Option<u16>) {
    let mut text = String::new();
    let mut end = None;
    loop {
        let frame = next_ws_frame(ws).await;
        let Some(ws::Frame::Text(bytes)) = frame else {
            let end = end.unwrap_or_else(|| End::Other(format!("no ending: {text:?}")));
            return (end, false, close_code(frame));
        };
        let raw = std::str::from_utf8(&bytes).expect("utf-8").to_owned();
        for record in raw.split(RS).filter(|r| !r.is_empty() && *r != "{}") {
            let v: Value = serde_json::from_str(record).expect("JSON record");
            match (v["type"].as_i64(), v["target"].as_str()) {
                (Some(1), Some("ReceiveToken")) => {
                    if let Some(started) = started.filter(|_| text.is_empty()) {
                        started.set(started.get() + 1);
                    }
                    text.push_str(v["arguments"][0].as_str().unwrap_or_default());
                }
                (Some(1), Some("StreamComplete")) => end = Some(End::Done(text.clone())),
                (Some(1), Some("Error")) => {
                    let message = v["arguments"][0].as_str().unwrap_or_default();
                    end = Some(if message.contains("shut down") {
                        End::Shutdown(text.clone())
                    } else {
                        End::Other(message.to_owned())
                    });
                }
                (Some(7), _) => {
                    let end = end.unwrap_or_else(|| End::Other(format!("Close first: {v}")));
                    let reconnect = v["allowReconnect"] == true;
                    return (end, reconnect, close_code(next_ws_frame(ws).await));
                }
                _ => {}
            }
        }
    }
}

/// A JSON agent-chat answer (a stored turn).
async fn json_answer(hub: &HubProcess, client: awc::Client) -> End {
    let mut res = client
        .post(hub.url("/api/v1/agent/chat"))
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send_json(&json!({"message": QUESTION}))
        .await
        .expect("request sent");
    let body = parse(&res.body().limit(1 << 20).await.expect("body"));
    let text = body["answer"].as_str().unwrap_or_default().to_owned();
    match res.status().as_u16() {
        200 => End::Done(text),
        503 => ending(&body["error"], text),
        status => End::Other(format!("{status} {body}")),
    }
}

async fn active_streams(hub: &HubProcess, client: &awc::Client) -> u64 {
    let mut res = client
        .get(hub.url("/api/v1/admin/stats"))
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send()
        .await
        .expect("stats");
    let body = parse(&res.body().await.expect("stats body"));
    body["activeStreams"]
        .as_u64()
        .or_else(|| body["hub"]["activeStreams"].as_u64())
        .unwrap_or_else(|| panic!("no activeStreams in {body}"))
}

/// Every answer of the four transports, running.
struct Running {
    sse: Vec<actix_web::rt::task::JoinHandle<End>>,
    ws: Vec<actix_web::rt::task::JoinHandle<(End, Option<u16>)>>,
    signalr: Vec<actix_web::rt::task::JoinHandle<(End, bool, Option<u16>)>>,
    json: Vec<actix_web::rt::task::JoinHandle<End>>,
}

/// Starts 20 answers on each transport and returns once every streaming one has had a
/// token and all 80 hold a slot.
async fn start_answers(hub: &Rc<HubProcess>, client: &awc::Client) -> Running {
    let started = Rc::new(Cell::new(0));
    let mut running = Running {
        sse: Vec::new(),
        ws: Vec::new(),
        signalr: Vec::new(),
        json: Vec::new(),
    };
    for _ in 0..PER_TRANSPORT {
        let (h, c, s) = (hub.clone(), client.clone(), started.clone());
        running.sse.push(actix_web::rt::spawn(
            async move { sse_answer(&h, c, s).await },
        ));
        let ws = open_ws(hub, client).await;
        running
            .ws
            .push(actix_web::rt::spawn(ws_answer(ws, started.clone())));
        let ws = open_ws(hub, client).await;
        running
            .signalr
            .push(actix_web::rt::spawn(signalr_answer(ws, started.clone())));
        let (h, c) = (hub.clone(), client.clone());
        running.json.push(actix_web::rt::spawn(
            async move { json_answer(&h, c).await },
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.get() < 3 * PER_TRANSPORT
        || active_streams(hub, client).await < 4 * PER_TRANSPORT as u64
    {
        assert!(
            Instant::now() < deadline,
            "only {} streams started; output:\n{}",
            started.get(),
            hub.output()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    running
}

/// During a drain: 503 `shutting_down` over HTTP (JSON, SSE, a WebSocket upgrade), an error
/// frame on an open plain WebSocket, an error completion on an open SignalR connection;
/// then both sockets are closed with 1012 (SignalR: a Close that allows reconnecting).
async fn new_answers_are_refused(
    hub: &HubProcess,
    client: &awc::Client,
    mut idle: WsClient,
    mut idle_signalr: WsClient,
) {
    let json = client
        .post(hub.url("/api/v1/ask"))
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send_json(&json!({"question": QUESTION}));
    let sse = client
        .get(hub.url("/api/v1/ask/stream"))
        .query(&[("question", QUESTION)])
        .expect("query")
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send();
    for res in [json.await, sse.await] {
        let mut res = res.expect("request");
        assert_eq!(res.status().as_u16(), 503);
        assert!(res.headers().contains_key("retry-after"));
        let body = parse(&res.body().await.expect("body"));
        assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    }
    let upgrade = client
        .ws(format!("{}/api/v1/chat/ws", hub.ws_base))
        .header("X-API-Key", hub.admin_key.as_str())
        .connect()
        .await;
    assert!(matches!(
        upgrade,
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 503
    ));

    // Both asked before either is read: the sockets close when the drain is over.
    idle.send_json(json!({"message": QUESTION, "id": "late"}))
        .await;
    idle_signalr
        .send_text(&format!(
            "{{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"{QUESTION}\",3],\"invocationId\":\"9\"}}{RS}"
        ))
        .await;
    let refused = loop {
        if let Some(ws::Frame::Text(b)) = next_ws_frame(&mut idle).await {
            break parse(&b);
        }
    };
    assert_eq!(refused["error"]["code"], "shutting_down", "{refused}");
    assert_eq!(close_code(next_ws_frame(&mut idle).await), Some(1012));
    let (end, reconnect, code) = signalr_ending(&mut idle_signalr, None).await;
    assert!(
        matches!(end, End::Other(ref m) if m.contains("shutting down")),
        "SignalR refusal: {end:?}"
    );
    assert!(reconnect);
    assert_eq!(code, Some(1012));
}

/// The stored assistant rows: (status, content, error code).
async fn assistant_rows(database_url: &str) -> Vec<(String, String, Option<String>)> {
    let pool = sqlx::SqlitePool::connect(database_url)
        .await
        .expect("the database opens");
    let rows =
        sqlx::query("SELECT status, content, error_code FROM messages WHERE role = 'assistant'")
            .fetch_all(&pool)
            .await
            .expect("messages");
    pool.close().await;
    rows.iter()
        .map(|r| (r.get("status"), r.get("content"), r.get("error_code")))
        .collect()
}

async fn add_document(hub: &HubProcess, client: &awc::Client) {
    let res = client
        .post(hub.url("/api/v1/documents"))
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send_json(&json!({"title": "Tower", "text": TOWER}))
        .await
        .expect("upload");
    assert_eq!(res.status().as_u16(), 201);
}

#[actix_web::test]
async fn sigterm_mid_answer_ends_every_stream_with_server_shutdown_stores_the_text_and_exits_0() {
    let grace = Duration::from_secs(2);
    let hub = Rc::new(HubProcess::start(&[
        ("RAGSTREAM_OFFLINE_PACE_MS", "150"),
        ("RAGSTREAM_SHUTDOWN_GRACE_SECS", "2"),
        ("RAGSTREAM_MAX_STREAMS_PER_USER", "500"),
        ("RAGSTREAM_MAX_CONNECTIONS_PER_USER", "500"),
        ("RAGSTREAM_RESUME_GRACE_SECS", "0"),
    ]));
    let client = client();
    add_document(&hub, &client).await;
    let idle = open_ws(&hub, &client).await;
    let mut idle_signalr = open_ws(&hub, &client).await;
    idle_signalr
        .send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    assert!(matches!(
        next_ws_frame(&mut idle_signalr).await,
        Some(ws::Frame::Text(b)) if &b[..] == b"{}\x1e"
    ));
    // The admin page's endless feed must not hold the stop back.
    let feed = client
        .get(hub.url("/api/v1/admin/events"))
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send()
        .await
        .expect("admin events");
    assert_eq!(feed.status().as_u16(), 200);
    let feed = actix_web::rt::spawn(async move { SseReader::new(feed).collect().await.len() });
    let running = start_answers(&hub, &client).await;

    let signalled = Instant::now();
    hub.signal("TERM");
    // Not ready at once, and no new answers on any transport.
    loop {
        let res = client.get(hub.url("/readyz")).send().await.expect("readyz");
        if res.status().as_u16() == 503 {
            break;
        }
        assert!(signalled.elapsed() < Duration::from_secs(1), "still ready");
    }
    new_answers_are_refused(&hub, &client, idle, idle_signalr).await;

    let mut received = Vec::new();
    for task in running.sse {
        let end = task.await.expect("sse task");
        assert!(
            matches!(end, End::Shutdown(ref t) if !t.is_empty()),
            "SSE: {end:?}"
        );
        received.push(end.text().to_owned());
    }
    for task in running.ws {
        let (end, code) = task.await.expect("ws task");
        assert!(
            matches!(end, End::Shutdown(ref t) if !t.is_empty()),
            "WS: {end:?}"
        );
        assert_eq!(code, Some(1012), "plain WebSocket close code");
        received.push(end.text().to_owned());
    }
    for task in running.signalr {
        let (end, reconnect, code) = task.await.expect("signalr task");
        assert!(
            matches!(end, End::Shutdown(ref t) if !t.is_empty()),
            "SignalR: {end:?}"
        );
        assert!(reconnect, "the SignalR Close allows reconnecting");
        assert_eq!(code, Some(1012), "SignalR close code");
        received.push(end.text().to_owned());
    }
    for task in running.json {
        let end = task.await.expect("json task");
        assert!(
            matches!(end, End::Shutdown(ref t) if !t.is_empty()),
            "JSON: {end:?}"
        );
        received.push(end.text().to_owned());
    }

    assert!(feed.await.expect("feed task") > 0, "the admin feed ended");
    let mut hub = Rc::into_inner(hub).expect("the only handle");
    let status = hub.wait_exit(grace + Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        hub.output()
    );
    // The grace, then no waiting on the server's own shutdown timeout (5 s).
    assert!(
        signalled.elapsed() < grace + Duration::from_secs(4),
        "{:?}",
        signalled.elapsed()
    );

    // Every answer's row is cancelled with exactly the text its client received.
    let rows = assistant_rows(&hub.database_url).await;
    assert_eq!(rows.len(), 4 * PER_TRANSPORT, "{rows:?}");
    for (status, _, code) in &rows {
        assert_eq!(status, "cancelled");
        assert_eq!(code.as_deref(), Some("server_shutdown"));
    }
    let mut stored: Vec<String> = rows.into_iter().map(|(_, text, _)| text).collect();
    stored.sort();
    received.sort();
    assert_eq!(stored, received);
}

#[actix_web::test]
async fn answers_that_finish_inside_the_grace_end_done_and_the_hub_exits_0() {
    let hub = Rc::new(HubProcess::start(&[
        ("RAGSTREAM_OFFLINE_PACE_MS", "40"),
        ("RAGSTREAM_SHUTDOWN_GRACE_SECS", "25"),
        ("RAGSTREAM_MAX_STREAMS_PER_USER", "500"),
        ("RAGSTREAM_MAX_CONNECTIONS_PER_USER", "500"),
    ]));
    let client = client();
    add_document(&hub, &client).await;
    let running = start_answers(&hub, &client).await;
    let signalled = Instant::now();
    hub.signal("TERM");

    for task in running.sse {
        let end = task.await.expect("sse task");
        assert!(matches!(end, End::Done(_)), "SSE: {end:?}");
    }
    for task in running.ws {
        let (end, code) = task.await.expect("ws task");
        assert!(matches!(end, End::Done(_)), "WS: {end:?}");
        assert_eq!(code, Some(1012));
    }
    for task in running.signalr {
        let (end, reconnect, code) = task.await.expect("signalr task");
        assert!(matches!(end, End::Done(_)), "SignalR: {end:?}");
        assert!(reconnect);
        assert_eq!(code, Some(1012));
    }
    for task in running.json {
        let end = task.await.expect("json task");
        assert!(matches!(end, End::Done(_)), "JSON: {end:?}");
    }
    let mut hub = Rc::into_inner(hub).expect("the only handle");
    let status = hub.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        hub.output()
    );
    // Well inside the grace: the drain waited for the answers, not for the clock.
    assert!(signalled.elapsed() < Duration::from_secs(15));
    let rows = assistant_rows(&hub.database_url).await;
    assert_eq!(rows.len(), 4 * PER_TRANSPORT);
    assert!(rows
        .iter()
        .all(|(status, text, _)| status == "complete" && !text.is_empty()));
}
