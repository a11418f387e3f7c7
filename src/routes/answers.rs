//! Answers by id: `GET /api/v1/answers/{id}/stream` resumes one over Server-Sent Events
//! (after `Last-Event-ID` or `?after=N`), `DELETE /api/v1/answers/{id}` stops one. Also the
//! SSE response every streaming route returns, and the `Last-Event-ID` reconnect of a
//! browser's `EventSource` to the URL that started the answer.
//!
//! An answer is visible to the key that asked for it only; any other id is 404, the same as
//! an unknown one.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::table::Routes;
use std::sync::Arc;

use crate::answer::shared_log::{self, FindError};
use crate::answer::{AnswerEntry, AnswerOwner, Answers, ResumeError, Subscription};
use crate::auth::{resolve_stream, stream_ticket, Principal};
use crate::cluster::control::Control;
use crate::cluster::{AnswerInfo, ClusterError};
use crate::error::ApiError;
use crate::hub::{self, SseSession, SseTiming};
use crate::protocol::{sse, FrameEncoder};
use crate::startup::AppState;
use crate::store::KeyOwner;

pub fn configure(routes: &mut Routes) {
    routes
        .get("/answers/{id}/stream", stream)
        .delete("/answers/{id}", stop);
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct After {
    after: Option<u64>,
}

#[utoipa::path(
    operation_id = "answers_stream",
    summary = "Resume an answer over Server-Sent Events",
    get,
    path = "/api/v1/answers/{id}/stream",
    tag = "answers",
    params(("id" = String, Path, description = "The answer id"), After, ("Last-Event-ID" = Option<String>, Header, description = "Wins over `after`")),
    security(("api_key" = []), ("ticket" = []), ("session" = [])),
    responses(
        (status = 200, description = "The answer as Server-Sent Events; `X-Answer-Id` names it", content_type = "text/event-stream", body = crate::routes::api_doc::SseEvent),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such answer (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<After>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    // An EventSource reconnecting here sends the cursor it last saw; it wins over `after`,
    // which only said where the first connection started.
    let after = match last_event_id(&req)? {
        Some((answer, seq)) if answer == id => seq,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "Last-Event-ID names another answer",
            ))
        }
        None => query.after.unwrap_or(0),
    };
    resume_sse(&req, &state, &id, after).await
}

