//! The store writer: the one task, on an arbiter of its own, that writes conversation
//! turns: a turn's two rows when it begins, and its assistant row's final write.
//!
//! Writes queue here and go to the database in batches: each wake-up takes everything
//! queued and stores it in one transaction (group commit). On SQLite, where one writer at a
//! time holds the database's lock, this is the difference between a thousand answers each
//! taking the lock for five round trips and a few transactions per second; no answer waits
//! for its rows before its first token, only before its last event.
//!
//! An answer that ends normally awaits its final write, so a client that reads the
//! conversation after `done` sees it. An answer that is aborted (the client cancelled or
//! left, an administrator ended it, its worker shut down) cannot await anything any more:
//! its finaliser's `Drop` hands the write over through a slot reserved when the answer
//! began, so the hand-over never waits and never fails. Neither path touches the hub's
//! thread. The queue is first in, first out, so a turn's final write always follows its
//! rows. While the database cannot be reached, writes wait in a backlog and are answered at
//! once (see [`Backlog`]): answers go on ending with `done`, and their turns are stored when
//! it is back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use tokio::sync::{mpsc, oneshot};

use super::conversations::{BatchWrite, FinalWrite, TurnRows};
use super::Store;

/// Why a queued write was not stored (the error is logged where it happened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteFailed {
    #[error("the database refused or could not take the write")]
    Database,
    #[error("the store writer has stopped")]
    Stopped,
}

/// `Ok(false)`: the conversation is gone (deleted since the answer read it), so nothing
/// was stored.
pub type TurnStored = Result<bool, WriteFailed>;

