//! `subs._native.Engine`: the subs-core engine, built inside the extension's
//! runtime, with Python hooks.

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyDict, PyTuple};
use pyo3_async_runtimes::TaskLocals;
use subs_adapters::health::Drain;
use subs_adapters::{CancellationToken, HttpEndpoint};
use subs_core::graphql::Schema;
use subs_core::{Engine, EngineConfig, FieldBinding};
use subs_security::{ConnectionRules, SecurityConfig, TenantRule};

use crate::convert::to_value;
use crate::errors::{SubsError, engine_error};
use crate::hooks::{
    Keywords, PyAuthenticator, PyAuthorizer, PyEventFilter, PyExecutor, PyHook, PyResolver,
    PyStream, ResolverCall,
};
use crate::runtime::{block_on, runtime};
use crate::session::NativeSession;
use crate::types::Stats;

/// The engine. Build it through `subs.Engine`, which collects the decorators.
#[pyclass(frozen, module = "subs._native", name = "Engine")]
#[derive(Debug)]
pub(crate) struct NativeEngine {
    pub(crate) engine: Engine,
    pub(crate) locals: TaskLocals,
    /// GraphQL over HTTP for Python servers, made on first use.
    http: OnceLock<HttpEndpoint>,
    /// Ends the endpoint's streams when the engine goes away (a child of
    /// `sessions`: a drain ends them too).
    http_shutdown: CancellationToken,
    /// Every session of the ASGI modes (WebSocket and HTTP streams) runs
    /// under it; the drain cancels it (1001, streams end).
    sessions: CancellationToken,
    /// The drain of the ASGI modes (a native server has its own).
    drain: Drain,
}

impl Drop for NativeEngine {
    fn drop(&mut self) {
        self.http_shutdown.cancel();
    }
}

/// What `await engine.publish(...)` gets when the event was queued at once:
/// an awaitable that is already complete.
#[pyclass(frozen, module = "subs._native", name = "Published")]
#[derive(Debug)]
pub(crate) struct Published;

#[pymethods]
impl Published {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Finishes at once: `await` yields `None` without suspending.
    fn __next__(&self) -> Option<()> {
        None
    }
}

/// `{"events": N, "per": path or None, "max_age": seconds or None}`.
fn history_policy(history: &Bound<'_, PyDict>) -> PyResult<subs_core::History> {
    let events: usize = history
        .get_item("events")?
        .ok_or_else(|| PyValueError::new_err("history without `events`"))?
        .extract()?;
    let mut policy = subs_core::History::last(events);
    if let Some(per) = history.get_item("per")?.filter(|p| !p.is_none()) {
        policy = policy.per_event_field(&per.extract::<String>()?);
    }
    if let Some(age) = history.get_item("max_age")?.filter(|a| !a.is_none()) {
        let seconds: f64 = age.extract()?;
        let age = std::time::Duration::try_from_secs_f64(seconds).map_err(|_| {
            PyValueError::new_err(format!(
                "history_max_age must be a positive number of seconds, not {seconds}"
            ))
        })?;
        policy = policy.max_age(age);
    }
    Ok(policy)
}

fn field_binding(
    binding: &Bound<'_, PyDict>,
    locals: &TaskLocals,
    expose_errors: bool,
) -> PyResult<(String, FieldBinding)> {
    let field: String = binding
        .get_item("field")?
        .ok_or_else(|| PyValueError::new_err("binding without `field`"))?
        .extract()?;
    let topic: Option<String> = match binding.get_item("topic")? {
        Some(t) if !t.is_none() => Some(t.extract()?),
        _ => None,
    };
    let stream = binding.get_item("stream")?.filter(|s| !s.is_none());
    let mut result = match (&stream, topic) {
        (Some(open), _) => FieldBinding::stream(PyStream {
            field: field.clone(),
            open: open.clone().unbind(),
            locals: locals.clone(),
            expose_errors,
        }),
        (None, Some(topic)) => FieldBinding::topic(topic),
        (None, None) => FieldBinding::default_topic(),
    };
    if let Some(history) = binding.get_item("history")?.filter(|h| !h.is_none()) {
        let history = history.cast::<PyDict>().map_err(PyErr::from)?;
        result = result.history(history_policy(history)?);
    }
    if let Some(filters) = binding.get_item("filters")?.filter(|f| !f.is_none()) {
        let filters = filters.cast::<PyDict>().map_err(PyErr::from)?;
        for (argument, path) in filters.iter() {
            let argument: String = argument.extract()?;
            let path: String = path.extract()?;
            result = result.argument(&argument, &path);
        }
    }
    if let Some(resolver) = binding.get_item("resolver")?.filter(|r| !r.is_none()) {
        if stream.is_some() {
            return Err(PyValueError::new_err(format!(
                "`{field}`: a stream field takes no resolver"
            )));
        }
        let with_info: bool = binding
            .get_item("with_info")?
            .map_or(Ok(true), |w| w.extract())?;
        let keywords = match binding.get_item("keywords")?.filter(|k| !k.is_none()) {
            Some(names) => Keywords::Only(names.extract::<Vec<String>>()?.into()),
            None => Keywords::All,
        };
        let shared: bool = binding
            .get_item("shared")?
            .map_or(Ok(false), |s| s.extract())?;
        result = result.resolver(PyResolver::new(
            field.clone(),
            &resolver,
            ResolverCall {
                with_info,
                keywords,
            },
            locals.clone(),
            expose_errors,
        )?);
        if shared {
            result = result.shared();
        }
    }
    Ok((field, result))
}

