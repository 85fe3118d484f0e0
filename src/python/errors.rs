//! The one mapping from the core's `Error` to Python exceptions, and the one
//! place where cachu's exception types are made.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::PyErr;

use crate::error::Error;

create_exception!(
    cachu,
    CacheError,
    PyException,
    "Base class of every error cachu raises on its own account."
);
create_exception!(
    cachu,
    BackendUnavailableError,
    CacheError,
    "The backend could not be reached or answered with an error."
);
create_exception!(
    cachu,
    CacheKeyCollisionWarning,
    PyUserWarning,
    "Different calls may share one cache key (and so one another's values)."
);

static CONFIGURATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static BACKEND_NOT_FOUND_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A class made the way a `class name(*bases)` statement in module `cachu`
/// makes it: `create_exception!` takes one base, these need two (they are
/// also `ValueError`, which 0.2.7 raised, so `except ValueError` keeps working).
fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    doc: &str,
    bases: Bound<'py, pyo3::types::PyTuple>,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__doc__", doc)?;
    namespace.set_item("__module__", "cachu")?;
    Ok(py
        .get_type::<PyType>()
        .call1((name, bases, namespace))?
        .cast_into::<PyType>()?
        .unbind())
}

/// `cachu.ConfigurationError`: a `CacheError` and a `ValueError`.
pub fn configuration_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    CONFIGURATION_ERROR
        .get_or_try_init(py, || {
            let bases = pyo3::types::PyTuple::new(
                py,
                [py.get_type::<CacheError>(), py.get_type::<PyValueError>()],
            )?;
            make_class(
                py,
                "ConfigurationError",
                "An option, or a value given to configure() or @cache, that cannot be used.",
                bases,
            )
        })
        .map(|t| t.bind(py))
}

/// `cachu.BackendNotFoundError`: a `ConfigurationError` (so also a
/// `CacheError` and a `ValueError`).
pub fn backend_not_found_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    BACKEND_NOT_FOUND_ERROR
        .get_or_try_init(py, || {
            let bases = pyo3::types::PyTuple::new(py, [configuration_error(py)?.clone()])?;
            make_class(
                py,
                "BackendNotFoundError",
                "A backend name that is not one of 'memory', 'redis', 'file', 'null'.",
                bases,
            )
        })
        .map(|t| t.bind(py))
}

/// Add the exception types that are not `create_exception!` statics.
pub fn add_to_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ConfigurationError", configuration_error(py)?)?;
    m.add("BackendNotFoundError", backend_not_found_error(py)?)?;
    Ok(())
}

create_exception!(
    cachu,
    CacheLockTimeout,
    CacheError,
    "A caller gave up waiting for another caller's computation of the same key \
     (on_lock_timeout='raise')."
);

pub fn to_py(err: Error) -> PyErr {
    match err {
        Error::BadDirectory { .. } | Error::BadConfig(_) => {
            Python::attach(|py| match configuration_error(py) {
                Ok(kind) => PyErr::from_type(kind.clone(), err.to_string()),
                Err(e) => e,
            })
        }
        Error::BadPattern(_) => PyValueError::new_err(err.to_string()),
        // Outages (Redis down, a disk full, a directory gone) are what
        // decorated calls fail open through.
        _ if err.is_outage() => BackendUnavailableError::new_err(err.to_string()),
        _ => CacheError::new_err(err.to_string()),
    }
}
