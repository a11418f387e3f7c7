//! The ASP.NET Core SignalR JSON hub protocol (versions 1 and 2), as `@microsoft/signalr`
//! speaks it.
//!
//! Records are JSON texts ended by the record separator 0x1E. One WebSocket message may hold
//! several records and one record may span several messages, so input goes through a
//! [`RecordBuffer`]; output always ends each record with 0x1E (the JS client refuses a
//! message that does not).
//!
//! Version 2 only adds stateful reconnect: `Ack` (type 8) and `Sequence` (type 9), and the
//! rule that hub invocation messages (types 1 to 5) are numbered from 1 in each direction.
//! Spec: dotnet/aspnetcore `src/SignalR/docs/specs/HubProtocol.md`, "Stateful Reconnect".

use serde::Serialize;
use serde_json::Value;

use crate::answer::DoneMetadata;

pub const RS: char = '\u{1e}';

/// The handshake reply on success: `{}` + RS, byte for byte what ASP.NET sends.
pub const HANDSHAKE_OK: &str = "{}\u{1e}";
pub const PING: &str = "{\"type\":6}\u{1e}";

/// Accumulates text until whole records are available.
#[derive(Debug, Default)]
pub struct RecordBuffer {
    partial: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a message is longer than {limit} bytes without a record separator")]
pub struct RecordTooLong {
    pub limit: usize,
}

impl RecordBuffer {
    /// Appends a WebSocket text message and returns the records it completed.
    pub fn push(&mut self, text: &str, limit: usize) -> Result<Vec<String>, RecordTooLong> {
        let mut records = Vec::new();
        let mut rest = text;
        while let Some(pos) = rest.find(RS) {
            let piece = &rest[..pos];
            let record = if self.partial.is_empty() {
                piece.to_owned()
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.push_str(piece);
                whole
            };
            if record.len() > limit {
                return Err(RecordTooLong { limit });
            }
            records.push(record);
            rest = &rest[pos + RS.len_utf8()..];
        }
        self.partial.push_str(rest);
        if self.partial.len() > limit {
            return Err(RecordTooLong { limit });
        }
        Ok(records)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("Requested protocol '{0}' is not available.")]
    UnsupportedProtocol(String),
    #[error("Requested protocol version '{0}' is not supported.")]
    UnsupportedVersion(i64),
    #[error("Handshake request is invalid: {0}")]
    Malformed(String),
}

/// The newest protocol version this hub speaks: 2 (stateful reconnect).
pub const MAX_VERSION: i64 = 2;

/// Checks `{"protocol":"json","version":1}` (or 2) and returns the version. As in ASP.NET
/// Core, version 2 is accepted from any client; stateful reconnect is used only when
/// negotiate also agreed to it.
pub fn parse_handshake(record: &str) -> Result<i64, HandshakeError> {
    let value: Value = serde_json::from_str(record)
        .map_err(|e| HandshakeError::Malformed(format!("not JSON ({e})")))?;
    let protocol = value
        .get("protocol")
        .and_then(Value::as_str)
        .ok_or_else(|| HandshakeError::Malformed("missing \"protocol\"".into()))?;
    let version = value
        .get("version")
        .and_then(Value::as_i64)
        .ok_or_else(|| HandshakeError::Malformed("missing \"version\"".into()))?;
    if protocol != "json" {
        return Err(HandshakeError::UnsupportedProtocol(protocol.to_owned()));
    }
    if !(1..=MAX_VERSION).contains(&version) {
        return Err(HandshakeError::UnsupportedVersion(version));
    }
    Ok(version)
}

/// Whether the first text of a WebSocket looks like a SignalR handshake (and not a plain
/// protocol frame): it carries the record separator or names a `protocol` (possibly in a
/// handshake split over several frames).
pub fn looks_like_handshake(text: &str) -> bool {
    if text.contains(RS) || text.trim_start().starts_with("{\"protocol\"") {
        return true;
    }
    matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(map)) if map.contains_key("protocol"))
}

pub fn handshake_error(error: &HandshakeError) -> String {
    record(&serde_json::json!({ "error": error.to_string() }))
}

