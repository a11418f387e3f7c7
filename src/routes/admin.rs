//! `/api/v1/admin`: tenants, API keys and the hub's live view. Admin keys only.
//!
//! Two kinds of admin key. An operator (the bootstrap key, and keys an operator marks so)
//! creates tenants and administers every tenant; a tenant admin administers its own tenant
//! only. Every route is scoped: another tenant's key, stream or connection is a 404, exactly
//! as an unknown one is, and listings show the caller's tenant only (an operator sees every
//! tenant, and may narrow a listing with `?tenantId=`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::table::Routes;
use crate::auth::Admin;
use crate::error::ApiError;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;

use crate::auth::StreamPrincipal;
use crate::cluster::control::Control;
use crate::hub::messages::{
    EndBrowserSession, EndConnection, EndStream, GetAdminView, GetHistory, ListConnections,
    RevokeKey,
};
use crate::hub::KeyWatch;
use crate::startup::AppState;
use crate::store::{KeyOwner, Role};

const MAX_NAME_CHARS: usize = 200;

pub fn configure(routes: &mut Routes) {
    routes.scope("/admin", |r| {
        r.post("/tenants", create_tenant)
            .get("/tenants", list_tenants)
            .post("/keys", create_key)
            .get("/keys", list_keys)
            .delete("/keys/{id}", revoke_key)
            .get("/stats", stats)
            .get("/events", events)
            .get("/history", history)
            .get("/streams", list_streams)
            .delete("/streams/{id}", end_stream)
            .get("/connections", list_connections)
            .delete("/connections/{id}", end_connection);
    });
}

/// `?tenantId=` on a listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct TenantFilter {
    pub(super) tenant_id: Option<String>,
}

/// The tenant a listing shows: a tenant admin's own; every tenant (`None`) or the one asked
/// for, for an operator. Asking for a tenant the caller may not administer is a 404, as
/// asking for an unknown one is, so the answer tells nothing about other tenants.
pub(super) async fn listing_scope(
    state: &AppState,
    admin: &KeyOwner,
    filter: &TenantFilter,
) -> Result<Option<String>, ApiError> {
    match filter.tenant_id.as_deref() {
        None if admin.is_operator => Ok(None),
        None => Ok(Some(admin.tenant_id.clone())),
        Some(t) if admin.administers(t) && state.store.tenant_exists(t).await? => {
            Ok(Some(t.to_owned()))
        }
        Some(_) => Err(ApiError::NotFound("tenant")),
    }
}

