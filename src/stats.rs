//! Hit and miss counters, one set per cached function.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Every registered set of counters, so one call can reset them all (the
/// reference resets every function's counters on any clear).
static REGISTRY: Mutex<Vec<Weak<Stats>>> = Mutex::new(Vec::new());

/// Counters for one cached function; cheap to bump from many threads.
#[derive(Debug, Default)]
pub struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// [`Stats::hit`] without a locked instruction (a tenth of a memory
    /// hit's time), for callers already serialized by an outer lock: the
    /// Python layer bumps counters only while it holds the GIL. A bump made
    /// at the same moment without that lock could be lost; none is.
    #[inline]
    pub fn hit_serialized(&self) {
        let n = self.hits.load(Ordering::Relaxed);
        self.hits.store(n + 1, Ordering::Relaxed);
    }

    #[inline]
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// [`Stats::miss`] without a locked instruction, for callers serialized
    /// as for [`Stats::hit_serialized`].
    #[inline]
    pub fn miss_serialized(&self) {
        let n = self.misses.load(Ordering::Relaxed);
        self.misses.store(n + 1, Ordering::Relaxed);
    }

    /// `(hits, misses)`.
    pub fn get(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }

    /// New counters that [`reset_all`] reaches.
    pub fn registered() -> Arc<Stats> {
        let stats = Arc::new(Stats::new());
        let mut reg = REGISTRY.lock();
        reg.retain(|w| w.strong_count() > 0);
        reg.push(Arc::downgrade(&stats));
        stats
    }
}

/// Reset every registered set of counters.
pub fn reset_all() {
    for s in REGISTRY.lock().iter().filter_map(Weak::upgrade) {
        s.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let s = Stats::new();
        s.hit();
        s.hit();
        s.miss();
        assert_eq!(s.get(), (2, 1));
        s.reset();
        assert_eq!(s.get(), (0, 0));
    }

    #[test]
    fn reset_all_reaches_registered() {
        let a = Stats::registered();
        a.miss();
        reset_all();
        assert_eq!(a.get(), (0, 0));
    }
}
