//! The plain WebSocket protocol (`protocol::plain_ws`): any text is a typed frame or a
//! coded error, what a client writes decodes to what it meant, and what the hub encodes
//! reads back with `serde_json` field for field.

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use ragstream::answer::AnswerEvent;
use ragstream::answer::{DoneMetadata, Source, StreamEvent};
use ragstream::error::ErrorBody;
use ragstream::protocol::plain_ws::{decode, encode_error, encode_piece, ClientFrame};
use ragstream::protocol::signalr;
use ragstream::protocol::Piece;
use serde_json::{json, Value};

use crate::gen::{json_value, object_text, text};

/// An id the protocol accepts: a non-empty string of at most 128 bytes, or a number.
fn id() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        text(20)
            .prop_filter("non-empty, at most 128 bytes", |s| !s.is_empty()
                && s.len() <= 128)
            .prop_map(|s| (json!(s), s)),
        any::<i64>().prop_map(|n| (json!(n), n.to_string())),
    ]
}

/// An optional text field, absent or null when none.
fn opt_text(
    name: &'static str,
) -> impl Strategy<Value = (Option<(String, Value)>, Option<String>)> {
    prop_oneof![
        Just((None, None)),
        Just((Some((name.to_owned(), Value::Null)), None)),
        text(12).prop_map(move |s| (Some((name.to_owned(), json!(s))), Some(s))),
    ]
}

/// A client frame as written by any client (keys in any order, spaced or not) and what
/// it must decode to.
fn client_frame() -> impl Strategy<Value = (String, ClientFrame)> {
    let ask = (
        prop_oneof![Just(None), Just(Some("ask")), Just(Some("message"))],
        proptest::option::of(id()),
        text(40),
        proptest::option::of(proptest::option::of(any::<i64>())),
        (
            opt_text("provider"),
            opt_text("model"),
            opt_text("conversationId"),
        ),
    )
        .prop_map(
            |(kind, id, message, top_k, (provider, model, conversation))| {
                let mut e = vec![("message".to_owned(), json!(message))];
                if let Some(kind) = kind {
                    e.push(("type".to_owned(), json!(kind)));
                }
                if let Some((v, _)) = &id {
                    e.push(("id".to_owned(), v.clone()));
                }
                // Absent, null, or a number.
                if let Some(k) = top_k {
                    e.push(("topK".to_owned(), json!(k)));
                }
                e.extend([provider.0, model.0, conversation.0].into_iter().flatten());
                let frame = ClientFrame::Ask {
                    id: id.map(|(_, s)| s),
                    message,
                    top_k: top_k.flatten(),
                    provider: provider.1,
                    model: model.1,
                    conversation_id: conversation.1,
                };
                (e, frame)
            },
        );
    let cancel = id().prop_map(|(v, s)| {
        (
            vec![("type".to_owned(), json!("cancel")), ("id".to_owned(), v)],
            ClientFrame::Cancel { id: s },
        )
    });
    let ping = Just((vec![("type".to_owned(), json!("ping"))], ClientFrame::Ping));
    (
        prop_oneof![4 => ask, 1 => cancel, 1 => ping],
        any::<bool>(),
        proptest::option::of(json_value()),
    )
        .prop_flat_map(|((mut entries, frame), spaced, extra)| {
            // Fields the protocol does not know are ignored.
            if let Some(extra) = extra {
                entries.push(("x-client".to_owned(), extra));
            }
            (Just(entries).prop_shuffle(), Just(spaced), Just(frame))
        })
        .prop_map(|(entries, spaced, frame)| (object_text(&entries, spaced), frame))
}

fn meta(answer_id: String, tokens: u64, sources: Arc<[Source]>) -> DoneMetadata {
    DoneMetadata {
        answer_id,
        provider: "openai".into(),
        model: "m".into(),
        ttft_ms: None,
        elapsed_ms: 12,
        tokens,
        input_tokens: 0,
        input_tokens_estimated: false,
        finish_reason: "stop".into(),
        sources,
        conversation_id: Some("conv-1".into()),
    }
}

fn source() -> impl Strategy<Value = Source> {
    (
        1usize..20,
        text(8),
        text(8),
        any::<i64>(),
        -100i32..100,
        text(24),
    )
        .prop_map(
            |(number, document_id, title, chunk_id, score, text)| Source {
                number,
                document_id,
                title,
                chunk_id,
                score: f64::from(score) / 4.0,
                text,
            },
        )
}

fn parse(frame: &str) -> Result<Value, TestCaseError> {
    serde_json::from_str(frame).map_err(|e| TestCaseError::fail(format!("{e}: {frame}")))
}

