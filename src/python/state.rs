//! Process-wide switches the hot path reads without calling into Python.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pyo3::prelude::*;

static DISABLED: AtomicBool = AtomicBool::new(false);
/// Bumped whenever configuration or backend instances change, so decorated
/// functions know to resolve their key prefix and backend again.
static GENERATION: AtomicU64 = AtomicU64::new(1);

#[inline]
pub fn disabled() -> bool {
    DISABLED.load(Ordering::Relaxed)
}

#[inline]
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Turn caching off (`True`) or back on for every decorated function.
#[pyfunction]
pub fn set_disabled(value: bool) {
    DISABLED.store(value, Ordering::Relaxed);
}

#[pyfunction]
pub fn is_disabled() -> bool {
    disabled()
}

/// Tell decorated functions that configuration or backends changed.
#[pyfunction]
pub fn bump_generation() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}
