//! An answer's log shared through Redis Streams (cluster mode), so a client whose connection
//! dropped resumes through whichever hub the load balancer picks.
//!
//! The hub running the answer keeps its in-process [`MemoryLog`] (its own readers stay on
//! the fast path) and a mirror task copies the events to Redis: it wakes on an append,
//! waits [`BATCH_WINDOW`] for more, and sends all of them in one round trip, so the cost is
//! per batch, not per token. A hub asked for an answer it does not run follows the stream
//! into a local [`MemoryLog`] that starts after the client's cursor, and tells the running
//! hub it has a reader (so the answer is not abandoned while someone reads it elsewhere).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{poll_fn, AbortHandle, Abortable};
use serde::{Deserialize, Serialize};

use super::event_log::{EventLog, MemoryLog, ReadOutcome};
use super::registry::{gap_event, AnswerEntry, AnswerOwner, Answers, NewAnswer};
use super::{AnswerEvent, DoneMetadata, Source, StreamEvent};
use crate::cluster::control::Control;
use crate::cluster::{AnswerInfo, Cluster, ClusterError};
use crate::error::ErrorBody;

/// How long the mirror gathers tokens after the first one before sending them.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// How long a resume waits for the Redis copy to reach the client's cursor (the mirror
/// lags the running hub by a batch window and a round trip): 10 × 50 ms.
const CATCH_UP_WAITS: u32 = 10;
const CATCH_UP_WAIT: Duration = Duration::from_millis(50);
/// Wait before sending a batch again after Redis failed to take it.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Events sent in one round trip at most.
const BATCH_MAX: usize = 512;

#[derive(Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum WireRef<'a> {
    Conversation {
        id: &'a str,
    },
    Sources {
        sources: &'a [Source],
    },
    Token {
        text: &'a str,
    },
    Done {
        meta: &'a DoneMetadata,
    },
    Error {
        error: &'a ErrorBody,
        partial: Option<&'a DoneMetadata>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    Conversation {
        id: String,
    },
    Sources {
        sources: Arc<[Source]>,
    },
    Token {
        text: String,
    },
    Done {
        meta: Box<DoneMetadata>,
    },
    Error {
        error: ErrorBody,
        partial: Option<Box<DoneMetadata>>,
    },
}

/// One event as JSON, without copying its text first.
pub fn encode(ev: &AnswerEvent) -> String {
    let wire = match &ev.event {
        StreamEvent::Conversation(id) => WireRef::Conversation { id },
        StreamEvent::Sources(sources) => WireRef::Sources { sources },
        StreamEvent::Token(text) => WireRef::Token { text },
        StreamEvent::Done(meta) => WireRef::Done { meta },
        StreamEvent::Error(error) => WireRef::Error {
            error,
            partial: ev.partial.as_deref(),
        },
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

pub fn decode(json: &str) -> Option<(StreamEvent, Option<Box<DoneMetadata>>)> {
    Some(match serde_json::from_str::<Wire>(json).ok()? {
        Wire::Conversation { id } => (StreamEvent::Conversation(id), None),
        Wire::Sources { sources } => (StreamEvent::Sources(sources), None),
        Wire::Token { text } => (StreamEvent::Token(text), None),
        Wire::Done { meta } => (StreamEvent::Done(meta), None),
        Wire::Error { error, partial } => (StreamEvent::Error(error), partial),
    })
}

/// What the mirror registers the answer with.
pub struct Mirrored {
    pub id: Arc<str>,
    pub owner: AnswerOwner,
    pub ticket: Option<String>,
    pub label: Option<Arc<str>>,
    pub grace: Duration,
}

/// Copies a running answer's events to Redis until its terminal event.
pub fn mirror(cluster: Arc<Cluster>, log: Arc<MemoryLog>, answer: Mirrored) {
    actix_web::rt::spawn(async move {
        let Mirrored {
            id,
            owner,
            ticket,
            label,
            grace,
        } = answer;
        let announced = cluster
            .announce_answer(
                &id,
                &owner.key_id,
                &owner.tenant_id,
                ticket.as_deref(),
                label.as_deref(),
            )
            .await;
        if let Err(e) = announced {
            log::warn!("answer {id} is not shared with the other hubs: {e}");
            return;
        }
        let mut cursor = 0;
        let mut failing = false;
        loop {
            let mut batch = Vec::new();
            let outcome = poll_fn(|cx| {
                log.poll_read(cx, cursor, BATCH_MAX, &mut |ev| {
                    batch.push((ev.seq, encode(ev)))
                })
            })
            .await;
            let ReadOutcome::Read { last, ended } = outcome else {
                // The in-process log dropped events the mirror had not sent (Redis was slow
                // past the log's byte bound): an event numbered past the hole ends every
                // follower with a gap instead of leaving it waiting.
                let hole = gap_event(log.last_seq() + 1);
                let ending = [(hole.seq, encode(&hole))];
                if let Err(e) = cluster.append_events(&id, &ending, Some(grace)).await {
                    log::warn!("answer {id}: its gap could not be shared: {e}");
                }
                return;
            };
            let end = ended.then_some(grace);
            match cluster.append_events(&id, &batch, end).await {
                Ok(()) => {
                    cursor = last;
                    failing = false;
                }
                Err(e) => {
                    // Kept in the in-process log (bounded) and sent again once Redis is back;
                    // told once per outage, not once per batch.
                    if !failing {
                        log::warn!("answer {id}: events not shared with the other hubs yet: {e}");
                    }
                    failing = true;
                    actix_web::rt::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            }
            if ended {
                return;
            }
            actix_web::rt::time::sleep(BATCH_WINDOW).await;
        }
    });
}

/// The answer `info` describes, running on another hub, followed from after `after`. The
/// entry is not registered here: it lives as long as its readers.
pub async fn follow(
    cluster: Arc<Cluster>,
    id: &str,
    info: AnswerInfo,
    after: u64,
    max_bytes: usize,
) -> Result<Arc<AnswerEntry>, ClusterError> {
    let mut reader = cluster.log_reader(id, after).await?;
    let log = MemoryLog::resuming_after(after, max_bytes);
    // A stop here (a WebSocket cancel) is sent on to the hub that runs the answer.
    let (stop, stop_registration) = AbortHandle::new_pair();
    let mut stopped = Abortable::new(std::future::pending::<()>(), stop_registration);
    let cancel = Control::CancelAnswer {
        answer_id: id.to_owned(),
        key_id: info.key_id.clone(),
    };
    let entry = Answers::remote(NewAnswer {
        id: id.into(),
        owner: AnswerOwner {
            key_id: info.key_id,
            tenant_id: info.tenant_id,
        },
        log: log.clone(),
        stop,
        ticket: info.ticket,
        label: info.label.map(Arc::from),
    });
    let presence = |joined| Control::Presence {
        answer_id: id.to_owned(),
        hub: info.hub.clone(),
        joined,
    };
    cluster.publish(presence(true)).await?;
    let leave = presence(false);
    let weak = Arc::downgrade(&log);
    drop(log);
    actix_web::rt::spawn(async move {
        let mut expected = after + 1;
        let mut cancel = Some(cancel);
        'follow: loop {
            // Until the terminal event comes, a stop is told to the running hub once.
            let batch = tokio::select! {
                batch = reader.next_batch() => batch,
                _ = &mut stopped, if cancel.is_some() => {
                    if let Some(cancel) = cancel.take() {
                        if let Err(e) = cluster.publish(cancel).await {
                            log::warn!("a stop was not told to the answer's hub: {e}");
                        }
                    }
                    continue;
                }
            };
            let Some(log) = weak.upgrade() else {
                break;
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    log::warn!("following an answer of another hub: {e}");
                    log.append(StreamEvent::Error(unavailable()), None);
                    break;
                }
            };
            for (seq, json) in batch {
                let event = decode(&json).filter(|_| seq == expected);
                let Some((event, partial)) = event else {
                    // Trimmed or unreadable: the reader gets a gap, never a silent hole.
                    log.expire();
                    break 'follow;
                };
                log.append(event, partial);
                expected += 1;
            }
            if log.is_ended() {
                break;
            }
        }
        if let Err(e) = cluster.publish(leave).await {
            log::warn!("a remote reader's leave was not told: {e}");
        }
    });
    Ok(entry)
}

/// Why an answer of another hub could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Unavailable(#[from] ClusterError),
    #[error("the cursor is ahead of the answer")]
    Ahead,
}

