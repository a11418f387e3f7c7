//! `/api/v1/ask` (one JSON answer) and `/api/v1/ask/stream` (Server-Sent Events, `GET` with
//! a query string or `POST` with a JSON body). Both run the same pipeline; errors known
//! before the stream starts (auth, limits, bad input) are plain HTTP errors.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::answer::{
    validate_choice, validate_question, validate_top_k, AnswerRequest, ConversationRef,
    ProviderChoice, StreamEvent,
};
use crate::auth::{Principal, StreamPrincipal};
use crate::error::ApiError;
use crate::hub::{self, SseSession};
use crate::startup::AppState;
use crate::store::KeyOwner;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ask", web::post().to(ask)).service(
        web::resource("/ask/stream")
            .route(web::get().to(ask_stream_get))
            .route(web::post().to(ask_stream_post)),
    );
}

#[derive(Deserialize)]
pub(super) struct AskParams {
    #[serde(alias = "message")]
    pub question: Option<String>,
    #[serde(rename = "topK", alias = "top_k")]
    pub top_k: Option<i64>,
    /// Optional: one configured provider answers alone (no failover).
    pub provider: Option<String>,
    /// Optional: a model from the allow-list.
    pub model: Option<String>,
}

/// Checks a question's parameters. `conversation` makes the answer a conversation turn.
pub(super) fn to_request(
    state: &AppState,
    owner: &KeyOwner,
    params: AskParams,
    conversation: Option<ConversationRef>,
) -> Result<(AnswerRequest, ProviderChoice), ApiError> {
    let question = validate_question(
        params.question.as_deref().unwrap_or(""),
        state.settings.max_question_chars,
    )?;
    let choice = validate_choice(
        params.provider.as_deref(),
        params.model.as_deref(),
        state.pipeline.providers(),
    )?;
    let request = AnswerRequest {
        tenant_id: owner.tenant_id.clone(),
        question,
        top_k: validate_top_k(params.top_k)?,
        conversation,
    };
    Ok((request, choice))
}

async fn ask(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    body: web::Json<AskParams>,
) -> Result<HttpResponse, ApiError> {
    let (request, choice) = to_request(&state, &owner, body.into_inner(), None)?;
    answer_json(&state, &owner, request, choice).await
}

/// Admits and runs one answer and returns it as one JSON response:
/// `{"answer","sources","metadata"}`, with `conversationId` for a conversation turn.
pub(super) async fn answer_json(
    state: &AppState,
    owner: &KeyOwner,
    request: AnswerRequest,
    choice: ProviderChoice,
) -> Result<HttpResponse, ApiError> {
    let lease = hub::admit(&state.hub, owner, None, "json").await?;
    // If the client leaves, actix drops this future, and with it the answer.
    let mut answer = state.pipeline.start_with(request, choice, lease);
    let mut text = String::new();
    let mut sources = None;
    let mut conversation = None;
    while let Some(ev) = answer.next().await {
        match ev.event {
            StreamEvent::Conversation(id) => conversation = Some(id),
            StreamEvent::Sources(s) => sources = Some(s),
            StreamEvent::Token(t) => text.push_str(&t),
            StreamEvent::Done(metadata) => {
                let mut body = json!({
                    "answer": text,
                    "sources": sources,
                    "metadata": metadata,
                });
                if let Some(id) = conversation {
                    body["conversationId"] = json!(id);
                }
                return Ok(HttpResponse::Ok().json(body));
            }
            StreamEvent::Error(error) => {
                let status = match error.code.as_str() {
                    "internal" | "retrieval_failed" | "storage_failed" => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    "conversation_not_found" => StatusCode::NOT_FOUND,
                    "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_timeout" => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                // A provider failure keeps the partial answer, as the streams do.
                let mut body = match ev.partial {
                    Some(metadata) => json!({
                        "error": error,
                        "answer": text,
                        "sources": sources,
                        "metadata": metadata,
                    }),
                    None => json!({ "error": error }),
                };
                if let Some(id) = conversation {
                    body["conversationId"] = json!(id);
                }
                return Ok(HttpResponse::build(status).json(body));
            }
        }
    }
    Err(ApiError::Internal(
        "the answer ended without a result".into(),
    ))
}

async fn ask_stream_get(
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
    query: web::Query<AskParams>,
) -> Result<HttpResponse, ApiError> {
    stream(state, owner, query.into_inner()).await
}

async fn ask_stream_post(
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
    body: web::Json<AskParams>,
) -> Result<HttpResponse, ApiError> {
    stream(state, owner, body.into_inner()).await
}

async fn stream(
    state: web::Data<AppState>,
    owner: KeyOwner,
    params: AskParams,
) -> Result<HttpResponse, ApiError> {
    let (request, choice) = to_request(&state, &owner, params, None)?;
    answer_sse(&state, owner, request, choice).await
}

/// Admits one answer and returns its Server-Sent Events response.
pub(super) async fn answer_sse(
    state: &AppState,
    owner: KeyOwner,
    request: AnswerRequest,
    choice: ProviderChoice,
) -> Result<HttpResponse, ApiError> {
    let session_id = hub::next_session_id();
    let lease = hub::admit(&state.hub, &owner, Some(session_id), "sse").await?;
    let answer = state.pipeline.start_with(request, choice, lease);
    let body = SseSession::start(
        session_id,
        answer,
        owner,
        state.hub.clone(),
        state.settings.heartbeat_interval,
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Tells nginx and similar proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
