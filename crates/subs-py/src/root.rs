//! Python root-field resolvers of `Query` and `Mutation`
//! (`@engine.query(field)` / `@engine.mutation(field)`): `(arguments,
//! context) -> value`, `def` or `async def`, behind subs-core's
//! `RootResolver`, so subs executes queries and mutations itself when the
//! application gives no `@engine.execute` hook.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3_async_runtimes::TaskLocals;
use serde_json::{Map, Value};
use subs_core::graphql::{OperationKind, Schema};
use subs_core::{ResolverError, ResolverFuture, RootContext};

use crate::convert::{to_python_dict, to_value};
use crate::errors::{SubsError, client_message};
use crate::hooks::PyHook;
use crate::types::PyPrincipal;
use subs_core::messages;

/// What a Python root-field resolver gets as its second argument.
#[pyclass(frozen, module = "subs._native", name = "RootContext")]
#[derive(Debug)]
pub(crate) struct PyRootContext {
    inner: RootContext,
}

#[pymethods]
impl PyRootContext {
    /// `"query"` or `"mutation"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.kind {
            OperationKind::Mutation => "mutation",
            OperationKind::Subscription => "subscription",
            OperationKind::Query => "query",
        }
    }

    /// The field's name in the schema.
    #[getter]
    fn field(&self) -> &str {
        &self.inner.field
    }

    /// The field's alias, or its name.
    #[getter]
    fn response_key(&self) -> &str {
        &self.inner.response_key
    }

    /// The operation's variables, coerced.
    #[getter]
    fn variables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        to_python_dict(py, &self.inner.variables)
    }

    /// The connection's principal.
    #[getter]
    fn principal(&self) -> PyPrincipal {
        PyPrincipal::from_arc(self.inner.principal.clone())
    }

    /// The connection's `connection_init` payload.
    #[getter]
    fn init_payload<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner
            .init_payload
            .as_ref()
            .map(|p| to_python_dict(py, p))
            .transpose()
    }

    fn __repr__(&self) -> String {
        format!(
            "RootContext(kind={:?}, field={:?}, principal={:?})",
            self.kind(),
            &*self.inner.field,
            self.inner.principal.id
        )
    }
}

/// A Python resolver of a root field of `Query` or `Mutation`.
///
/// A plain `def` runs on tokio's blocking pool (it holds the GIL for as long
/// as it runs, and must not hold a runtime worker meanwhile); an `async def`
/// is called on the tokio side (which only builds the coroutine) and runs on
/// the engine's asyncio loop.
pub(crate) struct PyRootResolver {
    pub(crate) field: Arc<str>,
    pub(crate) hook: PyHook,
    /// Whether any exception's text reaches clients (`expose_errors`).
    pub(crate) expose_errors: bool,
}

impl PyRootResolver {
    pub(crate) fn new(
        field: String,
        function: Bound<'_, PyAny>,
        locals: &TaskLocals,
        expose_errors: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            field: field.into(),
            hook: PyHook::new(function, locals)?,
            expose_errors,
        })
    }
}

/// The resolver's result as JSON, or its exception as the field error.
fn outcome(
    py: Python<'_>,
    field: &str,
    result: PyResult<Py<PyAny>>,
    expose: bool,
) -> Result<Value, ResolverError> {
    match result {
        Ok(value) => to_value(value.bind(py), "result").map_err(|error| {
            let message = format!("resolver of `{field}` returned {error}");
            tracing::warn!(target: "subs::python", field, error = %message, "root resolver result refused");
            ResolverError { message }
        }),
        Err(error) => {
            let what = format!("the resolver of `{field}`");
            Err(ResolverError {
                message: client_message(
                    py,
                    &error,
                    expose,
                    messages::FIELD_RESOLVER_FAILED,
                    &what,
                ),
            })
        }
    }
}

impl subs_core::RootResolver for PyRootResolver {
    fn resolve(&self, arguments: Map<String, Value>, context: RootContext) -> ResolverFuture {
        let field = self.field.clone();
        let expose = self.expose_errors;
        let called = self.hook.call(move |py| {
            let arguments = to_python_dict(py, &arguments)?;
            let context = PyRootContext { inner: context };
            (arguments, context).into_pyobject(py)
        });
        Box::pin(async move {
            let result = called.await;
            Python::attach(|py| outcome(py, &field, result, expose))
        })
    }
}

/// Reads `{field: function}` into resolvers.
pub(crate) fn resolvers(
    functions: Option<Bound<'_, PyDict>>,
    locals: &TaskLocals,
    expose_errors: bool,
) -> PyResult<Vec<(String, PyRootResolver)>> {
    let Some(functions) = functions else {
        return Ok(Vec::new());
    };
    functions
        .iter()
        .map(|(field, function)| {
            let field: String = field.extract()?;
            let resolver = PyRootResolver::new(field.clone(), function, locals, expose_errors)?;
            Ok((field, resolver))
        })
        .collect()
}

/// Checks an SDL and returns the names of the root fields of `Query` and of
/// `Mutation`, so `@engine.query` / `@engine.mutation` can be checked before
/// the engine starts.
#[pyfunction]
pub(crate) fn inspect_roots<'py>(py: Python<'py>, sdl: &str) -> PyResult<Bound<'py, PyTuple>> {
    let schema = Schema::parse(sdl).map_err(|e| SubsError::new_err(e.to_string()))?;
    PyTuple::new(
        py,
        [
            schema.root_field_names(OperationKind::Query),
            schema.root_field_names(OperationKind::Mutation),
        ],
    )
}
