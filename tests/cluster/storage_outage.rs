//! PostgreSQL going away under the cluster (a TCP proxy between both hubs and the server of
//! RAGSTREAM_TEST_PG that can drop every connection and refuse new ones): both hubs turn not
//! ready, new answers get 503 `storage_unavailable` through nginx, the answers already
//! streaming on either hub finish, and once the proxy passes traffic again both hubs serve
//! without a restart and nothing already stored is lost. The outage outlasts the lease TTL,
//! so the heartbeats of both hubs lapse meanwhile: neither may take the other for dead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::rt::time::sleep;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::cut_proxy::CutProxy;
use crate::rig::{Rig, ADMIN_KEY};
use crate::test_db::{pg_server, TestDb};
use crate::{ask_path, body_text, ended_with_done, open_sse, wait_until};

/// RAGSTREAM_TEST_PG is postgres://user@host:port: (user, the server's address).
async fn pg_address() -> (String, SocketAddr) {
    let server = pg_server();
    let (user, address) = server
        .split("//")
        .nth(1)
        .and_then(|rest| rest.split_once('@'))
        .expect("RAGSTREAM_TEST_PG of the form postgres://user@host:port");
    let target = tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut found| found.next())
        .expect("the PostgreSQL address resolves");
    (user.to_owned(), target)
}

