//! Integration tests of the Redis backend against a real `redis-server`,
//! which each test starts on a free loopback port and kills at the end
//! (`tests/ensure_redis` installs the binary).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cachu::backend::redis::{lock_key, GetOrLock, RedisBackend, RedisOptions};
use cachu::backend::Backend;
use cachu::Error;

mod support;
use support::{free_port, RedisServer as Server};

fn assert_unavailable<T: std::fmt::Debug>(r: cachu::Result<T>) {
    match r {
        Err(Error::Unavailable(_)) => {}
        other => panic!("expected Error::Unavailable, got {other:?}"),
    }
}

#[test]
fn round_trip_and_exact_layout() {
    let server = Server::start();
    let b = server.backend();
    let key = "5m:v1:get_user|user_id=123";
    let before = cachu::clock::now();
    b.set(key, b"\x80\x04payload", 300.0).unwrap();
    let after = cachu::clock::now();

    let hit = b.get(key).unwrap().unwrap();
    assert_eq!(hit.value, b"\x80\x04payload");
    assert!(before <= hit.created_at && hit.created_at <= after);

    let mut raw = server.raw();
    let bytes: Vec<u8> = redis::cmd("GET").arg(key).query(&mut raw).unwrap();
    assert_eq!(bytes.len(), 8 + 9);
    let created = f64::from_ne_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(created, hit.created_at);
    assert_eq!(&bytes[8..], b"\x80\x04payload");
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut raw).unwrap();
    assert!((298..=300).contains(&ttl), "ttl {ttl}");

    // A value written by another client in the same layout reads back.
    let mut foreign = 42.5f64.to_ne_bytes().to_vec();
    foreign.extend_from_slice(b"xyz");
    redis::cmd("SETEX")
        .arg("other")
        .arg(60)
        .arg(&foreign)
        .query::<()>(&mut raw)
        .unwrap();
    let hit = b.get("other").unwrap().unwrap();
    assert_eq!((hit.value.as_slice(), hit.created_at), (&b"xyz"[..], 42.5));

    // Empty payloads and fractional TTLs.
    b.set("empty", b"", 0.3).unwrap();
    assert_eq!(b.get("empty").unwrap().unwrap().value, b"");
    let ttl: i64 = redis::cmd("TTL").arg("empty").query(&mut raw).unwrap();
    assert_eq!(ttl, 1);
    b.set("frac", b"x", 2.5).unwrap();
    let ttl: i64 = redis::cmd("TTL").arg("frac").query(&mut raw).unwrap();
    assert!((2..=3).contains(&ttl), "ttl {ttl}");

    assert_eq!(b.get("missing").unwrap(), None);
    b.ping().unwrap();
}

#[test]
fn ttl_zero_or_less_stores_nothing_and_removes() {
    let server = Server::start();
    let b = server.backend();
    b.set("k", b"v", 60.0).unwrap();
    b.set("k", b"v2", 0.0).unwrap();
    assert_eq!(b.get("k").unwrap(), None);
    b.set("k", b"v3", -1.0).unwrap();
    assert_eq!(b.get("k").unwrap(), None);
    assert_eq!(b.count(None).unwrap(), 0);
}

#[test]
fn values_expire() {
    let server = Server::start();
    let b = server.backend();
    b.set("short", b"v", 1.0).unwrap();
    assert!(b.get("short").unwrap().is_some());
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(b.get("short").unwrap(), None);
}

#[test]
fn delete() {
    let server = Server::start();
    let b = server.backend();
    b.set("k", b"v", 60.0).unwrap();
    assert!(b.delete("k").unwrap());
    assert!(!b.delete("k").unwrap());
    assert_eq!(b.get("k").unwrap(), None);
}

