//! A fast mock LLM upstream in the OpenAI chat-completions streaming format.
//!
//! `POST …/chat/completions` streams `tokens` chunks whose content is [`TOKEN`] (or, when
//! `numbered`, `_t_0 `, `_t_1 `, …: the same text for every request), the first `ttft`
//! after the request and then one every `pace`, followed by a finish chunk, a usage chunk
//! and `data: [DONE]`. Keep-alive works as with a real upstream, so a relay's
//! connection pool is exercised.
//!
//! It counts, from its own side, how each stream ended: completed, or closed by the client
//! after N tokens. It watches the socket while it waits between tokens, so a client that
//! leaves is seen at once, not at the next write. Streams whose request carries an id
//! starting with [`RECORD_PREFIX`] are also recorded one by one with the wall-clock time
//! the close was seen, which the load generator compares with the time it left.
//!
//! A request whose body names a [`Fault`] (`soakfault…`, put in the question by the soak)
//! gets that fault instead of the configured answer: a reset mid-stream, an HTTP 500, a
//! stall, or a long answer of large tokens.
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
/// What names a [`Fault`] in a request body.
pub const FAULT_PREFIX: &str = "soakfault";

/// A misbehaviour of the upstream, asked for by a request (see [`Fault::marker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A TCP reset after this many tokens.
    Reset(u32),
    /// `500 Internal Server Error` with an OpenAI-shaped error body, before any token.
    Status500,
    /// Silence after this many tokens, the connection held open until the client leaves.
    Stall(u32),
    /// This many tokens of about 1 KiB each, as fast as the client takes them: enough to
    /// fill the socket buffers of a client that stops reading.
    Long(u32),
}

impl Fault {
    /// The word that asks for this fault; it must reach the upstream request's body (the
    /// hub puts the question there).
    pub fn marker(self) -> String {
        match self {
            Fault::Reset(n) => format!("{FAULT_PREFIX}reset{n}"),
            Fault::Status500 => format!("{FAULT_PREFIX}status500"),
            Fault::Stall(n) => format!("{FAULT_PREFIX}stall{n}"),
            Fault::Long(n) => format!("{FAULT_PREFIX}long{n}"),
        }
    }

    fn find(body: &[u8]) -> Option<Fault> {
        let at = memchr::memmem::find(body, FAULT_PREFIX.as_bytes())?;
        let rest = &body[at + FAULT_PREFIX.len()..];
        let letters = rest.iter().take_while(|b| b.is_ascii_lowercase()).count();
        let digits = rest[letters..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let n: u32 = std::str::from_utf8(&rest[letters..letters + digits])
            .ok()?
            .parse()
            .ok()?;
        match &rest[..letters] {
            b"reset" => Some(Fault::Reset(n)),
            b"status" if n == 500 => Some(Fault::Status500),
            b"stall" => Some(Fault::Stall(n)),
            b"long" => Some(Fault::Long(n)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MockConfig {
    pub tokens: u32,
    pub pace_us: u64,
    pub ttft_us: u64,
    /// Token `i` is `_t_<i> ` ([`numbered_token`]) instead of [`TOKEN`]: an answer's text
    /// then tells a token lost from one repeated, which identical tokens cannot.
    #[serde(default)]
    pub numbered: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            tokens: 64,
            pace_us: 10_000,
            ttft_us: 50_000,
            numbered: false,
        }
    }
}

/// The text of token `i` of a numbered answer: the marker, then its index.
pub fn numbered_token(i: u32) -> String {
    format!("{TOKEN_MARK_STR}{i} ")
}

/// The whole text of a numbered answer of `tokens` tokens: what a client must end with.
pub fn numbered_text(tokens: u32) -> String {
    (0..tokens).map(numbered_token).collect()
}

const TOKEN_MARK_STR: &str = "_t_";

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
    /// Streams in progress now: after a run, any left is an upstream the client kept open.
    #[serde(default)]
    pub active: u64,
    /// Requests that asked for a [`Fault`].
    #[serde(default)]
    pub faults: u64,
}

#[derive(Default)]
struct Shared {
    config: Mutex<MockConfig>,
    requests: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    tokens_sent: AtomicU64,
    recorded: Mutex<Vec<StreamEnd>>,
    active: AtomicU64,
    faults: AtomicU64,
}

/// A stream in progress; dropping it takes it off the count however the stream ends.
struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Relaxed);
        Active(n)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

fn token_chunk() -> Vec<u8> {
    content_chunk(TOKEN)
}

fn content_chunk(content: &str) -> Vec<u8> {
    let data = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    );
    let mut out = Vec::new();
    http::push_chunk(&mut out, data.as_bytes());
    out
}

