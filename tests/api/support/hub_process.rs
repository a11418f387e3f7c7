//! The real `ragstream` binary as a child process, for what only a process shows: signals,
//! its exit status, and its whole log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use crate::helpers::ADMIN_KEY;

pub struct HubProcess {
    child: Child,
    pub base: String,
    pub ws_base: String,
    pub admin_key: String,
    /// `sqlite://…`, readable after the process has exited.
    pub database_url: String,
    /// Everything the process wrote to stderr (its log) and stdout.
    output: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl HubProcess {
    /// Starts the binary in an empty folder (so no `.env` is read) with its own SQLite
    /// database, the test admin key and `env`, and waits until it listens.
    pub fn start(env: &[(&str, &str)]) -> HubProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = format!("sqlite://{}/hub.db", dir.path().display());
        let mut command = Command::new(env!("CARGO_BIN_EXE_ragstream"));
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RAGSTREAM_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &database_url)
            .env("RAGSTREAM_ADMIN_KEY", ADMIN_KEY)
            .env("RAGSTREAM_WORKERS", "2")
            .env(
                "RAGSTREAM_STATIC_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/static"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the hub binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect(stdout, output.clone(), port_tx.clone());
        collect(stderr, output.clone(), port_tx);
        let port: u16 = match port_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the hub did not say it listens; its output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        HubProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            ws_base: format!("ws://127.0.0.1:{port}"),
            admin_key: ADMIN_KEY.to_owned(),
            database_url,
            output,
            _dir: dir,
        }
    }

    /// The process's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a real signal (`TERM`, `INT`) with the shell's own `kill` (a builtin, so no
    /// package is needed for it).
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args(["-c", "kill -s \"$1\" \"$2\"", "sh", name])
            .arg(self.child.id().to_string())
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit; panics after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hub did not exit within {limit:?}; its output:\n{}",
                self.output()
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's output so far (all of it once it has exited and its pipes closed).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The output once `seen` says it holds what is awaited (stdout and stderr are read by
    /// two threads, so a line printed before the port may arrive after it); panics after
    /// `limit`.
    pub async fn output_when(&self, seen: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let output = self.output();
            if seen(&output) {
                return output;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not in the hub's output within {limit:?}:\n{output}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl HubProcess {
    /// The whole output, once both pipes have closed (after the exit).
    pub async fn final_output(&self) -> String {
        // The reader threads hold the other handles until their pipe closes.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.output) > 1 && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        self.output()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies a pipe into `output` line by line (a thread each) and reports the port from the
/// "listening on" line.
fn collect(
    pipe: impl std::io::Read + Send + 'static,
    output: Arc<Mutex<String>>,
    port: mpsc::Sender<u16>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(p) = digits.parse() {
                    let _ = port.send(p);
                }
            }
            let mut out = output.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}
