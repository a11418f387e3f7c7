//! Graceful drain on SIGTERM/SIGINT.
//!
//! The order matters, and each step waits for a condition, never a fixed time:
//! 1. not ready at once (`/readyz` 503) and no new answers (`shutting_down` on every
//!    transport), while answers in flight run on;
//! 2. when they have all ended, or the grace is over, the rest end with `server_shutdown`
//!    (their stored rows keep their partial text, see `answer::TurnRecord`);
//! 3. WebSocket connections write those endings, then close with 1012 (Service Restart;
//!    SignalR: a Close that allows reconnecting); SSE and JSON responses end with their
//!    answer;
//! 4. the HTTP server stops (gracefully: responses being written finish), and the final
//!    writes of the stopped answers are flushed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::time::Instant;

use crate::answer::{Answers, StopReason};
use crate::hub::messages::{BeginDrain, GetStats, Terminate, TerminateWebSockets};
use crate::hub::ChatHub;

/// How often a drain step looks at whether it is done.
const POLL: Duration = Duration::from_millis(20);
/// The most a step after the grace waits: for stopped answers to append their endings, and
/// for connections to write them.
const AFTER_GRACE: Duration = Duration::from_secs(3);

/// Whether the hub is draining: read by the readiness check and the request-rate gate.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGTERM/SIGINT ({e}); stop the hub with SIGKILL");
                std::future::pending().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}

/// What a drain acts on.
pub struct DrainTargets<'a> {
    pub draining: &'a Draining,
    pub hub: &'a Addr<ChatHub>,
    pub answers: &'a Answers,
    pub grace: Duration,
}

/// Steps 1 to 3 above; the caller then stops the server.
pub async fn drain(t: DrainTargets<'_>) {
    t.draining.set();
    t.hub.do_send(BeginDrain);
    let running = active_streams(t.hub).await;
    log::info!(
        "draining: {running} answer(s) in flight may run for up to {:?}",
        t.grace
    );
    if !wait_for_no_streams(t.hub, t.grace).await {
        let stopped = t.answers.stop_all(StopReason::Shutdown);
        log::warn!("draining: grace over, {stopped} answer(s) ended with server_shutdown");
        if !wait_for_no_streams(t.hub, AFTER_GRACE).await {
            log::warn!("draining: some answers did not release their slot in time");
        }
    }
    t.hub.do_send(TerminateWebSockets {
        terminate: Terminate::shutdown(),
    });
    let deadline = Instant::now() + AFTER_GRACE;
    while connections(t.hub).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// True once no answer holds a slot, false if `limit` passed first.
async fn wait_for_no_streams(hub: &Addr<ChatHub>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if active_streams(hub).await == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL.min(deadline - Instant::now())).await;
    }
}

async fn active_streams(hub: &Addr<ChatHub>) -> usize {
    hub.send(GetStats).await.map_or(0, |s| s.active_streams)
}

async fn connections(hub: &Addr<ChatHub>) -> usize {
    hub.send(GetStats).await.map_or(0, |s| s.connections)
}
