//! Text composition for the extractive offline answerer, which answers
//! without any language model by quoting the retrieved passages.
//!
//! This module owns sentence selection, citation formatting and the
//! word-by-word token split used to stream the answer. Retrieval, passage
//! numbering and transport belong to the caller.

/// Answer given when no sentence of any passage mentions a question term.
pub const NOTHING_FOUND: &str =
    "I could not find anything relevant to that question in the loaded documents.";

/// Prefix matching is only trusted for words this long; shorter ones are too
/// ambiguous ("in" would otherwise match "index", "information", ...).
const MIN_PREFIX_CHARS: usize = 4;

/// Sentences longer than this are cut at a word boundary, because text
/// without punctuation (tables, logs) would otherwise quote a whole passage.
const MAX_SENTENCE_CHARS: usize = 400;

/// One retrieved passage, as ranked by the search (best first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassageRef<'a> {
    /// 1-based citation number shown to the user as `[number]`.
    pub number: usize,
    pub text: &'a str,
}

/// Builds an answer from the sentences of `passages` that mention the most
/// `question_terms`, each followed by its passage's citation, e.g.
/// `SQLite stores the index [2].`
///
/// A sentence scores one point per distinct question term it contains
/// (case-insensitive, with prefix matching for words of at least four
/// chars, so "documents" matches "document"). Among equal scores, earlier
/// passages and then earlier sentences win. Up to `max_sentences` distinct
/// sentences are kept (a value of 0 is treated as 1) and emitted in passage
/// order, then sentence order, separated by single spaces. Returns
/// [`NOTHING_FOUND`] when no sentence scores.
pub fn compose_answer(
    question_terms: &[String],
    passages: &[PassageRef<'_>],
    max_sentences: usize,
) -> String {
    let terms = normalise_terms(question_terms);
    if terms.is_empty() {
        return NOTHING_FOUND.to_owned();
    }

    let mut candidates = Vec::new();
    for (rank, passage) in passages.iter().enumerate() {
        for (position, sentence) in sentences(passage.text).into_iter().enumerate() {
            let score = score_sentence(sentence, &terms);
            if score > 0 {
                candidates.push(Candidate {
                    rank,
                    position,
                    score,
                    number: passage.number,
                    text: sentence,
                });
            }
        }
    }
    // Ordering by rank after score is the "earlier passage" bonus: it breaks
    // ties but never outweighs an extra matched term.
    candidates.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(a.rank.cmp(&b.rank))
            .then(a.position.cmp(&b.position))
    });

    // Deduplicating before taking the best N matters because overlapping
    // chunks repeat sentences (or their word-cut tails) and would otherwise
    // use up the slots.
    let limit = max_sentences.max(1);
    let mut chosen: Vec<(Candidate<'_>, String)> = Vec::new();
    for candidate in candidates {
        if chosen.len() == limit {
            break;
        }
        let key = dedupe_key(candidate.text);
        if chosen.iter().any(|(_, kept)| is_tail_of(&key, kept)) {
            continue;
        }
        // A chunk's overlap can start mid-sentence; when the whole sentence
        // turns up later, quote it instead of the fragment.
        match chosen.iter().position(|(_, kept)| is_tail_of(kept, &key)) {
            Some(index) => chosen[index] = (candidate, key),
            None => chosen.push((candidate, key)),
        }
    }
    if chosen.is_empty() {
        return NOTHING_FOUND.to_owned();
    }

    chosen.sort_by_key(|(candidate, _)| (candidate.rank, candidate.position));
    chosen
        .iter()
        .map(|(candidate, _)| cite(candidate.text, candidate.number))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits `answer` into streaming tokens, one per word, each carrying the
/// whitespace that precedes it, so that the tokens concatenate back to
/// exactly `answer`. Whitespace at the very start belongs to the first
/// token; whitespace at the very end is a token of its own.
pub fn split_tokens(answer: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    // Starting as "after whitespace" glues leading whitespace to the first word.
    let mut previous_was_space = true;
    for (index, c) in answer.char_indices() {
        let is_space = c.is_whitespace();
        if is_space && !previous_was_space {
            tokens.push(&answer[start..index]);
            start = index;
        }
        previous_was_space = is_space;
    }
    if start < answer.len() {
        tokens.push(&answer[start..]);
    }
    tokens
}

struct Candidate<'a> {
    rank: usize,
    position: usize,
    score: usize,
    number: usize,
    text: &'a str,
}

