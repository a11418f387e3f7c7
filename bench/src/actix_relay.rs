//! The same pass-through relay as `relay.rs`, built on the hub's own framework: actix-web
//! for the client side and awc for the upstream. Its CPU per token is the floor for anything
//! written on this stack, so the report can tell the framework's share of the hub's cost
//! from the hub's own (issue 15, point 4).
//!
//! Like the bare relay it forwards method, path and body, and streams the upstream's
//! response body back as it arrives, without parsing it. When the client leaves, actix drops
//! the response body, which drops awc's response and with it the upstream connection.

use std::net::TcpListener;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

struct Upstream {
    base: String,
}

/// Serves until the process is killed; `workers` threads like the bare relay's runtime.
pub fn serve(
    listener: TcpListener,
    upstream: std::net::SocketAddr,
    workers: usize,
) -> std::io::Result<()> {
    let base = format!("http://{upstream}");
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            // One client per worker (awc's client is not `Send`), shared by every request
            // of that worker so upstream connections are pooled. awc's connector allows 100
            // connections per host by default, which would queue the 1,000-stream level behind
            // it; the hub lifts that limit too (`providers::http`).
            let connector = awc::Connector::new().limit(0);
            let client = awc::Client::builder()
                .connector(connector)
                .disable_timeout()
                .finish();
            App::new()
                .app_data(web::Data::new(client))
                .app_data(web::Data::new(Upstream { base: base.clone() }))
                .default_service(web::to(forward))
        })
        .workers(workers.max(1))
        .tcp_nodelay(true)
        .h1_allow_half_closed(false)
        .listen(listener)?
        .run()
        .await
    })
}

async fn forward(
    req: HttpRequest,
    body: web::Bytes,
    client: web::Data<awc::Client>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let sent = client
        .request(req.method().clone(), format!("{}{path}", upstream.base))
        .insert_header((CONTENT_TYPE, "application/json"))
        .send_body(body)
        .await;
    match sent {
        Ok(res) => {
            let mut out = HttpResponse::build(res.status());
            if let Some(ct) = res.headers().get(CONTENT_TYPE) {
                out.insert_header((CONTENT_TYPE, ct.clone()));
            }
            out.streaming(res)
        }
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}
