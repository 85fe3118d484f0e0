//! The one mapping from the core's `Error` to Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyUserWarning, PyValueError};
use pyo3::PyErr;

use crate::error::Error;

create_exception!(
    cachu,
    CacheError,
    PyException,
    "Base class of the errors a cache backend reports."
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

create_exception!(
    cachu,
    CacheLockTimeout,
    CacheError,
    "A caller gave up waiting for another caller's computation of the same key \
     (on_lock_timeout='raise')."
);

pub fn to_py(err: Error) -> PyErr {
    match err {
        Error::BadDirectory { .. } | Error::BadPattern(_) | Error::BadConfig(_) => {
            PyValueError::new_err(err.to_string())
        }
        Error::Unavailable(_) => BackendUnavailableError::new_err(err.to_string()),
        _ => CacheError::new_err(err.to_string()),
    }
}
