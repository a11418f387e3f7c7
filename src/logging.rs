//! Log lines an operator can use: each carries the request id and the answer id it is
//! about, in text (the default) or one JSON object a line (`RAGSTREAM_LOG_FORMAT=json`),
//! and no secret.
//!
//! The ids travel in a task-local [`LogContext`]: the request-id middleware runs each
//! request inside one, an answer task inside one with its answer id too (see
//! `answer::Pipeline::start`), so any `log::` call on their way is tagged without passing
//! ids around. env_logger stays the logger; this module only gives it a format.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use crate::config::LogFormat;

tokio::task_local! {
    static CONTEXT: LogContext;
}

thread_local! {
    /// Set by [`enter`] for the length of a synchronous piece of work (an actor's handler),
    /// where no task-local scope reaches; wins over the task's.
    static ENTERED: RefCell<Option<LogContext>> = const { RefCell::new(None) };
}

/// What a log line is about.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    pub request_id: Option<Arc<str>>,
    pub answer_id: Option<Arc<str>>,
}

/// The context of the work being done: an [`enter`]ed one, else the polled task's, else
/// empty.
pub fn current() -> LogContext {
    ENTERED
        .with(|entered| entered.borrow().clone())
        .or_else(|| CONTEXT.try_with(LogContext::clone).ok())
        .unwrap_or_default()
}

/// Makes `context` current on this thread until the guard is dropped. Only for
/// synchronous code (an actor's message handler): never hold it across an `.await`.
pub fn enter(context: LogContext) -> Entered {
    let previous = ENTERED.with(|entered| entered.replace(Some(context)));
    Entered { previous }
}

/// See [`enter`]; restores the context from before.
pub struct Entered {
    previous: Option<LogContext>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ENTERED.with(|entered| *entered.borrow_mut() = previous);
    }
}

/// Runs `fut` with `context` (each poll of it sees it).
pub async fn scope<F: std::future::Future>(context: LogContext, fut: F) -> F::Output {
    CONTEXT.scope(context, fut).await
}

/// Runs `f` with `context`, for code that is not a future of its own (an actor's handler
/// starting an answer).
pub fn sync_scope<R>(context: LogContext, f: impl FnOnce() -> R) -> R {
    CONTEXT.sync_scope(context, f)
}

/// Prefixes of the hub's own secrets: API keys, stream tickets, connection tokens, session
/// cookies.
const SECRET_PREFIXES: [&str; 4] = ["rsk_", "rst_", "rsc_", "rss_"];
/// Query parameters whose values are secrets (`id` is SignalR's connection token).
const SECRET_PARAMS: [&str; 4] = ["ticket=", "access_token=", "id=", "key="];
const REDACTED: &str = "[redacted]";

