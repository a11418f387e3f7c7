//! HTTP routes, mirroring the URL tree. Handlers are thin: validate, call the store or the
//! pipeline, shape the answer.

pub mod admin;
mod agent;
mod answers;
pub mod api_doc;
mod api_doc_v1;
mod ask;
mod body;
mod conversations;
mod documents;
mod health;
mod metrics;
mod openai_compat;
mod pages;
mod session;
mod table;
mod tickets;
mod usage;
mod whoami;
mod ws;

use actix_web::{web, HttpRequest, HttpResponse};

pub use table::Routes;

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
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::NotFound("route"))
    }));
    table().register(cfg);
    // After the table: an unknown path under /v1 gets an error in OpenAI's shape.
    openai_compat::not_found_under_v1(cfg);
}

/// Every HTTP route of the hub.
pub fn table() -> Routes {
    let mut routes = Routes::default();
    health::configure(&mut routes);
    metrics::configure(&mut routes);
    pages::configure(&mut routes);
    api_doc::configure(&mut routes);
    openai_compat::configure(&mut routes);
    routes.scope("/api/v1", |r| {
        ask::configure(r);
        agent::configure(r);
        answers::configure(r);
        conversations::configure(r);
        documents::configure(r);
        ws::configure(r);
        tickets::configure(r);
        whoami::configure(r);
        session::configure(r);
        admin::configure(r);
        usage::configure(r);
    });
    routes
}

/// `(method, path)` of every HTTP route, paths as actix spells them (`{id}`, `{path:.*}`).
pub fn endpoints() -> Vec<(String, String)> {
    table()
        .endpoints()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect()
}
