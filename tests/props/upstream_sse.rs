//! The upstream `text/event-stream` decoder (`providers::upstream_sse`).

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use ragstream::answer::{AnswerEvent, DoneMetadata, StreamEvent};
use ragstream::error::ErrorBody;
use ragstream::protocol::sse;
use ragstream::providers::upstream_sse::SseDecoder;

use crate::gen::{cut_bytes, line_text, splits, text};

/// (event name, data) of each event, in order.
type Events = Vec<(String, String)>;

/// Feeds `pieces` one read at a time, draining events after each, then ends the body.
/// `Err` carries the first decoding error (a line or event over the limit).
fn decode(pieces: &[&[u8]], limit: usize) -> Result<Events, String> {
    let mut d = SseDecoder::new(limit);
    let mut out = Vec::new();
    for piece in pieces {
        d.push(piece);
        while let Some(e) = d.next_event().map_err(|e| e.to_string())? {
            out.push((e.event.to_owned(), e.data.to_owned()));
        }
    }
    if let Some(e) = d.finish().map_err(|e| e.to_string())? {
        out.push((e.event.to_owned(), e.data.to_owned()));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Lf,
    CrLf,
    Cr,
}

impl Ending {
    fn bytes(self) -> &'static [u8] {
        match self {
            Ending::Lf => b"\n",
            Ending::CrLf => b"\r\n",
            Ending::Cr => b"\r",
        }
    }
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![Just(Ending::Lf), Just(Ending::CrLf), Just(Ending::Cr)]
}

/// A line that never reaches the application: a comment, or a field the decoder drops
/// (`id` and `retry` only matter to browsers reconnecting; unknown names are ignored).
fn noise_line() -> impl Strategy<Value = String> {
    prop_oneof![
        line_text(20).prop_map(|c| format!(":{c}")),
        Just(": ping".to_owned()),
        line_text(8).prop_map(|v| format!("id: {v}")),
        (0u32..10_000).prop_map(|v| format!("retry: {v}")),
        line_text(8).prop_map(|v| format!("x-vendor: {v}")),
    ]
}

/// One `name: value` line as a server may write it: with or without the space after the
/// colon (one space is dropped, so a value that starts with one needs it written), and
/// an empty value sometimes as the bare field name.
fn field(name: &str, value: &str, spaced: bool, bare: bool) -> String {
    if value.is_empty() && bare {
        name.to_owned()
    } else if spaced || value.starts_with(' ') {
        format!("{name}: {value}")
    } else {
        format!("{name}:{value}")
    }
}

#[derive(Debug, Clone)]
struct Block {
    /// Lines before the blank line, in order.
    lines: Vec<String>,
    /// What it dispatches, if anything.
    event: Option<(String, String)>,
}

/// An event (a name perhaps, one or more data lines, noise among them) or a block that
/// dispatches nothing (noise only, or a name without data, which is forgotten).
fn block() -> impl Strategy<Value = Block> {
    let event = (
        proptest::option::of(line_text(10)),
        vec(line_text(24), 1..4),
        vec(noise_line(), 0..3),
        any::<(bool, bool)>(),
        any::<Index>(),
    )
        .prop_map(|(name, data, noise, (spaced, bare), at)| {
            let mut lines: Vec<String> = Vec::new();
            if let Some(name) = &name {
                lines.push(field("event", name, spaced, bare));
            }
            lines.extend(data.iter().map(|d| field("data", d, spaced, bare)));
            for n in noise {
                lines.insert(at.index(lines.len() + 1), n);
            }
            Block {
                lines,
                event: Some((name.unwrap_or_default(), data.join("\n"))),
            }
        });
    let silent = (proptest::option::of(line_text(10)), vec(noise_line(), 0..3)).prop_map(
        |(name, mut lines)| {
            if let Some(name) = name {
                lines.push(format!("event: {name}"));
            }
            Block { lines, event: None }
        },
    );
    prop_oneof![4 => event, 1 => silent]
}

#[derive(Debug, Clone)]
struct Stream {
    bytes: Vec<u8>,
    events: Events,
}

/// A valid stream and the events it holds. Line ends are all LF, all CRLF, all CR, or
/// mixed line by line; a leading BOM and an unterminated last event (which `finish`
/// hands out) are sometimes there.
fn stream() -> impl Strategy<Value = Stream> {
    (
        vec(block(), 0..6),
        prop_oneof![
            ending().prop_map(Some),
            Just(None), // mixed
        ],
        vec(ending(), 64),
        any::<bool>(),
        proptest::option::of(line_text(16)),
    )
        .prop_map(|(blocks, style, mixed, bom, tail)| {
            let mut bytes = Vec::new();
            if bom {
                bytes.extend_from_slice(b"\xEF\xBB\xBF");
            }
            let mut events = Vec::new();
            let mut previous: Option<Ending> = None;
            let mut n = 0usize;
            let mut line = |bytes: &mut Vec<u8>, text: &str| {
                let mut end = style.unwrap_or(mixed[n % mixed.len()]);
                n += 1;
                // CR then an empty line ended by LF reads as one CRLF: that blank line
                // would vanish. A server mixing endings cannot mean that, so not made.
                if previous == Some(Ending::Cr) && text.is_empty() && end == Ending::Lf {
                    end = Ending::CrLf;
                }
                bytes.extend_from_slice(text.as_bytes());
                bytes.extend_from_slice(end.bytes());
                previous = Some(end);
            };
            for b in blocks {
                for l in &b.lines {
                    line(&mut bytes, l);
                }
                line(&mut bytes, "");
                events.extend(b.event);
            }
            if let Some(tail) = tail {
                bytes.extend_from_slice(format!("data: {tail}").as_bytes());
                events.push((String::new(), tail));
            }
            Stream { bytes, events }
        })
}

