//! The Rust face of the Redis backend on a real 3-master Redis Cluster
//! (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster
//! create`), started on free loopback ports and killed at the end.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cachu::backend::redis::{cluster_lock_key, GetOrLock, RedisBackend, RedisOptions};
use cachu::backend::Backend;

mod support;
use support::{cluster_port, RedisServer};

struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes = (0..3)
            .map(|_| RedisServer::start_with(cluster_port(), &["--cluster-enabled", "yes"]))
            .collect();
        let cluster = Cluster { nodes };
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports().map(|p| format!("127.0.0.1:{p}")))
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli not found on PATH");
        assert!(status.success(), "redis-cli --cluster create failed");
        for port in cluster.ports() {
            cluster.wait(port, |c| {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(c)
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        cluster
    }

    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().map(|node| node.port)
    }

    fn wait(&self, port: u16, ready: impl Fn(&mut redis::Connection) -> bool) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = client.get_connection() {
                if ready(&mut c) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "node {port} not ready");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn backend(&self) -> RedisBackend {
        let seeds: Vec<String> = self.ports().map(|p| format!("127.0.0.1:{p}")).collect();
        RedisBackend::cluster(&seeds[..1], RedisOptions::default()).unwrap()
    }
}

#[test]
fn cluster_backend_end_to_end() {
    let cluster = Cluster::start();
    let backend = cluster.backend();
    assert!(backend.is_cluster());
    assert!(backend.target().starts_with("redis+cluster://127.0.0.1:"));

    // Keys with and without hash tags, braces of every kind: get-or-lock
    // and store-and-unlock are single scripts in one slot each.
    let keys: Vec<String> = (0..200)
        .map(|i| {
            let braces = ["", "{}", "{a}", "}{", "{", "}"][i % 6];
            format!("5m:f|d={{'k': {i}}}{braces}")
        })
        .collect();
    for key in &keys {
        let GetOrLock::Locked(token) = backend.get_or_lock(key).unwrap() else {
            panic!("{key}: expected the lock");
        };
        assert_eq!(backend.get_or_lock(key).unwrap(), GetOrLock::Busy);
        assert!(backend.try_lock(key).unwrap().is_none());
        backend.store_and_unlock(key, b"v", 300.0, &token).unwrap();
        match backend.get_or_lock(key).unwrap() {
            GetOrLock::Hit(hit) => assert_eq!(hit.value, b"v"),
            other => panic!("{key}: {other:?}"),
        }
        assert_eq!(backend.lock_key_of(key), cluster_lock_key(key));
    }

    // Keys spread over the three masters; count and clear walk them all.
    assert_eq!(backend.count(None).unwrap(), keys.len() as u64);
    assert_eq!(backend.count(Some("*{a}")).unwrap(), 33);
    let mut per_node = Vec::new();
    for port in cluster.ports() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let n: u64 = redis::cmd("DBSIZE")
            .query(&mut client.get_connection().unwrap())
            .unwrap();
        per_node.push(n);
    }
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    assert_eq!(backend.clear(None).unwrap(), keys.len() as u64);
    assert_eq!(backend.count(None).unwrap(), 0);
}
