//! Queries and mutations executed by subs itself: root fields of `Query` and
//! `Mutation` bound to resolvers, the selection set applied by the same
//! projection plan as subscription events.
//!
//! The engine builds a [`RootExecutor`] from the resolvers given to
//! [`EngineBuilder::query`] and [`EngineBuilder::mutation`] and uses it as the
//! [`Executor`] when the host installed none, so a session runs every query
//! and mutation through the one executor call site.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use apollo_compiler::ast::OperationType;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use serde_json::{Map, Value};
use subs_security::Principal;

use crate::binding::{ResolverError, ResolverFuture};
use crate::builder::EngineBuilder;
use crate::graphql::{GraphQLErrors, OperationKind, RootOutcome, Schema};
use crate::hooks::{ExecuteRequest, Executor};
use crate::{BuildError, messages};

/// What a root-field resolver of `Query` or `Mutation` is given besides the
/// field's arguments.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RootContext {
    /// Query or mutation.
    pub kind: OperationKind,
    /// The field's name in the schema.
    pub field: Arc<str>,
    /// The field's alias, or its name.
    pub response_key: Arc<str>,
    /// The operation's coerced variables.
    pub variables: Arc<Map<String, Value>>,
    /// The connection's principal.
    pub principal: Arc<Principal>,
    /// The connection's `connection_init` payload.
    pub init_payload: Option<Arc<Map<String, Value>>>,
}

/// Resolves one root field of `Query` or `Mutation`: `(arguments, context)`
/// to the field's value, which the operation's selection set is then applied
/// to. An error becomes a field error with the field's path; `null` in a
/// non-null field bubbles as the GraphQL spec says.
///
/// Implemented for async closures `Fn(Map<String, Value>, RootContext) -> Fut`
/// with `Fut: Future<Output = Result<Value, ResolverError>>`.
pub trait RootResolver: Send + Sync + 'static {
    /// Resolves the field once for one operation. `arguments` holds the
    /// field's arguments with variables substituted and defaults applied.
    fn resolve(&self, arguments: Map<String, Value>, context: RootContext) -> ResolverFuture;
}

impl<F, Fut> RootResolver for F
where
    F: Fn(Map<String, Value>, RootContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ResolverError>> + Send + 'static,
{
    fn resolve(&self, arguments: Map<String, Value>, context: RootContext) -> ResolverFuture {
        Box::pin(self(arguments, context))
    }
}

/// The root-field resolvers given to the builder.
#[derive(Clone, Default)]
pub(crate) struct RootResolvers {
    query: HashMap<String, Arc<dyn RootResolver>>,
    mutation: HashMap<String, Arc<dyn RootResolver>>,
}

impl std::fmt::Debug for RootResolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootResolvers")
            .field("query", &self.query.keys().collect::<Vec<_>>())
            .field("mutation", &self.mutation.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RootResolvers {
    fn is_empty(&self) -> bool {
        self.query.is_empty() && self.mutation.is_empty()
    }

    /// The executor the engine uses: the host's if it gave one, else one built
    /// from these resolvers (if any). Checks that every bound field exists,
    /// and that the host did not give both.
    pub(crate) fn into_executor(
        self,
        schema: &Schema,
        host: Option<Arc<dyn Executor>>,
    ) -> Result<Option<Arc<dyn Executor>>, BuildError> {
        if self.is_empty() {
            return Ok(host);
        }
        if host.is_some() {
            return Err(BuildError::InvalidBinding(
                "root-field resolvers and an executor hook both execute queries and mutations: give one or the other".into(),
            ));
        }
        for (ty, default_name, fields) in [
            (OperationType::Query, "Query", &self.query),
            (OperationType::Mutation, "Mutation", &self.mutation),
        ] {
            let object = schema
                .apollo()
                .root_operation(ty)
                .and_then(|name| schema.apollo().get_object(name));
            for name in fields.keys() {
                if !object.is_some_and(|o| o.fields.contains_key(name.as_str())) {
                    let type_name = object.map_or(default_name, |o| o.name.as_str());
                    return Err(BuildError::InvalidBinding(format!(
                        "`{type_name}` has no field `{name}`"
                    )));
                }
            }
        }
        Ok(Some(Arc::new(RootExecutor {
            schema: schema.clone(),
            resolvers: self,
        })))
    }
}

impl EngineBuilder {
    /// Binds a root field of `Query` to a resolver, for queries sent over the
    /// socket when the host installs no [`Executor`]. [`EngineBuilder::build`]
    /// fails with [`BuildError::InvalidBinding`] if `Query` has no such field, or
    /// if an executor was given too.
    ///
    /// ```
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::{Map, Value, json};
    /// use subs_core::{Engine, RootContext, ResolverError, graphql::Schema};
    ///
    /// let schema = Schema::parse("type Query { hello(name: String! = \"world\"): String! }")?;
    /// let engine = Engine::builder(schema)
    ///     .query("hello", |args: Map<String, Value>, _: RootContext| async move {
    ///         Ok::<_, ResolverError>(json!(format!("hello {}", args["name"].as_str().unwrap_or(""))))
    ///     })
    ///     .build()?;
    /// # let _ = engine;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn query(mut self, field: impl Into<String>, resolver: impl RootResolver) -> Self {
        self.roots.query.insert(field.into(), Arc::new(resolver));
        self
    }

    /// Binds a root field of `Mutation` to a resolver; like
    /// [`EngineBuilder::query`]. The root fields of one mutation run one after
    /// the other, in document order (queries' run concurrently).
    #[must_use]
    pub fn mutation(mut self, field: impl Into<String>, resolver: impl RootResolver) -> Self {
        self.roots.mutation.insert(field.into(), Arc::new(resolver));
        self
    }
}

/// Executes queries and mutations with the root-field resolvers.
struct RootExecutor {
    schema: Schema,
    resolvers: RootResolvers,
}

impl Executor for RootExecutor {
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'static, Result<Value, String>> {
        // Only for callers of the trait's value form: a `Value` object does
        // not keep the selection's field order, the bytes do.
        let response = self.execute_response(request);
        Box::pin(async move {
            let bytes = response.await?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        })
    }

    fn execute_response(
        &self,
        request: ExecuteRequest,
    ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
        let schema = self.schema.clone();
        let resolvers = match request.kind {
            OperationKind::Mutation => self.resolvers.mutation.clone(),
            _ => self.resolvers.query.clone(),
        };
        Box::pin(async move { run(schema, resolvers, request).await })
    }
}

