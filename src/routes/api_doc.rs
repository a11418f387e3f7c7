//! The OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]` annotations
//! and the request and response types (`GET /api/openapi.json`), and the page that shows it
//! (`GET /api/docs`, served from the static folder under the pages' CSP).
//!
//! The shapes below are the ones handlers build with `json!` and the Server-Sent Events
//! frames: documentation types only, each checked against real responses by the API tests
//! (tests/api/openapi.rs), so they cannot drift unnoticed.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::table::Routes;
use crate::answer::{DoneMetadata, Source};
use crate::error::{ApiError, ErrorBody};
use crate::hub::messages::{ConnectionInfo, Metrics, StreamInfo};
use crate::startup::AppState;
use crate::store::{ApiKeyRecord, Conversation, DocumentSummary, MessageRecord, Tenant};

pub fn configure(routes: &mut Routes) {
    routes
        .get("/api/openapi.json", openapi_json)
        .get("/api/docs", docs_page);
}

/// The error body of every failed request: `{"error":{"code","message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// `POST /ask` and `POST /agent/chat`: the whole answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnswerResponse {
    pub answer: String,
    pub sources: Vec<Source>,
    pub metadata: DoneMetadata,
    /// Agent chat only: the conversation this answer is a turn of.
    pub conversation_id: Option<String>,
}

/// An answer that failed once started: the error, and what had been produced until then
/// when the provider failed mid-answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnswerFailure {
    pub error: ErrorBody,
    pub answer: Option<String>,
    pub sources: Option<Vec<Source>>,
    pub metadata: Option<DoneMetadata>,
    pub conversation_id: Option<String>,
}

/// What a question answered as one JSON body may come to (`POST /ask`, `POST /agent/chat`).
#[derive(utoipa::IntoResponses)]
pub enum AnswerJsonResponses {
    #[response(status = 200, description = "The whole answer")]
    Answer(AnswerResponse),
    #[response(status = 400, description = "Bad input: the code names the rule")]
    BadRequest(ErrorEnvelope),
    #[response(status = 401, description = "No valid API key")]
    Unauthorized(ErrorEnvelope),
    #[response(
        status = 429,
        description = "Over the key's or the hub's concurrent stream limit (Retry-After: 1)"
    )]
    TooManyStreams(ErrorEnvelope),
    #[response(
        status = 502,
        description = "The provider failed (partial answer kept)"
    )]
    ProviderFailed(AnswerFailure),
    #[response(status = 503, description = "Shutting down, or too busy (Retry-After)")]
    Unavailable(ErrorEnvelope),
    #[response(status = 504, description = "The provider timed out")]
    ProviderTimeout(AnswerFailure),
}

/// What a question answered as Server-Sent Events may come to: errors known before the
/// stream starts are plain HTTP errors; once it has started it ends with `done` or `error`.
#[derive(utoipa::IntoResponses)]
pub enum AnswerStreamResponses {
    #[response(
        status = 200,
        description = "The answer as Server-Sent Events; `X-Answer-Id` names it",
        content_type = "text/event-stream"
    )]
    Stream(SseEvent),
    #[response(status = 400, description = "Bad input: the code names the rule")]
    BadRequest(ErrorEnvelope),
    #[response(status = 401, description = "No valid API key")]
    Unauthorized(ErrorEnvelope),
    #[response(
        status = 429,
        description = "Over the key's or the hub's concurrent stream limit (Retry-After: 1)"
    )]
    TooManyStreams(ErrorEnvelope),
    #[response(status = 503, description = "Shutting down, or too busy (Retry-After)")]
    Unavailable(ErrorEnvelope),
}

/// The `data:` of one Server-Sent Events frame of an answer. Every frame has an
/// `id: <answerId>:<seq>` (send it back as `Last-Event-ID` to resume); `conversation` and
/// `sources` frames are named events, tokens and the final frame are unnamed; a `: ping`
/// comment keeps an idle stream open.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SseEvent {
    Conversation(SseConversation),
    Sources(SseSources),
    Token(SseToken),
    Done(SseDone),
    Error(SseError),
}

/// `event: conversation`, first of an agent-chat answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct SseConversation {
    pub conversation_id: String,
}

/// `event: sources`: the retrieved passages, once, before any token.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SseSources {
    pub sources: Vec<Source>,
}

/// Text of the answer (tokens waiting together are sent as one frame).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SseToken {
    pub token: String,
    /// Always `false`.
    pub done: bool,
}

/// The last frame of an answer that finished.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SseDone {
    /// Always empty.
    pub token: String,
    /// Always `true`.
    pub done: bool,
    pub metadata: DoneMetadata,
}

/// The last frame of an answer that failed or was stopped.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SseError {
    /// Always `true`.
    pub done: bool,
    pub error: ErrorBody,
    /// What was produced until a provider failure.
    pub metadata: Option<DoneMetadata>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketResponse {
    /// Single-use; put it in an `EventSource` or WebSocket URL as `?ticket=`.
    pub ticket: String,
    pub expires_in_seconds: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub key_id: String,
    pub tenant_id: String,
    pub tenant_name: Option<String>,
    /// `user`, `admin` (of its own tenant) or `operator` (of every tenant).
    pub role: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub tenant_id: String,
    pub tenant_name: String,
    pub key_id: String,
    pub key_name: String,
    pub is_admin: bool,
    pub expires_at: String,
    pub idle_timeout_seconds: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKeyRecord>,
}

