//! The OpenAI-compatible endpoint: `POST /v1/chat/completions` (streaming and not) and
//! `GET /v1/models`, so OpenAI SDKs and chat UIs use the hub as a RAG model. The same
//! pipeline answers as on `/api/v1`: admission, the answer log (a stream resumes with
//! `Last-Event-ID`), cancel when the client leaves, failover. Only the encoding differs
//! (`protocol::openai_chat`), and errors come in OpenAI's shape.
//!
//! A conversation is stored only when the request names one with `X-Conversation-Id`
//! (`new` starts one; its id comes back as `conversation_id`).

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;

use super::answers::{encoded_sse_response, last_event_id, resume_subscription};
use super::ask::{start_answer, Admission};
use super::body::read_limited;
use super::Routes;
use crate::answer::{
    validate_choice, validate_question, AnswerRequest, ClientChat, ConversationRef, ProviderChoice,
    StreamEvent, DEFAULT_TOP_K,
};
use crate::auth::Principal;
use crate::config::ProviderKind;
use crate::error::{stream_error_status, ApiError};
use crate::hub;
use crate::protocol::openai_chat::{
    self as codec, ChatRequest, ChunkEncoder, Completion, RequestError, DEFAULT_MODEL,
};
use crate::providers::ChatTurn;
use crate::startup::AppState;
use crate::store::{KeyOwner, MessageStatus, PastMessage};

/// Clients send the whole conversation every time: a larger bound than the hub's own
/// routes (the history budget decides what reaches the provider).
const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// Names the stored conversation a request is a turn of; `new` starts one.
pub const CONVERSATION_HEADER: &str = "X-Conversation-Id";

pub fn configure(routes: &mut Routes) {
    routes.scope_with("/v1", Some(|| web::to(method_not_allowed)), |r| {
        r.post("/chat/completions", chat_completions)
            .get("/models", models)
            .get("/models/{model:.+}", model);
    });
}

/// Registered after every route: any other path under `/v1` is a 404 in OpenAI's shape.
pub fn not_found_under_v1(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/{tail:.*}")
            .to(|| async { Err::<HttpResponse, _>(V1Error::from(ApiError::NotFound("route"))) }),
    );
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, V1Error> {
    Err(V1Error {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed".to_owned(),
        message: format!("{} is not allowed on {}", req.method(), req.path()),
        param: None,
        retry_after: None,
    })
}

/// An error in OpenAI's shape: `{"error":{"message","type","code","param"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct V1Error {
    status: StatusCode,
    code: String,
    message: String,
    param: Option<String>,
    retry_after: Option<u64>,
}

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        let status = e.status_code();
        if status.is_server_error() {
            log::error!("{e}");
        }
        let retry_after = e.retry_after_secs();
        let body = e.body();
        let (code, param, message) = match (&e, body.code.as_str()) {
            (ApiError::Unauthorized, _) => (
                "invalid_api_key".to_owned(),
                None,
                "a valid API key is required (Authorization: Bearer <key>, or X-API-Key)"
                    .to_owned(),
            ),
            (_, "unknown_model" | "unknown_provider") => {
                ("model_not_found".to_owned(), Some("model"), body.message)
            }
            (_, "empty_question" | "question_too_long") => {
                (body.code, Some("messages"), body.message)
            }
            _ => (body.code, None, body.message),
        };
        V1Error {
            status,
            code,
            message,
            param: param.map(str::to_owned),
            retry_after,
        }
    }
}

impl From<RequestError> for V1Error {
    fn from(e: RequestError) -> Self {
        V1Error {
            status: StatusCode::BAD_REQUEST,
            code: e.code.to_owned(),
            message: e.message,
            param: e.param,
            retry_after: None,
        }
    }
}

impl ResponseError for V1Error {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        res.content_type("application/json").body(codec::error_body(
            self.status.as_u16(),
            &self.code,
            &self.message,
            self.param.as_deref(),
        ))
    }
}

