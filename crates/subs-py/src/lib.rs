//! PyO3 bindings for subs: the private `subs._native` module under the `subs`
//! Python package. Logic lives in the pure crates; this crate converts values,
//! releases the GIL, and bridges asyncio and tokio.
#![deny(missing_docs)]
// PyO3's macros generate the FFI glue; the crate itself writes no unsafe code.

mod convert;
mod engine;
mod errors;
mod hooks;
mod http;
mod hub;
mod logging;
mod root;
mod runtime;
mod server;
mod session;
mod types;

use pyo3::prelude::*;

/// The native module.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Start the runtime now so pyo3-async-runtimes uses it from the first call.
    let _ = runtime::runtime();
    m.add_class::<engine::NativeEngine>()?;
    m.add_class::<session::NativeSession>()?;
    m.add_class::<hub::NativeHub>()?;
    m.add_class::<server::NativeServer>()?;
    m.add_class::<http::HttpStream>()?;
    m.add_class::<types::PyPrincipal>()?;
    m.add_class::<types::ConnectionInfo>()?;
    m.add_class::<types::Context>()?;
    m.add_class::<root::PyRootContext>()?;
    m.add_class::<types::Stats>()?;
    m.add("SubsError", py.get_type::<errors::SubsError>())?;
    m.add("ConversionError", py.get_type::<errors::ConversionError>())?;
    m.add("Reject", py.get_type::<errors::Reject>())?;
    m.add("ClientError", py.get_type::<errors::ClientError>())?;
    m.add_function(wrap_pyfunction!(engine::inspect_schema, m)?)?;
    m.add_function(wrap_pyfunction!(root::inspect_roots, m)?)?;
    m.add_function(wrap_pyfunction!(engine::to_json, m)?)?;
    m.add_function(wrap_pyfunction!(engine::from_json, m)?)?;
    m.add_function(wrap_pyfunction!(logging::drain_logs, m)?)?;
    m.add_function(wrap_pyfunction!(logging::dropped_logs, m)?)?;
    m.add("MAX_DEPTH", convert::MAX_DEPTH)?;
    m.add(
        "CLOSE_TIMEOUT",
        subs_adapters::driver::CLOSE_TIMEOUT.as_secs_f64(),
    )?;
    Ok(())
}
