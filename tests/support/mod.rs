//! What the Rust integration tests share: a throwaway `redis-server` on a
//! free loopback port (`tests/ensure_redis` installs the binary; a missing
//! one fails the test), killed on drop.

#![allow(dead_code)] // each test crate uses its own part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cachu::backend::redis::{RedisBackend, RedisOptions};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port whose cluster-bus port (+10000) is free too.
pub fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` on 127.0.0.1, with no persistence, in a directory of
/// its own; stopped and started again on the same port with
/// [`RedisServer::stop`] and [`RedisServer::launch`].
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// A server on `port`, with `extra` arguments (`--cluster-enabled yes`).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.launch();
        server
    }

    /// Start the process (again), and wait until it answers `PING`.
    pub fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found on PATH: run tests/ensure_redis");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> redis::RedisResult<()> {
        let mut c = self.raw_client().get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(())
    }

    /// Kill the process (SIGKILL); the port stays this server's.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn raw_client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// A plain redis-rs connection: the other client of a test.
    pub fn raw(&self) -> redis::Connection {
        self.raw_client().get_connection().unwrap()
    }

    pub fn backend(&self) -> RedisBackend {
        self.backend_with(RedisOptions::default())
    }

    pub fn backend_with(&self, options: RedisOptions) -> RedisBackend {
        RedisBackend::new(&self.url(), options).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
