//! `/api/v1/admin`: tenants, API keys and the hub's live counters. Admin keys only.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::hub::messages::{EndConnection, GetStats, ListConnections};
use crate::startup::AppState;

const MAX_NAME_CHARS: usize = 200;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .service(
                web::resource("/tenants")
                    .route(web::post().to(create_tenant))
                    .route(web::get().to(list_tenants)),
            )
            .service(
                web::resource("/keys")
                    .route(web::post().to(create_key))
                    .route(web::get().to(list_keys)),
            )
            .route("/keys/{id}", web::delete().to(revoke_key))
            .route("/stats", web::get().to(stats))
            .route("/connections", web::get().to(list_connections))
            .route("/connections/{id}", web::delete().to(end_connection)),
    );
}

fn valid_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name must have 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name)
}

#[derive(Deserialize)]
struct NewTenant {
    name: String,
}

async fn create_tenant(
    state: web::Data<AppState>,
    _: Admin,
    body: web::Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    let name = valid_name(&body.name)?;
    match state.store.create_tenant(name).await {
        Ok(tenant) => Ok(HttpResponse::Created().json(tenant)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::bad_request(
            "tenant_exists",
            format!("a tenant named `{name}` already exists"),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn list_tenants(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let tenants = state.store.list_tenants().await?;
    Ok(HttpResponse::Ok().json(json!({ "tenants": tenants })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewKeyRequest {
    tenant_id: String,
    name: String,
    #[serde(default)]
    admin: bool,
}

async fn create_key(
    state: web::Data<AppState>,
    _: Admin,
    body: web::Json<NewKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = valid_name(&body.name)?;
    if !state.store.tenant_exists(&body.tenant_id).await? {
        return Err(ApiError::NotFound("tenant"));
    }
    let key = state
        .store
        .create_key(&body.tenant_id, name, body.admin)
        .await?;
    Ok(HttpResponse::Created().json(key))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFilter {
    tenant_id: Option<String>,
}

async fn list_keys(
    state: web::Data<AppState>,
    _: Admin,
    filter: web::Query<KeyFilter>,
) -> Result<HttpResponse, ApiError> {
    let keys = state.store.list_keys(filter.tenant_id.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({ "keys": keys })))
}

async fn revoke_key(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if state.store.revoke_key(&id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("key"))
    }
}

async fn stats(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let stats = state
        .hub
        .send(GetStats)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(stats))
}

async fn list_connections(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let connections = state
        .hub
        .send(ListConnections)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "connections": connections })))
}

/// Ends a connection and its answers; SignalR clients are told they may reconnect.
async fn end_connection(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let existed = state
        .hub
        .send(EndConnection {
            session_id: id.into_inner(),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    if existed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("connection"))
    }
}
