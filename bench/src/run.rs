//! One benchmark run: the scenarios, in order, on processes this run starts itself.
//!
//! 1. Throughput and latency: 100 and 1,000 concurrent closed-loop streams (64 tokens
//!    10 ms apart, first token at 50 ms) over the direct path, the bare relay and the hub
//!    (SSE, plain WebSocket, SignalR). CPU of the relay and of the hub from `/proc`.
//! 2. Cancellation: 50 clients that stop their answer (explicitly) or drop their connection
//!    (abruptly) after 5 tokens of a 1,000-token answer, while 100 other streams run; the
//!    mock records when it saw each upstream close.
//! 3. Resume ([`detach`]): 10 % of the answers cut mid-answer and resumed, every answer's
//!    text checked against the mock's; CPU with and without the cuts.
//! 4. Lagging clients ([`detach`]): the same answers read at once and read slowly: CPU per
//!    token and frames per token.
//! 5. Retrieval: a synthetic 10,000-chunk corpus through the documents API, then 100
//!    streams over SSE and WebSocket whose questions match a few hundred chunks each.
//! 6. Memory: idle connections (10,000 WebSockets on the hub; idle keep-alive connections
//!    on the relay) and streams held at once (2,000 at 200 ms per token), each on a freshly
//!    started process, from RSS deltas.
//! 7. Cluster mode ([`cluster`]): SSE streams on one hub with PostgreSQL, with Redis, and
//!    through nginx to one and to two Redis hubs; CPU per token of each process group, and
//!    the time to first token Redis adds at admission.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::{sleep, sleep_until, Instant};

mod cluster;
mod detach;

pub use cluster::{
    markdown as cluster_markdown, nginx_conf, AdmissionProbe, ClusterReport, ClusterRun, CpuSplit,
};
pub use detach::{LagRun, ResumeRun, ResumeSummary};

use crate::client::{self, Conn, Lag, Leave, Load, Spec, Stats, Target, Window};
use crate::corpus::Corpus;
use crate::mock::{MockConfig, MockStats};
use crate::procs::{self, Proc, ADMIN_KEY};
use crate::procstat;
use crate::report::{self, Report};

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub warmup_s: f64,
    pub measure_s: f64,
    pub levels: Vec<usize>,
    pub tokens_per_answer: u32,
    pub pace_ms: f64,
    pub ttft_ms: f64,
    pub cancel_clients: usize,
    pub cancel_background_streams: usize,
    pub corpus_chunks: usize,
    pub idle_connections: usize,
    /// The crowd group: idle WebSockets held open while 1,000 answers stream.
    pub crowd_idle: usize,
    pub held_streams: usize,
    pub held_tokens: u32,
    pub held_pace_ms: f64,
    /// The hub's `RAGSTREAM_RESUME_GRACE_SECS`: short, so that an abrupt leave is measured
    /// against it, and so that the answers a window's end drops do not run on into the next
    /// scenario.
    pub grace_s: u64,
    /// Resume cost: clients, answers each, share of answers cut, runs of each kind.
    pub resume_streams: usize,
    pub resume_answers: u32,
    pub resume_drop_pct: u32,
    pub resume_rounds: usize,
    /// Lagging clients: clients (one answer each), the mock's answer, how the slow ones read.
    pub lag_streams: usize,
    pub lag_tokens: u32,
    pub lag_pace_ms: f64,
    pub lag: Lag,
    /// The cluster group's admission probe: clients, and answers in all.
    pub cluster_probe_clients: usize,
    pub cluster_probe_answers: usize,
    /// Which scenario groups to run (all by default).
    pub only: Vec<String>,
    /// Which paths the throughput group runs (all by default).
    pub targets: Vec<String>,
}

