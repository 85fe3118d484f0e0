//! Where the connections of a [`RedisBackend`](super::RedisBackend) go: one
//! server, a Redis Cluster, or the master that a set of Sentinels names.
//!
//! The `redis` crate does the topology work: its cluster connections follow
//! `MOVED`/`ASK` and refresh the slot map, and its Sentinel client asks the
//! sentinels for the current master. This file only chooses between the
//! three, so that the backend's operations are written once against one
//! connection type ([`Conn`] for the sync face, [`AsyncConn`] for the async
//! one).
//!
//! One thing is ours: a cluster request that timed out is not retried. The
//! crate retries a failed cluster request (a redirect, a broken connection,
//! a timeout alike) up to its `retries`; a frozen node would then cost each
//! call several socket timeouts. On the sync face each node connection is a
//! [`NodeConn`], which turns a timeout into an error the crate does not
//! retry; on the async face the crate's overall response timeout (the
//! socket timeout) bounds the whole request, and each attempt may take
//! longer than that, so that no timed-out attempt is ever sent again.
//!
//! A sync cluster connection outlives a timeout of one node; an async one
//! does not (see `aio::run_async`): the crate's async cluster connection can
//! stall for good in a slot refresh after a node died (its reconnect task,
//! not polled during the refresh, holds the write lock the refresh waits
//! for), and a timeout is how that shows; a new connection is made instead.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use super::link::Link;
use super::plain::Plain;
use crate::fork::PerProcess;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterConfig, ClusterConnection, Connect};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::sentinel::SentinelClient;
use redis::{
    AsyncConnectionConfig, Client, Cmd, Connection, ConnectionLike, IntoConnectionInfo, RedisError,
    RedisFuture, RedisResult, Value,
};

/// The servers behind one backend.
pub(super) enum Topology {
    /// One server (`redis://`, `rediss://`, `unix://`).
    Single(Client),
    /// A Redis Cluster reached through any of its nodes.
    Cluster(Box<ClusterClient>),
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
    /// This process's view: a child of fork() starts from nothing and never
    /// touches its parent's (whose locks a parent thread may have held, and
    /// whose connections lived in the parent's runtime).
    state: PerProcess<SentinelState>,
    lookup_timeout: Option<Duration>,
}

#[derive(Default)]
struct SentinelState {
    /// The sentinels' client, made on first use in each process.
    sentinels: tokio::sync::Mutex<Option<SentinelClient>>,
    master: Mutex<Option<Client>>,
}

impl SentinelMaster {
    pub(super) fn new(make: MakeSentinels, lookup_timeout: Option<Duration>) -> RedisResult<Self> {
        // Made once here so that a bad set of sentinels is an error now.
        make()?;
        Ok(Self {
            make,
            state: PerProcess::new(SentinelState::default),
            lookup_timeout,
        })
    }

    /// A client for the master, asking the sentinels if none is known.
    /// Blocks on the engine's runtime (never call it from a runtime thread).
    fn client(&self) -> RedisResult<Client> {
        if let Some(client) = self.state.get().master.lock().clone() {
            return Ok(client);
        }
        crate::runtime::handle().block_on(self.client_async())
    }

    /// [`SentinelMaster::client`] for the async face.
    pub(super) async fn client_async(&self) -> RedisResult<Client> {
        let state = self.state.get();
        if let Some(client) = state.master.lock().clone() {
            return Ok(client);
        }
        let mut sentinels = state.sentinels.lock().await;
        // Another caller may have asked meanwhile.
        if let Some(client) = state.master.lock().clone() {
            return Ok(client);
        }
        if sentinels.is_none() {
            *sentinels = Some((self.make)()?);
        }
        let Some(client) = sentinels.as_mut() else {
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
        *state.master.lock() = Some(found.clone());
        Ok(found)
    }

    /// Forget the master: the next connection asks the sentinels again.
    fn forget(&self) {
        self.state.get().master.lock().take();
    }
}

impl Topology {
    /// A new synchronous connection; every read and write is bounded by
    /// `timeout`.
    pub(super) fn connect(&self, timeout: Option<Duration>) -> RedisResult<Conn> {
        let node = |client: &Client| -> RedisResult<Conn> {
            let info = client.get_connection_info();
            if Plain::serves(info) {
                return Ok(Conn::Node(Link::plain(Plain::connect(info, timeout)?)));
            }
            let conn = match timeout {
                Some(t) => client.get_connection_with_timeout(t)?,
                None => client.get_connection()?,
            };
            let link = Link::new(conn);
            link.set_timeouts(timeout)?;
            Ok(Conn::Node(link))
        };
        match self {
            Self::Single(client) => node(client),
            Self::Sentinel(master) => node(&master.client()?).inspect_err(|_| master.forget()),
            Self::Cluster(client) => {
                // The connect and read timeouts are the client's (see
                // `url::cluster`): the crate's only way to a cluster
                // connection of our own node connections takes no config.
                let conn = client.get_generic_connection::<NodeConn>()?;
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
                    // The whole request is bounded by `t` (the client's
                    // overall response timeout); an attempt that could time
                    // out first would be retried.
                    config = config
                        .set_connection_timeout(t)
                        .set_response_timeout(t.saturating_mul(ATTEMPT_SLACK));
                }
                let connect = client.get_async_connection_with_config(config);
                let conn = match timeout {
                    // Connecting asks a node for the slot map, then connects
                    // to every node: bounded as a whole, as a call is.
                    Some(t) => tokio::time::timeout(t.saturating_mul(ATTEMPT_SLACK), connect)
                        .await
                        .map_err(|_| {
                            RedisError::from(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "connecting to the cluster timed out",
                            ))
                        })??,
                    None => connect.await?,
                };
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

/// How much longer than the socket timeout one attempt of an async cluster
/// request may wait: the overall timeout always fires first.
const ATTEMPT_SLACK: u32 = 2;

/// The code of the error a [`NodeConn`] returns for a timeout.
const TIMED_OUT: &str = "CACHU_TIMEOUT";

/// Whether `e` is a timeout (the socket's, or a [`NodeConn`]'s).
pub(super) fn is_timeout(e: &RedisError) -> bool {
    e.is_timeout() || e.code() == Some(TIMED_OUT)
}

/// What timed out, for a message: the socket's own words.
pub(super) fn timeout_cause(e: &RedisError) -> String {
    match e.detail() {
        Some(cause) if e.code() == Some(TIMED_OUT) => cause.to_owned(),
        _ => e.to_string(),
    }
}

/// One node connection of a sync cluster connection: a [`Connection`]
/// whose timeouts come back as an error the crate does not retry (it
/// retries I/O errors, timeouts included). Its redirects and reconnects
/// are the crate's as before. A late reply is skipped by the connection.
pub(super) struct NodeConn(Connection);

impl NodeConn {
    fn map<T>(r: RedisResult<T>) -> RedisResult<T> {
        r.map_err(|e| {
            if e.is_timeout() {
                redis::make_extension_error(TIMED_OUT.into(), Some(e.to_string()))
            } else {
                e
            }
        })
    }
}

impl Connect for NodeConn {
    fn connect<T: IntoConnectionInfo>(info: T, timeout: Option<Duration>) -> RedisResult<Self> {
        Self::map(<Connection as Connect>::connect(info, timeout).map(Self))
    }

    fn send_packed_command(&mut self, cmd: &[u8]) -> RedisResult<()> {
        Self::map(self.0.send_packed_command(cmd))
    }

    fn set_write_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.0.set_write_timeout(dur)
    }

    fn set_read_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.0.set_read_timeout(dur)
    }

