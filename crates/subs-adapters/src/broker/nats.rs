//! NATS broker: one subject per topic (`subs.<topic>`), subscribed only while
//! this instance has a local subscriber on the topic. The NATS client
//! reconnects and resubscribes by itself; this broker counts reconnections and
//! the events it can tell were missed (core NATS is at-most-once).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use subs_core::{Broker, BrokerStats, Event, EventSink};
use tokio::task::JoinHandle;

use super::{
    Attachment, Backoff, Bookkeeping, Interest, InterestReceiver, Relay, StartupPolicy, deliver,
};

/// Subject prefix: keeps subs' subjects apart from the application's.
pub const SUBJECT_PREFIX: &str = "subs.";

/// How long a publish may wait for room in the client's buffer.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The NATS subject of a topic. NATS subjects are dot-separated tokens without
/// whitespace or wildcards; a topic that is not a plain token is hex-encoded
/// (prefixed `x-`) so every topic maps to exactly one literal subject.
pub fn subject_for(topic: &str) -> String {
    let plain = !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain && !topic.starts_with("x-") {
        return format!("{SUBJECT_PREFIX}{topic}");
    }
    let mut subject = format!("{SUBJECT_PREFIX}x-");
    for byte in topic.bytes() {
        let _ = write!(subject, "{byte:02x}");
    }
    subject
}

