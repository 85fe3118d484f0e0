//! Signed values through the Rust API, on a real SQLite file and a real
//! `redis-server` (started on a free loopback port, killed at the end):
//! values planted without the key are never handed up, keys rotate.

use std::sync::Arc;
use std::time::Duration;

use cachu::backend::file::FileBackend;
use cachu::backend::redis::{lock_key, GetOrLock, RedisBackend, RedisOptions};
use cachu::backend::Backend;
use cachu::sign::{Signer, MARKER, TRAILER_LEN};

mod support;
use support::RedisServer;

fn signer(keys: &[&str]) -> Option<Arc<Signer>> {
    Some(Arc::new(Signer::new(keys).unwrap()))
}

/// A backend of `server` signing with the first of `keys`, verifying with each.
fn signed(server: &RedisServer, keys: &[&str]) -> RedisBackend {
    server.backend().with_signer(signer(keys))
}

/// 0.2.7's Redis layout: 8 bytes of created_at, then the payload.
fn plant(server: &RedisServer, key: &str, payload: &[u8]) {
    let mut raw = 1_700_000_000.5f64.to_ne_bytes().to_vec();
    raw.extend_from_slice(payload);
    let mut c = server.raw();
    redis::cmd("SETEX")
        .arg(key)
        .arg(300)
        .arg(raw)
        .query::<()>(&mut c)
        .unwrap();
}

fn stored(server: &RedisServer, key: &str) -> Vec<u8> {
    let mut c = server.raw();
    redis::cmd("GET").arg(key).query(&mut c).unwrap()
}

#[test]
fn redis_signs_and_strips() {
    let server = RedisServer::start();
    let b = signed(&server, &["k1"]);
    let key = "5m:v1:f|x=1";
    b.set(key, b"payload", 60.0).unwrap();
    let raw = stored(&server, key);
    // Header, payload, trailer: a reader of the old layout sees the payload
    // first (pickle ignores what follows its STOP opcode).
    assert_eq!(raw.len(), 8 + 7 + TRAILER_LEN);
    assert_eq!(&raw[8..15], b"payload");
    assert_eq!(&raw[raw.len() - MARKER.len()..], MARKER);
    assert_eq!(b.get(key).unwrap().unwrap().value, b"payload");
    // Unsigned readers see the trailer; another key's signer rejects it.
    let plain = RedisBackend::new(&server.url(), RedisOptions::default()).unwrap();
    assert_eq!(
        plain.get(key).unwrap().unwrap().value.len(),
        7 + TRAILER_LEN
    );
    assert_eq!(signed(&server, &["other"]).get(key).unwrap(), None);
}

#[test]
fn redis_planted_values_are_misses_that_lock() {
    let server = RedisServer::start();
    let b = signed(&server, &["k1"]);
    let forger = signed(&server, &["forged"]);
    for (key, planted) in [("5m:f|x=unsigned", None), ("5m:f|x=forged", Some(&forger))] {
        match planted {
            None => plant(&server, key, b"\x80\x04K\x01."),
            Some(f) => f.set(key, b"\x80\x04K\x01.", 60.0).unwrap(),
        }
        assert_eq!(b.get(key).unwrap(), None);
        // get_or_lock takes the lock as for a missing value; a second
        // caller finds it taken.
        let GetOrLock::Locked(token) = b.get_or_lock(key).unwrap() else {
            panic!("a planted value must not be a hit")
        };
        assert_eq!(b.get_or_lock(key).unwrap(), GetOrLock::Busy);
        // A waiter does not take the planted value for the owner's result.
        assert_eq!(b.wait_for(key, Duration::from_millis(50)).unwrap(), None);
        b.store_and_unlock(key, b"mine", 60.0, &token).unwrap();
        assert_eq!(b.get(key).unwrap().unwrap().value, b"mine");
        assert_eq!(
            b.wait_for(key, Duration::ZERO).unwrap().unwrap().value,
            b"mine"
        );
        let mut c = server.raw();
        let locked: bool = redis::cmd("EXISTS")
            .arg(lock_key(key))
            .query(&mut c)
            .unwrap();
        assert!(!locked);
    }
}

