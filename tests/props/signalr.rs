//! The SignalR JSON hub protocol (`protocol::signalr`): records split over and batched in
//! WebSocket messages, the handshake, client messages, and the server's records as the
//! official client reads them.

use proptest::collection::vec;
use proptest::prelude::*;
use ragstream::protocol::signalr::{
    self, parse_handshake, parse_message, HandshakeError, HubMessage, RecordBuffer, RS,
};
use serde_json::{json, Value};

use crate::gen::{cut_str, json_value, object_text, splits, text};

const LIMIT: usize = 64 * 1024;

/// Pushes each message into one buffer; all records completed, or the first error.
fn records(messages: &[&str], limit: usize) -> Result<Vec<String>, String> {
    let mut buf = RecordBuffer::default();
    let mut out = Vec::new();
    for m in messages {
        out.extend(buf.push(m, limit).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Text biased towards the protocol's own pieces.
fn record_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<char>().prop_map(String::from),
        Just(RS.to_string()),
        Just("{\"type\":".to_owned()),
        Just("{\"protocol\":\"json\",\"version\":1}".to_owned()),
        Just("\"invocationId\":".to_owned()),
        Just("\"arguments\":[".to_owned()),
        Just("}".to_owned()),
        Just("1".to_owned()),
        Just("4".to_owned()),
    ];
    vec(piece, 0..32).prop_map(|p| p.concat())
}

/// A client message (what `@microsoft/signalr` and other clients send) and what the
/// codec must make of it.
fn client_message() -> impl Strategy<Value = (Vec<(String, Value)>, HubMessage)> {
    let id = text(10);
    let args = vec(json_value(), 0..4);
    let headers = proptest::option::of(json_value());
    prop_oneof![
        (
            proptest::option::of(id.clone()),
            text(12),
            args.clone(),
            headers.clone()
        )
            .prop_map(|(invocation_id, target, arguments, headers)| {
                let mut e = vec![
                    ("type".to_owned(), json!(1)),
                    ("target".to_owned(), json!(target)),
                    ("arguments".to_owned(), Value::Array(arguments.clone())),
                ];
                if let Some(id) = &invocation_id {
                    e.push(("invocationId".to_owned(), json!(id)));
                }
                if let Some(h) = headers {
                    e.push(("headers".to_owned(), h));
                }
                (
                    e,
                    HubMessage::Invocation {
                        invocation_id,
                        target,
                        arguments,
                    },
                )
            }),
        (id.clone(), text(12), args, headers).prop_map(
            |(invocation_id, target, arguments, headers)| {
                let mut e = vec![
                    ("type".to_owned(), json!(4)),
                    ("target".to_owned(), json!(target)),
                    ("arguments".to_owned(), Value::Array(arguments.clone())),
                    ("invocationId".to_owned(), json!(invocation_id)),
                ];
                if let Some(h) = headers {
                    e.push(("headers".to_owned(), h));
                }
                (
                    e,
                    HubMessage::StreamInvocation {
                        invocation_id,
                        target,
                        arguments,
                    },
                )
            }
        ),
        id.clone().prop_map(|invocation_id| (
            vec![
                ("type".to_owned(), json!(5)),
                ("invocationId".to_owned(), json!(invocation_id)),
            ],
            HubMessage::CancelInvocation { invocation_id },
        )),
        Just((vec![("type".to_owned(), json!(6))], HubMessage::Ping)),
        proptest::option::of(text(10)).prop_map(|error| {
            let mut e = vec![("type".to_owned(), json!(7))];
            if let Some(error) = error {
                e.push(("error".to_owned(), json!(error)));
            }
            (e, HubMessage::Close)
        }),
        // Stateful reconnect's Ack and Sequence carry a sequence id.
        (prop_oneof![Just(8i64), Just(9)], any::<u64>()).prop_map(|(kind, sequence_id)| (
            vec![
                ("type".to_owned(), json!(kind)),
                ("sequenceId".to_owned(), json!(sequence_id)),
            ],
            if kind == 8 {
                HubMessage::Ack { sequence_id }
            } else {
                HubMessage::Sequence { sequence_id }
            },
        )),
        // Completions, stream items and unknown types: tolerated and ignored.
        (
            prop_oneof![Just(2i64), Just(3), 10i64..1000],
            id,
            json_value()
        )
            .prop_map(|(kind, invocation_id, item)| (
                vec![
                    ("type".to_owned(), json!(kind)),
                    ("invocationId".to_owned(), json!(invocation_id)),
                    ("item".to_owned(), item),
                ],
                HubMessage::Other(kind),
            )),
    ]
    .prop_flat_map(|(entries, want)| (Just(entries).prop_shuffle(), Just(want)))
}

/// A record as the client sends it: one JSON object, compact or spaced.
fn client_record() -> impl Strategy<Value = (String, HubMessage)> {
    (client_message(), any::<bool>())
        .prop_map(|((entries, want), spaced)| (object_text(&entries, spaced), want))
}

/// Cuts off the one record separator a server record ends with.
fn strip_rs(record: &str) -> Result<&str, TestCaseError> {
    let body = record
        .strip_suffix(RS)
        .ok_or_else(|| TestCaseError::fail(format!("{record:?} does not end with RS")))?;
    prop_assert!(!body.contains(RS), "RS inside a record: {record:?}");
    Ok(body)
}

fn parse(record: &str) -> Result<Value, TestCaseError> {
    serde_json::from_str(strip_rs(record)?).map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_the_buffer_or_the_parsers(
        text in prop_oneof![text(200), record_like_text()],
        at in splits(6),
        limit in 1usize..128,
    ) {
        let pieces = cut_str(&text, &at);
        let _ = records(&pieces, limit);
        if let Ok(all) = records(&pieces, LIMIT) {
            for r in all {
                let _ = parse_message(&r);
                let _ = parse_handshake(&r);
            }
        }
        let _ = parse_message(&text);
        let _ = parse_handshake(&text);
        let _ = signalr::looks_like_handshake(&text);
    }

    #[test]
    fn arbitrary_json_never_panics_the_parsers(value in json_value(), kind in -2i64..12) {
        let _ = parse_message(&value.to_string());
        let _ = parse_handshake(&value.to_string());
        if let Value::Object(mut map) = value {
            // Objects with a valid type reach the per-type checks.
            map.insert("type".into(), json!(kind));
            let v = Value::Object(map);
            let _ = parse_message(&v.to_string());
        }
    }

    #[test]
    fn records_come_out_whole_however_messages_cut_and_batch_them(
        recs in vec(text(40).prop_map(|t| t.replace(RS, "")), 0..8),
        tail in text(10).prop_map(|t| t.replace(RS, "")),
        at in splits(10),
    ) {
        let mut stream: String = recs.iter().map(|r| format!("{r}{RS}")).collect();
        stream.push_str(&tail);
        // The unterminated tail waits in the buffer for its separator.
        prop_assert_eq!(records(&[&stream], LIMIT), Ok(recs.clone()));
        prop_assert_eq!(records(&cut_str(&stream, &at), LIMIT), Ok(recs));
    }

    #[test]
    fn a_record_over_the_limit_is_an_error_however_it_arrives(
        len in 17usize..64,
        at in splits(6),
    ) {
        let stream = format!("{{\"type\":6}}{RS}{}{RS}", "x".repeat(len));
        prop_assert!(records(&cut_str(&stream, &at), 16).is_err());
    }

    #[test]
    fn client_messages_split_anywhere_parse_to_what_was_sent(
        sent in vec(client_record(), 1..6),
        at in splits(10),
    ) {
        let stream: String = sent.iter().map(|(r, _)| format!("{r}{RS}")).collect();
        let got = records(&cut_str(&stream, &at), LIMIT).expect("within the limit");
        prop_assert_eq!(got.len(), sent.len());
        for (record, (_, want)) in got.iter().zip(&sent) {
            prop_assert_eq!(&parse_message(record).expect("parses"), want);
        }
    }

    #[test]
    fn the_handshake_is_accepted_only_for_json_versions_1_and_2(
        protocol in prop_oneof![Just("json".to_owned()), Just("messagepack".to_owned()), text(8)],
        version in prop_oneof![Just(1i64), Just(2i64), any::<i64>()],
        extra in proptest::option::of(json_value()),
        spaced in any::<bool>(),
        at in splits(4),
    ) {
        let mut entries = vec![
            ("protocol".to_owned(), json!(protocol)),
            ("version".to_owned(), json!(version)),
        ];
        if let Some(extra) = extra {
            entries.push(("x".to_owned(), extra));
        }
        let record = object_text(&entries, spaced);
        let want = if protocol != "json" {
            Err(HandshakeError::UnsupportedProtocol(protocol.clone()))
        } else if !(1..=2).contains(&version) {
            Err(HandshakeError::UnsupportedVersion(version))
        } else {
            Ok(version)
        };
        prop_assert_eq!(parse_handshake(&record), want);
        let first = format!("{record}{RS}");
        prop_assert!(signalr::looks_like_handshake(&first));
        let got = records(&cut_str(&first, &at), LIMIT).expect("within the limit");
        prop_assert_eq!(got, vec![record]);
    }

    /// What the hub sends, read as the official client does: records split at RS, then
    /// JSON. A token with RS, quotes or newlines in it never breaks a record.
    #[test]
    fn server_records_read_back_with_their_fields(
        id in text(10),
        token in text(16),
        result in proptest::option::of(json_value()),
        error in proptest::option::of(text(16)),
        allow_reconnect in any::<bool>(),
        at in splits(10),
    ) {
        let sent = [
            signalr::receive_token(&token),
            signalr::stream_item(&id, &token),
            signalr::error(&token),
            signalr::completion(&id, result.as_ref(), error.as_deref()),
            signalr::close(error.as_deref(), allow_reconnect),
            signalr::PING.to_owned(),
            signalr::HANDSHAKE_OK.to_owned(),
        ];
        let v = parse(&sent[0])?;
        prop_assert_eq!(&v, &json!({"type": 1, "target": "ReceiveToken", "arguments": [token]}));
        let v = parse(&sent[1])?;
        prop_assert_eq!(&v, &json!({"type": 2, "invocationId": id, "item": token}));
        let v = parse(&sent[2])?;
        prop_assert_eq!(&v, &json!({"type": 1, "target": "Error", "arguments": [token]}));
        let v = parse(&sent[3])?;
        prop_assert_eq!(&v["type"], &json!(3));
        prop_assert_eq!(&v["invocationId"], &json!(id));
        match &error {
            // An error wins: a completion carries a result or an error, never both.
            Some(e) => {
                prop_assert_eq!(&v["error"], &json!(e));
                prop_assert!(v.get("result").is_none());
            }
            None => {
                prop_assert!(v.get("error").is_none());
                prop_assert_eq!(v.get("result"), result.as_ref());
            }
        }
        let v = parse(&sent[4])?;
        prop_assert_eq!(&v["type"], &json!(7));
        prop_assert_eq!(v.get("error").and_then(Value::as_str), error.as_deref());
        prop_assert_eq!(v.get("allowReconnect").and_then(Value::as_bool).unwrap_or(false), allow_reconnect);
        prop_assert_eq!(parse(&sent[5])?, json!({"type": 6}));
        prop_assert_eq!(parse(&sent[6])?, json!({}));

        // Batched into one stream and cut anywhere, the same records come back.
        let stream = sent.concat();
        let got = records(&cut_str(&stream, &at), LIMIT).expect("within the limit");
        let want: Vec<String> = sent.iter().map(|r| strip_rs(r).map(str::to_owned)).collect::<Result<_, _>>()?;
        prop_assert_eq!(got, want);
    }
}
