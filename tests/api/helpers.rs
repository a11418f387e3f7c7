//! `spawn_app()`: the real application on a random port with its own database (SQLite, or
//! PostgreSQL with `RAGSTREAM_TEST_STORE=postgres`: see `support::test_db`), and small
//! clients for JSON, SSE and WebSocket.

use std::time::{Duration, Instant};

use actix_web::web;
use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ragstream::config::Settings;
use ragstream::hub::messages::GetStats;
use ragstream::hub::HubStats;
use ragstream::startup::{AppState, Application};
use serde_json::{json, Value};

use crate::support::test_db::TestDb;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

pub struct TestApp {
    pub base: String,
    pub ws_base: String,
    pub admin_key: String,
    pub state: web::Data<AppState>,
    pub client: awc::Client,
    /// The app's own database, dropped with it; `None` when the test shares one.
    _db: Option<TestDb>,
}

/// A last change to the settings, for what `Options` has no field for.
pub type EditSettings = Box<dyn FnOnce(&mut Settings)>;

/// Settings tests commonly change.
pub struct Options {
    pub pace: Duration,
    pub per_user: usize,
    pub global: usize,
    pub heartbeat: Duration,
    pub client_timeout: Duration,
    /// How long a lost client's answer waits for a resume. Zero (stop when the client
    /// leaves) unless a test is about resuming.
    pub resume_grace: Duration,
    /// A database the test made (and drops) itself, e.g. shared by two apps; by default
    /// each app gets a fresh one.
    pub database_url: Option<String>,
    /// Any other change, applied last (providers, upstream timeouts, ...).
    pub settings: Option<EditSettings>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pace: Duration::from_millis(2),
            per_user: 5,
            global: 1000,
            heartbeat: Duration::from_secs(5),
            client_timeout: Duration::from_secs(10),
            resume_grace: Duration::ZERO,
            database_url: None,
            settings: None,
        }
    }
}

/// Points the hub at a mock OpenAI upstream as its only provider.
pub fn use_mock_openai(s: &mut Settings, base_url: String) {
    s.providers = vec![ragstream::config::ProviderKind::OpenAi];
    s.openai = Some(ragstream::config::OpenAiSettings {
        api_key: ragstream::config::Secret::new("sk-mock"),
        base_url,
        model: "gpt-test".into(),
    });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let _ = env_logger::builder()
        .is_test(true)
        .parse_env(env_logger::Env::default().filter_or("TEST_LOG", "off"))
        .try_init();
    let db = match opts.database_url {
        Some(_) => None,
        None => Some(TestDb::create().await),
    };
    let database_url = match (&opts.database_url, &db) {
        (Some(url), _) => url.clone(),
        (None, Some(db)) => db.url.clone(),
        (None, None) => unreachable!("a database was made above"),
    };
    let mut settings = Settings {
        addr: "127.0.0.1:0".parse().expect("addr"),
        database_url,
        admin_key: Some(ADMIN_KEY.to_owned()),
        offline_pace: opts.pace,
        max_streams_per_user: opts.per_user,
        max_streams_global: opts.global,
        heartbeat_interval: opts.heartbeat,
        client_timeout: opts.client_timeout,
        resume_grace: opts.resume_grace,
        workers: 2,
        ..Settings::default()
    };
    if let Some(edit) = opts.settings {
        edit(&mut settings);
    }
    let app = Application::build(settings).await.expect("app builds");
    let port = app.port();
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        ws_base: format!("ws://127.0.0.1:{port}"),
        admin_key: ADMIN_KEY.to_owned(),
        state,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            // actix-web closes a keep-alive connection idle for 5 s; a test that waits longer
            // between two requests must not be handed that closed connection
            // (Connect(Disconnected)), so idle ones are dropped well before.
            .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(2)))
            .finish(),
        _db: db,
    }
}

pub const TOWER: &str = "# The Eiffel Tower\n\nThe Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower.\n\n## Construction\n\nConstruction of the tower began in January 1887 and was finished in March 1889. It was built as the centrepiece of the 1889 World's Fair.\n\n## Height\n\nThe tower is 330 metres tall, about the same height as an 81-storey building.\n";

