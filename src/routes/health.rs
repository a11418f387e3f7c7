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

/// The process can serve: it is not shutting down, its database answers, and in a cluster
/// so does Redis (without it no answer can be admitted).
#[utoipa::path(
    operation_id = "health_readyz",
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the database (and Redis, in a cluster) answers", body = crate::routes::api_doc::Health),
        (status = 503, description = "Not ready: draining, or the database or Redis does not answer", body = crate::routes::api_doc::Health),
    )
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.is_set() {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "draining",
            "error": {"code": "shutting_down", "message": "the server is shutting down"}
        }));
    }
    if let Err(e) = state.store.ping().await {
        log::warn!("readiness check failed: {e}");
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "error": {"code": "storage_unavailable", "message": "the database cannot be reached"}
        }));
    }
    if let Some(cluster) = &state.cluster {
        if let Err(e) = cluster.ping().await {
            log::warn!("readiness check failed: {e}");
            return HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "error": {"code": "cluster_unavailable", "message": "Redis does not answer"}
            }));
        }
    }
    HttpResponse::Ok().json(json!({"status": "ready"}))
}
