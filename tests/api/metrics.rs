//! Who may scrape `GET /metrics` (what it counts is tested in tests/metrics).

use crate::helpers::{spawn_app, spawn_app_with, Options};

#[actix_web::test]
async fn loopback_scrapes_without_a_token() {
    let app = spawn_app().await;
    let mut res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body = res.body().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("ragstream_build_info"), "{text}");
}

#[actix_web::test]
async fn with_a_token_configured_only_its_bearer_may_scrape() {
    let app = spawn_app_with(Options {
        settings: Some(Box::new(|s| {
            s.metrics_token = Some(ragstream::config::Secret::new("scrape-token-0123456789"));
        })),
        ..Options::default()
    })
    .await;
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("scrape-token-0123456789"),
    ] {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(auth) = auth {
            req = req.insert_header(("Authorization", auth));
        }
        let mut res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 403, "{auth:?}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RAGSTREAM_METRICS_TOKEN"));
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .insert_header(("Authorization", "Bearer scrape-token-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}
