//! The subscription registry: query groups indexed by topic and filter value,
//! so an event reaches only the groups that match it.
//!
//! Lock order: a shard's index lock, then a group's subscriber lock. The
//! dispatcher holds the index lock only while routing, never while resolving
//! or queueing.

use std::collections::hash_map::Entry;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indexmap::IndexMap;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde_json::{Map, Value};
use smallvec::SmallVec;
use subs_security::{Principal, ScopeKey};

use crate::binding::ResolverScope;
use crate::graphql::{DocumentIdentity, PreparedOperation};
use crate::outbound::{ConnectionShared, Payload, Push, Queued};
use crate::pipeline::Pipeline;
use crate::stats::Stats;

/// A root field of `Subscription` with its binding resolved against the schema.
pub(crate) struct BoundField {
    pub(crate) name: Arc<str>,
    pub(crate) topic: Arc<str>,
    /// Argument name and the event path it filters on.
    pub(crate) filters: Vec<(String, Arc<[String]>)>,
    pub(crate) predicate: Option<crate::binding::EventPredicate>,
    pub(crate) resolver: Option<Arc<dyn crate::binding::Resolver>>,
    pub(crate) stream: Option<Arc<dyn crate::binding::StreamSource>>,
    pub(crate) scope: ResolverScope,
}

impl BoundField {
    /// Whether the groups of this field are split by subscriber context: only
    /// a resolver can depend on who asks (projection does not).
    pub(crate) fn keys_by_context(&self) -> bool {
        self.resolver.is_some() && self.scope == ResolverScope::Subscriber
    }
}

/// Who a subscription's resolver answers for, under
/// [`ResolverScope::Subscriber`]: the principal (id, tenant, roles, claims)
/// and the `connection_init` payload as canonical JSON. Groups of a field
/// keyed by it never mix subscribers whose context differs. The hash only
/// speeds up lookups; equality compares the text.
#[derive(Debug, Clone)]
pub(crate) struct ContextIdentity {
    hash: u64,
    text: Arc<str>,
}

impl ContextIdentity {
    pub(crate) fn of(principal: &Principal, init_payload: Option<&Map<String, Value>>) -> Self {
        let context = serde_json::json!({
            "id": principal.id,
            "tenant": principal.tenant,
            "roles": principal.roles,
            "claims": principal.claims,
            "init": init_payload,
        });
        let text = canonical_json(&context);
        Self {
            hash: std::hash::BuildHasher::hash_one(&FxBuildHasher, text.as_str()),
            text: Arc::from(text),
        }
    }
}

impl PartialEq for ContextIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for ContextIdentity {}

impl std::hash::Hash for ContextIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Subscriptions with the same document, variables, security scope and (for
/// a field whose resolver is of subscriber scope) subscriber context: they
/// receive byte-identical payloads, so the work is done once for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    /// The document's normalized text and operation name, not a cache entry:
    /// a document evicted from the schema's cache and prepared again, or sent
    /// with other whitespace, still joins its group.
    document: DocumentIdentity,
    variables: Box<str>,
    scope: ScopeKey,
    context: Option<ContextIdentity>,
}

pub(crate) struct Group {
    pub(crate) id: u64,
    pub(crate) topic: Arc<str>,
    pub(crate) field: Arc<BoundField>,
    pub(crate) operation: Arc<PreparedOperation>,
    pub(crate) variables: Arc<Map<String, Value>>,
    pub(crate) arguments: Arc<Map<String, Value>>,
    /// Representative of the group's security scope, for the event filter:
    /// every member sees the same events.
    pub(crate) principal: Arc<Principal>,
    /// What the resolver is told of who asks: the members' own principal and
    /// init payload (they share them under [`ResolverScope::Subscriber`]), or
    /// the anonymous principal and none under [`ResolverScope::Shared`].
    pub(crate) resolver_principal: Arc<Principal>,
    pub(crate) resolver_init_payload: Option<Arc<Map<String, Value>>>,
    /// The resolver pipeline, for a field with a resolver; `None` keeps the
    /// inline path (no task, no queue) for the others.
    pub(crate) pipeline: Option<Pipeline>,
    key: GroupKey,
    partition: PartitionPaths,
    filter_value: Box<str>,
    /// Where the group's id sits in its filter value's list, so leaving is a
    /// swap-remove instead of a scan: with thousands of groups on one value
    /// (distinct variables, no filter) a scan made a disconnect storm
    /// quadratic. Changed only under the shard's lock.
    slot: AtomicUsize,
    subscribers: Mutex<Subscribers>,
}

