//! A shard's entries: one dense array, found through a compact hash index
//! (the layout of CPython's dict).
//!
//! The entries sit in a `Vec`, in the order they came; the [`Index`] maps
//! a hash to their places. For a growing store this is what makes a new
//! entry cheap: it is written next to the previous one instead of at a
//! random place in a table of 80-byte slots (a cold cache line or two, and
//! at a million entries a TLB miss), and growing the index moves 8-byte
//! records, without reading an entry, instead of every slot. Removal moves
//! the last entry into the hole (`swap_remove`), so the array stays dense
//! and the entries before a hole never move: the sweep relies on that (see
//! `MemoryStore::sweep_slice`).
//!
//! `indexmap` has this layout, but its index is a hashbrown table holding
//! places alone: growing it reads every entry's hash, and a lookup or
//! insert touches a control line and a slot line (see [`Index`]).

use super::index::{prefetch, Index};

/// What the index needs of an entry: the low half of its hash.
pub trait Hashed {
    fn hash(&self) -> u32;
}

pub struct Dense<T> {
    index: Index,
    entries: Vec<T>,
}

impl<T: Hashed> Dense<T> {
    pub const fn new() -> Self {
        Self {
            index: Index::new(),
            entries: Vec::new(),
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries, in place order.
    #[inline]
    pub fn entries(&self) -> &[T] {
        &self.entries
    }

    /// The place of the entry with this `hash` for which `eq` holds.
    ///
    /// A miss prefetches the place the next entry will take, as the index
    /// prefetches its record (see [`Index::find`]).
    #[inline]
    pub fn find(&self, hash: u64, eq: impl Fn(&T) -> bool) -> Option<usize> {
        let entries = &self.entries;
        match self.index.find_place(hash as u32, |at| eq(&entries[at])) {
            Some(at) => Some(at),
            None => {
                if entries.len() < entries.capacity() {
                    // Its first and last byte: an entry may span two lines.
                    let next = entries.as_ptr().wrapping_add(entries.len());
                    prefetch(next);
                    prefetch(next.cast::<u8>().wrapping_add(size_of::<T>() - 1));
                }
                None
            }
        }
    }

    #[inline]
    pub fn get_mut(&mut self, at: usize) -> &mut T {
        &mut self.entries[at]
    }

    /// Add `entry`, which no entry equals; returns its place (the last).
    #[inline]
    pub fn push(&mut self, entry: T) -> usize {
        let at = self.entries.len();
        assert!(at <= u32::MAX as usize, "at most 2^32 entries in a shard");
        self.index.insert(entry.hash(), at);
        self.entries.push(entry);
        at
    }

    /// Remove the entry at `at`; the last entry takes its place.
    pub fn swap_remove(&mut self, at: usize) -> T {
        let last = self.entries.len() - 1;
        let slot = self.slot_of(at);
        self.index.remove(slot);
        if at != last {
            let slot = self.slot_of(last);
            self.index.set_place(slot, at);
        }
        self.entries.swap_remove(at)
    }

    fn slot_of(&self, at: usize) -> usize {
        self.index
            .find(self.entries[at].hash(), |p| p == at)
            .expect("every entry is indexed")
    }

    /// Remove the entries of places `range` for which `doomed` holds,
    /// passing each to `out`. Goes from the end of the range down, so that
    /// an entry moved into a hole (from the end of the array) is never one
    /// of the range not yet looked at.
    pub fn remove_where(
        &mut self,
        range: std::ops::Range<usize>,
        mut doomed: impl FnMut(&T) -> bool,
        mut out: impl FnMut(T),
    ) {
        let end = range.end.min(self.entries.len());
        for at in (range.start..end).rev() {
            if doomed(&self.entries[at]) {
                out(self.swap_remove(at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct E(u64, &'static str);

    impl Hashed for E {
        fn hash(&self) -> u32 {
            self.0 as u32
        }
    }

    fn find(d: &Dense<E>, e: &E) -> Option<usize> {
        d.find(e.0, |x| x.1 == e.1)
    }

    #[test]
    fn every_entry_stays_findable_through_removals_and_growth() {
        let mut d = Dense::new();
        // Colliding hashes (equal low halves) and a few thousand entries,
        // so the index grows and probes past matches of the hash alone.
        let names: Vec<&'static str> = (0..5000)
            .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
            .collect();
        let hash = |i: usize| (i as u64 % 7) << 40 | (i as u64 % 300);
        for (i, n) in names.iter().enumerate() {
            d.push(E(hash(i), n));
        }
        d.remove_where(0..d.len(), |e| e.1.ends_with('3'), drop);
        for at in [0, 17, 4000] {
            d.swap_remove(at);
        }
        assert_eq!(d.len(), 5000 - 500 - 3);
        for (at, e) in d.entries().iter().enumerate() {
            assert_eq!(find(&d, e), Some(at));
        }
        assert_eq!(find(&d, &E(hash(13), "k13")), None);
    }

    #[test]
    fn removing_a_range_keeps_the_entries_before_it_in_place() {
        let mut d = Dense::new();
        for (i, n) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
            d.push(E(i as u64, n));
        }
        let mut gone = vec![];
        d.remove_where(2..4, |_| true, |e| gone.push(e.1));
        assert_eq!(gone, ["d", "c"]);
        let names: Vec<_> = d.entries().iter().map(|e| e.1).collect();
        assert_eq!(names, ["a", "b", "e", "f"]);
        assert_eq!(find(&d, &E(5, "f")), Some(3));
    }
}
