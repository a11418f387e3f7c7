//! `POST /api/v1/stream-tickets`: trade an API key for a single-use ticket that a browser
//! can put in an `EventSource` or WebSocket URL (`?ticket=`), valid for one minute.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::table::Routes;
use crate::auth::tickets::TICKET_TTL;
use crate::auth::Principal;
use crate::startup::AppState;

pub fn configure(routes: &mut Routes) {
    routes.post("/stream-tickets", issue);
}

async fn issue(state: web::Data<AppState>, Principal(owner): Principal) -> HttpResponse {
    let ticket = state.tickets.issue(owner);
    HttpResponse::Created().json(json!({
        "ticket": ticket,
        "expiresInSeconds": TICKET_TTL.as_secs(),
    }))
}
