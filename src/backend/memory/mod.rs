//! The in-process store: a sharded hash table keyed by the mangled key,
//! optionally bounded in entries and in bytes.
//!
//! It is generic over the value type so that Rust users store bytes
//! (`MemoryStore<Vec<u8>>` implements [`Backend`]) while the Python bindings
//! store prepared Python objects without pickling them on every hit. Values
//! are never dropped while a lock is held: removed values are handed back
//! to the caller to drop, because dropping a foreign value may run foreign
//! code.
//!
//! Bounds ([`Bounds`]) are enforced by the W-TinyLFU policy of
//! [`policy`]: its state sits behind one lock that writers of a bounded
//! store take (before any shard lock), while a hit takes only its shard's
//! lock and bumps a counter in the entry. Expired entries are swept in
//! slices (see [`sweep`]): by the store's writes, and, for stores handed to
//! [`sweep::watch`], by any read or write of any store of the process.
//!
//! ```
//! use cachu::backend::memory::{Bounds, MemoryStore};
//! use cachu::key::HashedKey;
//!
//! let bounds = Bounds { max_entries: Some(2), max_bytes: None };
//! let store: MemoryStore<Vec<u8>> = MemoryStore::with_bounds(bounds, 60.0);
//! for k in ["a", "b", "c"] {
//!     drop(store.insert(HashedKey::new(k), b"v".to_vec(), 1, 0.0, f64::MAX));
//! }
//! assert_eq!(store.len(), 2);
//! assert_eq!(store.evictions(), 1);
//! ```

mod dense;
mod index;
mod key_text;
mod policy;
mod sketch;
pub mod sweep;

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};

use dense::{Dense, Hashed};
use key_text::KeyText;
pub use policy::Bounds;
use policy::{Policy, Rec};
use sketch::MAX_COUNT;
use sweep::{Sweep, SweepClock};

use super::{Backend, Hit};
use crate::clock::now;
use crate::error::Result;
use crate::key::{glob_match, HashedKey};

const SHARDS: usize = 32;
/// A timed sweep pass takes each shard in this many parts (split by hash),
/// so that a slice removes (and its caller then drops) a 128th of a shard's
/// expired entries: about 250 at a million entries. Dropping is what a
/// slice costs (each dropped value is a cold cache line or two, about a
/// microsecond): at an eighth of a shard, writes carrying a slice took
/// 5-15 ms at a million entries.
const PARTS: usize = 128;
/// `memory_sweep_interval`'s default: least seconds between two sweeps.
pub const DEFAULT_SWEEP_INTERVAL: f64 = 60.0;

struct Slot<V> {
    /// The low half of the key's hash, which the index works with (the
    /// whole is the key text's again, see `set_bounds`); four bytes less
    /// in every entry a growing store writes into fresh memory.
    hash: u32,
    key: KeyText,
    value: V,
    created_at: f64,
    expires_at: f64,
    /// What the value weighs (bytes, as the writer measured it).
    weight: u32,
    /// Tells this entry from an earlier one under the same key (see [`Rec`]).
    seq: u32,
    /// Aged use count: `freq >> (epoch now - epoch)` (see [`Slot::freq_at`]).
    freq: u8,
    epoch: u8,
    /// Hit since the eviction hand last passed (CLOCK's reference bit).
    touched: bool,
}

// What a growing store writes per entry: 80 bytes with a 16-byte value (the
// Python shim's, see `python::value::Stored`), on a 64-bit target.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Slot<[u64; 2]>>() == 80);

impl<V> Hashed for Slot<V> {
    #[inline]
    fn hash(&self) -> u32 {
        self.hash
    }
}

impl<V> Slot<V> {
    #[inline]
    fn live(&self, now: f64) -> bool {
        now <= self.expires_at
    }

    /// The use count, halved once per sketch period since it was last set.
    #[inline]
    fn freq_at(&self, epoch: u8) -> u8 {
        let age = epoch.wrapping_sub(self.epoch);
        if age >= 8 {
            0
        } else {
            self.freq >> age
        }
    }

    /// A use: a handful of instructions on a line the lookup already holds.
    #[inline]
    fn touch(&mut self, epoch: u8) {
        self.freq = (self.freq_at(epoch) + 1).min(MAX_COUNT);
        self.epoch = epoch;
        self.touched = true;
    }
}

impl Rec {
    /// Whether `slot` is the entry this record was made for.
    #[inline]
    fn names<V>(&self, slot: &Slot<V>) -> bool {
        slot.hash == self.hash as u32 && slot.seq == self.seq
    }
}

