//! Every message the ChatHub accepts, and the one it sends to sessions. None is per token.

use actix::{Message, Recipient};
use actix_ws::CloseCode;
use serde::Serialize;

use super::chat_hub::HubStats;
use super::lease::Lease;
use crate::answer::StopReason;
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
    /// `sse`, `ws`, `signalr` or `json`, for the admin view.
    pub transport: &'static str,
}

/// Sent by [`Lease`]'s `Drop`, never by hand.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub lease_id: u64,
    pub outcome: Option<Outcome>,
    /// What the answer had done by then, also when it was cut short (for the metrics).
    pub progress: Progress,
}

/// An answer's progress as its task saw it; kept on the lease, so it reaches the hub however
/// the answer ends (its metrics and its usage record).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The provider asked (then the one that answered, in a failover chain).
    pub provider: Option<&'static str>,
    /// The model asked (then the one that answered).
    pub model: Option<std::sync::Arc<str>>,
    pub ttft_ms: Option<u64>,
    /// Text deltas relayed so far.
    pub tokens: u64,
    /// Output tokens as the upstream counted them, when it reported usage.
    pub reported_output: Option<u64>,
    /// Input tokens: the upstream's count when `input_reported`, else the hub's estimate.
    pub input_tokens: u64,
    pub input_reported: bool,
}

impl Progress {
    /// Output tokens as the `done` metadata gives them: the upstream's count when it
    /// reported one, else the deltas relayed.
    pub fn output_tokens(&self) -> u64 {
        self.reported_output.unwrap_or(self.tokens)
    }
}

/// How an answer ended, as the pipeline saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ttft_ms: Option<u64>,
    pub tokens: u64,
    pub elapsed_ms: u64,
    /// The stream's error code, when it ended with one.
    pub error_code: Option<String>,
}

impl Outcome {
    /// An answer that failed before any token.
    pub fn failed(code: &str, started: std::time::Instant) -> Outcome {
        Outcome {
            ttft_ms: None,
            tokens: 0,
            elapsed_ms: started.elapsed().as_millis() as u64,
            error_code: Some(code.to_owned()),
        }
    }
}

/// Sent by [`Lease::attach`] once the answer task exists, so the hub can end it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub lease_id: u64,
    pub abort: futures_util::future::AbortHandle,
    /// The answer, for the admin view (its id, and whether anyone is reading it).
    pub answer: std::sync::Arc<crate::answer::AnswerEntry>,
}

/// Asked by the admin routes: end one answer. Replies whether it was running (and, with a
/// tenant, whether it was that tenant's: another tenant's answer is as unknown).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct EndStream {
    pub lease_id: u64,
    /// `None` for an operator: any tenant's.
    pub tenant: Option<String>,
}

/// Asked by the admin routes: the live view in one round trip, of one tenant or of all
/// (`None`, for an operator).
#[derive(Message)]
#[rtype(result = "AdminView")]
pub struct GetAdminView {
    pub tenant: Option<String>,
}

/// Asked by the admin routes: the charts' samples of one tenant or of all (`None`), after
/// the sample `after` (every sample kept, for `None`).
#[derive(Message)]
#[rtype(result = "super::history::HistoryView")]
pub struct GetHistory {
    pub tenant: Option<String>,
    pub after: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub id: u64,
    /// The hub that runs it, in a cluster (`?hub=` of the admin's end-stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub user: String,
    pub tenant: String,
    pub session_id: Option<u64>,
    pub transport: &'static str,
    pub age_ms: u64,
    pub answer_id: Option<String>,
    /// Its connection was lost: it runs on for the resume grace window with nobody reading.
    pub detached: bool,
}

#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Answers that ended with done or error (cut-short answers are counted as cancelled).
    pub answers_total: u64,
    pub cancelled_total: u64,
    pub errors_by_code: std::collections::BTreeMap<String, u64>,
    /// Over the most recent answers.
    pub ttft_ms_p50: Option<u64>,
    pub ttft_ms_p95: Option<u64>,
    /// Tokens of the answers that ended in the last ten seconds, per second.
    pub tokens_per_second: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminView {
    pub stats: HubStats,
    pub connections: Vec<ConnectionInfo>,
    pub streams: Vec<StreamInfo>,
    pub metrics: Metrics,
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
    /// The browser session it was opened with ([`crate::store::KeyOwner::session`]).
    pub browser_session: Option<String>,
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

/// Asked by the admin routes: the open connections of one tenant, or of all (`None`).
#[derive(Message)]
#[rtype(result = "Vec<ConnectionInfo>")]
pub struct ListConnections {
    pub tenant: Option<String>,
}

/// Asked by the admin routes: end one connection. Replies whether it existed (and, with a
/// tenant, was that tenant's).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct EndConnection {
    pub session_id: u64,
    /// `None` for an operator: any tenant's.
    pub tenant: Option<String>,
}

