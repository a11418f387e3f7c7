//! `/api/v1/ask` (one JSON answer) and `/api/v1/ask/stream` (Server-Sent Events, `GET` with
//! a query string or `POST` with a JSON body). Both run the same pipeline; errors known
//! before the stream starts (auth, limits, bad input) are plain HTTP errors.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::answers::{last_event_id, resume_sse, sse_response};
use crate::answer::{
    validate_choice, validate_question, validate_top_k, AnswerOwner, AnswerRequest,
    ConversationRef, ProviderChoice, Start, StreamEvent,
};
use crate::auth::{resolve_stream, stream_ticket, Principal, StreamPrincipal};
use crate::error::ApiError;
use crate::hub;
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
    state.store.check_available()?;
    let lease = hub::admit(&state.hub, owner, None, "json").await?;
    // If the client leaves, actix drops this future, and with it the subscription, which
    // stops the answer: this client has no way to come back for it.
    let mut answer = state.pipeline.start(Start {
        request,
        choice,
        lease,
        owner: answer_owner(owner),
        ticket: None,
        label: None,
        cancel_on_drop: true,
    });
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
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<AskParams>,
) -> Result<HttpResponse, ApiError> {
    // A browser's EventSource that lost its connection comes back to the same URL with the
    // last id it saw: that continues the answer it was reading, never a second answer.
    if let Some((answer, after)) = last_event_id(&req)? {
        return resume_sse(&req, &state, &answer, after).await;
    }
    let owner = resolve_stream(req.clone()).await?;
    let (request, choice) = to_request(&state, &owner, query.into_inner(), None)?;
    answer_sse(&state, owner, request, choice, stream_ticket(&req)).await
}

async fn ask_stream_post(
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
    body: web::Json<AskParams>,
) -> Result<HttpResponse, ApiError> {
    let (request, choice) = to_request(&state, &owner, body.into_inner(), None)?;
    answer_sse(&state, owner, request, choice, None).await
}

/// Who may resume or stop an answer: the key that asked.
pub(super) fn answer_owner(owner: &KeyOwner) -> AnswerOwner {
    AnswerOwner {
        key_id: owner.key_id.clone(),
        tenant_id: owner.tenant_id.clone(),
    }
}

/// Admits one answer and returns its Server-Sent Events response. `ticket` is the stream
/// ticket that authorised it, which may then resume it.
pub(super) async fn answer_sse(
    state: &AppState,
    owner: KeyOwner,
    request: AnswerRequest,
    choice: ProviderChoice,
    ticket: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let session_id = hub::next_session_id();
    state.store.check_available()?;
    let lease = hub::admit(&state.hub, &owner, Some(session_id), "sse").await?;
    let answer = state.pipeline.start(Start {
        request,
        choice,
        lease,
        owner: answer_owner(&owner),
        ticket,
        label: None,
        cancel_on_drop: false,
    });
    Ok(sse_response(state, session_id, answer, owner))
}
