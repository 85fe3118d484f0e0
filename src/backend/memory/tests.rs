use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use super::*;

fn bounded(max_entries: Option<u64>, max_bytes: Option<u64>) -> MemoryStore<Vec<u8>> {
    MemoryStore::with_bounds(
        Bounds {
            max_entries,
            max_bytes,
        },
        DEFAULT_SWEEP_INTERVAL,
    )
}

fn put(m: &MemoryStore<Vec<u8>>, k: &str, weight: u64) {
    drop(m.insert(HashedKey::new(k), vec![], weight, 1.0, 1e12));
}

fn has(m: &MemoryStore<Vec<u8>>, k: &str) -> bool {
    m.get_with(HashedKey::new(k), 2.0, |_, _| ()).0.is_some()
}

/// Hits of a get-then-insert-on-miss run over `trace`.
fn hits(m: &MemoryStore<Vec<u8>>, trace: impl IntoIterator<Item = u64>) -> u64 {
    let mut n = 0;
    for k in trace {
        let k = k.to_string();
        if has(m, &k) {
            n += 1;
        } else {
            put(m, &k, 1);
        }
    }
    n
}

fn stored(m: &MemoryStore<Vec<u8>>) -> usize {
    m.shards.iter().map(|s| s.lock().table.len()).sum()
}

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
    assert_eq!(m.nbytes(), 3);
}

#[test]
fn zero_ttl_stores_nothing() {
    let m: MemoryStore<Vec<u8>> = MemoryStore::new();
    m.set("k", b"v", 300.0).unwrap();
    m.set("k", b"w", 0.0).unwrap();
    assert!(Backend::get(&m, "k").unwrap().is_none());
    assert_eq!((m.len(), m.nbytes()), (0, 0));
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
    assert_eq!((m.len(), m.nbytes()), (0, 0));
}

fn fill_dead(m: &MemoryStore<Vec<u8>>, t: f64, n: usize) {
    for i in 0..n {
        drop(m.insert(
            HashedKey::new(&format!("dead{i}")),
            vec![0; 10],
            10,
            t - 10.0,
            t - 1.0,
        ));
    }
}

#[test]
fn sweeps_come_in_slices_once_per_interval() {
    let t = now();
    let m: MemoryStore<Vec<u8>> = MemoryStore::with_bounds(Bounds::default(), 5.0);
    fill_dead(&m, t, 1000);
    assert_eq!(stored(&m), 1000);
    // Not due yet: writes sweep nothing.
    let live = |m: &MemoryStore<Vec<u8>>, i: usize, at: f64| {
        m.insert(
            HashedKey::new(&format!("live{i}")),
            vec![],
            0,
            at,
            at + 100.0,
        )
    };
    assert!(live(&m, 0, t).is_empty());
    assert_eq!(stored(&m), 1001);
    // Due: each write sweeps one slice, so SHARDS * PARTS writes finish the
    // pass, and no write sweeps more than its share.
    let slices = SHARDS * PARTS;
    let per_write: Vec<usize> = (1..=slices).map(|i| live(&m, i, t + 6.0).len()).collect();
    assert_eq!(per_write.iter().sum::<usize>(), 1000);
    assert!(per_write.iter().all(|&n| n < 100), "{per_write:?}");
    assert_eq!(m.expired_swept(), 1000);
    assert_eq!((m.len(), m.nbytes()), (slices as u64 + 1, 0));
}

