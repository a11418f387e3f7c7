//! The scenarios of answers that outlive their connection: what resuming costs, and what a
//! client that reads slowly costs.
//!
//! Both run a fixed number of answers (every client asks its answers, one after another,
//! then stops) rather than a window, and take the hub's CPU over the whole run: every token
//! the mock sent is then a token some client read, so CPU per token compares runs whose
//! clients read at different speeds. Every answer's text is checked against the mock's
//! numbered tokens ([`crate::resume`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{pct_ms, Ctx, Pct};
use crate::client::{Check, Lag, Load, Stats, Target, Window};
use crate::mock::MockConfig;

/// One run of the resume scenario: `drop_pct` of the answers cut and resumed.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeRun {
    pub target: &'static str,
    pub drop_pct: u32,
    pub streams: usize,
    pub answers_per_client: u32,
    pub answers: u64,
    pub tokens: u64,
    pub frames: u64,
    pub dropped: u64,
    pub resumed: u64,
    pub tokens_expected: u64,
    pub tokens_lost: u64,
    pub tokens_repeated: u64,
    /// Answers whose text was not exactly the mock's.
    pub answers_not_exact: u64,
    /// From the drop to the first event on the new connection.
    pub resume_ms: Pct,
    pub resume_ms_max: f64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub cpu_s: f64,
    pub cpu_us_per_token: f64,
    pub other_cpu_s: f64,
}

/// Per transport: the runs without drops against those with.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeSummary {
    pub target: &'static str,
    pub drop_pct: u32,
    pub cpu_us_per_token_without: f64,
    pub cpu_us_per_token_with: f64,
    /// (with − without) ÷ without.
    pub added_cpu_share: f64,
    /// The hub's CPU of the runs with cuts (all of them, the runs where every answer is
    /// cut weigh most) beyond what their tokens cost without, per resume: what one cut and
    /// resume costs.
    pub cpu_us_per_resume: f64,
    /// What `cpu_us_per_resume` makes of `drop_pct`: the added share it predicts.
    pub predicted_added_share: f64,
    pub resumed: u64,
    pub dropped: u64,
    pub tokens_lost: u64,
    pub tokens_repeated: u64,
    pub answers_checked: u64,
    pub errors: u64,
}

/// One run of the lagging-clients scenario.
#[derive(Debug, Clone, Serialize)]
pub struct LagRun {
    pub target: &'static str,
    /// `fast` or `lagging`.
    pub reader: &'static str,
    pub streams: usize,
    pub answers: u64,
    pub tokens: u64,
    /// Frames that carried tokens, as the clients received them.
    pub frames: u64,
    pub frames_per_token: f64,
    pub tokens_lost: u64,
    pub tokens_repeated: u64,
    pub errors: BTreeMap<String, u64>,
    /// From the first request to the last answer's end.
    pub seconds: f64,
    pub cpu_s: f64,
    pub cpu_us_per_token: f64,
    pub other_cpu_s: f64,
}

/// What a fixed run measured.
struct Measured {
    stats: Stats,
    seconds: f64,
    cpu_s: f64,
    other_cpu_s: f64,
}

/// Runs `streams` clients of `spec` to their end (or `limit`), the hub's CPU over it all.
async fn fixed(
    ctx: &Ctx,
    spec: crate::client::Spec,
    streams: usize,
    stagger: Duration,
    limit: Duration,
) -> Result<Measured, String> {
    ctx.settle(Duration::from_secs(15)).await;
    let target = spec.target;
    let a = super::snapshot(ctx, target);
    let t0 = Instant::now();
    let load = Load::start(spec, streams, stagger, Window::always());
    let (stats, late) = load.join_within(limit).await;
    let seconds = t0.elapsed().as_secs_f64();
    let b = super::snapshot(ctx, target);
    if late {
        return Err(format!(
            "{}: the clients did not finish in {} s",
            target.name(),
            limit.as_secs()
        ));
    }
    let cpu_s = match (a.target_cpu, b.target_cpu) {
        (Some(x), Some(y)) => y - x,
        _ => 0.0,
    };
    Ok(Measured {
        other_cpu_s: ((b.machine_busy - a.machine_busy)
            - cpu_s
            - (b.mock_cpu - a.mock_cpu)
            - (b.self_cpu - a.self_cpu))
            .max(0.0),
        stats,
        seconds,
        cpu_s,
    })
}

