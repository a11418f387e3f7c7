//! The one ChatHub actor: admission against per-user and global limits, the registry of
//! sessions, and the counters behind the admin view.
//!
//! It runs on an arbiter of its own, so no worker's load delays an admission, and it only
//! ever handles a few messages per answer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use std::sync::Arc;

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{
    Actor, ActorResponse, Addr, Arbiter, AsyncContext, Context, Handler, MessageResult, Recipient,
};
use serde::Serialize;

use super::history::{History, HistoryView, SAMPLE_INTERVAL};
use super::lease::Lease;
use crate::cluster::views::VIEW_INTERVAL;
use crate::cluster::{Admission, Cluster, ClusterError, LeaseMember};

use super::messages::{
    AdminView, Admit, AdmitError, Attach, BeginDrain, Connect, ConnectionInfo, Disconnect,
    EndBrowserSession, EndConnection, EndStream, GetAdminView, GetHistory, GetStats, Identify,
    ListConnections, Metrics, Outcome, Progress, Release, RevokeKey, StreamInfo, Terminate,
    TerminateWebSockets, UnwatchKey, WatchKey,
};
use crate::answer::StopReason;
use crate::rate_limit::{Limited, RateLimits};
use crate::store::usage::{now_ms, UsageRecord};
use crate::telemetry::{self, AnswerEnd};
use crate::usage::UsageRecorder;

/// Time-to-first-token samples kept for the percentiles.
const TTFT_SAMPLES: usize = 256;
/// Window of the tokens-per-second figure.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How long a signed-out browser session is refused a connection: longer than a ticket or
/// SignalR token minted with it lives, and than a request takes from its authentication to
/// its connection.
const SIGNED_OUT_MEMORY: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Limits {
    pub per_user: usize,
    pub global: usize,
    /// Answers a key may start per minute (admissions counted, resumes not).
    pub rate: Arc<RateLimits>,
    /// Time between two samples of the admin page's charts.
    pub sample_interval: Duration,
}

struct ActiveStream {
    user: String,
    tenant: String,
    session_id: Option<u64>,
    transport: &'static str,
    started: Instant,
    /// Set once the answer task exists; lets an administrator end it.
    abort: Option<futures_util::future::AbortHandle>,
    /// Set with `abort`: the answer's id and whether anyone reads it.
    answer: Option<std::sync::Arc<crate::answer::AnswerEntry>>,
    /// The lease in Redis, in a cluster: renewed while the answer runs, removed at release.
    cluster_lease: Option<LeaseMember>,
}

/// Rolling figures fed by the outcomes that come back with each release.
#[derive(Default)]
struct MetricsState {
    answers_total: u64,
    cancelled_total: u64,
    errors_by_code: BTreeMap<String, u64>,
    ttft_ms: VecDeque<u64>,
    recent_tokens: VecDeque<(Instant, u64)>,
}

impl MetricsState {
    fn record(&mut self, outcome: Option<Outcome>) {
        let Some(outcome) = outcome else {
            self.cancelled_total += 1;
            return;
        };
        self.answers_total += 1;
        if let Some(code) = outcome.error_code {
            *self.errors_by_code.entry(code).or_default() += 1;
        }
        if let Some(ttft) = outcome.ttft_ms {
            if self.ttft_ms.len() == TTFT_SAMPLES {
                self.ttft_ms.pop_front();
            }
            self.ttft_ms.push_back(ttft);
        }
        let now = Instant::now();
        self.recent_tokens.push_back((now, outcome.tokens));
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while let Some((at, _)) = self.recent_tokens.front() {
            if now.duration_since(*at) <= RATE_WINDOW {
                break;
            }
            self.recent_tokens.pop_front();
        }
    }

