//! Answers that outlive their connection: a connection cut by the network (a proxy that
//! drops both sockets, anywhere in the byte stream) detaches the answer; a resume on SSE
//! (`Last-Event-ID`, `/answers/{id}/stream`) or WebSocket (`{"type":"resume"}`) continues
//! it with no token lost or repeated; nobody back within the grace window stops it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use awc::ws;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{
    spawn_app_with, use_mock_openai, Options, SseFrame, SseReader, TestApp, TOWER,
};
use crate::support::cut_proxy::CutProxy;
use crate::support::mock_upstream::{Flavor, MockUpstream, Reply, StreamEnd};

const QUESTION: &str = "How tall is the Eiffel Tower and who built it?";
/// How long a stopped answer may take to close its upstream (as everywhere else).
const CANCEL_BUDGET: Duration = Duration::from_millis(100);

async fn app_with_grace(grace: Duration) -> TestApp {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(3),
        resume_grace: grace,
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app
}

/// The hub with the mock OpenAI upstream as its only provider.
async fn app_with_mock(grace: Duration) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        resume_grace: grace,
        settings: Some(Box::new(move |s| {
            use_mock_openai(s, url);
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    (app, mock)
}

fn hub_addr(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("the hub's address")
}

/// The answer the hub gives when nothing interrupts it.
async fn uninterrupted(app: &TestApp) -> String {
    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": QUESTION, "topK": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["answer"].as_str().expect("answer").to_owned()
}

fn tokens(frames: &[SseFrame]) -> String {
    frames
        .iter()
        .filter(|f| f.event.is_none() && !f.comment)
        .filter_map(|f| f.json()["token"].as_str().map(str::to_owned))
        .collect()
}

/// Reads a response body until the connection is cut (or ends); returns the complete SSE
/// frames received, as an `EventSource` would have dispatched them.
async fn frames_until_cut<S>(mut body: S) -> Vec<SseFrame>
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut raw = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        raw.extend_from_slice(&chunk);
    }
    let replay = futures_util::stream::iter([Ok::<_, awc::error::PayloadError>(Bytes::from(raw))]);
    SseReader::new(replay)
        .collect()
        .await
        .into_iter()
        .filter(|f| !f.comment)
        .collect()
}

fn answer_id_header<S>(res: &awc::ClientResponse<S>) -> String {
    res.headers()
        .get("x-answer-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Answer-Id")
        .to_owned()
}

#[actix_web::test]
async fn an_sse_answer_cut_anywhere_resumes_with_last_event_id_with_no_token_lost_or_repeated() {
    let app = app_with_grace(Duration::from_secs(10)).await;
    let expected = uninterrupted(&app).await;
    let proxy = CutProxy::start(hub_addr(&app)).await;
    let admitted_before = app.stats().await.admitted_total;

    // Cuts inside the headers' aftermath, inside frames and between them.
    // (The response head is about 280 bytes, X-Request-Id included.)
    let cuts = [300, 333, 517, 640, 901, 1403];
    for cut in cuts {
        proxy.cut_after(cut);
        let url = format!("{}/api/v1/ask/stream", proxy.http_base());
        let res = app
            .client
            .get(url)
            .query(&[("question", QUESTION), ("topK", "3")])
            .expect("query")
            .insert_header(("X-API-Key", app.admin_key.as_str()))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status().as_u16(), 200);
        let answer_id = answer_id_header(&res);
        let before = frames_until_cut(res).await;
        // What the browser would send back: the last id it saw (none yet: from the start).
        let last_id = before
            .last()
            .and_then(|f| f.id.clone())
            .unwrap_or_else(|| format!("{answer_id}:0"));
        assert!(last_id.starts_with(&answer_id));

        // The EventSource way: the same URL, with Last-Event-ID.
        let res = app
            .client
            .get(app.url("/api/v1/ask/stream"))
            .query(&[("question", QUESTION), ("topK", "3")])
            .expect("query")
            .insert_header(("X-API-Key", app.admin_key.as_str()))
            .insert_header(("Last-Event-ID", last_id.as_str()))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(answer_id_header(&res), answer_id, "the same answer");
        let after = SseReader::new(res).collect().await;
        let last = after.last().expect("frames after the resume").json();
        assert_eq!(last["done"], true, "{last}");
        let text = format!("{}{}", tokens(&before), tokens(&after));
        assert_eq!(text, expected, "cut after {cut} bytes");
    }
    assert_eq!(
        app.stats().await.admitted_total - admitted_before,
        cuts.len() as u64,
        "a resume never starts a second answer"
    );
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn the_answers_route_resumes_after_a_cursor_and_only_for_the_key_that_asked() {
    let app = app_with_grace(Duration::from_secs(10)).await;
    let expected = uninterrupted(&app).await;
    let res = app.open_sse(&app.admin_key, QUESTION).await;
    let answer_id = answer_id_header(&res);
    let all = SseReader::new(res).collect().await;
    assert_eq!(tokens(&all), expected);

    // Within the grace window an ended answer can be read again, from any cursor.
    let url = app.url(&format!("/api/v1/answers/{answer_id}/stream"));
    let res = app
        .client
        .get(format!("{url}?after=0"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let again = SseReader::new(res).collect().await;
    assert_eq!(tokens(&again), expected);
    let third = &all[2];
    let seq: u64 = third
        .id
        .as_deref()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let res = app
        .client
        .get(url.clone())
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("Last-Event-ID", third.id.clone().unwrap()))
        .send()
        .await
        .expect("sent");
    let rest = SseReader::new(res).collect().await;
    let first = rest.first().and_then(|f| f.id.as_deref()).unwrap();
    let first: u64 = first.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(first > seq, "only what came after the cursor");

    // Another key, even an admin of another tenant, sees nothing: 404 as for an unknown id.
    let (tenant, _) = app.new_tenant("other").await;
    let other = app.new_key(&tenant, "other user").await;
    for (key, id) in [
        (other.as_str(), answer_id.as_str()),
        (app.admin_key.as_str(), "no-such-answer"),
    ] {
        let res = app
            .client
            .get(app.url(&format!("/api/v1/answers/{id}/stream")))
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status().as_u16(), 404);
        assert_eq!(app.delete(&format!("/api/v1/answers/{id}"), key).await, 404);
    }
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream"))
        .query(&[("question", QUESTION)])
        .expect("query")
        .insert_header(("X-API-Key", other.as_str()))
        .insert_header(("Last-Event-ID", format!("{answer_id}:1")))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 404, "not another key's answer");

    // A cursor ahead of the answer is a bad request, not a hang.
    let res = app
        .client
        .get(format!("{url}?after=100000"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 400);
}