/// Whose streams and connections the caller may end: any tenant's (`None`) for an
/// operator, its own tenant's for a tenant admin.
fn acting_scope(admin: &KeyOwner) -> Option<String> {
    (!admin.is_operator).then(|| admin.tenant_id.clone())
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

#[derive(Deserialize, utoipa::ToSchema)]
struct NewTenant {
    name: String,
}

#[utoipa::path(
    operation_id = "admin_create_tenant",
    summary = "Create a tenant",
    post,
    path = "/api/v1/admin/tenants",
    tag = "admin",
    request_body(content = NewTenant, content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "Created", body = crate::store::Tenant),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an operator key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn create_tenant(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: web::Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    if !admin.is_operator {
        return Err(ApiError::Forbidden(
            "only an operator key may create tenants",
        ));
    }
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

/// Every tenant for an operator; its own for a tenant admin.
#[utoipa::path(
    operation_id = "admin_list_tenants",
    get,
    path = "/api/v1/admin/tenants",
    tag = "admin",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every tenant (operator) or the caller's own", body = crate::routes::api_doc::TenantList),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn list_tenants(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let tenants = if admin.is_operator {
        state.store.list_tenants().await?
    } else {
        state
            .store
            .get_tenant(&admin.tenant_id)
            .await?
            .into_iter()
            .collect()
    };
    Ok(HttpResponse::Ok().json(json!({ "tenants": tenants })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewKeyRequest {
    /// The caller's own tenant when missing.
    tenant_id: Option<String>,
    name: String,
    #[serde(default)]
    admin: bool,
    /// Only an operator may make another.
    #[serde(default)]
    operator: bool,
}

#[utoipa::path(
    operation_id = "admin_create_key",
    summary = "Create an API key",
    post,
    path = "/api/v1/admin/keys",
    tag = "admin",
    request_body(content = NewKeyRequest, content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = crate::routes::api_doc::CreatedKey),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not allowed to make this kind of key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn create_key(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: web::Json<NewKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = valid_name(&body.name)?;
    if body.operator && !admin.is_operator {
        return Err(ApiError::Forbidden(
            "only an operator key may create operator keys",
        ));
    }
    let tenant = body.tenant_id.as_deref().unwrap_or(&admin.tenant_id);
    if !admin.administers(tenant) || !state.store.tenant_exists(tenant).await? {
        return Err(ApiError::NotFound("tenant"));
    }
    let role = match (body.operator, body.admin) {
        (true, _) => Role::Operator,
        (false, true) => Role::Admin,
        (false, false) => Role::User,
    };
    let key = state.store.create_key(tenant, name, role).await?;
    Ok(HttpResponse::Created().json(key))
}

#[utoipa::path(
    operation_id = "admin_list_keys",
    summary = "List API keys",
    get,
    path = "/api/v1/admin/keys",
    tag = "admin",
    params(TenantFilter),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Keys, without their secrets", body = crate::routes::api_doc::KeyList),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn list_keys(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    filter: web::Query<TenantFilter>,
) -> Result<HttpResponse, ApiError> {
    let scope = listing_scope(&state, &admin, &filter).await?;
    let keys = state.store.list_keys(scope.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({ "keys": keys })))
}

/// Revokes a key, and within a second ends everything it holds open. 404 for a key that is
/// unknown, another tenant's (for a tenant admin) or already revoked.
#[utoipa::path(
    operation_id = "admin_revoke_key",
    delete,
    path = "/api/v1/admin/keys/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The key id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Revoked; its connections, tickets and answers end within a second"),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not allowed to revoke an operator key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such key (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn revoke_key(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .store
        .get_key(&id)
        .await?
        .filter(|k| admin.administers(&k.tenant_id))
        .ok_or(ApiError::NotFound("key"))?;
    if key.is_operator && !admin.is_operator {
        return Err(ApiError::Forbidden(
            "only an operator key may revoke an operator key",
        ));
    }
    let newly_revoked = state.store.revoke_key(&key.id).await?;
    // Also for a key already revoked: a revocation whose request was dropped between the
    // store's update and this line is completed by asking again.
    end_everything_of_revoked_key(&state, &key.id);
    tell_the_cluster(&state, &key.id);
    if newly_revoked {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("key"))
    }
}

/// Ends what a revoked key holds open in this process: its unused stream tickets and SignalR
/// connection tokens, and (through the hub) its connections, event feeds and running
/// answers, and its place in the cache of verified keys. Nothing here awaits, so a client
/// that leaves cannot stop it half-way.
fn end_everything_of_revoked_key(state: &AppState, key_id: &str) {
    state.key_cache.forget_key(key_id);
    state.tickets.forget_key(key_id);
    state.connection_tokens.forget_key(key_id);
    state.pipeline.answers().forget_key(key_id);
    state.hub.do_send(RevokeKey {
        key_id: key_id.to_owned(),
    });
}

/// Every other hub ends what the key holds open there, and Redis refuses its tickets and
/// admissions from now on. Spawned, so a client that leaves cannot stop it half-way; a
/// failure is logged (the store already refuses the key on every hub).
fn tell_the_cluster(state: &AppState, key_id: &str) {
    let Some(cluster) = state.cluster.clone() else {
        return;
    };
    let key_id = key_id.to_owned();
    actix_web::rt::spawn(async move {
        let told = match cluster.mark_revoked(&key_id).await {
            Ok(()) => cluster.publish(Control::RevokeKey { key_id }).await,
            Err(e) => Err(e),
        };
        if let Err(e) = told {
            log::error!("a revocation could not be shared with the other hubs: {e}");
        }
    });
}

