//! Document chunking: turns the text of one Markdown or plain-text document
//! into ordered, heading-aware, overlapping chunks ready for indexing.
//!
//! This module owns the chunking policy only (where to cut and what each
//! chunk contains). It does no I/O and knows nothing about storage.
//!
//! Sizes are measured in Unicode scalar values (`char`s), not bytes, so the
//! budget means the same thing for English and for CJK text, and every cut
//! lands on a `char` boundary.

use std::ops::Range;

/// One indexable piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position of the chunk within its document, counting from 0.
    pub ordinal: usize,
    /// Text of the nearest Markdown heading above the chunk, if any.
    pub heading: Option<String>,
    /// Chunk body. The first chunk of a headed section starts with the
    /// heading text as its own line; later chunks of the same section start
    /// with the overlap carried over from the previous chunk.
    pub text: String,
}

/// Splits `text` into chunks of roughly `target_chars` characters.
///
/// Headings (`#` to `######` followed by a space, outside fenced code) start
/// a new section and therefore a new chunk. Within a section, paragraphs are
/// packed greedily; a paragraph longer than the target is split on sentence
/// boundaries, then on whitespace, then (for a single giant word) on `char`
/// boundaries. Each chunk after the first in a section begins with up to
/// `overlap_chars` of the previous chunk's tail, cut at a sentence or word
/// boundary.
///
/// A chunk can exceed `target_chars` by the overlap it carries and, for the
/// first chunk of a section, by its heading line, so the target is
/// approximate rather than a hard limit.
pub fn chunk_document(text: &str, target_chars: usize, overlap_chars: usize) -> Vec<Chunk> {
    // A zero target would make no progress; one char is the smallest useful size.
    let target = target_chars.max(1);
    // An overlap as large as the chunk itself would make chunks mostly repetition.
    let overlap = overlap_chars.min(target / 2);
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");

    let mut chunks = Vec::new();
    for section in parse_sections(&normalized) {
        chunk_section(&section, target, overlap, &mut chunks);
    }
    chunks
}

/// Run of paragraphs under one heading (or before the first heading).
struct Section<'a> {
    heading: Option<&'a str>,
    paragraphs: Vec<String>,
}

fn parse_sections(text: &str) -> Vec<Section<'_>> {
    let mut sections = Vec::new();
    let mut current = Section {
        heading: None,
        paragraphs: Vec::new(),
    };
    let mut paragraph = String::new();
    let mut in_fence = false;

    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        // `# comment` inside a fenced code block is code, not a heading.
        let heading = if in_fence { None } else { heading_text(line) };

        if let Some(heading) = heading {
            flush_paragraph(&mut paragraph, &mut current.paragraphs);
            let previous = std::mem::replace(
                &mut current,
                Section {
                    heading: Some(heading).filter(|h| !h.is_empty()),
                    paragraphs: Vec::new(),
                },
            );
            sections.push(previous);
        } else if line.trim().is_empty() {
            flush_paragraph(&mut paragraph, &mut current.paragraphs);
        } else {
            if !paragraph.is_empty() {
                paragraph.push('\n');
            }
            paragraph.push_str(line.trim_end());
        }
    }
    flush_paragraph(&mut paragraph, &mut current.paragraphs);
    sections.push(current);
    sections
}

fn flush_paragraph(paragraph: &mut String, paragraphs: &mut Vec<String>) {
    let trimmed = paragraph.trim();
    if !trimmed.is_empty() {
        paragraphs.push(trimmed.to_owned());
    }
    paragraph.clear();
}

/// Returns the heading text if `line` is an ATX heading, else `None`.
fn heading_text(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    // Four or more spaces of indentation is an indented code block in Markdown.
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let hashes = rest.len() - rest.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let after = &rest[hashes..];
    if !after.starts_with([' ', '\t']) {
        return None;
    }
    let body = after.trim();
    // A closing `###` run is decoration, but only when separated by a space,
    // so that `# C#` keeps its meaning.
    let without_closing = body.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
        Some(without_closing.trim_end())
    } else {
        Some(body)
    }
}