impl Settings {
    pub fn quick() -> Settings {
        Settings {
            mode: "quick",
            warmup_s: 2.0,
            measure_s: 4.0,
            levels: vec![100, 1000],
            tokens_per_answer: 64,
            pace_ms: 10.0,
            ttft_ms: 50.0,
            cancel_clients: 50,
            cancel_background_streams: 100,
            corpus_chunks: 10_000,
            idle_connections: 10_000,
            crowd_idle: 5_000,
            held_streams: 2_000,
            held_tokens: 25,
            held_pace_ms: 200.0,
            grace_s: 1,
            resume_streams: 200,
            resume_answers: 3,
            resume_drop_pct: 10,
            resume_rounds: 2,
            lag_streams: 40,
            lag_tokens: 2000,
            lag_pace_ms: 2.0,
            lag: Lag {
                recv_buffer: 8192,
                mss: 1460,
                read_bytes: 1024,
                pause: Duration::from_millis(100),
            },
            cluster_probe_clients: 1,
            cluster_probe_answers: 300,
            only: Vec::new(),
            targets: Vec::new(),
        }
    }

    pub fn full() -> Settings {
        Settings {
            mode: "full",
            warmup_s: 3.0,
            measure_s: 15.0,
            held_tokens: 50,
            cluster_probe_answers: 1000,
            ..Settings::quick()
        }
    }

    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

pub struct Options {
    pub settings: Settings,
    /// Wait up to this long for the machine to be quiet before starting.
    pub wait_quiet: Option<Duration>,
    pub hub_bin: PathBuf,
    pub build: bool,
    pub out_dir: PathBuf,
}

/// The processes of a run.
struct Ctx {
    settings: Settings,
    hub_bin: PathBuf,
    dir: PathBuf,
    mock: Proc,
    relay: Option<Proc>,
    actix_relay: Option<Proc>,
    hub: Option<Proc>,
    hubs_started: usize,
}

impl Ctx {
    fn addr(&self, target: Target) -> SocketAddr {
        match target {
            Target::Direct => self.mock.addr,
            Target::Relay => self
                .relay
                .as_ref()
                .map(|p| p.addr)
                .unwrap_or(self.mock.addr),
            Target::ActixRelay => self
                .actix_relay
                .as_ref()
                .map(|p| p.addr)
                .unwrap_or(self.mock.addr),
            _ => self.hub.as_ref().map(|p| p.addr).unwrap_or(self.mock.addr),
        }
    }

