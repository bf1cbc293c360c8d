//! What every operation passes through, whatever its transport (a WebSocket
//! session, an HTTP stream, a single GraphQL over HTTP request): the
//! authenticator, the admission checks, and the executor, each host hook
//! under its deadline with its panic caught.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{Map, Value};
use subs_protocol::SubscribePayload;
use subs_security::{ConnectionBudget, Denied, Principal, Rejection, SubscribeRequest};

use crate::engine::EngineInner;
use crate::graphql::{GraphQLErrors, PreparedOperation};
use crate::hooks::{Accepted, AuthRequest, ExecuteRequest};
use crate::messages;

/// Why a host hook gave no answer.
pub(crate) enum HookFailure {
    /// Its deadline passed first.
    TimedOut,
    /// It panicked (a bug in host code: its message is not shown to clients).
    Panicked,
}

/// Runs a host hook under its deadline, catching its panic.
pub(crate) async fn guarded<T>(
    deadline: Duration,
    hook: impl std::future::Future<Output = T>,
) -> Result<T, HookFailure> {
    match std::panic::AssertUnwindSafe(tokio::time::timeout(deadline, hook))
        .catch_unwind()
        .await
    {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_elapsed)) => Err(HookFailure::TimedOut),
        Err(_panic) => Err(HookFailure::Panicked),
    }
}

/// The authenticator's answer for `request` (anonymous without one), under
/// its deadline: a timeout refuses with 4403, a panic closes with 4500.
pub(crate) async fn authenticate(
    inner: &EngineInner,
    request: AuthRequest,
    connection: u64,
) -> Result<Accepted, Rejection> {
    let Some(authenticator) = inner.authenticator.clone() else {
        return Ok(Principal::anonymous().into());
    };
    let deadline = inner.config.deadlines.authenticate;
    match guarded(deadline, authenticator.authenticate(request)).await {
        Ok(outcome) => outcome,
        Err(HookFailure::TimedOut) => {
            tracing::warn!(connection, ?deadline, "authentication hook timed out");
            Err(Rejection::forbidden(messages::AUTHENTICATION_TIMED_OUT))
        }
        Err(HookFailure::Panicked) => {
            tracing::error!(connection, "authentication hook panicked");
            Err(Rejection::close(
                subs_protocol::close::INTERNAL,
                subs_protocol::close::reason::INTERNAL,
            ))
        }
    }
}

/// The executor's response for a query or mutation, under its deadline. The
/// error is the message of the one GraphQL error to answer with.
pub(crate) async fn execute(
    executor: Arc<dyn crate::Executor>,
    deadline: Duration,
    request: ExecuteRequest,
    connection: u64,
    id: &str,
) -> Result<bytes::Bytes, String> {
    match guarded(deadline, executor.execute_response(request)).await {
        Ok(response) => response,
        Err(HookFailure::TimedOut) => {
            tracing::warn!(connection, id, ?deadline, "executor timed out");
            Err(messages::execution_timed_out(deadline))
        }
        Err(HookFailure::Panicked) => {
            tracing::error!(connection, id, "executor panicked");
            Err(messages::EXECUTOR_PANICKED.to_owned())
        }
    }
}

/// An operation that passed every check, ready to run.
pub(crate) struct Admitted {
    pub(crate) operation: Arc<PreparedOperation>,
    pub(crate) variables: Arc<Map<String, Value>>,
    /// The arguments of the (first) root field, for a subscription.
    pub(crate) arguments: Map<String, Value>,
}

/// Why an operation does not run.
pub(crate) enum Refused {
    /// A security check refused it (already counted).
    Denied(Denied),
    /// The document or its variables are invalid: the request's errors.
    Invalid(GraphQLErrors),
}

/// Admits one operation of `principal` against `budget`: rate, count and
/// size before the document is parsed (what costs nothing comes first),
/// then parsing, validation and variables, then the operation limits and
/// the authorizer for every root field. The budget holds the operation once
/// admitted; a refusal leaves it as it was.
pub(crate) fn admit(
    inner: &EngineInner,
    budget: &mut ConnectionBudget,
    principal: &Principal,
    payload: &SubscribePayload,
    now: Instant,
) -> Result<Admitted, Refused> {
    inner
        .security
        .admit_operation(budget, payload.query.len(), now)
        .map_err(Refused::Denied)?;
    let prepared = inner
        .schema
        .prepare(&payload.query, payload.operation_name.as_deref())
        .and_then(|operation| {
            let variables = operation.coerce_variables(payload.variables.as_ref())?;
            Ok((operation, variables))
        });
    let (operation, variables) = match prepared {
        Ok(prepared) => prepared,
        Err(errors) => {
            budget.release_subscription();
            return Err(Refused::Invalid(errors));
        }
    };
    let fields = operation.root_field_arguments(&variables);
    let requests: Vec<SubscribeRequest<'_>> = fields
        .iter()
        .map(|(root_field, arguments)| SubscribeRequest {
            principal,
            root_field,
            arguments,
        })
        .collect();
    inner
        .security
        .check_operation(&requests, operation.facts(), budget)
        .map_err(Refused::Denied)?;
    drop(requests);
    let arguments = fields
        .into_iter()
        .next()
        .map(|(_, a)| a)
        .unwrap_or_default();
    Ok(Admitted {
        operation: operation.clone(),
        variables,
        arguments,
    })
}
