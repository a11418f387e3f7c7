//! `/api/v1/session`: browser sign-in. `POST` trades an API key (header, or JSON
//! `{"apiKey"}`) for an `HttpOnly` session cookie; `GET` says who is signed in; `DELETE`
//! signs out. The cookie's rules are in [`crate::auth::session`].

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::table::Routes;
use crate::auth::session;
use crate::cluster::control::Control;
use crate::error::ApiError;
use crate::hub::messages::EndBrowserSession;
use crate::startup::AppState;
use crate::store::{session_name, SessionInfo};

pub fn configure(routes: &mut Routes) {
    routes
        .post("/session", sign_in)
        .get("/session", who)
        .delete("/session", sign_out);
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SignIn {
    api_key: Option<String>,
}

fn describe(info: &SessionInfo, state: &AppState) -> Value {
    json!({
        "tenantId": info.owner.tenant_id,
        "tenantName": info.tenant_name,
        "keyId": info.owner.key_id,
        "keyName": info.key_name,
        "isAdmin": info.owner.is_admin,
        "expiresAt": info.expires_at,
        "idleTimeoutSeconds": state.settings.session_idle.as_secs(),
    })
}

/// The key from a header, else from the JSON body.
fn key_of(req: &HttpRequest, body: &[u8]) -> Result<String, ApiError> {
    if let Some(key) = session::presented_key(req)? {
        return Ok(key);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Unauthorized);
    }
    // A JSON content type cannot be sent cross-site without a CORS preflight.
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json".to_owned(),
        ));
    }
    let sign_in: SignIn = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))?;
    sign_in
        .api_key
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthorized)
}

#[utoipa::path(
    operation_id = "session_sign_in",
    summary = "Sign a browser in",
    post,
    path = "/api/v1/session",
    tag = "session",
    request_body(content = SignIn, description = "The key, unless sent as X-API-Key", content_type = "application/json"),
    responses(
        (status = 201, description = "Signed in: an HttpOnly session cookie is set", body = crate::routes::api_doc::SessionView),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 403, description = "A page of another origin", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 415, description = "The body is not JSON", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The key is in the request itself, so no proof of origin is needed; a page of another
    // origin still may not sign this browser in (login CSRF).
    session::check_origin(&req, false)?;
    let key = key_of(&req, &body)?;
    let owner = session::owner_of_key(&req, &state, &key).await?;
    // A fresh id at every sign-in: a session from before (perhaps another key's) ends.
    if let Some(old) = session::cookie_value(&req, &state.settings) {
        state.store.delete_session(&old).await?;
        end_what_it_opened(&state, &old);
    }
    let times = session::times(&state.settings);
    let token = state.store.create_session(&owner.key_id, times).await?;
    let info = state
        .store
        .session(&token, times)
        .await?
        .ok_or_else(|| ApiError::Internal("a session just created was not found".into()))?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::SET_COOKIE,
            session::set_cookie(&req, &state.settings, &token),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(describe(&info, &state)))
}

#[utoipa::path(
    operation_id = "session_who",
    summary = "Who is signed in",
    get,
    path = "/api/v1/session",
    tag = "session",
    security(("session" = [])),
    responses(
        (status = 200, description = "Who is signed in", body = crate::routes::api_doc::SessionView),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn who(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match session::current(&req, &state).await? {
        Some(info) => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(describe(&info, &state))),
        None => {
            let mut res = actix_web::ResponseError::error_response(&ApiError::Unauthorized);
            // A cookie that no longer opens anything is dropped from the browser.
            if session::cookie_value(&req, &state.settings).is_some() {
                if let Ok(value) = session::clear_cookie(&req, &state.settings).parse() {
                    res.headers_mut().insert(header::SET_COOKIE, value);
                }
            }
            Ok(res)
        }
    }
}

/// Ends what the session opened, on this hub and (through the control channel) every other:
/// its WebSocket connections, SSE answers and admin event feeds. A request authenticates
/// against the store, which no longer knows the session, so nothing new opens with it.
/// Nothing here awaits, so a client that leaves cannot stop it half-way; a failure to tell
/// the cluster is logged.
fn end_what_it_opened(state: &web::Data<AppState>, token: &str) {
    let name = session_name(token);
    state.hub.do_send(EndBrowserSession {
        session: name.clone(),
    });
    let Some(cluster) = state.cluster.clone() else {
        return;
    };
    actix_web::rt::spawn(async move {
        let control = Control::EndBrowserSession { session: name };
        if let Err(e) = cluster.publish(control).await {
            log::error!("a sign-out could not be shared with the other hubs: {e}");
        }
    });
}

#[utoipa::path(
    operation_id = "session_sign_out",
    summary = "Sign out",
    delete,
    path = "/api/v1/session",
    tag = "session",
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 403, description = "A page of another origin", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn sign_out(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(token) = session::cookie_value(&req, &state.settings) {
        session::check_origin(&req, true)?;
        state.store.delete_session(&token).await?;
        // Also when no row was deleted: a sign-out whose request was dropped between the
        // delete and this line is completed by signing out again.
        end_what_it_opened(&state, &token);
    }
    Ok(HttpResponse::NoContent()
        .insert_header((
            header::SET_COOKIE,
            session::clear_cookie(&req, &state.settings),
        ))
        .finish())
}
