//! A mock LLM upstream: an actix-web app on a random port that speaks the OpenAI chat
//! completions or the Anthropic Messages streaming format byte for byte (events split at
//! odd byte places, multi-byte characters cut in half, pings, a usage chunk), injects the
//! fault a test asks for, and counts what happened from its own side: every request, and
//! how every stream ended (completed, or the client went away after N tokens, and when).

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::{stream, Stream};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

/// How a streamed reply ends after its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The format's proper end: finish reason, usage, `[DONE]` / `message_stop`.
    Complete,
    /// The format's in-stream error (`data: {"error":…}` / `event: error` overloaded).
    ErrorEvent,
    /// Nothing more, connection kept open.
    Stall,
    /// The connection is cut (the body fails mid-chunk).
    Reset,
    /// A chunk that is not JSON.
    Malformed,
}

#[derive(Debug, Clone)]
pub enum Reply {
    Stream {
        tokens: Vec<String>,
        /// Gap between tokens.
        pace: Duration,
        ending: Ending,
        /// Output tokens reported in the usage chunk.
        usage: u64,
    },
    /// An HTTP error before streaming, in the flavor's error shape.
    Status {
        status: u16,
        retry_after: Option<&'static str>,
        message: String,
    },
}

impl Reply {
    pub fn tokens(tokens: &[&str]) -> Reply {
        Reply::Stream {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            pace: Duration::from_millis(2),
            ending: Ending::Complete,
            usage: 42,
        }
    }

    pub fn ending(tokens: &[&str], ending: Ending) -> Reply {
        match Reply::tokens(tokens) {
            Reply::Stream {
                tokens,
                pace,
                usage,
                ..
            } => Reply::Stream {
                tokens,
                pace,
                ending,
                usage,
            },
            other => other,
        }
    }

    /// `count` tokens `t0 `, `t1 `, … spaced by `pace`: an answer that takes a while.
    pub fn slow(count: usize, pace: Duration) -> Reply {
        Reply::Stream {
            tokens: (0..count).map(|i| format!("t{i} ")).collect(),
            pace,
            ending: Ending::Complete,
            usage: count as u64,
        }
    }

    pub fn status(status: u16, message: &str) -> Reply {
        Reply::Status {
            status,
            retry_after: None,
            message: message.to_owned(),
        }
    }
}

/// The tokens most tests stream: multi-byte characters, escapes and spaces included.
pub const TOKENS: [&str; 6] = ["Hé", "llo", ", 日本", " 🦀", " \"quoted\"\n", "end."];

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub peer_port: u16,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    pub version: Option<String>,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Completed,
    /// The client (the hub) went away.
    Disconnected,
    /// The mock cut the connection itself.
    Reset,
}

#[derive(Debug, Clone)]
pub struct StreamLog {
    pub tokens_sent: usize,
    /// When the last token so far went out.
    pub last_token_at: Option<Instant>,
    pub end: Option<(Instant, StreamEnd)>,
}

struct State {
    flavor: Flavor,
    script: VecDeque<Reply>,
    default: Reply,
    requests: Vec<Received>,
    streams: Vec<StreamLog>,
}