    fn snapshot(&mut self) -> Metrics {
        self.trim(Instant::now());
        let mut sorted: Vec<u64> = self.ttft_ms.iter().copied().collect();
        sorted.sort_unstable();
        let pct = |p: usize| (!sorted.is_empty()).then(|| sorted[(sorted.len() - 1) * p / 100]);
        let tokens: u64 = self.recent_tokens.iter().map(|(_, n)| n).sum();
        Metrics {
            answers_total: self.answers_total,
            cancelled_total: self.cancelled_total,
            errors_by_code: self.errors_by_code.clone(),
            ttft_ms_p50: pct(50),
            ttft_ms_p95: pct(95),
            tokens_per_second: tokens as f64 / RATE_WINDOW.as_secs_f64(),
        }
    }
}

/// One tenant's counters and metrics, for its admins' view.
#[derive(Default)]
struct TenantTally {
    admitted: u64,
    refused: u64,
    released: u64,
    metrics: MetricsState,
    /// Its answers streaming now (for its charts' peak, without a walk of every stream).
    streaming: usize,
    history: History,
}

/// How an answer ended, as (outcome, code): `done` (code `none`), `error` with its code, or
/// `cancelled`. An answer cut short has no outcome: who stopped it is read from its abort
/// handle (an administrator or a revocation) and its stop reason.
fn ending<'a>(stream: &ActiveStream, release: &'a Release) -> (&'static str, &'a str) {
    match &release.outcome {
        Some(Outcome {
            error_code: None, ..
        }) => ("done", "none"),
        Some(Outcome {
            error_code: Some(code),
            ..
        }) => ("error", code.as_str()),
        None if stream.abort.as_ref().is_some_and(|a| a.is_aborted()) => {
            ("cancelled", "ended_by_admin")
        }
        None => match stream.answer.as_ref().map(|a| a.reason()) {
            Some(StopReason::Abandoned) => ("cancelled", "abandoned"),
            Some(StopReason::SignedOut) => ("cancelled", "signed_out"),
            _ => ("cancelled", "cancelled"),
        },
    }
}

/// Tells the metrics how an answer ended.
fn record_end(stream: &ActiveStream, release: &Release) {
    let (outcome, code) = ending(stream, release);
    let progress = &release.progress;
    let ttft_ms = release
        .outcome
        .as_ref()
        .and_then(|o| o.ttft_ms)
        .or(progress.ttft_ms);
    telemetry::answer_ended(&AnswerEnd {
        transport: stream.transport,
        provider: progress.provider.unwrap_or("none"),
        outcome,
        code,
        ttft: ttft_ms.map(Duration::from_millis),
        elapsed: stream.started.elapsed(),
        tokens: progress.tokens,
    });
}

/// What an answer used, for usage accounting; `None` for a slot released before any answer
/// started (no provider was asked).
fn usage_record(stream: &ActiveStream, release: &Release) -> Option<UsageRecord> {
    let progress = &release.progress;
    let provider = progress.provider?;
    let (outcome, code) = ending(stream, release);
    let (output_tokens, ttft_ms, duration_ms) = match &release.outcome {
        Some(o) => (o.tokens, o.ttft_ms, o.elapsed_ms),
        None => (
            progress.output_tokens(),
            progress.ttft_ms,
            stream.started.elapsed().as_millis() as u64,
        ),
    };
    let answer = stream.answer.as_deref();
    Some(UsageRecord {
        answer_id: answer.map(|a| a.id().to_string()).unwrap_or_default(),
        ended_at_ms: now_ms(),
        tenant_id: stream.tenant.clone(),
        key_id: stream.user.clone(),
        transport: stream.transport,
        provider: provider.to_owned(),
        model: progress.model.as_deref().unwrap_or("").to_owned(),
        input_tokens: progress.input_tokens,
        input_reported: progress.input_reported,
        output_tokens,
        output_reported: progress.reported_output.is_some(),
        ttft_ms,
        duration_ms,
        outcome,
        error_code: (code != "none").then(|| code.to_owned()),
        detached: answer.is_some_and(|a| a.was_detached()),
        resumed: answer.is_some_and(|a| a.was_resumed()),
    })
}

