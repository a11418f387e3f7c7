//! The ASP.NET Core SignalR JSON hub protocol (version 1), as `@microsoft/signalr` speaks it.
//!
//! Records are JSON texts ended by the record separator 0x1E. One WebSocket message may hold
//! several records and one record may span several messages, so input goes through a
//! [`RecordBuffer`]; output always ends each record with 0x1E (the JS client refuses a
//! message that does not).
//! Spec: dotnet/aspnetcore `src/SignalR/docs/specs/HubProtocol.md`.

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

/// Checks `{"protocol":"json","version":1}`.
pub fn parse_handshake(record: &str) -> Result<(), HandshakeError> {
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
    if version != 1 {
        return Err(HandshakeError::UnsupportedVersion(version));
    }
    Ok(())
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
    /// Types this hub has no use for (completions, stream items, acks): tolerated, ignored.
    Other(i64),
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
        assert_eq!(
            parse_handshake(r#"{"protocol":"json","version":1}"#),
            Ok(())
        );
        assert_eq!(
            parse_handshake(r#"{"protocol":"messagepack","version":1}"#),
            Err(HandshakeError::UnsupportedProtocol("messagepack".into()))
        );
        assert_eq!(
            parse_handshake(r#"{"protocol":"json","version":2}"#),
            Err(HandshakeError::UnsupportedVersion(2))
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
            parse_message(r#"{"type":8,"sequenceId":1}"#),
            Ok(HubMessage::Other(8))
        );
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
