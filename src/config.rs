//! Settings from the environment (and `.env`), validated once at start.
//!
//! Every variable is listed with its default in `.env.example`. A bad value stops the start
//! with one line that names the variable, so a typo never becomes a silent default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which provider answers questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The built-in extractive answerer: no network, no key.
    Offline,
    /// OpenAI chat completions, or any server speaking that shape (Ollama, vLLM, llama.cpp).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Offline,
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
    ];

    /// The name used in settings, requests and answer metadata.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Offline => "offline",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    pub fn parse(name: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A credential. Its `Debug` never shows the value, so settings can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    pub api_key: Secret,
    /// Up to and including `/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct AnthropicSettings {
    pub api_key: Secret,
    /// Without `/v1`; `/v1/messages` is appended.
    pub base_url: String,
    pub model: String,
    /// Anthropic requires an output bound on every request.
    pub max_tokens: u32,
}

/// How the hub talks to LLM upstreams: timeouts, retries, stream limits.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// TCP connect (and TLS handshake) to the upstream.
    pub connect_timeout: Duration,
    /// From sending a request to its first text token, per attempt.
    pub first_token_timeout: Duration,
    /// Longest silence (no bytes at all) once text has started.
    pub idle_timeout: Duration,
    /// Retries after the first attempt, before any token; 0 disables them.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry, with jitter.
    pub retry_base: Duration,
    /// Cap on one backoff delay.
    pub retry_max: Duration,
    /// A `Retry-After` longer than this is not waited for: the error goes to the client
    /// (or the next provider) at once.
    pub retry_after_max: Duration,
    /// Longest upstream SSE line or event; a longer one fails the answer instead of growing
    /// memory.
    pub max_event_bytes: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_retries: 2,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(8),
            retry_after_max: Duration::from_secs(60),
            max_event_bytes: 256 * 1024,
        }
    }
}

/// A model clients may ask for by name: `provider:model`, or `provider:*` for any model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedModel {
    pub provider: ProviderKind,
    /// `None` allows any model of that provider.
    pub model: Option<String>,
}

/// When the session cookie carries `Secure` (`RAGSTREAM_COOKIE_SECURE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSecure {
    /// When the request came over https, or a proxy says so (`X-Forwarded-Proto: https`,
    /// `Forwarded: proto=https`). A client that fakes the header only breaks its own cookie.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub database_url: String,
    /// Bootstrap admin key for the `default` tenant; generated and printed once when unset.
    pub admin_key: Option<String>,
    /// Providers in failover order; the first answers unless it fails before its first
    /// token. Never empty.
    pub providers: Vec<ProviderKind>,
    pub openai: Option<OpenAiSettings>,
    pub anthropic: Option<AnthropicSettings>,
    pub upstream: UpstreamSettings,
    /// Models a request may choose besides each provider's configured one.
    pub allowed_models: Vec<AllowedModel>,
    /// Delay between the offline provider's tokens.
    pub offline_pace: Duration,
    pub max_streams_per_user: usize,
    pub max_streams_global: usize,
    /// Open WebSocket connections per API key; over it the upgrade is refused (429).
    pub max_connections_per_user: usize,
    pub max_question_chars: usize,
    /// Characters of earlier conversation turns sent with a question; the oldest turns are
    /// dropped first. 0 sends no history.
    pub history_budget_chars: usize,
    pub max_document_bytes: usize,
    /// Uploads chunked and written at once; more wait (a bounded time, in a bounded queue)
    /// or get 503.
    pub max_concurrent_uploads: usize,
    /// Files one multipart upload may carry.
    pub max_files_per_upload: usize,
    /// Documents one tenant may hold.
    pub tenant_max_documents: u64,
    /// Bytes of text one tenant may hold, all its documents together.
    pub tenant_max_bytes: u64,
    /// SSE `: ping` and WebSocket ping interval; half (or less) of `client_timeout`.
    pub heartbeat_interval: Duration,
    /// Time between two samples of the admin page's charts (they show 180 samples).
    pub admin_sample_interval: Duration,
    /// A WebSocket that sends nothing (not even a pong) for this long is closed.
    pub client_timeout: Duration,
    /// How long an answer whose connection was lost keeps generating for a resume, and how
    /// long an ended answer's events stay resumable. Zero stops an answer when its client
    /// leaves.
    pub resume_grace: Duration,
    /// A connection whose writes make no progress for this long is closed.
    pub client_write_timeout: Duration,
    /// Most bytes a client socket may hold written but not yet sent (`TCP_NOTSENT_LOWAT`);
    /// 0 leaves the kernel's default. Past it, tokens wait in the answer's log and go out
    /// merged instead of one frame each piling up in the kernel.
    pub tcp_notsent_lowat: u32,
    /// On SIGTERM/SIGINT: how long answers in flight may run on before they are ended with
    /// `server_shutdown`.
    pub shutdown_grace: Duration,
    /// Answers one API key may start per minute, on every transport together (0: no limit).
    pub rate_per_minute: u32,
    /// Document uploads one API key may make per minute (0: no limit).
    pub upload_rate_per_minute: u32,
    /// Every answer's usage is stored (`RAGSTREAM_USAGE_ACCOUNTING`); off, nothing is
    /// recorded and budgets are not enforced.
    pub usage_accounting: bool,
    /// How log lines are written: text for people, JSON (one object a line) for shippers.
    pub log_format: LogFormat,
    /// Bound of one answer's event log; past it the oldest events are dropped.
    pub answer_log_max_bytes: usize,
    /// SignalR stateful reconnect: bytes of hub messages a connection keeps until the client
    /// acknowledges them; a client that lets more pile up loses its connection.
    pub signalr_resend_max_bytes: usize,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Folder of the chat and admin pages.
    pub static_dir: PathBuf,
    /// Origins whose pages may call the API from the browser (`*` for any); empty means
    /// same-origin only.
    pub cors_origins: Vec<String>,
    /// A browser session unused this long ends (sliding).
    pub session_idle: Duration,
    /// A browser session ends this long after sign-in, however busy.
    pub session_max: Duration,
    pub cookie_secure: CookieSecure,
    /// Bearer token that `GET /metrics` requires; without one, only loopback peers may
    /// scrape.
    pub metrics_token: Option<Secret>,
    /// A hub whose heartbeat is older than this is dead: its answers still `streaming` are
    /// marked `interrupted` and its unfinished uploads removed by the hubs alive. It beats
    /// every third of it.
    pub lease_ttl: Duration,
    /// Redis for what several hubs share (admission, tickets, control); `None` runs one hub
    /// with everything in process. A secret: the URL may carry Redis' password.
    pub redis_url: Option<Secret>,
    /// This hub's name in a cluster (admin views, control messages); generated when unset.
    pub hub_id: Option<String>,
}

