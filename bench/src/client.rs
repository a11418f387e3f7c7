//! The load generator's clients: OpenAI-format streams (straight at the mock, or through
//! the bare relay), the hub's Server-Sent Events, plain WebSocket and SignalR.
//!
//! Each simulated user is one task with one connection, asking one question after another
//! (a closed loop). Tokens are counted by the mock's marker, so a hub that coalesces several
//! tokens into one frame is counted right. Timings are taken when bytes come off the
//! socket: time to first token from the moment the request was written, and the delay
//! between successive tokens of an answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::http::{self, parse_response_head, Chunked, ResponseHead};
use crate::mock::{unix_us, TOKEN_MARK};
use crate::resume::TextCheck;

static TOKEN_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(TOKEN_MARK));
static EVENT_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    /// The load generator straight at the mock (OpenAI format).
    Direct,
    /// Through the bare pass-through relay (OpenAI format).
    Relay,
    /// Through the same relay built on actix-web + awc (OpenAI format).
    ActixRelay,
    /// The hub's `GET /api/v1/ask/stream`.
    HubSse,
    /// The hub's WebSocket, plain JSON protocol.
    HubWs,
    /// The hub's WebSocket, SignalR JSON hub protocol (`AskStream`).
    HubSignalR,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Relay => "relay",
            Target::ActixRelay => "actix-relay",
            Target::HubSse => "hub-sse",
            Target::HubWs => "hub-ws",
            Target::HubSignalR => "hub-signalr",
        }
    }

    pub fn is_hub(self) -> bool {
        matches!(self, Target::HubSse | Target::HubWs | Target::HubSignalR)
    }
}

/// The measurement window: samples outside it are not kept.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    /// A window that keeps everything (for one-shot scenarios).
    pub fn always() -> Window {
        let now = Instant::now();
        Window {
            start: now - Duration::from_secs(3600),
            end: now + Duration::from_secs(365 * 24 * 3600),
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Time to first token of answers started in the window, µs.
    pub ttft_us: Vec<u32>,
    /// Delay between successive tokens received in the window, µs.
    pub itl_us: Vec<u32>,
    /// Tokens received in the window.
    pub tokens: u64,
    /// Answers completed in the window.
    pub answers: u64,
    /// Answers completed at any time.
    pub answers_all: u64,
    pub errors: BTreeMap<String, u64>,
    /// Clients that left on purpose: (request id, wall clock µs when they closed the
    /// connection or sent the stop).
    pub leaves: Vec<(String, u64)>,
    /// Frames received in the window that carried at least one token: with `tokens`, how
    /// much the hub merged (a frame per token when it did not).
    pub frames: u64,
    /// Answers checked against the mock's numbered tokens (see [`Check`]).
    pub text: TextCheck,
}

impl Stats {
    pub fn merge(&mut self, o: Stats) {
        self.ttft_us.extend(o.ttft_us);
        self.itl_us.extend(o.itl_us);
        self.tokens += o.tokens;
        self.answers += o.answers;
        self.answers_all += o.answers_all;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.leaves.extend(o.leaves);
        self.frames += o.frames;
        self.text.merge(o.text);
    }

    pub(crate) fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

/// Answers in flight across all tasks of a load, and the most seen at once.
#[derive(Debug, Default)]
pub struct Gauge {
    pub active: AtomicUsize,
    pub peak: AtomicUsize,
}

/// What every task of a load does.
#[derive(Debug, Clone)]
pub struct Spec {
    pub target: Target,
    pub addr: SocketAddr,
    /// The hub's API key (unused for the OpenAI-format targets).
    pub key: String,
    /// Questions, used in turn; each gets the request id appended.
    pub questions: Arc<Vec<String>>,
    /// `benchid` for ordinary answers, `benchleave` for the ones the mock records.
    pub id_prefix: &'static str,
    /// Leave after this many tokens, as `leave` says.
    pub leave_after: Option<u32>,
    pub leave: Leave,
    /// Answers per task, then stop; `None`: until the load is stopped.
    pub answers: Option<u32>,
    pub top_k: u32,
    /// Check each answer's text against the mock's numbered tokens, and drop some
    /// connections mid-answer and resume (SSE and plain WebSocket only).
    pub check: Option<Check>,
    /// Read like a slow client.
    pub lag: Option<Lag>,
}

impl Spec {
    /// One answer after another until stopped, nobody leaving, nothing checked.
    pub fn new(target: Target, addr: SocketAddr, key: &str, questions: Arc<Vec<String>>) -> Spec {
        Spec {
            target,
            addr,
            key: key.to_owned(),
            questions,
            id_prefix: "benchid",
            leave_after: None,
            leave: Leave::Drop,
            answers: None,
            top_k: 5,
            check: None,
            lag: None,
        }
    }
}

/// How a client leaves an answer after `leave_after` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Leave {
    /// Drops the connection without a word (no WebSocket close frame, no stop): the hub
    /// detaches the answer for its grace window.
    Drop,
    /// Stops the answer explicitly: plain WebSocket `{"type":"cancel"}`, SignalR
    /// `CancelInvocation`, SSE `DELETE /api/v1/answers/{id}` (the relay: closes, its only
    /// way). The time recorded is when the stop was sent.
    Stop,
}

/// Every answer's text is compared with what the mock sent (the mock must be `numbered`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Check {
    /// Tokens per answer the mock sends.
    pub tokens: u32,
    /// Share of answers (percent) whose connection is dropped mid-answer and resumed.
    pub drop_pct: u32,
}

