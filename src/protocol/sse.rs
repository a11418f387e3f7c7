//! Server-Sent Events frames, in the seed's shape:
//! `data: {"token":"Hello","done":false}` … `data: {"token":"","done":true,"metadata":{…}}`.
//!
//! Every frame carries `id:` (the event's sequence number, the future resume cursor).
//! Sources go out as a named `sources` event, which `EventSource.onmessage` handlers written
//! for the seed ignore and `curl -N` shows; so does an agent-chat answer's first event,
//! `conversation` (`{"conversationId":"…"}`). JSON is compact, so `data:` is always one line.

use bytes::Bytes;
use serde::Serialize;

use super::Piece;
use crate::answer::{AnswerEvent, DoneMetadata, Source, StreamEvent};
use crate::error::ErrorBody;

/// A comment line: keeps proxies and idle timers from closing a quiet stream.
pub const PING: &[u8] = b": ping\n\n";

#[derive(Serialize)]
struct DoneFrame<'a> {
    token: &'a str,
    done: bool,
    metadata: &'a DoneMetadata,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    done: bool,
    error: &'a ErrorBody,
    /// What the answer produced before it failed, when the provider failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a DoneMetadata>,
}

#[derive(Serialize)]
struct SourcesFrame<'a> {
    sources: &'a [Source],
}

#[derive(Serialize)]
struct ConversationFrame<'a> {
    #[serde(rename = "conversationId")]
    conversation_id: &'a str,
}

/// Written instead of an event that could not be serialised (none can: see below).
const UNENCODABLE: &[u8] =
    br#"{"done":true,"error":{"code":"internal","message":"an event could not be encoded"}}"#;

/// The hub's own SSE shape as a [`FrameEncoder`](super::FrameEncoder).
pub struct SseEncoder;

impl super::FrameEncoder for SseEncoder {
    fn encode(&mut self, buf: &mut Vec<u8>, answer_id: &str, piece: &Piece<'_>) {
        encode_into(buf, answer_id, piece);
    }
}

/// Appends one frame. Its `id:` is `<answerId>:<seq>`: an `EventSource` that reconnects
/// sends it back as `Last-Event-ID`, which names both the answer and the cursor.
pub fn encode_into(buf: &mut Vec<u8>, answer_id: &str, piece: &Piece<'_>) {
    // Written in place into the connection's chunk: this runs once per frame.
    let (seq, event) = match piece {
        Piece::Tokens { last_seq, .. } => (*last_seq, None),
        Piece::Event(ev) => (ev.seq, Some(ev)),
    };
    // By hand, not `write!`: core::fmt cost ~1,500 instructions a frame (callgrind).
    buf.extend_from_slice(b"id: ");
    buf.extend_from_slice(answer_id.as_bytes());
    buf.push(b':');
    buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    buf.push(b'\n');
    match event.map(|ev| &ev.event) {
        Some(StreamEvent::Conversation(_)) => buf.extend_from_slice(b"event: conversation\n"),
        Some(StreamEvent::Sources(_)) => buf.extend_from_slice(b"event: sources\n"),
        _ => {}
    }
    buf.extend_from_slice(b"data: ");
    let data_start = buf.len();
    // Serialising these borrowed structs cannot fail: no maps with non-string keys, no
    // custom serialisers that error.
    let written = match (piece, event) {
        (Piece::Tokens { text, .. }, _) => token_frame(buf, text),
        (_, Some(ev)) => match &ev.event {
            StreamEvent::Conversation(conversation_id) => {
                serde_json::to_writer(&mut *buf, &ConversationFrame { conversation_id })
            }
            StreamEvent::Sources(sources) => {
                serde_json::to_writer(&mut *buf, &SourcesFrame { sources })
            }
            StreamEvent::Token(token) => token_frame(buf, token),
            StreamEvent::Done(metadata) => serde_json::to_writer(
                &mut *buf,
                &DoneFrame {
                    token: "",
                    done: true,
                    metadata,
                },
            ),
            StreamEvent::Error(error) => serde_json::to_writer(
                &mut *buf,
                &ErrorFrame {
                    done: true,
                    error,
                    metadata: ev.partial.as_deref(),
                },
            ),
        },
        (Piece::Event(_), None) => Ok(()),
    };
    if written.is_err() {
        buf.truncate(data_start);
        buf.extend_from_slice(UNENCODABLE);
    }
    buf.extend_from_slice(b"\n\n");
}

