//! The prompt an LLM provider sees: instructions, numbered passages, the question.

use std::borrow::Cow;

use crate::providers::Prompt;

pub const SYSTEM_PROMPT: &str = "You are a helpful assistant that answers questions from the \
provided documents only. Cite the passages you use as [1], [2], ... If the passages do not \
contain the answer, say so plainly.";

/// The system text: the hub's grounding instructions, then the client's own system message
/// when it sent one, so a client can shape the answer but not remove the grounding.
pub fn system_text(prompt: &Prompt) -> Cow<'static, str> {
    match prompt.system.as_deref().map(str::trim) {
        Some(extra) if !extra.is_empty() => Cow::Owned(format!("{SYSTEM_PROMPT}\n\n{extra}")),
        _ => Cow::Borrowed(SYSTEM_PROMPT),
    }
}

/// The user message: numbered passages with their titles, then the question. Passage
/// numbers match the `sources` list sent to clients, so citations line up.
pub fn render_user_message(prompt: &Prompt) -> String {
    let mut out = String::with_capacity(
        prompt.question.len()
            + prompt
                .passages
                .iter()
                .map(|p| p.text.len() + 64)
                .sum::<usize>(),
    );
    if prompt.passages.is_empty() {
        out.push_str("No passages were found for this question.\n\n");
    } else {
        out.push_str("Passages:\n\n");
        for (i, p) in prompt.passages.iter().enumerate() {
            out.push_str(&format!("[{}] {}\n{}\n\n", i + 1, p.title, p.text.trim()));
        }
    }
    out.push_str("Question: ");
    out.push_str(prompt.question.trim());
    out
}

/// Characters per token of the input estimate: the usual rule of thumb for English text
/// with OpenAI's and Anthropic's tokenizers.
pub const CHARS_PER_TOKEN: usize = 4;

/// The hub's estimate of a prompt's input tokens, for providers that do not report them:
/// the characters of everything sent (the system text, the earlier turns, the user message
/// with its passages) divided by [`CHARS_PER_TOKEN`], rounded up. Per-message framing
/// tokens are not counted.
pub fn estimate_input_tokens(prompt: &Prompt) -> u64 {
    let chars = system_text(prompt).chars().count()
        + prompt
            .history
            .iter()
            .map(|turn| turn.content.chars().count())
            .sum::<usize>()
        + render_user_message(prompt).chars().count();
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Passage;

    fn passage(title: &str, text: &str) -> Passage {
        Passage {
            document_id: "d".into(),
            title: title.into(),
            chunk_id: 1,
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn passages_are_numbered_in_rank_order_before_the_question() {
        let prompt = Prompt {
            question: "When was it built?".into(),
            passages: vec![
                passage("Tower", "Built in 1889."),
                passage("Bridge", "Opened 1937."),
            ]
            .into(),
            terms: vec![],
            model: None,
            history: vec![],
            ..Prompt::default()
        };
        let text = render_user_message(&prompt);
        let first = text.find("[1] Tower").expect("first passage");
        let second = text.find("[2] Bridge").expect("second passage");
        let question = text.find("Question: When was it built?").expect("question");
        assert!(first < second && second < question);
    }

    #[test]
    fn a_client_system_message_follows_the_grounding_instructions() {
        let mut prompt = Prompt::default();
        assert_eq!(system_text(&prompt), SYSTEM_PROMPT);
        prompt.system = Some("  ".into());
        assert_eq!(system_text(&prompt), SYSTEM_PROMPT);
        prompt.system = Some("Answer in French.".into());
        let text = system_text(&prompt);
        assert!(text.starts_with(SYSTEM_PROMPT), "{text}");
        assert!(text.ends_with("\n\nAnswer in French."), "{text}");
    }

    #[test]
    fn no_passages_is_said_plainly() {
        let prompt = Prompt {
            question: "Anything?".into(),
            passages: Vec::new().into(),
            terms: vec![],
            model: None,
            history: vec![],
            ..Prompt::default()
        };
        assert!(render_user_message(&prompt).starts_with("No passages were found"));
    }

    #[test]
    fn the_input_estimate_is_a_quarter_of_the_characters_sent() {
        let prompt = Prompt {
            question: "Why?".into(),
            ..Prompt::default()
        };
        let chars = SYSTEM_PROMPT.chars().count() + render_user_message(&prompt).chars().count();
        assert_eq!(
            estimate_input_tokens(&prompt),
            chars.div_ceil(CHARS_PER_TOKEN) as u64
        );
    }
}
