//! Clients that try to stall the hub: a flood of tiny frames, replies never read, requests
//! that keep being refused. Each costs the hub constant work per frame and ends with the
//! connection closed (1008), while other tenants' answers start on time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::helpers::{spawn_app_with, Options, SseReader, TestApp, BRIDGE, TOWER};
use crate::support::raw_ws::{self, close_code, frame, read_until_close, repeated, PING, TEXT};

const FLOOD_FRAMES: usize = 100_000;
const POLICY_VIOLATION: u16 = 1008;
/// The inbound frames a socket may send in one burst (`FRAME_BURST` in src/hub/ws_session),
/// at 50 a second after it.
const FRAME_BURST: usize = 200;
const PONG: u8 = 0xA;

fn hub_addr(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// A flood: its name, a first frame (the SignalR handshake), and the frames.
type Flood = (&'static str, Option<Vec<u8>>, Vec<u8>);

/// The flavours of flood: WebSocket pings, plain-protocol pings, SignalR pings.
fn floods() -> Vec<Flood> {
    vec![
        ("websocket pings", None, repeated(PING, b"", FLOOD_FRAMES)),
        (
            "plain pings",
            None,
            repeated(TEXT, br#"{"type":"ping"}"#, FLOOD_FRAMES),
        ),
        (
            "signalr pings",
            Some(frame(TEXT, b"{\"protocol\":\"json\",\"version\":1}\x1e")),
            repeated(TEXT, b"{\"type\":6}\x1e", FLOOD_FRAMES),
        ),
    ]
}

/// Opens a socket and writes the whole flood without reading a byte; returns the close code
/// the hub sent.
async fn flood(
    hub: SocketAddr,
    key: String,
    prologue: Option<Vec<u8>>,
    frames: Vec<u8>,
) -> Option<u16> {
    let stream = raw_ws::connect(hub, &key).await;
    let (mut read, mut write) = stream.into_split();
    if let Some(first) = prologue {
        write.write_all(&first).await.expect("prologue");
    }
    // In a task of its own: a hub that stopped reading blocks this write, it does not fail it.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&frames).await;
        write
    });
    let code = close_code(&mut read, Duration::from_secs(20)).await;
    writer.abort();
    code
}

#[actix_web::test]
async fn a_socket_that_floods_frames_without_reading_is_closed_with_1008() {
    let app = spawn_app_with(Options::default()).await;
    for (name, prologue, frames) in floods() {
        let code = flood(hub_addr(&app), app.admin_key.clone(), prologue, frames).await;
        assert_eq!(code, Some(POLICY_VIOLATION), "{name}");
    }
    // The hub forgot them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.stats().await.connections > 0 {
        assert!(Instant::now() < deadline, "flooders still registered");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn a_flooding_socket_that_reads_every_reply_is_closed_by_the_frame_rate_limit() {
    let app = spawn_app_with(Options::default()).await;
    for (name, prologue, frames) in floods() {
        let stream = raw_ws::connect(hub_addr(&app), &app.admin_key).await;
        let (mut read, mut write) = stream.into_split();
        // Reading from before the first frame, as fast as the hub writes: its replies never
        // pile up, so the unread-bytes bound cannot be what ends this socket.
        let reader =
            tokio::spawn(async move { read_until_close(&mut read, Duration::from_secs(20)).await });
        if let Some(first) = prologue {
            write.write_all(&first).await.expect("prologue");
        }
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&frames).await;
            write
        });
        let received = reader.await.expect("reader");
        writer.abort();

        let (code, reason) = received.close.expect("a close frame");
        assert_eq!(code, POLICY_VIOLATION, "{name}");
        assert_eq!(
            reason, "too many messages",
            "{name}: the rate limit closed it"
        );
        // Replies to no more frames than the burst (and what refilled meanwhile) allows.
        let replies = |opcode: u8| {
            received
                .frames
                .iter()
                .filter(|(op, _)| *op == opcode)
                .count()
        };
        let answered = match name {
            "websocket pings" => replies(PONG),
            "plain pings" => received
                .frames
                .iter()
                .filter(|(op, text)| *op == TEXT && text.windows(4).any(|w| w == b"pong"))
                .count(),
            _ => 0,
        };
        assert!(answered <= FRAME_BURST + 50, "{name}: {answered} replies");
        if name != "signalr pings" {
            // SignalR pings ask for no reply; the others were read and answered until the limit.
            assert!(
                answered >= FRAME_BURST / 2,
                "{name}: only {answered} replies read"
            );
        } else {
            let texts: Vec<String> = received
                .frames
                .iter()
                .filter(|(op, _)| *op == TEXT)
                .map(|(_, t)| String::from_utf8_lossy(t).into_owned())
                .collect();
            assert!(
                texts
                    .iter()
                    .any(|t| t.contains(r#""type":7"#) && t.contains("Too many messages.")),
                "a SignalR Close that says why: {texts:?}"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.stats().await.connections > 0 {
        assert!(Instant::now() < deadline, "flooders still registered");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn a_socket_that_keeps_sending_what_is_refused_is_closed_after_a_bounded_number() {
    let app = spawn_app_with(Options::default()).await;
    let mut stream = raw_ws::connect(hub_addr(&app), &app.admin_key).await;
    // Slow enough for the rate limit, each one refused (not JSON).
    let mut closed = None;
    for sent in 1..=100 {
        if stream.write_all(&frame(TEXT, b"not json")).await.is_err() {
            closed = Some(sent);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    let code = close_code(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(POLICY_VIOLATION),
        "closed after {closed:?} frames"
    );
}

/// Milliseconds from asking to the first token of another tenant's SSE answer.
async fn time_to_first_token(app: &TestApp, key: &str) -> u128 {
    let start = Instant::now();
    let mut reader = SseReader::new(
        app.open_sse(key, "When did the Golden Gate Bridge open?")
            .await,
    );
    while let Some(frame) = reader.next().await {
        if !frame.comment && frame.event.is_none() && frame.json()["token"].is_string() {
            return start.elapsed().as_millis();
        }
    }
    panic!("the answer had no token");
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[actix_web::test]
async fn another_tenants_answers_start_on_time_while_sockets_flood_the_hub() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(1),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (_, neighbour) = app.new_tenant("quiet neighbour").await;
    app.add_document(&neighbour, "Bridge", BRIDGE).await;

    let mut normal = Vec::new();
    for _ in 0..5 {
        normal.push(time_to_first_token(&app, &neighbour).await);
    }
    let normal = median(normal);

    let flooders: Vec<_> = floods()
        .into_iter()
        .map(|(_, prologue, frames)| {
            tokio::spawn(flood(
                hub_addr(&app),
                app.admin_key.clone(),
                prologue,
                frames,
            ))
        })
        .collect();
    let mut during = Vec::new();
    for _ in 0..5 {
        during.push(time_to_first_token(&app, &neighbour).await);
        let healthz = app
            .client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(healthz.status().as_u16(), 200);
    }
    let during = median(during);
    eprintln!(
        "neighbour's time to first token: {normal} ms normally, {during} ms during the floods"
    );
    assert!(during <= normal + 100, "{during} ms against {normal} ms");
    for flooder in flooders {
        assert_eq!(flooder.await.expect("flooder"), Some(POLICY_VIOLATION));
    }
}

/// Reads server frames (payloads skipped) until the close frame; returns its code and reason.
async fn close_frame(stream: &mut tokio::net::TcpStream) -> Option<(u16, String)> {
    loop {
        let head = raw_ws::read_head(stream).await.ok()?;
        let payload = raw_ws::payload(stream, head.len).await.ok()?;
        if head.opcode == raw_ws::CLOSE {
            let code = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
    }
}

#[actix_web::test]
async fn a_socket_that_pings_within_the_rate_limit_but_never_reads_is_closed_at_the_outbox_bound() {
    use crate::helpers::use_mock_openai;
    use crate::support::mock_upstream::{Ending, Flavor, MockUpstream, Reply};

    let mock = MockUpstream::start(Flavor::OpenAi).await;
    // An answer far bigger than the socket's buffers: the hub's writer stalls on it, so
    // every pong owed from then on waits in the outbox.
    mock.push(Reply::Stream {
        tokens: (0..1000).map(|_| "z".repeat(1000)).collect(),
        pace: Duration::ZERO,
        ending: Ending::Complete,
        usage: 1000,
    });
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            use_mock_openai(s, url);
            // Long enough that only the outbox's bound can end this connection.
            s.client_write_timeout = Duration::from_secs(600);
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let mut socket = raw_ws::connect_small_buffer(hub_addr(&app), &app.admin_key, 4096).await;
    socket
        .write_all(&frame(
            TEXT,
            br#"{"message":"How tall is the tower?","id":"q"}"#,
        ))
        .await
        .expect("asked");
    mock.wait_for_stream_end(Duration::from_secs(30)).await;

    // Pings with the largest payload, under the frame rate limit (a burst, then 48 a
    // second against 50 allowed), each owed a pong the client never reads.
    let ping = frame(PING, &[b'p'; 125]);
    let started = Instant::now();
    let mut sent = 0usize;
    let burst = 190;
    loop {
        let batch = if sent == 0 { burst } else { 12 };
        for _ in 0..batch {
            socket.write_all(&ping).await.expect("ping sent");
        }
        sent += batch;
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        if app.stats().await.connections == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still open after {sent} unread pongs"
        );
    }
    let owed = sent * (125 + 16);
    eprintln!(
        "closed after {sent} pings ({owed} bytes of pongs owed, bound {}) in {:?}",
        256 * 1024,
        started.elapsed()
    );
    // The bound is in bytes: a few hundred pongs of these would not reach it.
    assert!(owed >= 256 * 1024, "{sent} pings");

    // Once the client reads, the close frame comes after what was queued.
    let close = tokio::time::timeout(Duration::from_secs(30), close_frame(&mut socket))
        .await
        .expect("the connection ends");
    assert_eq!(
        close,
        Some((POLICY_VIOLATION, "not reading replies".to_owned()))
    );

    // The hub is fine: the answer is over, and a new client gets a whole answer.
    app.wait_for_active_streams(0, Duration::from_secs(5)).await;
    let healthz = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status().as_u16(), 200);
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(serde_json::json!({"message": "How tall is the tower?", "id": "after"}))
        .await;
    let (text, end) = ws.answer("after").await;
    assert_eq!(end["done"], true, "{end}");
    assert!(!text.is_empty());
}
