//! The log of a realistic session against the real binary at RUST_LOG=debug: one JSON
//! object a line, request and answer ids where known, and not one of the secrets used.

use std::rc::Rc;
use std::time::Duration;

use awc::ws;
use futures_util::SinkExt;
use serde_json::{json, Value};

use crate::helpers::{parse, SseReader, WsClient, TOWER};
use crate::support::hub_process::HubProcess;

async fn post(hub: &HubProcess, client: &awc::Client, path: &str, key: &str, body: Value) -> Value {
    let mut res = client
        .post(hub.url(path))
        .insert_header(("X-API-Key", key))
        .send_json(&body)
        .await
        .expect("request");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    parse(&res.body().limit(1 << 20).await.expect("body"))
}

/// Reads a plain WebSocket answer to its end; returns its answer id.
async fn ws_answer(ws: &mut WsClient) -> String {
    ws.send_json(json!({"message": "How tall is the tower?", "id": "q"}))
        .await;
    loop {
        let v = ws.next_json().await;
        if v["done"] == true {
            return v["metadata"]["answer_id"]
                .as_str()
                .expect("answer id")
                .to_owned();
        }
        assert!(v.get("error").is_none(), "{v}");
    }
}

#[actix_web::test]
async fn a_full_session_logs_ids_as_json_and_never_a_secret() {
    let hub = Rc::new(HubProcess::start(&[
        ("RUST_LOG", "debug"),
        ("RAGSTREAM_LOG_FORMAT", "json"),
        ("RAGSTREAM_OFFLINE_PACE_MS", "1"),
    ]));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let admin = hub.admin_key.clone();
    let tenant = post(
        &hub,
        &client,
        "/api/v1/admin/tenants",
        &admin,
        json!({"name": "acme"}),
    )
    .await;
    let tenant_id = tenant["id"].as_str().expect("tenant id");
    let key = post(
        &hub,
        &client,
        "/api/v1/admin/keys",
        &admin,
        json!({"tenantId": tenant_id, "name": "app"}),
    )
    .await;
    let key = key["key"].as_str().expect("key").to_owned();
    post(
        &hub,
        &client,
        "/api/v1/documents",
        &key,
        json!({"title": "Tower", "text": TOWER}),
    )
    .await;
    let mut secrets = vec![admin.clone(), key.clone()];

    // A JSON answer under the client's own request id.
    let mut res = client
        .post(hub.url("/api/v1/ask"))
        .insert_header(("X-API-Key", key.as_str()))
        .insert_header(("X-Request-Id", "trace-0042"))
        .send_json(&json!({"question": "How tall is the tower?"}))
        .await
        .expect("ask");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("x-request-id").expect("X-Request-Id"),
        "trace-0042"
    );
    let body = parse(&res.body().await.expect("body"));
    let json_answer = body["metadata"]["answer_id"].as_str().unwrap().to_owned();

    // SSE with a ticket in the URL; the minted request id comes back.
    let ticket = post(&hub, &client, "/api/v1/stream-tickets", &key, json!({})).await;
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    secrets.push(ticket.clone());
    let res = client
        .get(hub.url(&format!(
            "/api/v1/ask/stream?question=How+tall+is+the+tower&ticket={ticket}"
        )))
        .send()
        .await
        .expect("sse");
    assert_eq!(res.status().as_u16(), 200);
    let sse_request = res
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(sse_request.len(), 32, "a minted id: {sse_request}");
    SseReader::new(res).collect().await;

    // A plain WebSocket opened with a ticket.
    let ticket = post(&hub, &client, "/api/v1/stream-tickets", &key, json!({})).await;
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    secrets.push(ticket.clone());
    let (res, framed) = client
        .ws(format!("{}/api/v1/chat/ws?ticket={ticket}", hub.ws_base))
        .header("X-Request-Id", "ws-upgrade-7")
        .connect()
        .await
        .expect("websocket");
    assert_eq!(res.headers().get("x-request-id").unwrap(), "ws-upgrade-7");
    let mut plain = WsClient { framed };
    let ws_answer_id = ws_answer(&mut plain).await;
    plain
        .framed
        .send(ws::Message::Close(None))
        .await
        .expect("close sent");

    // SignalR: negotiate, then the connection token in the URL.
    let negotiated = post(
        &hub,
        &client,
        "/api/v1/chat/ws/negotiate?negotiateVersion=1",
        &key,
        json!({}),
    )
    .await;
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    let (_, framed) = client
        .ws(format!("{}/api/v1/chat/ws?id={token}", hub.ws_base))
        .connect()
        .await
        .expect("signalr socket");
    let mut signalr = WsClient { framed };
    signalr
        .send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"How tall is the tower?\",3],\"invocationId\":\"0\"}\u{1e}")
        .await;
    loop {
        match signalr.next_frame(Duration::from_secs(10)).await {
            Some(ws::Frame::Text(b)) if std::str::from_utf8(&b).unwrap().contains("\"type\":3") => {
                break
            }
            Some(_) => {}
            None => panic!("the SignalR socket ended"),
        }
    }

    // A browser session: the cookie signs requests in.
    let res = client
        .post(hub.url("/api/v1/session"))
        .insert_header(("X-API-Key", key.as_str()))
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status().as_u16(), 201);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("ragstream_session="))
        .and_then(|c| c.split(';').next())
        .expect("the session cookie")
        .to_owned();
    secrets.push(cookie.clone());
    let res = client
        .get(hub.url("/api/v1/session"))
        .insert_header(("Cookie", format!("ragstream_session={cookie}")))
        .send()
        .await
        .expect("who");
    assert_eq!(res.status().as_u16(), 200);
    // A wrong key, too: refusals must not echo what was presented.
    let wrong = "rsk_wrongwrongwrongwrongwrongwrong0000";
    secrets.push(wrong.to_owned());
    let res = client
        .get(hub.url("/api/v1/documents"))
        .insert_header(("X-API-Key", wrong))
        .send()
        .await
        .expect("wrong key");
    assert_eq!(res.status().as_u16(), 401);

    hub.signal("TERM");
    let mut hub = Rc::into_inner(hub).expect("the only handle");
    assert!(hub.wait_exit(Duration::from_secs(30)).await.success());
    let log = hub.final_output().await;

    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret in the log: {secret}\n{log}"
        );
    }
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["ts", "level", "target", "msg"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
    }
    let with = |pred: &dyn Fn(&Value) -> bool| lines.iter().filter(|l| pred(l)).count();
    // The JSON request: its access line and its answer's lines carry both ids.
    assert_eq!(
        with(&|l| l["request_id"] == "trace-0042"
            && l["msg"]
                .as_str()
                .unwrap()
                .contains("\"POST /api/v1/ask\" 200")),
        1,
        "{log}"
    );
    for (request, answer) in [
        ("trace-0042", json_answer.as_str()),
        ("ws-upgrade-7", ws_answer_id.as_str()),
    ] {
        let started = |l: &Value| {
            l["request_id"] == request
                && l["answer_id"] == answer
                && l["msg"].as_str().unwrap().starts_with("answer started")
        };
        let done = |l: &Value| {
            l["request_id"] == request
                && l["answer_id"] == answer
                && l["msg"].as_str().unwrap().starts_with("answer done")
        };
        assert_eq!(with(&started), 1, "{request}: {log}");
        assert_eq!(with(&done), 1, "{request}: {log}");
    }
    // The URL with a ticket is logged, redacted.
    assert!(
        with(&|l| l["request_id"] == sse_request.as_str()
            && l["msg"].as_str().unwrap().contains("ticket=[redacted]"))
            == 1,
        "{log}"
    );
    // A WebSocket session's lines carry the id of its upgrade request.
    let session_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["msg"].as_str().unwrap().starts_with("websocket session"))
        .collect();
    assert!(session_lines.len() >= 3, "{log}");
    assert!(
        session_lines.iter().all(|l| l["request_id"].is_string()),
        "{log}"
    );
    // Every access line has its request id.
    assert!(lines
        .iter()
        .filter(|l| l["msg"].as_str().unwrap().contains("\" 20"))
        .all(|l| l["request_id"].is_string()));
}

