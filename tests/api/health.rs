use crate::helpers::spawn_app;

#[actix_web::test]
async fn healthz_and_readyz_answer_without_a_key() {
    let app = spawn_app().await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let mut res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["status"], status);
    }
}

#[actix_web::test]
async fn an_unknown_route_is_a_json_404() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/v1/nothing-here", &app.admin_key).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}
