//! deploy/run-two-hubs.sh, the README's "Run several hubs", run as a newcomer would (with
//! this rig's free ports, database and redis-server): it prints its URL once ready, an SSE
//! answer streams through its nginx, and TERM stops the hubs and nginx.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::rt::time::sleep;
use serde_json::json;

use crate::rig::{free_port, Rig, ADMIN_KEY, DOC};
use crate::{ask_path, body_text, ended_with_done, open_sse};

/// The script's process: TERM when dropped (a failed test too), so that it stops what it
/// started; KILL only if it does not exit.
struct Script {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Script {
    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            read(&self.out),
            read(&self.err)
        )
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Its exit status, waiting up to `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
            if self.wait_exit(Duration::from_secs(20)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[actix_web::test]
async fn the_two_hubs_script_serves_an_answer_through_its_nginx_and_stops_on_term() {
    let rig = Rig::empty_on_own_redis(20).await;
    let (lb, a, b) = (free_port(), free_port(), free_port());
    let run_dir = rig.dir.path().join("run");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let (out, err) = (rig.dir.path().join("out"), rig.dir.path().join("err"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/run-two-hubs.sh");
    let child = Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Not the checkout: no .env of a developer's reaches the hubs.
        .current_dir(rig.dir.path())
        .env("RAGSTREAM_BIN", env!("CARGO_BIN_EXE_ragstream"))
        .env("DATABASE_URL", &rig.database_url)
        .env("REDIS_URL", rig.redis_url())
        .env("LB_PORT", lb.to_string())
        .env("HUB_A_PORT", a.to_string())
        .env("HUB_B_PORT", b.to_string())
        .env("RUN_DIR", &run_dir)
        .env("RAGSTREAM_ADMIN_KEY", ADMIN_KEY)
        .env("RAGSTREAM_OFFLINE_PACE_MS", "20")
        .env("RAGSTREAM_WORKERS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("bash runs the script");
    let mut script = Script { child, out, err };

    let ready = format!("ready: http://127.0.0.1:{lb}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !script.output().contains(&ready) {
        assert!(
            matches!(script.child.try_wait(), Ok(None)),
            "the script exited\n{}",
            script.output()
        );
        assert!(
            Instant::now() < deadline,
            "never ready\n{}",
            script.output()
        );
        sleep(Duration::from_millis(100)).await;
    }

    let url = |path: &str| format!("http://127.0.0.1:{lb}{path}");
    let (status, body) = rig
        .post(
            &url("/api/v1/documents"),
            ADMIN_KEY,
            json!({"title": "Lighthouses", "text": DOC}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, res) = open_sse(&rig, url(ask_path()), ADMIN_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let text = body_text(res).await;
    assert!(ended_with_done(&text), "{text}");
    assert!(text.contains("\"token\""), "{text}");
    // Both hubs are behind it: each answers on its own port too.
    for port in [a, b] {
        let (status, _) = rig
            .get(&format!("http://127.0.0.1:{port}/readyz"), ADMIN_KEY)
            .await;
        assert_eq!(status, 200, "hub on {port}");
    }

    script.terminate();
    let exited = script.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some(),
        "TERM did not stop it\n{}",
        script.output()
    );
    // The script waits for the three before it exits: nothing listens any more.
    for port in [lb, a, b] {
        assert!(
            !listening(port),
            "{port} still listens\n{}",
            script.output()
        );
    }
}
