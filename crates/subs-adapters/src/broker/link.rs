//! What the networked brokers (Redis, NATS) share: [`LinkState`] (sequence
//! numbers out, gap detection in, the counters), [`EngineLink`] (the sink,
//! once attached, and the queue of the registry's interest changes), and
//! delivery into the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;
use subs_core::{BrokerStats, Envelope, Event, EventSink};
use tokio::sync::{Notify, mpsc};

use super::Bookkeeping;

/// Most topics whose outgoing sequence numbers are kept. Past it the numbering
/// of every topic restarts at 1 (receivers take a 1 as a restart, see
/// [`LinkState::accept`]), so a publisher of ever new topics holds bounded memory.
pub(crate) const SENT_TOPICS_MAX: usize = 65_536;

/// How long a resume waits for this instance's subscription to its topic.
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Interest changes queued for a broker's task. When the queue is full the
/// change is not queued: the task resynchronises with the registry instead
/// (counted in `BrokerStats::interest_overflows`), which loses nothing since
/// it decides on the registry's state anyway.
pub(crate) const INTEREST_QUEUE: usize = 1024;

/// Sequence numbers out, gap detection in, and the counters: the part every
/// networked broker shares.
#[derive(Debug)]
pub(crate) struct LinkState {
    published: AtomicU64,
    received: AtomicU64,
    publish_failures: AtomicU64,
    reconnects: AtomicU64,
    missed: AtomicU64,
    invalid: AtomicU64,
    interest_overflows: AtomicU64,
    subscribe_failures: AtomicU64,
    /// Whether the broker's task holds a live connection (set by the task).
    connected: AtomicBool,
    /// Topics the broker's task holds a subscription for (a gauge it sets).
    subscribed: AtomicUsize,
    /// Per topic: the last sequence number this instance sent (at most
    /// `sent_max` topics).
    sent: Mutex<HashMap<Arc<str>, u64>>,
    sent_max: usize,
    /// Per topic this instance is subscribed to, per origin: the last
    /// sequence number received. A topic's entry goes when its subscription
    /// ends ([`LinkState::forget_topic`]).
    seen: Mutex<HashMap<Arc<str>, LastSeen>>,
    /// Topics whose broker subscription is active now (the broker's task
    /// keeps it), for [`LinkState::wait_active`]: only a broker that keeps a
    /// shared history (Redis, NATS) needs it.
    #[cfg(any(feature = "redis", feature = "nats"))]
    active: Mutex<std::collections::HashSet<Arc<str>>>,
    #[cfg(any(feature = "redis", feature = "nats"))]
    active_changed: Notify,
}

/// Per origin: the last sequence number received on one topic.
type LastSeen = HashMap<Arc<str>, u64>;

impl Default for LinkState {
    fn default() -> Self {
        Self::with_sent_max(SENT_TOPICS_MAX)
    }
}

impl LinkState {
    pub(crate) fn with_sent_max(sent_max: usize) -> Self {
        Self {
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            interest_overflows: AtomicU64::new(0),
            subscribe_failures: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            subscribed: AtomicUsize::new(0),
            sent: Mutex::new(HashMap::new()),
            sent_max: sent_max.max(1),
            seen: Mutex::new(HashMap::new()),
            #[cfg(any(feature = "redis", feature = "nats"))]
            active: Mutex::new(std::collections::HashSet::new()),
            #[cfg(any(feature = "redis", feature = "nats"))]
            active_changed: Notify::new(),
        }
    }

    /// The broker's task holds (or no longer holds) an active subscription
    /// to `topic`.
    #[cfg(any(feature = "redis", feature = "nats"))]
    pub(crate) fn set_active(&self, topic: &Arc<str>, active: bool) {
        let changed = if active {
            self.active.lock().insert(topic.clone())
        } else {
            self.active.lock().remove(topic)
        };
        if changed {
            self.active_changed.notify_waiters();
        }
    }

    /// The broker connection dropped: no subscription is active (Redis;
    /// the NATS client keeps its subscriptions across a reconnect).
    #[cfg(feature = "redis")]
    pub(crate) fn clear_active(&self) {
        self.active.lock().clear();
    }

    /// [`subs_core::Broker::subscribed`] of the networked brokers: resolves
    /// once `topic`'s subscription is active, or after [`SUBSCRIBE_WAIT`].
    pub(crate) fn subscribed(
        self: &Arc<Self>,
        topic: &str,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let (link, topic) = (self.clone(), topic.to_owned());
        Box::pin(async move { link.wait_active(&topic, SUBSCRIBE_WAIT).await })
    }

