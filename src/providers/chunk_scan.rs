//! A fast path for the chunk nearly every upstream event is: one choice whose delta carries
//! a piece of text and nothing else that matters.
//!
//! Parsing those chunks with serde took about a fifth of the hub's instructions per relayed
//! token (callgrind, 20 SSE streams): a derive that visits every key, a visitor per level,
//! the `choices` array walked element by element. This scanner walks the same bytes once,
//! validating the JSON it skips, and answers only when it is sure: any chunk with anything
//! else in it (an error, a finish reason, usage, a refusal, a second choice, a duplicate
//! key, an escape it would have to think about, deep nesting, malformed JSON) gets `None`,
//! and the caller parses it with serde as before. So the fast path can only ever agree with
//! serde (the property test in `openai.rs` checks exactly that), and the text it returns is
//! borrowed from the chunk unless it had escapes.

use std::borrow::Cow;
use std::ops::Range;

/// Deeper than this, the scanner leaves the chunk to serde (whose own limit is 128).
const MAX_DEPTH: usize = 32;

/// The delta text of an OpenAI-shaped chunk of the common shape (`""` for a role-only or
/// empty delta) with where the content string's body lies in `data` when there is one, or
/// `None` when serde must decide.
fn scan_openai(data: &str) -> Option<(Cow<'_, str>, Option<Range<usize>>)> {
    let mut s = Scanner {
        text: data,
        b: data.as_bytes(),
        i: 0,
    };
    let mut content: Option<(Cow<'_, str>, Range<usize>)> = None;
    // serde refuses a field named twice; so does the scanner, by leaving it to serde.
    let (mut seen_choices, mut seen_usage, mut seen_object) = (false, false, false);
    s.object(|s, key| match key {
        b"choices" => {
            once(&mut seen_choices)?;
            s.one_element_array(|s| s.choice(&mut content))
        }
        b"usage" => {
            once(&mut seen_usage)?;
            s.null()
        }
        b"object" => {
            once(&mut seen_object)?;
            match s.string()? {
                Cow::Borrowed("error") | Cow::Owned(_) => None,
                Cow::Borrowed(_) => Some(()),
            }
        }
        b"error" | b"message" => None,
        _ => s.skip_value(0),
    })?;
    s.ws();
    if s.i != s.b.len() || !seen_choices {
        return None;
    }
    Some(match content {
        Some((text, span)) => (text, Some(span)),
        None => (Cow::Borrowed(""), None),
    })
}

/// What one upstream stream's chunks have in common around their text.
///
/// Most servers send every text chunk of a stream with the same bytes around the text (same
/// id, model, created, index…). Once a chunk of the common shape has been scanned, the bytes
/// before and after its content string are kept; a later chunk that starts and ends with
/// exactly those bytes and has a valid JSON string between them is the same document with
/// another text, so its text is all there is to read: two comparisons and the string. A
/// chunk that differs (a finish reason, usage, a server that varies a field per chunk, such
/// as OpenAI's `obfuscation`) is scanned in full, and teaches a new template a few times
/// per stream at most, so a server whose chunks never repeat costs no copy per chunk.
#[derive(Default)]
pub struct OpenAiChunks {
    template: Option<(Box<str>, Box<str>)>,
    lessons: u8,
}

/// Templates learned per stream at most; past it, chunks that miss are scanned only.
const MAX_LESSONS: u8 = 4;

impl OpenAiChunks {
    /// The delta text of a chunk of the common shape, or `None` when serde must decide.
    pub fn content<'a>(&mut self, data: &'a str) -> Option<Cow<'a, str>> {
        if let Some(text) = self.by_template(data) {
            return Some(text);
        }
        let (text, span) = scan_openai(data)?;
        if let Some(span) = span {
            if self.lessons < MAX_LESSONS {
                self.lessons += 1;
                self.template = Some((data[..span.start].into(), data[span.end..].into()));
            }
        }
        Some(text)
    }

    pub(super) fn by_template<'a>(&self, data: &'a str) -> Option<Cow<'a, str>> {
        let (prefix, suffix) = self.template.as_ref()?;
        if data.len() < prefix.len() + suffix.len()
            || !data.starts_with(&**prefix)
            || !data.ends_with(&**suffix)
        {
            return None;
        }
        // The prefix ends with the string's opening quote, the suffix starts with its
        // closing one: the string must end exactly there (no unescaped quote inside).
        let mut s = Scanner {
            text: data,
            b: data.as_bytes(),
            i: prefix.len() - 1,
        };
        let text = s.string()?;
        (s.i == data.len() - suffix.len() + 1).then_some(text)
    }
}