#[test]
fn short_value_is_a_miss_and_deleted() {
    let server = Server::start();
    let b = server.backend();
    let mut raw = server.raw();
    redis::cmd("SET")
        .arg("5m:f|x=1")
        .arg(b"abc".as_slice())
        .query::<()>(&mut raw)
        .unwrap();
    assert_eq!(b.get("5m:f|x=1").unwrap(), None);
    let exists: i64 = redis::cmd("EXISTS")
        .arg("5m:f|x=1")
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0);

    // get_or_lock also treats it as missing (and takes the lock).
    redis::cmd("SET")
        .arg("5m:f|x=2")
        .arg(b"1234567".as_slice())
        .query::<()>(&mut raw)
        .unwrap();
    assert!(matches!(
        b.get_or_lock("5m:f|x=2").unwrap(),
        GetOrLock::Locked(_)
    ));
    let exists: i64 = redis::cmd("EXISTS")
        .arg("5m:f|x=2")
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn keys_count_clear_with_patterns() {
    let server = Server::start();
    let b = server.backend();
    for i in 0..5 {
        b.set(&format!("5m:get_user||users||user_id={i}"), b"u", 60.0)
            .unwrap();
        b.set(&format!("5m:get_item|item_id={i}"), b"i", 60.0)
            .unwrap();
        b.set(&format!("1h:get_user||admins||user_id={i}"), b"a", 60.0)
            .unwrap();
    }
    assert_eq!(b.count(None).unwrap(), 15);
    assert_eq!(b.count(Some("*|users|*")).unwrap(), 5);
    assert_eq!(b.count(Some("5m:*")).unwrap(), 10);
    assert_eq!(b.count(Some("*:get_user|*")).unwrap(), 10);
    assert_eq!(b.count(Some("nothing*")).unwrap(), 0);
    let mut keys = b.keys(Some("*|users|*")).unwrap();
    keys.sort();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("5m:get_user||users||user_id={i}"))
        .collect();
    assert_eq!(keys, expected);
    assert_eq!(b.keys(None).unwrap().len(), 15);
    assert_eq!(b.keys(Some("5m:get_item|item_id=[0-2]")).unwrap().len(), 3);
    assert_eq!(b.keys(Some("5m:get_item|item_id=?")).unwrap().len(), 5);

    assert_eq!(b.clear(Some("*|users|*")).unwrap(), 5);
    assert_eq!(b.count(Some("*|users|*")).unwrap(), 0);
    assert_eq!(b.count(None).unwrap(), 10);
    assert_eq!(b.clear(Some("*|users|*")).unwrap(), 0);
    assert_eq!(b.clear(Some("1h:*")).unwrap(), 5);
    assert_eq!(b.clear(None).unwrap(), 5);
    assert_eq!(b.count(None).unwrap(), 0);
    assert!(b.keys(None).unwrap().is_empty());
}

#[test]
fn clear_of_many_keys_in_batches() {
    let server = Server::start();
    let b = server.backend();
    let mut raw = server.raw();
    // Fill 20k keys quickly with a pipeline in the cachu layout.
    let mut value = 1.0f64.to_ne_bytes().to_vec();
    value.extend_from_slice(b"payload");
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SETEX")
                .arg(format!("5m:f|x={}", chunk * 1000 + i))
                .arg(300)
                .arg(&value)
                .ignore();
        }
        pipe.query::<()>(&mut raw).unwrap();
    }
    b.set("1h:keep|x=1", b"keep", 60.0).unwrap();
    assert_eq!(b.count(Some("5m:*")).unwrap(), 20_000);
    assert_eq!(b.keys(Some("5m:*")).unwrap().len(), 20_000);

    let before = redis_stat(&mut raw, "cmdstat_unlink");
    let start = Instant::now();
    assert_eq!(b.clear(Some("5m:*")).unwrap(), 20_000);
    let took = start.elapsed();
    let after = redis_stat(&mut raw, "cmdstat_unlink");
    // Deleted in batches of at most 500 keys: at least 40 UNLINK calls.
    assert!(after - before >= 40, "UNLINK calls: {}", after - before);
    assert!(took < Duration::from_secs(30), "clear took {took:?}");
    assert_eq!(b.count(None).unwrap(), 1);
    assert!(b.get("1h:keep|x=1").unwrap().is_some());
}

