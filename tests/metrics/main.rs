//! `GET /metrics` after real traffic, parsed by a real Prometheus text parser
//! (`prometheus_client`'s, in Python): the counters move by exactly what the traffic did.
//!
//! A test binary of its own: the recorder is process-wide, so no other test's traffic may
//! run beside this one. One test function, in phases, for the same reason.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use awc::error::PayloadError;
use bytes::Bytes;
use ragstream::config::{OpenAiSettings, ProviderKind, Secret, UpstreamSettings};
use serde_json::{json, Value};

use helpers::{spawn_app_with, Options, SseFrame, SseReader, TestApp, TOWER};
use support::mock_upstream::{Ending, Flavor, MockUpstream, Reply};

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Every sample of one scrape.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

fn parse_with_prometheus_client(text: &str) -> Scrape {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/prom_samples.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install prometheus_client)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("exposition written");
    let out = child.wait_with_output().expect("parser ends");
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON sample");
            let labels = v["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let name = v["name"].as_str().expect("name").to_owned();
            (name, labels, v["value"].as_f64().expect("value"))
        })
        .collect();
    Scrape(samples)
}

async fn scrape(app: &TestApp) -> Scrape {
    let mut res = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scraped");
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers().get("content-type").expect("content type");
    assert!(ct
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let body = res.body().limit(4 << 20).await.expect("body");
    parse_with_prometheus_client(std::str::from_utf8(&body).expect("utf-8"))
}

/// Scrapes until `check` holds (the hub records some things as a connection winds down).
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(app).await;
        if check(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited for {what}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an SSE answer: its id (`X-Answer-Id`) and the open response.
async fn start_sse(
    app: &TestApp,
    params: &[(&str, &str)],
) -> (
    String,
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, PayloadError>>>,
) {
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream"))
        .query(&params)
        .expect("query")
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let answer = res.headers().get("x-answer-id").expect("X-Answer-Id");
    let answer = answer.to_str().expect("ASCII").to_owned();
    (answer, res)
}

/// Every frame of one SSE answer.
async fn sse(app: &TestApp, params: &[(&str, &str)]) -> Vec<SseFrame> {
    let (_, res) = start_sse(app, params).await;
    SseReader::new(res).collect().await
}

fn done_tokens(frames: &[SseFrame]) -> f64 {
    let last = frames.last().expect("a final frame").json();
    assert_eq!(last["done"], true, "{last}");
    assert!(last.get("error").is_none(), "{last}");
    last["metadata"]["tokens"].as_f64().expect("tokens")
}

async fn spawn(openai: &MockUpstream) -> TestApp {
    let url = openai.base_url.clone();
    let mut app = spawn_app_with(Options {
        resume_grace: Duration::from_secs(30),
        settings: Some(Box::new(move |s| {
            // openai first, offline when it fails before its first token.
            s.providers = vec![ProviderKind::OpenAi, ProviderKind::Offline];
            s.openai = Some(OpenAiSettings {
                api_key: Secret::new("sk-mock"),
                base_url: url,
                model: "gpt-test".into(),
            });
            s.upstream = UpstreamSettings {
                max_retries: 1,
                retry_base: Duration::from_millis(5),
                retry_max: Duration::from_millis(10),
                ..UpstreamSettings::default()
            };
            s.max_connections_per_user = 1;
        })),
        ..Options::default()
    })
    .await;
    // Shorter than the hub's keep-alive (5 s): a parse between two requests on a loaded
    // machine must not leave the client reusing a connection the hub has closed.
    app.client = awc::Client::builder()
        .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(2)))
        .timeout(Duration::from_secs(30))
        .finish();
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    app
}

