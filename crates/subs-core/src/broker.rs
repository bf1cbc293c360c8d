//! The seam between publishers and the dispatcher. The in-memory broker is the
//! default; Redis and NATS brokers (in subs-adapters) plug in through the same
//! trait without changes to the core.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::engine::EngineInner;
use crate::history::{GapReason, History, Position, ReplayLimits};
use crate::{BrokerError, Error};

/// One published event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// Its payload.
    pub payload: EventPayload,
    /// Its position in the topic's history, when a broker that keeps the
    /// history numbered it ([`BrokerHistory`]); the dispatcher numbers the
    /// others itself.
    pub position: Option<Position>,
}

impl Event {
    /// An event with a JSON value payload.
    pub fn json(topic: impl Into<Arc<str>>, payload: Value) -> Self {
        Self {
            topic: topic.into(),
            payload: EventPayload::Json(Arc::new(payload)),
            position: None,
        }
    }

    /// An event whose payload is already-serialized JSON (from a broker, or a
    /// publisher that has bytes at hand); it is parsed once, at dispatch.
    pub fn bytes(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: EventPayload::Bytes(payload.into()),
            position: None,
        }
    }
}

/// An event payload, as a value or as JSON bytes.
#[derive(Debug, Clone)]
pub enum EventPayload {
    /// A parsed value (in-process publishers).
    Json(Arc<Value>),
    /// Serialized JSON (brokers carry bytes).
    Bytes(Bytes),
}

impl EventPayload {
    /// The payload as a value, parsing bytes if needed.
    pub fn to_value(&self) -> Result<Arc<Value>, serde_json::Error> {
        match self {
            Self::Json(value) => Ok(value.clone()),
            Self::Bytes(bytes) => serde_json::from_slice(bytes).map(Arc::new),
        }
    }

    /// The payload as JSON bytes, serializing a value if needed.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Self::Json(value) => {
                Bytes::from(serde_json::to_vec(value.as_ref()).unwrap_or_else(|_| b"null".to_vec()))
            }
            Self::Bytes(bytes) => bytes.clone(),
        }
    }
}

/// Where a broker hands the events it receives: the local dispatcher.
#[derive(Clone)]
pub struct EventSink {
    pub(crate) engine: Weak<EngineInner>,
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink").finish_non_exhaustive()
    }
}

impl EventSink {
    /// Queues an event for local dispatch, waiting while the dispatcher's queue
    /// is full; events of one topic are dispatched in the order they arrive here.
    pub async fn deliver(&self, event: Event) -> Result<(), Error> {
        let engine = self.engine.upgrade().ok_or(Error::ShutDown)?;
        engine.enqueue(event).await
    }

    /// This engine's instance id: brokers stamp it on outgoing envelopes and
    /// drop incoming envelopes that carry it (the engine already dispatched
    /// its own events locally).
    pub fn instance_id(&self) -> Option<Arc<str>> {
        self.engine
            .upgrade()
            .map(|engine| engine.instance_id.clone())
    }

    /// Whether the local registry has a subscriber on `topic` now. Brokers
    /// consult it when an interest change arrives, so that racing changes
    /// settle on the registry's actual state.
    pub fn is_interested(&self, topic: &str) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|engine| engine.has_topic(topic))
    }

    /// Whether a binding keeps history for `topic`: a broker that keeps the
    /// history listens for its numbered events too.
    pub fn keeps_history(&self, topic: &str) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|engine| engine.history.contains_key(topic))
    }

    /// Every topic with a local subscriber (to resubscribe after a reconnect).
    pub fn interested_topics(&self) -> Vec<Arc<str>> {
        self.engine
            .upgrade()
            .map(|engine| engine.topics())
            .unwrap_or_default()
    }

    /// Whether the engine is gone (a broker's background task may stop).
    pub fn is_closed(&self) -> bool {
        self.engine.strong_count() == 0
    }
}