/// The shape of log lines (`RAGSTREAM_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether a `DATABASE_URL` selects PostgreSQL (otherwise it is a `sqlite:` URL).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/ragstream.db".to_owned(),
            admin_key: None,
            providers: vec![ProviderKind::Offline],
            openai: None,
            anthropic: None,
            upstream: UpstreamSettings::default(),
            allowed_models: Vec::new(),
            offline_pace: Duration::from_millis(25),
            max_streams_per_user: 5,
            max_streams_global: 1000,
            max_connections_per_user: 20,
            max_question_chars: 4000,
            history_budget_chars: 12_000,
            max_document_bytes: 10 * 1024 * 1024,
            max_concurrent_uploads: 2,
            max_files_per_upload: 20,
            tenant_max_documents: 10_000,
            tenant_max_bytes: 1 << 30,
            heartbeat_interval: Duration::from_secs(15),
            admin_sample_interval: crate::hub::history::SAMPLE_INTERVAL,
            client_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_secs(20),
            client_write_timeout: Duration::from_secs(30),
            tcp_notsent_lowat: 16 * 1024,
            shutdown_grace: Duration::from_secs(25),
            rate_per_minute: 0,
            upload_rate_per_minute: 0,
            usage_accounting: true,
            log_format: LogFormat::Text,
            answer_log_max_bytes: 1024 * 1024,
            signalr_resend_max_bytes: 256 * 1024,
            workers: 0,
            static_dir: default_static_dir(),
            cors_origins: Vec::new(),
            session_idle: Duration::from_secs(8 * 3600),
            session_max: Duration::from_secs(7 * 86_400),
            cookie_secure: CookieSecure::Auto,
            metrics_token: None,
            lease_ttl: Duration::from_secs(15),
            redis_url: None,
            hub_id: None,
        }
    }
}

impl Settings {
    /// Reads `.env` (if present) and the environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        // A missing .env is normal; a malformed one is not worth refusing to start over.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable source, so tests need not touch the process env.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());

