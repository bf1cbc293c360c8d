//! Scenarios over simulated time: the harness jumps the clock to `poll_timeout()`.

mod harness;

use std::time::Duration;

use harness::Harness;
use serde_json::json;
use subs_protocol::{Config, Protocol, close};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_client_that_answers_pings_stays_connected_for_an_hour() {
    let mut h = Harness::transport();
    h.auto_pong = true;
    h.connect();
    h.subscribe("1");
    h.run_until(h.start + secs(3600));
    assert!(h.close.is_none());
    let pings = h.log.iter().filter(|f| f.contains("\"ping\"")).count();
    assert_eq!(pings, 3600 / 12);
    assert!(h.conn.is_active("1"));
}

#[test]
fn a_client_that_stops_answering_is_closed_one_timeout_after_the_ping() {
    let mut h = Harness::transport();
    h.auto_pong = true;
    h.connect();
    h.run_until(h.start + secs(60)); // pings at 12, 24, 36, 48, 60 answered
    h.auto_pong = false;
    h.run_until(h.start + secs(600));
    // Ping at 72 unanswered: closed at 82.
    h.assert_closed(close::KEEPALIVE_TIMEOUT, None);
    assert_eq!(h.elapsed(), secs(82));
}

#[test]
fn keepalive_timeout_longer_than_the_interval_keeps_the_first_deadline() {
    let mut h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            keepalive_interval: Some(secs(5)),
            keepalive_timeout: Some(secs(12)),
            ..Config::default()
        },
    );
    h.connect();
    h.run_until(h.start + secs(100));
    // Pings at 5, 10, 15; the deadline of the first (5 + 12) closes at 17.
    assert_eq!(h.elapsed(), secs(17));
    assert_eq!(h.close.as_ref().map(|c| c.code), Some(1011));
    assert_eq!(h.log.iter().filter(|f| f.contains("ping")).count(), 3);
}

#[test]
fn no_keepalive_timeout_when_disabled() {
    let mut h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            keepalive_timeout: None,
            ..Config::default()
        },
    );
    h.connect();
    h.run_until(h.start + secs(120));
    assert!(h.close.is_none());
    assert_eq!(h.sent_types().len(), 10);
}

#[test]
fn init_timeout_counts_from_the_handshake() {
    let mut h = Harness::transport();
    h.advance(secs(2));
    h.send(json!({"type": "connection_init"}));
    h.run_until(h.start + secs(10));
    h.assert_closed(close::INIT_TIMEOUT, Some(close::reason::INIT_TIMEOUT));
    assert_eq!(h.elapsed(), secs(3));
}

#[test]
fn keepalive_starts_at_accept() {
    let mut h = Harness::transport();
    h.advance(secs(2));
    h.connect();
    assert_eq!(h.conn.poll_timeout(), Some(h.start + secs(14)));
}

#[test]
fn an_application_ping_arms_the_keepalive_timeout() {
    let mut h = Harness::new(
        Protocol::GraphqlTransportWs,
        Config {
            keepalive_interval: None,
            ..Config::default()
        },
    );
    h.connect();
    assert_eq!(h.conn.poll_timeout(), None);
    h.advance(secs(1));
    h.conn.handle_timeout(h.now); // the machine knows the time only from its inputs
    h.conn.send_ping(None).unwrap();
    assert_eq!(h.conn.poll_timeout(), Some(h.start + secs(11)));
    h.jump();
    h.assert_closed(1011, None);
}

#[test]
fn handle_timeout_before_the_deadline_does_nothing() {
    let mut h = Harness::transport();
    h.advance(secs(2));
    h.conn.handle_timeout(h.now);
    h.pump();
    assert!(h.close.is_none());
    assert_eq!(h.conn.poll_timeout(), Some(h.start + secs(3)));
}
