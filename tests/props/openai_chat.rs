//! The OpenAI chat-completions codec (`protocol::openai_chat`): any body is a request or an
//! error naming what is wrong, and a stream of chunks reads back as the answer's text however
//! the tokens were merged.

use proptest::collection::vec;
use proptest::prelude::*;
use ragstream::answer::{AnswerEvent, StreamEvent};
use ragstream::protocol::openai_chat::{parse_request, ChunkEncoder};
use ragstream::protocol::{FrameEncoder, Piece};
use serde_json::{json, Value};

use crate::gen::{json_value, text};

fn token(seq: u64, t: &str) -> AnswerEvent {
    AnswerEvent {
        seq,
        event: StreamEvent::Token(t.to_owned()),
        partial: None,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_a_request_or_a_coded_error(bytes in vec(any::<u8>(), 0..200)) {
        if let Err(e) = parse_request(&bytes) {
            prop_assert!(!e.code.is_empty() && !e.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_fields_are_a_request_or_an_error_naming_a_param(
        fields in vec((prop_oneof![
            Just("model".to_owned()), Just("messages".to_owned()), Just("stream".to_owned()),
            Just("n".to_owned()), Just("temperature".to_owned()), Just("stop".to_owned()),
            Just("stream_options".to_owned()), Just("tools".to_owned()), Just("max_tokens".to_owned()),
            text(8),
        ], json_value()), 0..6),
        question in text(30),
    ) {
        let mut body = json!({"model": "ragstream", "messages": [{"role": "user", "content": question}]});
        for (name, value) in fields {
            body[name] = value;
        }
        match parse_request(body.to_string().as_bytes()) {
            Ok(req) => prop_assert!(!req.model.is_empty() && !req.question.trim().is_empty()),
            Err(e) => prop_assert!(!e.code.is_empty() && !e.message.is_empty()),
        }
    }

    #[test]
    fn merged_or_not_the_chunks_carry_the_text_in_order(
        tokens in vec(text(6), 1..20),
        cuts in vec(any::<bool>(), 20),
    ) {
        // Tokens go out one per chunk or merged in runs, as a lagging reader's body merges them.
        let mut encoder = ChunkEncoder::new("ragstream", 1, false);
        let mut buf = Vec::new();
        let mut run = String::new();
        for (i, t) in tokens.iter().enumerate() {
            run.push_str(t);
            if cuts[i] || i + 1 == tokens.len() {
                encoder.encode(&mut buf, "a", &Piece::Tokens { text: &run, last_seq: i as u64 + 1 });
                run.clear();
            }
        }
        let one = token(99, "!");
        encoder.encode(&mut buf, "a", &Piece::Event(&one));
        let out = String::from_utf8(buf).expect("utf-8");
        let mut text = String::new();
        for frame in out.split("\n\n").filter(|f| !f.is_empty()) {
            let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
            let chunk: Value = serde_json::from_str(data).expect("one JSON line");
            text.push_str(chunk["choices"][0]["delta"]["content"].as_str().expect("content"));
        }
        prop_assert_eq!(text, tokens.concat() + "!");
    }
}
