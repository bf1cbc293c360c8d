//! A simulated client and clock around a [`Connection`]: time only moves when
//! the test moves it, usually by jumping to `poll_timeout()`.

// Each test crate includes this module and uses a different part of it.
// `pub` items of a test-only module are reached from the test crates that include it.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use subs_protocol::{Close, Config, Connection, Event, Protocol};

/// The machine plus a scripted client and a simulated clock.
pub struct Harness {
    pub conn: Connection,
    /// Simulated time of the last input.
    pub now: Instant,
    pub start: Instant,
    /// Frames the server sent, parsed, not yet taken by the test.
    pub sent: Vec<Value>,
    /// Every raw frame ever sent, in order.
    pub log: Vec<String>,
    pub events: Vec<Event>,
    pub close: Option<Close>,
    /// The client answers every server `ping` with a `pong` at once.
    pub auto_pong: bool,
}

impl Harness {
    pub fn new(protocol: Protocol, config: Config) -> Self {
        // The one clock read of the tests: a base instant, from which simulated time only advances.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        Harness {
            conn: Connection::new(protocol, config, start),
            now: start,
            start,
            sent: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            close: None,
            auto_pong: false,
        }
    }

    pub fn transport() -> Self {
        Self::new(Protocol::GraphqlTransportWs, Config::default())
    }

    pub fn legacy() -> Self {
        Self::new(Protocol::GraphqlWs, Config::default())
    }

    /// The client sends a text frame now.
    pub fn text(&mut self, text: &str) {
        self.conn.handle_text(text, self.now);
        self.pump();
    }

    /// The client sends a JSON message now.
    // Taken by value so tests can write `h.send(json!(..))`.
    #[allow(clippy::needless_pass_by_value)]
    pub fn send(&mut self, message: Value) {
        self.text(&message.to_string());
    }

    /// The client sends a binary frame now.
    pub fn binary(&mut self, data: &[u8]) {
        self.conn.handle_binary(data, self.now);
        self.pump();
    }

    /// Drain every output of the machine, checking the output invariants.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.conn.poll_event() {
                assert!(self.close.is_none(), "event after close: {event:?}");
                self.events.push(event);
                progressed = true;
            }
            while let Some(frame) = self.conn.poll_transmit() {
                assert!(self.close.is_none(), "frame after close: {frame}");
                let value: Value = serde_json::from_str(&frame)
                    .unwrap_or_else(|e| panic!("server sent invalid JSON {frame:?}: {e}"));
                self.log.push(frame);
                if self.auto_pong && value["type"] == "ping" {
                    self.conn.handle_text(r#"{"type":"pong"}"#, self.now);
                }
                self.sent.push(value);
                progressed = true;
            }
            if let Some(close) = self.conn.poll_close() {
                assert!(self.close.is_none(), "second close: {close:?}");
                self.close = Some(close);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        // The close is handed out as soon as the queue is drained, and nothing follows it.
        assert_eq!(self.conn.is_closed(), self.close.is_some());
        if self.close.is_some() {
            assert_eq!(self.conn.poll_transmit(), None);
            assert_eq!(self.conn.poll_close(), None);
            assert_eq!(self.conn.poll_event(), None);
        }
    }

    /// Jump the clock to the next deadline and fire it. `None` if there is none.
    pub fn jump(&mut self) -> Option<Instant> {
        let at = self.conn.poll_timeout()?;
        assert!(at >= self.now, "deadline in the past");
        self.now = at;
        self.conn.handle_timeout(at);
        self.pump();
        Some(at)
    }

    /// Jump from deadline to deadline until `until` (or the close), then set the clock to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(at) = self.conn.poll_timeout() {
            if at > until || self.close.is_some() {
                break;
            }
            self.jump();
        }
        if self.now < until && self.close.is_none() {
            self.now = until;
        }
    }

    /// Move the clock forward without firing anything.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn take_sent(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.sent)
    }

    /// The `type`s of the frames sent since the last take.
    pub fn sent_types(&mut self) -> Vec<String> {
        self.take_sent()
            .into_iter()
            .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// `connection_init`, then the application accepts; clears outputs.
    pub fn connect(&mut self) {
        self.send(json!({"type": "connection_init"}));
        assert!(matches!(
            self.take_events().as_slice(),
            [Event::ConnectionInit { .. }]
        ));
        self.conn.accept(None).unwrap();
        self.pump();
        self.take_sent();
        self.log.clear();
    }

    /// Subscribe `id` (protocol-appropriate message type); clears outputs.
    pub fn subscribe(&mut self, id: &str) {
        let kind = match self.conn.protocol() {
            Protocol::GraphqlTransportWs => "subscribe",
            Protocol::GraphqlWs => "start",
            other => panic!("{other:?} has no frames"),
        };
        self.send(json!({"type": kind, "id": id, "payload": {"query": "subscription { s }"}}));
        assert!(
            matches!(self.take_events().as_slice(), [.., Event::Subscribe { id: got, .. }] if got == id),
            "no Subscribe for {id}"
        );
        assert!(self.conn.is_active(id));
    }

    /// Assert the connection closed with `code` (and `reason` when given).
    #[track_caller]
    pub fn assert_closed(&self, code: u16, reason: Option<&str>) {
        let close = self.close.as_ref().expect("connection not closed");
        assert_eq!(close.code, code, "close {close:?}");
        if let Some(reason) = reason {
            assert_eq!(close.reason, reason);
        }
        assert!(self.conn.is_closed());
        assert_eq!(self.conn.active_count(), 0);
        assert_eq!(self.conn.poll_timeout(), None);
    }
}