/// `Some` the first time, `None` (leave it to serde) the second.
fn once(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// `{ "key": value, ... }`, calling `field` with the scanner just past each key's colon.
    /// Keys with escapes are left to serde (they could spell a field's name).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = match self.string()? {
                Cow::Borrowed(k) => k.as_bytes(),
                Cow::Owned(_) => return None,
            };
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn one_element_array(&mut self, element: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        element(self)?;
        self.eat(b']')
    }

    fn choice(&mut self, content: &mut Option<(Cow<'a, str>, Range<usize>)>) -> Option<()> {
        let (mut seen_delta, mut seen_finish) = (false, false);
        self.object(|s, key| match key {
            b"delta" => {
                once(&mut seen_delta)?;
                s.delta(content)
            }
            b"finish_reason" => {
                once(&mut seen_finish)?;
                s.null()
            }
            _ => s.skip_value(1),
        })
    }

    fn delta(&mut self, content: &mut Option<(Cow<'a, str>, Range<usize>)>) -> Option<()> {
        let (mut seen_content, mut seen_refusal) = (false, false);
        self.object(|s, key| match key {
            b"content" => {
                once(&mut seen_content)?;
                if s.peek()? == b'n' {
                    s.null()
                } else {
                    let open = s.i + 1;
                    let text = s.string()?;
                    *content = Some((text, open..s.i - 1));
                    Some(())
                }
            }
            b"refusal" => {
                once(&mut seen_refusal)?;
                s.null()
            }
            _ => s.skip_value(2),
        })
    }

    fn null(&mut self) -> Option<()> {
        self.ws();
        self.literal(b"null")
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A JSON string, borrowed when it has no escapes. Control characters are invalid JSON;
    /// `\u` escapes are decoded, a lone surrogate is left to serde (which refuses it).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        self.run()?;
        if self.b[self.i] == b'"' {
            let text = self.text.get(start..self.i)?;
            self.i += 1;
            return Some(Cow::Borrowed(text));
        }
        let mut out = String::from(self.text.get(start..self.i)?);
        loop {
            // On a backslash.
            self.i += 1;
            let c = match *self.b.get(self.i)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode_escape()?,
                _ => return None,
            };
            out.push(c);
            self.i += 1;
            let run = self.i;
            self.run()?;
            out.push_str(self.text.get(run..self.i)?);
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Some(Cow::Owned(out));
            }
        }
    }

    /// Moves to the next `"` or `\\` of a string, refusing control characters on the way.
    /// memchr finds it a word or a vector at a time; the check for control characters is a
    /// loop without branches, which the compiler vectorises.
    fn run(&mut self) -> Option<()> {
        let rest = &self.b[self.i..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[..end].iter().fold(false, |bad, &c| bad | (c < 0x20)) {
            return None;
        }
        self.i += end;
        Some(())
    }

    /// `\uXXXX` (the scanner on its `u`), or a surrogate pair `\uD83D\uDE00`; leaves the
    /// scanner on the last hex digit.
    fn unicode_escape(&mut self) -> Option<char> {
        let unit = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&unit) {
            self.i += 1;
            self.literal(b"\\u")?;
            self.i -= 1;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        } else {
            unit
        };
        char::from_u32(code)
    }

    /// Four hex digits after the `u` the scanner is on; leaves it on the last one.
    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i + 1..self.i + 5)?;
        let mut v = 0;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }

    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        (self.i > start).then_some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Any JSON value, validated and skipped.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip_value(depth + 1)),
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai_content(data: &str) -> Option<Cow<'_, str>> {
        scan_openai(data).map(|(text, _)| text)
    }

    #[test]
    fn the_common_chunks_are_read_without_serde() {
        let chunk = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1727346168,"model":"gpt-4o","system_fingerprint":"fp_5","choices":[{"index":0,"delta":{"content":"I'm"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert_eq!(openai_content(chunk).as_deref(), Some("I'm"));
        assert!(matches!(openai_content(chunk), Some(Cow::Borrowed(_))));
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#;
        assert_eq!(openai_content(role).as_deref(), Some(""));
        let escaped = r#"{"choices":[{"delta":{"content":" fine\n\"ok\" \u00e9\ud83d\ude00\/"}}]}"#;
        assert_eq!(
            openai_content(escaped).as_deref(),
            Some(" fine\n\"ok\" é😀/")
        );
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        for chunk in [
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"completion_tokens":3}}"#,
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"refusal":"no"}}]}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            r#"{"object":"error","message":"bad"}"#,
            r#"{"choices":[{"delta":{"content":"a"}}]} x"#,
            r#"{"choices":[{"delta":{"content":"a\ud800"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a\x"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}],"n":01}"#,
            r#"{"choices":[{"delta":{"content":"a"}}],"n":1.}"#,
            r#"{"ch\u006fices":[{"delta":{"content":"a"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"a\tb\"}}]}",
            r#"{"id":"x"}"#,
            "",
            "[DONE]",
        ] {
            assert_eq!(openai_content(chunk), None, "{chunk}");
        }
        let deep = format!(
            r#"{{"x":{}{}, "choices":[{{"delta":{{"content":"a"}}}}]}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(openai_content(&deep), None);
    }
}
