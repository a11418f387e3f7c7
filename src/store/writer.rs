//! The store writer: a task on an arbiter of its own that performs the final writes of
//! answers that could not make them themselves.
//!
//! An answer that ends normally writes its assistant row itself, before its last event, so
//! a client that reads the conversation after `done` sees it. An answer that is aborted (the
//! client cancelled or left, an administrator ended it, its worker shut down) cannot await
//! anything any more: its finaliser's `Drop` hands the write over here instead, through a
//! slot reserved when the answer began, so the hand-over never waits and never fails.
//! Neither path touches the hub's thread.

use std::time::Duration;

use actix::Arbiter;
use tokio::sync::{mpsc, oneshot};

use super::conversations::FinalWrite;
use super::Store;

pub enum Job {
    Write(FinalWrite),
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// How long a final write is retried while the database cannot be reached (an outage, a
/// restart): the answers that ended meanwhile keep their text once it is back.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Writes `write`, retrying (with a growing pause, up to [`RETRY_FOR`]) while the database
/// is unreachable; other errors are final. Later jobs wait meanwhile, which is what they
/// would do anyway: the database is the same for all of them.
async fn write_with_retries(store: &Store, write: &FinalWrite) -> Result<(), sqlx::Error> {
    let start = std::time::Instant::now();
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

/// A slot in the writer's queue, reserved for one answer's final write.
pub type WriteSlot = mpsc::OwnedPermit<Job>;

#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Job>,
}

impl StoreWriter {
    /// Starts the writer on a new arbiter. `capacity` bounds the slots: reserved by running
    /// conversation answers plus writes waiting for the database.
    pub fn start(store: Store, capacity: usize) -> StoreWriter {
        let (tx, mut rx) = mpsc::channel::<Job>(capacity.max(1));
        let arbiter = Arbiter::new();
        arbiter.spawn(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Write(write) => {
                        if let Err(e) = write_with_retries(&store, &write).await {
                            // The row stays `streaming` and becomes `interrupted` once this
                            // hub is gone: degraded, but never a lie.
                            log::error!(
                                "the final write of message {} failed: {e}",
                                write.message_id
                            );
                        }
                    }
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        StoreWriter { tx }
    }

    /// Reserves a slot for one final write. Waits only when the queue is full, that is
    /// when the database is behind: new answers then wait at their start instead of the
    /// queue growing. `None` once the writer has stopped.
    pub async fn reserve(&self) -> Option<WriteSlot> {
        self.tx.clone().reserve_owned().await.ok()
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
