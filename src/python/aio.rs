//! Awaiting engine work from asyncio: a Rust future runs on the engine's
//! runtime (`crate::runtime`), and its result resolves an asyncio future on
//! the caller's loop through `call_soon_threadsafe`. The loop's thread never
//! waits on the network.

use std::future::Future;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::runtime;

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Run `work` on the runtime; `finish` turns its output into the Python
/// result (with the GIL, on the runtime's thread: keep it to conversions).
/// Returns the asyncio future to await.
pub fn spawn<'py, T, W, F>(py: Python<'py>, work: W, finish: F) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    F: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let resolve = RESOLVE
        .import(py, "cachu._offloop", "resolve_future")?
        .clone()
        .unbind();
    let (event_loop, target) = (event_loop.unbind(), future.clone().unbind());
    runtime::handle().spawn(async move {
        let output = work.await;
        Python::attach(|py| {
            let (ok, value) = match finish(py, output) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // The loop may be closed by now: then nobody is waiting.
            let _ =
                event_loop.call_method1(py, "call_soon_threadsafe", (resolve, target, ok, value));
        });
    });
    Ok(future)
}
