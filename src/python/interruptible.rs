//! Waits that let Ctrl-C through. A thread waiting for another's computation
//! releases the GIL, but Python runs signal handlers only on the main thread,
//! holding the GIL: one long wait would hold a `KeyboardInterrupt` back for
//! up to `lock_timeout`. So waits are cut into short slices, and the signal
//! handlers run between them.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// The longest slice of a wait.
pub const SLICE: Duration = Duration::from_millis(100);

/// Call `attempt(slice)` with the GIL released until it gives `Some`, or
/// until `timeout` has passed (`None`). Between attempts Python's signal
/// handlers run; an exception they raise ends the wait.
pub fn wait<T: Send>(
    py: Python<'_>,
    timeout: Duration,
    mut attempt: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = py.detach(|| attempt(left.min(SLICE)));
        if got.is_some() || Instant::now() >= deadline {
            return Ok(got);
        }
        py.check_signals()?;
    }
}
