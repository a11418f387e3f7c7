//! Wire codecs, pure and unit-tested: no I/O, no actors. Each turns answer events into the
//! bytes of one protocol, and (where clients talk back) frames into typed requests.

pub mod plain_ws;
pub mod signalr;
pub mod sse;
