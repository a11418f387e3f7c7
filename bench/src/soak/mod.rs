//! The soak: thousands of answers over every transport with faults injected, then checks
//! that the hub is back where it started.
//!
//! The hub runs as a child process (the bench's `start_hub`: fresh SQLite database, the
//! mock as its OpenAI upstream) with short timeouts. Clients, one connection each, ask
//! one question after another over SSE, plain WebSocket, SignalR and JSON; a share of the
//! answers (10 % by default) gets a fault, picked at random from six: the upstream resets,
//! answers 500 or stalls; the client vanishes, cancels or stops reading. The first tenth
//! of the answers warms the hub up (its memory then is the baseline); after the last, the
//! soak waits for the hub to settle and checks:
//!
//! - no stream slot leaked: no active stream, as many released as admitted;
//! - no connection (hub side) or upstream stream (mock side) left open;
//! - every answer whose client read on ended with done or error at the client (a client
//!   that stopped reading may instead be closed by the hub);
//! - answers without a fault all ended with done; upstream faults reached the client as
//!   errors;
//! - no stored assistant message is left `streaming`;
//! - the hub's resident memory came back near its warm baseline.

pub mod answer;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};
use tokio::net::TcpListener;
use tokio::time::{sleep, Instant};

use crate::mock::{self, MockConfig, MockStats};
use crate::procs::{self, ADMIN_KEY};
use crate::procstat;
use answer::{Fault, Outcome, Plan, Shape, Transport};
pub use report::{Check, Rss, SoakReport, Tally};

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: &'static str,
    pub answers: usize,
    /// Clients at once, spread evenly over the four transports.
    pub concurrency: usize,
    /// Answers with a fault, per thousand.
    pub fault_permille: u64,
    /// The faults to pick from (all by default).
    pub fault_kinds: Vec<Fault>,
    /// The mock's answer: tokens, the delay between them and before the first.
    pub tokens: u32,
    pub pace_ms: u64,
    pub ttft_ms: u64,
    /// Tokens (of 1 KiB) of the answer a stalled client is sent.
    pub long_tokens: u32,
    pub hub_bin: PathBuf,
    pub seed: u64,
    /// Keep the hub's database and log.
    pub keep: bool,
}

impl Options {
    /// 10,000 answers, 64 clients: about two minutes on two cores.
    pub fn full(hub_bin: PathBuf) -> Options {
        Options {
            mode: "full",
            answers: 10_000,
            concurrency: 64,
            fault_permille: 100,
            fault_kinds: Fault::INJECTED.to_vec(),
            tokens: 32,
            pace_ms: 5,
            ttft_ms: 20,
            long_tokens: 4_000,
            hub_bin,
            seed: 0x5eed,
            keep: false,
        }
    }

    /// 500 answers with shorter ones: seconds, even with a debug build of the hub.
    pub fn quick(hub_bin: PathBuf) -> Options {
        Options {
            mode: "quick",
            answers: 500,
            concurrency: 24,
            tokens: 12,
            pace_ms: 2,
            ttft_ms: 5,
            long_tokens: 500,
            ..Options::full(hub_bin)
        }
    }
}

/// The hub's settings for the soak: short timeouts so that faults resolve in about a
/// second. The client write timeout and the resume grace window are read by hubs that
/// have them and ignored by older ones.
const HUB_ENV: &[(&str, &str)] = &[
    ("RAGSTREAM_UPSTREAM_IDLE_TIMEOUT_MS", "1000"),
    ("RAGSTREAM_UPSTREAM_FIRST_TOKEN_TIMEOUT_MS", "5000"),
    ("RAGSTREAM_UPSTREAM_MAX_RETRIES", "1"),
    ("RAGSTREAM_UPSTREAM_RETRY_BASE_MS", "20"),
    ("RAGSTREAM_UPSTREAM_RETRY_MAX_MS", "50"),
    ("RAGSTREAM_CLIENT_WRITE_TIMEOUT_SECS", "1"),
    ("RAGSTREAM_RESUME_GRACE_SECS", "1"),
    ("RAGSTREAM_HEARTBEAT_SECS", "2"),
    ("RAGSTREAM_CLIENT_TIMEOUT_SECS", "10"),
];

