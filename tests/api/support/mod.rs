//! Test doubles the integration tests run the hub against.

pub mod cut_proxy;
pub mod hub_process;
pub mod mock_upstream;
pub mod raw_ws;
pub mod test_db;
