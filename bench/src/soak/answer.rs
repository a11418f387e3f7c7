//! One answer of the soak, over one transport, with the fault its plan asks for: the
//! request, reading it to its end (or misbehaving on the way), and what the client saw.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, timeout_at, Instant};

use crate::client::{url_encode, ws_frame, Conn, Spec, Target};
use crate::mock::{Fault as MockFault, TOKEN_MARK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    Sse,
    Ws,
    SignalR,
    Json,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Sse,
        Transport::Ws,
        Transport::SignalR,
        Transport::Json,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Sse => "SSE",
            Transport::Ws => "plain WS",
            Transport::SignalR => "SignalR",
            Transport::Json => "JSON",
        }
    }
}

/// What goes wrong with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    None,
    /// The upstream resets its connection after a few tokens.
    UpstreamReset,
    /// The upstream answers 500 (every attempt: the question asks for it).
    Upstream500,
    /// The upstream goes silent after a few tokens, past the hub's idle timeout.
    UpstreamStall,
    /// The client's connection is reset after a few tokens, without a word.
    ClientVanish,
    /// The client cancels: a cancel frame (plain WS), `CancelInvocation` (SignalR), or an
    /// orderly close of the connection (SSE and JSON have no other way).
    ClientCancel,
    /// The client stops reading a long answer for a while, then reads on.
    ClientStall,
}

impl Fault {
    pub const INJECTED: [Fault; 6] = [
        Fault::UpstreamReset,
        Fault::Upstream500,
        Fault::UpstreamStall,
        Fault::ClientVanish,
        Fault::ClientCancel,
        Fault::ClientStall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::UpstreamReset => "upstream reset mid-stream",
            Fault::Upstream500 => "upstream 500",
            Fault::UpstreamStall => "upstream stall past its timeout",
            Fault::ClientVanish => "client vanishes mid-answer",
            Fault::ClientCancel => "client cancels",
            Fault::ClientStall => "client stops reading",
        }
    }

    /// The short name the command line uses.
    pub fn key(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::UpstreamReset => "reset",
            Fault::Upstream500 => "500",
            Fault::UpstreamStall => "stall",
            Fault::ClientVanish => "vanish",
            Fault::ClientCancel => "cancel",
            Fault::ClientStall => "slow-reader",
        }
    }

    /// Faults of the upstream: the client reads on and must be told with an error.
    pub fn is_upstream(self) -> bool {
        matches!(
            self,
            Fault::UpstreamReset | Fault::Upstream500 | Fault::UpstreamStall
        )
    }
}

/// One answer to ask.
#[derive(Debug, Clone)]
pub struct Plan {
    pub n: usize,
    pub transport: Transport,
    pub fault: Fault,
    /// Tokens the client (or the upstream) lets through before the fault.
    pub after: u32,
    /// The other flavour of the transport: a conversation turn (stored) for SSE and JSON,
    /// `SendMessage` instead of `AskStream` for SignalR.
    pub stored: bool,
}

/// What the client saw of one answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Done,
    Error(String),
    /// The client left on purpose (vanished, or cancelled by closing).
    Left,
    /// The hub closed the connection before the answer's end.
    Closed,
    /// No end within the answer's deadline.
    TimedOut,
}

/// How the soak misbehaves, and where.
#[derive(Debug, Clone)]
pub struct Shape {
    pub hub: SocketAddr,
    pub key: String,
    pub top_k: u32,
    /// How long a stalled client stops reading.
    pub client_pause: Duration,
    /// Tokens of the long answer a stalled client is sent.
    pub long_tokens: u32,
    /// Longest an answer may take before it counts as hung.
    pub deadline: Duration,
}

impl Plan {
    /// The question, with the fault the mock must play named in it.
    fn question(&self) -> String {
        let fault = match self.fault {
            Fault::UpstreamReset => Some(MockFault::Reset(self.after)),
            Fault::Upstream500 => Some(MockFault::Status500),
            Fault::UpstreamStall => Some(MockFault::Stall(self.after)),
            _ => None,
        };
        match fault {
            Some(f) => format!(
                "What does the soak say about answer {}? {}",
                self.n,
                f.marker()
            ),
            None => format!("What does the soak say about answer {}?", self.n),
        }
    }
}

/// The SignalR client's keep-alive interval (the official client's is 15 s; the soak's hub
/// gives up on a silent client after 10 s).
const KEEP_ALIVE: Duration = Duration::from_secs(3);

fn count_tokens(text: &str) -> u32 {
    memchr::memmem::find_iter(text.as_bytes(), TOKEN_MARK).count() as u32
}

