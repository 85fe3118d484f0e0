//! `cachu`: the caching engine behind the `cachu` Python package, usable on
//! its own from Rust.
//!
//! The core knows nothing of Python: backends store bytes under string keys,
//! and the key functions reproduce the key format the Python package shares
//! with its pure-Python predecessor, so both can read the same Redis and the
//! same cache directory.
//!
//! ```
//! use cachu::backend::{Backend, memory::MemoryStore};
//! use cachu::key;
//!
//! let store: MemoryStore<Vec<u8>> = MemoryStore::new();
//! let k = key::mangle("get_user|user_id=123", "v1:", 300);
//! assert_eq!(k, "5m:v1:get_user|user_id=123");
//! store.set(&k, b"payload", 300.0).unwrap();
//! assert_eq!(store.get(&k).unwrap().unwrap().value, b"payload");
//! assert_eq!(store.count(Some("*:v1:get_user|*")).unwrap(), 1);
//! ```

pub mod backend;
pub mod breaker;
pub mod clock;
pub mod error;
pub mod fork;
pub mod key;
pub mod lock;
pub mod protocol;
pub mod runtime;
pub mod sign;
pub mod stats;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};

// The README's Rust example runs as a doc test, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
