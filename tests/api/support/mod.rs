//! Test doubles the integration tests run the hub against.

pub mod mock_upstream;
