//! One test per protocol rule, through the public API only.

mod harness;

use std::time::Duration;

use harness::Harness;
use serde_json::{Value, json};
use subs_protocol::close::{self, reason};
use subs_protocol::{
    Close, Config, Connection, Event, Protocol, SubscribePayload, UsageError, Violation,
    encode_next, negotiate,
};

// ----- negotiation -----

#[test]
fn negotiate_prefers_graphql_transport_ws() {
    assert_eq!(
        negotiate(["graphql-ws", "graphql-transport-ws"]),
        Some(Protocol::GraphqlTransportWs)
    );
    assert_eq!(Protocol::GraphqlTransportWs.name(), "graphql-transport-ws");
}

#[test]
fn negotiate_accepts_legacy_graphql_ws() {
    assert_eq!(negotiate(["chat", "graphql-ws"]), Some(Protocol::GraphqlWs));
    assert_eq!(Protocol::GraphqlWs.name(), "graphql-ws");
}

#[test]
fn negotiate_refuses_anything_else() {
    assert_eq!(negotiate([]), None);
    assert_eq!(
        negotiate(["GraphQL-WS", "graphql", "graphql-transport-ws2"]),
        None
    );
}

// ----- connection_init -----

#[test]
fn connection_init_is_an_event_with_its_payload() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init", "payload": {"token": "abc"}}));
    let events = h.take_events();
    let [Event::ConnectionInit { payload: Some(p) }] = events.as_slice() else {
        panic!("no ConnectionInit: {events:?}")
    };
    assert_eq!(p["token"], "abc");
    assert!(
        h.sent.is_empty(),
        "the application answers, not the machine"
    );
    h.send(json!({"type": "connection_init", "payload": null}));
    h.assert_closed(close::TOO_MANY_INIT_REQUESTS, None);
}

#[test]
fn connection_init_payload_is_optional_or_null() {
    for text in [
        r#"{"type":"connection_init"}"#,
        r#"{"type":"connection_init","payload":null}"#,
    ] {
        let mut h = Harness::transport();
        h.text(text);
        assert_eq!(
            h.take_events(),
            vec![Event::ConnectionInit { payload: None }]
        );
    }
}

#[test]
fn second_connection_init_closes_4429() {
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "connection_init"}));
    h.assert_closed(4429, Some("Too many initialisation requests"));
    assert_eq!(
        h.conn.violation(),
        Some(&Violation::TooManyInitialisationRequests)
    );
}

#[test]
fn second_connection_init_before_accept_closes_4429() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    h.send(json!({"type": "connection_init"}));
    h.assert_closed(4429, Some(reason::TOO_MANY_INIT_REQUESTS));
    // The pending ConnectionInit event is dropped with the close.
    assert_eq!(
        h.events.len(),
        1,
        "the first event was taken before the close"
    );
}

#[test]
fn accept_sends_connection_ack() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    h.conn.accept(None).unwrap();
    h.pump();
    assert_eq!(h.log, vec![r#"{"type":"connection_ack"}"#]);
    assert!(h.conn.is_acknowledged());
}

#[test]
fn accept_sends_connection_ack_with_optional_payload() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    h.conn.accept(Some(json!({"server": "subs"}))).unwrap();
    h.pump();
    assert_eq!(
        h.take_sent(),
        vec![json!({"type": "connection_ack", "payload": {"server": "subs"}})]
    );
}

#[test]
fn rejected_connection_init_closes_4403_forbidden() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    h.conn.reject("").unwrap();
    h.pump();
    assert!(h.sent.is_empty());
    h.assert_closed(4403, Some("Forbidden"));
    assert_eq!(
        h.conn.violation(),
        None,
        "a rejection is not a peer violation"
    );
}

#[test]
fn rejected_connection_init_closes_4403_with_the_application_reason() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    h.conn.reject("invalid token").unwrap();
    h.pump();
    h.assert_closed(close::FORBIDDEN, Some("invalid token"));
}

#[test]
fn init_timeout_closes_4408() {
    let mut h = Harness::transport();
    assert_eq!(
        h.conn.poll_timeout(),
        Some(h.start + Duration::from_secs(3))
    );
    h.jump();
    assert_eq!(h.elapsed(), Duration::from_secs(3));
    h.assert_closed(4408, Some("Connection initialisation timeout"));
}