fn chunk_section(section: &Section<'_>, target: usize, overlap: usize, chunks: &mut Vec<Chunk>) {
    let mut current = String::new();
    let mut current_len = 0;
    let mut has_body = false;
    if let Some(heading) = section.heading {
        current.push_str(heading);
        current_len = char_len(heading);
    }

    for paragraph in &section.paragraphs {
        for (index, piece) in split_to_fit(paragraph, target).into_iter().enumerate() {
            // Continuation pieces of one paragraph rejoin as running prose.
            let separator = if !has_body {
                "\n"
            } else if index == 0 {
                "\n\n"
            } else {
                " "
            };
            let piece_len = char_len(piece);

            if current.is_empty() {
                current.push_str(piece);
                current_len = piece_len;
            } else if !has_body || current_len + separator.len() + piece_len <= target {
                // The first body piece always stays with its heading so a
                // heading is never stranded in a chunk of its own.
                current.push_str(separator);
                current.push_str(piece);
                current_len += separator.len() + piece_len;
            } else {
                let tail = overlap_tail(&current, overlap).to_owned();
                push_chunk(chunks, section.heading, &current);
                current = tail;
                if !current.is_empty() {
                    current.push_str(separator);
                }
                current.push_str(piece);
                current_len = char_len(&current);
            }
            has_body = true;
        }
    }
    push_chunk(chunks, section.heading, &current);
}

fn push_chunk(chunks: &mut Vec<Chunk>, heading: Option<&str>, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    chunks.push(Chunk {
        ordinal: chunks.len(),
        heading: heading.map(str::to_owned),
        text: text.to_owned(),
    });
}

#[derive(Clone, Copy)]
enum Granularity {
    Sentence,
    Word,
    Char,
}

/// Cuts `text` into pieces of at most `target` chars, preferring the
/// coarsest boundary that works.
fn split_to_fit(text: &str, target: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    split_into(text, target, Granularity::Sentence, &mut pieces);
    pieces
}

fn split_into<'a>(text: &'a str, target: usize, level: Granularity, out: &mut Vec<&'a str>) {
    if char_len(text) <= target {
        out.push(text);
        return;
    }
    let (ranges, finer) = match level {
        Granularity::Sentence => (sentence_ranges(text), Granularity::Word),
        Granularity::Word => (word_ranges(text), Granularity::Char),
        Granularity::Char => {
            out.extend(char_windows(text, target));
            return;
        }
    };

    let mut current: Option<Range<usize>> = None;
    for range in ranges {
        if char_len(&text[range.clone()]) > target {
            if let Some(open) = current.take() {
                out.push(&text[open]);
            }
            split_into(&text[range], target, finer, out);
            continue;
        }
        current = match current {
            Some(open) if char_len(&text[open.start..range.end]) <= target => {
                Some(open.start..range.end)
            }
            Some(open) => {
                out.push(&text[open]);
                Some(range)
            }
            None => Some(range),
        };
    }
    if let Some(open) = current {
        out.push(&text[open]);
    }
}

/// Byte ranges of the sentences in `text`, trimmed and non-empty.
///
/// A sentence ends at `.`, `!` or `?` followed by whitespace or the end of
/// the text, or at a line break (list items and lines of code rarely end in
/// punctuation but are still natural cut points).
fn sentence_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start: Option<usize> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        if start.is_none() {
            if c.is_whitespace() {
                continue;
            }
            start = Some(index);
        }
        let next_is_break = chars.peek().is_none_or(|&(_, next)| next.is_whitespace());
        let ends = c == '\n' || (matches!(c, '.' | '!' | '?') && next_is_break);
        if ends {
            if let Some(begin) = start.take() {
                push_trimmed(text, begin..index + c.len_utf8(), &mut ranges);
            }
        }
    }
    if let Some(begin) = start {
        push_trimmed(text, begin..text.len(), &mut ranges);
    }
    ranges
}

fn push_trimmed(text: &str, range: Range<usize>, ranges: &mut Vec<Range<usize>>) {
    let kept = text[range.clone()].trim_end().len();
    if kept > 0 {
        ranges.push(range.start..range.start + kept);
    }
}

/// Byte ranges of the whitespace-separated words in `text`.
fn word_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start: Option<usize> = None;
    for (index, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(begin)) => {
                ranges.push(begin..index);
                start = None;
            }
            (false, None) => start = Some(index),
            _ => {}
        }
    }
    if let Some(begin) = start {
        ranges.push(begin..text.len());
    }
    ranges
}

/// Last resort for a single "word" longer than the target (a URL, a base64
/// blob): fixed windows of `target` chars, always on `char` boundaries.
fn char_windows(text: &str, target: usize) -> Vec<&str> {
    let mut windows = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (index, _) in text.char_indices() {
        if count == target {
            windows.push(&text[start..index]);
            start = index;
            count = 0;
        }
        count += 1;
    }
    if start < text.len() {
        windows.push(&text[start..]);
    }
    windows
}

