//! Retrieval per tenant: each tenant's scores come from its own documents, and a document
//! is searchable only once it is whole.

use ragstream::rag::fts_query::build_search_query;
use ragstream::store::{NewDocument, Quota, Store};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, BRIDGE, TOWER};
use crate::uploads::tenant_admin;

const QUESTION: &str = "How tall is the tower and when did construction of the bridge begin?";

const BOTH: &str = "# Towers and bridges\n\nA tower stands beside the bridge. Construction of the \
                    tower began before the bridge; both are tall.\n";

/// (document id, chunk id, score) of the tenant's passages, straight from the store.
async fn ranked(app: &TestApp, tenant_id: &str) -> Vec<(String, i64, f64)> {
    let query = build_search_query(QUESTION).expect("searchable question");
    app.state
        .store
        .search(tenant_id, &query, 10)
        .await
        .expect("search")
        .into_iter()
        .map(|p| (p.document_id, p.chunk_id, p.score))
        .collect()
}

async fn sources(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            key,
            json!({"question": QUESTION, "topK": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["sources"].as_array().expect("sources").clone()
}

#[actix_web::test]
async fn a_tenants_scores_and_order_do_not_move_when_another_tenant_uploads_the_same_terms() {
    let app = spawn_app().await;
    let (a_id, a) = tenant_admin(&app, "a").await;
    let (b_id, b) = tenant_admin(&app, "b").await;
    for (title, text) in [("Tower", TOWER), ("Bridge", BRIDGE), ("Both", BOTH)] {
        app.add_document(&a, title, text).await;
    }
    let before = ranked(&app, &a_id).await;
    let before_api = sources(&app, &a).await;
    assert!(before.len() >= 3, "{before:?}");

    // Tenant B loads documents full of the same terms, in many sizes.
    for i in 1..=25 {
        let text = format!(
            "{} {}",
            "tower bridge construction tall ".repeat(i * 3),
            "filler words here ".repeat(i)
        );
        app.add_document(&b, &format!("b{i}"), &text).await;
    }

    let after = ranked(&app, &a_id).await;
    assert_eq!(after, before, "tenant A's ranking moved");
    assert_eq!(sources(&app, &a).await, before_api);
    // B finds only its own documents, A's stay A's.
    let theirs = ranked(&app, &b_id).await;
    assert_eq!(theirs.len(), 10);
    let a_docs: Vec<&String> = before.iter().map(|(d, _, _)| d).collect();
    assert!(theirs.iter().all(|(d, _, _)| !a_docs.contains(&d)));
}

#[actix_web::test]
async fn a_document_is_found_only_once_all_its_chunks_are_in_and_a_discarded_one_never() {
    let app = spawn_app().await;
    let (tenant, _) = tenant_admin(&app, "t").await;
    let store = &app.state.store;
    let quota = Quota {
        max_documents: 10,
        max_bytes: 1 << 20,
    };
    let new = [NewDocument {
        title: "Tower",
        chars: TOWER.len(),
        bytes: TOWER.len(),
    }];
    let query = build_search_query("Eiffel tower").unwrap();

    let doc = store
        .reserve_documents(&tenant, &new, &quota)
        .await
        .unwrap()
        .expect("within quota")
        .remove(0);
    let texts: Vec<String> = TOWER.split("\n\n").map(str::to_owned).collect();
    store.insert_chunks(&doc, &texts).await.unwrap();
    assert!(store.search(&tenant, &query, 5).await.unwrap().is_empty());
    assert_eq!(store.count_documents(&tenant).await.unwrap(), 0);

    let published = store
        .publish_documents(&[(&doc, texts.len())])
        .await
        .unwrap();
    assert_eq!(published[0].chunk_count, texts.len() as i64);
    assert!(!store.search(&tenant, &query, 5).await.unwrap().is_empty());

    // A second upload that fails is removed with its chunks, and frees its quota.
    let other = store
        .reserve_documents(&tenant, &new, &quota)
        .await
        .unwrap()
        .expect("within quota")
        .remove(0);
    store.insert_chunks(&other, &texts).await.unwrap();
    assert_eq!(store.document_usage(&tenant).await.unwrap().documents, 2);
    store.discard_document(&other).await.unwrap();
    assert_eq!(store.document_usage(&tenant).await.unwrap().documents, 1);
    let found = store.search(&tenant, &query, 10).await.unwrap();
    assert!(found.iter().all(|p| p.document_id == doc.id), "{found:?}");
}

#[actix_web::test]
async fn the_shared_index_of_earlier_versions_is_split_per_tenant_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/legacy.db", dir.path().display());
    drop(Store::connect(&url).await.unwrap());
    // Make it a database of the earlier version: one index holding two tenants' chunks.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in [
        "INSERT INTO tenants (id, name) VALUES ('t1', 't1'), ('t2', 't2')",
        "INSERT INTO documents (id, tenant_id, title, chars, chunk_count) VALUES \
         ('d1', 't1', 'Tower', 10, 1), ('d2', 't2', 'Bridge', 10, 1)",
        "INSERT INTO chunks (id, document_id, tenant_id, ordinal) VALUES \
         (1, 'd1', 't1', 0), (2, 'd2', 't2', 0)",
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(title, text, tokenize = 'porter unicode61')",
        "INSERT INTO chunks_fts (rowid, title, text) VALUES \
         (1, 'Tower', 'The Eiffel tower is tall.'), (2, 'Bridge', 'The bridge has a tower too.')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::connect(&url).await.unwrap();
    let tower = build_search_query("tower").unwrap();
    let t1 = store.search("t1", &tower, 5).await.unwrap();
    let t2 = store.search("t2", &tower, 5).await.unwrap();
    assert_eq!(t1.len(), 1);
    assert_eq!(t1[0].document_id, "d1");
    assert_eq!(t2.len(), 1);
    assert_eq!(t2[0].document_id, "d2");

    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (legacy,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sqlite_master WHERE name = 'chunks_fts'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(legacy, 0, "the shared index is dropped");
}
