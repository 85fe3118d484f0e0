//! Process-wide switches the hot path reads without calling into Python.
//!
//! Caching can be switched off for the whole process, for packages and for
//! tags (`cachu.disable(package=..., tag=...)`); the scopes combine with OR.
//! A decorated call reads one atomic: only when some scope is off does it
//! look at its own package and tag.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use parking_lot::RwLock;
use pyo3::prelude::*;

use crate::key;

/// `SWITCHES` bits: caching is off everywhere / some package or tag is off.
const ALL_OFF: u8 = 1;
const SCOPE_OFF: u8 = 2;

static SWITCHES: AtomicU8 = AtomicU8::new(0);
static SCOPES: RwLock<Scopes> = parking_lot::const_rwlock(Scopes::new());
/// Bumped whenever configuration or backend instances change, so decorated
/// functions know to resolve their key prefix and backend again.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// What is switched off. Tags are kept as keys spell them (`|users|`), so
/// `'users'` and `'|users|'` name one tag, as they do when clearing.
struct Scopes {
    all: bool,
    packages: BTreeSet<String>,
    tags: BTreeSet<String>,
}

impl Scopes {
    const fn new() -> Self {
        Self {
            all: false,
            packages: BTreeSet::new(),
            tags: BTreeSet::new(),
        }
    }

    fn matches(&self, package: Option<&str>, tag: &str) -> bool {
        self.all
            || package.is_some_and(|p| self.packages.contains(p))
            || (!tag.is_empty() && self.tags.contains(&key::normalize_tag(tag)))
    }

    /// Publish the state to the hot path (called with the write lock held).
    fn publish(&self) {
        let mut bits = 0;
        if self.all {
            bits |= ALL_OFF;
        }
        if !self.packages.is_empty() || !self.tags.is_empty() {
            bits |= SCOPE_OFF;
        }
        SWITCHES.store(bits, Ordering::Release);
    }
}

/// Whether calls of a function of `package` with `tag` skip the cache.
#[inline]
pub fn disabled_for(package: Option<&str>, tag: &str) -> bool {
    // Relaxed: a call racing a switch may see either state, as with one
    // flag; a non-zero value sends it to the lock, which orders the rest.
    match SWITCHES.load(Ordering::Relaxed) {
        0 => false,
        bits if bits & ALL_OFF != 0 => true,
        _ => scope_disabled_slow(package, tag),
    }
}

#[cold]
fn scope_disabled_slow(package: Option<&str>, tag: &str) -> bool {
    SCOPES.read().matches(package, tag)
}

#[inline]
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Turn caching off (`True`) or back on for every decorated function; the
/// package and tag scopes are left as they are.
#[pyfunction]
pub fn set_disabled(value: bool) {
    let mut scopes = SCOPES.write();
    scopes.all = value;
    scopes.publish();
}

/// Whether caching is off for the whole process.
#[pyfunction]
pub fn is_disabled() -> bool {
    SCOPES.read().all
}

/// Switch caching off for a package and/or a tag (each given one is a scope).
#[pyfunction]
#[pyo3(signature = (package=None, tag=None))]
pub fn disable_scope(package: Option<String>, tag: Option<String>) {
    let mut scopes = SCOPES.write();
    if let Some(p) = package {
        scopes.packages.insert(p);
    }
    if let Some(t) = tag {
        scopes.tags.insert(key::normalize_tag(&t));
    }
    scopes.publish();
}

/// Switch a package and/or a tag scope back on (the process-wide switch,
/// if off, still wins).
#[pyfunction]
#[pyo3(signature = (package=None, tag=None))]
pub fn enable_scope(package: Option<String>, tag: Option<String>) {
    let mut scopes = SCOPES.write();
    if let Some(p) = package {
        scopes.packages.remove(&p);
    }
    if let Some(t) = tag {
        scopes.tags.remove(&key::normalize_tag(&t));
    }
    scopes.publish();
}

/// Switch everything back on: the process-wide switch and every scope.
#[pyfunction]
pub fn enable_all() {
    let mut scopes = SCOPES.write();
    *scopes = Scopes::new();
    scopes.publish();
}

/// Whether calls of a function of `package` with `tag` skip the cache (the
/// same test the hot path makes).
#[pyfunction]
#[pyo3(signature = (package=None, tag=None))]
pub fn scope_disabled(package: Option<&str>, tag: Option<&str>) -> bool {
    SCOPES.read().matches(package, tag.unwrap_or(""))
}

/// `(all_off, packages_off, tags_off)`, tags without their `|` wrapping.
#[pyfunction]
pub fn disabled_scopes() -> (bool, Vec<String>, Vec<String>) {
    let scopes = SCOPES.read();
    let tags = scopes
        .tags
        .iter()
        .map(|t| t.trim_matches('|').to_owned())
        .collect();
    (scopes.all, scopes.packages.iter().cloned().collect(), tags)
}

/// Tell decorated functions that configuration or backends changed.
#[pyfunction]
pub fn bump_generation() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}
