//! Which entries a bounded store keeps: W-TinyLFU (Einziger, Friedman and
//! Manes, "TinyLFU: A Highly Efficient Cache Admission Policy"), the
//! policy of Caffeine and moka, arranged so that a hit costs one counter
//! bump in the entry it already holds.
//!
//! - New entries go into a small *window* (1% of the entries), oldest out
//!   first, so that a burst of new keys gets a chance to prove itself.
//! - An entry leaving the window is a *candidate* for the *main* space. If
//!   that is full, the candidate meets main's *victim* (a CLOCK hand over
//!   main: an entry hit since the hand last passed gets a second chance),
//!   and the more frequently used of the two stays; a tie keeps the victim,
//!   which is what keeps a loop slightly larger than the cache hitting and
//!   a one-time scan from flushing the hot keys.
//! - Frequencies: a resident entry counts its own hits (an aged 4-bit
//!   counter in its slot); keys that are not resident are counted by the
//!   [`Sketch`], which also inherits an evicted entry's count.
//!
//! This file holds the policy's own state; the store runs the eviction loop
//! (it alone can look into the shards).

use std::collections::VecDeque;

use super::sketch::Sketch;

/// A place in a queue: the entry's hash, and the sequence number it got
/// when it was stored, which tells a live record from one left behind by a
/// deleted, swept or replaced entry (such records are skipped when met).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub hash: u64,
    pub seq: u32,
}

/// The most a store may hold. `None` in a field is no bound on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Most entries (expired ones not yet removed count).
    pub max_entries: Option<u64>,
    /// Most bytes of values, as weighed by the caller at store time.
    pub max_bytes: Option<u64>,
}

impl Bounds {
    pub fn is_bounded(&self) -> bool {
        self.max_entries.is_some() || self.max_bytes.is_some()
    }

    #[inline]
    pub fn exceeded(&self, entries: u64, bytes: u64) -> bool {
        self.max_entries.is_some_and(|m| entries > m) || self.max_bytes.is_some_and(|m| bytes > m)
    }
}

pub struct Policy {
    pub bounds: Bounds,
    pub window: VecDeque<Rec>,
    pub main: VecDeque<Rec>,
    pub sketch: Sketch,
}

impl Policy {
    pub fn new(bounds: Bounds, entries_now: u64) -> Self {
        Self {
            bounds,
            window: VecDeque::new(),
            main: VecDeque::new(),
            sketch: Sketch::new(Self::capacity(bounds, entries_now)),
        }
    }

    /// The entry count the policy is sized for: the entry bound, or for a
    /// bound in bytes alone, the entries held now.
    fn capacity(bounds: Bounds, entries_now: u64) -> u64 {
        bounds.max_entries.unwrap_or(entries_now.max(1024))
    }

    /// Most entries the window holds: 1% (TinyLFU's measured sweet spot for
    /// most traces), at least one.
    pub fn window_cap(&self, entries_now: u64) -> usize {
        (Self::capacity(self.bounds, entries_now) / 100).max(1) as usize
    }

    /// A bound in bytes alone sizes the sketch by the entries held: regrow
    /// it when they outgrow it (its counts start over).
    pub fn fit_sketch(&mut self, entries_now: u64) {
        let want = Self::capacity(self.bounds, entries_now);
        if want > self.sketch.width() * 2 {
            self.sketch = Sketch::new(want);
        }
    }

    /// Records in the queues; far more than entries means many are stale.
    pub fn records(&self) -> usize {
        self.window.len() + self.main.len()
    }
}
