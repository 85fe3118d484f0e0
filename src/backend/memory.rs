//! The in-process store: a sharded hash table keyed by the mangled key.
//!
//! It is generic over the value type so that Rust users store bytes
//! (`MemoryStore<Vec<u8>>` implements [`Backend`]) while the Python bindings
//! store prepared Python objects without pickling them on every hit. Values
//! are never dropped while a shard lock is held: removed values are handed
//! back to the caller to drop, because dropping a foreign value may run
//! foreign code.

use hashbrown::HashTable;
use parking_lot::Mutex;

use super::{Backend, Hit};
use crate::clock::now;
use crate::error::Result;
use crate::key::{glob_match, HashedKey};

const SHARDS: usize = 32;
/// Seconds between two sweeps of a shard's expired entries. A sweep scans
/// the whole shard (memory-bound), so it is paced by time, not by writes:
/// a cache filling fast must not pay a scan every few thousand inserts.
const SWEEP_INTERVAL: f64 = 1.0;

struct Slot<V> {
    hash: u64,
    key: Box<str>,
    value: V,
    created_at: f64,
    expires_at: f64,
}

impl<V> Slot<V> {
    #[inline]
    fn live(&self, now: f64) -> bool {
        now <= self.expires_at
    }
}

struct Shard<V> {
    table: HashTable<Slot<V>>,
    last_sweep: f64,
}

/// Thread-safe map from key to `(value, created_at, expires_at)`.
pub struct MemoryStore<V> {
    shards: Box<[Mutex<Shard<V>>]>,
}

