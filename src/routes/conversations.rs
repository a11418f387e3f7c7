//! `/api/v1/conversations`: a user's agent-chat conversations. Create, list (newest first,
//! paginated), read with messages, rename, delete. Scoped to the API key and its tenant:
//! another user's conversation answers 404 like one that does not exist.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::read_limited;
use super::table::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::startup::AppState;

const MAX_TITLE_CHARS: usize = 200;
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;
/// A create body only ever holds a title.
const CREATE_BODY_LIMIT: usize = 16 * 1024;
/// How long a request waits for this hub's queued conversation writes (see
/// [`own_writes_settled`]); past it, the request reads what is stored.
const OWN_WRITES_WAIT: Duration = Duration::from_secs(2);

pub fn configure(routes: &mut Routes) {
    routes
        .post("/conversations", create)
        .get("/conversations", list)
        .get("/conversations/{id}", read)
        .patch("/conversations/{id}", rename)
        .delete("/conversations/{id}", delete);
}

/// Answers store their turns through the store writer without waiting (group commit), so a
/// client that got an answer's `conversation` event may ask for the conversation before its
/// rows are committed. Reads and changes first wait for what this hub has queued, so the
/// client finds its turn (another hub of a cluster sees it once this one commits, within
/// milliseconds).
async fn own_writes_settled(state: &AppState) {
    if !state.pipeline.writer().flush(OWN_WRITES_WAIT).await {
        log::debug!("conversation request: queued writes not settled within {OWN_WRITES_WAIT:?}");
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct TitleBody {
    title: Option<String>,
}

/// A title with surrounding space dropped; `None` when blank.
fn title(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(title) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_title",
            format!("a title has at most {MAX_TITLE_CHARS} characters and no control characters"),
        ));
    }
    Ok(Some(title.to_owned()))
}

/// `POST /conversations` with `{"title"?}`, or no body at all (`curl -X POST`): the title
/// is then taken from the first question.
#[utoipa::path(
    operation_id = "conversations_create",
    post,
    path = "/api/v1/conversations",
    tag = "conversations",
    request_body(content = Option<TitleBody>, description = "Optional: without a title, the first question names it", content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "Created", body = crate::store::Conversation),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn create(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, CREATE_BODY_LIMIT).await?;
    let requested = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: TitleBody = serde_json::from_slice(&body).map_err(|e| {
            let code = if e.is_data() {
                "invalid_request"
            } else {
                "invalid_json"
            };
            ApiError::bad_request(code, format!("expected {{\"title\"?}}: {e}"))
        })?;
        title(parsed.title.as_deref())?
    };
    let conversation = state
        .store
        .create_conversation(&owner.tenant_id, &owner.key_id, requested.as_deref())
        .await?;
    Ok(HttpResponse::Created().json(conversation))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[utoipa::path(
    operation_id = "conversations_list",
    summary = "List conversations",
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    params(Page),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "A page, newest first", body = crate::routes::api_doc::ConversationPage),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn list(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let offset = page.offset.unwrap_or(0);
    let offset = u32::try_from(offset).map_err(|_| {
        ApiError::bad_request(
            "invalid_offset",
            format!("offset must be between 0 and {}, got {offset}", u32::MAX),
        )
    })?;
    own_writes_settled(&state).await;
    let (conversations, total) = state
        .store
        .list_conversations(&owner.tenant_id, &owner.key_id, limit as u32, offset)
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "conversations": conversations,
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

#[utoipa::path(
    operation_id = "conversations_read",
    summary = "Read a conversation with its messages",
    get,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The conversation and its messages", body = crate::routes::api_doc::ConversationWithMessages),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such conversation (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn read(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    own_writes_settled(&state).await;
    let conversation = state
        .store
        .get_conversation(&owner.tenant_id, &owner.key_id, &id)
        .await?
        .ok_or(ApiError::ConversationNotFound)?;
    let messages = state.store.conversation_messages(&conversation.id).await?;
    let mut body = json!(conversation);
    body["messages"] = json!(messages);
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(
    operation_id = "conversations_rename",
    summary = "Rename a conversation",
    patch,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation id")),
    request_body(content = TitleBody, content_type = "application/json"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Renamed", body = crate::store::Conversation),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such conversation (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn rename(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    id: web::Path<String>,
    body: web::Json<TitleBody>,
) -> Result<HttpResponse, ApiError> {
    let title = title(body.title.as_deref())?.ok_or_else(|| {
        ApiError::bad_request("invalid_title", "a non-empty \"title\" is required")
    })?;
    own_writes_settled(&state).await;
    let conversation = state
        .store
        .rename_conversation(&owner.tenant_id, &owner.key_id, &id, &title)
        .await?
        .ok_or(ApiError::ConversationNotFound)?;
    Ok(HttpResponse::Ok().json(conversation))
}

#[utoipa::path(
    operation_id = "conversations_delete",
    summary = "Delete a conversation",
    delete,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such conversation (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn delete(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    own_writes_settled(&state).await;
    if state
        .store
        .delete_conversation(&owner.tenant_id, &owner.key_id, &id)
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::ConversationNotFound)
    }
}
