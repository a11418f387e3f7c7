//! The checks every transport applies to a question before admitting it.

use crate::error::ApiError;

pub const DEFAULT_TOP_K: usize = 5;
pub const MAX_TOP_K: usize = 20;

/// A validated question, scoped to the asking key's tenant.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    pub tenant_id: String,
    pub question: String,
    pub top_k: usize,
}

pub fn validate_question(question: &str, max_chars: usize) -> Result<String, ApiError> {
    let trimmed = question.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "empty_question",
            "the question is empty",
        ));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(ApiError::bad_request(
            "question_too_long",
            format!("the question has {chars} characters; the limit is {max_chars}"),
        ));
    }
    Ok(trimmed.to_owned())
}

pub fn validate_top_k(top_k: Option<i64>) -> Result<usize, ApiError> {
    match top_k {
        None => Ok(DEFAULT_TOP_K),
        Some(k) if (1..=MAX_TOP_K as i64).contains(&k) => Ok(k as usize),
        Some(k) => Err(ApiError::bad_request(
            "invalid_top_k",
            format!("topK must be between 1 and {MAX_TOP_K}, got {k}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_question_is_refused() {
        assert_eq!(
            validate_question("  \n ", 10).unwrap_err().code(),
            "empty_question"
        );
    }

    #[test]
    fn a_question_over_the_limit_is_refused_by_characters_not_bytes() {
        assert!(validate_question("ééééé", 5).is_ok());
        assert_eq!(
            validate_question("éééééé", 5).unwrap_err().code(),
            "question_too_long"
        );
    }

    #[test]
    fn top_k_defaults_to_five_and_stays_within_one_to_twenty() {
        assert_eq!(validate_top_k(None).unwrap(), 5);
        assert_eq!(validate_top_k(Some(20)).unwrap(), 20);
        assert_eq!(validate_top_k(Some(0)).unwrap_err().code(), "invalid_top_k");
        assert_eq!(
            validate_top_k(Some(21)).unwrap_err().code(),
            "invalid_top_k"
        );
    }
}