/// What another hub asked of this one (see [`Control`]).
pub fn on_control(state: &AppState, control: Control) {
    let this_hub = |hub: &str| state.cluster.as_ref().is_some_and(|c| **c.hub_id() == *hub);
    match control {
        Control::RevokeKey { key_id } => end_everything_of_revoked_key(state, &key_id),
        Control::EndBrowserSession { session } => state.hub.do_send(EndBrowserSession { session }),
        Control::EndStream { hub, id, tenant } if this_hub(&hub) => state.hub.do_send(EndStream {
            lease_id: id,
            tenant,
        }),
        Control::EndConnection { hub, id, tenant } if this_hub(&hub) => {
            state.hub.do_send(EndConnection {
                session_id: id,
                tenant,
            })
        }
        Control::CancelAnswer { answer_id, key_id } => {
            if let Some(entry) = state.pipeline.answers().get(&answer_id, &key_id) {
                entry.stop(crate::answer::StopReason::Cancelled);
            }
        }
        Control::Presence {
            answer_id,
            hub,
            joined,
        } if this_hub(&hub) => state.pipeline.answers().remote_presence(&answer_id, joined),
        Control::EndStream { .. } | Control::EndConnection { .. } | Control::Presence { .. } => {}
    }
}

/// After (re)subscribing to the control channel: revocations published while this hub was
/// not listening are found in Redis, and what their keys hold open here is ended.
pub fn catch_up_on_revocations(state: web::Data<AppState>) {
    // Called from the control channel's task, outside the actix runtime's local set.
    tokio::spawn(async move {
        let Some(cluster) = state.cluster.clone() else {
            return;
        };
        // Which keys were revoked meanwhile is not known: every key is checked again.
        state.key_cache.clear();
        let Ok(view) = state.hub.send(GetAdminView { tenant: None }).await else {
            return;
        };
        let mut keys: Vec<String> = view.connections.into_iter().map(|c| c.user).collect();
        keys.extend(view.streams.into_iter().map(|s| s.user));
        keys.sort();
        keys.dedup();
        match cluster.revoked_among(&keys).await {
            Ok(revoked) => {
                for key_id in revoked {
                    end_everything_of_revoked_key(&state, &key_id);
                }
            }
            Err(e) => log::warn!("revocations missed while unsubscribed were not checked: {e}"),
        }
    });
}

/// `?hub=` on an admin action: the hub that runs the stream or connection (this one when
/// absent).
#[derive(Deserialize)]
struct HubTarget {
    hub: Option<String>,
}

/// The other hub named by `?hub=`, when there is one and this hub is in a cluster.
fn other_hub(state: &AppState, target: &HubTarget) -> Option<String> {
    let cluster = state.cluster.as_ref()?;
    target
        .hub
        .as_ref()
        .filter(|hub| **cluster.hub_id() != ***hub)
        .cloned()
}

/// Hands an admin action to the hub that runs it: 202, it acts when the message arrives.
async fn ask_other_hub(state: &AppState, control: Control) -> Result<HttpResponse, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::ClusterUnavailable);
    };
    cluster.publish(control).await.map_err(|e| {
        log::warn!("control: {e}");
        ApiError::ClusterUnavailable
    })?;
    Ok(HttpResponse::Accepted().finish())
}

#[utoipa::path(
    operation_id = "admin_stats",
    summary = "Hub counters",
    get,
    path = "/api/v1/admin/stats",
    tag = "admin",
    params(TenantFilter),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Counters of the hub or one tenant", body = crate::hub::HubStats),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn stats(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    filter: web::Query<TenantFilter>,
) -> Result<HttpResponse, ApiError> {
    let tenant = listing_scope(&state, &admin, &filter).await?;
    let view = state
        .hub
        .send(GetAdminView { tenant })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(view.stats))
}

