//! Hubs own the rows they write: two apps on one database (SQLite file or PostgreSQL
//! database, whichever this run tests); when one stops beating, the other cleans up its
//! unfinished answers and uploads within the lease, and never touches its own.

use std::time::{Duration, Instant};

use ragstream::store::{NewDocument, Quota};
use serde_json::Value;

use crate::helpers::{spawn_app_with, Options, SseReader, TestApp, TOWER};
use crate::support::test_db::TestDb;

const LEASE: Duration = Duration::from_millis(900);

const QUESTION: &str =
    "Tell me about the Eiffel Tower: its engineer, its construction, the World's Fair and its height";

async fn hub_on(db: &TestDb) -> TestApp {
    spawn_app_with(Options {
        // Slow enough that both answers are still streaming through the test.
        pace: Duration::from_millis(200),
        database_url: Some(db.url.clone()),
        settings: Some(Box::new(|s| s.lease_ttl = LEASE)),
        ..Options::default()
    })
    .await
}

/// Starts a conversation answer on `app`; returns its conversation id and the open stream
/// (dropping it would end the answer).
async fn start_answer(
    app: &TestApp,
) -> (
    String,
    SseReader<impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>,
) {
    let res = app
        .client
        .get(app.url("/api/v1/agent/chat/stream"))
        .query(&[("message", QUESTION)])
        .expect("query")
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(res.status().as_u16(), 200);
    let mut reader = SseReader::new(res);
    let first = reader.next().await.expect("the conversation frame");
    let id = first.json()["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    (id, reader)
}

async fn answer_status(app: &TestApp, conversation: &str) -> Value {
    let path = format!("/api/v1/conversations/{conversation}");
    let (status, body) = app.get_json(&path, &app.admin_key).await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .expect("messages")
        .last()
        .expect("the answer")["status"]
        .clone()
}

#[actix_web::test]
async fn a_dead_hubs_answers_are_interrupted_within_the_lease_and_a_live_hubs_never() {
    let db = TestDb::create().await;
    let a = hub_on(&db).await;
    let b = hub_on(&db).await;
    a.add_document(&a.admin_key, "Tower", TOWER).await;
    let (on_a, _a_stream) = start_answer(&a).await;
    let (on_b, _b_stream) = start_answer(&b).await;
    // Each hub commits its turns in groups, after their first event: a read on the hub
    // that started a turn waits for it, and then every hub sees it.
    assert_eq!(answer_status(&a, &on_a).await, "streaming");
    assert_eq!(answer_status(&b, &on_b).await, "streaming");
    assert_eq!(answer_status(&b, &on_a).await, "streaming");

    // Both beat: after more than a lease, neither's answer was touched.
    actix_web::rt::time::sleep(LEASE * 2).await;
    assert_eq!(answer_status(&b, &on_a).await, "streaming");
    assert_eq!(answer_status(&a, &on_b).await, "streaming");

    // A "dies": its heartbeat stops (its answer still runs, as in a frozen process).
    a.state.presence.stop();
    let died = Instant::now();
    loop {
        if answer_status(&b, &on_a).await == "interrupted" {
            break;
        }
        assert!(
            died.elapsed() < LEASE * 3,
            "the dead hub's answer stayed streaming"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        died.elapsed() >= LEASE / 2,
        "marked before the lease could lapse"
    );
    assert_eq!(
        answer_status(&b, &on_b).await,
        "streaming",
        "the live hub's own answer"
    );
    // And it stays so while B lives, beat after beat.
    actix_web::rt::time::sleep(LEASE * 2).await;
    assert_eq!(answer_status(&b, &on_b).await, "streaming");
}

#[actix_web::test]
async fn a_dead_hubs_unfinished_uploads_are_removed_and_a_live_hubs_kept() {
    let db = TestDb::create().await;
    let a = hub_on(&db).await;
    let b = hub_on(&db).await;
    let quota = Quota {
        max_documents: 10,
        max_bytes: 1 << 20,
    };
    let doc = [NewDocument {
        title: "Tower",
        chars: TOWER.len(),
        bytes: TOWER.len(),
    }];
    let texts: Vec<String> = TOWER.split("\n\n").map(str::to_owned).collect();
    for app in [&a, &b] {
        let reserved = app
            .state
            .store
            .reserve_documents("default", &doc, &quota)
            .await
            .unwrap()
            .expect("within quota")
            .remove(0);
        app.state
            .store
            .insert_chunks(&reserved, &texts)
            .await
            .unwrap();
    }
    let usage = || async {
        b.state
            .store
            .document_usage("default")
            .await
            .unwrap()
            .documents
    };
    assert_eq!(usage().await, 2);

    actix_web::rt::time::sleep(LEASE * 2).await;
    assert_eq!(usage().await, 2, "live hubs' uploads are kept");

    a.state.presence.stop();
    let died = Instant::now();
    while usage().await != 1 {
        assert!(
            died.elapsed() < LEASE * 3,
            "the dead hub's upload was not removed"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    actix_web::rt::time::sleep(LEASE * 2).await;
    assert_eq!(usage().await, 1, "the live hub's upload is kept");
}

/// Several hubs of a PostgreSQL deployment start together: the migrations (under
/// sqlx's advisory lock) and the bootstrap key's registration must not trip over each
/// other, and the key works on every hub.
#[actix_web::test]
async fn hubs_starting_at_once_on_one_postgres_database_all_start_and_share_the_key() {
    let db = TestDb::postgres().await;
    let hubs = futures_util::future::join_all((0..3).map(|_| hub_on(&db))).await;
    for hub in &hubs {
        let (status, body) = hub.get_json("/api/v1/whoami", &hub.admin_key).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, keys) = hubs[0]
        .get_json("/api/v1/admin/keys?tenantId=default", &hubs[0].admin_key)
        .await;
    assert_eq!(status, 200, "{keys}");
    let operators = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["isOperator"] == true)
        .count();
    assert_eq!(operators, 1, "{keys}");
}
