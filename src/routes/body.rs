//! Reading request bodies with a size cap and UTF-8 checks that answer with clear errors.

use actix_web::web;
use bytes::BytesMut;
use futures_util::StreamExt;

use crate::error::ApiError;

pub async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<BytesMut, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("the body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("the body is over the limit of {limit} bytes"))
}

pub fn utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "the text is not valid UTF-8 (first bad byte at {})",
                e.valid_up_to()
            ),
        )
    })
}
