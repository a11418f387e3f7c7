//! Talking HTTP to an upstream: the per-thread client, one request attempt, HTTP errors,
//! and reading an event stream under first-token and idle timeouts.
//!
//! `awc::Client` is `!Send` and owns the connection pool, so each worker thread builds one
//! (lazily, on its first upstream request) and every answer on that thread shares it;
//! a client per request would defeat pooling. Answers run on their session's worker
//! thread, so a client never crosses threads.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use tokio::time::{sleep_until, Sleep};

use super::json;
use super::upstream_sse::{SseDecoder, SseEvent};
use super::{Delta, DeltaStream, ProviderError};
use crate::config::{Secret, UpstreamSettings};

/// Largest error body read from an upstream; the message is cut much shorter anyway.
const MAX_ERROR_BODY: usize = 64 * 1024;

thread_local! {
    /// One client per worker thread and connect timeout (in practice: one).
    static CLIENTS: RefCell<Vec<(Duration, awc::Client)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's upstream client.
pub fn client(connect_timeout: Duration) -> awc::Client {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((_, c)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
            return c.clone();
        }
        let c = build_client(connect_timeout);
        clients.push((connect_timeout, c.clone()));
        c
    })
}

fn build_client(connect_timeout: Duration) -> awc::Client {
    let mut connector = awc::Connector::new()
        .timeout(connect_timeout)
        .handshake_timeout(connect_timeout)
        // Admission limits bound the streams; a pool cap below them would queue answers.
        .limit(0);
    match tls_config() {
        Ok(tls) => connector = connector.rustls_0_23(Arc::new(tls)),
        Err(e) => log::error!("TLS is unavailable for upstreams: {e}"),
    }
    awc::Client::builder()
        .connector(connector)
        // Our own first-token deadline covers the response head; awc's 5 s default would
        // cut slow models off.
        .disable_timeout()
        // A redirect could carry the API key to another host.
        .disable_redirects()
        .finish()
}

fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 only: dropping a response then closes its connection, which is the
    // cancellation signal every upstream understands (and what the tests prove).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Where and how one provider sends its requests.
pub struct Endpoint {
    pub provider: &'static str,
    pub url: String,
    /// Authentication and version headers, built once.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Scrubbed from any upstream text that reaches a client or a log.
    pub secret: Secret,
    pub settings: UpstreamSettings,
}

impl Endpoint {
    /// A header carrying the key, marked sensitive so no debug output shows it.
    pub fn secret_header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
        // Config admits only visible ASCII keys, so this conversion cannot fail; an empty
        // value would make the upstream answer 401, which says what is wrong.
        let mut value = HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""));
        value.set_sensitive(true);
        (HeaderName::from_static(name), value)
    }

    fn scrub(&self, text: String) -> String {
        let key = self.secret.expose();
        if key.len() >= 4 && text.contains(key) {
            text.replace(key, "[redacted]")
        } else {
            text
        }
    }
}

/// Turns one upstream's SSE events into deltas.
pub trait EventParser {
    /// Handles one event; true when it ends the answer.
    fn event(
        &mut self,
        event: &SseEvent<'_>,
        out: &mut VecDeque<Delta>,
    ) -> Result<bool, ProviderError>;

    /// The body ended without the format's end marker. `unterminated` is an event left
    /// without its blank line. Ok when that still makes a complete answer.
    fn end(
        &mut self,
        unterminated: Option<SseEvent<'_>>,
        out: &mut VecDeque<Delta>,
    ) -> Result<(), ProviderError>;
}

/// Runs a whole upstream body through the decoder and `parser`, as [`attempt`] does with
/// the live stream: the parsers' unit tests share it.
#[cfg(test)]
pub(crate) fn parse_body<P: EventParser>(
    mut parser: P,
    body: &str,
) -> (Vec<Delta>, Result<(), ProviderError>) {
    let mut decoder = super::upstream_sse::SseDecoder::new(4096);
    let mut out = VecDeque::new();
    decoder.push(body.as_bytes());
    while let Some(ev) = decoder.next_event().expect("test bodies decode") {
        match parser.event(&ev, &mut out) {
            Ok(true) => return (out.into(), Ok(())),
            Ok(false) => {}
            Err(e) => return (out.into(), Err(e)),
        }
    }
    let unterminated = decoder.finish().expect("test bodies decode");
    let end = parser.end(unterminated, &mut out);
    (out.into(), end)
}

