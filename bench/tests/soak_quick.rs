//! The quick soak against the hub's debug build: 500 answers over SSE, plain WebSocket,
//! SignalR and JSON with faults injected, then every check of the soak (no leaked slot,
//! connection or upstream; every answer ended; stored answers final; memory back near its
//! baseline). About 15 seconds.
//!
//! It runs the `ragstream` binary that `cargo test --workspace` builds next to this test
//! (scripts/test); alone (`cargo test -p ragstream-bench`) it builds it first if missing.

mod common;

use ragstream_bench::soak::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_soak_with_faults_leaves_the_hub_as_it_found_it() {
    let report = soak::run(&Options::quick(common::hub_bin()))
        .await
        .expect("the soak runs");
    let md = report.markdown();
    println!("{md}");
    assert!(report.passed(), "a check failed:\n{md}");
    assert!(report.answers >= 500);
}
