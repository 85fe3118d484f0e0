//! Which keys this process last found in Redis (or stored there): a guess
//! that picks the cheaper first round trip of a look-or-lock.
//!
//! A key found last time is most likely still there: it is read with a
//! plain `GET`, the cheapest command the server has (taking the lock too
//! costs a server about 1.3-1.5x a `GET`). Any other key is most likely
//! missing, and is locked and read in one round trip. A wrong guess costs
//! one `GET` (a key that expired or was deleted since it was found), never
//! a wrong answer: the guess only chooses the commands.
//!
//! The table is a fixed array of slots, one per process, each remembering
//! one key's mark (slot by the hash's low bits, mark from its high bits); a
//! key whose slot was taken by another is simply forgotten, and two keys
//! with one slot and one mark pass for each other (a wasted `GET` at
//! worst). Slots are atomics: threads race only to overwrite a guess.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::OnceLock;

/// Slots of the process's table (4 bytes each: 256 KiB, however many
/// backends). A key forgotten because its slot was taken costs its next hit
/// a lock taken and released in passing (see `look.rs`), so the table is
/// sized for large working sets.
const SLOTS: usize = 65536;

/// The table every backend of the process shares; each marks its keys with
/// hashes of its own, so that one key of two backends are two keys here.
fn slots() -> &'static [AtomicU32] {
    static SLOTS_OF_PROCESS: OnceLock<Box<[AtomicU32]>> = OnceLock::new();
    SLOTS_OF_PROCESS.get_or_init(|| (0..SLOTS).map(|_| AtomicU32::new(0)).collect())
}

/// The keys of one backend found present lately.
pub(super) struct Presence {
    hasher: ahash::RandomState,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            hasher: ahash::RandomState::new(),
        }
    }
}

impl Presence {
    /// The key's slot, and the mark it holds while the key is remembered
    /// (never 0, which is an empty slot).
    #[inline]
    fn slot(&self, key: &str) -> (&AtomicU32, u32) {
        let hash = self.hasher.hash_one(key);
        // Slot by the low bits, mark from the high ones.
        (&slots()[hash as usize % SLOTS], (hash >> 32) as u32 | 1)
    }

    /// Whether `key` was found (or stored) last time.
    #[inline]
    pub(super) fn likely(&self, key: &str) -> bool {
        let (slot, mark) = self.slot(key);
        slot.load(Relaxed) == mark
    }

    /// `key` was found, or has just been stored.
    #[inline]
    pub(super) fn found(&self, key: &str) {
        let (slot, mark) = self.slot(key);
        if slot.load(Relaxed) != mark {
            slot.store(mark, Relaxed);
        }
    }

    /// `key` was found missing, or has just been removed.
    #[inline]
    pub(super) fn gone(&self, key: &str) {
        let (slot, mark) = self.slot(key);
        // Only its own mark: another key's guess stays.
        let _ = slot.compare_exchange(mark, 0, Relaxed, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_found_keys_until_gone() {
        let p = Presence::default();
        assert!(!p.likely("a"));
        p.found("a");
        assert!(p.likely("a"));
        assert!(!p.likely("b"));
        p.gone("b");
        assert!(p.likely("a"));
        p.gone("a");
        assert!(!p.likely("a"));
    }

    #[test]
    fn backends_keep_their_guesses_apart() {
        let (a, b) = (Presence::default(), Presence::default());
        a.found("k");
        assert!(a.likely("k"));
        assert!(!b.likely("k"));
    }

    #[test]
    fn a_key_sharing_a_slot_replaces_the_guess() {
        let p = Presence::default();
        let first = "k0".to_owned();
        let (slot, _) = p.slot(&first);
        let other = (1..)
            .map(|i| format!("k{i}"))
            .find(|k| std::ptr::eq(p.slot(k).0, slot))
            .unwrap();
        p.found(&first);
        p.found(&other);
        assert!(p.likely(&other));
        assert!(!p.likely(&first));
    }
}