/// Sends a GET with no credentials but those in its URL; returns the status.
async fn get_status(client: &awc::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

#[actix_web::test]
async fn keys_tickets_and_tokens_in_a_url_are_logged_redacted_and_never_raw() {
    let hub = HubProcess::start(&[("RUST_LOG", "debug"), ("RAGSTREAM_OFFLINE_PACE_MS", "1")]);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let admin = hub.admin_key.clone();
    let key = post(
        &hub,
        &client,
        "/api/v1/admin/keys",
        &admin,
        json!({"tenantId": "default", "name": "url"}),
    )
    .await;
    let key = key["key"].as_str().expect("key").to_owned();
    post(
        &hub,
        &client,
        "/api/v1/documents",
        &key,
        json!({"title": "Tower", "text": TOWER}),
    )
    .await;
    let ticket = |client: &awc::Client| {
        let (hub, client, key) = (&hub, client.clone(), key.clone());
        async move {
            let body = post(hub, &client, "/api/v1/stream-tickets", &key, json!({})).await;
            body["ticket"].as_str().expect("ticket").to_owned()
        }
    };
    let stream = |query: &str| hub.url(&format!("/api/v1/ask/stream?question=tower&{query}"));

    // A ticket as SignalR's client sends it (`access_token`): it opens the stream.
    let by_access_token = ticket(&client).await;
    let res = client
        .get(stream(&format!("access_token={by_access_token}")))
        .send()
        .await
        .expect("sse");
    assert_eq!(res.status().as_u16(), 200);
    SseReader::new(res).collect().await;
    // Long-lived keys in a URL are refused, under either name, admin keys too.
    assert_eq!(
        get_status(&client, stream(&format!("access_token={key}"))).await,
        401
    );
    assert_eq!(
        get_status(&client, stream(&format!("ticket={key}"))).await,
        401
    );
    let admin_feed = hub.url(&format!("/api/v1/admin/events?access_token={admin}"));
    assert_eq!(get_status(&client, admin_feed).await, 401);
    // A spent ticket and secrets the hub did not mint: whatever a client puts there.
    assert_eq!(
        get_status(&client, stream(&format!("ticket={by_access_token}"))).await,
        401
    );
    let foreign = "opaqueValueNotMintedHere0123456789";
    assert_eq!(
        get_status(&client, stream(&format!("access_token={foreign}"))).await,
        401
    );
    let with_padding = "b64Secret%2Bwith%2Fescapes%3D%3D";
    assert_eq!(
        get_status(&client, stream(&format!("ticket={with_padding}"))).await,
        401
    );
    // Unescaped, as a careless client sends it: the whole value up to the next parameter.
    let raw = "rawSecret/withSlashTail:andColonTail";
    assert_eq!(
        get_status(&client, stream(&format!("access_token={raw}"))).await,
        401
    );

    hub.signal("TERM");
    let mut hub = hub;
    assert!(hub.wait_exit(Duration::from_secs(30)).await.success());
    let log = hub.final_output().await;
    for secret in [
        key.as_str(),
        admin.as_str(),
        by_access_token.as_str(),
        foreign,
        with_padding,
        // The parts a redaction that stopped early would leave.
        &key[4..],
        &by_access_token[4..],
        "withSlashTail",
        "andColonTail",
        "escapes",
    ] {
        assert!(
            !log.contains(secret),
            "a secret in the log: {secret}\n{log}"
        );
    }
    let access_lines = |marker: &str| {
        log.lines()
            .filter(|l| l.contains("/api/v1/ask/stream?") && l.contains(marker))
            .count()
    };
    // The requests are logged all the same, each with its parameter's value redacted.
    assert_eq!(access_lines("access_token=[redacted]"), 4, "{log}");
    assert_eq!(access_lines("ticket=[redacted]"), 3, "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("/api/v1/admin/events?access_token=[redacted]"))
            .count(),
        1,
        "{log}"
    );
}

/// The id of the bootstrap operator key, as the admin listing shows it.
async fn bootstrap_key_id(hub: &HubProcess, client: &awc::Client) -> String {
    let mut res = client
        .get(hub.url("/api/v1/admin/keys"))
        .insert_header(("X-API-Key", hub.admin_key.as_str()))
        .send()
        .await
        .expect("keys");
    assert_eq!(res.status().as_u16(), 200);
    let keys = parse(&res.body().limit(1 << 20).await.expect("body"));
    keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "bootstrap admin (RAGSTREAM_ADMIN_KEY)")
        .and_then(|k| k["id"].as_str())
        .expect("the bootstrap key is listed")
        .to_owned()
}

