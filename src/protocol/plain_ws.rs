//! The plain WebSocket protocol: JSON text frames, several answers per socket told apart
//! by `id`.
//!
//! Client: `{"message":"Hello","topK":5,"id":"c1","conversationId":"…"}` (every question is
//! a conversation turn; without `conversationId` a new conversation starts),
//! `{"type":"cancel","id":"c1"}`, `{"type":"ping"}`,
//! `{"type":"resume","answerId":"…","after":N,"id":"c1"}`. Server: `{"conversationId":"…","id":"c1"}`
//! first, then `{"sources":[…],"id":"c1"}`, `{"token":"Hi","id":"c1"}` …
//! `{"done":true,"id":"c1","metadata":{…}}` or `{"error":{…},"id":"c1"}`, and `{"type":"pong"}`.
//! Every frame of an answer also carries `answerId` and `seq` (the last event it holds):
//! the cursor a client sends back in `resume` on a new socket. Tokens that waited for the
//! socket are merged into one frame.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Piece;
use crate::answer::{DoneMetadata, Source, StreamEvent};
use crate::error::ErrorBody;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Ask {
        id: Option<String>,
        message: String,
        top_k: Option<i64>,
        /// Optional per-request provider and model, checked against the allow-list.
        provider: Option<String>,
        model: Option<String>,
        /// The conversation to continue; `None` starts a new one.
        conversation_id: Option<String>,
    },
    Cancel {
        id: String,
    },
    Ping,
    /// Continue an answer (of this key) after event `after`, on this socket.
    Resume {
        id: Option<String>,
        answer_id: String,
        after: u64,
    },
}

/// A frame that could not be understood; `id` is echoed when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub id: Option<String>,
    pub code: &'static str,
    pub message: String,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<Value>,
    message: Option<Value>,
    #[serde(rename = "topK")]
    top_k: Option<Value>,
    id: Option<Value>,
    provider: Option<Value>,
    model: Option<Value>,
    #[serde(rename = "conversationId")]
    conversation_id: Option<Value>,
    #[serde(rename = "answerId")]
    answer_id: Option<Value>,
    after: Option<Value>,
}

fn read_id(id: Option<Value>) -> Result<Option<String>, DecodeError> {
    match id {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(DecodeError {
            id: None,
            code: "invalid_id",
            message: "id must be a non-empty string of at most 128 bytes, or a number".into(),
        }),
    }
}

pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
    let raw: RawFrame = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => {
            serde_json::from_value(Value::Object(map)).map_err(|e| DecodeError {
                id: None,
                code: "invalid_frame",
                message: format!("the frame could not be read: {e}"),
            })?
        }
        Ok(_) => {
            return Err(DecodeError {
                id: None,
                code: "invalid_frame",
                message: "a frame must be a JSON object".into(),
            })
        }
        Err(e) => {
            return Err(DecodeError {
                id: None,
                code: "invalid_json",
                message: format!("the frame is not valid JSON: {e}"),
            })
        }
    };
    let id = read_id(raw.id)?;
    let fail = |code, message: &str| DecodeError {
        id: id.clone(),
        code,
        message: message.to_owned(),
    };
    let kind = match &raw.kind {
        None | Some(Value::Null) => "ask",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(fail("invalid_frame", "type must be a string")),
    };
    match kind {
        "ask" | "message" => {
            let message = match raw.message {
                Some(Value::String(s)) => s,
                Some(_) => return Err(fail("invalid_frame", "message must be a string")),
                None => {
                    return Err(fail(
                        "invalid_frame",
                        "a question frame needs a \"message\" string",
                    ))
                }
            };
            let top_k = match raw.top_k {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(k) => Some(k),
                    None => return Err(fail("invalid_top_k", "topK must be a whole number")),
                },
                Some(_) => return Err(fail("invalid_top_k", "topK must be a whole number")),
            };
            let text_field = |value: Option<Value>, name: &str| match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(fail("invalid_frame", &format!("{name} must be a string"))),
            };
            let provider = text_field(raw.provider, "provider")?;
            let model = text_field(raw.model, "model")?;
            let conversation_id = text_field(raw.conversation_id, "conversationId")?;
            Ok(ClientFrame::Ask {
                id,
                message,
                top_k,
                provider,
                model,
                conversation_id,
            })
        }
        "cancel" => match id {
            Some(id) => Ok(ClientFrame::Cancel { id }),
            None => Err(fail(
                "invalid_frame",
                "a cancel frame needs the \"id\" to cancel",
            )),
        },
        "ping" => Ok(ClientFrame::Ping),
        "resume" => {
            let answer_id = match raw.answer_id {
                Some(Value::String(a)) if !a.is_empty() && a.len() <= 64 => a,
                _ => {
                    return Err(fail(
                        "invalid_frame",
                        "a resume frame needs the \"answerId\" to resume",
                    ))
                }
            };
            let after = match raw.after {
                None | Some(Value::Null) => 0,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(after) => after,
                    None => return Err(fail("invalid_cursor", "after must be a whole number ≥ 0")),
                },
                Some(_) => return Err(fail("invalid_cursor", "after must be a whole number ≥ 0")),
            };
            Ok(ClientFrame::Resume {
                id,
                answer_id,
                after,
            })
        }
        other => Err(DecodeError {
            id: id.clone(),
            code: "unknown_type",
            message: format!("unknown frame type `{other}`; known: ask, cancel, ping, resume"),
        }),
    }
}

#[derive(Serialize)]
struct Out<'a> {
    #[serde(rename = "conversationId", skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<&'a [Source]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorBody>,
    id: Option<&'a str>,
    #[serde(rename = "answerId", skip_serializing_if = "Option::is_none")]
    answer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a DoneMetadata>,
}

const EMPTY: Out<'static> = Out {
    conversation_id: None,
    sources: None,
    token: None,
    done: None,
    error: None,
    id: None,
    answer_id: None,
    seq: None,
    metadata: None,
};

fn to_text(out: &Out<'_>) -> String {
    serde_json::to_string(out).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal","message":"a frame could not be encoded"},"id":null}"#
            .to_owned()
    })
}