    /// The process whose CPU a target's figures are about (none for the direct path).
    fn pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Direct => None,
            Target::Relay => self.relay.as_ref().map(Proc::pid),
            Target::ActixRelay => self.actix_relay.as_ref().map(Proc::pid),
            _ => self.hub.as_ref().map(Proc::pid),
        }
    }

    async fn fresh_hub(&mut self) -> Result<(), String> {
        self.hub = None;
        self.hubs_started += 1;
        let env = [(
            "RAGSTREAM_RESUME_GRACE_SECS".to_owned(),
            self.settings.grace_s.to_string(),
        )];
        let hub = procs::start_hub(
            &self.hub_bin,
            &self.dir,
            self.mock.addr,
            self.hubs_started,
            &env,
        )
        .await?;
        self.hub = Some(hub);
        Ok(())
    }

    fn fresh_relay(&mut self) -> Result<(), String> {
        self.relay = None;
        self.relay = Some(self.spawn_relay("relay")?);
        Ok(())
    }

    fn fresh_actix_relay(&mut self) -> Result<(), String> {
        self.actix_relay = None;
        self.actix_relay = Some(self.spawn_relay("actix-relay")?);
        Ok(())
    }

    fn spawn_relay(&self, kind: &'static str) -> Result<Proc, String> {
        procs::spawn_self(
            kind,
            &[kind.into(), "--upstream".into(), self.mock.addr.to_string()],
        )
    }

    async fn mock_config(&self, tokens: u32, pace_ms: f64, ttft_ms: f64) -> Result<(), String> {
        self.set_mock(MockConfig {
            tokens,
            pace_us: (pace_ms * 1000.0) as u64,
            ttft_us: (ttft_ms * 1000.0) as u64,
            numbered: false,
        })
        .await
    }

    async fn set_mock(&self, config: MockConfig) -> Result<(), String> {
        let body = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        let mut c = Conn::connect(self.mock.addr, None)
            .await
            .map_err(|e| e.to_string())?;
        procs::post_json(&mut c, self.mock.addr, "/mock/config", None, &body).await?;
        procs::post_json(&mut c, self.mock.addr, "/mock/reset", None, b"").await?;
        Ok(())
    }

    async fn mock_stats(&self) -> Result<MockStats, String> {
        let (_, body) = procs::get(self.mock.addr, "/mock/stats", None).await?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    fn spec(&self, target: Target, questions: &std::sync::Arc<Vec<String>>) -> Spec {
        Spec::new(target, self.addr(target), ADMIN_KEY, questions.clone())
    }

    /// The hub's count of active streams (admin stats).
    async fn hub_active_streams(&self) -> Option<u64> {
        let hub = self.hub.as_ref()?;
        let (status, body) = procs::get(hub.addr, "/api/v1/admin/stats", Some(ADMIN_KEY))
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v.get("activeStreams")
            .or_else(|| v.get("stats").and_then(|s| s.get("activeStreams")))
            .and_then(|n| n.as_u64())
    }

    /// Waits (up to `limit`) until the hub holds no stream: the previous scenario's
    /// cancellations must not bill the next one.
    async fn settle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        sleep(Duration::from_millis(300)).await;
        while Instant::now() < until {
            match self.hub_active_streams().await {
                Some(0) | None => return,
                Some(_) => sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Pct {
    pub p50: f64,
    pub p99: f64,
}

fn pct_ms(samples: &mut [u32]) -> Pct {
    if samples.is_empty() {
        return Pct::default();
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let i = ((samples.len() - 1) as f64 * p).round() as usize;
        f64::from(samples[i]) / 1000.0
    };
    Pct {
        p50: at(0.50),
        p99: at(0.99),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub target: &'static str,
    pub streams: usize,
    pub seconds: f64,
    pub answers: u64,
    pub tokens: u64,
    /// Frames that carried tokens, as the clients received them: below 1 per token when
    /// the hub merged tokens that waited.
    pub frames_per_token: f64,
    pub tokens_per_s: f64,
    pub ttft_ms: Pct,
    /// TTFT minus the direct path's at the same concurrency (p50 − p50, p99 − p99).
    pub ttft_added_ms: Option<Pct>,
    pub itl_ms: Pct,
    pub peak_streams: usize,
    pub errors: BTreeMap<String, u64>,
    /// CPU seconds of the relay or hub process in the window (none for direct).
    pub cpu_s: Option<f64>,
    pub cpu_s_per_1000_answers: Option<f64>,
    pub cpu_us_per_token: Option<f64>,
    pub mock_cpu_s: f64,
    pub loadgen_cpu_s: f64,
    /// CPU used by anything else on the machine in the window: other people's builds and
    /// tests disturb every figure, so the report shows how much of that there was.
    pub other_cpu_s: f64,
    /// Tokens the mock sent during the whole run (warm-up included): the denominator for
    /// instruction counts taken over the hub's lifetime under a profiler.
    pub mock_tokens_sent: u64,
    /// Hub figure ÷ relay figure at the same concurrency.
    pub vs_relay: Option<Ratios>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Ratios {
    pub tokens_per_s: f64,
    pub cpu_us_per_token: Option<f64>,
    pub cpu_s_per_1000_answers: Option<f64>,
    /// TTFT added, p99: hub minus relay, in ms.
    pub ttft_added_p99_minus_relay_ms: Option<f64>,
    pub ttft_added_p50_ratio: Option<f64>,
    pub ttft_added_p99_ratio: Option<f64>,
    pub itl_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CancelResult {
    pub target: &'static str,
    /// `stop`: an explicit stop (plain WebSocket cancel, SignalR `CancelInvocation`, SSE
    /// `DELETE /api/v1/answers/{id}`); `leave`: the connection dropped without a word, which
    /// the hub answers after its grace window; `close`: the relay, which knows only that.
    pub how: &'static str,
    pub clients: usize,
    pub left: usize,
    /// Upstream streams the mock saw closed before their end, of those clients.
    pub upstream_closed: usize,
    pub upstream_completed: usize,
    /// From the stop (or the drop) to the upstream close.
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// The goal: 100 ms after a stop, the grace window + 100 ms after a leave.
    pub target_ms: f64,
    pub within_target: usize,
    /// Leaves whose upstream closed before the grace window was over: answers that were
    /// not kept for a resume.
    pub before_grace: usize,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub target: &'static str,
    pub wanted: usize,
    pub opened: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub bytes_per_connection: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldResult {
    pub target: &'static str,
    pub streams: usize,
    pub held_at_once: usize,
    pub completed: u64,
    pub errors: BTreeMap<String, u64>,
    pub rss_before_kib: u64,
    /// With the connections open, before any stream (WebSocket only).
    pub rss_idle_kib: Option<u64>,
    pub rss_active_kib: u64,
    /// (active − before) ÷ streams: a connection and its stream.
    pub bytes_per_connection_and_stream: f64,
    /// (active − idle) ÷ streams: the stream alone (WebSocket only).
    pub bytes_per_stream: Option<f64>,
    pub itl_ms: Pct,
    pub cpu_s: f64,
    pub cpu_us_per_token: f64,
}

pub async fn run(opts: Options) -> Result<Report, String> {
    let settings = opts.settings.clone();
    let fd_limit = procstat::raise_fd_limit();
    if opts.build {
        procs::build_hub()?;
    }
    if !opts.hub_bin.exists() {
        return Err(format!(
            "no hub binary at {}; build it with `cargo build --release -p ragstream`",
            opts.hub_bin.display()
        ));
    }
    if let Some(limit) = opts.wait_quiet {
        wait_quiet(limit).await;
    }
    let dir = std::env::temp_dir().join(format!("ragstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mock = procs::spawn_self("mock", &["mock".into()])?;
    let mut ctx = Ctx {
        settings: settings.clone(),
        hub_bin: opts.hub_bin.clone(),
        dir: dir.clone(),
        mock,
        relay: None,
        actix_relay: None,
        hub: None,
        hubs_started: 0,
    };
    let started = Instant::now();
    let mut report = Report::new(settings.clone(), fd_limit);
    if report.machine.load_average_at_start > 0.5 {
        eprintln!(
            "warning: the machine is busy (load average {:.2}); other processes will disturb the figures",
            report.machine.load_average_at_start
        );
    }

    let plain: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        (0..16)
            .map(|i| format!("What does the handbook say about topic number {i}?"))
            .collect(),
    );

    if [
        "throughput",
        "cancel",
        "resume",
        "lag",
        "retrieval",
        "crowd",
    ]
    .iter()
    .any(|g| settings.wants(g))
    {
        ctx.fresh_relay()?;
        ctx.fresh_hub().await?;
    }

    if settings.wants("throughput") || settings.wants("cancel") {
        ctx.fresh_actix_relay()?;
    }
    if settings.wants("throughput") {
        let targets = [
            Target::Direct,
            Target::Relay,
            Target::ActixRelay,
            Target::HubSse,
            Target::HubWs,
            Target::HubSignalR,
        ];
        for &streams in &settings.levels {
            for target in targets {
                if !settings.targets.is_empty()
                    && !settings.targets.iter().any(|t| t == target.name())
                {
                    continue;
                }
                let r = throughput(&ctx, target, streams, &plain, target.name()).await?;
                eprintln!("{}", report::one_line(&r));
                report.runs.push(r);
            }
        }
    }

    if settings.wants("cancel") {
        for (target, how) in [
            (Target::Relay, Leave::Drop),
            (Target::ActixRelay, Leave::Drop),
            (Target::HubSse, Leave::Stop),
            (Target::HubWs, Leave::Stop),
            (Target::HubSignalR, Leave::Stop),
            (Target::HubSse, Leave::Drop),
            (Target::HubWs, Leave::Drop),
            (Target::HubSignalR, Leave::Drop),
        ] {
            let r = cancellation(&ctx, target, how, &plain).await?;
            eprintln!(
                "cancel {:<12} {:<5} closed {}/{} within {:.0} ms: {}, p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                r.target,
                r.how,
                r.upstream_closed,
                r.clients,
                r.target_ms,
                r.within_target,
                r.latency_ms_p50,
                r.latency_ms_p99,
                r.latency_ms_max
            );
            report.cancellation.push(r);
        }
    }
    ctx.actix_relay = None;

    if settings.wants("crowd") {
        for r in crowd(&mut ctx, &plain).await? {
            eprintln!("{}", report::one_line(&r));
            report.runs.push(r);
        }
    }

    if settings.wants("resume") {
        let (runs, summaries) = detach::resume_cost(&ctx, &plain).await?;
        report.resume = runs;
        report.resume_summary = summaries;
    }

    if settings.wants("lag") {
        report.lag = detach::lagging(&ctx, &plain).await?;
    }

    if settings.wants("retrieval") {
        let (chunks, secs, questions, matched) = load_corpus(&ctx, settings.corpus_chunks).await?;
        eprintln!(
            "corpus: {chunks} chunks loaded in {secs:.1} s; a question's terms are in ~{matched:.0} chunks"
        );
        report.corpus_chunks = Some(chunks);
        report.corpus_load_s = Some(secs);
        report.corpus_question_matches = Some(matched);
        let questions = std::sync::Arc::new(questions);
        for target in [Target::HubSse, Target::HubWs] {
            let label = format!("{}+corpus", target.name());
            let r = throughput(&ctx, target, 100, &questions, &label).await?;
            eprintln!("{}", report::one_line(&r));
            report.runs.push(r);
        }
    }

    if settings.wants("memory") {
        ctx.hub = None;
        ctx.relay = None;
        // Idle connections, each on a fresh process.
        ctx.fresh_relay()?;
        let r = idle(&ctx, Target::Relay, settings.idle_connections).await;
        eprintln!(
            "idle {:<8} {} connections: {:.0} B each",
            r.target, r.opened, r.bytes_per_connection
        );
        report.idle.push(r);
        ctx.relay = None;
        ctx.fresh_hub().await?;
        let r = idle(&ctx, Target::HubWs, settings.idle_connections).await;
        eprintln!(
            "idle {:<8} {} connections: {:.0} B each",
            r.target, r.opened, r.bytes_per_connection
        );
        report.idle.push(r);
        ctx.hub = None;

        // Streams held at once.
        for target in [Target::Relay, Target::HubSse, Target::HubWs] {
            if target == Target::Relay {
                ctx.fresh_relay()?;
            } else {
                ctx.fresh_hub().await?;
            }
            let r = held(&ctx, target, settings.held_streams, &plain).await?;
            eprintln!(
                "held {:<8} {}/{} at once, {} completed, errors {:?}, {:.0} B per connection+stream",
                r.target,
                r.held_at_once,
                r.streams,
                r.completed,
                r.errors,
                r.bytes_per_connection_and_stream
            );
            report.held.push(r);
            ctx.hub = None;
            ctx.relay = None;
        }
    }

    if settings.wants("cluster") {
        // Nothing of the other groups runs meanwhile.
        ctx.hub = None;
        ctx.relay = None;
        ctx.actix_relay = None;
        report.cluster = Some(cluster::cluster(&ctx, &plain).await?);
    }

    report.finish(started.elapsed().as_secs_f64());
    drop(ctx);
    // RAGSTREAM_BENCH_KEEP=1 keeps the hub's databases and logs (to study a query, say).
    if std::env::var_os("RAGSTREAM_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    let md = report::markdown(&report);
    let json_path = opts.out_dir.join(format!("{}.json", settings.mode));
    let md_path = opts.out_dir.join(format!("{}.md", settings.mode));
    std::fs::write(&json_path, json).map_err(|e| e.to_string())?;
    std::fs::write(&md_path, &md).map_err(|e| e.to_string())?;
    let svg_path = opts
        .out_dir
        .join(format!("{}-throughput.svg", settings.mode));
    let figures: Vec<crate::chart::Figure> = report.runs.iter().map(Into::into).collect();
    let caption = crate::chart::caption(report.settings.mode, report.machine.cores);
    let svg = crate::chart::throughput_svg(&figures, &caption);
    std::fs::write(&svg_path, svg).map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!(
        "report: {}, {} and {}",
        md_path.display(),
        json_path.display(),
        svg_path.display()
    );
    Ok(report)
}

struct Snapshot {
    target_cpu: Option<f64>,
    mock_cpu: f64,
    self_cpu: f64,
    machine_busy: f64,
}

fn snapshot(ctx: &Ctx, target: Target) -> Snapshot {
    Snapshot {
        target_cpu: ctx.pid(target).map(procstat::cpu_seconds),
        mock_cpu: procstat::cpu_seconds(ctx.mock.pid()),
        self_cpu: procstat::cpu_seconds(std::process::id()),
        machine_busy: procstat::machine_busy_seconds(),
    }
}

async fn throughput(
    ctx: &Ctx,
    target: Target,
    streams: usize,
    questions: &std::sync::Arc<Vec<String>>,
    label: &str,
) -> Result<RunResult, String> {
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
    let load = Load::start(ctx.spec(target, questions), streams, answer, window);
    sleep_until(window.start).await;
    let a = snapshot(ctx, target);
    sleep_until(window.end).await;
    let b = snapshot(ctx, target);
    let peak = load.gauge.peak.load(std::sync::atomic::Ordering::Relaxed);
    let mut stats: Stats = load.stop().await;
    let mock_tokens_sent = ctx.mock_stats().await.map(|m| m.tokens_sent).unwrap_or(0);
    if target.is_hub() {
        ctx.settle(Duration::from_secs(10)).await;
    } else {
        sleep(Duration::from_millis(300)).await;
    }
    let secs = s.measure_s;
    let cpu = match (a.target_cpu, b.target_cpu) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    Ok(RunResult {
        label: label.to_owned(),
        target: target.name(),
        streams,
        seconds: secs,
        answers: stats.answers,
        tokens: stats.tokens,
        frames_per_token: stats.frames as f64 / stats.tokens.max(1) as f64,
        tokens_per_s: stats.tokens as f64 / secs,
        ttft_ms: pct_ms(&mut stats.ttft_us),
        ttft_added_ms: None,
        itl_ms: pct_ms(&mut stats.itl_us),
        peak_streams: peak,
        errors: stats.errors,
        cpu_s: cpu,
        cpu_s_per_1000_answers: cpu
            .filter(|_| stats.answers > 0)
            .map(|c| c / stats.answers as f64 * 1000.0),
        cpu_us_per_token: cpu
            .filter(|_| stats.tokens > 0)
            .map(|c| c / stats.tokens as f64 * 1e6),
        mock_cpu_s: b.mock_cpu - a.mock_cpu,
        loadgen_cpu_s: b.self_cpu - a.self_cpu,
        other_cpu_s: ((b.machine_busy - a.machine_busy)
            - cpu.unwrap_or(0.0)
            - (b.mock_cpu - a.mock_cpu)
            - (b.self_cpu - a.self_cpu))
            .max(0.0),
        mock_tokens_sent,
        vs_relay: None,
    })
}

async fn cancellation(
    ctx: &Ctx,
    target: Target,
    how: Leave,
    questions: &std::sync::Arc<Vec<String>>,
) -> Result<CancelResult, String> {
    let s = &ctx.settings;
    ctx.mock_config(1000, 10.0, s.ttft_ms).await?;
    let background = Load::start(
        ctx.spec(target, questions),
        s.cancel_background_streams,
        Duration::from_millis(500),
        Window::always(),
    );
    sleep(Duration::from_millis(1000)).await;
    let mut spec = ctx.spec(target, questions);
    spec.id_prefix = "benchleave";
    spec.leave_after = Some(5);
    spec.leave = how;
    spec.answers = Some(1);
    let grace_ms = ctx.settings.grace_s as f64 * 1000.0;
    let (how, target_ms, wait) = match (target, how) {
        (Target::Relay | Target::ActixRelay, _) => ("close", 100.0, 1000.0),
        (_, Leave::Stop) => ("stop", 100.0, 1000.0),
        (_, Leave::Drop) => ("leave", grace_ms + 100.0, grace_ms + 1000.0),
    };
    let leavers = Load::start(
        spec,
        s.cancel_clients,
        Duration::from_millis(200),
        Window::always(),
    );
    let stats = tokio::time::timeout(Duration::from_secs(30), leavers.join())
        .await
        .map_err(|_| "the leaving clients did not finish in 30 s".to_owned())?;
    // Give a slow relay time to notice (and the hub its grace window); what it did not
    // see by then counts as not closed.
    sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    let mock = ctx.mock_stats().await?;
    let mut bg = background.stop().await;
    let mut latencies = Vec::new();
    let mut closed = 0;
    let mut completed = 0;
    for (id, left_at) in &stats.leaves {
        if let Some(end) = mock.recorded.iter().find(|e| &e.id == id) {
            if end.completed {
                completed += 1;
            } else {
                closed += 1;
                latencies.push(end.at_unix_us.saturating_sub(*left_at));
            }
        }
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    let mut errors = stats.errors;
    for (k, v) in std::mem::take(&mut bg.errors) {
        *errors.entry(format!("background:{k}")).or_default() += v;
    }
    if target.is_hub() {
        ctx.settle(Duration::from_secs(10)).await;
    }
    Ok(CancelResult {
        target: target.name(),
        how,
        clients: s.cancel_clients,
        left: stats.leaves.len(),
        upstream_closed: closed,
        upstream_completed: completed,
        latency_ms_p50: at(0.5),
        latency_ms_p99: at(0.99),
        latency_ms_max: at(1.0),
        target_ms,
        within_target: latencies
            .iter()
            .filter(|l| **l as f64 <= target_ms * 1000.0)
            .count(),
        before_grace: if how == "leave" {
            latencies
                .iter()
                .filter(|l| (**l as f64) < (grace_ms - 20.0) * 1000.0)
                .count()
        } else {
            0
        },
        errors,
    })
}

/// Loads documents until the tenant has `chunks` chunks. Returns the chunk count, the
/// seconds it took and questions that match many of them.
async fn load_corpus(ctx: &Ctx, chunks: usize) -> Result<(usize, f64, Vec<String>, f64), String> {
    let hub = ctx.hub.as_ref().ok_or("no hub")?;
    let started = Instant::now();
    let mut corpus = Corpus::new(0x5eed, 3000);
    let mut c = Conn::connect(hub.addr, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut total = 0usize;
    let mut n = 0;
    while total < chunks {
        let (title, text) = corpus.document(n, 100);
        n += 1;
        let body = serde_json::to_vec(&serde_json::json!({"title": title, "text": text}))
            .map_err(|e| e.to_string())?;
        let (status, resp) = procs::post_json(
            &mut c,
            hub.addr,
            "/api/v1/documents",
            Some(ADMIN_KEY),
            &body,
        )
        .await?;
        if status != 200 && status != 201 {
            return Err(format!(
                "loading the corpus: HTTP {status}: {}",
                String::from_utf8_lossy(&resp)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&resp).map_err(|e| e.to_string())?;
        let count = v
            .get("chunkCount")
            .or_else(|| v.get("document").and_then(|d| d.get("chunkCount")))
            .and_then(|c| c.as_u64())
            .ok_or_else(|| format!("no chunkCount in {v}"))?;
        total += count as usize;
    }
    let (questions, matched) = corpus.questions(64);
    Ok((total, started.elapsed().as_secs_f64(), questions, matched))
}

/// 1,000 answers over WebSocket and over SSE while thousands of idle WebSockets stay open
/// (a chat service's usual crowd: most clients connected, few asking), on a fresh hub.
/// The idle sockets cost the hub their heartbeats and their memory; the figures say
/// whether they slow the answers.
async fn crowd(
    ctx: &mut Ctx,
    questions: &std::sync::Arc<Vec<String>>,
) -> Result<Vec<RunResult>, String> {
    ctx.fresh_hub().await?;
    let n = ctx.settings.crowd_idle;
    let spec = ctx.spec(Target::HubWs, &std::sync::Arc::new(vec![String::new()]));
    let (idle, errors) = client::open_many(&spec, n, 256).await;
    if idle.len() < n {
        eprintln!(
            "crowd: {} of {n} idle WebSockets opened: {errors:?}",
            idle.len()
        );
    }
    let mut runs = Vec::new();
    for target in [Target::HubWs, Target::HubSse] {
        let label = format!("{}+{}-idle", target.name(), idle.len());
        runs.push(throughput(ctx, target, 1000, questions, &label).await?);
    }
    drop(idle);
    Ok(runs)
}

async fn idle(ctx: &Ctx, target: Target, n: usize) -> IdleResult {
    let pid = ctx.pid(target).unwrap_or(0);
    sleep(Duration::from_millis(500)).await;
    let before = procstat::rss_kib(pid);
    let spec = ctx.spec(target, &std::sync::Arc::new(vec![String::new()]));
    // The relay's idle connection is a bare keep-alive connection: the direct spec of the
    // same address does exactly a TCP connect.
    let (conns, errors) = client::open_many(&spec, n, 256).await;
    sleep(Duration::from_millis(1500)).await;
    let after = procstat::rss_kib(pid);
    let opened = conns.len();
    drop(conns);
    IdleResult {
        target: target.name(),
        wanted: n,
        opened,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: if opened > 0 {
            (after.saturating_sub(before) * 1024) as f64 / opened as f64
        } else {
            f64::NAN
        },
        errors,
    }
}

async fn held(
    ctx: &Ctx,
    target: Target,
    n: usize,
    questions: &std::sync::Arc<Vec<String>>,
) -> Result<HeldResult, String> {
    let s = &ctx.settings;
    ctx.mock_config(s.held_tokens, s.held_pace_ms, s.ttft_ms)
        .await?;
    let pid = ctx.pid(target).unwrap_or(0);
    sleep(Duration::from_millis(500)).await;
    let before = procstat::rss_kib(pid);
    let mut spec = ctx.spec(target, questions);
    spec.answers = Some(1);
    let stagger = Duration::from_secs(2);
    let (load, idle_rss, mut errors) = if target == Target::HubWs {
        let (conns, errors) = client::open_many(&spec, n, 256).await;
        sleep(Duration::from_millis(1000)).await;
        let idle_rss = procstat::rss_kib(pid);
        let conns = conns.into_iter().map(Some).collect();
        let load = Load::start_on(spec, conns, stagger, Window::always());
        (load, Some(idle_rss), errors)
    } else {
        (
            Load::start(spec, n, stagger, Window::always()),
            None,
            BTreeMap::new(),
        )
    };
    // Wait until every stream is open (or as many as will be).
    let cpu0 = procstat::cpu_seconds(pid);
    let deadline = Instant::now() + stagger + Duration::from_secs(10);
    let mut held_at_once = 0;
    while Instant::now() < deadline {
        held_at_once = held_at_once.max(load.active());
        if load.active() >= n {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(500)).await;
    held_at_once = held_at_once.max(load.active());
    let active_rss = procstat::rss_kib(pid);
    let answer =
        Duration::from_secs_f64((s.ttft_ms + s.held_pace_ms * f64::from(s.held_tokens)) / 1000.0);
    let gauge = load.gauge.clone();
    let mut stats = tokio::time::timeout(answer + stagger + Duration::from_secs(30), load.join())
        .await
        .map_err(|_| "held streams did not finish".to_owned())?;
    let cpu = procstat::cpu_seconds(pid) - cpu0;
    held_at_once = held_at_once.max(gauge.peak.load(std::sync::atomic::Ordering::Relaxed));
    for (k, v) in std::mem::take(&mut stats.errors) {
        *errors.entry(k).or_default() += v;
    }
    let tokens = stats.tokens.max(1);
    Ok(HeldResult {
        target: target.name(),
        streams: n,
        held_at_once,
        completed: stats.answers_all,
        errors,
        rss_before_kib: before,
        rss_idle_kib: idle_rss,
        rss_active_kib: active_rss,
        bytes_per_connection_and_stream: (active_rss.saturating_sub(before) * 1024) as f64
            / n as f64,
        bytes_per_stream: idle_rss
            .map(|idle| (active_rss.saturating_sub(idle) * 1024) as f64 / n as f64),
        itl_ms: pct_ms(&mut stats.itl_us),
        cpu_s: cpu,
        cpu_us_per_token: cpu / tokens as f64 * 1e6,
    })
}

/// Waits until the machine has been nearly idle (under 10 % busy) for five seconds in a
/// row, or `limit` has passed: other people's builds and tests distort every figure.
async fn wait_quiet(limit: Duration) {
    let until = Instant::now() + limit;
    let mut quiet = 0;
    eprintln!("waiting for a quiet machine (up to {} s)", limit.as_secs());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    while Instant::now() < until {
        let a = procstat::machine_busy_seconds();
        sleep(Duration::from_secs(1)).await;
        let busy = (procstat::machine_busy_seconds() - a) / cores;
        quiet = if busy < 0.10 { quiet + 1 } else { 0 };
        if quiet >= 5 {
            eprintln!("the machine is quiet");
            return;
        }
    }
    eprintln!("the machine is still busy; running all the same");
}