/// A key just created: `key` is shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKeyRecord,
}

#[derive(Serialize, ToSchema)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
    pub metrics: Metrics,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionInfo>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentPage {
    pub documents: Vec<DocumentSummary>,
    pub total: u64,
    /// Pass as `?cursor=` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// The next page's URL; null on the last.
    pub next: Option<String>,
}

/// A multipart upload of several files.
#[derive(Serialize, ToSchema)]
pub struct DocumentsCreated {
    pub documents: Vec<DocumentSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    pub total: u64,
    pub limit: i64,
    pub offset: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationWithMessages {
    pub id: String,
    pub title: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub messages: Vec<MessageRecord>,
}

/// SignalR negotiate (version 0 or 1).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Negotiated {
    pub connection_id: String,
    /// Version 1: what the client connects with, as `?id=`.
    pub connection_token: Option<String>,
    pub negotiate_version: u8,
    pub available_transports: Vec<Transport>,
    pub use_stateful_reconnect: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// `WebSockets`.
    pub transport: String,
    pub transfer_formats: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    pub error: Option<ErrorBody>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ragstream",
        description = "A real-time RAG chat hub: answers from your documents, streamed over \
Server-Sent Events, WebSocket (plain JSON or SignalR) or returned as one JSON body. Errors are \
`{\"error\":{\"code\",\"message\"}}` with the HTTP status; a stream that has started ends with a \
`done` or an `error` frame.",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::metrics::metrics,
        super::pages::chat_page,
        super::pages::admin_page,
        super::pages::asset,
        openapi_json,
        docs_page,
        super::ask::ask,
        super::ask::ask_stream_get,
        super::ask::ask_stream_post,
        super::agent::chat,
        super::agent::chat_stream_get,
        super::agent::chat_stream_post,
        super::answers::stream,
        super::answers::stop,
        super::conversations::create,
        super::conversations::list,
        super::conversations::read,
        super::conversations::rename,
        super::conversations::delete,
        super::documents::create,
        super::documents::list,
        super::documents::delete,
        super::ws::chat_ws,
        super::ws::negotiate,
        super::tickets::issue,
        super::whoami::whoami,
        super::session::sign_in,
        super::session::who,
        super::session::sign_out,
        super::admin::create_tenant,
        super::admin::list_tenants,
        super::admin::create_key,
        super::admin::list_keys,
        super::admin::revoke_key,
        super::admin::stats,
        super::admin::events,
        super::admin::history,
        super::admin::list_streams,
        super::admin::end_stream,
        super::admin::list_connections,
        super::admin::end_connection,
        super::usage::usage,
        super::usage::set_tenant_budget,
        super::usage::set_key_budget,
        super::openai_compat::chat_completions,
        super::openai_compat::models,
        super::openai_compat::model,
    ),
    components(schemas(
        SseEvent,
        SseConversation,
        SseSources,
        SseToken,
        SseDone,
        SseError,
        ErrorEnvelope,
        ErrorBody,
        // Behind the IntoResponses enums, which do not collect their schemas.
        AnswerResponse,
        AnswerFailure,
        DoneMetadata,
        Source
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "answers", description = "Questions and their answers: JSON, Server-Sent Events, resume and stop"),
        (name = "conversations", description = "Agent-chat conversations of the calling key"),
        (name = "documents", description = "The tenant's documents"),
        (name = "realtime", description = "WebSocket (plain JSON and SignalR) and stream tickets"),
        (name = "session", description = "Who is asking; browser sign-in"),
        (name = "admin", description = "Tenants, keys, budgets, usage and the live view (admin keys)"),
        (name = "openai", description = "The OpenAI-compatible endpoint: chat completions and models, errors in OpenAI's shape"),
        (name = "operations", description = "Health, readiness, metrics, this description"),
        (name = "pages", description = "The chat and admin pages and their assets"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (also accepted as `Authorization: Bearer <key>`); an `X-Tenant-Id` \
                 header, when sent, must name the key's tenant.",
            ))),
        );
        components.add_security_scheme(
            "ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use stream ticket from POST /api/v1/stream-tickets, for browsers.",
            ))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "ragstream_session",
                "The browser session cookie from POST /api/v1/session.",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key as a bearer token, as every OpenAI SDK sends it.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("RAGSTREAM_METRICS_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The description, built once.
pub fn document() -> Arc<str> {
    static JSON: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            .into()
    })
    .clone()
}

/// This description (OpenAPI 3.1)
#[utoipa::path(
    operation_id = "openapi_json",
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json"))
)]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document().to_string())
}

/// The API description as a page
#[utoipa::path(
    operation_id = "docs_page",
    get,
    path = "/api/docs",
    tag = "operations",
    responses(
        (status = 200, description = "A page listing every operation of /api/openapi.json", content_type = "text/html"),
        (status = 404, description = "The page is missing from the static folder", body = ErrorEnvelope),
    )
)]
async fn docs_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    super::pages::serve(&state.settings.static_dir, "api-docs.html").await
}
