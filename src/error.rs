//! One error type for the HTTP API, mapped to status codes and the
//! `{"error":{"code","message"}}` body in one place.
//!
//! The same `code` strings travel in stream `error` events, so SSE, WebSocket and JSON clients
//! branch on one vocabulary.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid X-API-Key header is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An unknown conversation id, or another user's: the two are not told apart.
    #[error("no such conversation")]
    ConversationNotFound,
    /// An unknown answer id, one past its grace window, or another key's: not told apart.
    #[error("no such answer (unknown, ended longer ago than the resume grace window, or not this key's)")]
    AnswerNotFound,
    /// Bad input: `code` says which rule was broken.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    TooManyStreams { code: &'static str, message: String },
    /// The tenant's or the key's monthly output-token budget is spent.
    #[error(transparent)]
    BudgetExceeded(crate::usage::BudgetExceeded),
    /// The tenant holds as much as it may (documents or bytes).
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the service is shutting down")]
    Unavailable,
    /// A drain has begun (SIGTERM): another instance, or this one restarted, will serve.
    #[error("the server is shutting down; retry in a moment")]
    ShuttingDown,
    /// The key's request-rate limit (`RAGSTREAM_RATE_PER_MINUTE`, uploads' own).
    #[error(transparent)]
    RateLimited(#[from] crate::rate_limit::RateLimited),
    /// Redis, which the hubs of a cluster share, does not answer: no answer can be admitted
    /// without it (the limits hold across hubs or not at all).
    #[error("the cluster's shared state (Redis) is unavailable; retry shortly")]
    ClusterUnavailable,
    /// Too much of one kind of work at once; the client may retry shortly.
    #[error("{message}")]
    Busy { code: &'static str, message: String },
    /// The database cannot be reached (down, or the network to it): new work is refused
    /// until it answers again; answers already streaming go on.
    #[error("the database cannot be reached; try again shortly")]
    StorageUnavailable,
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: &'a ErrorBody,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::ConversationNotFound => "conversation_not_found",
            ApiError::AnswerNotFound => "answer_not_found",
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooManyStreams { code, .. } => code,
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::BudgetExceeded(_) => "budget_exceeded",
            ApiError::QuotaExceeded(_) => "quota_exceeded",
            ApiError::Unavailable => "unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::ClusterUnavailable => "cluster_unavailable",
            ApiError::Busy { code, .. } => code,
            ApiError::StorageUnavailable => "storage_unavailable",
            ApiError::Database(_) | ApiError::Internal(_) => "internal",
        }
    }

    /// The body a client sees. Internal errors stay opaque: their detail goes to the log only.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            ApiError::Database(_) | ApiError::Internal(_) => {
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        ErrorBody {
            code: self.code().to_owned(),
            message,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::ConversationNotFound | ApiError::AnswerNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyStreams { .. }
            | ApiError::RateLimited(_)
            | ApiError::BudgetExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QuotaExceeded(_) => StatusCode::CONFLICT,
            ApiError::Unavailable
            | ApiError::ShuttingDown
            | ApiError::ClusterUnavailable
            | ApiError::Busy { .. }
            | ApiError::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            log::error!("{self}");
        }
        let body = self.body();
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs() {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        res.json(ErrorEnvelope { error: &body })
    }
}

impl ApiError {
    /// When a client may try again, for the errors that pass (`Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited(limited) => Some(limited.retry_after_secs),
            ApiError::BudgetExceeded(over) => Some(over.retry_after_secs),
            ApiError::TooManyStreams { .. }
            | ApiError::Busy { .. }
            | ApiError::ShuttingDown
            | ApiError::ClusterUnavailable
            | ApiError::StorageUnavailable => Some(1),
            _ => None,
        }
    }
}

/// The one place database errors become API errors: an unreachable database is a 503 the
/// client may retry, anything else an opaque 500.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_unreachable(&e) {
            log::warn!("the database cannot be reached: {e}");
            ApiError::StorageUnavailable
        } else {
            ApiError::Database(e)
        }
    }
}

/// The HTTP status a non-streaming route answers with when the answer ended with an error
/// event of this `code` (the streams carry the code itself).
pub fn stream_error_status(code: &str) -> StatusCode {
    match code {
        "internal" | "retrieval_failed" | "storage_failed" => StatusCode::INTERNAL_SERVER_ERROR,
        "conversation_not_found" => StatusCode::NOT_FOUND,
        "unavailable" | "server_shutdown" | "storage_unavailable" | "cluster_unavailable" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        "upstream_timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<actix_web::error::JsonPayloadError> for ApiError {
    fn from(e: actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::JsonPayloadError as J;
        match e {
            J::OverflowKnownLength { .. } | J::Overflow { .. } => {
                ApiError::PayloadTooLarge("the JSON body is too large".to_owned())
            }
            J::ContentType => {
                ApiError::UnsupportedMediaType("expected Content-Type: application/json".to_owned())
            }
            J::Deserialize(err) if err.is_data() => {
                ApiError::bad_request("invalid_request", format!("invalid request body: {err}"))
            }
            other => ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {other}"),
            ),
        }
    }
}