/// What the client does next, given the tokens seen so far.
enum Step {
    Read,
    Vanish,
    Cancel,
    Pause,
}

/// The client's side of a fault, once `after` tokens have arrived.
struct Act {
    fault: Fault,
    after: u32,
    acted: bool,
}

impl Act {
    fn step(&mut self, tokens: u32) -> Step {
        if self.acted || tokens < self.after {
            return Step::Read;
        }
        let step = match self.fault {
            Fault::ClientVanish => Step::Vanish,
            Fault::ClientCancel => Step::Cancel,
            Fault::ClientStall => Step::Pause,
            _ => Step::Read,
        };
        self.acted = !matches!(step, Step::Read);
        step
    }
}

/// Asks one answer on `conn` (opened as needed; left `None` when it cannot be used again).
pub async fn ask(conn: &mut Option<Conn>, plan: &Plan, shape: &Shape) -> Outcome {
    let deadline = Instant::now() + shape.deadline;
    if conn.is_none() {
        match timeout_at(deadline, open(plan.transport, shape)).await {
            Ok(Ok(c)) => *conn = Some(c),
            Ok(Err(e)) => return Outcome::Error(format!("connect:{e}")),
            Err(_) => return Outcome::TimedOut,
        }
    }
    let Some(mut c) = conn.take() else {
        return Outcome::Error("connect".into());
    };
    let mut act = Act {
        fault: plan.fault,
        after: plan.after,
        acted: false,
    };
    let result = timeout_at(deadline, async {
        match plan.transport {
            Transport::Sse => sse(&mut c, plan, shape, &mut act).await,
            Transport::Ws => plain_ws(&mut c, plan, shape, &mut act).await,
            Transport::SignalR => signalr(&mut c, plan, shape, &mut act).await,
            Transport::Json => json(&mut c, plan, shape, &mut act).await,
        }
    })
    .await;
    match result {
        Ok((outcome, Reuse::Keep)) => {
            *conn = Some(c);
            outcome
        }
        Ok((outcome, Reuse::Drop)) => outcome,
        Ok((outcome, Reuse::Abort)) => {
            c.abort();
            outcome
        }
        Ok((outcome, Reuse::Shut)) => {
            c.shut().await;
            outcome
        }
        Err(_) => {
            c.abort();
            Outcome::TimedOut
        }
    }
}

/// What becomes of the connection after an answer.
enum Reuse {
    Keep,
    Drop,
    Abort,
    Shut,
}

async fn open(transport: Transport, shape: &Shape) -> Result<Conn, String> {
    let mut c = Conn::connect(shape.hub, None)
        .await
        .map_err(|e| e.kind().to_string())?;
    let mut spec = Spec::new(Target::HubWs, shape.hub, &shape.key, Default::default());
    spec.top_k = shape.top_k;
    match transport {
        Transport::Ws => c.ws_upgrade(&spec).await?,
        Transport::SignalR => {
            c.ws_upgrade(&spec).await?;
            c.signalr_handshake().await?;
        }
        Transport::Sse | Transport::Json => {}
    }
    Ok(c)
}

/// A fault that needs the long answer asks for it in the question too.
fn question(plan: &Plan, shape: &Shape) -> String {
    if plan.fault == Fault::ClientStall {
        let long = MockFault::Long(shape.long_tokens).marker();
        return format!("{} {long}", plan.question());
    }
    plan.question()
}

/// The `code` of an error object, or `fallback`.
fn code(v: &Value, fallback: &str) -> String {
    v.get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or(fallback)
        .to_owned()
}

/// A response that is not a stream: its error code (the body is a JSON error).
async fn error_response(c: &mut Conn, head: &crate::http::ResponseHead) -> (Outcome, Reuse) {
    let mut body = Conn::body_for(head);
    let mut out = Vec::new();
    loop {
        match c.body_step(&mut body, &mut out).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => return (Outcome::Closed, Reuse::Drop),
        }
    }
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    let reuse = if head.close { Reuse::Drop } else { Reuse::Keep };
    (
        Outcome::Error(code(&v, &format!("http_{}", head.status))),
        reuse,
    )
}

