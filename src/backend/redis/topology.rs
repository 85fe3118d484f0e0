//! Where the connections of a [`RedisBackend`](super::RedisBackend) go: one
//! server, a Redis Cluster, or the master that a set of Sentinels names.
//!
//! The `redis` crate does the topology work: its cluster connections follow
//! `MOVED`/`ASK` and refresh the slot map, and its Sentinel client asks the
//! sentinels for the current master. This file only chooses between the
//! three, so that the backend's operations are written once against one
//! connection type ([`Conn`] for the sync face, [`AsyncConn`] for the async
//! one).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterConfig, ClusterConnection};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::sentinel::SentinelClient;
use redis::{
    AsyncConnectionConfig, Client, Cmd, Connection, ConnectionLike, RedisError, RedisFuture,
    RedisResult, Value,
};

/// The servers behind one backend.
pub(super) enum Topology {
    /// One server (`redis://`, `rediss://`, `unix://`).
    Single(Client),
    /// A Redis Cluster reached through any of its nodes.
    Cluster(ClusterClient),
    /// The master that Sentinel names, followed across failovers.
    Sentinel(SentinelMaster),
}

/// Builds the Sentinel client of a service (again in a forked child).
pub(super) type MakeSentinels = Box<dyn Fn() -> RedisResult<SentinelClient> + Send + Sync>;

/// The current master of a Sentinel service: asked of the sentinels when
/// first needed, and again after a connection to it failed or it turned out
/// to be a replica (a failover happened).
///
/// The crate's lookup connects to the master it found to check its role,
/// without a timeout of its own; it runs as the crate's async lookup under
/// `lookup_timeout`, so that a frozen node costs a timeout, not a hang.
pub(super) struct SentinelMaster {
    make: MakeSentinels,
    /// The sentinels' client, and the process it belongs to (its cached
    /// connections lived in the parent's runtime after a fork).
    sentinels: tokio::sync::Mutex<Option<(u32, SentinelClient)>>,
    master: Mutex<Option<Client>>,
    lookup_timeout: Option<Duration>,
}

impl SentinelMaster {
    pub(super) fn new(make: MakeSentinels, lookup_timeout: Option<Duration>) -> RedisResult<Self> {
        let first = make()?;
        Ok(Self {
            make,
            sentinels: tokio::sync::Mutex::new(Some((std::process::id(), first))),
            master: Mutex::new(None),
            lookup_timeout,
        })
    }

    /// A client for the master, asking the sentinels if none is known.
    /// Blocks on the engine's runtime (never call it from a runtime thread).
    fn client(&self) -> RedisResult<Client> {
        if let Some(client) = self.master.lock().clone() {
            return Ok(client);
        }
        crate::runtime::handle().block_on(self.client_async())
    }

    /// [`SentinelMaster::client`] for the async face.
    pub(super) async fn client_async(&self) -> RedisResult<Client> {
        if let Some(client) = self.master.lock().clone() {
            return Ok(client);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another caller may have asked meanwhile.
        if let Some(client) = self.master.lock().clone() {
            return Ok(client);
        }
        let pid = std::process::id();
        if sentinels.as_ref().is_none_or(|(owner, _)| *owner != pid) {
            if let Some(inherited) = sentinels.take() {
                std::mem::forget(inherited);
            }
            *sentinels = Some((pid, (self.make)()?));
        }
        let Some((_, client)) = sentinels.as_mut() else {
            unreachable!("set just above");
        };
        let found = match self.lookup_timeout {
            Some(t) => tokio::time::timeout(t, client.async_get_client())
                .await
                .map_err(|_| {
                    RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "asking the sentinels for the master timed out",
                    ))
                })?,
            None => client.async_get_client().await,
        }?;
        *self.master.lock() = Some(found.clone());
        Ok(found)
    }

    /// Forget the master: the next connection asks the sentinels again.
    fn forget(&self) {
        self.master.lock().take();
    }
}

impl Topology {
    /// A new synchronous connection; every read and write is bounded by
    /// `timeout`.
    pub(super) fn connect(&self, timeout: Option<Duration>) -> RedisResult<Conn> {
        let node = |client: &Client| -> RedisResult<Conn> {
            let conn = match timeout {
                Some(t) => client.get_connection_with_timeout(t)?,
                None => client.get_connection()?,
            };
            conn.set_read_timeout(timeout)?;
            conn.set_write_timeout(timeout)?;
            Ok(Conn::Node(conn))
        };
        match self {
            Self::Single(client) => node(client),
            Self::Sentinel(master) => node(&master.client()?).inspect_err(|_| master.forget()),
            Self::Cluster(client) => {
                let mut config = ClusterConfig::new();
                if let Some(t) = timeout {
                    config = config.set_connection_timeout(t).set_response_timeout(t);
                }
                let conn = client.get_connection_with_config(config)?;
                conn.set_write_timeout(timeout)?;
                Ok(Conn::Cluster(Box::new(conn)))
            }
        }
    }

    /// A new multiplexed connection for the async face.
    pub(super) async fn connect_async(&self, timeout: Option<Duration>) -> RedisResult<AsyncConn> {
        let node = async |client: Client| -> RedisResult<AsyncConn> {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok(AsyncConn::Node(conn))
        };
        match self {
            Self::Single(client) => node(client.clone()).await,
            Self::Sentinel(master) => {
                let client = master.client_async().await?;
                node(client).await.inspect_err(|_| master.forget())
            }
            Self::Cluster(client) => {
                let mut config = ClusterConfig::new();
                if let Some(t) = timeout {
                    config = config.set_connection_timeout(t).set_response_timeout(t);
                }
                let conn = client.get_async_connection_with_config(config).await?;
                Ok(AsyncConn::Cluster(conn))
            }
        }
    }

