//! The PyO3 module `cachu._cachu`: every export is listed here.

mod aio;
mod cached;
mod errors;
mod gil_slot;
mod keyplan;
mod keytext;
mod near;
mod region;
mod region_async;
mod state;
mod value;

use pyo3::prelude::*;

/// `region_name(ttl)`: `5m` for 300, `-1s` for a callable TTL.
#[pyfunction]
fn region_name(ttl: i64) -> String {
    crate::key::region_name(ttl)
}

/// `mangle(base, key_prefix, ttl)`: `"{region}:{key_prefix}{base}"`.
#[pyfunction]
fn mangle(base: &str, key_prefix: &str, ttl: i64) -> String {
    crate::key::mangle(base, key_prefix, ttl)
}

/// `tag_pattern(tag)`: the glob selecting a tag's keys, or None.
#[pyfunction]
fn tag_pattern(tag: &str) -> Option<String> {
    crate::key::tag_pattern(tag)
}

/// `glob_escape(text)`: a glob matching exactly `text` in every backend.
#[pyfunction]
fn glob_escape(text: &str) -> String {
    crate::key::glob_escape(text)
}

/// `redact_url(url)`: `url` with its password (and any `password=` query
/// value) replaced by `***`, as every message shows a Redis URL.
#[pyfunction]
fn redact_url(url: &str) -> String {
    crate::backend::redis::redact(url)
}

/// `base_head(name, tag)`: where a function's base keys start, `name|` or
/// `name||tag||`.
#[pyfunction]
fn base_head(name: &str, tag: &str) -> String {
    crate::key::base_head(name, tag)
}

/// `key_pairs(kwargs, exclude, keep_in_key)`: the `(name, repr(value))`
/// pairs a key holds for these keyword arguments, sorted; what the key
/// leaves out is left out.
#[pyfunction]
#[pyo3(signature = (kwargs, exclude, keep_in_key=Vec::new()))]
fn key_pairs(
    kwargs: &Bound<'_, pyo3::types::PyDict>,
    exclude: Vec<String>,
    keep_in_key: Vec<String>,
) -> PyResult<Vec<(String, String)>> {
    keyplan::kept_pairs(kwargs, &exclude, &keep_in_key)
}

/// Reset every cached function's hit and miss counters.
#[pyfunction]
fn reset_stats() {
    crate::stats::reset_all();
}

/// The bridge from the engine's log records to Python `logging` keeps each
/// logger's level once it logged; set when the module is imported.
static LOG_LEVELS: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

/// Read the Python loggers' levels again (they are cached once a record was
/// logged): `configure()` calls it, so levels set after cachu logged count.
#[pyfunction]
fn reload_log_levels() {
    if let Some(handle) = LOG_LEVELS.get() {
        handle.reset();
    }
}

#[pymodule]
mod _cachu {
    #[pymodule_export]
    use super::aio::shutdown_io;
    #[pymodule_export]
    use super::cached::{AsyncCall, AsyncStep, CachedFunction};
    #[pymodule_export]
    use super::errors::{
        BackendUnavailableError, CacheError, CacheKeyCollisionWarning, CacheLockTimeout,
    };
    #[pymodule_export]
    use super::region::{NoValue, PyBackend};
    #[pymodule_export]
    use super::state::{
        bump_generation, disable_scope, disabled_scopes, enable_all, enable_scope, is_disabled,
        scope_disabled, set_disabled,
    };
    #[pymodule_export]
    use super::{
        base_head, glob_escape, key_pairs, mangle, redact_url, region_name, reload_log_levels,
        reset_stats, tag_pattern,
    };

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // Loggers are named after the Rust module path (`cachu.backend.file`).
        if let Ok(handle) = pyo3_log::try_init() {
            let _ = super::LOG_LEVELS.set(handle);
        }
        super::cached::enable_vectorcall(&m.py().get_type::<CachedFunction>())?;
        super::errors::add_to_module(m)?;
        // Every lazily made Python object is made here, before any thread
        // can fork in the middle of making it (see `value::warm`).
        super::value::warm(m.py())?;
        super::cached::warm_async_steps(m.py())?;
        // Likewise the engine's fork handler (installed on first use).
        crate::fork::generation();
        m.add(
            "NO_VALUE",
            super::region::no_value(m.py()).clone_ref(m.py()),
        )?;
        Ok(())
    }
}
