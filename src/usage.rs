//! Usage accounting and budgets.
//!
//! When an answer's slot is released, the hub hands a small [`UsageRecord`] to the
//! [`UsageRecorder`]: a non-blocking queue push, never a store write on the answer's task or
//! the hub's. A writer task on an arbiter of its own writes what is queued in one
//! transaction about every second (sooner when a batch fills), and once more when the hub
//! stops.
//!
//! Budgets (a monthly output-token budget per tenant and per key, UTC calendar months) are
//! checked at admission against counters held in process: loaded from the store, advanced
//! as records are queued, and reloaded from the store every few seconds, which is where the
//! other hubs of a cluster add theirs. A hub therefore sees another hub's usage within a few
//! seconds; an answer already running always finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::Arbiter;
use tokio::sync::{mpsc, oneshot};

use crate::store::usage::{next_month, now_ms, utc_month_start, BudgetSnapshot, UsageRecord};
use crate::store::Store;

/// How often queued records are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often the budget counters are reloaded from the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Records written at once before the next tick, so a burst is not one huge transaction.
const MAX_BATCH: usize = 2000;
/// Records queued (or kept for a retry while the database is away) at most; past it new
/// records are dropped and counted, rather than memory growing without bound.
const MAX_QUEUED: usize = 100_000;

/// A monthly budget is spent: new answers are refused until the next month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the monthly output-token budget of this {scope} ({limit} tokens) is spent: {used} \
     used this month (UTC); it renews on {renews_year:04}-{renews_month:02}-01"
)]
pub struct BudgetExceeded {
    /// `tenant` or `API key`.
    pub scope: &'static str,
    pub limit: u64,
    pub used: u64,
    /// The next month, when the budget renews.
    pub renews_year: i64,
    pub renews_month: u32,
    pub retry_after_secs: u64,
}

#[derive(Default)]
struct BudgetState {
    /// The month the counters are of (`YYYY-MM-01`).
    month: String,
    tenant_limits: HashMap<String, u64>,
    key_limits: HashMap<String, u64>,
    tenant_used: HashMap<String, u64>,
    key_used: HashMap<String, u64>,
}

impl BudgetState {
    /// A new month starts with nothing used.
    fn roll(&mut self, month: &str) {
        if self.month != month {
            self.month = month.to_owned();
            self.tenant_used.clear();
            self.key_used.clear();
        }
    }
}

/// The budgets and what has been used against them this month.
#[derive(Default)]
pub struct Budgets {
    state: Mutex<BudgetState>,
}

impl Budgets {
    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `tenant` and `key` may start an answer now.
    pub fn check(&self, tenant: &str, key: &str) -> Result<(), BudgetExceeded> {
        let mut state = self.lock();
        if state.tenant_limits.is_empty() && state.key_limits.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        state.roll(&utc_month_start(now));
        let over = |limits: &HashMap<String, u64>, used: &HashMap<String, u64>, id: &str| {
            let limit = *limits.get(id)?;
            let used = used.get(id).copied().unwrap_or(0);
            (used >= limit).then_some((limit, used))
        };
        let (scope, (limit, used)) = match over(&state.tenant_limits, &state.tenant_used, tenant) {
            Some(o) => ("tenant", o),
            None => match over(&state.key_limits, &state.key_used, key) {
                Some(o) => ("API key", o),
                None => return Ok(()),
            },
        };
        let (renews_year, renews_month, at_ms) = next_month(now);
        Err(BudgetExceeded {
            scope,
            limit,
            used,
            renews_year,
            renews_month,
            retry_after_secs: u64::try_from((at_ms - now).max(1000) / 1000).unwrap_or(1),
        })
    }

    /// Counts an answer's output against its tenant's and key's budgets, if they have any.
    fn advance(&self, record: &UsageRecord) {
        let mut state = self.lock();
        if state.tenant_limits.is_empty() && state.key_limits.is_empty() {
            return;
        }
        state.roll(&utc_month_start(record.ended_at_ms));
        let BudgetState {
            tenant_limits,
            key_limits,
            tenant_used,
            key_used,
            ..
        } = &mut *state;
        if tenant_limits.contains_key(&record.tenant_id) {
            *tenant_used.entry(record.tenant_id.clone()).or_default() += record.output_tokens;
        }
        if key_limits.contains_key(&record.key_id) {
            *key_used.entry(record.key_id.clone()).or_default() += record.output_tokens;
        }
    }