/// Sent by the revoke route: the key is revoked. Its sessions are closed with
/// [`Terminate::key_revoked`], its running answers end with an error, and from now on the
/// hub refuses it an admission or a connection (a request that authenticated just before
/// the revocation may arrive just after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RevokeKey {
    pub key_id: String,
}

/// Sent by a long-lived response that is not a session (the admin event feed), so that
/// revoking its key ends it too.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchKey {
    pub watch_id: u64,
    pub key_id: String,
    /// The browser session it was opened with: signing it out ends the response too.
    pub browser_session: Option<String>,
    pub terminate: Recipient<Terminate>,
}

/// Sent by the sign-out route (and by another hub's, through the control channel): the
/// browser session (its [`crate::store::session_name`]) is over. What it opened ends:
/// WebSocket connections with [`Terminate::signed_out`], SSE answers with a `signed_out`
/// error event, admin event feeds. The hub also refuses it a connection for a while after,
/// as a request that authenticated (or a ticket minted) just before the sign-out may
/// connect just after it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EndBrowserSession {
    pub session: String,
}

/// Sent when a [`WatchKey`] response ends, whatever ended it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnwatchKey {
    pub watch_id: u64,
}

/// Sent by the hub to a session that must end. The session tells its client the way its
/// protocol allows (plain WebSocket: the close code and reason; SignalR: a Close message,
/// then the close frame) and stops, which cancels its answers.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Terminate {
    pub reason: &'static str,
    /// The WebSocket close code.
    pub code: CloseCode,
    /// Whether a SignalR client may reconnect.
    pub allow_reconnect: bool,
    /// Write the endings of the answers the connection follows before the close frame
    /// (a drain: they have ended or are about to), instead of cancelling them.
    pub finish_answers: bool,
    /// For an SSE response: stop its answer for this reason, so that the response ends
    /// with the answer's error event (the client hears why) rather than being cut.
    pub end_answer_as: Option<StopReason>,
}

impl Terminate {
    /// An administrator closed the connection: the client may come back (1001).
    pub fn by_administrator() -> Terminate {
        Terminate {
            reason: "closed by an administrator",
            code: CloseCode::Away,
            allow_reconnect: true,
            finish_answers: false,
            end_answer_as: None,
        }
    }

    /// The hub is shutting down: another instance (or this one, restarted) will take the
    /// client back (1012 Service Restart).
    pub fn shutdown() -> Terminate {
        Terminate {
            reason: "the server is restarting; reconnect",
            code: CloseCode::Restart,
            allow_reconnect: true,
            finish_answers: true,
            end_answer_as: None,
        }
    }

    /// The connection's key was revoked: coming back cannot help (1008, policy).
    pub fn key_revoked() -> Terminate {
        Terminate {
            reason: "api key revoked",
            code: CloseCode::Policy,
            allow_reconnect: false,
            finish_answers: false,
            end_answer_as: None,
        }
    }

    /// The browser session the connection was opened with was signed out: coming back
    /// with it cannot help (1008, policy).
    pub fn signed_out() -> Terminate {
        Terminate {
            reason: "signed out",
            code: CloseCode::Policy,
            allow_reconnect: false,
            finish_answers: false,
            end_answer_as: Some(StopReason::SignedOut),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub id: u64,
    /// The hub that holds it, in a cluster (`?hub=` of the admin's end-connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
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
    #[error("the API key was revoked")]
    KeyRevoked,
    #[error("the server is shutting down; ask again in a moment (another instance, or this one once restarted, will answer)")]
    ShuttingDown,
    #[error(transparent)]
    RateLimited(#[from] crate::rate_limit::RateLimited),
    #[error("the cluster's shared state is unavailable")]
    ClusterUnavailable,
    #[error(transparent)]
    BudgetExceeded(#[from] crate::usage::BudgetExceeded),
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        let code = match e {
            AdmitError::PerUser { .. } => "too_many_streams",
            AdmitError::Global { .. } => "server_busy",
            AdmitError::KeyRevoked => return ApiError::Unauthorized,
            AdmitError::ShuttingDown => return ApiError::ShuttingDown,
            AdmitError::RateLimited(limited) => return ApiError::RateLimited(limited),
            AdmitError::ClusterUnavailable => return ApiError::ClusterUnavailable,
            AdmitError::BudgetExceeded(over) => return ApiError::BudgetExceeded(over),
        };
        ApiError::TooManyStreams {
            code,
            message: e.to_string(),
        }
    }
}

/// The hub is draining: every admission from now on is refused with
/// [`AdmitError::ShuttingDown`]; answers already admitted run on.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct BeginDrain;

/// Ends every WebSocket connection and admin event feed with `terminate` (a drain's last
/// step, once the answers have ended). Answer SSE responses end on their own with their
/// answer's last event.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct TerminateWebSockets {
    pub terminate: Terminate,
}
