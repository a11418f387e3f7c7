//! Turns a user's free-text question into search terms and into a SQLite
//! FTS5 `MATCH` expression that can never be a syntax error.
//!
//! This module owns query sanitising for full-text search: tokenising,
//! stopword removal and quoting. Every emitted term is a double-quoted FTS5
//! string, so FTS keywords (`OR`, `AND`, `NOT`, `NEAR`) and operator
//! characters (`"`, `*`, `(`, `:`, `^`, `-`) in the question are only ever
//! treated as text.

use crate::store::MatchQuery;

/// Most terms a query may contain; long pasted questions would otherwise
/// produce huge `OR` chains that are slow and rank no better.
const MAX_TERMS: usize = 32;

/// Common English words that carry no topic on their own. Kept short on
/// purpose: dropping a content word hurts recall more than keeping a
/// function word hurts ranking (BM25 already discounts frequent terms).
const STOPWORDS: &[&str] = &[
    "a", "about", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "describe", "did", "do", "does", "don", "explain", "for", "from", "give",
    "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "ll", "me", "my", "not", "of", "on", "or", "our", "please", "re", "she", "should", "so",
    "tell", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "us", "ve", "was", "we", "were", "what", "when", "where", "which", "who",
    "whom", "why", "will", "with", "would", "you", "your",
];

/// Search terms for `question`: lowercased words of Unicode alphanumerics,
/// without stopwords or single letters, deduplicated in order of first
/// appearance and capped at 32.
///
/// When that filter leaves nothing (for example "what is it"), stopwords are
/// kept; when even that leaves nothing (for example "a"), single letters are
/// kept too. The result is empty only if the question has no alphanumeric
/// characters at all.
pub fn query_terms(question: &str) -> Vec<String> {
    let words: Vec<String> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();

    let strict = select_terms(&words, |word| !is_stopword(word) && !is_lone_letter(word));
    if !strict.is_empty() {
        return strict;
    }
    let with_stopwords = select_terms(&words, |word| !is_lone_letter(word));
    if !with_stopwords.is_empty() {
        return with_stopwords;
    }
    select_terms(&words, |_| true)
}

/// FTS5 `MATCH` expression matching any of the [`query_terms`] of
/// `question`, e.g. `"sqlite" OR "index"`. `None` when the question has no
/// searchable words.
pub fn build_match_query(question: &str) -> Option<String> {
    let terms = query_terms(question);
    if terms.is_empty() {
        return None;
    }
    let quoted: Vec<String> = terms
        .iter()
        // Tokenising already strips `"`, so this escape is belt and braces
        // in case the tokeniser ever changes.
        .map(|term| format!("\"{}\"", term.replace('"', "\"\"")))
        .collect();
    Some(quoted.join(" OR "))
}

/// The same search as [`build_match_query`] for PostgreSQL: `to_tsquery` text matching any
/// of the terms, each a quoted lexeme (`'sqlite' | 'index'`), so tsquery operators in the
/// question (`&`, `|`, `!`, `<->`, `:*`) are only ever text.
pub fn build_tsquery(question: &str) -> Option<String> {
    let terms = query_terms(question);
    if terms.is_empty() {
        return None;
    }
    let quoted: Vec<String> = terms
        .iter()
        // Terms are alphanumeric; the escapes are belt and braces as above.
        .map(|term| format!("'{}'", term.replace('\\', "\\\\").replace('\'', "''")))
        .collect();
    Some(quoted.join(" | "))
}

/// The search for `question` in both databases' syntax; `None` when it has no searchable
/// words.
pub fn build_search_query(question: &str) -> Option<MatchQuery> {
    Some(MatchQuery {
        fts5: build_match_query(question)?,
        tsquery: build_tsquery(question)?,
    })
}

fn select_terms(words: &[String], keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in words {
        if terms.len() == MAX_TERMS {
            break;
        }
        if keep(word) && !terms.contains(word) {
            terms.push(word.clone());
        }
    }
    terms
}

fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// Single letters are mostly leftovers of contractions ("don't" -> "t");
/// single digits, however, are meaningful ("version 2").
fn is_lone_letter(word: &str) -> bool {
    let mut chars = word.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if !c.is_numeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(question: &str) -> String {
        build_match_query(question).unwrap_or_else(|| panic!("no query for {question:?}"))
    }

    /// Every character outside double quotes must be part of ` OR `, which
    /// is the only FTS5 syntax the builder is allowed to emit.
    fn assert_only_quoted_terms(expression: &str) {
        for (index, part) in expression.split(" OR ").enumerate() {
            assert!(
                part.len() >= 3 && part.starts_with('"') && part.ends_with('"'),
                "part {index} of {expression:?} is not a quoted term: {part:?}"
            );
            let inner = &part[1..part.len() - 1];
            assert!(
                !inner.replace("\"\"", "").contains('"'),
                "unescaped quote in {part:?}"
            );
        }
    }

    #[test]
    fn tsquery_terms_are_quoted_lexemes_joined_by_or() {
        assert_eq!(
            build_tsquery("How does the indexer store embeddings?").as_deref(),
            Some("'indexer' | 'store' | 'embeddings'")
        );
        assert_eq!(
            build_tsquery("a & b | !c <-> d:* 'e'").as_deref(),
            Some("'a' | 'b' | 'c' | 'd' | 'e'")
        );
        assert_eq!(build_tsquery("?!&|"), None);
    }

    #[test]
    fn plain_question_keeps_content_words() {
        assert_eq!(
            query("How does the indexer store embeddings?"),
            r#""indexer" OR "store" OR "embeddings""#
        );
    }

    #[test]
    fn terms_are_lowercased() {
        assert_eq!(
            query_terms("SQLite FTS5 Tokenizer"),
            vec!["sqlite", "fts5", "tokenizer"]
        );
    }

    #[test]
    fn punctuation_is_dropped() {
        assert_eq!(
            query("Hello, world!!! (really?) ... -- ok;"),
            r#""hello" OR "world" OR "really" OR "ok""#
        );
    }

    #[test]
    fn apostrophes_split_words_and_leftover_letters_are_dropped() {
        assert_eq!(
            query_terms("Don't panic, it's Bob's car"),
            vec!["panic", "bob", "car"]
        );
    }

    #[test]
    fn double_quotes_cannot_break_out_of_a_term() {
        let expression = query(r#"say "hello" and "" then """#);
        assert_eq!(expression, r#""say" OR "hello""#);
        assert_only_quoted_terms(&expression);
    }

    #[test]
    fn star_and_caret_and_colon_are_not_operators() {
        let expression = query("index* ^first title:rust col:val");
        assert_eq!(
            expression,
            r#""index" OR "first" OR "title" OR "rust" OR "col" OR "val""#
        );
        assert_only_quoted_terms(&expression);
    }

    #[test]
    fn fts_keywords_become_quoted_terms() {
        let expression = query("cats OR dogs AND NOT birds NEAR(fish, 3)");
        assert_eq!(
            expression,
            r#""cats" OR "dogs" OR "birds" OR "near" OR "fish" OR "3""#
        );
        assert_only_quoted_terms(&expression);
    }

    #[test]
    fn lone_operators_still_yield_a_safe_query() {
        for question in [
            "OR", "AND NOT", "NEAR(", "-x", "^x", "*", "col:val", "\"", "((",
        ] {
            match build_match_query(question) {
                Some(expression) => assert_only_quoted_terms(&expression),
                None => assert!(!question.chars().any(char::is_alphanumeric)),
            }
        }
        assert_eq!(query("AND NOT"), r#""and" OR "not""#);
        assert_eq!(query("OR"), r#""or""#);
        assert_eq!(query("^x"), r#""x""#);
    }

    #[test]
    fn single_digits_are_kept_but_single_letters_are_not() {
        assert_eq!(query_terms("version 2 of x"), vec!["version", "2"]);
    }

    #[test]
    fn only_stopwords_fall_back_to_all_words() {
        assert_eq!(query("what is it?"), r#""what" OR "is" OR "it""#);
    }

    #[test]
    fn only_single_letters_fall_back_to_keeping_them() {
        assert_eq!(query("a?"), r#""a""#);
    }

    #[test]
    fn only_punctuation_yields_none() {
        assert_eq!(build_match_query(""), None);
        assert_eq!(build_match_query("   "), None);
        assert_eq!(build_match_query("?!... \"\" *** :-) ()"), None);
        assert!(query_terms("--- ***").is_empty());
    }

    #[test]
    fn unicode_words_are_kept_whole() {
        assert_eq!(
            query_terms("Was bedeutet Grüße? 日本語 と ÉCOLE"),
            vec!["bedeutet", "grüße", "日本語", "école"]
        );
        assert_only_quoted_terms(&query("Grüße 日本語"));
    }

    #[test]
    fn repeated_words_are_deduplicated_in_order() {
        assert_eq!(
            query_terms("Rust rust RUST cargo rust Cargo"),
            vec!["rust", "cargo"]
        );
    }

    #[test]
    fn terms_are_capped_at_thirty_two() {
        let question: Vec<String> = (0..100).map(|n| format!("word{n}")).collect();
        let terms = query_terms(&question.join(" "));
        assert_eq!(terms.len(), MAX_TERMS);
        assert_eq!(terms.first().map(String::as_str), Some("word0"));
        assert_eq!(terms.last().map(String::as_str), Some("word31"));
        assert_eq!(
            query(&question.join(" ")).matches(" OR ").count(),
            MAX_TERMS - 1
        );
    }

    #[test]
    fn duplicates_do_not_count_towards_the_cap() {
        let question = format!("{} last", "same ".repeat(100));
        assert_eq!(query_terms(&question), vec!["same", "last"]);
    }
}
