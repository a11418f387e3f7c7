//! The hub's own SSE frames (`protocol::sse`): whatever a token holds, its frame is one
//! `id:` line naming the answer and the cursor, one `data:` line that reads back as the
//! seed's `{"token","done":false}`, and the blank line that ends an event.

use proptest::prelude::*;
use ragstream::answer::{AnswerEvent, StreamEvent};
use ragstream::protocol::sse::{encode_into, parse_event_id};
use ragstream::protocol::Piece;
use serde_json::{json, Value};

use crate::gen::text;

/// The lines of one frame, checked for its shape; returns the `data:` JSON.
fn frame(bytes: &[u8], answer_id: &str, seq: u64) -> Value {
    let frame = std::str::from_utf8(bytes).expect("UTF-8");
    let body = frame.strip_suffix("\n\n").expect("ends with a blank line");
    let mut lines = body.split('\n');
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("id: "))
        .expect("id line");
    assert_eq!(parse_event_id(id), Some((answer_id, seq)));
    let data = lines
        .next()
        .and_then(|l| l.strip_prefix("data: "))
        .expect("data line");
    assert_eq!(lines.next(), None, "one data line: {frame:?}");
    serde_json::from_str(data).expect("JSON")
}

proptest! {
    #[test]
    fn a_token_frame_reads_back_whatever_the_token(token in text(40), seq in any::<u64>()) {
        let answer_id = "c0ffee-1";
        let mut merged = Vec::new();
        encode_into(&mut merged, answer_id, &Piece::Tokens { text: &token, last_seq: seq });
        prop_assert_eq!(frame(&merged, answer_id, seq), json!({"token": token, "done": false}));
        let event = AnswerEvent { seq, event: StreamEvent::Token(token.clone()), partial: None };
        let mut single = Vec::new();
        encode_into(&mut single, answer_id, &Piece::Event(&event));
        prop_assert_eq!(single, merged);
    }
}
