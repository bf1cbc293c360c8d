//! Python callables behind subs-core's traits: resolvers, streams, the
//! authentication hook, the authorizer, the event filter and the executor of
//! queries and mutations sent over the socket.
//!
//! Each acquires the GIL only to call the function and convert values; an
//! awaitable result is run on the engine's asyncio loop (its `TaskLocals`)
//! and awaited from tokio without holding the GIL. Resolvers go further (see
//! [`PyResolver`]): a plain `def` runs on tokio's blocking pool, never on a
//! worker, and a coroutine is cancelled when the engine gives up on it.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3_async_runtimes::TaskLocals;
use serde_json::Value;
use subs_core::{
    Accepted, AuthRequest, ExecuteRequest, ResolveContext, ResolverError, ResolverFuture,
};
use subs_security::{Principal, Rejection, ScopeKey, SubscribeRequest};

use crate::convert::{to_python, to_python_dict, to_value};
use crate::errors::{client_message, describe, reject_parts};
use crate::types::{ConnectionInfo, Context, PyPrincipal};
use subs_core::messages;

/// What a call into Python returned: a value now, or (for a coroutine or
/// any other awaitable) a future that awaits it on the event loop.
pub(crate) enum PythonResult {
    /// A plain value.
    Value(Py<PyAny>),
    /// The awaitable, scheduled on the loop.
    Awaiting(BoxFuture<'static, PyResult<Py<PyAny>>>),
}

/// Classifies what Python code returned: an awaitable is scheduled on the
/// event loop of `locals`, anything else is the value.
pub(crate) fn python_result(
    locals: &TaskLocals,
    result: Bound<'_, PyAny>,
) -> PyResult<PythonResult> {
    if result.hasattr(intern!(result.py(), "__await__"))? {
        let future = pyo3_async_runtimes::into_future_with_locals(locals, result)?;
        Ok(PythonResult::Awaiting(Box::pin(future)))
    } else {
        Ok(PythonResult::Value(result.unbind()))
    }
}

/// Awaits a [`PythonResult`] without the GIL.
pub(crate) async fn await_python(called: PyResult<PythonResult>) -> PyResult<Py<PyAny>> {
    match called? {
        PythonResult::Value(value) => Ok(value),
        PythonResult::Awaiting(future) => future.await,
    }
}

/// The asyncio task of one awaitable, shared by the loop side (which creates
/// it) and the tokio side (which may cancel it first).
#[derive(Default)]
struct TaskSlot {
    task: Option<Py<PyAny>>,
    cancelled: bool,
}

fn lock(slot: &Mutex<TaskSlot>) -> std::sync::MutexGuard<'_, TaskSlot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs on the loop thread: wraps the awaitable in a task, unless the tokio
/// side gave up before the loop got to it.
#[pyclass]
struct StartTask {
    awaitable: Option<Py<PyAny>>,
    answer: Option<tokio::sync::oneshot::Sender<PyResult<Py<PyAny>>>>,
    slot: Arc<Mutex<TaskSlot>>,
}

#[pymethods]
impl StartTask {
    fn __call__(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(awaitable) = self.awaitable.take() else {
            return Ok(());
        };
        let awaitable = awaitable.into_bound(py);
        if lock(&self.slot).cancelled {
            // Never started: close the coroutine so Python does not warn that
            // it was never awaited.
            if let Ok(close) = awaitable.getattr(intern!(py, "close")) {
                let _ = close.call0();
            }
            return Ok(());
        }
        let task = py
            .import(intern!(py, "asyncio"))?
            .call_method1(intern!(py, "ensure_future"), (awaitable,))?;
        let answer = TaskAnswer {
            answer: self.answer.take(),
        };
        task.call_method1(intern!(py, "add_done_callback"), (answer,))?;
        // The lock is never held while Python runs, on either side.
        let cancelled = {
            let mut slot = lock(&self.slot);
            if !slot.cancelled {
                slot.task = Some(task.clone().unbind());
            }
            slot.cancelled
        };
        if cancelled {
            task.call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }
}

/// The task's done callback: hands its result (or exception) to tokio.
#[pyclass]
struct TaskAnswer {
    answer: Option<tokio::sync::oneshot::Sender<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl TaskAnswer {
    fn __call__(&mut self, task: &Bound<'_, PyAny>) {
        let result = task
            .call_method0(intern!(task.py(), "result"))
            .map(Bound::unbind);
        if let Some(answer) = self.answer.take() {
            // The tokio side may have given up: nobody to tell.
            let _ = answer.send(result);
        }
    }
}

/// Cancels the asyncio task when the tokio side drops the future before the
/// task finished (its deadline passed, or its group left).
struct CancelOnDrop {
    slot: Arc<Mutex<TaskSlot>>,
    event_loop: Py<PyAny>,
    finished: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let task = {
            let mut slot = lock(&self.slot);
            slot.cancelled = true;
            slot.task.take()
        };
        let Some(task) = task else {
            return; // not started yet: `StartTask` sees `cancelled`
        };
        let _ = Python::try_attach(|py| {
            let cancelled = task
                .bind(py)
                .getattr(intern!(py, "cancel"))
                .and_then(|cancel| {
                    self.event_loop
                        .bind(py)
                        .call_method1(intern!(py, "call_soon_threadsafe"), (cancel,))
                });
            if let Err(error) = cancelled {
                tracing::debug!(target: "subs::python", error = %describe(py, &error), "cancelling a resolver task failed");
            }
        });
    }
}

/// Like [`python_result`], but the asyncio task behind an awaitable is cancelled
/// when the returned future is dropped before it finished: dropping the
/// future of `pyo3_async_runtimes::into_future` only stops listening, and the
/// Python task would run on.
pub(crate) fn python_result_cancellable(
    locals: &TaskLocals,
    result: Bound<'_, PyAny>,
) -> PyResult<PythonResult> {
    let py = result.py();
    if !result.hasattr(intern!(py, "__await__"))? {
        return Ok(PythonResult::Value(result.unbind()));
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    let slot = Arc::new(Mutex::new(TaskSlot::default()));
    let start = StartTask {
        awaitable: Some(result.unbind()),
        answer: Some(answer),
        slot: slot.clone(),
    };
    let event_loop = locals.event_loop(py);
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "context"), locals.context(py))?;
    event_loop.call_method(intern!(py, "call_soon_threadsafe"), (start,), Some(&kwargs))?;
    let guard = CancelOnDrop {
        slot,
        event_loop: event_loop.unbind(),
        finished: false,
    };
    Ok(PythonResult::Awaiting(Box::pin(async move {
        // Moved in whole (not just the field assigned below): the future owns
        // the guard, and dropping the future cancels the task.
        let mut guard = guard;
        let outcome = answered.await;
        guard.finished = true;
        match outcome {
            Ok(result) => result,
            // The loop dropped the callback without calling it (it closed).
            Err(_) => Err(pyo3::exceptions::asyncio::CancelledError::new_err(
                "the event loop dropped the task",
            )),
        }
    })))
}

/// Whether `function` is an `async def` (so calling it only builds a coroutine).
pub(crate) fn is_coroutine_function(function: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = function.py();
    py.import(intern!(py, "inspect"))?
        .call_method1(intern!(py, "iscoroutinefunction"), (function,))?
        .is_truthy()
}

/// A Python hook as every hook is called (authenticator, executor, root
/// resolvers): an `async def` is called here (building the coroutine is
/// quick) and runs on the host's event loop, cancelled if the returned future
/// is dropped before it finished (its deadline passed); a plain `def` runs
/// on tokio's blocking pool, never on a runtime worker, since it may block
/// and holds the GIL while it runs.
#[derive(Debug)]
pub(crate) struct PyHook {
    function: Arc<Py<PyAny>>,
    is_async: bool,
    locals: TaskLocals,
}

impl PyHook {
    pub(crate) fn new(function: Bound<'_, PyAny>, locals: &TaskLocals) -> PyResult<Self> {
        Ok(Self {
            is_async: is_coroutine_function(&function)?,
            function: Arc::new(function.unbind()),
            locals: locals.clone(),
        })
    }