/// Whether a registry entry is visible to an admin scoped to `tenant` (`None`: every tenant).
fn in_scope(tenant: Option<&str>, of: &str) -> bool {
    tenant.is_none_or(|t| t == of)
}

struct SessionInfo {
    kind: &'static str,
    protocol: Option<&'static str>,
    user: String,
    tenant: String,
    /// The browser session it was opened with, if any.
    browser_session: Option<String>,
    since: Instant,
    terminate: Recipient<Terminate>,
}

#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubStats {
    pub connections: usize,
    pub ws_connections: usize,
    pub sse_connections: usize,
    pub active_streams: usize,
    pub streams_by_user: BTreeMap<String, usize>,
    pub streams_by_tenant: BTreeMap<String, usize>,
    pub connections_by_tenant: BTreeMap<String, usize>,
    pub admitted_total: u64,
    pub refused_total: u64,
    pub released_total: u64,
}

struct Watcher {
    key_id: String,
    browser_session: Option<String>,
    terminate: Recipient<Terminate>,
}

pub struct ChatHub {
    limits: Limits,
    sessions: HashMap<u64, SessionInfo>,
    streams: HashMap<u64, ActiveStream>,
    per_user: HashMap<String, usize>,
    next_lease: u64,
    admitted_total: u64,
    refused_total: u64,
    released_total: u64,
    metrics: MetricsState,
    /// The charts of the whole hub; each tenant's are in its tally.
    history: History,
    tenants: HashMap<String, TenantTally>,
    /// Responses that end when their key is revoked (the admin event feed), by watch id.
    watchers: HashMap<u64, Watcher>,
    /// Browser sessions signed out lately, and when; see [`EndBrowserSession`].
    signed_out: HashMap<String, Instant>,
    /// Keys revoked while this hub runs; see [`RevokeKey`].
    revoked: HashSet<String>,
    /// Set by [`BeginDrain`]: no new answers.
    draining: bool,
    /// In a cluster, admission is decided in Redis (limits across every hub).
    cluster: Option<Arc<Cluster>>,
    /// A renewal is in flight; the next tick skips rather than piling up on a slow Redis.
    renewing: bool,
    /// Where each released answer's usage goes, and the budgets admission checks.
    usage: UsageRecorder,
}

impl ChatHub {
    pub fn new(mut limits: Limits, cluster: Option<Arc<Cluster>>) -> Self {
        // A zero interval would spin the hub's thread; the settings refuse one, but not
        // every caller comes through them.
        if limits.sample_interval.is_zero() {
            limits.sample_interval = SAMPLE_INTERVAL;
        }
        ChatHub {
            limits,
            sessions: HashMap::new(),
            streams: HashMap::new(),
            per_user: HashMap::new(),
            next_lease: 1,
            admitted_total: 0,
            refused_total: 0,
            released_total: 0,
            metrics: MetricsState::default(),
            history: History::default(),
            tenants: HashMap::new(),
            watchers: HashMap::new(),
            signed_out: HashMap::new(),
            revoked: HashSet::new(),
            draining: false,
            cluster,
            renewing: false,
            usage: UsageRecorder::off(),
        }
    }

    fn tally(&mut self, tenant: &str) -> &mut TenantTally {
        self.tenants.entry(tenant.to_owned()).or_default()
    }

