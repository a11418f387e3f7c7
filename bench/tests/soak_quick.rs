//! The quick soak against the hub's debug build: 500 answers over SSE, plain WebSocket,
//! SignalR and JSON with faults injected, then every check of the soak (no leaked slot,
//! connection or upstream; every answer ended; stored answers final; memory back near its
//! baseline). About 15 seconds.
//!
//! It runs the `ragstream` binary that `cargo test --workspace` builds next to this test
//! (scripts/test); alone (`cargo test -p ragstream-bench`) it builds it first if missing.

use std::path::PathBuf;
use std::process::Command;

use ragstream_bench::soak::{self, Options};

/// `target/debug/ragstream`, beside the folder this test runs from.
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
async fn the_quick_soak_with_faults_leaves_the_hub_as_it_found_it() {
    let report = soak::run(&Options::quick(hub_bin()))
        .await
        .expect("the soak runs");
    let md = report.markdown();
    println!("{md}");
    assert!(report.passed(), "a check failed:\n{md}");
    assert!(report.answers >= 500);
}
