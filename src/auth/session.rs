//! Browser sessions: an `HttpOnly` cookie that stands for an API key, so a page on the hub's
//! own origin needs no key in its storage and no ticket in its URLs.
//!
//! `POST /api/v1/session` trades a key for the cookie (`HttpOnly`, `SameSite=Strict`,
//! `Path=/`, `Secure` over https). The cookie then authenticates any request that presents
//! no key and no ticket (see [`super::resolve`]), on every route its key may call.
//!
//! The cookie is for same-origin pages only. `SameSite=Strict` keeps other sites from sending
//! it, but not other origins of the same site (another port, a sibling subdomain), so the
//! browser's own word about where a request comes from is checked too:
//! - a request whose `Sec-Fetch-Site` is not `same-origin` (or `none`, a navigation the user
//!   typed, for safe methods), or whose `Origin` is not the hub's, is refused (403);
//! - unsafe methods and WebSocket upgrades must also show a same-origin `Origin` or
//!   `Sec-Fetch-Site: same-origin`: browsers always send one of them there, a forged
//!   cross-site form or socket cannot send a matching one.
//!
//! Requests that carry a key or a ticket are not affected: those are not ambient credentials.

use actix_web::http::{header, Method};
use actix_web::HttpRequest;

use crate::config::{CookieSecure, Settings};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::{KeyOwner, SessionInfo, SessionTimes};

/// The cookie's name over plain http.
pub const COOKIE: &str = "ragstream_session";
/// Its name when `Secure`: browsers accept a `__Host-` cookie only from a secure origin,
/// with `Path=/` and no `Domain`, so a sibling subdomain cannot plant one.
pub const SECURE_COOKIE: &str = "__Host-ragstream_session";

const CROSS_ORIGIN: ApiError = ApiError::Forbidden(
    "the session cookie is accepted on same-origin requests only; \
     other origins send an API key or a stream ticket",
);

pub fn times(settings: &Settings) -> SessionTimes {
    SessionTimes {
        idle: settings.session_idle,
        max: settings.session_max,
    }
}

/// Whether this request's cookie is (or is to be) `Secure`.
fn secure(req: &HttpRequest, settings: &Settings) -> bool {
    match settings.cookie_secure {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => req.connection_info().scheme() == "https",
    }
}

fn cookie_name(req: &HttpRequest, settings: &Settings) -> &'static str {
    if secure(req, settings) {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}

/// The session cookie's value, if the request has one.
pub fn cookie_value(req: &HttpRequest, settings: &Settings) -> Option<String> {
    let name = cookie_name(req, settings);
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(req: &HttpRequest, settings: &Settings, token: &str) -> String {
    let secure = secure(req, settings);
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        cookie_name(req, settings),
        settings.session_max.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that makes the browser drop the session cookie.
pub fn clear_cookie(req: &HttpRequest, settings: &Settings) -> String {
    let secure = secure(req, settings);
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; \
         Expires=Thu, 01 Jan 1970 00:00:00 GMT{}",
        cookie_name(req, settings),
        if secure { "; Secure" } else { "" }
    )
}

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the request may change something or open a socket: those must prove they come
/// from the hub's own pages.
pub fn is_unsafe(req: &HttpRequest) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || is_websocket_upgrade(req)
}

/// `scheme://host[:port]` names the same host and port as `host` (the `Host` the hub was
/// reached at), default ports included or not.
fn origin_matches(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return false,
    };
    if authority.is_empty() || authority.contains(['/', '@']) {
        return false;
    }
    let normalise = |a: &str| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(bare) => bare.to_owned(),
            None => a,
        }
    };
    normalise(authority) == normalise(host)
}

/// Refuses a request that the browser says comes from another origin. With `vouched`, the
/// request must also show that it comes from the hub's own origin (unsafe methods and
/// WebSocket upgrades authenticated by the cookie).
pub fn check_origin(req: &HttpRequest, vouched: bool) -> Result<(), ApiError> {
    let header_text = |name: &str| -> Result<Option<&str>, ApiError> {
        match req.headers().get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(Some).map_err(|_| CROSS_ORIGIN),
        }
    };
    let mut same_origin = false;
    if let Some(site) = header_text("Sec-Fetch-Site")? {
        // `none`: a navigation the user started (typed, bookmarked), fine for reading only.
        let typed = site.eq_ignore_ascii_case("none") && !is_unsafe(req);
        if site.eq_ignore_ascii_case("same-origin") {
            same_origin = true;
        } else if !typed {
            return Err(CROSS_ORIGIN);
        }
    }
    if let Some(origin) = header_text(header::ORIGIN.as_str())? {
        // The Host header itself, not X-Forwarded-Host: a page may add that header to its
        // own requests (after a CORS preflight), but never Host.
        let host = match header_text(header::HOST.as_str())? {
            Some(host) => host,
            None => req.uri().authority().map_or("", |a| a.as_str()),
        };
        if !origin_matches(origin, host) {
            return Err(CROSS_ORIGIN);
        }
        same_origin = true;
    }
    if vouched && !same_origin {
        return Err(CROSS_ORIGIN);
    }
    Ok(())
}

