//! `GET /api/openapi.json`: a real validator accepts it, it lists every route the hub
//! registers (from the route table, not a list kept here), and real responses match the
//! shapes it documents. `GET /api/docs`: the page that shows it.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, SseReader, TestApp, TOWER};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/openapi_check.py");

async fn description(app: &TestApp) -> (tempfile::NamedTempFile, Value) {
    let mut res = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("served");
    assert_eq!(res.status().as_u16(), 200);
    let body = res.body().limit(4 << 20).await.expect("body");
    let doc: Value = serde_json::from_slice(&body).expect("JSON");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&body).expect("written");
    (file, doc)
}

fn python(args: &[&str], stdin: &str) {
    let mut child = Command::new("python3")
        .arg(CHECK)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install openapi-spec-validator)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("ends");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Responses collected first and validated at the end in one run of the validator (a slow
/// check between requests would let the hub close the client's idle keep-alive connection).
#[derive(Default)]
struct Instances(Vec<String>);

impl Instances {
    /// Every JSON value must be an instance of `components.schemas.<schema>`.
    fn conforms(&mut self, schema: &str, instances: &[Value]) {
        for instance in instances {
            self.0.push(format!("{schema}\t{instance}"));
        }
    }

    fn check(self, doc_path: &std::path::Path) {
        let path = doc_path.to_str().expect("utf-8 path");
        python(&["instances", path], &self.0.join("\n"));
    }
}

#[actix_web::test]
async fn the_description_is_valid_openapi_3_1() {
    let app = spawn_app().await;
    let (file, doc) = description(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    python(&["spec", file.path().to_str().unwrap()], "");
}

/// `{path:.*}` (actix) is `{path}` (OpenAPI).
fn openapi_path(actix: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let mut skipping = false;
    for c in actix.chars() {
        match c {
            '{' => in_param = true,
            ':' if in_param => {
                skipping = true;
                continue;
            }
            '}' if in_param => {
                in_param = false;
                skipping = false;
            }
            _ if skipping => continue,
            _ => {}
        }
        out.push(c);
    }
    out
}

#[actix_web::test]
async fn every_registered_route_is_described_and_nothing_else() {
    let app = spawn_app().await;
    let (_file, doc) = description(&app).await;
    let registered: BTreeSet<(String, String)> = ragstream::routes::endpoints()
        .into_iter()
        .map(|(method, path)| (method.to_lowercase(), openapi_path(&path)))
        .collect();
    let described: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let missing: Vec<_> = registered.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "routes the description misses: {missing:?}"
    );
    let extra: Vec<_> = described.difference(&registered).collect();
    assert!(extra.is_empty(), "described but not served: {extra:?}");
    assert!(registered.len() > 40, "{}", registered.len());
    // Every operation documents its errors in the one shape (those that can fail); the
    // OpenAI-compatible routes in OpenAI's.
    for (method, path) in &described {
        let responses = &doc["paths"][path][method]["responses"];
        for (status, response) in responses.as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = response["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap_or_default();
                let expected = if path.starts_with("/v1/") {
                    schema.ends_with("/V1ErrorEnvelope")
                } else {
                    schema.ends_with("/ErrorEnvelope")
                        || schema.ends_with("/AnswerFailure")
                        || schema.ends_with("/Health")
                };
                assert!(expected, "{method} {path} {status}: {response}");
            }
        }
    }
}

#[test]
fn actix_patterns_become_openapi_paths() {
    assert_eq!(openapi_path("/static/{path:.*}"), "/static/{path}");
    assert_eq!(
        openapi_path("/api/v1/answers/{id}/stream"),
        "/api/v1/answers/{id}/stream"
    );
}

