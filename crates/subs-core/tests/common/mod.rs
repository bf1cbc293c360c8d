//! Test harness shared by the engine_* and session_* tests: a service-desk
//! schema and a `Client` that drives a `Session` the way a transport does.
#![allow(dead_code)] // each test file uses a different subset of the helpers

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use subs_core::graphql::Schema;
use subs_core::protocol::{Close, Protocol};
use subs_core::security::ConnectionFacts;
use subs_core::{Engine, EngineBuilder, FieldBinding, Session};

pub(crate) const SDL: &str = r#"
type Query { hello(who: String): String }
enum Status { UP DOWN }
type User { id: ID! name: String! }
interface Node { id: ID! }
type Service implements Node { id: ID! name: String! status: Status! owner: User }
type ServiceRequest implements Node { id: ID! title: String! serviceId: ID! }
union Update = Service | ServiceRequest
type Subscription {
  serviceUpdated(serviceId: ID): Service!
  newServiceRequest: ServiceRequest!
  countdown(from: Int!): Int!
  ticks: Int!
  updates: Update
}
"#;

pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) fn schema() -> Schema {
    Schema::parse(SDL).expect("service-desk schema is valid")
}

/// A builder with `serviceUpdated` filtering on the event's `id`.
pub(crate) fn builder() -> EngineBuilder {
    Engine::builder(schema()).bind(
        "serviceUpdated",
        FieldBinding::default_topic().argument("serviceId", "id"),
    )
}

pub(crate) fn engine() -> Engine {
    builder().build().expect("engine builds")
}

pub(crate) fn service(id: impl Into<Value>, name: &str) -> Value {
    json!({"id": id.into(), "name": name, "status": "UP", "owner": {"id": "u1", "name": "Ann", "secret": "x"}, "internal": "raw"})
}

/// One client connection: a `Session` plus the frames it has produced.
pub(crate) struct Client {
    pub(crate) session: Session,
    raw: VecDeque<String>,
    /// Whether collected frames count as written (as a driver confirms a
    /// flushed batch); off to model a socket that never takes them.
    pub(crate) confirm_writes: bool,
}

impl Client {
    pub(crate) fn new(engine: &Engine) -> Self {
        Self::with_protocol(engine, Protocol::GraphqlTransportWs)
    }

    /// A client around a session built by the test itself.
    pub(crate) fn from_session(session: Session) -> Self {
        Self {
            session,
            raw: VecDeque::new(),
            confirm_writes: true,
        }
    }

    pub(crate) fn with_protocol(engine: &Engine, protocol: Protocol) -> Self {
        Self {
            session: Session::new(engine, protocol, ConnectionFacts::default(), Instant::now()),
            raw: VecDeque::new(),
            confirm_writes: true,
        }
    }

    fn collect(&mut self) {
        while let Some(frame) = self.session.poll_transmit() {
            self.raw.push_back(frame);
        }
        if self.confirm_writes {
            self.session.mark_written();
        }
    }

    /// Sends one client message.
    pub(crate) async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    /// Sends one frame and lets every host hook it started answer (the
    /// session runs hooks on their own tasks).
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.session.handle_text(text, Instant::now());
        self.settle().await;
    }

    /// Waits until no host hook of the session is running, then collects.
    pub(crate) async fn settle(&mut self) {
        while self.session.pending_hooks() > 0 {
            tokio::time::timeout(WAIT, self.session.ready())
                .await
                .expect("a host hook answers in time");
        }
        self.collect();
    }

    /// `connection_init` and the `connection_ack` that must follow.
    pub(crate) async fn init(&mut self) -> Value {
        self.init_with(json!({})).await
    }

    pub(crate) async fn init_with(&mut self, payload: Value) -> Value {
        // Both protocols open with `connection_init`.
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        self.ready()
            .into_iter()
            .find(|f| f["type"] == "connection_ack")
            .expect("connection_ack")
    }

    pub(crate) async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = match self.session.protocol() {
            Protocol::GraphqlTransportWs => "subscribe",
            Protocol::GraphqlWs => "start",
            other => panic!("{other:?} has no frames"),
        };
        self.send(
            json!({"type": kind, "id": id, "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    pub(crate) async fn complete(&mut self, id: &str) {
        let kind = match self.session.protocol() {
            Protocol::GraphqlTransportWs => "complete",
            Protocol::GraphqlWs => "stop",
            other => panic!("{other:?} has no frames"),
        };
        self.send(json!({"type": kind, "id": id})).await;
    }

    /// Frames already produced, without waiting and without flushing.
    pub(crate) fn ready(&mut self) -> Vec<Value> {
        self.ready_raw().iter().map(|f| parse(f)).collect()
    }

    pub(crate) fn ready_raw(&mut self) -> Vec<String> {
        self.collect();
        self.raw.drain(..).collect()
    }

    /// Flushes what the dispatcher queued now, without waiting.
    pub(crate) fn flush(&mut self) -> Vec<Value> {
        while self.session.flush_outbound() > 0 {
            self.collect();
        }
        self.ready()
    }

    /// Waits (up to `WAIT`) for at least one frame, then returns all frames available.
    pub(crate) async fn recv_frames(&mut self) -> Vec<Value> {
        self.recv_raw(1, WAIT)
            .await
            .iter()
            .map(|f| parse(f))
            .collect()
    }

    /// Waits until `n` frames arrived or the deadline passed; returns what came.
    pub(crate) async fn recv_n(&mut self, n: usize) -> Vec<Value> {
        self.recv_raw(n, WAIT)
            .await
            .iter()
            .map(|f| parse(f))
            .collect()
    }

    /// Everything that arrives within `window` (for asserting that nothing comes).
    pub(crate) async fn recv_for(&mut self, window: Duration) -> Vec<Value> {
        self.recv_raw(usize::MAX, window)
            .await
            .iter()
            .map(|f| parse(f))
            .collect()
    }

    pub(crate) async fn recv_raw(&mut self, n: usize, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        loop {
            self.session.flush_outbound();
            self.collect();
            out.extend(self.raw.drain(..));
            if out.len() >= n || self.session.is_closed() {
                return out;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return out;
            }
            let _ = tokio::time::timeout(deadline - now, self.session.ready()).await;
        }
    }

    /// The close the session asks for, after draining its frames.
    pub(crate) fn expect_close(&mut self) -> (u16, String) {
        self.collect();
        self.raw.clear();
        let Close { code, reason } = self.session.poll_close().expect("the session closes");
        (code, reason.into_owned())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.session.is_closed()
    }
}

pub(crate) fn parse(frame: &str) -> Value {
    serde_json::from_str(frame).unwrap_or_else(|e| panic!("frame is not JSON ({e}): {frame}"))
}

/// The payloads of `next` (legacy `data`) frames for `id`, in order.
pub(crate) fn nexts(frames: &[Value], id: &str) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| (f["type"] == "next" || f["type"] == "data") && f["id"] == id)
        .map(|f| f["payload"].clone())
        .collect()
}

/// The raw payload text of a `next` frame (everything after `"payload":`).
pub(crate) fn raw_payload(frame: &str) -> &str {
    let start = frame.find(",\"payload\":").expect("frame has a payload") + ",\"payload\":".len();
    &frame[start..frame.len() - 1]
}

/// Polls `condition` until it holds or `WAIT` passes.
pub(crate) async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) const SERVICE_QUERY: &str =
    "subscription($id: ID) { serviceUpdated(serviceId: $id) { id name status owner { name } } }";
