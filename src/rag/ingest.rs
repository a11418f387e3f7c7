//! Loading documents into the store without hurting anyone else: a bounded number of
//! uploads at work at once, chunking on the blocking pool (never on an HTTP worker, where it
//! would delay every request that worker serves), chunks written in short batches, and the
//! documents published together at the end or removed if anything fails.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::chunking::chunk_document;
use crate::error::ApiError;
use crate::store::{DocumentSummary, NewDocument, Quota, QuotaExceeded, ReservedDocument, Store};

/// Chunk size and overlap in characters: a few paragraphs, small enough that a handful of
/// passages fit a prompt, with enough overlap that a sentence cut at a boundary is kept whole.
const CHUNK_TARGET_CHARS: usize = 900;
const CHUNK_OVERLAP_CHARS: usize = 150;

/// Uploads that may wait for a slot, per slot. Each waiting upload holds its whole body in
/// memory, so the queue is short.
const WAITING_PER_SLOT: usize = 4;

/// A waiting upload gets 503 when no upload has finished for this long: the queue is
/// stuck, not merely long. While uploads ahead of it finish, it keeps its place.
const STALL: Duration = Duration::from_secs(60);

/// A document read from a request, checked, not yet stored.
pub struct Upload {
    pub title: String,
    pub text: String,
}

/// Admission for uploads: `slots` at work at once, a few more waiting in turn, the rest
/// refused.
#[derive(Clone)]
pub struct UploadGate {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Slots given back so far: how a waiting upload tells a long queue from a stuck one.
    released: Arc<AtomicU64>,
}

/// An upload's slot; given back when dropped.
pub struct UploadSlot {
    _permit: OwnedSemaphorePermit,
    released: Arc<AtomicU64>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.released.fetch_add(1, Ordering::AcqRel);
    }
}

/// One place in the queue, left when dropped: also when the client goes away mid-wait.
struct InQueue<'a>(&'a AtomicUsize);

impl<'a> InQueue<'a> {
    /// Joins the queue; also returns how many were in it before.
    fn join(queue: &'a AtomicUsize) -> (InQueue<'a>, usize) {
        let before = queue.fetch_add(1, Ordering::AcqRel);
        (InQueue(queue), before)
    }
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl UploadGate {
    pub fn new(slots: usize) -> UploadGate {
        let slots = slots.max(1);
        UploadGate {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: Arc::default(),
            max_waiting: slots * WAITING_PER_SLOT,
            released: Arc::default(),
        }
    }

    /// Uploads waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A slot now, or in turn (the semaphore is first come, first served) after a wait in
    /// a bounded queue; `Busy` when the queue is full or stuck.
    pub async fn enter(&self) -> Result<UploadSlot, ApiError> {
        let slot = |permit| UploadSlot {
            _permit: permit,
            released: self.released.clone(),
        };
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(slot(permit));
        }
        let (_place, before) = InQueue::join(&self.waiting);
        if before >= self.max_waiting {
            return Err(busy("too many uploads are waiting; try again shortly"));
        }
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut released = self.released.load(Ordering::Acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => {
                    return permit.map(slot).map_err(|_closed| ApiError::Unavailable);
                }
                _ = tokio::time::sleep(STALL) => {
                    let now = self.released.load(Ordering::Acquire);
                    if now == released {
                        return Err(busy(format!(
                            "no upload finished for {} s; try again later",
                            STALL.as_secs()
                        )));
                    }
                    released = now;
                }
            }
        }
    }
}

fn busy(message: impl Into<String>) -> ApiError {
    ApiError::Busy {
        code: "uploads_busy",
        message: message.into(),
    }
}

/// The message of a quota error.
pub fn quota_message(over: QuotaExceeded) -> String {
    match over {
        QuotaExceeded::Documents { limit, used } => format!(
            "the tenant may hold at most {limit} documents and holds {used}; delete some first"
        ),
        QuotaExceeded::Bytes { limit, used } => format!(
            "the tenant may hold at most {limit} bytes of documents and holds {used}; \
             this upload would go over; delete some first"
        ),
    }
}

/// Stores `uploads` as documents of the tenant: all of them appear at once, or none.
///
/// The work runs as a task of its own holding the slot, so a client that leaves mid-way
/// does not cut a write short; a failure removes what was written.
pub async fn ingest(
    store: &Store,
    slot: UploadSlot,
    tenant_id: &str,
    quota: Quota,
    uploads: Vec<Upload>,
) -> Result<Vec<DocumentSummary>, ApiError> {
    let new: Vec<NewDocument<'_>> = uploads
        .iter()
        .map(|u| NewDocument {
            title: &u.title,
            chars: u.text.chars().count(),
            bytes: u.text.len(),
        })
        .collect();
    let reserved = store
        .reserve_documents(tenant_id, &new, &quota)
        .await?
        .map_err(|over| ApiError::QuotaExceeded(quota_message(over)))?;
    drop(new);
    let store = store.clone();
    let task = tokio::spawn(async move {
        let result = write_all(&store, &reserved, uploads).await;
        if result.is_err() {
            for doc in &reserved {
                if let Err(e) = store.discard_document(doc).await {
                    // Left `loading`: invisible, and removed at the next start.
                    log::error!("a failed upload could not be cleaned up: {e}");
                }
            }
        }
        drop(slot);
        result
    });
    task.await
        .map_err(|e| ApiError::Internal(format!("the upload task failed: {e}")))?
}

async fn write_all(
    store: &Store,
    reserved: &[ReservedDocument],
    uploads: Vec<Upload>,
) -> Result<Vec<DocumentSummary>, ApiError> {
    let mut counts = Vec::with_capacity(reserved.len());
    for (doc, upload) in reserved.iter().zip(uploads) {
        let texts = tokio::task::spawn_blocking(move || chunk_texts(upload.text))
            .await
            .map_err(|e| ApiError::Internal(format!("chunking failed: {e}")))?;
        store.insert_chunks(doc, &texts).await?;
        counts.push((doc, texts.len()));
    }
    Ok(store.publish_documents(&counts).await?)
}

fn chunk_texts(text: String) -> Vec<String> {
    chunk_document(&text, CHUNK_TARGET_CHARS, CHUNK_OVERLAP_CHARS)
        .into_iter()
        .map(|c| c.text)
        .collect()
}