#[test]
fn init_timeout_closes_4408_when_the_application_never_answers() {
    let mut h = Harness::transport();
    h.advance(Duration::from_secs(1));
    h.send(json!({"type": "connection_init"}));
    h.take_events();
    h.jump();
    assert_eq!(h.elapsed(), Duration::from_secs(3));
    h.assert_closed(close::INIT_TIMEOUT, None);
}

#[test]
fn init_timeout_is_cancelled_by_accept() {
    let mut h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            keepalive_interval: None,
            ..Config::default()
        },
    );
    h.connect();
    assert_eq!(h.conn.poll_timeout(), None);
    h.advance(Duration::from_secs(3600));
    h.conn.handle_timeout(h.now);
    h.pump();
    assert!(h.close.is_none());
}

#[test]
fn no_init_timeout_when_disabled() {
    let h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            connection_init_timeout: None,
            ..Config::default()
        },
    );
    assert_eq!(h.conn.poll_timeout(), None);
}

// ----- subscribe -----

#[test]
fn subscribe_is_an_event_with_every_payload_field() {
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "subscribe", "id": "op-1", "payload": {
        "query": "subscription S($a: Int) { s(a: $a) }",
        "operationName": "S",
        "variables": {"a": 1},
        "extensions": {"persistedQuery": {"version": 1}}
    }}));
    let events = h.take_events();
    let [Event::Subscribe { id, payload }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(id, "op-1");
    assert_eq!(payload.query, "subscription S($a: Int) { s(a: $a) }");
    assert_eq!(payload.operation_name.as_deref(), Some("S"));
    assert_eq!(payload.variables.as_ref().unwrap()["a"], 1);
    assert_eq!(
        payload.extensions.as_ref().unwrap()["persistedQuery"]["version"],
        1
    );
    assert!(h.conn.is_active("op-1"));
    assert_eq!(h.conn.active_count(), 1);
}

#[test]
fn subscribe_optional_fields_may_be_null() {
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "subscribe", "id": "1", "payload": {
        "query": "{ a }", "operationName": null, "variables": null, "extensions": null
    }}));
    assert_eq!(
        h.take_events(),
        vec![Event::Subscribe {
            id: "1".into(),
            payload: SubscribePayload {
                query: "{ a }".into(),
                ..SubscribePayload::default()
            }
        }]
    );
}

#[test]
fn subscribe_before_ack_closes_4401() {
    let mut h = Harness::transport();
    h.send(json!({"type": "subscribe", "id": "1", "payload": {"query": "{ a }"}}));
    h.assert_closed(4401, Some("Unauthorized"));
}

#[test]
fn subscribe_before_accept_closes_4401() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    h.send(json!({"type": "subscribe", "id": "1", "payload": {"query": "{ a }"}}));
    h.assert_closed(close::UNAUTHORIZED, Some(reason::UNAUTHORIZED));
    assert_eq!(h.conn.accept(None), Err(UsageError::Closed));
}

#[test]
fn duplicate_active_id_closes_4409() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("abc");
    h.send(json!({"type": "subscribe", "id": "abc", "payload": {"query": "{ a }"}}));
    h.assert_closed(4409, Some("Subscriber for abc already exists"));
    assert_eq!(
        h.conn.violation().map(Violation::reason),
        Some(reason::SUBSCRIBER_ALREADY_EXISTS)
    );
}

#[test]
fn duplicate_id_close_reason_fits_in_a_close_frame() {
    let mut h = Harness::transport();
    h.connect();
    let id = "é".repeat(64); // 128 bytes, the default limit
    h.subscribe(&id);
    h.send(json!({"type": "subscribe", "id": id, "payload": {"query": "{ a }"}}));
    let close = h.close.clone().unwrap();
    assert_eq!(close.code, 4409);
    assert!(close.reason.len() <= close::MAX_REASON_BYTES);
    assert!(close.reason.starts_with("Subscriber for éé"));
}

