//! The mock, the relays and the load generator work together: a five-stream run through
//! the bare relay and through the actix-web + awc relay completes with every token counted,
//! and clients that leave close their upstream streams. A few seconds; the hub is not
//! involved (CI tests it elsewhere).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ragstream_bench::client::{Load, Spec, Target, Window};
use ragstream_bench::mock::{self, MockConfig, MockStats};
use ragstream_bench::{actix_relay, procs, relay};
use tokio::net::TcpListener;

async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

fn spec(target: Target, addr: SocketAddr) -> Spec {
    let mut spec = Spec::new(
        target,
        addr,
        "",
        Arc::new(vec!["What is a smoke test?".into()]),
    );
    spec.answers = Some(1);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_streams_through_the_relay_arrive_whole_and_leavers_close_their_upstreams() {
    let (ml, mock_addr) = listen().await;
    let config = MockConfig {
        tokens: 20,
        pace_us: 2_000,
        ttft_us: 5_000,
        numbered: false,
    };
    tokio::spawn(mock::serve(ml, config));
    let (rl, relay_addr) = listen().await;
    tokio::spawn(relay::serve(rl, mock_addr));
    // actix runs its own system: a thread of its own, for the life of the test process.
    let al = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let actix_addr = al.local_addr().expect("addr");
    std::thread::spawn(move || actix_relay::serve(al, mock_addr, 1));

    for (target, addr) in [
        (Target::Direct, mock_addr),
        (Target::Relay, relay_addr),
        (Target::ActixRelay, actix_addr),
    ] {
        let load = Load::start(
            spec(target, addr),
            5,
            Duration::from_millis(10),
            Window::always(),
        );
        let stats = tokio::time::timeout(Duration::from_secs(10), load.join())
            .await
            .expect("the run finishes");
        assert!(stats.errors.is_empty(), "{target:?}: {:?}", stats.errors);
        assert_eq!(stats.answers_all, 5, "{target:?}");
        assert_eq!(stats.tokens, 100, "{target:?}");
        assert_eq!(stats.ttft_us.len(), 5);
    }

    let mut c = ragstream_bench::client::Conn::connect(mock_addr, None)
        .await
        .expect("connect");
    let slow = br#"{"tokens":1000,"pace_us":10000,"ttft_us":5000}"#;
    procs::post_json(&mut c, mock_addr, "/mock/config", None, slow)
        .await
        .expect("config");
    let mut seen = 0;
    for (target, addr) in [
        (Target::Relay, relay_addr),
        (Target::ActixRelay, actix_addr),
    ] {
        let mut leaving = spec(target, addr);
        leaving.id_prefix = "benchleave";
        leaving.leave_after = Some(3);
        let load = Load::start(leaving, 3, Duration::ZERO, Window::always());
        let stats = load.join().await;
        assert_eq!(stats.leaves.len(), 3, "{target:?}: {:?}", stats.errors);
        seen += 3;
        let mock = recorded_at_least(mock_addr, seen).await;
        for end in &mock.recorded[seen - 3..] {
            assert!(!end.completed, "{target:?}: {end:?}");
            assert!(end.tokens < 10, "{target:?}: {end:?}");
            let left = stats
                .leaves
                .iter()
                .find(|(id, _)| *id == end.id)
                .expect("a leaver")
                .1;
            assert!(
                end.at_unix_us.saturating_sub(left) < 100_000,
                "{target:?}: the upstream closed {} µs after its client left",
                end.at_unix_us.saturating_sub(left)
            );
        }
    }
}

/// The mock's figures once it has recorded `n` stream ends (or after 5 s, to fail on them).
async fn recorded_at_least(mock_addr: SocketAddr, n: usize) -> MockStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = procs::get(mock_addr, "/mock/stats", None)
            .await
            .expect("stats");
        let mock: MockStats = serde_json::from_slice(&body).expect("json");
        if mock.recorded.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(mock.recorded.len(), n, "stream ends recorded");
            return mock;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