    /// The counters of one tenant, or of the whole hub (`None`).
    fn stats(&self, tenant: Option<&str>) -> HubStats {
        let sessions = || {
            self.sessions
                .values()
                .filter(move |s| in_scope(tenant, &s.tenant))
        };
        let streams = || {
            self.streams
                .values()
                .filter(move |s| in_scope(tenant, &s.tenant))
        };
        let (admitted_total, refused_total, released_total) = match tenant {
            None => (self.admitted_total, self.refused_total, self.released_total),
            Some(t) => self
                .tenants
                .get(t)
                .map_or((0, 0, 0), |t| (t.admitted, t.refused, t.released)),
        };
        let mut stats = HubStats {
            connections: sessions().count(),
            ws_connections: sessions().filter(|s| s.kind == "ws").count(),
            sse_connections: sessions().filter(|s| s.kind == "sse").count(),
            active_streams: streams().count(),
            admitted_total,
            refused_total,
            released_total,
            ..HubStats::default()
        };
        for s in sessions() {
            *stats
                .connections_by_tenant
                .entry(s.tenant.clone())
                .or_default() += 1;
        }
        for s in streams() {
            *stats.streams_by_user.entry(s.user.clone()).or_default() += 1;
            *stats.streams_by_tenant.entry(s.tenant.clone()).or_default() += 1;
        }
        stats
    }

    fn metrics(&mut self, tenant: Option<&str>) -> Metrics {
        match tenant {
            None => self.metrics.snapshot(),
            Some(t) => self
                .tenants
                .get_mut(t)
                .map(|t| t.metrics.snapshot())
                .unwrap_or_default(),
        }
    }

