//! `/api/v1/ask` (one JSON answer) and `/api/v1/ask/stream` (Server-Sent Events, `GET` with
//! a query string or `POST` with a JSON body). Both run the same pipeline; errors known
//! before the stream starts (auth, limits, bad input) are plain HTTP errors.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::answer::{
    validate_choice, validate_question, validate_top_k, AnswerRequest, ProviderChoice, StreamEvent,
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
struct AskParams {
    #[serde(alias = "message")]
    question: Option<String>,
    #[serde(rename = "topK", alias = "top_k")]
    top_k: Option<i64>,
    /// Optional: one configured provider answers alone (no failover).
    provider: Option<String>,
    /// Optional: a model from the allow-list.
    model: Option<String>,
}

fn to_request(
    state: &AppState,
    owner: &KeyOwner,
    params: AskParams,
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
    };
    Ok((request, choice))
}

async fn ask(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    body: web::Json<AskParams>,
) -> Result<HttpResponse, ApiError> {
    let request = to_request(&state, &owner, body.into_inner())?;
    let lease = hub::admit(&state.hub, &owner, None, "json").await?;
    // If the client leaves, actix drops this future, and with it the answer.
    let mut answer = state.pipeline.start_with(request.0, request.1, lease);
    let mut text = String::new();
    let mut sources = None;
    while let Some(ev) = answer.next().await {
        match ev.event {
            StreamEvent::Sources(s) => sources = Some(s),
            StreamEvent::Token(t) => text.push_str(&t),
            StreamEvent::Done(metadata) => {
                return Ok(HttpResponse::Ok().json(json!({
                    "answer": text,
                    "sources": sources,
                    "metadata": metadata,
                })));
            }
            StreamEvent::Error(error) => {
                let status = match error.code.as_str() {
                    "internal" | "retrieval_failed" => StatusCode::INTERNAL_SERVER_ERROR,
                    "upstream_timeout" => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                // A provider failure keeps the partial answer, as the streams do.
                let body = match ev.partial {
                    Some(metadata) => json!({
                        "error": error,
                        "answer": text,
                        "sources": sources,
                        "metadata": metadata,
                    }),
                    None => json!({ "error": error }),
                };
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
    let request = to_request(&state, &owner, params)?;
    let session_id = hub::next_session_id();
    let lease = hub::admit(&state.hub, &owner, Some(session_id), "sse").await?;
    let answer = state.pipeline.start_with(request.0, request.1, lease);
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