    /// Calls the hook with the arguments `args` builds under the GIL.
    pub(crate) fn call<A>(&self, args: A) -> BoxFuture<'static, PyResult<Py<PyAny>>>
    where
        A: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
    {
        let function = self.function.clone();
        let locals = self.locals.clone();
        let call = move |py: Python<'_>| -> PyResult<PythonResult> {
            let result = function.bind(py).call1(args(py)?)?;
            python_result_cancellable(&locals, result)
        };
        if self.is_async {
            let called = Python::attach(call);
            return Box::pin(await_python(called));
        }
        Box::pin(async move {
            let ran = tokio::task::spawn_blocking(move || Python::attach(call)).await;
            match ran {
                Ok(called) => await_python(called).await,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "the hook's thread was cancelled",
                )),
            }
        })
    }
}

fn resolver_error(py: Python<'_>, field: &str, error: &PyErr, expose: bool) -> ResolverError {
    let what = format!("the resolver of `{field}`");
    ResolverError {
        message: client_message(py, error, expose, messages::RESOLVER_PANICKED, &what),
    }
}

/// Which of the field's arguments a resolver takes as keyword arguments.
#[derive(Debug, Clone)]
pub(crate) enum Keywords {
    /// Every argument the subscription gives (`**arguments`).
    All,
    /// The named ones, where the subscription gives them.
    Only(Arc<[String]>),
}