    fn connections(&self, tenant: Option<&str>) -> Vec<ConnectionInfo> {
        let mut per_session: HashMap<u64, usize> = HashMap::new();
        for s in self.streams.values() {
            if let Some(id) = s.session_id {
                *per_session.entry(id).or_default() += 1;
            }
        }
        let mut list: Vec<ConnectionInfo> = self
            .sessions
            .iter()
            .filter(|(_, s)| in_scope(tenant, &s.tenant))
            .map(|(id, s)| ConnectionInfo {
                id: *id,
                hub: self.hub_name(),
                kind: s.kind,
                protocol: s.protocol,
                user: s.user.clone(),
                tenant: s.tenant.clone(),
                active_streams: per_session.get(id).copied().unwrap_or(0),
                connected_ms: s.since.elapsed().as_millis() as u64,
            })
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    fn streams(&self, tenant: Option<&str>) -> Vec<StreamInfo> {
        let mut list: Vec<StreamInfo> = self
            .streams
            .iter()
            .filter(|(_, s)| in_scope(tenant, &s.tenant))
            .map(|(id, s)| StreamInfo {
                id: *id,
                hub: self.hub_name(),
                user: s.user.clone(),
                tenant: s.tenant.clone(),
                session_id: s.session_id,
                transport: s.transport,
                age_ms: s.started.elapsed().as_millis() as u64,
                answer_id: s.answer.as_ref().map(|a| a.id().to_string()),
                detached: s.answer.as_ref().is_some_and(|a| a.subscribers() == 0),
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Ends the running answers of a revoked key: each ends with an error event (the
    /// client hears why) and releases its slot. Returns the connections those answers
    /// stream to. Answers admitted but not yet attached are ended when they attach.
    fn end_running_answers_of(&self, key_id: &str) -> HashSet<u64> {
        let mut sessions = HashSet::new();
        for stream in self.streams.values().filter(|s| s.user == key_id) {
            if let Some(abort) = &stream.abort {
                abort.abort();
                sessions.extend(stream.session_id);
            }
        }
        sessions
    }

    /// Whether a connection opened with this browser session comes after its sign-out.
    fn was_signed_out(&self, session: Option<&str>) -> bool {
        session
            .and_then(|s| self.signed_out.get(s))
            .is_some_and(|at| at.elapsed() < SIGNED_OUT_MEMORY)
    }

    /// Starts the hub on a thread of its own, without usage accounting.
    pub fn spawn(limits: Limits, cluster: Option<Arc<Cluster>>) -> Addr<ChatHub> {
        Self::spawn_with_usage(limits, cluster, UsageRecorder::off())
    }

    /// Starts the hub on a thread of its own; released answers are accounted to `usage`,
    /// and admissions checked against its budgets.
    pub fn spawn_with_usage(
        limits: Limits,
        cluster: Option<Arc<Cluster>>,
        usage: UsageRecorder,
    ) -> Addr<ChatHub> {
        let arbiter = Arbiter::new();
        ChatHub::start_in_arbiter(&arbiter.handle(), move |_| ChatHub {
            usage,
            ..ChatHub::new(limits, cluster)
        })
    }

    /// Closes the charts' interval, of the hub and of every tenant.
    fn take_samples(&mut self) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let interval = self.limits.sample_interval;
        self.history.close(at, interval, self.streams.len());
        for tally in self.tenants.values_mut() {
            tally.history.close(at, interval, tally.streaming);
        }
    }

    fn history(&self, tenant: Option<&str>, after: Option<u64>) -> HistoryView {
        let samples = match tenant {
            None => self.history.since(after),
            Some(t) => self
                .tenants
                .get(t)
                .map(|t| t.history.since(after))
                .unwrap_or_default(),
        };
        HistoryView {
            interval_ms: self.limits.sample_interval.as_millis() as u64,
            samples,
        }
    }

    fn hub_name(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.hub_id().to_string())
    }

    fn refuse(&mut self, tenant: &str, error: AdmitError) -> Result<Lease, AdmitError> {
        telemetry::admission_refused(match error {
            AdmitError::PerUser { .. } => "per_user_limit",
            AdmitError::Global { .. } => "global_limit",
            AdmitError::RateLimited(_) => "rate_limited",
            AdmitError::KeyRevoked => "key_revoked",
            AdmitError::ShuttingDown => "shutting_down",
            AdmitError::ClusterUnavailable => "cluster_unavailable",
            AdmitError::BudgetExceeded(_) => "budget_exceeded",
        });
        self.refused_total += 1;
        self.tally(tenant).refused += 1;
        Err(error)
    }

    /// Admission by this hub's own counts (no cluster).
    fn admit_locally(&mut self, msg: Admit, ctx: &mut Context<Self>) -> Result<Lease, AdmitError> {
        if self.streams.len() >= self.limits.global {
            let limit = self.limits.global;
            return self.refuse(&msg.tenant, AdmitError::Global { limit });
        }
        if self.per_user.get(&msg.user).copied().unwrap_or(0) >= self.limits.per_user {
            let limit = self.limits.per_user;
            return self.refuse(&msg.tenant, AdmitError::PerUser { limit });
        }
        // After the concurrency limits, so a request refused for those costs no rate.
        if let Err(limited) = self.limits.rate.check(Limited::Answers, &msg.user) {
            return self.refuse(&msg.tenant, AdmitError::RateLimited(limited));
        }
        Ok(self.register(msg, None, ctx))
    }

    /// What the cluster's admission script decided, applied to this hub's registry.
    fn admitted_by_cluster(
        &mut self,
        verdict: Result<Admission, ClusterError>,
        msg: Admit,
        ctx: &mut Context<Self>,
    ) -> Result<Lease, AdmitError> {
        let (per_user, global) = (self.limits.per_user, self.limits.global);
        match verdict {
            Ok(Admission::Admitted(member)) if self.revoked.contains(&msg.user) => {
                // Revoked while the script ran.
                self.release_in_cluster(member);
                Err(AdmitError::KeyRevoked)
            }
            Ok(Admission::Admitted(member)) => Ok(self.register(msg, Some(member), ctx)),
            Ok(Admission::PerUser) => {
                self.refuse(&msg.tenant, AdmitError::PerUser { limit: per_user })
            }
            Ok(Admission::Global) => self.refuse(&msg.tenant, AdmitError::Global { limit: global }),
            Ok(Admission::KeyRevoked) => Err(AdmitError::KeyRevoked),
            Err(e) => {
                log::warn!("admission: {e}");
                Err(AdmitError::ClusterUnavailable)
            }
        }
    }

    fn register(
        &mut self,
        msg: Admit,
        cluster_lease: Option<LeaseMember>,
        ctx: &mut Context<Self>,
    ) -> Lease {
        *self.per_user.entry(msg.user.clone()).or_insert(0) += 1;
        telemetry::answer_started(msg.transport);
        let id = self.next_lease;
        self.next_lease += 1;
        self.admitted_total += 1;
        let tally = self.tally(&msg.tenant);
        tally.admitted += 1;
        tally.streaming += 1;
        let streaming = tally.streaming;
        tally.history.streaming(streaming);
        // The new stream is inserted below.
        self.history.streaming(self.streams.len() + 1);
        self.streams.insert(
            id,
            ActiveStream {
                user: msg.user,
                tenant: msg.tenant,
                session_id: msg.session_id,
                transport: msg.transport,
                started: Instant::now(),
                abort: None,
                answer: None,
                cluster_lease,
            },
        );
        Lease {
            id,
            hub: ctx.address(),
            outcome: None,
            progress: Progress::default(),
        }
    }

    /// Off the hub's thread: a slow Redis delays the release, never the hub. A release
    /// that fails is left to the lease's expiry.
    fn release_in_cluster(&self, member: LeaseMember) {
        if let Some(cluster) = self.cluster.clone() {
            actix::spawn(async move {
                if let Err(e) = cluster.release(&member).await {
                    log::warn!("a lease could not be released (it expires on its own): {e}");
                }
            });
        }
    }

    /// Lets admins on other hubs list this hub's streams and connections.
    fn publish_view(&mut self) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let view = serde_json::json!({
            "streams": self.streams(None),
            "connections": self.connections(None),
        })
        .to_string();
        actix::spawn(async move {
            if let Err(e) = cluster.put_view(view).await {
                log::debug!("the hub's view was not published: {e}");
            }
        });
    }

    /// Extends every lease this hub holds, in one round trip.
    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if self.renewing {
            return;
        }
        let leases: Vec<LeaseMember> = self
            .streams
            .values()
            .filter_map(|s| s.cluster_lease.clone())
            .collect();
        if leases.is_empty() {
            return;
        }
        self.renewing = true;
        let renewal = async move { cluster.renew(&leases).await };
        ctx.spawn(renewal.into_actor(self).map(|result, act, _| {
            act.renewing = false;
            match result {
                Ok(0) => {}
                Ok(lost) => log::warn!("{lost} lease(s) had expired before their renewal"),
                Err(e) => log::warn!("leases could not be renewed: {e}"),
            }
        }));
    }
}

impl Actor for ChatHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.limits.sample_interval, |act, _| act.take_samples());
        if let Some(cluster) = &self.cluster {
            // Three renewals per TTL: one lost or late renewal does not expire a lease.
            ctx.run_interval(cluster.lease_ttl() / 3, |act, ctx| act.renew_leases(ctx));
            ctx.run_interval(VIEW_INTERVAL, |act, _| act.publish_view());
        }
    }
}

