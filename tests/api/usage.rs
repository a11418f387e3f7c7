//! Usage accounting (`GET /api/v1/admin/usage`, JSON and CSV) and monthly output-token
//! budgets: what is stored equals what the client was told (`done` metadata, `/v1` usage)
//! and what the mock upstreams reported, over every transport and provider; grouping,
//! role scoping, budgets that refuse new answers while running ones finish, and accounting
//! switched off.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ragstream::config::{AnthropicSettings, OpenAiSettings, ProviderKind, Secret};

use crate::helpers::{spawn_app, spawn_app_with, Options, SseReader, TestApp, TOWER};
use crate::signalr::{handshake, records_until};
use crate::support::mock_upstream::{Ending, Flavor, MockUpstream, Reply};

const QUESTION: &str = "How tall is the Eiffel Tower?";

/// The report for `query`, as `key` sees it.
async fn report(app: &TestApp, key: &str, query: &str) -> (u16, Value) {
    app.get_json(&format!("/api/v1/admin/usage?{query}"), key)
        .await
}

/// Polls the report until its totals count `answers`: the writer's own once-a-second batch,
/// no flush asked for.
async fn report_with(app: &TestApp, query: &str, answers: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = report(app, &app.admin_key, query).await;
        assert_eq!(status, 200, "{body}");
        if body["totals"]["answers"] == answers {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the report never counted {answers} answers: {body}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every answer released and its record written.
async fn settled(app: &TestApp) {
    app.wait_for_active_streams(0, Duration::from_secs(5)).await;
    assert!(app.state.usage.flush(Duration::from_secs(5)).await);
}

fn row<'a>(body: &'a Value, field: &str, value: &str) -> &'a Value {
    body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[field] == value)
        .unwrap_or_else(|| panic!("no row with {field} = {value}: {body}"))
}

async fn sse_metadata(app: &TestApp, key: &str, params: &[(&str, &str)]) -> Value {
    let res = app
        .client
        .get(app.url("/api/v1/ask/stream"))
        .query(&params)
        .expect("query")
        .insert_header(("X-API-Key", key))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    let end = frames.last().expect("a final frame").json();
    assert_eq!(end["done"], true, "{end}");
    end["metadata"].clone()
}

async fn v1_completion(app: &TestApp, key: &str) -> (u16, Value) {
    let mut res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send_json(
            &json!({"model": "ragstream", "messages": [{"role": "user", "content": QUESTION}]}),
        )
        .await
        .expect("sent");
    let status = res.status().as_u16();
    let body = res.body().limit(1 << 20).await.expect("body");
    (status, crate::helpers::parse(&body))
}

async fn signalr_metadata(app: &TestApp, key: &str) -> Value {
    let mut ws = app.open_ws(key).await;
    handshake(&mut ws).await;
    ws.send_text(&format!(
        "{{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"{QUESTION}\",3],\"invocationId\":\"0\"}}\u{1e}"
    ))
    .await;
    let records = records_until(&mut ws, |v| v["type"] == 3).await;
    records
        .iter()
        .find(|r| r["target"] == "StreamComplete")
        .map(|r| r["arguments"][0].clone())
        .unwrap_or_else(|| panic!("no StreamComplete: {records:?}"))
}

/// The stored row of one answer equals its `done` metadata.
fn assert_row_is(row: &Value, meta: &Value) {
    assert_eq!(row["answers"], 1, "{row}");
    assert_eq!(row["provider"], meta["provider"], "{row} {meta}");
    assert_eq!(row["model"], meta["model"], "{row} {meta}");
    assert_eq!(row["outputTokens"], meta["tokens"], "{row} {meta}");
    assert_eq!(row["inputTokens"], meta["input_tokens"], "{row} {meta}");
    assert_eq!(row["ttftMsAvg"], meta["ttft_ms"], "{row} {meta}");
    assert_eq!(row["durationMsAvg"], meta["elapsed_ms"], "{row} {meta}");
    let estimated = i64::from(meta["input_tokens_estimated"] == true);
    assert_eq!(row["inputTokensEstimated"], estimated, "{row} {meta}");
    assert_eq!((&row["errors"], &row["cancelled"]), (&json!(0), &json!(0)));
}