#[test]
fn redis_async_face_verifies_too() {
    let server = RedisServer::start();
    let b = Arc::new(signed(&server, &["k1"]));
    plant(&server, "5m:f|x=1", b"\x80\x04K\x01.");
    let b2 = Arc::clone(&b);
    let (get, lock, second) = cachu::runtime::handle().block_on(async move {
        let get = b2.get_async("5m:f|x=1").await.unwrap();
        let lock = b2.get_or_lock_async("5m:f|x=1").await.unwrap();
        let second = b2.get_or_lock_async("5m:f|x=1").await.unwrap();
        if let GetOrLock::Locked(t) = &lock {
            b2.store_and_unlock_async("5m:f|x=1", b"ok", 60.0, t)
                .await
                .unwrap();
        }
        (get, lock, second)
    });
    assert_eq!(get, None);
    assert!(matches!(lock, GetOrLock::Locked(_)), "{lock:?}");
    assert_eq!(second, GetOrLock::Busy);
    assert_eq!(b.get("5m:f|x=1").unwrap().unwrap().value, b"ok");
}

#[test]
fn redis_rotation_both_ways() {
    let server = RedisServer::start();
    let old = signed(&server, &["old"]);
    let rotated = signed(&server, &["new", "old"]);
    let only_new = signed(&server, &["new"]);
    old.set("5m:f|a", b"by old", 60.0).unwrap();
    // The old key still verifies after rotation ...
    assert_eq!(rotated.get("5m:f|a").unwrap().unwrap().value, b"by old");
    // ... and the new key signs.
    rotated.set("5m:f|b", b"by new", 60.0).unwrap();
    assert_eq!(only_new.get("5m:f|b").unwrap().unwrap().value, b"by new");
    assert_eq!(old.get("5m:f|b").unwrap(), None);
    assert_eq!(only_new.get("5m:f|a").unwrap(), None);
    // A value the old key signed that turns out unreadable is removed by
    // the rotated backend (compare-and-delete knows every stored form) ...
    let hit = rotated.get("5m:f|a").unwrap().unwrap();
    rotated.delete_if_unchanged("5m:f|a", &hit).unwrap();
    assert_eq!(old.get("5m:f|a").unwrap(), None);
    // ... but not once it was replaced.
    old.set("5m:f|c", b"first", 60.0).unwrap();
    let hit = rotated.get("5m:f|c").unwrap().unwrap();
    rotated.set("5m:f|c", b"second", 60.0).unwrap();
    rotated.delete_if_unchanged("5m:f|c", &hit).unwrap();
    assert_eq!(rotated.get("5m:f|c").unwrap().unwrap().value, b"second");
    let b2 = Arc::new(rotated);
    old.set("5m:f|d", b"first", 60.0).unwrap();
    let hit = b2.get("5m:f|d").unwrap().unwrap();
    let b3 = Arc::clone(&b2);
    cachu::runtime::handle()
        .block_on(async move { b3.delete_if_unchanged_async("5m:f|d", &hit).await })
        .unwrap();
    assert_eq!(b2.get("5m:f|d").unwrap(), None);
}

#[test]
fn file_signs_verifies_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signed.db");
    let open = |keys: &[&str]| FileBackend::open(&path).unwrap().with_signer(signer(keys));
    let b = open(&["k1"]);
    b.set("5m:f|x=1", b"payload", 60.0).unwrap();
    let raw: Vec<u8> = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT value FROM cache WHERE key = '5m:f|x=1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(&raw[..7], b"payload");
    assert_eq!(raw.len(), 7 + TRAILER_LEN);
    assert_eq!(b.get("5m:f|x=1").unwrap().unwrap().value, b"payload");

    // Planted rows: unsigned, and signed with another key.
    let plain = FileBackend::open(&path).unwrap();
    plain.set("5m:f|x=2", b"\x80\x04K\x01.", 60.0).unwrap();
    open(&["forged"])
        .set("5m:f|x=3", b"\x80\x04K\x01.", 60.0)
        .unwrap();
    assert_eq!(b.get("5m:f|x=2").unwrap(), None);
    assert_eq!(b.get("5m:f|x=3").unwrap(), None);
    // A signed row copied under another key does not verify there.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT OR REPLACE INTO cache SELECT '5m:f|x=4', value, created_at, expires_at \
             FROM cache WHERE key = '5m:f|x=1'",
            [],
        )
        .unwrap();
    assert_eq!(b.get("5m:f|x=4").unwrap(), None);

    // Rotation both ways.
    let rotated = open(&["k2", "k1"]);
    assert_eq!(rotated.get("5m:f|x=1").unwrap().unwrap().value, b"payload");
    rotated.set("5m:f|x=5", b"new", 60.0).unwrap();
    assert_eq!(
        open(&["k2"]).get("5m:f|x=5").unwrap().unwrap().value,
        b"new"
    );
    assert_eq!(b.get("5m:f|x=5").unwrap(), None);
}