/// A slow reader: a narrow socket (see [`http::connect_narrow`]) read at most `read_bytes`
/// at a time, `pause` apart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lag {
    pub recv_buffer: u32,
    pub mss: u32,
    pub read_bytes: usize,
    #[serde(serialize_with = "ser_ms")]
    pub pause: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// A running load.
pub struct Load {
    tasks: Vec<JoinHandle<Stats>>,
    stop: watch::Sender<bool>,
    pub gauge: Arc<Gauge>,
}

impl Load {
    /// Starts `streams` tasks, the `i`-th after `stagger * i / streams`, so the load is
    /// steady rather than synchronised.
    pub fn start(spec: Spec, streams: usize, stagger: Duration, window: Window) -> Load {
        Load::start_on(spec, (0..streams).map(|_| None).collect(), stagger, window)
    }

    /// As [`Load::start`], one task per given connection (`None`: the task connects).
    pub fn start_on(
        spec: Spec,
        conns: Vec<Option<Conn>>,
        stagger: Duration,
        window: Window,
    ) -> Load {
        let spec = Arc::new(spec);
        let gauge = Arc::new(Gauge::default());
        let (stop, rx) = watch::channel(false);
        let n = conns.len().max(1) as u32;
        let tasks = conns
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let delay = stagger * i as u32 / n;
                tokio::spawn(task(
                    i,
                    spec.clone(),
                    conn,
                    delay,
                    window,
                    rx.clone(),
                    gauge.clone(),
                ))
            })
            .collect();
        Load { tasks, stop, gauge }
    }

    /// Stops every task (an answer in flight is dropped, not counted) and merges the stats.
    pub async fn stop(self) -> Stats {
        let _ = self.stop.send(true);
        self.join().await
    }

    /// Waits for the tasks to end by themselves (one-shot loads).
    pub async fn join(self) -> Stats {
        let mut all = Stats::default();
        for t in self.tasks {
            if let Ok(s) = t.await {
                all.merge(s);
            }
        }
        all
    }

    /// Waits for the tasks to end by themselves, up to `limit`; then stops them. True when
    /// they had to be stopped.
    pub async fn join_within(self, limit: Duration) -> (Stats, bool) {
        let Load { tasks, stop, .. } = self;
        let join = async move {
            let mut all = Stats::default();
            for t in tasks {
                if let Ok(s) = t.await {
                    all.merge(s);
                }
            }
            all
        };
        tokio::pin!(join);
        tokio::select! {
            all = &mut join => (all, false),
            _ = sleep(limit) => {
                let _ = stop.send(true);
                (join.await, true)
            }
        }
    }

    pub fn active(&self) -> usize {
        self.gauge.active.load(Relaxed)
    }
}

pub(crate) struct Recorder {
    pub(crate) stats: Stats,
    window: Window,
    gauge: Arc<Gauge>,
}

