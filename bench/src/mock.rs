//! A fast mock LLM upstream in the OpenAI chat-completions streaming format.
//!
//! `POST …/chat/completions` streams `tokens` chunks whose content is [`TOKEN`], the first
//! `ttft` after the request and then one every `pace`, followed by a finish chunk, a usage
//! chunk and `data: [DONE]`. Keep-alive works as with a real upstream, so a relay's
//! connection pool is exercised.
//!
//! It counts, from its own side, how each stream ended: completed, or closed by the client
//! after N tokens. It watches the socket while it waits between tokens, so a client that
//! leaves is seen at once, not at the next write. Streams whose request carries an id
//! starting with [`RECORD_PREFIX`] are also recorded one by one with the wall-clock time
//! the close was seen, which the load generator compares with the time it left.
//!
//! Control: `POST /mock/config` (a [`MockConfig`] as JSON), `GET /mock/stats`,
//! `POST /mock/reset`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Instant};

use crate::http::{self, read_request};

/// The text of every token. A marker that appears nowhere else (not in the prompt, the
/// corpus or any envelope), so clients count tokens by counting it.
pub const TOKEN: &str = "_t_ ";
/// What clients search for.
pub const TOKEN_MARK: &[u8] = b"_t_";
/// Ids the mock records stream by stream (for the cancellation figures).
pub const RECORD_PREFIX: &str = "benchleave";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MockConfig {
    pub tokens: u32,
    pub pace_us: u64,
    pub ttft_us: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            tokens: 64,
            pace_us: 10_000,
            ttft_us: 50_000,
        }
    }
}

/// One recorded stream end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamEnd {
    pub id: String,
    pub tokens: u32,
    pub completed: bool,
    /// Wall clock (µs since the Unix epoch) when the mock saw the end.
    pub at_unix_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MockStats {
    pub requests: u64,
    pub completed: u64,
    /// Streams the client closed before their end.
    pub cancelled: u64,
    pub tokens_sent: u64,
    pub recorded: Vec<StreamEnd>,
}

#[derive(Default)]
struct Shared {
    config: Mutex<MockConfig>,
    requests: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    tokens_sent: AtomicU64,
    recorded: Mutex<Vec<StreamEnd>>,
}

pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

fn token_chunk() -> Vec<u8> {
    let data = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{TOKEN}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    );
    let mut out = Vec::new();
    http::push_chunk(&mut out, data.as_bytes());
    out
}

fn tail_chunks(tokens: u32) -> Vec<u8> {
    let data = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n\
         data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock\",\"choices\":[],\"usage\":{{\"prompt_tokens\":100,\"completion_tokens\":{tokens},\"total_tokens\":{}}}}}\n\n\
         data: [DONE]\n\n",
        tokens + 100
    );
    let mut out = Vec::new();
    http::push_chunk(&mut out, data.as_bytes());
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The id a request carries: `benchid…` or `benchleave…` anywhere in its body.
fn request_id(body: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(body, b"bench")?;
    let rest = &body[at..];
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

pub async fn serve(listener: TcpListener, config: MockConfig) -> io::Result<()> {
    let shared = Arc::new(Shared {
        config: Mutex::new(config),
        ..Shared::default()
    });
    let token = Arc::new(token_chunk());
    loop {
        let (s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        let shared = shared.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _ = connection(s, shared, token).await;
        });
    }
}

async fn connection(mut s: TcpStream, sh: Arc<Shared>, token: Arc<Vec<u8>>) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let Some(req) = read_request(&mut s, &mut buf).await? else {
            return Ok(());
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", p) if p.ends_with("/chat/completions") => {
                if !stream(&mut s, &sh, &token, &req.body).await {
                    return Ok(());
                }
            }
            ("GET", "/mock/stats") => {
                let stats = MockStats {
                    requests: sh.requests.load(Relaxed),
                    completed: sh.completed.load(Relaxed),
                    cancelled: sh.cancelled.load(Relaxed),
                    tokens_sent: sh.tokens_sent.load(Relaxed),
                    recorded: sh.recorded.lock().map(|r| r.clone()).unwrap_or_default(),
                };
                let body = serde_json::to_vec(&stats).unwrap_or_default();
                s.write_all(&http::response(200, "application/json", &body))
                    .await?;
            }
            ("POST", "/mock/config") => match serde_json::from_slice::<MockConfig>(&req.body) {
                Ok(config) => {
                    if let Ok(mut c) = sh.config.lock() {
                        *c = config;
                    }
                    s.write_all(&http::response(200, "application/json", b"{}"))
                        .await?;
                }
                Err(e) => {
                    let msg = format!("{{\"error\":\"{e}\"}}");
                    s.write_all(&http::response(400, "application/json", msg.as_bytes()))
                        .await?;
                }
            },
            ("POST", "/mock/reset") => {
                for c in [&sh.requests, &sh.completed, &sh.cancelled, &sh.tokens_sent] {
                    c.store(0, Relaxed);
                }
                if let Ok(mut r) = sh.recorded.lock() {
                    r.clear();
                }
                s.write_all(&http::response(200, "application/json", b"{}"))
                    .await?;
            }
            _ => {
                s.write_all(&http::response(404, "text/plain", b"not found"))
                    .await?
            }
        }
        if req.close {
            return Ok(());
        }
    }
}

/// Streams one answer. False when the client closed the connection.
async fn stream(s: &mut TcpStream, sh: &Shared, token: &[u8], body: &[u8]) -> bool {
    let config = sh.config.lock().map(|c| *c).unwrap_or_default();
    sh.requests.fetch_add(1, Relaxed);
    let id = request_id(body);
    let start = Instant::now();
    let mut sent = 0u32;
    let completed = run_stream(s, config, token, start, &mut sent).await;
    sh.tokens_sent.fetch_add(u64::from(sent), Relaxed);
    if completed {
        sh.completed.fetch_add(1, Relaxed);
    } else {
        sh.cancelled.fetch_add(1, Relaxed);
    }
    if let Some(id) = id.filter(|id| id.starts_with(RECORD_PREFIX)) {
        let end = StreamEnd {
            id,
            tokens: sent,
            completed,
            at_unix_us: unix_us(),
        };
        if let Ok(mut r) = sh.recorded.lock() {
            r.push(end);
        }
    }
    completed
}

async fn run_stream(
    s: &mut TcpStream,
    config: MockConfig,
    token: &[u8],
    start: Instant,
    sent: &mut u32,
) -> bool {
    if s.write_all(HEAD).await.is_err() {
        return false;
    }
    let (mut rd, mut wr) = s.split();
    let mut probe = [0u8; 256];
    let ttft = Duration::from_micros(config.ttft_us);
    let pace = Duration::from_micros(config.pace_us);
    for i in 0..config.tokens {
        let due = start + ttft + pace * i;
        // Wait for the token's time while watching the socket: a read of 0 bytes (or an
        // error) is the client leaving.
        loop {
            tokio::select! {
                biased;
                r = rd.read(&mut probe) => match r {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => continue,
                },
                _ = sleep_until(due) => break,
            }
        }
        if wr.write_all(token).await.is_err() {
            return false;
        }
        *sent += 1;
    }
    wr.write_all(&tail_chunks(config.tokens)).await.is_ok()
}
