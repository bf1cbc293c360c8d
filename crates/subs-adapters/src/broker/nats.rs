//! NATS broker: one subject per topic (`subs.<topic>`), subscribed only while
//! this instance has a local subscriber on the topic. The NATS client
//! reconnects and resubscribes by itself; this broker counts reconnections and
//! the events it can tell were missed (core NATS is at-most-once).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use subs_core::{Broker, BrokerStats, Event, EventSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Attachment, Relay, StartupPolicy, deliver};

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
                        if was_disconnected.swap(false, Relaxed) {
                            relay.reconnected();
                            tracing::warn!("reconnected to NATS");
                        }
                    }
                    async_nats::Event::Disconnected => {
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
        Ok(Arc::new(Self {
            client,
            relay,
            attachment: Attachment::new(),
        }))
    }
}

impl Broker for NatsBroker {
    fn attach(&self, sink: EventSink) {
        if let Some(interest) = self.attachment.attach(&sink) {
            tokio::spawn(manage_subscriptions(
                self.client.clone(),
                sink,
                self.relay.clone(),
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

    fn name(&self) -> &'static str {
        "nats"
    }
}

/// Keeps one NATS subscription per topic with local subscribers; each forwards
/// its messages in order to the engine.
async fn manage_subscriptions(
    client: async_nats::Client,
    sink: EventSink,
    relay: Arc<Relay>,
    mut interest: mpsc::UnboundedReceiver<Arc<str>>,
) {
    let Some(own_origin) = sink.instance_id() else {
        return;
    };
    let mut forwarders: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    while let Some(topic) = interest.recv().await {
        forwarders.retain(|_, task| !task.is_finished());
        let wanted = sink.is_interested(&topic);
        if wanted && !forwarders.contains_key(&topic) {
            let mut subscriber = match client.subscribe(subject_for(&topic)).await {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    tracing::error!(%topic, %error, "NATS subscribe failed");
                    continue;
                }
            };
            relay.forget_topic(&topic);
            let (sink, relay, origin) = (sink.clone(), relay.clone(), own_origin.clone());
            forwarders.insert(
                topic,
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        if let Some(event) = relay.accept(&message.payload, &origin)
                            && !deliver(&sink, event).await
                        {
                            return;
                        }
                    }
                }),
            );
        } else if !wanted && let Some(task) = forwarders.remove(&topic) {
            // Dropping the subscriber inside the task unsubscribes.
            task.abort();
        }
    }
    for task in forwarders.into_values() {
        task.abort();
    }
}
