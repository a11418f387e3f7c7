use crate::helpers::spawn_app;

#[actix_web::test]
async fn the_chat_and_admin_pages_are_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;
    for path in ["/", "/admin"] {
        let mut res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let headers = res.headers();
        assert_eq!(
            headers.get("content-type").unwrap(),
            "text/html; charset=utf-8"
        );
        let csp = headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
        let body = res.body().await.unwrap();
        assert!(std::str::from_utf8(&body).unwrap().contains("<html"));
    }
}

#[actix_web::test]
async fn static_paths_cannot_leave_the_static_folder() {
    let app = spawn_app().await;
    for path in [
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/nope.js",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 404, "{path}");
    }
}
