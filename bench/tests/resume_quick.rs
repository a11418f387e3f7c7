//! The resume scenario's clients against the hub's debug build: answers cut mid-answer over
//! SSE and plain WebSocket resume with the text the mock sent, token for token; slow
//! readers on narrow sockets get theirs whole too. A few seconds.
//!
//! Like the quick soak, it runs the `ragstream` binary next to this test, building it if
//! it is missing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ragstream_bench::client::{Check, Lag, Load, Spec, Target, Window};
use ragstream_bench::mock::{self, MockConfig};
use ragstream_bench::procs::{self, ADMIN_KEY};
use tokio::net::TcpListener;

const TOKENS: u32 = 30;

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
    let bin = std::fs::canonicalize(common::hub_bin()).expect("the hub binary");
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