#[test]
fn id_can_be_reused_after_client_complete() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.send(json!({"type": "complete", "id": "1"}));
    assert_eq!(h.take_events(), vec![Event::Complete { id: "1".into() }]);
    h.subscribe("1");
    assert!(h.close.is_none());
}

#[test]
fn id_can_be_reused_after_server_complete() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_complete("1").unwrap();
    h.subscribe("1");
    assert!(h.close.is_none());
}

#[test]
fn id_can_be_reused_after_server_error() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_error("1", br#"[{"message":"no"}]"#).unwrap();
    h.subscribe("1");
    assert!(h.close.is_none());
}

// ----- invalid messages: 4400 -----

fn assert_bad_request(text: &str, expected: &str) {
    for protocol in [Protocol::GraphqlTransportWs, Protocol::GraphqlWs] {
        let mut h = Harness::new(protocol, Config::default());
        h.connect();
        h.subscribe("live");
        h.text(text);
        h.assert_closed(4400, Some(expected));
        assert!(h.take_events().is_empty(), "{text}");
    }
}

#[test]
fn malformed_json_closes_4400() {
    assert_bad_request("{\"type\":", reason::MALFORMED_JSON);
    assert_bad_request("", reason::MALFORMED_JSON);
    assert_bad_request("hello", reason::MALFORMED_JSON);
    assert_bad_request(r#"{"type":"ping"}{}"#, reason::MALFORMED_JSON);
    assert_bad_request(&"[".repeat(1000), reason::MALFORMED_JSON);
}

#[test]
fn non_object_message_closes_4400() {
    assert_bad_request(r#"["connection_init"]"#, reason::NOT_AN_OBJECT);
    assert_bad_request("null", reason::NOT_AN_OBJECT);
    assert_bad_request("\"x\"", reason::NOT_AN_OBJECT);
}

#[test]
fn duplicate_field_closes_4400() {
    assert_bad_request(
        r#"{"type":"complete","id":"a","id":"b"}"#,
        reason::DUPLICATE_FIELD,
    );
}

#[test]
fn missing_or_wrong_typed_type_closes_4400() {
    assert_bad_request(r#"{"id":"1"}"#, reason::MISSING_TYPE);
    assert_bad_request(r#"{"type":7}"#, reason::TYPE_NOT_STRING);
}

#[test]
fn unknown_type_closes_4400() {
    assert_bad_request(r#"{"type":"subscribe_all"}"#, reason::UNKNOWN_TYPE);
    assert_bad_request(r#"{"type":"CONNECTION_INIT"}"#, reason::UNKNOWN_TYPE);
}

#[test]
fn server_message_type_from_client_closes_4400() {
    assert_bad_request(r#"{"type":"connection_ack"}"#, reason::UNEXPECTED_TYPE);
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "next", "id": "1", "payload": {}}));
    h.assert_closed(4400, Some(reason::UNEXPECTED_TYPE));
    let mut h = Harness::legacy();
    h.connect();
    h.send(json!({"type": "ka"}));
    h.assert_closed(4400, Some(reason::UNEXPECTED_TYPE));
}

#[test]
fn missing_or_wrong_typed_id_closes_4400() {
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "subscribe", "payload": {"query": "{ a }"}}));
    h.assert_closed(4400, Some(reason::MISSING_ID));
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "subscribe", "id": 1, "payload": {"query": "{ a }"}}));
    h.assert_closed(4400, Some(reason::ID_NOT_STRING));
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "complete", "id": ""}));
    h.assert_closed(4400, Some(reason::EMPTY_ID));
}

#[test]
fn id_longer_than_max_id_bytes_closes_4400() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe(&"x".repeat(128));
    h.send(json!({"type": "subscribe", "id": "y".repeat(129), "payload": {"query": "{ a }"}}));
    h.assert_closed(4400, Some(reason::ID_TOO_LONG));
}

