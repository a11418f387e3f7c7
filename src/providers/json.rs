//! Small serde helpers shared by the chunk parsers: strings borrowed from the chunk when
//! they can be, only the first element of an array, and reading an upstream error body.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

/// A JSON string borrowed from the input when it has no escapes, owned otherwise.
/// (`Option<Cow<str>>` fields always allocate with serde's derive, hence this type.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserializes only the first element of an array (or nothing for `null`), skipping the
/// rest without allocating a `Vec` per chunk.
pub fn first<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<T>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// Longest upstream message passed on to clients and logs.
const MAX_MESSAGE_CHARS: usize = 500;

/// The human message of an upstream error body. OpenAI, Anthropic and their imitators
/// put it at `error.message`; some use `error` as a string, `message` or `detail`; some
/// send plain text.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let candidates = [
                v.pointer("/error/message"),
                v.get("error"),
                v.get("message"),
                v.get("detail"),
            ];
            candidates
                .into_iter()
                .flatten()
                .find_map(|c| c.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    bounded(text.trim())
}

pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder<'a> {
        #[serde(borrow)]
        s: Option<Str<'a>>,
        #[serde(default, deserialize_with = "first")]
        list: Option<u32>,
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_owned() {
        let h: Holder<'_> = serde_json::from_str(r#"{"s":"plain"}"#).unwrap();
        assert!(matches!(h.s, Some(Str(Cow::Borrowed("plain")))));
        let h: Holder<'_> = serde_json::from_str(r#"{"s":"a\nb"}"#).unwrap();
        assert!(matches!(h.s, Some(Str(Cow::Owned(ref s))) if s == "a\nb"));
        let h: Holder<'_> = serde_json::from_str(r#"{"s":null}"#).unwrap();
        assert!(h.s.is_none());
    }

    #[test]
    fn only_the_first_element_is_kept() {
        let h: Holder<'_> = serde_json::from_str(r#"{"s":null,"list":[3,4,5]}"#).unwrap();
        assert_eq!(h.list, Some(3));
        let h: Holder<'_> = serde_json::from_str(r#"{"s":null,"list":[]}"#).unwrap();
        assert_eq!(h.list, None);
        let h: Holder<'_> = serde_json::from_str(r#"{"s":null,"list":null}"#).unwrap();
        assert_eq!(h.list, None);
    }

    #[test]
    fn error_messages_are_found_in_every_usual_shape() {
        let openai = br#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(openai), "Incorrect API key");
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(anthropic), "Overloaded");
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_message(b"  Bad Gateway\n"), "Bad Gateway");
        assert_eq!(error_message(&[b'x'; 600]).chars().count(), 501);
    }
}