    /// Note a failed round trip: after a failover the Sentinel master is
    /// asked anew (the cluster connections refresh their slot map
    /// themselves).
    pub(super) fn failed(&self, e: &RedisError) {
        if let Self::Sentinel(master) = self {
            if e.is_connection_dropped()
                || e.is_io_error()
                || e.is_connection_refusal()
                || e.code() == Some("READONLY")
            {
                master.forget();
            }
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A synchronous connection to one server or to a whole cluster.
pub(super) enum Conn {
    Node(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    /// Run `each` on every master: the one server, or each master of the
    /// cluster (reached by address), as `SCAN` must be.
    pub(super) fn for_each_master(
        &mut self,
        mut each: impl FnMut(&mut dyn FnMut(&Cmd) -> RedisResult<Value>) -> RedisResult<()>,
    ) -> RedisResult<()> {
        match self {
            Self::Node(conn) => each(&mut |cmd| cmd.query(conn)),
            Self::Cluster(conn) => {
                // The crate knows the masters: a PING to all of them answers
                // with a map keyed by each master's address.
                let reply = conn.route_command(
                    &redis::cmd("PING"),
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )?;
                let mut masters = Vec::new();
                if let Value::Map(pairs) = reply {
                    for (addr, _) in pairs {
                        let addr: String = redis::from_redis_value(addr)?;
                        if let Some((host, port)) = addr.rsplit_once(':') {
                            if let Ok(port) = port.parse::<u16>() {
                                masters.push((host.to_owned(), port));
                            }
                        }
                    }
                }
                for (host, port) in masters {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    });
                    each(&mut |cmd| conn.route_command(cmd, route.clone()))?;
                }
                Ok(())
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Node(c) => c.req_command(cmd),
            Self::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Self::Node(c) => c.supports_pipelining(),
            Self::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Node(c) => c.check_connection(),
            Self::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Node(c) => c.is_open(),
            Self::Cluster(c) => c.is_open(),
        }
    }
}

/// The async face's connection: multiplexed, cheap to clone.
#[derive(Clone)]
pub(super) enum AsyncConn {
    Node(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for AsyncConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The dogpile lock key of `key` on a cluster: in the same hash slot as
/// `key`, so that the scripts touching both stay single-slot.
///
/// A key with a non-empty hash tag (`{...}`) keeps the single-node name
/// `lock:{key}`: `lock:` holds no brace, so the tag, and the slot, are the
/// key's. Any other key hashes whole; its lock is `lock:{T}key`, where `T`
/// is a short tag that the crate's own slot function maps to the key's slot.
pub fn cluster_lock_key(key: &str) -> String {
    let tag = if has_hash_tag(key.as_bytes()) {
        ""
    } else {
        tag_of_slot(Slot::for_key(key))
    };
    let mut out = String::with_capacity(7 + tag.len() + key.len());
    out.push_str("lock:");
    if !tag.is_empty() {
        out.push('{');
        out.push_str(tag);
        out.push('}');
    }
    out.push_str(key);
    out
}

/// Whether Redis hashes `key` by a hash tag: a `{` followed later by a `}`
/// with at least one byte between the first `{` and the first `}` after it.
fn has_hash_tag(key: &[u8]) -> bool {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return false;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) => len > 0,
        None => false,
    }
}

/// The shortest decimal string that hashes to `slot`. The table covers the
/// 16384 slots; it is built once, on first use, with the crate's slot
/// function (about 100k CRC16s of short strings).
fn tag_of_slot(slot: Slot) -> &'static str {
    static TAGS: OnceLock<HashMap<Slot, String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        const SLOTS: usize = 16384;
        let mut tags = HashMap::with_capacity(SLOTS);
        let mut n: u64 = 0;
        while tags.len() < SLOTS {
            let s = n.to_string();
            tags.entry(Slot::for_key(&s)).or_insert(s);
            n += 1;
        }
        tags
    });
    &tags[&slot]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags() {
        assert!(has_hash_tag(b"a{b}c"));
        assert!(has_hash_tag(b"{x}"));
        assert!(!has_hash_tag(b"{}x"));
        assert!(!has_hash_tag(b"a{b"));
        assert!(!has_hash_tag(b"ab}"));
        // The first `{` and the first `}` after it: `{}` is empty, so the
        // later `{c}` does not count.
        assert!(!has_hash_tag(b"a{}b{c}"));
        assert!(has_hash_tag(b"a{{}"));
    }

    #[test]
    fn lock_shares_the_slot_of_its_key() {
        let mut keys: Vec<String> = vec![
            "".into(),
            "{}".into(),
            "{".into(),
            "}".into(),
            "}{".into(),
            "5m:p:f|d={}".into(),
            "5m:p:f|d={'a': 1}".into(),
            "5m:p:f|d={'a': {'b': {}}}".into(),
            "x{}{y}".into(),
            "lock:".into(),
            "é{ü}".into(),
        ];
        for i in 0..20_000u32 {
            let braces = ["", "{", "}", "{}", "{a}", "}{", "{{}}"][(i % 7) as usize];
            keys.push(format!(
                "1h:pkg:f|x={i}{braces}|y={}",
                i.wrapping_mul(2_654_435_761)
            ));
        }
        for key in &keys {
            let lock = cluster_lock_key(key);
            assert_eq!(
                Slot::for_key(key),
                Slot::for_key(&lock),
                "{key:?} / {lock:?}"
            );
            assert!(lock.starts_with("lock:") && lock.ends_with(key.as_str()));
        }
        // A key hashed by its tag keeps the single-node lock name.
        assert_eq!(cluster_lock_key("a{b}c"), "lock:a{b}c");
    }
}
