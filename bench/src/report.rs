//! The report: every figure as JSON, and the same as Markdown tables, with the hub's
//! ratios to the bare relay and the targets checked.

use std::fmt::Write;

use serde::Serialize;

use crate::run::{
    CancelResult, ClusterReport, HeldResult, IdleResult, LagRun, Ratios, ResumeRun, ResumeSummary,
    RunResult, Settings,
};

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu: String,
    pub fd_limit: u64,
    pub load_average_at_start: f64,
    /// `net.ipv4.tcp_notsent_lowat` of the network namespace the run is in (the kernel's
    /// default: 4294967295, no limit): how much unsent data a socket takes before a writer
    /// sees it full.
    pub tcp_notsent_lowat: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub machine: Machine,
    pub seconds: f64,
    pub runs: Vec<RunResult>,
    pub cancellation: Vec<CancelResult>,
    pub resume: Vec<ResumeRun>,
    pub resume_summary: Vec<ResumeSummary>,
    pub lag: Vec<LagRun>,
    pub corpus_chunks: Option<usize>,
    pub corpus_load_s: Option<f64>,
    /// Sum of a question's terms' chunk counts, averaged over the questions.
    pub corpus_question_matches: Option<f64>,
    pub idle: Vec<IdleResult>,
    pub held: Vec<HeldResult>,
    /// The cluster group (none when it was not asked for).
    pub cluster: Option<ClusterReport>,
    pub checks: Vec<Check>,
}