#[actix_web::test]
async fn a_revoked_bootstrap_key_is_reported_in_exactly_one_log_line_at_the_next_start() {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut first = HubProcess::start(&[("RUST_LOG", "info")]);
    let id = bootstrap_key_id(&first, &client).await;
    let path = format!("/api/v1/admin/keys/{id}");
    let admin = first.admin_key.clone();
    let status = client
        .delete(first.url(&path))
        .insert_header(("X-API-Key", admin.as_str()))
        .send()
        .await
        .expect("revoke")
        .status();
    assert_eq!(status.as_u16(), 204);
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).await.success());

    // The same database and the same configured key.
    let mut again = HubProcess::start(&[
        ("RUST_LOG", "info"),
        ("DATABASE_URL", first.database_url.as_str()),
    ]);
    assert_eq!(get_status(&client, again.url("/healthz")).await, 200);
    let res = client
        .get(again.url("/api/v1/admin/stats"))
        .insert_header(("X-API-Key", admin.as_str()))
        .send()
        .await
        .expect("stats");
    assert_eq!(res.status().as_u16(), 401, "it stays revoked");
    again.signal("TERM");
    assert!(again.wait_exit(Duration::from_secs(30)).await.success());
    let log = again.final_output().await;
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RAGSTREAM_ADMIN_KEY") || l.contains("revoked"))
        .collect();
    assert_eq!(said.len(), 1, "one line says so: {said:#?}\n{log}");
    assert!(
        said[0].contains("RAGSTREAM_ADMIN_KEY was revoked") && said[0].contains("stays revoked"),
        "{}",
        said[0]
    );
    assert!(
        !log.contains(admin.as_str()),
        "the key itself is not logged\n{log}"
    );
}

#[actix_web::test]
async fn a_generated_operator_key_is_printed_once_in_one_line_and_never_logged() {
    // No key configured, an empty store: the hub makes one and shows it once.
    let mut hub = HubProcess::start(&[("RUST_LOG", "debug"), ("RAGSTREAM_ADMIN_KEY", "")]);
    let is_key = |l: &str| l.trim().starts_with("rsk_");
    let printed = hub
        .output_when(|out| out.lines().any(is_key), Duration::from_secs(10))
        .await;
    let key = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("rsk_"))
        .unwrap_or_else(|| panic!("no generated key printed:\n{printed}"))
        .to_owned();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    for _ in 0..3 {
        let res = client
            .get(hub.url("/api/v1/admin/stats"))
            .insert_header(("X-API-Key", key.as_str()))
            .send()
            .await
            .expect("stats");
        assert_eq!(
            res.status().as_u16(),
            200,
            "the printed key is an operator's"
        );
    }
    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(30)).await.success());
    let log = hub.final_output().await;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&key[4..])).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0].trim(), key);
}