/// How a resolver is called: `fn(event[, info], **arguments)`.
#[derive(Debug, Clone)]
pub(crate) struct ResolverCall {
    /// Whether the second positional argument is the `info` (a `Context`).
    pub(crate) with_info: bool,
    /// The field's arguments passed by keyword.
    pub(crate) keywords: Keywords,
}

/// A Python resolver: `fn(event[, info], **arguments)`, sync or async.
///
/// An `async def` is called on the tokio side (the call only builds the
/// coroutine) and runs as a task on the engine's asyncio loop; when the engine
/// drops the resolution (at the resolver deadline, or when the group leaves)
/// the task is cancelled, so the coroutine sees `asyncio.CancelledError`.
///
/// A plain `def` runs on tokio's blocking pool: it may hold the GIL or sleep
/// without taking a runtime worker from the dispatchers and the connections.
/// A thread cannot be interrupted, so past the deadline its answer is
/// discarded (the subscribers already got the timeout error) and the thread
/// is free when the function returns.
pub(crate) struct PyResolver {
    field: Arc<str>,
    function: Arc<Py<PyAny>>,
    call: ResolverCall,
    is_async: bool,
    locals: TaskLocals,
    /// Whether any exception's text reaches clients (`expose_errors`).
    expose_errors: bool,
}

impl PyResolver {
    pub(crate) fn new(
        field: String,
        function: &Bound<'_, PyAny>,
        call: ResolverCall,
        locals: TaskLocals,
        expose_errors: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            field: field.into(),
            function: Arc::new(function.clone().unbind()),
            call,
            is_async: is_coroutine_function(function)?,
            locals,
            expose_errors,
        })
    }
}

/// Calls the resolver function; an awaitable result is started on the loop.
fn call_resolver(
    py: Python<'_>,
    function: &Py<PyAny>,
    call: &ResolverCall,
    locals: &TaskLocals,
    context: &ResolveContext,
) -> PyResult<PythonResult> {
    let event = to_python(py, &context.event)?;
    let keywords = PyDict::new(py);
    match &call.keywords {
        Keywords::All => {
            for (name, value) in context.arguments.iter() {
                keywords.set_item(name, to_python(py, value)?)?;
            }
        }
        Keywords::Only(names) => {
            for name in names.iter() {
                if let Some(value) = context.arguments.get(name) {
                    keywords.set_item(name, to_python(py, value)?)?;
                }
            }
        }
    }
    let keywords = (!keywords.is_empty()).then_some(keywords);
    let result = if call.with_info {
        let info = Context::from_resolve(context);
        function.bind(py).call((event, info), keywords.as_ref())?
    } else {
        function.bind(py).call((event,), keywords.as_ref())?
    };
    python_result_cancellable(locals, result)
}

fn resolved(
    py: Python<'_>,
    field: &str,
    outcome: PyResult<Py<PyAny>>,
    expose: bool,
) -> Result<Value, ResolverError> {
    match outcome {
        Ok(value) => to_value(value.bind(py), "result").map_err(|error| {
            let message = format!("resolver of `{field}` returned {error}");
            tracing::warn!(target: "subs::python", field, error = %message, "resolver result refused");
            ResolverError { message }
        }),
        Err(error) => Err(resolver_error(py, field, &error, expose)),
    }
}

