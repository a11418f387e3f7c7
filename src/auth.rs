//! Who is asking: the `X-API-Key` header (and an optional `X-Tenant-Id` that must match
//! the key's tenant), resolved against the store for every `/api` request.

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

/// A valid admin key.
#[derive(Debug, Clone)]
pub struct Admin(pub KeyOwner);

fn header(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|_| ApiError::Unauthorized),
    }
}

async fn resolve(req: HttpRequest) -> Result<KeyOwner, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let key = header(&req, API_KEY_HEADER)?
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let owner = state
        .store
        .authenticate(&key)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if let Some(tenant) = header(&req, TENANT_HEADER)? {
        if tenant != owner.tenant_id {
            return Err(ApiError::Forbidden(
                "X-Tenant-Id does not match the API key's tenant",
            ));
        }
    }
    Ok(owner)
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { resolve(req).await.map(Principal) })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let owner = resolve(req).await?;
            if !owner.is_admin {
                return Err(ApiError::Forbidden("this route needs an admin API key"));
            }
            Ok(Admin(owner))
        })
    }
}