async fn sse(c: &mut Conn, plan: &Plan, shape: &Shape, act: &mut Act) -> (Outcome, Reuse) {
    let path = if plan.stored {
        "/api/v1/agent/chat/stream"
    } else {
        "/api/v1/ask/stream"
    };
    let req = format!(
        "GET {path}?message={}&topK={} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\naccept: text/event-stream\r\n\r\n",
        url_encode(&question(plan, shape)),
        shape.top_k,
        shape.hub,
        shape.key
    );
    if c.send(req.as_bytes()).await.is_err() {
        return (Outcome::Closed, Reuse::Drop);
    }
    let head = match c.read_head().await {
        Ok(h) => h,
        Err(_) => return (Outcome::Closed, Reuse::Drop),
    };
    if head.status != 200 {
        return error_response(c, &head).await;
    }
    let mut body = Conn::body_for(&head);
    let mut pending: Vec<u8> = Vec::new();
    let mut tokens = 0u32;
    let mut end: Option<Outcome> = None;
    loop {
        let ended = match c.body_step(&mut body, &mut pending).await {
            Ok(ended) => ended,
            Err(_) => return (end.unwrap_or(Outcome::Closed), Reuse::Drop),
        };
        let mut used = 0;
        while let Some(at) = memchr::memmem::find(&pending[used..], b"\n\n") {
            let event = &pending[used..used + at];
            used += at + 2;
            if end.is_some() {
                continue;
            }
            let text = String::from_utf8_lossy(event);
            if text.lines().any(|l| l.starts_with("event:")) {
                // `sources`, `conversation`: not part of the answer's text.
                continue;
            }
            let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            if let Some(t) = v.get("token").and_then(Value::as_str) {
                tokens += count_tokens(t);
            }
            if v.get("done").and_then(Value::as_bool) == Some(true) {
                end = Some(if v.get("error").is_some() {
                    Outcome::Error(code(&v, "stream_error"))
                } else {
                    Outcome::Done
                });
                continue;
            }
            match act.step(tokens) {
                Step::Read => {}
                Step::Vanish => return (Outcome::Left, Reuse::Abort),
                Step::Cancel => return (Outcome::Left, Reuse::Shut),
                Step::Pause => sleep(shape.client_pause).await,
            }
        }
        pending.drain(..used);
        if ended {
            let reuse = if head.close { Reuse::Drop } else { Reuse::Keep };
            return (end.unwrap_or(Outcome::Closed), reuse);
        }
    }
}

async fn plain_ws(c: &mut Conn, plan: &Plan, shape: &Shape, act: &mut Act) -> (Outcome, Reuse) {
    let id = format!("q{}", plan.n);
    let frame = serde_json::json!({
        "message": question(plan, shape),
        "topK": shape.top_k,
        "id": id,
    })
    .to_string();
    if c.send(&ws_frame(0x1, frame.as_bytes())).await.is_err() {
        return (Outcome::Closed, Reuse::Drop);
    }
    let mut tokens = 0u32;
    loop {
        let msg = match c.ws_next().await {
            Ok((0x1, msg)) => msg,
            Ok(_) => continue,
            Err(_) => return (Outcome::Closed, Reuse::Drop),
        };
        let v: Value = serde_json::from_slice(&msg).unwrap_or(Value::Null);
        if v.get("id").and_then(Value::as_str) != Some(id.as_str()) {
            continue;
        }
        if let Some(t) = v.get("token").and_then(Value::as_str) {
            tokens += count_tokens(t);
        }
        if v.get("error").is_some() {
            return (Outcome::Error(code(&v, "stream_error")), Reuse::Keep);
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            return (Outcome::Done, Reuse::Keep);
        }
        match act.step(tokens) {
            Step::Read => {}
            Step::Vanish => return (Outcome::Left, Reuse::Abort),
            Step::Cancel => {
                let cancel = serde_json::json!({"type": "cancel", "id": id}).to_string();
                if c.send(&ws_frame(0x1, cancel.as_bytes())).await.is_err() {
                    return (Outcome::Closed, Reuse::Drop);
                }
            }
            Step::Pause => sleep(shape.client_pause).await,
        }
    }
}

