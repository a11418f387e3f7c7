//! Clients that ask and never read: they are let go after the write timeout, their answers do not
//! wait for them, and after the write timeout plus the grace window every slot, connection
//! and upstream is given back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::helpers::{spawn_app_with, use_mock_openai, Options, TestApp, TOWER};
use crate::support::mock_upstream::{Ending, Flavor, MockUpstream, Reply, StreamEnd};
use crate::support::raw_ws::{connect_small_buffer, frame, TEXT};

const CLIENTS: usize = 500;

fn hub_addr(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// Resident memory of this process (the hub runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn five_hundred_clients_that_never_read_are_let_go_and_give_everything_back() {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    // Long answers of big tokens (about 200 KB each), so an unread socket stalls the hub's
    // writes well before the answer ends.
    let token = "x".repeat(1000);
    let tokens: Vec<&str> = std::iter::repeat_n(token.as_str(), 200).collect();
    mock.set_default(Reply::Stream {
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        pace: Duration::from_millis(10),
        ending: Ending::Complete,
        usage: 200,
    });
    let url = mock.base_url.clone();
    let write_timeout = Duration::from_secs(1);
    let grace = Duration::from_secs(1);
    let app = spawn_app_with(Options {
        per_user: CLIENTS,
        global: CLIENTS * 2,
        resume_grace: grace,
        settings: Some(Box::new(move |s| {
            use_mock_openai(s, url);
            s.client_write_timeout = write_timeout;
            s.max_connections_per_user = CLIENTS * 2;
            s.answer_log_max_bytes = 128 * 1024;
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let before = rss_kib();

    let started = Instant::now();
    let mut sockets = Vec::with_capacity(CLIENTS);
    let ask = frame(
        TEXT,
        br#"{"message":"How tall is the Eiffel Tower?","id":"q"}"#,
    );
    for _ in 0..CLIENTS {
        let mut socket = connect_small_buffer(hub_addr(&app), &app.admin_key, 4096).await;
        socket.write_all(&ask).await.expect("asked");
        sockets.push(socket);
    }
    let mut peak = rss_kib();
    // Every answer runs to its end or is stopped; nothing waits for these readers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        peak = peak.max(rss_kib());
        let stats = app.stats().await;
        if stats.active_streams == 0 && stats.connections == 0 && mock.requests().len() >= CLIENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} answers and {} connections after {:?}",
            stats.active_streams,
            stats.connections,
            started.elapsed()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = started.elapsed();
    let streams = mock.streams();
    assert_eq!(streams.len(), CLIENTS);
    let open = streams.iter().filter(|s| s.end.is_none()).count();
    assert_eq!(open, 0, "every upstream was closed or completed");
    let cut = streams
        .iter()
        .filter(|s| matches!(s.end, Some((_, StreamEnd::Disconnected))))
        .count();
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{CLIENTS} clients that never read: test process RSS {before} KiB before, peak +{grown} KiB \
         ({} KiB per client); everything released {settled:?} after the first ask; {cut} upstreams stopped early",
        grown / CLIENTS as u64
    );
    // The figure is reported, not asserted: this process also runs the other tests (and the
    // mock's precomputed replies), so its RSS is no measure of the hub alone. The hub's bound
    // is structural: a stalled client holds its answer's log (128 KiB here), at most 32
    // queued frames of at most 4 KiB and its connection's buffers, and after the write
    // timeout and the grace window nothing at all (asserted above). The soak measures the
    // hub's own RSS in a process of its own (bench/results/soak.md).
    drop(sockets);
}

#[actix_web::test]
async fn an_sse_client_that_stops_reading_loses_its_answer_after_the_write_timeout_and_grace() {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let token = "y".repeat(10_000);
    mock.set_default(Reply::Stream {
        // 20 MB: far more than the kernel buffers between the two sockets hold (loopback
        // send buffers grow to 4 MB).
        tokens: std::iter::repeat_n(token, 2000).collect(),
        pace: Duration::from_millis(1),
        ending: Ending::Complete,
        usage: 2000,
    });
    let url = mock.base_url.clone();
    let write_timeout = Duration::from_secs(1);
    let grace = Duration::from_secs(1);
    let app = spawn_app_with(Options {
        resume_grace: grace,
        settings: Some(Box::new(move |s| {
            use_mock_openai(s, url);
            s.client_write_timeout = write_timeout;
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;

    // A client with a tiny receive buffer that asks and never reads a byte.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut stream = socket.connect(hub_addr(&app)).await.expect("connects");
    let request = format!(
        "GET /api/v1/ask/stream?question=How%20tall%20is%20it%3F HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\n\r\n",
        hub_addr(&app),
        app.admin_key
    );
    stream.write_all(request.as_bytes()).await.expect("asked");
    let asked = Instant::now();

    // The session lets go of the answer once its writes have stalled for the timeout...
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = app.stats().await;
        if stats.sse_connections == 0 && stats.active_streams == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled SSE connection is still registered"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let released = asked.elapsed();
    assert!(released >= write_timeout, "{released:?}");
    // ... and the answer, detached, is stopped when the grace window passes unresumed.
    let log = mock.wait_for_stream_end(Duration::from_secs(10)).await;
    let (at, end) = log.end.expect("ended");
    assert_eq!(
        end,
        StreamEnd::Disconnected,
        "stopped before its 2000 tokens"
    );
    assert!(at.saturating_duration_since(asked) >= write_timeout + grace);
    app.wait_for_active_streams(0, Duration::from_secs(1)).await;
    eprintln!(
        "released {released:?} after the ask; upstream closed {:?} after it",
        at.saturating_duration_since(asked)
    );
    drop(stream);
}
