//! Redis pub/sub broker: one channel per topic (`subs:<topic>`), subscribed
//! only while this instance has a local subscriber on the topic.
//!
//! Topics with history are numbered and kept in Redis Streams and published
//! with their position (see `redis_history.rs`), so a client can resume on
//! any instance.
//!
//! Pub/sub is at-most-once: events published while an instance's connection
//! is down do not reach it (a client of a topic with history gets them back
//! by resuming). The instance reconnects with backoff,
//! resubscribes, and counts the events it can tell it missed (gaps in the
//! publishers' sequence numbers) in `BrokerStats::missed`.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use subs_core::{Broker, BrokerError, BrokerStats, Event, EventSink};

use super::redis_history::RedisHistory;
use super::{
    Backoff, Bookkeeping, EngineLink, Interest, InterestReceiver, LinkState, StartupPolicy, deliver,
};

/// Channel prefix: keeps subs' channels apart from the application's.
pub const CHANNEL_PREFIX: &str = "subs:";

/// The publishing connection gives up after one quick retry: the manager's
/// default (six retries with exponential backoff) held every `publish` for
/// seconds while Redis was down, which stalled the publisher and with it local
/// delivery. The subscriber task does the patient reconnecting.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(std::time::Duration::from_millis(50))
        .set_max_delay(std::time::Duration::from_millis(200))
}

/// How long publishes fail fast after a failed one before the next attempt.
const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The Redis broker.
pub struct RedisBroker {
    client: redis::Client,
    publisher: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
    link: Arc<LinkState>,
    /// Set after a failed publish: until then, publishes fail at once.
    retry_at: Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    attachment: Arc<EngineLink>,
    /// Topics with history are numbered and kept in Redis Streams.
    history: Arc<RedisHistory>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("stats", &self.link.stats())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects to `url` (`redis://host:port`). With [`StartupPolicy::Fail`] an
    /// unreachable server is an error now; with `Retry` the broker starts and
    /// keeps trying.
    pub async fn connect(url: &str, startup: StartupPolicy) -> Result<Arc<Self>, crate::Error> {
        let client = redis::Client::open(url).map_err(|error| BrokerError::Connect {
            broker: "Redis",
            address: url.to_owned(),
            source: error.into(),
        })?;
        let publisher = match ConnectionManager::new_with_config(client.clone(), manager_config())
            .await
        {
            Ok(connection) => Some(connection),
            Err(error) if startup == StartupPolicy::Fail => {
                return Err(BrokerError::Connect {
                    broker: "Redis",
                    address: url.to_owned(),
                    source: error.into(),
                }
                .into());
            }
            Err(error) => {
                tracing::warn!(%error, "Redis unreachable at start-up; retrying in the background");
                None
            }
        };
        let link = Arc::new(LinkState::default());
        let publisher = Arc::new(tokio::sync::Mutex::new(publisher));
        let attachment = Arc::new(EngineLink::new(link.clone()));
        let origin = {
            let attachment = attachment.clone();
            Arc::new(move || attachment.origin())
        };
        let history = Arc::new(RedisHistory::new(
            client.clone(),
            publisher.clone(),
            link.clone(),
            origin,
        ));
        Ok(Arc::new(Self {
            client,
            publisher,
            link,
            retry_at: Arc::new(parking_lot::Mutex::new(None)),
            attachment,
            history,
        }))
    }

    /// The sizes of the broker's bookkeeping (for tests; not a stable API).
    #[doc(hidden)]
    pub fn bookkeeping(&self) -> Bookkeeping {
        self.link.bookkeeping()
    }
}

impl Broker for RedisBroker {
    fn attach(&self, sink: EventSink) {
        if let Some(interest) = self.attachment.attach(&sink) {
            tokio::spawn(subscriber(
                self.client.clone(),
                sink,
                self.link.clone(),
                interest,
            ));
        }
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), subs_core::Error>> {
        let envelope = self.link.envelope(&event, self.attachment.origin());
        let channel = format!("{CHANNEL_PREFIX}{}", event.topic);
        let bytes = envelope.encode();
        let link = self.link.clone();
        // The connection manager reconnects by itself; the lock only guards the
        // lazy first connection when Redis was down at start-up.
        let publisher = self.publisher.clone();
        let client = self.client.clone();
        let retry_at = self.retry_at.clone();
        Box::pin(async move {
            // After a failure, fail fast for a moment instead of paying a
            // reconnection attempt per event: otherwise a publisher crawls
            // (and local delivery with it) for the whole outage.
            if retry_at
                .lock()
                .is_some_and(|at| std::time::Instant::now() < at)
            {
                link.published(false);
                return Err(BrokerError::Unreachable { broker: "Redis" }.into());
            }
            let connection = {
                let mut guard = publisher.lock().await;
                if guard.is_none() {
                    *guard = ConnectionManager::new_with_config(client, manager_config())
                        .await
                        .ok();
                }
                guard.clone()
            };
            let Some(mut connection) = connection else {
                *retry_at.lock() = Some(std::time::Instant::now() + PUBLISH_RETRY);
                link.published(false);
                return Err(BrokerError::Unreachable { broker: "Redis" }.into());
            };
            let result: redis::RedisResult<i64> = connection.publish(channel, bytes).await;
            link.published(result.is_ok());
            *retry_at.lock() = result
                .is_err()
                .then(|| std::time::Instant::now() + PUBLISH_RETRY);
            result.map(drop).map_err(|error| {
                BrokerError::Publish {
                    broker: "Redis",
                    source: error.into(),
                }
                .into()
            })
        })
    }

