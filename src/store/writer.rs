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
//! rows.

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
    /// A turn's rows; answered once stored.
    Turn(TurnRows, oneshot::Sender<TurnStored>),
    /// An answer's final write; answered once stored when someone waits for it. A final
    /// write the database could not take for being unreachable is retried here (see
    /// [`RETRY_FOR`]) after its answer has been told.
    Write(FinalWrite, Option<oneshot::Sender<Result<(), WriteFailed>>>),
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// Most writes in one transaction: bounds how long one commit holds the lock.
const MAX_BATCH: usize = 256;

/// How long a final write is retried while the database cannot be reached (an outage, a
/// restart): the answers that ended meanwhile keep their text once it is back.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Writes `write` alone, retrying (with a growing pause, up to [`RETRY_FOR`]) while the
/// database is unreachable; other errors are final. Later jobs wait meanwhile, which is what
/// they would do anyway: the database is the same for all of them.
async fn write_with_retries(store: &Store, write: &FinalWrite) -> Result<(), sqlx::Error> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match store.finish_message(write).await {
            Err(e) if super::is_unreachable(&e) && start.elapsed() < RETRY_FOR => {
                log::warn!(
                    "the final write of message {} waits for the database: {e}",
                    write.message_id
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// Stores one batch and answers everyone waiting on it.
async fn store_batch(store: &Store, jobs: Vec<Job>) {
    let writes: Vec<BatchWrite<'_>> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Turn(rows, _) => Some(BatchWrite::Turn(rows)),
            Job::Write(write, _) => Some(BatchWrite::Final(write)),
            Job::Flush(_) => None,
        })
        .collect();
    // `None`: the transaction failed as a whole and nothing of it is stored.
    let mut results = match writes.is_empty() {
        true => None,
        false => match store.write_batch(&writes).await {
            Ok(results) => Some(results.into_iter()),
            Err(e) => {
                log::error!(
                    "a batch of {} conversation writes failed: {e}",
                    writes.len()
                );
                None
            }
        },
    };
    drop(writes);
    let mut retry = Vec::new();
    for job in jobs {
        let result = match &job {
            Job::Flush(_) => None,
            _ => results.as_mut().and_then(Iterator::next),
        };
        match job {
            Job::Turn(_, reply) => {
                let stored = match result {
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
                let done = match result {
                    Some(Ok(_)) => Ok(()),
                    // Refused, not unreachable: asking again would not help.
                    Some(Err(e)) => {
                        log::error!(
                            "the final write of message {} failed: {e}",
                            write.message_id
                        );
                        Err(WriteFailed::Database)
                    }
                    None => {
                        retry.push(write);
                        Err(WriteFailed::Database)
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(done);
                }
            }
            Job::Flush(done) => {
                // "Everything queued before it is done": the retries too.
                retry_one_by_one(store, std::mem::take(&mut retry)).await;
                let _ = done.send(());
            }
        }
    }
    retry_one_by_one(store, retry).await;
}

/// The final writes of a batch that failed as a whole, one by one, each retried while the
/// database is unreachable. The row stays `streaming` when one still fails, and becomes
/// `interrupted` once this hub is gone: degraded, but never a lie.
async fn retry_one_by_one(store: &Store, writes: Vec<FinalWrite>) {
    for write in writes {
        if let Err(e) = write_with_retries(store, &write).await {
            log::error!(
                "the final write of message {} failed: {e}",
                write.message_id
            );
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
            while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
                let writes = jobs.iter().filter(|j| !matches!(j, Job::Flush(_))).count();
                if writes > 0 {
                    counting.transactions.fetch_add(1, Ordering::Relaxed);
                    counting.writes.fetch_add(writes as u64, Ordering::Relaxed);
                }
                let started = Instant::now();
                store_batch(&store, std::mem::take(&mut jobs)).await;
                log::debug!("{writes} conversation writes in {:?}", started.elapsed());
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

    /// Waits (at most `limit`) until every write queued so far is done. Used at shutdown so
    /// that answers cut by the stop keep their partial text.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let queued = async { self.tx.send(Job::Flush(done)).await.is_ok() && wait.await.is_ok() };
        actix_web::rt::time::timeout(limit, queued)
            .await
            .unwrap_or(false)
    }
}
