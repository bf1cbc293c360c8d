//! An executor on an async-graphql schema (feature `async-graphql`): a Rust
//! team keeps the schema, resolvers and data loaders it has for queries and
//! mutations, and subs serves subscriptions (and every transport) around it.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use async_graphql::{EmptyMutation, Object, Subscription};
//! use subs_adapters::async_graphql::AsyncGraphQLExecutor;
//! use subs_core::{Engine, FieldBinding};
//!
//! struct Query;
//! #[Object]
//! impl Query {
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! // The subscription type is declared for the schema; subs runs it.
//! struct Subscription;
//! #[Subscription]
//! impl Subscription {
//!     async fn ticks(&self) -> impl futures_util::Stream<Item = i32> {
//!         futures_util::stream::empty()
//!     }
//! }
//!
//! let executor =
//!     AsyncGraphQLExecutor::new(async_graphql::Schema::new(Query, EmptyMutation, Subscription));
//! let schema = subs_core::graphql::Schema::parse(&executor.sdl())?;
//! let engine = Engine::builder(schema)
//!     .executor(executor)
//!     .bind("ticks", FieldBinding::topic("ticks"))
//!     .build()?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use async_graphql::{ObjectType, Request, SubscriptionType, Variables};
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use subs_core::{ExecuteRequest, Executor};
use subs_security::Principal;

/// Runs queries and mutations on an async-graphql schema. The request's
/// principal ([`Principal`], in an `Arc`) and its init payload (a
/// `serde_json::Map`, when the client sent one) are in the request's data
/// (`ctx.data::<Arc<Principal>>()`).
pub struct AsyncGraphQLExecutor<Q, M, S> {
    schema: async_graphql::Schema<Q, M, S>,
}

impl<Q, M, S> std::fmt::Debug for AsyncGraphQLExecutor<Q, M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncGraphQLExecutor")
            .finish_non_exhaustive()
    }
}

impl<Q, M, S> AsyncGraphQLExecutor<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    /// Runs operations on `schema`.
    pub fn new(schema: async_graphql::Schema<Q, M, S>) -> Self {
        Self { schema }
    }

    /// The schema's SDL, for `subs_core::graphql::Schema::parse`: subs
    /// validates every operation against the same types.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    fn request(&self, request: ExecuteRequest) -> Request {
        let mut graphql = Request::new(request.query)
            .variables(Variables::from_json(Value::Object(Arc::unwrap_or_clone(
                request.variables,
            ))))
            .data::<Arc<Principal>>(request.principal);
        if let Some(name) = request.operation_name {
            graphql = graphql.operation_name(name);
        }
        if let Some(payload) = request.init_payload {
            graphql = graphql.data::<Map<String, Value>>(Arc::unwrap_or_clone(payload));
        }
        graphql
    }
}

impl<Q, M, S> Executor for AsyncGraphQLExecutor<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'static, Result<Value, String>> {
        let schema = self.schema.clone();
        let request = self.request(request);
        Box::pin(async move {
            let response = schema.execute(request).await;
            serde_json::to_value(&response).map_err(|error| error.to_string())
        })
    }

    fn execute_response(
        &self,
        request: ExecuteRequest,
    ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
        let schema = self.schema.clone();
        let request = self.request(request);
        Box::pin(async move {
            let response = schema.execute(request).await;
            // async-graphql keeps the selection's field order; so does this.
            serde_json::to_vec(&response)
                .map(bytes::Bytes::from)
                .map_err(|error| error.to_string())
        })
    }
}