#[actix_web::test]
async fn usage_over_every_transport_is_what_the_done_metadata_said() {
    let app = spawn_app().await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    let key = app.admin_key.clone();

    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            &key,
            json!({"question": QUESTION, "topK": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let json_meta = body["metadata"].clone();
    let sse_meta = sse_metadata(&app, &key, &[("question", QUESTION), ("topK", "3")]).await;
    let mut ws = app.open_ws(&key).await;
    ws.send_json(json!({"message": QUESTION, "topK": 3, "id": "c1"}))
        .await;
    let (_, end) = ws.answer("c1").await;
    let ws_meta = end["metadata"].clone();
    let signalr_meta = signalr_metadata(&app, &key).await;
    let (status, v1) = v1_completion(&app, &key).await;
    assert_eq!(status, 200, "{v1}");

    // The offline provider reports its output count; the input is the hub's estimate, and
    // /v1 reports the same estimate as prompt_tokens instead of 0.
    assert_eq!(json_meta["input_tokens_estimated"], true);
    assert!(
        json_meta["input_tokens"].as_u64().unwrap() > 20,
        "{json_meta}"
    );
    assert_eq!(
        v1["usage"]["prompt_tokens"], json_meta["input_tokens"],
        "{v1}"
    );
    assert_eq!(
        v1["usage"]["total_tokens"],
        v1["usage"]["prompt_tokens"].as_u64().unwrap()
            + v1["usage"]["completion_tokens"].as_u64().unwrap()
    );

    let body = report_with(&app, "groupBy=transport,provider,model", 5).await;
    assert_eq!(body["groupBy"], json!(["transport", "provider", "model"]));
    assert_eq!(body["rows"].as_array().unwrap().len(), 5, "{body}");
    assert_row_is(row(&body, "transport", "json"), &json_meta);
    assert_row_is(row(&body, "transport", "sse"), &sse_meta);
    assert_row_is(row(&body, "transport", "ws"), &ws_meta);
    assert_row_is(row(&body, "transport", "signalr"), &signalr_meta);
    let openai = row(&body, "transport", "openai");
    assert_eq!(openai["inputTokens"], v1["usage"]["prompt_tokens"]);
    assert_eq!(openai["outputTokens"], v1["usage"]["completion_tokens"]);
    assert_eq!(openai["answers"], 1);
    for r in body["rows"].as_array().unwrap() {
        assert_eq!(
            r["outputTokensCounted"], 0,
            "offline reports its count: {r}"
        );
    }
    let sum = |field: &str| -> u64 {
        [&json_meta, &sse_meta, &ws_meta, &signalr_meta]
            .iter()
            .map(|m| m[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        body["totals"]["outputTokens"].as_u64().unwrap(),
        sum("tokens") + v1["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        body["totals"]["inputTokens"].as_u64().unwrap(),
        sum("input_tokens") + v1["usage"]["prompt_tokens"].as_u64().unwrap()
    );
}

async fn spawn_with_mocks() -> (TestApp, MockUpstream, MockUpstream) {
    let openai = MockUpstream::start(Flavor::OpenAi).await;
    let anthropic = MockUpstream::start(Flavor::Anthropic).await;
    let (openai_url, anthropic_url) = (openai.base_url.clone(), anthropic.base_url.clone());
    let app = spawn_app_with(Options {
        settings: Some(Box::new(move |s| {
            s.providers = vec![ProviderKind::OpenAi, ProviderKind::Anthropic];
            s.openai = Some(OpenAiSettings {
                api_key: Secret::new("sk-test-openai-0123456789"),
                base_url: openai_url,
                model: "gpt-test".into(),
            });
            s.anthropic = Some(AnthropicSettings {
                api_key: Secret::new("sk-ant-test-0123456789"),
                base_url: anthropic_url,
                model: "claude-test".into(),
                max_tokens: 256,
            });
            s.upstream.max_retries = 0;
        })),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;
    (app, openai, anthropic)
}

#[actix_web::test]
async fn the_mock_upstreams_own_counts_are_stored_and_told() {
    let (app, openai, anthropic) = spawn_with_mocks().await;
    openai.push(Reply::Stream {
        tokens: vec!["Three".into(), " hundred".into(), " metres".into()],
        pace: Duration::from_millis(2),
        ending: Ending::Complete,
        usage: 57,
    });
    anthropic.push(Reply::Stream {
        tokens: vec!["330".into(), " m".into()],
        pace: Duration::from_millis(2),
        ending: Ending::Complete,
        usage: 23,
    });
    let key = app.admin_key.clone();

    let openai_meta = sse_metadata(&app, &key, &[("question", QUESTION)]).await;
    let (status, body) = app
        .post_json(
            "/api/v1/ask",
            &key,
            json!({"question": QUESTION, "provider": "anthropic"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let anthropic_meta = body["metadata"].clone();
    // The mocks' usage: OpenAI's final usage chunk (prompt_tokens 14), Anthropic's
    // message_start (input_tokens 11) and message_delta (output_tokens).
    assert_eq!(
        (&openai_meta["tokens"], &openai_meta["input_tokens"]),
        (&json!(57), &json!(14))
    );
    assert_eq!(openai_meta["input_tokens_estimated"], false);
    assert_eq!(
        (&anthropic_meta["tokens"], &anthropic_meta["input_tokens"]),
        (&json!(23), &json!(11))
    );

    // An upstream error mid-answer: stored as an error, with what it had streamed.
    openai.push(Reply::ending(&["a", "b"], Ending::ErrorEvent));
    let (status, failed) = app
        .post_json("/api/v1/ask", &key, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 502, "{failed}");
    settled(&app).await;

    let (status, body) = report(&app, &key, "groupBy=provider,model,transport").await;
    assert_eq!(status, 200, "{body}");
    let sse = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "openai" && r["transport"] == "sse")
        .expect("the openai sse row");
    assert_row_is(sse, &openai_meta);
    assert_eq!(sse["inputTokensEstimated"], 0);
    assert_eq!(sse["outputTokensCounted"], 0);
    let anth = row(&body, "provider", "anthropic");
    assert_row_is(anth, &anthropic_meta);

    let broken = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "openai" && r["transport"] == "json")
        .expect("the failed answer's row");
    assert_eq!(broken["errors"], 1, "{broken}");
    // No usage chunk came: the output is the hub's count of the deltas it relayed, and the
    // input its estimate.
    assert_eq!(broken["outputTokens"], failed["metadata"]["tokens"]);
    assert_eq!(broken["outputTokens"], 2);
    assert_eq!(broken["outputTokensCounted"], 1);
    assert_eq!(broken["inputTokensEstimated"], 1);
    assert_eq!(broken["inputTokens"], failed["metadata"]["input_tokens"]);
}

#[actix_web::test]
async fn usage_groups_by_tenant_key_and_day_and_exports_csv() {
    let app = spawn_app().await;
    let (tenant_a, user_a) = app.new_tenant("usage-a").await;
    let (tenant_b, user_b) = app.new_tenant("usage-b").await;
    let second_a = app.new_key(&tenant_a, "second").await;
    for key in [&user_a, &user_b, &second_a, &user_a] {
        let (status, body) = app
            .post_json("/api/v1/ask", key, json!({"question": QUESTION}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    settled(&app).await;

    let (status, body) = report(&app, &app.admin_key, "groupBy=tenant,key,day").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["answers"], 4, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{body}");
    let of_tenant = |t: &str| -> i64 {
        rows.iter()
            .filter(|r| r["tenantId"] == t)
            .map(|r| r["answers"].as_i64().unwrap())
            .sum()
    };
    assert_eq!((of_tenant(&tenant_a), of_tenant(&tenant_b)), (3, 1));
    let today = rows[0]["day"].as_str().unwrap().to_owned();
    assert_eq!(today.len(), 10);
    assert!(rows.iter().all(|r| r["day"] == today.as_str()));
    assert!(rows.iter().all(|r| r.get("provider").is_none()));

    // A range that ends before today has nothing; one day is `from` = `to`.
    let (_, empty) = report(
        &app,
        &app.admin_key,
        "from=2020-01-01&to=2020-01-31&groupBy=tenant",
    )
    .await;
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["totals"]["answers"], 0);
    let (_, one_day) = report(
        &app,
        &app.admin_key,
        &format!("from={today}&to={today}&groupBy=day&tenantId={tenant_a}"),
    )
    .await;
    assert_eq!(one_day["totals"]["answers"], 3, "{one_day}");
    assert_eq!(one_day["tenantId"], tenant_a.as_str());

    // The same report as CSV.
    let mut res = app
        .client
        .get(app.url("/api/v1/admin/usage?groupBy=tenant,key&format=csv"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/csv"));
    let disposition = header("content-disposition");
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(disposition.contains(".csv"), "{disposition}");
    let csv = String::from_utf8(res.body().await.expect("body").to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "tenantId,keyId,answers,inputTokens,outputTokens,inputTokensEstimated,\
         outputTokensCounted,errors,cancelled,detached,resumed,ttftMsAvg,durationMsAvg"
    );
    assert_eq!(lines.len(), 1 + 3, "{csv}");
    let answers: i64 = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(answers, 4);
    let output: i64 = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(4).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(json!(output), body["totals"]["outputTokens"]);

    // Bad parameters: 400 with the error shape, the code naming the rule.
    for (query, code) in [
        ("from=2024-02-30", "invalid_date"),
        ("to=yesterday", "invalid_date"),
        ("from=2024-03-02&to=2024-03-01", "invalid_range"),
        ("groupBy=tenant,colour", "invalid_group_by"),
        ("groupBy=day,day", "invalid_group_by"),
        ("format=xml", "invalid_format"),
    ] {
        let (status, body) = report(&app, &app.admin_key, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
}

#[actix_web::test]
async fn a_tenant_admin_sees_its_own_tenants_usage_only() {
    let app = spawn_app().await;
    let (tenant_a, user_a) = app.new_tenant("scope-a").await;
    let (tenant_b, user_b) = app.new_tenant("scope-b").await;
    let (status, admin_a) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": tenant_a, "name": "admin a", "admin": true}),
        )
        .await;
    assert_eq!(status, 201, "{admin_a}");
    let admin_a = admin_a["key"].as_str().unwrap().to_owned();
    for key in [&user_a, &user_b, &user_b] {
        let (status, _) = app
            .post_json("/api/v1/ask", key, json!({"question": QUESTION}))
            .await;
        assert_eq!(status, 200);
    }
    settled(&app).await;

    let (status, own) = report(&app, &admin_a, "groupBy=tenant").await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["rows"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["rows"][0]["tenantId"], tenant_a.as_str());
    assert_eq!(own["totals"]["answers"], 1);
    // Another tenant is as unknown as a tenant that does not exist.
    let (status, body) = report(&app, &admin_a, &format!("tenantId={tenant_b}")).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    // Not an admin key.
    let (status, body) = report(&app, &user_a, "").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    // The operator sees every tenant, or the one asked for.
    let (_, all) = report(&app, &app.admin_key, "groupBy=tenant").await;
    assert_eq!(all["totals"]["answers"], 3);
    let (_, only_b) = report(&app, &app.admin_key, &format!("tenantId={tenant_b}")).await;
    assert_eq!(only_b["totals"]["answers"], 2);
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    let mut res = app
        .client
        .patch(app.url(path))
        .insert_header(("X-API-Key", key))
        .send_json(&body)
        .await
        .expect("sent");
    let status = res.status().as_u16();
    let bytes = res.body().await.expect("body");
    (status, crate::helpers::parse(&bytes))
}

async fn set_budget(app: &TestApp, path: &str, budget: Value) {
    let (status, body) = patch(
        app,
        path,
        &app.admin_key,
        json!({"monthlyOutputTokenBudget": budget}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["monthlyOutputTokenBudget"], budget, "{body}");
}

fn assert_budget_exceeded(status: u16, body: &Value, scope: &str) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(scope) && message.contains("budget"),
        "{message}"
    );
}

#[actix_web::test]
async fn over_its_budget_a_tenant_gets_budget_exceeded_everywhere_and_a_running_answer_finishes() {
    let app = spawn_app_with(Options {
        pace: Duration::from_millis(20),
        ..Options::default()
    })
    .await;
    let (tenant, user) = app.new_tenant("budgeted").await;
    app.add_document(&user, "Tower", TOWER).await;
    let (_, other_user) = app.new_tenant("unbudgeted").await;

    // A first answer, stored, before any budget: the budget set next counts it.
    let (status, first) = app
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 200, "{first}");
    let used = first["metadata"]["tokens"].as_u64().unwrap();
    assert!(used > 2);
    settled(&app).await;

    // A long answer is running when the budget is set to less than was used.
    let running = app.open_sse(&user, QUESTION).await;
    assert_eq!(running.status().as_u16(), 200);
    let mut running = SseReader::new(running);
    let first_frame = running.next().await.expect("a first frame");
    assert!(!first_frame.data.is_empty());
    set_budget(
        &app,
        &format!("/api/v1/admin/tenants/{tenant}"),
        json!(used - 1),
    )
    .await;
    assert_eq!(
        app.stats().await.active_streams,
        1,
        "the long answer runs on"
    );

    // JSON
    let (status, body) = app
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_budget_exceeded(status, &body, "tenant");
    // SSE: a plain HTTP error before the stream, with Retry-After.
    let mut res = app.open_sse(&user, QUESTION).await;
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let body = crate::helpers::parse(&res.body().await.unwrap());
    assert_budget_exceeded(429, &body, "tenant");
    // Plain WebSocket: an error frame.
    let mut ws = app.open_ws(&user).await;
    ws.send_json(json!({"message": QUESTION, "id": "w1"})).await;
    let (_, end) = ws.answer("w1").await;
    assert_eq!(end["error"]["code"], "budget_exceeded", "{end}");
    // SignalR: an error completion.
    let mut sr = app.open_ws(&user).await;
    handshake(&mut sr).await;
    sr.send_text(
        "{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"tower\",2],\"invocationId\":\"0\"}\u{1e}",
    )
    .await;
    let records = records_until(&mut sr, |v| v["type"] == 3).await;
    let completion = records.last().unwrap();
    assert!(
        completion["error"].as_str().unwrap().contains("budget"),
        "{completion}"
    );
    // /v1: OpenAI's error shape.
    let (status, body) = v1_completion(&app, &user).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    // The answer that was running finishes.
    let frames = running.collect().await;
    let end = frames.last().expect("an end").json();
    assert_eq!(end["done"], true, "{end}");

    // Another tenant is not concerned; removing the budget lets the tenant ask again.
    let (status, _) = app
        .post_json("/api/v1/ask", &other_user, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 200);
    set_budget(
        &app,
        &format!("/api/v1/admin/tenants/{tenant}"),
        Value::Null,
    )
    .await;
    let (status, body) = app
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn a_key_budget_is_counted_as_answers_end_and_spares_the_tenants_other_keys() {
    let app = spawn_app().await;
    let (tenant, user) = app.new_tenant("key-budget").await;
    let other = app.new_key(&tenant, "other").await;
    let (_, keys) = app
        .get_json(
            &format!("/api/v1/admin/keys?tenantId={tenant}"),
            &app.admin_key,
        )
        .await;
    let key_id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "user")
        .expect("the user key")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(keys["keys"][0]["monthlyOutputTokenBudget"].is_null());
    // One token: the first answer may start (nothing used yet), the next may not.
    set_budget(&app, &format!("/api/v1/admin/keys/{key_id}"), json!(1)).await;
    let (status, body) = app
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_active_streams(0, Duration::from_secs(5)).await;
    let (status, body) = app
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_budget_exceeded(status, &body, "API key");
    let (status, _) = app
        .post_json("/api/v1/ask", &other, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 200);

    // Who may set what, and what a budget may be.
    let (status, admin) = app
        .post_json(
            "/api/v1/admin/keys",
            &app.admin_key,
            json!({"tenantId": tenant, "name": "tenant admin", "admin": true}),
        )
        .await;
    assert_eq!(status, 201);
    let admin = admin["key"].as_str().unwrap().to_owned();
    let (status, body) = patch(
        &app,
        &format!("/api/v1/admin/keys/{key_id}"),
        &admin,
        json!({"monthlyOutputTokenBudget": 500}),
    )
    .await;
    assert_eq!(status, 200, "a tenant admin sets its keys' budgets: {body}");
    let (status, body) = patch(
        &app,
        &format!("/api/v1/admin/tenants/{tenant}"),
        &admin,
        json!({"monthlyOutputTokenBudget": 500}),
    )
    .await;
    assert_eq!(status, 403, "but not its tenant's: {body}");
    let (status, _) = patch(
        &app,
        "/api/v1/admin/tenants/default",
        &admin,
        json!({"monthlyOutputTokenBudget": 5}),
    )
    .await;
    assert_eq!(status, 404, "another tenant is unknown to it");
    for (body, code) in [
        (json!({"monthlyOutputTokenBudget": -1}), "invalid_budget"),
        (json!({}), "invalid_request"),
        (
            json!({"monthlyOutputTokenBudget": "ten"}),
            "invalid_request",
        ),
        (json!({"budget": 5}), "invalid_request"),
    ] {
        let (status, reply) = patch(
            &app,
            &format!("/api/v1/admin/keys/{key_id}"),
            &app.admin_key,
            body.clone(),
        )
        .await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{body}: {reply}");
    }
    let (status, _) = patch(
        &app,
        "/api/v1/admin/keys/no-such-key",
        &app.admin_key,
        json!({"monthlyOutputTokenBudget": 5}),
    )
    .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn with_accounting_off_nothing_is_written_and_no_budget_refuses() {
    let app = spawn_app_with(Options {
        settings: Some(Box::new(|s| s.usage_accounting = false)),
        ..Options::default()
    })
    .await;
    let (tenant, user) = app.new_tenant("unaccounted").await;
    set_budget(&app, &format!("/api/v1/admin/tenants/{tenant}"), json!(0)).await;
    for _ in 0..2 {
        let (status, body) = app
            .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    settled(&app).await;
    let (status, body) = report(&app, &app.admin_key, "groupBy=tenant").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["answers"], 0, "{body}");
    assert_eq!(body["rows"], json!([]));
}

/// Polls the admin view until the one running answer is detached.
async fn wait_until_detached(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, streams) = app.get_json("/api/v1/admin/streams", &app.admin_key).await;
        if streams["streams"][0]["detached"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "never detached: {streams}");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn detached_resumed_and_cancelled_answers_are_counted_so() {
    let mock = MockUpstream::start(Flavor::OpenAi).await;
    let url = mock.base_url.clone();
    let app = spawn_app_with(Options {
        resume_grace: Duration::from_secs(10),
        settings: Some(Box::new(move |s| crate::helpers::use_mock_openai(s, url))),
        ..Options::default()
    })
    .await;
    app.add_document(&app.admin_key, "Tower", TOWER).await;

    // SSE: the connection is lost mid-answer, and a client comes back for it.
    mock.push(Reply::slow(40, Duration::from_millis(10)));
    let res = app.open_sse(&app.admin_key, QUESTION).await;
    let answer_id = res
        .headers()
        .get("x-answer-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Answer-Id")
        .to_owned();
    let mut reader = SseReader::new(res);
    assert_eq!(
        reader.next().await.unwrap().event.as_deref(),
        Some("sources")
    );
    assert!(reader.next().await.unwrap().json()["token"].is_string());
    drop(reader);
    wait_until_detached(&app).await;
    let res = app
        .client
        .get(app.url(&format!("/api/v1/answers/{answer_id}/stream?after=0")))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let frames = SseReader::new(res).collect().await;
    let end = frames.last().unwrap().json();
    assert_eq!(end["done"], true, "{end}");

    // WebSocket: the client cancels after its first token.
    mock.push(Reply::slow(400, Duration::from_millis(10)));
    let mut ws = app.open_ws(&app.admin_key).await;
    ws.send_json(json!({"message": QUESTION, "id": "c2"})).await;
    loop {
        let frame = ws.next_json().await;
        if frame["token"].is_string() {
            break;
        }
    }
    ws.send_json(json!({"type": "cancel", "id": "c2"})).await;
    let (_, end) = ws.answer("c2").await;
    assert_eq!(end["error"]["code"], "cancelled", "{end}");
    settled(&app).await;

    let (_, body) = report(&app, &app.admin_key, "groupBy=transport").await;
    let sse = row(&body, "transport", "sse");
    assert_eq!(
        (&sse["detached"], &sse["resumed"], &sse["cancelled"]),
        (&json!(1), &json!(1), &json!(0)),
        "{sse}"
    );
    assert_eq!(sse["outputTokens"], end_tokens(&frames), "{sse}");
    let ws_row = row(&body, "transport", "ws");
    assert_eq!(
        (&ws_row["cancelled"], &ws_row["detached"], &ws_row["errors"]),
        (&json!(1), &json!(0), &json!(0)),
        "{ws_row}"
    );
    // Cut before the upstream's usage chunk: the hub's count of what it relayed.
    assert_eq!(ws_row["outputTokensCounted"], 1, "{ws_row}");
    assert!(ws_row["outputTokens"].as_u64().unwrap() >= 1, "{ws_row}");
}

fn end_tokens(frames: &[crate::helpers::SseFrame]) -> Value {
    frames.last().unwrap().json()["metadata"]["tokens"].clone()
}

#[actix_web::test]
async fn a_hub_sees_another_hubs_usage_against_a_budget_through_the_store() {
    let db = crate::support::test_db::TestDb::create().await;
    let options = || Options {
        database_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = spawn_app_with(options()).await;
    let b = spawn_app_with(options()).await;
    let (tenant, user) = a.new_tenant("two-hubs").await;
    // One token: spent by the first answer, which hub B runs.
    set_budget(&a, &format!("/api/v1/admin/tenants/{tenant}"), json!(1)).await;
    assert!(a.state.usage.check_budget(&tenant, "any key").is_ok());
    let (status, body) = b
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_eq!(status, 200, "{body}");

    // Hub A runs no answer of the tenant (which would count on A itself): it learns of B's
    // from the store, within its refresh.
    let deadline = Instant::now()
        + ragstream::usage::REFRESH_EVERY
        + ragstream::usage::FLUSH_EVERY
        + Duration::from_secs(3);
    while a.state.usage.check_budget(&tenant, "any key").is_ok() {
        assert!(Instant::now() < deadline, "hub A never saw hub B's usage");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = a
        .post_json("/api/v1/ask", &user, json!({"question": QUESTION}))
        .await;
    assert_budget_exceeded(status, &body, "tenant");
}
