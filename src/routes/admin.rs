//! `/api/v1/admin`: tenants, API keys and the hub's live counters. Admin keys only.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Admin;
use crate::error::ApiError;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;

use crate::auth::StreamPrincipal;
use crate::hub::messages::{EndConnection, EndStream, GetAdminView, GetStats, ListConnections};
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
            .route("/events", web::get().to(events))
            .route("/streams", web::get().to(list_streams))
            .route("/streams/{id}", web::delete().to(end_stream))
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

/// How often the admin page's live view is refreshed.
const ADMIN_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// The admin page's live view: an `event: stats` frame with the whole [`AdminView`] every
/// second. A streaming route, so the browser's single-use ticket is accepted; the key
/// behind it must be an admin's.
///
/// [`AdminView`]: crate::hub::messages::AdminView
async fn events(
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
) -> Result<HttpResponse, ApiError> {
    if !owner.is_admin {
        return Err(ApiError::Forbidden("this route needs an admin API key"));
    }
    let hub = state.hub.clone();
    let ticks = actix_web::rt::time::interval(ADMIN_EVENT_INTERVAL);
    let body = stream::unfold((hub, ticks, 0u64), |(hub, mut ticks, seq)| async move {
        ticks.tick().await;
        let view = hub.send(GetAdminView).await.ok()?;
        let json = serde_json::to_string(&view).ok()?;
        let frame = format!("id: {}\nevent: stats\ndata: {json}\n\n", seq + 1);
        Some((
            Ok::<_, Infallible>(Bytes::from(frame)),
            (hub, ticks, seq + 1),
        ))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

async fn list_streams(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let view = state
        .hub
        .send(GetAdminView)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "streams": view.streams, "metrics": view.metrics })))
}

/// Ends one running answer on any transport; its client gets an `ended_by_admin` error.
async fn end_stream(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let running = state
        .hub
        .send(EndStream {
            lease_id: id.into_inner(),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    if running {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("stream"))
    }
}
