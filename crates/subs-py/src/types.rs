//! Small Python classes: `Principal`, `ConnectionInfo`, `Context`, `Stats`.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::{Map, Value};

use crate::convert::{to_python, to_python_dict, to_value};

/// Who a connection acts for: returned by the `on_connect` hook, given to
/// `authorize`, event filters and resolvers.
#[pyclass(frozen, module = "subs._native", name = "Principal")]
#[derive(Debug, Clone)]
pub(crate) struct PyPrincipal {
    pub(crate) inner: Arc<subs_security::Principal>,
}

#[pymethods]
impl PyPrincipal {
    #[new]
    #[pyo3(signature = (id = String::new(), tenant = None, roles = Vec::new(), claims = None))]
    fn new(
        id: String,
        tenant: Option<String>,
        roles: Vec<String>,
        claims: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let claims = match claims {
            Some(claims) => to_value(claims, "claims")?,
            None => Value::Null,
        };
        let mut principal = subs_security::Principal::new(id)
            .with_roles(roles)
            .with_claims(claims);
        principal.tenant = tenant;
        Ok(Self {
            inner: Arc::new(principal),
        })
    }

    /// The identity ("" for the anonymous principal).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The tenant, if any.
    #[getter]
    fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// Role names.
    #[getter]
    fn roles<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.roles)
    }

    /// Further claims (JSON-like), `None` when there are none.
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.claims)
    }

    /// Whether this is the anonymous principal.
    #[getter]
    fn is_anonymous(&self) -> bool {
        self.inner.is_anonymous()
    }

    fn has_role(&self, role: &str) -> bool {
        self.inner.has_role(role)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyPrincipal>()
            .is_ok_and(|o| *o.get().inner == *self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner.id.hash(&mut hasher);
        self.inner.tenant.hash(&mut hasher);
        hasher.finish()
    }

    fn __repr__(&self) -> String {
        let tenant = self
            .inner
            .tenant
            .as_ref()
            .map_or_else(|| "None".to_owned(), |t| format!("{t:?}"));
        format!(
            "Principal(id={:?}, tenant={tenant}, roles={:?})",
            self.inner.id, self.inner.roles
        )
    }
}

impl PyPrincipal {
    pub(crate) fn from_arc(inner: Arc<subs_security::Principal>) -> Self {
        Self { inner }
    }
}

/// What the upgrade request said: headers (lower-case names) and the peer.
#[pyclass(frozen, module = "subs._native", name = "ConnectionInfo")]
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub(crate) facts: subs_security::ConnectionFacts,
}

#[pymethods]
impl ConnectionInfo {
    /// The request headers as a dict (the last value wins for repeats).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in &self.facts.headers {
            dict.set_item(name.to_ascii_lowercase(), value)?;
        }
        Ok(dict)
    }

    /// One header (case-insensitive), or `None`.
    fn header(&self, name: &str) -> Option<&str> {
        self.facts.header(name)
    }

    /// `"host:port"` of the client, when known.
    #[getter]
    fn peer(&self) -> Option<String> {
        self.facts.peer.map(|p| p.to_string())
    }

    fn __repr__(&self) -> String {
        format!("ConnectionInfo(peer={:?})", self.facts.peer)
    }
}

/// A resolver's (and a stream's) `info`: what GraphQL libraries pass as
/// `info`, for the subscription being resolved.
#[pyclass(frozen, module = "subs._native", name = "Context")]
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) topic: Arc<str>,
    pub(crate) arguments: Arc<Map<String, Value>>,
    pub(crate) variables: Arc<Map<String, Value>>,
    pub(crate) principal: Arc<subs_security::Principal>,
    pub(crate) init_payload: Option<Arc<Map<String, Value>>>,
}