/// One request attempt: send, check the status, then stream the parsed deltas, starting
/// with `Delta::Start`. Failures come as the stream's single error item.
pub fn attempt<P: EventParser + 'static>(
    endpoint: Arc<Endpoint>,
    body: Bytes,
    model: String,
    parser: P,
) -> DeltaStream {
    stream::once(async move {
        let deadline = Instant::now() + endpoint.settings.first_token_timeout;
        match open(&endpoint, body, deadline).await {
            Ok(response) => {
                let start = Delta::Start {
                    provider: endpoint.provider,
                    model,
                };
                let reader = Reader::new(endpoint, response, parser, deadline);
                stream::iter([Ok(start)])
                    .chain(stream::unfold(reader, |mut r| async move {
                        r.next().await.map(|item| (item, r))
                    }))
                    .boxed_local()
            }
            Err(e) => stream::iter([Err(e)]).boxed_local(),
        }
    })
    .flatten()
    .boxed_local()
}

async fn open(
    ep: &Endpoint,
    body: Bytes,
    deadline: Instant,
) -> Result<awc::ClientResponse, ProviderError> {
    let mut request = client(ep.settings.connect_timeout)
        .post(&ep.url)
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header(("accept", "text/event-stream"));
    for (name, value) in &ep.headers {
        request = request.insert_header((name.clone(), value.clone()));
    }
    let timeout = |what| ProviderError::Timeout {
        provider: ep.provider,
        what,
        after_ms: ep.settings.first_token_timeout.as_millis() as u64,
    };
    let sent = tokio::time::timeout_at(deadline.into(), request.send_body(body)).await;
    let mut response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(SendRequestError::Timeout)) | Err(_) => return Err(timeout("send its first token")),
        Ok(Err(e)) => {
            return Err(ProviderError::Connect {
                provider: ep.provider,
                message: ep.scrub(e.to_string()),
            })
        }
    };
    let status = response.status();
    if status.is_success() {
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/json") {
            // A server that ignored `stream: true`, or put its error in a 200.
            let body = response
                .body()
                .limit(MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            return Err(ProviderError::Protocol {
                provider: ep.provider,
                message: ep.scrub(format!(
                    "expected an event stream, got JSON: {}",
                    json::error_message(&body)
                )),
            });
        }
        return Ok(response);
    }

    let read = response.body().limit(MAX_ERROR_BODY);
    let body = match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => Bytes::new(),
        Err(_) => return Err(timeout("send its first token")),
    };
    let mut message = json::error_message(&body);
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_owned();
    }
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let status = status.as_u16();
    let mut retryable = matches!(status, 408 | 409 | 429 | 500..=599);
    match response
        .headers()
        .get("x-should-retry")
        .map(|v| v.as_bytes())
    {
        Some(b"true") => retryable = true,
        Some(b"false") => retryable = false,
        _ => {}
    }
    // A wait longer than we are willing to hold a client is no retry at all.
    if retry_after.is_some_and(|d| d > ep.settings.retry_after_max) {
        retryable = false;
    }
    Err(ProviderError::Status {
        provider: ep.provider,
        status,
        message: ep.scrub(message),
        retryable,
        retry_after,
    })
}

/// The delay an upstream asked for: `retry-after-ms` (OpenAI's), else `Retry-After` in
/// seconds (fractions allowed) or as an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads one response body: bytes → SSE events → deltas, under the timeouts.
struct Reader<P> {
    endpoint: Arc<Endpoint>,
    body: awc::ClientResponse,
    decoder: SseDecoder,
    parser: P,
    /// Deltas parsed but not yet handed out; an event yields at most a few.
    out: VecDeque<Delta>,
    /// The first-token deadline until text flows, then the idle deadline, reset by
    /// every read (pings included: a live upstream is not idle).
    timer: Pin<Box<Sleep>>,
    got_text: bool,
    phase: Phase,
}

#[derive(PartialEq, Eq)]
enum Phase {
    Reading,
    /// The answer is complete; reading on to the body's end lets the connection go back
    /// to the pool.
    Draining,
    Ended,
}

