//! The connection machine over HTTP: the request is the initialisation,
//! operations arrive by `handle_request`, transmits are body chunks.

use std::time::{Duration, Instant};

use subs_protocol::{Config, Connection, Event, Protocol, SubscribePayload, UsageError, close};

/// The machine reads no clock; the test picks a starting instant once.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn payload() -> SubscribePayload {
    SubscribePayload {
        query: "subscription { s }".into(),
        ..SubscribePayload::default()
    }
}

fn drain(conn: &mut Connection) -> String {
    let mut out = String::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.push_str(&chunk);
    }
    out
}

/// A stream whose request was authenticated: the init event taken, accepted.
fn accepted(protocol: Protocol, now: Instant) -> Connection {
    let mut conn = Connection::new(protocol, Config::default(), now);
    assert_eq!(
        conn.poll_event(),
        Some(Event::ConnectionInit { payload: None })
    );
    assert_eq!(conn.poll_timeout(), None, "no init timeout over HTTP");
    conn.accept(None).unwrap();
    conn
}

#[test]
fn a_distinct_event_stream_carries_one_operation_and_ends_after_it() {
    let now = t0();
    let mut conn = accepted(Protocol::EventStream, now);
    assert_eq!(drain(&mut conn), ":\n\n", "a keepalive at once");
    conn.handle_request("op".into(), payload()).unwrap();
    assert!(matches!(conn.poll_event(), Some(Event::Subscribe { id, .. }) if id == "op"));
    assert_eq!(
        conn.handle_request("two".into(), payload()),
        Err(UsageError::WrongProtocol(
            "this stream carries one operation"
        ))
    );
    conn.send_next("op", br#"{"data":{"s":1}}"#).unwrap();
    conn.send_complete("op").unwrap();
    assert_eq!(
        drain(&mut conn),
        "event: next\ndata: {\"data\":{\"s\":1}}\n\nevent: complete\ndata:\n\n"
    );
    assert_eq!(conn.poll_close().map(|c| c.code), Some(close::NORMAL));
}

#[test]
fn request_errors_arrive_inside_the_accepted_stream() {
    let mut conn = accepted(Protocol::EventStream, t0());
    drain(&mut conn);
    conn.handle_request("op".into(), payload()).unwrap();
    conn.send_error("op", br#"[{"message":"bad"}]"#).unwrap();
    assert_eq!(
        drain(&mut conn),
        "event: next\ndata: {\"errors\":[{\"message\":\"bad\"}]}\n\nevent: complete\ndata:\n\n"
    );
    assert!(conn.is_closed());
}

#[test]
fn a_single_connection_stream_names_each_operation_and_stays_open() {
    let mut conn = accepted(Protocol::EventStreamSingle, t0());
    drain(&mut conn);
    conn.handle_request("a".into(), payload()).unwrap();
    conn.handle_request("b".into(), payload()).unwrap();
    assert_eq!(
        conn.handle_request("a".into(), payload()),
        Err(UsageError::DuplicateOperation { id: "a".into() })
    );
    conn.send_next("a", br#"{"data":1}"#).unwrap();
    conn.send_complete("b").unwrap();
    assert_eq!(
        drain(&mut conn),
        "event: next\ndata: {\"id\":\"a\",\"payload\":{\"data\":1}}\n\nevent: complete\ndata: {\"id\":\"b\"}\n\n"
    );
    assert!(!conn.is_closed());
    // The client's DELETE.
    while conn.poll_event().is_some() {}
    conn.handle_cancel("a");
    assert_eq!(conn.poll_event(), Some(Event::Complete { id: "a".into() }));
    assert!(!conn.is_active("a"));
}

#[test]
fn operations_requested_before_the_acknowledgement_wait_for_it() {
    let mut conn = Connection::new(Protocol::Multipart, Config::default(), t0());
    conn.handle_request("op".into(), payload()).unwrap();
    assert_eq!(
        conn.poll_event(),
        Some(Event::ConnectionInit { payload: None })
    );
    // The application authenticates first, then takes the operation.
    conn.reject("who are you").unwrap();
    assert_eq!(conn.poll_event(), None, "a refused request runs nothing");
    let close = conn.poll_close();
    assert!(close.is_none(), "the fatal part goes first");
    let body = drain(&mut conn);
    assert!(body.contains("{\"payload\":null,\"errors\":[{\"message\":\"who are you\"}]}"));
    assert!(body.ends_with("\r\n--graphql--\r\n"));
    assert_eq!(conn.poll_close().map(|c| c.code), Some(close::FORBIDDEN));
}

#[test]
fn multipart_heartbeats_and_a_fatal_close_ends_the_body_once() {
    let now = t0();
    let mut conn = accepted(Protocol::Multipart, now);
    let heartbeat = "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{}\r\n--graphql";
    assert_eq!(drain(&mut conn), ["\r\n--graphql", heartbeat].concat());
    let at = conn.poll_timeout().expect("a heartbeat is scheduled");
    assert_eq!(at, now + Duration::from_secs(12));
    conn.handle_timeout(at);
    assert_eq!(drain(&mut conn), heartbeat, "no pong is awaited over HTTP");
    assert_eq!(conn.poll_timeout(), Some(at + Duration::from_secs(12)));
    conn.handle_request("op".into(), payload()).unwrap();
    conn.send_next("op", br#"{"data":{}}"#).unwrap();
    conn.close(4500, "Internal server error");
    conn.close(1001, "again");
    let body = drain(&mut conn);
    assert_eq!(body.matches("--graphql--").count(), 1);
    assert!(body.ends_with("[{\"message\":\"Internal server error\"}]}\r\n--graphql--\r\n"));
}

#[test]
fn multipart_completion_ends_the_body_without_an_error() {
    let mut conn = accepted(Protocol::Multipart, t0());
    drain(&mut conn);
    conn.handle_request("op".into(), payload()).unwrap();
    conn.send_complete("op").unwrap();
    assert_eq!(drain(&mut conn), "--\r\n");
    assert_eq!(conn.poll_close().map(|c| c.code), Some(close::NORMAL));
}

#[test]
fn websocket_connections_take_no_http_requests_and_streams_no_frames() {
    let mut ws = Connection::new(Protocol::GraphqlTransportWs, Config::default(), t0());
    assert!(matches!(
        ws.handle_request("x".into(), payload()),
        Err(UsageError::WrongProtocol(_))
    ));
    let mut sse = accepted(Protocol::EventStream, t0());
    drain(&mut sse);
    sse.handle_text(r#"{"type":"connection_init"}"#, t0());
    assert_eq!(sse.poll_event(), None);
    assert_eq!(sse.poll_transmit(), None);
}