/// One answer in flight; dropping it takes it off the gauge.
pub(crate) struct Answer {
    start: Instant,
    last: Option<Instant>,
    pub(crate) tokens: u32,
    gauge: Arc<Gauge>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.gauge.active.fetch_sub(1, Relaxed);
    }
}

impl Recorder {
    pub(crate) fn begin(&self) -> Answer {
        let now = self.gauge.active.fetch_add(1, Relaxed) + 1;
        self.gauge.peak.fetch_max(now, Relaxed);
        Answer {
            start: Instant::now(),
            last: None,
            tokens: 0,
            gauge: self.gauge.clone(),
        }
    }

    pub(crate) fn tokens(&mut self, a: &mut Answer, k: u32, now: Instant) {
        if k == 0 {
            return;
        }
        let in_window = self.window.contains(now);
        match a.last {
            None => {
                if self.window.contains(a.start) {
                    self.stats.ttft_us.push(micros(now - a.start));
                }
            }
            Some(last) if in_window => self.stats.itl_us.push(micros(now - last)),
            Some(_) => {}
        }
        if in_window {
            // Several tokens in one frame arrived together.
            for _ in 1..k {
                self.stats.itl_us.push(0);
            }
            self.stats.tokens += u64::from(k);
            self.stats.frames += 1;
        }
        a.last = Some(now);
        a.tokens += k;
    }

