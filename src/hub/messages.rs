//! Every message the ChatHub accepts. None of them is sent per token.

use actix::Message;

use super::chat_hub::HubStats;
use super::lease::Lease;
use crate::error::ApiError;

/// Sent by a session (or the JSON handler) before it starts an answer. The reply is a
/// lease that holds the slot until it is dropped.
#[derive(Message)]
#[rtype(result = "Result<Lease, AdmitError>")]
pub struct Admit {
    /// Stream limits count per user; a user is one API key.
    pub user: String,
    pub tenant: String,
}

/// Sent by [`Lease`]'s `Drop`, never by hand.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub lease_id: u64,
}

/// Sent by a session when it starts, for the registry and the admin view.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session_id: u64,
    /// `ws` or `sse`.
    pub kind: &'static str,
    pub tenant: String,
}

/// Sent by a session when it stops, whatever stopped it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session_id: u64,
}

/// Asked by the admin routes and tests.
#[derive(Message)]
#[rtype(result = "HubStats")]
pub struct GetStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("this user already has {limit} answers streaming; wait for one to end")]
    PerUser { limit: usize },
    #[error("the hub is at its limit of {limit} concurrent answers; retry shortly")]
    Global { limit: usize },
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        let code = match e {
            AdmitError::PerUser { .. } => "too_many_streams",
            AdmitError::Global { .. } => "server_busy",
        };
        ApiError::TooManyStreams {
            code,
            message: e.to_string(),
        }
    }
}
