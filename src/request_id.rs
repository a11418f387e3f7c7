//! `X-Request-Id`: honoured when a client (or a proxy in front) sends a sane one, minted
//! otherwise, returned on every response, and set as the log context of everything the
//! request does (see [`crate::logging`]). Also writes the access log line, with the path
//! and only a redacted query (tickets and connection tokens travel there).

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use uuid::Uuid;

use crate::logging::{self, LogContext};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longer incoming ids are replaced: an id is for grepping, not for carrying data.
const MAX_LEN: usize = 64;

/// The client's id if it is short and made of safe characters, else a new one.
fn pick(incoming: Option<&HeaderValue>) -> Arc<str> {
    incoming
        .and_then(|v| v.to_str().ok())
        .filter(|id| valid(id))
        .map(Arc::from)
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string().into())
}

fn valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The middleware (`middleware::from_fn`).
pub async fn tag(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let id = pick(req.headers().get(&HEADER));
    let started = Instant::now();
    let method = req.method().clone();
    let target = match req.query_string() {
        "" => req.path().to_owned(),
        query => format!("{}?{}", req.path(), logging::redact(query)),
    };
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let context = LogContext {
        request_id: Some(id.clone()),
        answer_id: None,
    };
    logging::scope(context, async move {
        let mut res = next.call(req).await?;
        // Its head is ready: a stream's body goes on after this line.
        log::info!(
            "{peer} \"{method} {target}\" {} {}ms",
            res.status().as_u16(),
            started.elapsed().as_millis()
        );
        if let Ok(value) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(HEADER, value);
        }
        Ok(res)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        let keep = HeaderValue::from_static("req-42_a.b:c");
        assert_eq!(&*pick(Some(&keep)), "req-42_a.b:c");
        for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let picked = pick(Some(&value));
            assert_ne!(&*picked, bad);
            assert_eq!(picked.len(), 32, "a minted id");
        }
        assert_eq!(pick(None).len(), 32);
    }
}