/// The `calls=` count of one command in `INFO commandstats`.
fn redis_stat(raw: &mut redis::Connection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    info.lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn lock_semantics() {
    let server = Server::start();
    let b = server.backend_with(RedisOptions {
        lock_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    });
    let other = server.backend();
    let mut raw = server.raw();
    let key = "5m:f|x=1";

    let token = match b.get_or_lock(key).unwrap() {
        GetOrLock::Locked(t) => t,
        other => panic!("expected the lock, got {other:?}"),
    };
    let held: String = redis::cmd("GET")
        .arg(lock_key(key))
        .query(&mut raw)
        .unwrap();
    assert_eq!(held, token.as_str());
    assert_eq!(lock_key(key), "lock:5m:f|x=1");
    let ttl: i64 = redis::cmd("TTL")
        .arg(lock_key(key))
        .query(&mut raw)
        .unwrap();
    assert_eq!(ttl, 1);

    // A second locker is told to wait.
    assert_eq!(other.get_or_lock(key).unwrap(), GetOrLock::Busy);

    // Someone else's token does not release the lock.
    let stranger = match other.get_or_lock("5m:f|x=unrelated").unwrap() {
        GetOrLock::Locked(t) => t,
        o => panic!("{o:?}"),
    };
    other.unlock(key, &stranger).unwrap();
    other
        .store_and_unlock(key, b"intruder", 0.0, &stranger)
        .unwrap();
    let still: Option<String> = redis::cmd("GET")
        .arg(lock_key(key))
        .query(&mut raw)
        .unwrap();
    assert_eq!(still.as_deref(), Some(token.as_str()));

    // The owner stores and releases in one call.
    b.store_and_unlock(key, b"value", 60.0, &token).unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(lock_key(key))
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0);
    match other.get_or_lock(key).unwrap() {
        GetOrLock::Hit(hit) => assert_eq!(hit.value, b"value"),
        o => panic!("expected a hit, got {o:?}"),
    }
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut raw).unwrap();
    assert!((59..=60).contains(&ttl));

    // unlock after a failed computation lets the next caller in.
    let key2 = "5m:f|x=2";
    let t2 = match b.get_or_lock(key2).unwrap() {
        GetOrLock::Locked(t) => t,
        o => panic!("{o:?}"),
    };
    b.unlock(key2, &t2).unwrap();
    assert!(matches!(
        other.get_or_lock(key2).unwrap(),
        GetOrLock::Locked(_)
    ));

    // store_and_unlock with ttl <= 0 stores nothing but still releases.
    let key3 = "5m:f|x=3";
    let t3 = match b.get_or_lock(key3).unwrap() {
        GetOrLock::Locked(t) => t,
        o => panic!("{o:?}"),
    };
    b.store_and_unlock(key3, b"nothing", 0.0, &t3).unwrap();
    assert_eq!(b.get(key3).unwrap(), None);
    assert!(matches!(b.get_or_lock(key3).unwrap(), GetOrLock::Locked(_)));

    // A lock nobody releases expires after lock_timeout (1 s).
    let key4 = "5m:f|x=4";
    assert!(matches!(b.get_or_lock(key4).unwrap(), GetOrLock::Locked(_)));
    assert_eq!(other.get_or_lock(key4).unwrap(), GetOrLock::Busy);
    thread::sleep(Duration::from_millis(1200));
    assert!(matches!(
        other.get_or_lock(key4).unwrap(),
        GetOrLock::Locked(_)
    ));
}

#[test]
fn wait_for_value_lock_release_and_timeout() {
    let server = Server::start();
    let b = Arc::new(server.backend());
    let key = "5m:f|x=1";

    // The value appears while we wait.
    let token = match b.get_or_lock(key).unwrap() {
        GetOrLock::Locked(t) => t,
        o => panic!("{o:?}"),
    };
    let writer = {
        let b = Arc::clone(&b);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            b.store_and_unlock(key, b"computed", 60.0, &token).unwrap();
        })
    };
    let start = Instant::now();
    let hit = b.wait_for(key, Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(hit.value, b"computed");
    assert!(start.elapsed() < Duration::from_secs(2));
    writer.join().unwrap();

    // The lock goes away without a value: None, promptly.
    let key2 = "5m:f|x=2";
    let t2 = match b.get_or_lock(key2).unwrap() {
        GetOrLock::Locked(t) => t,
        o => panic!("{o:?}"),
    };
    let releaser = {
        let b = Arc::clone(&b);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            b.unlock(key2, &t2).unwrap();
        })
    };
    let start = Instant::now();
    assert_eq!(b.wait_for(key2, Duration::from_secs(5)).unwrap(), None);
    assert!(start.elapsed() < Duration::from_secs(2));
    releaser.join().unwrap();

    // Nobody stores or releases: None after the timeout.
    let key3 = "5m:f|x=3";
    assert!(matches!(b.get_or_lock(key3).unwrap(), GetOrLock::Locked(_)));
    let start = Instant::now();
    assert_eq!(b.wait_for(key3, Duration::from_millis(300)).unwrap(), None);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // Nothing locked and nothing stored: None at once.
    let start = Instant::now();
    assert_eq!(
        b.wait_for("5m:f|x=4", Duration::from_secs(5)).unwrap(),
        None
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn dogpile_computes_once_across_threads() {
    let server = Server::start();
    let b = Arc::new(server.backend());
    let computed = Arc::new(AtomicUsize::new(0));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (b, computed, barrier) = (b.clone(), computed.clone(), barrier.clone());
            thread::spawn(move || {
                let key = "5m:slow|x=1";
                barrier.wait();
                match b.get_or_lock(key).unwrap() {
                    GetOrLock::Hit(hit) => hit.value,
                    GetOrLock::Locked(token) => {
                        computed.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(200));
                        b.store_and_unlock(key, b"result", 60.0, &token).unwrap();
                        b"result".to_vec()
                    }
                    GetOrLock::Busy => {
                        b.wait_for(key, Duration::from_secs(5))
                            .unwrap()
                            .expect("value after waiting")
                            .value
                    }
                }
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), b"result");
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
}