/// `{"token":"…","done":false}` from a template around the escaped text: the frame of
/// nearly every event, so no struct serialiser for it.
fn token_frame(buf: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    buf.extend_from_slice(br#"{"token":"#);
    serde_json::to_writer(&mut *buf, text)?;
    buf.extend_from_slice(br#","done":false}"#);
    Ok(())
}

/// One event as a whole frame (the non-merging path and tests).
pub fn encode(answer_id: &str, ev: &AnswerEvent) -> Bytes {
    let mut buf = Vec::with_capacity(96);
    encode_into(&mut buf, answer_id, &Piece::Event(ev));
    Bytes::from(buf)
}

/// Splits a `Last-Event-ID` (`<answerId>:<seq>`) into the answer and the cursor.
pub fn parse_event_id(raw: &str) -> Option<(&str, u64)> {
    let (answer, seq) = raw.trim().rsplit_once(':')?;
    let seq = seq.parse().ok()?;
    (!answer.is_empty() && answer.len() <= 64).then_some((answer, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ev(seq: u64, event: StreamEvent) -> String {
        String::from_utf8(
            encode(
                "a1",
                &AnswerEvent {
                    seq,
                    event,
                    partial: None,
                },
            )
            .to_vec(),
        )
        .expect("utf-8")
    }

    #[test]
    fn a_token_frame_has_an_id_and_the_seeds_shape() {
        assert_eq!(
            ev(2, StreamEvent::Token("Hello".into())),
            "id: a1:2\ndata: {\"token\":\"Hello\",\"done\":false}\n\n"
        );
    }

    #[test]
    fn newlines_in_a_token_stay_inside_one_data_line() {
        let frame = ev(3, StreamEvent::Token("a\nb\r\n".into()));
        assert_eq!(
            frame,
            "id: a1:3\ndata: {\"token\":\"a\\nb\\r\\n\",\"done\":false}\n\n"
        );
        assert_eq!(frame.matches('\n').count(), 3);
    }

    #[test]
    fn the_done_frame_carries_metadata() {
        let meta = DoneMetadata {
            answer_id: "a1".into(),
            provider: "offline".into(),
            model: "m".into(),
            ttft_ms: Some(4),
            elapsed_ms: 9,
            tokens: 2,
            input_tokens: 0,
            input_tokens_estimated: false,
            finish_reason: "stop".into(),
            sources: Arc::from(Vec::new()),
            conversation_id: None,
        };
        let frame = ev(5, StreamEvent::Done(Box::new(meta)));
        assert!(frame.starts_with("id: a1:5\ndata: {\"token\":\"\",\"done\":true,\"metadata\":{"));
        assert!(frame.contains("\"provider\":\"offline\""));
        assert!(frame.contains("\"ttft_ms\":4"));
        assert!(frame.ends_with("}}\n\n"));
    }

    #[test]
    fn an_error_frame_is_done_with_an_error_object() {
        let frame = ev(
            1,
            StreamEvent::Error(ErrorBody {
                code: "upstream_timeout".into(),
                message: "slow".into(),
            }),
        );
        assert_eq!(
            frame,
            "id: a1:1\ndata: {\"done\":true,\"error\":{\"code\":\"upstream_timeout\",\"message\":\"slow\"}}\n\n"
        );
    }

    #[test]
    fn a_provider_error_keeps_what_was_produced_in_its_metadata() {
        let meta = DoneMetadata {
            answer_id: "a1".into(),
            provider: "openai".into(),
            model: "m".into(),
            ttft_ms: Some(4),
            elapsed_ms: 9,
            tokens: 3,
            input_tokens: 0,
            input_tokens_estimated: false,
            finish_reason: "error".into(),
            sources: Arc::from(Vec::new()),
            conversation_id: Some("conv-1".into()),
        };
        let frame = encode(
            "a1",
            &AnswerEvent {
                seq: 6,
                event: StreamEvent::Error(ErrorBody {
                    code: "upstream_overloaded".into(),
                    message: "m".into(),
                }),
                partial: Some(Box::new(meta)),
            },
        );
        let frame = String::from_utf8(frame.to_vec()).unwrap();
        assert!(frame.starts_with(
            "id: a1:6\ndata: {\"done\":true,\"error\":{\"code\":\"upstream_overloaded\",\"message\":\"m\"},\"metadata\":{"
        ));
        assert!(frame.contains("\"tokens\":3"));
        assert!(frame.contains("\"finish_reason\":\"error\""));
    }

    #[test]
    fn the_conversation_is_a_named_event_and_done_metadata_names_it_only_when_set() {
        let frame = ev(1, StreamEvent::Conversation("c-42".into()));
        assert_eq!(
            frame,
            "id: a1:1\nevent: conversation\ndata: {\"conversationId\":\"c-42\"}\n\n"
        );
        let meta = DoneMetadata {
            answer_id: "a1".into(),
            provider: "offline".into(),
            model: "m".into(),
            ttft_ms: None,
            elapsed_ms: 1,
            tokens: 0,
            input_tokens: 0,
            input_tokens_estimated: false,
            finish_reason: "stop".into(),
            sources: Arc::from(Vec::new()),
            conversation_id: None,
        };
        let with = DoneMetadata {
            conversation_id: Some("c-42".into()),
            ..meta.clone()
        };
        assert!(!ev(2, StreamEvent::Done(Box::new(meta))).contains("conversation_id"));
        assert!(ev(2, StreamEvent::Done(Box::new(with))).contains("\"conversation_id\":\"c-42\""));
    }

    #[test]
    fn merged_tokens_are_one_frame_with_the_last_id() {
        let mut buf = Vec::new();
        let piece = Piece::Tokens {
            text: "Hel\nlo",
            last_seq: 7,
        };
        encode_into(&mut buf, "a1", &piece);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "id: a1:7\ndata: {\"token\":\"Hel\\nlo\",\"done\":false}\n\n"
        );
    }

    #[test]
    fn an_event_id_names_the_answer_and_the_cursor() {
        assert_eq!(parse_event_id("ab-12:7"), Some(("ab-12", 7)));
        assert_eq!(parse_event_id(" x:0 "), Some(("x", 0)));
        assert_eq!(parse_event_id("7"), None);
        assert_eq!(parse_event_id(":7"), None);
        assert_eq!(parse_event_id("x:-1"), None);
    }

    #[test]
    fn sources_are_a_named_event() {
        let frame = ev(1, StreamEvent::Sources(Arc::from(Vec::new())));
        assert_eq!(
            frame,
            "id: a1:1\nevent: sources\ndata: {\"sources\":[]}\n\n"
        );
    }
}