    /// Resolves once `topic`'s subscription is active, or after `bound`.
    #[cfg(any(feature = "redis", feature = "nats"))]
    pub(crate) async fn wait_active(&self, topic: &str, bound: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Created before the check, so no change in between is missed.
            let changed = self.active_changed.notified();
            if self.active.lock().contains(topic) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::warn!(%topic, "the broker subscription is not active yet; resuming anyway");
                return;
            }
        }
    }

    /// The next envelope for `event` from `origin`; numbered per topic, so a
    /// receiver subscribed to a subset of topics sees no false gaps.
    pub(crate) fn envelope(&self, event: &Event, origin: Arc<str>) -> Envelope {
        let seq = {
            let mut sent = self.sent.lock();
            if sent.len() >= self.sent_max && !sent.contains_key(&event.topic) {
                // Clearing is O(1) amortised and every receiver reads the 1s
                // that follow as restarts: no false gaps, only gaps of events
                // lost right at the restart go uncounted.
                tracing::debug!(
                    topics = sent.len(),
                    "broker sequence numbers restart: too many topics published"
                );
                sent.clear();
            }
            let counter = sent.entry(event.topic.clone()).or_insert(0);
            *counter += 1;
            *counter
        };
        Envelope::new(event, origin, seq)
    }

    /// A subscribe to the broker failed (it is retried).
    pub(crate) fn subscribe_failed(&self) {
        self.subscribe_failures.fetch_add(1, Relaxed);
    }

    /// The broker's task now holds `topics` subscriptions.
    pub(crate) fn set_subscribed(&self, topics: usize) {
        self.subscribed.store(topics, Relaxed);
    }

    pub(crate) fn bookkeeping(&self) -> Bookkeeping {
        Bookkeeping {
            subscribed: self.subscribed.load(Relaxed),
            sequences_sent: self.sent.lock().len(),
            sequences_seen: self.seen.lock().values().map(HashMap::len).sum(),
        }
    }

    pub(crate) fn published(&self, ok: bool) {
        if ok {
            self.published.fetch_add(1, Relaxed);
        } else {
            self.publish_failures.fetch_add(1, Relaxed);
        }
    }

    /// The broker's connection is up (`true`) or lost (`false`).
    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Relaxed);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// A subscription to `topic` starts or ends: forget its sequence numbers,
    /// so the first envelope after (re)subscribing does not count as a gap and
    /// a topic no longer subscribed holds no memory.
    pub(crate) fn forget_topic(&self, topic: &str) {
        self.seen.lock().remove(topic);
    }

    /// Decodes an envelope from the wire: `None` for our own envelopes (the
    /// engine dispatched them locally already) and for invalid ones. (NATS
    /// reads positions from headers: [`LinkState::accept_at`].)
    #[cfg(any(test, feature = "redis"))]
    pub(crate) fn accept(&self, bytes: &[u8], own_origin: &str) -> Option<Event> {
        self.accept_at(bytes, own_origin, None)
    }

    /// [`LinkState::accept`] for an envelope whose position the broker gave
    /// beside it (a JetStream republish carries the offset in a header).
    pub(crate) fn accept_at(
        &self,
        bytes: &[u8],
        own_origin: &str,
        position: Option<subs_core::Position>,
    ) -> Option<Event> {
        let mut envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.invalid.fetch_add(1, Relaxed);
                tracing::warn!(%error, "dropped an invalid broker envelope");
                return None;
            }
        };
        if position.is_some() {
            envelope.position = position;
        }
        // Own envelopes were dispatched here already, except those numbered
        // by a history the broker keeps: every instance, this one included,
        // dispatches those as the broker delivers them, in offset order.
        if &*envelope.origin == own_origin && envelope.position.is_none() {
            return None;
        }
        {
            let mut seen = self.seen.lock();
            let last = seen
                .entry(envelope.topic.clone())
                .or_default()
                .entry(envelope.origin.clone())
                .or_insert(0);
            if envelope.seq == 1 {
                // The origin restarted this topic's numbering (see `envelope`).
                *last = 0;
            }
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
            interest_overflows: self.interest_overflows.load(Relaxed),
            subscribe_failures: self.subscribe_failures.load(Relaxed),
        }
    }
}

/// What every networked broker keeps of its engine: the sink, once attached,
/// and the bounded queue on which the registry's interest changes (topic
/// names) reach the broker's background task.
#[derive(Debug)]
pub(crate) struct EngineLink {
    interest: mpsc::Sender<Arc<str>>,
    overflow: Arc<Overflow>,
    link: Arc<LinkState>,
    pending: Mutex<Option<InterestReceiver>>,
    sink: std::sync::OnceLock<EventSink>,
}

/// Set when an interest change found the queue full.
#[derive(Debug, Default)]
struct Overflow {
    resync: AtomicBool,
    wake: Notify,
}