/// How long a stalled client stops reading: past the write timeout above.
const CLIENT_PAUSE: Duration = Duration::from_millis(2_500);

/// Longest an answer may take: a stalled client's answer needs its pause and then the
/// long answer's megabytes.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// Longest the hub may take to be idle again after the last answer.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Runs the soak; the report says whether its checks passed.
pub async fn run(opts: &Options) -> Result<SoakReport, String> {
    procstat::raise_fd_limit();
    // The hub runs in its own folder: a relative path would not find it from there.
    let hub_bin = std::fs::canonicalize(&opts.hub_bin)
        .map_err(|e| format!("no hub binary at {}: {e}", opts.hub_bin.display()))?;
    let opts = &Options {
        hub_bin,
        ..opts.clone()
    };
    let dir = std::env::temp_dir().join(format!("ragstream-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = soak(opts, &dir).await;
    if opts.keep || result.is_err() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn soak(opts: &Options, dir: &Path) -> Result<SoakReport, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mock_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mock_task = tokio::spawn(mock::serve(
        listener,
        MockConfig {
            tokens: opts.tokens,
            pace_us: opts.pace_ms * 1000,
            ttft_us: opts.ttft_ms * 1000,
            numbered: false,
        },
    ));
    let env: Vec<(String, String)> = HUB_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let hub = procs::start_hub(&opts.hub_bin, dir, mock_addr, 1, &env).await?;
    let pid = hub.pid();
    let shape = Arc::new(Shape {
        hub: hub.addr,
        key: ADMIN_KEY.to_owned(),
        top_k: 3,
        client_pause: CLIENT_PAUSE,
        long_tokens: opts.long_tokens,
        deadline: ANSWER_DEADLINE,
    });

    let fresh = procstat::rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(fresh));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(procstat::rss_kib(pid), Relaxed);
                sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let started = Instant::now();
    // The warm-up takes the hub through its worst moment (every client a slow reader at
    // once: whole answers held for them) and then a tenth of the answers with three times
    // the faults, before its memory is taken as the baseline. The allocator keeps what a
    // peak took; that is not a leak. What grows with the other nine tenths is.
    let warmup = (opts.answers / 10).max(100).min(opts.answers);
    let burst = if opts.fault_kinds.contains(&Fault::ClientStall) {
        opts.concurrency.min(warmup)
    } else {
        0
    };
    let warmup_faults = (opts.fault_permille * 3).min(500);
    eprintln!("soak: {} answers ({warmup} to warm up)", opts.answers);
    let mut tally = answers(opts, &shape, 0..burst, 0, Some(Fault::ClientStall)).await;
    tally.merge(answers(opts, &shape, burst..warmup, warmup_faults, None).await);
    settle(hub.addr, mock_addr).await?;
    let warm = procstat::rss_kib(pid);
    tally.merge(
        answers(
            opts,
            &shape,
            warmup..opts.answers,
            opts.fault_permille,
            None,
        )
        .await,
    );
    let seconds = started.elapsed().as_secs_f64();
    let settle_started = Instant::now();
    let settled = settle(hub.addr, mock_addr).await?;
    let settle_seconds = settle_started.elapsed().as_secs_f64();
    let after = procstat::rss_kib(pid);
    sampler.abort();
    let rss = Rss {
        fresh,
        warm,
        peak: peak.load(Relaxed).max(after),
        after,
    };
    let rows = message_rows(&dir.join("hub-1.db")).await?;
    drop(hub);
    mock_task.abort();

    let checks = checks(&tally, &settled, &rows, rss);
    Ok(SoakReport {
        mode: opts.mode.to_owned(),
        hub_bin: opts.hub_bin.display().to_string(),
        answers: tally.answers(),
        concurrency: opts.concurrency,
        fault_percent: opts.fault_permille as f64 / 10.0,
        seconds,
        settle_seconds,
        tally,
        rss,
        rows,
        checks,
    })
}

/// A cheap, seeded mix (SplitMix64): the same seed asks the same answers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Answer `n`'s plan: a fault for `fault_permille` of them, or `force` for every one.
fn plan(
    opts: &Options,
    n: usize,
    transport: Transport,
    fault_permille: u64,
    force: Option<Fault>,
) -> Plan {
    let r = mix(opts.seed ^ (n as u64).wrapping_mul(0x1000_0000_01b3));
    let fault = if let Some(f) = force {
        f
    } else if r % 1000 < fault_permille {
        let kinds = &opts.fault_kinds;
        kinds
            .get(((r >> 10) % kinds.len().max(1) as u64) as usize)
            .copied()
            .unwrap_or(Fault::None)
    } else {
        Fault::None
    };
    Plan {
        n,
        transport,
        fault,
        after: 1 + ((r >> 20) % u64::from(opts.tokens.clamp(2, 4) - 1)) as u32,
        stored: (r >> 30) & 1 == 1,
    }
}

/// Asks the answers numbered `range`, `concurrency` clients at once (client `i` on
/// transport `i mod 4`, one connection at a time, reused while it can be).
async fn answers(
    opts: &Options,
    shape: &Arc<Shape>,
    range: std::ops::Range<usize>,
    fault_permille: u64,
    force: Option<Fault>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(range.start));
    let clients: Vec<_> = (0..opts.concurrency)
        .map(|i| {
            let transport = Transport::ALL[i % Transport::ALL.len()];
            let next = next.clone();
            let shape = shape.clone();
            let opts = opts.clone();
            let end = range.end;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut conn = None;
                loop {
                    let n = next.fetch_add(1, Relaxed);
                    if n >= end {
                        break;
                    }
                    let plan = plan(&opts, n, transport, fault_permille, force);
                    let outcome = answer::ask(&mut conn, &plan, &shape).await;
                    if matches!(outcome, Outcome::TimedOut | Outcome::Closed)
                        && plan.fault != Fault::ClientStall
                    {
                        eprintln!(
                            "answer {n} over {} ({}) ended {outcome:?}",
                            transport.name(),
                            plan.fault.name()
                        );
                    }
                    tally.add(transport, plan.fault, outcome);
                }
                drop(conn);
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for c in clients {
        if let Ok(t) = c.await {
            all.merge(t);
        }
    }
    all
}

/// The hub's and the mock's view once idle.
#[derive(Debug, Default)]
struct Settled {
    active_streams: u64,
    admitted: u64,
    released: u64,
    connections: u64,
    mock: MockStats,
    /// False when the limit passed first.
    idle: bool,
}

async fn hub_stats(hub: SocketAddr) -> Result<Value, String> {
    let (status, body) = procs::get(hub, "/api/v1/admin/stats", Some(ADMIN_KEY)).await?;
    if status != 200 {
        return Err(format!("GET /api/v1/admin/stats: HTTP {status}"));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    // The figures at the top level, or under `stats`.
    Ok(match v.get("stats") {
        Some(s) if s.is_object() => s.clone(),
        _ => v,
    })
}

/// Waits until no stream, connection or upstream stream is left (or the limit passes).
async fn settle(hub: SocketAddr, mock_addr: SocketAddr) -> Result<Settled, String> {
    let until = Instant::now() + SETTLE_LIMIT;
    loop {
        let v = hub_stats(hub).await?;
        let n = |name: &str| v.get(name).and_then(Value::as_u64).unwrap_or(u64::MAX);
        let (_, body) = procs::get(mock_addr, "/mock/stats", None).await?;
        let mock: MockStats = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut s = Settled {
            active_streams: n("activeStreams"),
            admitted: n("admittedTotal"),
            released: n("releasedTotal"),
            connections: n("connections"),
            mock,
            idle: false,
        };
        s.idle = s.active_streams == 0
            && s.admitted == s.released
            && s.connections == 0
            && s.mock.active == 0;
        if s.idle || Instant::now() >= until {
            return Ok(s);
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Assistant messages in the hub's database, by status.
async fn message_rows(db: &Path) -> Result<std::collections::BTreeMap<String, u64>, String> {
    let url = format!("sqlite://{}", db.display());
    let mut conn = SqliteConnectOptions::from_str(&url)
        .map_err(|e| e.to_string())?
        .read_only(true)
        .connect()
        .await
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let rows = sqlx::query(
        "SELECT COALESCE(status, 'none') AS status, COUNT(*) AS n FROM messages \
         WHERE role = 'assistant' GROUP BY status",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| format!("cannot read the messages: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("status"),
                u64::try_from(r.get::<i64, _>("n")).unwrap_or(0),
            )
        })
        .collect())
}

fn checks(
    tally: &Tally,
    settled: &Settled,
    rows: &std::collections::BTreeMap<String, u64>,
    rss: Rss,
) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(Check {
        name: "no stream slot leaked",
        ok: settled.active_streams == 0 && settled.admitted == settled.released,
        detail: format!(
            "active streams {}, admitted {}, released {}",
            settled.active_streams, settled.admitted, settled.released
        ),
    });
    checks.push(Check {
        name: "no connection or upstream left open",
        ok: settled.connections == 0 && settled.mock.active == 0,
        detail: format!(
            "hub connections {}, upstream streams open {} (of {} requests, {} with a fault)",
            settled.connections, settled.mock.active, settled.mock.requests, settled.mock.faults
        ),
    });

    // Clients that read on: everyone but those that vanished, stopped reading, or
    // cancelled by closing (SSE, JSON).
    let read_on = |t: Transport, f: Fault| match f {
        Fault::ClientVanish | Fault::ClientStall => false,
        Fault::ClientCancel => matches!(t, Transport::Ws | Transport::SignalR),
        _ => true,
    };
    let kept = tally.sum(read_on);
    let stalled = tally.sum(|_, f| f == Fault::ClientStall);
    let left = tally.sum(|t, f| !read_on(t, f) && f != Fault::ClientStall);
    checks.push(Check {
        name: "every answer read on ended with done or error",
        ok: kept.closed + kept.left + kept.timed_out == 0
            && stalled.timed_out + stalled.left == 0
            && left.timed_out == 0,
        detail: format!(
            "{} read on: {} done, {} error, {} cut off, {} without an end; {} stalled readers: {} done, {} error, {} closed by the hub, {} without an end",
            kept.answers,
            kept.done,
            kept.error,
            kept.closed + kept.left,
            kept.timed_out,
            stalled.answers,
            stalled.done,
            stalled.error,
            stalled.closed,
            stalled.timed_out + stalled.left
        ),
    });
    let clean = tally.sum(|_, f| f == Fault::None);
    checks.push(Check {
        name: "answers without a fault all done",
        ok: clean.done == clean.answers,
        detail: format!("{} of {}", clean.done, clean.answers),
    });
    let upstream = tally.sum(|_, f| f.is_upstream());
    checks.push(Check {
        name: "upstream faults reach the client as errors",
        ok: upstream.error == upstream.answers,
        detail: format!("{} of {}", upstream.error, upstream.answers),
    });
    let streaming = rows.get("streaming").copied().unwrap_or(0);
    let listed: Vec<String> = rows.iter().map(|(s, n)| format!("{s} {n}")).collect();
    checks.push(Check {
        name: "every stored answer is final",
        ok: streaming == 0 && !rows.is_empty(),
        detail: format!("assistant messages: {}", listed.join(", ")),
    });
    let allowed = rss.warm + (rss.warm / 4).max(16 * 1024);
    checks.push(Check {
        name: "memory back near its baseline",
        ok: rss.after <= allowed,
        detail: format!(
            "RSS fresh {}, after warm-up {}, peak {}, at the end {} (limit {})",
            report::mib(rss.fresh),
            report::mib(rss.warm),
            report::mib(rss.peak),
            report::mib(rss.after),
            report::mib(allowed)
        ),
    });
    checks.push(Check {
        name: "the hub went idle",
        ok: settled.idle,
        detail: "no stream, connection or upstream stream within a minute of the last answer"
            .into(),
    });
    checks
}
