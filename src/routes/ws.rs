//! `/api/v1/chat/ws`: authenticates (a failure stays a plain HTTP error), then upgrades and
//! hands the socket to a [`WsSession`] actor.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::{WsSession, WsSettings};
use crate::startup::AppState;

/// The codec's hard cap. Frames between the protocol's 64 KiB limit and this get an error
/// frame and the socket stays open; beyond it the socket is closed with 1009.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/ws", web::get().to(chat_ws));
}

async fn chat_ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    Principal(owner): Principal,
) -> Result<HttpResponse, ApiError> {
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
    };
    WsSession::start(
        session,
        stream,
        owner,
        state.hub.clone(),
        state.pipeline.clone(),
        settings,
    );
    Ok(response)
}