/// Bytes that look like an event stream often enough to reach every state.
fn stream_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        Just(b"data:".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event: e".to_vec()),
        Just(b":".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just(b"\xF0\x9F".to_vec()),
    ];
    vec(token, 0..64).prop_map(|t| t.concat())
}

fn meta(answer_id: String, tokens: u64) -> DoneMetadata {
    DoneMetadata {
        answer_id,
        provider: "openai".into(),
        model: "m".into(),
        ttft_ms: Some(3),
        elapsed_ms: 9,
        tokens,
        input_tokens: 0,
        input_tokens_estimated: false,
        finish_reason: "stop".into(),
        sources: Arc::from(Vec::new()),
        conversation_id: None,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_split_anywhere_never_panic(
        bytes in prop_oneof![vec(any::<u8>(), 0..256), stream_like_bytes()],
        at in splits(8),
        limit in 1usize..64,
    ) {
        let _ = decode(&cut_bytes(&bytes, &at), limit);
    }

    #[test]
    fn a_valid_stream_decodes_to_its_events_however_it_is_split(
        s in stream(),
        at in splits(12),
    ) {
        let whole = decode(&[&s.bytes], 1 << 20);
        prop_assert_eq!(whole.as_ref(), Ok(&s.events));
        prop_assert_eq!(decode(&cut_bytes(&s.bytes, &at), 1 << 20), whole);
    }

    #[test]
    fn a_valid_stream_read_byte_by_byte_decodes_the_same(s in stream()) {
        let bytes: Vec<&[u8]> = s.bytes.chunks(1).collect();
        prop_assert_eq!(decode(&bytes, 1 << 20), Ok(s.events));
    }

    /// The hub's own SSE encoder read back by the decoder: the JSON of every frame holds
    /// what was encoded, split anywhere (the hub relaying another hub, or a test client).
    #[test]
    fn the_hubs_sse_frames_read_back_through_the_decoder(
        conversation in proptest::option::of(text(12)),
        tokens in vec(text(12), 0..8),
        failure in proptest::option::of((text(8), text(16))),
        at in splits(10),
    ) {
        let mut events = Vec::new();
        if let Some(c) = &conversation {
            events.push(StreamEvent::Conversation(c.clone()));
        }
        events.extend(tokens.iter().cloned().map(StreamEvent::Token));
        events.push(match &failure {
            Some((code, message)) => StreamEvent::Error(ErrorBody {
                code: code.clone(),
                message: message.clone(),
            }),
            None => StreamEvent::Done(Box::new(meta("a1".into(), tokens.len() as u64))),
        });
        let mut bytes = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let ev = AnswerEvent { seq: i as u64 + 1, event, partial: None };
            bytes.extend_from_slice(&sse::encode("a1", &ev));
        }
        bytes.extend_from_slice(sse::PING);
        let got = decode(&cut_bytes(&bytes, &at), 1 << 20).expect("decodes");
        let mut got = got.iter();
        if let Some(c) = &conversation {
            let (name, data) = got.next().expect("the conversation event");
            prop_assert_eq!(name, "conversation");
            let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
            prop_assert_eq!(v["conversationId"].as_str(), Some(c.as_str()));
        }
        for t in &tokens {
            let (name, data) = got.next().expect("a token event");
            prop_assert_eq!(name, "");
            let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
            prop_assert_eq!(v["token"].as_str(), Some(t.as_str()));
            prop_assert_eq!(v["done"].as_bool(), Some(false));
        }
        let (name, data) = got.next().expect("the last event");
        prop_assert_eq!(name, "");
        let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
        prop_assert_eq!(v["done"].as_bool(), Some(true));
        match &failure {
            Some((code, message)) => {
                prop_assert_eq!(v["error"]["code"].as_str(), Some(code.as_str()));
                prop_assert_eq!(v["error"]["message"].as_str(), Some(message.as_str()));
            }
            None => {
                prop_assert_eq!(v["metadata"]["answer_id"].as_str(), Some("a1"));
                prop_assert_eq!(v["metadata"]["tokens"].as_u64(), Some(tokens.len() as u64));
            }
        }
        prop_assert!(got.next().is_none(), "nothing after the last event");
    }
}
