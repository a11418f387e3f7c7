//! A list of providers that fails over: the first answers unless it fails before its first
//! token (after its own retries), then the next one is asked, and so on. After the first
//! token there is no failover: the client already has part of that answer.

use std::sync::Arc;

use futures_util::{stream, StreamExt};

use super::retry::open_until_text;
use super::{DeltaStream, Prompt, Provider, ProviderError};

pub struct ChainProvider {
    members: Vec<Arc<dyn Provider>>,
}

impl ChainProvider {
    /// `members` in failover order; the caller guarantees at least one.
    pub fn new(members: Vec<Arc<dyn Provider>>) -> Self {
        ChainProvider { members }
    }
}

impl Provider for ChainProvider {
    fn name(&self) -> &'static str {
        self.members.first().map_or("none", |p| p.name())
    }

    fn model(&self) -> &str {
        self.members.first().map_or("", |p| p.model())
    }

    fn stream(&self, prompt: Prompt) -> DeltaStream {
        let members = self.members.clone();
        stream::once(async move {
            let mut last = None;
            for (i, member) in members.iter().enumerate() {
                match open_until_text(member.stream(prompt.clone())).await {
                    Ok(s) => return s,
                    Err(e) => {
                        if let Some(next) = members.get(i + 1) {
                            log::warn!("{e}; failing over to {}", next.name());
                            crate::telemetry::upstream_failover(member.name(), next.name());
                        }
                        last = Some(e);
                    }
                }
            }
            let e = last.unwrap_or(ProviderError::Connect {
                provider: "chain",
                message: "no provider is configured".to_owned(),
            });
            stream::iter([Err(e)]).boxed_local()
        })
        .flatten()
        .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Delta;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Scripted {
        name: &'static str,
        items: Vec<Result<Delta, ProviderError>>,
        calls: AtomicUsize,
    }

    impl Provider for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }
        fn model(&self) -> &str {
            "m"
        }
        fn stream(&self, _: Prompt) -> DeltaStream {
            self.calls.fetch_add(1, Ordering::Relaxed);
            stream::iter(self.items.clone()).boxed_local()
        }
    }

    fn scripted(name: &'static str, items: Vec<Result<Delta, ProviderError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            name,
            items,
            calls: AtomicUsize::new(0),
        })
    }

    fn prompt() -> Prompt {
        Prompt {
            question: "q".into(),
            passages: Vec::new().into(),
            terms: vec![],
            model: None,
            history: vec![],
            ..Prompt::default()
        }
    }

    fn down(provider: &'static str) -> ProviderError {
        ProviderError::Connect {
            provider,
            message: "refused".into(),
        }
    }

    fn start(provider: &'static str) -> Result<Delta, ProviderError> {
        Ok(Delta::Start {
            provider,
            model: "m".into(),
        })
    }

    #[actix_web::test]
    async fn the_next_provider_answers_when_the_first_fails_before_any_token() {
        let a = scripted("a", vec![start("a"), Err(down("a"))]);
        let b = scripted("b", vec![start("b"), Ok(Delta::Text("hi".into()))]);
        let chain = ChainProvider::new(vec![a.clone(), b.clone()]);
        let got: Vec<_> = chain.stream(prompt()).collect().await;
        // The failed member's Start is dropped with it.
        assert_eq!(got, vec![start("b"), Ok(Delta::Text("hi".into()))]);
        assert_eq!(a.calls.load(Ordering::Relaxed), 1);
        assert_eq!(b.calls.load(Ordering::Relaxed), 1);
    }

    #[actix_web::test]
    async fn a_failure_after_the_first_token_does_not_fail_over() {
        let a = scripted("a", vec![Ok(Delta::Text("hi".into())), Err(down("a"))]);
        let b = scripted("b", vec![Ok(Delta::Text("other".into()))]);
        let chain = ChainProvider::new(vec![a, b.clone()]);
        let got: Vec<_> = chain.stream(prompt()).collect().await;
        assert_eq!(got, vec![Ok(Delta::Text("hi".into())), Err(down("a"))]);
        assert_eq!(b.calls.load(Ordering::Relaxed), 0);
    }

    #[actix_web::test]
    async fn when_every_provider_fails_the_last_error_is_returned() {
        let a = scripted("a", vec![Err(down("a"))]);
        let b = scripted("b", vec![Err(down("b"))]);
        let chain = ChainProvider::new(vec![a, b]);
        let got: Vec<_> = chain.stream(prompt()).collect().await;
        assert_eq!(got, vec![Err(down("b"))]);
    }
}
