//! Cluster mode (issue 14): what Redis, nginx and a second hub cost.
//!
//! Four configurations, each on a fresh PostgreSQL database (and, with Redis, a fresh
//! redis-server of the run's own), all over SSE at the run's concurrency levels with the
//! throughput group's answers:
//!
//! - `hub (PostgreSQL)`: one hub, no Redis, clients straight to it: admission and the answer
//!   log in process (the baseline);
//! - `hub + Redis`: one hub with `REDIS_URL`, clients straight to it;
//! - `nginx → 1 hub`: nginx (`deploy/nginx.conf` as shipped, one `server` line) in front of
//!   one Redis hub;
//! - `nginx → 2 hubs`: the same in front of two Redis hubs (round robin).
//!
//! CPU is split by process group from `/proc`: the hub(s), redis-server, nginx (master and
//! workers) and PostgreSQL (the processes named `postgres` less the backends of other
//! databases: the server may be shared with other people's tests). On the two single-hub configurations a probe asks short
//! answers one after another (one token, no upstream delay): their time to first token, with
//! Redis against without, is what Redis adds at an answer's start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::{sleep, sleep_until, Instant};

use super::{pct_ms, Ctx, Pct};
use crate::client::{Load, Spec, Stats, Target, Window};
use crate::procs::{self, Proc, ADMIN_KEY};
use crate::procstat;

/// The nginx config the deployment ships, as it was when this binary was built.
const SHIPPED_NGINX_CONF: &str = include_str!("../../../deploy/nginx.conf");
const PG_HOST: &str = "127.0.0.1";
const PG_PORT: u16 = 5432;
const PG_USER: &str = "postgres";

/// The group's figures (in the report's `cluster` field).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterReport {
    /// Why the group did not run (a tool or PostgreSQL missing).
    pub skipped: Option<String>,
    pub runs: Vec<ClusterRun>,
    pub probes: Vec<AdmissionProbe>,
    /// The `hub + Redis` probe's TTFT minus the baseline's (p50 − p50, p99 − p99).
    pub added_by_redis_ms: Option<Pct>,
    /// The same for the mean.
    pub added_by_redis_mean_ms: Option<f64>,
}

/// CPU seconds (or µs per token) of each process group.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CpuSplit {
    pub hubs: f64,
    pub redis: f64,
    pub nginx: f64,
    pub postgres: f64,
    /// The four above.
    pub total: f64,
}

