//! A conversation's earlier messages as the next turn sees them: the history sent to the
//! provider, bounded by a character budget, and the context retrieval searches with.
//!
//! Only whole exchanges are sent: a user message directly followed by an assistant message
//! that has text. Anthropic requires roles to alternate starting with `user`, and an
//! unanswered question (a failure before any text, an interrupted answer, one still
//! streaming) would otherwise leave two user messages in a row. The same rule serves
//! OpenAI, so both providers see the same conversation.
//!
//! The budget counts the characters of the history only: the system prompt and the
//! retrieved passages are never dropped for it. When the history is over it, the oldest
//! exchanges go first, and once one is dropped every older one is too, so what the model
//! sees is always the most recent stretch of the conversation without holes.

use crate::providers::{ChatTurn, Role};
use crate::store::{MessageStatus, PastMessage};

/// The history for the next turn: the latest whole exchanges of `earlier` (oldest first)
/// whose characters fit `budget_chars` together.
pub fn select_history(earlier: &[PastMessage], budget_chars: usize) -> Vec<ChatTurn> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut i = 0;
    while i < earlier.len() {
        let answered = earlier.get(i + 1).filter(|next| {
            next.role == Role::Assistant.as_str()
                && next.status.as_deref() != Some(MessageStatus::Streaming.as_str())
                && !next.content.trim().is_empty()
        });
        match answered {
            Some(answer) if earlier[i].role == Role::User.as_str() => {
                pairs.push((&earlier[i].content, &answer.content));
                i += 2;
            }
            _ => i += 1,
        }
    }

    let mut used = 0usize;
    let mut keep = 0usize;
    for (question, answer) in pairs.iter().rev() {
        let cost = question.chars().count() + answer.chars().count();
        if used + cost > budget_chars {
            break;
        }
        used += cost;
        keep += 1;
    }
    pairs[pairs.len() - keep..]
        .iter()
        .flat_map(|(question, answer)| {
            [
                ChatTurn {
                    role: Role::User,
                    content: (*question).to_owned(),
                },
                ChatTurn {
                    role: Role::Assistant,
                    content: (*answer).to_owned(),
                },
            ]
        })
        .collect()
}

/// The text retrieval searches for a turn: the question, then the previous user message,
/// so that a follow-up such as "when was it built?" still finds the passages about what
/// "it" is. The question comes first so its terms win when the query is capped.
pub fn retrieval_text(question: &str, earlier: &[PastMessage]) -> String {
    let previous = earlier
        .iter()
        .rev()
        .find(|m| m.role == Role::User.as_str())
        .map(|m| m.content.as_str());
    match previous {
        Some(previous) => format!("{question}\n{previous}"),
        None => question.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> PastMessage {
        PastMessage {
            role: "user".into(),
            content: text.into(),
            status: None,
        }
    }

    fn assistant(text: &str, status: &str) -> PastMessage {
        PastMessage {
            role: "assistant".into(),
            content: text.into(),
            status: Some(status.into()),
        }
    }

    fn roles_and_text(turns: &[ChatTurn]) -> Vec<(&'static str, &str)> {
        turns
            .iter()
            .map(|t| (t.role.as_str(), t.content.as_str()))
            .collect()
    }

    #[test]
    fn whole_exchanges_are_kept_in_order() {
        let earlier = [
            user("q1"),
            assistant("a1", "complete"),
            user("q2"),
            assistant("a2", "cancelled"),
        ];
        assert_eq!(
            roles_and_text(&select_history(&earlier, 1000)),
            [
                ("user", "q1"),
                ("assistant", "a1"),
                ("user", "q2"),
                ("assistant", "a2")
            ]
        );
    }

    #[test]
    fn unanswered_questions_are_left_out_so_roles_alternate() {
        let earlier = [
            user("failed before any text"),
            assistant("", "error"),
            user("interrupted"),
            assistant("", "interrupted"),
            user("q"),
            assistant("a", "complete"),
            user("still running elsewhere"),
            assistant("", "streaming"),
            user("a question whose row was not read back"),
        ];
        let history = select_history(&earlier, 1000);
        assert_eq!(
            roles_and_text(&history),
            [("user", "q"), ("assistant", "a")]
        );
    }

    #[test]
    fn history_may_begin_with_an_assistant_row_when_the_read_cut_a_pair() {
        let earlier = [
            assistant("orphan", "complete"),
            user("q"),
            assistant("a", "complete"),
        ];
        assert_eq!(
            roles_and_text(&select_history(&earlier, 1000)),
            [("user", "q"), ("assistant", "a")]
        );
    }

    #[test]
    fn the_oldest_exchanges_go_first_and_nothing_older_survives_a_drop() {
        let earlier = [
            user("tiny"),
            assistant("x", "complete"), // 5 chars: would fit, but is older than a dropped one
            user("q".repeat(10).as_str()),
            assistant("a".repeat(10).as_str(), "complete"), // 20 chars
            user("é".repeat(3).as_str()),
            assistant("ü".repeat(3).as_str(), "complete"), // 6 characters, 12 bytes
        ];
        let history = select_history(&earlier, 25);
        assert_eq!(
            roles_and_text(&history),
            [("user", "ééé"), ("assistant", "üüü")]
        );
        assert_eq!(select_history(&earlier, 26).len(), 4);
        assert_eq!(select_history(&earlier, 31).len(), 6);
        assert!(select_history(&earlier, 0).is_empty());
    }

    #[test]
    fn an_exchange_larger_than_the_whole_budget_ends_the_history() {
        let earlier = [
            user("q1"),
            assistant("a1", "complete"),
            user("q2"),
            assistant(&"long ".repeat(100), "complete"),
        ];
        assert!(select_history(&earlier, 100).is_empty());
    }

    #[test]
    fn retrieval_searches_the_question_then_the_previous_user_message() {
        let earlier = [
            user("Tell me about the Eiffel Tower"),
            assistant("It is in Paris.", "complete"),
        ];
        assert_eq!(
            retrieval_text("When was it built?", &earlier),
            "When was it built?\nTell me about the Eiffel Tower"
        );
        assert_eq!(retrieval_text("First?", &[]), "First?");
    }
}
