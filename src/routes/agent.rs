//! `/api/v1/agent/chat` (one JSON answer) and `/api/v1/agent/chat/stream` (Server-Sent
//! Events, `GET` with a query string or `POST` with a JSON body): agent chat, where every
//! question is a turn of a conversation. Fields: `message`, `conversationId` (omitted: a new
//! conversation, whose id the answer carries), `topK`, `provider`, `model`.
//!
//! The same pipeline as `/ask` answers; the conversation is checked here, before a stream
//! slot is taken, so an unknown (or another user's) conversation is a plain HTTP 404.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::answers::{last_event_id, resume_sse};
use super::ask::{answer_json, answer_sse, to_request, AskParams};
use super::table::Routes;
use crate::answer::{conversation_id, AnswerRequest, ConversationRef, ProviderChoice};
use crate::auth::{resolve_stream, stream_ticket, Principal, StreamPrincipal};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::KeyOwner;

pub fn configure(routes: &mut Routes) {
    routes
        .post("/agent/chat", chat)
        .get("/agent/chat/stream", chat_stream_get)
        .post("/agent/chat/stream", chat_stream_post);
}

#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ChatParams {
    #[serde(alias = "question")]
    message: Option<String>,
    #[serde(rename = "conversationId", alias = "conversation_id")]
    conversation_id: Option<String>,
    #[serde(rename = "topK", alias = "top_k")]
    top_k: Option<i64>,
    provider: Option<String>,
    model: Option<String>,
}

/// Validates the request and makes sure the conversation to continue is the caller's.
async fn turn(
    state: &AppState,
    owner: &KeyOwner,
    params: ChatParams,
) -> Result<(AnswerRequest, ProviderChoice), ApiError> {
    let conversation = ConversationRef {
        user_id: owner.key_id.clone(),
        id: conversation_id(params.conversation_id.as_deref()),
    };
    let ask = AskParams {
        question: params.message,
        top_k: params.top_k,
        provider: params.provider,
        model: params.model,
    };
    let existing = conversation.id.clone();
    let request = to_request(state, owner, ask, Some(conversation))?;
    if let Some(id) = existing {
        if !state
            .store
            .conversation_exists(&owner.tenant_id, &owner.key_id, &id)
            .await?
        {
            return Err(ApiError::ConversationNotFound);
        }
    }
    Ok(request)
}

#[utoipa::path(
    operation_id = "agent_chat",
    summary = "Ask a conversation turn, answered as one JSON body",
    post,
    path = "/api/v1/agent/chat",
    tag = "answers",
    request_body(content = ChatParams, description = "A turn of a conversation", content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        crate::routes::api_doc::AnswerJsonResponses,
        (status = 404, description = "No such conversation (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn chat(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    body: web::Json<ChatParams>,
) -> Result<HttpResponse, ApiError> {
    let (request, choice) = turn(&state, &owner, body.into_inner()).await?;
    answer_json(&state, &owner, request, choice).await
}

#[utoipa::path(
    operation_id = "agent_chat_stream_get",
    summary = "Ask a conversation turn, answered as Server-Sent Events",
    get,
    path = "/api/v1/agent/chat/stream",
    tag = "answers",
    params(ChatParams, ("Last-Event-ID" = Option<String>, Header, description = "An EventSource reconnecting: continues that answer")),
    security(("api_key" = []), ("ticket" = []), ("session" = [])),
    responses(
        crate::routes::api_doc::AnswerStreamResponses,
        (status = 404, description = "No such conversation (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn chat_stream_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ChatParams>,
) -> Result<HttpResponse, ApiError> {
    // An EventSource reconnecting continues the turn it was reading (see `ask`).
    if let Some((answer, after)) = last_event_id(&req)? {
        return resume_sse(&req, &state, &answer, after).await;
    }
    let owner = resolve_stream(req.clone()).await?;
    let (request, choice) = turn(&state, &owner, query.into_inner()).await?;
    answer_sse(&state, owner, request, choice, stream_ticket(&req)).await
}

#[utoipa::path(
    operation_id = "agent_chat_stream_post",
    summary = "Ask a conversation turn (JSON body), answered as Server-Sent Events",
    post,
    path = "/api/v1/agent/chat/stream",
    tag = "answers",
    request_body(content = ChatParams, description = "A turn of a conversation", content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        crate::routes::api_doc::AnswerStreamResponses,
        (status = 404, description = "No such conversation (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn chat_stream_post(
    state: web::Data<AppState>,
    StreamPrincipal(owner): StreamPrincipal,
    body: web::Json<ChatParams>,
) -> Result<HttpResponse, ApiError> {
    let (request, choice) = turn(&state, &owner, body.into_inner()).await?;
    answer_sse(&state, owner, request, choice, None).await
}
