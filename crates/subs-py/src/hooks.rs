//! Python callables behind subs-core's traits: resolvers, streams, the
//! authentication hook, the authorizer, the event filter and the executor of
//! queries and mutations sent over the socket.
//!
//! Each acquires the GIL only to call the function and convert values; an
//! awaitable result is run on the engine's asyncio loop (its `TaskLocals`)
//! and awaited from tokio without holding the GIL.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3_async_runtimes::TaskLocals;
use serde_json::Value;
use subs_core::{
    Accepted, AuthRequest, ExecuteRequest, ResolveContext, ResolverError, ResolverFuture,
};
use subs_security::{Principal, Rejection, ScopeKey, SubscribeRequest};

use crate::convert::{to_python, to_python_dict, to_value};
use crate::errors::{describe, reject_parts};
use crate::types::{ConnectionInfo, Context, PyPrincipal};

/// The result of calling Python: a value now, or an awaitable to await.
pub(crate) enum Called {
    Ready(Py<PyAny>),
    Pending(BoxFuture<'static, PyResult<Py<PyAny>>>),
}

/// Calls `result`-producing Python code's output through the loop if awaitable.
pub(crate) fn settle(locals: &TaskLocals, result: Bound<'_, PyAny>) -> PyResult<Called> {
    if result.hasattr(intern!(result.py(), "__await__"))? {
        let future = pyo3_async_runtimes::into_future_with_locals(locals, result)?;
        Ok(Called::Pending(Box::pin(future)))
    } else {
        Ok(Called::Ready(result.unbind()))
    }
}

/// Awaits a [`Called`] without the GIL.
pub(crate) async fn finish(called: PyResult<Called>) -> PyResult<Py<PyAny>> {
    match called? {
        Called::Ready(value) => Ok(value),
        Called::Pending(future) => future.await,
    }
}

fn resolver_error(py: Python<'_>, field: &str, error: &PyErr) -> ResolverError {
    let message = describe(py, error);
    tracing::warn!(target: "subs::python", field, error = %message, "resolver raised");
    ResolverError { message }
}

/// A Python resolver: `fn(event, variables[, context])`, sync or async.
pub(crate) struct PyResolver {
    pub(crate) field: String,
    pub(crate) function: Py<PyAny>,
    pub(crate) with_context: bool,
    pub(crate) locals: TaskLocals,
}

impl subs_core::Resolver for PyResolver {
    fn resolve(&self, context: ResolveContext) -> ResolverFuture {
        let field = self.field.clone();
        let called = Python::attach(|py| -> PyResult<Called> {
            let event = to_python(py, &context.event)?;
            let variables = to_python_dict(py, &context.variables)?;
            let result = if self.with_context {
                let info = Context::from_resolve(&context);
                self.function.bind(py).call1((event, variables, info))?
            } else {
                self.function.bind(py).call1((event, variables))?
            };
            settle(&self.locals, result)
        });
        Box::pin(async move {
            let outcome = finish(called).await;
            Python::attach(|py| {
                match outcome {
                Ok(value) => to_value(value.bind(py), "result").map_err(|error| {
                    let message = format!("resolver of `{field}` returned {error}");
                    tracing::warn!(target: "subs::python", field, error = %message, "resolver result refused");
                    ResolverError { message }
                }),
                Err(error) => Err(resolver_error(py, &field, &error)),
            }
            })
        })
    }
}

/// A per-subscription Python source: `open(variables, context)` returns a
/// runner (see `subs._streams.StreamRunner`) whose `next()` coroutine yields
/// `(True, value)` or `(False, None)` at the end, and whose `cancel()` (thread
/// safe) stops the generator, running its `finally` blocks.
pub(crate) struct PyStream {
    pub(crate) field: String,
    pub(crate) open: Py<PyAny>,
    pub(crate) locals: TaskLocals,
}

struct Runner {
    runner: Py<PyAny>,
    finished: bool,
}

impl Drop for Runner {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Cancelling a client: stop the generator so its cleanup runs.
        let _ = Python::try_attach(|py| {
            if let Err(error) = self.runner.bind(py).call_method0(intern!(py, "cancel")) {
                tracing::debug!(target: "subs::python", error = %describe(py, &error), "stream cancel failed");
            }
        });
    }
}