async fn signalr(c: &mut Conn, plan: &Plan, shape: &Shape, act: &mut Act) -> (Outcome, Reuse) {
    let id = plan.n.to_string();
    let q = question(plan, shape);
    // A cancel needs a stream invocation: `CancelInvocation` is for streams only.
    let invoke = plan.stored && plan.fault != Fault::ClientCancel;
    let kind = if invoke { 1 } else { 4 };
    let target = if invoke { "SendMessage" } else { "AskStream" };
    let mut frame = serde_json::json!({
        "type": kind,
        "target": target,
        "arguments": [q, shape.top_k],
        "invocationId": id,
    })
    .to_string();
    frame.push('\u{1e}');
    if c.send(&ws_frame(0x1, frame.as_bytes())).await.is_err() {
        return (Outcome::Closed, Reuse::Drop);
    }
    let mut tokens = 0u32;
    // `SendMessage` says how it went with a client call before its Completion.
    let mut said: Option<Outcome> = None;
    // As the official client does, a ping now and then, so that the hub does not take a
    // long answer's silent listener for a dead one.
    let mut pinged = Instant::now();
    loop {
        if pinged.elapsed() > KEEP_ALIVE {
            pinged = Instant::now();
            if c.send(&ws_frame(0x1, b"{\"type\":6}\x1e")).await.is_err() {
                return (Outcome::Closed, Reuse::Drop);
            }
        }
        let msg = match c.ws_next().await {
            Ok((0x1, msg)) => msg,
            Ok(_) => continue,
            Err(_) => return (Outcome::Closed, Reuse::Drop),
        };
        for record in msg.split(|b| *b == 0x1e).filter(|r| !r.is_empty()) {
            let v: Value = serde_json::from_slice(record).unwrap_or(Value::Null);
            match v.get("type").and_then(Value::as_i64) {
                Some(1) => match v.get("target").and_then(Value::as_str) {
                    Some("ReceiveToken") => {
                        if let Some(t) = v["arguments"][0].as_str() {
                            tokens += count_tokens(t);
                        }
                    }
                    Some("StreamComplete") => said = Some(Outcome::Done),
                    Some("Error") => said = Some(Outcome::Error("signalr_error".into())),
                    _ => {}
                },
                Some(2) if v.get("invocationId").and_then(Value::as_str) == Some(&id) => {
                    if let Some(t) = v.get("item").and_then(Value::as_str) {
                        tokens += count_tokens(t);
                    }
                }
                Some(3) if v.get("invocationId").and_then(Value::as_str) == Some(&id) => {
                    let outcome = if v.get("error").is_some() {
                        Outcome::Error("signalr_error".into())
                    } else if invoke {
                        said.take().unwrap_or(Outcome::Closed)
                    } else if act.acted && plan.fault == Fault::ClientCancel {
                        // A cancelled stream ends with a plain Completion.
                        Outcome::Error("cancelled".into())
                    } else {
                        Outcome::Done
                    };
                    return (outcome, Reuse::Keep);
                }
                Some(7) => return (Outcome::Closed, Reuse::Drop),
                _ => {}
            }
        }
        match act.step(tokens) {
            Step::Read => {}
            Step::Vanish => return (Outcome::Left, Reuse::Abort),
            Step::Cancel => {
                let mut cancel = serde_json::json!({"type": 5, "invocationId": id}).to_string();
                cancel.push('\u{1e}');
                if c.send(&ws_frame(0x1, cancel.as_bytes())).await.is_err() {
                    return (Outcome::Closed, Reuse::Drop);
                }
            }
            Step::Pause => sleep(shape.client_pause).await,
        }
    }
}

async fn json(c: &mut Conn, plan: &Plan, shape: &Shape, act: &mut Act) -> (Outcome, Reuse) {
    let path = if plan.stored {
        "/api/v1/agent/chat"
    } else {
        "/api/v1/ask"
    };
    let body =
        serde_json::json!({"message": question(plan, shape), "topK": shape.top_k}).to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        shape.hub,
        shape.key,
        body.len()
    );
    if c.send(req.as_bytes()).await.is_err() {
        return (Outcome::Closed, Reuse::Drop);
    }
    // No tokens to count: the client leaves (or stops reading) a moment into the answer.
    match act.step(u32::MAX) {
        Step::Read => {}
        Step::Vanish => {
            sleep(Duration::from_millis(20 * u64::from(plan.after))).await;
            return (Outcome::Left, Reuse::Abort);
        }
        Step::Cancel => {
            sleep(Duration::from_millis(20 * u64::from(plan.after))).await;
            return (Outcome::Left, Reuse::Shut);
        }
        Step::Pause => sleep(shape.client_pause).await,
    }
    let head = match c.read_head().await {
        Ok(h) => h,
        Err(_) => return (Outcome::Closed, Reuse::Drop),
    };
    if head.status != 200 {
        return error_response(c, &head).await;
    }
    let mut body = Conn::body_for(&head);
    let mut out = Vec::new();
    loop {
        match c.body_step(&mut body, &mut out).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => return (Outcome::Closed, Reuse::Drop),
        }
    }
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    let outcome = if v.get("answer").and_then(Value::as_str).is_some() && v.get("error").is_none() {
        Outcome::Done
    } else {
        Outcome::Error(code(&v, "bad_body"))
    };
    (outcome, if head.close { Reuse::Drop } else { Reuse::Keep })
}
