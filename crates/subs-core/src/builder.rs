//! Building an engine: bindings checked against the schema, hooks, broker,
//! dispatchers started.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};
use subs_security::SecurityConfig;
use tokio::sync::mpsc;

use crate::BuildError;
use crate::binding::{FieldBinding, Resolver};
use crate::broker::{Broker, EventSink, InMemoryBroker};
use crate::config::EngineConfig;
use crate::dispatch::run_dispatcher;
use crate::engine::{Engine, EngineInner, Shard};
use crate::graphql::Schema;
use crate::history::{Epochs, History, Rings};
use crate::hooks::{Authenticator, Executor};
use crate::registry::{BoundField, ShardIndex};
use crate::stats::Stats;

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
    /// A builder with no bindings, hooks or broker, and default settings.
    pub(crate) fn new(schema: Schema) -> Self {
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
    pub fn build(self) -> Result<Engine, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let executor = self.roots.into_executor(&self.schema, self.executor)?;
        let mut fields = HashMap::new();
        let mut history: FxHashMap<Arc<str>, History> = FxHashMap::default();
        for name in self.bindings.keys() {
            if self.schema.subscription_field_arguments(name).is_none() {
                return Err(BuildError::InvalidBinding(format!(
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
                    return Err(BuildError::InvalidBinding(format!(
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
            if let Some(policy) = binding.history.clone() {
                if binding.stream.is_some() {
                    return Err(BuildError::InvalidBinding(format!(
                        "`Subscription.{name}` is bound to a stream: only a topic keeps history"
                    )));
                }
                let topic = binding
                    .topic
                    .clone()
                    .unwrap_or_else(|| Arc::from(name.as_str()));
                let merged = match history.remove(&topic) {
                    Some(existing) => existing.union(policy),
                    None => policy,
                };
                history.insert(topic, merged);
            }
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
                    rings: Mutex::new(Rings::default()),
                    sender,
                }
            })
            .collect();
        let config = self.config;
        let protocol = config
            .websocket
            .protocol_config(self.security.connection_rules());
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(InMemoryBroker::new()));
        let instance_id = new_instance_id();
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
            protocol,
            next_connection: AtomicU64::new(0),
            runtime: runtime.clone(),
            epochs: Epochs::new(instance_id.clone()),
            broker_history: broker.history(),
            history_reads: Arc::default(),
            instance_id,
            history,
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