/// `text` with every secret the hub mints, and every value of a secret query parameter,
/// replaced: a last guard for what a library logs (a URL with `?ticket=`), not a licence
/// to log secrets.
pub fn redact(text: &str) -> Cow<'_, str> {
    let hit = SECRET_PREFIXES.iter().any(|p| text.contains(p))
        || SECRET_PARAMS.iter().any(|p| text.contains(p));
    if !hit {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, len, param)) = next_secret(rest) {
        out.push_str(&rest[..at + len]);
        out.push_str(REDACTED);
        let value = &rest[at + len..];
        // Already redacted (the access line redacts its query itself).
        let value = value.strip_prefix(REDACTED).unwrap_or(value);
        // A minted secret has a known alphabet. A parameter's value is whatever the client
        // sent, unescaped `/`, `:` or `+` included: it runs to the next parameter or the end
        // of the URL.
        let end = if param {
            value.find(|c: char| c.is_whitespace() || "&#\"'<>".contains(c))
        } else {
            value.find(|c: char| !(c.is_ascii_alphanumeric() || "-_.~%".contains(c)))
        }
        .unwrap_or(value.len());
        rest = &value[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The first secret in `text`: where its marker starts, the marker's length (a prefix
/// is kept, a parameter's name too; what follows is the secret), and whether it is a
/// parameter.
fn next_secret(text: &str) -> Option<(usize, usize, bool)> {
    let prefixes = SECRET_PREFIXES.iter().filter_map(|p| {
        text.match_indices(p)
            .find(|(at, _)| word_start(text, *at))
            .map(|(at, _)| (at, p.len(), false))
    });
    let params = SECRET_PARAMS.iter().filter_map(|p| {
        text.match_indices(p)
            .find(|(at, _)| *at == 0 || matches!(text.as_bytes()[at - 1], b'?' | b'&' | b' '))
            .map(|(at, _)| (at, p.len(), true))
    });
    prefixes.chain(params).min_by_key(|(at, _, _)| *at)
}

fn word_start(text: &str, at: usize) -> bool {
    at == 0 || !text.as_bytes()[at - 1].is_ascii_alphanumeric()
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: String,
    level: &'a str,
    target: &'a str,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_id: Option<&'a str>,
}

/// Starts env_logger (`RUST_LOG`, default `info`) with the chosen format.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format(move |buf, record| {
        let context = current();
        let msg = record.args().to_string();
        let msg = redact(&msg);
        let request_id = context.request_id.as_deref();
        let answer_id = context.answer_id.as_deref();
        match format {
            LogFormat::Json => {
                let line = JsonLine {
                    ts: buf.timestamp_millis().to_string(),
                    level: record.level().as_str(),
                    target: record.target(),
                    msg: &msg,
                    request_id,
                    answer_id,
                };
                serde_json::to_writer(&mut *buf, &line)?;
                writeln!(buf)
            }
            LogFormat::Text => {
                write!(
                    buf,
                    "[{} {:<5} {}] {msg}",
                    buf.timestamp_millis(),
                    record.level(),
                    record.target()
                )?;
                if let Some(id) = request_id {
                    write!(buf, " request_id={id}")?;
                }
                if let Some(id) = answer_id {
                    write!(buf, " answer_id={id}")?;
                }
                writeln!(buf)
            }
        }
    });
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_and_secret_parameters_are_redacted() {
        assert_eq!(
            redact("GET /api/v1/ask/stream?ticket=rst_abc123&topK=3"),
            "GET /api/v1/ask/stream?ticket=[redacted]&topK=3"
        );
        assert_eq!(
            redact("key rsk_0123abcd revoked, cookie rss_ffee"),
            "key rsk_[redacted] revoked, cookie rss_[redacted]"
        );
        assert_eq!(
            redact("/api/v1/chat/ws?id=9f8e-7d&access_token=eyJ.abc"),
            "/api/v1/chat/ws?id=[redacted]&access_token=[redacted]"
        );
        assert_eq!(
            redact("nothing here: valid=1 rsk"),
            "nothing here: valid=1 rsk"
        );
        // Inside a word it is not a secret.
        assert_eq!(redact("worst_case"), "worst_case");
        // A parameter's value, unescaped, runs to the next parameter.
        assert_eq!(
            redact("\"GET /s?access_token=ab/cd:ef+gh&topK=3#x HTTP/1.1\" 401"),
            "\"GET /s?access_token=[redacted]&topK=3#x HTTP/1.1\" 401"
        );
    }

    #[test]
    fn context_is_seen_inside_its_scope_only() {
        let context = LogContext {
            request_id: Some("r1".into()),
            answer_id: None,
        };
        let seen = sync_scope(context, || current().request_id);
        assert_eq!(seen.as_deref(), Some("r1"));
        assert!(current().request_id.is_none());
        {
            let _outer = enter(LogContext {
                request_id: Some("r2".into()),
                answer_id: None,
            });
            {
                let _inner = enter(LogContext::default());
                assert!(current().request_id.is_none());
            }
            assert_eq!(current().request_id.as_deref(), Some("r2"));
        }
        assert!(current().request_id.is_none());
    }
}
