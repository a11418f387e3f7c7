//! Starting and stopping the processes under test: the mock and the relay (this binary's
//! own subcommands) and the hub (its release binary), each a process of its own so that
//! `/proc` tells their CPU and memory apart.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::Conn;

/// The bootstrap admin key the bench gives the hub; its clients use it too.
pub const ADMIN_KEY: &str = "rsk_bench_admin_key_0123456789abcdef";

pub struct Proc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended (it is reaped then).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    /// SIGTERM first (a profiler wrapping the hub writes its output then), SIGKILL after
    /// ten seconds.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ragstream-bench <args>` and reads the address from its first line of output
/// (`listening <addr>`).
pub fn spawn_self(name: &'static str, args: &[String]) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the {name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("the {name} did not start: {line:?}"))?;
    Ok(Proc { name, addr, child })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Where the hub's release binary is: next to this binary (same target directory).
pub fn default_hub_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ragstream")))
        .unwrap_or_else(|| PathBuf::from("target/release/ragstream"))
}

/// Builds the hub in release mode (`cargo build --release -p ragstream`).
pub fn build_hub() -> Result<(), String> {
    eprintln!("building the hub: cargo build --release -p ragstream");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-p", "ragstream"]);
    // `cargo run` gives this process the bench package's own variables; passed on, they
    // would make build scripts that track them (ring's tracks CARGO_MANIFEST_DIR) rebuild
    // the hub's dependencies every time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release -p ragstream failed".into());
    }
    Ok(())
}

/// Starts the hub on a free port with a fresh SQLite database in `dir`, the OpenAI
/// provider pointed at the mock, and the stream limits raised. Waits until `/healthz`
/// answers.
pub async fn start_hub(
    bin: &Path,
    dir: &Path,
    mock: SocketAddr,
    n: usize,
    extra_env: &[(String, String)],
) -> Result<Proc, String> {
    let db = format!("sqlite://{}", dir.join(format!("hub-{n}.db")).display());
    start_hub_on(
        bin,
        dir,
        mock,
        &format!("hub-{n}"),
        &db,
        "/healthz",
        extra_env,
    )
    .await
}

/// As [`start_hub`], on the database at `database_url` (which must exist; the hub migrates
/// it), its log `dir/<name>.log`; waits until `ready_path` answers 200 (`/readyz` waits for
/// the database and Redis as well). `extra_env` comes last and overrides the rest.
pub async fn start_hub_on(
    bin: &Path,
    dir: &Path,
    mock: SocketAddr,
    name: &str,
    database_url: &str,
    ready_path: &str,
    extra_env: &[(String, String)],
) -> Result<Proc, String> {
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    // For profiling: RAGSTREAM_BENCH_HUB_WRAPPER="valgrind --tool=callgrind" runs the hub
    // under that command.
    let wrapper: Vec<String> = std::env::var("RAGSTREAM_BENCH_HUB_WRAPPER")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.current_dir(dir)
        .env_remove("RAGSTREAM_PROVIDERS")
        .env_remove("REDIS_URL")
        .env_remove("RAGSTREAM_HUB_ID")
        .env("RAGSTREAM_ADDR", addr.to_string())
        .env("DATABASE_URL", database_url)
        .env("RAGSTREAM_ADMIN_KEY", ADMIN_KEY)
        .env("RAGSTREAM_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", format!("http://{mock}/v1"))
        .env("OPENAI_API_KEY", "bench-upstream-key")
        .env("OPENAI_MODEL", "mock")
        .env("RAGSTREAM_MAX_STREAMS_PER_USER", "100000")
        .env("RAGSTREAM_MAX_STREAMS_GLOBAL", "100000")
        // Every client of a run uses the one admin key.
        .env("RAGSTREAM_MAX_CONNECTIONS_PER_USER", "100000")
        // Idle benchmark sockets send nothing for a while; the default 30 s would close
        // them mid-measurement.
        .env("RAGSTREAM_CLIENT_TIMEOUT_SECS", "600")
        .env("RAGSTREAM_WORKERS", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the hub {}: {e}", bin.display()))?;
    let mut proc = Proc {
        name: "hub",
        addr,
        child,
    };
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok((200, _)) = get(addr, ready_path, None).await {
            return Ok(proc);
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!(
                "the hub exited ({status}); see {}",
                log_path.display()
            ));
        }
    }
    Err(format!(
        "the hub did not come up; see {}",
        log_path.display()
    ))
}

/// Wraps a process this run started (nginx, redis-server), stopped like the others when
/// dropped.
pub fn adopt(name: &'static str, addr: SocketAddr, child: Child) -> Proc {
    Proc { name, addr, child }
}

/// A free loopback port (nothing holds it once this returns).
pub fn free_loopback_port() -> Result<u16, String> {
    free_port()
}

/// One GET on a fresh connection.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let mut c = Conn::connect(addr, None).await.map_err(|e| e.to_string())?;
    let key = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{key}connection: close\r\n\r\n");
    c.request(req.as_bytes()).await
}

/// One POST of a JSON body on `c` (keep-alive).
pub async fn post_json(
    c: &mut Conn,
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let key = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{key}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    c.request(&req).await
}