    fn interest(&self, topic: &str, _interested: bool) {
        self.attachment.interest_changed(topic);
    }

    fn stats(&self) -> BrokerStats {
        self.link.stats()
    }

    fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn history(&self) -> Option<Arc<dyn subs_core::BrokerHistory>> {
        Some(self.history.clone())
    }

    fn subscribed(&self, topic: &str) -> BoxFuture<'static, ()> {
        self.link.subscribed(topic)
    }
}

/// Owns the pub/sub connection: (re)connects with backoff, keeps the channel
/// set equal to the registry's topics, and forwards envelopes to the engine.
async fn subscriber(
    client: redis::Client,
    sink: EventSink,
    link: Arc<LinkState>,
    mut interest: InterestReceiver,
) {
    let Some(own_origin) = sink.instance_id() else {
        return;
    };
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    // The channels of the connection that dropped: their sequence numbers are
    // kept across the reconnect, so the first envelope after it reveals the
    // outage's gap in `missed` (forgetting them hid every gap).
    let mut previous = std::collections::HashSet::new();
    loop {
        if sink.is_closed() {
            return;
        }
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                tracing::warn!(%error, "Redis pub/sub connection failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        let (mut control, mut messages) = pubsub.split();
        let mut subscribed = std::collections::HashSet::new();
        let mut healthy = true;
        for topic in sink.interested_topics() {
            if !previous.contains(&topic) {
                link.forget_topic(&topic);
            }
            if let Err(error) = control.subscribe(format!("{CHANNEL_PREFIX}{topic}")).await {
                link.subscribe_failed();
                tracing::warn!(%topic, %error, "Redis subscribe failed; reconnecting");
                healthy = false;
                break;
            }
            link.set_active(&topic, true);
            subscribed.insert(topic);
        }
        link.set_subscribed(subscribed.len());
        if !healthy {
            backoff.wait().await;
            continue;
        }
        if connected_before {
            link.reconnected();
            tracing::warn!(
                topics = subscribed.len(),
                "reconnected to Redis and resubscribed"
            );
        }
        connected_before = true;
        link.set_connected(true);
        backoff.reset();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    if let Some(event) = link.accept(message.get_payload_bytes(), &own_origin)
                        && !deliver(&sink, event).await
                    {
                        return;
                    }
                }
                change = interest.recv() => {
                    let topics = match change {
                        None => return,
                        Some(Interest::Topic(topic)) => vec![topic],
                        // Every topic either side knows of: the registry's
                        // and the ones subscribed here.
                        Some(Interest::Resync) => {
                            let mut all = sink.interested_topics();
                            all.extend(subscribed.iter().cloned());
                            all
                        }
                    };
                    let mut failed = false;
                    for topic in topics {
                        if sync_topic(&mut control, &mut subscribed, &link, &sink, topic)
                            .await
                            .is_err()
                        {
                            failed = true;
                            break;
                        }
                    }
                    link.set_subscribed(subscribed.len());
                    if failed {
                        break;
                    }
                }
            }
        }
        previous = subscribed;
        link.clear_active();
        link.set_connected(false);
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        backoff.wait().await;
    }
}

/// Subscribes to or unsubscribes from `topic` so that it matches the
/// registry's state now, not the order in which racing notifications arrived.
async fn sync_topic(
    control: &mut redis::aio::PubSubSink,
    subscribed: &mut std::collections::HashSet<Arc<str>>,
    link: &LinkState,
    sink: &EventSink,
    topic: Arc<str>,
) -> redis::RedisResult<()> {
    let wanted = sink.is_interested(&topic);
    let channel = format!("{CHANNEL_PREFIX}{topic}");
    if wanted && !subscribed.contains(&topic) {
        link.forget_topic(&topic);
        let result = control.subscribe(channel).await;
        match &result {
            Ok(()) => link.set_active(&topic, true),
            // The reconnection that follows subscribes it again, with backoff.
            Err(error) => {
                link.subscribe_failed();
                tracing::warn!(%topic, %error, "Redis subscribe failed; reconnecting");
            }
        }
        subscribed.insert(topic);
        result
    } else if !wanted && subscribed.remove(&topic) {
        // The topic's sequence numbers go with its subscription.
        link.forget_topic(&topic);
        link.set_active(&topic, false);
        control.unsubscribe(channel).await
    } else {
        Ok(())
    }
}
