//! What the bench's integration tests share.

use std::path::PathBuf;
use std::process::Command;

/// `target/debug/ragstream`, beside the folder this test runs from (built first when
/// missing).
pub fn hub_bin() -> PathBuf {
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
