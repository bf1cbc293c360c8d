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
    Reject,
    PyException,
    "Raised by a hook to refuse: `Reject(reason)` closes with 4403 at `on_connect` and is a GraphQL error in `authorize`; `Reject(reason, code)` closes with `code`."
);

/// Maps an engine error to `SubsError`.
pub(crate) fn engine_error(error: &subs_core::Error) -> PyErr {
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