proptest! {
    #[test]
    fn arbitrary_text_is_a_frame_or_a_coded_error(text in text(200)) {
        if let Err(e) = decode(&text) {
            prop_assert!(!e.code.is_empty());
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_json_is_a_frame_or_a_coded_error(
        value in json_value(),
        kind in prop_oneof![Just(json!("ask")), Just(json!("cancel")), Just(json!("ping")), json_value()],
        id in json_value(),
        message in json_value(),
        top_k in json_value(),
    ) {
        let _ = decode(&value.to_string());
        // The known fields with values of any type.
        let frame = json!({"type": kind, "id": id, "message": message, "topK": top_k});
        if let Err(e) = decode(&frame.to_string()) {
            prop_assert!(!e.code.is_empty());
        }
    }

    #[test]
    fn client_frames_decode_to_what_the_client_meant((text, want) in client_frame()) {
        prop_assert_eq!(decode(&text), Ok(want));
        // A question is never taken for a SignalR handshake (the first frame decides).
        prop_assert!(!signalr::looks_like_handshake(&text));
    }

    #[test]
    fn a_bad_field_is_an_error_that_keeps_the_frames_id(
        (id_value, id) in id(),
        bad in prop_oneof![
            Just(("topK", json!("five"))),
            Just(("topK", json!(1.5))),
            Just(("message", json!(7))),
            Just(("model", json!([]))),
            Just(("conversationId", json!({}))),
        ],
    ) {
        let mut frame = json!({"message": "q", "id": id_value});
        frame[bad.0] = bad.1;
        let e = decode(&frame.to_string()).expect_err("refused");
        prop_assert_eq!(e.id, Some(id));
    }

    #[test]
    fn the_hubs_frames_read_back_with_their_fields(
        id in text(12),
        token in text(24),
        conversation in text(12),
        code in text(8),
        message in text(24),
        sources in vec(source(), 0..3),
        tokens in any::<u32>(),
    ) {
        let v = parse(&encode_piece(&id, "a1", &Piece::Event(&AnswerEvent { seq: 1, event: StreamEvent::Token(token.clone()), partial: None })))?;
        prop_assert_eq!(v, json!({"token": token, "id": id, "answerId": "a1", "seq": 1}));

        let v = parse(&encode_piece(&id, "a1", &Piece::Event(&AnswerEvent { seq: 1, event: StreamEvent::Conversation(conversation.clone()), partial: None })))?;
        prop_assert_eq!(v, json!({"conversationId": conversation, "id": id, "answerId": "a1", "seq": 1}));

        let body = ErrorBody { code: code.clone(), message: message.clone() };
        let v = parse(&encode_piece(&id, "a1", &Piece::Event(&AnswerEvent { seq: 1, event: StreamEvent::Error(body.clone()), partial: None })))?;
        prop_assert_eq!(v, json!({"error": {"code": code, "message": message}, "id": id, "answerId": "a1", "seq": 1}));
        let v = parse(&encode_error(None, &body))?;
        prop_assert_eq!(v, json!({"error": {"code": code, "message": message}, "id": null}));

        let sources: Arc<[Source]> = Arc::from(sources);
        let v = parse(&encode_piece(&id, "a1", &Piece::Event(&AnswerEvent { seq: 1, event: StreamEvent::Sources(sources.clone()), partial: None })))?;
        prop_assert_eq!(&v["id"], &json!(id));
        let got = v["sources"].as_array().expect("an array");
        prop_assert_eq!(got.len(), sources.len());
        for (g, s) in got.iter().zip(sources.iter()) {
            prop_assert_eq!(g, &json!({
                "number": s.number,
                "documentId": s.document_id,
                "title": s.title,
                "chunkId": s.chunk_id,
                "score": s.score,
                "text": s.text,
            }));
        }

        let done = meta("a-1".into(), u64::from(tokens), sources.clone());
        let v = parse(&encode_piece(&id, "a1", &Piece::Event(&AnswerEvent { seq: 1, event: StreamEvent::Done(Box::new(done)), partial: None })))?;
        prop_assert_eq!(&v["done"], &json!(true));
        prop_assert_eq!(&v["id"], &json!(id));
        prop_assert_eq!(&v["metadata"]["answer_id"], &json!("a-1"));
        prop_assert_eq!(&v["metadata"]["tokens"], &json!(tokens));
        prop_assert_eq!(&v["metadata"]["conversation_id"], &json!("conv-1"));
        prop_assert_eq!(v["metadata"]["sources"].as_array().map(Vec::len), Some(sources.len()));
    }
}