#[utoipa::path(
    operation_id = "answers_stop",
    summary = "Stop an answer",
    delete,
    path = "/api/v1/answers/{id}",
    tag = "answers",
    params(("id" = String, Path, description = "The answer id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Stopped (or had already ended)"),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such answer (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn stop(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(entry) = state.pipeline.answers().get(&id, &owner.key_id) else {
        return stop_on_another_hub(&state, &id, &owner).await;
    };
    if !entry.log().is_ended() {
        entry.stop(crate::answer::StopReason::Cancelled);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// In a cluster, the answer may run on another hub: that hub stops it when the control
/// message arrives.
async fn stop_on_another_hub(
    state: &AppState,
    id: &str,
    owner: &KeyOwner,
) -> Result<HttpResponse, ApiError> {
    let cluster = state.pipeline.cluster().ok_or(ApiError::AnswerNotFound)?;
    let info = cluster.answer_info(id).await.map_err(unavailable)?;
    if info.is_none_or(|info| info.key_id != owner.key_id) {
        return Err(ApiError::AnswerNotFound);
    }
    let cancel = Control::CancelAnswer {
        answer_id: id.to_owned(),
        key_id: owner.key_id.clone(),
    };
    cluster.publish(cancel).await.map_err(unavailable)?;
    Ok(HttpResponse::NoContent().finish())
}

fn unavailable(e: ClusterError) -> ApiError {
    log::warn!("answers: {e}");
    ApiError::ClusterUnavailable
}

/// In a cluster, the answer `id` as another hub runs it, if `allowed` accepts its owner
/// and ticket.
async fn on_another_hub(
    state: &AppState,
    id: &str,
    after: u64,
    allowed: impl FnOnce(&AnswerInfo) -> bool,
) -> Result<Option<Arc<AnswerEntry>>, ApiError> {
    let Some(cluster) = state.pipeline.cluster() else {
        return Ok(None);
    };
    let max_bytes = state.pipeline.log_max_bytes();
    shared_log::find(cluster.clone(), id, after, max_bytes, allowed)
        .await
        .map_err(|e| match e {
            FindError::Ahead => {
                ApiError::bad_request("invalid_cursor", ResumeError::Ahead.to_string())
            }
            FindError::Unavailable(e) => unavailable(e),
        })
}

/// The `Last-Event-ID` header, when it is one of ours (`<answerId>:<seq>`).
pub(super) fn last_event_id(req: &HttpRequest) -> Result<Option<(String, u64)>, ApiError> {
    let Some(raw) = req.headers().get("Last-Event-ID") else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("").trim();
    if raw.is_empty() {
        return Ok(None);
    }
    sse::parse_event_id(raw)
        .map(|(answer, seq)| Some((answer.to_owned(), seq)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "Last-Event-ID must be an id this hub sent (<answerId>:<seq>)",
            )
        })
}

/// Continues answer `id` after event `after` as a new SSE response. The caller is the
/// answer's key, or the `EventSource` that opened it with a ticket, reconnecting with that
/// same (spent) ticket: it may resume that answer and no other.
pub(super) async fn resume_sse(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    after: u64,
) -> Result<HttpResponse, ApiError> {
    let (subscription, owner) = resume_subscription(req, state, id, after).await?;
    Ok(sse_response(
        state,
        hub::next_session_id(),
        subscription,
        owner,
    ))
}

/// The subscription [`resume_sse`] streams, for routes that encode it another way.
pub(super) async fn resume_subscription(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    after: u64,
) -> Result<(Subscription, KeyOwner), ApiError> {
    let answers = state.pipeline.answers();
    let ticket = stream_ticket(req);
    let by_ticket = match &ticket {
        Some(ticket) => match answers.get_by_ticket(id, ticket) {
            Some(entry) => Some(entry),
            None => {
                let opened_it = |info: &AnswerInfo| info.ticket.as_deref() == Some(ticket);
                on_another_hub(state, id, after, opened_it).await?
            }
        },
        None => None,
    };
    let (entry, session) = match by_ticket {
        Some(entry) => (entry, None),
        None => {
            let owner = resolve_stream(req.clone()).await?;
            let entry = match answers.get(id, &owner.key_id) {
                Some(entry) => entry,
                None => {
                    let owns_it = |info: &AnswerInfo| info.key_id == owner.key_id;
                    on_another_hub(state, id, after, owns_it)
                        .await?
                        .ok_or(ApiError::AnswerNotFound)?
                }
            };
            (entry, owner.session)
        }
    };
    // A resume with the session cookie ends at that session's sign-out, as the first
    // response did.
    let owner = KeyOwner {
        session,
        ..key_owner(&entry)
    };
    let subscription = Answers::resume(entry, after)
        .map_err(|e: ResumeError| ApiError::bad_request("invalid_cursor", e.to_string()))?;
    Ok((subscription, owner))
}

fn key_owner(entry: &AnswerEntry) -> KeyOwner {
    let AnswerOwner { key_id, tenant_id } = entry.owner().clone();
    KeyOwner {
        key_id,
        tenant_id,
        is_admin: false,
        is_operator: false,
        session: None,
    }
}

/// The Server-Sent Events response of a subscription. `X-Answer-Id` tells the client the
/// answer before any event does.
pub(super) fn sse_response(
    state: &AppState,
    session_id: u64,
    answer: Subscription,
    owner: KeyOwner,
) -> HttpResponse {
    encoded_sse_response(state, session_id, answer, owner, sse::SseEncoder)
}

/// [`sse_response`] in another dialect of event stream (OpenAI chunks).
pub(super) fn encoded_sse_response<E: FrameEncoder + Unpin + 'static>(
    state: &AppState,
    session_id: u64,
    answer: Subscription,
    owner: KeyOwner,
    encoder: E,
) -> HttpResponse {
    let answer_id = answer.answer_id().to_string();
    let timing = SseTiming {
        heartbeat: state.settings.heartbeat_interval,
        write_timeout: state.settings.client_write_timeout,
    };
    let body = SseSession::start(
        session_id,
        answer,
        owner,
        state.hub.clone(),
        timing,
        encoder,
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Tells nginx and similar proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header(("X-Answer-Id", answer_id))
        .streaming(body)
}
