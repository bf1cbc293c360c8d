//! The framing of the HTTP streaming protocols: Server-Sent Events (the
//! graphql-sse protocol, both modes) and Apollo's multipart subscription
//! protocol. Like the WebSocket frames, every message that carries a result
//! is built by splicing the already serialized payload, never re-parsing it.
//!
//! What each protocol sends:
//!
//! | message | SSE, distinct | SSE, single connection | multipart |
//! |---|---|---|---|
//! | result | `event: next` / `data: <result>` | `data: {"id":..,"payload":<result>}` | part `{"payload":<result>}` |
//! | errors of the request | `next` with `{"errors":..}`, then `complete` | same, with the id | part `{"payload":{"errors":..}}`, then the end |
//! | end of one operation | `event: complete` / `data:` (then the stream ends) | `data: {"id":..}` | the closing delimiter |
//!
//! A multipart body opens with a delimiter, and each part ends with the next
//! one, so a client can read a part as soon as it arrives; the end turns the
//! last delimiter into the closing one (`--graphql--`).
//! | keepalive | a comment line `:` | the same | an empty part `{}` |
//! | fatal end | the stream ends | the stream ends | part `{"payload":null,"errors":[..]}`, then the closing delimiter |

use crate::Protocol;
use crate::encode::{json_str_len, put_json_str};

/// The multipart boundary subs answers with (`graphql`, as Apollo's router
/// and clients use).
pub const MULTIPART_BOUNDARY: &str = "graphql";

/// The `Content-Type` of a multipart subscription response. Both parameters
/// are tokens, so they go unquoted: some clients look for the literal
/// `boundary=graphql` and `subscriptionSpec=1.0` (Python's gql 4.4 refuses
/// the quoted spellings).
pub const MULTIPART_CONTENT_TYPE: &str = "multipart/mixed;boundary=graphql;subscriptionSpec=1.0";

/// The `Content-Type` of an event stream.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// The first delimiter of a multipart body, before its first part.
pub(crate) const MULTIPART_OPENING: &str = "\r\n--graphql";

/// What starts every multipart part, after the delimiter: the part's header.
const PART_HEAD: &str = "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n";

/// What ends every part: the next delimiter, written at once so that a client
/// sees the part complete without waiting for the next one (clients split on
/// the delimiter). Followed by the next part's header, or by `--` at the end.
const PART_TAIL: &str = "\r\n--graphql";

/// Ends a multipart body: the last delimiter becomes the closing one.
pub(crate) const MULTIPART_END: &str = "--\r\n";

/// An SSE comment: ignored by every client, it keeps proxies from timing out
/// an idle stream.
pub(crate) const SSE_KEEPALIVE: &str = ":\n\n";

/// One `next` of operation `id` carrying `payload` (a serialized result).
pub(crate) fn next(protocol: Protocol, id: &str, payload: &str) -> String {
    next_with_event_id(protocol, id, payload, None)
}

/// One `next`; over SSE, `event_id` (when given) becomes the event's `id:`
/// line, which a reconnecting `EventSource` sends back as `Last-Event-ID`.
pub(crate) fn next_with_event_id(
    protocol: Protocol,
    id: &str,
    payload: &str,
    event_id: Option<&str>,
) -> String {
    match protocol {
        Protocol::EventStream => sse_event_with_id(event_id, "next", "", payload, ""),
        Protocol::EventStreamSingle => {
            let mut head = String::with_capacity(8 + json_str_len(id) + 11);
            head.push_str("{\"id\":");
            put_json_str(&mut head, id);
            head.push_str(",\"payload\":");
            sse_event_with_id(event_id, "next", &head, payload, "}")
        }
        Protocol::Multipart => {
            let mut part =
                String::with_capacity(PART_HEAD.len() + 12 + payload.len() + PART_TAIL.len());
            part.push_str(PART_HEAD);
            part.push_str("{\"payload\":");
            part.push_str(payload);
            part.push('}');
            part.push_str(PART_TAIL);
            part
        }
        Protocol::GraphqlTransportWs | Protocol::GraphqlWs => {
            unreachable!("WebSocket frames are built by `encode`")
        }
    }
}

/// The errors of a request that was not executed, as a result: `{"errors":..}`.
pub(crate) fn errors(protocol: Protocol, id: &str, errors: &str) -> String {
    let mut payload = String::with_capacity(11 + errors.len());
    payload.push_str("{\"errors\":");
    payload.push_str(errors);
    payload.push('}');
    next(protocol, id, &payload)
}

/// The end of operation `id`.
pub(crate) fn complete(protocol: Protocol, id: &str) -> String {
    match protocol {
        // The empty `data:` line makes `EventSource` fire the event.
        Protocol::EventStream => "event: complete\ndata:\n\n".to_owned(),
        Protocol::EventStreamSingle => {
            let mut data = String::with_capacity(8 + json_str_len(id));
            data.push_str("{\"id\":");
            put_json_str(&mut data, id);
            data.push('}');
            sse_event("complete", "", &data, "")
        }
        Protocol::Multipart => MULTIPART_END.to_owned(),
        Protocol::GraphqlTransportWs | Protocol::GraphqlWs => {
            unreachable!("WebSocket frames are built by `encode`")
        }
    }
}

