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
        Self { topic: topic.into(), payload: EventPayload::Json(Arc::new(payload)) }
    }

    /// An event whose payload is already-serialized JSON (from a broker, or a
    /// publisher that has bytes at hand); it is parsed once, at dispatch.
    pub fn bytes(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self { topic: topic.into(), payload: EventPayload::Bytes(payload.into()) }
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
            Self::Json(value) => Bytes::from(serde_json::to_vec(value.as_ref()).unwrap_or_else(|_| b"null".to_vec())),
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
}

/// Carries events from publishers to the dispatchers of every instance.
///
/// Contract: every event given to [`Broker::publish`] reaches the
/// [`EventSink`] of each attached instance, this one included, exactly once
/// while the broker is connected; events of one topic from one publisher
/// arrive in publish order.
pub trait Broker: Send + Sync + 'static {
    /// Called once, when the engine is built, with the engine's sink.
    fn attach(&self, sink: EventSink);

    /// Publishes an event to every instance.
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), Error>>;

    /// The registry gained its first (`true`) or lost its last (`false`)
    /// subscriber on `topic`; a networked broker subscribes accordingly.
    fn interest(&self, topic: &str, interested: bool) {
        let _ = (topic, interested);
    }

    /// A short name for logs and stats.
    fn name(&self) -> &'static str;
}

/// The default broker: events stay in this process.
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

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), Error>> {
        let sink = self.sink.get().cloned();
        Box::pin(async move {
            match sink {
                Some(sink) => sink.deliver(event).await,
                None => Err(Error::ShutDown),
            }
        })
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