pub const BRIDGE: &str = "# Golden Gate Bridge\n\nThe Golden Gate Bridge is a suspension bridge spanning the Golden Gate strait in California. It opened in 1937 and its main span is 1,280 metres long. The bridge is painted in a colour called International Orange.\n";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stats(&self) -> HubStats {
        self.state.hub.send(GetStats).await.expect("hub answers")
    }

    /// Polls the hub until `active_streams` is `want`; returns how long that took.
    pub async fn wait_for_active_streams(&self, want: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let stats = self.stats().await;
            if stats.active_streams == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "active streams stayed at {} (wanted {want}) for {limit:?}",
                stats.active_streams
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn post_json(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let mut res = self
            .client
            .post(self.url(path))
            .insert_header(("X-API-Key", key))
            .send_json(&body)
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        let body = res.body().limit(10 << 20).await.expect("body");
        (status, parse(&body))
    }

    pub async fn get_json(&self, path: &str, key: &str) -> (u16, Value) {
        let mut res = self
            .client
            .get(self.url(path))
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        let body = res.body().limit(10 << 20).await.expect("body");
        (status, parse(&body))
    }

    /// Sends a DELETE with the key; returns the status.
    pub async fn delete(&self, path: &str, key: &str) -> u16 {
        self.client
            .delete(self.url(path))
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("request sent")
            .status()
            .as_u16()
    }

    pub async fn add_document(&self, key: &str, title: &str, text: &str) -> String {
        let (status, body) = self
            .post_json(
                "/api/v1/documents",
                key,
                json!({"title": title, "text": text}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// A new tenant with one ordinary (non-admin) key; returns (tenant id, key).
    pub async fn new_tenant(&self, name: &str) -> (String, String) {
        let (status, tenant) = self
            .post_json(
                "/api/v1/admin/tenants",
                &self.admin_key,
                json!({"name": name}),
            )
            .await;
        assert_eq!(status, 201, "{tenant}");
        let tenant_id = tenant["id"].as_str().expect("tenant id").to_owned();
        let key = self.new_key(&tenant_id, "user").await;
        (tenant_id, key)
    }

    pub async fn new_key(&self, tenant_id: &str, name: &str) -> String {
        let (status, key) = self
            .post_json(
                "/api/v1/admin/keys",
                &self.admin_key,
                json!({"tenantId": tenant_id, "name": name}),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        key["key"].as_str().expect("key").to_owned()
    }

    /// Starts an SSE answer and returns the open response.
    pub async fn open_sse(
        &self,
        key: &str,
        question: &str,
    ) -> awc::ClientResponse<
        impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>>,
    > {
        let res = self
            .client
            .get(self.url("/api/v1/ask/stream"))
            .query(&[("question", question), ("topK", "3")])
            .expect("query")
            .insert_header(("X-API-Key", key))
            .send()
            .await
            .expect("request sent");
        res
    }

    pub async fn open_ws(&self, key: &str) -> WsClient {
        let (res, framed) = self
            .client
            .ws(format!("{}/api/v1/chat/ws", self.ws_base))
            .header("X-API-Key", key)
            .connect()
            .await
            .expect("websocket connects");
        assert_eq!(res.status().as_u16(), 101);
        WsClient { framed }
    }
}

pub fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(body)}))
}

/// One parsed SSE frame.
#[derive(Debug, Clone, Default)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
}

impl SseFrame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// Reads SSE frames from a response body as they arrive.
pub struct SseReader<S> {
    body: S,
    buf: Vec<u8>,
}

impl<S> SseReader<S>
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    pub fn new(body: S) -> Self {
        SseReader {
            body,
            buf: Vec::new(),
        }
    }

    /// The next frame, or None when the body ends.
    pub async fn next(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(raw).expect("utf-8 frame");
                let mut frame = SseFrame::default();
                let mut data = Vec::new();
                for line in text.lines() {
                    if line.starts_with(':') {
                        frame.comment = true;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        frame.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        frame.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                frame.data = data.join("\n");
                return Some(frame);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("SSE body failed: {e}"),
                None => return None,
            }
        }
    }

    /// Every remaining non-comment frame until the body ends.
    pub async fn collect(&mut self) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        while let Some(f) = self.next().await {
            if !f.comment {
                frames.push(f);
            }
        }
        frames
    }
}

pub struct WsClient {
    pub framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
}

impl WsClient {
    pub async fn send_text(&mut self, text: &str) {
        self.framed
            .send(ws::Message::Text(text.into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Next text frame as JSON, answering pings on the way; panics after 10 s of silence.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next_frame(Duration::from_secs(10)).await {
                Some(ws::Frame::Text(bytes)) => return parse(&bytes),
                Some(ws::Frame::Ping(p)) => {
                    let _ = self.framed.send(ws::Message::Pong(p)).await;
                }
                Some(ws::Frame::Pong(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn next_frame(&mut self, wait: Duration) -> Option<ws::Frame> {
        match actix_web::rt::time::timeout(wait, self.framed.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(e))) => panic!("websocket error: {e}"),
            Ok(None) => None,
            Err(_) => panic!("no websocket frame within {wait:?}"),
        }
    }

    /// Reads frames until the answer `id` ends; returns (text, terminal frame).
    pub async fn answer(&mut self, id: &str) -> (String, Value) {
        let mut text = String::new();
        loop {
            let frame = self.next_json().await;
            if frame["id"] != id {
                continue;
            }
            if let Some(t) = frame["token"].as_str() {
                text.push_str(t);
            }
            if frame["done"] == true || frame.get("error").is_some() {
                return (text, frame);
            }
        }
    }
}