#[derive(Clone)]
pub struct MockUpstream {
    /// The base URL to configure: `…/v1` for OpenAI, the root for Anthropic.
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

impl MockUpstream {
    pub async fn start(flavor: Flavor) -> MockUpstream {
        let state = Arc::new(Mutex::new(State {
            flavor,
            script: VecDeque::new(),
            default: Reply::tokens(&TOKENS),
            requests: Vec::new(),
            streams: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock");
        let port = listener.local_addr().expect("addr").port();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/chat/completions", web::post().to(handle))
                .route("/v1/messages", web::post().to(handle))
        })
        .workers(1)
        // Notice a client that closes at once, even while the body has nothing to write.
        .h1_allow_half_closed(false)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        let base_url = match flavor {
            Flavor::OpenAi => format!("http://127.0.0.1:{port}/v1"),
            Flavor::Anthropic => format!("http://127.0.0.1:{port}"),
        };
        MockUpstream { base_url, state }
    }

    /// Queues replies for the next requests; when the queue is empty the default answers.
    pub fn push(&self, reply: Reply) {
        self.state.lock().unwrap().script.push_back(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn streams(&self) -> Vec<StreamLog> {
        self.state.lock().unwrap().streams.clone()
    }

    /// Waits until the latest stream has sent `n` tokens.
    pub async fn wait_for_tokens_sent(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            let sent = self.streams().last().map_or(0, |s| s.tokens_sent);
            if sent >= n {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the mock sent {sent} tokens, wanted {n}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the latest stream has ended; returns its log.
    pub async fn wait_for_stream_end(&self, limit: Duration) -> StreamLog {
        let start = Instant::now();
        loop {
            if let Some(log) = self.streams().last().filter(|s| s.end.is_some()) {
                return log.clone();
            }
            assert!(
                start.elapsed() < limit,
                "no upstream stream ended within {limit:?}: {:?}",
                self.streams()
            );
            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let (flavor, reply, index) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Received {
            at: Instant::now(),
            path: req.path().to_owned(),
            peer_port: req.peer_addr().map_or(0, |a| a.port()),
            authorization: header(&req, "authorization"),
            api_key: header(&req, "x-api-key"),
            version: header(&req, "anthropic-version"),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let reply = s.script.pop_front().unwrap_or_else(|| s.default.clone());
        let index = s.streams.len();
        if matches!(reply, Reply::Stream { .. }) {
            s.streams.push(StreamLog {
                tokens_sent: 0,
                last_token_at: None,
                end: None,
            });
        }
        (s.flavor, reply, index)
    };
    match reply {
        Reply::Status {
            status,
            retry_after,
            message,
        } => error_response(flavor, status, retry_after, &message),
        Reply::Stream {
            tokens,
            pace,
            ending,
            usage,
        } => {
            let plan = plan(flavor, &tokens, ending, usage);
            let body = stream_body(state.get_ref().clone(), index, plan, pace, ending);
            HttpResponse::Ok()
                .content_type("text/event-stream; charset=utf-8")
                .insert_header(("cache-control", "no-cache"))
                .streaming(body)
        }
    }
}

fn error_response(
    flavor: Flavor,
    status: u16,
    retry_after: Option<&str>,
    message: &str,
) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status).expect("status");
    let body = match flavor {
        Flavor::OpenAi => json!({"error": {
            "message": message,
            "type": if status >= 500 { "server_error" } else { "invalid_request_error" },
            "param": null,
            "code": null,
        }}),
        Flavor::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
        }
    };
    let mut res = HttpResponse::build(code);
    if let Some(after) = retry_after {
        res.insert_header(("retry-after", after));
    }
    res.json(body)
}

/// One SSE event of the plan, and whether it carries a token.
struct Piece {
    bytes: Vec<u8>,
    token: bool,
}

fn openai_chunk(choices: Value, usage: Option<Value>) -> Vec<u8> {
    let mut chunk = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1727346168,
        "model": "mock-model",
        "system_fingerprint": "fp_mock",
        "choices": choices,
    });
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    format!("data: {chunk}\n\n").into_bytes()
}

fn anthropic_event(name: &str, data: Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

fn plan(flavor: Flavor, tokens: &[String], ending: Ending, usage: u64) -> Vec<Piece> {
    let mut plan = Vec::new();
    let meta = |bytes: Vec<u8>| Piece {
        bytes,
        token: false,
    };
    match flavor {
        Flavor::OpenAi => {
            plan.push(meta(openai_chunk(
                json!([{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]),
                None,
            )));
            for (i, t) in tokens.iter().enumerate() {
                let mut bytes = format!(
                    "data: {}\n\n",
                    json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1727346168,"model":"mock-model",
                           "choices":[{"index":0,"delta":{"content":t},"logprobs":null,"finish_reason":null}],
                           "usage":null,"obfuscation":"Xy"})
                )
                .into_bytes();
                if i == 0 {
                    // An empty delta after the first token: must add nothing.
                    bytes.extend(openai_chunk(
                        json!([{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]),
                        None,
                    ));
                }
                plan.push(Piece { bytes, token: true });
            }
            match ending {
                Ending::Complete => {
                    plan.push(meta(openai_chunk(
                        json!([{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]),
                        None,
                    )));
                    plan.push(meta(openai_chunk(
                        json!([]),
                        Some(json!({"prompt_tokens":14,"completion_tokens":usage,"total_tokens":usage + 14,
                                    "completion_tokens_details":{"reasoning_tokens":0}})),
                    )));
                    plan.push(meta(b"data: [DONE]\n\n".to_vec()));
                }
                Ending::ErrorEvent => {
                    plan.push(meta(
                        b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_vec(),
                    ));
                    plan.push(meta(b"data: [DONE]\n\n".to_vec()));
                }
                Ending::Malformed => plan.push(meta(
                    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"\n\n".to_vec(),
                )),
                Ending::Stall | Ending::Reset => {}
            }
        }
        Flavor::Anthropic => {
            plan.push(meta(anthropic_event(
                "message_start",
                json!({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","content":[],
                       "model":"mock-model","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}),
            )));
            plan.push(meta(anthropic_event(
                "content_block_start",
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            )));
            plan.push(meta(
                b"event: ping\ndata: {\"type\": \"ping\"}\n\n".to_vec(),
            ));
            for (i, t) in tokens.iter().enumerate() {
                let mut bytes = anthropic_event(
                    "content_block_delta",
                    json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}),
                );
                if i == 0 {
                    bytes.extend(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
                }
                plan.push(Piece { bytes, token: true });
            }
            match ending {
                Ending::Complete => {
                    plan.push(meta(anthropic_event(
                        "content_block_stop",
                        json!({"type":"content_block_stop","index":0}),
                    )));
                    plan.push(meta(anthropic_event(
                        "message_delta",
                        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":usage}}),
                    )));
                    plan.push(meta(anthropic_event(
                        "message_stop",
                        json!({"type":"message_stop"}),
                    )));
                }
                Ending::ErrorEvent => plan.push(meta(anthropic_event(
                    "error",
                    json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
                ))),
                Ending::Malformed => plan.push(meta(
                    b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":\n\n".to_vec(),
                )),
                Ending::Stall | Ending::Reset => {}
            }
        }
    }
    plan
}

/// Splits one event at odd places: a few bytes in, mid-way (often inside a multi-byte
/// character or an escape) and between the two final newlines.
fn split(bytes: Vec<u8>) -> Vec<Bytes> {
    let len = bytes.len();
    let mut cuts = vec![5.min(len), len / 2 + 1, len.saturating_sub(1)];
    cuts.retain(|&c| c > 0 && c < len);
    cuts.sort_unstable();
    cuts.dedup();
    let bytes = Bytes::from(bytes);
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts {
        out.push(bytes.slice(from..c));
        from = c;
    }
    out.push(bytes.slice(from..));
    out
}

/// Records how the stream ended when actix drops the body: completed, reset by the mock,
/// or dropped because the client went away.
struct Guard {
    state: Arc<Mutex<State>>,
    index: usize,
    end: StreamEnd,
}

impl Guard {
    /// Ends the stream as `end`; the log is written as the guard drops.
    fn close(mut self, end: StreamEnd) {
        self.end = end;
    }

    fn token_sent(&self) {
        let log = &mut self.state.lock().unwrap().streams[self.index];
        log.tokens_sent += 1;
        log.last_token_at = Some(Instant::now());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap();
        s.streams[self.index].end = Some((Instant::now(), self.end));
    }
}

fn stream_body(
    state: Arc<Mutex<State>>,
    index: usize,
    plan: Vec<Piece>,
    pace: Duration,
    ending: Ending,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let guard = Guard {
        state,
        index,
        end: StreamEnd::Disconnected,
    };
    let items: Vec<(Bytes, bool, bool)> = plan
        .into_iter()
        .flat_map(|piece| {
            let pieces = split(piece.bytes);
            let last = pieces.len() - 1;
            pieces
                .into_iter()
                .enumerate()
                .map(move |(i, b)| (b, piece.token && i == 0, piece.token && i == last))
                .collect::<Vec<_>>()
        })
        .collect();
    stream::unfold(
        (guard, items.into_iter(), false, true),
        move |(mut guard, mut items, done, mut first_token)| async move {
            if done {
                return None;
            }
            match items.next() {
                Some((bytes, token_start, token_end)) => {
                    if token_start {
                        if !first_token && !pace.is_zero() {
                            actix_web::rt::time::sleep(pace).await;
                        }
                        first_token = false;
                    } else {
                        // Separate writes, so the hub's reads see the odd splits.
                        actix_web::rt::time::sleep(Duration::from_micros(300)).await;
                    }
                    if token_end {
                        guard.token_sent();
                    }
                    Some((Ok(bytes), (guard, items, false, first_token)))
                }
                None => match ending {
                    Ending::Stall => {
                        futures_util::future::pending::<()>().await;
                        None
                    }
                    Ending::Reset => {
                        // actix drops unflushed bytes when a body fails: let them go out.
                        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                        guard.end = StreamEnd::Reset;
                        let err = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
                        Some((Err(err), (guard, items, true, first_token)))
                    }
                    _ => {
                        guard.close(StreamEnd::Completed);
                        None
                    }
                },
            }
        },
    )
}
