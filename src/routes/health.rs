use actix_web::{web, HttpResponse};
use serde_json::json;

use super::table::Routes;
use crate::startup::AppState;

pub fn configure(routes: &mut Routes) {
    routes.get("/healthz", healthz).get("/readyz", readyz);
}

/// The process is up.
#[utoipa::path(
    operation_id = "health_healthz",
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process is up", body = crate::routes::api_doc::Health),
    )
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The process can serve: it is not shutting down and its database answers.
#[utoipa::path(
    operation_id = "health_readyz",
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the database answers", body = crate::routes::api_doc::Health),
        (status = 503, description = "Not ready: draining, or the database does not answer", body = crate::routes::api_doc::Health),
    )
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.is_set() {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "draining",
            "error": {"code": "shutting_down", "message": "the server is shutting down"}
        }));
    }
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => {
            log::warn!("readiness check failed: {e}");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "error": {"code": "storage_unavailable", "message": "the database cannot be reached"}
            }))
        }
    }
}
