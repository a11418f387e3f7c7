//! Retries and failover, both only before the first token: once text has reached the
//! client, sending the request again would repeat or contradict it.
//!
//! An attempt counts as open when it has produced its first text (or ended cleanly
//! without any). Until then its deltas are held back, so a failed attempt leaves no trace
//! and the `Start` delta that goes out names the attempt that answered.

use std::time::Duration;

use futures_util::{stream, StreamExt};

use super::{Delta, DeltaStream, ProviderError};
use crate::config::UpstreamSettings;
use crate::telemetry;

/// Reads `s` up to its first text, or its end. On success the returned stream replays
/// what was read, then continues `s`.
pub async fn open_until_text(mut s: DeltaStream) -> Result<DeltaStream, ProviderError> {
    let mut head = Vec::with_capacity(2);
    loop {
        match s.next().await {
            Some(Ok(delta)) => {
                let text = matches!(&delta, Delta::Text(t) if !t.is_empty());
                head.push(delta);
                if text {
                    break;
                }
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(stream::iter(head.into_iter().map(Ok))
        .chain(s)
        .boxed_local())
}

/// The wait before retry number `retry` (0 for the first retry): the upstream's own
/// `Retry-After` when it gave one, else exponential backoff from `retry_base`, capped at
/// `retry_max`, less up to a quarter at random so that clients failing together do not
/// all come back together.
pub fn backoff(retry: u32, s: &UpstreamSettings, retry_after: Option<Duration>) -> Duration {
    if let Some(asked) = retry_after {
        return asked;
    }
    let exp = s
        .retry_base
        .saturating_mul(1u32 << retry.min(20))
        .min(s.retry_max);
    exp.mul_f64(1.0 - 0.25 * fastrand::f64())
}

/// Runs `attempt` until one opens, retrying retryable failures up to `max_retries` times.
pub fn with_retries(
    provider: &'static str,
    settings: UpstreamSettings,
    mut attempt: impl FnMut() -> DeltaStream + 'static,
) -> DeltaStream {
    stream::once(async move {
        let mut retries = 0;
        loop {
            telemetry::upstream_attempt(provider);
            match open_until_text(attempt()).await {
                // A failure after the first token is counted as it passes: one branch per
                // delta, no allocation.
                Ok(s) => return counting_errors(provider, s),
                Err(e) if e.retryable() && retries < settings.max_retries => {
                    telemetry::upstream_error(provider, e.code());
                    telemetry::upstream_retry(provider);
                    let delay = backoff(retries, &settings, e.retry_after());
                    retries += 1;
                    log::warn!("{e}; retry {retries} of {provider} in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    telemetry::upstream_error(provider, e.code());
                    return stream::iter([Err(e)]).boxed_local();
                }
            }
        }
    })
    .flatten()
    .boxed_local()
}

fn counting_errors(provider: &'static str, s: DeltaStream) -> DeltaStream {
    s.inspect(move |item| {
        if let Err(e) = item {
            telemetry::upstream_error(provider, e.code());
        }
    })
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn settings(max_retries: u32) -> UpstreamSettings {
        UpstreamSettings {
            max_retries,
            retry_base: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            ..UpstreamSettings::default()
        }
    }

    fn overloaded() -> ProviderError {
        ProviderError::Status {
            provider: "p",
            status: 529,
            message: "Overloaded".into(),
            retryable: true,
            retry_after: None,
        }
    }

    fn text(t: &str) -> Result<Delta, ProviderError> {
        Ok(Delta::Text(t.into()))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_a_quarter_of_jitter() {
        let s = UpstreamSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            ..UpstreamSettings::default()
        };
        for (retry, full) in [(0, 100), (1, 200), (2, 400), (3, 500), (30, 500)] {
            let d = backoff(retry, &s, None).as_millis() as u64;
            assert!((full * 3 / 4..=full).contains(&d), "retry {retry}: {d} ms");
        }
        let asked = Some(Duration::from_secs(3));
        assert_eq!(backoff(0, &s, asked), Duration::from_secs(3));
    }

    #[actix_web::test]
    async fn retryable_failures_are_retried_until_text_flows() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let s = with_retries("p", settings(2), move || {
            c.set(c.get() + 1);
            if c.get() < 3 {
                stream::iter([Err(overloaded())]).boxed_local()
            } else {
                stream::iter([text("a"), text("b")]).boxed_local()
            }
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![text("a"), text("b")]);
        assert_eq!(calls.get(), 3);
    }

    #[actix_web::test]
    async fn retries_stop_at_the_limit_and_the_last_error_is_returned() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let s = with_retries("p", settings(1), move || {
            c.set(c.get() + 1);
            stream::iter([Err(overloaded())]).boxed_local()
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Err(overloaded())]);
        assert_eq!(calls.get(), 2);
    }

    #[actix_web::test]
    async fn an_error_after_the_first_token_is_not_retried() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let s = with_retries("p", settings(3), move || {
            c.set(c.get() + 1);
            stream::iter([text("a"), Err(overloaded())]).boxed_local()
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![text("a"), Err(overloaded())]);
        assert_eq!(calls.get(), 1);
    }

    #[actix_web::test]
    async fn a_non_retryable_failure_is_returned_at_once() {
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let unauthorized = ProviderError::Status {
            provider: "p",
            status: 401,
            message: "bad key".into(),
            retryable: false,
            retry_after: None,
        };
        let e = unauthorized.clone();
        let s = with_retries("p", settings(3), move || {
            c.set(c.get() + 1);
            stream::iter([Err(e.clone())]).boxed_local()
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Err(unauthorized)]);
        assert_eq!(calls.get(), 1);
    }
}
