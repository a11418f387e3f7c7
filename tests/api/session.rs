//! Browser sessions: `POST/GET/DELETE /api/v1/session`, the cookie's attributes, its expiry,
//! the routes it opens (JSON, SSE, WebSocket, SignalR), cross-origin refusal, revocation.

use std::time::{Duration, Instant};

use awc::http::header;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, SseReader, TestApp, WsClient, TOWER};

/// What a browser would send back: `name=value` from a `Set-Cookie`.
struct Cookie {
    pair: String,
    attributes: String,
}

impl Cookie {
    fn from_response<S>(res: &awc::ClientResponse<S>) -> Option<Cookie> {
        let all: Vec<_> = res.headers().get_all(header::SET_COOKIE).collect();
        assert!(all.len() <= 1, "one Set-Cookie at most: {all:?}");
        let raw = all.first()?.to_str().expect("ascii cookie");
        let (pair, attributes) = raw.split_once(';').unwrap_or((raw, ""));
        Some(Cookie {
            pair: pair.trim().to_owned(),
            attributes: attributes.to_owned(),
        })
    }

    fn name(&self) -> &str {
        self.pair.split_once('=').map_or("", |(n, _)| n)
    }

    fn value(&self) -> &str {
        self.pair.split_once('=').map_or("", |(_, v)| v)
    }

    /// The attributes, lower-cased, one per entry (`httponly`, `max-age=60`, ...).
    fn attrs(&self) -> Vec<String> {
        self.attributes
            .split(';')
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// A key with its id, so a test can revoke it.
async fn user_key(app: &TestApp, name: &str) -> (String, String) {
    let (status, created) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": "default", "name": name}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().expect("id").to_owned(),
        created["key"].as_str().expect("key").to_owned(),
    )
}

/// Signs in with a key in the JSON body, as the pages do; returns the cookie and the body.
async fn sign_in(app: &TestApp, key: &str) -> (Cookie, Value) {
    let mut res = app
        .client
        .post(app.url("/api/v1/session"))
        .insert_header(("Origin", app.base.as_str()))
        .send_json(&json!({"apiKey": key}))
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 201);
    let cookie = Cookie::from_response(&res).expect("a session cookie");
    let body: Value = res.json().await.expect("JSON body");
    (cookie, body)
}

