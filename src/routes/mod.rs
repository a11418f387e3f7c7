//! HTTP routes, mirroring the URL tree. Handlers are thin: validate, call the store or the
//! pipeline, shape the answer.

pub mod admin;
mod agent;
mod answers;
mod ask;
mod body;
mod conversations;
mod documents;
mod health;
mod pages;
mod session;
mod tickets;
mod whoami;
mod ws;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

/// JSON bodies of questions and admin calls; documents have their own, larger limit.
const JSON_LIMIT_BYTES: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT_BYTES)
            .error_handler(|e, _: &HttpRequest| ApiError::from(e).into()),
    )
    .app_data(
        web::QueryConfig::default().error_handler(|e, _: &HttpRequest| {
            ApiError::bad_request("invalid_query", format!("invalid query string: {e}")).into()
        }),
    )
    .app_data(
        web::PathConfig::default().error_handler(|e, _: &HttpRequest| {
            ApiError::bad_request("invalid_path", format!("invalid path: {e}")).into()
        }),
    )
    .configure(health::configure)
    .configure(pages::configure)
    .service(
        web::scope("/api/v1")
            .configure(ask::configure)
            .configure(agent::configure)
            .configure(answers::configure)
            .configure(conversations::configure)
            .configure(documents::configure)
            .configure(ws::configure)
            .configure(tickets::configure)
            .configure(whoami::configure)
            .configure(session::configure)
            .configure(admin::configure),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::NotFound("route"))
    }));
}
