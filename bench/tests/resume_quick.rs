//! The resume scenario's clients against the hub's debug build: answers cut mid-answer over
//! SSE and plain WebSocket resume with the text the mock sent, token for token; slow
//! readers on narrow sockets get theirs whole too. A few seconds.
//!
//! Like the quick soak, it runs the `ragstream` binary next to this test, building it if
//! it is missing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ragstream_bench::client::{Check, Lag, Load, Spec, Target, Window};
use ragstream_bench::mock::{self, MockConfig};
use ragstream_bench::procs::{self, ADMIN_KEY};
use tokio::net::TcpListener;

const TOKENS: u32 = 30;

fn hub_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug");
    let bin = dir.join("ragstream");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ragstream", "--bin", "ragstream"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p ragstream failed");
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_answers_resume_with_no_token_lost_or_repeated_and_slow_readers_get_theirs_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mock_addr = listener.local_addr().expect("addr");
    tokio::spawn(mock::serve(
        listener,
        MockConfig {
            tokens: TOKENS,
            pace_us: 3_000,
            ttft_us: 5_000,
            numbered: true,
        },
    ));
    let dir = std::env::temp_dir().join(format!("ragstream-resume-quick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = std::fs::canonicalize(hub_bin()).expect("the hub binary");
    let env = [("RAGSTREAM_RESUME_GRACE_SECS".to_owned(), "10".to_owned())];
    let hub = procs::start_hub(&bin, &dir, mock_addr, 1, &env)
        .await
        .expect("the hub starts");
    let questions = Arc::new(vec!["What survives a cut?".to_owned()]);

    for target in [Target::HubSse, Target::HubWs] {
        let mut spec = Spec::new(target, hub.addr, ADMIN_KEY, questions.clone());
        spec.answers = Some(2);
        spec.check = Some(Check {
            tokens: TOKENS,
            drop_pct: 50,
        });
        let load = Load::start(spec, 10, Duration::from_millis(30), Window::always());
        let (stats, late) = load.join_within(Duration::from_secs(60)).await;
        let t = &stats.text;
        assert!(!late, "{target:?}: the clients did not finish");
        assert!(stats.errors.is_empty(), "{target:?}: {:?}", stats.errors);
        assert_eq!((t.answers, t.exact), (20, 20), "{target:?}: {t:?}");
        assert_eq!((t.dropped, t.resumed), (10, 10), "{target:?}: {t:?}");
        assert_eq!((t.tokens_lost, t.tokens_repeated), (0, 0), "{target:?}");
        assert_eq!(stats.tokens, u64::from(TOKENS) * 20, "{target:?}");

        let mut slow = Spec::new(target, hub.addr, ADMIN_KEY, questions.clone());
        slow.answers = Some(1);
        slow.check = Some(Check {
            tokens: TOKENS,
            drop_pct: 0,
        });
        slow.lag = Some(Lag {
            recv_buffer: 4096,
            mss: 1460,
            read_bytes: 256,
            pause: Duration::from_millis(5),
        });
        let load = Load::start(slow, 3, Duration::ZERO, Window::always());
        let (stats, late) = load.join_within(Duration::from_secs(60)).await;
        assert!(
            !late && stats.errors.is_empty(),
            "{target:?}: {:?}",
            stats.errors
        );
        assert_eq!(stats.text.exact, 3, "{target:?}: {:?}", stats.text);
    }
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}