/// The NATS broker.
pub struct NatsBroker {
    client: async_nats::Client,
    relay: Arc<Relay>,
    attachment: Attachment,
    /// Subscribes to fail on purpose before trying for real (tests only).
    injected_failures: Arc<AtomicU32>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("stats", &self.relay.stats())
            .finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// Connects to `url` (`nats://host:port`).
    pub async fn connect(url: &str, startup: StartupPolicy) -> Result<Arc<Self>, crate::Error> {
        let relay = Arc::new(Relay::default());
        let events_relay = relay.clone();
        // `Connected` also follows the first connection: count it as a
        // reconnection only after a `Disconnected`.
        let was_disconnected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut options = async_nats::ConnectOptions::new().event_callback(move |event| {
            let relay = events_relay.clone();
            let was_disconnected = was_disconnected.clone();
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match event {
                    async_nats::Event::Connected => {
                        relay.set_connected(true);
                        if was_disconnected.swap(false, Relaxed) {
                            relay.reconnected();
                            tracing::warn!("reconnected to NATS");
                        }
                    }
                    async_nats::Event::Disconnected => {
                        relay.set_connected(false);
                        was_disconnected.store(true, Relaxed);
                        tracing::warn!("NATS connection lost; reconnecting");
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
        if startup == StartupPolicy::Retry {
            options = options.retry_on_initial_connect();
        }
        let client = options
            .connect(url)
            .await
            .map_err(|e| crate::Error::Broker(format!("cannot reach NATS at {url}: {e}")))?;
        // The `Connected` event may still be on its way.
        if client.connection_state() == async_nats::connection::State::Connected {
            relay.set_connected(true);
        }
        Ok(Arc::new(Self {
            client,
            relay: relay.clone(),
            attachment: Attachment::new(relay),
            injected_failures: Arc::default(),
        }))
    }

    /// The sizes of the broker's bookkeeping (for tests; not a stable API).
    #[doc(hidden)]
    pub fn bookkeeping(&self) -> Bookkeeping {
        self.relay.bookkeeping()
    }

    /// Makes the next `count` subscribes fail as the NATS client can (for
    /// tests of the retry; not a stable API).
    #[doc(hidden)]
    pub fn fail_next_subscribes(&self, count: u32) {
        self.injected_failures.store(count, Ordering::Relaxed);
    }
}

impl Broker for NatsBroker {
    fn attach(&self, sink: EventSink) {
        if let Some(interest) = self.attachment.attach(&sink) {
            tokio::spawn(manage_subscriptions(
                Subscriptions {
                    client: self.client.clone(),
                    sink,
                    relay: self.relay.clone(),
                    injected_failures: self.injected_failures.clone(),
                },
                interest,
            ));
        }
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), subs_core::Error>> {
        let envelope = self.relay.envelope(&event, self.attachment.origin());
        let subject = subject_for(&event.topic);
        let client = self.client.clone();
        let relay = self.relay.clone();
        Box::pin(async move {
            // While disconnected the client queues publishes in a bounded
            // buffer and, once it is full, `publish` waits for the server:
            // the publishing task (and with it local delivery) stalled for the
            // whole outage. Fail fast instead; the envelope's `seq` is spent,
            // so receivers count the event in `missed`.
            if client.connection_state() != async_nats::connection::State::Connected {
                relay.published(false);
                return Err(subs_core::Error::Broker("NATS is unreachable".into()));
            }
            let result = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                client.publish(subject, envelope.encode().into()),
            )
            .await
            .unwrap_or_else(|_| Err(async_nats::PublishErrorKind::Send.into()));
            relay.published(result.is_ok());
            result.map_err(|e| subs_core::Error::Broker(e.to_string()))
        })
    }

    fn interest(&self, topic: &str, _interested: bool) {
        self.attachment.interest_changed(topic);
    }

    fn stats(&self) -> BrokerStats {
        self.relay.stats()
    }

    fn is_connected(&self) -> bool {
        self.relay.is_connected()
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}

/// What every topic's subscription task needs.
#[derive(Clone)]
struct Subscriptions {
    client: async_nats::Client,
    sink: EventSink,
    relay: Arc<Relay>,
    injected_failures: Arc<AtomicU32>,
}

impl Subscriptions {
    async fn subscribe(&self, topic: &str) -> Result<async_nats::Subscriber, String> {
        let injected = self
            .injected_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(
                async_nats::SubscribeError::new(async_nats::SubscribeErrorKind::Other).to_string(),
            );
        }
        self.client
            .subscribe(subject_for(topic))
            .await
            .map_err(|e| e.to_string())
    }

    /// One topic's life on NATS: subscribe (retried with backoff while it
    /// fails), forward its messages in order, and subscribe again if the
    /// subscription ends while local subscribers remain. Aborted when the
    /// last local subscriber goes (dropping the subscriber unsubscribes).
    async fn run_topic(self, topic: Arc<str>, origin: Arc<str>) {
        // Dropped with the task (aborted when interest ends), so after any
        // envelope it was still accepting: the topic's sequence numbers go
        // with its subscription.
        let _forget = ForgetOnDrop {
            relay: self.relay.clone(),
            topic: topic.clone(),
        };
        let mut backoff = Backoff::new();
        while self.sink.is_interested(&topic) {
            let mut subscriber = match self.subscribe(&topic).await {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    self.relay.subscribe_failed();
                    tracing::warn!(%topic, %error, "NATS subscribe failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            self.relay.forget_topic(&topic);
            while let Some(message) = subscriber.next().await {
                if let Some(event) = self.relay.accept(&message.payload, &origin)
                    && !deliver(&self.sink, event).await
                {
                    return;
                }
            }
            tracing::warn!(%topic, "NATS subscription ended; subscribing again");
            backoff.wait().await;
        }
    }
}

struct ForgetOnDrop {
    relay: Arc<Relay>,
    topic: Arc<str>,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        self.relay.forget_topic(&self.topic);
    }
}

/// Keeps one NATS subscription per topic with local subscribers; each forwards
/// its messages in order to the engine.
async fn manage_subscriptions(subscriptions: Subscriptions, mut interest: InterestReceiver) {
    let Some(own_origin) = subscriptions.sink.instance_id() else {
        return;
    };
    let sink = subscriptions.sink.clone();
    let relay = subscriptions.relay.clone();
    let mut forwarders: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    while let Some(change) = interest.recv().await {
        forwarders.retain(|_, task| !task.is_finished());
        let topics = match change {
            Interest::Topic(topic) => vec![topic],
            // Every topic either side knows of: the registry's and ours.
            Interest::Resync => {
                let mut all = sink.interested_topics();
                all.extend(forwarders.keys().cloned());
                all
            }
        };
        for topic in topics {
            // Decide on the registry's state now, not on the order in which
            // racing notifications arrived.
            let wanted = sink.is_interested(&topic);
            if wanted && !forwarders.contains_key(&topic) {
                let task = tokio::spawn(
                    subscriptions
                        .clone()
                        .run_topic(topic.clone(), own_origin.clone()),
                );
                forwarders.insert(topic, task);
            } else if !wanted && let Some(task) = forwarders.remove(&topic) {
                task.abort();
            }
        }
        relay.set_subscribed(forwarders.len());
    }
    for task in forwarders.into_values() {
        task.abort();
    }
}
