//! Strategies the properties share: text without line ends, JSON values, split points.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// Any text, every Unicode scalar value allowed, up to `max` characters.
pub fn text(max: usize) -> impl Strategy<Value = String> + Clone {
    vec(any::<char>(), 0..=max).prop_map(|c| c.into_iter().collect())
}

/// Text without CR or LF: the value of one SSE line.
pub fn line_text(max: usize) -> impl Strategy<Value = String> + Clone {
    vec(any::<char>(), 0..=max).prop_map(|c| {
        c.into_iter()
            .map(|c| if c == '\r' || c == '\n' { '·' } else { c })
            .collect()
    })
}

/// JSON without floats (their text form need not read back bit for bit), nested twice.
pub fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((text(6), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Up to `max` split points, anywhere.
pub fn splits(max: usize) -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..=max)
}

/// `input` cut at the given points (sorted, duplicates kept: an empty read is a read too).
pub fn cut_bytes<'a>(input: &'a [u8], at: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = at.iter().map(|i| i.index(input.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        pieces.push(&input[start..p]);
        start = p;
    }
    pieces.push(&input[start..]);
    pieces
}

/// `input` cut at the given points, each moved back to a character boundary (a WebSocket
/// text message is whole UTF-8).
pub fn cut_str<'a>(input: &'a str, at: &[Index]) -> Vec<&'a str> {
    let mut points: Vec<usize> = at
        .iter()
        .map(|i| {
            let mut p = i.index(input.len() + 1);
            while !input.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        pieces.push(&input[start..p]);
        start = p;
    }
    pieces.push(&input[start..]);
    pieces
}

/// A JSON object written by hand: keys in the given order, optional whitespace around
/// the punctuation, as clients other than `JSON.stringify` write it.
pub fn object_text(entries: &[(String, Value)], spaced: bool) -> String {
    let ws = if spaced { " " } else { "" };
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            let key = serde_json::to_string(k).expect("a string encodes");
            format!("{ws}{key}{ws}:{ws}{v}")
        })
        .collect();
    format!("{{{}{ws}}}", body.join(","))
}
