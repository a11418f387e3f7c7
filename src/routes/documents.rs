//! `/api/v1/documents`: load, list and delete a tenant's documents.
//!
//! `POST` takes JSON `{"title","text"}`, a `text/plain` or `text/markdown` body (title from
//! `?title=`, else the first heading, else "Untitled"), or a multipart upload of `.txt` /
//! `.md` files (one document per file, titled by file name).

use actix_multipart::Multipart;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::body::{read_limited, too_large, utf8};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::DocumentSummary;

const MAX_TITLE_CHARS: usize = 300;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/documents")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .route("/documents/{id}", web::delete().to(delete));
}

#[derive(Deserialize)]
struct JsonDocument {
    title: Option<String>,
    text: String,
}

#[derive(Deserialize)]
struct TitleQuery {
    title: Option<String>,
}

async fn create(
    state: web::Data<AppState>,
    Principal(owner): Principal,
    req: HttpRequest,
    query: web::Query<TitleQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let limit = state.settings.max_document_bytes;
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

    let documents: Vec<(String, String)> = match mime.as_str() {
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
            vec![(title, doc.text)]
        }
        "text/plain" | "text/markdown" | "text/x-markdown" => {
            let body = read_limited(payload, limit).await?;
            let text = utf8(&body)?.to_owned();
            vec![(pick_title(query.title.as_deref(), &text), text)]
        }
        "multipart/form-data" => read_multipart(&req, payload, limit).await?,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "send application/json {\"title\",\"text\"}, text/plain, text/markdown or \
                 multipart/form-data with .txt/.md files"
                    .to_owned(),
            ))
        }
    };

    let mut created: Vec<DocumentSummary> = Vec::with_capacity(documents.len());
    for (title, text) in &documents {
        if text.trim().is_empty() {
            return Err(ApiError::bad_request(
                "empty_document",
                format!("the document `{title}` has no text"),
            ));
        }
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::bad_request(
                "title_too_long",
                format!("a title may have at most {MAX_TITLE_CHARS} characters"),
            ));
        }
    }
    for (title, text) in &documents {
        created.push(
            state
                .store
                .insert_document(&owner.tenant_id, title, text)
                .await?,
        );
    }
    let body = match created.len() {
        1 => json!(created[0]),
        _ => json!({ "documents": created }),
    };
    Ok(HttpResponse::Created().json(body))
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

async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut multipart = Multipart::new(req.headers(), payload);
    let mut docs = Vec::new();
    let mut total = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(|e| {
            ApiError::bad_request(
                "invalid_multipart",
                format!("the upload could not be read: {e}"),
            )
        })?;
        let Some(filename) = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_owned)
        else {
            // Plain form fields are ignored; only files become documents.
            continue;
        };
        let lower = filename.to_ascii_lowercase();
        if !(lower.ends_with(".txt") || lower.ends_with(".md") || lower.ends_with(".markdown")) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "`{filename}` is not a .txt or .md file"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("invalid_multipart", format!("the upload broke off: {e}"))
            })?;
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
        docs.push((pick_title(Some(stem), &text), text));
    }
    if docs.is_empty() {
        return Err(ApiError::bad_request(
            "no_files",
            "the upload holds no .txt or .md file",
        ));
    }
    Ok(docs)
}

async fn list(
    state: web::Data<AppState>,
    Principal(owner): Principal,
) -> Result<HttpResponse, ApiError> {
    let documents = state.store.list_documents(&owner.tenant_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "documents": documents })))
}

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
    use super::pick_title;

    #[test]
    fn a_title_comes_from_the_request_then_the_first_heading() {
        assert_eq!(pick_title(Some(" Given "), "# Heading"), "Given");
        assert_eq!(pick_title(None, "\n\n## The Tower\ntext"), "The Tower");
        assert_eq!(pick_title(Some(""), "   "), "Untitled");
    }
}
