//! The chat page (`/`), the admin page (`/admin`) and their assets (`/static/...`), read
//! from the static folder (`RAGSTREAM_STATIC_DIR`) so pages can be edited without a
//! rebuild. Every response carries a strict Content-Security-Policy: no inline script, no
//! third-party origin, so text from a document or a model cannot run as code.

use std::path::{Component, Path, PathBuf};

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::table::Routes;
use crate::error::ApiError;
use crate::startup::AppState;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

pub fn configure(routes: &mut Routes) {
    routes
        .get("/", chat_page)
        .get("/admin", admin_page)
        .get("/static/{path:.*}", asset);
}

#[utoipa::path(
    operation_id = "pages_chat_page",
    summary = "The chat page",
    get,
    path = "/",
    tag = "pages",
    responses(
        (status = 200, description = "The chat page", content_type = "text/html"),
    )
)]
async fn chat_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state.settings.static_dir, "index.html").await
}

#[utoipa::path(
    operation_id = "pages_admin_page",
    summary = "The admin page",
    get,
    path = "/admin",
    tag = "pages",
    responses(
        (status = 200, description = "The admin page", content_type = "text/html"),
    )
)]
async fn admin_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state.settings.static_dir, "admin.html").await
}

#[utoipa::path(
    operation_id = "pages_asset",
    summary = "A file of the static folder",
    get,
    path = "/static/{path}",
    tag = "pages",
    params(("path" = String, Path, description = "A path inside the static folder")),
    responses(
        (status = 200, description = "A file of the static folder"),
        (status = 404, description = "No such file (or not the caller's)", body = crate::routes::api_doc::ErrorEnvelope),
    )
)]
async fn asset(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&state.settings.static_dir, &path).await
}

/// A path inside the static folder, or None for anything that could step outside it.
fn resolve(root: &Path, requested: &str) -> Option<PathBuf> {
    let relative = Path::new(requested);
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (safe && !requested.is_empty() && !requested.contains('\\')).then(|| root.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub(super) async fn serve(root: &Path, requested: &str) -> Result<HttpResponse, ApiError> {
    let path = resolve(root, requested).ok_or(ApiError::NotFound("file"))?;
    let read_path = path.clone();
    // File reads block; keep them off the worker's event loop.
    let bytes = web::block(move || std::fs::read(read_path))
        .await
        .map_err(|e| ApiError::Internal(format!("static read task failed: {e}")))?
        .map_err(|_| ApiError::NotFound("file"))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type(&path)))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Small files served from disk: always revalidate so an edit shows on reload.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_static_folder_are_refused() {
        let root = Path::new("/srv/static");
        assert_eq!(
            resolve(root, "app.js"),
            Some(PathBuf::from("/srv/static/app.js"))
        );
        assert_eq!(
            resolve(root, "vendor/marked.esm.js"),
            Some(PathBuf::from("/srv/static/vendor/marked.esm.js"))
        );
        for bad in [
            "",
            "../secret",
            "a/../../b",
            "/etc/passwd",
            "a\\..\\b",
            "./x",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn scripts_and_styles_get_their_types() {
        assert_eq!(
            content_type(Path::new("a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
