//! Hooks the host supplies: authentication at `connection_init`, and an
//! executor for queries and mutations sent over the socket.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use subs_security::{ConnectionFacts, Principal, Rejection};

use crate::graphql::OperationKind;

/// What the authentication hook is given.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The `connection_init` payload.
    pub init_payload: Option<Map<String, Value>>,
    /// Facts of the upgrade request (headers, peer address).
    pub connection: ConnectionFacts,
}

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Who the connection acts for.
    pub principal: Principal,
    /// An optional payload for `connection_ack`.
    pub ack_payload: Option<Value>,
}

impl From<Principal> for Accepted {
    fn from(principal: Principal) -> Self {
        Self {
            principal,
            ack_payload: None,
        }
    }
}

/// Authenticates a connection at `connection_init`; a rejection closes it
/// (4403 for the protocol's forbidden).
pub trait Authenticator: Send + Sync + 'static {
    /// Decides on one connection.
    fn authenticate(&self, request: AuthRequest)
    -> BoxFuture<'static, Result<Accepted, Rejection>>;
}

impl<F, Fut> Authenticator for F
where
    F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Accepted, Rejection>> + Send + 'static,
{
    fn authenticate(
        &self,
        request: AuthRequest,
    ) -> BoxFuture<'static, Result<Accepted, Rejection>> {
        Box::pin(self(request))
    }
}

/// A query or mutation received over the socket, for the host's executor.
#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    /// Query or mutation.
    pub kind: OperationKind,
    /// The document text.
    pub query: String,
    /// The operation to run.
    pub operation_name: Option<String>,
    /// Coerced variables.
    pub variables: Arc<Map<String, Value>>,
    /// The connection's principal.
    pub principal: Arc<Principal>,
    /// The connection's `connection_init` payload.
    pub init_payload: Option<Arc<Map<String, Value>>>,
}

/// Executes queries and mutations (e.g. with Ariadne, Strawberry or
/// async-graphql); subs only carries them. The answer is the complete response
/// object, `{"data": ..., "errors": [...]}`.
pub trait Executor: Send + Sync + 'static {
    /// Executes one operation.
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'static, Result<Value, String>>;

    /// Executes one operation and serializes the response, as the session
    /// sends it. The default serializes [`Executor::execute`]'s answer;
    /// subs' own executor (root-field resolvers) writes the bytes directly,
    /// in the selection's field order.
    fn execute_response(
        &self,
        request: ExecuteRequest,
    ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
        let response = self.execute(request);
        Box::pin(async move {
            let value = response.await?;
            Ok(bytes::Bytes::from(
                serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"data\":null}".to_vec()),
            ))
        })
    }
}

impl<F, Fut> Executor for F
where
    F: Fn(ExecuteRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(self(request))
    }
}
