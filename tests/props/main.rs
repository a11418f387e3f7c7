//! Property tests of the wire codecs: the upstream SSE decoder, the SignalR JSON hub
//! protocol, the plain WebSocket protocol and OpenAI chat completions. Whatever bytes
//! arrive, however the network splits them, nothing panics; a valid stream decodes the same
//! whole or in pieces; what an encoder writes reads back the same.
//!
//! 256 cases per property by default; `PROPTEST_CASES=10000 cargo test --test props` digs
//! deeper. A failure is shrunk and saved under `tests/proptest-regressions/`, which is
//! replayed first on the next run (commit it with the fix).

mod gen;
mod openai_chat;
mod plain_ws;
mod signalr;
mod sse;
mod upstream_sse;
