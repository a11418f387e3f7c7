//! `POST /api/v1/stream-tickets`: trade an API key for a single-use ticket that a browser
//! can put in an `EventSource` or WebSocket URL (`?ticket=`), valid for one minute.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::table::Routes;
use crate::auth::tickets::TICKET_TTL;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::startup::AppState;

pub fn configure(routes: &mut Routes) {
    routes.post("/stream-tickets", issue);
}

#[utoipa::path(
    operation_id = "tickets_issue",
    summary = "Get a single-use stream ticket",
    post,
    path = "/api/v1/stream-tickets",
    tag = "realtime",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "A ticket, valid for one minute and one use", body = crate::routes::api_doc::TicketResponse),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
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