/// Reads an SSE body until `needle` has come; what came so far.
async fn read_until(
    res: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
    >,
    needle: &str,
) -> String {
    let mut text = String::new();
    while !text.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(20), res.next()).await {
            Ok(Some(Ok(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("the stream ended before {needle:?}: {other:?}\n{text}"),
        }
    }
    text
}

/// The conversation id in an agent stream's first frame.
fn conversation_id(text: &str) -> String {
    let start = text
        .find("\"conversationId\":\"")
        .map(|i| i + "\"conversationId\":\"".len())
        .expect("a conversationId");
    let len = text[start..].find('"').expect("the id's end");
    text[start..start + len].to_owned()
}

async fn readyz(rig: &Rig, url: String) -> (u16, Value) {
    match rig.client.get(url).send().await {
        Ok(mut res) => (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        ),
        Err(_) => (0, Value::Null),
    }
}

/// The status of the answer of a conversation's first turn (`""` while it cannot be read).
async fn answer_status(rig: &Rig, url: String) -> (String, Value) {
    let (status, body) = rig.get(&url, ADMIN_KEY).await;
    if status != 200 {
        return (String::new(), body);
    }
    let answer = body["messages"][1].clone();
    (answer["status"].as_str().unwrap_or("").to_owned(), answer)
}

#[actix_web::test]
async fn postgres_down_means_not_ready_and_503_answers_finish_and_the_cluster_recovers() {
    let ttl = 3;
    // Both hubs' heartbeats lapse (two TTLs), and the database comes back between two
    // retries of the final writes (0.2 s doubling to 5 s: 6.2 s and 11.2 s after an answer's
    // end), so the heartbeats reach it before the writes do.
    let outage = Duration::from_secs(7);
    let mut rig = Rig::empty_on_own_redis(100).await;
    let (user, target) = pg_address().await;
    let proxy = CutProxy::start(target).await;
    // PostgreSQL whatever RAGSTREAM_CLUSTER_DATABASE_URL says: this is its outage.
    if rig.db.is_none() {
        rig.db = Some(TestDb::postgres().await);
    }
    let name = rig
        .db
        .as_ref()
        .and_then(|db| db.url.rsplit('/').next())
        .expect("a database name")
        .to_owned();
    rig.database_url = format!("postgres://{user}@{}/{name}", proxy.addr);
    rig.start_hubs(ttl).await;
    rig.add_document().await;

    // Stored before the outage: a conversation turn.
    let (status, body) = rig
        .post(
            &rig.lb("/api/v1/agent/chat"),
            ADMIN_KEY,
            json!({"message": "lighthouse keepers", "topK": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stored = body["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_owned();
    let stored_answer = body["answer"].as_str().expect("answer").to_owned();

    // On each hub: an answer and a conversation answer streaming when the database goes,
    // the conversation's rows stored (its final write is what waits for the database).
    let mut asks = Vec::new();
    let mut conversations = Vec::new();
    for hub in ["a", "b"] {
        let (status, mut res) = open_sse(&rig, rig.hub(hub).url(ask_path()), ADMIN_KEY).await;
        assert_eq!(status, 200);
        read_until(&mut res, "\"token\"").await;
        asks.push(res);
        let path = "/api/v1/agent/chat/stream?message=lighthouse%20keepers&topK=3";
        let (status, mut res) = open_sse(&rig, rig.hub(hub).url(path), ADMIN_KEY).await;
        assert_eq!(status, 200);
        let id = conversation_id(&read_until(&mut res, "\"token\"").await);
        let url = rig.hub(hub).url(&format!("/api/v1/conversations/{id}"));
        wait_until(
            "the turn's rows stored",
            Duration::from_secs(10),
            || async { answer_status(&rig, url.clone()).await.0 == "streaming" },
        )
        .await;
        conversations.push((hub, id, res));
    }

    proxy.set_down(true);
    for res in asks {
        let text = body_text(res).await;
        assert!(ended_with_done(&text), "{text}");
        assert!(!text.contains("\"error\""), "{text}");
    }
    let mut ids = Vec::new();
    for (hub, id, res) in conversations {
        let text = body_text(res).await;
        assert!(ended_with_done(&text), "on {hub}: {text}");
        assert!(!text.contains("\"error\""), "on {hub}: {text}");
        ids.push((hub, id));
    }
    // The final writes now wait for the database, retrying less and less often, while the
    // heartbeats keep trying every TTL / 3.
    let ended = Instant::now();

    for url in [
        rig.hub("a").url("/readyz"),
        rig.hub("b").url("/readyz"),
        rig.lb("/readyz"),
    ] {
        wait_until("not ready", Duration::from_secs(20), || async {
            let (status, body) = readyz(&rig, url.clone()).await;
            status == 503 && body["error"]["code"] == "storage_unavailable"
        })
        .await;
    }
    // Twice through nginx (round robin: once each hub).
    for _ in 0..2 {
        let (status, res) = open_sse(&rig, rig.lb(ask_path()), ADMIN_KEY).await;
        assert_eq!(status, 503);
        assert_eq!(crate::error_code(res).await, "storage_unavailable");
    }
    let (status, body) = rig
        .post(
            &rig.lb("/api/v1/ask"),
            ADMIN_KEY,
            json!({"question": "lighthouse keepers"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");

    // A deliberate length of outage, not a synchronisation: past it, both heartbeats lapsed.
    if let Some(left) = outage.checked_sub(ended.elapsed()) {
        sleep(left).await;
    }
    proxy.set_down(false);
    for hub in ["a", "b"] {
        let url = rig.hub(hub).url("/readyz");
        wait_until("ready again", Duration::from_secs(20), || async {
            readyz(&rig, url.clone()).await.0 == 200
        })
        .await;
    }
    for _ in 0..2 {
        let (status, res) = open_sse(&rig, rig.lb(ask_path()), ADMIN_KEY).await;
        assert_eq!(status, 200, "admitted without a restart");
        assert!(ended_with_done(&body_text(res).await));
    }

    // The answers that ended during the outage are written once the database is back, by
    // the hub that ran each (neither was taken for dead), and complete.
    for (hub, id) in ids {
        let url = rig.lb(&format!("/api/v1/conversations/{id}"));
        let start = Instant::now();
        loop {
            let (status, answer) = answer_status(&rig, url.clone()).await;
            if status == "complete" {
                assert!(
                    !answer["content"].as_str().unwrap_or("").is_empty(),
                    "{answer}"
                );
                break;
            }
            assert_eq!(status, "streaming", "{hub}'s answer: {answer}");
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{hub}'s final write never came: {answer}"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }
    // What was stored before is all there.
    let (status, body) = rig
        .get(
            &rig.lb(&format!("/api/v1/conversations/{stored}")),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][1]["status"], "complete", "{body}");
    assert_eq!(body["messages"][1]["content"], stored_answer.as_str());
    let (status, body) = rig.get(&rig.lb("/api/v1/documents"), ADMIN_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("Lighthouses"), "{body}");
}
