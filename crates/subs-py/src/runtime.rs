//! The extension's tokio runtime: two worker threads of its own, shared by
//! every engine in the process and registered with pyo3-async-runtimes.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<&'static Runtime> = OnceLock::new();

/// The runtime, started on first use.
pub(crate) fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("subs-worker")
            .enable_all()
            .build()
            .expect("cannot start the subs tokio runtime");
        let runtime: &'static Runtime = Box::leak(Box::new(runtime));
        // Fails only when already initialized, which this OnceLock prevents.
        let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime);
        runtime
    })
}

/// Runs `future` to completion from synchronous Python code, with the GIL
/// released. On a runtime worker (a Python callback called by the engine) it
/// uses `block_in_place`, so the worker's other tasks move elsewhere.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| runtime().handle().block_on(future))
        } else {
            runtime().block_on(future)
        }
    })
}

/// Runs `call` (a synchronous Python hook: `authorize`, an event filter)
/// without holding a runtime worker: on a worker of the multi-threaded
/// runtime it goes through `block_in_place`, so the worker's other tasks
/// (connections, dispatch) move to another thread while Python runs or waits
/// for the GIL.
pub(crate) fn off_worker<R>(call: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}