async fn authenticate(req: &HttpRequest) -> Result<KeyOwner, V1Error> {
    let Principal(owner) = Principal::from_request(req, &mut Payload::None).await?;
    Ok(owner)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `ragstream`, then every `provider:model` choice.
fn model_ids(state: &AppState) -> Vec<String> {
    let mut ids = vec![DEFAULT_MODEL.to_owned()];
    ids.extend(state.pipeline.providers().model_choices());
    ids
}

#[utoipa::path(
    operation_id = "v1_models",
    summary = "The models a key may ask for (OpenAI-compatible)",
    get,
    path = "/v1/models",
    tag = "openai",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "`ragstream` and every allow-listed `provider:model`", body = crate::routes::api_doc_v1::V1ModelList),
        (status = 401, description = "No or a wrong key", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
    )
)]
async fn models(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, V1Error> {
    authenticate(&req).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(codec::models_body(&model_ids(&state), now_secs())))
}

/// One model (`client.models.retrieve`): a listed id, or one the allow-list accepts.
#[utoipa::path(
    operation_id = "v1_model",
    summary = "One model (OpenAI-compatible)",
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "A model id, e.g. `ragstream` or `openai:gpt-4o-mini`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The model", body = crate::routes::api_doc_v1::V1Model),
        (status = 401, description = "No or a wrong key", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 404, description = "Not a model this key may ask for (`model_not_found`)", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
    )
)]
async fn model(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, V1Error> {
    authenticate(&req).await?;
    let id = id.into_inner();
    if !model_ids(&state).contains(&id) {
        model_choice(&state, &id).map_err(|mut e| {
            e.status = StatusCode::NOT_FOUND;
            e
        })?;
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(codec::model_body(&id, now_secs())))
}

/// The provider and model a request's `model` names (see [`codec::split_model`]).
fn model_choice(state: &AppState, model: &str) -> Result<ProviderChoice, V1Error> {
    let providers = state.pipeline.providers();
    let (provider, model) = match codec::split_model(model) {
        // A bare provider name: that provider with its configured model.
        (None, Some(name))
            if ProviderKind::parse(name).is_some_and(|k| providers.member(k).is_some()) =>
        {
            (Some(name), None)
        }
        other => other,
    };
    validate_choice(provider, model, providers).map_err(V1Error::from)
}

#[utoipa::path(
    operation_id = "v1_chat_completions",
    summary = "Ask, as an OpenAI chat completion: cited answers from the key's tenant",
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = crate::routes::api_doc_v1::V1ChatRequest, content_type = "application/json"),
    params(
        ("X-Conversation-Id" = Option<String>, Header, description = "Store the turn in this conversation (`new` starts one)"),
        ("Last-Event-ID" = Option<String>, Header, description = "A streaming client reconnecting: continues that answer after that event"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "`stream: false`: the whole answer", body = crate::routes::api_doc_v1::V1ChatCompletion),
        (status = 200, description = "`stream: true`: `chat.completion.chunk` events, then `data: [DONE]`", body = crate::routes::api_doc_v1::V1ChatChunk, content_type = "text/event-stream"),
        (status = 400, description = "Invalid request: unknown model, no user message, an unsupported parameter (named in `param`)", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 401, description = "No or a wrong key", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 404, description = "The named conversation does not exist", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 413, description = "Body over 1 MiB", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 429, description = "Too many answers streaming or asked (`Retry-After`)", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 502, description = "Every upstream failed", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 503, description = "Shutting down or storage/cluster unavailable", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
        (status = 504, description = "The upstream timed out", body = crate::routes::api_doc_v1::V1ErrorEnvelope),
    )
)]
async fn chat_completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, V1Error> {
    let owner = authenticate(&req).await?;
    let body = read_limited(payload, BODY_LIMIT_BYTES).await?;
    let chat = codec::parse_request(&body)?;
    if chat.stream {
        // A client that lost the stream comes back with the last id it saw: that
        // continues the same answer, never a second one.
        if let Some((answer, after)) = last_event_id(&req)? {
            let (subscription, owner) = resume_subscription(&req, &state, &answer, after).await?;
            let encoder = ChunkEncoder::new(&chat.model, now_secs(), chat.include_usage);
            let res =
                encoded_sse_response(&state, hub::next_session_id(), subscription, owner, encoder);
            return Ok(res);
        }
    }
    let choice = model_choice(&state, &chat.model)?;
    let conversation = conversation(&req, &state, &owner).await?;
    let ChatRequest {
        model,
        question,
        earlier,
        system,
        sampling,
        stream,
        include_usage,
    } = chat;
    let request = AnswerRequest {
        tenant_id: owner.tenant_id.clone(),
        question: validate_question(&question, state.settings.max_question_chars)?,
        top_k: DEFAULT_TOP_K,
        conversation,
        chat: Some(ClientChat {
            earlier: earlier.into_iter().map(past_message).collect(),
            system,
            sampling,
        }),
    };
    if stream {
        let session_id = hub::next_session_id();
        let answer = start_answer(
            &state,
            &owner,
            request,
            choice,
            Admission::sse(session_id).labelled("openai"),
        )
        .await?;
        let encoder = ChunkEncoder::new(&model, now_secs(), include_usage);
        let res = encoded_sse_response(&state, session_id, answer, owner, encoder);
        return Ok(res);
    }
    completion(&state, &owner, request, choice, &model).await
}

