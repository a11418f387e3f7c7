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

/// Sentences with fewer words are mostly headings ("The Eiffel Tower",
/// "Construction"); they are quoted only when nothing longer matches.
const MIN_ANSWER_WORDS: usize = 4;

/// Sentences scoring below this share of the best score are not quoted, so
/// a sentence that only shares the document's subject with the question does
/// not sit next to the real answer.
const MIN_RELATIVE_SCORE: f64 = 0.35;

/// One retrieved passage, as ranked by the search (best first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassageRef<'a> {
    /// 1-based citation number shown to the user as `[number]`.
    pub number: usize,
    pub text: &'a str,
}

/// Builds an answer from the sentences of `passages` that best match
/// `question_terms`, each followed by its passage's citation, e.g.
/// `SQLite stores the index [2].`
///
/// A term matches a sentence case-insensitively, with prefix matching for
/// words of at least four chars (so "documents" matches "document").
/// Candidates are the sentences of at least four words that match some term;
/// shorter sentences (headings such as "Construction") are used only when no
/// longer sentence matches. Each term is weighted by its rarity among the
/// candidates, `ln(1 + S / (1 + df))` with `S` candidates of which `df`
/// match the term, and a sentence scores the sum of the weights of the
/// distinct terms it matches, so a term found everywhere (the subject of the
/// whole document) counts little next to a distinctive one.
///
/// Sentences scoring below 35% of the best are dropped. Among equal scores,
/// earlier passages and then earlier sentences win. Up to `max_sentences`
/// distinct sentences are kept (a value of 0 is treated as 1) and emitted in
/// passage order, then sentence order, separated by single spaces. Returns
/// [`NOTHING_FOUND`] when no sentence matches.
pub fn compose_answer(
    question_terms: &[String],
    passages: &[PassageRef<'_>],
    max_sentences: usize,
) -> String {
    let terms = normalise_terms(question_terms);
    if terms.is_empty() {
        return NOTHING_FOUND.to_owned();
    }

    let mut matching = Vec::new();
    for (rank, passage) in passages.iter().enumerate() {
        for (position, sentence) in sentences(passage.text).into_iter().enumerate() {
            let words = words(sentence);
            let matched: Vec<usize> = terms
                .iter()
                .enumerate()
                .filter(|(_, term)| words.iter().any(|word| term_matches(term, word)))
                .map(|(index, _)| index)
                .collect();
            if !matched.is_empty() {
                matching.push(Match {
                    rank,
                    position,
                    number: passage.number,
                    text: sentence,
                    word_count: words.len(),
                    matched,
                });
            }
        }
    }
    if matching
        .iter()
        .any(|found| found.word_count >= MIN_ANSWER_WORDS)
    {
        matching.retain(|found| found.word_count >= MIN_ANSWER_WORDS);
    }

    let weights = term_weights(terms.len(), &matching);
    let mut candidates: Vec<Candidate<'_>> = matching
        .into_iter()
        .map(|found| Candidate {
            rank: found.rank,
            position: found.position,
            score: found.matched.iter().map(|&term| weights[term]).sum(),
            number: found.number,
            text: found.text,
        })
        .collect();
    let best = candidates
        .iter()
        .map(|candidate| candidate.score)
        .fold(0.0, f64::max);
    candidates.retain(|candidate| candidate.score >= MIN_RELATIVE_SCORE * best);
    // Ordering by rank after score is the "earlier passage" bonus: it breaks
    // ties but never outweighs a better score. Equal term sets sum their
    // weights in the same order, so their scores are exactly equal.
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
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

/// A sentence that matches at least one question term.
struct Match<'a> {
    rank: usize,
    position: usize,
    number: usize,
    text: &'a str,
    word_count: usize,
    /// Indices into the normalised terms, each at most once.
    matched: Vec<usize>,
}

struct Candidate<'a> {
    rank: usize,
    position: usize,
    score: f64,
    number: usize,
    text: &'a str,
}

