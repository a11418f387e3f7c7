//! What Redis costs the hub (issue 14's benchmark, cluster mode): admission latency with and
//! without Redis, and CPU per token of the answer log mirrored to Redis Streams against the
//! in-process log alone. Ignored by default (a measurement, not a check); run it in release:
//!
//! ```sh
//! cargo test --release --test cluster -- --ignored --nocapture costs
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use ragstream::answer::shared_log::{self, Mirrored};
use ragstream::answer::{AnswerOwner, EventLog, MemoryLog, StreamEvent};
use ragstream::cluster::Cluster;
use ragstream::hub::messages::Admit;
use ragstream::hub::{ChatHub, Limits};

use crate::rig::flush_db;

const DB: u8 = 3;
const ADMISSIONS: usize = 5000;
const ANSWERS: usize = 100;
const TOKENS_PER_ANSWER: usize = 200;
const TOKEN_GAP: Duration = Duration::from_millis(20);

fn cluster() -> Arc<Cluster> {
    let url = format!("redis://127.0.0.1:6379/{DB}");
    Cluster::connect(&url, Some("bench"), Duration::from_secs(15)).expect("cluster")
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

async fn admission_latency(cluster: Option<Arc<Cluster>>) -> (Duration, Duration) {
    let limits = Limits {
        per_user: 5,
        global: 1000,
        rate: Arc::new(ragstream::rate_limit::RateLimits::new(0, 0)),
        sample_interval: ragstream::hub::history::SAMPLE_INTERVAL,
    };
    let hub = ChatHub::spawn(limits, cluster);
    let mut samples = Vec::with_capacity(ADMISSIONS);
    for i in 0..ADMISSIONS {
        let start = Instant::now();
        let lease = hub
            .send(Admit {
                user: format!("k{}", i % 50),
                tenant: "t".into(),
                session_id: None,
                transport: "json",
            })
            .await
            .expect("hub")
            .expect("admitted");
        samples.push(start.elapsed());
        drop(lease);
    }
    samples.sort();
    (percentile(&samples, 50), percentile(&samples, 99))
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn redis_pid() -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .unwrap_or_default()
}

/// `ANSWERS` answers appending a token every `TOKEN_GAP`; returns (this process's, Redis')
/// CPU microseconds per token.
async fn cpu_per_token(cluster: Option<Arc<Cluster>>) -> (f64, f64) {
    let redis = redis_pid().await;
    let (own0, redis0) = (cpu_seconds("self"), cpu_seconds(&redis));
    let mut tasks = Vec::new();
    for a in 0..ANSWERS {
        let log = MemoryLog::new(1 << 20);
        if let Some(cluster) = &cluster {
            let mirrored = Mirrored {
                id: format!("bench-{a}").into(),
                owner: AnswerOwner {
                    key_id: "k".into(),
                    tenant_id: "t".into(),
                },
                ticket: None,
                label: None,
                grace: Duration::from_secs(1),
            };
            shared_log::mirror(cluster.clone(), log.clone(), mirrored);
        }
        tasks.push(actix_web::rt::spawn(async move {
            let mut ticks = actix_web::rt::time::interval(TOKEN_GAP);
            for _ in 0..TOKENS_PER_ANSWER {
                ticks.tick().await;
                log.append(StreamEvent::Token("token ".into()), None);
            }
            log.append(
                StreamEvent::Error(ragstream::error::ErrorBody {
                    code: "end".into(),
                    message: "end".into(),
                }),
                None,
            );
            log
        }));
    }
    for task in tasks {
        let log = task.await.expect("answer");
        assert!(log.is_ended());
    }
    // Let the mirrors send their last batch.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let tokens = (ANSWERS * TOKENS_PER_ANSWER) as f64;
    let own = (cpu_seconds("self") - own0) * 1e6 / tokens;
    let redis = (cpu_seconds(&redis) - redis0) * 1e6 / tokens;
    (own, redis)
}

#[actix_web::test]
#[ignore = "a measurement; run with --ignored --nocapture (in release)"]
async fn costs() {
    flush_db(DB).await;
    let (local50, local99) = admission_latency(None).await;
    let (redis50, redis99) = admission_latency(Some(cluster())).await;
    println!("admission latency, {ADMISSIONS} sequential admissions:");
    println!("  in process: p50 {local50:?}  p99 {local99:?}");
    println!("  Redis:      p50 {redis50:?}  p99 {redis99:?}");
    let (local_own, local_redis) = cpu_per_token(None).await;
    let (mirror_own, mirror_redis) = cpu_per_token(Some(cluster())).await;
    println!(
        "CPU per token, {ANSWERS} answers x {TOKENS_PER_ANSWER} tokens, one every {TOKEN_GAP:?}:"
    );
    println!("  in-process log:     hub {local_own:.2} us, redis-server {local_redis:.2} us");
    println!("  mirrored to Redis:  hub {mirror_own:.2} us, redis-server {mirror_redis:.2} us");
    flush_db(DB).await;
}
