//! `/api/v1/ask` (one JSON answer) and `/api/v1/ask/stream` (Server-Sent Events, `GET` with
//! a query string or `POST` with a JSON body). Both run the same pipeline; errors known
//! before the stream starts (auth, limits, bad input) are plain HTTP errors.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::answers::{last_event_id, resume_sse, sse_response};
use super::table::Routes;
use crate::answer::{
    validate_choice, validate_question, validate_top_k, AnswerOwner, AnswerRequest,
    ConversationRef, ProviderChoice, Start, StreamEvent, Subscription,
};
use crate::auth::{resolve_stream, stream_ticket, Principal, StreamPrincipal};
use crate::error::{stream_error_status, ApiError};
use crate::hub;
use crate::startup::AppState;
use crate::store::KeyOwner;

pub fn configure(routes: &mut Routes) {
    routes
        .post("/ask", ask)
        .get("/ask/stream", ask_stream_get)
        .post("/ask/stream", ask_stream_post);
}

#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
        chat: None,
    };
    Ok((request, choice))
}

#[utoipa::path(
    operation_id = "ask_ask",
    summary = "Ask a question, answered as one JSON body",
    post,
    path = "/api/v1/ask",
    tag = "answers",
    request_body(content = AskParams, description = "The question", content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        crate::routes::api_doc::AnswerJsonResponses,
    )
)]
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
    // If the client leaves, actix drops this future, and with it the subscription, which
    // stops the answer: this client has no way to come back for it.
    let mut answer = start_answer(state, owner, request, choice, Admission::json()).await?;
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
                let status = stream_error_status(&error.code);
                // A provider failure keeps the partial answer, as the streams do.
                let mut body = match ev.partial {
                    Some(metadata) => json!({
                        "error": error,
                        "answer": text,
                        "sources": sources,
                        "metadata": metadata,
                    }),
                    // Stopped by a shutdown: what had streamed is kept, as in the store.
                    None if error.code == "server_shutdown" => json!({
                        "error": error,
                        "answer": text,
                        "sources": sources,
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

#[utoipa::path(
    operation_id = "ask_ask_stream_get",
    summary = "Ask a question, answered as Server-Sent Events",
    get,
    path = "/api/v1/ask/stream",
    tag = "answers",
    params(AskParams, ("Last-Event-ID" = Option<String>, Header, description = "An EventSource reconnecting: continues that answer after that event")),
    security(("api_key" = []), ("ticket" = []), ("session" = [])),
    responses(
        crate::routes::api_doc::AnswerStreamResponses,
    )
)]
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

#[utoipa::path(
    operation_id = "ask_ask_stream_post",
    summary = "Ask a question (JSON body), answered as Server-Sent Events",
    post,
    path = "/api/v1/ask/stream",
    tag = "answers",
    request_body(content = AskParams, description = "The question", content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        crate::routes::api_doc::AnswerStreamResponses,
    )
)]
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
    let admission = Admission {
        ticket,
        ..Admission::sse(session_id)
    };
    let answer = start_answer(state, &owner, request, choice, admission).await?;
    Ok(sse_response(state, session_id, answer, owner))
}

/// How an answer is admitted: for a connection that may come back for it (SSE) or for a
/// plain JSON request that cannot.
pub(super) struct Admission {
    session_id: Option<u64>,
    transport: &'static str,
    ticket: Option<String>,
    cancel_on_drop: bool,
}

impl Admission {
    pub(super) fn json() -> Self {
        Admission {
            session_id: None,
            transport: "json",
            ticket: None,
            cancel_on_drop: true,
        }
    }

    pub(super) fn sse(session_id: u64) -> Self {
        Admission {
            session_id: Some(session_id),
            transport: "sse",
            ticket: None,
            cancel_on_drop: false,
        }
    }

    /// The same admission, counted under another transport in the metrics (`openai`).
    pub(super) fn labelled(self, transport: &'static str) -> Self {
        Admission { transport, ..self }
    }
}

/// Takes a stream slot for `owner` and starts the answer; returns the asker's subscription.
pub(super) async fn start_answer(
    state: &AppState,
    owner: &KeyOwner,
    request: AnswerRequest,
    choice: ProviderChoice,
    admission: Admission,
) -> Result<Subscription, ApiError> {
    state.store.check_available()?;
    let lease = hub::admit(&state.hub, owner, admission.session_id, admission.transport).await?;
    Ok(state.pipeline.start(Start {
        request,
        choice,
        lease,
        owner: answer_owner(owner),
        ticket: admission.ticket,
        label: None,
        cancel_on_drop: admission.cancel_on_drop,
    }))
}