#[utoipa::path(
    operation_id = "admin_list_connections",
    summary = "List open connections",
    get,
    path = "/api/v1/admin/connections",
    tag = "admin",
    params(TenantFilter),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Open connections", body = crate::routes::api_doc::ConnectionList),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn list_connections(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    filter: web::Query<TenantFilter>,
) -> Result<HttpResponse, ApiError> {
    let tenant = listing_scope(&state, &admin, &filter).await?;
    let connections = state
        .hub
        .send(ListConnections {
            tenant: tenant.clone(),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let mut connections = serde_json::to_value(connections).unwrap_or_default();
    with_other_hubs(&state, &mut connections, "connections", tenant.as_deref()).await;
    Ok(HttpResponse::Ok().json(json!({ "connections": connections })))
}

/// Ends a connection and its answers; SignalR clients are told they may reconnect.
#[utoipa::path(
    operation_id = "admin_end_connection",
    delete,
    path = "/api/v1/admin/connections/{id}",
    tag = "admin",
    params(("id" = u64, Path, description = "The connection id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such connection (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn end_connection(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<u64>,
    target: web::Query<HubTarget>,
) -> Result<HttpResponse, ApiError> {
    if let Some(hub) = other_hub(&state, &target) {
        let control = Control::EndConnection {
            hub,
            id: id.into_inner(),
            tenant: acting_scope(&admin),
        };
        return ask_other_hub(&state, control).await;
    }
    let existed = state
        .hub
        .send(EndConnection {
            session_id: id.into_inner(),
            tenant: acting_scope(&admin),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    if existed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("connection"))
    }
}

/// `?after=` on the charts' history, and the tenant filter.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    tenant_id: Option<String>,
    /// Only the samples after this `seq` (the last one the client has).
    after: Option<u64>,
}

/// The admin page's charts: the hub's last 15 minutes (180 samples, one per
/// `RAGSTREAM_ADMIN_SAMPLE_SECS`), of the caller's tenant or, for an operator, of every
/// tenant or the one in `?tenantId=`. The figures are this hub's, in a cluster.
#[utoipa::path(
    operation_id = "admin_history",
    summary = "The live charts' recent samples",
    get,
    path = "/api/v1/admin/history",
    tag = "admin",
    params(HistoryQuery),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Samples, oldest first", body = crate::hub::history::HistoryView),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn history(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = TenantFilter {
        tenant_id: query.tenant_id.clone(),
    };
    let tenant = listing_scope(&state, &admin, &filter).await?;
    let view = state
        .hub
        .send(GetHistory {
            tenant,
            after: query.after,
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(view))
}

/// One `event: history` frame: the samples of the charts (`full` on a feed's first frame:
/// they replace what the page had).
fn history_frame(view: &crate::hub::history::HistoryView, full: bool) -> Option<String> {
    let mut data = serde_json::to_value(view).ok()?;
    data["full"] = Value::Bool(full);
    Some(format!("event: history\ndata: {data}\n\n"))
}

/// How often the admin page's live view is refreshed.
const ADMIN_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// The admin page's live view: first an `event: history` frame with the charts' samples
/// (see `GET /admin/history`), then an `event: stats` frame with the whole [`AdminView`] (of
/// the caller's tenant, or for an operator of every tenant or the one in `?tenantId=`) every
/// second, each new sample in an `event: history` frame before it. A streaming route, so the browser's single-use ticket is accepted; the key
/// behind it must be an admin's. The feed ends when that key is revoked.
///
/// [`AdminView`]: crate::hub::messages::AdminView
#[utoipa::path(
    operation_id = "admin_events",
    get,
    path = "/api/v1/admin/events",
    tag = "admin",
    params(TenantFilter),
    security(("api_key" = []), ("ticket" = []), ("session" = [])),
    responses(
        (status = 200, description = "`event: history` with the charts' samples, then `event: stats` every second with the whole admin view (and `event: history` with each new sample)", content_type = "text/event-stream", body = crate::hub::messages::AdminView),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn events(
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
    filter: web::Query<TenantFilter>,
) -> Result<HttpResponse, ApiError> {
    if !owner.is_admin {
        return Err(ApiError::Forbidden("this route needs an admin API key"));
    }
    let tenant = listing_scope(&state, &owner, &filter).await?;
    let revoked = KeyWatch::start(&owner, state.hub.clone());
    let feed_state = state.clone();
    let ticks = actix_web::rt::time::interval(ADMIN_EVENT_INTERVAL);
    // `None` until the first frame, which carries every sample kept.
    let last_sample: Option<u64> = None;
    let feed = (feed_state, ticks, 0u64, revoked, tenant, last_sample);
    let body = stream::unfold(
        feed,
        |(state, mut ticks, seq, mut revoked, tenant, last_sample)| async move {
            tokio::select! {
                // Resolves only when the watch ends: the key was revoked.
                _ = &mut revoked => return None,
                _ = ticks.tick() => {}
            }
            let history = state
                .hub
                .send(GetHistory {
                    tenant: tenant.clone(),
                    after: last_sample,
                })
                .await
                .ok()?;
            let first = last_sample.is_none();
            let mut frames = String::new();
            if first || !history.samples.is_empty() {
                frames.push_str(&history_frame(&history, first)?);
            }
            let last_sample = Some(
                history
                    .samples
                    .last()
                    .map_or(last_sample.unwrap_or(0), |s| s.seq),
            );
            let view = state
                .hub
                .send(GetAdminView {
                    tenant: tenant.clone(),
                })
                .await
                .ok()?;
            let mut view = serde_json::to_value(&view).ok()?;
            for list in ["streams", "connections"] {
                if let Some(items) = view.get_mut(list) {
                    with_other_hubs(&state, items, list, tenant.as_deref()).await;
                }
            }
            frames.push_str(&format!("id: {}\nevent: stats\ndata: {view}\n\n", seq + 1));
            Some((
                Ok::<_, Infallible>(Bytes::from(frames)),
                (state, ticks, seq + 1, revoked, tenant, last_sample),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

#[utoipa::path(
    operation_id = "admin_list_streams",
    summary = "List running answers",
    get,
    path = "/api/v1/admin/streams",
    tag = "admin",
    params(TenantFilter),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Running answers and recent figures", body = crate::routes::api_doc::StreamList),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such tenant (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn list_streams(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    filter: web::Query<TenantFilter>,
) -> Result<HttpResponse, ApiError> {
    let tenant = listing_scope(&state, &admin, &filter).await?;
    let view = state
        .hub
        .send(GetAdminView {
            tenant: tenant.clone(),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let mut streams = serde_json::to_value(view.streams).unwrap_or_default();
    with_other_hubs(&state, &mut streams, "streams", tenant.as_deref()).await;
    Ok(HttpResponse::Ok().json(json!({ "streams": streams, "metrics": view.metrics })))
}

/// In a cluster, appends the entries of `list` that the other hubs published (in the
/// tenant's scope). Redis not answering leaves this hub's own entries: a listing is still
/// useful, and each entry's `hub` says where it runs.
async fn with_other_hubs(state: &AppState, items: &mut Value, list: &str, tenant: Option<&str>) {
    let (Some(cluster), Some(items)) = (&state.cluster, items.as_array_mut()) else {
        return;
    };
    match cluster.other_hubs(list).await {
        Ok(others) => items.extend(
            others
                .into_iter()
                .filter(|item| tenant.is_none_or(|t| item["tenant"] == t)),
        ),
        Err(e) => log::warn!("the other hubs' {list} could not be read: {e}"),
    }
}

/// Ends one running answer on any transport; its client gets an `ended_by_admin` error.
#[utoipa::path(
    operation_id = "admin_end_stream",
    delete,
    path = "/api/v1/admin/streams/{id}",
    tag = "admin",
    params(("id" = u64, Path, description = "The stream id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Ended; its client gets an ended_by_admin error"),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "Not an admin key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such stream (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn end_stream(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<u64>,
    target: web::Query<HubTarget>,
) -> Result<HttpResponse, ApiError> {
    if let Some(hub) = other_hub(&state, &target) {
        let control = Control::EndStream {
            hub,
            id: id.into_inner(),
            tenant: acting_scope(&admin),
        };
        return ask_other_hub(&state, control).await;
    }
    let running = state
        .hub
        .send(EndStream {
            lease_id: id.into_inner(),
            tenant: acting_scope(&admin),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    if running {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("stream"))
    }
}