impl<P: EventParser> Reader<P> {
    fn new(
        endpoint: Arc<Endpoint>,
        body: awc::ClientResponse,
        parser: P,
        first_token_deadline: Instant,
    ) -> Self {
        let limit = endpoint.settings.max_event_bytes;
        Reader {
            endpoint,
            body,
            decoder: SseDecoder::new(limit),
            parser,
            out: VecDeque::with_capacity(4),
            timer: Box::pin(sleep_until(first_token_deadline.into())),
            got_text: false,
            phase: Phase::Reading,
        }
    }

    fn fail(&mut self, e: ProviderError) -> Option<Result<Delta, ProviderError>> {
        self.phase = Phase::Ended;
        self.out.clear();
        Some(Err(e))
    }

    fn protocol(&self, message: String) -> ProviderError {
        ProviderError::Protocol {
            provider: self.endpoint.provider,
            message,
        }
    }

    async fn next(&mut self) -> Option<Result<Delta, ProviderError>> {
        loop {
            if let Some(delta) = self.out.pop_front() {
                if !self.got_text && matches!(&delta, Delta::Text(t) if !t.is_empty()) {
                    self.got_text = true;
                    self.reset_idle();
                }
                return Some(Ok(delta));
            }
            if self.phase == Phase::Reading {
                match self.decoder.next_event() {
                    Ok(Some(event)) => {
                        match self.parser.event(&event, &mut self.out) {
                            Ok(true) => self.phase = Phase::Draining,
                            Ok(false) => {}
                            Err(e) => return self.fail(e),
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let e = self.protocol(e.to_string());
                        return self.fail(e);
                    }
                }
            }
            if self.phase == Phase::Ended {
                return None;
            }

            let read = tokio::select! {
                biased;
                chunk = self.body.next() => Some(chunk),
                _ = &mut self.timer => None,
            };
            match read {
                Some(Some(Ok(bytes))) => {
                    if self.phase == Phase::Reading {
                        self.decoder.push(&bytes);
                    }
                    if self.got_text {
                        self.reset_idle();
                    }
                }
                Some(Some(Err(e))) => {
                    if self.phase == Phase::Draining {
                        self.phase = Phase::Ended;
                        continue;
                    }
                    let e = match e {
                        PayloadError::Incomplete(_) | PayloadError::Io(_) => {
                            ProviderError::Interrupted {
                                provider: self.endpoint.provider,
                            }
                        }
                        other => self.protocol(other.to_string()),
                    };
                    return self.fail(e);
                }
                Some(None) => {
                    if self.phase == Phase::Draining {
                        self.phase = Phase::Ended;
                        continue;
                    }
                    self.phase = Phase::Ended;
                    let ended = match self.decoder.finish() {
                        Ok(unterminated) => self.parser.end(unterminated, &mut self.out),
                        Err(e) => Err(ProviderError::Protocol {
                            provider: self.endpoint.provider,
                            message: e.to_string(),
                        }),
                    };
                    if let Err(e) = ended {
                        return self.fail(e);
                    }
                }
                None => {
                    if self.phase == Phase::Draining {
                        // Complete already; only the pooling of this connection is lost.
                        self.phase = Phase::Ended;
                        continue;
                    }
                    let s = &self.endpoint.settings;
                    let (what, after) = if self.got_text {
                        ("send anything", s.idle_timeout)
                    } else {
                        ("send its first token", s.first_token_timeout)
                    };
                    let e = ProviderError::Timeout {
                        provider: self.endpoint.provider,
                        what,
                        after_ms: after.as_millis() as u64,
                    };
                    return self.fail(e);
                }
            }
        }
    }

    fn reset_idle(&mut self) {
        let at = Instant::now() + self.endpoint.settings.idle_timeout;
        self.timer.as_mut().reset(at.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "250"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.5")]), now),
            Some(Duration::from_millis(500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("retry-after"),
            HeaderValue::from_str(&date).unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn the_key_is_scrubbed_from_upstream_text() {
        let ep = Endpoint {
            provider: "openai",
            url: String::new(),
            headers: Vec::new(),
            secret: Secret::new("sk-live-123456"),
            settings: UpstreamSettings::default(),
        };
        assert_eq!(
            ep.scrub("Incorrect API key provided: sk-live-123456.".to_owned()),
            "Incorrect API key provided: [redacted]."
        );
    }
}
