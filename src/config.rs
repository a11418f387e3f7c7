//! Settings from the environment (and `.env`), validated once at start.
//!
//! Every variable is listed with its default in `.env.example`. A bad value stops the start
//! with one line that names the variable, so a typo never becomes a silent default.

use std::net::SocketAddr;
use std::time::Duration;

/// Which provider answers questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The built-in extractive answerer: no network, no key.
    Offline,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub database_url: String,
    /// Bootstrap admin key for the `default` tenant; generated and printed once when unset.
    pub admin_key: Option<String>,
    pub provider: ProviderKind,
    /// Delay between the offline provider's tokens.
    pub offline_pace: Duration,
    pub max_streams_per_user: usize,
    pub max_streams_global: usize,
    pub max_question_chars: usize,
    pub max_document_bytes: usize,
    /// SSE `: ping` and WebSocket ping interval; half (or less) of `client_timeout`.
    pub heartbeat_interval: Duration,
    /// A WebSocket that sends nothing (not even a pong) for this long is closed.
    pub client_timeout: Duration,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
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
            provider: ProviderKind::Offline,
            offline_pace: Duration::from_millis(25),
            max_streams_per_user: 5,
            max_streams_global: 1000,
            max_question_chars: 4000,
            max_document_bytes: 10 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            workers: 0,
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
            if !v.starts_with("sqlite:") {
                return Err(ConfigError {
                    var: "DATABASE_URL",
                    message: format!(
                        "`{v}` is not supported; use a sqlite: URL such as sqlite://data/ragstream.db"
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
        if let Some(v) = var("RAGSTREAM_PROVIDER") {
            s.provider = match v.trim() {
                "offline" => ProviderKind::Offline,
                other => {
                    return Err(ConfigError {
                        var: "RAGSTREAM_PROVIDER",
                        message: format!("unknown provider `{other}`; known: offline"),
                    })
                }
            };
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
        if let Some(n) = number(&var, "RAGSTREAM_MAX_QUESTION_CHARS", 1, 1_000_000)? {
            s.max_question_chars = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_MAX_DOCUMENT_BYTES", 1, 1 << 30)? {
            s.max_document_bytes = n;
        }
        if let Some(n) = number(&var, "RAGSTREAM_HEARTBEAT_SECS", 1, 3600)? {
            s.heartbeat_interval = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_CLIENT_TIMEOUT_SECS", 2, 86_400)? {
            s.client_timeout = Duration::from_secs(n as u64);
        }
        if let Some(n) = number(&var, "RAGSTREAM_WORKERS", 0, 1024)? {
            s.workers = n;
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
        assert_eq!(s.provider, ProviderKind::Offline);
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
    fn a_bad_address_names_its_variable() {
        let err = from(&[("RAGSTREAM_ADDR", "localhost")]).unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_ADDR");
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
    fn heartbeat_must_be_shorter_than_the_timeout() {
        let err = from(&[
            ("RAGSTREAM_HEARTBEAT_SECS", "30"),
            ("RAGSTREAM_CLIENT_TIMEOUT_SECS", "30"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "RAGSTREAM_HEARTBEAT_SECS");
    }
}
