//! Request-rate limits per API key (`RAGSTREAM_RATE_PER_MINUTE` for answers,
//! `RAGSTREAM_UPLOAD_RATE_PER_MINUTE` for uploads), apart from the concurrent-stream limit:
//! a key may hold five answers at once and still be held to sixty a minute.
//!
//! GCRA from `governor`: a key may burst up to its per-minute figure, then gets one more
//! every `60 s / n`. Keyed by API key id; keys idle long enough to be back at a full burst
//! are forgotten by [`RateLimits::retain_recent`], so memory follows the keys active in the
//! last minute, not every key ever seen.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// How often keys at a full burst are forgotten.
pub const RETAIN_EVERY: Duration = Duration::from_secs(60);

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Answers,
    Uploads,
}

/// A refusal: the limit and when the next request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this API key may start {per_minute} {what} a minute; retry in {retry_after_secs} s")]
pub struct RateLimited {
    pub what: &'static str,
    pub per_minute: u32,
    /// Whole seconds, rounded up (at least 1): what `Retry-After` says.
    pub retry_after_secs: u64,
}

struct Limit {
    per_minute: NonZeroU32,
    limiter: KeyedLimiter,
}

#[derive(Default)]
pub struct RateLimits {
    answers: Option<Limit>,
    uploads: Option<Limit>,
}

impl RateLimits {
    /// 0 turns a limit off.
    pub fn new(answers_per_minute: u32, uploads_per_minute: u32) -> RateLimits {
        let limit = |n| {
            NonZeroU32::new(n).map(|per_minute| Limit {
                per_minute,
                limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            })
        };
        RateLimits {
            answers: limit(answers_per_minute),
            uploads: limit(uploads_per_minute),
        }
    }

    pub fn is_off(&self) -> bool {
        self.answers.is_none() && self.uploads.is_none()
    }

    /// Counts one request of `key_id`, or refuses it.
    pub fn check(&self, what: Limited, key_id: &str) -> Result<(), RateLimited> {
        let limit = match what {
            Limited::Answers => &self.answers,
            Limited::Uploads => &self.uploads,
        };
        let Some(limit) = limit else {
            return Ok(());
        };
        limit
            .limiter
            .check_key(&key_id.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(limit.limiter.clock().now());
                RateLimited {
                    what: match what {
                        Limited::Answers => "answers",
                        Limited::Uploads => "uploads",
                    },
                    per_minute: limit.per_minute.get(),
                    retry_after_secs: ceil_secs(wait),
                }
            })
    }

    /// Forgets keys that are back at a full burst (call every [`RETAIN_EVERY`]).
    pub fn retain_recent(&self) {
        for limit in [&self.answers, &self.uploads].into_iter().flatten() {
            limit.limiter.retain_recent();
            limit.limiter.shrink_to_fit();
        }
    }

    /// Keys remembered, for tests of the memory bound.
    pub fn keys(&self) -> usize {
        [&self.answers, &self.uploads]
            .into_iter()
            .flatten()
            .map(|l| l.limiter.len())
            .sum()
    }
}

fn ceil_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_a_refusal_with_the_wait_rounded_up() {
        let limits = RateLimits::new(2, 0);
        assert!(limits.check(Limited::Answers, "k1").is_ok());
        assert!(limits.check(Limited::Answers, "k1").is_ok());
        let refused = limits.check(Limited::Answers, "k1").unwrap_err();
        assert_eq!(refused.per_minute, 2);
        // One more every 30 s.
        assert!((29..=30).contains(&refused.retry_after_secs), "{refused:?}");
        // Another key has its own budget; uploads are not limited.
        assert!(limits.check(Limited::Answers, "k2").is_ok());
        for _ in 0..10 {
            assert!(limits.check(Limited::Uploads, "k1").is_ok());
        }
    }

    #[test]
    fn zero_means_no_limit_and_no_memory() {
        let limits = RateLimits::new(0, 0);
        assert!(limits.is_off());
        for i in 0..1000 {
            assert!(limits.check(Limited::Answers, &format!("k{i}")).is_ok());
        }
        assert_eq!(limits.keys(), 0);
    }

    #[test]
    fn keys_back_at_a_full_burst_are_forgotten() {
        // One more a millisecond: a key that made one request is back at a full burst
        // a millisecond later.
        let limits = RateLimits::new(60_000, 0);
        for i in 0..100 {
            assert!(limits.check(Limited::Answers, &format!("k{i}")).is_ok());
        }
        assert_eq!(limits.keys(), 100);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while limits.keys() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} keys kept",
                limits.keys()
            );
            std::thread::yield_now();
            limits.retain_recent();
        }
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
    }
}