impl subs_core::StreamSource for PyStream {
    fn open(&self, context: ResolveContext) -> BoxStream<'static, Result<Value, ResolverError>> {
        let opened = Python::attach(|py| -> PyResult<Py<PyAny>> {
            let variables = to_python_dict(py, &context.variables)?;
            let info = Context::from_resolve(&context);
            Ok(self.open.bind(py).call1((variables, info))?.unbind())
        });
        let runner = match opened {
            Ok(runner) => runner,
            Err(error) => {
                let error = Python::attach(|py| resolver_error(py, &self.field, &error));
                return Box::pin(futures_util::stream::once(async move { Err(error) }));
            }
        };
        let locals = self.locals.clone();
        let field = self.field.clone();
        let state = Some(Runner {
            runner,
            finished: false,
        });
        Box::pin(futures_util::stream::unfold(state, move |state| {
            let locals = locals.clone();
            let field = field.clone();
            async move {
                let mut state = state?;
                let called = Python::attach(|py| {
                    let next = state.runner.bind(py).call_method0(intern!(py, "next"))?;
                    settle(&locals, next)
                });
                let outcome = finish(called).await;
                let item = Python::attach(|py| -> Option<Result<Value, ResolverError>> {
                    match outcome {
                        Ok(pair) => {
                            let pair = pair.bind(py);
                            let more: bool =
                                pair.get_item(0).and_then(|m| m.extract()).unwrap_or(false);
                            if !more {
                                return None;
                            }
                            let value = pair.get_item(1).ok()?;
                            Some(to_value(&value, "value").map_err(|error| ResolverError {
                                message: format!("stream of `{field}` yielded {error}"),
                            }))
                        }
                        Err(error) => Some(Err(resolver_error(py, &field, &error))),
                    }
                });
                match item {
                    None => {
                        state.finished = true;
                        None
                    }
                    Some(Err(error)) => {
                        // A raising generator is finished; end after the error.
                        state.finished = true;
                        Some((Err(error), None))
                    }
                    Some(Ok(value)) => Some((Ok(value), Some(state))),
                }
            }
        }))
    }
}

/// The `on_connect` hook: `fn(payload, request) -> Principal | None`.
pub(crate) struct PyAuthenticator {
    pub(crate) function: Py<PyAny>,
    pub(crate) locals: TaskLocals,
}

fn accepted(py: Python<'_>, outcome: PyResult<Py<PyAny>>) -> Result<Accepted, Rejection> {
    match outcome {
        Ok(value) => {
            let value = value.bind(py);
            if value.is_none() {
                return Ok(Principal::anonymous().into());
            }
            if let Ok(principal) = value.cast::<PyPrincipal>() {
                return Ok(Principal::clone(&principal.get().inner).into());
            }
            if let Ok(allowed) = value.extract::<bool>() {
                return if allowed {
                    Ok(Principal::anonymous().into())
                } else {
                    Err(Rejection::forbidden("Forbidden"))
                };
            }
            tracing::warn!(target: "subs::python", returned = %value.get_type().name().map(|n| n.to_string()).unwrap_or_default(), "on_connect must return a Principal, None, True or False");
            Err(Rejection::forbidden("Forbidden"))
        }
        Err(error) => match reject_parts(py, &error) {
            Some((reason, Some(code))) => Err(Rejection::close(code, reason)),
            Some((reason, None)) => Err(Rejection::forbidden(reason)),
            None => {
                tracing::warn!(target: "subs::python", error = %describe(py, &error), "on_connect raised");
                Err(Rejection::forbidden("Forbidden"))
            }
        },
    }
}

impl subs_core::Authenticator for PyAuthenticator {
    fn authenticate(
        &self,
        request: AuthRequest,
    ) -> BoxFuture<'static, Result<Accepted, Rejection>> {
        let called = Python::attach(|py| -> PyResult<Called> {
            let payload = match &request.init_payload {
                Some(map) => to_python_dict(py, map)?.into_any(),
                None => py.None().into_bound(py),
            };
            let info = ConnectionInfo {
                facts: request.connection.clone(),
            };
            let result = self.function.bind(py).call1((payload, info))?;
            settle(&self.locals, result)
        });
        Box::pin(async move {
            let outcome = finish(called).await;
            Python::attach(|py| accepted(py, outcome))
        })
    }
}

/// The `authorize` hook: `fn(principal, field, arguments) -> bool`, synchronous.
pub(crate) struct PyAuthorizer {
    pub(crate) function: Py<PyAny>,
}

impl subs_security::Authorizer for PyAuthorizer {
    fn authorize(&self, request: &SubscribeRequest<'_>) -> Result<(), Rejection> {
        let denied =
            || Rejection::graphql(subs_security::messages::not_authorized(request.root_field));
        Python::attach(|py| {
            let outcome = (|| -> PyResult<bool> {
                let principal = PyPrincipal::from_arc(Arc::new(request.principal.clone()));
                let arguments = to_python_dict(py, request.arguments)?;
                let result =
                    self.function
                        .bind(py)
                        .call1((principal, request.root_field, arguments))?;
                if result.hasattr(intern!(py, "__await__"))? {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "authorize must be a plain function (it runs on every subscribe, synchronously)",
                    ));
                }
                result.is_truthy()
            })();
            match outcome {
                Ok(true) => Ok(()),
                Ok(false) => Err(denied()),
                Err(error) => match reject_parts(py, &error) {
                    Some((reason, Some(code))) => Err(Rejection::close(code, reason)),
                    Some((reason, None)) => Err(Rejection::graphql(reason)),
                    None => {
                        tracing::warn!(target: "subs::python", field = request.root_field, error = %describe(py, &error), "authorize raised");
                        Err(denied())
                    }
                },
            }
        })
    }
}

