//! The one error type of the core. The Python bindings map it to exceptions
//! in exactly one place (`python/errors.rs`).

use std::path::PathBuf;

/// Everything a backend operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache directory is missing, not a directory, or not writable.
    #[error("file_dir {path:?} is not usable: {reason}")]
    BadDirectory { path: PathBuf, reason: String },
    /// A glob pattern that cannot be read.
    #[error("invalid pattern {0:?}")]
    BadPattern(String),
    /// SQLite reported an error the backend could not recover from.
    #[error("sqlite error on {path:?}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// An I/O error outside SQLite (moving a corrupt file aside, ...).
    #[error("i/o error on {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backend is unreachable or answered with an error (Redis), or
    /// cannot be used right now (the cache directory is gone).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A setting that cannot be used (a malformed `redis_url`, ...).
    #[error("{0}")]
    BadConfig(String),
    /// The operation is not supported by this backend.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// Whether this is the backend failing (unreachable, full, read-only,
    /// locked, its directory gone, ...), a state that may clear by itself,
    /// rather than a bad setting or argument. Decorated calls carry on
    /// without the cache through such failures when they fail open.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Sqlite { .. } | Error::Io { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