fn normalise_terms(question_terms: &[String]) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for term in question_terms {
        let term = term.trim().to_lowercase();
        if !term.is_empty() && !terms.contains(&term) {
            terms.push(term);
        }
    }
    terms
}

/// Sentences of a passage with Markdown line markers removed, skipping
/// fragments that contain no words.
fn sentences(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = strip_line_markers(line.trim());
        let mut start = 0;
        let mut chars = line.char_indices().peekable();
        while let Some((index, c)) = chars.next() {
            let at_break = chars.peek().is_none_or(|&(_, next)| next.is_whitespace());
            if matches!(c, '.' | '!' | '?') && at_break {
                let end = index + c.len_utf8();
                push_sentence(&line[start..end], &mut found);
                start = end;
            }
        }
        push_sentence(&line[start..], &mut found);
    }
    found
}

fn push_sentence<'a>(sentence: &'a str, found: &mut Vec<&'a str>) {
    let sentence = sentence.trim();
    if sentence.chars().any(char::is_alphanumeric) {
        found.push(truncate_sentence(sentence));
    }
}

fn truncate_sentence(sentence: &str) -> &str {
    match sentence.char_indices().nth(MAX_SENTENCE_CHARS) {
        None => sentence,
        Some((cut, _)) => {
            let head = &sentence[..cut];
            // Back off to the last whole word; a single giant word is cut as is.
            match head.rfind(char::is_whitespace) {
                Some(space) if space > 0 => head[..space].trim_end(),
                _ => head,
            }
        }
    }
}

/// Removes leading heading markers, blockquote markers and list bullets,
/// which are layout rather than content.
fn strip_line_markers(mut line: &str) -> &str {
    loop {
        let stripped = strip_one_marker(line);
        if stripped.len() == line.len() {
            return line;
        }
        line = stripped;
    }
}

fn strip_one_marker(line: &str) -> &str {
    let marker_len = if line.starts_with('#') {
        line.len() - line.trim_start_matches('#').len()
    } else if line.starts_with(['>', '-', '*', '+']) {
        1
    } else {
        let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && line[digits..].starts_with(['.', ')']) {
            digits + 1
        } else {
            0
        }
    };
    if marker_len == 0 {
        return line;
    }
    let rest = &line[marker_len..];
    // Without following whitespace it is content: "#hashtag", "*emphasis*",
    // "-5 degrees", "3.14".
    if rest.is_empty() || rest.starts_with(char::is_whitespace) {
        rest.trim_start()
    } else {
        line
    }
}

fn score_sentence(sentence: &str, terms: &[String]) -> usize {
    let words: Vec<String> = sentence
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    terms
        .iter()
        .filter(|term| words.iter().any(|word| term_matches(term, word)))
        .count()
}

fn term_matches(term: &str, word: &str) -> bool {
    if term == word {
        return true;
    }
    let long_enough =
        term.chars().count() >= MIN_PREFIX_CHARS && word.chars().count() >= MIN_PREFIX_CHARS;
    long_enough && (word.starts_with(term) || term.starts_with(word))
}

/// Whether `fragment` equals `sentence` or is a word-aligned tail of it.
/// Both are [`dedupe_key`]s.
fn is_tail_of(fragment: &str, sentence: &str) -> bool {
    sentence
        .strip_suffix(fragment)
        .is_some_and(|head| head.is_empty() || head.ends_with(' '))
}

