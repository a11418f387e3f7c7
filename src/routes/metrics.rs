//! `GET /metrics`: the Prometheus text exposition. With `RAGSTREAM_METRICS_TOKEN` set, a
//! scraper sends `Authorization: Bearer <token>`; without it, only loopback peers may scrape
//! (a hub behind a reverse proxy on the same machine should set a token: every request
//! then comes from loopback).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use subtle::ConstantTimeEq;

use super::table::Routes;
use crate::error::ApiError;
use crate::hub::messages::GetStats;
use crate::startup::AppState;
use crate::telemetry::{self, OpenNow};

/// The content type of the text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn configure(routes: &mut Routes) {
    routes.get("/metrics", metrics);
}

/// Scrape the hub's metrics
///
/// Counters, gauges and histograms in the Prometheus text format (version 0.0.4).
pub(super) async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    allowed(&req, &state)?;
    let Some(handle) = telemetry::install() else {
        return Err(ApiError::NotFound("metrics recorder"));
    };
    let stats = state
        .hub
        .send(GetStats)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let open = OpenNow {
        ws: stats.ws_connections,
        sse: stats.sse_connections,
        answers: stats.active_streams,
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, PROMETHEUS_TEXT))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(telemetry::render(&handle, open)))
}

fn allowed(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match &state.settings.metrics_token {
        Some(token) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or("");
            if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "a valid metrics token is required: Authorization: Bearer <RAGSTREAM_METRICS_TOKEN>",
                ))
            }
        }
        None if req.peer_addr().is_some_and(|a| a.ip().is_loopback()) => Ok(()),
        None => Err(ApiError::Forbidden(
            "metrics are served to loopback clients only; set RAGSTREAM_METRICS_TOKEN to scrape from elsewhere",
        )),
    }
}
