//! Operators and tenant admins: every admin route tried with another tenant's admin key.

use std::time::Duration;

use ragstream::store::{Bootstrap, Store};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, SseReader, TestApp, BRIDGE, TOWER};

/// A key made by the operator: (key id, plain key).
pub async fn make_key(app: &TestApp, tenant_id: &str, name: &str, admin: bool) -> (String, String) {
    let (status, body) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": tenant_id, "name": name, "admin": admin}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["key"].as_str().expect("key").to_owned(),
    )
}

/// A tenant with a user key and an admin key.
struct Tenant {
    id: String,
    user: String,
    user_id: String,
    admin: String,
    admin_id: String,
}

async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let (status, body) = app
        .post_json(
            "/api/v1/admin/tenants",
            &app.admin_key,
            json!({"name": name}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (user_id, user) = make_key(app, &id, "user", false).await;
    let (admin_id, admin) = make_key(app, &id, "admin", true).await;
    Tenant {
        id,
        user,
        user_id,
        admin,
        admin_id,
    }
}

async fn ticket(app: &TestApp, key: &str) -> String {
    let (status, body) = app
        .post_json("/api/v1/stream-tickets", key, json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["ticket"].as_str().unwrap().to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| match &v["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn assert_not_found(status: u16, body: &Value, what: &str) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{what}: {body}"
    );
}

#[actix_web::test]
async fn another_tenants_admin_key_sees_and_touches_nothing_of_this_tenant_on_any_admin_route() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let a = tenant(&app, "a").await;
    let b = tenant(&app, "b").await;
    let doc_a = app.add_document(&a.user, "Tower", TOWER).await;
    app.add_document(&b.user, "Bridge", BRIDGE).await;

    // Tenant A is busy: an answer streaming over SSE and a WebSocket open.
    let sse = app.open_sse(&a.user, "How tall is the tower?").await;
    assert_eq!(sse.status().as_u16(), 200);
    let mut sse = SseReader::new(sse);
    sse.next().await.expect("sources");
    let mut ws_a = app.open_ws(&a.user).await;
    let (_, streams) = app
        .get_json(
            &format!("/api/v1/admin/streams?tenantId={}", a.id),
            &app.admin_key,
        )
        .await;
    let stream_a = ids(&streams["streams"]).pop().expect("A's stream");
    let connection_a = loop {
        let (_, list) = app
            .get_json(
                &format!("/api/v1/admin/connections?tenantId={}", a.id),
                &app.admin_key,
            )
            .await;
        let found: Vec<&Value> = list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "ws")
            .collect();
        if let Some(c) = found.first() {
            break c["id"].as_u64().unwrap();
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    };

    // Tenants: creating is the operator's; listing shows B only.
    let (status, body) = app
        .post_json("/api/v1/admin/tenants", &b.admin, json!({"name": "c"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = app.get_json("/api/v1/admin/tenants", &b.admin).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body["tenants"]), [b.id.as_str()]);

    // Keys: A's tenant is as unknown as a tenant that does not exist.
    for tenant_id in [a.id.as_str(), "no-such-tenant"] {
        let (status, body) = app
            .post_json(
                "/api/v1/admin/keys",
                &b.admin,
                json!({"tenantId": tenant_id, "name": "x", "admin": true}),
            )
            .await;
        assert_not_found(status, &body, "create a key in another tenant");
        let (status, body) = app
            .get_json(
                &format!("/api/v1/admin/keys?tenantId={tenant_id}"),
                &b.admin,
            )
            .await;
        assert_not_found(status, &body, "list another tenant's keys");
    }
    let (_, body) = app.get_json("/api/v1/admin/keys", &b.admin).await;
    let mut listed = ids(&body["keys"]);
    listed.sort();
    let mut own = vec![b.user_id.clone(), b.admin_id.clone()];
    own.sort();
    assert_eq!(listed, own, "B's admin lists B's keys only");
    for key_id in [a.user_id.as_str(), a.admin_id.as_str(), "no-such-key"] {
        let path = format!("/api/v1/admin/keys/{key_id}");
        assert_eq!(app.delete(&path, &b.admin).await, 404, "revoke {key_id}");
    }
    let (status, _) = app.get_json("/api/v1/documents", &a.user).await;
    assert_eq!(status, 200, "A's key still works");

    // Stats, streams, connections and the live feed: nothing of A's, even by asking.
    let (status, stats) = app.get_json("/api/v1/admin/stats", &b.admin).await;
    assert_eq!(status, 200);
    assert_eq!(stats["activeStreams"], 0, "{stats}");
    assert_eq!(stats["connections"], 0, "{stats}");
    assert_eq!(stats["admittedTotal"], 0, "{stats}");
    assert_eq!(stats["streamsByTenant"], json!({}), "{stats}");
    let (status, list) = app.get_json("/api/v1/admin/streams", &b.admin).await;
    assert_eq!(status, 200);
    assert_eq!(list["streams"], json!([]));
    assert_eq!(list["metrics"]["answersTotal"], 0);
    let (status, list) = app.get_json("/api/v1/admin/connections", &b.admin).await;
    assert_eq!(status, 200);
    assert_eq!(list["connections"], json!([]));
    for route in ["stats", "streams", "connections"] {
        let (status, body) = app
            .get_json(
                &format!("/api/v1/admin/{route}?tenantId={}", a.id),
                &b.admin,
            )
            .await;
        assert_not_found(status, &body, route);
    }
    let url = app.url(&format!(
        "/api/v1/admin/events?ticket={}",
        ticket(&app, &b.admin).await
    ));
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // The feed opens with the charts' history (this tenant's: nothing), then the view.
    let mut feed = SseReader::new(res);
    let history = feed.next().await.unwrap();
    assert_eq!(history.event.as_deref(), Some("history"));
    assert_eq!(history.json()["samples"], json!([]), "{}", history.data);
    let view = feed.next().await.unwrap().json();
    assert_eq!(view["streams"], json!([]), "{view}");
    assert_eq!(view["connections"], json!([]), "{view}");
    assert_eq!(view["stats"]["activeStreams"], 0, "{view}");
    let url = app.url(&format!(
        "/api/v1/admin/events?tenantId={}&ticket={}",
        a.id,
        ticket(&app, &b.admin).await
    ));
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 404);

    // Ending A's stream or connection: as unknown, and both go on.
    let path = format!("/api/v1/admin/streams/{stream_a}");
    assert_eq!(app.delete(&path, &b.admin).await, 404);
    let path = format!("/api/v1/admin/connections/{connection_a}");
    assert_eq!(app.delete(&path, &b.admin).await, 404);
    let frame = sse.next().await.expect("A's answer goes on").json();
    assert!(frame["token"].is_string(), "{frame}");
    ws_a.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws_a.next_json().await["type"], "pong");

    // Documents are the key's tenant's: B's admin neither sees nor deletes A's.
    let (_, docs) = app.get_json("/api/v1/documents", &b.admin).await;
    assert!(!ids(&docs["documents"]).contains(&doc_a));
    let path = format!("/api/v1/documents/{doc_a}");
    assert_eq!(app.delete(&path, &b.admin).await, 404);
}