#[test]
fn non_object_subscribe_payload_closes_4400() {
    for (payload, expected) in [
        (Value::Null, reason::PAYLOAD_NOT_OBJECT),
        (json!("{ a }"), reason::PAYLOAD_NOT_OBJECT),
        (json!({}), reason::MISSING_QUERY),
        (json!({"query": 1}), reason::QUERY_NOT_STRING),
        (
            json!({"query": "{ a }", "operationName": 1}),
            reason::OPERATION_NAME_NOT_STRING,
        ),
        (
            json!({"query": "{ a }", "variables": [1]}),
            reason::VARIABLES_NOT_OBJECT,
        ),
        (
            json!({"query": "{ a }", "extensions": "x"}),
            reason::EXTENSIONS_NOT_OBJECT,
        ),
    ] {
        let mut h = Harness::transport();
        h.connect();
        h.send(json!({"type": "subscribe", "id": "1", "payload": payload}));
        h.assert_closed(4400, Some(expected));
    }
    let mut h = Harness::transport();
    h.text(r#"{"type":"subscribe","id":"1"}"#);
    h.assert_closed(4400, Some(reason::PAYLOAD_NOT_OBJECT));
}

#[test]
fn non_object_init_or_ping_payload_closes_4400() {
    for message in [
        json!({"type": "connection_init", "payload": "token"}),
        json!({"type": "ping", "payload": [1]}),
        json!({"type": "pong", "payload": 2}),
    ] {
        let mut h = Harness::transport();
        h.send(message);
        h.assert_closed(4400, Some(reason::PAYLOAD_NOT_OBJECT));
    }
}

#[test]
fn binary_frame_closes_4400() {
    let mut h = Harness::transport();
    h.binary(br#"{"type":"connection_init"}"#);
    h.assert_closed(4400, Some(reason::BINARY_FRAME));
}

#[test]
fn frame_over_max_frame_bytes_closes_1009() {
    let mut h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            max_frame_bytes: 64,
            ..Config::default()
        },
    );
    h.connect();
    let exactly = format!(
        r#"{{"type":"ping","payload":{{"p":"{}"}}}}"#,
        "x".repeat(64 - 34)
    );
    assert_eq!(exactly.len(), 64);
    h.text(&exactly);
    assert!(h.close.is_none());
    h.text(&format!("{exactly} "));
    h.assert_closed(1009, Some("Message too big"));
    let mut h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            max_frame_bytes: 4,
            ..Config::default()
        },
    );
    h.binary(&[0; 5]);
    h.assert_closed(close::MESSAGE_TOO_BIG, None);
}

// ----- ping / pong -----

#[test]
fn ping_is_answered_by_pong() {
    let mut h = Harness::transport();
    h.send(json!({"type": "ping"}));
    assert_eq!(h.log, vec![r#"{"type":"pong"}"#]);
    assert_eq!(h.take_events(), vec![Event::Ping { payload: None }]);
    h.send(json!({"type": "ping", "payload": {"t": 1}}));
    assert_eq!(h.log[1], r#"{"type":"pong"}"#, "the pong echoes nothing");
    assert_eq!(
        h.take_events(),
        vec![Event::Ping {
            payload: Some(json!({"t": 1}))
        }]
    );
}

#[test]
fn pong_is_never_answered() {
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "pong", "payload": {"unsolicited": true}}));
    assert!(h.sent.is_empty());
    assert_eq!(
        h.take_events(),
        vec![Event::Pong {
            payload: Some(json!({"unsolicited": true}))
        }]
    );
}

#[test]
fn send_ping_sends_ping_with_optional_payload() {
    let mut h = Harness::transport();
    h.connect();
    h.conn.send_ping(Some(json!({"t": 1}))).unwrap();
    h.conn.send_ping(None).unwrap();
    h.pump();
    assert_eq!(
        h.take_sent(),
        vec![
            json!({"type": "ping", "payload": {"t": 1}}),
            json!({"type": "ping"})
        ]
    );
    assert!(matches!(
        h.conn.send_ping(Some(json!(1))),
        Err(UsageError::InvalidPayload(_))
    ));
}

// ----- operations -----

#[test]
fn client_complete_stops_the_operation_and_later_send_next_is_unknown_operation() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.send(json!({"type": "complete", "id": "1"}));
    assert_eq!(h.take_events(), vec![Event::Complete { id: "1".into() }]);
    assert!(!h.conn.is_active("1"));
    assert_eq!(
        h.conn.send_next("1", br#"{"data":{}}"#),
        Err(UsageError::UnknownOperation { id: "1".into() })
    );
    assert_eq!(
        h.conn.send_complete("1"),
        Err(UsageError::UnknownOperation { id: "1".into() })
    );
    h.pump();
    assert!(h.sent.is_empty(), "nothing is sent for a stopped operation");
}

