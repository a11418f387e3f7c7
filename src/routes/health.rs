use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// The process is up.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The process can serve: its database answers, and in a cluster so does Redis (without
/// it no answer can be admitted).
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = state.store.ping().await {
        log::warn!("readiness check failed: {e}");
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "error": {"code": "database_unavailable", "message": "the database does not answer"}
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