#[actix_web::test]
async fn a_tenant_admin_manages_its_own_tenant() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let b = tenant(&app, "b").await;
    app.add_document(&b.user, "Bridge", BRIDGE).await;

    // A key of its own tenant (the default when no tenant is named), admin or not.
    let (status, key) = app
        .post_json(
            "/api/v1/admin/keys",
            &b.admin,
            json!({"name": "carol", "admin": true}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["tenantId"], b.id.as_str());
    assert_eq!(
        (key["isAdmin"].clone(), key["isOperator"].clone()),
        (json!(true), json!(false))
    );
    let (status, _) = app
        .post_json(
            "/api/v1/admin/keys",
            &b.admin,
            json!({"tenantId": b.id, "name": "dave"}),
        )
        .await;
    assert_eq!(status, 201);

    // Its users' streams and connections: listed, counted, ended.
    let sse = app.open_sse(&b.user, "How long is the bridge?").await;
    let mut sse = SseReader::new(sse);
    sse.next().await.expect("sources");
    let (_, stats) = app.get_json("/api/v1/admin/stats", &b.admin).await;
    assert_eq!(stats["activeStreams"], 1, "{stats}");
    assert_eq!(stats["streamsByUser"][b.user_id.as_str()], 1, "{stats}");
    let (_, list) = app.get_json("/api/v1/admin/streams", &b.admin).await;
    let id = ids(&list["streams"]).pop().expect("B's stream");
    assert_eq!(
        app.delete(&format!("/api/v1/admin/streams/{id}"), &b.admin)
            .await,
        204
    );
    let last = sse.collect().await.pop().unwrap().json();
    assert_eq!(last["error"]["code"], "ended_by_admin");

    // Revoking a key of its tenant.
    let path = format!("/api/v1/admin/keys/{}", key["id"].as_str().unwrap());
    assert_eq!(app.delete(&path, &b.admin).await, 204);
    let (status, _) = app
        .get_json("/api/v1/documents", key["key"].as_str().unwrap())
        .await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn only_an_operator_makes_or_revokes_operator_keys_and_an_operator_acts_on_every_tenant() {
    let app = spawn_app().await;
    let a = tenant(&app, "a").await;
    let b = tenant(&app, "b").await;

    let (status, body) = app
        .post_json(
            "/api/v1/admin/keys",
            &b.admin,
            json!({"name": "root", "operator": true}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // The bootstrap operator makes another operator, who creates tenants and lists all.
    let (status, op) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": b.id, "name": "second operator", "operator": true}),
        )
        .await;
    assert_eq!(status, 201, "{op}");
    assert_eq!(
        (op["isAdmin"].clone(), op["isOperator"].clone()),
        (json!(true), json!(true))
    );
    let op_key = op["key"].as_str().unwrap();
    let (status, _) = app
        .post_json("/api/v1/admin/tenants", op_key, json!({"name": "c"}))
        .await;
    assert_eq!(status, 201);
    let (_, tenants) = app.get_json("/api/v1/admin/tenants", op_key).await;
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 4, "{tenants}");
    let (_, keys) = app.get_json("/api/v1/admin/keys", op_key).await;
    let all = ids(&keys["keys"]);
    assert!(all.contains(&a.admin_id) && all.contains(&b.admin_id));
    let (_, keys) = app
        .get_json(&format!("/api/v1/admin/keys?tenantId={}", a.id), op_key)
        .await;
    let mut of_a = ids(&keys["keys"]);
    of_a.sort();
    let mut want = vec![a.admin_id.clone(), a.user_id.clone()];
    want.sort();
    assert_eq!(of_a, want);
    let (status, body) = app
        .get_json("/api/v1/admin/keys?tenantId=no-such-tenant", op_key)
        .await;
    assert_not_found(status, &body, "an unknown tenant");

    // B's tenant admin may not revoke the operator key that lives in its tenant.
    let path = format!("/api/v1/admin/keys/{}", op["id"].as_str().unwrap());
    assert_eq!(app.delete(&path, &b.admin).await, 403);
    // The operator revokes A's admin, in another tenant.
    let path = format!("/api/v1/admin/keys/{}", a.admin_id);
    assert_eq!(app.delete(&path, op_key).await, 204);
    assert_eq!(app.delete(&path, op_key).await, 404, "already revoked");
}

#[actix_web::test]
async fn whoami_names_the_keys_role_and_tenant() {
    let app = spawn_app().await;
    let b = tenant(&app, "b").await;
    for (key, role, tenant_id, tenant_name) in [
        (app.admin_key.as_str(), "operator", "default", "default"),
        (b.admin.as_str(), "admin", b.id.as_str(), "b"),
        (b.user.as_str(), "user", b.id.as_str(), "b"),
    ] {
        let (status, me) = app.get_json("/api/v1/whoami", key).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["role"], role, "{me}");
        assert_eq!(me["tenantId"], tenant_id, "{me}");
        assert_eq!(me["tenantName"], tenant_name, "{me}");
        assert!(me["keyId"].is_string());
        assert!(!me.to_string().contains(key), "the key is never echoed");
    }
    let (status, _) = app.get_json("/api/v1/whoami", "rsk_not-a-key").await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn a_revoked_bootstrap_key_stays_revoked_after_a_restart_and_the_hub_starts() {
    let first = spawn_app().await;
    let (_, keys) = first
        .get_json("/api/v1/admin/keys?tenantId=default", &first.admin_key)
        .await;
    let bootstrap = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["isOperator"] == true)
        .expect("the bootstrap key is an operator")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/admin/keys/{bootstrap}");
    assert_eq!(first.delete(&path, &first.admin_key).await, 204);

    // The same database and the same RAGSTREAM_ADMIN_KEY.
    let database_url = first.state.settings.database_url.clone();
    let url = database_url.clone();
    let again = spawn_app_with(Options {
        settings: Some(Box::new(move |s| s.database_url = url)),
        ..Options::default()
    })
    .await;
    let (status, _) = again.get_json("/healthz", "").await;
    assert_eq!(status, 200, "the hub started");
    let (status, body) = again
        .get_json("/api/v1/admin/stats", &again.admin_key)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // What the start saw, and logged in one line.
    let store = Store::connect(&database_url).await.unwrap();
    let outcome = store
        .bootstrap_admin("default", Some(&again.admin_key))
        .await
        .unwrap();
    assert!(matches!(outcome, Bootstrap::Revoked { .. }), "{outcome:?}");
}
