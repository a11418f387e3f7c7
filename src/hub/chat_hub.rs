//! The one ChatHub actor: admission against per-user and global limits, the registry of
//! sessions, and the counters behind the admin view.
//!
//! It runs on an arbiter of its own, so no worker's load delays an admission, and it only
//! ever handles a few messages per answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, MessageResult, Recipient};
use serde::Serialize;

use super::lease::Lease;
use super::messages::{
    AdminView, Admit, AdmitError, Attach, Connect, ConnectionInfo, Disconnect, EndConnection,
    EndStream, GetAdminView, GetStats, Identify, ListConnections, Metrics, Outcome, Release,
    StreamInfo, Terminate,
};

/// Time-to-first-token samples kept for the percentiles.
const TTFT_SAMPLES: usize = 256;
/// Window of the tokens-per-second figure.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_user: usize,
    pub global: usize,
}

struct ActiveStream {
    user: String,
    tenant: String,
    session_id: Option<u64>,
    transport: &'static str,
    started: Instant,
    /// Set once the answer task exists; lets an administrator end it.
    abort: Option<futures_util::future::AbortHandle>,
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

struct SessionInfo {
    kind: &'static str,
    protocol: Option<&'static str>,
    user: String,
    tenant: String,
    since: Instant,
    terminate: Recipient<Terminate>,
}

#[derive(Debug, Clone, Serialize, Default)]
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
}

impl ChatHub {
    pub fn new(limits: Limits) -> Self {
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
        }
    }

    fn stats(&self) -> HubStats {
        let mut stats = HubStats {
            connections: self.sessions.len(),
            ws_connections: self.sessions.values().filter(|s| s.kind == "ws").count(),
            sse_connections: self.sessions.values().filter(|s| s.kind == "sse").count(),
            active_streams: self.streams.len(),
            admitted_total: self.admitted_total,
            refused_total: self.refused_total,
            released_total: self.released_total,
            ..HubStats::default()
        };
        for s in self.sessions.values() {
            *stats
                .connections_by_tenant
                .entry(s.tenant.clone())
                .or_default() += 1;
        }
        for s in self.streams.values() {
            *stats.streams_by_user.entry(s.user.clone()).or_default() += 1;
            *stats.streams_by_tenant.entry(s.tenant.clone()).or_default() += 1;
        }
        stats
    }

    fn connections(&self) -> Vec<ConnectionInfo> {
        let mut per_session: HashMap<u64, usize> = HashMap::new();
        for s in self.streams.values() {
            if let Some(id) = s.session_id {
                *per_session.entry(id).or_default() += 1;
            }
        }
        let mut list: Vec<ConnectionInfo> = self
            .sessions
            .iter()
            .map(|(id, s)| ConnectionInfo {
                id: *id,
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

    fn streams(&self) -> Vec<StreamInfo> {
        let mut list: Vec<StreamInfo> = self
            .streams
            .iter()
            .map(|(id, s)| StreamInfo {
                id: *id,
                user: s.user.clone(),
                tenant: s.tenant.clone(),
                session_id: s.session_id,
                transport: s.transport,
                age_ms: s.started.elapsed().as_millis() as u64,
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Starts the hub on a thread of its own.
    pub fn spawn(limits: Limits) -> Addr<ChatHub> {
        let arbiter = Arbiter::new();
        ChatHub::start_in_arbiter(&arbiter.handle(), move |_| ChatHub::new(limits))
    }
}

impl Actor for ChatHub {
    type Context = Context<Self>;
}

impl Handler<Admit> for ChatHub {
    type Result = Result<Lease, AdmitError>;

    fn handle(&mut self, msg: Admit, ctx: &mut Context<Self>) -> Self::Result {
        if self.streams.len() >= self.limits.global {
            self.refused_total += 1;
            return Err(AdmitError::Global {
                limit: self.limits.global,
            });
        }
        let count = self.per_user.entry(msg.user.clone()).or_insert(0);
        if *count >= self.limits.per_user {
            self.refused_total += 1;
            return Err(AdmitError::PerUser {
                limit: self.limits.per_user,
            });
        }
        *count += 1;
        let id = self.next_lease;
        self.next_lease += 1;
        self.admitted_total += 1;
        self.streams.insert(
            id,
            ActiveStream {
                user: msg.user,
                tenant: msg.tenant,
                session_id: msg.session_id,
                transport: msg.transport,
                started: Instant::now(),
                abort: None,
            },
        );
        Ok(Lease {
            id,
            hub: ctx.address(),
            outcome: None,
        })
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
        self.metrics.record(msg.outcome);
        if let Some(count) = self.per_user.get_mut(&stream.user) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(&stream.user);
            }
        }
    }
}

impl Handler<Connect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        let info = SessionInfo {
            kind: msg.kind,
            protocol: None,
            user: msg.user,
            tenant: msg.tenant,
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
        MessageResult(self.stats())
    }
}

impl Handler<ListConnections> for ChatHub {
    type Result = MessageResult<ListConnections>;

    fn handle(&mut self, _: ListConnections, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.connections())
    }
}

impl Handler<GetAdminView> for ChatHub {
    type Result = MessageResult<GetAdminView>;

    fn handle(&mut self, _: GetAdminView, _: &mut Context<Self>) -> Self::Result {
        MessageResult(AdminView {
            stats: self.stats(),
            connections: self.connections(),
            streams: self.streams(),
            metrics: self.metrics.snapshot(),
        })
    }
}

impl Handler<Attach> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        // A lease released before its attach arrived belongs to a task already ending.
        if let Some(stream) = self.streams.get_mut(&msg.lease_id) {
            stream.abort = Some(msg.abort);
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
        match self.sessions.get(&msg.session_id) {
            Some(session) => {
                session.terminate.do_send(Terminate {
                    reason: "closed by an administrator",
                });
                true
            }
            None => false,
        }
    }
}
