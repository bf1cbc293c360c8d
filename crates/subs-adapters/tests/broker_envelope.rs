//! The wire format between instances: `subs_core::Envelope`, which a Python
//! (or any) instance must be able to read and write byte for byte.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use subs_core::{ENVELOPE_VERSION, Envelope, Event};

/// The example of docs/scaling.md, byte for byte (UTF-8, no trailing newline).
const DOC_EXAMPLE: &str = r#"{"v":1,"topic":"serviceUpdated","origin":"9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c","seq":42,"publishedAtNs":"1700000000123456789","payload":{"id":"1","name":"Café ☕","tags":["a",{"b":null}]}}"#;

fn doc_example() -> Envelope {
    Envelope {
        topic: Arc::from("serviceUpdated"),
        origin: Arc::from("9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c"),
        seq: 42,
        published_at_ns: 1_700_000_000_123_456_789,
        payload: Bytes::from_static(
            r#"{"id":"1","name":"Café ☕","tags":["a",{"b":null}]}"#.as_bytes(),
        ),
        position: None,
    }
}

#[test]
fn a_position_travels_with_the_envelope() {
    let mut envelope = doc_example();
    envelope.position = Some(subs_core::Position {
        epoch: Arc::from("e\"1"),
        offset: 9,
    });
    let decoded = Envelope::decode(&envelope.encode()).expect("decodes");
    assert_eq!(decoded, envelope);
    assert_eq!(decoded.into_event().position.map(|p| p.offset), Some(9));
    // Old envelopes (no position) still decode.
    assert_eq!(
        Envelope::decode(&doc_example().encode()).unwrap().position,
        None
    );
}

#[test]
fn envelope_round_trips() {
    let event = Event::json("services", json!({"id": 7, "ok": true}));
    let envelope = Envelope::new(&event, Arc::from("origin-a"), 3);
    let decoded = Envelope::decode(&envelope.encode()).expect("decodes");
    assert_eq!(decoded, envelope);
    assert_eq!(&*decoded.topic, "services");
    assert_eq!(&*decoded.origin, "origin-a");
    assert_eq!(decoded.seq, 3);
    assert!(decoded.published_at_ns > 1_600_000_000_000_000_000);
    let payload: Value = serde_json::from_slice(&decoded.payload).expect("payload JSON");
    assert_eq!(payload, json!({"id": 7, "ok": true}));
}

#[test]
fn envelope_carries_unicode_and_nested_json_untouched() {
    let payload = json!({
        "text": "naïve café — 東京 🚀 \"quoted\" \\ back\nslash",
        "nested": {"list": [1, 2.5, null, {"deep": [true, false, {"x": "ÿ"}]}], "empty": {}},
        "big": 9_007_199_254_740_993_u64,
    });
    let event = Event::json("tópico/ünïcode ✓", payload.clone());
    let envelope = Envelope::new(&event, Arc::from("ørigin \"x\""), u64::MAX);
    let bytes = envelope.encode();
    // The envelope is plain JSON any language can parse.
    let generic: Value = serde_json::from_slice(&bytes).expect("the envelope is JSON");
    assert_eq!(generic["payload"], payload);
    assert_eq!(generic["topic"], "tópico/ünïcode ✓");
    assert_eq!(generic["v"], ENVELOPE_VERSION);
    let decoded = Envelope::decode(&bytes).expect("decodes");
    assert_eq!(decoded, envelope);
    assert_eq!(decoded.seq, u64::MAX);
    let event = decoded.into_event();
    assert_eq!(&*event.topic, "tópico/ünïcode ✓");
    assert_eq!(*event.payload.to_value().expect("payload"), payload);
}

#[test]
fn envelope_of_another_version_is_refused() {
    let other = DOC_EXAMPLE.replacen(r#"{"v":1,"#, r#"{"v":2,"#, 1);
    let error = Envelope::decode(other.as_bytes()).expect_err("version 2 is refused");
    assert!(
        error.to_string().contains("unsupported envelope version 2"),
        "{error}"
    );
    // A missing version, a bad time and a non-JSON payload are refused too.
    let missing = DOC_EXAMPLE.replacen(r#""v":1,"#, "", 1);
    assert!(Envelope::decode(missing.as_bytes()).is_err());
    let bad_time = DOC_EXAMPLE.replacen("1700000000123456789", "soon", 1);
    assert!(Envelope::decode(bad_time.as_bytes()).is_err());
    assert!(
        Envelope::decode(
            br#"{"v":1,"topic":"t","origin":"o","seq":1,"publishedAtNs":"1","payload":nope}"#
        )
        .is_err()
    );
    let error = Envelope::decode(b"not json").expect_err("not JSON is refused");
    assert!(
        error.to_string().starts_with("malformed broker envelope"),
        "a bad envelope says so, not that the payload is bad: {error}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "with its cause"
    );
}

#[test]
fn the_documented_byte_example_decodes_and_encodes_identically() {
    let decoded = Envelope::decode(DOC_EXAMPLE.as_bytes()).expect("the doc example decodes");
    assert_eq!(decoded, doc_example());
    assert_eq!(
        String::from_utf8(doc_example().encode()).expect("UTF-8"),
        DOC_EXAMPLE,
        "encode writes exactly the documented bytes"
    );
    // Keys in another order and extra whitespace (what another JSON library
    // may write) decode to the same envelope.
    let reordered = r#"{ "payload": {"id":"1","name":"Café ☕","tags":["a",{"b":null}]}, "seq": 42,
        "origin": "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c", "topic": "serviceUpdated",
        "publishedAtNs": "1700000000123456789", "v": 1 }"#;
    let decoded = Envelope::decode(reordered.as_bytes()).expect("reordered decodes");
    let payload: Value = serde_json::from_slice(&decoded.payload).expect("payload");
    assert_eq!(
        payload,
        json!({"id":"1","name":"Café ☕","tags":["a",{"b":null}]})
    );
    assert_eq!(decoded.seq, 42);
    // The docs carry the same bytes.
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/scaling.md"
    ))
    .expect("docs/scaling.md");
    assert!(
        doc.contains(DOC_EXAMPLE),
        "docs/scaling.md shows the envelope example byte for byte"
    );
}
