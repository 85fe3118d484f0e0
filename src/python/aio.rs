//! Awaiting engine work from asyncio: a Rust future runs on the engine's
//! runtime (`crate::runtime`), and its result resolves an asyncio future on
//! the caller's loop through `call_soon_threadsafe`. The loop's thread never
//! waits on the network.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::runtime;

/// Set at interpreter exit: finished work no longer reaches Python. A
/// runtime thread that tried to take the GIL while the interpreter is
/// finalizing would be torn down by CPython mid-Rust-frame (an abort).
static CLOSING: AtomicBool = AtomicBool::new(false);
/// Completions between "not closing yet" and "done with Python".
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Registered with `atexit`: stop handing results to Python, and wait (with
/// the GIL released, at most a second) for the completions already under way.
#[pyfunction]
pub fn shutdown_io(py: Python<'_>) {
    CLOSING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(1);
        while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

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
    // Looked up per call, not cached in a `PyOnceLock`: a cache's first
    // filling lets go of the GIL, and a fork meanwhile would leave the child
    // waiting for it for ever (`cachu._offloop` imports this module, so it
    // cannot be filled at import). One dict lookup beside a round trip.
    let resolve = py
        .import("cachu._offloop")?
        .getattr("resolve_future")?
        .unbind();
    let (event_loop, target) = (event_loop.unbind(), future.clone().unbind());
    runtime::handle().spawn(async move {
        let output = work.await;
        // Announce first, then check: `shutdown_io` waits for whoever got in.
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if CLOSING.load(Ordering::SeqCst) {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        Python::try_attach(|py| {
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

/// Work done on the loop's thread once a runtime future is over (decoding a
/// value runs user code: it belongs on the caller's thread, not the
/// runtime's): its result, or `(False, awaitable)` for more work.
type Then = Box<dyn FnOnce(Python<'_>) -> PyResult<(bool, Py<PyAny>)> + Send>;

/// The reply of [`spawn_then`]'s runtime work: called once, on the loop.
#[pyclass(module = "cachu", name = "_Then", frozen)]
pub struct ThenCall(parking_lot::Mutex<Option<Then>>);

#[pymethods]
impl ThenCall {
    fn __call__(&self, py: Python<'_>) -> PyResult<(bool, Py<PyAny>)> {
        let then = self.0.lock().take().expect("called once");
        then(py)
    }
}

/// Run `work` on the runtime, then `then` its output on the loop's thread.
/// Returns the awaitable of `then`'s result (`then` answers `(True,
/// result)`, or `(False, awaitable)` to go on).
pub fn spawn_then<'py, T, W, F>(py: Python<'py>, work: W, then: F) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    F: FnOnce(Python<'_>, T) -> PyResult<(bool, Py<PyAny>)> + Send + 'static,
{
    let future = spawn(py, work, move |py, output| {
        let then: Then = Box::new(move |py| then(py, output));
        Ok(Py::new(py, ThenCall(parking_lot::Mutex::new(Some(then))))?.into_any())
    })?;
    // Looked up per call, as `resolve_future` is (see `spawn`).
    py.import("cachu._offloop")?
        .getattr("then_call")?
        .call1((future,))
}