/// A token of about 1 KiB (the marker, then filler), for [`Fault::Long`].
fn long_token_chunk() -> Vec<u8> {
    let filler = "x".repeat(1000);
    let data = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{TOKEN}{filler} \"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    );
    let mut out = Vec::new();
    http::push_chunk(&mut out, data.as_bytes());
    out
}

const ERROR_500: &[u8] =
    br#"{"error":{"message":"the mock failed on purpose","type":"server_error","code":null}}"#;

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
                    active: sh.active.load(Relaxed),
                    faults: sh.faults.load(Relaxed),
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
                for c in [
                    &sh.requests,
                    &sh.completed,
                    &sh.cancelled,
                    &sh.tokens_sent,
                    &sh.faults,
                ] {
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

/// Streams one answer. False when the connection is to be closed (the client closed it,
/// or a fault reset it).
async fn stream(s: &mut TcpStream, sh: &Shared, token: &[u8], body: &[u8]) -> bool {
    let mut config = sh.config.lock().map(|c| *c).unwrap_or_default();
    sh.requests.fetch_add(1, Relaxed);
    let fault = Fault::find(body);
    if fault.is_some() {
        sh.faults.fetch_add(1, Relaxed);
    }
    let _active = Active::new(&sh.active);
    let id = request_id(body);
    let start = Instant::now();
    let mut sent = 0u32;
    let long;
    let mut token = token;
    let mut stop = None;
    match fault {
        Some(Fault::Status500) => {
            return s
                .write_all(&http::response(500, "application/json", ERROR_500))
                .await
                .is_ok();
        }
        Some(Fault::Reset(n)) => stop = Some((n, true)),
        Some(Fault::Stall(n)) => stop = Some((n, false)),
        Some(Fault::Long(n)) => {
            long = long_token_chunk();
            token = &long;
            config.tokens = n;
            config.pace_us = 0;
            config.numbered = false;
        }
        None => {}
    }
    if let Some((n, _)) = stop {
        config.tokens = config.tokens.max(n + 1);
    }
    let completed = run_stream(s, config, token, start, &mut sent, stop.map(|(n, _)| n)).await;
    match stop {
        Some((_, true)) => {
            // A reset, not a FIN: what a crashed upstream or a dropped proxy looks like.
            let _ = s.set_zero_linger();
            sh.tokens_sent.fetch_add(u64::from(sent), Relaxed);
            sh.cancelled.fetch_add(1, Relaxed);
            return false;
        }
        Some((_, false)) if completed => {
            // Stalled: say nothing until the client gives up and closes.
            let mut probe = [0u8; 256];
            let wait = async {
                loop {
                    match s.read(&mut probe).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(600), wait).await;
            sh.tokens_sent.fetch_add(u64::from(sent), Relaxed);
            sh.cancelled.fetch_add(1, Relaxed);
            return false;
        }
        _ => {}
    }
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
    stop_after: Option<u32>,
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
        if stop_after == Some(i) {
            // The caller resets or stalls from here; true: the client is still there.
            return true;
        }
        let written = if config.numbered {
            wr.write_all(&content_chunk(&numbered_token(i))).await
        } else {
            wr.write_all(token).await
        };
        if written.is_err() {
            return false;
        }
        *sent += 1;
    }
    wr.write_all(&tail_chunks(config.tokens)).await.is_ok()
}
