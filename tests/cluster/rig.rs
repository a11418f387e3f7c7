//! Two hub processes (target/debug/ragstream) sharing one database and one Redis database
//! number, behind nginx running `deploy/nginx.conf`, all on free loopback ports, stopped by
//! pid when the rig is dropped.
//!
//! The database is a fresh PostgreSQL database with a unique name on `RAGSTREAM_TEST_PG`
//! (default `postgres://postgres@127.0.0.1:5432`), dropped with the rig (after its hubs).
//! `RAGSTREAM_CLUSTER_DATABASE_URL` overrides it: `sqlite` gives each rig a SQLite file of
//! its own in its temp folder (shared by its processes in WAL mode); any other value is a
//! database URL that every rig uses as it is (run one test at a time then). Each test passes
//! its own Redis database number, which the rig empties before and after (it is the test's
//! own), or runs a redis-server of its own ([`Rig::empty_on_own_redis`]).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::test_db::TestDb;

pub const ADMIN_KEY: &str = "cluster-test-admin-key-0123456789";
const REDIS: &str = "redis://127.0.0.1:6379";

/// A document long enough that an offline answer streams for several seconds.
pub const DOC: &str = "# Lighthouses\n\nA lighthouse is a tower with a bright lamp that guides ships at night. \
The keepers of a lighthouse trimmed the wicks, wound the clockwork and polished the great lenses every day. \
The Fresnel lens gathered the light of one flame into a beam seen from far out at sea. \
Lighthouses stand on rocks, headlands and harbour walls, and each flashes its own pattern so sailors can tell them apart. \
Most lighthouses today run on their own, watched from far away, and their keepers have gone.\n";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub struct Process {
    pub child: Child,
    pub port: u16,
    /// Stopped with SIGTERM when dropped (SIGKILL after 5 s): nginx's workers outlive a
    /// master killed outright.
    pub graceful: bool,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL, by pid.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.graceful {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

pub struct Hub {
    pub id: String,
    pub process: Process,
}

impl Hub {
    pub fn url(&self, path: &str) -> String {
        self.process.url(path)
    }
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    /// What the hubs spawned from now on get as DATABASE_URL.
    pub database_url: String,
    /// The fresh PostgreSQL database (none with RAGSTREAM_CLUSTER_DATABASE_URL), dropped
    /// once the hubs are stopped.
    pub db: Option<TestDb>,
    /// `redis://host:port`, without the database number.
    pub redis_server_url: String,
    pub redis_db: u8,
    /// The redis-server the rig started for itself, if any.
    pub own_redis: Option<Process>,
    /// Delay between the offline provider's tokens: how long an answer streams.
    pub pace_ms: u64,
    pub hubs: Vec<Hub>,
    pub nginx: Option<Process>,
    pub client: awc::Client,
}

impl Rig {
    /// Hubs `a` and `b` on Redis database `redis_db`, and nginx in front of them.
    pub async fn start(redis_db: u8, lease_ttl_secs: u64, pace_ms: u64) -> Rig {
        let mut rig = Rig::empty(redis_db, pace_ms).await;
        rig.start_hubs(lease_ttl_secs).await;
        rig
    }

    /// Hubs `a` and `b` on this rig's database and Redis, and nginx in front of them.
    pub async fn start_hubs(&mut self, lease_ttl_secs: u64) {
        // One after the other: the first migrates the database, and a hub starting marks
        // `streaming` rows interrupted, so both start before anything streams.
        for id in ["a", "b"] {
            let hub = self.spawn_hub(id, &self.redis_url(), lease_ttl_secs);
            self.wait_ready(&hub.process).await;
            self.hubs.push(hub);
        }
        let nginx = self.spawn_nginx();
        self.wait_ready(&nginx).await;
        self.nginx = Some(nginx);
    }

    /// No process yet: a test that starts its own.
    pub async fn empty(redis_db: u8, pace_ms: u64) -> Rig {
        flush(&format!("{REDIS}/{redis_db}")).await;
        Rig::new(REDIS.to_owned(), redis_db, None, pace_ms).await
    }

    /// No process yet, and a redis-server of the rig's own on a free port (database 0), for
    /// tests beyond the numbers of the shared Redis.
    pub async fn empty_on_own_redis(pace_ms: u64) -> Rig {
        let redis = own_redis_server().await;
        let url = format!("redis://127.0.0.1:{}", redis.port);
        Rig::new(url, 0, Some(redis), pace_ms).await
    }

    async fn new(
        redis_server_url: String,
        redis_db: u8,
        own_redis: Option<Process>,
        pace_ms: u64,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, db) = match std::env::var("RAGSTREAM_CLUSTER_DATABASE_URL") {
            Ok(url) if url == "sqlite" => (
                format!("sqlite://{}/cluster.db", dir.path().display()),
                None,
            ),
            Ok(url) => (url, None),
            Err(_) => {
                let db = TestDb::postgres().await;
                (db.url.clone(), Some(db))
            }
        };
        Rig {
            dir,
            database_url,
            db,
            redis_server_url,
            redis_db,
            own_redis,
            pace_ms,
            hubs: Vec::new(),
            nginx: None,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish(),
        }
    }

    pub fn redis_url(&self) -> String {
        format!("{}/{}", self.redis_server_url, self.redis_db)
    }

    pub fn hub(&self, id: &str) -> &Hub {
        self.hubs.iter().find(|h| h.id == id).expect("hub")
    }

    pub fn hub_mut(&mut self, id: &str) -> &mut Hub {
        self.hubs.iter_mut().find(|h| h.id == id).expect("hub")
    }

    /// Through nginx; straight to the first hub when the rig has no nginx.
    pub fn lb(&self, path: &str) -> String {
        match &self.nginx {
            Some(nginx) => nginx.url(path),
            None => self.hubs[0].url(path),
        }
    }

    /// A hub process named `id` on `redis_url`, not yet waited for.
    pub fn spawn_hub(&self, id: &str, redis_url: &str, lease_ttl_secs: u64) -> Hub {
        let port = free_port();
        let log =
            std::fs::File::create(self.dir.path().join(format!("hub-{id}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ragstream"))
            .env_clear()
            .current_dir(self.dir.path())
            .env("RAGSTREAM_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &self.database_url)
            .env("RAGSTREAM_ADMIN_KEY", ADMIN_KEY)
            .env("REDIS_URL", redis_url)
            .env("RAGSTREAM_HUB_ID", id)
            .env("RAGSTREAM_LEASE_TTL_SECS", lease_ttl_secs.to_string())
            .env("RAGSTREAM_OFFLINE_PACE_MS", self.pace_ms.to_string())
            .env("RAGSTREAM_WORKERS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the hub starts");
        Hub {
            id: id.to_owned(),
            process: Process {
                child,
                port,
                graceful: false,
            },
        }
    }

    /// nginx with `deploy/nginx.conf`, its ports rewritten to this rig's.
    fn spawn_nginx(&self) -> Process {
        let port = free_port();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf");
        let conf = std::fs::read_to_string(shipped)
            .expect("deploy/nginx.conf")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
            .replace(
                "127.0.0.1:8081",
                &format!("127.0.0.1:{}", self.hub("a").process.port),
            )
            .replace(
                "127.0.0.1:8082",
                &format!("127.0.0.1:{}", self.hub("b").process.port),
            );
        let prefix = self.dir.path().join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx logs");
        std::fs::create_dir_all(prefix.join("temp")).expect("nginx temp");
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts (apt-get install nginx)");
        Process {
            child,
            port,
            graceful: true,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, process: &Process) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = self.client.get(process.url("/readyz")).send().await {
                if res.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready\n{}",
                process.port,
                self.logs()
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hubs' logs, to say why one failed.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("hub-") && name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                out.push_str(&format!("--- {name} ---\n{text}"));
            }
        }
        out
    }

    pub async fn post(&self, url: &str, key: &str, body: Value) -> (u16, Value) {
        let mut res = self
            .client
            .post(url)
            .insert_header(("X-API-Key", key))
            .send_json(&body)
            .await
            .expect("request sent");
        let body = res.body().limit(1 << 20).await.expect("body");
        (
            res.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, url: &str, key: &str) -> (u16, Value) {
        let mut res = self
            .client
            .get(url)
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("request sent");
        let body = res.body().limit(1 << 20).await.expect("body");
        (
            res.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    pub async fn delete(&self, url: &str, key: &str) -> u16 {
        self.client
            .delete(url)
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("request sent")
            .status()
            .as_u16()
    }

    /// A new user key in the admin's tenant: (key id, key).
    pub async fn new_key(&self, name: &str) -> (String, String) {
        let (status, key) = self
            .post(
                &self.lb("/api/v1/admin/keys"),
                ADMIN_KEY,
                json!({"name": name}),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        (
            key["id"].as_str().expect("id").into(),
            key["key"].as_str().expect("key").into(),
        )
    }

    pub async fn add_document(&self) {
        let (status, body) = self
            .post(
                &self.lb("/api/v1/documents"),
                ADMIN_KEY,
                json!({"title": "Lighthouses", "text": DOC}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// The hub's own count of its running answers.
    pub async fn active_streams(&self, hub: &str) -> u64 {
        let (status, stats) = self
            .get(&self.hub(hub).url("/api/v1/admin/stats"), ADMIN_KEY)
            .await;
        assert_eq!(status, 200, "{stats}");
        stats["activeStreams"].as_u64().expect("activeStreams")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.nginx.take();
        self.hubs.clear();
        // Only now, with no hub left to hold a connection to it.
        self.db.take();
        if self.own_redis.take().is_some() {
            // Gone with its process: nothing to empty.
            return;
        }
        let url = self.redis_url();
        // Dropped outside any runtime's reach of this thread's: a blocking client.
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(url) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                            let _: Result<(), _> = redis::cmd("FLUSHDB").query_async(&mut c).await;
                        }
                    });
                }
            }
        })
        .join();
    }
}

/// Empties the test's own Redis database number.
pub async fn flush_db(db: u8) {
    flush(&format!("{REDIS}/{db}")).await
}

/// Empties the Redis database at `url`.
async fn flush(url: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379");
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut c)
        .await
        .expect("FLUSHDB");
}

/// A redis-server on `port` (loopback, nothing saved), not yet waited for.
pub fn redis_server(port: u16) -> Process {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    Process {
        child,
        port,
        graceful: false,
    }
}

/// A redis-server of the caller's own on a free port, once it answers PING.
pub async fn own_redis_server() -> Process {
    let redis = redis_server(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if ping(&url).await {
            return redis;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server at {url} never answered"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
    pong.is_ok()
}
