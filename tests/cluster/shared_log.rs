//! The answer log shared through Redis Streams, driven directly: the in-process log's
//! behaviours (src/answer/event_log.rs tests) hold for a follower on another hub too.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::poll_fn;
use ragstream::answer::shared_log::{self, Mirrored};
use ragstream::answer::{AnswerEntry, AnswerOwner, EventLog, MemoryLog, ReadOutcome, StreamEvent};
use ragstream::cluster::Cluster;
use ragstream::error::ErrorBody;

use crate::rig::{flush_db, own_redis_server};

const DB: u8 = 4;

fn owner() -> AnswerOwner {
    AnswerOwner {
        key_id: "k".into(),
        tenant_id: "t".into(),
    }
}

fn token(text: &str) -> StreamEvent {
    StreamEvent::Token(text.to_owned())
}

fn error() -> StreamEvent {
    StreamEvent::Error(ErrorBody {
        code: "x".into(),
        message: "y".into(),
    })
}

/// Hub "w" runs an answer whose log is mirrored; hub "r" follows it.
async fn pair(id: &str) -> (Arc<MemoryLog>, Arc<Cluster>) {
    let url = format!("redis://127.0.0.1:6379/{DB}");
    let writer = Cluster::connect(&url, Some("w"), Duration::from_secs(15)).expect("cluster");
    let reader = Cluster::connect(&url, Some("r"), Duration::from_secs(15)).expect("cluster");
    let log = MemoryLog::new(1 << 20);
    let mirrored = Mirrored {
        id: id.into(),
        owner: owner(),
        ticket: None,
        label: None,
        grace: Duration::from_secs(5),
    };
    shared_log::mirror(writer, log.clone(), mirrored);
    (log, reader)
}

/// Follows answer `id` from after `after`, once the writer has registered it.
async fn follow(reader: &Arc<Cluster>, id: &str, after: u64) -> Arc<AnswerEntry> {
    // A deadline, not a count of tries: a loaded machine takes longer per try.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let found = shared_log::find(reader.clone(), id, after, 1 << 20, |_| true).await;
        if let Ok(Some(entry)) = found {
            return entry;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("answer {id} never registered");
}

/// Reads everything the follower has past `after`, waiting for it (5 s at most).
async fn read(entry: &AnswerEntry, after: u64, want: usize) -> (Vec<u64>, ReadOutcome) {
    let mut seen = Vec::new();
    let mut cursor = after;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let outcome = tokio::time::timeout_at(
            deadline,
            poll_fn(|cx| {
                entry
                    .log()
                    .poll_read(cx, cursor, 64, &mut |ev| seen.push(ev.seq))
            }),
        )
        .await
        .expect("the follower got events in time");
        match outcome {
            ReadOutcome::Read { last, ended } => {
                cursor = last;
                if ended || seen.len() >= want {
                    return (seen, outcome);
                }
            }
            other => return (seen, other),
        }
    }
}

#[actix_web::test]
async fn a_follower_gets_what_came_after_its_cursor_and_the_ending_once() {
    flush_db(DB).await;
    let (log, reader) = pair("log-1").await;
    log.append(token("a"), None);
    log.append(token("b"), None);
    log.append(token("c"), None);
    let entry = follow(&reader, "log-1", 1).await;
    let (seen, outcome) = read(&entry, 1, 2).await;
    assert_eq!(seen, vec![2, 3]);
    assert_eq!(
        outcome,
        ReadOutcome::Read {
            last: 3,
            ended: false
        }
    );

    // An append wakes the follower waiting past the last event.
    log.append(error(), None);
    assert_eq!(log.append(token("late"), None), 0);
    let (seen, outcome) = read(&entry, 3, 1).await;
    assert_eq!(seen, vec![4]);
    assert_eq!(
        outcome,
        ReadOutcome::Read {
            last: 4,
            ended: true
        }
    );
    let finished = poll_fn(|cx| Poll::Ready(entry.log().poll_read(cx, 4, 8, &mut |_| {}))).await;
    assert_eq!(finished, Poll::Ready(ReadOutcome::Finished));
}

#[actix_web::test]
async fn a_follower_whose_next_events_are_gone_gets_a_gap() {
    // A redis-server of its own: the shared one's numbers are all taken by other tests.
    let server = own_redis_server().await;
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let writer = Cluster::connect(&url, Some("w"), Duration::from_secs(15)).expect("cluster");
    let reader = Cluster::connect(&url, Some("r"), Duration::from_secs(15)).expect("cluster");
    let log = MemoryLog::new(1 << 20);
    for text in ["a", "b", "c", "d"] {
        log.append(token(text), None);
    }
    let mirrored = Mirrored {
        id: "log-2".into(),
        owner: owner(),
        ticket: None,
        label: None,
        grace: Duration::from_secs(5),
    };
    shared_log::mirror(writer, log.clone(), mirrored);
    let entry = follow(&reader, "log-2", 4).await;
    drop(entry);
    // Trimmed as MAXLEN would: events 2 and 3 are gone from the stream.
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("XDEL")
        .arg("{ragstream}:log:log-2")
        .arg("0-2")
        .arg("0-3")
        .query_async(&mut c)
        .await
        .expect("XDEL");
    let entry = follow(&reader, "log-2", 1).await;
    let (seen, outcome) = read(&entry, 1, 1).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(outcome, ReadOutcome::Gap);
}