#[pymethods]
impl Context {
    /// The topic of the event (`""` for streams).
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    /// The root field's arguments, variables substituted.
    #[getter]
    fn arguments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        to_python_dict(py, &self.arguments)
    }

    /// The operation's variables (coerced, defaults applied).
    #[getter]
    fn variables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        to_python_dict(py, &self.variables)
    }

    /// A dict, like the context value of Ariadne and Strawberry: `principal`
    /// and `init_payload` (the same as the attributes of these names).
    #[getter]
    fn context<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let context = PyDict::new(py);
        context.set_item("principal", self.principal())?;
        context.set_item("init_payload", self.init_payload(py)?)?;
        Ok(context)
    }

    /// The subscriber's principal; the anonymous principal for a resolver
    /// declared `shared=True`.
    #[getter]
    fn principal(&self) -> PyPrincipal {
        PyPrincipal::from_arc(self.principal.clone())
    }

    /// The subscriber's `connection_init` payload; `None` for a resolver
    /// declared `shared=True`.
    #[getter]
    fn init_payload<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.init_payload
            .as_ref()
            .map(|p| to_python_dict(py, p))
            .transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "Context(topic={:?}, principal={:?})",
            &*self.topic, self.principal.id
        )
    }
}

impl Context {
    pub(crate) fn from_resolve(context: &subs_core::ResolveContext) -> Self {
        Self {
            topic: context.topic.clone(),
            arguments: context.arguments.clone(),
            variables: context.variables.clone(),
            principal: context.principal.clone(),
            init_payload: context.init_payload.clone(),
        }
    }
}

/// A snapshot of the engine's counters.
#[pyclass(frozen, module = "subs._native", name = "Stats", get_all)]
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    connections: u64,
    subscriptions: u64,
    groups: u64,
    events_published: u64,
    events_dispatched: u64,
    frames_queued: u64,
    frames_dropped: u64,
    slow_consumer_closes: u64,
    resolver_calls: u64,
    resolver_errors: u64,
    resolver_timeouts: u64,
    resolver_events_dropped: u64,
    events_filtered: u64,
    invalid_events: u64,
    events_replayed: u64,
    history_gaps: u64,
    security_rejections: u64,
    broker_published: u64,
    broker_received: u64,
    broker_reconnects: u64,
    broker_missed: u64,
}

impl Stats {
    pub(crate) fn new(
        s: subs_core::StatsSnapshot,
        refused: u64,
        broker: subs_core::BrokerStats,
    ) -> Self {
        Self {
            connections: s.connections,
            subscriptions: s.subscriptions,
            groups: s.groups,
            events_published: s.events_published,
            events_dispatched: s.events_dispatched,
            frames_queued: s.frames_queued,
            frames_dropped: s.frames_dropped,
            slow_consumer_closes: s.slow_consumer_closes,
            resolver_calls: s.resolver_calls,
            resolver_errors: s.resolver_errors,
            resolver_timeouts: s.resolver_timeouts,
            resolver_events_dropped: s.resolver_events_dropped,
            events_filtered: s.events_filtered,
            invalid_events: s.invalid_events,
            events_replayed: s.events_replayed,
            history_gaps: s.history_gaps,
            security_rejections: refused,
            broker_published: broker.published,
            broker_received: broker.received,
            broker_reconnects: broker.reconnects,
            broker_missed: broker.missed,
        }
    }
}

#[pymethods]
impl Stats {
    /// The counters as a dict.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.pairs() {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let fields: Vec<String> = self
            .pairs()
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        format!("Stats({})", fields.join(", "))
    }
}

impl Stats {
    fn pairs(&self) -> [(&'static str, u64); 21] {
        [
            ("connections", self.connections),
            ("subscriptions", self.subscriptions),
            ("groups", self.groups),
            ("events_published", self.events_published),
            ("events_dispatched", self.events_dispatched),
            ("frames_queued", self.frames_queued),
            ("frames_dropped", self.frames_dropped),
            ("slow_consumer_closes", self.slow_consumer_closes),
            ("resolver_calls", self.resolver_calls),
            ("resolver_errors", self.resolver_errors),
            ("resolver_timeouts", self.resolver_timeouts),
            ("resolver_events_dropped", self.resolver_events_dropped),
            ("events_filtered", self.events_filtered),
            ("invalid_events", self.invalid_events),
            ("events_replayed", self.events_replayed),
            ("history_gaps", self.history_gaps),
            ("security_rejections", self.security_rejections),
            ("broker_published", self.broker_published),
            ("broker_received", self.broker_received),
            ("broker_reconnects", self.broker_reconnects),
            ("broker_missed", self.broker_missed),
        ]
    }
}