    /// Takes the store's figures for `month`. A count this hub advanced past the store's
    /// (records queued, not yet written) is kept: a counter never goes back within a month.
    fn apply(&self, month: &str, snapshot: BudgetSnapshot) {
        let mut state = self.lock();
        state.roll(month);
        let to_map = |list: Vec<(String, i64)>| -> HashMap<String, u64> {
            list.into_iter()
                .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
                .collect()
        };
        state.tenant_limits = to_map(snapshot.tenant_budgets);
        state.key_limits = to_map(snapshot.key_budgets);
        let merge = |used: &mut HashMap<String, u64>,
                     limits: &HashMap<String, u64>,
                     stored: HashMap<String, u64>| {
            used.retain(|id, _| limits.contains_key(id));
            for (id, n) in stored {
                let count = used.entry(id).or_default();
                *count = (*count).max(n);
            }
        };
        let BudgetState {
            tenant_limits,
            key_limits,
            tenant_used,
            key_used,
            ..
        } = &mut *state;
        merge(tenant_used, tenant_limits, to_map(snapshot.tenant_used));
        merge(key_used, key_limits, to_map(snapshot.key_used));
    }
}

// Records are nearly every job: boxing them would cost an allocation per answer to shrink
// the rare flushes, and the channel allocates its slots in blocks as they fill anyway.
#[allow(clippy::large_enum_variant)]
enum Job {
    Record(UsageRecord),
    /// Answered once every record queued before it is written (or given up on).
    Flush(oneshot::Sender<()>),
    /// Writes what is queued, then reloads the budgets; answered when done.
    Refresh(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Job>,
    budgets: Arc<Budgets>,
    dropped: AtomicU64,
}

/// Hands usage records to the writer and checks budgets. Cheap to clone; `off()` records
/// nothing and refuses nothing (`RAGSTREAM_USAGE_ACCOUNTING=off`).
#[derive(Clone, Default)]
pub struct UsageRecorder {
    inner: Option<Arc<Inner>>,
}

impl UsageRecorder {
    pub fn off() -> UsageRecorder {
        UsageRecorder::default()
    }

    /// Starts the writer on an arbiter of its own and loads the budgets once before any
    /// answer is admitted.
    pub async fn start(store: Store) -> UsageRecorder {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        let budgets = Arc::new(Budgets::default());
        refresh(&store, &budgets).await;
        let writer_budgets = budgets.clone();
        Arbiter::new().spawn(write_loop(store, writer_budgets, rx));
        UsageRecorder {
            inner: Some(Arc::new(Inner {
                tx,
                budgets,
                dropped: AtomicU64::new(0),
            })),
        }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues one answer's record; never waits.
    pub fn record(&self, record: UsageRecord) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.budgets.advance(&record);
        if inner.tx.try_send(Job::Record(record)).is_err() {
            let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                log::error!("usage accounting is behind: {dropped} record(s) dropped so far");
            }
        }
    }

    /// Whether `tenant` and `key` may start an answer (always, with accounting off).
    pub fn check_budget(&self, tenant: &str, key: &str) -> Result<(), BudgetExceeded> {
        match &self.inner {
            Some(inner) => inner.budgets.check(tenant, key),
            None => Ok(()),
        }
    }

    /// Waits (at most `limit`) until every record queued so far is written.
    pub async fn flush(&self, limit: Duration) -> bool {
        self.ask(limit, Job::Flush).await
    }

    /// Writes what is queued and reloads the budgets (after a budget changed).
    pub async fn refresh_budgets(&self, limit: Duration) -> bool {
        self.ask(limit, Job::Refresh).await
    }

    async fn ask(&self, limit: Duration, job: fn(oneshot::Sender<()>) -> Job) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let (done, wait) = oneshot::channel();
        let asked = async { inner.tx.send(job(done)).await.is_ok() && wait.await.is_ok() };
        actix_web::rt::time::timeout(limit, asked)
            .await
            .unwrap_or(false)
    }
}

async fn refresh(store: &Store, budgets: &Budgets) {
    let month = utc_month_start(now_ms());
    match store.budget_snapshot(&month).await {
        Ok(snapshot) => budgets.apply(&month, snapshot),
        Err(e) => log::warn!("the usage budgets could not be reloaded: {e}"),
    }
}