struct Shard<V> {
    table: Dense<Slot<V>>,
    next_seq: u32,
    /// Entries per sweep part in the current pass (see `sweep_slice`).
    part_len: usize,
}

impl<V> Shard<V> {
    fn seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }
}

/// What the eviction loop learns of an entry by looking at it.
#[derive(Clone, Copy)]
struct Seen {
    freq: u8,
    live: bool,
    touched: bool,
}

/// Thread-safe map from key to `(value, created_at, expires_at)`.
pub struct MemoryStore<V> {
    shards: Box<[Mutex<Shard<V>>; SHARDS]>,
    /// Entries stored (expired ones not yet removed included), and their
    /// weight in bytes; kept on every insert and removal.
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Whether `policy` holds a policy; read without its lock by writers to
    /// pick their path, and re-read under a shard lock (see `insert_free`).
    bounded: AtomicBool,
    policy: Mutex<Option<Policy>>,
    /// Periods of the policy's sketch so far (ages entries' use counts).
    epoch: AtomicU8,
    evictions: AtomicU64,
    expired_swept: AtomicU64,
    sweep: SweepClock,
}

impl<V> Default for MemoryStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> MemoryStore<V> {
    /// An unbounded store, swept every [`DEFAULT_SWEEP_INTERVAL`] seconds.
    pub fn new() -> Self {
        Self::with_bounds(Bounds::default(), DEFAULT_SWEEP_INTERVAL)
    }

    /// A store holding at most `bounds`, whose expired entries are swept at
    /// most every `sweep_interval` seconds (0: on every write; infinity:
    /// never, expired entries then go only when read or evicted).
    pub fn with_bounds(bounds: Bounds, sweep_interval: f64) -> Self {
        Self {
            shards: Box::new(std::array::from_fn(|_| {
                Mutex::new(Shard {
                    table: Dense::new(),
                    next_seq: 0,
                    part_len: 0,
                })
            })),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            bounded: AtomicBool::new(bounds.is_bounded()),
            policy: Mutex::new(bounds.is_bounded().then(|| Policy::new(bounds, 0))),
            epoch: AtomicU8::new(0),
            evictions: AtomicU64::new(0),
            expired_swept: AtomicU64::new(0),
            sweep: SweepClock::new(sweep_interval, now(), SHARDS * PARTS),
        }
    }