#[test]
fn connections_are_pooled_across_threads() {
    let server = Server::start();
    let b = Arc::new(server.backend());
    let mut raw = server.raw();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let b = b.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    let key = format!("5m:f|t={t} i={i}");
                    b.set(&key, b"v", 60.0).unwrap();
                    assert!(b.get(&key).unwrap().is_some());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut raw).unwrap();
    let accepted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // 4 threads, 1600 operations: a handful of connections (plus the
    // server's own start-up probe and this raw one).
    assert!(accepted <= 10, "connections made: {accepted}");
    b.close();
    // Usable again after close.
    assert_eq!(b.count(None).unwrap(), 800);
}

#[test]
fn unreachable_server_is_unavailable_quickly() {
    let port = free_port();
    let options = RedisOptions {
        socket_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    };
    let b = RedisBackend::new(&format!("redis://127.0.0.1:{port}/0"), options).unwrap();
    let start = Instant::now();
    assert_unavailable(b.get("k"));
    assert_unavailable(b.set("k", b"v", 60.0));
    assert_unavailable(b.delete("k"));
    assert_unavailable(b.clear(None));
    assert_unavailable(b.keys(None));
    assert_unavailable(b.count(None));
    assert_unavailable(b.get_or_lock("k"));
    assert_unavailable(b.ping());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    match b.get("k") {
        Err(e) => assert!(e.to_string().contains(&port.to_string()), "{e}"),
        Ok(v) => panic!("{v:?}"),
    }

    // A unix socket nobody listens on.
    let b = RedisBackend::new(
        "unix:///nonexistent/cachu-test.sock?db=0",
        RedisOptions::default(),
    )
    .unwrap();
    assert_unavailable(b.get("k"));
}

#[test]
fn silent_server_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(2) {
            held.push(conn);
        }
        thread::sleep(Duration::from_secs(3));
    });
    let options = RedisOptions {
        socket_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    // Db 1 so that connecting has to send SELECT and wait for its reply.
    let b = RedisBackend::new(&format!("redis://127.0.0.1:{port}/1"), options).unwrap();
    let start = Instant::now();
    assert_unavailable(b.get("k"));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(acceptor);
}

#[test]
fn server_restart_mid_test() {
    let mut server = Server::start();
    let b = server.backend_with(RedisOptions {
        socket_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    });
    b.set("k", b"v1", 60.0).unwrap();
    assert_eq!(b.get("k").unwrap().unwrap().value, b"v1");
    assert!(matches!(b.get_or_lock("m").unwrap(), GetOrLock::Locked(_)));

    server.stop();
    let start = Instant::now();
    assert_unavailable(b.get("k"));
    assert_unavailable(b.set("k", b"v2", 60.0));
    assert_unavailable(b.ping());
    assert!(start.elapsed() < Duration::from_secs(10));

    server.launch();
    // Same backend object, no recreation: works again (the data is gone,
    // the server keeps nothing on disk).
    assert_eq!(b.get("k").unwrap(), None);
    b.set("k", b"v3", 60.0).unwrap();
    assert_eq!(b.get("k").unwrap().unwrap().value, b"v3");
    // Scripts are loaded again on the new server.
    assert!(matches!(b.get_or_lock("m").unwrap(), GetOrLock::Locked(_)));

    // A restart while connections sit idle in the pool: the first call
    // after it still succeeds (the dead idle connection is replaced).
    server.stop();
    server.launch();
    b.set("k", b"v4", 60.0).unwrap();
    assert_eq!(b.get("k").unwrap().unwrap().value, b"v4");
}

