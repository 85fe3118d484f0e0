//! Per-key dogpile locks: the first thread to miss a key computes it while
//! later callers of the same key wait (up to a timeout) and then read what it
//! stored. Different keys never wait for each other. A thread that already
//! holds a key may take it again (a cached function that recurses into itself
//! with the same arguments must not deadlock).
//!
//! Keys are identified by a 64-bit hash, so taking a lock allocates nothing
//! (once a shard's list has room); two keys whose hashes collide merely
//! share a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::fork::PerProcess;
use crate::key::HashedKey;

const SHARDS: usize = 16;

struct Held {
    id: u64,
    owner: u64,
    depth: u32,
}

/// The keys held in a shard, as a list: it holds the calls computing right
/// now (a handful; a recursion's depth at most), which a scan finds sooner
/// than a hash table's insert and removal do (a tenth of a memory miss).
type HeldKeys = Vec<Held>;

#[derive(Default)]
struct Shard {
    held: Mutex<HeldKeys>,
    released: Condvar,
}

type Shards = Box<[Shard]>;

fn new_shards() -> Shards {
    (0..SHARDS).map(|_| Shard::default()).collect()
}

/// A set of named locks, created on demand and forgotten when released.
pub struct KeyLocks {
    /// A forked child starts with none held (their holders do not exist
    /// there) and never touches the parent's shards, whose mutex a parent
    /// thread may have held at the fork.
    shards: PerProcess<Shards>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        Self::new()
    }
}

/// Proof of holding one key; releases it on drop.
pub struct KeyGuard<'a> {
    shard: &'a Shard,
    /// The fork generation it was taken in: a guard carried across a fork
    /// (held by the forking thread) is not given back in the child.
    generation: u64,
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
            shards: PerProcess::new(new_shards),
        }
    }

    #[inline]
    fn locate(&self, key: HashedKey<'_>) -> (&Shard, u64) {
        let (shards, generation) = self.shards.get_with_generation();
        (&shards[(key.hash >> 58) as usize % SHARDS], generation)
    }

    /// Take `key` if it is free (or already ours), without waiting.
    pub fn try_acquire(&self, key: HashedKey<'_>) -> Option<KeyGuard<'_>> {
        let (shard, generation) = self.locate(key);
        let mut held = shard.held.lock();
        // `then`, not `then_some`: a guard made and dropped would release.
        take(&mut held, key.hash).then(|| KeyGuard {
            shard,
            generation,
            id: key.hash,
        })
    }

    /// Take `key`, waiting at most `timeout` for its holder to release it.
    /// `None` means the wait timed out; the caller proceeds without the lock.
    pub fn acquire(&self, key: HashedKey<'_>, timeout: Duration) -> Option<KeyGuard<'_>> {
        let deadline = Instant::now() + timeout;
        let (shard, generation) = self.locate(key);
        let mut held = shard.held.lock();
        let got = loop {
            if take(&mut held, key.hash) {
                break true;
            }
            if shard.released.wait_until(&mut held, deadline).timed_out() {
                break take(&mut held, key.hash);
            }
        };
        got.then(|| KeyGuard {
            shard,
            generation,
            id: key.hash,
        })
    }

    /// Whether some thread holds `key` now.
    pub fn is_held(&self, key: HashedKey<'_>) -> bool {
        self.locate(key)
            .0
            .held
            .lock()
            .iter()
            .any(|h| h.id == key.hash)
    }
}

fn take(held: &mut HeldKeys, id: u64) -> bool {
    let me = thread_token();
    match held.iter_mut().find(|h| h.id == id) {
        None => {
            held.push(Held {
                id,
                owner: me,
                depth: 1,
            });
            true
        }
        Some(h) if h.owner == me => {
            h.depth += 1;
            true
        }
        Some(_) => false,
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        if crate::fork::generation() != self.generation {
            // Taken by the parent: its shard is not this process's.
            return;
        }
        let mut held = self.shard.held.lock();
        if let Some(at) = held.iter().position(|h| h.id == self.id) {
            held[at].depth -= 1;
            if held[at].depth == 0 {
                held.swap_remove(at);
                self.shard.released.notify_all();
            }
        }
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
    fn many_keys_held_at_once_each_release_their_own() {
        // A recursion's worth of keys, in every shard; released out of order.
        let locks = KeyLocks::new();
        let names: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let mut guards: Vec<_> = names
            .iter()
            .map(|n| locks.try_acquire(HashedKey::new(n)).unwrap())
            .collect();
        for n in &names {
            assert!(locks.is_held(HashedKey::new(n)));
        }
        for i in (0..guards.len()).rev().step_by(2) {
            drop(guards.swap_remove(i));
        }
        let held = names
            .iter()
            .filter(|n| locks.is_held(HashedKey::new(n)))
            .count();
        assert_eq!(held, guards.len());
        drop(guards);
        assert!(names.iter().all(|n| !locks.is_held(HashedKey::new(n))));
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
