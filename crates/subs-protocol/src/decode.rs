//! Parsing of client frames: one pass of serde over the text, borrowing the
//! `type` and `id` strings where they need no unescaping.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::{Protocol, SubscribePayload, Violation};

/// A valid client message.
#[derive(Debug)]
pub(crate) enum ClientMessage<'a> {
    ConnectionInit {
        payload: Option<Map<String, Value>>,
    },
    Subscribe {
        id: Cow<'a, str>,
        payload: SubscribePayload,
    },
    Complete {
        id: Cow<'a, str>,
    },
    Ping {
        payload: Option<Value>,
    },
    Pong {
        payload: Option<Value>,
    },
    /// Legacy `connection_terminate`.
    Terminate,
}

/// A field that should be a string, kept apart from other JSON types so the
/// error can say which field had the wrong type.
enum StrField<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for StrField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrFieldVisitor(PhantomData))
    }
}

struct StrFieldVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for StrFieldVisitor<'a> {
    type Value = StrField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(StrField::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(StrField::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(StrField::Str(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(StrField::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(StrField::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(StrField::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(StrField::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(StrField::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(StrField::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StrField::Other)
    }
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<StrField<'a>>,
    #[serde(borrow)]
    id: Option<StrField<'a>>,
    payload: Option<Value>,
}

/// Parse and validate one text frame.
pub(crate) fn decode(
    protocol: Protocol,
    text: &str,
    max_id_bytes: usize,
) -> Result<ClientMessage<'_>, Violation> {
    // A derived struct would also accept a JSON array; the protocol wants an object.
    match text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first()
    {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Violation::NotAnObject,
                Err(_) => Violation::MalformedJson,
            });
        }
        _ => return Err(Violation::MalformedJson),
    }
    let raw: RawMessage<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Violation::DuplicateField
        } else {
            Violation::MalformedJson
        }
    })?;
    let kind = match raw.kind {
        None => return Err(Violation::MissingType),
        Some(StrField::Other) => return Err(Violation::TypeNotString),
        Some(StrField::Str(kind)) => kind,
    };
    let id = || valid_id(raw.id, max_id_bytes);
    match (protocol, &*kind) {
        (_, "connection_init") => Ok(ClientMessage::ConnectionInit {
            payload: match raw.payload {
                None | Some(Value::Null) => None,
                Some(Value::Object(map)) => Some(map),
                Some(_) => return Err(Violation::PayloadNotObject),
            },
        }),
        (Protocol::GraphqlTransportWs, "subscribe") | (Protocol::GraphqlWs, "start") => {
            let id = id()?;
            let payload = subscribe_payload(raw.payload)?;
            Ok(ClientMessage::Subscribe { id, payload })
        }
        (Protocol::GraphqlTransportWs, "complete") | (Protocol::GraphqlWs, "stop") => {
            Ok(ClientMessage::Complete { id: id()? })
        }
        (Protocol::GraphqlTransportWs, "ping") => Ok(ClientMessage::Ping {
            payload: optional_object(raw.payload)?,
        }),
        (Protocol::GraphqlTransportWs, "pong") => Ok(ClientMessage::Pong {
            payload: optional_object(raw.payload)?,
        }),
        (Protocol::GraphqlWs, "connection_terminate") => Ok(ClientMessage::Terminate),
        (Protocol::GraphqlTransportWs, "connection_ack" | "next" | "error")
        | (
            Protocol::GraphqlWs,
            "connection_ack" | "connection_error" | "ka" | "data" | "error" | "complete",
        ) => Err(Violation::UnexpectedType),
        _ => Err(Violation::UnknownType),
    }
}

fn valid_id(id: Option<StrField<'_>>, max_id_bytes: usize) -> Result<Cow<'_, str>, Violation> {
    match id {
        None => Err(Violation::MissingId),
        Some(StrField::Other) => Err(Violation::IdNotString),
        Some(StrField::Str(id)) if id.is_empty() => Err(Violation::EmptyId),
        Some(StrField::Str(id)) if id.len() > max_id_bytes => Err(Violation::IdTooLong),
        Some(StrField::Str(id)) => Ok(id),
    }
}

fn optional_object(payload: Option<Value>) -> Result<Option<Value>, Violation> {
    match payload {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(Violation::PayloadNotObject),
    }
}

fn subscribe_payload(payload: Option<Value>) -> Result<SubscribePayload, Violation> {
    let Some(Value::Object(mut map)) = payload else {
        return Err(Violation::PayloadNotObject);
    };
    let query = match map.remove("query") {
        None => return Err(Violation::MissingQuery),
        Some(Value::String(q)) => q,
        Some(_) => return Err(Violation::QueryNotString),
    };
    let operation_name = match map.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(Violation::OperationNameNotString),
    };
    let variables = match map.remove("variables") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(Violation::VariablesNotObject),
    };
    let extensions = match map.remove("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(Violation::ExtensionsNotObject),
    };
    Ok(SubscribePayload {
        query,
        operation_name,
        variables,
        extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Result<ClientMessage<'_>, Violation> {
        decode(Protocol::GraphqlTransportWs, text, 8)
    }

    #[test]
    fn borrows_plain_ids_and_owns_escaped_ones() {
        let Ok(ClientMessage::Complete { id }) = d(r#"{"type":"complete","id":"a"}"#) else {
            panic!()
        };
        assert!(matches!(id, Cow::Borrowed("a")));
        let Ok(ClientMessage::Complete { id }) = d(r#"{"type":"complete","id":"a\"b"}"#) else {
            panic!()
        };
        assert_eq!(id, "a\"b");
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(d("[]").unwrap_err(), Violation::NotAnObject);
        assert_eq!(d("12").unwrap_err(), Violation::NotAnObject);
        assert_eq!(d("[").unwrap_err(), Violation::MalformedJson);
        assert_eq!(d("").unwrap_err(), Violation::MalformedJson);
        assert_eq!(d("{").unwrap_err(), Violation::MalformedJson);
        assert_eq!(
            d(r#"{"type":"ping"} x"#).unwrap_err(),
            Violation::MalformedJson
        );
        assert_eq!(
            d(r#"{"type":"ping","type":"ping"}"#).unwrap_err(),
            Violation::DuplicateField
        );
        assert_eq!(d(r#"{}"#).unwrap_err(), Violation::MissingType);
        assert_eq!(d(r#"{"type":null}"#).unwrap_err(), Violation::MissingType);
        assert_eq!(d(r#"{"type":[1]}"#).unwrap_err(), Violation::TypeNotString);
        assert_eq!(d(r#"{"type":"x"}"#).unwrap_err(), Violation::UnknownType);
        assert_eq!(
            d(r#"{"type":"next"}"#).unwrap_err(),
            Violation::UnexpectedType
        );
        assert_eq!(
            d(r#"{"type":"complete"}"#).unwrap_err(),
            Violation::MissingId
        );
        assert_eq!(
            d(r#"{"type":"complete","id":{"a":1}}"#).unwrap_err(),
            Violation::IdNotString
        );
        assert_eq!(
            d(r#"{"type":"complete","id":""}"#).unwrap_err(),
            Violation::EmptyId
        );
        assert_eq!(
            d(r#"{"type":"complete","id":"123456789"}"#).unwrap_err(),
            Violation::IdTooLong
        );
        assert_eq!(
            d(r#"{"type":"ping","payload":1}"#).unwrap_err(),
            Violation::PayloadNotObject
        );
    }
}