impl<V> Default for MemoryStore<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> MemoryStore<V> {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: HashTable::new(),
                        last_sweep: 0.0,
                    })
                })
                .collect(),
        }
    }

    #[inline]
    fn locate(&self, key: HashedKey<'_>) -> (u64, &Mutex<Shard<V>>) {
        let hash = key.hash;
        // Middle bits: hashbrown uses the low bits for the bucket and the top
        // seven for its tags, so sharding on either would starve a shard's
        // table of entropy (long probes, false tag matches).
        (hash, &self.shards[(hash >> 32) as usize % SHARDS])
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
        let (hash, shard) = self.locate(key);
        let mut shard = shard.lock();
        match shard.table.find_entry(hash, |s| &*s.key == key.text) {
            Ok(entry) => {
                let slot = entry.get();
                if slot.live(now) {
                    (Some(f(&slot.value, slot.created_at)), None)
                } else {
                    let (slot, _) = entry.remove();
                    (None, Some(slot.value))
                }
            }
            Err(_) => (None, None),
        }
    }

    /// Store `value` under `key`; returns the value it replaced, if any, and
    /// any expired values a periodic sweep removed, for the caller to drop.
    pub fn insert(&self, key: HashedKey<'_>, value: V, created_at: f64, expires_at: f64) -> Vec<V> {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.lock();
        let mut dropped = Vec::new();
        let slot = Slot {
            hash,
            key: key.text.into(),
            value,
            created_at,
            expires_at,
        };
        match shard.table.find_entry(hash, |s| &*s.key == key.text) {
            Ok(mut entry) => {
                let old = std::mem::replace(entry.get_mut(), slot);
                dropped.push(old.value);
            }
            Err(absent) => {
                absent.into_table().insert_unique(hash, slot, |s| s.hash);
            }
        }
        // `created_at` is the writer's "now".
        if created_at - shard.last_sweep >= SWEEP_INTERVAL {
            shard.last_sweep = created_at;
            dropped.extend(
                shard
                    .table
                    .extract_if(|s| !s.live(created_at))
                    .map(|s| s.value),
            );
        }
        dropped
    }

    /// Remove `key`; returns the removed value and whether it was live.
    pub fn remove(&self, key: HashedKey<'_>, now: f64) -> Option<(V, bool)> {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.lock();
        match shard.table.find_entry(hash, |s| &*s.key == key.text) {
            Ok(entry) => {
                let (slot, _) = entry.remove();
                let live = slot.live(now);
                Some((slot.value, live))
            }
            Err(_) => None,
        }
    }

    /// Remove every entry whose key matches `pattern` (all when `None`),
    /// and every expired entry. Returns the number of live entries removed
    /// and the removed values, for the caller to drop.
    pub fn remove_matching(&self, pattern: Option<&str>, now: f64) -> (u64, Vec<V>) {
        let mut live = 0;
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            // extract_if keeps the table's capacity for the entries to come.
            removed.extend(
                shard
                    .table
                    .extract_if(|s| {
                        let matches = pattern.is_none_or(|p| glob_match(p, &s.key));
                        let alive = s.live(now);
                        live += u64::from(matches && alive);
                        matches || !alive
                    })
                    .map(|s| s.value),
            );
        }
        (live, removed)
    }

    /// The live keys matching `pattern` (all when `None`).
    pub fn keys_at(&self, pattern: Option<&str>, now: f64) -> Vec<String> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .table
                    .iter()
                    .filter(|s| s.live(now) && pattern.is_none_or(|p| glob_match(p, &s.key)))
                    .map(|s| s.key.to_string()),
            );
        }
        out
    }

    /// How many live keys match `pattern`.
    pub fn count_at(&self, pattern: Option<&str>, now: f64) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock();
                shard
                    .table
                    .iter()
                    .filter(|s| s.live(now) && pattern.is_none_or(|p| glob_match(p, &s.key)))
                    .count() as u64
            })
            .sum()
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
            self.insert(key, value.to_vec(), t, t + ttl);
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
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let m: MemoryStore<Vec<u8>> = MemoryStore::new();
        m.set("5m:f|x=1", b"abc", 300.0).unwrap();
        let hit = Backend::get(&m, "5m:f|x=1").unwrap().unwrap();
        assert_eq!(hit.value, b"abc");
        assert!((now() - hit.created_at).abs() < 5.0);
        m.set("5m:f|x=2", b"old", 0.02).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(Backend::get(&m, "5m:f|x=2").unwrap().is_none());
        assert_eq!(Backend::count(&m, None).unwrap(), 1);
    }

    #[test]
    fn zero_ttl_stores_nothing() {
        let m: MemoryStore<Vec<u8>> = MemoryStore::new();
        m.set("k", b"v", 300.0).unwrap();
        m.set("k", b"w", 0.0).unwrap();
        assert!(Backend::get(&m, "k").unwrap().is_none());
    }

    #[test]
    fn clear_keys_count_with_patterns() {
        let m: MemoryStore<Vec<u8>> = MemoryStore::new();
        for i in 0..10 {
            m.set(&format!("5m:get_user||users||id={i}"), b"u", 300.0)
                .unwrap();
            m.set(&format!("5m:get_item|id={i}"), b"i", 300.0).unwrap();
        }
        assert_eq!(Backend::count(&m, Some("*|users|*")).unwrap(), 10);
        let mut keys = Backend::keys(&m, Some("5m:get_item|id=[0-2]")).unwrap();
        keys.sort();
        assert_eq!(
            keys,
            vec!["5m:get_item|id=0", "5m:get_item|id=1", "5m:get_item|id=2"]
        );
        assert_eq!(m.clear(Some("*|users|*")).unwrap(), 10);
        assert_eq!(Backend::count(&m, None).unwrap(), 10);
        assert!(m.delete("5m:get_item|id=3").unwrap());
        assert!(!m.delete("5m:get_item|id=3").unwrap());
        assert_eq!(m.clear(None).unwrap(), 9);
    }

    #[test]
    fn sweep_drops_expired_entries() {
        let m: MemoryStore<Vec<u8>> = MemoryStore::new();
        let t = now();
        for i in 0..1000 {
            m.insert(
                HashedKey::new(&format!("dead{i}")),
                vec![],
                t - 10.0,
                t - 1.0,
            );
        }
        let stored = |m: &MemoryStore<Vec<u8>>| -> usize {
            m.shards.iter().map(|s| s.lock().table.len()).sum()
        };
        assert!(stored(&m) > 0);
        // A write more than SWEEP_INTERVAL later sweeps its shard; one write
        // per shard-sized stride reaches every shard.
        for i in 0..(SHARDS * 64) {
            m.insert(
                HashedKey::new(&format!("live{i}")),
                vec![],
                t + SWEEP_INTERVAL,
                t + 100.0,
            );
        }
        assert_eq!(stored(&m), SHARDS * 64);
    }

    #[test]
    fn many_threads() {
        let m = std::sync::Arc::new(MemoryStore::<Vec<u8>>::new());
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let k = format!("k{}", i % 50);
                        match (i + t) % 4 {
                            0 => m.set(&k, &[t as u8], 60.0).unwrap(),
                            1 => drop(Backend::get(&*m, &k).unwrap()),
                            2 => drop(m.delete(&k).unwrap()),
                            _ => drop(Backend::count(&*m, Some("k1*")).unwrap()),
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