#[test]
fn a_pass_misses_no_entry_though_deletes_move_entries_between_slices() {
    // Live and expired entries interleaved, so removals move live entries
    // into holes; between slices, deletes move more (from the shards' ends).
    let t = now();
    let m: MemoryStore<Vec<u8>> = MemoryStore::with_bounds(Bounds::default(), 5.0);
    for i in 0..6000 {
        let expires = if i % 3 == 0 { t + 100.0 } else { t - 1.0 };
        drop(m.insert(
            HashedKey::new(&format!("k{i}")),
            vec![],
            0,
            t - 10.0,
            expires,
        ));
    }
    let mut live_deleted = 0;
    let mut slices = 0;
    while let Some(i) = m.sweep.next_slice(t + 6.0) {
        let mut dropped = vec![];
        m.sweep_slice(i, false, t + 6.0, &mut dropped);
        slices += 1;
        // A live entry and an expired one (if not yet swept) go by delete
        // every few slices.
        if slices % 7 == 0 {
            let k = format!("k{}", 3 * (slices / 7));
            let (_, live) = m.remove(HashedKey::new(&k), t + 6.0).expect("stored");
            assert!(live);
            live_deleted += 1;
            let k = format!("k{}", 3 * (slices / 7) + 1);
            drop(m.remove(HashedKey::new(&k), t + 6.0));
        }
    }
    assert_eq!(slices, SHARDS * PARTS);
    let left = 2000 - live_deleted;
    assert_eq!(stored(&m), left, "no expired entry is left");
    assert_eq!(m.len(), left as u64);
    assert!(m
        .keys_at(None, t + 6.0)
        .iter()
        .all(|k| k[1..].parse::<usize>().unwrap() % 3 == 0));
    // Every entry left is found by its key.
    for k in m.keys_at(None, t + 6.0) {
        assert!(has(&m, &k), "{k} is indexed");
    }
}

#[test]
fn interval_zero_sweeps_on_every_write_and_infinity_never() {
    let t = now();
    let m: MemoryStore<Vec<u8>> = MemoryStore::with_bounds(Bounds::default(), 0.0);
    fill_dead(&m, t, 100);
    drop(m.insert(HashedKey::new("live"), vec![], 0, t, t + 100.0));
    assert_eq!(stored(&m), 1);
    let m: MemoryStore<Vec<u8>> = MemoryStore::with_bounds(Bounds::default(), f64::INFINITY);
    fill_dead(&m, t, 100);
    assert_eq!(m.sweep_step(t + 1e9, drop), None);
    assert_eq!(stored(&m), 100);
}

#[test]
fn idle_stores_are_swept_by_the_reads_of_other_stores() {
    let idle = Arc::new(MemoryStore::<Vec<u8>>::with_bounds(Bounds::default(), 0.05));
    sweep::watch(Arc::downgrade(&idle) as std::sync::Weak<dyn Sweep>);
    let t = now();
    fill_dead(&idle, t, 500);
    // Never watched, never due: only reads of it from here on.
    let busy: MemoryStore<Vec<u8>> = MemoryStore::with_bounds(Bounds::default(), f64::INFINITY);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut reads = 0;
    while stored(&idle) > 0 {
        assert!(std::time::Instant::now() < deadline, "never swept");
        busy.get_with(HashedKey::new("k"), now(), |_, _| ());
        reads += 1;
    }
    assert_eq!(idle.expired_swept(), 500);
    // One slice per call at most: a pass takes that many calls.
    assert!(reads >= SHARDS * PARTS, "{reads} reads");
}

#[test]
fn a_watched_store_is_not_swept_before_its_interval() {
    let idle = Arc::new(MemoryStore::<Vec<u8>>::with_bounds(
        Bounds::default(),
        3600.0,
    ));
    sweep::watch(Arc::downgrade(&idle) as std::sync::Weak<dyn Sweep>);
    let t = now();
    fill_dead(&idle, t, 100);
    let busy: MemoryStore<Vec<u8>> = MemoryStore::new();
    for _ in 0..2 * SHARDS * PARTS {
        busy.get_with(HashedKey::new("k"), t + 1.0, |_, _| ());
    }
    assert_eq!((stored(&idle), idle.expired_swept()), (100, 0));
    // A shorter interval set at run time applies at once.
    // (Other tests' watched stores may take some of the calls.)
    drop(idle.set_bounds(Bounds::default(), 0.0));
    for _ in 0..100 * SHARDS * PARTS {
        if idle.expired_swept() == 100 {
            break;
        }
        busy.get_with(HashedKey::new("k"), now() + 1.0, |_, _| ());
    }
    assert_eq!(idle.expired_swept(), 100);
}