        if let Some(v) = var("RAGSTREAM_ADDR") {
            s.addr = v.trim().parse().map_err(|_| ConfigError {
                var: "RAGSTREAM_ADDR",
                message: format!("`{v}` is not a socket address such as 127.0.0.1:8080"),
            })?;
        }
        if let Some(v) = var("DATABASE_URL") {
            if !v.starts_with("sqlite:") && !is_postgres_url(&v) {
                return Err(ConfigError {
                    var: "DATABASE_URL",
                    message: format!(
                        "`{v}` is not supported; use a sqlite: URL such as \
                         sqlite://data/ragstream.db or a postgres: URL such as \
                         postgres://user@127.0.0.1:5432/ragstream"
                    ),
                });
            }
            s.database_url = v;
        }
        if let Some(v) = var("RAGSTREAM_ADMIN_KEY") {
            if v.len() < 16 {
                return Err(ConfigError {
                    var: "RAGSTREAM_ADMIN_KEY",
                    message: "must be at least 16 characters".to_owned(),
                });
            }
            s.admin_key = Some(v);
        }
        s.providers = read_providers(&var)?;
        if s.providers.contains(&ProviderKind::OpenAi) {
            s.openai = Some(OpenAiSettings {
                api_key: required_secret(&var, "OPENAI_API_KEY", "openai")?,
                base_url: base_url(&var, "OPENAI_BASE_URL", "https://api.openai.com/v1")?,
                model: var("OPENAI_MODEL").map_or_else(|| "gpt-4o-mini".to_owned(), trimmed),
            });
        }
        if s.providers.contains(&ProviderKind::Anthropic) {
            s.anthropic = Some(AnthropicSettings {
                api_key: required_secret(&var, "ANTHROPIC_API_KEY", "anthropic")?,
                base_url: base_url(&var, "ANTHROPIC_BASE_URL", "https://api.anthropic.com")?,
                model: var("ANTHROPIC_MODEL")
                    .map_or_else(|| "claude-3-5-haiku-latest".to_owned(), trimmed),
                max_tokens: number(&var, "ANTHROPIC_MAX_TOKENS", 1, 1_000_000)?.unwrap_or(1024)
                    as u32,
            });
        }
        if let Some(v) = var("RAGSTREAM_ALLOWED_MODELS") {
            s.allowed_models = read_allowed_models(&v, &s.providers)?;
        }
        let up = &mut s.upstream;
        if let Some(ms) = number(&var, "RAGSTREAM_UPSTREAM_CONNECT_TIMEOUT_MS", 1, 600_000)? {
            up.connect_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = number(
            &var,
            "RAGSTREAM_UPSTREAM_FIRST_TOKEN_TIMEOUT_MS",
            1,
            3_600_000,
        )? {
            up.first_token_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = number(&var, "RAGSTREAM_UPSTREAM_IDLE_TIMEOUT_MS", 1, 3_600_000)? {
            up.idle_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_UPSTREAM_MAX_RETRIES", 0, 10)? {
            up.max_retries = n as u32;
        }
        if let Some(ms) = number(&var, "RAGSTREAM_UPSTREAM_RETRY_BASE_MS", 1, 60_000)? {
            up.retry_base = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = number(&var, "RAGSTREAM_UPSTREAM_RETRY_MAX_MS", 1, 600_000)? {
            up.retry_max = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = number(&var, "RAGSTREAM_UPSTREAM_RETRY_AFTER_MAX_MS", 0, 3_600_000)? {
            up.retry_after_max = Duration::from_millis(ms as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_UPSTREAM_MAX_EVENT_BYTES", 1024, 64 << 20)? {
            up.max_event_bytes = n;
        }
        if let Some(ms) = number(&var, "RAGSTREAM_OFFLINE_PACE_MS", 0, 60_000)? {
            s.offline_pace = Duration::from_millis(ms as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_STREAMS_PER_USER", 1, 100_000)? {
            s.max_streams_per_user = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_STREAMS_GLOBAL", 1, 10_000_000)? {
            s.max_streams_global = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_CONNECTIONS_PER_USER", 1, 100_000)? {
            s.max_connections_per_user = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_QUESTION_CHARS", 1, 1_000_000)? {
            s.max_question_chars = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_HISTORY_BUDGET_CHARS", 0, 10_000_000)? {
            s.history_budget_chars = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_DOCUMENT_BYTES", 1, 1 << 30)? {
            s.max_document_bytes = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_CONCURRENT_UPLOADS", 1, 1024)? {
            s.max_concurrent_uploads = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_FILES_PER_UPLOAD", 1, 10_000)? {
            s.max_files_per_upload = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_TENANT_MAX_DOCUMENTS", 1, 1 << 40)? {
            s.tenant_max_documents = n as u64;
        }
        if let Some(n) = number(&var, "RAGSTREAM_TENANT_MAX_BYTES", 1, 1 << 50)? {
            s.tenant_max_bytes = n as u64;
        }
        if let Some(n) = number(&var, "RAGSTREAM_HEARTBEAT_SECS", 1, 3600)? {
            s.heartbeat_interval = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_ADMIN_SAMPLE_SECS", 1, 60)? {
            s.admin_sample_interval = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_CLIENT_TIMEOUT_SECS", 2, 86_400)? {
            s.client_timeout = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_RESUME_GRACE_SECS", 0, 3600)? {
            s.resume_grace = Duration::from_secs(n as u64);
        }
        read_cluster(&var, &mut s)?;
        if let Some(n) = number(&var, "RAGSTREAM_CLIENT_WRITE_TIMEOUT_SECS", 1, 3600)? {
            s.client_write_timeout = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_TCP_NOTSENT_LOWAT", 0, 1 << 30)? {
            s.tcp_notsent_lowat = n as u32;
        }
        if let Some(n) = number(&var, "RAGSTREAM_SHUTDOWN_GRACE_SECS", 0, 3600)? {
            s.shutdown_grace = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_RATE_PER_MINUTE", 0, 1_000_000)? {
            s.rate_per_minute = n as u32;
        }
        if let Some(n) = number(&var, "RAGSTREAM_UPLOAD_RATE_PER_MINUTE", 0, 1_000_000)? {
            s.upload_rate_per_minute = n as u32;
        }
        if let Some(v) = var("RAGSTREAM_USAGE_ACCOUNTING") {
            s.usage_accounting = match v.trim() {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ConfigError {
                        var: "RAGSTREAM_USAGE_ACCOUNTING",
                        message: format!("`{other}` is not on or off"),
                    })
                }
            };
        }
        if let Some(v) = var("RAGSTREAM_LOG_FORMAT") {
            s.log_format = match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError {
                        var: "RAGSTREAM_LOG_FORMAT",
                        message: format!("`{other}` is not text or json"),
                    })
                }
            };
        }
        if let Some(n) = number(&var, "RAGSTREAM_ANSWER_LOG_MAX_BYTES", 4096, 1 << 30)? {
            s.answer_log_max_bytes = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_SIGNALR_RESEND_MAX_BYTES", 4096, 1 << 30)? {
            s.signalr_resend_max_bytes = n;
        }
        if let Some(dir) = var("RAGSTREAM_STATIC_DIR") {
            s.static_dir = PathBuf::from(dir);
        }
        if let Some(list) = var("RAGSTREAM_CORS_ORIGINS") {
            s.cors_origins = parse_origins(&list)?;
        }
        if let Some(n) = number(&var, "RAGSTREAM_WORKERS", 0, 1024)? {
            s.workers = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_SESSION_IDLE_SECS", 60, 31_536_000)? {
            s.session_idle = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_SESSION_MAX_SECS", 60, 31_536_000)? {
            s.session_max = Duration::from_secs(n as u64);
        }
        if s.session_max < s.session_idle {
            return Err(ConfigError {
                var: "RAGSTREAM_SESSION_MAX_SECS",
                message: "must be at least RAGSTREAM_SESSION_IDLE_SECS".to_owned(),
            });
        }
        if let Some(v) = var("RAGSTREAM_COOKIE_SECURE") {
            s.cookie_secure = match v.trim() {
                "auto" => CookieSecure::Auto,
                "true" => CookieSecure::Always,
                "false" => CookieSecure::Never,
                other => {
                    return Err(ConfigError {
                        var: "RAGSTREAM_COOKIE_SECURE",
                        message: format!("`{other}` is not auto, true or false"),
                    })
                }
            };
        }
        if let Some(v) = var("RAGSTREAM_METRICS_TOKEN") {
            let token = v.trim();
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError {
                    var: "RAGSTREAM_METRICS_TOKEN",
                    message: "must be at least 16 printable characters without spaces".to_owned(),
                });
            }
            s.metrics_token = Some(Secret::new(token));
        }
        if s.heartbeat_interval >= s.client_timeout {
            return Err(ConfigError {
                var: "RAGSTREAM_HEARTBEAT_SECS",
                message: "must be shorter than RAGSTREAM_CLIENT_TIMEOUT_SECS".to_owned(),
            });
        }
        Ok(s)
    }
}