/// One resolver call, its panic caught (the payload may hold internals: the
/// client gets a fixed message).
async fn call(
    resolver: Arc<dyn RootResolver>,
    arguments: Map<String, Value>,
    context: RootContext,
) -> RootOutcome {
    let field = context.field.clone();
    match AssertUnwindSafe(resolver.resolve(arguments, context))
        .catch_unwind()
        .await
    {
        Ok(Ok(value)) => RootOutcome::Value(value),
        Ok(Err(error)) => RootOutcome::Error(error.message),
        Err(_) => {
            tracing::error!(%field, "root-field resolver panicked");
            RootOutcome::Error(messages::RESOLVER_PANICKED.to_owned())
        }
    }
}

async fn run(
    schema: Schema,
    resolvers: HashMap<String, Arc<dyn RootResolver>>,
    request: ExecuteRequest,
) -> Result<bytes::Bytes, String> {
    let operation = match schema.prepare(&request.query, request.operation_name.as_deref()) {
        Ok(operation) => operation,
        Err(errors) => return Ok(errors_response(&errors)),
    };
    let variables = request.variables.clone();
    let mut outcomes: Vec<Option<RootOutcome>> = Vec::new();
    let mut errors = Vec::new();
    let mut calls = Vec::new();
    let mut introspected = None;
    for selection in operation.selected_roots(&variables) {
        if outcomes.len() <= selection.index {
            outcomes.resize_with(selection.index + 1, || None);
        }
        match selection.name {
            "__typename" => {}
            "__schema" | "__type" => {
                if introspected.is_none() {
                    let (data, found) = match operation.partial_introspection(&schema, &variables) {
                        Ok(answer) => answer,
                        Err(refused) => return Ok(errors_response(&GraphQLErrors(refused))),
                    };
                    errors.extend(found);
                    introspected = Some(data);
                }
                let json = introspected
                    .as_ref()
                    .and_then(|data| data.get(selection.response_key))
                    .and_then(Value::as_str)
                    .unwrap_or("null")
                    .to_owned();
                outcomes[selection.index] = Some(RootOutcome::Complete(json));
            }
            name => {
                // No resolver: the missing outcome becomes a field error.
                let Some(resolver) = resolvers.get(name) else {
                    continue;
                };
                let context = RootContext {
                    kind: request.kind,
                    field: Arc::from(name),
                    response_key: Arc::from(selection.response_key),
                    variables: variables.clone(),
                    principal: request.principal.clone(),
                    init_payload: request.init_payload.clone(),
                };
                let arguments = crate::graphql::field_arguments(selection.node, &variables);
                calls.push((selection.index, resolver.clone(), arguments, context));
            }
        }
    }
    let results: Vec<(usize, RootOutcome)> = if request.kind == OperationKind::Mutation {
        // The spec executes a mutation's root fields serially, in order.
        let mut results = Vec::with_capacity(calls.len());
        for (index, resolver, arguments, context) in calls {
            results.push((index, call(resolver, arguments, context).await));
        }
        results
    } else {
        join_all(
            calls
                .into_iter()
                .map(|(index, resolver, arguments, context)| async move {
                    (index, call(resolver, arguments, context).await)
                }),
        )
        .await
    };
    for (index, outcome) in results {
        outcomes[index] = Some(outcome);
    }
    Ok(operation.project_response(&variables, &outcomes, &messages::no_root_resolver, errors))
}

fn errors_response(errors: &GraphQLErrors) -> bytes::Bytes {
    let mut out = b"{\"errors\":".to_vec();
    out.extend(errors.to_json_bytes());
    out.push(b'}');
    bytes::Bytes::from(out)
}