impl Handler<Admit> for ChatHub {
    /// Answered at once by this hub alone; in a cluster, once Redis has decided.
    type Result = ActorResponse<Self, Result<Lease, AdmitError>>;

    fn handle(&mut self, msg: Admit, ctx: &mut Context<Self>) -> Self::Result {
        if self.revoked.contains(&msg.user) {
            return ActorResponse::reply(self.refuse(&msg.tenant, AdmitError::KeyRevoked));
        }
        if self.draining {
            return ActorResponse::reply(self.refuse(&msg.tenant, AdmitError::ShuttingDown));
        }
        // Before the limits: a spent budget is the answer however busy the hub is.
        if let Err(over) = self.usage.check_budget(&msg.tenant, &msg.user) {
            return ActorResponse::reply(self.refuse(&msg.tenant, over.into()));
        }
        let Some(cluster) = self.cluster.clone() else {
            return ActorResponse::reply(self.admit_locally(msg, ctx));
        };
        // Request rates are per hub; the concurrency limits are the cluster's.
        if let Err(limited) = self.limits.rate.check(Limited::Answers, &msg.user) {
            return ActorResponse::reply(
                self.refuse(&msg.tenant, AdmitError::RateLimited(limited)),
            );
        }
        // The script runs while the hub goes on with other messages.
        let (per_user, global) = (self.limits.per_user, self.limits.global);
        let verdict = async move {
            let verdict = cluster.acquire(&msg.user, per_user, global).await;
            (verdict, msg)
        };
        ActorResponse::r#async(
            verdict
                .into_actor(self)
                .map(|(verdict, msg), act, ctx| act.admitted_by_cluster(verdict, msg, ctx)),
        )
    }
}