fn trimmed(v: String) -> String {
    v.trim().to_owned()
}

fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn known_providers() -> String {
    ProviderKind::ALL.map(ProviderKind::name).join(", ")
}

/// `RAGSTREAM_PROVIDERS` (a failover chain) wins over `RAGSTREAM_PROVIDER` (one provider).
fn read_providers(
    var: &impl Fn(&'static str) -> Option<String>,
) -> Result<Vec<ProviderKind>, ConfigError> {
    let (name, raw) = match (var("RAGSTREAM_PROVIDERS"), var("RAGSTREAM_PROVIDER")) {
        (Some(chain), _) => ("RAGSTREAM_PROVIDERS", chain),
        (None, Some(one)) => ("RAGSTREAM_PROVIDER", one),
        (None, None) => return Ok(vec![ProviderKind::Offline]),
    };
    let mut kinds = Vec::new();
    for part in list(&raw) {
        let kind = ProviderKind::parse(part).ok_or_else(|| ConfigError {
            var: name,
            message: format!("unknown provider `{part}`; known: {}", known_providers()),
        })?;
        if kinds.contains(&kind) {
            return Err(ConfigError {
                var: name,
                message: format!("`{part}` is listed twice"),
            });
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(ConfigError {
            var: name,
            message: format!("name at least one provider; known: {}", known_providers()),
        });
    }
    if name == "RAGSTREAM_PROVIDER" && kinds.len() > 1 {
        return Err(ConfigError {
            var: name,
            message: "names one provider; list several in RAGSTREAM_PROVIDERS".to_owned(),
        });
    }
    Ok(kinds)
}

fn required_secret(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    provider: &str,
) -> Result<Secret, ConfigError> {
    // The value itself never goes into a message.
    var(name)
        .map(|v| Secret::new(v.trim()))
        .ok_or_else(|| ConfigError {
            var: name,
            message: format!("is required when the {provider} provider is used"),
        })
}

fn base_url(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(default.to_owned());
    };
    let url = raw.trim().trim_end_matches('/');
    let valid = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<actix_web::http::Uri>().is_ok()
        && !url.contains(['?', '#']);
    if !valid {
        return Err(ConfigError {
            var: name,
            message: format!("`{url}` is not an http:// or https:// URL without query"),
        });
    }
    Ok(url.to_owned())
}

fn read_allowed_models(
    raw: &str,
    providers: &[ProviderKind],
) -> Result<Vec<AllowedModel>, ConfigError> {
    const VAR: &str = "RAGSTREAM_ALLOWED_MODELS";
    let mut allowed = Vec::new();
    for entry in list(raw) {
        let Some((provider, model)) = entry.split_once(':') else {
            return Err(ConfigError {
                var: VAR,
                message: format!("`{entry}` is not provider:model (or provider:*)"),
            });
        };
        let provider = match ProviderKind::parse(provider.trim()) {
            Some(kind) if providers.contains(&kind) => kind,
            _ => {
                return Err(ConfigError {
                    var: VAR,
                    message: format!(
                        "`{entry}` names a provider that is not configured; configured: {}",
                        providers
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
            }
        };
        let model = model.trim();
        if model.is_empty() {
            return Err(ConfigError {
                var: VAR,
                message: format!("`{entry}` has no model name"),
            });
        }
        allowed.push(AllowedModel {
            provider,
            model: (model != "*").then(|| model.to_owned()),
        });
    }
    Ok(allowed)
}

/// `*`, or a comma-separated list of `scheme://host[:port]` origins.
fn parse_origins(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut origins = Vec::new();
    for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let valid = origin == "*"
            || origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !valid {
            return Err(ConfigError {
                var: "RAGSTREAM_CORS_ORIGINS",
                message: format!(
                    "`{origin}` is not an origin such as http://localhost:5173 (or *)"
                ),
            });
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

/// `static` in the working directory when there is one (a checkout run with `cargo run`),
/// else the folder this binary was built from.
fn default_static_dir() -> PathBuf {
    let here = PathBuf::from("static");
    if here.is_dir() {
        here
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
    }
}

/// `REDIS_URL`, `RAGSTREAM_LEASE_TTL_SECS`, `RAGSTREAM_HUB_ID`.
fn read_cluster(
    var: &impl Fn(&'static str) -> Option<String>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    if let Some(v) = var("REDIS_URL") {
        let v = v.trim().to_owned();
        if !v.starts_with("redis://") {
            // Not echoed: it may carry a password.
            return Err(ConfigError {
                var: "REDIS_URL",
                message:
                    "must be a redis:// URL such as redis://127.0.0.1:6379/0 (TLS is not supported)"
                        .to_owned(),
            });
        }
        s.redis_url = Some(Secret::new(v));
    }
    if let Some(n) = number(var, "RAGSTREAM_LEASE_TTL_SECS", 3, 3600)? {
        s.lease_ttl = Duration::from_secs(n as u64);
    }
    if let Some(v) = var("RAGSTREAM_HUB_ID") {
        let v = v.trim().to_owned();
        if v.len() > 64
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError {
                var: "RAGSTREAM_HUB_ID",
                message: "use up to 64 letters, digits, `-` or `_`".to_owned(),
            });
        }
        s.hub_id = Some(v);
    }
    Ok(())
}

fn number(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(None);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError {
            var: name,
            message: format!("`{raw}` is not a whole number between {min} and {max}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_variables_give_the_embedded_defaults() {
        let s = from(&[]).expect("defaults are valid");
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url, "sqlite://data/ragstream.db");
        assert_eq!(s.max_streams_per_user, 5);
        assert_eq!(s.max_connections_per_user, 20);
        assert_eq!(s.providers, vec![ProviderKind::Offline]);
        assert!(s.openai.is_none() && s.anthropic.is_none());
    }

    #[test]
    fn postgres_urls_are_accepted_and_others_named() {
        let s = from(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rs")]).unwrap();
        assert_eq!(s.database_url, "postgres://postgres@127.0.0.1:5432/rs");
        assert_eq!(s.lease_ttl, Duration::from_secs(15));
        let err = from(&[("DATABASE_URL", "mysql://x/y")]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let err = from(&[("RAGSTREAM_LEASE_TTL_SECS", "1")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_LEASE_TTL_SECS");
        let s = from(&[("RAGSTREAM_LEASE_TTL_SECS", "30")]).unwrap();
        assert_eq!(s.lease_ttl, Duration::from_secs(30));
    }

    #[test]
    fn openai_without_its_key_names_the_missing_variable() {
        let err = from(&[("RAGSTREAM_PROVIDER", "openai")]).unwrap_err();
        assert_eq!(err.var, "OPENAI_API_KEY");
        let err = from(&[
            ("RAGSTREAM_PROVIDERS", "openai, anthropic"),
            ("OPENAI_API_KEY", "k"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "ANTHROPIC_API_KEY");
    }

    #[test]
    fn provider_settings_have_defaults_and_trailing_slashes_are_dropped() {
        let s = from(&[
            ("RAGSTREAM_PROVIDERS", "anthropic,openai"),
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_BASE_URL", "http://localhost:11434/v1/"),
            ("OPENAI_MODEL", "llama3.2"),
            ("ANTHROPIC_API_KEY", "ak-test"),
        ])
        .unwrap();
        assert_eq!(
            s.providers,
            vec![ProviderKind::Anthropic, ProviderKind::OpenAi]
        );
        let openai = s.openai.unwrap();
        assert_eq!(openai.base_url, "http://localhost:11434/v1");
        assert_eq!(openai.model, "llama3.2");
        let anthropic = s.anthropic.unwrap();
        assert_eq!(anthropic.base_url, "https://api.anthropic.com");
        assert_eq!(anthropic.max_tokens, 1024);
    }

    #[test]
    fn operations_settings_parse_and_refuse_bad_values() {
        let d = from(&[]).unwrap();
        assert_eq!(d.shutdown_grace, Duration::from_secs(25));
        assert_eq!((d.rate_per_minute, d.upload_rate_per_minute), (0, 0));
        assert_eq!(d.log_format, LogFormat::Text);
        assert!(d.usage_accounting);
        let off = from(&[("RAGSTREAM_USAGE_ACCOUNTING", "off")]).unwrap();
        assert!(!off.usage_accounting);
        let err = from(&[("RAGSTREAM_USAGE_ACCOUNTING", "no")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_USAGE_ACCOUNTING");
        let s = from(&[
            ("RAGSTREAM_SHUTDOWN_GRACE_SECS", "5"),
            ("RAGSTREAM_RATE_PER_MINUTE", "60"),
            ("RAGSTREAM_UPLOAD_RATE_PER_MINUTE", "3"),
            ("RAGSTREAM_LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(5));
        assert_eq!((s.rate_per_minute, s.upload_rate_per_minute), (60, 3));
        assert_eq!(s.log_format, LogFormat::Json);
        for (var, bad) in [
            ("RAGSTREAM_SHUTDOWN_GRACE_SECS", "-1"),
            ("RAGSTREAM_RATE_PER_MINUTE", "lots"),
            ("RAGSTREAM_UPLOAD_RATE_PER_MINUTE", "1.5"),
            ("RAGSTREAM_LOG_FORMAT", "xml"),
        ] {
            assert_eq!(from(&[(var, bad)]).unwrap_err().var, var);
        }
    }

    #[test]
    fn keys_never_show_in_debug_output_or_errors() {
        let s = from(&[
            ("RAGSTREAM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-secret-1"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("sk-secret-1"));
        let err = from(&[
            ("RAGSTREAM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-secret-1"),
            ("OPENAI_BASE_URL", "ftp://x"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "OPENAI_BASE_URL");
        assert!(!err.to_string().contains("sk-secret-1"));
    }

    #[test]
    fn a_provider_chain_refuses_duplicates_and_a_single_provider_refuses_lists() {
        assert_eq!(
            from(&[("RAGSTREAM_PROVIDERS", "offline,offline")])
                .unwrap_err()
                .var,
            "RAGSTREAM_PROVIDERS"
        );
        assert_eq!(
            from(&[("RAGSTREAM_PROVIDER", "offline,openai")])
                .unwrap_err()
                .var,
            "RAGSTREAM_PROVIDER"
        );
    }

    #[test]
    fn allowed_models_name_configured_providers() {
        let s = from(&[
            ("RAGSTREAM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "k"),
            ("RAGSTREAM_ALLOWED_MODELS", "openai:gpt-4o, openai:*"),
        ])
        .unwrap();
        assert_eq!(s.allowed_models.len(), 2);
        assert_eq!(s.allowed_models[0].model.as_deref(), Some("gpt-4o"));
        assert_eq!(s.allowed_models[1].model, None);
        for bad in ["anthropic:claude", "gpt-4o", "openai:"] {
            let err = from(&[
                ("RAGSTREAM_PROVIDER", "openai"),
                ("OPENAI_API_KEY", "k"),
                ("RAGSTREAM_ALLOWED_MODELS", bad),
            ])
            .unwrap_err();
            assert_eq!(err.var, "RAGSTREAM_ALLOWED_MODELS", "{bad}");
        }
    }

    #[test]
    fn upstream_timeouts_and_retries_are_read_in_milliseconds() {
        let s = from(&[
            ("RAGSTREAM_UPSTREAM_CONNECT_TIMEOUT_MS", "250"),
            ("RAGSTREAM_UPSTREAM_FIRST_TOKEN_TIMEOUT_MS", "1000"),
            ("RAGSTREAM_UPSTREAM_IDLE_TIMEOUT_MS", "500"),
            ("RAGSTREAM_UPSTREAM_MAX_RETRIES", "0"),
        ])
        .unwrap();
        assert_eq!(s.upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(s.upstream.first_token_timeout, Duration::from_secs(1));
        assert_eq!(s.upstream.idle_timeout, Duration::from_millis(500));
        assert_eq!(s.upstream.max_retries, 0);
        assert_eq!(
            from(&[("RAGSTREAM_UPSTREAM_MAX_RETRIES", "99")])
                .unwrap_err()
                .var,
            "RAGSTREAM_UPSTREAM_MAX_RETRIES"
        );
    }

    #[test]
    fn cors_origins_are_checked() {
        let s = from(&[(
            "RAGSTREAM_CORS_ORIGINS",
            "http://localhost:5173, https://app.example.com",
        )])
        .unwrap();
        assert_eq!(
            s.cors_origins,
            ["http://localhost:5173", "https://app.example.com"]
        );
        let err = from(&[("RAGSTREAM_CORS_ORIGINS", "localhost:5173")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_CORS_ORIGINS");
        let err = from(&[("RAGSTREAM_CORS_ORIGINS", "http://x.com/path")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_CORS_ORIGINS");
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let err = from(&[("RAGSTREAM_MAX_STREAMS_PER_USER", "lots")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_MAX_STREAMS_PER_USER");
        assert!(err
            .to_string()
            .starts_with("RAGSTREAM_MAX_STREAMS_PER_USER: "));
    }

    #[test]
    fn the_history_budget_defaults_to_twelve_thousand_and_may_be_zero() {
        assert_eq!(from(&[]).unwrap().history_budget_chars, 12_000);
        let s = from(&[("RAGSTREAM_HISTORY_BUDGET_CHARS", "0")]).unwrap();
        assert_eq!(s.history_budget_chars, 0);
        for bad in ["-1", "lots", "20000000"] {
            let err = from(&[("RAGSTREAM_HISTORY_BUDGET_CHARS", bad)]).unwrap_err();
            assert_eq!(err.var, "RAGSTREAM_HISTORY_BUDGET_CHARS", "{bad}");
        }
    }

    #[test]
    fn session_times_and_the_secure_flag_are_checked() {
        let s = from(&[]).unwrap();
        assert_eq!(s.session_idle, Duration::from_secs(28_800));
        assert_eq!(s.session_max, Duration::from_secs(604_800));
        assert_eq!(s.cookie_secure, CookieSecure::Auto);
        let s = from(&[
            ("RAGSTREAM_SESSION_IDLE_SECS", "600"),
            ("RAGSTREAM_SESSION_MAX_SECS", "3600"),
            ("RAGSTREAM_COOKIE_SECURE", "true"),
        ])
        .unwrap();
        assert_eq!(s.session_idle, Duration::from_secs(600));
        assert_eq!(s.session_max, Duration::from_secs(3600));
        assert_eq!(s.cookie_secure, CookieSecure::Always);
        let err = from(&[
            ("RAGSTREAM_SESSION_IDLE_SECS", "7200"),
            ("RAGSTREAM_SESSION_MAX_SECS", "3600"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_SESSION_MAX_SECS");
        let err = from(&[("RAGSTREAM_COOKIE_SECURE", "yes")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_COOKIE_SECURE");
        let err = from(&[("RAGSTREAM_SESSION_IDLE_SECS", "5")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_SESSION_IDLE_SECS");
    }

    #[test]
    fn the_cluster_settings_are_checked() {
        let s = from(&[]).expect("defaults");
        assert_eq!(s.redis_url, None);
        assert_eq!(s.lease_ttl, Duration::from_secs(15));
        let s = from(&[
            ("REDIS_URL", "redis://127.0.0.1:6379/3"),
            ("RAGSTREAM_LEASE_TTL_SECS", "4"),
            ("RAGSTREAM_HUB_ID", "hub-a_1"),
        ])
        .expect("valid");
        assert_eq!(
            s.redis_url.as_ref().map(Secret::expose),
            Some("redis://127.0.0.1:6379/3")
        );
        assert_eq!(s.lease_ttl, Duration::from_secs(4));
        assert_eq!(s.hub_id.as_deref(), Some("hub-a_1"));
        let s = from(&[("REDIS_URL", "redis://:pa55word@127.0.0.1:6379/0")]).expect("valid");
        assert!(!format!("{s:?}").contains("pa55word"));
        let err = from(&[("REDIS_URL", "rediss://:pa55word@h")]).unwrap_err();
        assert!(!err.to_string().contains("pa55word"));
        for (var, value) in [
            ("REDIS_URL", "http://127.0.0.1:6379"),
            ("RAGSTREAM_LEASE_TTL_SECS", "1"),
            ("RAGSTREAM_HUB_ID", "a b"),
        ] {
            let err = from(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
        }
    }

    #[test]
    fn a_bad_address_names_its_variable() {
        let err = from(&[("RAGSTREAM_ADDR", "localhost")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_ADDR");
    }

    #[test]
    fn every_value_in_env_example_is_accepted() {
        let pairs: Vec<(&str, &str)> = include_str!("../.env.example")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        assert!(pairs.len() > 10);
        let s = from(&pairs).expect(".env.example is valid");
        assert_eq!(s.upstream.max_event_bytes, 256 * 1024);
        assert_eq!(s.max_files_per_upload, 20);
        assert_eq!(s.tenant_max_documents, 10_000);
        assert_eq!(s.tenant_max_bytes, 1 << 30);
    }

    #[test]
    fn an_unknown_provider_is_refused() {
        let err = from(&[("RAGSTREAM_PROVIDER", "gpt")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_PROVIDER");
    }

    #[test]
    fn a_short_admin_key_is_refused() {
        let err = from(&[("RAGSTREAM_ADMIN_KEY", "short")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_ADMIN_KEY");
    }

    #[test]
    fn a_short_or_spaced_metrics_token_is_refused() {
        for bad in ["short", "has a space inside it"] {
            let err = from(&[("RAGSTREAM_METRICS_TOKEN", bad)]).unwrap_err();
            assert_eq!(err.var, "RAGSTREAM_METRICS_TOKEN");
        }
        let s = from(&[("RAGSTREAM_METRICS_TOKEN", "scrape-token-0123456789")]).unwrap();
        assert_eq!(
            s.metrics_token.as_ref().map(Secret::expose),
            Some("scrape-token-0123456789")
        );
    }

    #[test]
    fn heartbeat_must_be_shorter_than_the_timeout() {
        let err = from(&[
            ("RAGSTREAM_HEARTBEAT_SECS", "30"),
            ("RAGSTREAM_CLIENT_TIMEOUT_SECS", "30"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_HEARTBEAT_SECS");
    }
}
