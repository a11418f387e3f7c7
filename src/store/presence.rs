//! The hub's presence task: renews this hub's heartbeat and cleans up after dead hubs, on
//! an arbiter of its own (never the hub actor's thread).
//!
//! It beats every third of the lease TTL, so two missed beats still leave the hub alive;
//! a hub that stops beating is dead for the others after the TTL, and its rows are cleaned
//! up by the next beat of any live hub: within TTL + TTL/3. A hub that could not beat
//! itself reaps only once it has beaten for a TTL again (see [`round`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use tokio::sync::Notify;

use super::Store;

/// Stops the task when dropped (or by [`HubPresence::stop`]).
pub struct HubPresence {
    stop: Arc<Notify>,
}

impl HubPresence {
    /// Starts the task. Its first round (a clean-up) runs at once.
    pub fn start(store: Store, ttl: Duration) -> HubPresence {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let every = (ttl / 3).max(Duration::from_millis(50));
        Arbiter::new().spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_failure = None;
            loop {
                tokio::select! {
                    _ = stopped.notified() => break,
                    _ = tick.tick() => round(&store, ttl, &mut last_failure).await,
                }
            }
            // Only between rounds: stopping the arbiter under a query in flight would drop
            // its pooled connection outside any runtime.
            Arbiter::current().stop();
        });
        HubPresence { stop }
    }

    /// Stops beating (after the round in progress, if any): to the other hubs, this hub
    /// dies. Used at shutdown, and by tests.
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

impl Drop for HubPresence {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `last_failure`: when this hub's heartbeat last failed. A hub whose heartbeat failed
/// within the TTL reaps nothing: when the database was out for everyone, every heartbeat
/// lapsed, and the first hub back would take the others, alive and about to beat, for dead
/// (their answers that ended meanwhile, waiting to be written, would end `interrupted`). A
/// TTL of beats after its own outage gives every hub that reaches the database time to beat.
async fn round(store: &Store, ttl: Duration, last_failure: &mut Option<Instant>) {
    if let Err(e) = store.heartbeat().await {
        log::warn!("the hub's heartbeat could not be written: {e}");
        *last_failure = Some(Instant::now());
        return;
    }
    if last_failure.is_some_and(|at| at.elapsed() < ttl) {
        return;
    }
    match store.reap_dead_hubs(ttl).await {
        Ok(reaped) => {
            if reaped.answers > 0 {
                log::warn!(
                    "{} answer(s) of stopped hubs marked interrupted",
                    reaped.answers
                );
            }
            if reaped.documents > 0 {
                log::warn!(
                    "{} upload(s) or delete(s) of stopped hubs cleaned up",
                    reaped.documents
                );
            }
        }
        Err(e) => log::warn!("the rows of stopped hubs could not be cleaned up: {e}"),
    }
}
