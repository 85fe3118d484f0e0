//! The near cache from Rust (no Python): values kept in front of a real
//! `redis-server`, dropped when another client writes their key or when the
//! tracking connection is lost.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cachu::backend::redis::near::{Keep, NearCache};
use cachu::backend::redis::{RedisBackend, RedisOptions};
use cachu::backend::Backend;
use cachu::clock::now;
use cachu::key::HashedKey;

mod support;
use support::RedisServer as Server;

/// Wait (bounded) until `done` holds.
fn within(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kept_values_go_when_another_client_writes_or_tracking_is_lost() {
    let mut server = Server::start();
    let backend = RedisBackend::new(&server.url(), RedisOptions::default()).unwrap();
    let source = backend.tracking_source();
    let near: Arc<NearCache<Vec<u8>>> = Arc::new(NearCache::new(16, "5m:"));
    let key = HashedKey::new("5m:k");
    backend.set(key.text, b"v1", 300.0).unwrap();

    // A read kept near once tracking is up (the first ticket starts it).
    let read_and_keep = || {
        let read_at = now();
        let ticket = near.ticket(key, &source);
        let (hit, left) = backend.get_expiring(key.text).unwrap().expect("a value");
        if let Some(ticket) = ticket {
            drop(near.insert(key, ticket, hit.value, 2, hit.created_at, read_at, left));
        }
    };
    let held = || near.get_with(key, |v, _| v.clone()).0;
    within("the value to be kept near", || {
        read_and_keep();
        held().is_some()
    });
    assert_eq!(held().as_deref(), Some(&b"v1"[..]));
    assert!(left_is_the_servers(&backend, key.text));

    // Another client writes the key: the near copy goes.
    let mut raw = server.raw();
    let _: () = redis::cmd("SET")
        .arg(key.text)
        .arg(b"12345678v2")
        .query(&mut raw)
        .unwrap();
    within("the invalidation", || held().is_none());

    // The server dies: tracking is lost and nothing is kept or served.
    within("the value to be kept near again", || {
        read_and_keep();
        held().is_some()
    });
    server.stop();
    within("tracking to be lost", || !near.tracking());
    assert!(near.is_empty());
}

/// `get_expiring` reads the key's TTL with its value, in the same round
/// trip: the near copy expires with the key.
fn left_is_the_servers(backend: &RedisBackend, key: &str) -> bool {
    let (_, left) = backend.get_expiring(key).unwrap().unwrap();
    left > 290.0 && left <= 300.0
}

#[test]
fn written_values_are_kept_until_another_client_writes() {
    let server = Server::start();
    let backend = RedisBackend::new(&server.url(), RedisOptions::default()).unwrap();
    let source = backend.tracking_source();
    let near: Arc<NearCache<Vec<u8>>> = Arc::new(NearCache::new(16, "5m:"));
    let key = HashedKey::new("5m:w");
    let held = || near.get_with(key, |v, _| v.clone()).0;
    let keep = |v: &[u8]| {
        let pass = near.write_pass(key, &source)?;
        Some(Keep {
            pass,
            value: v.to_vec(),
            weight: 2,
        })
    };
    within("tracking to come up", || {
        let _ = near.ticket(key, &source);
        near.tracking()
    });
    let mut raw = server.raw();

    // A plain write: kept at once, and in Redis.
    let pass = keep(b"v1");
    assert!(pass.is_some(), "tracking is up: a write may be kept");
    backend
        .store_near(&near, key.text, b"v1", 300.0, None, pass)
        .unwrap();
    assert_eq!(held().as_deref(), Some(&b"v1"[..]));
    assert_eq!(backend.get(key.text).unwrap().unwrap().value, b"v1");

    // A store releasing the dogpile lock: kept, and the lock gone.
    let token = backend.try_lock(key.text).unwrap().expect("the lock");
    backend
        .store_near(&near, key.text, b"v2", 300.0, Some(&token), keep(b"v2"))
        .unwrap();
    assert_eq!(held().as_deref(), Some(&b"v2"[..]));
    let locked: bool = redis::cmd("EXISTS")
        .arg(backend.lock_key_of(key.text))
        .query(&mut raw)
        .unwrap();
    assert!(!locked, "the store released the lock");
    let ttl: i64 = redis::cmd("TTL").arg(key.text).query(&mut raw).unwrap();
    assert!(ttl > 290 && ttl <= 300, "{ttl}");

    // Another client's write after ours: the kept copy goes.
    let _: () = redis::cmd("SET")
        .arg(key.text)
        .arg(b"12345678v3")
        .query(&mut raw)
        .unwrap();
    within("the invalidation", || held().is_none());

    // Nothing kept without a pass (the plain way), and the old copy dropped.
    backend
        .store_near(&near, key.text, b"v4", 300.0, None, keep(b"v4"))
        .unwrap();
    assert_eq!(held().as_deref(), Some(&b"v4"[..]));
    backend
        .store_near(&near, key.text, b"v5", 300.0, None, None)
        .unwrap();
    assert_eq!(held(), None);
    assert_eq!(backend.get(key.text).unwrap().unwrap().value, b"v5");

    // The tracking connection dies between the pass and the write: the
    // write goes the plain way, nothing is kept, and the session ends.
    let flushes = near.flushes();
    let pass = keep(b"v6");
    assert!(pass.is_some());
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut raw).unwrap();
    for line in list.lines().filter(|l| l.contains("flags=t")) {
        let id = line
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("id=");
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut raw)
            .unwrap();
    }
    backend
        .store_near(&near, key.text, b"v6", 300.0, None, pass)
        .unwrap();
    assert_eq!(held(), None);
    assert!(near.flushes() > flushes);
    assert_eq!(backend.get(key.text).unwrap().unwrap().value, b"v6");
    // Tracking comes back, and writes are kept again.
    within("a write to be kept again", || {
        let pass = keep(b"v7");
        backend
            .store_near(&near, key.text, b"v7", 300.0, None, pass)
            .unwrap();
        held().is_some()
    });
}
