//! NATS broker: one subject per topic (`subs.<topic>`), subscribed only while
//! this instance has a local subscriber on the topic. The NATS client
//! reconnects and resubscribes by itself; this broker counts reconnections and
//! the events it can tell were missed (core NATS is at-most-once).
//!
//! Topics with history are stored and numbered in a JetStream stream, which
//! republishes each event with its position on the topic's subject (see
//! `nats_history.rs`), so a client can resume on any instance.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use subs_core::{Broker, BrokerError, BrokerStats, Event, EventSink, Position};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::nats_history::{DEFAULT_STREAM, NatsHistory, position_of, republished_subjects};
use super::nats_order::{Link, Resequencer};
use super::{
    Backoff, Bookkeeping, EngineLink, Interest, InterestReceiver, LinkState, StartupPolicy, deliver,
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
    link: Arc<LinkState>,
    attachment: Arc<EngineLink>,
    /// Topics with history are numbered and kept in JetStream.
    history: Arc<NatsHistory>,
    /// Subscribes to fail on purpose before trying for real (tests only).
    injected_failures: Arc<AtomicU32>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("stats", &self.link.stats())
            .finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// Connects to `url` (`nats://host:port`); topics with history are kept
    /// in the JetStream stream [`DEFAULT_STREAM`] (`subs-history`).
    pub async fn connect(url: &str, startup: StartupPolicy) -> Result<Arc<Self>, crate::Error> {
        Self::connect_with_history_stream(url, startup, DEFAULT_STREAM).await
    }

    /// [`NatsBroker::connect`], keeping topics with history in the JetStream
    /// stream `stream` (a name without dots or spaces; its subjects are
    /// `<stream>.*.*`). Every instance that shares a history must name the
    /// same stream.
    pub async fn connect_with_history_stream(
        url: &str,
        startup: StartupPolicy,
        stream: &str,
    ) -> Result<Arc<Self>, crate::Error> {
        let link = Arc::new(LinkState::default());
        let events_relay = link.clone();
        // `Connected` also follows the first connection: count it as a
        // reconnection only after a `Disconnected`.
        let was_disconnected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut options = async_nats::ConnectOptions::new().event_callback(move |event| {
            let link = events_relay.clone();
            let was_disconnected = was_disconnected.clone();
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match event {
                    async_nats::Event::Connected => {
                        link.set_connected(true);
                        if was_disconnected.swap(false, Relaxed) {
                            link.reconnected();
                            tracing::warn!("reconnected to NATS");
                        }
                    }
                    async_nats::Event::Disconnected => {
                        link.set_connected(false);
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
            .map_err(|error| BrokerError::Connect {
                broker: "NATS",
                address: url.to_owned(),
                source: error.into(),
            })?;
        // The `Connected` event may still be on its way.
        if client.connection_state() == async_nats::connection::State::Connected {
            link.set_connected(true);
        }
        let attachment = Arc::new(EngineLink::new(link.clone()));
        let origin = {
            let attachment = attachment.clone();
            Arc::new(move || attachment.origin())
        };
        let history = Arc::new(NatsHistory::new(
            client.clone(),
            stream.to_owned(),
            link.clone(),
            origin,
        ));
        Ok(Arc::new(Self {
            client,
            link,
            attachment,
            history,
            injected_failures: Arc::default(),
        }))
    }

    /// The sizes of the broker's bookkeeping (for tests; not a stable API).
    #[doc(hidden)]
    pub fn bookkeeping(&self) -> Bookkeeping {
        self.link.bookkeeping()
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
                    link: self.link.clone(),
                    injected_failures: self.injected_failures.clone(),
                },
                interest,
            ));
        }
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), subs_core::Error>> {
        let envelope = self.link.envelope(&event, self.attachment.origin());
        let subject = subject_for(&event.topic);
        let client = self.client.clone();
        let link = self.link.clone();
        Box::pin(async move {
            // While disconnected the client queues publishes in a bounded
            // buffer and, once it is full, `publish` waits for the server:
            // the publishing task (and with it local delivery) stalled for the
            // whole outage. Fail fast instead; the envelope's `seq` is spent,
            // so receivers count the event in `missed`.
            if client.connection_state() != async_nats::connection::State::Connected {
                link.published(false);
                return Err(BrokerError::Unreachable { broker: "NATS" }.into());
            }
            let result = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                client.publish(subject, envelope.encode().into()),
            )
            .await
            .unwrap_or_else(|_| Err(async_nats::PublishErrorKind::Send.into()));
            link.published(result.is_ok());
            result.map_err(|error| {
                BrokerError::Publish {
                    broker: "NATS",
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
        "nats"
    }

    fn history(&self) -> Option<Arc<dyn subs_core::BrokerHistory>> {
        Some(self.history.clone())
    }

    fn subscribed(&self, topic: &str) -> BoxFuture<'static, ()> {
        self.link.subscribed(topic)
    }
}

/// What every topic's subscription task needs.
#[derive(Clone)]
struct Subscriptions {
    client: async_nats::Client,
    sink: EventSink,
    link: Arc<LinkState>,
    injected_failures: Arc<AtomicU32>,
}

impl Subscriptions {
    /// The topic's subject and, for a topic with history, the subjects its
    /// stored events are republished on, as one stream of messages.
    async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, async_nats::Message>, BrokerError> {
        let failed = |error: async_nats::SubscribeError| BrokerError::Subscribe {
            broker: "NATS",
            source: error.into(),
        };
        let injected = self
            .injected_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(failed(async_nats::SubscribeError::new(
                async_nats::SubscribeErrorKind::Other,
            )));
        }
        let live = self
            .client
            .subscribe(subject_for(topic))
            .await
            .map_err(failed)?;
        if !self.sink.keeps_history(topic) {
            return Ok(live.boxed());
        }
        let stored = self
            .client
            .subscribe(republished_subjects(topic))
            .await
            .map_err(failed)?;
        Ok(futures_util::stream::select(live, stored).boxed())
    }

    /// Hands received events on to the engine, in the order given; false
    /// once the engine is gone.
    async fn forward(&self, events: Vec<(Bytes, Option<Position>)>, origin: &str) -> bool {
        for (payload, position) in events {
            if let Some(event) = self.link.accept_at(&payload, origin, position)
                && !deliver(&self.sink, event).await
            {
                return false;
            }
        }
        true
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
            link: self.link.clone(),
            topic: topic.clone(),
        };
        let mut backoff = Backoff::new();
        while self.sink.is_interested(&topic) {
            let mut subscriber = match self.subscribe(&topic).await {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    self.link.subscribe_failed();
                    tracing::warn!(%topic, %error, "NATS subscribe failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            self.link.forget_topic(&topic);
            // The server has the subscription once a flush returns: a resume
            // reads the history only then, so every event is either in what
            // it reads or delivered here.
            if let Err(error) = self.client.flush().await {
                tracing::debug!(%topic, %error, "NATS flush after subscribe failed");
            }
            self.link.set_active(&topic, true);
            // Stored events go on in their stream's order (see `nats_order`).
            let mut order = Resequencer::default();
            loop {
                let deadline = order.deadline();
                let ready = tokio::select! {
                    message = subscriber.next() => match message {
                        Some(message) => {
                            let position = position_of(message.headers.as_ref());
                            match Link::of(message.headers.as_ref()).filter(|_| position.is_some()) {
                                Some(link) => order.accept(link, (message.payload, position), Instant::now()),
                                None => vec![(message.payload, position)],
                            }
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        order.expire(Instant::now())
                    }
                };
                if !self.forward(ready, &origin).await {
                    return;
                }
            }
            // What still waits for a predecessor goes on before the subscription
            // is made again.
            let waiting = order.expire(Instant::now() + super::nats_order::HOLD);
            if !self.forward(waiting, &origin).await {
                return;
            }
            self.link.set_active(&topic, false);
            tracing::warn!(%topic, "NATS subscription ended; subscribing again");
            backoff.wait().await;
        }
    }
}

struct ForgetOnDrop {
    link: Arc<LinkState>,
    topic: Arc<str>,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        self.link.set_active(&self.topic, false);
        self.link.forget_topic(&self.topic);
    }
}

/// Keeps one NATS subscription per topic with local subscribers; each forwards
/// its messages in order to the engine.
async fn manage_subscriptions(subscriptions: Subscriptions, mut interest: InterestReceiver) {
    let Some(own_origin) = subscriptions.sink.instance_id() else {
        return;
    };
    let sink = subscriptions.sink.clone();
    let link = subscriptions.link.clone();
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
        link.set_subscribed(forwarders.len());
    }
    for task in forwarders.into_values() {
        task.abort();
    }
}
