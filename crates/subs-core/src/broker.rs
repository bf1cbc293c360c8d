//! The seam between publishers and the dispatcher. The in-memory broker is the
//! default; Redis and NATS brokers (in subs-adapters) plug in through the same
//! trait without changes to the core.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::Error;
use crate::engine::EngineInner;

/// One published event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// Its payload.
    pub payload: EventPayload,
}

impl Event {
    /// An event with a JSON value payload.
    pub fn json(topic: impl Into<Arc<str>>, payload: Value) -> Self {
        Self {
            topic: topic.into(),
            payload: EventPayload::Json(Arc::new(payload)),
        }
    }

    /// An event whose payload is already-serialized JSON (from a broker, or a
    /// publisher that has bytes at hand); it is parsed once, at dispatch.
    pub fn bytes(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: EventPayload::Bytes(payload.into()),
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
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
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
        }
    }

    /// The bytes to send.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.payload.len() + self.topic.len() + self.origin.len() + 96);
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
                ",\"seq\":{},\"publishedAtNs\":\"{}\",\"payload\":",
                self.seq, self.published_at_ns
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.payload);
        out.push(b'}');
        out
    }

    /// Reads an envelope; the payload is checked to be JSON, not parsed into values.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let wire: WireEnvelope<'_> = serde_json::from_slice(bytes)?;
        if wire.v != ENVELOPE_VERSION {
            return Err(Error::Broker(format!(
                "unsupported envelope version {}",
                wire.v
            )));
        }
        Ok(Self {
            topic: Arc::from(wire.topic.as_ref()),
            origin: Arc::from(wire.origin.as_ref()),
            seq: wire.seq,
            published_at_ns: wire
                .published_at_ns
                .parse()
                .map_err(|_| Error::Broker("invalid publishedAtNs".into()))?,
            payload: Bytes::copy_from_slice(wire.payload.get().as_bytes()),
        })
    }

    /// The event it carries.
    pub fn into_event(self) -> Event {
        Event::bytes(self.topic, self.payload)
    }
}