    fn recv_response(&mut self) -> RedisResult<Value> {
        Self::map(self.0.recv_response())
    }
}

impl ConnectionLike for NodeConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        Self::map(self.0.req_packed_command(cmd))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        Self::map(self.0.req_packed_commands(cmd, offset, count))
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        Self::map(self.0.req_command(cmd))
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }

    fn supports_pipelining(&self) -> bool {
        self.0.supports_pipelining()
    }

    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

/// A synchronous connection to one server or to a whole cluster.
pub(super) enum Conn {
    Node(Link),
    Cluster(Box<ClusterConnection<NodeConn>>),
}

impl Conn {
    /// Whether the connection is still good after `e`: a cluster
    /// connection outlives a timeout of one of its nodes (the other nodes'
    /// connections are fine, and a new cluster connection would connect to
    /// every node again, the frozen one too).
    pub(super) fn outlives(&self, e: &RedisError) -> bool {
        matches!(self, Self::Cluster(_)) && is_timeout(e)
    }

    /// Send `packed` (`count` commands) without waiting for the replies:
    /// on one server they are read before the connection's next command; a
    /// cluster connection reads them at once.
    pub(super) fn send_unawaited(&mut self, packed: &[u8], count: usize) -> RedisResult<()> {
        match self {
            Self::Node(link) => link.send_unawaited(packed, count),
            Self::Cluster(c) => c.req_packed_commands(packed, 0, count).map(|_| ()),
        }
    }

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
                let reply = conn.route_command(&redis::cmd("PING"), all_masters())?;
                for route in master_routes(reply)? {
                    each(&mut |cmd| conn.route_command(cmd, route.clone()))?;
                }
                Ok(())
            }
        }
    }
}

/// Routing to every master of a cluster.
fn all_masters() -> RoutingInfo {
    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None))
}

/// A route to each master, from the reply of a `PING` sent to all of them
/// (the crate answers with a map keyed by each master's address).
fn master_routes(reply: Value) -> RedisResult<Vec<RoutingInfo>> {
    let mut routes = Vec::new();
    if let Value::Map(pairs) = reply {
        for (addr, _) in pairs {
            let addr: String = redis::from_redis_value(addr)?;
            if let Some((host, port)) = addr.rsplit_once(':') {
                if let Ok(port) = port.parse::<u16>() {
                    routes.push(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    }));
                }
            }
        }
    }
    Ok(routes)
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

impl AsyncConn {
    /// Where `SCAN` must go: the one server (`None`), or each master of the
    /// cluster (by address).
    pub(super) async fn masters(&mut self) -> RedisResult<Vec<Option<RoutingInfo>>> {
        match self {
            Self::Node(_) => Ok(vec![None]),
            Self::Cluster(conn) => {
                let reply = conn
                    .route_command(redis::cmd("PING"), all_masters())
                    .await?;
                Ok(master_routes(reply)?.into_iter().map(Some).collect())
            }
        }
    }

    /// `cmd` on one of [`AsyncConn::masters`].
    pub(super) async fn query_on(
        &mut self,
        cmd: Cmd,
        master: &Option<RoutingInfo>,
    ) -> RedisResult<Value> {
        match (self, master) {
            (Self::Cluster(conn), Some(route)) => conn.route_command(cmd, route.clone()).await,
            (this, _) => cmd.query_async(this).await,
        }
    }
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
