//! `/api/v1/documents`: load, list and delete a tenant's documents.
//!
//! `POST` takes JSON `{"title","text"}`, a `text/plain` or `text/markdown` body (title from
//! `?title=`, else the first heading, else "Untitled"), or a multipart upload of `.txt` /
//! `.md` files (one document per file, titled by file name). Every byte of a request counts
//! toward the size limit, form fields and multipart framing included; the tenant's quota is
//! checked before the body is read and again, binding, when the documents are written.
//!
//! `GET` lists the tenant's documents a page at a time, newest first:
//! `?limit=` (default 50, at most 200) and `?cursor=` from the previous page's `nextCursor`.

use std::cell::Cell;
use std::rc::Rc;

use actix_multipart::Multipart;
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::body::{read_limited, too_large, utf8};
use super::table::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::rag::ingest::{ingest, quota_message, Upload};
use crate::rate_limit::Limited;
use crate::startup::AppState;
use crate::store::{DocumentCursor, Quota};

const MAX_TITLE_CHARS: usize = 300;

/// Room for multipart framing (boundaries, part headers) on top of the document limit. Form
/// fields and file bytes all count toward the rest.
const MULTIPART_FRAMING_BYTES: usize = 64 * 1024;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;

pub fn configure(routes: &mut Routes) {
    routes
        .post("/documents", create)
        .get("/documents", list)
        .delete("/documents/{id}", delete);
}

#[derive(Deserialize, utoipa::ToSchema)]
struct JsonDocument {
    title: Option<String>,
    text: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TitleQuery {
    title: Option<String>,
}

#[utoipa::path(
    operation_id = "documents_create",
    summary = "Upload documents",
    post,
    path = "/api/v1/documents",
    tag = "documents",
    params(TitleQuery),
    request_body(content((JsonDocument = "application/json"), (String = "text/plain"), (String = "text/markdown"), (String = "multipart/form-data")), description = "JSON {title,text}, a text or Markdown body, or a multipart upload of .txt/.md files (then the answer is {documents:[…]})"),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "One document created (JSON or plain text)", body = crate::store::DocumentSummary),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 409, description = "The tenant's quota is full", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 413, description = "Too large", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 415, description = "Not JSON, text or multipart of .txt/.md files", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 503, description = "Shutting down, or too busy (Retry-After)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn create(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    req: HttpRequest,
    query: web::Query<TitleQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Counted before the body is read: a key over its rate sends no megabytes for nothing.
    state.rate_limits.check(Limited::Uploads, &owner.key_id)?;
    let settings = &state.settings;
    let limit = settings.max_document_bytes;
    let quota = Quota {
        max_documents: settings.tenant_max_documents,
        max_bytes: settings.tenant_max_bytes,
    };
    // A tenant already at a limit is told before it sends megabytes.
    let usage = state.store.document_usage(&owner.tenant_id).await?;
    if let Some(over) = usage.exceeds(&quota, 1, 1) {
        return Err(ApiError::QuotaExceeded(quota_message(over)));
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let body_limit = match mime.as_str() {
        "multipart/form-data" => limit + MULTIPART_FRAMING_BYTES,
        _ => limit,
    };
    if content_length(&req).is_some_and(|n| n > body_limit) {
        return Err(too_large(limit));
    }

    let documents: Vec<Upload> = match mime.as_str() {
        "application/json" => {
            let body = read_limited(payload, limit).await?;
            let doc: JsonDocument = serde_json::from_slice(&body).map_err(|e| {
                let code = if e.is_data() {
                    "invalid_request"
                } else {
                    "invalid_json"
                };
                ApiError::bad_request(code, format!("expected {{\"title\",\"text\"}}: {e}"))
            })?;
            let title = pick_title(doc.title.as_deref(), &doc.text);
            vec![Upload {
                title,
                text: doc.text,
            }]
        }
        "text/plain" | "text/markdown" | "text/x-markdown" => {
            let body = read_limited(payload, limit).await?;
            let text = utf8(&body)?.to_owned();
            vec![Upload {
                title: pick_title(query.title.as_deref(), &text),
                text,
            }]
        }
        "multipart/form-data" => {
            let files = settings.max_files_per_upload;
            read_multipart(&req, payload, limit, body_limit, files).await?
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "send application/json {\"title\",\"text\"}, text/plain, text/markdown or \
                 multipart/form-data with .txt/.md files"
                    .to_owned(),
            ))
        }
    };

    for doc in &documents {
        if doc.text.trim().is_empty() {
            return Err(ApiError::bad_request(
                "empty_document",
                format!("the document `{}` has no text", doc.title),
            ));
        }
        if doc.title.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::bad_request(
                "title_too_long",
                format!("a title may have at most {MAX_TITLE_CHARS} characters"),
            ));
        }
    }
    let slot = state.uploads.enter().await?;
    let created = ingest(&state.store, slot, &owner.tenant_id, quota, documents).await?;
    let body = match created.len() {
        1 => json!(created[0]),
        _ => json!({ "documents": created }),
    };
    Ok(HttpResponse::Created().json(body))
}

fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Given title, else the first Markdown heading, else the first line, else "Untitled".
fn pick_title(given: Option<&str>, text: &str) -> String {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return t.to_owned();
    }
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match first_line {
        Some(line) => {
            let line = line.trim_start_matches('#').trim();
            line.chars().take(120).collect()
        }
        None => "Untitled".to_owned(),
    }
}

/// Reads the files of a multipart upload. `raw_limit` bounds the whole request as it
/// arrives (form fields the loop skips are read to their end by the parser, so they are
/// counted too), `limit` the files' text together.
async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    raw_limit: usize,
    max_files: usize,
) -> Result<Vec<Upload>, ApiError> {
    let over = Rc::new(Cell::new(false));
    let counted = {
        let over = over.clone();
        let mut seen = 0usize;
        payload.map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len();
            if seen > raw_limit {
                over.set(true);
                return Err(PayloadError::Overflow);
            }
            Ok(chunk)
        })
    };
    let broken = |e: &dyn std::fmt::Display, what: &str| {
        if over.get() {
            too_large(limit)
        } else {
            ApiError::bad_request("invalid_multipart", format!("{what}: {e}"))
        }
    };
    let mut multipart = Multipart::new(req.headers(), counted);
    let mut docs = Vec::new();
    let mut total = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(|e| broken(&e, "the upload could not be read"))?;
        let Some(filename) = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_owned)
        else {
            // Plain form fields are not documents; their bytes still count.
            continue;
        };
        if docs.len() == max_files {
            return Err(ApiError::bad_request(
                "too_many_files",
                format!("an upload may carry at most {max_files} files; send the rest in another"),
            ));
        }
        let lower = filename.to_ascii_lowercase();
        if !(lower.ends_with(".txt") || lower.ends_with(".md") || lower.ends_with(".markdown")) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "`{filename}` is not a .txt or .md file"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| broken(&e, "the upload broke off"))?;
            total += chunk.len();
            if total > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = utf8(&bytes)?.to_owned();
        let stem = filename
            .rsplit_once('.')
            .map(|(stem, _)| stem)
            .unwrap_or(&filename);
        docs.push(Upload {
            title: pick_title(Some(stem), &text),
            text,
        });
    }
    if docs.is_empty() {
        return Err(ApiError::bad_request(
            "no_files",
            "the upload holds no .txt or .md file",
        ));
    }
    Ok(docs)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A page of documents: `documents` (as before), `total`, and `nextCursor` / `next` (the
/// next page's URL), both null on the last page.
#[utoipa::path(
    operation_id = "documents_list",
    get,
    path = "/api/v1/documents",
    tag = "documents",
    params(ListQuery),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "A page, newest first", body = crate::routes::api_doc::DocumentPage),
        (status = 400, description = "Bad input: the code names the rule", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn list(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut documents = state
        .store
        .list_documents(&owner.tenant_id, after.as_ref(), limit + 1)
        .await?;
    let more = documents.len() > limit;
    documents.truncate(limit);
    let next_cursor = more
        .then(|| {
            documents
                .last()
                .map(|d| encode_cursor(&DocumentCursor::after(d)))
        })
        .flatten();
    let next = next_cursor
        .as_ref()
        .map(|c| format!("/api/v1/documents?limit={limit}&cursor={c}"));
    let total = state.store.count_documents(&owner.tenant_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "documents": documents,
        "total": total,
        "nextCursor": next_cursor,
        "next": next,
    })))
}

/// Cursors are opaque to clients: the hex of the last document's creation time and id.
fn encode_cursor(cursor: &DocumentCursor) -> String {
    format!("{}\n{}", cursor.created_at, cursor.id)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(raw: &str) -> Result<DocumentCursor, ApiError> {
    let invalid = || ApiError::bad_request("invalid_cursor", "the cursor is not one this API gave");
    if !raw.len().is_multiple_of(2) || raw.len() > 512 {
        return Err(invalid());
    }
    let bytes = (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(raw.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (created_at, id) = text.split_once('\n').ok_or_else(invalid)?;
    Ok(DocumentCursor {
        created_at: created_at.to_owned(),
        id: id.to_owned(),
    })
}

#[utoipa::path(
    operation_id = "documents_delete",
    summary = "Delete a document",
    delete,
    path = "/api/v1/documents/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "The document id")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = crate::routes::api_doc::ErrorEnvelope),
        (status = 404, description = "No such document (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn delete(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if state.store.delete_document(&owner.tenant_id, &id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("document"))
    }
}

#[cfg(test)]
mod tests {
    use super::{decode_cursor, encode_cursor, pick_title};
    use crate::store::DocumentCursor;

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let cursor = DocumentCursor {
            created_at: "2026-01-02T03:04:05.678Z".to_owned(),
            id: "3f0c1d52-1a4e-4a8e-9d59-0f4b7c3e2a10".to_owned(),
        };
        let encoded = encode_cursor(&cursor);
        assert!(encoded.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode_cursor(&encoded).unwrap(), cursor);
        for bad in ["", "abc", "zz", "e282", "2026"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_title_comes_from_the_request_then_the_first_heading() {
        assert_eq!(pick_title(Some(" Given "), "# Heading"), "Given");
        assert_eq!(pick_title(None, "\n\n## The Tower\ntext"), "The Tower");
        assert_eq!(pick_title(Some(""), "   "), "Untitled");
    }
}
