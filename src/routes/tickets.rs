//! `POST /api/v1/stream-tickets`: trade an API key for a single-use ticket that a browser
//! can put in an `EventSource` or WebSocket URL (`?ticket=`), valid for one minute.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::auth::tickets::TICKET_TTL;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stream-tickets", web::post().to(issue));
}

async fn issue(
    state: web::Data<AppState>,
    Principal(owner): Principal,
) -> Result<HttpResponse, ApiError> {
    let ticket = state.tickets.issue(owner).await?;
    Ok(HttpResponse::Created().json(json!({
        "ticket": ticket,
        "expiresInSeconds": TICKET_TTL.as_secs(),
    })))
}