/// `{"token":…,"id":…,"answerId":…,"seq":N}`, byte for byte what [`Out`] serialises to,
/// from a template around the escaped strings: nearly every frame is one, and the struct
/// serialiser cost about 1,000 instructions more a frame (callgrind).
fn token_text(id: &str, answer_id: &str, text: &str, seq: u64) -> String {
    let mut out = Vec::with_capacity(text.len() + id.len() + answer_id.len() + 48);
    out.extend_from_slice(br#"{"token":"#);
    let written = serde_json::to_writer(&mut out, text)
        .and_then(|()| {
            out.extend_from_slice(br#","id":"#);
            serde_json::to_writer(&mut out, id)
        })
        .and_then(|()| {
            out.extend_from_slice(br#","answerId":"#);
            serde_json::to_writer(&mut out, answer_id)
        });
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.push(b'}');
    match written.ok().and_then(|()| String::from_utf8(out).ok()) {
        Some(text) => text,
        // Not reached: serde_json writes strings as UTF-8 and cannot fail on a Vec.
        None => to_text(&Out {
            token: Some(text),
            id: Some(id),
            answer_id: Some(answer_id),
            seq: Some(seq),
            ..EMPTY
        }),
    }
}

/// One frame of answer `answer_id` (merged tokens or one event), for the request `id`.
pub fn encode_piece(id: &str, answer_id: &str, piece: &Piece<'_>) -> String {
    let (seq, event) = match piece {
        Piece::Tokens { text, last_seq } => return token_text(id, answer_id, text, *last_seq),
        Piece::Event(ev) => (ev.seq, ev),
    };
    let partial = event.partial.as_deref();
    let event = &event.event;
    let base = Out {
        id: Some(id),
        answer_id: Some(answer_id),
        seq: Some(seq),
        ..EMPTY
    };
    to_text(&match event {
        StreamEvent::Conversation(conversation_id) => Out {
            conversation_id: Some(conversation_id),
            ..base
        },
        StreamEvent::Sources(sources) => Out {
            sources: Some(sources),
            ..base
        },
        StreamEvent::Token(token) => return token_text(id, answer_id, token, seq),
        StreamEvent::Done(metadata) => Out {
            done: Some(true),
            metadata: Some(metadata),
            ..base
        },
        // A provider that failed mid-answer: what it had produced (tokens, timing).
        StreamEvent::Error(error) => Out {
            error: Some(error),
            metadata: partial,
            ..base
        },
    })
}

pub fn encode_error(id: Option<&str>, error: &ErrorBody) -> String {
    to_text(&Out {
        error: Some(error),
        id,
        ..EMPTY
    })
}

pub const PONG: &str = r#"{"type":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_template_writes_what_the_struct_serialiser_writes() {
        for (id, answer, token, seq) in [
            ("c1", "a-1", "Hello", 1),
            (
                "7",
                "a\"b",
                "line\nbreak \u{1} \\ \"quoted\" é 😀",
                u64::MAX,
            ),
            ("", "", "", 0),
        ] {
            let by_serde = to_text(&Out {
                token: Some(token),
                id: Some(id),
                answer_id: Some(answer),
                seq: Some(seq),
                ..EMPTY
            });
            assert_eq!(token_text(id, answer, token, seq), by_serde);
        }
    }
    use crate::answer::AnswerEvent;

    #[test]
    fn a_question_frame_decodes_with_its_id_and_top_k() {
        assert_eq!(
            decode(r#"{"message":"Hello","topK":5,"id":"c1"}"#),
            Ok(ClientFrame::Ask {
                id: Some("c1".into()),
                message: "Hello".into(),
                top_k: Some(5),
                provider: None,
                model: None,
                conversation_id: None,
            })
        );
    }

    #[test]
    fn the_seeds_bare_message_frame_is_a_question_without_id() {
        assert_eq!(
            decode(r#"{"message":"Hello"}"#),
            Ok(ClientFrame::Ask {
                id: None,
                message: "Hello".into(),
                top_k: None,
                provider: None,
                model: None,
                conversation_id: None,
            })
        );
    }

    #[test]
    fn provider_and_model_are_optional_strings() {
        let frame = decode(r#"{"message":"x","provider":"openai","model":"gpt-4o"}"#).unwrap();
        assert!(
            matches!(frame, ClientFrame::Ask { provider: Some(ref p), model: Some(ref m), .. }
            if p == "openai" && m == "gpt-4o")
        );
        let e = decode(r#"{"message":"x","model":5,"id":"c"}"#).unwrap_err();
        assert_eq!((e.code, e.id.as_deref()), ("invalid_frame", Some("c")));
    }

    #[test]
    fn a_conversation_id_is_an_optional_string() {
        let frame = decode(r#"{"message":"x","conversationId":"conv-1","id":"c1"}"#).unwrap();
        assert!(
            matches!(frame, ClientFrame::Ask { conversation_id: Some(ref c), .. } if c == "conv-1")
        );
        let frame = decode(r#"{"message":"x","conversationId":null}"#).unwrap();
        assert!(matches!(
            frame,
            ClientFrame::Ask {
                conversation_id: None,
                ..
            }
        ));
        let e = decode(r#"{"message":"x","conversationId":7,"id":"c"}"#).unwrap_err();
        assert_eq!((e.code, e.id.as_deref()), ("invalid_frame", Some("c")));
    }

    #[test]
    fn numeric_ids_are_accepted_as_text() {
        let frame = decode(r#"{"message":"x","id":7}"#).unwrap();
        assert!(matches!(frame, ClientFrame::Ask { id: Some(ref i), .. } if i == "7"));
    }

    #[test]
    fn cancel_and_ping_decode() {
        assert_eq!(
            decode(r#"{"type":"cancel","id":"c1"}"#),
            Ok(ClientFrame::Cancel { id: "c1".into() })
        );
        assert_eq!(decode(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
    }

    #[test]
    fn bad_frames_get_codes_and_keep_their_id() {
        assert_eq!(decode("not json").unwrap_err().code, "invalid_json");
        assert_eq!(decode("[1,2]").unwrap_err().code, "invalid_frame");
        let e = decode(r#"{"type":"dance","id":"c9"}"#).unwrap_err();
        assert_eq!((e.code, e.id.as_deref()), ("unknown_type", Some("c9")));
        let e = decode(r#"{"message":"x","topK":"five","id":"c2"}"#).unwrap_err();
        assert_eq!((e.code, e.id.as_deref()), ("invalid_top_k", Some("c2")));
        assert_eq!(decode(r#"{"id":"c3"}"#).unwrap_err().code, "invalid_frame");
        assert_eq!(
            decode(r#"{"type":"cancel"}"#).unwrap_err().code,
            "invalid_frame"
        );
        assert_eq!(
            decode(r#"{"message":"x","id":{}}"#).unwrap_err().code,
            "invalid_id"
        );
    }

    #[test]
    fn a_resume_frame_names_the_answer_and_the_cursor() {
        assert_eq!(
            decode(r#"{"type":"resume","answerId":"a-1","after":7,"id":"c9"}"#),
            Ok(ClientFrame::Resume {
                id: Some("c9".into()),
                answer_id: "a-1".into(),
                after: 7,
            })
        );
        assert_eq!(
            decode(r#"{"type":"resume","answerId":"a-1"}"#),
            Ok(ClientFrame::Resume {
                id: None,
                answer_id: "a-1".into(),
                after: 0,
            })
        );
        assert_eq!(
            decode(r#"{"type":"resume"}"#).unwrap_err().code,
            "invalid_frame"
        );
        assert_eq!(
            decode(r#"{"type":"resume","answerId":"a","after":-1}"#)
                .unwrap_err()
                .code,
            "invalid_cursor"
        );
    }

    #[test]
    fn events_encode_to_the_pinned_shapes() {
        assert_eq!(
            encode_piece(
                "c1",
                "a1",
                &Piece::Event(&AnswerEvent {
                    seq: 1,
                    event: StreamEvent::Conversation("conv-1".into()),
                    partial: None
                })
            ),
            r#"{"conversationId":"conv-1","id":"c1","answerId":"a1","seq":1}"#
        );
        assert_eq!(
            encode_piece(
                "c1",
                "a1",
                &Piece::Event(&AnswerEvent {
                    seq: 1,
                    event: StreamEvent::Token("Hi".into()),
                    partial: None
                })
            ),
            r#"{"token":"Hi","id":"c1","answerId":"a1","seq":1}"#
        );
        let merged = Piece::Tokens {
            text: "Hi there",
            last_seq: 7,
        };
        assert_eq!(
            encode_piece("c1", "a1", &merged),
            r#"{"token":"Hi there","id":"c1","answerId":"a1","seq":7}"#
        );
        let err = ErrorBody {
            code: "too_many_streams".into(),
            message: "m".into(),
        };
        assert_eq!(
            encode_piece(
                "c1",
                "a1",
                &Piece::Event(&AnswerEvent {
                    seq: 1,
                    event: StreamEvent::Error(err.clone()),
                    partial: None
                })
            ),
            r#"{"error":{"code":"too_many_streams","message":"m"},"id":"c1","answerId":"a1","seq":1}"#
        );
        assert_eq!(
            encode_error(None, &err),
            r#"{"error":{"code":"too_many_streams","message":"m"},"id":null}"#
        );
    }
}