    pub(crate) fn done(&mut self, now: Instant) {
        self.stats.answers_all += 1;
        if self.window.contains(now) {
            self.stats.answers += 1;
        }
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

pub(crate) fn count_tokens(frame: &[u8]) -> u32 {
    TOKEN_FINDER.find_iter(frame).count() as u32
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The `code` of an error frame, for the error counts.
pub(crate) fn error_code(frame: &[u8]) -> String {
    let Some(at) = memchr::memmem::find(frame, b"\"code\":\"") else {
        return "stream_error".to_owned();
    };
    let rest = &frame[at + 8..];
    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len()).min(64);
    format!("stream:{}", String::from_utf8_lossy(&rest[..end]))
}

async fn task(
    i: usize,
    spec: Arc<Spec>,
    conn: Option<Conn>,
    delay: Duration,
    window: Window,
    mut stop: watch::Receiver<bool>,
    gauge: Arc<Gauge>,
) -> Stats {
    let mut rec = Recorder {
        stats: Stats::default(),
        window,
        gauge,
    };
    tokio::select! {
        _ = sleep(delay) => {}
        _ = stop.changed() => return rec.stats,
    }
    tokio::select! {
        _ = client_loop(i, &spec, conn, &mut rec) => {}
        _ = stop.changed() => {}
    }
    rec.stats
}

pub(crate) enum Outcome {
    /// The answer ended; the connection can be used again.
    Done,
    /// The answer ended; the server closes the connection.
    DoneClose,
    /// The client left after `leave_after` tokens: it drops the connection now.
    Left,
    /// The client stopped the answer (`Leave::Stop`) at this wall-clock time (µs).
    Stopped(u64),
}

async fn client_loop(i: usize, spec: &Spec, mut conn: Option<Conn>, rec: &mut Recorder) {
    let mut n = 0usize;
    loop {
        let id = format!("{}{i}x{n}", spec.id_prefix);
        let question = format!("{} {id}", spec.questions[(i + n) % spec.questions.len()]);
        n += 1;
        if conn.is_none() {
            match connect_for(spec, None).await {
                Ok(c) => conn = Some(c),
                Err(kind) => {
                    rec.stats.error(kind);
                    if spec.answers.is_some_and(|a| n >= a as usize) {
                        return;
                    }
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let result = match (spec.target, spec.check) {
            (Target::HubSse, Some(check)) => {
                crate::resume::sse_answer(&mut conn, spec, check, &question, (i, n), rec).await
            }
            (Target::HubWs, Some(check)) => {
                crate::resume::ws_answer(&mut conn, spec, check, &question, (i, n), rec).await
            }
            _ => {
                let Some(c) = conn.as_mut() else { return };
                match spec.target {
                    Target::Direct | Target::Relay | Target::ActixRelay => {
                        c.openai_answer(spec, &question, rec).await
                    }
                    Target::HubSse => c.sse_answer(spec, &question, rec).await,
                    Target::HubWs => c.ws_answer(spec, &question, n, false, rec).await,
                    Target::HubSignalR => c.ws_answer(spec, &question, n, true, rec).await,
                }
            }
        };
        let last = spec.answers.is_some_and(|a| n >= a as usize);
        match result {
            Ok(Outcome::Done) => {}
            Ok(Outcome::DoneClose) => conn = None,
            Ok(Outcome::Left) => {
                rec.stats.leaves.push((id, unix_us()));
                conn = None;
            }
            Ok(Outcome::Stopped(at)) => {
                rec.stats.leaves.push((id, at));
                conn = None;
            }
            Err(kind) => {
                rec.stats.error(kind);
                conn = None;
                if !last {
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Opens the connection a target's client needs (WebSockets: upgraded, SignalR:
/// handshaken).
pub async fn connect_for(spec: &Spec, local: Option<IpAddr>) -> Result<Conn, String> {
    let mut c = match spec.lag {
        Some(lag) => http::connect_narrow(spec.addr, lag.recv_buffer, lag.mss)
            .await
            .map(|s| Conn::from_stream(s, Some(lag))),
        None => Conn::connect(spec.addr, local).await,
    }
    .map_err(|_| "connect_failed".to_owned())?;
    match spec.target {
        Target::HubWs => c.ws_upgrade(spec).await?,
        Target::HubSignalR => {
            c.ws_upgrade(spec).await?;
            c.signalr_handshake().await?;
        }
        _ => {}
    }
    Ok(c)
}

/// How a response body is framed.
pub enum Body {
    Chunked(Chunked),
    Length(usize),
    UntilClose,
}

/// One client connection with its read buffer.
pub struct Conn {
    s: TcpStream,
    buf: BytesMut,
    /// A WebSocket message being reassembled from fragments.
    fragments: Option<(u8, Vec<u8>)>,
    lag: Option<Lag>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<Conn> {
        Ok(Conn::from_stream(http::connect(addr, local).await?, None))
    }

    fn from_stream(s: TcpStream, lag: Option<Lag>) -> Conn {
        Conn {
            s,
            buf: BytesMut::new(),
            fragments: None,
            lag,
        }
    }

    /// Drops the connection with a TCP reset: a client that vanished (a crashed tab, a
    /// lost network) rather than one that said goodbye.
    pub fn abort(self) {
        let _ = self.s.set_zero_linger();
    }

    /// Closes the connection in order (FIN): a client that left on purpose.
    pub async fn shut(mut self) {
        let _ = self.s.shutdown().await;
    }

    pub async fn read_more(&mut self) -> Result<(), String> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8192);
        }
        let read = match self.lag {
            Some(lag) => {
                sleep(lag.pause).await;
                self.s
                    .read_buf(&mut bytes::BufMut::limit(&mut self.buf, lag.read_bytes))
                    .await
            }
            None => self.s.read_buf(&mut self.buf).await,
        };
        match read {
            Ok(0) => Err("connection_closed".into()),
            Ok(_) => Ok(()),
            Err(_) => Err("io_error".into()),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.s
            .write_all(bytes)
            .await
            .map_err(|_| "write_failed".to_owned())
    }

    pub async fn read_head(&mut self) -> Result<ResponseHead, String> {
        loop {
            match parse_response_head(&self.buf) {
                Ok(Some(head)) => {
                    self.buf.advance(head.len);
                    return Ok(head);
                }
                Ok(None) => self.read_more().await?,
                Err(_) => return Err("bad_response".into()),
            }
        }
    }

    pub fn body_for(head: &ResponseHead) -> Body {
        if head.chunked {
            Body::Chunked(Chunked::default())
        } else if let Some(n) = head.content_length {
            Body::Length(n)
        } else {
            Body::UntilClose
        }
    }

    /// Appends the next body bytes to `out`; true when the body has ended.
    pub async fn body_step(&mut self, body: &mut Body, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            if !self.buf.is_empty() {
                match body {
                    Body::Chunked(c) => {
                        let end = c
                            .feed(&self.buf, |d| out.extend_from_slice(d))
                            .map_err(|_| "bad_chunking".to_owned())?;
                        match end {
                            Some(n) => {
                                self.buf.advance(n);
                                return Ok(true);
                            }
                            None => {
                                self.buf.clear();
                                return Ok(false);
                            }
                        }
                    }
                    Body::Length(rem) => {
                        let n = (*rem).min(self.buf.len());
                        out.extend_from_slice(&self.buf[..n]);
                        self.buf.advance(n);
                        *rem -= n;
                        return Ok(*rem == 0);
                    }
                    Body::UntilClose => {
                        out.extend_from_slice(&self.buf);
                        self.buf.clear();
                        return Ok(false);
                    }
                }
            }
            if matches!(body, Body::Length(0)) {
                return Ok(true);
            }
            match self.read_more().await {
                Ok(()) => {}
                Err(_) if matches!(body, Body::UntilClose) => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and drops a whole body.
    async fn skip_body(&mut self, head: &ResponseHead) -> Result<(), String> {
        let mut body = Conn::body_for(head);
        let mut sink = Vec::new();
        while !self.body_step(&mut body, &mut sink).await? {
            sink.clear();
        }
        Ok(())
    }

    /// A whole request and its whole response (for control and setup calls).
    pub async fn request(&mut self, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.send(raw).await?;
        let head = self.read_head().await?;
        let mut body = Conn::body_for(&head);
        let mut out = Vec::new();
        while !self.body_step(&mut body, &mut out).await? {}
        Ok((head.status, out))
    }

    /// Reads an event-stream body, calling `event` for each complete event with the time
    /// its bytes arrived; `event` returns false to leave. Ok(true) when the body ended.
    pub(crate) async fn events(
        &mut self,
        head: &ResponseHead,
        mut event: impl FnMut(&[u8], Instant) -> bool,
    ) -> Result<bool, String> {
        let mut body = Conn::body_for(head);
        let mut pending = Vec::with_capacity(1024);
        loop {
            let ended = self.body_step(&mut body, &mut pending).await?;
            let now = Instant::now();
            let mut used = 0;
            while let Some(at) = EVENT_END.find(&pending[used..]) {
                let keep = event(&pending[used..used + at], now);
                used += at + 2;
                if !keep {
                    return Ok(false);
                }
            }
            pending.drain(..used);
            if ended {
                return Ok(true);
            }
        }
    }

    async fn openai_answer(
        &mut self,
        spec: &Spec,
        question: &str,
        rec: &mut Recorder,
    ) -> Result<Outcome, String> {
        let body = openai_body(question);
        let mut req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\nauthorization: Bearer bench\r\ncontent-length: {}\r\n\r\n",
            spec.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        self.send(&req).await?;
        let mut a = rec.begin();
        let head = self.read_head().await?;
        if head.status != 200 {
            self.skip_body(&head).await?;
            return Err(format!("http_{}", head.status));
        }
        let mut done = false;
        let mut failed = None;
        let mut left = false;
        let ended = self
            .events(&head, |ev, now| {
                rec.tokens(&mut a, count_tokens(ev), now);
                if contains(ev, b"[DONE]") {
                    done = true;
                } else if contains(ev, b"\"error\"") {
                    failed = Some("stream_error".to_owned());
                }
                if spec.leave_after.is_some_and(|n| a.tokens >= n) {
                    left = true;
                    return false;
                }
                true
            })
            .await?;
        if left {
            return Ok(Outcome::Left);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if !ended || !done {
            return Err("incomplete".into());
        }
        rec.done(Instant::now());
        Ok(if head.close {
            Outcome::DoneClose
        } else {
            Outcome::Done
        })
    }

    async fn sse_answer(
        &mut self,
        spec: &Spec,
        question: &str,
        rec: &mut Recorder,
    ) -> Result<Outcome, String> {
        let req = format!(
            "GET /api/v1/ask/stream?question={}&topK={} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\naccept: text/event-stream\r\n\r\n",
            url_encode(question),
            spec.top_k,
            spec.addr,
            spec.key
        );
        self.send(req.as_bytes()).await?;
        let mut a = rec.begin();
        let head = self.read_head().await?;
        if head.status != 200 {
            self.skip_body(&head).await?;
            return Err(format!("http_{}", head.status));
        }
        let mut done = false;
        let mut failed = None;
        let mut left = false;
        let ended = self
            .events(&head, |ev, now| {
                rec.tokens(&mut a, count_tokens(ev), now);
                if contains(ev, b"\"done\":true") {
                    if contains(ev, b"\"error\":{") {
                        failed = Some(error_code(ev));
                    } else {
                        done = true;
                        rec.done(now);
                    }
                }
                if spec.leave_after.is_some_and(|n| a.tokens >= n) {
                    left = true;
                    return false;
                }
                true
            })
            .await?;
        if left {
            if spec.leave == Leave::Stop {
                let id = head.answer_id.as_deref().ok_or("no_answer_id")?;
                return stop_sse_answer(spec, id).await;
            }
            return Ok(Outcome::Left);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if !ended || !done {
            return Err("incomplete".into());
        }
        Ok(if head.close {
            Outcome::DoneClose
        } else {
            Outcome::Done
        })
    }

    // ---- WebSocket ----

    pub async fn ws_upgrade(&mut self, spec: &Spec) -> Result<(), String> {
        let req = format!(
            "GET /api/v1/chat/ws HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nx-api-key: {}\r\n\r\n",
            spec.addr, spec.key
        );
        self.send(req.as_bytes()).await?;
        let head = self.read_head().await?;
        if head.status != 101 {
            return Err(format!("http_{}", head.status));
        }
        Ok(())
    }

    pub async fn signalr_handshake(&mut self) -> Result<(), String> {
        self.send(&ws_frame(0x1, b"{\"protocol\":\"json\",\"version\":1}\x1e"))
            .await?;
        loop {
            let (op, payload) = self.ws_next().await?;
            match op {
                0x1 if payload.starts_with(b"{}") => return Ok(()),
                0x1 => return Err("signalr_handshake".into()),
                _ => {}
            }
        }
    }

    /// The next data or close message; answers pings on the way.
    pub async fn ws_next(&mut self) -> Result<(u8, Bytes), String> {
        loop {
            if let Some((fin, op, header, len)) = parse_ws_header(&self.buf) {
                if self.buf.len() >= header + len {
                    // Servers do not mask, but a mask is cheap to honour.
                    let mask = (self.buf[1] & 0x80 != 0).then(|| {
                        let at = header - 4;
                        [
                            self.buf[at],
                            self.buf[at + 1],
                            self.buf[at + 2],
                            self.buf[at + 3],
                        ]
                    });
                    self.buf.advance(header);
                    let mut payload = self.buf.split_to(len);
                    if let Some(mask) = mask {
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= mask[i % 4];
                        }
                    }
                    match op {
                        0x9 => {
                            self.send(&ws_frame(0xA, &payload)).await?;
                            continue;
                        }
                        0xA => continue,
                        0x8 => return Err("ws_closed".into()),
                        0x0 => {
                            let Some((first, mut data)) = self.fragments.take() else {
                                return Err("ws_protocol".into());
                            };
                            data.extend_from_slice(&payload);
                            if fin {
                                return Ok((first, Bytes::from(data)));
                            }
                            self.fragments = Some((first, data));
                            continue;
                        }
                        _ if !fin => {
                            self.fragments = Some((op, payload.to_vec()));
                            continue;
                        }
                        _ => return Ok((op, payload.freeze())),
                    }
                }
            }
            self.read_more().await?;
        }
    }

    async fn ws_answer(
        &mut self,
        spec: &Spec,
        question: &str,
        n: usize,
        signalr: bool,
        rec: &mut Recorder,
    ) -> Result<Outcome, String> {
        let q = serde_json::to_string(question).unwrap_or_default();
        let frame = if signalr {
            format!(
                "{{\"type\":4,\"target\":\"AskStream\",\"arguments\":[{q},{}],\"invocationId\":\"{n}\"}}\u{1e}",
                spec.top_k
            )
        } else {
            format!(
                "{{\"message\":{q},\"topK\":{},\"id\":\"c{n}\"}}",
                spec.top_k
            )
        };
        self.send(&ws_frame(0x1, frame.as_bytes())).await?;
        let mut a = rec.begin();
        let mut stopped_at = None;
        loop {
            let (op, msg) = match stopped_at {
                // The end of the stopped answer is not what is measured (the mock sees the
                // upstream close): a hub that never says so still lets the client go.
                Some(at) => {
                    match tokio::time::timeout(Duration::from_secs(2), self.ws_next()).await {
                        Ok(next) => next?,
                        Err(_) => return Ok(Outcome::Stopped(at)),
                    }
                }
                None => self.ws_next().await?,
            };
            let now = Instant::now();
            if op != 0x1 {
                continue;
            }
            let mut finished = None;
            if signalr {
                for record in msg.split(|b| *b == 0x1e).filter(|r| !r.is_empty()) {
                    if contains(record, b"\"type\":2") {
                        rec.tokens(&mut a, count_tokens(record), now);
                    } else if contains(record, b"\"type\":3") {
                        finished = Some(if contains(record, b"\"error\"") {
                            Err("stream_error".to_owned())
                        } else {
                            Ok(())
                        });
                    } else if contains(record, b"\"type\":7") {
                        return Err("signalr_closed".into());
                    }
                }
            } else {
                rec.tokens(&mut a, count_tokens(&msg), now);
                if contains(&msg, b"\"error\":{") {
                    finished = Some(Err(error_code(&msg)));
                } else if contains(&msg, b"\"done\":true") {
                    finished = Some(Ok(()));
                }
            }
            if let Some(at) = stopped_at {
                // The answer's last frame after the stop: an error (cancelled) or, when
                // the stop crossed the answer's end, done.
                if finished.is_some() {
                    return Ok(Outcome::Stopped(at));
                }
                continue;
            }
            if spec.leave_after.is_some_and(|n| a.tokens >= n) {
                if spec.leave == Leave::Drop {
                    return Ok(Outcome::Left);
                }
                let stop = if signalr {
                    format!("{{\"type\":5,\"invocationId\":\"{n}\"}}\u{1e}")
                } else {
                    format!("{{\"type\":\"cancel\",\"id\":\"c{n}\"}}")
                };
                stopped_at = Some(unix_us());
                self.send(&ws_frame(0x1, stop.as_bytes())).await?;
                continue;
            }
            match finished {
                Some(Ok(())) => {
                    rec.done(now);
                    return Ok(Outcome::Done);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }
}

/// Stops an SSE answer with `DELETE /api/v1/answers/{id}` on a connection of its own (what
/// a page's Stop button does), then leaves the stream.
async fn stop_sse_answer(spec: &Spec, answer_id: &str) -> Result<Outcome, String> {
    let mut c = Conn::connect(spec.addr, None)
        .await
        .map_err(|_| "connect_failed".to_owned())?;
    let req = format!(
        "DELETE /api/v1/answers/{answer_id} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        spec.addr, spec.key
    );
    let at = unix_us();
    let (status, _) = c.request(req.as_bytes()).await?;
    if status != 204 {
        return Err(format!("stop_http_{status}"));
    }
    Ok(Outcome::Stopped(at))
}

/// (fin, opcode, header length, payload length) once the header is complete.
fn parse_ws_header(buf: &[u8]) -> Option<(bool, u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let op = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if masked {
        header += 4;
    }
    (buf.len() >= header).then_some((fin, op, header, len))
}

/// A masked client frame.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An OpenAI request the size of the hub's own (system prompt, passages, question).
pub fn openai_body(question: &str) -> String {
    let system = "You answer questions using only the numbered passages provided. Cite passages \
                  as [n]. If the passages do not contain the answer, say so plainly. Keep the \
                  answer short and factual.";
    let user = format!("No passages were found.\n\nQuestion: {question}");
    serde_json::json!({
        "model": "mock",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

/// Opens `n` connections for the idle-memory figure, `parallel` at a time, spread over
/// loopback source addresses. Returns the connections and the failures by kind.
pub async fn open_many(
    spec: &Spec,
    n: usize,
    parallel: usize,
) -> (Vec<Conn>, BTreeMap<String, u64>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let spec = Arc::new(spec.clone());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let spec = spec.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let local = IpAddr::from([127, 0, 0, 1 + (i % 16) as u8]);
            connect_for(&spec, Some(local)).await
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut errors = BTreeMap::new();
    for h in handles {
        match h.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(kind)) => *errors.entry(kind).or_default() += 1,
            Err(_) => *errors.entry("panic".to_owned()).or_default() += 1,
        }
    }
    (conns, errors)
}
