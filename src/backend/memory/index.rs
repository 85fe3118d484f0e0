//! The index of a shard's entries: an open-addressing hash table with
//! linear probing, in two arrays: a tag byte per slot (free, or seven bits
//! of the hash), and an 8-byte record per slot (an entry's place in the
//! dense array, and the low half of its hash).
//!
//! Why not hashbrown: a miss and the insert that follows it are the
//! growing store's whole cost, and in a table of a million entries every
//! random cache line is a trip to memory. The tags are a ninth of the
//! table, so the line a lookup reads first is mostly cached; a missing
//! lookup then prefetches the record its insert will most likely write
//! (see [`Index::find`]), so the write finds the line there after the
//! caller's function has run. hashbrown hides where an insert will land.
//! Slots are at most half full, so a missing lookup reads two or three
//! tags; the half of the hash in each record skips false tag matches
//! without reading an entry. Removal shifts the following records back (no
//! tombstones).

/// The tag of a free slot; taken slots have the top bit set.
const FREE: u8 = 0;

#[inline]
fn tag(hash: u32) -> u8 {
    // The top bits: the slot comes from the low ones.
    0x80 | (hash >> 25) as u8
}

#[inline]
fn record(hash: u32, at: usize) -> u64 {
    (u64::from(hash) << 32) | at as u64
}

#[inline]
fn hash_of(r: u64) -> u32 {
    (r >> 32) as u32
}

#[inline]
fn place_of(r: u64) -> usize {
    r as u32 as usize
}

pub struct Index {
    /// A power of two of slots (none before the first insert).
    tags: Vec<u8>,
    /// As many as `tags`; a free slot's record is meaningless.
    records: Vec<u64>,
    len: usize,
}

impl Index {
    pub const fn new() -> Self {
        Self {
            tags: Vec::new(),
            records: Vec::new(),
            len: 0,
        }
    }

    /// The slot of the record with this `hash` whose place passes `eq`.
    ///
    /// A miss prefetches the record of the free slot it ended on: an
    /// insert of this hash takes that slot unless the index changes first.
    /// (`eq` is asked about every place whose tag matches: the half hash in
    /// the record would tell most false matches apart, but that costs every
    /// hit a compare, to spare a miss in about a hundred a read.)
    #[inline]
    pub fn find(&self, hash: u32, mut eq: impl FnMut(usize) -> bool) -> Option<usize> {
        let mask = self.tags.len().wrapping_sub(1);
        let t = tag(hash);
        let mut i = hash as usize & mask;
        while let Some(&found) = self.tags.get(i) {
            // SAFETY: `tags` and `records` always have the same length
            // (`grow` makes both), and `tags.get(i)` found `i` in bounds.
            // On every hit: the check this skips is a tenth of the probe.
            if found == t && eq(place_of(unsafe { *self.records.get_unchecked(i) })) {
                return Some(i);
            }
            if found == FREE {
                prefetch(&self.records[i]);
                return None;
            }
            i = (i + 1) & mask;
        }
        None // no slots yet
    }

    /// The place of the record with this `hash` whose place passes `eq`
    /// (as [`Index::find`]).
    #[inline]
    pub fn find_place(&self, hash: u32, mut eq: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut place = 0;
        self.find(hash, |at| {
            place = at;
            eq(at)
        })?;
        Some(place)
    }

    /// Make the record in `slot` name place `at`.
    pub fn set_place(&mut self, slot: usize, at: usize) {
        self.records[slot] = record(hash_of(self.records[slot]), at);
    }

    /// Add a record for the entry at `at` (none names it yet).
    #[inline]
    pub fn insert(&mut self, hash: u32, at: usize) {
        if 2 * (self.len + 1) > self.tags.len() {
            self.grow();
        }
        put(&mut self.tags, &mut self.records, record(hash, at));
        self.len += 1;
    }

    #[cold]
    fn grow(&mut self) {
        let n = (2 * self.tags.len()).max(8);
        let (mut tags, mut records) = (vec![FREE; n], vec![0; n]);
        for (&t, &r) in self.tags.iter().zip(&self.records) {
            if t != FREE {
                put(&mut tags, &mut records, r);
            }
        }
        (self.tags, self.records) = (tags, records);
    }

    /// Remove the record in `slot`, moving back the records after it that
    /// it kept from their ideal slot, so that no probe stops short.
    pub fn remove(&mut self, slot: usize) {
        let mask = self.tags.len() - 1;
        let mut hole = slot;
        let mut i = slot;
        loop {
            i = (i + 1) & mask;
            if self.tags[i] == FREE {
                break;
            }
            let r = self.records[i];
            let ideal = hash_of(r) as usize & mask;
            // Movable into the hole if its ideal slot is not after the hole
            // (cyclically) on the way to where it sits.
            if (i.wrapping_sub(ideal) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.tags[hole] = self.tags[i];
                self.records[hole] = r;
                hole = i;
            }
        }
        self.tags[hole] = FREE;
        self.len -= 1;
    }
}

/// Put `r` in the first free slot of its probe.
#[inline]
fn put(tags: &mut [u8], records: &mut [u64], r: u64) {
    let mask = tags.len() - 1;
    let mut i = hash_of(r) as usize & mask;
    while tags[i] != FREE {
        i = (i + 1) & mask;
    }
    tags[i] = tag(hash_of(r));
    records[i] = r;
}

/// Ask for the line holding `p` ahead of a write to it.
#[inline]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no effect the program can observe: it never
    // faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_keeps_every_other_record_findable() {
        let mut ix = Index::new();
        // Long runs: hashes crowd into a few ideal slots, and wrap.
        let hash = |at: usize| ((at % 5) as u32 * 7).wrapping_sub(20);
        let mut live: Vec<usize> = (0..300).collect();
        for &at in &live {
            ix.insert(hash(at), at);
        }
        for k in [0, 5, 7, 150, 299, 42, 1, 2, 3] {
            assert_eq!(ix.find_place(hash(k), |p| p == k), Some(k));
            let slot = ix.find(hash(k), |p| p == k).expect("inserted");
            ix.remove(slot);
            live.retain(|&p| p != k);
            assert_eq!(ix.find(hash(k), |p| p == k), None);
            for &at in &live {
                assert!(ix.find(hash(at), |p| p == at).is_some(), "{at} lost");
            }
        }
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        assert_eq!(Index::new().find(3, |_| true), None);
    }
}
