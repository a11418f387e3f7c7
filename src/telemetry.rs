//! Prometheus metrics: one process-wide recorder (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`), and small named functions for what the hub records, so
//! metric names and label sets live in this file only.
//!
//! Every label value comes from a closed set chosen in code (transports, provider names,
//! error codes, reasons): never a user, tenant, question or answer id.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds; from a fast local first token to a slow upstream's.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Seconds; whole answers run longer than their first token.
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Seconds; SQLite and PostgreSQL queries on the request path.
const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder the first time it is called (later calls, e.g. from
/// several test apps in one process, share it). `None` when another recorder was installed
/// first: metrics then go there and `/metrics` says it has none.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("ragstream_answer_ttft_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ragstream_answer_duration_seconds".into()),
                        DURATION_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ragstream_store_query_seconds".into()),
                        STORE_BUCKETS,
                    )
                });
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    log::warn!("metrics are off: {e}");
                    return None;
                }
            };
            describe();
            gauge!("ragstream_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

/// The text exposition of everything recorded so far, with the gauges that are read at
/// scrape time set first.
pub fn render(handle: &PrometheusHandle, open: OpenNow) -> String {
    gauge!("ragstream_connections_open", "transport" => "ws").set(open.ws as f64);
    gauge!("ragstream_connections_open", "transport" => "sse").set(open.sse as f64);
    gauge!("ragstream_answers_active").set(open.answers as f64);
    handle.run_upkeep();
    handle.render()
}

/// What is open at scrape time, read from the hub's registry (which cannot drift the way an
/// increment here and a decrement there can).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenNow {
    pub ws: usize,
    pub sse: usize,
    pub answers: usize,
}

fn describe() {
    describe_gauge!("ragstream_build_info", "The running version (always 1).");
    describe_counter!(
        "ragstream_answers_started_total",
        "Answers admitted, by transport."
    );
    describe_counter!(
        "ragstream_answers_ended_total",
        "Answers ended, by transport, provider, outcome (done, error, cancelled) and code."
    );
    describe_counter!(
        "ragstream_answers_detached_total",
        "Running answers whose last reader left without stopping them."
    );
    describe_counter!(
        "ragstream_answers_resumed_total",
        "Answers a reader came back to (resume by id, Last-Event-ID, WebSocket resume)."
    );
    describe_histogram!(
        "ragstream_answer_ttft_seconds",
        metrics::Unit::Seconds,
        "From admission to the first token."
    );
    describe_histogram!(
        "ragstream_answer_duration_seconds",
        metrics::Unit::Seconds,
        "From admission to the end of the answer."
    );
    describe_counter!(
        "ragstream_tokens_relayed_total",
        "Text deltas relayed to readers, counted once per answer at its end."
    );
    describe_counter!(
        "ragstream_upstream_attempts_total",
        "Requests sent to an upstream provider, retries included."
    );
    describe_counter!(
        "ragstream_upstream_retries_total",
        "Upstream requests sent again after a retryable failure before the first token."
    );
    describe_counter!(
        "ragstream_upstream_failovers_total",
        "Answers handed to the next provider of the chain."
    );
    describe_counter!(
        "ragstream_upstream_errors_total",
        "Upstream failures, by provider and error code."
    );
    describe_counter!(
        "ragstream_admissions_refused_total",
        "Answers or connections refused, by reason."
    );
    describe_gauge!(
        "ragstream_connections_open",
        "WebSocket and SSE connections open."
    );
    describe_gauge!("ragstream_answers_active", "Answers holding a stream slot.");
    describe_histogram!(
        "ragstream_store_query_seconds",
        metrics::Unit::Seconds,
        "Latency of the store queries on the request path, by query."
    );
}

pub fn answer_started(transport: &'static str) {
    counter!("ragstream_answers_started_total", "transport" => transport).increment(1);
}

/// How an answer ended, as the hub sees it at the release of its slot.
pub struct AnswerEnd<'a> {
    pub transport: &'static str,
    pub provider: &'static str,
    /// `done`, `error` or `cancelled`.
    pub outcome: &'static str,
    /// `none` when done; the stream's error code; for a cancel, who stopped it.
    pub code: &'a str,
    pub ttft: Option<Duration>,
    pub elapsed: Duration,
    pub tokens: u64,
}

pub fn answer_ended(end: &AnswerEnd<'_>) {
    let t = end.transport;
    let p = end.provider;
    counter!(
        "ragstream_answers_ended_total",
        "transport" => t, "provider" => p, "outcome" => end.outcome, "code" => end.code.to_owned()
    )
    .increment(1);
    if let Some(ttft) = end.ttft {
        histogram!("ragstream_answer_ttft_seconds", "transport" => t, "provider" => p)
            .record(ttft.as_secs_f64());
    }
    histogram!(
        "ragstream_answer_duration_seconds",
        "transport" => t, "provider" => p, "outcome" => end.outcome
    )
    .record(end.elapsed.as_secs_f64());
    if end.tokens > 0 {
        counter!("ragstream_tokens_relayed_total", "transport" => t, "provider" => p)
            .increment(end.tokens);
    }
}

pub fn answer_detached() {
    counter!("ragstream_answers_detached_total").increment(1);
}

pub fn answer_resumed() {
    counter!("ragstream_answers_resumed_total").increment(1);
}

pub fn admission_refused(reason: &'static str) {
    counter!("ragstream_admissions_refused_total", "reason" => reason).increment(1);
}

pub fn upstream_attempt(provider: &'static str) {
    counter!("ragstream_upstream_attempts_total", "provider" => provider).increment(1);
}

pub fn upstream_retry(provider: &'static str) {
    counter!("ragstream_upstream_retries_total", "provider" => provider).increment(1);
}

pub fn upstream_failover(from: &'static str, to: &'static str) {
    counter!("ragstream_upstream_failovers_total", "from" => from, "to" => to).increment(1);
}

pub fn upstream_error(provider: &'static str, code: &'static str) {
    counter!("ragstream_upstream_errors_total", "provider" => provider, "code" => code)
        .increment(1);
}

/// Runs a store query and records how long it took under `query` (a fixed name).
pub async fn timed<T>(query: &'static str, work: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = work.await;
    histogram!("ragstream_store_query_seconds", "query" => query)
        .record(start.elapsed().as_secs_f64());
    out
}