/// A client message as the history selection reads stored ones.
fn past_message(turn: ChatTurn) -> PastMessage {
    PastMessage {
        role: turn.role.as_str().to_owned(),
        content: turn.content,
        status: Some(MessageStatus::Complete.as_str().to_owned()),
    }
}

/// The stored conversation the request names, checked to be the caller's; none when the
/// header is absent.
async fn conversation(
    req: &HttpRequest,
    state: &AppState,
    owner: &KeyOwner,
) -> Result<Option<ConversationRef>, V1Error> {
    let Some(raw) = req.headers().get(CONVERSATION_HEADER) else {
        return Ok(None);
    };
    let raw = raw.to_str().map(str::trim).unwrap_or("");
    if raw.is_empty() || raw.len() > 64 {
        return Err(V1Error::from(ApiError::bad_request(
            "invalid_conversation_id",
            format!("{CONVERSATION_HEADER} must be `new` or a conversation id"),
        )));
    }
    let id = (raw != "new").then(|| raw.to_owned());
    if let Some(id) = &id {
        let exists = state
            .store
            .conversation_exists(&owner.tenant_id, &owner.key_id, id)
            .await
            .map_err(ApiError::from)?;
        if !exists {
            return Err(ApiError::ConversationNotFound.into());
        }
    }
    Ok(Some(ConversationRef {
        user_id: owner.key_id.clone(),
        id,
    }))
}

/// Runs the answer and returns it as one `chat.completion`. A failure before the answer
/// finished is an error status; the client has no use for half an answer here.
async fn completion(
    state: &AppState,
    owner: &KeyOwner,
    request: AnswerRequest,
    choice: ProviderChoice,
    model: &str,
) -> Result<HttpResponse, V1Error> {
    // The client leaving drops this future and the subscription with it, which stops
    // the answer: a non-streaming client cannot come back for it.
    let mut answer = start_answer(
        state,
        owner,
        request,
        choice,
        Admission::json().labelled("openai"),
    )
    .await?;
    let answer_id = answer.answer_id().to_string();
    let mut text = String::new();
    let mut conversation = None;
    while let Some(ev) = answer.next().await {
        match ev.event {
            StreamEvent::Conversation(id) => conversation = Some(id),
            StreamEvent::Sources(_) => {}
            StreamEvent::Token(t) => text.push_str(&t),
            StreamEvent::Done(meta) => {
                let body = codec::completion_body(&Completion {
                    answer_id: &answer_id,
                    created: now_secs(),
                    model,
                    text: &text,
                    finish_reason: &meta.finish_reason,
                    tokens: meta.tokens,
                    input_tokens: meta.input_tokens,
                    sources: &meta.sources,
                    conversation_id: conversation.as_deref(),
                });
                return Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body));
            }
            StreamEvent::Error(error) => {
                return Err(V1Error {
                    status: stream_error_status(&error.code),
                    code: error.code,
                    message: error.message,
                    param: None,
                    retry_after: None,
                })
            }
        }
    }
    Err(ApiError::Internal("the answer ended without a result".into()).into())
}
