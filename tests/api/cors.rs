use crate::helpers::{spawn_app, spawn_app_with, Options};

fn with_origin(origin: &'static str) -> Options {
    Options {
        settings: Some(Box::new(move |s| s.cors_origins = vec![origin.to_owned()])),
        ..Options::default()
    }
}

#[actix_web::test]
async fn a_configured_origin_passes_the_signalr_negotiate_preflight() {
    let app = spawn_app_with(with_origin("http://localhost:5173")).await;
    let res = app
        .client
        .request(
            awc::http::Method::OPTIONS,
            app.url("/api/v1/chat/ws/negotiate?negotiateVersion=1"),
        )
        .insert_header(("Origin", "http://localhost:5173"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header((
            "Access-Control-Request-Headers",
            "authorization,x-requested-with,x-signalr-user-agent",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let h = res.headers();
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
    assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");

    let res = app
        .client
        .get(app.url("/healthz"))
        .insert_header(("Origin", "http://evil.example"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn without_configured_origins_no_cross_origin_access_is_granted() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .insert_header(("Origin", "http://localhost:5173"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

async fn preflight(app: &crate::helpers::TestApp, origin: &str) -> awc::http::header::HeaderMap {
    let res = app
        .client
        .request(
            awc::http::Method::OPTIONS,
            app.url("/api/v1/chat/ws/negotiate?negotiateVersion=1"),
        )
        .insert_header(("Origin", origin))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header(("Access-Control-Request-Headers", "x-api-key"))
        .send()
        .await
        .unwrap();
    res.headers().clone()
}

async fn simple(app: &crate::helpers::TestApp, origin: &str) -> awc::http::header::HeaderMap {
    let res = app
        .client
        .get(app.url("/healthz"))
        .insert_header(("Origin", origin))
        .send()
        .await
        .unwrap();
    res.headers().clone()
}

#[actix_web::test]
async fn a_wildcard_answers_a_literal_star_and_never_allows_credentials() {
    let app = spawn_app_with(with_origin("*")).await;
    for origin in ["http://evil.example", "null", "http://localhost:5173"] {
        for headers in [preflight(&app, origin).await, simple(&app, origin).await] {
            assert_eq!(
                headers.get("access-control-allow-origin").unwrap(),
                "*",
                "{origin}: {headers:?}"
            );
            assert!(
                headers.get("access-control-allow-credentials").is_none(),
                "{origin}: {headers:?}"
            );
        }
    }
}

#[actix_web::test]
async fn an_allow_list_reflects_only_its_origins_and_never_null() {
    let app = spawn_app_with(Options {
        settings: Some(Box::new(|s| {
            s.cors_origins = vec![
                "http://localhost:5173".to_owned(),
                "https://app.example.com".to_owned(),
            ]
        })),
        ..Options::default()
    })
    .await;
    for origin in ["http://localhost:5173", "https://app.example.com"] {
        for headers in [preflight(&app, origin).await, simple(&app, origin).await] {
            assert_eq!(headers.get("access-control-allow-origin").unwrap(), origin);
            assert_eq!(
                headers.get("access-control-allow-credentials").unwrap(),
                "true"
            );
        }
    }
    for origin in [
        "null",
        "http://evil.example",
        "http://localhost:5174",
        "https://app.example.com.evil.example",
    ] {
        for headers in [preflight(&app, origin).await, simple(&app, origin).await] {
            assert!(
                headers.get("access-control-allow-origin").is_none(),
                "{origin}: {headers:?}"
            );
        }
    }
}
