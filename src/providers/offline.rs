//! The built-in provider: an extractive answerer that needs no network.
//!
//! It picks the retrieved sentences that share the most terms with the question, cites them
//! as `[n]`, and streams the result word by word at a fixed pace, so every transport can be
//! tried (and tested) with realistic token timing and no LLM.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::offline_answer::{compose_answer, split_tokens, PassageRef};
use super::{Delta, DeltaStream, Prompt, Provider};

const MODEL: &str = "extractive-v1";

/// How many sentences an answer quotes at most.
const MAX_SENTENCES: usize = 4;

pub struct OfflineProvider {
    pace: Duration,
}

impl OfflineProvider {
    pub fn new(pace: Duration) -> Self {
        OfflineProvider { pace }
    }
}

/// Token boundaries are kept as byte ranges of one answer string, so producing the
/// answer costs one allocation and each token one small copy.
fn token_ranges(answer: &str) -> Vec<(usize, usize)> {
    let base = answer.as_ptr() as usize;
    split_tokens(answer)
        .into_iter()
        .map(|t| {
            let start = t.as_ptr() as usize - base;
            (start, start + t.len())
        })
        .collect()
}

impl Provider for OfflineProvider {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        MODEL
    }

    fn stream(&self, prompt: Prompt) -> DeltaStream {
        let refs: Vec<PassageRef<'_>> = prompt
            .passages
            .iter()
            .enumerate()
            .map(|(i, p)| PassageRef {
                number: i + 1,
                text: &p.text,
            })
            .collect();
        let answer = compose_answer(&prompt.terms, &refs, MAX_SENTENCES);
        let ranges = token_ranges(&answer);
        let count = ranges.len() as u64;
        let pace = self.pace;

        let tokens = stream::iter(ranges.into_iter().enumerate()).then(move |(i, (start, end))| {
            let token = answer[start..end].to_owned();
            async move {
                // The first token goes out at once; the pace is the gap between tokens.
                if i > 0 && !pace.is_zero() {
                    actix_web::rt::time::sleep(pace).await;
                }
                Ok(Delta::Text(token))
            }
        });
        let tail = stream::iter([
            Ok(Delta::Usage {
                output_tokens: count,
            }),
            Ok(Delta::Finish("stop".to_owned())),
        ]);
        let start = stream::iter([Ok(Delta::Start {
            provider: "offline",
            model: MODEL.to_owned(),
        })]);
        start.chain(tokens).chain(tail).boxed_local()
    }
}