fn per_token(cpu_s: f64, tokens: u64) -> f64 {
    if tokens == 0 {
        return f64::NAN;
    }
    cpu_s / tokens as f64 * 1e6
}

/// Resume cost: per transport, runs without cuts, with `drop_pct` of the answers cut and
/// resumed, and with every answer cut (which makes the cost of one resume stand out of the
/// machine's noise), interleaved (`rounds` of each), the same answers otherwise.
pub async fn resume_cost(
    ctx: &Ctx,
    questions: &Arc<Vec<String>>,
) -> Result<(Vec<ResumeRun>, Vec<ResumeSummary>), String> {
    let s = &ctx.settings;
    ctx.set_mock(MockConfig {
        tokens: s.tokens_per_answer,
        pace_us: (s.pace_ms * 1000.0) as u64,
        ttft_us: (s.ttft_ms * 1000.0) as u64,
        numbered: true,
    })
    .await?;
    let answer =
        Duration::from_secs_f64((s.ttft_ms + s.pace_ms * f64::from(s.tokens_per_answer)) / 1000.0);
    let limit = answer * (s.resume_answers + 2) + Duration::from_secs(60);
    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    for target in [Target::HubSse, Target::HubWs] {
        let mut mine = Vec::new();
        for _ in 0..s.resume_rounds {
            let mut kinds = vec![0, s.resume_drop_pct, 100];
            kinds.dedup();
            for drop_pct in kinds {
                let mut spec = ctx.spec(target, questions);
                spec.answers = Some(s.resume_answers);
                spec.check = Some(Check {
                    tokens: s.tokens_per_answer,
                    drop_pct,
                });
                let m = fixed(ctx, spec, s.resume_streams, answer, limit).await?;
                let r = resume_run(target, drop_pct, s.resume_streams, s.resume_answers, m);
                eprintln!(
                    "resume {:<7} drops {:>2} %: {} answers, {} cut, {} resumed, lost {} repeated {}, not exact {}, {:.1} µs CPU per token, {:.2} frames per token, resume p50 {:.1} ms, errors {:?}",
                    r.target,
                    r.drop_pct,
                    r.answers,
                    r.dropped,
                    r.resumed,
                    r.tokens_lost,
                    r.tokens_repeated,
                    r.answers_not_exact,
                    r.cpu_us_per_token,
                    r.frames as f64 / r.tokens.max(1) as f64,
                    r.resume_ms.p50,
                    r.errors
                );
                mine.push(r);
            }
        }
        summaries.push(summarise(target, s.resume_drop_pct, &mine));
        runs.extend(mine);
    }
    Ok((runs, summaries))
}

fn resume_run(
    target: Target,
    drop_pct: u32,
    streams: usize,
    answers_per_client: u32,
    m: Measured,
) -> ResumeRun {
    let mut t = m.stats.text;
    let resume_ms_max = t.resume_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
    ResumeRun {
        target: target.name(),
        drop_pct,
        streams,
        answers_per_client,
        answers: m.stats.answers_all,
        tokens: m.stats.tokens,
        frames: m.stats.frames,
        dropped: t.dropped,
        resumed: t.resumed,
        tokens_expected: t.tokens_expected,
        tokens_lost: t.tokens_lost,
        tokens_repeated: t.tokens_repeated,
        answers_not_exact: t.answers - t.exact,
        resume_ms: pct_ms(&mut t.resume_us),
        resume_ms_max,
        errors: m.stats.errors,
        seconds: m.seconds,
        cpu_s: m.cpu_s,
        cpu_us_per_token: per_token(m.cpu_s, m.stats.tokens),
        other_cpu_s: m.other_cpu_s,
    }
}

