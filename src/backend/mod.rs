//! Storage backends. Every byte-oriented backend (file, redis, and the memory
//! store instantiated with `Vec<u8>`) implements [`Backend`]; the null backend
//! stores nothing.

pub mod file;
pub mod file_safety;
pub mod memory;
pub mod null;
pub mod redis;

use crate::error::Result;

/// A value read back from a backend together with its creation time
/// (Unix seconds), which `validate` callbacks see as `created_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<V> {
    pub value: V,
    pub created_at: f64,
}

/// The synchronous face of a byte-oriented cache backend.
///
/// Keys are the fully mangled cache keys (`5m:v1:get_user|user_id=123`);
/// values are opaque bytes (the Python layer stores pickles). Patterns are
/// shell globs: `*`, `?`, `[...]`, as [`crate::key::glob_match`] reads them.
/// Implementations are shared between threads and must never block a caller
/// for long: the Python layer releases the GIL around every call.
pub trait Backend: Send + Sync {
    /// The live value under `key`, or `None` (missing or expired; an expired
    /// entry is removed as it is read).
    fn get(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>>;
    /// Store `value` under `key` for `ttl` seconds. A `ttl` of zero or less
    /// stores nothing (and removes any previous value).
    fn set(&self, key: &str, value: &[u8], ttl: f64) -> Result<()>;
    /// Remove `key`; true if a live entry was removed.
    fn delete(&self, key: &str) -> Result<bool>;
    /// Remove every entry whose key matches `pattern` (all when `None`);
    /// returns how many live entries were removed.
    fn clear(&self, pattern: Option<&str>) -> Result<u64>;
    /// The live keys matching `pattern` (all when `None`).
    fn keys(&self, pattern: Option<&str>) -> Result<Vec<String>>;
    /// How many live keys match `pattern`.
    fn count(&self, pattern: Option<&str>) -> Result<u64>;
    /// Release connections and handles; later calls may reopen them.
    fn close(&self) {}
}
