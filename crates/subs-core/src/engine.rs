//! The engine: bindings, registry shards, dispatchers, publishing.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use futures_util::FutureExt;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;
use serde_json::Value;
use subs_security::SecurityConfig;
use tokio::sync::mpsc;

use crate::Error;
use crate::HookDeadlines;
use crate::binding::{FieldBinding, Resolver};
use crate::broker::{Broker, Event, EventSink, InMemoryBroker};
use crate::graphql::Schema;
use crate::hooks::{Authenticator, Executor};
use crate::outbound::SlowConsumerPolicy;
use crate::pipeline::Job;
use crate::registry::{
    BoundField, ContextIdentity, Group, Registration, RegistrationHandle, ShardIndex,
};
use crate::stats::{Stats, StatsSnapshot};

/// Tunables of the engine, with defaults suited to thousands of connections.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Messages a connection may have waiting for its writer (default 4096).
    pub outbound_queue_capacity: usize,
    /// How long a subscriber whose queue is full may go without its writer
    /// making progress before the `Close` policy applies (default 250 ms).
    /// Its dispatcher (or resolver pipeline) waits meanwhile, for every full
    /// subscriber of an event at once: a burst is paced by the readers that
    /// keep reading, as TCP paces a writer, and a reader that takes nothing
    /// for this long is closed with 1013, having held its shard up once by at
    /// most this much. A reader that keeps reading, however slowly, paces its
    /// shard: `Duration::ZERO` instead closes any subscriber whose queue is
    /// full at once, so no reader ever waits for another.
    pub slow_consumer_grace: std::time::Duration,
    /// Bytes a connection may hold for its writer (default 1 MiB): queued
    /// messages plus those its writer took but has not written yet. The
    /// slow-consumer policy applies to whichever limit is hit first. One
    /// message always fits into an empty connection.
    pub outbound_queue_bytes: usize,
    /// What happens when that queue is full (default: close the connection).
    pub slow_consumer_policy: SlowConsumerPolicy,
    /// Protocol timeouts and limits.
    pub protocol: subs_protocol::Config,
    /// Dispatcher tasks; topics are spread over them by hash, and each keeps
    /// its topics' events in order (default: the number of CPUs).
    pub dispatch_shards: usize,
    /// Events waiting per dispatcher before `publish` waits (default 4096).
    pub event_queue_capacity: usize,
    /// Resolutions in flight per query group (default 64): a group's resolver
    /// runs for up to that many events at once, and their answers are
    /// delivered in event order. Groups resolve independently of each other.
    pub resolver_concurrency: usize,
    /// Events waiting per query group behind its resolutions in flight
    /// (default 1024). When full, the event is dropped for that group (its
    /// subscribers miss it) and counted in `resolver_events_dropped`: the
    /// dispatcher never waits for a resolver.
    pub resolver_queue_capacity: usize,
    /// How long each kind of host hook may run (see [`HookDeadlines`]).
    pub deadlines: HookDeadlines,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            outbound_queue_capacity: 4096,
            outbound_queue_bytes: 1 << 20,
            slow_consumer_grace: std::time::Duration::from_millis(250),
            slow_consumer_policy: SlowConsumerPolicy::default(),
            protocol: subs_protocol::Config::default(),
            dispatch_shards: std::thread::available_parallelism().map_or(2, usize::from),
            event_queue_capacity: 4096,
            resolver_concurrency: 64,
            resolver_queue_capacity: 1024,
            deadlines: HookDeadlines::default(),
        }
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    schema: Schema,
    bindings: HashMap<String, FieldBinding>,
    security: SecurityConfig,
    authenticator: Option<Arc<dyn Authenticator>>,
    executor: Option<Arc<dyn Executor>>,
    pub(crate) roots: crate::root::RootResolvers,
    broker: Option<Arc<dyn Broker>>,
    config: EngineConfig,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("bindings", &self.bindings)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Binds a root field of `Subscription`; unbound fields listen on the topic
    /// of their own name and filter on event fields named like their arguments.
    #[must_use]
    pub fn bind(mut self, field: impl Into<String>, binding: FieldBinding) -> Self {
        self.bindings.insert(field.into(), binding);
        self
    }

    /// Sets a resolver on a field, keeping the rest of its binding.
    #[must_use]
    pub fn resolver(mut self, field: impl Into<String>, resolver: impl Resolver) -> Self {
        let field = field.into();
        let binding = self
            .bindings
            .remove(&field)
            .unwrap_or_default()
            .resolver(resolver);
        self.bindings.insert(field, binding);
        self
    }

    /// Security checks (defaults are safe; see subs-security).
    #[must_use]
    pub fn security(mut self, security: SecurityConfig) -> Self {
        self.security = security;
        self
    }

    /// The authentication hook run at `connection_init`. Without one, every
    /// connection is accepted as an anonymous principal.
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// The executor for queries and mutations sent over the socket. Without
    /// one, the root-field resolvers of [`EngineBuilder::query`] and
    /// [`EngineBuilder::mutation`] execute them (giving both is an error).
    #[must_use]
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// The broker (default: in-memory).
    #[must_use]
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Engine tunables.
    #[must_use]
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the bindings against the schema and starts the dispatchers; must
    /// run inside a tokio runtime.
    pub fn build(self) -> Result<Engine, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let executor = self.roots.into_executor(&self.schema, self.executor)?;
        let mut fields = HashMap::new();
        for name in self.bindings.keys() {
            if self.schema.subscription_field_arguments(name).is_none() {
                return Err(Error::InvalidBinding(format!(
                    "`Subscription` has no field `{name}`"
                )));
            }
        }
        for name in self.schema.subscription_field_names() {
            let binding = self.bindings.get(&name).cloned().unwrap_or_default();
            let arguments = self
                .schema
                .subscription_field_arguments(&name)
                .unwrap_or_default();
            for (argument, _) in &binding.argument_paths {
                if !arguments.contains(argument) {
                    return Err(Error::InvalidBinding(format!(
                        "`Subscription.{name}` has no argument `{argument}`"
                    )));
                }
            }
            let filters = if binding.stream.is_some() {
                Vec::new()
            } else {
                arguments
                    .iter()
                    .map(|a| (a.clone(), Arc::from(binding.path_for(a))))
                    .collect()
            };
            let field = BoundField {
                name: Arc::from(name.as_str()),
                topic: binding
                    .topic
                    .clone()
                    .unwrap_or_else(|| Arc::from(name.as_str())),
                filters,
                predicate: binding.predicate.clone(),
                resolver: binding.resolver.clone(),
                stream: binding.stream.clone(),
                scope: binding.scope,
            };
            fields.insert(name, Arc::new(field));
        }

        let shard_count = self.config.dispatch_shards.max(1);
        let event_queue_capacity = self.config.event_queue_capacity.max(1);
        let mut receivers = Vec::with_capacity(shard_count);
        let shards = (0..shard_count)
            .map(|_| {
                let (sender, receiver) = mpsc::channel(event_queue_capacity);
                receivers.push(receiver);
                Shard {
                    index: Mutex::new(ShardIndex::default()),
                    sender,
                }
            })
            .collect();
        // One source of truth for connection hygiene: the security config.
        let mut config = self.config;
        config.protocol.connection_init_timeout = Some(self.security.hygiene().init_timeout);
        config.protocol.max_frame_bytes = self.security.hygiene().max_frame_bytes;
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(InMemoryBroker::new()));
        let inner = Arc::new_cyclic(|this| EngineInner {
            this: this.clone(),
            schema: self.schema,
            fields,
            shards,
            security: self.security,
            authenticator: self.authenticator,
            executor,
            broker: broker.clone(),
            stats: Stats::default(),
            config,
            next_connection: AtomicU64::new(0),
            runtime: runtime.clone(),
            instance_id: new_instance_id(),
            hasher: FxBuildHasher,
        });
        for receiver in receivers {
            runtime.spawn(run_dispatcher(Arc::downgrade(&inner), receiver));
        }
        broker.attach(EventSink {
            engine: Arc::downgrade(&inner),
        });
        Ok(Engine { inner })
    }
}

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
    sender: mpsc::Sender<Event>,
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
    hasher: FxBuildHasher,
}