#[test]
fn entry_bound_holds_after_every_write() {
    let m = bounded(Some(100), None);
    for i in 0..1000 {
        put(&m, &format!("k{i}"), 1);
        assert!(m.len() <= 100);
        assert!(m.count_at(None, 2.0) <= 100);
    }
    assert_eq!(m.len(), 100);
    assert_eq!(m.evictions(), 900);
}

#[test]
fn byte_bound_holds_and_too_heavy_values_are_not_kept() {
    let m = bounded(None, Some(1000));
    for i in 0..100 {
        put(&m, &format!("k{i}"), 30);
        assert!(m.nbytes() <= 1000);
    }
    assert_eq!(m.nbytes(), 990);
    put(&m, "k99", 10);
    assert!(has(&m, "k99"));
    // Heavier than the whole bound: not kept, and the old value is gone too.
    put(&m, "k99", 1001);
    assert!(!has(&m, "k99"));
    assert!(m.nbytes() <= 1000);
}

#[test]
fn a_scan_does_not_flush_the_hot_keys() {
    let m = bounded(Some(100), None);
    for _ in 0..20 {
        hits(&m, 0..50);
    }
    // A scan of 10,000 new keys, while the hot keys go on being used.
    hits(&m, (10_000..20_000).flat_map(|k| [k, k % 50]));
    let kept = (0..50).filter(|k| has(&m, &k.to_string())).count();
    assert!(kept >= 45, "only {kept} of 50 hot keys survived the scan");
}

#[test]
fn a_loop_larger_than_the_cache_still_hits() {
    let m = bounded(Some(100), None);
    let n = hits(&m, (0..30).flat_map(|_| 0..150));
    // LRU would hit nothing; the optimum is about 2/3 of 4,500 accesses.
    assert!(n >= 2000, "{n} hits");
}

#[test]
fn shrinking_evicts_down_and_lifting_unbounds() {
    let m: MemoryStore<Vec<u8>> = MemoryStore::new();
    for i in 0..500 {
        put(&m, &format!("k{i}"), 2);
    }
    for _ in 0..3 {
        assert!(has(&m, "k7"));
    }
    drop(m.set_bounds(
        Bounds {
            max_entries: Some(200),
            max_bytes: None,
        },
        60.0,
    ));
    assert_eq!((m.len(), m.nbytes()), (200, 400));
    assert_eq!(m.count_at(None, 2.0), 200);
    assert!(has(&m, "k7"), "a used entry went before unused ones");
    drop(m.set_bounds(
        Bounds {
            max_entries: Some(200),
            max_bytes: Some(100),
        },
        60.0,
    ));
    assert_eq!(m.len(), 50);
    drop(m.set_bounds(Bounds::default(), 60.0));
    for i in 0..500 {
        put(&m, &format!("n{i}"), 1);
    }
    assert_eq!(m.len(), 550);
}

#[test]
fn deleted_entries_leave_no_pile_of_records() {
    let m = bounded(Some(1000), None);
    for round in 0..50 {
        for i in 0..500 {
            put(&m, &format!("r{round}k{i}"), 1);
        }
        m.remove_matching(None, 2.0);
    }
    assert_eq!(m.len(), 0);
    let records = m.policy.lock().as_ref().unwrap().records();
    assert!(records <= 2 * 500 + 1024, "{records} records");
}

#[test]
fn bound_holds_under_eight_writing_threads() {
    let m = Arc::new(bounded(Some(64), None));
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(9));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let (m, start) = (m.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..5000 {
                    put(&m, &format!("t{t}k{}", i % 300), 1);
                    let _ = has(&m, &format!("t{t}k{}", i % 7));
                }
            })
        })
        .collect();
    let reader = {
        let (m, done, start) = (m.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut looks = 0u64;
            while !done.load(Ordering::Relaxed) || looks == 0 {
                assert!(m.count_at(None, 2.0) <= 64);
                assert!(m.keys_at(None, 2.0).len() <= 64);
                looks += 1;
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(m.len(), 64);
    assert_eq!(stored(&m), 64);
}

#[test]
fn many_threads() {
    let m = Arc::new(MemoryStore::<Vec<u8>>::new());
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
    assert_eq!(m.len() as usize, stored(&m));
    assert_eq!(m.nbytes(), m.len());
}
