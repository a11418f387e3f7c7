//! Every message the ChatHub accepts, and the one it sends to sessions. None is per token.

use actix::{Message, Recipient};
use serde::Serialize;

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
    /// The connection the answer streams to, when there is one (not for plain JSON).
    pub session_id: Option<u64>,
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
    pub user: String,
    pub tenant: String,
    /// Where the hub sends [`Terminate`].
    pub terminate: Recipient<Terminate>,
}

/// Sent by a WebSocket session once its first frame has chosen the protocol.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Identify {
    pub session_id: u64,
    /// `plain` or `signalr`.
    pub protocol: &'static str,
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

/// Asked by the admin routes: every open connection.
#[derive(Message)]
#[rtype(result = "Vec<ConnectionInfo>")]
pub struct ListConnections;

/// Asked by the admin routes: end one connection. Replies whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct EndConnection {
    pub session_id: u64,
}

/// Sent by the hub to a session that must end (an administrator closed it). The session
/// tells its client the way its protocol allows (SignalR: a Close message that allows
/// reconnecting) and stops, which cancels its answers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Terminate {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub id: u64,
    pub kind: &'static str,
    pub protocol: Option<&'static str>,
    pub user: String,
    pub tenant: String,
    pub active_streams: usize,
    pub connected_ms: u64,
}

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