/// The owner behind the request's session cookie: for requests that present no key and no
/// ticket. 401 without a live session, 403 for cross-origin use.
pub(super) async fn resolve(req: &HttpRequest, state: &AppState) -> Result<KeyOwner, ApiError> {
    let token = cookie_value(req, &state.settings).ok_or(ApiError::Unauthorized)?;
    check_origin(req, is_unsafe(req))?;
    state
        .store
        .session(&token, times(&state.settings))
        .await?
        .map(|s| s.owner)
        .ok_or(ApiError::Unauthorized)
}

/// The live session behind the request's cookie, for `GET /api/v1/session`; None without a
/// cookie or a live session.
pub async fn current(req: &HttpRequest, state: &AppState) -> Result<Option<SessionInfo>, ApiError> {
    let Some(token) = cookie_value(req, &state.settings) else {
        return Ok(None);
    };
    check_origin(req, is_unsafe(req))?;
    Ok(state.store.session(&token, times(&state.settings)).await?)
}

/// The API key a sign-in presents in a header (`X-API-Key`, `Authorization: Bearer`).
pub fn presented_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    Ok(super::presented(req, false)?.map(|p| p.value))
}

/// Checks a key for sign-in: the key's owner, with an optional `X-Tenant-Id` matched.
pub async fn owner_of_key(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
) -> Result<KeyOwner, ApiError> {
    let owner = state
        .store
        .authenticate(key)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    super::tenant_checked(req, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn origins_match_their_own_host_only() {
        assert!(origin_matches("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(origin_matches(
            "https://Chat.Example.com",
            "chat.example.com"
        ));
        assert!(origin_matches(
            "https://chat.example.com",
            "chat.example.com:443"
        ));
        assert!(origin_matches(
            "http://chat.example.com:80",
            "chat.example.com"
        ));
        for (origin, host) in [
            ("http://127.0.0.1:9090", "127.0.0.1:8080"),
            ("http://127.0.0.2:8080", "127.0.0.1:8080"),
            ("https://chat.example.com", "chat.example.com:80"),
            ("http://chat.example.com:8080", "chat.example.com:80"),
            ("null", "127.0.0.1:8080"),
            ("file://", "127.0.0.1:8080"),
            ("http://user@127.0.0.1:8080", "127.0.0.1:8080"),
            ("ftp://127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            assert!(!origin_matches(origin, host), "{origin} vs {host}");
        }
    }

    #[test]
    fn unsafe_requests_must_show_where_they_come_from() {
        let post = || TestRequest::post().insert_header(("Host", "hub:8080"));
        assert!(check_origin(&post().to_http_request(), true).is_err());
        assert!(check_origin(&post().to_http_request(), false).is_ok());
        let same = post().insert_header(("Origin", "http://hub:8080"));
        assert!(check_origin(&same.to_http_request(), true).is_ok());
        let fetch = post().insert_header(("Sec-Fetch-Site", "same-origin"));
        assert!(check_origin(&fetch.to_http_request(), true).is_ok());
        let other = post().insert_header(("Origin", "http://hub:9090"));
        assert!(check_origin(&other.to_http_request(), false).is_err());
        let sibling = post()
            .insert_header(("Origin", "http://hub:8080"))
            .insert_header(("Sec-Fetch-Site", "same-site"));
        assert!(check_origin(&sibling.to_http_request(), true).is_err());
        let forged = post()
            .insert_header(("Origin", "http://hub:9090"))
            .insert_header(("X-Forwarded-Host", "hub:9090"));
        assert!(check_origin(&forged.to_http_request(), true).is_err());
    }

    #[test]
    fn safe_requests_are_refused_only_on_the_browsers_word() {
        let get = || TestRequest::get().insert_header(("Host", "hub:8080"));
        assert!(check_origin(&get().to_http_request(), false).is_ok());
        let typed = get().insert_header(("Sec-Fetch-Site", "none"));
        assert!(check_origin(&typed.to_http_request(), false).is_ok());
        let cross = get().insert_header(("Sec-Fetch-Site", "cross-site"));
        assert!(check_origin(&cross.to_http_request(), false).is_err());
        let upgrade = get()
            .insert_header(("Upgrade", "websocket"))
            .insert_header(("Sec-Fetch-Site", "none"))
            .to_http_request();
        assert!(is_unsafe(&upgrade));
        assert!(check_origin(&upgrade, true).is_err());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_by_the_name_its_scheme_uses() {
        let settings = Settings::default();
        let req = TestRequest::get()
            .insert_header(("Cookie", "a=1; ragstream_session=rss_abc; b=2"))
            .to_http_request();
        assert_eq!(cookie_value(&req, &settings).as_deref(), Some("rss_abc"));
        let req = TestRequest::get()
            .insert_header(("Cookie", "ragstream_session="))
            .to_http_request();
        assert_eq!(cookie_value(&req, &settings), None);
        let https = TestRequest::get()
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header(("Cookie", "ragstream_session=rss_plain"))
            .to_http_request();
        assert_eq!(cookie_value(&https, &settings), None);
        let set = set_cookie(&https, &settings, "rss_x");
        assert!(set.starts_with("__Host-ragstream_session=rss_x; Path=/; HttpOnly"));
        assert!(set.ends_with("; Secure"));
    }
}
