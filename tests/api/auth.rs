use serde_json::json;

use crate::helpers::{spawn_app, BRIDGE, TOWER};

#[actix_web::test]
async fn a_missing_or_unknown_key_gets_401_with_a_json_error() {
    let app = spawn_app().await;
    let mut res = app
        .client
        .get(app.url("/api/v1/documents"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "unauthorized", "message": "a valid X-API-Key header is required"}})
    );
    let (status, _) = app
        .get_json("/api/v1/documents", "rsk_not-a-real-key")
        .await;
    assert_eq!(status, 401);
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream?question=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = app
        .client
        .ws(format!("{}/api/v1/chat/ws", app.ws_base))
        .connect()
        .await;
    match res {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 401),
        other => panic!("expected a 401, got {:?}", other.map(|(r, _)| r.status())),
    }
}

#[actix_web::test]
async fn a_tenant_header_that_does_not_match_the_key_gets_403() {
    let app = spawn_app().await;
    let ok = app
        .client
        .get(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("X-Tenant-Id", "default"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let mut res = app
        .client
        .get(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("X-Tenant-Id", "someone-else"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
}

#[actix_web::test]
async fn admin_routes_need_an_admin_key() {
    let app = spawn_app().await;
    let (_, key) = app.new_tenant("acme").await;
    let (status, body) = app
        .post_json("/api/v1/admin/tenants", &key, json!({"name": "evil"}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = app.get_json("/api/v1/admin/stats", &key).await;
    assert_eq!(status, 403);
    let (status, stats) = app.get_json("/api/v1/admin/stats", &app.admin_key).await;
    assert_eq!(status, 200);
    assert_eq!(stats["activeStreams"], 0);
}

#[actix_web::test]
async fn a_key_is_shown_once_stored_hashed_and_stops_working_when_revoked() {
    let app = spawn_app().await;
    let (tenant, _) = app.new_tenant("acme").await;
    let (status, created) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": tenant, "name": "laptop"}),
        )
        .await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("rsk_") && key.len() > 40);
    let (status, _) = app.get_json("/api/v1/documents", &key).await;
    assert_eq!(status, 200);

    let (_, list) = app
        .get_json(
            &format!("/api/v1/admin/keys?tenantId={tenant}"),
            &app.admin_key,
        )
        .await;
    let listed = list["keys"].to_string();
    assert!(!listed.contains(&key), "the plain key must not be listed");

    let path = format!("/api/v1/admin/keys/{}", created["id"].as_str().unwrap());
    assert_eq!(app.delete(&path, &app.admin_key).await, 204);
    let (status, _) = app.get_json("/api/v1/documents", &key).await;
    assert_eq!(status, 401);

    let (status, body) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": "no-such-tenant", "name": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[actix_web::test]
async fn one_tenant_never_sees_or_retrieves_another_tenants_documents() {
    let app = spawn_app().await;
    let (_, key_a) = app.new_tenant("a").await;
    let (_, key_b) = app.new_tenant("b").await;
    let doc_a = app.add_document(&key_a, "Tower", TOWER).await;
    app.add_document(&key_b, "Bridge", BRIDGE).await;

    let (_, list_b) = app.get_json("/api/v1/documents", &key_b).await;
    let titles: Vec<&str> = list_b["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Bridge"]);

    let (_, answer) = app
        .post_json(
            "/api/v1/ask",
            &key_b,
            json!({"question": "How tall is the Eiffel Tower?"}),
        )
        .await;
    for s in answer["sources"].as_array().unwrap() {
        assert_eq!(s["title"], "Bridge", "tenant b retrieved {s}");
    }
    assert!(!answer["answer"].as_str().unwrap().contains("330"));

    assert_eq!(
        app.delete(&format!("/api/v1/documents/{doc_a}"), &key_b)
            .await,
        404
    );
    let (_, list_a) = app.get_json("/api/v1/documents", &key_a).await;
    assert_eq!(list_a["documents"].as_array().unwrap().len(), 1);
}