pub enum Job {
    /// A turn's rows; answered once stored (or, the database being away, once they are in
    /// the backlog).
    Turn(TurnRows, oneshot::Sender<TurnStored>),
    /// An answer's final write; answered once stored (or in the backlog) when someone waits
    /// for it.
    Write(FinalWrite, Option<oneshot::Sender<Result<(), WriteFailed>>>),
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// Most writes in one transaction: bounds how long one commit holds the lock.
const MAX_BATCH: usize = 256;

/// How long a write is retried while the database cannot be reached (an outage, a
/// restart): the answers that ended meanwhile keep their text once it is back.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// A write of a batch that failed as a whole, to be made again on its own.
enum Retry {
    Turn(TurnRows),
    Final(FinalWrite),
}

/// Writes waiting for the database to come back, oldest first. While it has any, new jobs
/// join it (answered at once: their rows will be stored, as the database comes back) rather
/// than waiting behind it, so an answer that streams during an outage still ends with
/// `done`, and order is kept: a turn's final write always follows its rows.
struct Backlog {
    writes: VecDeque<(Retry, Instant)>,
    /// Flushes asked for while the backlog was not empty: answered once it is.
    flushes: Vec<oneshot::Sender<()>>,
    pause: Duration,
    /// When the database is tried again.
    next_try: Instant,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            writes: VecDeque::new(),
            flushes: Vec::new(),
            pause: FIRST_PAUSE,
            next_try: Instant::now(),
        }
    }
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    fn push(&mut self, retry: Retry) {
        if self.writes.is_empty() {
            self.pause = FIRST_PAUSE;
            self.next_try = Instant::now() + FIRST_PAUSE;
        }
        self.writes.push_back((retry, Instant::now()));
    }

    /// Jobs that arrive while the backlog is not empty join it.
    fn defer(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            match job {
                Job::Turn(rows, reply) => {
                    self.push(Retry::Turn(rows));
                    let _ = reply.send(Ok(true));
                }
                Job::Write(write, reply) => {
                    self.push(Retry::Final(write));
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Job::Flush(done) => self.flushes.push(done),
            }
        }
    }

    /// Makes the backlog's writes, oldest first, until the database is still unreachable
    /// (then the pause before the next try grows). A write refused for another reason, or
    /// unreachable for longer than [`RETRY_FOR`], is given up: its row stays `streaming`
    /// and becomes `interrupted` once this hub is gone, degraded but never a lie.
    async fn retry(&mut self, store: &Store) {
        while let Some((retry, since)) = self.writes.front() {
            let done = match retry {
                Retry::Turn(rows) => store
                    .write_batch(&[BatchWrite::Turn(rows)])
                    .await
                    .and_then(|mut results| results.pop().unwrap_or(Ok(false)).map(|_| ())),
                Retry::Final(write) => store.finish_message(write).await,
            };
            match done {
                Err(e) if super::is_unreachable(&e) && since.elapsed() < RETRY_FOR => {
                    log::warn!(
                        "{} conversation writes wait for the database: {e}",
                        self.writes.len()
                    );
                    self.pause = (self.pause * 2).min(MAX_PAUSE);
                    self.next_try = Instant::now() + self.pause;
                    return;
                }
                Err(e) => log::error!("a conversation write failed for good: {e}"),
                Ok(()) => {}
            }
            self.writes.pop_front();
        }
        for done in self.flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Stores one batch and answers everyone waiting on it. When the database cannot be
/// reached, the batch joins the backlog instead (see [`Backlog`]).
async fn store_batch(store: &Store, jobs: Vec<Job>, backlog: &mut Backlog) {
    let writes: Vec<BatchWrite<'_>> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Turn(rows, _) => Some(BatchWrite::Turn(rows)),
            Job::Write(write, _) => Some(BatchWrite::Final(write)),
            Job::Flush(_) => None,
        })
        .collect();
    let outcome = match writes.is_empty() {
        true => Ok(Vec::new()),
        false => store.write_batch(&writes).await,
    };
    let count = writes.len();
    drop(writes);
    let mut results = match outcome {
        Ok(results) => results.into_iter(),
        Err(e) if super::is_unreachable(&e) => {
            log::warn!("{count} conversation writes wait for the database: {e}");
            backlog.defer(jobs);
            return;
        }
        Err(e) => {
            log::error!("a batch of {count} conversation writes failed: {e}");
            Vec::new().into_iter()
        }
    };
    for job in jobs {
        match job {
            Job::Turn(_, reply) => {
                let stored = match results.next() {
                    Some(Ok(stored)) => Ok(stored),
                    Some(Err(e)) => {
                        log::error!("a conversation turn could not be stored: {e}");
                        Err(WriteFailed::Database)
                    }
                    None => Err(WriteFailed::Database),
                };
                let _ = reply.send(stored);
            }
            Job::Write(write, reply) => {
                let done = match results.next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => {
                        log::error!(
                            "the final write of message {} failed: {e}",
                            write.message_id
                        );
                        Err(WriteFailed::Database)
                    }
                    None => Err(WriteFailed::Database),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(done);
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// A slot in the writer's queue, reserved for one answer's final write.
pub type WriteSlot = mpsc::OwnedPermit<Job>;

#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Job>,
    counts: Arc<Counts>,
}

/// What the writer has done, for tests and the benchmark: how well writes group.
#[derive(Debug, Default)]
struct Counts {
    queued: AtomicU64,
    transactions: AtomicU64,
    writes: AtomicU64,
}

/// A snapshot of the writer's [`Counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCounts {
    /// Writes handed to the writer (stored or not yet).
    pub queued: u64,
    /// Transactions begun.
    pub transactions: u64,
    /// Writes taken into those transactions.
    pub writes: u64,
}

impl StoreWriter {
    /// Starts the writer on a new arbiter. `answers` bounds the answers that hold a slot at
    /// once (each reserves one for its final write); as many turns again may wait in the
    /// queue beside them, so a turn never waits for a slot its own answers hold.
    pub fn start(store: Store, answers: usize) -> StoreWriter {
        let (tx, mut rx) = mpsc::channel::<Job>(answers.max(1) * 2);
        let counts = Arc::new(Counts::default());
        let counting = counts.clone();
        let arbiter = Arbiter::new();
        arbiter.spawn(async move {
            let mut jobs = Vec::new();
            let mut backlog = Backlog::default();
            loop {
                if backlog.is_empty() {
                    if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                        break;
                    }
                    let writes = jobs.iter().filter(|j| !matches!(j, Job::Flush(_))).count();
                    if writes > 0 {
                        counting.transactions.fetch_add(1, Ordering::Relaxed);
                        counting.writes.fetch_add(writes as u64, Ordering::Relaxed);
                    }
                    let started = Instant::now();
                    store_batch(&store, std::mem::take(&mut jobs), &mut backlog).await;
                    log::debug!("{writes} conversation writes in {:?}", started.elapsed());
                    continue;
                }
                // The database is away: take new jobs into the backlog as they come, and
                // try it again after a pause.
                tokio::select! {
                    received = rx.recv_many(&mut jobs, MAX_BATCH) => {
                        if received == 0 {
                            // Every sender is gone: nothing more comes, the backlog is
                            // tried until it is written or given up.
                            while !backlog.is_empty() {
                                tokio::time::sleep_until(backlog.next_try.into()).await;
                                backlog.retry(&store).await;
                            }
                            break;
                        }
                        backlog.defer(std::mem::take(&mut jobs));
                    }
                    () = tokio::time::sleep_until(backlog.next_try.into()) => {
                        backlog.retry(&store).await;
                    }
                }
            }
        });
        StoreWriter { tx, counts }
    }

    /// What the writer has done so far (group commit: far fewer transactions than writes).
    pub fn counts(&self) -> WriterCounts {
        WriterCounts {
            queued: self.counts.queued.load(Ordering::Relaxed),
            transactions: self.counts.transactions.load(Ordering::Relaxed),
            writes: self.counts.writes.load(Ordering::Relaxed),
        }
    }

    /// Reserves a slot for one final write. Waits only when the queue is full, that is
    /// when the database is behind: new answers then wait at their start instead of the
    /// queue growing. `None` once the writer has stopped.
    pub async fn reserve(&self) -> Option<WriteSlot> {
        self.tx.clone().reserve_owned().await.ok()
    }

    /// Queues a turn's rows; the receiver says whether they were stored. Does not wait for
    /// the write: an answer goes on meanwhile and awaits the answer before its final write.
    pub async fn store_turn(&self, rows: TurnRows) -> oneshot::Receiver<TurnStored> {
        let (reply, stored) = oneshot::channel();
        match self.tx.send(Job::Turn(rows, reply)).await {
            Ok(()) => {
                self.counts.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::SendError(Job::Turn(_, reply))) => {
                let _ = reply.send(Err(WriteFailed::Stopped));
            }
            // Only a turn was sent.
            Err(_) => {}
        }
        stored
    }

    /// Queues an answer's final write in the slot reserved for it; `reply` is answered once
    /// it is stored (or known not to be).
    pub fn queue_final(
        &self,
        slot: WriteSlot,
        write: FinalWrite,
        reply: Option<oneshot::Sender<Result<(), WriteFailed>>>,
    ) {
        slot.send(Job::Write(write, reply));
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits (at most `limit`) until every write queued so far is done: at shutdown, so
    /// that answers cut by the stop keep their partial text, and before the conversation
    /// routes read, so that a client finds the turn it was just told about.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let queued = async { self.tx.send(Job::Flush(done)).await.is_ok() && wait.await.is_ok() };
        actix_web::rt::time::timeout(limit, queued)
            .await
            .unwrap_or(false)
    }
}