impl CpuSplit {
    fn per_token(&self, tokens: u64) -> CpuSplit {
        let f = |s: f64| {
            if tokens == 0 {
                f64::NAN
            } else {
                s / tokens as f64 * 1e6
            }
        };
        CpuSplit {
            hubs: f(self.hubs),
            redis: f(self.redis),
            nginx: f(self.nginx),
            postgres: f(self.postgres),
            total: f(self.total),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterRun {
    pub config: &'static str,
    pub hubs: usize,
    pub redis: bool,
    pub nginx: bool,
    pub streams: usize,
    pub seconds: f64,
    pub answers: u64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    /// Frames that carried tokens ÷ tokens, as the clients received them: below 1 when the
    /// hub merged tokens that waited (it is behind), which makes every frame's cost, in the
    /// hub, nginx and the clients, a smaller share of a token's.
    pub frames_per_token: f64,
    /// tokens/s ÷ the baseline's (`hub (PostgreSQL)`) at the same concurrency.
    pub vs_baseline: Option<f64>,
    pub ttft_ms: Pct,
    pub itl_ms: Pct,
    pub peak_streams: usize,
    pub errors: BTreeMap<String, u64>,
    pub cpu_s: CpuSplit,
    pub cpu_us_per_token: CpuSplit,
    /// Each hub's own CPU seconds (how nginx spread the load).
    pub hub_cpu_s: Vec<f64>,
    pub mock_cpu_s: f64,
    pub loadgen_cpu_s: f64,
    /// CPU of everything else on the machine in the window.
    pub other_cpu_s: f64,
}

/// Short answers one after another: what a client waits for at an answer's start.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionProbe {
    pub config: &'static str,
    pub clients: usize,
    pub answers: u64,
    pub ttft_ms: Pct,
    pub ttft_mean_ms: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    label: &'static str,
    redis: bool,
    hubs: usize,
    nginx: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        label: "hub (PostgreSQL)",
        redis: false,
        hubs: 1,
        nginx: false,
    },
    Config {
        label: "hub + Redis",
        redis: true,
        hubs: 1,
        nginx: false,
    },
    Config {
        label: "nginx → 1 hub",
        redis: true,
        hubs: 1,
        nginx: true,
    },
    Config {
        label: "nginx → 2 hubs",
        redis: true,
        hubs: 2,
        nginx: true,
    },
];

/// The shipped nginx config with its ports rewritten: nginx on `listen`, the `upstream`
/// block's servers on `hubs` (one or two; with one, the second `server` line goes).
pub fn nginx_conf(shipped: &str, listen: u16, hubs: &[u16]) -> Result<String, String> {
    let (a, b) = match hubs {
        [a] => (*a, None),
        [a, b] => (*a, Some(*b)),
        _ => return Err(format!("nginx in front of {} hubs", hubs.len())),
    };
    for needle in [
        "listen 127.0.0.1:8080;",
        "server 127.0.0.1:8081;",
        "server 127.0.0.1:8082;",
    ] {
        if !shipped.contains(needle) {
            return Err(format!("deploy/nginx.conf has no `{needle}`"));
        }
    }
    let mut out = String::with_capacity(shipped.len());
    for line in shipped.split_inclusive('\n') {
        if b.is_none() && line.trim() == "server 127.0.0.1:8082;" {
            continue;
        }
        out.push_str(line);
    }
    let mut out = out
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{a}"));
    if let Some(b) = b {
        out = out.replace("127.0.0.1:8082", &format!("127.0.0.1:{b}"));
    }
    Ok(out)
}

/// Where a program is on `PATH` (nginx is often in /usr/sbin, which is looked in too).
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn psql(psql_bin: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new(psql_bin)
        .args([
            "-h",
            PG_HOST,
            "-p",
            &PG_PORT.to_string(),
            "-U",
            PG_USER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The tools the group needs, or why it cannot run.
struct Tools {
    nginx: PathBuf,
    redis: PathBuf,
    psql: PathBuf,
}

fn tools() -> Result<Tools, String> {
    let find = |p: &str| which(p).ok_or_else(|| format!("{p} not found"));
    let tools = Tools {
        nginx: find("nginx")?,
        redis: find("redis-server")?,
        psql: find("psql")?,
    };
    psql(&tools.psql, "SELECT 1")
        .map_err(|e| format!("PostgreSQL at {PG_HOST}:{PG_PORT} does not answer ({e})"))?;
    Ok(tools)
}

/// A database of the run's own, dropped (`WITH (FORCE)`) with this value.
struct Database {
    psql: PathBuf,
    name: String,
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

impl Database {
    fn create(psql_bin: &Path) -> Result<Database, String> {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("ragstream_bench_{}_{n}", std::process::id());
        psql(psql_bin, &format!("CREATE DATABASE {name}"))?;
        Ok(Database {
            psql: psql_bin.to_owned(),
            name,
        })
    }

    fn url(&self) -> String {
        format!("postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.psql,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("cluster: could not drop database {}: {e}", self.name);
        }
    }
}

/// The processes of one configuration. Dropped in this order: nginx, the hubs, Redis (each
/// SIGTERM, then SIGKILL after 10 s), then the database.
struct Deployment {
    config: Config,
    nginx: Option<Proc>,
    hubs: Vec<Proc>,
    redis: Option<Proc>,
    db: Option<Database>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.nginx.take();
        self.hubs.clear();
        self.redis.take();
        self.db.take();
    }
}

impl Deployment {
    /// Where the clients connect: nginx, or the one hub.
    fn front(&self) -> SocketAddr {
        match &self.nginx {
            Some(n) => n.addr,
            None => self.hubs[0].addr,
        }
    }

    async fn start(ctx: &Ctx, tools: &Tools, config: Config) -> Result<Deployment, String> {
        let mut d = Deployment {
            config,
            nginx: None,
            hubs: Vec::new(),
            redis: None,
            db: None,
        };
        let db = Database::create(&tools.psql)?;
        let database_url = db.url();
        d.db = Some(db);
        let slug: String = config
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = ctx.dir.join(format!("cluster-{}", slug.trim_matches('-')));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut env = vec![(
            "RAGSTREAM_RESUME_GRACE_SECS".to_owned(),
            ctx.settings.grace_s.to_string(),
        )];
        if config.redis {
            let redis = start_redis(&tools.redis).await?;
            env.push((
                "REDIS_URL".to_owned(),
                format!("redis://127.0.0.1:{}/0", redis.addr.port()),
            ));
            d.redis = Some(redis);
        }
        // One after the other: the first migrates the database.
        for id in ["a", "b"].into_iter().take(config.hubs) {
            let mut env = env.clone();
            if config.redis {
                env.push(("RAGSTREAM_HUB_ID".to_owned(), id.to_owned()));
            }
            let hub = procs::start_hub_on(
                &ctx.hub_bin,
                &dir,
                ctx.mock.addr,
                &format!("hub-{id}"),
                &database_url,
                "/readyz",
                &env,
            )
            .await?;
            d.hubs.push(hub);
        }
        if config.nginx {
            let ports: Vec<u16> = d.hubs.iter().map(|h| h.addr.port()).collect();
            d.nginx = Some(start_nginx(&tools.nginx, &dir.join("nginx"), &ports).await?);
        }
        Ok(d)
    }

    fn hub_pids(&self) -> Vec<u32> {
        self.hubs.iter().map(Proc::pid).collect()
    }

    /// Waits (up to `limit`) until no hub holds a stream.
    async fn settle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        sleep(Duration::from_millis(300)).await;
        while Instant::now() < until {
            let mut busy = false;
            for hub in &self.hubs {
                if let Ok((200, body)) =
                    procs::get(hub.addr, "/api/v1/admin/stats", Some(ADMIN_KEY)).await
                {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    if v.get("activeStreams")
                        .and_then(|n| n.as_u64())
                        .is_some_and(|n| n > 0)
                    {
                        busy = true;
                    }
                }
            }
            if !busy {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until `addr` answers `path` with 200, while `proc` lives.
async fn wait_ready(proc: &mut Proc, path: &str, what: &str) -> Result<(), String> {
    for _ in 0..300 {
        if let Ok((200, _)) = procs::get(proc.addr, path, None).await {
            return Ok(());
        }
        if proc.exited() {
            return Err(format!("{what} exited at start"));
        }
        sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what} did not come up in 15 s"))
}

async fn start_redis(bin: &Path) -> Result<Proc, String> {
    let port = procs::free_loopback_port()?;
    let child = Command::new(bin)
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
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let mut redis = procs::adopt("redis-server", ([127, 0, 0, 1], port).into(), child);
    for _ in 0..300 {
        if redis_ping(redis.addr).await {
            return Ok(redis);
        }
        if redis.exited() {
            return Err(format!("redis-server on port {port} exited at start"));
        }
        sleep(Duration::from_millis(50)).await;
    }
    Err(format!("redis-server on port {port} never answered PING"))
}

async fn redis_ping(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}

async fn start_nginx(bin: &Path, prefix: &Path, hubs: &[u16]) -> Result<Proc, String> {
    let port = procs::free_loopback_port()?;
    let conf = nginx_conf(SHIPPED_NGINX_CONF, port, hubs)?;
    for sub in ["logs", "temp"] {
        std::fs::create_dir_all(prefix.join(sub)).map_err(|e| e.to_string())?;
    }
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(prefix.join("logs/stderr.log")).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let mut nginx = procs::adopt("nginx", ([127, 0, 0, 1], port).into(), child);
    wait_ready(&mut nginx, "/readyz", "nginx")
        .await
        .map_err(|e| format!("{e}; see {}", prefix.join("logs").display()))?;
    Ok(nginx)
}

/// CPU seconds so far of each process group (per pid where the set of pids can change).
struct Snapshot {
    hubs: Vec<f64>,
    redis: f64,
    nginx: BTreeMap<u32, f64>,
    postgres: BTreeMap<u32, f64>,
    mock: f64,
    me: f64,
    machine: f64,
}

fn cpu_of(pids: impl IntoIterator<Item = u32>) -> BTreeMap<u32, f64> {
    pids.into_iter()
        .map(|p| (p, procstat::cpu_seconds(p)))
        .collect()
}

/// CPU between two snapshots of a set of processes: a process that started in between
/// counts from zero; one that ended in between is lost (PostgreSQL's backends live as long
/// as the hubs' pools).
fn delta(a: &BTreeMap<u32, f64>, b: &BTreeMap<u32, f64>) -> f64 {
    // A fold from 0.0: an empty f64 sum is -0.0.
    b.iter()
        .map(|(pid, y)| (y - a.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .fold(0.0, |x, y| x + y)
}

fn snapshot(ctx: &Ctx, d: &Deployment) -> Snapshot {
    let nginx = d
        .nginx
        .as_ref()
        .map(|n| {
            let mut pids = procstat::children(n.pid());
            pids.push(n.pid());
            cpu_of(pids)
        })
        .unwrap_or_default();
    Snapshot {
        hubs: d
            .hub_pids()
            .into_iter()
            .map(procstat::cpu_seconds)
            .collect(),
        redis: d
            .redis
            .as_ref()
            .map_or(0.0, |r| procstat::cpu_seconds(r.pid())),
        nginx,
        postgres: cpu_of(procstat::postgres_pids_for(
            d.db.as_ref().map_or("", |db| db.name.as_str()),
        )),
        mock: procstat::cpu_seconds(ctx.mock.pid()),
        me: procstat::cpu_seconds(std::process::id()),
        machine: procstat::machine_busy_seconds(),
    }
}

async fn throughput(
    ctx: &Ctx,
    d: &Deployment,
    streams: usize,
    questions: &Arc<Vec<String>>,
) -> Result<ClusterRun, String> {
    let s = &ctx.settings;
    ctx.mock_config(s.tokens_per_answer, s.pace_ms, s.ttft_ms)
        .await?;
    let answer =
        Duration::from_secs_f64((s.ttft_ms + s.pace_ms * f64::from(s.tokens_per_answer)) / 1000.0);
    let t0 = Instant::now();
    let window = Window {
        start: t0 + Duration::from_secs_f64(s.warmup_s),
        end: t0 + Duration::from_secs_f64(s.warmup_s + s.measure_s),
    };
    let spec = Spec::new(Target::HubSse, d.front(), ADMIN_KEY, questions.clone());
    let load = Load::start(spec, streams, answer, window);
    sleep_until(window.start).await;
    let a = snapshot(ctx, d);
    sleep_until(window.end).await;
    let b = snapshot(ctx, d);
    let peak = load.gauge.peak.load(Ordering::Relaxed);
    let mut stats: Stats = load.stop().await;
    d.settle(Duration::from_secs(10)).await;
    let hub_cpu_s: Vec<f64> = a.hubs.iter().zip(&b.hubs).map(|(x, y)| y - x).collect();
    let hubs: f64 = hub_cpu_s.iter().sum();
    let redis = b.redis - a.redis;
    let nginx = delta(&a.nginx, &b.nginx);
    let postgres = delta(&a.postgres, &b.postgres);
    let cpu = CpuSplit {
        hubs,
        redis,
        nginx,
        postgres,
        total: hubs + redis + nginx + postgres,
    };
    let mock = b.mock - a.mock;
    let me = b.me - a.me;
    Ok(ClusterRun {
        config: d.config.label,
        hubs: d.config.hubs,
        redis: d.config.redis,
        nginx: d.config.nginx,
        streams,
        seconds: s.measure_s,
        answers: stats.answers,
        tokens: stats.tokens,
        tokens_per_s: stats.tokens as f64 / s.measure_s,
        frames_per_token: stats.frames as f64 / stats.tokens.max(1) as f64,
        vs_baseline: None,
        ttft_ms: pct_ms(&mut stats.ttft_us),
        itl_ms: pct_ms(&mut stats.itl_us),
        peak_streams: peak,
        errors: stats.errors,
        cpu_s: cpu,
        cpu_us_per_token: cpu.per_token(stats.tokens),
        hub_cpu_s,
        mock_cpu_s: mock,
        loadgen_cpu_s: me,
        other_cpu_s: ((b.machine - a.machine) - cpu.total - mock - me).max(0.0),
    })
}

/// `clients` clients each asking `answers` one-token answers one after another (after a
/// few unmeasured ones): time to first token as a client sees it.
async fn probe(
    ctx: &Ctx,
    d: &Deployment,
    questions: &Arc<Vec<String>>,
) -> Result<AdmissionProbe, String> {
    let clients = ctx.settings.cluster_probe_clients.max(1);
    let answers = ctx.settings.cluster_probe_answers.max(1);
    ctx.mock_config(1, 0.0, 0.0).await?;
    let mut spec = Spec::new(Target::HubSse, d.front(), ADMIN_KEY, questions.clone());
    // Warm-up: connections, caches, the hub's pools.
    spec.answers = Some(20);
    let (_, late) = Load::start(spec.clone(), clients, Duration::ZERO, Window::always())
        .join_within(Duration::from_secs(60))
        .await;
    if late {
        return Err(format!(
            "{}: the probe's warm-up took over 60 s",
            d.config.label
        ));
    }
    spec.answers = Some(u32::try_from(answers.div_ceil(clients)).unwrap_or(u32::MAX));
    let (mut stats, late) = Load::start(spec, clients, Duration::ZERO, Window::always())
        .join_within(Duration::from_secs(300))
        .await;
    if late {
        return Err(format!("{}: the probe took over 300 s", d.config.label));
    }
    d.settle(Duration::from_secs(10)).await;
    let mean = if stats.ttft_us.is_empty() {
        f64::NAN
    } else {
        stats.ttft_us.iter().map(|&u| f64::from(u)).sum::<f64>()
            / stats.ttft_us.len() as f64
            / 1000.0
    };
    Ok(AdmissionProbe {
        config: d.config.label,
        clients,
        answers: stats.answers_all,
        ttft_ms: pct_ms(&mut stats.ttft_us),
        ttft_mean_ms: mean,
        errors: stats.errors,
    })
}

/// Runs the group; a missing tool or database skips it (with a line on stderr and the
/// reason in the report), it is not an error.
pub async fn cluster(ctx: &Ctx, questions: &Arc<Vec<String>>) -> Result<ClusterReport, String> {
    let tools = match tools() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("cluster: skipped: {why}");
            return Ok(ClusterReport {
                skipped: Some(why),
                ..ClusterReport::default()
            });
        }
    };
    let mut out = ClusterReport::default();
    for config in CONFIGS {
        eprintln!("cluster: starting {}", config.label);
        let d = Deployment::start(ctx, &tools, config).await?;
        if !config.nginx {
            let p = probe(ctx, &d, questions).await?;
            eprintln!(
                "cluster probe {:<18} {} answers ttft p50 {:.2} p99 {:.2} ms (mean {:.2}) errors {:?}",
                p.config, p.answers, p.ttft_ms.p50, p.ttft_ms.p99, p.ttft_mean_ms, p.errors
            );
            out.probes.push(p);
        }
        for &streams in &ctx.settings.levels {
            let r = throughput(ctx, &d, streams, questions).await?;
            eprintln!("{}", one_line(&r));
            out.runs.push(r);
        }
        drop(d);
    }
    out.finish();
    Ok(out)
}

impl ClusterReport {
    /// Fills in the ratios to the baseline and what Redis adds at admission.
    pub fn finish(&mut self) {
        let base: Vec<(usize, f64)> = self
            .runs
            .iter()
            .filter(|r| r.config == CONFIGS[0].label)
            .map(|r| (r.streams, r.tokens_per_s))
            .collect();
        for r in &mut self.runs {
            r.vs_baseline = base
                .iter()
                .find(|(s, _)| *s == r.streams)
                .filter(|(_, t)| *t > 0.0)
                .map(|(_, t)| r.tokens_per_s / t);
        }
        let probe = |label: &str| self.probes.iter().find(|p| p.config == label);
        self.added_by_redis_ms = match (probe(CONFIGS[0].label), probe(CONFIGS[1].label)) {
            (Some(a), Some(b)) => Some(Pct {
                p50: b.ttft_ms.p50 - a.ttft_ms.p50,
                p99: b.ttft_ms.p99 - a.ttft_ms.p99,
            }),
            _ => None,
        };
        self.added_by_redis_mean_ms = match (probe(CONFIGS[0].label), probe(CONFIGS[1].label)) {
            (Some(a), Some(b)) => Some(b.ttft_mean_ms - a.ttft_mean_ms),
            _ => None,
        };
    }

    fn run(&self, config: &str, streams: usize) -> Option<&ClusterRun> {
        self.runs
            .iter()
            .find(|r| r.config == config && r.streams == streams)
    }
}

fn errors_text(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        return "0".into();
    }
    e.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_line(r: &ClusterRun) -> String {
    let c = &r.cpu_us_per_token;
    format!(
        "cluster {:<17} {:>5} streams {:>8.0} tok/s {:.2} frames/token ttft p50 {:>6.1} p99 {:>6.1} ms cpu/token hubs {:.1} redis {:.1} nginx {:.1} postgres {:.1} total {:.1} µs errors {}",
        r.config,
        r.streams,
        r.tokens_per_s,
        r.frames_per_token,
        r.ttft_ms.p50,
        r.ttft_ms.p99,
        c.hubs,
        c.redis,
        c.nginx,
        c.postgres,
        c.total,
        errors_text(&r.errors)
    )
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

/// The report's "Cluster mode" section.
pub fn markdown(c: &ClusterReport, cores: usize) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "## Cluster mode\n");
    if let Some(why) = &c.skipped {
        let _ = writeln!(o, "Not run: {why}.\n");
        return o;
    }
    let _ = writeln!(
        o,
        "SSE answers (the throughput group's) through four deployments, each on a fresh PostgreSQL database and, with Redis, a redis-server of the run's own: `hub (PostgreSQL)`, one hub without Redis (admission and answer log in process: the baseline); `hub + Redis`, one hub with `REDIS_URL` (admission by a Lua script, answers mirrored to Redis Streams); `nginx → 1 hub` and `nginx → 2 hubs`, `deploy/nginx.conf` as shipped (`worker_processes 1`, round robin) in front of Redis hubs. CPU per token is split by process group from /proc: the hub(s), redis-server, nginx (master and worker) and PostgreSQL (the server's own processes and the backends of the deployment's database, not other databases' backends; the server's WAL writer and checkpointer count whatever else writes meanwhile); `total` is their sum; the mock and the load generator are not in it. `other load` is the CPU of everything else on the machine, as a share of it.\n"
    );
    if !c.runs.is_empty() {
        let _ = writeln!(
            o,
            "| configuration | streams | tokens/s | ×baseline | TTFT p50 / p99 ms | inter-token p99 ms | frames per token | µs CPU per token: hub(s) | redis-server | nginx | postgres | total | errors | other load |"
        );
        let _ = writeln!(
            o,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for r in &c.runs {
            let u = &r.cpu_us_per_token;
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {} | {:.1} / {:.1} | {:.1} | {:.2} | {} | {} | {} | {} | {} | {} | {:.0} % |",
                r.config,
                r.streams,
                r.tokens_per_s,
                r.vs_baseline.map_or("–".into(), |v| num(v, 2)),
                r.ttft_ms.p50,
                r.ttft_ms.p99,
                r.itl_ms.p99,
                r.frames_per_token,
                num(u.hubs, 1),
                if r.redis { num(u.redis, 1) } else { "–".into() },
                if r.nginx { num(u.nginx, 1) } else { "–".into() },
                num(u.postgres, 1),
                num(u.total, 1),
                errors_text(&r.errors),
                r.other_cpu_s / r.seconds.max(1e-9) / cores.max(1) as f64 * 100.0
            );
        }
        let _ = writeln!(o);
    }
    if !c.probes.is_empty() {
        let _ = writeln!(
            o,
            "Admission probe: on each single-hub deployment, {} client(s) ask one-token answers one after another (the mock answers at once), {} answers after 20 unmeasured ones. The time to first token is what a client sees at an answer's start, measured end to end: the request, authentication, admission (with Redis: the admission Lua script's round trip), the answer log's setup (with Redis: its stream), the upstream request and the first token.\n",
            c.probes[0].clients,
            c.probes[0].answers
        );
        let _ = writeln!(
            o,
            "| configuration | answers | TTFT p50 / p99 ms | mean ms | errors |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---|");
        for p in &c.probes {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} / {:.2} | {:.2} | {} |",
                p.config,
                p.answers,
                p.ttft_ms.p50,
                p.ttft_ms.p99,
                p.ttft_mean_ms,
                errors_text(&p.errors)
            );
        }
        if let Some(a) = c.added_by_redis_ms {
            let _ = writeln!(
                o,
                "| added by Redis | | {:+.2} / {:+.2} | {} | |",
                a.p50,
                a.p99,
                c.added_by_redis_mean_ms
                    .map_or("–".into(), |m| format!("{m:+.2}"))
            );
        }
        let _ = writeln!(o);
    }
    let _ = write!(o, "{}", meaning(c, cores));
    o
}

/// The share of the machine busy in a run's window (everything on it).
fn busy_share(r: &ClusterRun, cores: usize) -> f64 {
    (r.cpu_s.total + r.mock_cpu_s + r.loadgen_cpu_s + r.other_cpu_s)
        / (r.seconds * cores.max(1) as f64).max(1e-9)
}

fn loadgen_us(r: &ClusterRun) -> f64 {
    r.loadgen_cpu_s / r.tokens.max(1) as f64 * 1e6
}

/// One paragraph of what the figures say, computed from them.
fn meaning(c: &ClusterReport, cores: usize) -> String {
    let mut parts = Vec::new();
    if let Some(a) = c.added_by_redis_ms {
        let answers = c.probes.iter().map(|p| p.answers).min().unwrap_or(0);
        parts.push(format!(
            "Against the in-process hub, Redis moves an answer's start as a client sees it by {:+.2} ms at p50 and {:+.2} ms at p99{}{}.",
            a.p50,
            a.p99,
            c.added_by_redis_mean_ms
                .map_or(String::new(), |m| format!(" ({m:+.2} ms on the mean)")),
            if a.p50 < 0.0 || a.p99 < 0.0 {
                format!(" (a difference below zero is the noise of {answers} answers on a shared machine)")
            } else {
                String::new()
            }
        ));
    }
    let mut levels: Vec<usize> = Vec::new();
    for r in &c.runs {
        if !levels.contains(&r.streams) {
            levels.push(r.streams);
        }
    }
    for &n in &levels {
        let (Some(base), Some(redis)) = (c.run(CONFIGS[0].label, n), c.run(CONFIGS[1].label, n))
        else {
            continue;
        };
        let (b, r) = (&base.cpu_us_per_token, &redis.cpu_us_per_token);
        parts.push(format!(
            "At {n} streams the Redis answer log and admission cost {:+.1} µs of CPU per token in all ({:.1} µs against {:.1} µs, {:.2}×: the hub {:.1} → {:.1} µs, redis-server {:.1} µs, PostgreSQL {:.1} → {:.1} µs), at {:.2}× the baseline's tokens/s.",
            r.total - b.total,
            r.total,
            b.total,
            r.total / b.total,
            b.hubs,
            r.hubs,
            r.redis,
            b.postgres,
            r.postgres,
            redis.tokens_per_s / base.tokens_per_s.max(1e-9)
        ));
        if let Some(n1) = c.run(CONFIGS[2].label, n) {
            parts.push(format!(
                "nginx in front of that hub costs {:.1} µs per token of its own and carries {:.2}× its tokens/s.",
                n1.cpu_us_per_token.nginx,
                n1.tokens_per_s / redis.tokens_per_s.max(1e-9)
            ));
            if let Some(n2) = c.run(CONFIGS[3].label, n) {
                let x = n2.tokens_per_s / n1.tokens_per_s.max(1e-9);
                let (b1, b2) = (busy_share(n1, cores), busy_share(n2, cores));
                let verdict = if x < 1.05 {
                    format!("on {cores} cores shared with the load generator, the mock, nginx, Redis and PostgreSQL it adds no capacity")
                } else if b1 >= 0.9 && b2 >= 0.9 {
                    format!(
                        "the machine was {:.0} % and {:.0} % busy, so the gain is not a second hub's CPU: the hubs' own CPU per token is {:.1} µs against {:.1} µs, while nginx's went from {:.1} to {:.1} µs and the load generator's from {:.1} to {:.1} µs, with {:.2} frames per token against {:.2} (tokens merged into fewer frames make every frame's cost a smaller share of a token's)",
                        b2 * 100.0,
                        b1 * 100.0,
                        n2.cpu_us_per_token.hubs,
                        n1.cpu_us_per_token.hubs,
                        n1.cpu_us_per_token.nginx,
                        n2.cpu_us_per_token.nginx,
                        loadgen_us(n1),
                        loadgen_us(n2),
                        n2.frames_per_token,
                        n1.frames_per_token
                    )
                } else {
                    format!(
                        "on {cores} cores it adds {:.0} % capacity",
                        (x - 1.0) * 100.0
                    )
                };
                let split = n2
                    .hub_cpu_s
                    .iter()
                    .map(|c| format!("{c:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / ");
                parts.push(format!(
                    "A second hub behind nginx gives {:.2}× the one hub's tokens/s ({:.0} against {:.0}) at {:+.1} µs of CPU per token in all ({:.1} against {:.1}; the hubs' CPU seconds {split}): {verdict}.",
                    x,
                    n2.tokens_per_s,
                    n1.tokens_per_s,
                    n2.cpu_us_per_token.total - n1.cpu_us_per_token.total,
                    n2.cpu_us_per_token.total,
                    n1.cpu_us_per_token.total
                ));
            }
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("{}\n\n", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_for_two_hubs() {
        let conf = nginx_conf(SHIPPED_NGINX_CONF, 9000, &[9001, 9002]).unwrap();
        assert!(conf.contains("listen 127.0.0.1:9000;"));
        assert!(conf.contains("server 127.0.0.1:9001;"));
        assert!(conf.contains("server 127.0.0.1:9002;"));
        for old in ["8080", "8081", "8082"] {
            assert!(!conf.contains(&format!("127.0.0.1:{old}")), "{old} left");
        }
        // Nothing else changed: the same lines.
        assert_eq!(conf.lines().count(), SHIPPED_NGINX_CONF.lines().count());
        assert!(conf.contains("worker_processes 1;"));
    }

    #[test]
    fn nginx_conf_for_one_hub() {
        let conf = nginx_conf(SHIPPED_NGINX_CONF, 9000, &[9001]).unwrap();
        assert!(conf.contains("listen 127.0.0.1:9000;"));
        assert!(conf.contains("server 127.0.0.1:9001;"));
        assert_eq!(conf.matches("        server 127.0.0.1:").count(), 1);
        // Only the header comment still names the second hub's port.
        assert!(conf
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .all(|l| !l.contains("8082")));
        assert_eq!(conf.lines().count(), SHIPPED_NGINX_CONF.lines().count() - 1);
        // The upstream block is still there, with its keepalive.
        assert!(conf.contains(
            "upstream ragstream {\n        server 127.0.0.1:9001;\n        keepalive 32;"
        ));
    }

    #[test]
    fn nginx_conf_refuses_other_counts_and_other_files() {
        assert!(nginx_conf(SHIPPED_NGINX_CONF, 9000, &[]).is_err());
        assert!(nginx_conf(SHIPPED_NGINX_CONF, 9000, &[1, 2, 3]).is_err());
        assert!(nginx_conf("events {}", 9000, &[9001]).is_err());
    }

    #[test]
    fn cpu_delta_counts_new_processes_from_zero() {
        let a = BTreeMap::from([(1, 1.0), (2, 5.0), (3, 2.0)]);
        let b = BTreeMap::from([(1, 1.5), (2, 6.0), (4, 0.25)]);
        assert!((delta(&a, &b) - 1.75).abs() < 1e-9);
        assert_eq!(delta(&BTreeMap::new(), &BTreeMap::new()).to_string(), "0");
    }

    fn run(config: Config, streams: usize, tokens_per_s: f64, hubs: f64) -> ClusterRun {
        let cpu = CpuSplit {
            hubs,
            redis: if config.redis { 1.0 } else { 0.0 },
            nginx: if config.nginx { 1.0 } else { 0.0 },
            postgres: 0.5,
            total: 0.0,
        };
        let cpu = CpuSplit {
            total: cpu.hubs + cpu.redis + cpu.nginx + cpu.postgres,
            ..cpu
        };
        let tokens = (tokens_per_s * 10.0) as u64;
        ClusterRun {
            config: config.label,
            hubs: config.hubs,
            redis: config.redis,
            nginx: config.nginx,
            streams,
            seconds: 10.0,
            answers: tokens / 64,
            tokens,
            tokens_per_s,
            frames_per_token: 1.0,
            vs_baseline: None,
            ttft_ms: Pct::default(),
            itl_ms: Pct::default(),
            peak_streams: streams,
            errors: BTreeMap::new(),
            cpu_s: cpu,
            cpu_us_per_token: cpu.per_token(tokens),
            hub_cpu_s: vec![hubs / config.hubs as f64; config.hubs],
            mock_cpu_s: 0.0,
            loadgen_cpu_s: 0.0,
            other_cpu_s: 0.0,
        }
    }

    fn probe(config: Config, p50: f64, p99: f64) -> AdmissionProbe {
        AdmissionProbe {
            config: config.label,
            clients: 1,
            answers: 300,
            ttft_ms: Pct { p50, p99 },
            ttft_mean_ms: p50,
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn the_section_is_computed_from_the_figures() {
        let mut c = ClusterReport::default();
        for (config, tps, hubs) in [
            (CONFIGS[0], 10_000.0, 1.0),
            (CONFIGS[1], 9_000.0, 1.5),
            (CONFIGS[2], 8_000.0, 1.5),
            (CONFIGS[3], 8_000.0, 2.0),
        ] {
            c.runs.push(run(config, 1000, tps, hubs));
        }
        c.probes.push(probe(CONFIGS[0], 2.0, 4.0));
        c.probes.push(probe(CONFIGS[1], 2.5, 5.5));
        c.finish();
        assert_eq!(c.runs[1].vs_baseline, Some(0.9));
        let added = c.added_by_redis_ms.unwrap();
        assert!((added.p50 - 0.5).abs() < 1e-9 && (added.p99 - 1.5).abs() < 1e-9);
        let md = markdown(&c, 2);
        assert!(md.starts_with("## Cluster mode\n"));
        assert!(
            md.contains("| added by Redis | | +0.50 / +1.50 | +0.50 | |"),
            "{md}"
        );
        assert!(md.contains("by +0.50 ms at p50 and +1.50 ms at p99 (+0.50 ms on the mean)."));
        // 1.00× the one hub's tokens/s: no capacity added.
        assert!(md.contains("A second hub behind nginx gives 1.00×"), "{md}");
        assert!(md.contains("it adds no capacity"));
        // The baseline has no Redis and no nginx column figure.
        assert!(md.contains("| hub (PostgreSQL) | 1000 | 10000 | 1.00 |"));
        // A gain on a saturated machine is not called capacity.
        c.runs[3].tokens_per_s = 9_000.0;
        for r in &mut c.runs[2..] {
            r.mock_cpu_s = 10.0;
            r.loadgen_cpu_s = 10.0;
        }
        let md = markdown(&c, 2);
        assert!(md.contains("gives 1.12×"), "{md}");
        assert!(md.contains("so the gain is not a second hub's CPU"), "{md}");
        // Noise below zero is called noise.
        c.probes[1].ttft_ms.p99 = 3.0;
        c.finish();
        assert!(markdown(&c, 2).contains("-1.00 ms at p99 (+0.50 ms on the mean) (a difference below zero is the noise of 300 answers"));
    }

    #[test]
    fn a_skipped_group_says_why() {
        let c = ClusterReport {
            skipped: Some("nginx not found".into()),
            ..ClusterReport::default()
        };
        assert_eq!(
            markdown(&c, 2),
            "## Cluster mode\n\nNot run: nginx not found.\n\n"
        );
    }
}
