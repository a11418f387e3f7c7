//! An incremental decoder for the `text/event-stream` bodies LLM upstreams send, following
//! the WHATWG parsing rules (the same ones `EventSource` and the vendors' SDKs follow).
//!
//! Network reads split the stream anywhere: inside a line, between CR and LF, inside a
//! UTF-8 sequence or the BOM. Bytes are copied once into one buffer; lines are found there
//! and UTF-8 is decoded per complete line, so a split character is never seen half. The
//! usual event (one `data:` line) is handed out as a slice of that buffer, without a copy.
//! Memory is bounded: a line or event over the limit is an error, not a bigger buffer.

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event, borrowed from the decoder until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` name, empty when none was given (the spec's `message`).
    pub event: &'a str,
    /// The `data:` lines joined with `\n`.
    pub data: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("a line is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("an event is larger than {limit} bytes")]
    EventTooLarge { limit: usize },
}

pub struct SseDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet split into lines.
    pos: usize,
    /// The data of the event being built, once it has more than one line or has outlived
    /// the buffer region its only line was in.
    data: String,
    /// Where the event's only data line lies in `buf` (the common case: no copy).
    data_line: Option<(usize, usize)>,
    has_data: bool,
    event: String,
    /// The last line ended with CR: an LF arriving next (perhaps in the next read) belongs
    /// to the same line end and must not count as a blank line.
    after_cr: bool,
    bom_checked: bool,
    /// The last event was handed out; its state is cleared on the next call.
    dispatched: bool,
    limit: usize,
}

impl SseDecoder {
    /// `limit` bounds one line and one event's data, in bytes.
    pub fn new(limit: usize) -> Self {
        SseDecoder {
            buf: Vec::new(),
            pos: 0,
            data: String::new(),
            data_line: None,
            has_data: false,
            event: String::new(),
            after_cr: false,
            bom_checked: false,
            dispatched: false,
            limit,
        }
    }

    /// Adds bytes as they came off the network.
    pub fn push(&mut self, chunk: &[u8]) {
        self.clear_dispatched();
        if self.pos > 0 {
            // The event's only data line is about to move: keep it in `data` instead.
            if let Some((start, end)) = self.data_line.take() {
                self.data.clear();
                push_lossy(&mut self.data, &self.buf[start..end]);
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the bytes pushed so far hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        self.clear_dispatched();
        if !self.advance(false)? {
            return Ok(None);
        }
        Ok(Some(self.dispatch()))
    }

    /// The body ended. Returns an event left without its closing blank line, which the
    /// spec discards; callers decide (a sloppy server's unterminated `data: [DONE]` still
    /// means done). Call after `next_event` returned `None`.
    pub fn finish(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        self.clear_dispatched();
        if self.advance(true)? {
            return Ok(Some(self.dispatch()));
        }
        if self.pos < self.buf.len() {
            // A last line without a line end.
            let (start, end) = (self.pos, self.buf.len());
            self.pos = end;
            self.line(start, end)?;
        }
        if !self.has_data {
            return Ok(None);
        }
        Ok(Some(self.dispatch()))
    }

    fn clear_dispatched(&mut self) {
        if self.dispatched {
            self.dispatched = false;
            self.data.clear();
            self.data_line = None;
            self.has_data = false;
            self.event.clear();
        }
    }

    /// Consumes complete lines until one dispatches an event (true) or none is left.
    fn advance(&mut self, at_eof: bool) -> Result<bool, SseError> {
        if !self.bom_checked {
            let rest = &self.buf[self.pos..];
            if rest.len() < BOM.len() && BOM.starts_with(rest) && !at_eof {
                return Ok(false);
            }
            if rest.starts_with(BOM) {
                self.pos += BOM.len();
            }
            self.bom_checked = true;
        }
        loop {
            if self.after_cr {
                match self.buf.get(self.pos) {
                    None => return Ok(false),
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                }
                self.after_cr = false;
            }
            let rest = &self.buf[self.pos..];
            let Some(len) = memchr::memchr2(b'\n', b'\r', rest) else {
                if rest.len() > self.limit {
                    return Err(SseError::LineTooLong { limit: self.limit });
                }
                return Ok(false);
            };
            if len > self.limit {
                return Err(SseError::LineTooLong { limit: self.limit });
            }
            let (start, end) = (self.pos, self.pos + len);
            self.after_cr = rest[len] == b'\r';
            self.pos = end + 1;
            if self.line(start, end)? {
                return Ok(true);
            }
        }
    }

    /// Applies one line; true when it is the blank line that dispatches an event.
    fn line(&mut self, start: usize, end: usize) -> Result<bool, SseError> {
        let line = &self.buf[start..end];
        if line.is_empty() {
            if self.has_data {
                return Ok(true);
            }
            // Nothing to dispatch; an `event:` without data is forgotten, as in browsers.
            self.event.clear();
            return Ok(false);
        }
        if line[0] == b':' {
            return Ok(false);
        }
        let (name, value_start) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let skip = usize::from(line.get(colon + 1) == Some(&b' '));
                (&line[..colon], start + colon + 1 + skip)
            }
            None => (line, end),
        };
        // `id` and `retry` drive browser reconnects; an upstream stream is never resumed.
        let (is_data, is_event) = (name == b"data", name == b"event");
        if is_data {
            self.data_line(value_start, end)?;
        } else if is_event {
            self.event.clear();
            push_lossy(&mut self.event, &self.buf[value_start..end]);
        }
        Ok(false)
    }

    fn data_line(&mut self, start: usize, end: usize) -> Result<(), SseError> {
        if !self.has_data {
            self.has_data = true;
            self.data_line = Some((start, end));
            return Ok(());
        }
        if let Some((a, b)) = self.data_line.take() {
            self.data.clear();
            push_lossy(&mut self.data, &self.buf[a..b]);
        }
        if self.data.len() + 1 + (end - start) > self.limit {
            return Err(SseError::EventTooLarge { limit: self.limit });
        }
        self.data.push('\n');
        push_lossy(&mut self.data, &self.buf[start..end]);
        Ok(())
    }

    fn dispatch(&mut self) -> SseEvent<'_> {
        self.dispatched = true;
        if let Some((start, end)) = self.data_line {
            match std::str::from_utf8(&self.buf[start..end]) {
                Ok(data) => {
                    return SseEvent {
                        event: &self.event,
                        data,
                    }
                }
                Err(_) => {
                    self.data.clear();
                    push_lossy(&mut self.data, &self.buf[start..end]);
                    self.data_line = None;
                }
            }
        }
        SseEvent {
            event: &self.event,
            data: &self.data,
        }
    }
}

/// Invalid UTF-8 becomes U+FFFD, as in browsers; the JSON parser then decides.
fn push_lossy(out: &mut String, bytes: &[u8]) {
    out.push_str(&String::from_utf8_lossy(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    struct Ev(String, String);

    fn ev(event: &str, data: &str) -> Ev {
        Ev(event.to_owned(), data.to_owned())
    }

    fn drain(d: &mut SseDecoder, out: &mut Vec<Ev>) {
        while let Some(e) = d.next_event().expect("decodes") {
            out.push(Ev(e.event.to_owned(), e.data.to_owned()));
        }
    }

    /// Feeds `input` in pieces of `size` bytes and returns every event, the unterminated
    /// one at the end included.
    fn decode_in_pieces(input: &[u8], size: usize) -> Vec<Ev> {
        let mut d = SseDecoder::new(1024);
        let mut out = Vec::new();
        for piece in input.chunks(size) {
            d.push(piece);
            drain(&mut d, &mut out);
        }
        if let Some(e) = d.finish().expect("finishes") {
            out.push(Ev(e.event.to_owned(), e.data.to_owned()));
        }
        out
    }

    /// Every split must give the same events as the whole input.
    fn same_for_every_split(input: &[u8]) -> Vec<Ev> {
        let whole = decode_in_pieces(input, input.len().max(1));
        for size in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input, size),
                whole,
                "pieces of {size} bytes"
            );
        }
        // Two pieces split at every position, too.
        for at in 0..=input.len() {
            let mut d = SseDecoder::new(1024);
            let mut out = Vec::new();
            d.push(&input[..at]);
            drain(&mut d, &mut out);
            d.push(&input[at..]);
            drain(&mut d, &mut out);
            if let Some(e) = d.finish().unwrap() {
                out.push(Ev(e.event.to_owned(), e.data.to_owned()));
            }
            assert_eq!(out, whole, "split at {at}");
        }
        whole
    }

    #[test]
    fn data_lines_become_events_at_blank_lines() {
        let got = same_for_every_split(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(got, vec![ev("", "{\"a\":1}"), ev("", "[DONE]")]);
    }

    #[test]
    fn lf_crlf_and_lone_cr_all_end_lines_without_extra_events() {
        let lf = same_for_every_split(b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n");
        let crlf = same_for_every_split(b"event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n");
        let cr = same_for_every_split(b"event: a\rdata: 1\r\revent: b\rdata: 2\r\r");
        let mixed = same_for_every_split(b"event: a\r\ndata: 1\n\revent: b\rdata: 2\r\n\n");
        let want = vec![ev("a", "1"), ev("b", "2")];
        assert_eq!(
            (lf, crlf, cr, mixed),
            (want.clone(), want.clone(), want.clone(), want)
        );
    }

    #[test]
    fn multi_byte_characters_split_across_reads_arrive_whole() {
        let input = "data: {\"text\":\"héllo 日本 🦀\"}\n\n".as_bytes();
        let got = same_for_every_split(input);
        assert_eq!(got, vec![ev("", "{\"text\":\"héllo 日本 🦀\"}")]);
    }

    #[test]
    fn comments_are_ignored_and_fields_follow_the_spec() {
        let input = b": keep-alive\n\n:ping\nevent:ping\ndata:{\"type\": \"ping\"}\nid: 7\nretry: 10\nunknown: x\n\n";
        let got = same_for_every_split(input);
        // No space after the colon is fine; only one leading space is dropped.
        assert_eq!(got, vec![ev("ping", "{\"type\": \"ping\"}")]);
        let got = same_for_every_split(b"data:  two spaces\n\n");
        assert_eq!(got, vec![ev("", " two spaces")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let got = same_for_every_split(b"data: {\"a\":\ndata: 1}\ndata:\n\n");
        assert_eq!(got, vec![ev("", "{\"a\":\n1}\n")]);
    }

    #[test]
    fn an_empty_data_line_still_dispatches_and_an_event_without_data_does_not() {
        let got = same_for_every_split(b"data:\n\nevent: lonely\n\ndata: x\n\n");
        // The forgotten `event:` name does not leak into the next event.
        assert_eq!(got, vec![ev("", ""), ev("", "x")]);
    }

    #[test]
    fn event_names_reset_after_each_event() {
        let got = same_for_every_split(b"event: a\ndata: 1\n\ndata: 2\n\n");
        assert_eq!(got, vec![ev("a", "1"), ev("", "2")]);
    }

    #[test]
    fn one_leading_bom_is_dropped_even_when_split() {
        let got = same_for_every_split(b"\xEF\xBB\xBFdata: 1\n\n");
        assert_eq!(got, vec![ev("", "1")]);
        // A second BOM is not a BOM: it becomes part of a field name, which is ignored.
        let got = same_for_every_split(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: 1\n\ndata: 2\n\n");
        assert_eq!(got, vec![ev("", "2")]);
    }

    #[test]
    fn an_unterminated_last_event_is_returned_by_finish_only() {
        let mut d = SseDecoder::new(64);
        d.push(b"data: 1\n\ndata: [DONE]");
        assert_eq!(
            d.next_event()
                .unwrap()
                .map(|e| e.data.to_owned())
                .as_deref(),
            Some("1")
        );
        assert_eq!(d.next_event().unwrap(), None);
        assert_eq!(d.finish().unwrap().map(|e| e.data), Some("[DONE]"));
        assert_eq!(d.finish().unwrap(), None, "finish is idempotent");
    }

    #[test]
    fn an_over_long_line_is_refused_without_waiting_for_its_end() {
        let mut d = SseDecoder::new(16);
        d.push(b"data: 0123456789");
        assert_eq!(d.next_event().unwrap(), None);
        d.push(b"abcdef");
        assert_eq!(d.next_event(), Err(SseError::LineTooLong { limit: 16 }));
        let mut d = SseDecoder::new(16);
        d.push(b"data: 0123456789abcdefgh\n\n");
        assert_eq!(d.next_event(), Err(SseError::LineTooLong { limit: 16 }));
    }

    #[test]
    fn an_event_of_many_short_lines_is_bounded_too() {
        let mut d = SseDecoder::new(16);
        d.push(b"data: 0123456789\ndata: 0123456789\n\n");
        assert_eq!(d.next_event(), Err(SseError::EventTooLarge { limit: 16 }));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let got = same_for_every_split(b"data: a\xFFb\n\n");
        assert_eq!(got, vec![ev("", "a\u{FFFD}b")]);
    }

    #[test]
    fn the_buffer_does_not_grow_over_a_long_stream() {
        let mut d = SseDecoder::new(256);
        let event = b"data: {\"choices\":[{\"delta\":{\"content\":\"tok\"}}]}\n\n";
        for _ in 0..10_000 {
            d.push(&event[..20]);
            assert_eq!(d.next_event().unwrap(), None);
            d.push(&event[20..]);
            assert!(d.next_event().unwrap().is_some());
            assert_eq!(d.next_event().unwrap(), None);
        }
        assert!(d.buf.capacity() < 4 * event.len(), "{}", d.buf.capacity());
    }

    #[test]
    fn an_event_spanning_reads_survives_the_buffer_moving() {
        let mut d = SseDecoder::new(64);
        d.push(b"data: 1\n\ndata: first\n");
        assert_eq!(
            d.next_event()
                .unwrap()
                .map(|e| e.data.to_owned())
                .as_deref(),
            Some("1")
        );
        assert_eq!(d.next_event().unwrap(), None);
        d.push(b"\n");
        assert_eq!(d.next_event().unwrap().map(|e| e.data), Some("first"));
    }
}
