//! Per-key dogpile locks: the first thread to miss a key computes it while
//! later callers of the same key wait (up to a timeout) and then read what it
//! stored. Different keys never wait for each other. A thread that already
//! holds a key may take it again (a cached function that recurses into itself
//! with the same arguments must not deadlock).
//!
//! Keys are identified by a 64-bit hash, so taking a lock allocates nothing;
//! two keys whose hashes collide merely share a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nohash_hasher::IntMap;
use parking_lot::{Condvar, Mutex};

use crate::key::HashedKey;

const SHARDS: usize = 16;

struct Held {
    owner: u64,
    depth: u32,
}

#[derive(Default)]
struct Shard {
    held: Mutex<IntMap<u64, Held>>,
    released: Condvar,
}

/// A set of named locks, created on demand and forgotten when released.
pub struct KeyLocks {
    shards: Box<[Shard]>,
    /// The `fork::generation` the holders belong to: a forked child forgets
    /// them (their threads do not exist there).
    generation: AtomicU64,
}

impl Default for KeyLocks {
    fn default() -> Self {
        Self::new()
    }
}

/// Proof of holding one key; releases it on drop.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    id: u64,
}

fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

impl KeyLocks {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            generation: AtomicU64::new(crate::fork::generation()),
        }
    }

    #[inline]
    fn locate(&self, key: HashedKey<'_>) -> (u64, &Shard) {
        let now = crate::fork::generation();
        let seen = self.generation.load(Ordering::Relaxed);
        if now != seen
            && self
                .generation
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.forget_inherited();
        }
        (key.hash, &self.shards[(key.hash >> 58) as usize % SHARDS])
    }

    /// Take `key` if it is free (or already ours), without waiting.
    pub fn try_acquire(&self, key: HashedKey<'_>) -> Option<KeyGuard<'_>> {
        let (id, shard) = self.locate(key);
        let mut held = shard.held.lock();
        self.take(&mut held, id).then(|| self.guard(id))
    }

    /// Take `key`, waiting at most `timeout` for its holder to release it.
    /// `None` means the wait timed out; the caller proceeds without the lock.
    pub fn acquire(&self, key: HashedKey<'_>, timeout: Duration) -> Option<KeyGuard<'_>> {
        let deadline = Instant::now() + timeout;
        let (id, shard) = self.locate(key);
        let mut held = shard.held.lock();
        loop {
            if self.take(&mut held, id) {
                return Some(self.guard(id));
            }
            if shard.released.wait_until(&mut held, deadline).timed_out() {
                return self.take(&mut held, id).then(|| self.guard(id));
            }
        }
    }

    /// In a forked child: every lock was held by a thread of the parent.
    #[cold]
    fn forget_inherited(&self) {
        for shard in self.shards.iter() {
            shard.held.lock().clear();
        }
    }

    /// Whether some thread holds `key` now.
    pub fn is_held(&self, key: HashedKey<'_>) -> bool {
        let (id, shard) = self.locate(key);
        shard.held.lock().contains_key(&id)
    }

    fn take(&self, held: &mut IntMap<u64, Held>, id: u64) -> bool {
        let me = thread_token();
        match held.get_mut(&id) {
            None => {
                held.insert(
                    id,
                    Held {
                        owner: me,
                        depth: 1,
                    },
                );
                true
            }
            Some(h) if h.owner == me => {
                h.depth += 1;
                true
            }
            Some(_) => false,
        }
    }

    fn guard(&self, id: u64) -> KeyGuard<'_> {
        KeyGuard { locks: self, id }
    }

    fn release(&self, id: u64) {
        let shard = &self.shards[(id >> 58) as usize % SHARDS];
        let mut held = shard.held.lock();
        if let Some(h) = held.get_mut(&id) {
            h.depth -= 1;
            if h.depth == 0 {
                held.remove(&id);
                shard.released.notify_all();
            }
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.locks.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn one_holder_at_a_time() {
        let locks = Arc::new(KeyLocks::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
                thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = locks
                            .acquire(HashedKey::new("k"), Duration::from_secs(10))
                            .unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert!(!locks.is_held(HashedKey::new("k")));
    }

    #[test]
    fn reentrant_for_the_holder() {
        let locks = KeyLocks::new();
        let a = locks.try_acquire(HashedKey::new("k")).unwrap();
        let b = locks.try_acquire(HashedKey::new("k")).unwrap();
        drop(a);
        assert!(locks.is_held(HashedKey::new("k")));
        drop(b);
        assert!(!locks.is_held(HashedKey::new("k")));
    }

    #[test]
    fn other_keys_do_not_wait() {
        let locks = Arc::new(KeyLocks::new());
        let _g = locks.try_acquire(HashedKey::new("a")).unwrap();
        let l2 = locks.clone();
        let got = thread::spawn(move || l2.try_acquire(HashedKey::new("b")).is_some())
            .join()
            .unwrap();
        assert!(got);
    }

    #[test]
    fn times_out() {
        let locks = Arc::new(KeyLocks::new());
        let _g = locks.try_acquire(HashedKey::new("k")).unwrap();
        let l2 = locks.clone();
        let (got, waited) = thread::spawn(move || {
            let t = Instant::now();
            let got = l2
                .acquire(HashedKey::new("k"), Duration::from_millis(50))
                .is_some();
            (got, t.elapsed())
        })
        .join()
        .unwrap();
        assert!(!got);
        assert!(waited >= Duration::from_millis(50));
    }

    #[test]
    fn waiter_wakes_on_release() {
        let locks = Arc::new(KeyLocks::new());
        let g = locks.try_acquire(HashedKey::new("k")).unwrap();
        let l2 = locks.clone();
        let h = thread::spawn(move || {
            l2.acquire(HashedKey::new("k"), Duration::from_secs(10))
                .is_some()
        });
        thread::sleep(Duration::from_millis(20));
        drop(g);
        assert!(h.join().unwrap());
    }
}