#[test]
fn complete_of_unknown_id_is_ignored() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_complete("1").unwrap();
    h.send(json!({"type": "complete", "id": "1"}));
    h.send(json!({"type": "complete", "id": "never"}));
    assert!(h.take_events().is_empty());
    assert!(h.close.is_none());
}

#[test]
fn send_next_sends_next_with_the_payload_spliced() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_next("1", br#"{"data":{"n":1}}"#).unwrap();
    h.conn
        .send_next("1", br#" {"data":null,"errors":[{"message":"e"}]} "#)
        .unwrap();
    h.pump();
    assert_eq!(
        h.log,
        vec![
            r#"{"type":"next","id":"1","payload":{"data":{"n":1}}}"#,
            r#"{"type":"next","id":"1","payload": {"data":null,"errors":[{"message":"e"}]} }"#,
        ]
    );
    assert!(h.conn.is_active("1"), "next does not end the operation");
}

#[test]
fn send_next_rejects_payloads_that_are_not_objects() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    for bad in [&b""[..], b"[]", b"null", b"{", b"\xff{}"] {
        assert!(matches!(
            h.conn.send_next("1", bad),
            Err(UsageError::InvalidPayload(_))
        ));
    }
    assert!(matches!(
        h.conn.send_error("1", b"{}"),
        Err(UsageError::InvalidPayload(_))
    ));
    h.pump();
    assert!(h.sent.is_empty());
    assert!(h.conn.is_active("1"));
}

#[test]
fn server_error_ends_the_operation() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_error("1", br#"[{"message":"bad"}]"#).unwrap();
    h.pump();
    assert_eq!(
        h.take_sent(),
        vec![json!({"type": "error", "id": "1", "payload": [{"message": "bad"}]})]
    );
    assert!(!h.conn.is_active("1"));
    assert!(matches!(
        h.conn.send_complete("1"),
        Err(UsageError::UnknownOperation { .. })
    ));
}

#[test]
fn server_complete_ends_the_operation() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_complete("1").unwrap();
    h.pump();
    assert_eq!(h.log, vec![r#"{"type":"complete","id":"1"}"#]);
    assert_eq!(h.conn.active_count(), 0);
    assert!(matches!(
        h.conn.send_next("1", b"{}"),
        Err(UsageError::UnknownOperation { .. })
    ));
}

#[test]
fn ids_are_json_escaped() {
    let mut h = Harness::transport();
    h.connect();
    let id = "a\"b\\c\nd\u{1}é😀";
    h.subscribe(id);
    h.conn.send_next(id, b"{}").unwrap();
    h.conn.send_error(id, b"[]").unwrap();
    h.pump();
    let sent = h.take_sent();
    assert_eq!(sent[0]["id"], id);
    assert_eq!(sent[1]["id"], id);
    let mut out = Vec::new();
    encode_next(Protocol::GraphqlTransportWs, id, b"{}", &mut out);
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        json!({"type": "next", "id": id, "payload": {}})
    );
}