/// A same-origin page's request: the cookie and the hub's own Origin.
fn same_origin(app: &TestApp, req: awc::ClientRequest, cookie: &Cookie) -> awc::ClientRequest {
    req.insert_header(("Cookie", cookie.pair.as_str()))
        .insert_header(("Origin", app.base.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"))
}

async fn status_and_json(req: awc::ClientRequest, body: Option<Value>) -> (u16, Value) {
    let mut res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("request sent");
    let status = res.status().as_u16();
    let bytes = res.body().limit(1 << 20).await.expect("body");
    (status, crate::helpers::parse(&bytes))
}

async fn who(app: &TestApp, cookie: &Cookie) -> u16 {
    app.client
        .get(app.url("/api/v1/session"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

fn assert_cross_origin_refusal(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"]["code"], "forbidden", "{what}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("same-origin")),
        "{what}: {body}"
    );
}

#[actix_web::test]
async fn signing_in_sets_an_http_only_strict_cookie_and_says_who_is_signed_in() {
    let app = spawn_app().await;
    let (_, key) = user_key(&app, "alice").await;
    let (cookie, body) = sign_in(&app, &key).await;

    assert_eq!(cookie.name(), "ragstream_session");
    assert!(cookie.value().starts_with("rss_") && cookie.value().len() >= 36);
    assert!(!cookie.value().contains(&key));
    let attrs = cookie.attrs();
    for want in ["httponly", "samesite=strict", "path=/", "max-age=604800"] {
        assert!(attrs.iter().any(|a| a == want), "{want} in {attrs:?}");
    }
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "plain http: {attrs:?}"
    );
    assert!(!attrs.iter().any(|a| a.starts_with("domain")), "{attrs:?}");
    assert_eq!(body["tenantId"], "default");
    assert_eq!(body["keyName"], "alice");
    assert_eq!(body["isAdmin"], false);
    assert_eq!(body["idleTimeoutSeconds"], 28_800);
    assert!(body["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(!body.to_string().contains(&key), "the key is not echoed");

    let (status, me) = status_and_json(
        app.client
            .get(app.url("/api/v1/session"))
            .insert_header(("Cookie", cookie.pair.as_str())),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["keyName"], "alice");
    assert_eq!(me["tenantName"], "default");
    assert_eq!(me["keyId"], body["keyId"]);

    // The admin key says so; a header key and a Bearer token sign in too.
    let mut res = app
        .client
        .post(app.url("/api/v1/session"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["isAdmin"], true);
    let res = app
        .client
        .post(app.url("/api/v1/session"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert!(Cookie::from_response(&res).is_some());
}

#[actix_web::test]
async fn a_wrong_or_missing_key_gets_no_session() {
    let app = spawn_app().await;
    for body in [
        json!({"apiKey": "rsk_not_a_real_key_0000000000000000"}),
        json!({"apiKey": ""}),
        json!({}),
    ] {
        let res = app
            .client
            .post(app.url("/api/v1/session"))
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401, "{body}");
        assert!(Cookie::from_response(&res).is_none(), "{body}");
    }
    let res = app
        .client
        .post(app.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    // A form or text body (what a cross-site form can send without a preflight) is refused.
    let res = app
        .client
        .post(app.url("/api/v1/session"))
        .insert_header(("Content-Type", "text/plain"))
        .send_body(json!({"apiKey": app.admin_key}).to_string())
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    assert!(Cookie::from_response(&res).is_none());
    // A stream ticket is not a key.
    let (_, t) = app
        .post_json("/api/v1/stream-tickets", &app.admin_key, json!({}))
        .await;
    let res = app
        .client
        .post(app.url("/api/v1/session"))
        .send_json(&json!({"apiKey": t["ticket"]}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    // Without a cookie nobody is signed in.
    let res = app
        .client
        .get(app.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

#[actix_web::test]
async fn signing_out_ends_the_session_and_expires_the_cookie() {
    let app = spawn_app().await;
    let (cookie, _) = sign_in(&app, &app.admin_key).await;
    assert_eq!(who(&app, &cookie).await, 200);

    // Signing out is a state change: another origin may not do it for the user.
    let (status, body) = status_and_json(
        app.client
            .delete(app.url("/api/v1/session"))
            .insert_header(("Cookie", cookie.pair.as_str())),
        None,
    )
    .await;
    assert_cross_origin_refusal(status, &body, "DELETE without Origin");
    assert_eq!(who(&app, &cookie).await, 200);

    let res = same_origin(&app, app.client.delete(app.url("/api/v1/session")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let cleared = Cookie::from_response(&res).expect("the cookie is expired");
    assert_eq!(cleared.pair, "ragstream_session=");
    assert!(cleared.attrs().iter().any(|a| a == "max-age=0"));
    assert!(cleared.attrs().iter().any(|a| a == "httponly"));

    // The old value opens nothing any more, and says so by clearing itself.
    let res = app
        .client
        .get(app.url("/api/v1/session"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(
        Cookie::from_response(&res).map(|c| c.pair),
        Some("ragstream_session=".to_owned())
    );
    let (status, _) = status_and_json(
        same_origin(&app, app.client.get(app.url("/api/v1/documents")), &cookie),
        None,
    )
    .await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn signing_in_again_ends_the_session_from_before() {
    let app = spawn_app().await;
    let (first, _) = sign_in(&app, &app.admin_key).await;
    let res = same_origin(&app, app.client.post(app.url("/api/v1/session")), &first)
        .send_json(&json!({"apiKey": app.admin_key}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let second = Cookie::from_response(&res).unwrap();
    assert_ne!(first.value(), second.value());
    assert_eq!(who(&app, &first).await, 401);
    assert_eq!(who(&app, &second).await, 200);
}

#[actix_web::test]
async fn the_cookie_opens_json_sse_websocket_and_signalr_routes_of_its_key() {
    let app = spawn_app().await;
    let (_, key) = user_key(&app, "bob").await;
    let (cookie, _) = sign_in(&app, &key).await;

    // JSON, read and write, as a same-origin page sends them.
    let (status, body) = status_and_json(
        same_origin(&app, app.client.post(app.url("/api/v1/documents")), &cookie),
        Some(json!({"title": "Tower", "text": TOWER})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // A plain GET (no Origin, no Sec-Fetch-Site: what a browser sends same-origin over http).
    let (status, docs) = status_and_json(
        app.client
            .get(app.url("/api/v1/documents"))
            .insert_header(("Cookie", cookie.pair.as_str())),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(docs["documents"][0]["title"], "Tower");
    // The key's limits still apply: not an admin.
    let (status, _) = status_and_json(
        same_origin(
            &app,
            app.client.get(app.url("/api/v1/admin/stats")),
            &cookie,
        ),
        None,
    )
    .await;
    assert_eq!(status, 403);

    // EventSource: a GET with the cookie and no ticket.
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream?question=How%20tall%20is%20the%20tower&topK=3"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    let last = frames.last().expect("frames").json();
    assert_eq!(last["done"], true, "{last}");
    assert!(frames.iter().any(|f| f.data.contains("330")));

    // A plain WebSocket.
    let (res, framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws", app.ws_base))
        .origin(app.base.as_str())
        .header("Cookie", cookie.pair.as_str())
        .connect()
        .await
        .expect("the socket opens with the cookie");
    assert_eq!(res.status().as_u16(), 101);
    let mut ws = crate::helpers::WsClient { framed };
    ws.send_json(json!({"message": "How tall is the tower?", "topK": 3, "id": "c1"}))
        .await;
    let (text, end) = ws.answer("c1").await;
    assert_eq!(end["done"], true, "{end}");
    assert!(text.contains("330"), "{text}");

    // SignalR: negotiate with the cookie, then connect with the connection token.
    let (status, negotiated) = status_and_json(
        same_origin(
            &app,
            app.client
                .post(app.url("/api/v1/chat/ws/negotiate?negotiateVersion=1")),
            &cookie,
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{negotiated}");
    let token = negotiated["connectionToken"].as_str().expect("token");
    let (res, _framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws?id={token}", app.ws_base))
        .origin(app.base.as_str())
        .connect()
        .await
        .expect("the negotiated socket opens");
    assert_eq!(res.status().as_u16(), 101);
}

#[actix_web::test]
async fn cross_origin_use_of_the_cookie_is_refused() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let (cookie, _) = sign_in(&app, &app.admin_key).await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let other_port = format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() ^ 1);
    let with = |req: awc::ClientRequest, headers: &[(&str, &str)]| {
        headers.iter().fold(
            req.insert_header(("Cookie", cookie.pair.as_str())),
            |r, &(n, v)| r.insert_header((n, v)),
        )
    };
    let question = json!({"question": "How tall is the tower?", "topK": 3});

    // Unsafe methods: a forged form or fetch from elsewhere (CSRF).
    for headers in [
        vec![],
        vec![("Origin", "http://evil.example")],
        vec![("Origin", other_port.as_str())],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![
            ("Origin", app.base.as_str()),
            ("Sec-Fetch-Site", "same-site"),
        ],
    ] {
        let (status, body) = status_and_json(
            with(app.client.post(app.url("/api/v1/ask")), &headers),
            Some(question.clone()),
        )
        .await;
        assert_cross_origin_refusal(status, &body, &format!("POST /ask with {headers:?}"));
        let (status, body) = status_and_json(
            with(app.client.post(app.url("/api/v1/stream-tickets")), &headers),
            None,
        )
        .await;
        assert_cross_origin_refusal(status, &body, &format!("tickets with {headers:?}"));
        let (status, body) = status_and_json(
            with(
                app.client.post(app.url("/api/v1/chat/ws/negotiate")),
                &headers,
            ),
            None,
        )
        .await;
        assert_cross_origin_refusal(status, &body, &format!("negotiate with {headers:?}"));
    }
    // Safe methods: refused when the browser says the page is elsewhere, so another origin
    // of the same site (another port: SameSite does not tell them apart) reads nothing.
    for headers in [
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", other_port.as_str())],
    ] {
        for path in [
            "/api/v1/documents",
            "/api/v1/session",
            "/api/v1/ask/stream?question=tower",
        ] {
            let (status, body) =
                status_and_json(with(app.client.get(app.url(path)), &headers), None).await;
            assert_cross_origin_refusal(status, &body, &format!("GET {path} with {headers:?}"));
        }
    }
    // Nor may another origin sign this browser in (login CSRF).
    let res = app
        .client
        .post(app.url("/api/v1/session"))
        .insert_header(("Origin", other_port.as_str()))
        .send_json(&json!({"apiKey": app.admin_key}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    assert!(Cookie::from_response(&res).is_none());
    assert_eq!(app.stats().await.admitted_total, 0, "no answer was started");

    // The same requests from the hub's own origin work.
    let (status, body) = status_and_json(
        with(
            app.client.post(app.url("/api/v1/ask")),
            &[("Origin", app.base.as_str())],
        ),
        Some(question.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = status_and_json(
        with(
            app.client.post(app.url("/api/v1/ask")),
            &[("Sec-Fetch-Site", "same-origin")],
        ),
        Some(question),
    )
    .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_websocket_upgrade_with_the_cookie_needs_the_hubs_own_origin() {
    let app = spawn_app().await;
    let (cookie, _) = sign_in(&app, &app.admin_key).await;
    let url = format!("{}/api/v1/chat/ws", app.ws_base);
    for origin in [
        None,
        Some("http://evil.example"),
        Some("http://127.0.0.1:1"),
    ] {
        let mut req = app.client.ws(&url).header("Cookie", cookie.pair.as_str());
        if let Some(o) = origin {
            req = req.origin(o);
        }
        match req.connect().await {
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) => {
                assert_eq!(s.as_u16(), 403, "origin {origin:?}")
            }
            other => panic!(
                "origin {origin:?}: expected 403, got {:?}",
                other.map(|(r, _)| r.status())
            ),
        }
    }
    assert_eq!(app.stats().await.connections, 0);
    let (res, _framed) = app
        .client
        .ws(&url)
        .header("Cookie", cookie.pair.as_str())
        .origin(app.base.as_str())
        .connect()
        .await
        .expect("same origin opens");
    assert_eq!(res.status().as_u16(), 101);
}

#[actix_web::test]
async fn keys_and_tickets_are_not_held_to_the_cookies_origin_rules() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    // A page on a CORS origin calls with a key: not an ambient credential, so no CSRF.
    let res = app
        .client
        .post(app.url("/api/v1/ask"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("Origin", "http://elsewhere.example"))
        .insert_header(("Sec-Fetch-Site", "cross-site"))
        .send_json(&json!({"question": "How tall is the tower?"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (_, t) = app
        .post_json("/api/v1/stream-tickets", &app.admin_key, json!({}))
        .await;
    let ticket = t["ticket"].as_str().unwrap();
    let (res, _framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws?ticket={ticket}", app.ws_base))
        .origin("http://elsewhere.example")
        .connect()
        .await
        .expect("a ticket opens a socket from any origin");
    assert_eq!(res.status().as_u16(), 101);
}

#[actix_web::test]
async fn revoking_the_key_ends_its_sessions_at_once() {
    let app = spawn_app().await;
    let (id, key) = user_key(&app, "carol").await;
    let (cookie, _) = sign_in(&app, &key).await;
    let (status, _) = status_and_json(
        same_origin(&app, app.client.get(app.url("/api/v1/documents")), &cookie),
        None,
    )
    .await;
    assert_eq!(status, 200);

    assert_eq!(
        app.delete(&format!("/api/v1/admin/keys/{id}"), &app.admin_key)
            .await,
        204
    );
    assert_eq!(who(&app, &cookie).await, 401);
    let (status, _) = status_and_json(
        same_origin(&app, app.client.get(app.url("/api/v1/documents")), &cookie),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream?question=tower"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    match app
        .client
        .ws(format!("{}/api/v1/chat/ws", app.ws_base))
        .header("Cookie", cookie.pair.as_str())
        .origin(app.base.as_str())
        .connect()
        .await
    {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 401),
        other => panic!("expected 401, got {:?}", other.map(|(r, _)| r.status())),
    }
}

/// Polls `GET /api/v1/session` until it is 401; returns how long that took.
async fn until_signed_out(app: &TestApp, cookie: &Cookie, limit: Duration) -> Duration {
    let start = Instant::now();
    while who(app, cookie).await == 200 {
        assert!(start.elapsed() < limit, "still signed in after {limit:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn session_times(idle: Duration, max: Duration) -> Options {
    Options {
        settings: Some(Box::new(move |s| {
            s.session_idle = idle;
            s.session_max = max;
        })),
        ..Options::default()
    }
}

#[actix_web::test]
async fn a_session_in_use_outlives_its_idle_timeout_and_an_unused_one_ends() {
    let idle = Duration::from_millis(2000);
    let app = spawn_app_with(session_times(idle, Duration::from_secs(600))).await;
    let (cookie, _) = sign_in(&app, &app.admin_key).await;
    // Used every 100 ms for twice the idle timeout: the sliding expiry keeps it alive.
    let start = Instant::now();
    while start.elapsed() < idle * 2 {
        assert_eq!(who(&app, &cookie).await, 200, "at {:?}", start.elapsed());
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    // Left alone, it ends. The wait is a plain sleep on purpose: idleness is the absence of
    // requests, so nothing may poll the session meanwhile.
    actix_web::rt::time::sleep(idle + Duration::from_millis(200)).await;
    assert_eq!(who(&app, &cookie).await, 401);
}

#[actix_web::test]
async fn a_session_ends_at_its_absolute_maximum_however_busy() {
    let max = Duration::from_millis(1500);
    let app = spawn_app_with(session_times(Duration::from_secs(600), max)).await;
    let start = Instant::now();
    let (cookie, _) = sign_in(&app, &app.admin_key).await;
    let waited = until_signed_out(&app, &cookie, max * 4).await;
    assert!(
        start.elapsed() >= max,
        "ended before its maximum: {waited:?}"
    );
}

fn cookie_secure(mode: ragstream::config::CookieSecure) -> Options {
    Options {
        settings: Some(Box::new(move |s| s.cookie_secure = mode)),
        ..Options::default()
    }
}

async fn sign_in_over(app: &TestApp, proto: Option<&str>) -> Cookie {
    let mut req = app
        .client
        .post(app.url("/api/v1/session"))
        .insert_header(("X-API-Key", app.admin_key.as_str()));
    if let Some(p) = proto {
        req = req.insert_header(("X-Forwarded-Proto", p));
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status().as_u16(), 201);
    Cookie::from_response(&res).unwrap()
}

#[actix_web::test]
async fn the_cookie_is_secure_when_the_hub_is_reached_over_https() {
    use ragstream::config::CookieSecure;
    let app = spawn_app().await;
    // Behind a TLS proxy (auto): Secure, and a __Host- name no subdomain can plant.
    let secure = sign_in_over(&app, Some("https")).await;
    assert_eq!(secure.name(), "__Host-ragstream_session");
    assert!(secure.attrs().iter().any(|a| a == "secure"));
    assert!(secure.attrs().iter().any(|a| a == "path=/"));
    let (status, _) = status_and_json(
        app.client
            .get(app.url("/api/v1/session"))
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header(("Cookie", secure.pair.as_str())),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let plain = sign_in_over(&app, None).await;
    assert_eq!(plain.name(), "ragstream_session");
    assert!(!plain.attrs().iter().any(|a| a == "secure"));

    let app = spawn_app_with(cookie_secure(CookieSecure::Always)).await;
    assert!(sign_in_over(&app, None)
        .await
        .attrs()
        .iter()
        .any(|a| a == "secure"));
    let app = spawn_app_with(cookie_secure(CookieSecure::Never)).await;
    let never = sign_in_over(&app, Some("https")).await;
    assert_eq!(never.name(), "ragstream_session");
    assert!(!never.attrs().iter().any(|a| a == "secure"));
}

/// A socket a same-origin page opens with the cookie.
async fn ws_with_cookie(app: &TestApp, cookie: &Cookie, query: &str) -> WsClient {
    let (res, framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws{query}", app.ws_base))
        .origin(app.base.as_str())
        .header("Cookie", cookie.pair.as_str())
        .connect()
        .await
        .expect("the socket opens with the cookie");
    assert_eq!(res.status().as_u16(), 101);
    WsClient { framed }
}

/// An `EventSource` answer a same-origin page opens with the cookie (and no ticket).
async fn sse_with_cookie(app: &TestApp, cookie: &Cookie) -> SseReader<impl SseBody> {
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream?question=How%20tall%20is%20the%20tower&topK=3"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    SseReader::new(res)
}

trait SseBody:
    futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin
{
}
impl<S> SseBody for S where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin
{
}

/// A SignalR connection negotiated with the cookie, handshake done.
async fn signalr_with_cookie(app: &TestApp, cookie: &Cookie) -> WsClient {
    let (status, negotiated) = status_and_json(
        same_origin(
            app,
            app.client
                .post(app.url("/api/v1/chat/ws/negotiate?negotiateVersion=1")),
            cookie,
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{negotiated}");
    let token = negotiated["connectionToken"].as_str().expect("token");
    let (res, framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws?id={token}", app.ws_base))
        .origin(app.base.as_str())
        .connect()
        .await
        .expect("the negotiated socket opens");
    assert_eq!(res.status().as_u16(), 101);
    let mut ws = WsClient { framed };
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await;
    match ws.next_frame(Duration::from_secs(5)).await {
        Some(awc::ws::Frame::Text(b)) => assert_eq!(&b[..], b"{}\x1e"),
        other => panic!("no handshake reply: {other:?}"),
    }
    ws
}

async fn sign_out(app: &TestApp, cookie: &Cookie) -> Instant {
    let res = same_origin(app, app.client.delete(app.url("/api/v1/session")), cookie)
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 204);
    Instant::now() + Duration::from_secs(1)
}

/// Reads a plain socket's frames until its answer `id` streams a token.
async fn until_streaming(ws: &mut WsClient, id: &str) {
    loop {
        let frame = ws.next_json().await;
        if frame["id"] == id && frame["token"].is_string() {
            return;
        }
        assert!(frame["done"] != true, "ended before signing out: {frame}");
    }
}

fn slow_answers() -> Options {
    Options {
        pace: Duration::from_millis(300),
        ..Options::default()
    }
}

#[actix_web::test]
async fn signing_out_closes_the_sessions_websockets_and_ends_its_sse_answers_at_once() {
    use crate::revocation::close_frame;
    let app = spawn_app_with(slow_answers()).await;
    let (_, key) = user_key(&app, "dave").await;
    app.add_document(&key, "Tower", TOWER).await;
    let (leaving, _) = sign_in(&app, &key).await;
    // The same key signed in on another browser: its session must not be touched.
    let (staying, _) = sign_in(&app, &key).await;

    let mut plain = ws_with_cookie(&app, &leaving, "").await;
    plain
        .send_json(json!({"message": "How tall is the tower?", "topK": 3, "id": "p1"}))
        .await;
    until_streaming(&mut plain, "p1").await;
    let mut signalr = signalr_with_cookie(&app, &leaving).await;
    let mut sse = sse_with_cookie(&app, &leaving).await;
    sse.next().await.expect("a first frame");
    let mut kept_ws = ws_with_cookie(&app, &staying, "").await;
    let mut kept_sse = sse_with_cookie(&app, &staying).await;
    kept_sse.next().await.expect("a first frame");
    app.wait_for_active_streams(3, Duration::from_secs(2)).await;

    let deadline = sign_out(&app, &leaving).await;

    let (_, reason) = close_frame(&mut plain, deadline).await;
    assert_eq!(reason.code, awc::ws::CloseCode::Policy);
    assert_eq!(reason.description.as_deref(), Some("signed out"));

    let (texts, reason) = close_frame(&mut signalr, deadline).await;
    let close = texts
        .iter()
        .flat_map(|t| t.split('\u{1e}'))
        .filter(|r| !r.is_empty())
        .map(|r| serde_json::from_str::<Value>(r).expect("a SignalR record"))
        .find(|r| r["type"] == 7)
        .expect("a Close message before the close frame");
    assert_eq!(close["error"], "signed out", "{close}");
    assert!(
        close.get("allowReconnect").is_none() || close["allowReconnect"] == false,
        "reconnecting cannot help: {close}"
    );
    assert_eq!(reason.code, awc::ws::CloseCode::Policy);

    let frames = actix_web::rt::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        sse.collect(),
    )
    .await
    .expect("the SSE answer ends within a second");
    let last = frames.last().expect("a final frame").json();
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["error"]["code"], "signed_out", "{last}");

    // The other session's socket and answer go on; it is still signed in.
    kept_ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(kept_ws.next_json().await["type"], "pong");
    let rest = kept_sse.collect().await;
    let last = rest.last().expect("a final frame").json();
    assert_eq!(last["done"], true, "{last}");
    assert!(last["error"].is_null(), "it ran to its end: {last}");
    assert_eq!(who(&app, &staying).await, 200);
    assert_eq!(who(&app, &leaving).await, 401);
}

#[actix_web::test]
async fn a_ticket_minted_with_a_session_opens_nothing_after_its_sign_out() {
    let app = spawn_app_with(slow_answers()).await;
    let (_, key) = user_key(&app, "erin").await;
    app.add_document(&key, "Tower", TOWER).await;
    let (cookie, _) = sign_in(&app, &key).await;
    let ticket = |app: &TestApp, cookie: &Cookie| {
        let req = same_origin(
            app,
            app.client.post(app.url("/api/v1/stream-tickets")),
            cookie,
        );
        async move {
            let (status, body) = status_and_json(req, Some(json!({}))).await;
            assert_eq!(status, 201, "{body}");
            body["ticket"].as_str().expect("ticket").to_owned()
        }
    };
    let for_ws = ticket(&app, &cookie).await;
    let for_sse = ticket(&app, &cookie).await;
    let deadline = sign_out(&app, &cookie).await;

    // The ticket itself is still unspent, but what it opens belongs to a session that is
    // over: the socket closes at once, the answer ends with the reason.
    let (res, framed) = app
        .client
        .ws(format!("{}/api/v1/chat/ws?ticket={for_ws}", app.ws_base))
        .connect()
        .await
        .expect("the socket opens");
    assert_eq!(res.status().as_u16(), 101);
    let mut ws = WsClient { framed };
    let (_, reason) = crate::revocation::close_frame(&mut ws, deadline).await;
    assert_eq!(reason.description.as_deref(), Some("signed out"));

    let res = app
        .client
        .get(app.url(&format!(
            "/api/v1/ask/stream?question=tower&ticket={for_sse}"
        )))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let frames =
        actix_web::rt::time::timeout(Duration::from_secs(2), SseReader::new(res).collect())
            .await
            .expect("the answer ends at once");
    let last = frames.last().expect("a final frame").json();
    assert_eq!(last["error"]["code"], "signed_out", "{last}");
}

#[actix_web::test]
async fn signing_out_ends_the_admin_pages_event_feed() {
    let app = spawn_app().await;
    let (cookie, _) = sign_in(&app, &app.admin_key).await;
    let res = app
        .client
        .get(app.url("/api/v1/admin/events"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 200);
    let mut feed = SseReader::new(res);
    feed.next().await.expect("a first view");
    let deadline = sign_out(&app, &cookie).await;
    actix_web::rt::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        feed.collect(),
    )
    .await
    .expect("the feed ends within a second");
}

/// Every row of the sessions table, each column as bytes, read past the hub.
async fn session_rows(db: &crate::support::test_db::TestDb) -> Vec<Vec<Vec<u8>>> {
    use sqlx::Row;
    const SELECT: &str =
        "SELECT id_hash, key_id, created_at, last_seen_at, expires_at FROM sessions";
    let columns = |id_hash: Vec<u8>, key_id: String, times: [i64; 3]| {
        let mut row = vec![id_hash, key_id.into_bytes()];
        row.extend(times.iter().map(|t| t.to_string().into_bytes()));
        row
    };
    if crate::support::test_db::on_postgres() {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("database");
        let rows = sqlx::query(SELECT).fetch_all(&pool).await.expect("rows");
        pool.close().await;
        rows.iter()
            .map(|r| columns(r.get(0), r.get(1), [r.get(2), r.get(3), r.get(4)]))
            .collect()
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("database");
        let rows = sqlx::query(SELECT).fetch_all(&pool).await.expect("rows");
        pool.close().await;
        rows.iter()
            .map(|r| columns(r.get(0), r.get(1), [r.get(2), r.get(3), r.get(4)]))
            .collect()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[actix_web::test]
async fn the_store_keeps_only_the_digest_of_the_session_id() {
    use sha2::{Digest, Sha256};
    let db = crate::support::test_db::TestDb::create().await;
    let app = spawn_app_with(Options {
        database_url: Some(db.url.clone()),
        ..Options::default()
    })
    .await;
    let (_, key) = user_key(&app, "frank").await;
    let (first, _) = sign_in(&app, &key).await;
    let (second, _) = sign_in(&app, &app.admin_key).await;
    assert_eq!(who(&app, &first).await, 200);

    let rows = session_rows(&db).await;
    assert_eq!(rows.len(), 2, "one row a session");
    for cookie in [&first, &second] {
        let raw = cookie.value().as_bytes();
        // The random part alone, in case a column kept it without the prefix.
        let random = &raw[4..];
        for row in &rows {
            for column in row {
                assert!(
                    !contains(column, raw) && !contains(column, random),
                    "the cookie's value is in the sessions table: {column:?}"
                );
            }
        }
        let digest = Sha256::digest(raw).to_vec();
        assert!(
            rows.iter().any(|row| row[0] == digest),
            "the row is found by the value's SHA-256"
        );
    }
    // Nor anywhere else in a SQLite database's files (WAL included).
    if !crate::support::test_db::on_postgres() {
        for entry in std::fs::read_dir(db.dir.path()).expect("the database folder") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("file");
            for cookie in [&first, &second] {
                assert!(!contains(&bytes, &cookie.value().as_bytes()[4..]));
            }
        }
    }
}

#[actix_web::test]
async fn a_session_from_one_hub_works_on_another_of_the_same_store_until_signed_out() {
    let db = crate::support::test_db::TestDb::create().await;
    let on_db = || Options {
        database_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = spawn_app_with(on_db()).await;
    let b = spawn_app_with(on_db()).await;
    let (_, key) = user_key(&a, "grace").await;
    a.add_document(&key, "Tower", TOWER).await;
    let (cookie, _) = sign_in(&a, &key).await;

    // Hub B has never seen this browser: the store vouches for the cookie.
    let (status, body) = status_and_json(
        b.client
            .get(b.url("/api/v1/session"))
            .insert_header(("Cookie", cookie.pair.as_str())),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keyName"], "grace");
    let (status, docs) = status_and_json(
        same_origin(&b, b.client.get(b.url("/api/v1/documents")), &cookie),
        None,
    )
    .await;
    assert_eq!(status, 200, "{docs}");
    assert_eq!(docs["documents"][0]["title"], "Tower");
    let mut ws = ws_with_cookie(&b, &cookie, "").await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");

    sign_out(&a, &cookie).await;

    assert_eq!(who(&b, &cookie).await, 401);
    let (status, _) = status_and_json(
        same_origin(&b, b.client.get(b.url("/api/v1/documents")), &cookie),
        None,
    )
    .await;
    assert_eq!(status, 401);
    match b
        .client
        .ws(format!("{}/api/v1/chat/ws", b.ws_base))
        .origin(b.base.as_str())
        .header("Cookie", cookie.pair.as_str())
        .connect()
        .await
    {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 401),
        other => panic!("expected 401, got {:?}", other.map(|(r, _)| r.status())),
    }
    let res = b
        .client
        .get(b.url("/api/v1/ask/stream?question=tower"))
        .insert_header(("Cookie", cookie.pair.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status().as_u16(), 401);
}
