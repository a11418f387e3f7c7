//! Wire codecs, pure and unit-tested: no I/O, no actors. Each turns answer events into the
//! bytes of one protocol, and (where clients talk back) frames into typed requests.

pub mod openai_chat;
pub mod plain_ws;
pub mod signalr;
pub mod sse;

use crate::answer::{AnswerEvent, StreamEvent};

/// One frame's worth of an answer, as a connection's writer sees the events past its
/// cursor: waiting tokens merged (their text concatenated, numbered as the last of them),
/// every other event as it is.
pub enum Piece<'a> {
    Tokens { text: &'a str, last_seq: u64 },
    Event(&'a AnswerEvent),
}

/// Writes an answer's pieces as the frames of one event-stream dialect (the hub's own SSE
/// shape, OpenAI chunks): the SSE response body is the same for both.
pub trait FrameEncoder {
    /// Appends the frame(s) of one piece to `buf`.
    fn encode(&mut self, buf: &mut Vec<u8>, answer_id: &str, piece: &Piece<'_>);
}

/// Largest merged token text in one frame (a single bigger token still goes whole).
pub const MAX_MERGED_BYTES: usize = 4096;

/// Merges runs of token events. Its buffer is reused from one wake-up to the next, so
/// merging allocates nothing once it has grown to a run's size.
#[derive(Default)]
pub struct TokenMerger {
    text: String,
    last_seq: u64,
    open: bool,
}

impl TokenMerger {
    /// Takes the next event; hands `emit` whatever it completes.
    pub fn push(&mut self, ev: &AnswerEvent, emit: &mut dyn FnMut(Piece<'_>)) {
        if let StreamEvent::Token(text) = &ev.event {
            // A frame stays small however far the reader lags: what a stalled connection
            // holds in its write queues is bounded by the frame size, not the answer's.
            if self.open && self.text.len() + text.len() > MAX_MERGED_BYTES {
                self.flush(emit);
            }
            self.text.push_str(text);
            self.last_seq = ev.seq;
            self.open = true;
        } else {
            self.flush(emit);
            emit(Piece::Event(ev));
        }
    }

    /// Hands over the run of tokens taken so far, if any.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        if self.open {
            emit(Piece::Tokens {
                text: &self.text,
                last_seq: self.last_seq,
            });
            self.text.clear();
            self.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(seq: u64, t: &str) -> AnswerEvent {
        AnswerEvent {
            seq,
            event: StreamEvent::Token(t.into()),
            partial: None,
        }
    }

    #[test]
    fn waiting_tokens_merge_into_one_piece_numbered_as_the_last() {
        let mut merger = TokenMerger::default();
        let mut out = Vec::new();
        let mut emit = |p: Piece<'_>| match p {
            Piece::Tokens { text, last_seq } => out.push(format!("{last_seq}:{text}")),
            Piece::Event(ev) => out.push(format!("{}:event", ev.seq)),
        };
        for ev in [tok(2, "Hel"), tok(3, "lo")] {
            merger.push(&ev, &mut emit);
        }
        let conversation = AnswerEvent {
            seq: 4,
            event: StreamEvent::Conversation("c".into()),
            partial: None,
        };
        merger.push(&conversation, &mut emit);
        merger.push(&tok(5, "!"), &mut emit);
        merger.flush(&mut emit);
        merger.flush(&mut emit);
        assert_eq!(out, vec!["3:Hello", "4:event", "5:!"]);
    }

    #[test]
    fn a_merged_frame_stays_under_its_size_bound() {
        let mut merger = TokenMerger::default();
        let mut sizes = Vec::new();
        let mut emit = |p: Piece<'_>| {
            if let Piece::Tokens { text, .. } = p {
                sizes.push(text.len());
            }
        };
        let big = "x".repeat(1000);
        for seq in 1..=10 {
            merger.push(&tok(seq, &big), &mut emit);
        }
        merger.flush(&mut emit);
        assert_eq!(sizes, vec![4000, 4000, 2000]);
    }
}