/// Writes `batch`; on success it is emptied. While the database cannot be reached the
/// records are kept for the next tick (up to [`MAX_QUEUED`]); any other error drops them,
/// logged, so one bad batch cannot block accounting for good.
async fn write(store: &Store, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    match store.insert_usage(batch).await {
        Ok(()) => batch.clear(),
        Err(e) if crate::store::is_unreachable(&e) => {
            log::warn!("{} usage record(s) wait for the database: {e}", batch.len());
            if batch.len() > MAX_QUEUED {
                let excess = batch.len() - MAX_QUEUED;
                batch.drain(..excess);
                log::error!("{excess} usage record(s) dropped while the database was away");
            }
        }
        Err(e) => {
            log::error!("{} usage record(s) could not be written: {e}", batch.len());
            batch.clear();
        }
    }
}

async fn write_loop(store: Store, budgets: Arc<Budgets>, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<UsageRecord> = Vec::new();
    let mut flush_tick = actix_web::rt::time::interval(FLUSH_EVERY);
    let mut refresh_tick = actix_web::rt::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            job = rx.recv() => match job {
                Some(Job::Record(record)) => {
                    batch.push(record);
                    if batch.len() >= MAX_BATCH {
                        write(&store, &mut batch).await;
                    }
                }
                Some(Job::Flush(done)) => {
                    write(&store, &mut batch).await;
                    let _ = done.send(());
                }
                Some(Job::Refresh(done)) => {
                    write(&store, &mut batch).await;
                    refresh(&store, &budgets).await;
                    let _ = done.send(());
                }
                None => {
                    write(&store, &mut batch).await;
                    return;
                }
            },
            _ = flush_tick.tick() => write(&store, &mut batch).await,
            _ = refresh_tick.tick() => refresh(&store, &budgets).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, key: &str, output: u64) -> UsageRecord {
        UsageRecord {
            answer_id: "a".into(),
            ended_at_ms: now_ms(),
            tenant_id: tenant.into(),
            key_id: key.into(),
            transport: "json",
            provider: "offline".into(),
            model: "m".into(),
            input_tokens: 0,
            input_reported: false,
            output_tokens: output,
            output_reported: true,
            ttft_ms: None,
            duration_ms: 1,
            outcome: "done",
            error_code: None,
            detached: false,
            resumed: false,
        }
    }

    fn snapshot(tenant_budget: i64, tenant_used: i64) -> BudgetSnapshot {
        BudgetSnapshot {
            tenant_budgets: vec![("t".into(), tenant_budget)],
            key_budgets: vec![("k".into(), 100)],
            tenant_used: vec![("t".into(), tenant_used)],
            key_used: Vec::new(),
        }
    }

    #[test]
    fn a_budget_refuses_once_its_month_reaches_it() {
        let budgets = Budgets::default();
        let month = utc_month_start(now_ms());
        budgets.apply(&month, snapshot(10, 4));
        assert_eq!(budgets.check("t", "k"), Ok(()));
        budgets.advance(&record("t", "k", 6));
        let over = budgets.check("t", "k").unwrap_err();
        assert_eq!((over.scope, over.limit, over.used), ("tenant", 10, 10));
        assert!(over.retry_after_secs >= 1);
        assert!(over.to_string().contains("renews on"), "{over}");
        // Other tenants have no budget; the key's own is not reached.
        assert_eq!(budgets.check("other", "k"), Ok(()));
        budgets.advance(&record("other", "k", 95));
        assert_eq!(budgets.check("other", "k").unwrap_err().scope, "API key");
    }

    #[test]
    fn the_store_never_takes_back_what_this_hub_counted_and_a_new_month_starts_at_zero() {
        let budgets = Budgets::default();
        let month = utc_month_start(now_ms());
        budgets.apply(&month, snapshot(10, 0));
        budgets.advance(&record("t", "k", 8));
        // The store has not got that record yet.
        budgets.apply(&month, snapshot(10, 3));
        assert_eq!(budgets.lock().tenant_used["t"], 8);
        // Another hub's usage, through the store.
        budgets.apply(&month, snapshot(10, 12));
        assert!(budgets.check("t", "k").is_err());
        budgets.apply("1999-01-01", snapshot(10, 0));
        assert_eq!(budgets.lock().tenant_used["t"], 0);
        // Removing a budget forgets its count.
        budgets.apply(&month, BudgetSnapshot::default());
        assert!(budgets.lock().tenant_used.is_empty());
        assert_eq!(budgets.check("t", "k"), Ok(()));
    }
}