#[test]
fn selects_the_database_and_authenticates() {
    let server = Server::start();
    let mut raw = server.raw();
    let b = RedisBackend::new(
        &format!("redis://127.0.0.1:{}/3", server.port),
        RedisOptions::default(),
    )
    .unwrap();
    b.set("k", b"v", 60.0).unwrap();
    let in_db0: i64 = redis::cmd("EXISTS").arg("k").query(&mut raw).unwrap();
    assert_eq!(in_db0, 0);
    redis::cmd("SELECT").arg(3).query::<()>(&mut raw).unwrap();
    let in_db3: i64 = redis::cmd("EXISTS").arg("k").query(&mut raw).unwrap();
    assert_eq!(in_db3, 1);

    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query::<()>(&mut raw)
        .unwrap();
    let good = RedisBackend::new(
        &format!("redis://:s3cret@127.0.0.1:{}/0", server.port),
        RedisOptions::default(),
    )
    .unwrap();
    good.ping().unwrap();
    let bad = RedisBackend::new(
        &format!("redis://:wrong@127.0.0.1:{}/0", server.port),
        RedisOptions::default(),
    )
    .unwrap();
    match bad.ping() {
        Err(Error::Unavailable(msg)) => assert!(!msg.contains("wrong"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_urls_are_rejected_without_connecting() {
    for url in ["http://localhost:6379", "not a url", "redis://localhost/x"] {
        assert!(
            RedisBackend::new(url, RedisOptions::default()).is_err(),
            "{url}"
        );
    }
    // Nothing listens here, yet construction succeeds: it does not connect.
    let port = free_port();
    assert!(RedisBackend::new(
        &format!("redis://127.0.0.1:{port}/0"),
        RedisOptions::default()
    )
    .is_ok());
}

#[cfg(unix)]
#[test]
fn forked_child_reconnects_and_leaves_the_parent_alone() {
    let server = Server::start();
    let b = server.backend();
    let mut raw = server.raw();
    b.set("parent", b"p", 60.0).unwrap();
    let accepted_before = connections_received(&mut raw);

    // SAFETY: the child only uses the backend and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = (|| {
            // The inherited idle connection must not be used: a fresh one is
            // made, and the parent's session is not disturbed.
            b.set("child", b"c", 60.0).ok()?;
            (b.get("parent").ok()??.value == b"p").then_some(())?;
            for i in 0..50 {
                b.set(&format!("child{i}"), b"c", 60.0).ok()?;
            }
            Some(())
        })()
        .is_some();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // The parent keeps using its own connection meanwhile.
    for i in 0..50 {
        b.set(&format!("parent{i}"), b"p", 60.0).unwrap();
        assert_eq!(b.get("parent").unwrap().unwrap().value, b"p");
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status}"
    );
    assert_eq!(b.get("child").unwrap().unwrap().value, b"c");
    assert_eq!(b.count(Some("child*")).unwrap(), 51);
    // The child connected afresh (at least one new connection beyond
    // whatever the parent made).
    assert!(connections_received(&mut raw) > accepted_before);
    b.ping().unwrap();
}

fn connections_received(raw: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(raw).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `rediss://` against a TLS-only server with a private CA and client
/// certificates, made with the `openssl` command. Skipped (with a note) when
/// `openssl` is missing or `redis-server` was built without TLS.
#[test]
fn tls_urls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| -> bool {
        Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=cachu-test-ca",
    ]) && ["server", "client"].iter().all(|who| {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]) && openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.crt"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ])
    });
    // A missing openssl fails the test (as a missing redis-server does).
    assert!(
        made,
        "cannot make certificates with openssl (is it on PATH?)"
    );
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes"])
        .arg("--dir")
        .arg(d)
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found on PATH: run tests/ensure_redis");
    let path = |name: &str| d.join(name).display().to_string();
    let client_certs = format!(
        "ssl_certfile={}&ssl_keyfile={}",
        path("client.crt"),
        path("client.key")
    );
    let url = |host: &str, query: &str| format!("rediss://{host}:{port}/0?{query}");
    let trusted = url(
        "localhost",
        &format!("ssl_ca_certs={}&{client_certs}", path("ca.crt")),
    );
    let b = RedisBackend::new(&trusted, RedisOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.ping().is_err() {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("tls_urls skipped: redis-server did not start with TLS");
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // Killed however the checks below end.
    let _server = KillOnDrop(child);
    {
        b.set("k", b"secure", 60.0).unwrap();
        assert_eq!(b.get("k").unwrap().unwrap().value, b"secure");
        // The IP address is in the certificate too.
        let by_ip = url(
            "127.0.0.1",
            &format!("ssl_ca_certs={}&{client_certs}", path("ca.crt")),
        );
        let b2 = RedisBackend::new(&by_ip, RedisOptions::default()).unwrap();
        assert_eq!(b2.get("k").unwrap().unwrap().value, b"secure");
        // The private CA is not among the system's roots.
        let untrusted =
            RedisBackend::new(&url("localhost", &client_certs), RedisOptions::default()).unwrap();
        assert_unavailable(untrusted.get("k"));
        // ssl_cert_reqs=none skips verification.
        let unverified = RedisBackend::new(
            &url("localhost", &format!("ssl_cert_reqs=none&{client_certs}")),
            RedisOptions::default(),
        )
        .unwrap();
        assert_eq!(unverified.get("k").unwrap().unwrap().value, b"secure");
        // The server demands a client certificate.
        let anonymous = RedisBackend::new(
            &url("localhost", &format!("ssl_ca_certs={}", path("ca.crt"))),
            RedisOptions::default(),
        )
        .unwrap();
        assert_unavailable(anonymous.get("k"));
        // Plain TCP to a TLS port fails (within the timeout), without panicking.
        let plain = RedisBackend::new(
            &format!("redis://127.0.0.1:{port}/0"),
            RedisOptions {
                socket_timeout: Duration::from_millis(500),
                ..RedisOptions::default()
            },
        )
        .unwrap();
        assert_unavailable(plain.get("k"));
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn try_lock_wait_for_newer_and_delete_if_unchanged() {
    let server = Server::start();
    let b = Arc::new(server.backend());
    let key = "5m:g|x=1";

    // A value is there: try_lock still takes the lock (to recompute it).
    b.set(key, b"old", 60.0).unwrap();
    let old = b.get(key).unwrap().unwrap();
    let token = b.try_lock(key).unwrap().expect("the lock is free");
    assert!(b.try_lock(key).unwrap().is_none(), "held by now");

    // A waiter for something newer than `old` waits past it until the
    // holder stores, and gets the new value.
    let waiter = {
        let b = Arc::clone(&b);
        let after = old.created_at;
        thread::spawn(move || b.wait_for_newer(key, Some(after), Duration::from_secs(5)))
    };
    thread::sleep(Duration::from_millis(100));
    b.store_and_unlock(key, b"new", 60.0, &token).unwrap();
    let got = waiter.join().unwrap().unwrap().expect("the newer value");
    assert_eq!(got.value, b"new");

    // Removing an unreadable value only removes that exact value.
    b.delete_if_unchanged(key, &old).unwrap();
    assert_eq!(
        b.get(key).unwrap().unwrap().value,
        b"new",
        "a newer value is kept"
    );
    let current = b.get(key).unwrap().unwrap();
    b.delete_if_unchanged(key, &current).unwrap();
    assert!(b.get(key).unwrap().is_none());

    // With the lock gone and only an old value, waiting for a newer one ends.
    b.set(key, b"older", 60.0).unwrap();
    let older = b.get(key).unwrap().unwrap();
    assert!(b
        .wait_for_newer(key, Some(older.created_at), Duration::from_secs(5))
        .unwrap()
        .is_none());
}

#[test]
fn async_face_matches_the_sync_one() {
    let server = Server::start();
    let b = Arc::new(server.backend());
    let key = "5m:h|x=1";
    let rt = cachu::runtime::handle();
    let b2 = Arc::clone(&b);
    let (first, hit) = rt.block_on(async move {
        let first = b2.get_or_lock_async(key).await.unwrap();
        let GetOrLock::Locked(token) = &first else {
            panic!("expected the lock, got {first:?}")
        };
        b2.store_and_unlock_async(key, b"v", 60.0, token)
            .await
            .unwrap();
        (first, b2.get_async(key).await.unwrap())
    });
    assert!(matches!(first, GetOrLock::Locked(_)));
    assert_eq!(hit.unwrap().value, b"v");
    // The sync face reads what the async one wrote, lock released.
    assert_eq!(b.get(key).unwrap().unwrap().value, b"v");
    assert!(b.try_lock(key).unwrap().is_some());
}

/// What is stored under a key before a face reads it.
#[derive(Debug, Clone, Copy)]
enum Stored {
    Nothing,
    Good,
    Short,
    Empty,
    List,
    Foreign,
}

fn put(raw: &mut redis::Connection, b: &RedisBackend, key: &str, what: Stored) {
    redis::cmd("DEL").arg(key).query::<()>(raw).unwrap();
    match what {
        Stored::Nothing => {}
        Stored::Good => b.set(key, b"payload", 60.0).unwrap(),
        Stored::Short => redis::cmd("SET").arg(key).arg("abc").query(raw).unwrap(),
        Stored::Empty => redis::cmd("SET").arg(key).arg("").query(raw).unwrap(),
        Stored::List => redis::cmd("RPUSH").arg(key).arg("x").query(raw).unwrap(),
        Stored::Foreign => {
            let mut v = 7.5f64.to_ne_bytes().to_vec();
            v.extend_from_slice(b"theirs");
            redis::cmd("SET").arg(key).arg(v).query(raw).unwrap()
        }
    }
}

/// The type of what is left under `key` (`none` when nothing is).
fn left(raw: &mut redis::Connection, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query(raw).unwrap()
}

#[test]
fn both_faces_give_the_same_results_on_the_same_inputs() {
    let server = Server::start();
    let b = Arc::new(server.backend());
    let mut raw = server.raw();
    let rt = cachu::runtime::handle();
    let key = "5m:faces|x=1";
    let all = [
        Stored::Nothing,
        Stored::Good,
        Stored::Short,
        Stored::Empty,
        Stored::List,
        Stored::Foreign,
    ];
    for what in all {
        put(&mut raw, &b, key, what);
        let sync = (b.get(key).unwrap().map(|h| h.value), left(&mut raw, key));
        put(&mut raw, &b, key, what);
        let b2 = Arc::clone(&b);
        let found = rt.block_on(async move { b2.get_async(key).await.unwrap() });
        let r#async = (found.map(|h| h.value), left(&mut raw, key));
        assert_eq!(sync, r#async, "get of {what:?}");

        put(&mut raw, &b, key, what);
        let sync = (b.delete(key).unwrap(), left(&mut raw, key));
        put(&mut raw, &b, key, what);
        let b2 = Arc::clone(&b);
        let deleted = rt.block_on(async move { b2.delete_async(key).await.unwrap() });
        assert_eq!(sync, (deleted, left(&mut raw, key)), "delete of {what:?}");
    }
    // A value cachu did not write is a miss and removed, on both faces.
    put(&mut raw, &b, key, Stored::Short);
    let b2 = Arc::clone(&b);
    assert!(rt
        .block_on(async move { b2.get_async(key).await.unwrap() })
        .is_none());
    assert_eq!(left(&mut raw, key), "none");

    // keys, count and clear over the same keys (a lock key included).
    let fill = |raw: &mut redis::Connection| {
        for i in 0..1200 {
            b.set(&format!("5m:many|i={i}"), b"v", 60.0).unwrap();
        }
        redis::cmd("SET")
            .arg("lock:5m:many|i=0")
            .arg("t")
            .query::<()>(raw)
            .unwrap();
    };
    fill(&mut raw);
    let mut sync_keys = b.keys(Some("5m:many|i=1*")).unwrap();
    let sync_count = b.count(None).unwrap();
    let sync_cleared = b.clear(Some("*many*")).unwrap();
    fill(&mut raw);
    let b2 = Arc::clone(&b);
    let (mut keys, count, cleared) = rt.block_on(async move {
        (
            b2.keys_async(Some("5m:many|i=1*")).await.unwrap(),
            b2.count_async(None).await.unwrap(),
            b2.clear_async(Some("*many*")).await.unwrap(),
        )
    });
    sync_keys.sort();
    keys.sort();
    assert_eq!(sync_keys, keys);
    assert_eq!((sync_count, sync_cleared), (count, cleared));
    assert_eq!((count, cleared), (1201, 1201));
    assert_eq!(b.count(None).unwrap(), 0);
}
