//! Integration tests of the SQLite file backend through the public API,
//! including several processes sharing one database file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use cachu::backend::file::FileBackend;
use cachu::backend::Backend;

const CHILD_ENV: &str = "CACHU_FILE_BACKEND_CHILD_DB";
const CHILD_ID_ENV: &str = "CACHU_FILE_BACKEND_CHILD_ID";
const CHILD_WRITES: usize = 200;

fn integrity(path: &Path) -> String {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The body of one child process of `processes_share_one_file`; does
/// nothing when run as an ordinary test.
#[test]
fn child_worker() {
    let (Ok(db), Ok(id)) = (std::env::var(CHILD_ENV), std::env::var(CHILD_ID_ENV)) else {
        return;
    };
    let backend = FileBackend::open(db).unwrap();
    for i in 0..CHILD_WRITES {
        let key = format!("5m:v1:proc|p{id}|{i}");
        backend.set(&key, key.as_bytes(), 60.0).unwrap();
        assert_eq!(backend.get(&key).unwrap().unwrap().value, key.as_bytes());
        if i % 10 == 0 {
            backend.count(Some("5m:*")).unwrap();
            backend
                .delete(&format!("5m:v1:proc|p{id}|{}", i / 2))
                .unwrap();
            backend
                .set(&format!("5m:v1:proc|p{id}|{}", i / 2), b"again", 60.0)
                .unwrap();
        }
        if i % 50 == 49 {
            backend.clear(Some("5m:v1:scratch|*")).unwrap();
        }
        backend
            .set(&format!("5m:v1:scratch|{id}|{i}"), b"s", 60.0)
            .unwrap();
    }
}

#[test]
fn processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &db)
                .env(CHILD_ID_ENV, id.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // This process works on the same file meanwhile.
    let backend = FileBackend::open(&db).unwrap();
    for i in 0..CHILD_WRITES {
        backend
            .set(&format!("5m:v1:parent|{i}"), b"p", 60.0)
            .unwrap();
        backend.count(None).unwrap();
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for id in 0..4 {
        assert_eq!(
            backend.count(Some(&format!("5m:v1:proc|p{id}|*"))).unwrap(),
            CHILD_WRITES as u64
        );
    }
    assert_eq!(
        backend.count(Some("5m:v1:parent|*")).unwrap(),
        CHILD_WRITES as u64
    );
    assert_eq!(integrity(&db), "ok");
}

#[test]
fn trait_object_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(FileBackend::open(dir.path().join("dyn.db")).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let b = Arc::clone(&backend);
            std::thread::spawn(move || {
                for i in 0..100 {
                    b.set(&format!("k{t}:{i}"), &[t as u8; 16], 60.0).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(backend.count(None).unwrap(), 400);
    assert_eq!(backend.clear(Some("k1:*")).unwrap(), 100);
    assert_eq!(backend.keys(Some("k1:*")).unwrap().len(), 0);
    backend.close();
    assert_eq!(backend.count(None).unwrap(), 300);
}

/// Rough timings; run with
/// `cargo test --release --test rust_file_backend -- --ignored --nocapture`.
#[test]
#[ignore]
fn timings() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::open(dir.path().join("bench.db")).unwrap();
    let value = vec![0x80u8; 100];
    let n = 20_000;
    let start = Instant::now();
    for i in 0..n {
        backend
            .set(&format!("5m:v1:bench|{}", i % 1000), &value, 300.0)
            .unwrap();
    }
    let set = start.elapsed() / n;
    let start = Instant::now();
    for i in 0..n {
        assert!(backend
            .get(&format!("5m:v1:bench|{}", i % 1000))
            .unwrap()
            .is_some());
    }
    let get = start.elapsed() / n;
    let start = Instant::now();
    for i in 0..n {
        assert!(backend.get(&format!("5m:v1:miss|{i}")).unwrap().is_none());
    }
    let miss = start.elapsed() / n;
    println!("set {set:?}  get {get:?}  miss {miss:?}");
}