/// IDF-like weight of each term over the candidate sentences:
/// `ln(1 + S / (1 + df))`. Always positive for a term that some candidate
/// matches.
fn term_weights(term_count: usize, candidates: &[Match<'_>]) -> Vec<f64> {
    let mut document_frequency = vec![0_usize; term_count];
    for candidate in candidates {
        for &term in &candidate.matched {
            document_frequency[term] += 1;
        }
    }
    let sentence_count = candidates.len() as f64;
    document_frequency
        .into_iter()
        .map(|df| (1.0 + sentence_count / (1.0 + df as f64)).ln())
        .collect()
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

/// Lowercased runs of alphanumerics: the words that terms are matched
/// against and that count towards a sentence's length.
fn words(sentence: &str) -> Vec<String> {
    sentence
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
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
            passage(1, "Rust code is built with Cargo."),
            passage(2, "Rust and Cargo and crates work together."),
        ];
        let answer = compose_answer(&terms(&["rust", "cargo", "crates"]), &passages, 2);
        assert_eq!(
            answer,
            "Rust code is built with Cargo [1]. Rust and Cargo and crates work together [2]."
        );
    }

    #[test]
    fn max_sentences_keeps_the_best_scoring_ones() {
        let passages = [passage(
            1,
            "Only gamma is named here. Both alpha and beta appear here. \
             Alpha, beta and gamma all appear. Only alpha is named here.",
        )];
        let question = terms(&["alpha", "beta", "gamma"]);
        assert_eq!(
            compose_answer(&question, &passages, 1),
            "Alpha, beta and gamma all appear [1]."
        );
        assert_eq!(
            compose_answer(&question, &passages, 2),
            "Both alpha and beta appear here [1]. Alpha, beta and gamma all appear [1]."
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
            passage(2, "Another sentence about the index."),
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
            passage(2, "sqlite  holds the chunks! Chunks are small and fast."),
        ];
        let answer = compose_answer(&terms(&["sqlite", "chunks"]), &passages, 2);
        assert_eq!(
            answer,
            "SQLite holds the chunks [1]. Chunks are small and fast [2]."
        );
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
            "The documents are indexed. It is in here. Indexing is very fast.",
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

    const EIFFEL: [&str; 3] = [
        "The Eiffel Tower\nThe Eiffel Tower is a wrought-iron lattice tower on the Champ de \
         Mars in Paris, France. It is named after the engineer Gustave Eiffel, whose company \
         designed and built the tower.",
        "Construction\nConstruction of the tower began in January 1887 and was finished in \
         March 1889. It was built as the centrepiece of the 1889 World's Fair, held to \
         celebrate the centennial of the French Revolution.",
        "Height\nThe tower is 330 metres tall, about the same height as an 81-storey building.",
    ];

    fn eiffel_answer(question: &str) -> String {
        let passages: Vec<PassageRef<'_>> = EIFFEL
            .iter()
            .enumerate()
            .map(|(index, text)| passage(index + 1, text))
            .collect();
        let question_terms = crate::rag::fts_query::query_terms(question);
        compose_answer(&question_terms, &passages, 4)
    }

    #[test]
    fn the_distinctive_term_decides_over_the_document_subject() {
        assert_eq!(
            crate::rag::fts_query::query_terms("When was the Eiffel Tower built?"),
            terms(&["eiffel", "tower", "built"])
        );
        let answer = eiffel_answer("When was the Eiffel Tower built?");
        assert!(
            answer.contains("built as the centrepiece") || answer.contains("began in January 1887"),
            "{answer}"
        );
        assert!(!answer.starts_with("The Eiffel Tower [1]"), "{answer}");
        assert!(!answer.contains(" The Eiffel Tower [1]"), "{answer}");
        assert!(!answer.contains("330 metres"), "{answer}");
        assert!(!answer.contains("Height"), "{answer}");
        assert_eq!(
            answer,
            "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, \
             France [1]. It is named after the engineer Gustave Eiffel, whose company designed \
             and built the tower [1]. It was built as the centrepiece of the 1889 World's Fair, \
             held to celebrate the centennial of the French Revolution [2]."
        );
    }

    #[test]
    fn a_rare_term_outweighs_the_common_subject() {
        let answer = eiffel_answer("How tall is the tower?");
        assert!(
            answer.starts_with(
                "The tower is 330 metres tall, about the same height as an 81-storey building [3]."
            ),
            "{answer}"
        );
        assert_eq!(
            answer,
            "The tower is 330 metres tall, about the same height as an 81-storey building [3]."
        );
    }

    #[test]
    fn headings_are_not_quoted_when_longer_sentences_match() {
        let passages = [passage(
            1,
            "# Streaming\nStreaming sends one token at a time.",
        )];
        let answer = compose_answer(&terms(&["streaming"]), &passages, 5);
        assert_eq!(answer, "Streaming sends one token at a time [1].");
    }

    #[test]
    fn short_lines_are_quoted_when_nothing_longer_matches() {
        let passages = [
            passage(1, "## Ports\n- HTTP on 8080\n- WebSocket on 8081"),
            passage(2, "This longer sentence mentions nothing relevant at all."),
        ];
        let answer = compose_answer(&terms(&["websocket", "8081"]), &passages, 5);
        assert_eq!(answer, "WebSocket on 8081 [1].");
    }

    #[test]
    fn weak_matches_below_the_relative_threshold_are_dropped() {
        // "config" is in all five sentences, "reload" only in one: the other
        // sentences score ln(1 + 5/6) against that plus ln(1 + 5/2), 33%.
        let passages = [
            passage(
                1,
                "The config file is read at startup. A config change triggers a reload here. \
                 Every config key has a default.",
            ),
            passage(
                2,
                "The config path can be overridden. Unknown config keys are errors.",
            ),
        ];
        let answer = compose_answer(&terms(&["config", "reload"]), &passages, 5);
        assert_eq!(answer, "A config change triggers a reload here [1].");
    }

    #[test]
    fn equally_weak_matches_are_all_kept_up_to_the_limit() {
        let passages = [passage(
            1,
            "The config file is read at startup. Every config key has a default.",
        )];
        let answer = compose_answer(&terms(&["config"]), &passages, 5);
        assert_eq!(
            answer,
            "The config file is read at startup [1]. Every config key has a default [1]."
        );
        assert_eq!(
            compose_answer(&terms(&["config"]), &passages, 1),
            "The config file is read at startup [1]."
        );
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