fn summarise(target: Target, drop_pct: u32, runs: &[ResumeRun]) -> ResumeSummary {
    let sum = |which: &dyn Fn(u32) -> bool, f: &dyn Fn(&ResumeRun) -> f64| -> f64 {
        runs.iter().filter(|r| which(r.drop_pct)).map(f).sum()
    };
    let none = |p: u32| p == 0;
    let this = |p: u32| p == drop_pct;
    let any = |p: u32| p > 0;
    let without = per_token(
        sum(&none, &|r| r.cpu_s),
        sum(&none, &|r| r.tokens as f64) as u64,
    );
    let with = per_token(
        sum(&this, &|r| r.cpu_s),
        sum(&this, &|r| r.tokens as f64) as u64,
    );
    let cut_tokens = sum(&any, &|r| r.tokens as f64);
    let cut_cpu = sum(&any, &|r| r.cpu_s);
    let resumed = sum(&any, &|r| r.resumed as f64) as u64;
    let per_resume = if resumed > 0 {
        (cut_cpu * 1e6 - without * cut_tokens) / resumed as f64
    } else {
        f64::NAN
    };
    let this_resumed = sum(&this, &|r| r.resumed as f64);
    let this_tokens = sum(&this, &|r| r.tokens as f64);
    let count = |f: &dyn Fn(&ResumeRun) -> u64| runs.iter().map(f).sum::<u64>();
    ResumeSummary {
        target: target.name(),
        drop_pct,
        cpu_us_per_token_without: without,
        cpu_us_per_token_with: with,
        added_cpu_share: with / without - 1.0,
        cpu_us_per_resume: per_resume,
        predicted_added_share: per_resume * this_resumed / (without * this_tokens),
        resumed,
        dropped: count(&|r| r.dropped),
        tokens_lost: count(&|r| r.tokens_lost),
        tokens_repeated: count(&|r| r.tokens_repeated),
        answers_checked: count(&|r| r.answers),
        errors: count(&|r| r.errors.values().sum()),
    }
}

/// Lagging clients: per transport, the same answers read by clients that read at once and
/// by clients that read slowly (`Settings::lag`), over the same narrow sockets.
pub async fn lagging(ctx: &Ctx, questions: &Arc<Vec<String>>) -> Result<Vec<LagRun>, String> {
    let s = &ctx.settings;
    ctx.set_mock(MockConfig {
        tokens: s.lag_tokens,
        pace_us: (s.lag_pace_ms * 1000.0) as u64,
        ttft_us: (s.ttft_ms * 1000.0) as u64,
        numbered: true,
    })
    .await?;
    let answer =
        Duration::from_secs_f64((s.ttft_ms + s.lag_pace_ms * f64::from(s.lag_tokens)) / 1000.0);
    let fast = Lag {
        pause: Duration::ZERO,
        read_bytes: 64 * 1024,
        ..s.lag
    };
    let mut runs = Vec::new();
    for target in [Target::HubSse, Target::HubWs] {
        for (reader, lag) in [("fast", fast), ("lagging", s.lag)] {
            let mut spec = ctx.spec(target, questions);
            spec.answers = Some(1);
            spec.lag = Some(lag);
            spec.check = Some(Check {
                tokens: s.lag_tokens,
                drop_pct: 0,
            });
            let m = fixed(ctx, spec, s.lag_streams, answer, Duration::from_secs(300)).await?;
            let t = &m.stats.text;
            let r = LagRun {
                target: target.name(),
                reader,
                streams: s.lag_streams,
                answers: m.stats.answers_all,
                tokens: m.stats.tokens,
                frames: m.stats.frames,
                frames_per_token: m.stats.frames as f64 / m.stats.tokens.max(1) as f64,
                tokens_lost: t.tokens_lost,
                tokens_repeated: t.tokens_repeated,
                errors: m.stats.errors.clone(),
                seconds: m.seconds,
                cpu_s: m.cpu_s,
                cpu_us_per_token: per_token(m.cpu_s, m.stats.tokens),
                other_cpu_s: m.other_cpu_s,
            };
            eprintln!(
                "lag {:<7} {:<7}: {} answers in {:.1} s, {:.3} frames per token, {:.1} µs CPU per token, lost {} repeated {}, errors {:?}",
                r.target,
                r.reader,
                r.answers,
                r.seconds,
                r.frames_per_token,
                r.cpu_us_per_token,
                r.tokens_lost,
                r.tokens_repeated,
                r.errors
            );
            runs.push(r);
        }
    }
    Ok(runs)
}
