//! What the networked brokers (Redis, NATS) share: sequence numbers and gap
//! detection, their attachment to the engine, and delivery into it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use subs_core::{BrokerStats, Envelope, Event, EventSink};

/// Sequence numbers out, gap detection in, and the counters: the part every
/// networked broker shares.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    published: AtomicU64,
    received: AtomicU64,
    publish_failures: AtomicU64,
    reconnects: AtomicU64,
    missed: AtomicU64,
    invalid: AtomicU64,
    /// Per topic: the last sequence number this instance sent.
    sent: Mutex<HashMap<Arc<str>, u64>>,
    /// Per (origin, topic): the last sequence number received.
    seen: Mutex<HashMap<OriginTopic, u64>>,
}

/// A publishing instance and one of its topics.
type OriginTopic = (Arc<str>, Arc<str>);

impl Relay {
    /// The next envelope for `event` from `origin`; numbered per topic, so a
    /// receiver subscribed to a subset of topics sees no false gaps.
    pub(crate) fn envelope(&self, event: &Event, origin: Arc<str>) -> Envelope {
        let seq = {
            let mut sent = self.sent.lock();
            let counter = sent.entry(event.topic.clone()).or_insert(0);
            *counter += 1;
            *counter
        };
        Envelope::new(event, origin, seq)
    }

    pub(crate) fn published(&self, ok: bool) {
        if ok {
            self.published.fetch_add(1, Relaxed);
        } else {
            self.publish_failures.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// A fresh subscription to `topic`: forget its sequence numbers, so the
    /// first envelope after (re)subscribing does not count as a gap.
    pub(crate) fn forget_topic(&self, topic: &str) {
        self.seen.lock().retain(|(_, t), _| &**t != topic);
    }

    /// Decodes an envelope from the wire: `None` for our own envelopes (the
    /// engine dispatched them locally already) and for invalid ones.
    pub(crate) fn accept(&self, bytes: &[u8], own_origin: &str) -> Option<Event> {
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.invalid.fetch_add(1, Relaxed);
                tracing::warn!(%error, "dropped an invalid broker envelope");
                return None;
            }
        };
        if &*envelope.origin == own_origin {
            return None;
        }
        {
            let mut seen = self.seen.lock();
            let last = seen
                .entry((envelope.origin.clone(), envelope.topic.clone()))
                .or_insert(0);
            if *last != 0 && envelope.seq > *last + 1 {
                let missed = envelope.seq - *last - 1;
                self.missed.fetch_add(missed, Relaxed);
                tracing::warn!(origin = %envelope.origin, topic = %envelope.topic, missed, "events missed while the broker connection was down");
            }
            *last = (*last).max(envelope.seq);
        }
        self.received.fetch_add(1, Relaxed);
        Some(envelope.into_event())
    }

    pub(crate) fn stats(&self) -> BrokerStats {
        BrokerStats {
            published: self.published.load(Relaxed),
            received: self.received.load(Relaxed),
            publish_failures: self.publish_failures.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            missed: self.missed.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
        }
    }
}

/// What every networked broker keeps of its engine: the sink, once attached,
/// and the channel on which the registry's interest changes (topic names)
/// reach the broker's background task.
#[derive(Debug)]
pub(crate) struct Attachment {
    interest: tokio::sync::mpsc::UnboundedSender<Arc<str>>,
    pending: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Arc<str>>>>,
    sink: std::sync::OnceLock<EventSink>,
}

impl Attachment {
    pub(crate) fn new() -> Self {
        let (interest, receiver) = tokio::sync::mpsc::unbounded_channel();
        Self {
            interest,
            pending: Mutex::new(Some(receiver)),
            sink: std::sync::OnceLock::new(),
        }
    }

    /// Keeps the sink; the first call also hands out the interest receiver
    /// for the broker's task (later calls get `None`).
    pub(crate) fn attach(
        &self,
        sink: &EventSink,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Arc<str>>> {
        let receiver = self.pending.lock().take()?;
        let _ = self.sink.set(sink.clone());
        Some(receiver)
    }

    /// This instance's id for outgoing envelopes.
    pub(crate) fn origin(&self) -> Arc<str> {
        self.sink
            .get()
            .and_then(EventSink::instance_id)
            .unwrap_or_else(|| Arc::from(""))
    }

    /// The registry gained or lost `topic`; the task checks which.
    pub(crate) fn interest_changed(&self, topic: &str) {
        let _ = self.interest.send(Arc::from(topic));
    }
}

/// Hands a received event to the local dispatcher; `false` once the engine is gone.
pub(crate) async fn deliver(sink: &EventSink, event: Event) -> bool {
    match sink.deliver(event).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, "engine gone; broker task stopping");
            false
        }
    }
}