#[test]
fn encode_next_appends_one_frame_sized_exactly() {
    let mut out = Vec::new();
    encode_next(
        Protocol::GraphqlTransportWs,
        "7",
        br#"{"data":1}"#,
        &mut out,
    );
    assert_eq!(out, br#"{"type":"next","id":"7","payload":{"data":1}}"#);
    assert_eq!(out.len(), out.capacity());
    encode_next(Protocol::GraphqlWs, "8", br#"{"data":2}"#, &mut out);
    assert_eq!(
        &out[45..],
        br#"{"type":"data","id":"8","payload":{"data":2}}"#
    );
}

// ----- usage errors -----

#[test]
fn accept_before_connection_init_is_a_usage_error() {
    let mut h = Harness::transport();
    assert_eq!(h.conn.accept(None), Err(UsageError::NotInitialised));
}

#[test]
fn accept_twice_is_a_usage_error() {
    let mut h = Harness::transport();
    h.connect();
    assert_eq!(h.conn.accept(None), Err(UsageError::AlreadyAcknowledged));
    assert_eq!(h.conn.reject("no"), Err(UsageError::AlreadyAcknowledged));
}

#[test]
fn accept_with_a_non_object_payload_is_a_usage_error() {
    let mut h = Harness::transport();
    h.send(json!({"type": "connection_init"}));
    assert!(matches!(
        h.conn.accept(Some(json!("hi"))),
        Err(UsageError::InvalidPayload(_))
    ));
    assert!(!h.conn.is_acknowledged());
    h.conn.accept(None).unwrap();
}

#[test]
fn operation_commands_before_ack_are_not_acknowledged() {
    let mut h = Harness::transport();
    assert_eq!(
        h.conn.send_next("1", b"{}"),
        Err(UsageError::NotAcknowledged)
    );
    assert_eq!(
        h.conn.send_error("1", b"[]"),
        Err(UsageError::NotAcknowledged)
    );
    assert_eq!(h.conn.send_complete("1"), Err(UsageError::NotAcknowledged));
}

#[test]
fn commands_after_close_are_closed_errors() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.close(close::GOING_AWAY, "Going away");
    assert_eq!(h.conn.send_next("1", b"{}"), Err(UsageError::Closed));
    assert_eq!(h.conn.send_error("1", b"[]"), Err(UsageError::Closed));
    assert_eq!(h.conn.send_complete("1"), Err(UsageError::Closed));
    assert_eq!(h.conn.send_ping(None), Err(UsageError::Closed));
    assert_eq!(h.conn.accept(None), Err(UsageError::Closed));
    assert_eq!(h.conn.reject("x"), Err(UsageError::Closed));
    h.pump();
    h.assert_closed(1001, Some("Going away"));
}

// ----- close -----

#[test]
fn application_close_uses_the_given_code_and_reason() {
    let mut h = Harness::transport();
    h.connect();
    h.conn
        .close(close::TOO_MANY_INIT_REQUESTS, "Rate limit exceeded");
    h.conn.close(close::INTERNAL, "second close is ignored");
    h.pump();
    h.assert_closed(4429, Some("Rate limit exceeded"));
    assert_eq!(h.conn.violation(), None);
}

#[test]
fn close_reason_is_cut_to_123_bytes() {
    let close = Close::new(4500, "é".repeat(100));
    assert_eq!(close.reason.len(), 122);
    assert_eq!(Close::new(1000, "x".repeat(200)).reason.len(), 123);
}

#[test]
fn frames_queued_before_close_are_flushed_first() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.conn.send_next("1", br#"{"data":1}"#).unwrap();
    h.conn.close(close::GOING_AWAY, "bye");
    assert_eq!(h.conn.poll_close(), None, "a frame is still queued");
    assert!(h.conn.poll_transmit().is_some());
    assert_eq!(h.conn.poll_close(), Some(Close::new(1001, "bye")));
    assert_eq!(h.conn.poll_close(), None, "the close is handed out once");
}

#[test]
fn nothing_is_sent_after_close() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.text("{oops");
    h.assert_closed(4400, None);
    h.send(json!({"type": "ping"}));
    h.send(json!({"type": "subscribe", "id": "2", "payload": {"query": "{ a }"}}));
    h.binary(b"x");
    h.now += Duration::from_secs(3600);
    h.conn.handle_timeout(h.now);
    let _ = h.conn.send_ping(None);
    let _ = h.conn.send_next("1", b"{}");
    h.conn.close(1000, "again");
    h.pump();
    assert!(h.sent.is_empty());
    assert!(h.events.is_empty());
    assert_eq!(h.close.as_ref().unwrap().code, 4400);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn close_drops_pending_events_and_operations() {
    let mut h = Harness::transport();
    h.connect();
    h.send(json!({"type": "subscribe", "id": "1", "payload": {"query": "{ a }"}}));
    h.conn.handle_text("{}", h.now); // violation before the app polled the Subscribe
    assert_eq!(h.conn.poll_event(), None);
    assert_eq!(h.conn.active_count(), 0);
    assert!(!h.conn.is_active("1"));
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Connection>();
    check::<Event>();
    check::<Close>();
    check::<Config>();
    check::<UsageError>();
    check::<Violation>();
    check::<Protocol>();
    check::<SubscribePayload>();
}

#[test]
fn every_violation_names_its_close_code() {
    let cases = [
        (Violation::MalformedJson, 4400),
        (Violation::BinaryFrame, 4400),
        (Violation::IdTooLong, 4400),
        (Violation::Unauthorized, 4401),
        (Violation::InitTimeout, 4408),
        (Violation::SubscriberAlreadyExists { id: "x".into() }, 4409),
        (Violation::TooManyInitialisationRequests, 4429),
        (Violation::MessageTooBig, 1009),
        (Violation::KeepaliveTimeout, 1011),
    ];
    for (v, code) in cases {
        assert_eq!(v.close_code(), code, "{v:?}");
        assert!(!v.reason().is_empty());
        assert_eq!(v.to_close().code, code);
    }
    assert_eq!(
        Violation::SubscriberAlreadyExists { id: "x".into() }.to_string(),
        "Subscriber for x already exists"
    );
    assert_eq!(Violation::InitTimeout.to_string(), reason::INIT_TIMEOUT);
}

// ----- keepalive -----

#[test]
fn keepalive_pings_every_interval_after_ack() {
    let mut h = Harness::transport();
    h.auto_pong = true;
    h.connect();
    for n in 1..=5u64 {
        h.jump();
        assert_eq!(h.elapsed(), Duration::from_secs(12 * n));
        assert_eq!(h.sent_types(), vec!["ping"]);
    }
    assert!(h.close.is_none());
}

#[test]
fn missing_pong_closes_1011() {
    let mut h = Harness::transport();
    h.connect();
    h.jump();
    assert_eq!(h.sent_types(), vec!["ping"]);
    h.jump();
    assert_eq!(h.elapsed(), Duration::from_secs(22));
    h.assert_closed(1011, Some("Keepalive timeout"));
    assert_eq!(h.conn.violation(), Some(&Violation::KeepaliveTimeout));
}

#[test]
fn any_frame_counts_as_alive_after_a_ping() {
    let mut h = Harness::transport();
    h.connect();
    h.subscribe("1");
    h.jump(); // ping at 12 s
    h.take_sent();
    h.advance(Duration::from_secs(9));
    h.send(json!({"type": "complete", "id": "1"}));
    h.run_until(h.start + Duration::from_secs(23));
    assert!(h.close.is_none());
}

// ----- legacy graphql-ws -----

#[test]
fn legacy_accept_sends_connection_ack_then_ka() {
    let mut h = Harness::legacy();
    h.send(json!({"type": "connection_init", "payload": {"authToken": "t"}}));
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::ConnectionInit { payload: Some(_) }]
    ));
    h.conn.accept(None).unwrap();
    h.pump();
    assert_eq!(
        h.log,
        vec![r#"{"type":"connection_ack"}"#, r#"{"type":"ka"}"#]
    );
}

