//! The one contract every byte backend keeps (`cachu::backend::Backend`),
//! run against the memory store, the SQLite file backend and a real
//! `redis-server` (started on a free loopback port, killed at the end).

use std::thread;
use std::time::Duration;

use cachu::backend::file::FileBackend;
use cachu::backend::memory::MemoryStore;
use cachu::backend::Backend;

/// What `get`, `set`, `delete`, `clear`, `keys` and `count` promise.
fn contract<B: Backend>(b: &B) {
    b.clear(None).unwrap();
    // Round trip, created_at, overwrite.
    let before = cachu::clock::now();
    b.set("5m:f|x=1", b"one", 300.0).unwrap();
    let hit = b.get("5m:f|x=1").unwrap().expect("a stored value");
    assert_eq!(hit.value, b"one");
    assert!(hit.created_at >= before - 1.0 && hit.created_at <= cachu::clock::now() + 1.0);
    b.set("5m:f|x=1", b"uno", 300.0).unwrap();
    assert_eq!(b.get("5m:f|x=1").unwrap().unwrap().value, b"uno");
    // Missing keys; a TTL of zero or less stores nothing and removes.
    assert!(b.get("5m:f|x=absent").unwrap().is_none());
    b.set("5m:f|x=1", b"gone", 0.0).unwrap();
    assert!(b.get("5m:f|x=1").unwrap().is_none());
    b.set("5m:f|x=1", b"gone", -5.0).unwrap();
    assert!(b.get("5m:f|x=1").unwrap().is_none());
    // Expiry.
    b.set("5m:f|x=short", b"v", 1.0).unwrap();
    thread::sleep(Duration::from_millis(1100));
    assert!(b.get("5m:f|x=short").unwrap().is_none(), "expired");
    // delete: true only for a live entry.
    b.set("5m:f|x=2", b"two", 300.0).unwrap();
    assert!(b.delete("5m:f|x=2").unwrap());
    assert!(!b.delete("5m:f|x=2").unwrap());
    // Patterns are shell globs, for keys, count and clear.
    for i in 0..5 {
        b.set(&format!("5m:users||users||id={i}"), b"u", 300.0)
            .unwrap();
        b.set(&format!("5m:items|id={i}"), b"i", 300.0).unwrap();
    }
    assert_eq!(b.count(Some("*||users||*")).unwrap(), 5);
    assert_eq!(b.count(None).unwrap(), 10);
    let mut keys = b.keys(Some("5m:items|id=[0-1]")).unwrap();
    keys.sort();
    assert_eq!(keys, ["5m:items|id=0", "5m:items|id=1"]);
    assert_eq!(b.clear(Some("*||users||*")).unwrap(), 5);
    assert_eq!(b.count(None).unwrap(), 5);
    assert_eq!(b.clear(None).unwrap(), 5);
    assert_eq!(b.count(None).unwrap(), 0);
    // Values are opaque bytes, empty and binary included.
    b.set("5m:f|x=bin", &[0, 255, 10, 13, 0], 300.0).unwrap();
    assert_eq!(
        b.get("5m:f|x=bin").unwrap().unwrap().value,
        [0, 255, 10, 13, 0]
    );
    b.close();
    // Usable again after close.
    assert_eq!(
        b.get("5m:f|x=bin").unwrap().unwrap().value,
        [0, 255, 10, 13, 0]
    );
    b.clear(None).unwrap();
}

mod support;
use support::RedisServer;

#[test]
fn memory_keeps_the_contract() {
    contract(&MemoryStore::<Vec<u8>>::new());
}

#[test]
fn file_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&FileBackend::open(dir.path().join("contract.db")).unwrap());
}

#[test]
fn redis_keeps_the_contract() {
    let server = RedisServer::start();
    let backend = server.backend();
    contract(&backend);
}