impl Handler<Release> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        // A lease is released once by construction; a missing id is ignored all the same.
        let Some(stream) = self.streams.remove(&msg.lease_id) else {
            return;
        };
        self.released_total += 1;
        record_end(&stream, &msg);
        if self.usage.is_on() {
            if let Some(record) = usage_record(&stream, &msg) {
                self.usage.record(record);
            }
        }
        let ttft_ms = msg
            .outcome
            .as_ref()
            .and_then(|o| o.ttft_ms)
            .or(msg.progress.ttft_ms);
        let error = msg.outcome.as_ref().is_some_and(|o| o.error_code.is_some());
        let tokens = msg.progress.tokens;
        let tally = self.tally(&stream.tenant);
        tally.released += 1;
        tally.streaming = tally.streaming.saturating_sub(1);
        tally.history.ended(ttft_ms, tokens, error);
        tally.metrics.record(msg.outcome.clone());
        self.history.ended(ttft_ms, tokens, error);
        self.metrics.record(msg.outcome);
        if let Some(count) = self.per_user.get_mut(&stream.user) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(&stream.user);
            }
        }
        if let Some(member) = stream.cluster_lease {
            self.release_in_cluster(member);
        }
    }
}

impl Handler<Connect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        if self.revoked.contains(&msg.user) {
            // Authenticated just before its key was revoked: it ends before it is listed.
            msg.terminate.do_send(Terminate::key_revoked());
            return;
        }
        if self.was_signed_out(msg.browser_session.as_deref()) {
            msg.terminate.do_send(Terminate::signed_out());
            return;
        }
        let info = SessionInfo {
            kind: msg.kind,
            protocol: None,
            user: msg.user,
            tenant: msg.tenant,
            browser_session: msg.browser_session,
            since: Instant::now(),
            terminate: msg.terminate,
        };
        self.sessions.insert(msg.session_id, info);
    }
}

impl Handler<Identify> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Identify, _: &mut Context<Self>) {
        if let Some(session) = self.sessions.get_mut(&msg.session_id) {
            session.protocol = Some(msg.protocol);
        }
    }
}

impl Handler<Disconnect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.sessions.remove(&msg.session_id);
    }
}

impl Handler<GetStats> for ChatHub {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats(None))
    }
}

impl Handler<ListConnections> for ChatHub {
    type Result = MessageResult<ListConnections>;

    fn handle(&mut self, msg: ListConnections, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.connections(msg.tenant.as_deref()))
    }
}

impl Handler<GetAdminView> for ChatHub {
    type Result = MessageResult<GetAdminView>;

    fn handle(&mut self, msg: GetAdminView, _: &mut Context<Self>) -> Self::Result {
        let tenant = msg.tenant.as_deref();
        MessageResult(AdminView {
            stats: self.stats(tenant),
            connections: self.connections(tenant),
            streams: self.streams(tenant),
            metrics: self.metrics(tenant),
        })
    }
}

impl Handler<GetHistory> for ChatHub {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, msg: GetHistory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.history(msg.tenant.as_deref(), msg.after))
    }
}

impl Handler<Attach> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        // A lease released before its attach arrived belongs to a task already ending.
        if let Some(stream) = self.streams.get_mut(&msg.lease_id) {
            if self.revoked.contains(&stream.user) {
                // Admitted just before its key was revoked.
                msg.abort.abort();
            }
            stream.abort = Some(msg.abort);
            stream.answer = Some(msg.answer);
        }
    }
}