#[pymethods]
impl NativeEngine {
    /// See `subs.Engine` for the meaning of each argument.
    #[new]
    #[pyo3(signature = (
        schema, bindings, event_loop, *, on_connect = None, authorize = None,
        event_filter = None, event_filter_scope = None, tenant_field = None,
        deliver_untagged_to_tenants = false, init_timeout_ms = None,
        max_frame_bytes = None, outbound_queue_capacity = None, outbound_queue_bytes = None,
        keepalive_ms = None,
        broker = None, execute = None, resolver_timeout_ms = None, authenticate_timeout_ms = None,
        execute_timeout_ms = None, queries = None,
        mutations = None, expose_errors = false, broker_connect_timeout_ms = None
    ))]
    #[allow(clippy::too_many_arguments)] // a Python constructor with keyword arguments
    fn new(
        py: Python<'_>,
        schema: &str,
        bindings: Vec<Bound<'_, PyDict>>,
        event_loop: Bound<'_, PyAny>,
        on_connect: Option<Bound<'_, PyAny>>,
        authorize: Option<Bound<'_, PyAny>>,
        event_filter: Option<Bound<'_, PyAny>>,
        event_filter_scope: Option<Bound<'_, PyAny>>,
        tenant_field: Option<String>,
        deliver_untagged_to_tenants: bool,
        init_timeout_ms: Option<u64>,
        max_frame_bytes: Option<usize>,
        outbound_queue_capacity: Option<usize>,
        outbound_queue_bytes: Option<usize>,
        keepalive_ms: Option<u64>,
        broker: Option<String>,
        execute: Option<Bound<'_, PyAny>>,
        resolver_timeout_ms: Option<u64>,
        authenticate_timeout_ms: Option<u64>,
        execute_timeout_ms: Option<u64>,
        queries: Option<Bound<'_, PyDict>>,
        mutations: Option<Bound<'_, PyDict>>,
        expose_errors: bool,
        broker_connect_timeout_ms: Option<u64>,
    ) -> PyResult<Self> {
        crate::logging::install();
        let locals = TaskLocals::new(event_loop).copy_context(py)?;
        let schema = Schema::parse(schema).map_err(|e| engine_error(&e))?;
        let mut builder = Engine::builder(schema);
        for binding in &bindings {
            let (field, binding) = field_binding(binding, &locals, expose_errors)?;
            builder = builder.bind(field, binding);
        }
        let mut security = SecurityConfig::builder();
        let mut rules = ConnectionRules::default();
        if let Some(ms) = init_timeout_ms {
            rules = rules.init_timeout(Duration::from_millis(ms));
        }
        if let Some(max) = max_frame_bytes {
            rules = rules.max_frame_bytes(max);
        }
        security = security.connection_rules(rules);
        if let Some(authorize) = authorize {
            security = security.authorizer(PyAuthorizer {
                function: authorize.unbind(),
            });
        }
        if let Some(allows) = event_filter {
            security = security.event_filter(PyEventFilter {
                allows: allows.unbind(),
                scope: event_filter_scope.map(Bound::unbind),
            });
        } else if event_filter_scope.is_some() {
            return Err(PyTypeError::new_err(
                "event_filter_scope needs an event_filter",
            ));
        }
        if let Some(field) = tenant_field {
            let rule = TenantRule::new()
                .event_field(&field)
                .map_err(|e| PyValueError::new_err(e.to_string()))?
                .deliver_untagged_to_tenants(deliver_untagged_to_tenants);
            security = security.tenant_rule(rule);
        }
        let security = security
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        builder = builder.security(security);
        if let Some(on_connect) = on_connect {
            builder = builder.authenticator(PyAuthenticator {
                hook: PyHook::new(on_connect, &locals)?,
            });
        }
        if let Some(execute) = execute {
            builder = builder.executor(PyExecutor {
                hook: PyHook::new(execute, &locals)?,
                expose_errors,
            });
        }
        for (field, resolver) in crate::root::resolvers(queries, &locals, expose_errors)? {
            builder = builder.query(field, resolver);
        }
        for (field, resolver) in crate::root::resolvers(mutations, &locals, expose_errors)? {
            builder = builder.mutation(field, resolver);
        }
        let mut config = EngineConfig::default();
        if let Some(capacity) = outbound_queue_capacity {
            config.outbound_queue_capacity = capacity.max(1);
        }
        if let Some(bytes) = outbound_queue_bytes {
            config.outbound_queue_bytes = bytes.max(1);
        }
        if let Some(ms) = authenticate_timeout_ms {
            config.deadlines = config
                .deadlines
                .authenticate(Duration::from_millis(ms.max(1)));
        }
        if let Some(ms) = execute_timeout_ms {
            config.deadlines = config.deadlines.execute(Duration::from_millis(ms.max(1)));
        }
        if let Some(ms) = resolver_timeout_ms {
            config.deadlines = config.deadlines.resolver(Duration::from_millis(ms.max(1)));
        }
        if let Some(ms) = keepalive_ms {
            config.websocket.keepalive_interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        builder = builder.config(config);
        if let Some(url) = broker.filter(|url| !url.is_empty() && url != "memory") {
            // Connecting is IO: done on the extension's runtime, without the GIL.
            // Bounded, so a broker that does not answer fails the startup
            // with a message instead of hanging it.
            let limit = Duration::from_millis(broker_connect_timeout_ms.unwrap_or(10_000).max(1));
            let connected = py.detach(|| {
                runtime().block_on(async {
                    tokio::time::timeout(
                        limit,
                        subs_adapters::broker::from_url(
                            &url,
                            subs_adapters::broker::StartupPolicy::Fail,
                        ),
                    )
                    .await
                })
            });
            let broker = match connected {
                Ok(Ok(broker)) => broker,
                Ok(Err(error)) => {
                    return Err(crate::errors::SubsError::new_err(format!(
                        "cannot connect to the broker at {url}: {error}"
                    )));
                }
                Err(_) => {
                    return Err(crate::errors::SubsError::new_err(format!(
                        "cannot connect to the broker at {url}: no answer within {} ms",
                        limit.as_millis()
                    )));
                }
            };
            builder = builder.broker(broker);
        }
        let engine = {
            let _entered = runtime().enter();
            builder.build().map_err(|e| engine_error(&e))?
        };
        let sessions = CancellationToken::new();
        Ok(Self {
            drain: Drain::new(engine.clone(), sessions.clone()),
            engine,
            locals,
            http: OnceLock::new(),
            http_shutdown: sessions.child_token(),
            sessions,
        })
    }

    /// Ends the engine's GraphQL-over-HTTP streams (Server-Sent Events,
    /// multipart), as at shutdown; `subs.Engine.aclose` calls it.
    fn close(&self) {
        self.http_shutdown.cancel();
    }

    /// `await engine.publish(topic, payload)`: converts now, queues without the GIL.
    fn publish<'py>(
        &self,
        py: Python<'py>,
        topic: String,
        payload: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = to_value(payload, "payload")?;
        let engine = self.engine.clone();
        let mut publishing = Box::pin(async move { engine.publish(&topic, value).await });
        // The dispatcher's queue almost always has room: one poll, inside the
        // runtime, queues the event, and the caller gets an awaitable that is
        // already done instead of a round trip through the event loop per
        // event (which also lets a publishing task keep its turn). Only a
        // full queue or a networked broker's pending send continues as a task.
        let first = {
            let _inside = runtime().enter();
            publishing
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        };
        match first {
            Poll::Ready(Ok(())) => Ok(Bound::new(py, Published)?.into_any()),
            Poll::Ready(Err(error)) => Err(engine_error(&error)),
            Poll::Pending => pyo3_async_runtimes::tokio::future_into_py(py, async move {
                publishing.await.map_err(|e| engine_error(&e))
            }),
        }
    }

    /// Publishes from synchronous code (any thread); blocks, without the GIL,
    /// only while the dispatcher's queue is full.
    fn publish_sync(
        &self,
        py: Python<'_>,
        topic: &str,
        payload: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let value = to_value(payload, "payload")?;
        let engine = self.engine.clone();
        block_on(py, async move { engine.publish(topic, value).await })
            .map_err(|e| engine_error(&e))
    }

    /// Publishes already-serialized JSON (`str` or `bytes`); parsed once, at dispatch.
    fn publish_json_sync(
        &self,
        py: Python<'_>,
        topic: &str,
        payload: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let bytes: Vec<u8> = if let Ok(text) = payload.extract::<String>() {
            text.into_bytes()
        } else {
            payload.extract()?
        };
        let engine = self.engine.clone();
        block_on(py, async move { engine.publish_bytes(topic, bytes).await })
            .map_err(|e| engine_error(&e))
    }

    /// Opens a session for a connection that offered `subprotocols`.
    /// Raises `Reject(reason, code)` when the upgrade is refused (origin,
    /// connections per address); a session without an acceptable
    /// sub-protocol closes with 4406 at once.
    #[pyo3(signature = (subprotocols, headers = None, peer = None))]
    fn session(
        &self,
        subprotocols: Vec<String>,
        headers: Option<Vec<(String, String)>>,
        peer: Option<&str>,
    ) -> PyResult<NativeSession> {
        NativeSession::open(
            &self.engine,
            &subprotocols,
            headers.unwrap_or_default(),
            peer,
            self.sessions.clone(),
        )
    }

    /// Drains the ASGI modes for a rolling deploy: `readiness()` turns 503,
    /// new HTTP requests on the endpoint are refused with 503, connected
    /// WebSocket sessions close with 1001 and HTTP streams end; an
    /// awaitable of whether every client (native servers' included) left
    /// within `deadline` seconds.
    #[pyo3(signature = (deadline = 30.0))]
    fn drain<'py>(&self, py: Python<'py>, deadline: f64) -> PyResult<Bound<'py, PyAny>> {
        let drain = self.drain.clone();
        let deadline = Duration::from_secs_f64(deadline.clamp(0.0, 3600.0));
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { Ok(drain.drain(deadline).await) },
        )
    }

    /// Starts the drain and returns at once (from a signal handler or
    /// another thread); idempotent.
    fn start_drain(&self) {
        self.drain.start();
    }

    /// Whether a drain of the ASGI modes started.
    #[getter]
    fn draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// What `/readyz` answers: `(status, body)`; 503 while draining or with
    /// the broker down (200 "degraded" then, with `ready_when_broker_down`).
    #[pyo3(signature = (ready_when_broker_down = false))]
    fn readiness(&self, ready_when_broker_down: bool) -> (u16, &'static str) {
        let (status, body) = subs_adapters::health::readiness(
            &self.engine,
            self.drain.is_draining(),
            ready_when_broker_down,
        );
        (status.as_u16(), body)
    }

    /// Starts the native WebSocket server (subs-adapters) on the extension's
    /// threads and returns its handle once it accepts connections.
    #[pyo3(signature = (host, port, path = "/graphql", http_handler = None, graphiql = true))]
    fn serve(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
        path: &str,
        http_handler: Option<Bound<'_, PyAny>>,
        graphiql: bool,
    ) -> PyResult<crate::server::NativeServer> {
        let handler = http_handler.map(|f| crate::hooks::PyHttpHandler {
            function: f.unbind(),
            locals: self.locals.clone(),
        });
        crate::server::NativeServer::start(
            py,
            &self.engine,
            host,
            port,
            path.to_owned(),
            handler,
            graphiql,
        )
    }

    /// Answers one GraphQL over HTTP request on the endpoint path (queries
    /// and mutations, graphql-sse, Apollo multipart): an awaitable of
    /// `(status, headers, body)`, `headers` a list of `(bytes, bytes)`,
    /// `body` either `bytes` or an `HttpStream` to write chunk by chunk.
    /// `target` is the request's path and query string; `body` the whole
    /// request body (more than `http_body_limit` bytes is answered 413).
    /// `graphiql`: a browser's `GET` gets GraphiQL and its assets.
    #[pyo3(signature = (method, target, headers, body, peer = None, graphiql = true))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the arguments of the Python method, keyword arguments included"
    )]
    fn http<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        target: &str,
        headers: Vec<(PyBackedBytes, PyBackedBytes)>,
        body: &[u8],
        peer: Option<&str>,
        graphiql: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let endpoint = self
            .http
            .get_or_init(|| {
                HttpEndpoint::new(
                    self.engine.clone(),
                    self.http_shutdown.clone(),
                    tokio_util::task::TaskTracker::new(),
                )
            })
            .clone()
            .graphiql(graphiql);
        // A new request during a drain goes to another instance.
        let refusal = self
            .drain
            .is_draining()
            .then(subs_adapters::health::draining_refusal);
        crate::http::handle(py, endpoint, refusal, method, target, &headers, body, peer)
    }

    /// The largest request body the HTTP endpoint reads (the engine's
    /// `max_frame_bytes`).
    #[getter]
    fn http_body_limit(&self) -> usize {
        self.engine.max_frame_bytes()
    }

    /// A snapshot of the counters.
    fn stats(&self) -> Stats {
        Stats::new(
            self.engine.stats(),
            self.engine.security_stats().total_rejected(),
            self.engine.broker_stats(),
        )
    }

    /// The engine's Prometheus metrics: `(content_type, text)`, in the
    /// Prometheus text format or, with `openmetrics`, OpenMetrics 1.0.
    #[pyo3(signature = (openmetrics = false))]
    fn metrics(&self, openmetrics: bool) -> (&'static str, String) {
        use subs_adapters::metrics::{Format, render};
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        };
        (format.content_type(), render(&self.engine, format))
    }

    /// Whether the registry is empty (no subscription left anywhere).
    fn registry_is_empty(&self) -> bool {
        self.engine.registry_is_empty()
    }

    /// The names of the root fields of `Subscription`.
    fn subscription_fields(&self) -> Vec<String> {
        self.engine.schema().subscription_field_names()
    }

    /// The arguments of a root field of `Subscription` (`None` if no such field).
    fn subscription_arguments(&self, field: &str) -> Option<Vec<String>> {
        self.engine.schema().subscription_field_arguments(field)
    }
}