/// A group's members by (connection, subscription key): swap-remove is O(1)
/// and iteration is over a dense array.
type Subscribers = IndexMap<(u64, u64), Arc<ConnectionShared>, FxBuildHasher>;

impl Group {
    /// Queues the shared bytes for every subscriber; returns how many got
    /// them. With a `grace`, a subscriber whose queue is full (under the
    /// `Close` policy) may make room as long as its writer keeps making
    /// progress, at most `grace` apart, and the caller waits meanwhile (for
    /// every full subscriber at once): a burst is paced by the readers that
    /// keep reading, while one that takes nothing for `grace` is closed.
    /// Without one, the policy applies at once.
    pub(crate) async fn deliver(
        &self,
        payload: &Arc<Payload>,
        stats: &Stats,
        grace: Duration,
    ) -> usize {
        let mut full: SmallVec<[(Arc<ConnectionShared>, Queued); 2]> = SmallVec::new();
        let mut delivered = 0;
        {
            let subscribers = self.subscribers.lock();
            for (&(_, key), connection) in subscribers.iter() {
                let item = Queued::Next(key, payload.clone());
                if grace.is_zero() {
                    delivered += count(connection.push(item), stats);
                    continue;
                }
                match connection.try_push(item) {
                    Ok(outcome) => delivered += count(outcome, stats),
                    Err(item) => full.push((connection.clone(), item)),
                }
            }
        }
        if !full.is_empty() {
            futures_util::future::join_all(full.iter().map(|(connection, item)| {
                connection.wait_for_room_while_draining(item.weight(), grace)
            }))
            .await;
            for (connection, item) in full {
                delivered += count(connection.push(item), stats);
            }
        }
        stats.frames_queued(delivered);
        delivered
    }
}

impl Group {
    /// Whether `event` passes the group's argument filters (what the index
    /// does for live events; a replay checks it per event).
    pub(crate) fn matches(&self, event: &Value) -> bool {
        let mut key = String::new();
        event_filter_value(&self.partition, event, &mut key) && *key == *self.filter_value
    }
}

/// Counts one push: 1 when the subscriber got the message.
fn count(outcome: Push, stats: &Stats) -> usize {
    match outcome {
        Push::Queued => 1,
        Push::DroppedOldest => {
            stats.frame_dropped();
            1
        }
        Push::Overflow | Push::DroppedNewest => {
            stats.frame_dropped();
            0
        }
        Push::Closed => 0,
    }
}

/// Everything needed to register one subscription.
pub(crate) struct Registration {
    pub(crate) field: Arc<BoundField>,
    pub(crate) operation: Arc<PreparedOperation>,
    pub(crate) variables: Arc<Map<String, Value>>,
    pub(crate) arguments: Arc<Map<String, Value>>,
    pub(crate) scope: ScopeKey,
    pub(crate) principal: Arc<Principal>,
    pub(crate) init_payload: Option<Arc<Map<String, Value>>>,
    pub(crate) connection: Arc<ConnectionShared>,
    /// The subscription's key within its connection (never reused).
    pub(crate) subscription_key: u64,
}

/// Where a registration lives, to remove it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegistrationHandle {
    pub(crate) shard: usize,
    pub(crate) group: u64,
}

/// The event paths a partition filters on, sorted.
type PartitionPaths = Box<[Arc<[String]>]>;

#[derive(Default)]
struct Partition {
    paths: PartitionPaths,
    by_value: FxHashMap<Box<str>, SmallVec<[u64; 2]>>,
}

#[derive(Default)]
struct TopicIndex {
    /// One partition per set of filtered paths; typically one or two per topic.
    partitions: Vec<Partition>,
}

