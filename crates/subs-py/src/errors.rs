//! The one mapping from Rust errors to Python exceptions.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    _native,
    SubsError,
    PyException,
    "An error of the subs engine (invalid schema or binding, engine shut down, broker failure)."
);
pyo3::create_exception!(
    _native,
    ConversionError,
    PyValueError,
    "A Python value that has no JSON form; the message names the path of the value."
);
pyo3::create_exception!(
    _native,
    ClientError,
    PyException,
    "Raised by a resolver or an execute hook: its message is the GraphQL error the client sees. Any other exception reaches the client as a generic message, its details in the log, unless the engine has `expose_errors=True`; graphql-core's `GraphQLError` counts as meant for clients too."
);
pyo3::create_exception!(
    _native,
    Reject,
    PyException,
    "Raised by a hook to refuse: `Reject(reason)` closes with 4403 at `on_connect` and is a GraphQL error in `authorize`; `Reject(reason, code)` closes with `code`."
);

/// Maps an engine error, of building or of running, to `SubsError`.
pub(crate) fn engine_error(error: &dyn std::error::Error) -> PyErr {
    SubsError::new_err(error.to_string())
}

/// A message for a Python exception: `str(exc)`, or its type name when empty.
pub(crate) fn describe(py: Python<'_>, error: &PyErr) -> String {
    let text = error
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if text.is_empty() {
        error
            .get_type(py)
            .name()
            .map_or_else(|_| "error".to_owned(), |n| n.to_string())
    } else {
        text
    }
}

/// What a client sees of an exception raised by host code: its text when it
/// is meant for clients (`ClientError`, graphql-core's `GraphQLError`) or
/// `expose` is set, otherwise `generic`. The details, with the traceback,
/// go to the log either way.
pub(crate) fn client_message(
    py: Python<'_>,
    error: &PyErr,
    expose: bool,
    generic: &str,
    what: &str,
) -> String {
    let details = describe(py, error);
    let traceback = error
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    tracing::warn!(target: "subs::python", error = %details, %traceback, "{what} raised");
    if expose || meant_for_clients(py, error) {
        details
    } else {
        generic.to_owned()
    }
}

fn meant_for_clients(py: Python<'_>, error: &PyErr) -> bool {
    if error.is_instance_of::<ClientError>(py) {
        return true;
    }
    // graphql-core is the host's library (Ariadne, Strawberry), not ours:
    // looked up only if the host imported it.
    py.import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|modules| modules.get_item("graphql"))
        .and_then(|graphql| graphql.getattr("GraphQLError"))
        .is_ok_and(|class| error.value(py).is_instance(&class).unwrap_or(false))
}

/// The reason and code of a `Reject` (`Reject(reason[, code])`).
pub(crate) fn reject_parts(py: Python<'_>, error: &PyErr) -> Option<(String, Option<u16>)> {
    if !error.is_instance_of::<Reject>(py) {
        return None;
    }
    let args = error.value(py).getattr("args").ok()?;
    let reason = args
        .get_item(0)
        .ok()
        .and_then(|r| r.str().ok().map(|s| s.to_string()))
        .unwrap_or_else(|| "Forbidden".to_owned());
    let code = args.get_item(1).ok().and_then(|c| c.extract::<u16>().ok());
    Some((reason, code))
}