/// Carries events between instances.
///
/// The engine dispatches every event published on this instance to its local
/// subscribers itself (so local delivery keeps working while a broker is
/// down); a broker carries it to the *other* instances. Contract: every event
/// given to [`Broker::publish`] reaches the [`EventSink`] of every other
/// attached instance once while the broker is connected, and events of one
/// topic from one publisher arrive in publish order. Brokers across a network
/// carry [`Envelope`]s, so instances in any language interoperate.
pub trait Broker: Send + Sync + 'static {
    /// Called once, when the engine is built, with the engine's sink.
    fn attach(&self, sink: EventSink);

    /// Carries an event to the other instances.
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), Error>>;

    /// Counters of the broker connection.
    fn stats(&self) -> BrokerStats {
        BrokerStats::default()
    }

    /// Whether the broker is connected now (readiness probes report it); a
    /// broker with nothing to connect to always is.
    fn is_connected(&self) -> bool {
        true
    }

    /// The registry gained its first (`true`) or lost its last (`false`)
    /// subscriber on `topic`; a networked broker subscribes accordingly.
    fn interest(&self, topic: &str, interested: bool) {
        let _ = (topic, interested);
    }

    /// A short name for logs and stats.
    fn name(&self) -> &'static str;

    /// The history this broker keeps for every instance, if it keeps one
    /// ([`BrokerHistory`]); `None` (the default): each instance keeps the
    /// history of what it dispatches.
    fn history(&self) -> Option<Arc<dyn BrokerHistory>> {
        None
    }

    /// Resolves once this instance receives `topic`'s events from the broker
    /// (its subscription is active), or after a bounded wait: a resume reads
    /// the shared history only then, so that every event is either in what
    /// it reads or delivered live.
    fn subscribed(&self, topic: &str) -> BoxFuture<'static, ()> {
        let _ = topic;
        Box::pin(std::future::ready(()))
    }
}

/// A history kept by the broker and shared by every instance attached to it
/// (Redis Streams in subs-adapters): the position of an event is assigned
/// once, where it is stored, and is the same on every instance, so a client
/// can resume on any of them.
///
/// Contract: [`BrokerHistory::append`] stores the event of `stream`, numbers
/// it (offsets +1 per event of the stream, under an epoch that changes when
/// the stream's history is lost), and carries it with its position to every
/// instance, this one included (the engine does not dispatch it locally
/// first: the broker's order is the order of positions); events of one
/// stream reach every instance in offset order.
pub trait BrokerHistory: Send + Sync + 'static {
    /// Stores, numbers and carries one event of `stream`, keeping at least
    /// `history`'s count of events. Answers the event's position, or `None`
    /// when the broker numbers it later (the PostgreSQL outbox numbers rows
    /// once their transactions are over, in commit order).
    fn append(
        &self,
        stream: Arc<str>,
        event: Event,
        history: History,
    ) -> BoxFuture<'static, Result<Option<Position>, Error>>;

    /// Every event of `stream` after `after`, within `limits` (and `max_age`).
    fn read(
        &self,
        stream: Arc<str>,
        after: Position,
        limits: ReplayLimits,
        max_age: Option<std::time::Duration>,
    ) -> BoxFuture<'static, Result<StoredReplay, Error>>;
}

/// What a [`BrokerHistory`] read answers.
#[derive(Debug, Clone)]
pub enum StoredReplay {
    /// Every event after the position, oldest first, as serialized JSON.
    Events(Vec<(Position, Bytes)>),
    /// The position cannot be served.
    Gap(GapReason),
}

/// The default broker: one process, no other instance to reach. The engine's
/// own local dispatch is the whole delivery.
#[derive(Debug, Default)]
pub struct InMemoryBroker {
    sink: OnceLock<EventSink>,
}

impl InMemoryBroker {
    /// A new in-memory broker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Broker for InMemoryBroker {
    fn attach(&self, sink: EventSink) {
        let _ = self.sink.set(sink);
    }

    fn publish(&self, _event: Event) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// Counters of a broker connection, for stats and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerStats {
    /// Envelopes sent to the broker.
    pub published: u64,
    /// Envelopes received from other instances and dispatched.
    pub received: u64,
    /// Envelopes that could not be published (broker down).
    pub publish_failures: u64,
    /// Reconnections after the broker connection dropped.
    pub reconnects: u64,
    /// Events known to be missed: gaps in another instance's sequence numbers,
    /// seen after a reconnect (pub/sub is at-most-once).
    pub missed: u64,
    /// Envelopes that could not be decoded.
    pub invalid: u64,
    /// Interest changes that found the broker's bounded queue full; the broker
    /// then compared all its subscriptions with the registry (nothing lost).
    pub interest_overflows: u64,
    /// Subscribe attempts to the broker that failed (each is retried with
    /// backoff while the topic has local subscribers).
    pub subscribe_failures: u64,
}

