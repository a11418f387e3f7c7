//! The configured providers: the default one (a single provider or a failover chain), each
//! member by name, and the models a request may choose for each.

use std::sync::Arc;

use super::anthropic::AnthropicProvider;
use super::chain::ChainProvider;
use super::offline::OfflineProvider;
use super::openai::OpenAiProvider;
use super::Provider;
use crate::config::{ConfigError, ProviderKind, Settings};

pub struct Member {
    pub kind: ProviderKind,
    pub provider: Arc<dyn Provider>,
    /// Models a request may name besides the configured one; `None` allows any.
    allowed: Vec<Option<String>>,
}

impl Member {
    pub fn allows(&self, model: &str) -> bool {
        model == self.provider.model()
            || self
                .allowed
                .iter()
                .any(|a| a.as_deref().is_none_or(|m| m == model))
    }

    /// Allowed by name, not only by a `provider:*` wildcard.
    fn names(&self, model: &str) -> bool {
        model == self.provider.model() || self.allowed.iter().any(|a| a.as_deref() == Some(model))
    }
}

pub struct Providers {
    default: Arc<dyn Provider>,
    members: Vec<Member>,
}

impl Providers {
    pub fn from_settings(s: &Settings) -> Result<Providers, ConfigError> {
        let mut members = Vec::with_capacity(s.providers.len());
        for &kind in &s.providers {
            let provider: Arc<dyn Provider> = match kind {
                ProviderKind::Offline => Arc::new(OfflineProvider::new(s.offline_pace)),
                ProviderKind::OpenAi => {
                    let openai = s.openai.as_ref().ok_or(ConfigError {
                        var: "OPENAI_API_KEY",
                        message: "is required when the openai provider is used".to_owned(),
                    })?;
                    Arc::new(OpenAiProvider::new(openai, &s.upstream))
                }
                ProviderKind::Anthropic => {
                    let anthropic = s.anthropic.as_ref().ok_or(ConfigError {
                        var: "ANTHROPIC_API_KEY",
                        message: "is required when the anthropic provider is used".to_owned(),
                    })?;
                    Arc::new(AnthropicProvider::new(anthropic, &s.upstream))
                }
            };
            let allowed = s
                .allowed_models
                .iter()
                .filter(|a| a.provider == kind)
                .map(|a| a.model.clone())
                .collect();
            members.push(Member {
                kind,
                provider,
                allowed,
            });
        }
        let default: Arc<dyn Provider> = match members.as_slice() {
            [] => {
                return Err(ConfigError {
                    var: "RAGSTREAM_PROVIDERS",
                    message: "name at least one provider".to_owned(),
                })
            }
            [one] => one.provider.clone(),
            many => Arc::new(ChainProvider::new(
                many.iter().map(|m| m.provider.clone()).collect(),
            )),
        };
        Ok(Providers { default, members })
    }

    /// One provider that answers everything; for tests and embedding.
    pub fn single(kind: ProviderKind, provider: Arc<dyn Provider>) -> Providers {
        Providers {
            default: provider.clone(),
            members: vec![Member {
                kind,
                provider,
                allowed: Vec::new(),
            }],
        }
    }

    /// The provider (or failover chain) for requests that choose none.
    pub fn default_provider(&self) -> &Arc<dyn Provider> {
        &self.default
    }

    pub fn member(&self, kind: ProviderKind) -> Option<&Member> {
        self.members.iter().find(|m| m.kind == kind)
    }

    /// Configured provider names, in failover order.
    pub fn names(&self) -> Vec<&'static str> {
        self.members.iter().map(|m| m.kind.name()).collect()
    }

    /// The `provider:model` choices a request may name: each provider's configured model,
    /// then its allow-listed ones (a `provider:*` wildcard allows any model, which no list
    /// can show).
    pub fn model_choices(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.members {
            let listed = std::iter::once(m.provider.model())
                .chain(m.allowed.iter().filter_map(|a| a.as_deref()));
            for model in listed {
                let id = format!("{}:{model}", m.kind.name());
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// The provider a request that names only a model goes to: the first that names the
    /// model (configured or listed), else the first that allows any model.
    pub fn provider_for_model(&self, model: &str) -> Option<ProviderKind> {
        self.members
            .iter()
            .find(|m| m.names(model))
            .or_else(|| self.members.iter().find(|m| m.allows(model)))
            .map(|m| m.kind)
    }
}
