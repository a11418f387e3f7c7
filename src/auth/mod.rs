//! Who is asking.
//!
//! Every `/api` route takes an API key as `X-API-Key` or `Authorization: Bearer`. The
//! streaming routes (SSE, WebSocket, SignalR negotiate) also take a single-use stream
//! ticket, in a header or in the query (`?ticket=`, or `?access_token=` as the SignalR
//! client sends it), because browsers cannot set headers on those requests. Only tickets
//! may travel in a URL: URLs end up in proxy logs and browser history, so a long-lived key
//! there is refused (401) without being looked up. A request with neither may carry a
//! browser session cookie ([`session`]), same-origin only. An optional `X-Tenant-Id` must
//! match the key's tenant.

pub mod key_cache;
pub mod session;
pub mod tickets;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::KeyOwner;

pub const API_KEY_HEADER: &str = "X-API-Key";
pub const TENANT_HEADER: &str = "X-Tenant-Id";

/// Any valid key.
#[derive(Debug, Clone)]
pub struct Principal(pub KeyOwner);

/// A valid key or stream ticket, from a header or the query: for streaming routes only.
#[derive(Debug, Clone)]
pub struct StreamPrincipal(pub KeyOwner);

/// A valid admin key.
#[derive(Debug, Clone)]
pub struct Admin(pub KeyOwner);

fn header(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
            .map_err(|_| ApiError::Unauthorized),
    }
}

/// A credential and whether it came from the URL.
struct Presented {
    value: String,
    in_url: bool,
}

fn presented(req: &HttpRequest, allow_query: bool) -> Result<Option<Presented>, ApiError> {
    let from_header = |value| {
        Some(Presented {
            value,
            in_url: false,
        })
    };
    if let Some(key) = header(req, API_KEY_HEADER)? {
        return Ok(from_header(key));
    }
    if let Some(auth) = header(req, "Authorization")? {
        return match auth.strip_prefix("Bearer ") {
            Some(token) => Ok(from_header(token.trim().to_owned())),
            None => Err(ApiError::Unauthorized),
        };
    }
    if allow_query {
        let query =
            web::Query::<HashMap<String, String>>::from_query(req.query_string()).map_err(|e| {
                ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
            })?;
        for name in ["ticket", "access_token"] {
            if let Some(v) = query.get(name).filter(|v| !v.is_empty()) {
                return Ok(Some(Presented {
                    value: v.clone(),
                    in_url: true,
                }));
            }
        }
    }
    Ok(None)
}

pub(crate) fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

async fn resolve(req: HttpRequest, streaming: bool) -> Result<KeyOwner, ApiError> {
    let state = app_state(&req)?;
    let Some(Presented {
        value: credential,
        in_url,
    }) = presented(&req, streaming)?
    else {
        // No key and no ticket: a browser's session cookie (same-origin requests only).
        let owner = session::resolve(&req, state).await?;
        return tenant_checked(&req, owner);
    };
    let owner = if state.tickets.is_ticket(&credential) {
        if !streaming {
            return Err(ApiError::Forbidden(
                "stream tickets are accepted on the streaming routes only",
            ));
        }
        state
            .tickets
            .redeem(&credential)
            .await?
            .ok_or(ApiError::Unauthorized)?
    } else if in_url {
        return Err(ApiError::Unauthorized);
    } else {
        state
            .key_cache
            .authenticate(&state.store, &credential)
            .await?
            .ok_or(ApiError::Unauthorized)?
    };
    tenant_checked(&req, owner)
}

/// An optional `X-Tenant-Id` must name the owner's tenant.
fn tenant_checked(req: &HttpRequest, owner: KeyOwner) -> Result<KeyOwner, ApiError> {
    if let Some(tenant) = header(req, TENANT_HEADER)? {
        if tenant != owner.tenant_id {
            return Err(ApiError::Forbidden(
                "X-Tenant-Id does not match the API key's tenant",
            ));
        }
    }
    Ok(owner)
}

/// The stream ticket in a request's query (`?ticket=`, or SignalR's `?access_token=`), if
/// it carries one: an answer remembers the ticket that opened it, so the `EventSource`
/// reconnecting with it may resume that answer.
pub fn stream_ticket(req: &HttpRequest) -> Option<String> {
    let state = app_state(req).ok()?;
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string()).ok()?;
    ["ticket", "access_token"]
        .iter()
        .filter_map(|name| query.get(*name))
        .find(|v| state.tickets.is_ticket(v))
        .cloned()
}

/// The owner behind a streaming request's key or ticket, for handlers that check other
/// credentials first (SignalR's `?id=`).
pub async fn resolve_stream(req: HttpRequest) -> Result<KeyOwner, ApiError> {
    resolve(req, true).await
}

type Resolving<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Resolving<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { resolve(req, false).await.map(Principal) })
    }
}

impl FromRequest for StreamPrincipal {
    type Error = ApiError;
    type Future = Resolving<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { resolve(req, true).await.map(StreamPrincipal) })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Resolving<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let owner = resolve(req, false).await?;
            if !owner.is_admin {
                return Err(ApiError::Forbidden("this route needs an admin API key"));
            }
            Ok(Admin(owner))
        })
    }
}