    #[inline]
    fn locate(&self, hash: u64) -> &Mutex<Shard<V>> {
        // Middle bits: hashbrown uses the low bits for the bucket and the top
        // seven for its tags, so sharding on either would starve a shard's
        // table of entropy (long probes, false tag matches).
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// Entries stored now (expired ones not yet removed included).
    pub fn len(&self) -> u64 {
        self.entries.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of values stored now, as weighed at store time.
    pub fn nbytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Live entries removed to keep within the bounds, since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// Expired entries removed by sweeps or met by the eviction hand.
    pub fn expired_swept(&self) -> u64 {
        self.expired_swept.load(Relaxed)
    }

    pub fn bounds(&self) -> Bounds {
        self.policy
            .lock()
            .as_ref()
            .map(|p| p.bounds)
            .unwrap_or_default()
    }

    pub fn sweep_interval(&self) -> f64 {
        self.sweep.interval()
    }

    #[inline]
    fn forget(&self, slot: &Slot<V>) {
        self.entries.fetch_sub(1, Relaxed);
        self.bytes.fetch_sub(u64::from(slot.weight), Relaxed);
    }

    /// Look `key` up at time `now`; on a live entry, `f(value, created_at)`
    /// runs under the shard lock (keep it short: clone a handle, nothing
    /// more). An expired entry is removed and handed to `dead` to drop.
    #[inline]
    pub fn get_with<R>(
        &self,
        key: HashedKey<'_>,
        now: f64,
        f: impl FnOnce(&V, f64) -> R,
    ) -> (Option<R>, Option<V>) {
        // Before the lookup: nothing is held yet, and nothing needs keeping
        // across a sweep.
        sweep::tick(now);
        let hash = key.hash;
        let mut shard = self.locate(hash).lock();
        let Some(at) = shard.table.find(hash, |s| s.key.is(key.text)) else {
            return (None, None);
        };
        let slot = shard.table.get_mut(at);
        if slot.live(now) {
            slot.touch(self.epoch.load(Relaxed));
            (Some(f(&slot.value, slot.created_at)), None)
        } else {
            let slot = shard.table.swap_remove(at);
            self.forget(&slot);
            (None, Some(slot.value))
        }
    }

    /// Store `value`, weighing `weight` bytes, under `key`; returns the
    /// values this removed (the one it replaced, entries evicted to make
    /// room, expired entries swept), for the caller to drop. A bounded store
    /// may keep the new value only briefly, or not at all (a value heavier
    /// than the byte bound is never kept).
    pub fn insert(
        &self,
        key: HashedKey<'_>,
        value: V,
        weight: u64,
        created_at: f64,
        expires_at: f64,
    ) -> Vec<V> {
        let mut dropped = Vec::new();
        let slot = Slot {
            hash: key.hash as u32,
            key: KeyText::new(key.text),
            value,
            created_at,
            expires_at,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            seq: 0,
            freq: 0,
            epoch: self.epoch.load(Relaxed),
            touched: false,
        };
        let unplaced = if self.bounded.load(Relaxed) {
            Some(slot)
        } else {
            self.insert_free(key, slot, &mut dropped)
        };
        if let Some(slot) = unplaced {
            self.insert_bounded(key, slot, &mut dropped);
        }
        // `created_at` is the writer's "now".
        // One slice per call at most: this store's, else the process's
        // most overdue one.
        if !self.sweep_on_write(created_at, &mut dropped) {
            sweep::tick(created_at);
        }
        dropped
    }

    /// Put `slot` in its shard, no policy involved; hands it back if the
    /// store became bounded meanwhile. `set_bounds` raises `bounded` before
    /// collecting the shards' entries under their locks, so reading it again
    /// under the shard lock tells whether that collection could miss this
    /// entry.
    fn insert_free(
        &self,
        key: HashedKey<'_>,
        mut slot: Slot<V>,
        dropped: &mut Vec<V>,
    ) -> Option<Slot<V>> {
        let hash = key.hash;
        let mut shard = self.locate(hash).lock();
        if self.bounded.load(Relaxed) {
            return Some(slot);
        }
        match shard.table.find(hash, |s| s.key.is(key.text)) {
            Some(at) => {
                let cur = shard.table.get_mut(at);
                slot.seq = cur.seq;
                let old = std::mem::replace(cur, slot);
                self.reweigh(old.weight, cur.weight);
                dropped.push(old.value);
            }
            None => {
                slot.seq = shard.seq();
                self.entries.fetch_add(1, Relaxed);
                self.bytes.fetch_add(u64::from(slot.weight), Relaxed);
                shard.table.push(slot);
            }
        }
        None
    }

    #[inline]
    fn reweigh(&self, old: u32, new: u32) {
        self.bytes.fetch_add(u64::from(new), Relaxed);
        self.bytes.fetch_sub(u64::from(old), Relaxed);
    }

    fn insert_bounded(&self, key: HashedKey<'_>, mut slot: Slot<V>, dropped: &mut Vec<V>) {
        let mut guard = self.policy.lock();
        let Some(pol) = guard.as_mut() else {
            // The bounds were lifted meanwhile (under this lock, so the
            // free path cannot hand the slot back again).
            if let Some(slot) = self.insert_free(key, slot, dropped) {
                dropped.push(slot.value);
            }
            return;
        };
        let now = slot.created_at;
        let hash = key.hash;
        if pol
            .bounds
            .max_bytes
            .is_some_and(|m| u64::from(slot.weight) > m)
        {
            // Too heavy to keep at all: keep nothing under the key, rather
            // than the value this write meant to replace.
            if let Some((old, _)) = self.remove(key, now) {
                dropped.push(old);
            }
            self.evictions.fetch_add(1, Relaxed);
            dropped.push(slot.value);
            return;
        }
        {
            let mut shard = self.locate(hash).lock();
            let epoch = self.epoch.load(Relaxed);
            match shard.table.find(hash, |s| s.key.is(key.text)) {
                Some(at) => {
                    // A rewrite is a use; the entry keeps its place.
                    let cur = shard.table.get_mut(at);
                    slot.seq = cur.seq;
                    slot.freq = cur.freq;
                    slot.epoch = cur.epoch;
                    slot.touch(epoch);
                    let old = std::mem::replace(cur, slot);
                    self.reweigh(old.weight, cur.weight);
                    dropped.push(old.value);
                }
                None => {
                    // The entry starts with the key's history, not
                    // counting this access: in a loop every key comes back
                    // one access ahead of the entry it would replace, and
                    // must not win on that alone.
                    slot.freq = pol.sketch.estimate(hash);
                    if pol.sketch.add(hash, 1) {
                        self.epoch.fetch_add(1, Relaxed);
                    }
                    slot.epoch = self.epoch.load(Relaxed);
                    slot.seq = shard.seq();
                    pol.window.push_back(Rec {
                        hash,
                        seq: slot.seq,
                    });
                    self.entries.fetch_add(1, Relaxed);
                    self.bytes.fetch_add(u64::from(slot.weight), Relaxed);
                    shard.table.push(slot);
                }
            }
        }
        pol.fit_sketch(self.len());
        self.evict(pol, now, dropped);
        if pol.records() > 2 * self.len() as usize + 1024 {
            self.compact(pol);
        }
    }

    /// Remove entries until the store is within its bounds; entries past
    /// the window's share move on to main.
    fn evict(&self, pol: &mut Policy, now: f64, dropped: &mut Vec<V>) {
        loop {
            let entries = self.len();
            let window_cap = pol.window_cap(entries);
            if !pol.bounds.exceeded(entries, self.nbytes()) {
                while pol.window.len() > window_cap {
                    let rec = pol.window.pop_front().expect("window is not empty");
                    pol.main.push_back(rec);
                }
                return;
            }
            if pol.window.len() > window_cap {
                let Some((cand, c)) = self.pop_valid(&mut pol.window, now) else {
                    continue;
                };
                if !c.live {
                    self.remove_rec(pol, cand, now, dropped);
                    continue;
                }
                match self.clock_victim(pol, now) {
                    None => pol.main.push_back(cand),
                    // The admission test: the candidate must be used more
                    // often than the entry it would replace.
                    Some((victim, v)) if !v.live || c.freq > v.freq => {
                        pol.main.pop_front();
                        self.remove_rec(pol, victim, now, dropped);
                        pol.main.push_back(cand);
                    }
                    Some(_) => self.remove_rec(pol, cand, now, dropped),
                }
            } else if let Some((victim, _)) = self.clock_victim(pol, now) {
                pol.main.pop_front();
                self.remove_rec(pol, victim, now, dropped);
            } else if let Some((cand, _)) = self.pop_valid(&mut pol.window, now) {
                self.remove_rec(pol, cand, now, dropped);
            } else {
                // Every entry has a record, so this is unreachable; stop
                // rather than spin if it ever is not.
                return;
            }
        }
    }

    /// The front of main once the CLOCK hand has passed over the entries hit
    /// since its last turn (each gets one more round), skipping stale
    /// records. The victim stays at the front.
    fn clock_victim(&self, pol: &mut Policy, now: f64) -> Option<(Rec, Seen)> {
        let mut chances = pol.main.len();
        while let Some(&rec) = pol.main.front() {
            match self.inspect(rec, now, chances > 0) {
                None => {
                    pol.main.pop_front();
                }
                Some(seen) if seen.touched && seen.live && chances > 0 => {
                    chances -= 1;
                    pol.main.pop_front();
                    pol.main.push_back(rec);
                }
                Some(seen) => return Some((rec, seen)),
            }
        }
        None
    }

    /// Pop records off `queue`'s front until one names a stored entry.
    fn pop_valid(
        &self,
        queue: &mut std::collections::VecDeque<Rec>,
        now: f64,
    ) -> Option<(Rec, Seen)> {
        while let Some(rec) = queue.pop_front() {
            if let Some(seen) = self.inspect(rec, now, false) {
                return Some((rec, seen));
            }
        }
        None
    }

    /// Look at the entry `rec` names, if it is still stored; optionally
    /// clear its reference bit.
    fn inspect(&self, rec: Rec, now: f64, clear: bool) -> Option<Seen> {
        let mut shard = self.locate(rec.hash).lock();
        let at = shard.table.find(rec.hash, |s| rec.names(s))?;
        let slot = shard.table.get_mut(at);
        let seen = Seen {
            freq: slot.freq_at(self.epoch.load(Relaxed)),
            live: slot.live(now),
            touched: slot.touched,
        };
        if clear {
            slot.touched = false;
        }
        Some(seen)
    }

    /// Remove the entry `rec` names: an eviction if it was live (the sketch
    /// then remembers its use count), else an expiry.
    fn remove_rec(&self, pol: &mut Policy, rec: Rec, now: f64, dropped: &mut Vec<V>) {
        let slot = {
            let mut shard = self.locate(rec.hash).lock();
            match shard.table.find(rec.hash, |s| rec.names(s)) {
                Some(at) => shard.table.swap_remove(at),
                None => return,
            }
        };
        self.forget(&slot);
        if slot.live(now) {
            self.evictions.fetch_add(1, Relaxed);
            pol.sketch
                .remember(rec.hash, slot.freq_at(self.epoch.load(Relaxed)));
        } else {
            self.expired_swept.fetch_add(1, Relaxed);
        }
        dropped.push(slot.value);
    }

    /// Drop the records of entries no longer stored (deleted, swept,
    /// cleared), which otherwise wait in the queues until the hand meets
    /// them.
    fn compact(&self, pol: &mut Policy) {
        let stored = |rec: &Rec| {
            let shard = self.locate(rec.hash).lock();
            shard.table.find(rec.hash, |s| rec.names(s)).is_some()
        };
        pol.window.retain(stored);
        pol.main.retain(stored);
    }

    /// Change the bounds and the sweep interval at run time. Shrinking
    /// evicts down to the new bounds before it returns; the removed values
    /// are handed back to drop.
    pub fn set_bounds(&self, bounds: Bounds, sweep_interval: f64) -> Vec<V> {
        let mut dropped = Vec::new();
        let t = now();
        self.sweep.set_interval(sweep_interval, t);
        sweep::nudge();
        let mut guard = self.policy.lock();
        if !bounds.is_bounded() {
            *guard = None;
            self.bounded.store(false, Relaxed);
            return dropped;
        }
        let pol = match guard.as_mut() {
            Some(pol) => {
                if pol.bounds.max_entries != bounds.max_entries {
                    // Resize the window and sketch; the queues stay.
                    let mut fresh = Policy::new(bounds, self.len());
                    fresh.window = std::mem::take(&mut pol.window);
                    fresh.main = std::mem::take(&mut pol.main);
                    *pol = fresh;
                }
                pol.bounds = bounds;
                pol
            }
            None => {
                self.bounded.store(true, Relaxed);
                let mut pol = Policy::new(bounds, self.len());
                for shard in self.shards.iter() {
                    let shard = shard.lock();
                    pol.main.extend(shard.table.entries().iter().map(|s| Rec {
                        hash: HashedKey::new(s.key.as_str()).hash,
                        seq: s.seq,
                    }));
                }
                guard.insert(pol)
            }
        };
        self.evict(pol, t, &mut dropped);
        dropped
    }

    /// Remove `key`; returns the removed value and whether it was live.
    pub fn remove(&self, key: HashedKey<'_>, now: f64) -> Option<(V, bool)> {
        let hash = key.hash;
        let mut shard = self.locate(hash).lock();
        let at = shard.table.find(hash, |s| s.key.is(key.text))?;
        let slot = shard.table.swap_remove(at);
        self.forget(&slot);
        let live = slot.live(now);
        Some((slot.value, live))
    }

    /// Remove every entry whose key matches `pattern` (all when `None`),
    /// and every expired entry. Returns the number of live entries removed
    /// and the removed values, for the caller to drop.
    pub fn remove_matching(&self, pattern: Option<&str>, now: f64) -> (u64, Vec<V>) {
        let mut live = 0;
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            // Capacity is kept for the entries to come.
            shard.table.remove_where(
                0..usize::MAX,
                |s| {
                    let matches = pattern.is_none_or(|p| glob_match(p, s.key.as_str()));
                    let alive = s.live(now);
                    live += u64::from(matches && alive);
                    matches || !alive
                },
                |s| {
                    self.forget(&s);
                    removed.push(s.value);
                },
            );
        }
        (live, removed)
    }

    /// Remove the expired entries of slice `i` of a pass: one part of one
    /// shard (`whole`: all of that shard).
    ///
    /// A part is a run of the shard's entries in place order, so that a
    /// slice reads only its own entries and drops a bounded number of
    /// values. The parts of a shard are taken from the last to the first:
    /// a removal moves the shard's last entry into the hole, so the entries
    /// of the parts still to come never move (a hole among them is filled
    /// by an entry already looked at, or by one written since the pass
    /// began, which is not yet due).
    fn sweep_slice(&self, i: usize, whole: bool, now: f64, dropped: &mut Vec<V>) {
        let before = dropped.len();
        let mut shard;
        let range = if whole {
            shard = self.shards[i].lock();
            0..usize::MAX
        } else {
            let (at, step) = (i / PARTS, i % PARTS);
            let part = PARTS - 1 - step;
            shard = self.shards[at].lock();
            if step == 0 {
                shard.part_len = shard.table.len().div_ceil(PARTS);
            }
            let per = shard.part_len;
            let end = if part == PARTS - 1 {
                usize::MAX // and whatever the shard grew by
            } else {
                (part + 1) * per
            };
            part * per..end
        };
        shard.table.remove_where(
            range,
            |s| !s.live(now),
            |s| {
                self.forget(&s);
                dropped.push(s.value);
            },
        );
        self.expired_swept
            .fetch_add((dropped.len() - before) as u64, Relaxed);
    }

    /// A write carries the sweep forward: a whole pass when the interval is
    /// 0, else one slice if a pass is due or under way.
    #[inline]
    fn sweep_on_write(&self, now: f64, dropped: &mut Vec<V>) -> bool {
        if self.sweep.interval() == 0.0 {
            for i in 0..SHARDS {
                self.sweep_slice(i, true, now, dropped);
            }
            true
        } else if let Some(i) = self.sweep.next_slice(now) {
            self.sweep_slice(i, false, now, dropped);
            true
        } else {
            false
        }
    }

    /// Sweep one slice if a pass is due or under way at `now`, handing the
    /// slice's values to `release` once the shard's lock is gone; returns
    /// the seconds until more is due, or `None` if sweeping is off.
    pub fn sweep_step(&self, now: f64, release: impl FnOnce(Vec<V>)) -> Option<f64> {
        let interval = self.sweep.interval();
        if !interval.is_finite() {
            return None;
        }
        if let Some(i) = self.sweep.next_slice(now) {
            let mut dropped = Vec::new();
            self.sweep_slice(i, false, now, &mut dropped);
            release(dropped);
        }
        Some(if self.sweep.in_pass() {
            0.0
        } else if interval == 0.0 {
            // Writes sweep such a store whole; idle passes come once a
            // second, not back to back.
            1.0
        } else {
            self.sweep.wait(now)
        })
    }

    /// The live keys matching `pattern` (all when `None`).
    pub fn keys_at(&self, pattern: Option<&str>, now: f64) -> Vec<String> {
        // A bounded writer holds the policy lock from its insert until its
        // evictions are done: holding it here too means no reader ever sees
        // the store past its bound.
        let _policy = self.policy.lock();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .table
                    .entries()
                    .iter()
                    .filter(|s| {
                        s.live(now) && pattern.is_none_or(|p| glob_match(p, s.key.as_str()))
                    })
                    .map(|s| s.key.as_str().to_string()),
            );
        }
        out
    }

    /// How many live keys match `pattern`.
    pub fn count_at(&self, pattern: Option<&str>, now: f64) -> u64 {
        let _policy = self.policy.lock();
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock();
                shard
                    .table
                    .entries()
                    .iter()
                    .filter(|s| {
                        s.live(now) && pattern.is_none_or(|p| glob_match(p, s.key.as_str()))
                    })
                    .count() as u64
            })
            .sum()
    }
}