fn read_first(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

impl Report {
    pub fn new(settings: Settings, fd_limit: u64) -> Report {
        Report {
            settings,
            machine: Machine {
                cores: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                cpu: read_first("/proc/cpuinfo", "model name"),
                fd_limit,
                load_average_at_start: crate::procstat::load_average(),
                tcp_notsent_lowat: std::fs::read_to_string("/proc/sys/net/ipv4/tcp_notsent_lowat")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            },
            seconds: 0.0,
            runs: Vec::new(),
            cancellation: Vec::new(),
            resume: Vec::new(),
            resume_summary: Vec::new(),
            lag: Vec::new(),
            corpus_chunks: None,
            corpus_load_s: None,
            corpus_question_matches: None,
            idle: Vec::new(),
            held: Vec::new(),
            cluster: None,
            checks: Vec::new(),
        }
    }

    fn run(&self, target: &str, streams: usize) -> Option<&RunResult> {
        self.runs
            .iter()
            .find(|r| r.label == target && r.streams == streams)
    }

    /// Fills in the figures relative to the direct path and the relay, and the checks.
    pub fn finish(&mut self, seconds: f64) {
        self.seconds = seconds;
        let snapshot = self.runs.clone();
        for r in &mut self.runs {
            let same = |label: &str| {
                snapshot
                    .iter()
                    .find(|x| x.label == label && x.streams == r.streams)
            };
            if let Some(direct) = same("direct") {
                r.ttft_added_ms = Some(crate::run::Pct {
                    p50: r.ttft_ms.p50 - direct.ttft_ms.p50,
                    p99: r.ttft_ms.p99 - direct.ttft_ms.p99,
                });
            }
        }
        let snapshot = self.runs.clone();
        for r in &mut self.runs {
            if !r.target.starts_with("hub") && r.target != "actix-relay" {
                continue;
            }
            let Some(relay) = snapshot
                .iter()
                .find(|x| x.label == "relay" && x.streams == r.streams)
            else {
                continue;
            };
            let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let added = r.ttft_added_ms.unwrap_or_default();
            let relay_added = relay.ttft_added_ms.unwrap_or_default();
            r.vs_relay = Some(Ratios {
                tokens_per_s: r.tokens_per_s / relay.tokens_per_s.max(1e-9),
                cpu_us_per_token: div(r.cpu_us_per_token, relay.cpu_us_per_token),
                cpu_s_per_1000_answers: div(r.cpu_s_per_1000_answers, relay.cpu_s_per_1000_answers),
                ttft_added_p99_minus_relay_ms: Some(added.p99 - relay_added.p99),
                ttft_added_p50_ratio: div(Some(added.p50), Some(relay_added.p50)),
                ttft_added_p99_ratio: div(Some(added.p99), Some(relay_added.p99)),
                itl_p99: r.itl_ms.p99 / relay.itl_ms.p99.max(1e-9),
            });
        }
        self.checks = self.checks();
    }

    fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let hubs = ["hub-sse", "hub-ws", "hub-signalr"];
        for streams in [100, 1000] {
            for hub in hubs {
                let Some(r) = self.run(hub, streams) else {
                    continue;
                };
                if let Some(x) = r.vs_relay.as_ref().and_then(|v| v.cpu_us_per_token) {
                    out.push(Check {
                        target: format!("CPU per token, {hub}, {streams} streams"),
                        goal: "≤ 1.5× relay (aim 1.0×)".into(),
                        measured: format!(
                            "{:.2}× ({:.1} µs vs {:.1} µs)",
                            x,
                            r.cpu_us_per_token.unwrap_or(f64::NAN),
                            self.run("relay", streams)
                                .and_then(|r| r.cpu_us_per_token)
                                .unwrap_or(f64::NAN)
                        ),
                        met: x <= 1.5,
                    });
                }
            }
        }
        for hub in hubs {
            if let Some(r) = self.run(hub, 1000) {
                let x = r.vs_relay.as_ref().map_or(f64::NAN, |v| v.tokens_per_s);
                let errors: u64 = r.errors.values().sum();
                out.push(Check {
                    target: format!("tokens/s, {hub}, 1,000 streams"),
                    goal: "≥ 0.95× relay, 0 errors".into(),
                    measured: format!("{x:.2}×, {errors} errors"),
                    met: x >= 0.95 && errors == 0,
                });
            }
        }
        let relay_added = self
            .run("relay", 100)
            .and_then(|r| r.ttft_added_ms)
            .map(|p| p.p99);
        for (label, budget) in [
            ("hub-sse", 2.0),
            ("hub-ws", 2.0),
            ("hub-signalr", 2.0),
            ("hub-sse+corpus", 10.0),
            ("hub-ws+corpus", 10.0),
        ] {
            if let (Some(r), Some(relay)) = (self.run(label, 100), relay_added) {
                let added = r.ttft_added_ms.map_or(f64::NAN, |p| p.p99);
                out.push(Check {
                    target: format!("TTFT added p99, {label}, 100 streams"),
                    goal: format!("≤ relay + {budget} ms ({:.1} ms)", relay + budget),
                    measured: format!("{added:.1} ms (relay {relay:.1} ms)"),
                    met: added <= relay + budget,
                });
            }
        }
        for i in self.idle.iter().filter(|i| i.target.starts_with("hub")) {
            out.push(Check {
                target: format!("memory per idle WebSocket ({} open)", i.opened),
                goal: "< 8 KiB".into(),
                measured: format!("{:.1} KiB", i.bytes_per_connection / 1024.0),
                met: i.opened == i.wanted && i.bytes_per_connection < 8192.0,
            });
        }
        for h in self.held.iter().filter(|h| h.target.starts_with("hub")) {
            let errors: u64 = h.errors.values().sum();
            out.push(Check {
                target: format!(
                    "{} streams at once at 200 ms/token, {}",
                    h.streams, h.target
                ),
                goal: "all held, 0 errors".into(),
                measured: format!(
                    "{} held, {} completed, {errors} errors",
                    h.held_at_once, h.completed
                ),
                met: h.held_at_once >= h.streams && errors == 0,
            });
        }
        for c in self
            .cancellation
            .iter()
            .filter(|c| c.target.starts_with("hub"))
        {
            let (what, goal) = if c.how == "stop" {
                (
                    "upstream closed on an explicit stop",
                    format!("{0} of {0} within 100 ms", c.clients),
                )
            } else {
                (
                    "upstream closed after an abrupt leave",
                    format!(
                        "{0} of {0} after the grace window, within it + 100 ms ({1:.0} ms)",
                        c.clients, c.target_ms
                    ),
                )
            };
            out.push(Check {
                target: format!("{what}, {}", c.target),
                goal,
                measured: format!(
                    "{} closed, {} within {:.0} ms{}, max {:.1} ms",
                    c.upstream_closed,
                    c.within_target,
                    c.target_ms,
                    if c.how == "leave" {
                        format!(", {} before the grace window", c.before_grace)
                    } else {
                        String::new()
                    },
                    c.latency_ms_max
                ),
                met: c.within_target == c.clients && c.before_grace == 0,
            });
        }
        for r in &self.resume_summary {
            out.push(Check {
                target: format!(
                    "tokens lost and repeated across resumes, {} ({} % cut)",
                    r.target, r.drop_pct
                ),
                goal: "0 and 0, every cut answer resumed".into(),
                measured: format!(
                    "{} lost, {} repeated in {} answers; {} of {} cut answers resumed; {} errors",
                    r.tokens_lost,
                    r.tokens_repeated,
                    r.answers_checked,
                    r.resumed,
                    r.dropped,
                    r.errors
                ),
                met: r.tokens_lost == 0
                    && r.tokens_repeated == 0
                    && r.resumed == r.dropped
                    && r.errors == 0,
            });
        }
        for r in self.lag.iter().filter(|r| r.reader == "lagging") {
            // A hub that is behind merges for every reader; what a lagging reader should
            // show is merging beyond that.
            let fast = self
                .lag
                .iter()
                .find(|f| f.reader == "fast" && f.target == r.target)
                .map_or(1.0, |f| f.frames_per_token);
            out.push(Check {
                target: format!("frames per token, lagging readers, {}", r.target),
                goal: "< 1 and below the fast readers' (waiting tokens merged), nothing lost or repeated".into(),
                measured: format!(
                    "{:.3} ({} frames for {} tokens; fast readers {:.3}), {} lost, {} repeated",
                    r.frames_per_token,
                    r.frames,
                    r.tokens,
                    fast,
                    r.tokens_lost,
                    r.tokens_repeated
                ),
                met: r.frames_per_token < 1.0
                    && r.frames_per_token < fast
                    && r.tokens_lost == 0
                    && r.tokens_repeated == 0,
            });
        }
        out
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

fn errors(e: &std::collections::BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        return "0".into();
    }
    e.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per run, for the progress output.
pub fn one_line(r: &RunResult) -> String {
    format!(
        "{:<15} {:>5} streams {:>8.0} tok/s {:.2} frames/token ttft p50 {:>6.1} p99 {:>6.1} ms itl p50 {:>5.1} p99 {:>6.1} ms cpu/token {:>6} µs errors {}",
        r.label,
        r.streams,
        r.tokens_per_s,
        r.frames_per_token,
        r.ttft_ms.p50,
        r.ttft_ms.p99,
        r.itl_ms.p50,
        r.itl_ms.p99,
        opt(r.cpu_us_per_token, 1),
        errors(&r.errors)
    )
}

pub fn markdown(r: &Report) -> String {
    let s = &r.settings;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ragstream-bench --{} on {} cores ({}), Linux {}; {:.0} s in all.\n",
        s.mode, r.machine.cores, r.machine.cpu, r.machine.kernel, r.seconds
    );
    let _ = writeln!(
        o,
        "Mock upstream: {} tokens per answer, {} ms apart, first token at {} ms. \
         Each figure is over a {} s window after {} s of warm-up; CPU is the relay's or the \
         hub's own process (utime + stime from /proc).\n",
        s.tokens_per_answer, s.pace_ms, s.ttft_ms, s.measure_s, s.warmup_s
    );
    if !r.runs.is_empty() {
        let _ = writeln!(
            o,
            "| path | streams | tokens/s | ×relay | TTFT added p50 / p99 ms | inter-token p50 / p99 ms | µs CPU per token | ×relay | CPU s per 1,000 answers | ×relay | frames per token | peak streams | errors | other load |"
        );
        let _ = writeln!(
            o,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for x in &r.runs {
            let v = x.vs_relay.as_ref();
            let added = x
                .ttft_added_ms
                .map(|p| format!("{:.1} / {:.1}", p.p50, p.p99))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {} | {} | {:.1} / {:.1} | {} | {} | {} | {} | {:.2} | {} | {} | {:.0} % |",
                x.label,
                x.streams,
                x.tokens_per_s,
                opt(v.map(|v| v.tokens_per_s), 2),
                added,
                x.itl_ms.p50,
                x.itl_ms.p99,
                opt(x.cpu_us_per_token, 1),
                opt(v.and_then(|v| v.cpu_us_per_token), 2),
                opt(x.cpu_s_per_1000_answers, 2),
                opt(v.and_then(|v| v.cpu_s_per_1000_answers), 2),
                x.frames_per_token,
                x.peak_streams,
                errors(&x.errors),
                x.other_cpu_s / x.seconds.max(1e-9) / r.machine.cores as f64 * 100.0
            );
        }
        let _ = writeln!(
            o,
            "\n`other load`: CPU used by processes outside the run during the window, as a share of the machine; above a few % the figures of that row are disturbed.\n"
        );
        if let Some(n) = r.corpus_chunks {
            let _ = writeln!(
                o,
                "`+corpus`: questions over a synthetic corpus of {n} chunks (loaded through the documents API in {:.1} s); a question's three terms occur in ~{:.0} chunks, which BM25 ranks for the top 5.\n",
                r.corpus_load_s.unwrap_or(0.0),
                r.corpus_question_matches.unwrap_or(0.0)
            );
        }
    }
    if !r.cancellation.is_empty() {
        let _ = writeln!(
            o,
            "Clients that leave: {} clients each leave after 5 tokens of a 1,000-token answer (10 ms apart) while {} other streams run; measured at the mock, from the client's stop (or drop) to the upstream close. `stop`: an explicit stop (plain WebSocket `cancel`, SignalR `CancelInvocation`, SSE `DELETE /api/v1/answers/{{id}}`), goal 100 ms. `leave`: the connection dropped without a word, which detaches the answer for the grace window (`RAGSTREAM_RESUME_GRACE_SECS={}` here), goal the window + 100 ms and not before it. The relay knows only a close.\n",
            s.cancel_clients, s.cancel_background_streams, s.grace_s
        );
        let _ = writeln!(
            o,
            "| path | how | upstreams closed | within goal | goal ms | latency p50 / p99 / max ms | closed before the grace window | errors |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---|");
        for c in &r.cancellation {
            let _ = writeln!(
                o,
                "| {} | {} | {} of {} | {} | {:.0} | {:.1} / {:.1} / {:.1} | {} | {} |",
                c.target,
                c.how,
                c.upstream_closed,
                c.clients,
                c.within_target,
                c.target_ms,
                c.latency_ms_p50,
                c.latency_ms_p99,
                c.latency_ms_max,
                if c.how == "leave" {
                    c.before_grace.to_string()
                } else {
                    "–".into()
                },
                errors(&c.errors)
            );
        }
        let _ = writeln!(o);
    }
    if !r.resume.is_empty() {
        let _ = writeln!(
            o,
            "Resume: {} clients each ask {} answers ({} tokens {} ms apart, numbered, so each answer's text is checked token by token against what the mock sent). In the runs with cuts, {} % of the answers (then, to make the cost of one resume stand out of the machine's noise, all of them) lose their connection mid-answer (dropped without a word, FIN or reset, at a token count picked per answer) and resume from the last event read: SSE with `Last-Event-ID`, alternately on `/api/v1/answers/{{id}}/stream` and on the URL that asked; plain WebSocket on a new socket with `{{\"type\":\"resume\"}}`. The kinds of run alternate; CPU is the hub's over the whole run, per token received; `resume` is from the drop to the first event on the new connection (a token comes every {} ms).\n",
            s.resume_streams,
            s.resume_answers,
            s.tokens_per_answer,
            s.pace_ms,
            s.resume_drop_pct,
            s.pace_ms
        );
        let _ = writeln!(
            o,
            "| path | cut | answers | cut / resumed | tokens lost | tokens repeated | texts not exact | resume p50 / p99 / max ms | frames per token | µs CPU per token | errors | other load |"
        );
        let _ = writeln!(
            o,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for x in &r.resume {
            let _ = writeln!(
                o,
                "| {} | {} % | {} | {} / {} | {} | {} | {} | {} | {:.2} | {:.1} | {} | {:.0} % |",
                x.target,
                x.drop_pct,
                x.answers,
                x.dropped,
                x.resumed,
                x.tokens_lost,
                x.tokens_repeated,
                x.answers_not_exact,
                if x.dropped > 0 {
                    format!(
                        "{:.1} / {:.1} / {:.1}",
                        x.resume_ms.p50, x.resume_ms.p99, x.resume_ms_max
                    )
                } else {
                    "–".into()
                },
                x.frames as f64 / x.tokens.max(1) as f64,
                x.cpu_us_per_token,
                errors(&x.errors),
                x.other_cpu_s / x.seconds.max(1e-9) / r.machine.cores as f64 * 100.0
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "| path | µs CPU per token without cuts | with {0} % cut | added (measured) | µs CPU per resume (all runs with cuts) | added at {0} % (from the cost per resume) | cut / resumed | tokens lost / repeated |",
            s.resume_drop_pct
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for x in &r.resume_summary {
            let _ = writeln!(
                o,
                "| {} | {:.1} | {:.1} | {:+.1} % | {:.0} | {:+.1} % | {} / {} | {} / {} |",
                x.target,
                x.cpu_us_per_token_without,
                x.cpu_us_per_token_with,
                x.added_cpu_share * 100.0,
                x.cpu_us_per_resume,
                x.predicted_added_share * 100.0,
                x.dropped,
                x.resumed,
                x.tokens_lost,
                x.tokens_repeated
            );
        }
        let _ = writeln!(o);
    }
    if !r.lag.is_empty() {
        let _ = writeln!(
            o,
            "Lagging clients: {} clients each ask one answer of {} tokens {} ms apart (numbered and checked), over sockets with a {} KiB receive buffer and a {}-byte segment size (as across a real network rather than loopback's 64 KiB segments). `fast` readers read whatever arrives; `lagging` ones read at most {} bytes every {} ms ({:.0} KB/s, slower than the answer comes). CPU is the hub's over the whole run, per token received; frames are the token-carrying frames the clients received.\n",
            s.lag_streams,
            s.lag_tokens,
            s.lag_pace_ms,
            s.lag.recv_buffer / 1024,
            s.lag.mss,
            s.lag.read_bytes,
            s.lag.pause.as_millis(),
            s.lag.read_bytes as f64 / s.lag.pause.as_secs_f64().max(1e-9) / 1000.0
        );
        if r.machine.tcp_notsent_lowat < u64::from(u32::MAX) {
            let _ = writeln!(
                o,
                "This run's network namespace had `net.ipv4.tcp_notsent_lowat = {}`: a socket takes at most that much unsent data before its writer sees it full (what a server gets by setting `TCP_NOTSENT_LOWAT` on its sockets).\n",
                r.machine.tcp_notsent_lowat
            );
        }
        let _ = writeln!(
            o,
            "| path | readers | answers | seconds | frames per token | µs CPU per token | tokens lost / repeated | errors | other load |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---|---:|");
        for x in &r.lag {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1} | {:.3} | {:.1} | {} / {} | {} | {:.0} % |",
                x.target,
                x.reader,
                x.answers,
                x.seconds,
                x.frames_per_token,
                x.cpu_us_per_token,
                x.tokens_lost,
                x.tokens_repeated,
                errors(&x.errors),
                x.other_cpu_s / x.seconds.max(1e-9) / r.machine.cores as f64 * 100.0
            );
        }
        let _ = writeln!(o);
    }
    if !r.idle.is_empty() || !r.held.is_empty() {
        let _ = writeln!(
            o,
            "Memory (RSS deltas of a freshly started process). Idle: connections open, nothing streaming (hub: WebSocket upgraded; relay: keep-alive TCP). Held: {} streams at once, {} ms per token, {} tokens each.\n",
            s.held_streams, s.held_pace_ms, s.held_tokens
        );
        let _ = writeln!(
            o,
            "| path | scenario | count | per connection | per stream (beyond its connection) | held at once | errors | µs CPU per token |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---|---:|");
        for i in &r.idle {
            let _ = writeln!(
                o,
                "| {} | idle | {} of {} | {:.1} KiB | – | – | {} | – |",
                i.target,
                i.opened,
                i.wanted,
                i.bytes_per_connection / 1024.0,
                errors(&i.errors)
            );
        }
        for h in &r.held {
            let _ = writeln!(
                o,
                "| {} | held | {} | {:.1} KiB with its stream | {} | {} | {} | {:.1} |",
                h.target,
                h.streams,
                h.bytes_per_connection_and_stream / 1024.0,
                h.bytes_per_stream
                    .map(|b| format!("{:.1} KiB", b / 1024.0))
                    .unwrap_or_else(|| "–".into()),
                h.held_at_once,
                errors(&h.errors),
                h.cpu_us_per_token
            );
        }
        let _ = writeln!(o);
    }
    if let Some(c) = &r.cluster {
        let _ = write!(o, "{}", crate::run::cluster_markdown(c, r.machine.cores));
    }
    if !r.checks.is_empty() {
        let _ = writeln!(o, "| target | goal | measured | met |");
        let _ = writeln!(o, "|---|---|---|---|");
        for c in &r.checks {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                c.target,
                c.goal,
                c.measured,
                if c.met { "yes" } else { "**no**" }
            );
        }
    }
    o
}