impl Engine {
    /// Starts building an engine on `schema`.
    pub fn builder(schema: Schema) -> EngineBuilder {
        EngineBuilder {
            schema,
            bindings: HashMap::new(),
            security: SecurityConfig::default(),
            authenticator: None,
            executor: None,
            roots: Default::default(),
            broker: None,
            config: EngineConfig::default(),
        }
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
        self.inner.stats.event_published();
        self.inner.enqueue(event.clone()).await?;
        self.inner.broker.publish(event).await
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
    /// dispatcher queue (brokers normally go through [`EventSink`]), and waits
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

    pub(crate) async fn enqueue(&self, event: Event) -> Result<(), Error> {
        let shard = &self.shards[self.shard_of(&event.topic)];
        shard.sender.send(event).await.map_err(|_| Error::ShutDown)
    }

    pub(crate) fn register(&self, registration: Registration) -> RegistrationHandle {
        let topic = registration.field.topic.clone();
        let shard_number = self.shard_of(&topic);
        // Canonicalized here, once per subscription and outside the shard's
        // lock; events never pay for it.
        let context = registration.field.keys_by_context().then(|| {
            ContextIdentity::of(
                &registration.principal,
                registration.init_payload.as_deref(),
            )
        });
        let mut index = self.shards[shard_number].index.lock();
        let first = !index.has_topic(&topic);
        let handle = index.register(shard_number, registration, context, &self.stats);
        drop(index);
        if first {
            self.broker.interest(&topic, true);
        }
        handle
    }

    pub(crate) fn unregister(
        &self,
        handle: RegistrationHandle,
        topic: &str,
        connection: u64,
        subscription_key: u64,
    ) {
        let mut index = self.shards[handle.shard].index.lock();
        index.unregister(handle.group, connection, subscription_key, &self.stats);
        let last = !index.has_topic(topic);
        drop(index);
        if last {
            self.broker.interest(topic, false);
        }
    }

    /// Routes one event: groups without a resolver are projected and served
    /// here; groups with one get the event in their pipeline (see
    /// `pipeline.rs`) and this returns without waiting for them, unless
    /// `wait` asks for their count of payloads queued.
    pub(crate) async fn dispatch(&self, event: Event, wait: bool) -> usize {
        self.stats.event_dispatched();
        let payload = match event.payload.to_value() {
            Ok(payload) => payload,
            Err(error) => {
                self.stats.invalid_event();
                tracing::warn!(topic = %event.topic, %error, "dropped an event whose payload is not JSON");
                return 0;
            }
        };
        let mut groups = Vec::new();
        self.shards[self.shard_of(&event.topic)].index.lock().route(
            &event.topic,
            &payload,
            &mut groups,
        );
        let mut delivered = 0;
        // Started when the event reaches its groups: the same instant for all.
        let mut deadline = None;
        let mut answers = Vec::new();
        for group in &groups {
            if !self.admits(group, &payload) {
                continue;
            }
            match &group.pipeline {
                None => {
                    let bytes = group.operation.project(&group.variables, Ok(&payload));
                    delivered += group
                        .deliver(&bytes, &self.stats, self.config.slow_consumer_grace)
                        .await;
                }
                Some(pipeline) => {
                    let deadline = *deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.config.deadlines.resolver
                    });
                    let done = wait.then(|| {
                        let (done, answer) = tokio::sync::oneshot::channel();
                        answers.push(answer);
                        done
                    });
                    pipeline.submit(
                        group,
                        self,
                        Job {
                            event: payload.clone(),
                            deadline,
                            done,
                        },
                    );
                }
            }
        }
        drop(groups);
        for answer in answers {
            // A dropped answer is an event the group's full queue refused.
            delivered += answer.await.unwrap_or(0);
        }
        delivered
    }

    /// The field's extra predicate and the security event filter, once per group:
    /// every member of a group shares a scope, so one answer holds for all.
    fn admits(&self, group: &Group, payload: &Value) -> bool {
        if let Some(predicate) = &group.field.predicate
            && !predicate(payload, &group.arguments)
        {
            return false;
        }
        if let Some(filter) = self.security.event_filter()
            && !filter.allows(&group.principal, payload)
        {
            self.stats.event_filtered();
            return false;
        }
        true
    }
}

async fn run_dispatcher(engine: std::sync::Weak<EngineInner>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(engine) = engine.upgrade() else {
            break;
        };
        // A panic in host code (a predicate, an event filter) loses this event,
        // never the dispatcher and every topic it serves.
        let topic = event.topic.clone();
        if std::panic::AssertUnwindSafe(engine.dispatch(event, false))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(%topic, "dispatching an event panicked; the event was dropped");
        }
    }
}

/// A process-unique id without a random-number dependency: the std hasher's
/// per-process random keys over the time, the pid and a counter.
fn new_instance_id() -> Arc<str> {
    use std::hash::{BuildHasher as _, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = (
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    );
    let high = state.hash_one(seed);
    let low = state.hash_one((seed, high));
    Arc::from(format!("{high:016x}{low:016x}"))
}