/// One shard of the registry; topics are spread over shards by hash.
#[derive(Default)]
pub(crate) struct ShardIndex {
    topics: FxHashMap<Arc<str>, TopicIndex>,
    by_key: FxHashMap<GroupKey, u64>,
    groups: FxHashMap<u64, Arc<Group>>,
    next_group: u64,
}

impl ShardIndex {
    /// Adds one subscription to its group, creating the group if needed.
    /// `context` is the subscriber's [`ContextIdentity`] when its field keys
    /// groups by it (computed by the caller, outside the shard's lock).
    pub(crate) fn register(
        &mut self,
        shard: usize,
        registration: Registration,
        context: Option<ContextIdentity>,
        stats: &Stats,
    ) -> RegistrationHandle {
        let key = GroupKey {
            document: registration.operation.identity().clone(),
            variables: canonical_json(&Value::Object((*registration.variables).clone()))
                .into_boxed_str(),
            scope: registration.scope.clone(),
            context,
        };
        let group = match self.by_key.entry(key.clone()) {
            Entry::Occupied(entry) => self.groups[entry.get()].clone(),
            Entry::Vacant(entry) => {
                self.next_group += 1;
                let id = self.next_group;
                entry.insert(id);
                let (partition, filter_value) =
                    filter_of(&registration.field, &registration.arguments);
                let group = Arc::new(Group {
                    id,
                    topic: registration.field.topic.clone(),
                    field: registration.field.clone(),
                    operation: registration.operation.clone(),
                    variables: registration.variables.clone(),
                    arguments: registration.arguments.clone(),
                    principal: registration.principal.clone(),
                    resolver_principal: match registration.field.scope {
                        ResolverScope::Shared => Arc::new(Principal::anonymous()),
                        ResolverScope::Subscriber => registration.principal.clone(),
                    },
                    resolver_init_payload: match registration.field.scope {
                        ResolverScope::Shared => None,
                        ResolverScope::Subscriber => registration.init_payload.clone(),
                    },
                    pipeline: registration
                        .field
                        .resolver
                        .as_ref()
                        .map(|_| Pipeline::default()),
                    key,
                    partition,
                    filter_value,
                    slot: AtomicUsize::new(0),
                    subscribers: Mutex::new(IndexMap::default()),
                });
                self.index(&group);
                self.groups.insert(id, group.clone());
                stats.group_added();
                group
            }
        };
        group.subscribers.lock().insert(
            (registration.connection.id, registration.subscription_key),
            registration.connection,
        );
        RegistrationHandle {
            shard,
            group: group.id,
        }
    }

    /// Removes one subscription; drops its group when it was the last member.
    pub(crate) fn unregister(
        &mut self,
        group_id: u64,
        connection: u64,
        subscription_key: u64,
        stats: &Stats,
    ) {
        let Some(group) = self.groups.get(&group_id).cloned() else {
            return;
        };
        let now_empty = {
            let mut subscribers = group.subscribers.lock();
            subscribers.swap_remove(&(connection, subscription_key));
            subscribers.is_empty()
        };
        if now_empty {
            self.groups.remove(&group_id);
            self.by_key.remove(&group.key);
            self.unindex(&group);
            stats.group_removed();
        }
    }

    fn index(&mut self, group: &Arc<Group>) {
        let topic = self.topics.entry(group.topic.clone()).or_default();
        let position = topic
            .partitions
            .iter()
            .position(|p| p.paths == group.partition)
            .unwrap_or_else(|| {
                topic.partitions.push(Partition {
                    paths: group.partition.clone(),
                    by_value: FxHashMap::default(),
                });
                topic.partitions.len() - 1
            });
        let ids = topic.partitions[position]
            .by_value
            .entry(group.filter_value.clone())
            .or_default();
        group.slot.store(ids.len(), Ordering::Relaxed);
        ids.push(group.id);
    }