/// A message from the client, after the handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1; without an id the caller expects no completion.
    Invocation {
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
    },
    /// Type 4: the answer goes back as stream items.
    StreamInvocation {
        invocation_id: String,
        target: String,
        arguments: Vec<Value>,
    },
    /// Type 5.
    CancelInvocation { invocation_id: String },
    /// Type 6.
    Ping,
    /// Type 7.
    Close,
    /// Type 8: the peer has processed our hub messages up to this sequence id.
    Ack { sequence_id: u64 },
    /// Type 9: the sequence id of the peer's next hub message (after a reconnect).
    Sequence { sequence_id: u64 },
    /// Types this hub has no use for (completions, stream items, unknown types): tolerated,
    /// ignored.
    Other(i64),
}

impl HubMessage {
    /// Whether stateful reconnect numbers it: the hub invocation messages, types 1 to 5
    /// (a completion or stream item this hub ignores still counts).
    pub fn is_trackable(&self) -> bool {
        match self {
            HubMessage::Invocation { .. }
            | HubMessage::StreamInvocation { .. }
            | HubMessage::CancelInvocation { .. } => true,
            HubMessage::Other(kind) => matches!(kind, 2 | 3),
            HubMessage::Ping
            | HubMessage::Close
            | HubMessage::Ack { .. }
            | HubMessage::Sequence { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub message: {0}")]
pub struct MessageError(pub String);

fn field_str(
    map: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, MessageError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(MessageError(format!("\"{name}\" must be a string"))),
    }
}

fn sequence_id(map: &serde_json::Map<String, Value>) -> Result<u64, MessageError> {
    map.get("sequenceId")
        .and_then(Value::as_u64)
        .ok_or_else(|| MessageError("\"sequenceId\" must be a whole number".into()))
}

pub fn parse_message(record: &str) -> Result<HubMessage, MessageError> {
    let value: Value =
        serde_json::from_str(record).map_err(|e| MessageError(format!("not JSON ({e})")))?;
    let Value::Object(mut map) = value else {
        return Err(MessageError("a message must be a JSON object".into()));
    };
    let kind = map
        .get("type")
        .and_then(Value::as_i64)
        .ok_or_else(|| MessageError("missing numeric \"type\"".into()))?;
    let invocation_id = field_str(&map, "invocationId")?;
    let need_id =
        |id: Option<String>| id.ok_or_else(|| MessageError("missing \"invocationId\"".into()));
    match kind {
        1 | 4 => {
            let target = field_str(&map, "target")?
                .ok_or_else(|| MessageError("missing \"target\"".into()))?;
            let arguments = match map.remove("arguments") {
                Some(Value::Array(args)) => args,
                None => Vec::new(),
                Some(_) => return Err(MessageError("\"arguments\" must be an array".into())),
            };
            if kind == 1 {
                Ok(HubMessage::Invocation {
                    invocation_id,
                    target,
                    arguments,
                })
            } else {
                Ok(HubMessage::StreamInvocation {
                    invocation_id: need_id(invocation_id)?,
                    target,
                    arguments,
                })
            }
        }
        5 => Ok(HubMessage::CancelInvocation {
            invocation_id: need_id(invocation_id)?,
        }),
        6 => Ok(HubMessage::Ping),
        7 => Ok(HubMessage::Close),
        8 => Ok(HubMessage::Ack {
            sequence_id: sequence_id(&map)?,
        }),
        9 => Ok(HubMessage::Sequence {
            sequence_id: sequence_id(&map)?,
        }),
        other => Ok(HubMessage::Other(other)),
    }
}

fn record<T: Serialize>(value: &T) -> String {
    let mut out = serde_json::to_string(value).unwrap_or_else(|_| "{\"type\":6}".to_owned());
    out.push(RS);
    out
}

#[derive(Serialize)]
struct Invocation<'a, A: Serialize> {
    #[serde(rename = "type")]
    kind: u8,
    target: &'a str,
    arguments: A,
}

/// A server-to-client call without an id: the client replies nothing.
pub fn invocation<A: Serialize>(target: &str, arguments: A) -> String {
    record(&Invocation {
        kind: 1,
        target,
        arguments,
    })
}

pub fn receive_token(token: &str) -> String {
    invocation("ReceiveToken", [token])
}

pub fn stream_complete(metadata: &DoneMetadata) -> String {
    invocation("StreamComplete", [metadata])
}

pub fn error(message: &str) -> String {
    invocation("Error", [message])
}

/// `AnswerStarted(answerId, invocationId)`: the id a client resumes an answer by, before
/// the answer's first token. Only for clients that asked for it (`EnableAnswerStarted`):
/// the JS client warns about pushed methods it has no handler for.
pub fn answer_started(answer_id: &str, invocation_id: Option<&str>) -> String {
    invocation("AnswerStarted", (answer_id, invocation_id))
}

#[derive(Serialize)]
struct SequenceNumber {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(rename = "sequenceId")]
    sequence_id: u64,
}

/// `Ack`: every hub message up to `sequence_id` has been processed.
pub fn ack(sequence_id: u64) -> String {
    record(&SequenceNumber {
        kind: 8,
        sequence_id,
    })
}

/// `Sequence`: the first message after a reconnect; the id of the next hub message sent.
pub fn sequence(sequence_id: u64) -> String {
    record(&SequenceNumber {
        kind: 9,
        sequence_id,
    })
}

/// How many records a text of whole records holds. JSON escapes control characters inside
/// strings, so a raw 0x1E only ever ends a record.
pub fn record_count(text: &str) -> u64 {
    memchr::memchr_iter(RS as u8, text.as_bytes()).count() as u64
}

/// What is left of `text` once `skip` UTF-16 code units (what JavaScript's and .NET's
/// `string.length` count) are dropped from its front; `skip` goes down by what was dropped.
/// A character is dropped whole, so a count that ends inside a surrogate pair drops it.
pub fn skip_utf16<'a>(text: &'a str, skip: &mut u64) -> &'a str {
    if *skip == 0 {
        return text;
    }
    for (at, c) in text.char_indices() {
        if *skip == 0 {
            return &text[at..];
        }
        *skip = skip.saturating_sub(c.len_utf16() as u64);
    }
    ""
}

