//! How a root field of `Subscription` gets its events: a topic with argument
//! filters (the default), or a per-subscription stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use serde_json::{Map, Value};
use subs_security::Principal;

/// The future a resolver returns.
pub type ResolverFuture = Pin<Box<dyn Future<Output = Result<Value, ResolverError>> + Send>>;

/// A resolver's failure: its message becomes a GraphQL error in the `next`
/// payload, with the root field's path; the subscription goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverError {
    /// Shown to the client.
    pub message: String,
}

impl fmt::Display for ResolverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ResolverError {}

impl From<String> for ResolverError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl From<&str> for ResolverError {
    fn from(message: &str) -> Self {
        Self {
            message: message.to_owned(),
        }
    }
}

/// What a resolver or a stream source is given. Resolvers run once per query
/// group per event; what the context says about who asks depends on the
/// field's [`ResolverScope`]: under [`ResolverScope::Subscriber`] (the default)
/// every member of the group has the same principal and init payload, so they
/// are the subscriber's own; under [`ResolverScope::Shared`] the principal is
/// the anonymous one and there is no init payload.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// The topic the event was published on (empty for stream sources).
    pub topic: Arc<str>,
    /// The event payload as published (`Null` for stream sources).
    pub event: Arc<Value>,
    /// The operation's coerced variables.
    pub variables: Arc<Map<String, Value>>,
    /// The root field's arguments, variables substituted.
    pub arguments: Arc<Map<String, Value>>,
    /// The subscriber's principal (the anonymous principal for a resolver of
    /// [`ResolverScope::Shared`] scope).
    pub principal: Arc<Principal>,
    /// The subscriber's `connection_init` payload (`None` for a resolver of
    /// [`ResolverScope::Shared`] scope).
    pub init_payload: Option<Arc<Map<String, Value>>>,
}

/// Turns an event into the root field's value, once per query group.
pub trait Resolver: Send + Sync + 'static {
    /// Resolves one event for one group.
    fn resolve(&self, context: ResolveContext) -> ResolverFuture;

    /// Whether the engine may call [`Resolver::resolve`] and poll the future
    /// once on the dispatcher, when the group has nothing pending: a
    /// resolution ready at once is then delivered without a hop to the
    /// group's task; one that is not ready goes on in that task. True by
    /// default, which asks what every async function on tokio must do
    /// anyway: never block (move blocking work to `spawn_blocking`). A
    /// resolver whose call may block (on a lock another runtime holds, such
    /// as Python's) answers false, and always runs in the group's task.
    fn may_run_on_dispatcher(&self) -> bool {
        true
    }
}

impl<F, Fut> Resolver for F
where
    F: Fn(ResolveContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ResolverError>> + Send + 'static,
{
    fn resolve(&self, context: ResolveContext) -> ResolverFuture {
        Box::pin(self(context))
    }
}

/// A per-subscription source of values (a finite or endless stream); the
/// subscription completes when the stream ends. Dropping the stream is the
/// source's cleanup, and happens when the client completes or disconnects.
pub trait StreamSource: Send + Sync + 'static {
    /// Opens the stream for one subscription.
    fn open(&self, context: ResolveContext) -> BoxStream<'static, Result<Value, ResolverError>>;
}

impl<F> StreamSource for F
where
    F: Fn(ResolveContext) -> BoxStream<'static, Result<Value, ResolverError>>
        + Send
        + Sync
        + 'static,
{
    fn open(&self, context: ResolveContext) -> BoxStream<'static, Result<Value, ResolverError>> {
        self(context)
    }
}

/// Whose context a field's resolver may depend on; this decides which
/// subscriptions share its work.
///
/// Identical subscriptions (same document, variables and security scope) form
/// one group and the resolver runs once per group and event. A resolver that
/// reads who asks would hand one subscriber's answer to another if the group
/// mixed subscribers, so by default it does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResolverScope {
    /// The resolver may depend on the subscriber: groups never mix connections
    /// whose principal (id, tenant, roles, claims) or `connection_init` payload
    /// differ, and the resolver sees the subscriber's own. The default.
    #[default]
    Subscriber,
    /// The resolver does not depend on who asks: groups are shared by every
    /// principal (within the security scope of the event filter), and the
    /// resolver gets the anonymous principal and no init payload.
    Shared,
}

