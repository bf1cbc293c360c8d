//! Server frames. `next` frames are built by splicing: the payload bytes are
//! copied once into a buffer sized exactly, never re-parsed or re-serialized.

use serde_json::Value;

use crate::Protocol;

/// A byte sink for frames: `String` for [`Connection`](crate::Connection)'s
/// queue, `Vec<u8>` for [`encode_next`].
pub(crate) trait Sink {
    fn put(&mut self, s: &str);
    fn put_byte(&mut self, b: u8);
}

impl Sink for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
    fn put_byte(&mut self, b: u8) {
        debug_assert!(b.is_ascii());
        self.push(char::from(b));
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// Whether `b` must be escaped inside a JSON string.
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The length of `s` as a JSON string literal, quotes included.
#[inline]
pub(crate) fn json_str_len(s: &str) -> usize {
    let mut len = s.len() + 2;
    for &b in s.as_bytes() {
        if needs_escape(b) {
            len += match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                _ => 5, // \u00XX
            };
        }
    }
    len
}

/// Write `s` as a JSON string literal. Fast path: one copy when nothing needs escaping.
pub(crate) fn put_json_str(out: &mut impl Sink, s: &str) {
    out.put_byte(b'"');
    if !s.bytes().any(needs_escape) {
        out.put(s);
    } else {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if !needs_escape(b) {
                continue;
            }
            // Escapable bytes are ASCII, so `start..i` lies on char boundaries.
            out.put(&s[start..i]);
            match b {
                b'"' => out.put("\\\""),
                b'\\' => out.put("\\\\"),
                b'\n' => out.put("\\n"),
                b'\r' => out.put("\\r"),
                b'\t' => out.put("\\t"),
                0x08 => out.put("\\b"),
                0x0c => out.put("\\f"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.put("\\u00");
                    out.put_byte(HEX[usize::from(b >> 4)]);
                    out.put_byte(HEX[usize::from(b & 0xf)]);
                }
            }
            start = i + 1;
        }
        out.put(&s[start..]);
    }
    out.put_byte(b'"');
}

const PAYLOAD_KEY: &str = ",\"payload\":";

fn next_head(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::GraphqlTransportWs => "{\"type\":\"next\",\"id\":",
        Protocol::GraphqlWs => "{\"type\":\"data\",\"id\":",
        Protocol::EventStream | Protocol::EventStreamSingle | Protocol::Multipart => {
            unreachable!("stream messages are built by `stream`")
        }
    }
}

/// The exact length of a `next` frame.
#[inline]
pub(crate) fn next_len(protocol: Protocol, id: &str, payload_len: usize) -> usize {
    next_head(protocol).len() + json_str_len(id) + PAYLOAD_KEY.len() + payload_len + 1
}

/// Write the part of a `next` frame before the payload.
#[inline]
pub(crate) fn put_next_head(out: &mut impl Sink, protocol: Protocol, id: &str) {
    out.put(next_head(protocol));
    put_json_str(out, id);
    out.put(PAYLOAD_KEY);
}

/// Append one `next` frame (legacy: `data`) for operation `id` to `out`:
/// `{"type":"next","id":"<id>","payload":<payload_json>}`.
///
/// `payload_json` must be a serialized JSON object (`{"data":..,"errors":..}`);
/// it is copied as is, never parsed. `out` grows by exactly the frame's length
/// (one reservation). Frames are not separated: write one frame per WebSocket
/// message, or track the offsets.
///
/// This does not check that `id` is an active operation; use
/// [`Connection::send_next`](crate::Connection::send_next) or
/// [`Connection::is_active`](crate::Connection::is_active) for that.
pub fn encode_next(protocol: Protocol, id: &str, payload_json: &[u8], out: &mut Vec<u8>) {
    if !protocol.is_websocket() {
        let payload = String::from_utf8_lossy(payload_json);
        out.extend_from_slice(crate::stream::next(protocol, id, &payload).as_bytes());
        return;
    }
    out.reserve(next_len(protocol, id, payload_json.len()));
    put_next_head(out, protocol, id);
    out.extend_from_slice(payload_json);
    out.push(b'}');
}