/// Lowercased text with whitespace collapsed and final punctuation dropped,
/// so trivially different copies of one sentence compare equal.
fn dedupe_key(sentence: &str) -> String {
    sentence
        .trim_end_matches(['.', '!', '?'])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `Sentence text [n].`: the citation goes inside the sentence's own final
/// punctuation so the answer still reads as prose.
fn cite(sentence: &str, number: usize) -> String {
    let body = sentence.trim_end_matches(['.', '!', '?']);
    let ending = &sentence[body.len()..];
    let punctuation = if ending.contains('?') {
        '?'
    } else if ending.contains('!') {
        '!'
    } else {
        '.'
    };
    format!("{} [{number}]{punctuation}", body.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    fn passage(number: usize, text: &str) -> PassageRef<'_> {
        PassageRef { number, text }
    }

    #[test]
    fn relevant_sentences_are_picked_and_cited() {
        let passages = [
            passage(
                1,
                "Ragstream stores chunks in SQLite. The weather is nice today. \
                 Full-text search uses FTS5.",
            ),
            passage(2, "Unrelated text about cooking pasta."),
        ];
        let answer = compose_answer(&terms(&["sqlite", "search"]), &passages, 3);
        assert_eq!(
            answer,
            "Ragstream stores chunks in SQLite [1]. Full-text search uses FTS5 [1]."
        );
    }

    #[test]
    fn nothing_found_when_no_sentence_matches() {
        let passages = [passage(1, "Completely unrelated content here.")];
        assert_eq!(
            compose_answer(&terms(&["quantum"]), &passages, 3),
            NOTHING_FOUND
        );
    }

    #[test]
    fn nothing_found_without_passages_or_terms() {
        assert_eq!(compose_answer(&terms(&["sqlite"]), &[], 3), NOTHING_FOUND);
        let passages = [passage(1, "SQLite is here.")];
        assert_eq!(compose_answer(&[], &passages, 3), NOTHING_FOUND);
        assert_eq!(
            compose_answer(&terms(&["", "  "]), &passages, 3),
            NOTHING_FOUND
        );
    }

    #[test]
    fn citation_numbers_come_from_the_passages_not_their_positions() {
        let passages = [
            passage(7, "Tokio drives the async runtime."),
            passage(3, "Actix serves the HTTP API."),
        ];
        let answer = compose_answer(&terms(&["tokio", "actix"]), &passages, 5);
        assert_eq!(
            answer,
            "Tokio drives the async runtime [7]. Actix serves the HTTP API [3]."
        );
    }

    #[test]
    fn output_follows_passage_order_not_score_order() {
        let passages = [
            passage(1, "Rust is fast."),
            passage(2, "Rust and Cargo and crates work together."),
        ];
        let answer = compose_answer(&terms(&["rust", "cargo", "crates"]), &passages, 2);
        assert_eq!(
            answer,
            "Rust is fast [1]. Rust and Cargo and crates work together [2]."
        );
    }

    #[test]
    fn max_sentences_keeps_the_best_scoring_ones() {
        let passages = [passage(
            1,
            "Alpha only. Alpha and beta. Alpha, beta and gamma. Gamma only.",
        )];
        let question = terms(&["alpha", "beta", "gamma"]);
        assert_eq!(
            compose_answer(&question, &passages, 1),
            "Alpha, beta and gamma [1]."
        );
        assert_eq!(
            compose_answer(&question, &passages, 2),
            "Alpha and beta [1]. Alpha, beta and gamma [1]."
        );
        assert_eq!(
            compose_answer(&question, &passages, 0),
            compose_answer(&question, &passages, 1)
        );
    }

    #[test]
    fn ties_prefer_earlier_passages_then_earlier_sentences() {
        let passages = [
            passage(1, "Late mention of index. Early mention of index."),
            passage(2, "Another index sentence."),
        ];
        let answer = compose_answer(&terms(&["index"]), &passages, 1);
        assert_eq!(answer, "Late mention of index [1].");
        let answer = compose_answer(&terms(&["index"]), &passages, 2);
        assert_eq!(
            answer,
            "Late mention of index [1]. Early mention of index [1]."
        );
    }

    #[test]
    fn duplicate_sentences_are_removed_and_do_not_use_up_slots() {
        let passages = [
            passage(1, "SQLite holds the chunks."),
            passage(2, "sqlite  holds the chunks! Chunks are small."),
        ];
        let answer = compose_answer(&terms(&["sqlite", "chunks"]), &passages, 2);
        assert_eq!(answer, "SQLite holds the chunks [1]. Chunks are small [2].");
    }

    #[test]
    fn overlap_fragments_of_a_chosen_sentence_are_dropped() {
        let passages = [
            passage(1, "The server listens on port 8080 by default."),
            passage(2, "port 8080 by default. Set PORT to change the port."),
        ];
        let answer = compose_answer(&terms(&["port", "default"]), &passages, 3);
        assert_eq!(
            answer,
            "The server listens on port 8080 by default [1]. Set PORT to change the port [2]."
        );
    }

    #[test]
    fn a_fragment_chosen_first_is_replaced_by_its_whole_sentence() {
        let passages = [
            passage(1, "port 8080 by default."),
            passage(2, "The server listens on port 8080 by default."),
        ];
        let answer = compose_answer(&terms(&["port", "default"]), &passages, 3);
        assert_eq!(answer, "The server listens on port 8080 by default [2].");
    }

    #[test]
    fn a_sentence_ending_in_another_word_is_not_a_fragment() {
        let passages = [passage(1, "Use a report."), passage(2, "Use a port.")];
        let answer = compose_answer(&terms(&["port", "report"]), &passages, 3);
        assert_eq!(answer, "Use a report [1]. Use a port [2].");
    }

    #[test]
    fn terms_match_by_prefix_only_when_long_enough() {
        let passages = [passage(
            1,
            "The documents are indexed. It is in here. Indexing is fast.",
        )];
        let answer = compose_answer(&terms(&["document", "in"]), &passages, 5);
        assert_eq!(answer, "The documents are indexed [1]. It is in here [1].");
    }

    #[test]
    fn matching_ignores_case() {
        let passages = [passage(1, "WEBSOCKET streaming works.")];
        let answer = compose_answer(&terms(&["WebSocket"]), &passages, 1);
        assert_eq!(answer, "WEBSOCKET streaming works [1].");
    }

    #[test]
    fn markdown_markers_are_stripped_and_lines_are_sentences() {
        let passages = [passage(
            4,
            "## Setup steps\n- install cargo\n* run cargo build\n12. cargo test passes\n\
             > cargo is quoted\n#hashtag cargo",
        )];
        let answer = compose_answer(&terms(&["cargo", "setup"]), &passages, 10);
        assert_eq!(
            answer,
            "Setup steps [4]. install cargo [4]. run cargo build [4]. \
             cargo test passes [4]. cargo is quoted [4]. #hashtag cargo [4]."
        );
    }

    #[test]
    fn final_punctuation_is_kept_after_the_citation() {
        let passages = [passage(2, "Is streaming supported? Streaming is great!")];
        let answer = compose_answer(&terms(&["streaming"]), &passages, 5);
        assert_eq!(
            answer,
            "Is streaming supported [2]? Streaming is great [2]!"
        );
    }

    #[test]
    fn decimal_points_do_not_end_sentences() {
        let passages = [passage(1, "Version 3.14 is current. Nothing else.")];
        let answer = compose_answer(&terms(&["version"]), &passages, 5);
        assert_eq!(answer, "Version 3.14 is current [1].");
    }

    #[test]
    fn very_long_sentences_are_cut_at_a_word_boundary() {
        let text = format!("keyword {}", "filler ".repeat(200));
        let passages = [passage(1, &text)];
        let answer = compose_answer(&terms(&["keyword"]), &passages, 1);
        assert!(answer.starts_with("keyword filler"));
        assert!(answer.ends_with("filler [1]."));
        assert!(answer.chars().count() <= MAX_SENTENCE_CHARS + 5);
    }

    #[test]
    fn unicode_passages_do_not_panic() {
        let passages = [passage(1, "Grüße aus 日本語。 Grüße again! 🎉🎉")];
        let answer = compose_answer(&terms(&["grüße"]), &passages, 5);
        assert_eq!(answer, "Grüße aus 日本語。 Grüße again [1]!");
    }

    #[test]
    fn split_tokens_splits_words_with_leading_whitespace() {
        assert_eq!(
            split_tokens("Hello big world"),
            vec!["Hello", " big", " world"]
        );
        assert_eq!(split_tokens("  lead"), vec!["  lead"]);
        assert_eq!(split_tokens("trail  "), vec!["trail", "  "]);
        assert_eq!(split_tokens("a\n\nb"), vec!["a", "\n\nb"]);
        assert!(split_tokens("").is_empty());
        assert_eq!(split_tokens("   "), vec!["   "]);
    }

    #[test]
    fn split_tokens_concatenate_back_to_the_input() {
        let samples = [
            "",
            " ",
            "word",
            "Hello big world",
            "  leading spaces",
            "trailing spaces   ",
            "multiple   spaces\tand\ttabs",
            "line one\nline two\r\n\r\nline three\n",
            "Grüße 日本語 🎉 emoji\u{00a0}nbsp",
            NOTHING_FOUND,
        ];
        for sample in samples {
            let tokens = split_tokens(sample);
            assert_eq!(tokens.concat(), sample);
            assert!(tokens.iter().all(|token| !token.is_empty()));
        }
    }
}