/// What the broker's task is asked to do.
#[derive(Debug)]
pub(crate) enum Interest {
    /// The registry gained or lost this topic (the task checks which).
    Topic(Arc<str>),
    /// Changes were not queued: compare every subscription with the registry.
    Resync,
}

/// The task's end of the interest queue.
#[derive(Debug)]
pub(crate) struct InterestReceiver {
    changes: mpsc::Receiver<Arc<str>>,
    overflow: Arc<Overflow>,
}

impl InterestReceiver {
    /// The next change; `None` once the broker is gone. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Interest> {
        loop {
            if self
                .overflow
                .resync
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                return Some(Interest::Resync);
            }
            tokio::select! {
                biased;
                topic = self.changes.recv() => return topic.map(Interest::Topic),
                () = self.overflow.wake.notified() => {}
            }
        }
    }
}

impl EngineLink {
    pub(crate) fn new(link: Arc<LinkState>) -> Self {
        let (interest, changes) = mpsc::channel(INTEREST_QUEUE);
        let overflow = Arc::new(Overflow::default());
        Self {
            interest,
            overflow: overflow.clone(),
            link,
            pending: Mutex::new(Some(InterestReceiver { changes, overflow })),
            sink: std::sync::OnceLock::new(),
        }
    }

    /// Keeps the sink; the first call also hands out the interest receiver
    /// for the broker's task (later calls get `None`).
    pub(crate) fn attach(&self, sink: &EventSink) -> Option<InterestReceiver> {
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
        match self.interest.try_send(Arc::from(topic)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The flag before the wake-up: the task clears it only
                // after a wake-up or a change, never misses it.
                self.overflow
                    .resync
                    .store(true, std::sync::atomic::Ordering::Release);
                self.overflow.wake.notify_one();
                self.link.interest_overflows.fetch_add(1, Relaxed);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope_bytes(topic: &str, origin: &str, seq: u64) -> Vec<u8> {
        Envelope::new(&Event::bytes(topic, "{}"), Arc::from(origin), seq).encode()
    }

    #[test]
    fn sent_sequence_numbers_are_capped_and_restart_at_one() {
        let link = LinkState::with_sent_max(4);
        let origin: Arc<str> = Arc::from("me");
        for round in 1..=3 {
            for topic in ["a", "b", "c", "d"] {
                let envelope = link.envelope(&Event::bytes(topic, "{}"), origin.clone());
                assert_eq!(envelope.seq, round);
            }
        }
        // A fifth topic: every numbering restarts, the map never exceeds the cap.
        assert_eq!(
            link.envelope(&Event::bytes("e", "{}"), origin.clone()).seq,
            1
        );
        assert_eq!(link.envelope(&Event::bytes("a", "{}"), origin).seq, 1);
        assert!(link.bookkeeping().sequences_sent <= 4);
    }

    #[test]
    fn a_restarted_numbering_is_not_a_gap_and_a_real_gap_still_is() {
        let link = LinkState::default();
        for seq in 1..=5 {
            assert!(
                link.accept(&envelope_bytes("t", "other", seq), "me")
                    .is_some()
            );
        }
        // The publisher restarted at 1 (its map was cleared): no gap.
        for seq in 1..=2 {
            assert!(
                link.accept(&envelope_bytes("t", "other", seq), "me")
                    .is_some()
            );
        }
        assert_eq!(link.stats().missed, 0);
        // 3 and 4 lost: counted.
        assert!(
            link.accept(&envelope_bytes("t", "other", 5), "me")
                .is_some()
        );
        assert_eq!(link.stats().missed, 2);
        assert_eq!(link.bookkeeping().sequences_seen, 1);
        link.forget_topic("t");
        assert_eq!(link.bookkeeping().sequences_seen, 0);
    }

    #[tokio::test]
    async fn a_full_interest_queue_becomes_one_resync_and_is_counted() {
        let link = Arc::new(LinkState::default());
        let attachment = EngineLink::new(link.clone());
        let mut receiver = attachment
            .pending
            .lock()
            .take()
            .expect("the receiver is handed out once");
        for n in 0..INTEREST_QUEUE + 5 {
            attachment.interest_changed(&format!("topic-{n}"));
        }
        assert_eq!(link.stats().interest_overflows, 5);
        // The queue holds at most its capacity; the overflow is one resync.
        assert!(matches!(receiver.recv().await, Some(Interest::Resync)));
        for n in 0..INTEREST_QUEUE {
            match receiver.recv().await {
                Some(Interest::Topic(topic)) => assert_eq!(&*topic, format!("topic-{n}")),
                other => panic!("expected topic-{n}, got {other:?}"),
            }
        }
    }
}