#[actix_web::test]
async fn a_ticket_that_opened_an_answer_may_resume_that_answer_and_no_other() {
    let app = app_with_grace(Duration::from_secs(10)).await;
    let expected = uninterrupted(&app).await;
    let proxy = CutProxy::start(hub_addr(&app)).await;
    let (status, body) = app
        .post_json("/api/v1/stream-tickets", &app.admin_key, json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();

    proxy.cut_after(1500);
    let query = [
        ("question", QUESTION),
        ("topK", "3"),
        ("ticket", ticket.as_str()),
    ];
    let res = app
        .client
        .get(format!("{}/api/v1/ask/stream", proxy.http_base()))
        .query(&query)
        .expect("query")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let answer_id = answer_id_header(&res);
    let before = frames_until_cut(res).await;
    let last_id = before.last().and_then(|f| f.id.clone()).expect("a frame");

    // The browser's automatic reconnect: same URL (the spent ticket), Last-Event-ID.
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream"))
        .query(&query)
        .expect("query")
        .insert_header(("Last-Event-ID", last_id.as_str()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let after = SseReader::new(res).collect().await;
    assert_eq!(format!("{}{}", tokens(&before), tokens(&after)), expected);

    // The spent ticket neither starts a new answer nor reaches another one.
    let other = app.open_sse(&app.admin_key, QUESTION).await;
    let other_id = answer_id_header(&other);
    drop(other);
    for last in [None, Some(format!("{other_id}:0"))] {
        let mut req = app
            .client
            .get(app.url("/api/v1/ask/stream"))
            .query(&query)
            .expect("query");
        if let Some(last) = &last {
            req = req.insert_header(("Last-Event-ID", last.as_str()));
        }
        let res = req.send().await.expect("sent");
        assert_eq!(res.status().as_u16(), 401, "{last:?}");
    }
    assert!(answer_id != other_id);
}

#[actix_web::test]
async fn nobody_back_within_the_grace_window_closes_the_upstream_and_frees_the_slot() {
    let grace = Duration::from_millis(800);
    let (app, mock) = app_with_mock(grace).await;
    mock.push(Reply::slow(400, Duration::from_millis(20)));
    let mut reader = SseReader::new(app.open_sse(&app.admin_key, QUESTION).await);
    assert_eq!(
        reader.next().await.unwrap().event.as_deref(),
        Some("sources")
    );
    assert!(reader.next().await.unwrap().json()["token"].is_string());
    drop(reader);
    let left = Instant::now();

    // Detached, not stopped: it keeps its slot and its upstream for the grace window.
    let tokens_then = mock.streams().last().unwrap().tokens_sent;
    mock.wait_for_tokens_sent(tokens_then + 5, Duration::from_secs(2))
        .await;
    assert_eq!(app.stats().await.active_streams, 1);
    let (status, streams) = app.get_json("/api/v1/admin/streams", &app.admin_key).await;
    assert_eq!(status, 200, "{streams}");
    let listed = streams
        .as_array()
        .or_else(|| streams["streams"].as_array())
        .expect("a list of streams");
    assert_eq!(listed.len(), 1, "{streams}");
    assert_eq!(
        listed[0]["detached"], true,
        "the admin view shows it detached"
    );

    let log = mock
        .wait_for_stream_end(grace + Duration::from_secs(2))
        .await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(end, StreamEnd::Disconnected);
    let after = at.saturating_duration_since(left);
    eprintln!("the upstream was closed {after:?} after the client left (grace {grace:?})");
    assert!(
        after >= grace,
        "closed before the grace window ended: {after:?}"
    );
    assert!(after < grace + CANCEL_BUDGET, "{after:?}");
    app.wait_for_active_streams(0, Duration::from_millis(500))
        .await;
}

#[actix_web::test]
async fn delete_stops_an_answer_at_once_and_its_stream_says_so() {
    let (app, mock) = app_with_mock(Duration::from_secs(10)).await;
    mock.push(Reply::slow(400, Duration::from_millis(20)));
    let res = app.open_sse(&app.admin_key, QUESTION).await;
    let answer_id = answer_id_header(&res);
    let mut reader = SseReader::new(res);
    assert_eq!(
        reader.next().await.unwrap().event.as_deref(),
        Some("sources")
    );
    assert!(reader.next().await.unwrap().json()["token"].is_string());

    let stopped = Instant::now();
    let status = app
        .delete(&format!("/api/v1/answers/{answer_id}"), &app.admin_key)
        .await;
    assert_eq!(status, 204);
    let log = mock.wait_for_stream_end(Duration::from_secs(2)).await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(end, StreamEnd::Disconnected);
    assert!(at.saturating_duration_since(stopped) < CANCEL_BUDGET);
    let rest = reader.collect().await;
    let last = rest.last().expect("an ending").json();
    assert_eq!(last["error"]["code"], "cancelled", "{last}");
    app.wait_for_active_streams(0, Duration::from_millis(500))
        .await;
}

/// Reads WebSocket frames until the connection is cut; returns the text frames as JSON.
async fn ws_frames_until_cut(
    framed: &mut actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match actix_web::rt::time::timeout(Duration::from_secs(10), framed.next()).await {
            Ok(Some(Ok(ws::Frame::Text(bytes)))) => {
                frames.push(serde_json::from_slice(&bytes).expect("JSON"))
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return frames,
            Err(_) => panic!("the cut never came"),
        }
    }
}

#[actix_web::test]
async fn a_websocket_answer_cut_anywhere_resumes_on_a_new_socket() {
    let app = app_with_grace(Duration::from_secs(10)).await;
    let expected = uninterrupted(&app).await;
    let proxy = CutProxy::start(hub_addr(&app)).await;
    for cut in [520, 777, 1111, 1600] {
        proxy.cut_after(cut);
        let (_, mut framed) = app
            .client
            .ws(format!("{}/api/v1/chat/ws", proxy.ws_base()))
            .header("X-API-Key", app.admin_key.as_str())
            .connect()
            .await
            .expect("connects through the proxy");
        let ask = json!({"message": QUESTION, "topK": 3, "id": "q1"}).to_string();
        futures_util::SinkExt::send(&mut framed, ws::Message::Text(ask.into()))
            .await
            .expect("sent");
        let before = ws_frames_until_cut(&mut framed).await;
        let first = before.first().expect("the first frame came before the cut");
        let answer_id = first["answerId"].as_str().expect("answerId").to_owned();
        let seq = before.last().unwrap()["seq"].as_u64().expect("seq");
        assert!(
            before.iter().all(|f| f.get("done").is_none()),
            "cut after {cut} bytes came too late to test a resume"
        );

        let mut ws = app.open_ws(&app.admin_key).await;
        ws.send_json(json!({"type": "resume", "answerId": answer_id, "after": seq}))
            .await;
        let (rest, end) = ws.answer("q1").await;
        assert_eq!(end["done"], true, "{end}");
        assert_eq!(end["answerId"], answer_id.as_str());
        let head: String = before.iter().filter_map(|f| f["token"].as_str()).collect();
        assert_eq!(format!("{head}{rest}"), expected, "cut after {cut} bytes");
    }
    app.wait_for_active_streams(0, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn a_lost_websocket_turn_nobody_resumes_is_stored_cancelled_with_its_text() {
    let grace = Duration::from_millis(500);
    let (app, mock) = app_with_mock(grace).await;
    mock.push(Reply::slow(400, Duration::from_millis(20)));
    let proxy = CutProxy::start(hub_addr(&app)).await;
    let (_, mut framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws", proxy.ws_base()))
        .header("X-API-Key", app.admin_key.as_str())
        .connect()
        .await
        .expect("connects");
    let ask = json!({"message": QUESTION, "id": "q1"}).to_string();
    futures_util::SinkExt::send(&mut framed, ws::Message::Text(ask.into()))
        .await
        .expect("sent");
    let mut conversation = None;
    while let Some(Ok(frame)) = framed.next().await {
        if let ws::Frame::Text(bytes) = frame {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(c) = v["conversationId"].as_str() {
                conversation = Some(c.to_owned());
            }
            if v["token"].is_string() {
                break;
            }
        }
    }
    let conversation = conversation.expect("the conversation frame");
    proxy.cut();
    let left = Instant::now();
    let log = mock
        .wait_for_stream_end(grace + Duration::from_secs(2))
        .await;
    let (at, _) = log.end.expect("ended");
    assert!(at.saturating_duration_since(left) >= grace);
    app.wait_for_active_streams(0, Duration::from_millis(500))
        .await;

    // The final write is queued as the answer stops; wait for it to land.
    let path = format!("/api/v1/conversations/{conversation}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = app.get_json(&path, &app.admin_key).await;
        assert_eq!(status, 200, "{body}");
        let reply = &body["messages"][1];
        if reply["status"] == "cancelled" {
            let text = reply["content"].as_str().unwrap_or_default();
            assert!(
                !text.is_empty(),
                "the text generated until the stop is kept"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still {reply}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_websocket_resume_of_another_keys_answer_is_answer_not_found_as_for_an_unknown_id() {
    let app = app_with_grace(Duration::from_secs(10)).await;
    let (tenant, owner) = app.new_tenant("owner").await;
    app.add_document(&owner, "Tower", TOWER).await;
    let res = app.open_sse(&owner, QUESTION).await;
    let answer_id = answer_id_header(&res);
    let expected = tokens(&SseReader::new(res).collect().await);
    assert!(!expected.is_empty());

    // A colleague in the same tenant and an administrator of another one: neither learns
    // that the answer exists.
    let colleague = app.new_key(&tenant, "colleague").await;
    for key in [colleague.as_str(), app.admin_key.as_str()] {
        let mut ws = app.open_ws(key).await;
        let mut errors = Vec::new();
        for (id, answer) in [
            ("theirs", answer_id.as_str()),
            ("unknown", "no-such-answer"),
        ] {
            ws.send_json(json!({"type": "resume", "answerId": answer, "after": 0, "id": id}))
                .await;
            let frame = ws.next_json().await;
            assert_eq!(frame["id"], id, "{frame}");
            assert_eq!(frame["error"]["code"], "answer_not_found", "{frame}");
            assert!(frame.get("token").is_none(), "{frame}");
            errors.push(frame["error"].clone());
        }
        assert_eq!(errors[0], errors[1], "another key's answer looks unknown");
    }

    // The owner, on the same kind of socket, gets it: the id above was a real one.
    let mut ws = app.open_ws(&owner).await;
    ws.send_json(json!({"type": "resume", "answerId": answer_id, "after": 0, "id": "mine"}))
        .await;
    let (text, end) = ws.answer("mine").await;
    assert_eq!(end["done"], true, "{end}");
    assert_eq!(text, expected);
}

#[actix_web::test]
async fn a_websocket_close_frame_stops_the_answer_at_once_even_with_a_grace_window() {
    let grace = Duration::from_secs(10);
    let (app, mock) = app_with_mock(grace).await;
    mock.push(Reply::slow(400, Duration::from_millis(20)));
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": QUESTION, "id": "q1"})).await;
    let mut conversation = None;
    loop {
        let frame = ws.next_json().await;
        if let Some(c) = frame["conversationId"].as_str() {
            conversation = Some(c.to_owned());
        }
        if frame["token"].is_string() {
            break;
        }
    }
    let conversation = conversation.expect("the conversation frame");
    assert_eq!(app.stats().await.active_streams, 1);

    // Saying goodbye is an explicit stop: nobody is coming back for this answer.
    futures_util::SinkExt::send(&mut ws.framed, ws::Message::Close(None))
        .await
        .expect("close sent");
    let closed = Instant::now();
    let log = mock.wait_for_stream_end(Duration::from_secs(5)).await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(end, StreamEnd::Disconnected, "stopped, not run to its end");
    let stopped = at.saturating_duration_since(closed);
    eprintln!("the upstream was closed {stopped:?} after the Close frame (grace {grace:?})");
    assert!(stopped < CANCEL_BUDGET, "{stopped:?}");
    let released = app
        .wait_for_active_streams(0, Duration::from_millis(500))
        .await;
    assert!(
        closed.elapsed() < grace / 10,
        "slot released {released:?} after the check"
    );
    let (status, streams) = app.get_json("/api/v1/admin/streams", &app.admin_key).await;
    assert_eq!(status, 200, "{streams}");
    let listed = streams
        .as_array()
        .or_else(|| streams["streams"].as_array())
        .expect("a list of streams");
    assert!(listed.is_empty(), "nothing left detached: {streams}");

    let path = format!("/api/v1/conversations/{conversation}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = app.get_json(&path, &app.admin_key).await;
        assert_eq!(status, 200, "{body}");
        let reply = &body["messages"][1];
        if reply["status"] == "cancelled" {
            assert!(!reply["content"].as_str().unwrap_or_default().is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "still {reply}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed.elapsed() < grace,
        "stored cancelled within the grace window, so not by it"
    );
}

#[actix_web::test]
async fn a_cut_inside_a_merged_frame_resumes_after_the_last_whole_frame_with_the_exact_text() {
    use crate::support::mock_upstream::Ending;
    use crate::support::raw_ws::{self, TEXT};
    use tokio::io::AsyncWriteExt;

    let (app, mock) = app_with_mock(Duration::from_secs(10)).await;
    // Distinct tokens (a lost or repeated one shows), big enough that a client that does
    // not read fills the socket's buffers well before the answer ends.
    let upstream: Vec<String> = (0..600)
        .map(|i| format!("[{i}]{} ", "m".repeat(250)))
        .collect();
    let expected: String = upstream.concat();
    mock.push(Reply::Stream {
        tokens: upstream,
        pace: Duration::ZERO,
        ending: Ending::Complete,
        usage: 600,
    });
    let mut socket = raw_ws::connect_small_buffer(hub_addr(&app), &app.admin_key, 4096).await;
    let ask = json!({"message": QUESTION, "id": "q1"}).to_string();
    socket
        .write_all(&raw_ws::frame(TEXT, ask.as_bytes()))
        .await
        .expect("asked");
    // The client lags: it reads nothing until the whole answer is in the hub's log, so the
    // hub's writer, stalled on the full socket, finds many tokens waiting when it resumes.
    let log = mock.wait_for_stream_end(Duration::from_secs(30)).await;
    assert_eq!(log.end.map(|(_, end)| end), Some(StreamEnd::Completed));

    let mut head = String::new();
    let mut answer_id = None;
    let mut last_seq = 0;
    let mut merged = 0;
    let mut cut_inside = None;
    while cut_inside.is_none() {
        let frame = raw_ws::read_head(&mut socket).await.expect("a frame");
        // A token frame carries some 300 bytes: one this long is several merged.
        if frame.opcode == TEXT && merged > 0 && frame.len > 1200 {
            // The cut: half of this frame arrived, the rest is lost with the connection.
            raw_ws::payload(&mut socket, frame.len / 2)
                .await
                .expect("half the frame");
            cut_inside = Some(frame.len);
            break;
        }
        let bytes = raw_ws::payload(&mut socket, frame.len)
            .await
            .expect("payload");
        if frame.opcode != TEXT {
            continue;
        }
        let v: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert!(v.get("done").is_none() && v.get("error").is_none(), "{v}");
        if answer_id.is_none() {
            answer_id = v["answerId"].as_str().map(str::to_owned);
        }
        let seq = v["seq"].as_u64().expect("seq");
        if let Some(t) = v["token"].as_str() {
            if seq > last_seq + 1 {
                merged += 1;
            }
            head.push_str(t);
        }
        last_seq = seq;
    }
    drop(socket);
    let answer_id = answer_id.expect("answerId");
    eprintln!(
        "cut inside a frame of {:?} bytes after {merged} merged frames; resuming after seq {last_seq}",
        cut_inside
    );

    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"type": "resume", "answerId": answer_id, "after": last_seq}))
        .await;
    let (rest, end) = ws.answer("q1").await;
    assert_eq!(end["done"], true, "{end}");
    let text = format!("{head}{rest}");
    assert!(
        text == expected,
        "the resumed text differs from the upstream's"
    );
}