/// An extra predicate on top of the argument index: `(event, arguments) -> deliver?`.
///
/// It runs synchronously on the dispatcher, once per group and event, like
/// the security event filter: it must be quick and must never block (a
/// synchronous closure cannot be pre-empted, so a blocking one holds up every
/// topic of its dispatcher shard). Slow work belongs in a resolver, which runs
/// off the dispatcher under a deadline.
pub type EventPredicate = Arc<dyn Fn(&Value, &Map<String, Value>) -> bool + Send + Sync>;

/// How one root field of `Subscription` receives its events.
///
/// ```
/// use subs_core::FieldBinding;
/// // `serviceUpdated(serviceId: ID)` listens on topic "services" and filters on
/// // the event's `service.id` when the client passes a `serviceId`.
/// let binding = FieldBinding::topic("services").argument("serviceId", "service.id");
/// # let _ = binding;
/// ```
#[derive(Clone, Default)]
pub struct FieldBinding {
    pub(crate) topic: Option<Arc<str>>,
    pub(crate) argument_paths: Vec<(String, Vec<String>)>,
    pub(crate) predicate: Option<EventPredicate>,
    pub(crate) resolver: Option<Arc<dyn Resolver>>,
    pub(crate) stream: Option<Arc<dyn StreamSource>>,
    pub(crate) scope: ResolverScope,
    pub(crate) history: Option<crate::History>,
}

impl fmt::Debug for FieldBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldBinding")
            .field("topic", &self.topic)
            .field("argument_paths", &self.argument_paths)
            .field("predicate", &self.predicate.is_some())
            .field("resolver", &self.resolver.is_some())
            .field("stream", &self.stream.is_some())
            .field("scope", &self.scope)
            .field("history", &self.history)
            .finish()
    }
}

impl FieldBinding {
    /// Events of `topic` (by default a field listens on the topic of its own name).
    pub fn topic(topic: impl Into<Arc<str>>) -> Self {
        Self {
            topic: Some(topic.into()),
            ..Self::default()
        }
    }

    /// The field's own name is its topic (the default binding).
    pub fn default_topic() -> Self {
        Self::default()
    }

    /// A per-subscription stream instead of a topic.
    pub fn stream(source: impl StreamSource) -> Self {
        Self {
            stream: Some(Arc::new(source)),
            ..Self::default()
        }
    }

    /// Filters on event field `path` (dot-separated) when the client gives
    /// `argument` a non-null value. By default an argument filters on the
    /// event field of the same name.
    #[must_use]
    pub fn argument(mut self, argument: &str, path: &str) -> Self {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if let Some(existing) = self
            .argument_paths
            .iter_mut()
            .find(|(name, _)| name == argument)
        {
            existing.1 = path;
        } else {
            self.argument_paths.push((argument.to_owned(), path));
        }
        self
    }

    /// An extra predicate evaluated after the index, once per group and event,
    /// synchronously on the dispatcher: it must not block (see [`EventPredicate`]).
    #[must_use]
    pub fn predicate(
        mut self,
        predicate: impl Fn(&Value, &Map<String, Value>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// A resolver turning the event into the field's value, once per group
    /// and event, under the resolver deadline
    /// ([`crate::HookDeadlines::resolver`]). By default it is of
    /// [`ResolverScope::Subscriber`] scope; see [`FieldBinding::shared`].
    #[must_use]
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Same as [`FieldBinding::resolver`] for an already shared resolver.
    #[must_use]
    pub fn shared_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Declares that the resolver does not depend on who asks
    /// ([`ResolverScope::Shared`]): one group serves every principal, and the
    /// resolver gets the anonymous principal and no init payload.
    #[must_use]
    pub fn shared(self) -> Self {
        self.scope(ResolverScope::Shared)
    }

    /// Sets the resolver's scope (default [`ResolverScope::Subscriber`]).
    #[must_use]
    pub fn scope(mut self, scope: ResolverScope) -> Self {
        self.scope = scope;
        self
    }

    /// Keeps the topic's recent events, numbered, so that a client that
    /// reconnects can resume where it left off (see the `history` module and
    /// `docs/history.md`): every `next` of the field then carries its
    /// position in `extensions.subs`.
    #[must_use]
    pub fn history(mut self, history: crate::History) -> Self {
        self.history = Some(history);
        self
    }

    pub(crate) fn path_for(&self, argument: &str) -> Vec<String> {
        self.argument_paths
            .iter()
            .find(|(name, _)| name == argument)
            .map_or_else(|| vec![argument.to_owned()], |(_, path)| path.clone())
    }
}
