//! The admin page's charts: a ring of the last 15 minutes of figures, one sample per
//! interval (5 s by default), kept by the hub so a page opened now shows the recent past at
//! once. One ring for the whole hub and one per tenant (its admins see their own figures).
//!
//! Fed by the messages the hub already gets (an admission, a release): nothing per token.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// 15 minutes at the default interval of 5 s.
pub const HISTORY_SAMPLES: usize = 180;
/// The default time between samples (`RAGSTREAM_ADMIN_SAMPLE_SECS`).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// The window of `errorsPerMinute`.
const ERROR_WINDOW: Duration = Duration::from_secs(60);

/// The figures of one interval.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Counts up from 1 while the hub runs; a client asks for the samples after the last it has.
    pub seq: u64,
    /// The end of the interval, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The most answers streaming at once during the interval.
    pub streams: u64,
    /// Answers that ended during the interval (done, error or cut short).
    pub answers: u64,
    /// Tokens of the answers that ended during the interval, per second of the interval.
    pub tokens_per_second: f64,
    /// Time to first token of the answers that ended during the interval; null without any.
    pub ttft_ms_p50: Option<u64>,
    pub ttft_ms_p95: Option<u64>,
    /// Answers that ended with an error during the interval.
    pub errors: u64,
    /// Answers that ended with an error in the minute up to the end of the interval.
    pub errors_per_minute: u64,
}

/// What the admin routes hand out: the samples and the interval they cover each.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    pub interval_ms: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// The figures of the interval under way.
#[derive(Debug, Default)]
struct Open {
    peak_streams: usize,
    answers: u64,
    tokens: u64,
    ttft_ms: Vec<u64>,
    errors: u64,
}

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    open: Open,
    last_seq: u64,
}

impl History {
    /// An answer started, or one is running: `streaming` is how many stream now.
    pub fn streaming(&mut self, streaming: usize) {
        self.open.peak_streams = self.open.peak_streams.max(streaming);
    }

    /// An answer ended (also one cut short: its tokens and first token count all the same).
    pub fn ended(&mut self, ttft_ms: Option<u64>, tokens: u64, error: bool) {
        self.open.answers += 1;
        self.open.tokens += tokens;
        self.open.ttft_ms.extend(ttft_ms);
        self.open.errors += u64::from(error);
    }

    /// Closes the interval that ends at `at` (Unix ms), `streaming_now` answers still running:
    /// they are the next interval's first figure.
    pub fn close(&mut self, at: u64, interval: Duration, streaming_now: usize) {
        let open = std::mem::replace(
            &mut self.open,
            Open {
                peak_streams: streaming_now,
                ..Open::default()
            },
        );
        let mut ttft = open.ttft_ms;
        ttft.sort_unstable();
        let pct = |p: usize| (!ttft.is_empty()).then(|| ttft[(ttft.len() - 1) * p / 100]);
        let secs = interval.as_secs_f64().max(0.001);
        // The samples closing inside the minute before this one's end, this one included.
        let window = (ERROR_WINDOW.as_millis() / interval.as_millis().max(1)).max(1) as usize;
        let earlier: u64 = self
            .samples
            .iter()
            .rev()
            .take(window - 1)
            .map(|s| s.errors)
            .sum();
        self.last_seq += 1;
        if self.samples.len() == HISTORY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            seq: self.last_seq,
            at,
            streams: open.peak_streams as u64,
            answers: open.answers,
            tokens_per_second: open.tokens as f64 / secs,
            ttft_ms_p50: pct(50),
            ttft_ms_p95: pct(95),
            errors: open.errors,
            errors_per_minute: earlier + open.errors,
        });
    }

    /// The samples after `after` (every sample kept for `None`), oldest first.
    pub fn since(&self, after: Option<u64>) -> Vec<Sample> {
        let after = after.unwrap_or(0);
        self.samples
            .iter()
            .filter(|s| s.seq > after)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    #[test]
    fn a_sample_holds_the_figures_of_its_interval() {
        let mut h = History::default();
        h.streaming(1);
        h.streaming(3);
        h.streaming(2);
        for ttft in [10, 20, 30, 40] {
            h.ended(Some(ttft), 25, false);
        }
        h.ended(None, 0, true);
        h.close(1_000, FIVE, 2);
        let s = &h.since(None)[0];
        assert_eq!(s.seq, 1);
        assert_eq!(s.at, 1_000);
        assert_eq!(s.streams, 3);
        assert_eq!(s.answers, 5);
        assert_eq!(s.tokens_per_second, 20.0);
        assert_eq!(s.ttft_ms_p50, Some(20));
        assert_eq!(s.ttft_ms_p95, Some(30));
        assert_eq!((s.errors, s.errors_per_minute), (1, 1));
    }

    #[test]
    fn answers_still_running_at_a_close_count_in_the_next_sample() {
        let mut h = History::default();
        h.streaming(4);
        h.close(1, FIVE, 4);
        h.close(2, FIVE, 0);
        h.close(3, FIVE, 0);
        let streams: Vec<u64> = h.since(None).iter().map(|s| s.streams).collect();
        assert_eq!(streams, [4, 4, 0]);
        let quiet = &h.since(Some(2))[0];
        assert_eq!((quiet.answers, quiet.tokens_per_second), (0, 0.0));
        assert_eq!(quiet.ttft_ms_p50, None);
    }

    #[test]
    fn errors_per_minute_sum_the_last_minute_of_samples() {
        let mut h = History::default();
        // One error in each of 15 intervals of 5 s: a minute holds 12 of them.
        for i in 0..15 {
            h.ended(None, 0, true);
            h.close(i, FIVE, 0);
        }
        let per_minute: Vec<u64> = h.since(None).iter().map(|s| s.errors_per_minute).collect();
        assert_eq!(per_minute[..3], [1, 2, 3]);
        assert_eq!(per_minute[11..], [12, 12, 12, 12]);
        // With a 1 s interval the minute is 60 samples.
        let mut fast = History::default();
        for i in 0..70 {
            fast.ended(None, 0, i % 2 == 0);
            fast.close(i, Duration::from_secs(1), 0);
        }
        assert_eq!(fast.since(Some(69))[0].errors_per_minute, 30);
    }

    #[test]
    fn the_ring_keeps_the_last_fifteen_minutes() {
        let mut h = History::default();
        for i in 0..(HISTORY_SAMPLES as u64 + 20) {
            h.close(i, FIVE, 0);
        }
        let all = h.since(None);
        assert_eq!(all.len(), HISTORY_SAMPLES);
        assert_eq!(all[0].seq, 21);
        assert_eq!(all.last().map(|s| s.seq), Some(HISTORY_SAMPLES as u64 + 20));
        let newer = h.since(Some(HISTORY_SAMPLES as u64 + 18));
        assert_eq!(newer.iter().map(|s| s.seq).collect::<Vec<_>>(), [199, 200]);
    }
}
