//! Clients that ask and never read: the hub's memory stays bounded, their answers do not
//! wait for them, and after the write timeout plus the grace window every slot, connection
//! and upstream is given back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ragstream::config::{OpenAiSettings, ProviderKind, Secret};
use tokio::io::AsyncWriteExt;

use crate::helpers::{spawn_app_with, Options, TestApp, TOWER};
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
async fn five_hundred_clients_that_never_read_cost_bounded_memory_and_give_everything_back() {
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
            s.providers = vec![ProviderKind::OpenAi];
            s.openai = Some(OpenAiSettings {
                api_key: Secret::new("sk-mock"),
                base_url: url,
                model: "gpt-test".into(),
            });
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
        "{CLIENTS} clients that never read: hub (test process) RSS {before} KiB before, peak +{grown} KiB \
         ({} KiB per client); everything released {settled:?} after the first ask; {cut} upstreams stopped early",
        grown / CLIENTS as u64
    );
    // Bounded: a stalled client holds its answer's log (128 KiB here), at most 32 queued
    // frames of at most 4 KiB and the connection's buffers; the figure also counts the
    // in-process mock's precomputed 200 KB replies. Not the whole answer per frame, and
    // nothing after the write timeout and the grace window (checked above).
    assert!(
        grown < CLIENTS as u64 * 1024,
        "memory grew by {grown} KiB for {CLIENTS} clients"
    );
    drop(sockets);
}