/// A keepalive: an SSE comment, or an empty multipart part (Apollo's heartbeat).
pub(crate) fn keepalive(protocol: Protocol) -> String {
    match protocol {
        Protocol::Multipart => [PART_HEAD, "{}", PART_TAIL].concat(),
        _ => SSE_KEEPALIVE.to_owned(),
    }
}

/// The part that tells a multipart client the stream ends on an error (a
/// transport-level error: `payload` is null).
pub(crate) fn multipart_fatal(reason: &str) -> String {
    let mut part = String::with_capacity(PART_HEAD.len() + 48 + json_str_len(reason));
    part.push_str(PART_HEAD);
    part.push_str("{\"payload\":null,\"errors\":[{\"message\":");
    put_json_str(&mut part, reason);
    part.push_str("}]}");
    part.push_str(PART_TAIL);
    part.push_str(MULTIPART_END);
    part
}

/// `event: <name>` and one `data:` line per line of `head + body + tail`.
/// Compact JSON has no line breaks, so this is one line and one copy; a
/// payload written with line breaks (a host executor's pretty JSON) is split
/// into several `data:` lines, which the client joins back with `\n`.
fn sse_event(name: &str, head: &str, body: &str, tail: &str) -> String {
    sse_event_with_id(None, name, head, body, tail)
}

fn sse_event_with_id(
    event_id: Option<&str>,
    name: &str,
    head: &str,
    body: &str,
    tail: &str,
) -> String {
    let id_len = event_id.map_or(0, |id| id.len() + 5);
    let mut out =
        String::with_capacity(16 + id_len + name.len() + head.len() + body.len() + tail.len());
    if let Some(event_id) = event_id {
        // A line break would end the field early; SSE ids never carry one.
        out.push_str("id: ");
        out.extend(
            event_id
                .chars()
                .filter(|c| !matches!(c, '\n' | '\r' | '\0')),
        );
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(head);
    // Searched a word at a time: this runs for every subscriber of every
    // event, and a serialized result never holds a raw line break anyway.
    if memchr::memchr2(b'\n', b'\r', body.as_bytes()).is_some() {
        let mut lines = body.split(['\n', '\r']).filter(|l| !l.is_empty());
        if let Some(first) = lines.next() {
            out.push_str(first);
        }
        for line in lines {
            out.push_str("\ndata: ");
            out.push_str(line);
        }
    } else {
        out.push_str(body);
    }
    out.push_str(tail);
    out.push_str("\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_events_carry_the_result_alone() {
        assert_eq!(
            next(Protocol::EventStream, "x", r#"{"data":{"a":1}}"#),
            "event: next\ndata: {\"data\":{\"a\":1}}\n\n"
        );
        assert_eq!(
            complete(Protocol::EventStream, "x"),
            "event: complete\ndata:\n\n"
        );
    }

    #[test]
    fn event_ids_go_on_their_own_line() {
        assert_eq!(
            next_with_event_id(Protocol::EventStream, "x", "{}", Some("e.1:7")),
            "id: e.1:7\nevent: next\ndata: {}\n\n"
        );
        assert_eq!(
            next_with_event_id(Protocol::EventStream, "x", "{}", Some("a\nb")),
            "id: ab\nevent: next\ndata: {}\n\n"
        );
        assert_eq!(
            next_with_event_id(Protocol::Multipart, "x", "{}", Some("e:1")),
            next(Protocol::Multipart, "x", "{}")
        );
    }

    #[test]
    fn single_connection_events_name_their_operation() {
        assert_eq!(
            next(Protocol::EventStreamSingle, "op\"1", r#"{"data":null}"#),
            "event: next\ndata: {\"id\":\"op\\\"1\",\"payload\":{\"data\":null}}\n\n"
        );
        assert_eq!(
            complete(Protocol::EventStreamSingle, "op1"),
            "event: complete\ndata: {\"id\":\"op1\"}\n\n"
        );
        assert_eq!(
            errors(Protocol::EventStreamSingle, "o", r#"[{"message":"m"}]"#),
            "event: next\ndata: {\"id\":\"o\",\"payload\":{\"errors\":[{\"message\":\"m\"}]}}\n\n"
        );
    }

    #[test]
    fn a_payload_with_line_breaks_becomes_several_data_lines() {
        let event = next(Protocol::EventStream, "", "{\n  \"data\": 1\r\n}");
        assert_eq!(
            event,
            "event: next\ndata: {\ndata:   \"data\": 1\ndata: }\n\n"
        );
    }

    #[test]
    fn multipart_parts_wrap_the_result_in_payload() {
        assert_eq!(
            next(Protocol::Multipart, "x", r#"{"data":{}}"#),
            "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{\"payload\":{\"data\":{}}}\r\n--graphql"
        );
        assert_eq!(
            keepalive(Protocol::Multipart),
            "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{}\r\n--graphql"
        );
        assert_eq!(complete(Protocol::Multipart, "x"), "--\r\n");
        assert!(multipart_fatal("gone \"now\"").ends_with(
            "{\"payload\":null,\"errors\":[{\"message\":\"gone \\\"now\\\"\"}]}\r\n--graphql--\r\n"
        ));
    }
}