#[actix_web::test]
async fn real_responses_match_the_documented_shapes() {
    let app = spawn_app().await;
    let (file, _) = description(&app).await;
    let mut shapes = Instances::default();
    let key = app.admin_key.clone();
    app.add_document(&key, "Tower", TOWER).await;

    // Every frame of an SSE answer and of an agent-chat answer.
    let mut frames = Vec::new();
    for path in [
        "/api/v1/ask/stream?question=How+tall+is+the+tower",
        "/api/v1/agent/chat/stream?message=How+tall+is+the+tower",
    ] {
        let res = app
            .client
            .get(app.url(path))
            .insert_header(("X-API-Key", key.as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        for frame in SseReader::new(res).collect().await {
            frames.push(frame.json());
        }
    }
    assert!(frames.iter().any(|f| f.get("conversationId").is_some()));
    assert!(frames.iter().any(|f| f.get("sources").is_some()));
    shapes.conforms("SseEvent", &frames);

    let (status, answer) = app
        .post_json(
            "/api/v1/ask",
            &key,
            json!({"question": "When was it built?"}),
        )
        .await;
    assert_eq!(status, 200);
    shapes.conforms("AnswerResponse", &[answer]);
    let (_, chat) = app
        .post_json(
            "/api/v1/agent/chat",
            &key,
            json!({"message": "When was it built?"}),
        )
        .await;
    shapes.conforms("AnswerResponse", std::slice::from_ref(&chat));
    let conversation = chat["conversationId"].as_str().unwrap();

    // The answers above, in the usage report.
    app.wait_for_active_streams(0, std::time::Duration::from_secs(5))
        .await;
    assert!(
        app.state
            .usage
            .flush(std::time::Duration::from_secs(5))
            .await
    );
    let get = |path: &'static str| app.get_json(path, &key);
    let pairs = [
        ("/api/v1/whoami", "WhoAmI"),
        ("/api/v1/documents", "DocumentPage"),
        ("/api/v1/conversations", "ConversationPage"),
        ("/api/v1/admin/tenants", "TenantList"),
        ("/api/v1/admin/keys", "KeyList"),
        ("/api/v1/admin/streams", "StreamList"),
        ("/api/v1/admin/connections", "ConnectionList"),
        ("/api/v1/admin/stats", "HubStats"),
        (
            "/api/v1/admin/usage?groupBy=tenant,key,provider,model,day,transport",
            "UsageReport",
        ),
        ("/healthz", "Health"),
        ("/readyz", "Health"),
    ];
    for (path, schema) in pairs {
        let (status, body) = get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        shapes.conforms(schema, &[body]);
    }
    let (_, read) = app
        .get_json(&format!("/api/v1/conversations/{conversation}"), &key)
        .await;
    shapes.conforms("ConversationWithMessages", &[read]);
    let (status, ticket) = app
        .post_json("/api/v1/stream-tickets", &key, json!({}))
        .await;
    assert_eq!(status, 201);
    shapes.conforms("TicketResponse", &[ticket]);
    let (status, created) = app
        .post_json("/api/v1/admin/keys", &key, json!({"name": "shape"}))
        .await;
    assert_eq!(status, 201);
    shapes.conforms("CreatedKey", std::slice::from_ref(&created));
    let budget = json!({"monthlyOutputTokenBudget": 1000});
    let mut patched = Vec::new();
    for path in [
        "/api/v1/admin/tenants/default".to_owned(),
        format!("/api/v1/admin/keys/{}", created["id"].as_str().unwrap()),
    ] {
        let mut res = app
            .client
            .patch(app.url(&path))
            .insert_header(("X-API-Key", key.as_str()))
            .send_json(&budget)
            .await
            .expect("sent");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        patched.push(serde_json::from_slice::<Value>(&res.body().await.unwrap()).unwrap());
    }
    shapes.conforms("Tenant", &patched[..1]);
    shapes.conforms("ApiKeyRecord", &patched[1..]);
    let (status, negotiated) = app
        .post_json(
            "/api/v1/chat/ws/negotiate?negotiateVersion=1",
            &key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    shapes.conforms("Negotiated", &[negotiated]);

    // Errors, in the one shape.
    let (s1, e1) = app.get_json("/api/v1/whoami", "not-a-key").await;
    let (s2, e2) = app.get_json("/api/v1/no-such-route", &key).await;
    let (s3, e3) = app
        .post_json("/api/v1/ask", &key, json!({"question": ""}))
        .await;
    assert_eq!((s1, s2, s3), (401, 404, 400));
    shapes.conforms("ErrorEnvelope", &[e1, e2, e3]);
    shapes.check(file.path());
}

#[actix_web::test]
async fn the_docs_page_is_served_under_the_pages_csp() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let csp = res
        .headers()
        .get("content-security-policy")
        .expect("CSP")
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
}