#[test]
fn legacy_accept_without_keepalive_sends_no_ka() {
    let mut h = Harness::new(
        Protocol::GraphqlWs,
        Config {
            keepalive_interval: None,
            ..Config::default()
        },
    );
    h.send(json!({"type": "connection_init"}));
    h.conn.accept(None).unwrap();
    h.pump();
    assert_eq!(h.sent_types(), vec!["connection_ack"]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn legacy_reject_sends_connection_error_then_closes_4403() {
    let mut h = Harness::legacy();
    h.send(json!({"type": "connection_init"}));
    h.conn.reject("bad token").unwrap();
    h.pump();
    assert_eq!(
        h.take_sent(),
        vec![json!({"type": "connection_error", "payload": {"message": "bad token"}})]
    );
    h.assert_closed(4403, Some("bad token"));
}

#[test]
fn legacy_start_maps_to_subscribe_and_stop_to_complete() {
    let mut h = Harness::legacy();
    h.connect();
    h.send(json!({"type": "start", "id": "1", "payload": {"query": "subscription { s }", "variables": {"v": 1}}}));
    let events = h.take_events();
    let [Event::Subscribe { id, payload }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (id.as_str(), payload.query.as_str()),
        ("1", "subscription { s }")
    );
    h.send(json!({"type": "stop", "id": "1"}));
    assert_eq!(h.take_events(), vec![Event::Complete { id: "1".into() }]);
    assert!(!h.conn.is_active("1"));
}

#[test]
fn legacy_start_before_ack_closes_4401() {
    let mut h = Harness::legacy();
    h.send(json!({"type": "start", "id": "1", "payload": {"query": "{ a }"}}));
    assert_eq!(
        h.take_sent(),
        vec![json!({"type": "connection_error", "payload": {"message": "Unauthorized"}})]
    );
    h.assert_closed(4401, Some("Unauthorized"));
}

#[test]
fn legacy_duplicate_start_restarts_the_operation() {
    let mut h = Harness::legacy();
    h.connect();
    h.subscribe("1");
    h.send(json!({"type": "start", "id": "1", "payload": {"query": "{ b }"}}));
    let events = h.take_events();
    assert!(matches!(
        events.as_slice(),
        [Event::Complete { id: a }, Event::Subscribe { id: b, .. }] if a == "1" && b == "1"
    ));
    assert!(h.conn.is_active("1"));
    assert!(h.close.is_none());
}

#[test]
fn legacy_next_is_data_and_complete_is_complete() {
    let mut h = Harness::legacy();
    h.connect();
    h.subscribe("1");
    h.conn.send_next("1", br#"{"data":{"s":1}}"#).unwrap();
    h.conn.send_complete("1").unwrap();
    h.pump();
    assert_eq!(
        h.log[h.log.len() - 2..],
        [
            r#"{"type":"data","id":"1","payload":{"data":{"s":1}}}"#,
            r#"{"type":"complete","id":"1"}"#
        ]
    );
}

#[test]
fn legacy_error_is_sent_as_data_with_errors_then_complete() {
    let mut h = Harness::legacy();
    h.connect();
    h.subscribe("1");
    h.conn
        .send_error("1", br#"[{"message":"invalid"}]"#)
        .unwrap();
    h.pump();
    assert_eq!(
        h.take_sent(),
        vec![
            json!({"type": "data", "id": "1", "payload": {"errors": [{"message": "invalid"}]}}),
            json!({"type": "complete", "id": "1"}),
        ]
    );
    assert!(!h.conn.is_active("1"));
}

#[test]
fn legacy_connection_terminate_closes_1000() {
    let mut h = Harness::legacy();
    h.connect();
    h.subscribe("1");
    h.send(json!({"type": "connection_terminate"}));
    assert!(h.sent.is_empty());
    h.assert_closed(1000, Some("Normal Closure"));
}

#[test]
fn legacy_keepalive_sends_ka_and_never_times_out() {
    let mut h = Harness::legacy();
    h.connect();
    for n in 1..=10u64 {
        h.jump();
        assert_eq!(h.elapsed(), Duration::from_secs(12 * n));
        assert_eq!(h.sent_types(), vec!["ka"]);
    }
    assert!(h.close.is_none());
}

#[test]
fn legacy_ping_and_pong_are_unknown_types() {
    let mut h = Harness::legacy();
    h.send(json!({"type": "ping"}));
    h.assert_closed(4400, Some(reason::UNKNOWN_TYPE));
}

#[test]
fn legacy_violation_sends_connection_error_before_the_close() {
    let mut h = Harness::legacy();
    h.text("nope");
    assert_eq!(
        h.take_sent(),
        vec![json!({"type": "connection_error", "payload": {"message": reason::MALFORMED_JSON}})]
    );
    h.assert_closed(4400, Some(reason::MALFORMED_JSON));
}

#[test]
fn legacy_binary_frame_is_read_as_utf8_text() {
    let mut h = Harness::legacy();
    h.binary(br#"{"type":"connection_init"}"#);
    assert_eq!(
        h.take_events(),
        vec![Event::ConnectionInit { payload: None }]
    );
    h.binary(b"\xff\xfe");
    h.assert_closed(4400, Some(reason::INVALID_UTF8));
}

#[test]
fn legacy_init_timeout_closes_4408() {
    let mut h = Harness::legacy();
    h.jump();
    h.assert_closed(4408, Some(reason::INIT_TIMEOUT));
}