/// The answer `id` running on another hub, followed from after `after`, if it is known
/// and `allowed` accepts its owner (and ticket); `None` otherwise.
pub async fn find(
    cluster: Arc<Cluster>,
    id: &str,
    after: u64,
    max_bytes: usize,
    allowed: impl FnOnce(&AnswerInfo) -> bool,
) -> Result<Option<Arc<AnswerEntry>>, FindError> {
    let Some(mut info) = cluster.answer_info(id).await? else {
        return Ok(None);
    };
    if !allowed(&info) {
        return Ok(None);
    }
    // The client may have read an event from the running hub a moment before its mirror
    // sent it to Redis: give the copy that moment before calling the cursor ahead.
    let mut waits = CATCH_UP_WAITS;
    while after > info.last_seq {
        if waits == 0 {
            return Err(FindError::Ahead);
        }
        waits -= 1;
        actix_web::rt::time::sleep(CATCH_UP_WAIT).await;
        info = match cluster.answer_info(id).await? {
            Some(info) => info,
            None => return Ok(None),
        };
    }
    Ok(Some(follow(cluster, id, info, after, max_bytes).await?))
}

fn unavailable() -> ErrorBody {
    ErrorBody {
        code: "cluster_unavailable".to_owned(),
        message: "the cluster's shared state (Redis) is unavailable; resume to continue".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_the_trip_through_redis_text() {
        let meta = DoneMetadata {
            answer_id: "a".into(),
            provider: "offline".into(),
            model: "m".into(),
            ttft_ms: Some(3),
            elapsed_ms: 9,
            tokens: 2,
            input_tokens: 0,
            input_tokens_estimated: false,
            finish_reason: "stop".into(),
            sources: Arc::from(vec![]),
            conversation_id: None,
        };
        let events = [
            (StreamEvent::Token("héllo \"x\"".into()), None),
            (StreamEvent::Conversation("c".into()), None),
            (StreamEvent::Done(Box::new(meta.clone())), None),
            (
                StreamEvent::Error(ErrorBody {
                    code: "upstream_error".into(),
                    message: "m".into(),
                }),
                Some(Box::new(meta)),
            ),
        ];
        for (event, partial) in events {
            let json = encode(&AnswerEvent {
                seq: 1,
                event: event.clone(),
                partial: partial.clone(),
            });
            let (back, back_partial) = decode(&json).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{event:?}"));
            assert_eq!(format!("{back_partial:?}"), format!("{partial:?}"));
        }
    }
}
