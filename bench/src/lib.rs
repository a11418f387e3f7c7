//! The ragstream benchmark, as a library so that its smoke test can drive the pieces.
//!
//! # Layout
//! - [`http`]: the bits of HTTP/1.1 the mock, the relay and the clients speak.
//! - [`mock`]: the mock OpenAI upstream; [`relay`]: the bare pass-through relay;
//!   [`actix_relay`]: the same relay on actix-web + awc (the framework's floor).
//! - [`client`]: the load generator's clients (OpenAI format, SSE, WebSocket, SignalR).
//! - [`resume`]: answers whose text is checked against the mock's, cut and resumed.
//! - [`procs`], [`procstat`]: the processes under test and their `/proc` figures.
//! - [`corpus`]: the synthetic corpus for the retrieval figure.
//! - [`run`]: the scenarios; [`report`]: the table and the JSON; [`chart`]: the SVG figure.
//! - [`soak`]: thousands of answers with faults injected, and the checks after them.

pub mod actix_relay;
pub mod chart;
pub mod client;
pub mod corpus;
pub mod http;
pub mod mock;
pub mod procs;
pub mod procstat;
pub mod relay;
pub mod report;
pub mod resume;
pub mod run;
pub mod soak;