impl subs_core::Resolver for PyResolver {
    /// Calling it takes the GIL, which Python code may hold for a whole
    /// switch interval: never on the dispatcher.
    fn may_run_on_dispatcher(&self) -> bool {
        false
    }

    fn resolve(&self, context: ResolveContext) -> ResolverFuture {
        let field = self.field.clone();
        let expose = self.expose_errors;
        if self.is_async {
            let called = Python::attach(|py| {
                call_resolver(py, &self.function, &self.call, &self.locals, &context)
            });
            return Box::pin(async move {
                let outcome = await_python(called).await;
                Python::attach(|py| resolved(py, &field, outcome, expose))
            });
        }
        let function = self.function.clone();
        let locals = self.locals.clone();
        let call = self.call.clone();
        Box::pin(async move {
            let blocking_field = field.clone();
            let ran = tokio::task::spawn_blocking(move || {
                Python::attach(
                    |py| match call_resolver(py, &function, &call, &locals, &context) {
                        Ok(PythonResult::Value(value)) => {
                            Ok(resolved(py, &blocking_field, Ok(value), expose))
                        }
                        Ok(PythonResult::Awaiting(future)) => Err(future),
                        Err(error) => Ok(Err(resolver_error(py, &blocking_field, &error, expose))),
                    },
                )
            })
            .await;
            match ran {
                Ok(Ok(done)) => done,
                // A `def` that returned an awaitable: it runs on the loop.
                Ok(Err(pending)) => {
                    let outcome = pending.await;
                    Python::attach(|py| resolved(py, &field, outcome, expose))
                }
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => Err(ResolverError::from("the resolver's thread was cancelled")),
            }
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
    /// Whether any exception's text reaches clients (`expose_errors`).
    pub(crate) expose_errors: bool,
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
            let info = Context::from_resolve(&context);
            Ok(self.open.bind(py).call1((info,))?.unbind())
        });
        let runner = match opened {
            Ok(runner) => runner,
            Err(error) => {
                let error = Python::attach(|py| {
                    resolver_error(py, &self.field, &error, self.expose_errors)
                });
                return Box::pin(futures_util::stream::once(async move { Err(error) }));
            }
        };
        let locals = self.locals.clone();
        let field = self.field.clone();
        let expose = self.expose_errors;
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
                    python_result(&locals, next)
                });
                let outcome = await_python(called).await;
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
                        Err(error) => Some(Err(resolver_error(py, &field, &error, expose))),
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
    pub(crate) hook: PyHook,
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
        let called = self.hook.call(move |py| {
            let payload = match &request.init_payload {
                Some(map) => to_python_dict(py, map)?.into_any(),
                None => py.None().into_bound(py),
            };
            let info = ConnectionInfo {
                facts: request.connection,
            };
            (payload, info).into_pyobject(py)
        });
        Box::pin(async move {
            let outcome = called.await;
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
        crate::runtime::off_worker(|| {
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
        crate::runtime::off_worker(|| {
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
        })
    }

    fn scope_key(&self, principal: &Principal) -> ScopeKey {
        let Some(scope) = &self.scope else {
            return ScopeKey::principal(principal);
        };
        crate::runtime::off_worker(|| {
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
        })
    }
}

/// The executor of queries and mutations sent over the socket:
/// `fn(query, variables, operation_name, principal) -> dict`, sync or async,
/// returning the whole response object (`{"data": ..., "errors": [...]}`),
/// e.g. from Ariadne's or Strawberry's own execution.
pub(crate) struct PyExecutor {
    pub(crate) hook: PyHook,
    /// Whether any exception's text reaches clients (`expose_errors`).
    pub(crate) expose_errors: bool,
}

impl subs_core::Executor for PyExecutor {
    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'static, Result<Value, String>> {
        let called = self.hook.call(move |py| {
            let variables = to_python_dict(py, &request.variables)?;
            let principal = PyPrincipal::from_arc(request.principal.clone());
            (
                request.query.as_str(),
                variables,
                request.operation_name.as_deref(),
                principal,
            )
                .into_pyobject(py)
        });
        let expose = self.expose_errors;
        Box::pin(async move {
            let outcome = called.await;
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
                Err(error) => Err(client_message(
                    py,
                    &error,
                    expose,
                    messages::EXECUTOR_PANICKED,
                    "the execute hook",
                )),
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
            python_result(&self.locals, result)
        });
        async move {
            let outcome = await_python(called).await;
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