/// Checks an SDL and returns `(field, arguments)` for each root field of
/// `Subscription`, so decorators can be checked before the engine starts.
#[pyfunction]
pub(crate) fn inspect_schema<'py>(
    py: Python<'py>,
    sdl: &str,
) -> PyResult<Vec<Bound<'py, PyTuple>>> {
    let schema = Schema::parse(sdl).map_err(|e| SubsError::new_err(e.to_string()))?;
    schema
        .subscription_field_names()
        .into_iter()
        .map(|name| {
            let arguments = schema
                .subscription_field_arguments(&name)
                .unwrap_or_default();
            PyTuple::new(
                py,
                [
                    name.into_pyobject(py)?.into_any(),
                    arguments.into_pyobject(py)?,
                ],
            )
        })
        .collect()
}

/// Converts a Python value to JSON text with the engine's mapping (errors
/// name the path under `root`).
#[pyfunction]
#[pyo3(signature = (value, root = "value"))]
pub(crate) fn to_json(value: &Bound<'_, PyAny>, root: &str) -> PyResult<String> {
    let value = to_value(value, root)?;
    serde_json::to_string(&value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Parses JSON text into Python values with the engine's mapping.
#[pyfunction]
pub(crate) fn from_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
    crate::convert::to_python(py, &value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Everything handed to tokio tasks or shared across Python threads.
    #[test]
    fn public_types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<NativeEngine>();
        check::<Arc<NativeEngine>>();
        check::<crate::session::NativeSession>();
        check::<crate::hub::NativeHub>();
        check::<crate::server::NativeServer>();
        check::<crate::http::HttpStream>();
        check::<crate::types::PyPrincipal>();
        check::<crate::types::Stats>();
        check::<crate::hooks::PyResolver>();
        check::<crate::hooks::PyStream>();
    }
}
