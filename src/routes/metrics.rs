//! `GET /metrics`: the Prometheus text exposition. With `RAGSTREAM_METRICS_TOKEN` set, a
//! scraper sends `Authorization: Bearer <token>`; without it, only loopback peers may scrape
//! (a hub behind a reverse proxy on the same machine should set a token: every request
//! then comes from loopback).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::net::IpAddr;

use subtle::ConstantTimeEq;

use crate::config::Secret;

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
#[utoipa::path(
    operation_id = "metrics",
    get,
    path = "/metrics",
    tag = "operations",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics in the Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 403, description = "A token is configured and this one is missing or wrong, or none is and the peer is not on loopback", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
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
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let peer = req.peer_addr().map(|a| a.ip());
    match (&state.settings.metrics_token, may_scrape(state.settings.metrics_token.as_ref(), authorization, peer)) {
        (_, true) => Ok(()),
        (Some(_), false) => Err(ApiError::Forbidden(
            "a valid metrics token is required: Authorization: Bearer <RAGSTREAM_METRICS_TOKEN>",
        )),
        (None, false) => Err(ApiError::Forbidden(
            "metrics are served to loopback clients only; set RAGSTREAM_METRICS_TOKEN to scrape from elsewhere",
        )),
    }
}

/// With a token: the request must carry it as a bearer token (from anywhere). Without one:
/// the peer must be on loopback.
fn may_scrape(token: Option<&Secret>, authorization: Option<&str>, peer: Option<IpAddr>) -> bool {
    match token {
        Some(token) => {
            let presented = authorization
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or("");
            bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
        }
        None => peer.is_some_and(|ip| ip.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_peers_may_scrape() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let local6: IpAddr = "::1".parse().unwrap();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(may_scrape(None, None, Some(local)));
        assert!(may_scrape(None, None, Some(local6)));
        assert!(!may_scrape(None, None, Some(remote)));
        assert!(!may_scrape(None, Some("Bearer anything"), Some(remote)));
        assert!(!may_scrape(None, None, None));
    }

    #[test]
    fn with_a_token_only_its_bearer_may_scrape_from_anywhere() {
        let token = Secret::new("scrape-token-0123456789");
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let t = Some(&token);
        assert!(may_scrape(
            t,
            Some("Bearer scrape-token-0123456789"),
            Some(remote)
        ));
        assert!(
            !may_scrape(t, None, Some(local)),
            "loopback needs the token too"
        );
        assert!(!may_scrape(
            t,
            Some("Bearer scrape-token-012345678"),
            Some(remote)
        ));
        assert!(!may_scrape(
            t,
            Some("scrape-token-0123456789"),
            Some(remote)
        ));
    }
}
