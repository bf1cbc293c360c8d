//! Queries and mutations sent by GraphQL over HTTP and answered by one
//! response, through the same authenticator, checks and executor as the
//! operations of a WebSocket session.

use std::time::Instant;

use bytes::Bytes;
use subs_protocol::SubscribePayload;
use subs_security::{ConnectionFacts, Rejection};

use crate::admission::{self, Refused};
use crate::engine::Engine;
use crate::graphql::{GraphQLErrors, OperationKind};
use crate::hooks::{AuthRequest, ExecuteRequest};
use crate::messages;

/// One GraphQL over HTTP request, parsed (see
/// [`subs_protocol::http::parse_request`]).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The operation.
    pub payload: SubscribePayload,
    /// The request's headers and peer, for the authenticator.
    pub connection: ConnectionFacts,
    /// Whether it came by `GET`, where mutations are not allowed.
    pub is_get: bool,
}

/// How a GraphQL over HTTP request ended, for the adapter to answer with the
/// status the specification gives it.
#[derive(Debug, Clone)]
pub enum HttpOutcome {
    /// An execution result, `{"data":..}` with any field errors: 200.
    Executed(Bytes),
    /// The document or its variables are invalid, or the operation is a
    /// subscription, which needs a stream: `{"errors":[..]}`, 400 under
    /// `application/graphql-response+json` (200 under `application/json`).
    RequestErrors(Bytes),
    /// Refused before execution: by the authenticator, or a security check.
    /// A [`Rejection::GraphQLError`] (authorization, operation limits) is
    /// answered like request errors, with 403; a [`Rejection::Close`] with
    /// its [`Rejection::http_status`].
    Refused(Rejection),
    /// The executor failed (raised, timed out, panicked):
    /// `{"errors":[..]}` without data, 500 under
    /// `application/graphql-response+json` (200 under `application/json`).
    ExecutionFailed(Bytes),
    /// A mutation in a `GET` request: 405 with `Allow: POST`.
    MutationOverGet,
}

impl Engine {
    /// Runs one query or mutation that came by GraphQL over HTTP: the
    /// authenticator on the request's headers, then the same checks as a
    /// WebSocket operation (rate, size, validation, limits, authorization),
    /// then introspection or the executor, each hook under its deadline.
    pub async fn execute_http(&self, request: HttpRequest) -> HttpOutcome {
        let inner = &self.inner;
        // A request is a connection of its own for logs; it is not counted
        // as one.
        let connection = 0;
        let auth = AuthRequest {
            init_payload: None,
            connection: request.connection,
        };
        let principal = match admission::authenticate(inner, auth, connection).await {
            Ok(accepted) => accepted.principal,
            Err(rejection) => {
                let denied = inner.security.authentication_failed(rejection);
                return HttpOutcome::Refused(denied.rejection);
            }
        };
        let mut budget = inner.security.connection_budget();
        let payload = request.payload;
        let admitted =
            match admission::admit(inner, &mut budget, &principal, &payload, Instant::now()) {
                Ok(admitted) => admitted,
                Err(Refused::Denied(denied)) => return HttpOutcome::Refused(denied.rejection),
                Err(Refused::Invalid(errors)) => return request_errors(&errors),
            };
        let kind = admitted.operation.kind();
        match kind {
            OperationKind::Subscription => {
                return request_errors(&GraphQLErrors::single(
                    messages::SUBSCRIPTION_NEEDS_A_STREAM,
                ));
            }
            OperationKind::Mutation if request.is_get => return HttpOutcome::MutationOverGet,
            OperationKind::Query | OperationKind::Mutation => {}
        }
        if kind == OperationKind::Query
            && let Some(response) = admitted
                .operation
                .execute_introspection(&inner.schema, &admitted.variables)
        {
            return HttpOutcome::Executed(response);
        }
        let Some(executor) = inner.executor.clone() else {
            return request_errors(&GraphQLErrors::single(messages::NO_EXECUTOR));
        };
        let execute = ExecuteRequest {
            kind,
            query: payload.query,
            operation_name: payload.operation_name,
            variables: admitted.variables,
            principal: principal.into(),
            init_payload: None,
        };
        let deadline = inner.config.deadlines.execute;
        match admission::execute(executor, deadline, execute, connection, "http").await {
            Ok(response) => HttpOutcome::Executed(response),
            Err(message) => HttpOutcome::ExecutionFailed(errors_body(&GraphQLErrors::single(
                messages::executor_failed(&message),
            ))),
        }
    }
}

fn request_errors(errors: &GraphQLErrors) -> HttpOutcome {
    HttpOutcome::RequestErrors(errors_body(errors))
}

/// A response without data: `{"errors":[..]}`.
fn errors_body(errors: &GraphQLErrors) -> Bytes {
    let list = errors.to_json_bytes();
    let mut body = Vec::with_capacity(list.len() + 11);
    body.extend_from_slice(b"{\"errors\":");
    body.extend_from_slice(&list);
    body.push(b'}');
    Bytes::from(body)
}