impl<V: Send> Sweep for MemoryStore<V> {
    fn sweep_step(&self, now: f64) -> Option<f64> {
        self.sweep_step(now, drop)
    }
}

impl Backend for MemoryStore<Vec<u8>> {
    fn get(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        let (hit, _) = self.get_with(HashedKey::new(key), now(), |v, created_at| Hit {
            value: v.clone(),
            created_at,
        });
        Ok(hit)
    }

    fn set(&self, key: &str, value: &[u8], ttl: f64) -> Result<()> {
        let t = now();
        let key = HashedKey::new(key);
        if ttl <= 0.0 {
            self.remove(key, t);
        } else {
            self.insert(key, value.to_vec(), value.len() as u64, t, t + ttl);
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        Ok(self
            .remove(HashedKey::new(key), now())
            .is_some_and(|(_, live)| live))
    }

    fn clear(&self, pattern: Option<&str>) -> Result<u64> {
        Ok(self.remove_matching(pattern, now()).0)
    }

    fn keys(&self, pattern: Option<&str>) -> Result<Vec<String>> {
        Ok(self.keys_at(pattern, now()))
    }

    fn count(&self, pattern: Option<&str>) -> Result<u64> {
        Ok(self.count_at(pattern, now()))
    }
}

#[cfg(test)]
mod tests;