impl Handler<EndStream> for ChatHub {
    type Result = bool;

    /// Aborting the task drops the provider's stream and the lease (whose release then
    /// frees the slot); the client gets an `ended_by_admin` error.
    fn handle(&mut self, msg: EndStream, _: &mut Context<Self>) -> bool {
        match self
            .streams
            .get(&msg.lease_id)
            .filter(|s| in_scope(msg.tenant.as_deref(), &s.tenant))
            .and_then(|s| s.abort.as_ref())
        {
            Some(abort) => {
                abort.abort();
                true
            }
            None => false,
        }
    }
}

impl Handler<EndConnection> for ChatHub {
    type Result = bool;

    fn handle(&mut self, msg: EndConnection, _: &mut Context<Self>) -> bool {
        match self
            .sessions
            .get(&msg.session_id)
            .filter(|s| in_scope(msg.tenant.as_deref(), &s.tenant))
        {
            Some(session) => {
                session.terminate.do_send(Terminate::by_administrator());
                true
            }
            None => false,
        }
    }
}

impl Handler<RevokeKey> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: RevokeKey, _: &mut Context<Self>) {
        let key_id = msg.key_id;
        let answered = self.end_running_answers_of(&key_id);
        for (id, session) in self.sessions.iter().filter(|(_, s)| s.user == key_id) {
            // An SSE response ends with its answer's error event; ending the session too
            // would cut the response before that event is written.
            if session.kind == "sse" && answered.contains(id) {
                continue;
            }
            session.terminate.do_send(Terminate::key_revoked());
        }
        for watcher in self.watchers.values().filter(|w| w.key_id == key_id) {
            watcher.terminate.do_send(Terminate::key_revoked());
        }
        self.revoked.insert(key_id);
    }
}

impl Handler<EndBrowserSession> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: EndBrowserSession, _: &mut Context<Self>) {
        let opened_by = |s: &Option<String>| s.as_deref() == Some(msg.session.as_str());
        // An SSE response stops its own answer (its readers get the error event); a
        // WebSocket closes and cancels its answers.
        for session in self
            .sessions
            .values()
            .filter(|s| opened_by(&s.browser_session))
        {
            session.terminate.do_send(Terminate::signed_out());
        }
        for watcher in self
            .watchers
            .values()
            .filter(|w| opened_by(&w.browser_session))
        {
            watcher.terminate.do_send(Terminate::signed_out());
        }
        let now = Instant::now();
        self.signed_out
            .retain(|_, at| now.duration_since(*at) < SIGNED_OUT_MEMORY);
        self.signed_out.insert(msg.session, now);
    }
}

impl Handler<WatchKey> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: WatchKey, _: &mut Context<Self>) {
        if self.revoked.contains(&msg.key_id) {
            msg.terminate.do_send(Terminate::key_revoked());
            return;
        }
        if self.was_signed_out(msg.browser_session.as_deref()) {
            msg.terminate.do_send(Terminate::signed_out());
            return;
        }
        let watcher = Watcher {
            key_id: msg.key_id,
            browser_session: msg.browser_session,
            terminate: msg.terminate,
        };
        self.watchers.insert(msg.watch_id, watcher);
    }
}

impl Handler<UnwatchKey> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: UnwatchKey, _: &mut Context<Self>) {
        self.watchers.remove(&msg.watch_id);
    }
}

impl Handler<BeginDrain> for ChatHub {
    type Result = ();

    fn handle(&mut self, _: BeginDrain, _: &mut Context<Self>) {
        self.draining = true;
    }
}

impl Handler<TerminateWebSockets> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: TerminateWebSockets, _: &mut Context<Self>) {
        for session in self.sessions.values().filter(|s| s.kind == "ws") {
            session.terminate.do_send(msg.terminate);
        }
        // The admin event feeds: endless SSE responses that would hold the stop back.
        for watcher in self.watchers.values() {
            watcher.terminate.do_send(msg.terminate);
        }
    }
}
