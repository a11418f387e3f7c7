//! ragstream: a real-time RAG chat hub.
//!
//! # Layout
//! - [`config`]: settings from the environment, validated once.
//! - [`startup`]: builds the App and returns a running server (main and tests both use it).
//! - [`drain`]: graceful shutdown on SIGTERM/SIGINT.
//! - [`logging`]: log format, request and answer ids on every line, secrets redacted.
//! - [`hub`]: the ChatHub actor (admission, registry, stats) and the session actors.
//! - [`answer`]: the one answer pipeline every transport shares.
//! - [`providers`]: LLM providers behind one trait; the offline extractive answerer.
//! - [`rag`]: chunking, full-text query building, prompts.
//! - [`rate_limit`]: request-rate limits per API key.
//! - [`protocol`]: pure wire codecs (SSE, plain WebSocket).
//! - [`store`]: sqlx persistence.
//! - [`telemetry`]: Prometheus metrics; [`usage`]: usage accounting and budgets.
//! - [`routes`]: thin HTTP handlers; [`auth`]: who is asking; [`error`]: one error type.

pub mod answer;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
pub mod hub;
pub mod listener;
pub mod logging;
pub mod protocol;
pub mod providers;
pub mod rag;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod usage;
