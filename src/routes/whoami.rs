//! `GET /api/v1/whoami`: what the presented key is and may do, so a page shows only what
//! the key may see (the admin page hides tenant creation from a tenant admin).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::table::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::startup::AppState;

pub fn configure(routes: &mut Routes) {
    routes.get("/whoami", whoami);
}

/// `{"keyId","tenantId","tenantName","role"}`; `role` is `user`, `admin` (of its own tenant)
/// or `operator` (of every tenant).
#[utoipa::path(
    operation_id = "whoami_whoami",
    get,
    path = "/api/v1/whoami",
    tag = "session",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The key and what it may do", body = crate::routes::api_doc::WhoAmI),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn whoami(
    state: web::Data<AppState>,
    Principal(owner): Principal,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.store.get_tenant(&owner.tenant_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "keyId": owner.key_id,
        "tenantId": owner.tenant_id,
        "tenantName": tenant.map(|t| t.name),
        "role": owner.role(),
    })))
}