    fn unindex(&mut self, group: &Group) {
        let Some(topic) = self.topics.get_mut(&group.topic) else {
            return;
        };
        if let Some(position) = topic
            .partitions
            .iter()
            .position(|p| p.paths == group.partition)
        {
            let partition = &mut topic.partitions[position];
            if let Some(ids) = partition.by_value.get_mut(&group.filter_value) {
                let slot = group.slot.load(Ordering::Relaxed);
                debug_assert_eq!(
                    ids.get(slot),
                    Some(&group.id),
                    "a group's slot is kept current"
                );
                if ids.get(slot) == Some(&group.id) {
                    ids.swap_remove(slot);
                    if let Some(moved) = ids.get(slot).and_then(|id| self.groups.get(id)) {
                        moved.slot.store(slot, Ordering::Relaxed);
                    }
                } else {
                    // Never expected; stays correct if it happens.
                    ids.retain(|id| *id != group.id);
                    for (slot, id) in ids.iter().enumerate() {
                        if let Some(other) = self.groups.get(id) {
                            other.slot.store(slot, Ordering::Relaxed);
                        }
                    }
                }
                if ids.is_empty() {
                    partition.by_value.remove(&group.filter_value);
                }
            }
            if partition.by_value.is_empty() {
                topic.partitions.swap_remove(position);
            }
        }
        if topic.partitions.is_empty() {
            self.topics.remove(&group.topic);
        }
    }

    /// Appends the groups that match `event` on `topic`: one hash lookup per
    /// partition, so the cost follows the matches, not the registry's size.
    pub(crate) fn route(&self, topic: &str, event: &Value, out: &mut Vec<Arc<Group>>) {
        let Some(index) = self.topics.get(topic) else {
            return;
        };
        let mut key = String::new();
        for partition in &index.partitions {
            key.clear();
            if !event_filter_value(&partition.paths, event, &mut key) {
                continue;
            }
            if let Some(ids) = partition.by_value.get(key.as_str()) {
                out.extend(ids.iter().filter_map(|id| self.groups.get(id).cloned()));
            }
        }
    }

    /// The group `id`, while it is in the registry.
    pub(crate) fn group(&self, id: u64) -> Option<Arc<Group>> {
        self.groups.get(&id).cloned()
    }

    pub(crate) fn topic_names(&self) -> Vec<Arc<str>> {
        self.topics.keys().cloned().collect()
    }

    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.topics.is_empty() && self.by_key.is_empty()
    }
}

/// The partition (paths filtered on) and the value key of a subscription: only
/// non-null arguments filter; a null or absent argument matches every event.
fn filter_of(field: &BoundField, arguments: &Map<String, Value>) -> (PartitionPaths, Box<str>) {
    let mut filters: Vec<(&Arc<[String]>, &Value)> = field
        .filters
        .iter()
        .filter_map(|(name, path)| {
            arguments
                .get(name)
                .filter(|v| !v.is_null())
                .map(|v| (path, v))
        })
        .collect();
    filters.sort_by(|a, b| a.0.cmp(b.0));
    let mut key = String::new();
    for (_, value) in &filters {
        push_key_part(value, &mut key);
    }
    (
        filters.into_iter().map(|(path, _)| path.clone()).collect(),
        key.into_boxed_str(),
    )
}

fn event_filter_value(paths: &[Arc<[String]>], event: &Value, key: &mut String) -> bool {
    for path in paths {
        let mut value = event;
        for segment in path.iter() {
            match value.get(segment.as_str()) {
                Some(next) => value = next,
                None => return false,
            }
        }
        if value.is_null() {
            return false;
        }
        push_key_part(value, key);
    }
    true
}

/// Length-prefixed so that no two value lists share a key. Strings and numbers
/// compare by text, because an `ID` argument arrives as a string while the
/// event may carry the same id as a number.
fn push_key_part(value: &Value, key: &mut String) {
    let text: std::borrow::Cow<'_, str> = match value {
        Value::String(s) => s.as_str().into(),
        Value::Number(n) => n.to_string().into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        other => canonical_json(other).into(),
    };
    let _ = write!(key, "{}:", text.len());
    key.push_str(&text);
}

/// JSON with object keys sorted, so equal values give equal text.
pub(crate) fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}
