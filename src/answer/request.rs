//! The checks every transport applies to a question before admitting it.

use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::providers::{Providers, Sampling};
use crate::store::PastMessage;

pub const DEFAULT_TOP_K: usize = 5;
pub const MAX_TOP_K: usize = 20;

/// A validated question, scoped to the asking key's tenant.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    pub tenant_id: String,
    pub question: String,
    pub top_k: usize,
    /// Set for agent chat: the answer is a turn of a conversation, stored, with the
    /// conversation's earlier turns as history. `None` for one-off questions (`/ask`).
    pub conversation: Option<ConversationRef>,
    /// Set by the OpenAI-compatible route: the client sent the conversation itself.
    pub chat: Option<ClientChat>,
}

/// What an OpenAI-style client's own messages add to its question.
#[derive(Debug, Clone, Default)]
pub struct ClientChat {
    /// The user and assistant messages before the question, oldest first. They are the
    /// history (within the history budget, as a stored conversation's would be) even when
    /// the answer is also stored as a turn of a named conversation: the client's account
    /// of the conversation is the one it expects the model to see.
    pub earlier: Vec<PastMessage>,
    /// The client's system message(s), sent after the hub's grounding instructions.
    pub system: Option<String>,
    pub sampling: Sampling,
}

/// Which conversation a turn belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRef {
    /// The API key the conversation belongs to.
    pub user_id: String,
    /// `None` starts a new conversation; its id is the answer's first event.
    pub id: Option<String>,
}

/// A client's optional conversation id: blank counts as absent (a query string's
/// `conversationId=`), surrounding space is dropped.
pub fn conversation_id(raw: Option<&str>) -> Option<String> {
    raw.map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Longest model name a request may send (names are short; this only bounds garbage).
const MAX_MODEL_CHARS: usize = 200;

/// The provider and model a request chose, checked against the configured allow-list.
/// Both `None`: the default provider (or failover chain) with its configured model.
/// A chosen provider answers alone: naming one opts out of failover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderChoice {
    pub provider: Option<ProviderKind>,
    pub model: Option<String>,
}

/// Checks a request's optional `provider` and `model`; blank values count as absent. A
/// model without a provider goes to the first configured provider that allows it.
pub fn validate_choice(
    provider: Option<&str>,
    model: Option<&str>,
    providers: &Providers,
) -> Result<ProviderChoice, ApiError> {
    let provider = provider.map(str::trim).filter(|p| !p.is_empty());
    let model = model.map(str::trim).filter(|m| !m.is_empty());
    let kind = match provider {
        None => None,
        Some(name) => match ProviderKind::parse(name).filter(|k| providers.member(*k).is_some()) {
            Some(kind) => Some(kind),
            None => {
                return Err(ApiError::bad_request(
                    "unknown_provider",
                    format!(
                        "provider `{}` is not available; available: {}",
                        shorten(name),
                        providers.names().join(", ")
                    ),
                ))
            }
        },
    };
    let Some(model) = model else {
        return Ok(ProviderChoice {
            provider: kind,
            model: None,
        });
    };
    let unknown = || {
        ApiError::bad_request(
            "unknown_model",
            format!(
                "model `{}` is not allowed{}; see RAGSTREAM_ALLOWED_MODELS",
                shorten(model),
                kind.map_or(String::new(), |k| format!(" for {}", k.name()))
            ),
        )
    };
    if model.chars().count() > MAX_MODEL_CHARS || model.chars().any(char::is_control) {
        return Err(unknown());
    }
    let kind = match kind {
        Some(kind) => {
            let allowed = providers.member(kind).is_some_and(|m| m.allows(model));
            if !allowed {
                return Err(unknown());
            }
            kind
        }
        None => providers.provider_for_model(model).ok_or_else(unknown)?,
    };
    Ok(ProviderChoice {
        provider: Some(kind),
        model: Some(model.to_owned()),
    })
}

/// Echoing a client's text in an error is useful; echoing a megabyte of it is not.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
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
    use crate::config::{AllowedModel, OpenAiSettings, Secret, Settings};

    fn providers() -> Providers {
        let settings = Settings {
            providers: vec![ProviderKind::OpenAi, ProviderKind::Offline],
            openai: Some(OpenAiSettings {
                api_key: Secret::new("k"),
                base_url: "http://127.0.0.1:9/v1".into(),
                model: "gpt-4o-mini".into(),
            }),
            allowed_models: vec![AllowedModel {
                provider: ProviderKind::OpenAi,
                model: Some("gpt-4o".into()),
            }],
            ..Settings::default()
        };
        Providers::from_settings(&settings).expect("valid")
    }

    fn choice(provider: Option<&str>, model: Option<&str>) -> Result<ProviderChoice, &'static str> {
        validate_choice(provider, model, &providers()).map_err(|e| e.code())
    }

    #[test]
    fn no_choice_means_the_default_chain() {
        assert_eq!(choice(None, None), Ok(ProviderChoice::default()));
        assert_eq!(choice(Some(" "), Some("")), Ok(ProviderChoice::default()));
    }

    #[test]
    fn a_configured_provider_and_its_allowed_models_are_accepted() {
        let openai = Some(ProviderKind::OpenAi);
        assert_eq!(
            choice(Some("openai"), Some("gpt-4o")),
            Ok(ProviderChoice {
                provider: openai,
                model: Some("gpt-4o".into())
            })
        );
        assert_eq!(
            choice(Some("openai"), Some("gpt-4o-mini"))
                .unwrap()
                .provider,
            openai
        );
        assert_eq!(
            choice(Some("offline"), None),
            Ok(ProviderChoice {
                provider: Some(ProviderKind::Offline),
                model: None
            })
        );
        // A model alone finds its provider.
        assert_eq!(choice(None, Some("gpt-4o")).unwrap().provider, openai);
        assert_eq!(
            choice(None, Some("extractive-v1")).unwrap().provider,
            Some(ProviderKind::Offline)
        );
    }

    #[test]
    fn unknown_or_unconfigured_providers_and_unlisted_models_are_refused() {
        assert_eq!(choice(Some("anthropic"), None), Err("unknown_provider"));
        assert_eq!(choice(Some("gpt"), None), Err("unknown_provider"));
        assert_eq!(choice(Some("openai"), Some("gpt-5")), Err("unknown_model"));
        assert_eq!(
            choice(Some("offline"), Some("gpt-4o")),
            Err("unknown_model")
        );
        assert_eq!(choice(None, Some("o1")), Err("unknown_model"));
        assert_eq!(choice(None, Some("bad\nname")), Err("unknown_model"));
    }

    #[test]
    fn a_blank_conversation_id_means_a_new_conversation() {
        assert_eq!(conversation_id(None), None);
        assert_eq!(conversation_id(Some(" ")), None);
        assert_eq!(conversation_id(Some(" c1 ")), Some("c1".to_owned()));
    }

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
