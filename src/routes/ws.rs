//! `/api/v1/chat/ws` and its SignalR negotiate endpoint. Authentication failures stay plain
//! HTTP errors; the upgrade comes last and hands the socket to a [`WsSession`] actor.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use uuid::Uuid;

use crate::auth::{resolve_stream, StreamPrincipal};
use crate::error::ApiError;
use crate::hub::{WsSession, WsSettings};
use crate::startup::AppState;

/// The codec's hard cap. Frames between the protocols' 64 KiB limit and this get an
/// error and the socket stays open; beyond it the socket is closed with 1009.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/ws", web::get().to(chat_ws))
        .route("/chat/ws/negotiate", web::post().to(negotiate));
}

async fn chat_ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query =
        web::Query::<HashMap<String, String>>::from_query(req.query_string()).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
        })?;
    // After negotiate, the SignalR client connects with `?id=<connection token>`, which
    // stands for the credentials it negotiated with. An unknown id is a 404, as in ASP.NET.
    let owner = match query.get("id") {
        Some(id) => state
            .connection_tokens
            .redeem(id)
            .ok_or(ApiError::NotFound("connection"))?,
        None => resolve_stream(req.clone()).await?,
    };
    // Taken before the upgrade and held by the session: a key's concurrent upgrades cannot
    // all pass a check that none of them has counted yet.
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
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(
            "websocket_required",
            format!("this route speaks WebSocket only: {e}"),
        )
    })?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let settings = WsSettings {
        max_question_chars: state.settings.max_question_chars,
        heartbeat: state.settings.heartbeat_interval,
        client_timeout: state.settings.client_timeout,
        write_timeout: state.settings.client_write_timeout,
    };
    WsSession::start(
        session,
        stream,
        owner,
        state.hub.clone(),
        state.pipeline.clone(),
        settings,
        slot,
    );
    Ok(response)
}

/// SignalR negotiate (versions 0 and 1): WebSockets with text frames is the one transport.
async fn negotiate(
    req: HttpRequest,
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
) -> HttpResponse {
    let version = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| {
            q.get("negotiateVersion")
                .and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(0);
    let token = state.connection_tokens.issue(owner);
    let transports = json!([{"transport": "WebSockets", "transferFormats": ["Text"]}]);
    let body = if version >= 1 {
        json!({
            "connectionId": Uuid::new_v4().simple().to_string(),
            "connectionToken": token,
            "negotiateVersion": 1,
            "availableTransports": transports,
        })
    } else {
        // Version 0 has no separate token: the client connects with `?id=<connectionId>`.
        json!({
            "connectionId": token,
            "negotiateVersion": 0,
            "availableTransports": transports,
        })
    };
    HttpResponse::Ok().json(body)
}