#[actix_web::test]
async fn counters_move_by_what_the_traffic_did() {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let app = spawn(&openai).await;
    let before = scrape(&app).await;
    assert_eq!(
        before.get(
            "ragstream_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels) - before.get(name, labels)
    };

    // Three answers over SSE and one JSON answer, by the offline provider.
    let mut relayed = 0.0;
    for _ in 0..3 {
        let frames = sse(
            &app,
            &[
                ("question", "How tall is the tower?"),
                ("provider", "offline"),
            ],
        )
        .await;
        relayed += done_tokens(&frames);
    }
    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "When was it built?", "provider": "offline"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let json_tokens = body["metadata"]["tokens"].as_f64().expect("tokens");

    // The chain's first provider fails twice (a retry), so offline answers (a failover).
    openai.push(Reply::status(500, "boom"));
    openai.push(Reply::status(500, "boom again"));
    let frames = sse(&app, &[("question", "Where is the tower?")]).await;
    relayed += done_tokens(&frames);
    assert_eq!(
        frames.last().unwrap().json()["metadata"]["provider"],
        "offline"
    );

    let after = scrape_until(&app, "four SSE answers ended", |s| {
        s.get("ragstream_answers_ended_total", &[("transport", "sse")])
            - before.get("ragstream_answers_ended_total", &[("transport", "sse")])
            >= 4.0
    })
    .await;
    let sse_done = [
        ("transport", "sse"),
        ("provider", "offline"),
        ("outcome", "done"),
        ("code", "none"),
    ];
    assert_eq!(
        delta(
            &after,
            "ragstream_answers_started_total",
            &[("transport", "sse")]
        ),
        4.0
    );
    assert_eq!(
        delta(&after, "ragstream_answers_ended_total", &sse_done),
        4.0
    );
    assert_eq!(
        delta(
            &after,
            "ragstream_answers_started_total",
            &[("transport", "json")]
        ),
        1.0
    );
    let json_done = [
        ("transport", "json"),
        ("provider", "offline"),
        ("outcome", "done"),
    ];
    assert_eq!(
        delta(&after, "ragstream_answers_ended_total", &json_done),
        1.0
    );
    let sse_offline = [("transport", "sse"), ("provider", "offline")];
    assert_eq!(
        delta(&after, "ragstream_tokens_relayed_total", &sse_offline),
        relayed
    );
    let json_offline = [("transport", "json"), ("provider", "offline")];
    assert_eq!(
        delta(&after, "ragstream_tokens_relayed_total", &json_offline),
        json_tokens
    );
    assert_eq!(
        delta(&after, "ragstream_answer_ttft_seconds_count", &sse_offline),
        4.0
    );
    assert_eq!(
        delta(
            &after,
            "ragstream_answer_duration_seconds_count",
            &sse_offline
        ),
        4.0
    );
    // Every bucket of a histogram is cumulative: the +Inf one holds every sample.
    let inf = [
        ("transport", "sse"),
        ("provider", "offline"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        delta(&after, "ragstream_answer_ttft_seconds_bucket", &inf),
        4.0
    );

    let openai_label = [("provider", "openai")];
    assert_eq!(
        delta(&after, "ragstream_upstream_attempts_total", &openai_label),
        2.0
    );
    assert_eq!(
        delta(&after, "ragstream_upstream_retries_total", &openai_label),
        1.0
    );
    let unavailable = [("provider", "openai"), ("code", "upstream_unavailable")];
    assert_eq!(
        delta(&after, "ragstream_upstream_errors_total", &unavailable),
        2.0
    );
    let failover = [("from", "openai"), ("to", "offline")];
    assert_eq!(
        delta(&after, "ragstream_upstream_failovers_total", &failover),
        1.0
    );

    // One search per answer.
    let search = [("query", "search")];
    assert_eq!(
        delta(&after, "ragstream_store_query_seconds_count", &search),
        5.0
    );
    // Five answers with one key: its verification is cached, so fewer lookups than requests
    // (only a machine pausing 10 s between every two requests would look it up each time).
    let auth = [("query", "auth_key")];
    assert!(delta(&after, "ragstream_store_query_seconds_count", &auth) < 5.0);

    // One WebSocket may be open per key here: it shows as open, a second is refused.
    let ws = app.open_ws(&app.admin_key).await;
    let res = app
        .client
        .ws(format!("{}/api/v1/chat/ws", app.ws_base))
        .header("X-API-Key", app.admin_key.as_str())
        .connect()
        .await;
    let refused = match res {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        other => panic!(
            "a second WebSocket was not refused: {:?}",
            other.map(|r| r.0)
        ),
    };
    assert_eq!(refused, 429);
    let s = scrape(&app).await;
    assert_eq!(
        s.get("ragstream_connections_open", &[("transport", "ws")]),
        1.0
    );
    let too_many = [("reason", "too_many_connections")];
    assert_eq!(
        delta(&s, "ragstream_admissions_refused_total", &too_many),
        1.0
    );
    drop(ws);
    scrape_until(&app, "the WebSocket closed", |s| {
        s.get("ragstream_connections_open", &[("transport", "ws")]) == 0.0
    })
    .await;

    // The upstream fails after its first tokens: the answer ends with an error, by code.
    openai.push(Reply::ending(&["Part", "ial"], Ending::ErrorEvent));
    let frames = sse(&app, &[("question", "How tall?"), ("provider", "openai")]).await;
    let last = frames.last().expect("a final frame").json();
    let code = last["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_owned();
    let failed = [
        ("transport", "sse"),
        ("provider", "openai"),
        ("outcome", "error"),
        ("code", code.as_str()),
    ];
    let s = scrape_until(&app, "the failed answer ended", |s| {
        delta(s, "ragstream_answers_ended_total", &failed) == 1.0
    })
    .await;
    let upstream_code = [("provider", "openai"), ("code", code.as_str())];
    assert_eq!(
        delta(&s, "ragstream_upstream_errors_total", &upstream_code),
        1.0
    );

    detach_resume_and_cancel(&app, &openai, &before).await;
}

/// An SSE client leaves mid-answer (detached), another connection resumes it (resumed) and
/// it ends done; a second answer is stopped by `DELETE /answers/{id}` (cancelled).
async fn detach_resume_and_cancel(app: &TestApp, openai: &MockUpstream, before: &Scrape) {
    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels) - before.get(name, labels)
    };
    openai.set_default(Reply::slow(200, Duration::from_millis(10)));
    let params = [
        ("question", "How tall is the tower?"),
        ("provider", "openai"),
    ];
    let (answer, res) = start_sse(app, &params).await;
    let mut reader = SseReader::new(res);
    while reader
        .next()
        .await
        .is_some_and(|f| f.json().get("token").is_none_or(|t| t == ""))
    {}
    drop(reader);
    scrape_until(app, "the answer detached", |s| {
        delta(s, "ragstream_answers_detached_total", &[]) == 1.0
    })
    .await;

    let res = app
        .client
        .get(app.url(&format!("/api/v1/answers/{answer}/stream?after=0")))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("resumed");
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    done_tokens(&frames);
    let openai_done = [
        ("transport", "sse"),
        ("provider", "openai"),
        ("outcome", "done"),
    ];
    let s = scrape_until(app, "the resumed answer ended", |s| {
        delta(s, "ragstream_answers_ended_total", &openai_done) == 1.0
    })
    .await;
    assert_eq!(delta(&s, "ragstream_answers_resumed_total", &[]), 1.0);

    let (answer, res) = start_sse(app, &params).await;
    let status = app
        .delete(&format!("/api/v1/answers/{answer}"), &app.admin_key)
        .await;
    assert_eq!(status, 204);
    let frames = SseReader::new(res).collect().await;
    assert_eq!(frames.last().unwrap().json()["error"]["code"], "cancelled");
    let cancelled = [
        ("transport", "sse"),
        ("outcome", "cancelled"),
        ("code", "cancelled"),
    ];
    scrape_until(app, "the stopped answer counted as cancelled", |s| {
        delta(s, "ragstream_answers_ended_total", &cancelled) == 1.0
    })
    .await;
}