/// `{"type":"<kind>","id":"<id>"}`
pub(crate) fn with_id(kind: &str, id: &str) -> String {
    let mut s = String::with_capacity(17 + kind.len() + json_str_len(id));
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    s.push_str("\",\"id\":");
    put_json_str(&mut s, id);
    s.push('}');
    s
}

/// `{"type":"<kind>","id":"<id>","payload":<raw>}` plus `suffix`, where `raw` is spliced.
pub(crate) fn with_id_raw(kind: &str, id: &str, prefix: &str, raw: &str, suffix: &str) -> String {
    let len = 16
        + kind.len()
        + json_str_len(id)
        + PAYLOAD_KEY.len()
        + prefix.len()
        + raw.len()
        + suffix.len()
        + 1;
    let mut s = String::with_capacity(len);
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    s.push_str("\",\"id\":");
    put_json_str(&mut s, id);
    s.push_str(PAYLOAD_KEY);
    s.push_str(prefix);
    s.push_str(raw);
    s.push_str(suffix);
    s.push('}');
    debug_assert_eq!(s.len(), len);
    s
}

/// `{"type":"<kind>"}` or `{"type":"<kind>","payload":<payload>}`.
pub(crate) fn with_payload(kind: &str, payload: Option<Value>) -> String {
    match payload {
        None => ["{\"type\":\"", kind, "\"}"].concat(),
        Some(p) => {
            // Serializing a `Value` into a String cannot fail (keys are strings).
            let p = serde_json::to_string(&p).unwrap_or_else(|_| String::from("null"));
            ["{\"type\":\"", kind, "\",\"payload\":", &p, "}"].concat()
        }
    }
}

/// Legacy `{"type":"connection_error","payload":{"message":"<message>"}}`.
pub(crate) fn connection_error(message: &str) -> String {
    let mut s = String::with_capacity(50 + json_str_len(message));
    s.push_str("{\"type\":\"connection_error\",\"payload\":{\"message\":");
    put_json_str(&mut s, message);
    s.push_str("}}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_serde_json() {
        for id in [
            "",
            "a",
            "a\"b",
            "\\",
            "\n\t\r\u{8}\u{c}",
            "\u{1}\u{1f}x",
            "é\u{2028}😀\"",
        ] {
            let mut s = String::new();
            put_json_str(&mut s, id);
            assert_eq!(s, serde_json::to_string(id).unwrap(), "{id:?}");
            assert_eq!(s.len(), json_str_len(id), "{id:?}");
            let back: String = serde_json::from_str(&s).unwrap();
            assert_eq!(back, id);
        }
    }

    #[test]
    fn encode_next_reserves_exactly() {
        for protocol in [Protocol::GraphqlTransportWs, Protocol::GraphqlWs] {
            for id in ["1", "a\"\u{0}b"] {
                let mut out = Vec::new();
                encode_next(protocol, id, br#"{"data":{"x":1}}"#, &mut out);
                assert_eq!(out.len(), out.capacity());
                assert_eq!(out.len(), next_len(protocol, id, 16));
                let v: Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(v["id"], id);
                assert_eq!(v["payload"]["data"]["x"], 1);
            }
        }
    }

    #[test]
    fn small_frames_are_valid_json() {
        let f = with_id("complete", "x\"");
        assert_eq!(f.len(), f.capacity());
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["id"], "x\"");
        let f = with_id_raw("error", "é", "", "[]", "");
        assert_eq!(f.len(), f.capacity());
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["payload"], serde_json::json!([]));
        let f = connection_error("no \"way\"");
        assert_eq!(f.len(), f.capacity());
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["payload"]["message"], "no \"way\"");
    }
}
