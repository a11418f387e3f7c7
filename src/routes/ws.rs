//! `/api/v1/chat/ws` and its SignalR negotiate endpoint. Authentication failures stay plain
//! HTTP errors; the upgrade comes last and hands the socket to a [`WsSession`] actor, or,
//! for a SignalR client reconnecting with stateful reconnect, back to the session waiting
//! for it.

use std::collections::HashMap;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::AggregatedMessageStream;
use serde_json::json;
use uuid::Uuid;

use super::table::Routes;
use crate::auth::tickets::ConnectionGrant;
use crate::auth::{resolve_stream, StreamPrincipal};
use crate::error::ApiError;
use crate::hub::{pump, Reattach, ReconnectGrant, Socket, WsSession, WsSettings};
use crate::startup::AppState;

/// The codec's hard cap. Frames between the protocols' 64 KiB limit and this get an
/// error and the socket stays open; beyond it the socket is closed with 1009.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

pub fn configure(routes: &mut Routes) {
    routes
        .get("/chat/ws", chat_ws)
        .post("/chat/ws/negotiate", negotiate);
}

#[utoipa::path(
    operation_id = "ws_chat_ws",
    summary = "Open a WebSocket (plain JSON protocol or SignalR)",
    get,
    path = "/api/v1/chat/ws",
    tag = "realtime",
    params(("id" = Option<String>, Query, description = "A SignalR connection token from negotiate"), ("ticket" = Option<String>, Query, description = "A stream ticket")),
    security(("api_key" = []), ("ticket" = []), ("session" = [])),
    responses(
        (status = 101, description = "Switching to WebSocket: the first text frame picks the plain JSON protocol or a SignalR handshake"),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such connection (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 429, description = "Too many WebSocket connections for this key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn chat_ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.draining.is_set() {
        return Err(ApiError::ShuttingDown);
    }
    let query =
        web::Query::<HashMap<String, String>>::from_query(req.query_string()).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
        })?;
    let id = query.get("id");
    // A SignalR client with stateful reconnect that lost its socket comes back with the same
    // `?id=`; its connection is waiting for it (and only for it, within the grace window).
    if let Some(connection) = id.and_then(|id| state.signalr_connections.get(id)) {
        return reconnect(&req, body, connection).await;
    }
    // After negotiate, the SignalR client connects with `?id=<connection token>`, which
    // stands for the credentials it negotiated with. An unknown id is a 404, as in ASP.NET.
    let (owner, reconnect) = match id {
        Some(id) => {
            let ConnectionGrant { owner, stateful } = state
                .connection_tokens
                .redeem(id)
                .await?
                .ok_or(ApiError::NotFound("connection"))?;
            let reconnect = stateful.then(|| ReconnectGrant {
                token: id.clone(),
                connections: state.signalr_connections.clone(),
            });
            (owner, reconnect)
        }
        None => (resolve_stream(req.clone()).await?, None),
    };
    // Taken before the upgrade and held by the session: a key's concurrent upgrades cannot
    // all pass a check that none of them has counted yet. (A stateful reconnect above takes
    // none: its connection still holds the one it was opened with.)
    let slot = state
        .connection_slots
        .try_take(&owner.key_id)
        .ok_or_else(|| ApiError::TooManyStreams {
            code: "too_many_connections",
            message: format!(
                "this API key already has {} WebSocket connections open; close one first",
                state.connection_slots.limit()
            ),
        })?;
    let (response, session, stream) = upgrade(&req, body)?;
    let settings = WsSettings {
        max_question_chars: state.settings.max_question_chars,
        heartbeat: state.settings.heartbeat_interval,
        client_timeout: state.settings.client_timeout,
        write_timeout: state.settings.client_write_timeout,
        resend_max_bytes: state.settings.signalr_resend_max_bytes,
    };
    WsSession::start(
        Socket { session, stream },
        owner,
        state.hub.clone(),
        state.pipeline.clone(),
        settings,
        slot,
        reconnect,
    );
    Ok(response)
}

fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, actix_ws::Session, AggregatedMessageStream), ApiError> {
    let (response, session, stream) = actix_ws::handle(req, body).map_err(|e| {
        ApiError::bad_request(
            "websocket_required",
            format!("this route speaks WebSocket only: {e}"),
        )
    })?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    Ok((response, session, stream))
}

/// Hands a reconnected socket to the SignalR connection waiting for it (possibly on another
/// worker thread). A connection that ended in the meantime is a 404, like an unknown id.
async fn reconnect(
    req: &HttpRequest,
    body: web::Payload,
    connection: Addr<WsSession>,
) -> Result<HttpResponse, ApiError> {
    let (response, session, stream) = upgrade(req, body)?;
    match connection.send(Reattach { session }).await {
        Ok(Some(socket)) => {
            pump(connection, socket, stream);
            Ok(response)
        }
        Ok(None) | Err(_) => Err(ApiError::NotFound("connection")),
    }
}

/// SignalR negotiate (versions 0 and 1): WebSockets with text frames is the one transport.
/// A version 1 client that asks for stateful reconnect (`useStatefulReconnect=true`, what
/// `withStatefulReconnect()` sends) gets it, unless the resume grace window is zero (then a
/// lost connection has nothing to come back to).
#[utoipa::path(
    operation_id = "ws_negotiate",
    post,
    path = "/api/v1/chat/ws/negotiate",
    tag = "realtime",
    params(("negotiateVersion" = Option<i64>, Query), ("useStatefulReconnect" = Option<bool>, Query)),
    security(("api_key" = []), ("ticket" = []), ("session" = [])),
    responses(
        (status = 200, description = "WebSockets with text frames", body = crate::routes::api_doc::Negotiated),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn negotiate(
    req: HttpRequest,
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string()).ok();
    let param = |name: &str| query.as_ref().and_then(|q| q.get(name).cloned());
    let version = param("negotiateVersion")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let stateful = version >= 1
        && param("useStatefulReconnect").as_deref() == Some("true")
        && !state.settings.resume_grace.is_zero();
    let token = state
        .connection_tokens
        .issue(ConnectionGrant { owner, stateful })
        .await?;
    let transports = json!([{"transport": "WebSockets", "transferFormats": ["Text"]}]);
    let body = if version >= 1 {
        let mut body = json!({
            "connectionId": Uuid::new_v4().simple().to_string(),
            "connectionToken": token,
            "negotiateVersion": 1,
            "availableTransports": transports,
        });
        if stateful {
            body["useStatefulReconnect"] = json!(true);
        }
        body
    } else {
        // Version 0 has no separate token: the client connects with `?id=<connectionId>`.
        json!({
            "connectionId": token,
            "negotiateVersion": 0,
            "availableTransports": transports,
        })
    };
    Ok(HttpResponse::Ok().json(body))
}