/// An event filter: `allows(principal, event) -> bool`, with an optional
/// `scope(principal) -> str | None` (default: the whole principal).
pub(crate) struct PyEventFilter {
    pub(crate) allows: Py<PyAny>,
    pub(crate) scope: Option<Py<PyAny>>,
}

impl subs_security::EventFilter for PyEventFilter {
    fn allows(&self, principal: &Principal, event: &Value) -> bool {
        Python::attach(|py| {
            let outcome = (|| -> PyResult<bool> {
                let principal = PyPrincipal::from_arc(Arc::new(principal.clone()));
                let event = to_python(py, event)?;
                self.allows.bind(py).call1((principal, event))?.is_truthy()
            })();
            outcome.unwrap_or_else(|error| {
                tracing::warn!(target: "subs::python", error = %describe(py, &error), "event filter raised; event withheld");
                false
            })
        })
    }

    fn scope_key(&self, principal: &Principal) -> ScopeKey {
        let Some(scope) = &self.scope else {
            return ScopeKey::principal(principal);
        };
        Python::attach(|py| {
            let outcome = (|| -> PyResult<Option<String>> {
                let arg = PyPrincipal::from_arc(Arc::new(principal.clone()));
                let key = scope.bind(py).call1((arg,))?;
                if key.is_none() {
                    return Ok(None);
                }
                Ok(Some(key.str()?.to_string()))
            })();
            match outcome {
                Ok(Some(key)) => ScopeKey::custom(key),
                Ok(None) => ScopeKey::custom(""),
                Err(error) => {
                    tracing::warn!(target: "subs::python", error = %describe(py, &error), "event filter scope raised; using the whole principal");
                    ScopeKey::principal(principal)
                }
            }
        })
    }
}

/// The executor of queries and mutations sent over the socket:
/// `fn(query, variables, operation_name, principal) -> dict`, sync or async,
/// returning the whole response object (`{"data": ..., "errors": [...]}`),
/// e.g. from Ariadne's or Strawberry's own execution.
pub(crate) struct PyExecutor {
    pub(crate) function: Py<PyAny>,
    pub(crate) locals: TaskLocals,
}

impl subs_core::Executor for PyExecutor {
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'static, Result<Value, String>> {
        let called = Python::attach(|py| -> PyResult<Called> {
            let variables = to_python_dict(py, &request.variables)?;
            let principal = PyPrincipal::from_arc(request.principal.clone());
            let result = self.function.bind(py).call1((
                request.query.as_str(),
                variables,
                request.operation_name.as_deref(),
                principal,
            ))?;
            settle(&self.locals, result)
        });
        Box::pin(async move {
            let outcome = finish(called).await;
            Python::attach(|py| match outcome {
                Ok(value) => {
                    let response = to_value(value.bind(py), "execute result")
                        .map_err(|error| error.to_string())?;
                    if response.get("data").is_none() && response.get("errors").is_none() {
                        return Err(
                            "the execute hook must return a response object with `data` or `errors`"
                                .to_owned(),
                        );
                    }
                    Ok(response)
                }
                Err(error) => {
                    let message = describe(py, &error);
                    tracing::warn!(target: "subs::python", error = %message, "execute hook raised");
                    Err(message)
                }
            })
        })
    }
}

/// A plain HTTP handler for native mode: `fn(method, path, body) ->
/// (status, content_type, body)`, sync or async.
pub(crate) struct PyHttpHandler {
    pub(crate) function: Py<PyAny>,
    pub(crate) locals: TaskLocals,
}

impl PyHttpHandler {
    pub(crate) fn call(
        &self,
        method: String,
        path: String,
        body: Vec<u8>,
    ) -> impl Future<Output = (u16, String, Vec<u8>)> + Send + 'static {
        let called = Python::attach(|py| {
            let body = pyo3::types::PyBytes::new(py, &body);
            let result = self.function.bind(py).call1((method, path, body))?;
            settle(&self.locals, result)
        });
        async move {
            let outcome = finish(called).await;
            Python::attach(|py| {
                let parsed = outcome.and_then(|value| {
                    let tuple = value
                        .bind(py)
                        .cast::<PyTuple>()
                        .map_err(PyErr::from)?
                        .clone();
                    let status: u16 = tuple.get_item(0)?.extract()?;
                    let content_type: String = tuple.get_item(1)?.extract()?;
                    let body = tuple.get_item(2)?;
                    let body = match body.extract::<Vec<u8>>() {
                        Ok(bytes) if !body.is_instance_of::<pyo3::types::PyString>() => bytes,
                        _ => body.str()?.to_string().into_bytes(),
                    };
                    Ok((status, content_type, body))
                });
                parsed.unwrap_or_else(|error| {
                    tracing::warn!(target: "subs::python", error = %describe(py, &error), "http handler raised");
                    (500, "text/plain".to_owned(), b"internal error\n".to_vec())
                })
            })
        }
    }
}