/// The wire format of an event between instances: one JSON object.
///
/// ```json
/// {"v":1,"topic":"services","origin":"5f1c...","seq":42,"publishedAtNs":"1700000000000000000","payload":{"id":"1"}}
/// ```
///
/// `origin` is the publishing instance, `seq` counts its envelopes from 1 (a
/// receiver that sees a jump knows how many it missed), `publishedAtNs` is the
/// publish time in nanoseconds since the Unix epoch as a decimal string, and
/// `payload` is the event's JSON, embedded as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The event's topic.
    pub topic: Arc<str>,
    /// The publishing instance.
    pub origin: Arc<str>,
    /// The origin's sequence number.
    pub seq: u64,
    /// Publish time, nanoseconds since the Unix epoch.
    pub published_at_ns: u128,
    /// The payload, serialized JSON.
    pub payload: Bytes,
    /// The event's position in a history kept by the broker
    /// (`"position":{"epoch":..,"offset":..}` on the wire, before the payload).
    pub position: Option<Position>,
}

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEnvelope<'a> {
    v: u32,
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    origin: std::borrow::Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    published_at_ns: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    position: Option<WirePosition<'a>>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

#[derive(serde::Deserialize)]
struct WirePosition<'a> {
    #[serde(borrow)]
    epoch: std::borrow::Cow<'a, str>,
    offset: u64,
}

impl Envelope {
    /// Wraps an event published now by `origin`.
    pub fn new(event: &Event, origin: Arc<str>, seq: u64) -> Self {
        let published_at_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            topic: event.topic.clone(),
            origin,
            seq,
            published_at_ns,
            payload: event.payload.to_bytes(),
            position: event.position.clone(),
        }
    }

    /// The bytes to send.
    pub fn encode(&self) -> Vec<u8> {
        let (mut out, tail) = self.encode_around_position();
        if let Some(position) = &self.position {
            out.extend_from_slice(b"\"position\":{\"epoch\":");
            out.extend_from_slice(
                Value::String(position.epoch.to_string())
                    .to_string()
                    .as_bytes(),
            );
            out.extend_from_slice(format!(",\"offset\":{}}},", position.offset).as_bytes());
        }
        out.extend_from_slice(&tail);
        out
    }

    /// The envelope's bytes in two parts, before and after the place of its
    /// position (`"position":{..},` goes between them): a broker that numbers
    /// events where it stores them (a Redis script) writes the position there.
    pub fn encode_around_position(&self) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::with_capacity(self.topic.len() + self.origin.len() + 96);
        out.extend_from_slice(b"{\"v\":");
        out.extend_from_slice(ENVELOPE_VERSION.to_string().as_bytes());
        out.extend_from_slice(b",\"topic\":");
        out.extend_from_slice(Value::String(self.topic.to_string()).to_string().as_bytes());
        out.extend_from_slice(b",\"origin\":");
        out.extend_from_slice(
            Value::String(self.origin.to_string())
                .to_string()
                .as_bytes(),
        );
        out.extend_from_slice(
            format!(
                ",\"seq\":{},\"publishedAtNs\":\"{}\",",
                self.seq, self.published_at_ns
            )
            .as_bytes(),
        );
        let mut tail = Vec::with_capacity(self.payload.len() + 12);
        tail.extend_from_slice(b"\"payload\":");
        tail.extend_from_slice(&self.payload);
        tail.push(b'}');
        (out, tail)
    }

    /// Reads an envelope; the payload is checked to be JSON, not parsed into values.
    pub fn decode(bytes: &[u8]) -> Result<Self, BrokerError> {
        let wire: WireEnvelope<'_> = serde_json::from_slice(bytes)
            .map_err(|error| BrokerError::malformed("not an envelope", error))?;
        if wire.v != ENVELOPE_VERSION {
            return Err(BrokerError::MalformedEnvelope {
                reason: format!("unsupported envelope version {}", wire.v),
                source: None,
            });
        }
        Ok(Self {
            topic: Arc::from(wire.topic.as_ref()),
            origin: Arc::from(wire.origin.as_ref()),
            seq: wire.seq,
            published_at_ns: wire
                .published_at_ns
                .parse()
                .map_err(|error| BrokerError::malformed("invalid publishedAtNs", error))?,
            payload: Bytes::copy_from_slice(wire.payload.get().as_bytes()),
            position: wire.position.map(|p| Position {
                epoch: Arc::from(p.epoch.as_ref()),
                offset: p.offset,
            }),
        })
    }

    /// The event it carries.
    pub fn into_event(self) -> Event {
        Event {
            position: self.position,
            ..Event::bytes(self.topic, self.payload)
        }
    }
}