/// The last at most `overlap` chars of `text`, starting at a sentence
/// boundary when that keeps a useful amount of context, else at a word
/// boundary. Returns `""` when no boundary falls inside the window.
fn overlap_tail(text: &str, overlap: usize) -> &str {
    if overlap == 0 {
        return "";
    }
    let total = char_len(text);
    if total <= overlap {
        return text;
    }
    let cut = text
        .char_indices()
        .nth(total - overlap)
        .map_or(text.len(), |(index, _)| index);

    let sentence_start = sentence_ranges(text)
        .into_iter()
        .map(|range| range.start)
        .find(|&start| start >= cut);
    if let Some(start) = sentence_start {
        // A whole-sentence tail reads better, but not if it throws away most
        // of the overlap the caller asked for.
        if char_len(&text[start..]) * 2 >= overlap {
            return &text[start..];
        }
    }
    word_ranges(text)
        .into_iter()
        .map(|range| range.start)
        .find(|&start| start >= cut)
        .map_or("", |start| &text[start..])
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|chunk| chunk.text.as_str()).collect()
    }

    #[test]
    fn empty_input_yields_no_chunks() {
        assert!(chunk_document("", 500, 50).is_empty());
    }

    #[test]
    fn whitespace_only_input_yields_no_chunks() {
        assert!(chunk_document("  \n\r\n\t \n   ", 500, 50).is_empty());
    }

    #[test]
    fn short_plain_text_is_a_single_trimmed_chunk() {
        let chunks = chunk_document("\n\n  Hello world.  \n\n", 500, 50);
        assert_eq!(
            chunks,
            vec![Chunk {
                ordinal: 0,
                heading: None,
                text: "Hello world.".to_owned(),
            }]
        );
    }

    #[test]
    fn headings_start_new_chunks_and_lead_their_text() {
        let doc = "Intro text.\n\n# First\n\nAlpha body.\n\n## Second ##\nBeta body.\n";
        let chunks = chunk_document(doc, 500, 50);
        assert_eq!(
            texts(&chunks),
            vec!["Intro text.", "First\nAlpha body.", "Second\nBeta body."]
        );
        assert_eq!(chunks[0].heading, None);
        assert_eq!(chunks[1].heading.as_deref(), Some("First"));
        assert_eq!(chunks[2].heading.as_deref(), Some("Second"));
    }

    #[test]
    fn ordinals_count_from_zero_across_sections() {
        let doc = "# A\none\n# B\ntwo\n# C\nthree";
        let ordinals: Vec<usize> = chunk_document(doc, 500, 0)
            .iter()
            .map(|chunk| chunk.ordinal)
            .collect();
        assert_eq!(ordinals, vec![0, 1, 2]);
    }

    #[test]
    fn hashes_without_space_or_inside_code_fences_are_not_headings() {
        let doc = "#hashtag line\n\n```\n# not a heading\n```\n\n# C#\nbody";
        let chunks = chunk_document(doc, 500, 0);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].heading, None);
        assert!(chunks[0].text.contains("# not a heading"));
        assert_eq!(chunks[1].heading.as_deref(), Some("C#"));
    }

    #[test]
    fn heading_only_section_still_produces_a_searchable_chunk() {
        let chunks = chunk_document("# Title\n## Install\nRun it.", 500, 0);
        assert_eq!(texts(&chunks), vec!["Title", "Install\nRun it."]);
    }

    #[test]
    fn small_paragraphs_are_packed_into_one_chunk() {
        let doc = "First paragraph.\n\nSecond paragraph.\n\nThird paragraph.";
        let chunks = chunk_document(doc, 500, 0);
        assert_eq!(
            texts(&chunks),
            vec!["First paragraph.\n\nSecond paragraph.\n\nThird paragraph."]
        );
    }

    #[test]
    fn paragraphs_that_overflow_the_target_go_to_the_next_chunk() {
        let para = "word ".repeat(15); // 75 chars before trimming
        let doc = format!("{para}\n\n{para}\n\n{para}");
        let chunks = chunk_document(&doc, 160, 0);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].text.matches("\n\n").count(), 1);
        assert!(chunks.iter().all(|chunk| char_len(&chunk.text) <= 160));
    }

    #[test]
    fn long_paragraph_is_split_on_sentence_boundaries() {
        let sentence = "This sentence is exactly fifty characters long ok.";
        assert_eq!(sentence.len(), 50);
        let paragraph = [sentence; 6].join(" ");
        let chunks = chunk_document(&paragraph, 120, 0);
        assert_eq!(chunks.len(), 3);
        for chunk in &chunks {
            assert!(char_len(&chunk.text) <= 120);
            assert!(chunk.text.ends_with('.'), "cut mid-sentence: {chunk:?}");
            assert!(
                chunk.text.starts_with("This"),
                "cut mid-sentence: {chunk:?}"
            );
        }
    }

    #[test]
    fn overlong_sentence_is_split_on_whitespace() {
        let sentence = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
        let chunks = chunk_document(sentence, 20, 0);
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(char_len(&chunk.text) <= 20);
            for word in chunk.text.split_whitespace() {
                assert!(sentence.split_whitespace().any(|w| w == word), "{word}");
            }
        }
    }

    #[test]
    fn giant_word_is_split_on_char_boundaries() {
        let word = "é".repeat(25);
        let chunks = chunk_document(&word, 10, 0);
        assert_eq!(
            chunks.iter().map(|c| char_len(&c.text)).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert_eq!(texts(&chunks).concat(), word);
    }

    #[test]
    fn later_chunks_in_a_section_begin_with_the_previous_tail() {
        let sentences: Vec<String> = (1..=8)
            .map(|n| format!("Sentence number {n} talks about topic {n}."))
            .collect();
        let doc = format!("# Topic\n\n{}", sentences.join(" "));
        let chunks = chunk_document(&doc, 120, 50);
        assert!(chunks.len() >= 3);
        assert!(chunks[0].text.starts_with("Topic\n"));
        for pair in chunks.windows(2) {
            let (previous, next) = (&pair[0].text, &pair[1].text);
            let first_sentence = next.split_inclusive(". ").next().unwrap_or_default();
            let first_sentence = first_sentence.trim_end();
            assert!(
                previous.ends_with(first_sentence),
                "{next:?} does not start with the tail of {previous:?}"
            );
            assert!(first_sentence.starts_with("Sentence"));
            assert_eq!(pair[1].heading.as_deref(), Some("Topic"));
        }
    }

    #[test]
    fn overlap_does_not_cross_sections() {
        let doc = "# One\nFirst section text.\n# Two\nSecond section text.";
        let chunks = chunk_document(doc, 500, 100);
        assert_eq!(
            texts(&chunks),
            vec!["One\nFirst section text.", "Two\nSecond section text."]
        );
    }

    #[test]
    fn overlap_tail_falls_back_to_a_word_boundary() {
        let text = "one two three four five six seven";
        assert_eq!(overlap_tail(text, 12), "six seven");
        assert_eq!(overlap_tail(text, 0), "");
        assert_eq!(overlap_tail("short", 10), "short");
        assert_eq!(overlap_tail("abcdefghij", 4), "");
    }

    #[test]
    fn crlf_line_endings_are_normalised() {
        let doc = "# Title\r\n\r\nLine one\r\nline two\r\n\r\nNext para.\r\n";
        let chunks = chunk_document(doc, 500, 0);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].heading.as_deref(), Some("Title"));
        assert_eq!(chunks[0].text, "Title\nLine one\nline two\n\nNext para.");
        assert!(!chunks[0].text.contains('\r'));
    }

    #[test]
    fn multibyte_text_never_panics_at_any_size() {
        let doc = "# Grüße\n\nGrüße 日本語 テキスト。 Ünïcödé wörds — ok! 日本語のテキストはスペースがない。\n\n🎉🎉🎉 emoji 🎉";
        for target in 0..40 {
            for overlap in 0..12 {
                let chunks = chunk_document(doc, target, overlap);
                assert!(!chunks.is_empty());
                assert!(chunks.iter().all(|chunk| !chunk.text.trim().is_empty()));
            }
        }
        let chunks = chunk_document(doc, 500, 50);
        assert_eq!(chunks[0].heading.as_deref(), Some("Grüße"));
        assert!(chunks[0].text.contains("日本語"));
    }

    #[test]
    fn zero_target_is_treated_as_one_char() {
        let chunks = chunk_document("ab", 0, 0);
        assert_eq!(texts(&chunks), vec!["a", "b"]);
    }
}