#[derive(Serialize)]
struct StreamItem<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(rename = "invocationId")]
    invocation_id: &'a str,
    item: &'a str,
}

pub fn stream_item(invocation_id: &str, item: &str) -> String {
    record(&StreamItem {
        kind: 2,
        invocation_id,
        item,
    })
}

#[derive(Serialize)]
struct Completion<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(rename = "invocationId")]
    invocation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The end of an invocation. `result` is `Some(null)` for a void method and `None` for a
/// stream (streams end with neither field).
pub fn completion(invocation_id: &str, result: Option<&Value>, error: Option<&str>) -> String {
    record(&Completion {
        kind: 3,
        invocation_id,
        result: if error.is_some() { None } else { result },
        error,
    })
}

#[derive(Serialize)]
struct Close<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(rename = "allowReconnect", skip_serializing_if = "std::ops::Not::not")]
    allow_reconnect: bool,
}

pub fn close(error: Option<&str>, allow_reconnect: bool) -> String {
    record(&Close {
        kind: 7,
        error,
        allow_reconnect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_split_across_messages_and_batched_in_one_are_both_found() {
        let mut buf = RecordBuffer::default();
        assert_eq!(
            buf.push("{\"type\":6}\u{1e}{\"ty", 1024).unwrap(),
            ["{\"type\":6}"]
        );
        assert_eq!(buf.push("pe\":", 1024).unwrap(), Vec::<String>::new());
        assert_eq!(
            buf.push("7}\u{1e}{\"type\":6}\u{1e}", 1024).unwrap(),
            ["{\"type\":7}", "{\"type\":6}"]
        );
        assert_eq!(buf.push("", 1024).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_record_over_the_limit_is_refused_instead_of_buffered() {
        let mut buf = RecordBuffer::default();
        assert!(buf.push(&"x".repeat(20), 10).is_err());
        let mut buf = RecordBuffer::default();
        assert!(buf.push(&format!("{}\u{1e}", "x".repeat(20)), 10).is_err());
    }

    #[test]
    fn the_json_handshake_is_accepted_and_others_are_refused_with_reasons() {
        assert_eq!(parse_handshake(r#"{"protocol":"json","version":1}"#), Ok(1));
        assert_eq!(parse_handshake(r#"{"protocol":"json","version":2}"#), Ok(2));
        assert_eq!(
            parse_handshake(r#"{"protocol":"messagepack","version":1}"#),
            Err(HandshakeError::UnsupportedProtocol("messagepack".into()))
        );
        assert_eq!(
            parse_handshake(r#"{"protocol":"json","version":3}"#),
            Err(HandshakeError::UnsupportedVersion(3))
        );
        assert_eq!(
            parse_handshake(r#"{"protocol":"json","version":0}"#),
            Err(HandshakeError::UnsupportedVersion(0))
        );
        assert!(matches!(
            parse_handshake("hello"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse_handshake("{}"),
            Err(HandshakeError::Malformed(_))
        ));
        assert_eq!(
            handshake_error(&HandshakeError::UnsupportedProtocol("messagepack".into())),
            "{\"error\":\"Requested protocol 'messagepack' is not available.\"}\u{1e}"
        );
    }

    #[test]
    fn a_handshake_is_told_apart_from_a_plain_frame() {
        assert!(looks_like_handshake(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}"
        ));
        assert!(looks_like_handshake(
            "{\"protocol\":\"json\",\"version\":1}"
        ));
        assert!(looks_like_handshake("{\"protocol\":\"json\","));
        assert!(looks_like_handshake(
            "{\"version\":1,\"protocol\":\"json\"}"
        ));
        assert!(!looks_like_handshake("{\"message\":\"hi\",\"id\":\"c1\"}"));
        assert!(!looks_like_handshake("not json"));
    }

    #[test]
    fn every_client_message_type_parses() {
        assert_eq!(
            parse_message(
                r#"{"target":"SendMessage","arguments":["Hello",5],"invocationId":"0","type":1}"#
            ),
            Ok(HubMessage::Invocation {
                invocation_id: Some("0".into()),
                target: "SendMessage".into(),
                arguments: vec![json!("Hello"), json!(5)],
            })
        );
        assert_eq!(
            parse_message(
                r#"{"type":1,"target":"SendMessage","arguments":["Hi"],"headers":{"a":"b"}}"#
            ),
            Ok(HubMessage::Invocation {
                invocation_id: None,
                target: "SendMessage".into(),
                arguments: vec![json!("Hi")],
            })
        );
        assert_eq!(
            parse_message(
                r#"{"target":"AskStream","arguments":["Hello",5],"invocationId":"1","type":4}"#
            ),
            Ok(HubMessage::StreamInvocation {
                invocation_id: "1".into(),
                target: "AskStream".into(),
                arguments: vec![json!("Hello"), json!(5)],
            })
        );
        assert_eq!(
            parse_message(r#"{"invocationId":"1","type":5}"#),
            Ok(HubMessage::CancelInvocation {
                invocation_id: "1".into()
            })
        );
        assert_eq!(parse_message(r#"{"type":6}"#), Ok(HubMessage::Ping));
        assert_eq!(parse_message(r#"{"type":7}"#), Ok(HubMessage::Close));
        assert_eq!(
            parse_message(r#"{"type":3,"invocationId":"9","result":1}"#),
            Ok(HubMessage::Other(3))
        );
        assert_eq!(
            parse_message(r#"{"type":8,"sequenceId":1394}"#),
            Ok(HubMessage::Ack { sequence_id: 1394 })
        );
        assert_eq!(
            parse_message(r#"{"type":9,"sequenceId":1}"#),
            Ok(HubMessage::Sequence { sequence_id: 1 })
        );
        assert_eq!(parse_message(r#"{"type":42}"#), Ok(HubMessage::Other(42)));
    }

    #[test]
    fn only_hub_invocation_messages_are_numbered_for_stateful_reconnect() {
        let trackable = [
            r#"{"type":1,"target":"SendMessage","arguments":[]}"#,
            r#"{"type":2,"invocationId":"1","item":"x"}"#,
            r#"{"type":3,"invocationId":"1"}"#,
            r#"{"type":4,"invocationId":"1","target":"AskStream","arguments":[]}"#,
            r#"{"type":5,"invocationId":"1"}"#,
        ];
        for record in trackable {
            assert!(parse_message(record).unwrap().is_trackable(), "{record}");
        }
        let not = [
            r#"{"type":6}"#,
            r#"{"type":7}"#,
            r#"{"type":8,"sequenceId":3}"#,
            r#"{"type":9,"sequenceId":3}"#,
            r#"{"type":42}"#,
        ];
        for record in not {
            assert!(!parse_message(record).unwrap().is_trackable(), "{record}");
        }
    }

    #[test]
    fn ack_and_sequence_need_a_whole_sequence_id() {
        for bad in [
            r#"{"type":8}"#,
            r#"{"type":8,"sequenceId":"3"}"#,
            r#"{"type":9,"sequenceId":-1}"#,
            r#"{"type":9,"sequenceId":1.5}"#,
        ] {
            assert!(parse_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ack_sequence_and_answer_started_are_encoded_as_the_spec_shows() {
        assert_eq!(ack(1394), "{\"type\":8,\"sequenceId\":1394}\u{1e}");
        assert_eq!(sequence(1), "{\"type\":9,\"sequenceId\":1}\u{1e}");
        assert_eq!(
            answer_started("a-1", Some("3")),
            "{\"type\":1,\"target\":\"AnswerStarted\",\"arguments\":[\"a-1\",\"3\"]}\u{1e}"
        );
        assert_eq!(
            answer_started("a-1", None),
            "{\"type\":1,\"target\":\"AnswerStarted\",\"arguments\":[\"a-1\",null]}\u{1e}"
        );
    }

    #[test]
    fn records_are_counted_by_their_separators_not_by_escaped_ones_inside_strings() {
        let batch = format!(
            "{}{}",
            receive_token("a\u{1e}b"),
            completion("0", None, None)
        );
        assert_eq!(record_count(&batch), 2);
        assert_eq!(record_count(""), 0);
    }

    #[test]
    fn skipping_counts_utf16_code_units_as_javascript_string_length_does() {
        let mut skip = 3;
        assert_eq!(skip_utf16("Hello", &mut skip), "lo");
        assert_eq!(skip, 0);
        let mut skip = 7;
        assert_eq!(skip_utf16("Hello", &mut skip), "");
        assert_eq!(skip, 2, "what is left to skip in the next token");
        // "é" is one unit, "😀" two (a surrogate pair), both more than one UTF-8 byte.
        let mut skip = 3;
        assert_eq!(skip_utf16("é😀x", &mut skip), "x");
        let mut skip = 2;
        assert_eq!(
            skip_utf16("é😀x", &mut skip),
            "x",
            "a count ending inside a pair drops the pair"
        );
        let mut skip = 0;
        assert_eq!(skip_utf16("abc", &mut skip), "abc");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            "nope",
            "[]",
            r#"{"target":"x"}"#,
            r#"{"type":"1"}"#,
            r#"{"type":1,"arguments":[]}"#,
            r#"{"type":1,"target":"x","arguments":{}}"#,
            r#"{"type":4,"target":"x"}"#,
            r#"{"type":5}"#,
            r#"{"type":1,"target":5}"#,
        ] {
            assert!(parse_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_are_encoded_as_asp_net_does() {
        assert_eq!(
            receive_token("Hel"),
            "{\"type\":1,\"target\":\"ReceiveToken\",\"arguments\":[\"Hel\"]}\u{1e}"
        );
        assert_eq!(
            error("boom"),
            "{\"type\":1,\"target\":\"Error\",\"arguments\":[\"boom\"]}\u{1e}"
        );
        assert_eq!(
            completion("0", Some(&Value::Null), None),
            "{\"type\":3,\"invocationId\":\"0\",\"result\":null}\u{1e}"
        );
        assert_eq!(
            completion("1", None, None),
            "{\"type\":3,\"invocationId\":\"1\"}\u{1e}"
        );
        assert_eq!(
            completion("2", Some(&Value::Null), Some("boom")),
            "{\"type\":3,\"invocationId\":\"2\",\"error\":\"boom\"}\u{1e}"
        );
        assert_eq!(
            stream_item("1", "lo!"),
            "{\"type\":2,\"invocationId\":\"1\",\"item\":\"lo!\"}\u{1e}"
        );
        assert_eq!(PING, "{\"type\":6}\u{1e}");
        assert_eq!(
            close(Some("bye"), true),
            "{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\u{1e}"
        );
        assert_eq!(close(None, false), "{\"type\":7}\u{1e}");
    }
}
