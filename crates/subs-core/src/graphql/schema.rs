//! [`Schema`]: a validated SDL plus a bounded cache of prepared operations.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use apollo_compiler::collections::HashMap as ApolloHashMap;
use apollo_compiler::schema::Implementers;
use apollo_compiler::validation::Valid;
use apollo_compiler::{Name, ast::OperationType};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHasher};

use super::errors::GraphQLErrors;
use super::operation::PreparedOperation;

/// Default number of prepared operations a [`Schema`] keeps.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// A parsed and validated GraphQL schema. Cheap to clone (an `Arc` inside);
/// `Send + Sync`. It also owns the cache of prepared operations.
#[derive(Clone)]
pub struct Schema {
    pub(crate) inner: Arc<SchemaInner>,
}

pub(crate) struct SchemaInner {
    pub(crate) schema: Arc<Valid<apollo_compiler::Schema>>,
    pub(crate) implementers: ApolloHashMap<Name, Implementers>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("types", &self.inner.schema.types.len())
            .field("cached_operations", &self.inner.cache.lock().map.len())
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Parse and validate SDL. A bad SDL is [`crate::BuildError::InvalidSchema`]
    /// whose message names the line and column of each problem
    /// (`"3:12: ..."`).
    pub fn parse(sdl: &str) -> Result<Schema, crate::BuildError> {
        Self::parse_with_cache_capacity(sdl, DEFAULT_CACHE_CAPACITY)
    }

    /// Like [`Schema::parse`], with the capacity of the prepared-operation
    /// cache (at least 1).
    pub fn parse_with_cache_capacity(
        sdl: &str,
        capacity: usize,
    ) -> Result<Schema, crate::BuildError> {
        let schema =
            apollo_compiler::Schema::parse_and_validate(sdl, "schema.graphql").map_err(|e| {
                let msgs: Vec<String> = e
                    .errors
                    .iter()
                    .map(|d| match d.line_column_range() {
                        Some(r) => format!("{}:{}: {}", r.start.line, r.start.column, d.error),
                        None => d.error.to_string(),
                    })
                    .collect();
                crate::BuildError::InvalidSchema(msgs.join("; "))
            })?;
        let implementers = schema.implementers_map();
        Ok(Schema {
            inner: Arc::new(SchemaInner {
                schema: Arc::new(schema),
                implementers,
                cache: Mutex::new(Cache::new(capacity.max(1))),
            }),
        })
    }

    /// The validated apollo-compiler schema, for hosts that need more.
    pub fn apollo(&self) -> &Valid<apollo_compiler::Schema> {
        &self.inner.schema
    }

    fn subscription_type(&self) -> Option<&apollo_compiler::schema::ObjectType> {
        let name = self
            .inner
            .schema
            .root_operation(OperationType::Subscription)?;
        self.inner.schema.get_object(name).map(|n| &**n)
    }

    /// Names of the fields of the subscription root type, in SDL order
    /// (empty if the schema has no subscription type).
    pub fn subscription_field_names(&self) -> Vec<String> {
        self.subscription_type()
            .map(|t| t.fields.keys().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// Argument names of a subscription root field, or `None` if there is no
    /// such field.
    pub fn subscription_field_arguments(&self, field: &str) -> Option<Vec<String>> {
        let f = self.subscription_type()?.fields.get(field)?;
        Some(f.arguments.iter().map(|a| a.name.to_string()).collect())
    }

    /// Names of the fields of the root type of `kind` (`Query`, `Mutation`
    /// or `Subscription`), in SDL order; empty if the schema has no such root.
    pub fn root_field_names(&self, kind: super::OperationKind) -> Vec<String> {
        let ty = match kind {
            super::OperationKind::Query => OperationType::Query,
            super::OperationKind::Mutation => OperationType::Mutation,
            super::OperationKind::Subscription => OperationType::Subscription,
        };
        self.inner
            .schema
            .root_operation(ty)
            .and_then(|name| self.inner.schema.get_object(name))
            .map(|t| t.fields.keys().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// Whether a type of that name exists (objects, interfaces, scalars, ...).
    pub fn has_type(&self, name: &str) -> bool {
        self.inner.schema.types.contains_key(name)
    }

    /// Parse, validate and plan an operation, cached by (document text,
    /// operation name) in a bounded least-recently-used cache. A repeated call
    /// with the same text and name returns the same `Arc` without parsing.
    /// Errors (syntax, validation, unknown operation name) are GraphQL errors
    /// with messages and locations.
    pub fn prepare(
        &self,
        query: &str,
        operation_name: Option<&str>,
    ) -> Result<Arc<PreparedOperation>, GraphQLErrors> {
        let hash = document_hash(query, operation_name);
        if let Some(op) = self.inner.cache.lock().get(hash, query, operation_name) {
            return Ok(op);
        }
        // Parse outside the lock: two racing callers may both parse, which is harmless.
        let op = Arc::new(PreparedOperation::build(
            &self.inner.schema,
            &self.inner.implementers,
            query,
            operation_name,
            hash,
        )?);
        Ok(self.inner.cache.lock().insert(hash, op))
    }

    /// Number of operations in the cache.
    pub fn cached_operations(&self) -> usize {
        self.inner.cache.lock().map.len()
    }
}

/// The process-stable hash of (document text, operation name).
pub(crate) fn document_hash(query: &str, operation_name: Option<&str>) -> u64 {
    let mut h = FxHasher::default();
    query.hash(&mut h);
    operation_name.hash(&mut h);
    h.finish()
}

struct Entry {
    op: Arc<PreparedOperation>,
    last_used: u64,
}

/// A bounded cache: on overflow the least recently used eighth is evicted in
/// one sweep, so eviction costs O(capacity) once per capacity/8 inserts.
struct Cache {
    map: FxHashMap<u64, Entry>,
    capacity: usize,
    tick: u64,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Cache {
            map: FxHashMap::default(),
            capacity,
            tick: 0,
        }
    }

    fn get(
        &mut self,
        hash: u64,
        query: &str,
        name: Option<&str>,
    ) -> Option<Arc<PreparedOperation>> {
        self.tick += 1;
        let e = self.map.get_mut(&hash)?;
        if e.op.source() != query || e.op.operation_name() != name {
            return None; // hash collision: treat as a miss
        }
        e.last_used = self.tick;
        Some(e.op.clone())
    }

    fn insert(&mut self, hash: u64, op: Arc<PreparedOperation>) -> Arc<PreparedOperation> {
        if let Some(e) = self.map.get(&hash)
            && e.op.source() == op.source()
            && e.op.operation_name() == op.operation_name()
        {
            return e.op.clone(); // lost a race: keep the first
        }
        if self.map.len() >= self.capacity {
            let mut ticks: Vec<u64> = self.map.values().map(|e| e.last_used).collect();
            let n = (self.capacity / 8).max(1);
            ticks.select_nth_unstable(n - 1);
            let cutoff = ticks[n - 1];
            let mut removed = 0;
            self.map.retain(|_, e| {
                if removed < n && e.last_used <= cutoff {
                    removed += 1;
                    false
                } else {
                    true
                }
            });
        }
        self.tick += 1;
        self.map.insert(
            hash,
            Entry {
                op: op.clone(),
                last_used: self.tick,
            },
        );
        op
    }
}
