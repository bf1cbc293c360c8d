//! The engine's handle and shared state: publishing, registering and
//! unregistering subscriptions in the registry shards, stats. Building it is
//! `builder.rs`, its tunables `config.rs`, routing events `dispatch.rs`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde_json::Value;
use subs_security::SecurityConfig;
use tokio::sync::mpsc;

use crate::Error;
use crate::broker::{Broker, Event};
use crate::builder::EngineBuilder;
use crate::config::EngineConfig;
use crate::graphql::Schema;
use crate::history::{Epochs, History, Rings};
use crate::hooks::{Authenticator, Executor};
use crate::registry::{BoundField, ShardIndex};
use crate::stats::{Stats, StatsSnapshot};
/// The subs engine: cheap to clone, shared by every session.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shard {
    pub(crate) index: Mutex<ShardIndex>,
    /// The history of this shard's topics that keep one (appended by the
    /// shard's dispatcher, in dispatch order).
    pub(crate) rings: Mutex<Rings>,
    pub(crate) sender: mpsc::Sender<Event>,
}

pub(crate) struct EngineInner {
    /// The engine itself, for the tasks it spawns: they must not keep it alive.
    pub(crate) this: Weak<EngineInner>,
    pub(crate) schema: Schema,
    pub(crate) fields: HashMap<String, Arc<BoundField>>,
    pub(crate) shards: Box<[Shard]>,
    pub(crate) security: SecurityConfig,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) executor: Option<Arc<dyn Executor>>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) stats: Stats,
    pub(crate) config: EngineConfig,
    pub(crate) next_connection: AtomicU64,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) instance_id: Arc<str>,
    /// Topics that keep history, and how much.
    pub(crate) history: FxHashMap<Arc<str>, History>,
    pub(crate) epochs: Epochs,
    /// The broker's shared history, when it keeps one: topics with history
    /// are then numbered and kept there instead of in the shards' rings.
    pub(crate) broker_history: Option<Arc<dyn crate::BrokerHistory>>,
    /// Reads of that history in flight, shared by identical resumes.
    pub(crate) history_reads: Arc<crate::shared_reads::SharedReads>,
    pub(crate) hasher: FxBuildHasher,
}

impl Engine {
    /// Starts building an engine on `schema`.
    pub fn builder(schema: Schema) -> EngineBuilder {
        EngineBuilder::new(schema)
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// Publishes `payload` on `topic` through the broker; waits only while the
    /// dispatcher's queue is full.
    pub async fn publish(&self, topic: &str, payload: Value) -> Result<(), Error> {
        self.publish_event(Event::json(topic, payload)).await
    }

    /// Publishes already-serialized JSON; it is parsed once, at dispatch.
    pub async fn publish_bytes(
        &self,
        topic: &str,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<(), Error> {
        self.publish_event(Event::bytes(topic, payload)).await
    }

    /// Publishes an event: dispatched to this instance's subscribers, and
    /// handed to the broker for the other instances. Local delivery does not
    /// depend on the broker being up.
    pub async fn publish_event(&self, event: Event) -> Result<(), Error> {
        if let Some(history) = &self.inner.broker_history
            && let Some(policy) = self.inner.history.get(&event.topic)
        {
            // Numbered where it is stored: the broker carries it, with its
            // position, to every instance, this one included.
            let payload = event.payload.to_value()?;
            if let Some(stream) = policy.stream_of(&event.topic, &payload) {
                self.inner.stats.event_published();
                history.append(stream, event, policy.clone()).await?;
                return Ok(());
            }
        }
        self.inner.stats.event_published();
        self.inner.enqueue(event.clone()).await?;
        // Local subscribers have it now: a failure past this point must not
        // read as "nothing happened", or a retry delivers twice.
        self.inner
            .broker
            .publish(event)
            .await
            .map_err(|error| match error {
                Error::Broker(message) => Error::DeliveredLocallyOnly(message),
                other => other,
            })
    }

    /// Publishes to this instance's subscribers only, not through the broker:
    /// for sources every instance runs itself (the PostgreSQL outbox).
    pub async fn publish_local(&self, event: Event) -> Result<(), Error> {
        self.inner.stats.event_published();
        self.inner.enqueue(event).await
    }

    /// This instance's id, stamped on the envelopes it sends through a broker.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Whether the broker is connected now (always, for the in-memory one).
    pub fn broker_connected(&self) -> bool {
        self.inner.broker.is_connected()
    }

    /// The broker's counters.
    pub fn broker_stats(&self) -> crate::BrokerStats {
        self.inner.broker.stats()
    }

    /// Publishes from synchronous code outside the async runtime (another
    /// thread, a sync callback); blocks while the dispatcher's queue is full.
    /// Calling it from inside the runtime would block a worker: use
    /// [`Engine::publish`] there (it returns an error instead of deadlocking).
    pub fn publish_blocking(&self, topic: &str, payload: Value) -> Result<(), Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Broker(
                "publish_blocking called from inside the async runtime; use publish().await".into(),
            ));
        }
        self.inner.runtime.block_on(self.publish(topic, payload))
    }

    /// Dispatches an event to local subscribers now, bypassing the broker and the
    /// dispatcher queue (brokers normally go through [`EventSink`](crate::EventSink)), and waits
    /// until every group it matches has answered (groups with a resolver
    /// answer from their own pipeline, at the latest at the resolver
    /// deadline). Returns the number of payloads queued.
    pub async fn dispatch(&self, event: Event) -> usize {
        self.inner.dispatch(event, true).await
    }

    /// The security checks of the HTTP upgrade (origin, connections per
    /// address); hold the permit for the connection's life (give it to
    /// [`crate::Session::with_permit`]).
    pub fn admit(
        &self,
        facts: &subs_security::ConnectionFacts,
    ) -> Result<subs_security::ConnectionPermit, subs_security::Rejection> {
        self.inner.security.accept_upgrade(facts).map_err(|denied| {
            tracing::info!(peer = ?facts.peer, reason = denied.reason.as_str(), rejection = %denied.rejection, "upgrade refused");
            denied.rejection
        })
    }

    /// The largest frame a client may send, for transports that enforce it
    /// while reading.
    pub fn max_frame_bytes(&self) -> usize {
        self.inner.config.protocol.max_frame_bytes
    }

    /// The security configuration in force.
    pub fn security(&self) -> &SecurityConfig {
        &self.inner.security
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// How long resolvers took (every call, failed ones included; a call
    /// that timed out counts the time until its deadline).
    pub fn resolver_durations(&self) -> crate::HistogramSnapshot {
        self.inner.stats.resolver_durations()
    }

    /// The security counters.
    pub fn security_stats(&self) -> subs_security::SecurityStatsSnapshot {
        self.inner.security.stats().snapshot()
    }

    /// Whether the registry holds nothing (no group, no topic): after every
    /// session is gone it must be, or something leaked.
    pub fn registry_is_empty(&self) -> bool {
        self.inner
            .shards
            .iter()
            .all(|shard| shard.index.lock().is_empty())
    }
}

impl EngineInner {
    pub(crate) fn shard_of(&self, topic: &str) -> usize {
        (self.hasher.hash_one(topic) % self.shards.len() as u64) as usize
    }

    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        self.shards[self.shard_of(topic)]
            .index
            .lock()
            .has_topic(topic)
    }

    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.shards
            .iter()
            .flat_map(|shard| shard.index.lock().topic_names())
            .collect()
    }
}
